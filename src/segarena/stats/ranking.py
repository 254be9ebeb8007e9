"""Rankings: per-dataset ranks, the consensus across datasets, and how stable ranks are under bootstrap.

Following challengeR (Wiesenfarth et al., Sci. Rep. 2021): within a dataset, models are ranked by their
aggregated score ("aggregate then rank", mean over cases by default; rank 1 = best, ties share the mean rank);
the consensus ranking across datasets is the mean of the per-dataset ranks; stability is shown by bootstrapping
the cases (the same resample for every model, so the comparison stays paired), re-ranking each replicate, and
summarizing the rank distribution per model and the agreement (Kendall's tau) of replicate rankings with the
full-data ranking.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as st

from .._errors import ConfigError
from .bootstrap import Resample

__all__ = ["bootstrap_ranks", "consensus_ranking", "rank_stability", "rank_summary", "rank_table"]

def _need(df: pd.DataFrame, cols: Sequence[str | None]) -> None:
    missing = [c for c in cols if c is not None and c not in df.columns]
    if missing:
        raise ConfigError(f"columns {missing} not in the results table (has {list(df.columns)})",
                          fix="check the column arguments")


def _rank(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Ranks along the last axis, 1 = best, ties averaged."""
    return st.rankdata(-values if higher_is_better else values, axis=-1, method="average")


def rank_table(df: pd.DataFrame, value: str = "value", *, model: str = "model", by: Sequence[str] = ("dataset",),
               higher_is_better: bool = True) -> pd.DataFrame:
    """Mean ``value`` and rank of each model within each group of ``by``: columns ``*by, model, score, rank``."""
    by = list(by)
    _need(df, [value, model, *by])
    scores = df.groupby([*by, model], sort=True, observed=True)[value].mean().rename("score").reset_index()
    grouped = scores.groupby(by, sort=False)["score"] if by else [(None, scores["score"])]
    scores["rank"] = np.nan
    for _, s in grouped:
        scores.loc[s.index, "rank"] = _rank(s.to_numpy(), higher_is_better)
    return scores


def consensus_ranking(ranks: pd.DataFrame, *, model: str = "model") -> pd.DataFrame:
    """Consensus across datasets from :func:`rank_table`: mean rank per model (challengeR's "average" method),
    then the rank of that mean. Columns ``model, mean_rank, n_datasets, consensus_rank``, best first."""
    _need(ranks, [model, "rank"])
    out = ranks.groupby(model, observed=True)["rank"].agg(mean_rank="mean", n_datasets="count").reset_index()
    out["consensus_rank"] = st.rankdata(out["mean_rank"].to_numpy(), method="min")
    return out.sort_values(["consensus_rank", model], kind="stable").reset_index(drop=True)


def bootstrap_ranks(df: pd.DataFrame, value: str = "value", *, model: str = "model",
                    pair_on: Sequence[str] = ("case_id",), by: Sequence[str] = ("dataset",), n_boot: int = 1000,
                    seed: int = 0, higher_is_better: bool = True) -> pd.DataFrame:
    """Rank of every model in each of ``n_boot`` case resamples, per group of ``by``.

    Only cases evaluated for every model of the group are used (rows of one pair key are averaged, e.g. over
    seeds). Returns tidy rows ``*by, replicate, model, rank``.
    """
    by = list(by)
    _need(df, [value, model, *pair_on, *by])
    parts = []
    for key, g in (df.groupby(by, sort=True) if by else [((), df)]):
        key = key if isinstance(key, tuple) else (key,)
        mat = g.pivot_table(index=list(pair_on), columns=model, values=value, aggfunc="mean",
                            observed=True).dropna()
        if mat.empty:
            raise ConfigError(f"no case is evaluated for every model in {dict(zip(by, key))}",
                              fix="rank on a complete set of runs")
        vals = mat.to_numpy(dtype=np.float64)
        res = Resample(vals.shape[0], n_boot=n_boot, seed=seed)  # one draw, shared by every model of the group
        ranks = _rank(res.ratio(vals), higher_is_better)
        part = pd.DataFrame({"replicate": np.repeat(np.arange(n_boot), vals.shape[1]),
                             model: np.tile(mat.columns.to_numpy(), n_boot), "rank": ranks.ravel()})
        for c, v in zip(by, key):
            part.insert(by.index(c), c, v)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def rank_summary(boot: pd.DataFrame, *, model: str = "model", by: Sequence[str] = ("dataset",),
                 level: float = 0.95) -> pd.DataFrame:
    """Per group and model: ``mean_rank, median_rank, low, high`` (percentile interval) and ``p_first`` (the
    fraction of replicates in which the model has the best rank of its replicate, so every model of a tie for
    first counts, however many share it)."""
    by = list(by)
    _need(boot, [model, "rank", *by])
    a = (1 - level) / 2
    g = boot.groupby([*by, model], observed=True)["rank"]
    out = g.agg(mean_rank="mean", median_rank="median").reset_index()
    out["low"] = g.quantile(a).to_numpy()
    out["high"] = g.quantile(1 - a).to_numpy()
    # first = sharing the best rank of its replicate: with ties averaged, a three-way tie for first has rank 2
    best = boot.groupby([*by, "replicate"], observed=True)["rank"].transform("min")
    first = (boot["rank"] == best).astype(float)
    out["p_first"] = first.groupby([boot[c] for c in [*by, model]], observed=True).mean().to_numpy()
    return out


def rank_stability(boot: pd.DataFrame, full: pd.DataFrame, *, model: str = "model",
                   by: Sequence[str] = ("dataset",)) -> pd.DataFrame:
    """Kendall's tau-b between each replicate's ranking and the full-data ranking (:func:`rank_table`), per
    group: ``*by, kendall_mean, kendall_median, kendall_low`` (2.5 % quantile). 1 = ranks never change."""
    by = list(by)
    _need(boot, [model, "rank", "replicate", *by])
    _need(full, [model, "rank", *by])
    rows = []
    for key, g in (boot.groupby(by, sort=True) if by else [((), boot)]):
        key = key if isinstance(key, tuple) else (key,)
        ref = full
        for c, v in zip(by, key):
            ref = ref[ref[c] == v]
        ref_rank = ref.set_index(model)["rank"]
        wide = g.pivot(index="replicate", columns=model, values="rank")
        r0 = ref_rank.reindex(wide.columns).to_numpy()
        taus = np.array([st.kendalltau(r0, row).statistic for row in wide.to_numpy()])
        taus = taus[np.isfinite(taus)]  # undefined where one ranking is all ties
        rows.append({**dict(zip(by, key)), "kendall_mean": float(taus.mean()) if taus.size else np.nan,
                     "kendall_median": float(np.median(taus)) if taus.size else np.nan,
                     "kendall_low": float(np.quantile(taus, 0.025)) if taus.size else np.nan})
    return pd.DataFrame(rows)
