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


def fig_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    try:
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception:  # noqa: BLE001 - Figures made without pyplot need no closing
        pass
    return base64.b64encode(buf.getvalue()).decode()


@dataclass
class Evidence:
    cases: pd.DataFrame  # one row per (model, dataset, fold, seed, case): dice, num, den, hd95, nsd
    ci: pd.DataFrame = field(default_factory=pd.DataFrame)  # pooled mDSC with bootstrap CI per model and dataset
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)
    sentences: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  # plain-language lines for the top of the report
    marks: dict[tuple[str, str], str] = field(default_factory=dict)  # (dataset, model) -> ★ / ≈ / ↓
    friedman: dict[str, Any] | None = None
    figures: dict[str, str] = field(default_factory=dict)  # name -> base64 PNG
    ranks: pd.DataFrame = field(default_factory=pd.DataFrame)
    consensus: pd.DataFrame = field(default_factory=pd.DataFrame)
    variance: pd.DataFrame = field(default_factory=pd.DataFrame)
    cross: dict[str, pd.DataFrame] = field(default_factory=dict)
    xai: pd.DataFrame = field(default_factory=pd.DataFrame)
    xai_images: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    curation: list[dict[str, Any]] = field(default_factory=list)


def case_table(runs: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for d in runs["dir"]:
        rec = pd.read_parquet(Path(d) / "records.parquet")
        agg = {"dice": "mean", "tp": "sum", "fp": "sum", "fn": "sum"}
        for c in ("hd95", "nsd", "assd"):
            if c in rec:
                agg[c] = "mean"
        g = rec.groupby(["model", "dataset", "fold", "seed", "case_id"], as_index=False).agg(agg)
        frames.append(g)
    cases = pd.concat(frames, ignore_index=True)
    cases["num"] = 2 * cases["tp"]
    cases["den"] = 2 * cases["tp"] + cases["fp"] + cases["fn"]
    return cases


def gather(runs: pd.DataFrame, root: Path, alpha: float = 0.05, n_boot: int = 1000) -> Evidence:
    ev = Evidence(cases=case_table(runs) if not runs.empty else pd.DataFrame())
    if ev.cases.empty:
        return ev
    cases = ev.cases
    ev.ci = stats.ci_table(cases, num="num", den="den", by=("dataset", "model"), strata="fold", n_boot=n_boot)
    _comparisons(ev, alpha, n_boot)
    _ranking(ev, n_boot)
    _variance(ev)
    _pareto(ev, runs)
    _cross(ev, root)
    _xai(ev, runs)
    _curation(ev, runs)
    return ev


def _comparisons(ev: Evidence, alpha: float, n_boot: int) -> None:
    cases = ev.cases
    multi = cases.groupby("dataset")["model"].nunique()
    if (multi < 2).all():
        for ds, g in ev.ci.groupby("dataset"):
            r = g.iloc[0]
            ev.summary.append(f"On {ds}, only {r['model']} was evaluated: mDSC {r['estimate'] * 100:.1f}% "
                              f"(95% CI {r['low'] * 100:.1f}–{r['high'] * 100:.1f}).")
        return
    ev.comparisons = stats.pairwise_comparisons(cases, "dice", pair_on=("case_id", "fold"), by=("dataset",),
                                                alpha=alpha, n_boot=n_boot)
    ev.sentences = stats.describe_comparisons(ev.comparisons, "per-case Dice")
    for ds, g in ev.ci.groupby("dataset"):
        g = g.sort_values("estimate", ascending=False)
        best = g.iloc[0]["model"]
        ev.marks[(ds, best)] = "★"
        tied, worse = [], []
        comp = ev.comparisons[ev.comparisons["dataset"] == ds]
        for m in g["model"].iloc[1:]:
            row = comp[((comp["model_a"] == best) & (comp["model_b"] == m)) |
                       ((comp["model_a"] == m) & (comp["model_b"] == best))]
            if row.empty or not np.isfinite(row.iloc[0]["p_holm"]):
                continue
            p = row.iloc[0]["p_holm"]
            if p >= alpha:
                ev.marks[(ds, m)] = "≈"
                tied.append(f"{m} (p={p:.2g})")
            else:
                ev.marks[(ds, m)] = "↓"
                worse.append(f"{m} (p={p:.2g})" if p >= 0.001 else f"{m} (p<0.001)")
        b = g.iloc[0]
        line = (f"On {ds}, {best} has the highest mDSC, {b['estimate'] * 100:.1f}% (95% CI "
                f"{b['low'] * 100:.1f}–{b['high'] * 100:.1f}).")
        if tied:
            line += f" Statistically tied with it on per-case Dice: {', '.join(tied)}."
        if worse:
            line += f" Significantly worse: {', '.join(worse)}."
        ev.summary.append(line + " (Wilcoxon signed-rank on the same test cases, Holm-corrected.)")


def _ranking(ev: Evidence, n_boot: int) -> None:
    cases = ev.cases
    if cases["model"].nunique() < 2:
        return
    full = stats.rank_table(cases, "dice", by=("dataset",))
    ev.consensus = stats.consensus_ranking(full)
    boot = stats.bootstrap_ranks(cases, "dice", pair_on=("case_id", "fold"), by=("dataset",), n_boot=n_boot)
    ev.ranks = stats.rank_summary(boot, by=("dataset",))
    ev.figures["rank_stability"] = fig_png(stats.rank_blob_plot(boot, by="dataset",
                                                                title="bootstrap rank distributions"))
    datasets = cases["dataset"].nunique()
    models_everywhere = cases.groupby("model")["dataset"].nunique()
    models_everywhere = models_everywhere[models_everywhere == datasets].index
    sub = cases[cases["model"].isin(models_everywhere)]
    if len(models_everywhere) < 3:  # Friedman + Nemenyi compare three or more models; two: see pairwise tests
        return
    if datasets >= 3:  # Demšar: blocks are datasets, scores the pooled mDSC
        pooled = ev.ci[ev.ci["model"].isin(models_everywhere)].rename(columns={"estimate": "mdsc"})
        res = stats.friedman_nemenyi(pooled, "mdsc", block=("dataset",))
        blocks = f"{datasets} datasets (pooled mDSC)"
    else:  # too few datasets for a meaningful test: blocks are the test cases
        res = stats.friedman_nemenyi(sub, "dice", block=("dataset", "fold", "case_id"))
        blocks = f"{res.n_blocks} test cases (per-case Dice), since fewer than 3 datasets"
    ev.friedman = {**res.to_dict(), "blocks": blocks}
    ev.figures["cd_diagram"] = fig_png(stats.cd_diagram(res.avg_ranks, res.cd,
                                                        title=f"Nemenyi CD = {res.cd:.2f} over {blocks}"))


def _variance(ev: Evidence) -> None:
    if ev.cases["seed"].nunique() > 1:
        per_run = ev.cases.groupby(["model", "dataset", "fold", "seed"], as_index=False)[["num", "den"]].sum()
        per_run["mdsc"] = per_run["num"] / per_run["den"]
        ev.variance = stats.seed_fold_variance(per_run, "mdsc")


def _pareto(ev: Evidence, runs: pd.DataFrame) -> None:
    from ..metrics.efficiency import pareto_plot

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
    from ..runner.crossdata import generalization_gaps, matrix, ood_ranking

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
    cols = [c for c in ("energy_in_gt", "deletion_auc") if c in df]
    out = []
    for c in cols:
        t = stats.ci_table(df.dropna(subset=[c]), value=c, by=("dataset", "model"), n_boot=500)
        out.append(t.assign(measure=c))
    ev.xai = pd.concat(out, ignore_index=True) if out else pd.DataFrame()


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
