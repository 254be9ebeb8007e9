"""Figures for the statistics: the critical-difference diagram and the bootstrap rank ("blob") plot.

Both return a ``matplotlib.figure.Figure`` built without pyplot (no global state, no display needed); the
caller saves it (``fig.savefig(path)``). matplotlib is imported when a figure is drawn, not at package import.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["cd_cliques", "cd_diagram", "rank_blob_plot"]


def cd_cliques(avg_ranks: Mapping[str, float], cd: float) -> list[list[str]]:
    """Maximal groups of models (sorted by rank) whose average ranks all differ by less than ``cd``: the
    Nemenyi test cannot tell them apart (Demšar 2006). Groups of one model are left out."""
    items = sorted(avg_ranks.items(), key=lambda kv: kv[1])
    names = [n for n, _ in items]
    ranks = np.array([r for _, r in items])
    groups: list[list[str]] = []
    last_end = -1
    for i in range(len(ranks)):
        j = int(np.searchsorted(ranks, ranks[i] + cd, side="left")) - 1  # last j with r_j - r_i < cd
        if j > i and j > last_end:
            groups.append(names[i:j + 1])
            last_end = j
    return groups


def cd_diagram(avg_ranks: Mapping[str, float], cd: float, *, title: str | None = None,
               width: float = 8.0) -> Figure:
    """Critical-difference diagram: the rank axis (1 = best, on the left), each model's average rank, the CD
    bar, and thick lines joining models that are not significantly different (Demšar 2006, Fig. 1)."""
    from matplotlib.figure import Figure

    items = sorted(avg_ranks.items(), key=lambda kv: kv[1])
    k = len(items)
    lo, hi = 1, max(k, 2)
    half = (k + 1) // 2
    groups = cd_cliques(dict(items), cd)
    # vertical layout in inches, top to bottom: title, CD bar, tick labels, axis, cliques, one row per label
    top = 0.1 + (0.35 if title else 0.0)
    cd_in = top + 0.3
    axis_in = cd_in + 0.45
    first_in = axis_in + 0.2 + 0.12 * len(groups)
    height = first_in + 0.24 * max(half, k - half) + 0.05
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    left, right = 0.3, 0.7
    dy = 0.24 / height

    def x(r: float) -> float:
        return left + (r - lo) / (hi - lo) * (right - left)

    axis_y = axis_in / height
    if title:
        ax.text(0.5, 0.25 / height, title, ha="center", va="center", fontsize=11)
    ax.plot([x(lo), x(hi)], [axis_y, axis_y], color="k", lw=1)
    for t in range(lo, hi + 1):
        ax.plot([x(t), x(t)], [axis_y, axis_y - 0.05 / height], color="k", lw=1)
        ax.text(x(t), axis_y - 0.08 / height, str(t), ha="center", va="bottom", fontsize=9)
    # CD bar, above the axis on the left
    cd_y = cd_in / height
    ax.plot([x(lo), x(min(lo + cd, hi))], [cd_y, cd_y], color="k", lw=2)
    ax.text((x(lo) + x(min(lo + cd, hi))) / 2, cd_y - 0.04 / height, f"CD = {cd:.2f}", ha="center", va="bottom",
            fontsize=9)
    # cliques as thick bars just below the axis
    for g_i, g in enumerate(groups):
        yy = (axis_in + 0.12 + 0.12 * g_i) / height
        ax.plot([x(avg_ranks[g[0]]) - 0.005, x(avg_ranks[g[-1]]) + 0.005], [yy, yy], color="k", lw=4,
                solid_capstyle="butt")
    first = (first_in + 0.1) / height
    for i, (name, r) in enumerate(items):
        on_left = i < half
        row = i if on_left else k - 1 - i
        y = first + row * dy
        tx = left - 0.02 if on_left else right + 0.02
        ax.plot([x(r), x(r), tx], [axis_y, y, y], color="k", lw=0.8)
        ax.text(tx - 0.005 if on_left else tx + 0.005, y, f"{name} ({r:.2f})", ha="right" if on_left else "left",
                va="center", fontsize=9)
    return fig


def rank_blob_plot(boot: pd.DataFrame, *, model: str = "model", by: str | None = "dataset",
                   order: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Blob plot of bootstrap rank distributions (challengeR, Wiesenfarth et al. 2021): for each model (x) and
    rank (y), a disc whose area is the fraction of replicates giving that rank, with the median rank (cross)
    and its 95 % interval (line). One panel per value of ``by``; models in ``order`` (default: by mean rank)."""
    from matplotlib.figure import Figure

    panels = [(None, boot)] if by is None else list(boot.groupby(by, sort=True))
    if order is None:
        order = list(boot.groupby(model, observed=True)["rank"].mean().sort_values().index)
    k = len(order)
    fig = Figure(figsize=(max(4.0, 0.55 * k + 1.5) * len(panels), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True, squeeze=False)[0])
    for ax, (key, g) in zip(axes, panels):
        freq = g.groupby([model, "rank"], observed=True).size()
        n_rep = g.groupby(model, observed=True).size()
        for xi, m in enumerate(order):
            if m not in n_rep.index:
                continue
            f = freq.loc[m] / n_rep.loc[m]
            ax.scatter(np.full(len(f), xi), f.index.to_numpy(), s=400 * f.to_numpy(), color="C0", alpha=0.6,
                       edgecolors="none")
            r = g.loc[g[model] == m, "rank"]
            ax.plot([xi, xi], r.quantile([0.025, 0.975]).to_numpy(), color="k", lw=1)
            ax.plot([xi], [r.median()], marker="x", color="k", ms=6)
        ax.set_xticks(range(k), [str(m) for m in order], rotation=45, ha="right")
        ax.set_xlim(-0.6, k - 0.4)
        ax.set_ylim(k + 0.6, 0.4)
        ax.set_yticks(range(1, k + 1))
        ax.grid(axis="y", alpha=0.3)
        if key is not None:
            ax.set_title(str(key if not isinstance(key, tuple) else key[0]))
    axes[0].set_ylabel("rank (1 = best)")
    if title:
        fig.suptitle(title)
    return fig
