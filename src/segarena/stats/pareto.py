"""The accuracy-cost Pareto front and its plot, over a table of (model, cost, score) rows.

numpy, pandas and matplotlib only (no torch), so a report can draw it without importing a model library; the
cost numbers themselves are measured by :mod:`segarena.metrics.efficiency`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["pareto_front", "pareto_plot"]


def pareto_front(df: pd.DataFrame, cost: str = "macs", score: str = "mdsc", *,
                 higher_is_better: bool = True) -> pd.Series:
    """Boolean mask of the rows on the Pareto front: no other row is at most as costly *and* at least as good,
    with one of the two strictly. Lower cost is always better; ``higher_is_better`` is about ``score``."""
    missing = [c for c in (cost, score) if c not in df.columns]
    if missing:
        raise ConfigError(f"columns {missing} not in the table (has {list(df.columns)})", fix="name cost= and score=")
    c = df[cost].to_numpy(dtype=np.float64)
    s = df[score].to_numpy(dtype=np.float64) * (1 if higher_is_better else -1)
    ok = np.isfinite(c) & np.isfinite(s)
    no_worse = (c[None, :] <= c[:, None]) & (s[None, :] >= s[:, None])  # [i, j]: j is no worse than i
    better = (c[None, :] < c[:, None]) | (s[None, :] > s[:, None])
    dominated = (no_worse & better & ok[None, :]).any(axis=1)
    return pd.Series(ok & ~dominated, index=df.index, name="pareto")


def pareto_plot(df: pd.DataFrame, cost: str = "macs", score: str = "mdsc", *, label: str = "model",
                higher_is_better: bool = True, log_cost: bool = True, group: str | None = "family",
                cost_label: str | None = None, score_label: str | None = None,
                title: str | None = None) -> Figure:
    """Accuracy vs cost scatter with each point labelled, coloured by ``group`` when present, and the Pareto
    front drawn as a step line. Returns a ``matplotlib.figure.Figure``."""
    from matplotlib.figure import Figure

    front = pareto_front(df, cost, score, higher_is_better=higher_is_better)
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    groups = df.groupby(group, sort=True) if group and group in df.columns else [(None, df)]
    for i, (key, g) in enumerate(groups):
        ax.scatter(g[cost], g[score], color=f"C{i}", label=None if key is None else str(key), zorder=3)
    for _, r in df.iterrows():
        ax.annotate(str(r[label]) if label in df.columns else "", (r[cost], r[score]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    f = df[front].sort_values(cost)
    if len(f) > 1:
        ax.step(f[cost], f[score], where="post", color="k", lw=1, alpha=0.6, label="Pareto front", zorder=2)
    if log_cost:
        ax.set_xscale("log")
    ax.set_xlabel(cost_label or cost)
    ax.set_ylabel(score_label or score)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig
