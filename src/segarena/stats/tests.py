"""Hypothesis tests: paired comparisons on the same cases, and Friedman + Nemenyi across datasets.

* **Paired, per dataset** (every pair of models on the cases both were evaluated on): two-sided Wilcoxon
  signed-rank test (scipy; zero differences dropped, scipy's default ``zero_method="wilcox"``), Holm's step-down
  correction over all pairs of one dataset and metric (Holm 1979), the matched-pairs rank-biserial correlation
  ``r = (W+ - W-) / (W+ + W-)`` as effect size (Kerby 2014; same ranks as the test, zeros dropped), and the mean
  difference with a paired percentile-bootstrap CI.
* **Across datasets** (Demšar 2006): Friedman test on the models' average ranks over blocks (datasets, or
  dataset x fold), the Iman-Davenport F correction, and the Nemenyi post-hoc critical difference
  ``CD = q_alpha sqrt(k (k + 1) / (6 N))`` with ``q_alpha = studentized_range.ppf(1 - alpha, k, inf) / sqrt(2)``.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as st

from .._errors import ConfigError
from .bootstrap import Resample, bootstrap_ci, percentile_ci

__all__ = ["FriedmanResult", "average_ranks", "describe_comparisons", "friedman_nemenyi", "holm",
           "nemenyi_cd", "nemenyi_q", "pairwise_comparisons", "rank_biserial", "wilcoxon_paired"]


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values: sorted ascending, ``p_(i) * (m - i)``, made monotone, capped at 1. NaN stays NaN."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adj, 1.0)
    return out


def rank_biserial(a: Sequence[float], b: Sequence[float]) -> float:
    """Matched-pairs rank-biserial correlation of ``a - b`` in [-1, 1]: +1 when every nonzero difference favours a."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    r = st.rankdata(np.abs(d))
    w_plus, w_minus = r[d > 0].sum(), r[d < 0].sum()
    return float((w_plus - w_minus) / (w_plus + w_minus))


def wilcoxon_paired(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of ``a`` vs ``b``: (statistic, p). All-equal pairs give (0, 1)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size == 0 or not np.any(d != 0):
        return 0.0, 1.0
    res = st.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def _paired_matrix(df: pd.DataFrame, value: str, model: str, pair_on: Sequence[str]) -> pd.DataFrame:
    """Cases x models, one value per cell; duplicates of a pair key (several seeds of one case) are averaged."""
    return df.pivot_table(index=list(pair_on), columns=model, values=value, aggfunc="mean", observed=True)


def pairwise_comparisons(df: pd.DataFrame, value: str = "value", *, model: str = "model",
                         pair_on: Sequence[str] = ("case_id",), by: Sequence[str] = ("dataset",),
                         higher_is_better: bool = True, alpha: float = 0.05, n_boot: int = 2000,
                         seed: int = 0) -> pd.DataFrame:
    """Every pair of models compared on the cases they share, within each group of ``by`` (e.g. dataset).

    ``pair_on`` names what makes a pair (the case; add ``"fold"`` if case ids repeat across folds). Several
    rows per model and pair key (several seeds) are averaged first. Holm's correction runs over all pairs of
    one group. Columns: the ``by`` columns, ``model_a, model_b, n, mean_a, mean_b, mean_diff, diff_low,
    diff_high, statistic, p, p_holm, rank_biserial, significant, better`` (``better`` is the model with the
    better mean when significant, else ``None``). ``mean_diff = mean_a - mean_b``.
    """
    by = list(by)
    need = [value, model, *pair_on, *by]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ConfigError(f"columns {missing} not in the results table (has {list(df.columns)})",
                          fix="check value=, model=, pair_on= and by=")
    groups = df.groupby(by, sort=True) if by else [((), df)]
    rows: list[dict[str, Any]] = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        mat = _paired_matrix(g, value, model, pair_on)
        # one set of draws over the cases every model has, shared by every pair on exactly those cases (the
        # difference of two replicate columns): linear, not quadratic, in the number of models. A pair with
        # other cases draws its own; with the same seed and case count both give the same replicates.
        full = mat.dropna()
        shared = Resample(len(full), n_boot=n_boot, seed=seed).ratio(full.to_numpy(np.float64)) if len(full) \
            else None
        col = {m: j for j, m in enumerate(full.columns)}
        start = len(rows)
        for a, b in itertools.combinations(sorted(mat.columns, key=str), 2):
            pair = mat[[a, b]].dropna()
            xa, xb = pair[a].to_numpy(), pair[b].to_numpy()
            row = {**dict(zip(by, key)), "model_a": a, "model_b": b, "n": len(pair)}
            if len(pair) == 0:
                rows.append({**row, "p": np.nan})
                continue
            stat, p = wilcoxon_paired(xa, xb)
            if shared is not None and len(pair) == len(full):
                ci = percentile_ci(float((xa - xb).mean()), shared[:, col[a]] - shared[:, col[b]], n=len(pair))
            else:
                ci = bootstrap_ci(xa - xb, n_boot=n_boot, seed=seed)
            rows.append({**row, "mean_a": xa.mean(), "mean_b": xb.mean(), "mean_diff": ci.estimate,
                         "diff_low": ci.low, "diff_high": ci.high, "statistic": stat, "p": p,
                         "rank_biserial": rank_biserial(xa, xb)})
        block = rows[start:]
        for r, ph in zip(block, holm([r["p"] for r in block])):
            r["p_holm"] = ph
            r["significant"] = bool(ph < alpha) if np.isfinite(ph) else False
            a_wins = (r.get("mean_diff", 0.0) > 0) == higher_is_better
            r["better"] = (r["model_a"] if a_wins else r["model_b"]) if r["significant"] else None
    cols = [*by, "model_a", "model_b", "n", "mean_a", "mean_b", "mean_diff", "diff_low", "diff_high",
            "statistic", "p", "p_holm", "rank_biserial", "significant", "better"]
    return pd.DataFrame(rows).reindex(columns=cols)


def _fmt_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}" if p < 0.01 else f"p={p:.2f}"


