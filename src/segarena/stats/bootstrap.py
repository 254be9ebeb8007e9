"""Seeded percentile-bootstrap confidence intervals for a mean and for a pooled ratio metric.

Both are one computation: a *ratio of sums* over resampled units, ``sum(num) / sum(den)``. A mean over cases is
the ratio with ``den = 1``; a pooled Dice over cases is the ratio with ``num = 2 TP`` and ``den = 2 TP + FP + FN``
of each case, so resampling cases and recomputing the pooled ratio is exactly what a pooled metric needs (a mean
of per-case ratios would answer another question).

Resampling schemes (Efron & Tibshirani 1993; Davison & Hinkley 1997):

* plain: cases drawn with replacement;
* ``strata`` (e.g. the fold): cases drawn with replacement *within* each stratum, keeping each stratum's size, so
  every replicate has the cross-validation structure of the data;
* ``clusters`` (e.g. the patient, or the fold): whole clusters drawn with replacement, all cases of a drawn
  cluster enter together, for cases that are not independent. Strata and clusters can be combined (clusters are
  then drawn within strata).

The interval is the percentile interval of ``n_boot`` replicates; a fixed ``seed`` makes it reproducible.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._errors import ConfigError

__all__ = ["CI", "bootstrap_ci", "bootstrap_ratio_ci", "ci_table", "ratio_replicates"]

_CHUNK = 256  # replicates per block, so memory stays ~ _CHUNK x units


@dataclass(frozen=True)
class CI:
    """A point estimate with its percentile-bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float = 0.95
    n: int = 0
    n_boot: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}]"


