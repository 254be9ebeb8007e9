"""Cross-dataset transfer from the records ``segarena crossval`` writes (``crossdata.parquet``): the train x test
mDSC matrix per model, the generalization gaps with bootstrap intervals, and the out-of-domain ranking.

Pure table computation (numpy, pandas; no torch), so the report reads it without a model library; the
evaluation that produces the records is :mod:`segarena.runner.crossdata`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .bootstrap import Resample, metric_terms, percentile_ci

__all__ = ["cross_text", "generalization_gaps", "matrix", "ood_ranking"]


def matrix(records: pd.DataFrame) -> pd.DataFrame:
    """Pooled mDSC per (model, train, test), mean over folds/seeds: the train x test matrix per model."""
    if records.empty:
        return pd.DataFrame()
    per_run = records.groupby(["model", "train", "test", "fold", "seed"], observed=True,
                              as_index=False)[["tp", "fp", "fn"]].sum()
    num, den = metric_terms(per_run, "dice", "pooled")
    per_run["mdsc"] = np.where(den > 0, num / np.where(den > 0, den, 1), 1.0)  # both empty: 1, as metrics.mdsc
    return per_run.groupby(["model", "train", "test"], observed=True)["mdsc"].mean().reset_index()


def generalization_gaps(records: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """In-domain minus out-of-domain pooled mDSC per (model, train, test), with a bootstrap 95% CI that resamples
    the cases of both sides independently (pooled over folds/seeds). A case scored by several runs (every fold's
    model sees all out-of-domain cases; several seeds) is one cluster, drawn whole."""

    def side(part: pd.DataFrame, offset: int) -> tuple[float, np.ndarray]:
        cases = part.groupby(["fold", "seed", "case_id"], as_index=False)[["tp", "fp", "fn"]].sum()
        num, den = metric_terms(cases, "dice", "pooled")
        res = Resample(len(cases), n_boot=n_boot, seed=seed + offset, clusters=cases["case_id"].to_numpy())
        return float(num.sum() / den.sum()) if den.sum() else float("nan"), res.ratio(num, den)

    rows = []
    for (model, train), g in records.groupby(["model", "train"]):
        own = g[g["test"] == train]
        if own.empty:
            continue
        own_d, own_r = side(own, 0)
        for k, (test, ood) in enumerate(g[g["test"] != train].groupby("test")):
            ood_d, ood_r = side(ood, k + 1)
            ci = percentile_ci(own_d - ood_d, own_r - ood_r)
            rows.append({"model": model, "train": train, "test": test, "in_domain": own_d,
                         "out_of_domain": ood_d, "gap": ci.estimate, "gap_ci_low": ci.low, "gap_ci_high": ci.high})
    return pd.DataFrame(rows)


def ood_ranking(gaps: pd.DataFrame) -> pd.DataFrame:
    """Models ranked by mean out-of-domain mDSC, next to their in-domain rank."""
    if gaps.empty:
        return pd.DataFrame()
    g = gaps.groupby("model")[["in_domain", "out_of_domain", "gap"]].mean()
    g["ood_rank"] = g["out_of_domain"].rank(ascending=False, method="min").astype(int)
    g["in_domain_rank"] = g["in_domain"].rank(ascending=False, method="min").astype(int)
    return g.sort_values("ood_rank").reset_index()


def cross_text(mat: pd.DataFrame, gaps: pd.DataFrame) -> str:
    """The printed form of a cross-dataset evaluation: per model the train x test mDSC matrix, then the
    generalization gaps with their intervals and the out-of-domain ranking."""
    lines: list[str] = []
    for model, g in mat.groupby("model"):
        lines += [f"\n{model}: mDSC % (higher is better; rows: trained on, columns: tested on)",
                  g.pivot(index="train", columns="test", values="mdsc").mul(100).round(1).to_string()]
    if not gaps.empty:
        lines.append("\ngeneralization gap (in-domain - out-of-domain, mDSC percentage points, 95% bootstrap CI; "
                     "smaller is better):")
        lines += [f"  {r.model:<24} {r.train} -> {r.test}: {r.gap * 100:+.1f} "
                  f"[{r.gap_ci_low * 100:+.1f}, {r.gap_ci_high * 100:+.1f}]" for r in gaps.itertuples()]
        lines += ["\nranking by out-of-domain mDSC, higher first (in-domain rank beside):",
                  ood_ranking(gaps).to_string(index=False)]
    return "\n".join(lines)
