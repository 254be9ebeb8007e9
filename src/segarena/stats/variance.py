"""Seed-vs-fold variance decomposition: is a model's spread across folds data or luck?

Given one score per (fold, seed) run of a model on a dataset, a one-way random-effects ANOVA with the fold as
the group separates the variance between training seeds within a fold (optimization noise: initialization,
data order, augmentation draws) from the variance between folds (which cases are in the test set)
(Searle, Casella & McCulloch, *Variance Components*, 1992, ch. 3; method of moments, unbalanced-safe):

    MSW = sum_i sum_j (x_ij - mean_i)^2 / (N - a)            -> var_seed = MSW
    MSB = sum_i n_i (mean_i - mean)^2 / (a - 1)
    n0  = (N - sum_i n_i^2 / N) / (a - 1)                    -> var_fold = max(0, (MSB - MSW) / n0)

with ``a`` folds, ``n_i`` seeds in fold ``i`` and ``N`` runs. ``frac_seed = var_seed / (var_seed + var_fold)``:
near 1, the fold-to-fold "± std" that papers report is mostly seed noise; near 0, it is the data.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._errors import ConfigError

__all__ = ["seed_fold_variance"]


def _components(x: np.ndarray, fold: np.ndarray) -> dict[str, float]:
    codes, _ = pd.factorize(fold)
    a, n_total = codes.max() + 1, x.size
    n_i = np.bincount(codes, minlength=a).astype(np.float64)
    mean_i = np.bincount(codes, weights=x, minlength=a) / n_i
    grand = x.mean()
    out = {"n_folds": int(a), "n_runs": int(n_total), "mean": float(grand),
           "sd_fold_means": float(np.std(mean_i, ddof=1)) if a > 1 else np.nan}
    if a < 2 or n_total <= a:  # one fold, or one seed per fold: the two sources cannot be separated
        return {**out, "var_seed": np.nan, "var_fold": np.nan, "frac_seed": np.nan}
    msw = float(np.sum((x - mean_i[codes]) ** 2) / (n_total - a))
    msb = float(np.sum(n_i * (mean_i - grand) ** 2) / (a - 1))
    n0 = (n_total - np.sum(n_i ** 2) / n_total) / (a - 1)
    var_fold = max(0.0, (msb - msw) / n0)
    total = msw + var_fold
    return {**out, "var_seed": msw, "var_fold": var_fold, "frac_seed": msw / total if total > 0 else np.nan}


def seed_fold_variance(df: pd.DataFrame, value: str = "value", *, fold: str = "fold", seed: str = "seed",
                       by: Sequence[str] = ("model", "dataset")) -> pd.DataFrame:
    """Variance between seeds within folds vs between folds, per group of ``by`` (see the module docstring).

    ``df`` has one score per (group, fold, seed) run; several rows of one run (per-case values) are averaged
    first, which gives the mean-over-cases score of that run (pass pooled scores to decompose those). Columns:
    ``*by, n_folds, n_runs, mean, sd_fold_means, var_seed, var_fold, frac_seed``; ``var_*`` are NaN when no
    fold has two seeds.
    """
    by = list(by)
    missing = [c for c in [value, fold, seed, *by] if c not in df.columns]
    if missing:
        raise ConfigError(f"columns {missing} not in the results table (has {list(df.columns)})",
                          fix="pass one score per fold and seed with fold= and seed= columns")
    runs = df.groupby([*by, fold, seed], observed=True, sort=True)[value].mean().reset_index()
    rows = []
    for key, g in (runs.groupby(by, sort=True) if by else [((), runs)]):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), **_components(g[value].to_numpy(np.float64), g[fold].to_numpy())})
    return pd.DataFrame(rows)