def _units(num: np.ndarray, den: np.ndarray, clusters: Sequence | None,
           strata: Sequence | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Collapse cases to resampling units (clusters, or the cases themselves); return num, den, stratum per unit."""
    n = num.size
    s = np.zeros(n, dtype=np.int64) if strata is None else pd.factorize(np.asarray(strata))[0]
    if strata is not None and len(strata) != n:
        raise ConfigError(f"strata has {len(strata)} labels for {n} values", fix="pass one label per value")
    if clusters is None:
        return num, den, s
    if len(clusters) != n:
        raise ConfigError(f"clusters has {len(clusters)} labels for {n} values", fix="pass one label per value")
    key = pd.MultiIndex.from_arrays([s, np.asarray(clusters)])
    codes, uniq = pd.factorize(key)
    unit_num = np.bincount(codes, weights=num, minlength=len(uniq))
    unit_den = np.bincount(codes, weights=den, minlength=len(uniq))
    unit_stratum = np.asarray([u[0] for u in uniq], dtype=np.int64)
    return unit_num, unit_den, unit_stratum


def ratio_replicates(num: Sequence[float], den: Sequence[float] | None = None, *, n_boot: int = 2000,
                     seed: int = 0, strata: Sequence | None = None, clusters: Sequence | None = None) -> np.ndarray:
    """``n_boot`` bootstrap replicates of ``sum(num) / sum(den)`` (``den`` = 1 per case gives the mean).

    Within each stratum, units (cases, or clusters when given) are drawn with replacement, as many as the
    stratum has. Replicates whose denominator is 0 are NaN.
    """
    num_a = np.asarray(num, dtype=np.float64)
    den_a = np.ones_like(num_a) if den is None else np.asarray(den, dtype=np.float64)
    if num_a.ndim != 1 or num_a.shape != den_a.shape or num_a.size == 0:
        raise ConfigError(f"bootstrap needs two non-empty 1D arrays of equal length, got {num_a.shape} and "
                          f"{den_a.shape}", fix="pass one value per case")
    if not (np.all(np.isfinite(num_a)) and np.all(np.isfinite(den_a))):
        raise ConfigError("bootstrap values contain NaN or inf", fix="apply the empty-mask policy before the CI")
    u_num, u_den, u_str = _units(num_a, den_a, clusters, strata)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(u_str == k) for k in range(u_str.max() + 1)]
    out = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        b = min(_CHUNK, n_boot - start)
        s_num = np.zeros(b)
        s_den = np.zeros(b)
        for g in groups:
            idx = g[rng.integers(0, g.size, size=(b, g.size))]
            s_num += u_num[idx].sum(axis=1)
            s_den += u_den[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + b] = np.where(s_den != 0, s_num / np.where(s_den != 0, s_den, 1), np.nan)
    return out


def _ci(estimate: float, reps: np.ndarray, level: float, n: int) -> CI:
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must be in (0, 1), got {level}", fix="use e.g. 0.95")
    alpha = (1 - level) / 2
    finite = reps[np.isfinite(reps)]
    low, high = (np.quantile(finite, [alpha, 1 - alpha]) if finite.size else (np.nan, np.nan))
    return CI(float(estimate), float(low), float(high), level, n, int(reps.size))


def bootstrap_ci(values: Sequence[float], *, level: float = 0.95, n_boot: int = 2000, seed: int = 0,
                 strata: Sequence | None = None, clusters: Sequence | None = None) -> CI:
    """Percentile-bootstrap CI of the mean of ``values`` (one per case)."""
    v = np.asarray(values, dtype=np.float64)
    reps = ratio_replicates(v, None, n_boot=n_boot, seed=seed, strata=strata, clusters=clusters)
    return _ci(float(v.mean()), reps, level, v.size)


def bootstrap_ratio_ci(num: Sequence[float], den: Sequence[float], *, level: float = 0.95, n_boot: int = 2000,
                       seed: int = 0, strata: Sequence | None = None, clusters: Sequence | None = None) -> CI:
    """Percentile-bootstrap CI of the pooled ratio ``sum(num) / sum(den)``, resampling cases (or clusters).

    For the pooled Dice (the paper's mDSC) pass per-case ``num = 2*tp`` and ``den = 2*tp + fp + fn``, summed over
    the foreground classes of each case.
    """
    n_a, d_a = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    reps = ratio_replicates(n_a, d_a, n_boot=n_boot, seed=seed, strata=strata, clusters=clusters)
    est = float(n_a.sum() / d_a.sum()) if d_a.sum() != 0 else float("nan")
    return _ci(est, reps, level, n_a.size)


def ci_table(df: pd.DataFrame, value: str | None = None, *, num: str | None = None, den: str | None = None,
             by: Sequence[str] = ("model", "dataset"), strata: str | None = None, clusters: str | None = None,
             level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One CI per group of a tidy frame: the mean of ``value``, or the pooled ratio ``sum(num) / sum(den)``.

    ``strata`` / ``clusters`` name columns (e.g. ``"fold"``, ``"patient"``). Returns the ``by`` columns plus
    ``estimate, low, high, level, n, n_boot``. Every group uses the same seed, so two models with the same
    cases in the same order draw the same resamples.
    """
    if (value is None) == (num is None or den is None):
        raise ConfigError("ci_table needs either value=... (a mean) or num=... and den=... (a pooled ratio)",
                          fix="name the column(s) to summarize")
    by = list(by)
    missing = [c for c in [*by, value, num, den, strata, clusters] if c is not None and c not in df.columns]
    if missing:
        raise ConfigError(f"columns {missing} not in the results table (has {list(df.columns)})",
                          fix="check the column names")
    rows = []
    for key, g in df.groupby(by, sort=True, dropna=False):
        kw: dict[str, Any] = {"level": level, "n_boot": n_boot, "seed": seed,
                              "strata": None if strata is None else g[strata].to_numpy(),
                              "clusters": None if clusters is None else g[clusters].to_numpy()}
        ci = (bootstrap_ci(g[value].to_numpy(), **kw) if value is not None
              else bootstrap_ratio_ci(g[num].to_numpy(), g[den].to_numpy(), **kw))
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), **ci.to_dict()})
    return pd.DataFrame(rows)
