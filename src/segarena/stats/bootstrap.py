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

This module is segarena's only bootstrap: :class:`Resample` draws the indices once for a list of cases and scores
any number of columns (models) on them; :func:`metric_terms` / :func:`bootstrap_score` pick the metric and the
reduction independently (smp-style ``metric`` x ``reduction``); the other functions are thin wrappers. The report,
``select`` and the cross-dataset gaps all use it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._errors import ConfigError

__all__ = ["CI", "METRICS", "REDUCTIONS", "Resample", "bootstrap_ci", "bootstrap_ratio_ci", "bootstrap_score",
           "ci_table", "metric_terms", "percentile_ci", "ratio_replicates"]

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


class Resample:
    """One set of bootstrap draws over ``n`` cases, shared by every model and pair that is scored on them.

    Cases with the same ``clusters`` label (the same case seen under several seeds or evaluations, or one
    patient's images) form one resampling unit that is drawn whole (Davison & Hinkley 1997, 3.8); with ``strata``
    (e.g. the fold) units are drawn within each stratum, as many as it holds. The draws are made once and kept
    as resample counts (``counts``: ``n_boot`` x units, how often each unit is drawn); :meth:`ratio` then scores
    any number of value columns on the same replicates (one matrix product), so a report's cost is linear in the number of models and every paired difference is a
    difference of two replicate vectors.
    """

    def __init__(self, n: int, *, n_boot: int = 2000, seed: int = 0, strata: Sequence | None = None,
                 clusters: Sequence | None = None) -> None:
        if strata is not None and len(strata) != n:
            raise ConfigError(f"strata has {len(strata)} labels for {n} values", fix="pass one label per value")
        if clusters is not None and len(clusters) != n:
            raise ConfigError(f"clusters has {len(clusters)} labels for {n} values", fix="pass one label per value")
        if n == 0:
            raise ConfigError("bootstrap needs at least one case", fix="pass one value per case")
        s = np.zeros(n, dtype=np.int64) if strata is None else pd.factorize(np.asarray(strata))[0]
        if clusters is None:
            self.codes, self.unit_stratum = np.arange(n), s
        else:
            c = pd.factorize(np.asarray(clusters))[0]  # (stratum, cluster) as one integer, numbered by first sight
            self.codes, uniq = pd.factorize(s.astype(np.int64) * (int(c.max()) + 1) + c)
            self.unit_stratum = uniq // (int(c.max()) + 1)
        self.n, self.n_units, self.n_boot, self.seed = n, int(self.codes.max()) + 1, n_boot, seed
        rng = np.random.default_rng(seed)
        groups = [np.flatnonzero(self.unit_stratum == k) for k in range(self.unit_stratum.max() + 1)]
        # Resample *counts*, not copies: counts[b, u] is how often unit u is drawn in replicate b, so a replicate's
        # sum is one row of ``counts @ unit_sums`` (a matrix product) and no (replicates x cases x models) array is
        # ever made. uint16 holds any count: a unit can be drawn at most as often as its stratum has units.
        big = max(g.size for g in groups) >= np.iinfo(np.uint16).max
        self.counts = np.zeros((n_boot, self.n_units), dtype=np.uint32 if big else np.uint16)
        for start in range(0, n_boot, _CHUNK):  # the same draws, in the same order, as the copying version
            b = min(_CHUNK, n_boot - start)
            rows = np.arange(b)[:, None]
            for g in groups:
                local = rng.integers(0, g.size, size=(b, g.size))
                self.counts[start:start + b, g] = np.bincount((local + rows * g.size).ravel(),
                                                              minlength=b * g.size).reshape(b, g.size)

    def unit_sums(self, values: np.ndarray) -> np.ndarray:
        """Per-unit sums of one value per case (``n``) or of columns (``n`` x ``m``)."""
        v = np.asarray(values, dtype=np.float64)
        if v.shape[0] != self.n:
            raise ConfigError(f"{v.shape[0]} values for a resample of {self.n} cases", fix="pass one value per case")
        if v.ndim == 1:
            return np.bincount(self.codes, weights=v, minlength=self.n_units)
        out = np.zeros((self.n_units, v.shape[1]))
        np.add.at(out, self.codes, v)
        return out

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Resampled sums: ``n_boot`` (or ``n_boot`` x ``m`` for ``n`` x ``m`` values), ``counts @ unit sums``."""
        u = self.unit_sums(values)
        out = np.empty((self.n_boot, *u.shape[1:]))
        for start in range(0, self.n_boot, _CHUNK):
            out[start:start + _CHUNK] = self.counts[start:start + _CHUNK].astype(np.float64) @ u
        return out

    def ratio(self, num: np.ndarray, den: np.ndarray | None = None) -> np.ndarray:
        """Replicates of ``sum(num) / sum(den)`` (``den`` = 1 per case: the mean); NaN where the sum of den is 0."""
        num_a = np.asarray(num, dtype=np.float64)
        den_a = np.ones_like(num_a) if den is None else np.asarray(den, dtype=np.float64)
        if num_a.shape != den_a.shape:
            raise ConfigError(f"num and den differ in shape: {num_a.shape} vs {den_a.shape}",
                              fix="pass one value per case")
        if not (np.all(np.isfinite(num_a)) and np.all(np.isfinite(den_a))):
            raise ConfigError("bootstrap values contain NaN or inf", fix="apply the empty-mask policy before the CI")
        s_num, s_den = self.sums(num_a), self.sums(den_a)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(s_den != 0, s_num / np.where(s_den != 0, s_den, 1), np.nan)


def ratio_replicates(num: Sequence[float], den: Sequence[float] | None = None, *, n_boot: int = 2000,
                     seed: int = 0, strata: Sequence | None = None, clusters: Sequence | None = None) -> np.ndarray:
    """``n_boot`` bootstrap replicates of ``sum(num) / sum(den)`` (``den`` = 1 per case gives the mean).

    Within each stratum, units (cases, or clusters when given) are drawn with replacement, as many as the
    stratum has. Replicates whose denominator is 0 are NaN. A thin wrapper of :class:`Resample`.
    """
    num_a = np.asarray(num, dtype=np.float64)
    den_a = np.ones_like(num_a) if den is None else np.asarray(den, dtype=np.float64)
    if num_a.ndim != 1 or num_a.shape != den_a.shape or num_a.size == 0:
        raise ConfigError(f"bootstrap needs two non-empty 1D arrays of equal length, got {num_a.shape} and "
                          f"{den_a.shape}", fix="pass one value per case")
    return Resample(num_a.size, n_boot=n_boot, seed=seed, strata=strata, clusters=clusters).ratio(num_a, den_a)


def percentile_ci(estimate: float, reps: np.ndarray, level: float = 0.95, n: int = 0) -> CI:
    """The percentile interval of bootstrap replicates around a point estimate (NaN replicates ignored)."""
    return _ci(estimate, np.asarray(reps, dtype=np.float64), level, n)


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


#: metric -> (numerator, denominator) of its pooled form, from summed counts (smp's ``micro`` reduction)
METRICS: dict[str, tuple[str, str]] = {"dice": ("2tp", "2tp+fp+fn"), "iou": ("tp", "tp+fp+fn"),
                                       "precision": ("tp", "tp+fp"), "recall": ("tp", "tp+fn")}
#: ``pooled``: sum(num) / sum(den) over cases (the paper's mDSC for Dice; smp ``micro``); ``case``: the mean over
#: cases of each case's value, read from the per-case column of that name (empty-mask policy applied upstream;
#: smp ``micro-imagewise``)
REDUCTIONS = ("pooled", "case")


def metric_terms(cases: pd.DataFrame, metric: str = "dice", reduction: str = "pooled") -> tuple[np.ndarray,
                                                                                              np.ndarray]:
    """Per-case numerator and denominator whose ratio of sums is ``metric`` under ``reduction``.

    ``cases`` has one row per case with summed counts ``tp, fp, fn`` (pooled) or the per-case ``metric`` column
    (case). Any metric x reduction pair is then bootstrapped by the same :class:`Resample`.
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}", fix=f"use one of {', '.join(METRICS)}")
    if reduction == "pooled":
        need = ["tp", "fp", "fn"]
    elif reduction == "case":
        need = [metric]
    else:
        raise ConfigError(f"unknown reduction {reduction!r}", fix=f"use one of {', '.join(REDUCTIONS)}")
    missing = [c for c in need if c not in cases.columns]
    if missing:
        raise ConfigError(f"columns {missing} not in the per-case table (has {list(cases.columns)})",
                          fix="pass one row per case with tp, fp, fn and the per-case metric")
    if reduction == "case":
        v = cases[metric].to_numpy(dtype=np.float64)
        return v, np.ones_like(v)
    tp, fp, fn = (cases[c].to_numpy(dtype=np.float64) for c in ("tp", "fp", "fn"))
    num = {"dice": 2 * tp, "iou": tp, "precision": tp, "recall": tp}[metric]
    den = {"dice": 2 * tp + fp + fn, "iou": tp + fp + fn, "precision": tp + fp, "recall": tp + fn}[metric]
    return num, den


def bootstrap_score(cases: pd.DataFrame, metric: str = "dice", reduction: str = "pooled", *,
                    resample: Resample | None = None, level: float = 0.95, n_boot: int = 2000, seed: int = 0,
                    strata: str | None = None, clusters: str | None = None) -> CI:
    """``metric`` under ``reduction`` over the rows of ``cases``, with its percentile-bootstrap CI.

    Pass a shared ``resample`` (drawn once for a dataset's case list, rows in the same order) to score several
    models on the same replicates; otherwise one is drawn here, clustered by the ``clusters`` column (e.g.
    ``"case_id"`` when a case appears once per seed) and stratified by ``strata``.
    """
    num, den = metric_terms(cases, metric, reduction)
    if resample is None:
        resample = Resample(len(cases), n_boot=n_boot, seed=seed,
                            strata=None if strata is None else cases[strata].to_numpy(),
                            clusters=None if clusters is None else cases[clusters].to_numpy())
    reps = resample.ratio(num, den)
    est = float(num.sum() / den.sum()) if den.sum() != 0 else float("nan")
    return _ci(est, reps, level, resample.n_units)


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
