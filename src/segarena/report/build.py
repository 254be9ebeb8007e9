"""Report v1: leaderboard (mean ± std over folds, as in the paper's table), per-class table, training curves,
best/worst overlays. Markdown and one self-contained HTML file (images inlined as base64)."""
from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import write_text
from ..store import Problem, ResultsDir
from .evidence import fig_png

LEADER_METRICS = ("mdsc", "dice_case_mean", "miou", "precision", "recall", "hd95_mean", "nsd_mean")


def load_results(results: str | os.PathLike) -> dict[str, Any]:
    """Summaries of complete runs, failures, and logs — everything the report needs, from the store only."""
    rd = ResultsDir(results, create=False)
    rows, failed, logs, search = [], [], {}, []
    scan = rd.scan()  # damaged or partial runs become listed problems, never a traceback
    for info in scan.runs:
        d, spec, status, s = info.dir, info.spec, info.status, info.summary
        if s is not None:
            if s.get("validation_only"):  # LR-search runs: model selection, never in the leaderboard
                search.append({k: s.get(k) for k in ("model", "dataset", "fold", "lr", "best_epoch")}
                              | s.get("best_val", {}))
                continue
            rows.append({**{k: v for k, v in s.items() if k not in ("metrics", "per_class", "versions")},
                         **s["metrics"], **{f"class:{k}": v for k, v in s.get("per_class", {}).items()},
                         "dir": str(d), "spec": spec})  # read once here; the report never rereads spec.json
            logs[s.get("run_name", d.name)] = info.log
        elif info.state != "complete":
            failed.append({"run": d.name, "model": spec["model"].get("name"), "dataset": spec["data"].get("name"),
                           "fold": spec["data"].get("fold"), "state": info.state,
                           "error": status.get("error", "")})
    for pr in scan.problems:
        if pr.kind == "interrupted":
            continue  # already listed above with its state
        failed.append({"run": pr.run, "model": "", "dataset": "", "fold": "", "state": pr.kind,
                       "error": f"{pr.file} {pr.what} — {pr.fix}"})
    chosen = {}
    for mf in sorted((rd.path / "studies").glob("*.json")) if (rd.path / "studies").is_dir() else []:
        try:
            manifest = json.loads(mf.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            scan.problems.append(Problem(f"studies/{mf.name}", "", "is damaged (chosen learning rates left out)",
                                         "rerun `segarena study run` with the study file to rewrite it"))
            continue
        for pair, lr in (manifest.get("chosen_lr") or {}).items():
            model, dataset = pair.split("|")
            chosen[(model, dataset)] = lr
    missing, unstarted = _study_gaps(rd.path, {d.name for d in rd.run_dirs()})
    return {"runs": pd.DataFrame(rows), "failed": pd.DataFrame(failed + missing), "logs": logs, "root": rd.path,
            "search": pd.DataFrame(search), "chosen_lr": chosen, "unstarted": unstarted,
            "problems": scan.problems}


def _study_gaps(root: Path, present: set[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Runs a study submitted that have no run folder, and per study how many planned runs were never
    submitted, from the manifests in ``<results>/studies/``; so a report never hides a missing run."""
    missing, unstarted = [], []
    for mf in sorted((root / "studies").glob("*.json")) if (root / "studies").is_dir() else []:
        try:
            info = json.loads(mf.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a damaged manifest is reported by `study status`; the runs themselves are listed above
        submitted = info.get("submitted", {})
        for name in sorted(set(submitted.values()) - present):
            parts = name.split("__")
            fold = parts[2][1:] if len(parts) > 2 and parts[2][:1] == "f" else "?"
            missing.append({"run": name, "model": parts[0], "dataset": parts[1] if len(parts) > 1 else "?",
                            "fold": fold, "state": "missing", "error": "submitted by the study, no run folder"})
        never = int(info.get("expected_runs", 0)) - len(submitted)
        if never > 0:
            unstarted.append(f"study {info.get('name', mf.stem)}: {never} of its {info['expected_runs']} planned "
                             "runs were never started (an earlier stage failed or the study was stopped).")
    return missing, unstarted


def _fmt(mean: float, std: float, scale: float = 100.0) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean * scale:.1f} ± {std * scale:.1f}" if not math.isnan(std) else f"{mean * scale:.1f}"


def leaderboard(runs: pd.DataFrame, metrics: tuple[str, ...] = LEADER_METRICS) -> pd.DataFrame:
    """Per dataset and model: mean and std over folds (and seeds) of each metric, best mDSC first."""
    if runs.empty:
        return pd.DataFrame()
    g = runs.groupby(["dataset", "model", "family"])
    metrics = tuple(m for m in metrics if m in runs)
    out = g[list(metrics)].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["folds"] = g.size()
    out["params_m"] = g["params"].first() / 1e6
    out["train_min"] = g["train_seconds"].mean() / 60
    out = out.reset_index().sort_values(["dataset", "mdsc_mean"], ascending=[True, False])
    return out


def leaderboard_text(runs: pd.DataFrame) -> str:
    lb = leaderboard(runs)
    if lb.empty:
        return "no complete runs yet"
    lines = []
    for ds, part in lb.groupby("dataset", sort=True):
        lines.append(f"{ds}  (mDSC %: pooled foreground Dice, mean ± std over {int(part['folds'].max())} fold(s))")
        lines.append(f"  {'model':<26}{'family':<9}{'mDSC':>14}{'case Dice':>14}{'mIoU':>14}{'params':>9}")
        for _, r in part.iterrows():
            lines.append(f"  {r['model']:<26}{r['family']:<9}{_fmt(r['mdsc_mean'], r['mdsc_std']):>14}"
                         f"{_fmt(r['dice_case_mean_mean'], r['dice_case_mean_std']):>14}"
                         f"{_fmt(r['miou_mean'], r['miou_std']):>14}"
                         + (f"{r['params_m']:>8.1f}M" if r['params_m'] == r['params_m'] else f"{'–':>9}"))
    return "\n".join(lines)


def _per_class(runs: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in runs.columns if c.startswith("class:")]
    if not cols:
        return pd.DataFrame()
    long = runs.melt(id_vars=["dataset", "model", "fold"], value_vars=cols, var_name="class", value_name="dice")
    long = long.dropna(subset=["dice"])
    long["class"] = long["class"].str[len("class:"):]
    t = long.groupby(["dataset", "class", "model"])["dice"].agg(["mean", "std"]).reset_index()
    return t


def _curves(runs: pd.DataFrame, logs: dict[str, list]) -> dict[str, str]:
    """Training curves per dataset, one line per model: the mean over its runs (folds, seeds) at each epoch, with
    the band from the lowest to the highest run (runs stopped early leave the mean of the runs still going)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    out = {}
    for ds, part in runs.groupby("dataset"):
        frames = [pd.DataFrame(logs[n]).assign(model=m) for n, m in zip(part["run_name"], part["model"])
                  if logs.get(n)]
        if not frames:
            continue  # external methods (add-method) have no training log
        log = pd.concat(frames, ignore_index=True)
        fig = Figure(figsize=(10, 3.2), layout="constrained")
        axes = fig.subplots(1, 2)
        for i, (m, g) in enumerate(log.groupby("model", sort=True)):
            n_runs = int(g["epoch"].value_counts().max())
            for ax, col in zip(axes, ("train_loss", "val_mdsc")):
                if col not in g:
                    continue
                s = g.groupby("epoch")[col].agg(["mean", "min", "max"])
                ax.plot(s.index, s["mean"], color=f"C{i % 10}", label=f"{m} ({n_runs} run{'s' * (n_runs != 1)})")
                if n_runs > 1:
                    ax.fill_between(s.index, s["min"], s["max"], color=f"C{i % 10}", alpha=0.15, lw=0)
        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].set(title="training loss (lower is better)", xlabel="epoch")
        axes[1].set(title="validation mDSC (higher is better)", xlabel="epoch")
        axes[1].legend(fontsize=7, loc="lower right")
        fig.suptitle(f"{ds}: mean over each model's runs, band = lowest to highest run")
        out[ds] = fig_png(fig)
    return out


def _gallery(runs: pd.DataFrame) -> dict[tuple[str, str], list[tuple[str, str]]]:
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for _, r in runs.sort_values(["dataset", "model", "fold"]).iterrows():
        g = Path(r["dir"]) / "gallery"
        if not g.is_dir():
            continue
        key = (r["dataset"], r["model"])
        if key in out:
            continue  # one fold's gallery per model is enough for v1
        out[key] = [(p.stem, base64.b64encode(p.read_bytes()).decode()) for p in sorted(g.glob("*.png"))]
    return out


def build_report(results: str | os.PathLike, out: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write ``report.json`` (the verdicts) and, rendered from it, ``report.md``, ``report.html`` and
    ``report.tex`` (default: ``<results>/report/``)."""
    from .evidence import Evidence, gather
    from .render import render_html, render_latex, render_markdown

    from .verdicts import to_json

    res = load_results(results)
    runs = res["runs"]
    out_dir = Path(out) if out else res["root"] / "report"
    ev = gather(runs, res["root"], failed=res["failed"]) if not runs.empty else \
        Evidence(cases=pd.DataFrame(), report=_empty_report(res["failed"]))
    lb = leaderboard(runs)
    ev.report["leaderboard"] = leaderboard_records(lb, ev.report)
    ev.report["caveats"] += res["unstarted"]
    ctx = {
        "report": ev.report, "pc": _per_class(runs) if not runs.empty else pd.DataFrame(),
        "curves": _curves(runs, res["logs"]) if not runs.empty else {},
        "gallery": _gallery(runs) if not runs.empty else {}, "search": res["search"],
        "chosen_lr": res["chosen_lr"], "evidence": ev,
        "protocols": _protocols(runs), "environment": _environment(runs), "commands": _commands(res["root"]),
    }
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "html": out_dir / "report.html",
             "latex": out_dir / "report.tex"}
    text = to_json(ev.report)
    write_text(paths["json"], text)
    ctx["report"] = json.loads(text)  # the three renderings read the written verdicts, nothing else
    from .figures import add_figures

    add_figures(ctx, out_dir)  # forest plot, distributions, pairwise matrix; every image also as a file
    write_text(paths["markdown"], render_markdown(ctx))
    write_text(paths["html"], render_html(ctx))
    write_text(paths["latex"], render_latex(ctx))
    return paths


def _empty_report(failed: pd.DataFrame) -> dict[str, Any]:
    from .verdicts import build_verdicts

    return build_verdicts(pd.DataFrame(), pd.DataFrame(), failed)


def leaderboard_records(lb: pd.DataFrame, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The leaderboard as plain records for ``report.json``: the per-fold mean ± std of the summaries, plus
    the verdict metric and pooled mDSC (with CIs) on the common cases and the mark; ordered by the verdict."""
    from .verdicts import MARKS

    rows = []
    for _, r in lb.iterrows():
        d = report["datasets"].get(r["dataset"], {})
        m = r["model"]
        rel = "anchor" if d.get("anchor") == m else d.get("models", {}).get(m, {}).get("relation")
        rows.append({"dataset": r["dataset"], "model": m, "family": r["family"], "runs": int(r["folds"]),
                     **{c: (None if pd.isna(r[c]) else float(r[c])) for c in lb.columns
                        if c.endswith(("_mean", "_std")) or c in ("params_m", "train_min")},
                     "verdict": d.get("estimates", {}).get(m), "pooled_mdsc": d.get("pooled_mdsc", {}).get(m),
                     "relation": rel, "mark": MARKS.get(rel, "") if rel else ""})
    order = {(ds, m): -(r["verdict"]["estimate"] if r["verdict"] else -1.0)
             for r in rows for ds, m in [(r["dataset"], r["model"])]}
    return sorted(rows, key=lambda r: (r["dataset"], order[(r["dataset"], r["model"])], r["model"]))


def _protocols(runs: pd.DataFrame) -> list[dict[str, Any]]:
    seen, out = set(), []
    for spec, fam in zip(runs.get("spec", []), runs.get("family", [])):
        if fam == "external":  # scored masks: segarena's protocol did not produce them
            continue
        key = json.dumps(spec["protocol"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(spec["protocol"])
    return out


def _environment(runs: pd.DataFrame) -> dict[str, Any]:
    env: dict[str, Any] = {"devices": sorted(set(runs["device"])) if "device" in runs else [],
                           "seeds": sorted(set(int(s) for s in runs["seed"])) if "seed" in runs else []}
    for d in list(runs.get("dir", []))[:1]:
        env["versions"] = json.loads((Path(d) / "summary.json").read_text()).get("versions", {})
    return env


def _commands(root: Path) -> list[str]:
    p = root / "commands.log"
    return p.read_text().splitlines()[-20:] if p.is_file() else []
