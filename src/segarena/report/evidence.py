"""The statistical evidence a report shows, computed from the results store only.

Everything is derived from the per-case records of complete test runs (``records.parquet``), their summaries, the
split records, and, when present, the cross-dataset records (``crossdata.parquet``) and XAI measures
(``<run>/xai/measures.parquet``). Figures are returned as base64 PNG strings.
"""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import stats


def fig_png(fig, dpi: int = 100) -> str:
    """A figure as a base64 PNG string (closed afterwards when pyplot made it): every image of the report."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    try:
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception:  # noqa: BLE001 - Figures made without pyplot need no closing
        pass
    return base64.b64encode(buf.getvalue()).decode()


@dataclass
class Evidence:
    cases: pd.DataFrame  # one row per (model, dataset, fold, seed, case): dice, num, den, hd95, nsd, ref_empty
    friedman: dict[str, Any] | None = None
    figures: dict[str, str] = field(default_factory=dict)  # name -> base64 PNG
    variance: pd.DataFrame = field(default_factory=pd.DataFrame)
    cross: dict[str, pd.DataFrame] = field(default_factory=dict)
    xai: pd.DataFrame = field(default_factory=pd.DataFrame)
    xai_images: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    curation: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)  # the verdicts: report.json (verdicts.build_verdicts)


CASE_KEY = ["model", "dataset", "fold", "seed", "case_id"]


def case_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, dataset, fold, seed, case): per-case Dice (mean over its classes), summed counts,
    ``num``/``den`` of the pooled Dice, and the boundary metrics' means. All runs' records are read in one pass
    (one Arrow dataset over every ``records.parquet``, only the columns used, strings as dictionary codes) and
    grouped once."""
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    files = [str(Path(d) / "records.parquet") for d in runs["dir"]]
    wanted = [*CASE_KEY, "dice", "tp", "fp", "fn", "ref_empty", "hd95", "nsd", "assd"]
    try:
        schema = pa.unify_schemas([pq.read_schema(f) for f in files])  # footers only
        cols = [c for c in wanted if c in schema.names]
        table = pads.dataset(files, format="parquet", schema=schema).to_table(columns=cols)
        rec = table.to_pandas(strings_to_categorical=True)
    except pa.ArrowInvalid:  # column types differ between runs (e.g. written by another version): file by file
        parts = [pd.read_parquet(f) for f in files]
        rec = pd.concat([p[[c for c in wanted if c in p]] for p in parts], ignore_index=True)
    agg = {"dice": "mean", "tp": "sum", "fp": "sum", "fn": "sum", "ref_empty": "all"}
    agg |= {c: "mean" for c in ("hd95", "nsd", "assd") if c in rec}
    cases = rec.groupby(CASE_KEY, as_index=False, observed=True, sort=True).agg(agg)
    for c in ("model", "dataset", "case_id"):
        cases[c] = cases[c].astype(str)
    cases["num"] = 2 * cases["tp"]
    cases["den"] = 2 * cases["tp"] + cases["fp"] + cases["fn"]
    return cases


def gather(runs: pd.DataFrame, root: Path, alpha: float = 0.05, n_boot: int = 1000,
           failed: pd.DataFrame | None = None) -> Evidence:
    """All evidence of a report; the verdicts (``ev.report``) follow the one rule of :mod:`.verdicts`."""
    from .verdicts import build_verdicts

    failed = pd.DataFrame() if failed is None else failed
    ev = Evidence(cases=case_table(runs) if not runs.empty else pd.DataFrame())
    ev.report = build_verdicts(ev.cases, runs, failed, alpha=alpha, n_boot=n_boot)
    if ev.cases.empty:
        return ev
    _ranking(ev)
    _variance(ev)
    _pareto(ev, runs)
    _cross(ev, root)
    _xai(ev, runs)
    _curation(ev, runs)
    return ev