def describe_comparisons(comparisons: pd.DataFrame, metric: str = "Dice", *, alpha: float = 0.05,
                         by: Sequence[str] = ("dataset",)) -> list[str]:
    """Plain-language sentences from :func:`pairwise_comparisons`, one per pair, e.g.
    "A and B are statistically tied on Dice on isic (p=0.41, Holm)." or
    "C is significantly worse than A on Dice on isic (p<0.001, Holm; mean difference -0.021 [-0.030, -0.012])."
    """
    out = []
    for _, r in comparisons.iterrows():
        where = "".join(f" on {r[c]}" for c in by if c in comparisons.columns)
        p = r["p_holm"]
        if not np.isfinite(p):
            out.append(f"{r['model_a']} and {r['model_b']} share no cases{where}; not compared.")
        elif p >= alpha:
            out.append(f"{r['model_a']} and {r['model_b']} are statistically tied on {metric}{where} "
                       f"({_fmt_p(p)}, Holm).")
        else:
            worse = r["model_b"] if r["better"] == r["model_a"] else r["model_a"]
            if r["better"] == r["model_a"]:  # report the difference as worse - better
                d, lo, hi = -r["mean_diff"], -r["diff_high"], -r["diff_low"]
            else:
                d, lo, hi = r["mean_diff"], r["diff_low"], r["diff_high"]
            out.append(f"{worse} is significantly worse than {r['better']} on {metric}{where} ({_fmt_p(p)}, Holm; "
                       f"mean difference {d:.3g} [{lo:.3g}, {hi:.3g}]).")
    return out


def average_ranks(scores: pd.DataFrame, higher_is_better: bool = True) -> pd.Series:
    """Average rank of each model (columns) over blocks (rows); rank 1 is best, ties get the mean rank."""
    vals = scores.to_numpy(dtype=np.float64)
    ranks = st.rankdata(-vals if higher_is_better else vals, axis=1, method="average")
    return pd.Series(ranks.mean(axis=0), index=scores.columns, name="avg_rank")


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """Critical value of the Nemenyi test for ``k`` models: studentized range quantile / sqrt(2) (Demšar 2006)."""
    if k < 2:
        raise ConfigError(f"the Nemenyi test needs at least 2 models, got {k}", fix="compare more models")
    return float(st.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def nemenyi_cd(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Critical difference of average ranks for ``k`` models over ``n_blocks`` blocks (datasets)."""
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n_blocks))


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman test and Nemenyi post-hoc over ``n_blocks`` blocks and ``k`` models."""

    avg_ranks: dict[str, float]
    chi2: float
    p: float
    iman_davenport_f: float
    iman_davenport_p: float
    cd: float
    alpha: float
    n_blocks: int
    k: int
    nemenyi_p: dict[tuple[str, str], float]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["nemenyi_p"] = {f"{a} vs {b}": p for (a, b), p in self.nemenyi_p.items()}
        return d


def friedman_nemenyi(df: pd.DataFrame, value: str = "value", *, model: str = "model",
                     block: Sequence[str] = ("dataset",), higher_is_better: bool = True,
                     alpha: float = 0.05) -> FriedmanResult:
    """Friedman test + Nemenyi post-hoc of the models' scores over blocks.

    One score per model and block: rows of the same (block, model) are averaged first (e.g. per-case Dice to a
    dataset mean; pass a table of pooled scores to rank on those). Only models present in every block enter.
    ``nemenyi_p`` holds the pairwise Nemenyi p-values, ``studentized_range.sf(|R_i - R_j| / se * sqrt(2), k, inf)``
    with ``se = sqrt(k (k + 1) / (6 N))``.
    """
    block = list(block)
    missing = [c for c in [value, model, *block] if c not in df.columns]
    if missing:
        raise ConfigError(f"columns {missing} not in the results table (has {list(df.columns)})",
                          fix="check value=, model= and block=")
    scores = df.pivot_table(index=block, columns=model, values=value, aggfunc="mean", observed=True).dropna(axis=1)
    n, k = scores.shape
    if k < 3 or n < 2:
        raise ConfigError(f"Friedman needs >= 3 models present in every block and >= 2 blocks, got {k} models "
                          f"over {n} blocks", fix="add models or blocks (e.g. block=('dataset', 'fold'))")
    chi2, p = st.friedmanchisquare(*[scores[c].to_numpy() for c in scores.columns])
    ranks = average_ranks(scores, higher_is_better)
    ff = (n - 1) * chi2 / (n * (k - 1) - chi2) if n * (k - 1) != chi2 else np.inf
    ff_p = float(st.f.sf(ff, k - 1, (k - 1) * (n - 1))) if np.isfinite(ff) else 0.0
    se = math.sqrt(k * (k + 1) / (6.0 * n))
    pairs = {(a, b): float(st.studentized_range.sf(abs(ranks[a] - ranks[b]) / se * math.sqrt(2), k, np.inf))
             for a, b in itertools.combinations(scores.columns, 2)}
    return FriedmanResult({str(m): float(r) for m, r in ranks.items()}, float(chi2), float(p), float(ff), ff_p,
                          nemenyi_cd(k, n, alpha), alpha, n, k, {(str(a), str(b)): v for (a, b), v in pairs.items()})
