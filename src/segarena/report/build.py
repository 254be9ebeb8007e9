"""Report v1: leaderboard (mean ± std over folds, as in the paper's table), per-class table, training curves,
best/worst overlays. Markdown and one self-contained HTML file (images inlined as base64)."""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import write_text
from ..metrics.overlap import DESCRIPTIONS
from ..runner.store import ResultsDir

LEADER_METRICS = ("mdsc", "dice_case_mean", "miou", "precision", "recall")


def load_results(results: str | os.PathLike) -> dict[str, Any]:
    """Summaries of complete runs, failures, and logs — everything the report needs, from the store only."""
    rd = ResultsDir(results, create=False)
    rows, failed, logs, search = [], [], {}, []
    for d in rd.run_dirs():
        status = json.loads((d / "status.json").read_text()) if (d / "status.json").is_file() else {}
        if status.get("state") == "complete" and (d / "summary.json").is_file():
            s = json.loads((d / "summary.json").read_text())
            if s.get("validation_only"):  # LR-search runs: model selection, never in the leaderboard
                search.append({k: s[k] for k in ("model", "dataset", "fold", "lr", "best_epoch")} | s["best_val"])
                continue
            rows.append({**{k: v for k, v in s.items() if k not in ("metrics", "per_class", "versions")},
                         **s["metrics"], **{f"class:{k}": v for k, v in s["per_class"].items()}, "dir": str(d)})
            logs[s["run_name"]] = json.loads((d / "log.json").read_text()) if (d / "log.json").is_file() else []
        else:
            spec = json.loads((d / "spec.json").read_text())
            failed.append({"run": d.name, "model": spec["model"]["name"], "dataset": spec["data"]["name"],
                           "fold": spec["data"]["fold"], "state": status.get("state", "pending"),
                           "error": status.get("error", "")})
    return {"runs": pd.DataFrame(rows), "failed": pd.DataFrame(failed), "logs": logs, "root": rd.path,
            "search": pd.DataFrame(search)}


def _fmt(mean: float, std: float, scale: float = 100.0) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean * scale:.1f} ± {std * scale:.1f}" if not math.isnan(std) else f"{mean * scale:.1f}"


def leaderboard(runs: pd.DataFrame, metrics: tuple[str, ...] = LEADER_METRICS) -> pd.DataFrame:
    """Per dataset and model: mean and std over folds (and seeds) of each metric, best mDSC first."""
    if runs.empty:
        return pd.DataFrame()
    g = runs.groupby(["dataset", "model", "family"])
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
                         f"{_fmt(r['miou_mean'], r['miou_std']):>14}{r['params_m']:>8.1f}M")
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


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _curves(runs: pd.DataFrame, logs: dict[str, list]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    for ds, part in runs.groupby("dataset"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
        for _, r in part.sort_values(["model", "fold"]).iterrows():
            log = logs.get(r["run_name"], [])
            if not log:
                continue
            ep = [e["epoch"] for e in log]
            label = f"{r['model']} f{r['fold']}"
            axes[0].plot(ep, [e["train_loss"] for e in log], label=label)
            axes[1].plot(ep, [e["val_mdsc"] for e in log], label=label)
        axes[0].set(title="training loss", xlabel="epoch")
        axes[1].set(title="validation mDSC", xlabel="epoch")
        axes[1].legend(fontsize=7, loc="lower right")
        fig.suptitle(ds)
        out[ds] = _png(fig)
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
    """Write ``report.md`` and ``report.html`` (default: ``<results>/report/``); return their paths."""
    res = load_results(results)
    runs, failed = res["runs"], res["failed"]
    out_dir = Path(out) if out else res["root"] / "report"
    lb = leaderboard(runs)
    pc = _per_class(runs) if not runs.empty else pd.DataFrame()
    curves = _curves(runs, res["logs"]) if not runs.empty else {}
    gallery = _gallery(runs) if not runs.empty else {}
    md = _markdown(lb, pc, failed, res["search"])
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    write_text(paths["markdown"], md)
    write_text(paths["html"], _html(lb, pc, failed, curves, gallery, res["search"]))
    return paths


def _lb_rows(lb: pd.DataFrame) -> list[list[str]]:
    return [[r["dataset"], r["model"], r["family"], _fmt(r["mdsc_mean"], r["mdsc_std"]),
             _fmt(r["dice_case_mean_mean"], r["dice_case_mean_std"]), _fmt(r["miou_mean"], r["miou_std"]),
             _fmt(r["precision_mean"], r["precision_std"]), _fmt(r["recall_mean"], r["recall_std"]),
             str(int(r["folds"])), f"{r['params_m']:.1f}", f"{r['train_min']:.1f}"] for _, r in lb.iterrows()]


LB_HEAD = ["dataset", "model", "family", "mDSC %", "case Dice %", "mIoU %", "precision %", "recall %", "folds",
           "params (M)", "train (min)"]


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] +
                     ["| " + " | ".join(r) + " |" for r in rows])