def _ranking(ev: Evidence) -> None:
    """Rank-distribution figure from the verdicts' shared replicates; Friedman + Nemenyi on the verdict metric."""
    dsets = {ds: d for ds, d in ev.report["datasets"].items() if d.get("anchor") and len(d["models_compared"]) > 1}
    if not dsets:
        return
    parts = []
    for ds, d in dsets.items():
        reps = d["rank_replicates"]
        parts.append(pd.DataFrame({"dataset": ds, "replicate": np.repeat(np.arange(reps.shape[0]), reps.shape[1]),
                                   "model": np.tile(np.asarray(d["models_compared"], dtype=object), reps.shape[0]),
                                   "rank": reps.ravel()}))
    boot = pd.concat(parts, ignore_index=True)
    ev.figures["rank_stability"] = fig_png(stats.rank_blob_plot(
        boot, by="dataset", title="bootstrap rank distributions (per-case Dice, common cases)"))
    # Friedman + Nemenyi over the models present in every dataset, on their common cases' per-case Dice
    models = set.intersection(*(set(d["models_compared"]) for d in dsets.values()))
    if len(models) < 3:  # Friedman + Nemenyi compare three or more models; two: see the paired tests
        return
    cases = ev.cases[ev.cases["model"].isin(models) & ev.cases["dataset"].isin(list(dsets))]
    cases = cases.groupby(["dataset", "model", "fold", "case_id"], as_index=False)["dice"].mean()
    wide = cases.pivot_table(index=["dataset", "fold", "case_id"], columns="model", values="dice").dropna()
    sub = wide.stack().rename("dice").reset_index()
    if len(dsets) >= 3:  # Demšar: blocks are datasets, one score per model and dataset
        res = stats.friedman_nemenyi(sub, "dice", block=("dataset",))
        blocks = f"{len(dsets)} datasets (one mean per dataset)"
    else:  # too few datasets for a meaningful test: blocks are the common test cases
        res = stats.friedman_nemenyi(sub, "dice", block=("dataset", "fold", "case_id"))
        n_folds = sub[["dataset", "fold"]].drop_duplicates().shape[0]
        blocks = (f"{res.n_blocks} common test cases ({n_folds} fold{'s' if n_folds != 1 else ''}), since fewer "
                  "than 3 datasets")
    ev.friedman = {**res.to_dict(), "blocks": blocks}
    ev.report["friedman"] = {"metric": "dice_case_mean", "blocks": blocks, "p": res.p, "cd": res.cd,
                             "alpha": res.alpha, "avg_ranks": res.avg_ranks, "n_blocks": res.n_blocks}
    ev.figures["cd_diagram"] = fig_png(stats.cd_diagram(res.avg_ranks, res.cd,
                                                        title=f"Nemenyi CD = {res.cd:.2f} over {blocks}"))


def _variance(ev: Evidence) -> None:
    if ev.cases["seed"].nunique() > 1:
        per_run = ev.cases.groupby(["model", "dataset", "fold", "seed"], as_index=False)[["num", "den"]].sum()
        per_run["mdsc"] = per_run["num"] / per_run["den"]
        ev.variance = stats.seed_fold_variance(per_run, "mdsc")


def _pareto(ev: Evidence, runs: pd.DataFrame) -> None:
    from ..stats.pareto import pareto_plot

    if "efficiency" not in runs:
        return
    rows = []
    for _, r in runs.iterrows():
        eff = r["efficiency"] if isinstance(r["efficiency"], dict) else {}
        if "macs" in eff:
            rows.append({"model": r["model"], "dataset": r["dataset"], "family": r["family"], "mdsc": r["mdsc"],
                         "gmacs": eff["macs"] / 1e9, "latency_ms": eff.get("latency_ms", np.nan)})
    if not rows:
        return
    df = pd.DataFrame(rows).groupby(["dataset", "model", "family"], as_index=False).mean(numeric_only=True)
    for ds, g in df.groupby("dataset"):
        if len(g) >= 1:
            ev.figures[f"pareto:{ds}"] = fig_png(pareto_plot(g, cost="gmacs", score="mdsc", cost_label="GMACs",
                                                             score_label="mDSC", title=f"accuracy vs cost: {ds}"))