def _search_rows(search: pd.DataFrame) -> list[list[str]]:
    if search.empty:
        return []
    rows = []
    for (ds, m), g in search.sort_values(["dataset", "model", "lr"]).groupby(["dataset", "model"]):
        best = g.loc[g["val_mdsc"].idxmax(), "lr"] if "val_mdsc" in g else None
        rows.append([ds, m, ", ".join(f"{r.lr:g}: {r.val_mdsc * 100:.1f}" + (" ✓" if r.lr == best else "")
                                      for r in g.itertuples())])
    return rows


SEARCH_HEAD = ["dataset", "model", "validation mDSC % per learning rate (✓ chosen)"]


def _markdown(lb: pd.DataFrame, pc: pd.DataFrame, failed: pd.DataFrame, search: pd.DataFrame) -> str:
    parts = ["# segarena report", "", "## Leaderboard", "",
             "Mean ± std over folds. " + "; ".join(f"**{k}**: {v}" for k, v in DESCRIPTIONS.items()
                                                   if k in ("mdsc", "dice_case_mean")), ""]
    parts.append(_md_table(LB_HEAD, _lb_rows(lb)) if not lb.empty else "_no complete runs_")
    if not pc.empty:
        parts += ["", "## Per-class Dice (pooled per fold, mean ± std)", ""]
        parts.append(_md_table(["dataset", "class", "model", "Dice %"],
                               [[r["dataset"], r["class"], r["model"], _fmt(r["mean"], r["std"])]
                                for _, r in pc.iterrows()]))
    if not search.empty:
        parts += ["", "## Learning-rate search (validation data only)", ""]
        parts.append(_md_table(SEARCH_HEAD, _search_rows(search)))
    if not failed.empty:
        parts += ["", "## Runs not complete", ""]
        parts.append(_md_table(["run", "state", "error"], [[r["run"], r["state"], str(r["error"])]
                                                           for _, r in failed.iterrows()]))
    return "\n".join(parts) + "\n"


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:nth-child(-n+3){text-align:left}img{max-width:100%}.gal img{max-height:180px;margin:4px}
.note{color:#555;font-size:13px}"""


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _html(lb, pc, failed, curves, gallery, search) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>segarena report</title><style>{CSS}</style>"
             "</head><body><h1>segarena report</h1><h2>Leaderboard</h2>",
             "<p class='note'>Mean ± std over folds. <b>mDSC</b>: " + html.escape(DESCRIPTIONS["mdsc"]) +
             ". <b>case Dice</b>: " + html.escape(DESCRIPTIONS["dice_case_mean"]) + ".</p>",
             _html_table(LB_HEAD, _lb_rows(lb)) if not lb.empty else "<p>No complete runs.</p>"]
    if not pc.empty:
        parts.append("<h2>Per-class Dice</h2>")
        parts.append(_html_table(["dataset", "class", "model", "Dice %"],
                                 [[r["dataset"], r["class"], r["model"], _fmt(r["mean"], r["std"])]
                                  for _, r in pc.iterrows()]))
    if curves:
        parts.append("<h2>Training curves</h2>")
        parts += [f"<img alt='training curves {html.escape(ds)}' src='data:image/png;base64,{b}'>"
                  for ds, b in curves.items()]
    if gallery:
        parts.append("<h2>Best and worst test cases</h2><p class='note'>image | overlay: reference outline green, "
                     "prediction red. Name: rank, case id and its Dice.</p>")
        for (ds, model), imgs in gallery.items():
            parts.append(f"<h3>{html.escape(model)} on {html.escape(ds)}</h3><div class='gal'>")
            parts += [f"<figure style='display:inline-block'><img alt='{html.escape(n)}' "
                      f"src='data:image/png;base64,{b}'><figcaption class='note'>{html.escape(n)}</figcaption></figure>"
                      for n, b in imgs]
            parts.append("</div>")
    if not search.empty:
        parts.append("<h2>Learning-rate search (validation data only)</h2>")
        parts.append(_html_table(SEARCH_HEAD, _search_rows(search)))
    if not failed.empty:
        parts.append("<h2>Runs not complete</h2>")
        parts.append(_html_table(["run", "state", "error"], [[r["run"], r["state"], str(r["error"])]
                                                              for _, r in failed.iterrows()]))
    parts.append("</body></html>")
    return "\n".join(parts)