def _cross(ev: Evidence, root: Path) -> None:
    path = root / "crossdata.parquet"
    if not path.is_file():
        return
    from ..stats.transfer import generalization_gaps, matrix, ood_ranking

    rec = pd.read_parquet(path)
    mat, gaps = matrix(rec), generalization_gaps(rec)
    ev.cross = {"matrix": mat, "gaps": gaps, "ranking": ood_ranking(gaps)}
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    for model, g in mat.groupby("model"):
        piv = g.pivot(index="train", columns="test", values="mdsc")
        fig = Figure(figsize=(1.2 + 1.1 * piv.shape[1], 0.9 + 0.6 * piv.shape[0]))
        ax = fig.subplots()
        im = ax.imshow(piv.to_numpy() * 100, vmin=0, vmax=100, cmap="viridis")
        ax.set_xticks(range(piv.shape[1]), piv.columns, rotation=30, ha="right")
        ax.set_yticks(range(piv.shape[0]), piv.index)
        ax.set(xlabel="tested on", ylabel="trained on", title=f"{model}: mDSC %")
        for (i, j), v in np.ndenumerate(piv.to_numpy()):
            if np.isfinite(v):
                ax.text(j, i, f"{v * 100:.1f}", ha="center", va="center", color="w" if v < 0.6 else "k")
        fig.colorbar(im, ax=ax)
        ev.figures[f"cross:{model}"] = fig_png(fig)


def _xai(ev: Evidence, runs: pd.DataFrame) -> None:
    frames = []
    for _, r in runs.iterrows():
        p = Path(r["dir"]) / "xai" / "measures.parquet"
        if p.is_file():
            frames.append(pd.read_parquet(p).assign(model=r["model"], dataset=r["dataset"], fold=r["fold"]))
            imgs = sorted((Path(r["dir"]) / "xai").glob("*.png"))[:4]
            key = f"{r['model']} on {r['dataset']} (fold {r['fold']})"
            ev.xai_images[key] = [(i.stem, base64.b64encode(i.read_bytes()).decode()) for i in imgs]
    if not frames:
        return
    df = pd.concat(frames, ignore_index=True)
    if "energy_in_gt" in df and "energy_share" not in df:  # measures written before the column was renamed
        df = df.rename(columns={"energy_in_gt": "energy_share"})
    if "method" not in df:
        df = df.assign(method="gradcam")
    cols = [c for c in ("energy_share", "deletion_auc") if c in df]
    out = []
    for c in cols:
        part = df.dropna(subset=[c])
        if part.empty:
            continue
        t = stats.ci_table(part, value=c, by=("dataset", "model", "method"), n_boot=500)
        out.append(t.assign(measure=c))
    ev.xai = pd.concat(out, ignore_index=True) if out else pd.DataFrame()
    ev.report["xai"] = [{"dataset": r.dataset, "model": r.model, "method": r.method, "measure": r.measure,
                         "estimate": float(r.estimate), "ci": [float(r.low), float(r.high)], "n_cases": int(r.n)}
                        for r in ev.xai.itertuples()]


def _curation(ev: Evidence, runs: pd.DataFrame) -> None:
    seen = set()
    for _, r in runs.sort_values(["dataset", "fold"]).iterrows():
        if r["dataset"] in seen:
            continue
        seen.add(r["dataset"])
        split = json.loads((Path(r["dir"]) / "split.json").read_text())
        dups = split.get("duplicates", [])
        ev.curation.append({
            "dataset": r["dataset"], "num_folds": split.get("num_folds"),
            "cases": len(split["train"]) + len(split["val"]) + len(split["test"]),
            "exact_duplicate_clusters": sum(1 for d in dups if d["kind"] == "exact"),
            "near_duplicate_clusters": sum(1 for d in dups if d["kind"] == "near"),
            "cases_in_duplicate_clusters": sum(len(d["ids"]) for d in dups),
            "policy": split.get("duplicate_policy", "group"), "removed": len(split.get("removed", [])),
            "examples": "; ".join(", ".join(d["ids"]) for d in dups[:3]),
        })
