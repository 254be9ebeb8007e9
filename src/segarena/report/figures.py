"""The figures a report opens with, drawn from ``report.json``'s verdicts and the per-case table, and the figure
files the Markdown report links (every image of the report is also written to ``report/figures/``).

* **forest plot**: each model's verdict metric (per-case Dice) with its 95% bootstrap CI, one panel per dataset,
  best first, the anchor (best model) marked, tied / significantly worse shown by colour;
* **per-case distributions**: a box plot of each model's per-case Dice with every case as a dot;
* **pairwise matrix**: per dataset, Holm-adjusted Wilcoxon p-values (colour) and the difference in per-case Dice
  (row minus column, points) for every pair.

Each figure comes with a caption saying what is shown and which direction is better.
"""
from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import atomic_write
from .evidence import fig_png

#: colours of the verdict relations (anchor, tied, significantly worse, not compared)
COLOURS = {"anchor": "#1f6fb4", "tied": "#6c9a3c", "worse": "#c0392b", None: "#888888"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _b64(fig) -> str:
    return fig_png(fig, dpi=110)


def _relation(d: dict[str, Any], model: str) -> str | None:
    if d.get("anchor") == model:
        return "anchor"
    rel = d.get("models", {}).get(model, {}).get("relation")
    return "worse" if rel and "worse" in rel else rel if rel in COLOURS else None


def forest_plot(report: dict[str, Any]) -> str | None:
    """Verdict metric with 95% CI per model, one panel per dataset (base64 PNG; ``None`` without estimates)."""
    dsets = [(ds, d) for ds, d in sorted(report.get("datasets", {}).items()) if d.get("estimates")]
    if not dsets:
        return None
    plt = _plt()
    n = max(len(d["estimates"]) for _, d in dsets)
    fig, axes = plt.subplots(1, len(dsets), figsize=(4.8 * len(dsets), 0.5 * n + 1.4), squeeze=False)
    for ax, (ds, d) in zip(axes[0], dsets):
        est = sorted(d["estimates"].items(), key=lambda kv: kv[1]["estimate"])
        for y, (m, e) in enumerate(est):
            c = COLOURS[_relation(d, m)]
            lo, hi = e["ci"]
            ax.errorbar(e["estimate"] * 100, y, xerr=[[(e["estimate"] - lo) * 100], [(hi - e["estimate"]) * 100]],
                        fmt="o", color=c, capsize=3, ms=6)
            ax.annotate(f"{e['estimate'] * 100:.1f}", (e["estimate"] * 100, y), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=7.5, color=c)
        ax.set_yticks(range(len(est)), [m + (" ★" if d.get("anchor") == m else "") for m, _ in est], fontsize=8.5)
        ax.set_xlabel(f"{d.get('metric_label', 'per-case Dice')} % (higher is better)", fontsize=8.5)
        ax.set_title(f"{ds}: {d.get('n_cases', '?')} common test cases, {d.get('n_folds', '?')} fold(s)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.set_ylim(-0.6, len(est) - 0.4)
    handles = [plt.Line2D([], [], marker="o", ls="", color=COLOURS[k], label=lab) for k, lab in
               (("anchor", "best (anchor)"), ("tied", "not distinguishable"), ("worse", "significantly worse"))]
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
    return _b64(fig)


def distributions_plot(cases: pd.DataFrame, report: dict[str, Any]) -> str | None:
    """Per-case Dice per model (box + every case as a dot), one panel per dataset, on each dataset's cases."""
    if cases is None or cases.empty or "dice" not in cases:
        return None
    plt = _plt()
    per_case = cases.groupby(["dataset", "model", "fold", "case_id"], as_index=False)["dice"].mean()
    dsets = sorted(per_case["dataset"].unique())
    fig, axes = plt.subplots(1, len(dsets), figsize=(4.8 * len(dsets), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], dsets):
        part = per_case[per_case["dataset"] == ds]
        d = report.get("datasets", {}).get(ds, {})
        means = part.groupby("model")["dice"].mean()
        est = {m: d.get("estimates", {}).get(m, {}).get("estimate", means[m]) for m in means.index}
        order = sorted(est, key=lambda m: -est[m])  # best first, as in the forest plot
        data = [part.loc[part["model"] == m, "dice"].to_numpy() * 100 for m in order]
        import matplotlib

        new = tuple(int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 10)
        ax.boxplot(data, showfliers=False, widths=0.55, medianprops={"color": "black"},
                   **({"orientation": "horizontal", "tick_labels": order} if new else {"vert": False, "labels": order}))
        import numpy as np

        rng = np.random.default_rng(0)
        for y, vals in enumerate(data, start=1):
            ax.scatter(vals, y + rng.uniform(-0.18, 0.18, len(vals)), s=16, alpha=0.6, zorder=3,
                       color=COLOURS[_relation(d, order[y - 1])], linewidths=0)
        ax.invert_yaxis()
        ax.set_xlabel("per-case Dice % (higher is better)", fontsize=8.5)
        ax.set_title(f"{ds}: one dot per test case", fontsize=9)
        ax.tick_params(labelsize=8.5)
        ax.grid(axis="x", alpha=0.3)
    return _b64(fig)


def pairwise_plot(report: dict[str, Any]) -> str | None:
    """Holm-adjusted p-values (colour) and differences (text) of every pair, one matrix per dataset."""
    dsets = [(ds, d) for ds, d in sorted(report.get("datasets", {}).items()) if d.get("pairwise")]
    if not dsets:
        return None
    plt = _plt()
    import numpy as np
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, len(dsets), figsize=(4.6 * len(dsets) + 0.8, 4.0), squeeze=False)
    im = None
    for ax, (ds, d) in zip(axes[0], dsets):
        models = sorted(d.get("estimates", {}), key=lambda m: -d["estimates"][m]["estimate"])
        idx = {m: i for i, m in enumerate(models)}
        p = np.full((len(models), len(models)), np.nan)
        diff = np.full_like(p, np.nan)
        for r in d["pairwise"]:
            if r["model"] in idx and r["versus"] in idx and r.get("p_holm") is not None:
                i, j = idx[r["model"]], idx[r["versus"]]
                p[i, j] = p[j, i] = max(r["p_holm"], 1e-6)
                diff[i, j], diff[j, i] = r["difference"] * 100, -r["difference"] * 100
        im = ax.imshow(p, cmap="viridis", norm=LogNorm(vmin=1e-4, vmax=1))
        for i in range(len(models)):
            for j in range(len(models)):
                if not np.isnan(p[i, j]):
                    star = "*" if p[i, j] < report.get("alpha", 0.05) else ""
                    ax.text(j, i, f"{diff[i, j]:+.1f}{star}\np={p[i, j]:.2g}", ha="center", va="center",
                            fontsize=7, color="white" if p[i, j] < 0.05 else "black")
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(models)), models, fontsize=8)
        ax.set_title(f"{ds}: row minus column, points", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), label="Holm-adjusted p (Wilcoxon)", shrink=0.85)
    return _b64(fig)


def verdict_figures(report: dict[str, Any], cases: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(name, caption, base64 PNG) of the three opening figures that have data."""
    alpha = report.get("alpha", 0.05)
    out = []
    f = forest_plot(report)
    if f:
        out.append(("forest", "Per-case Dice of each model (mean over the test cases all models have) with its 95% "
                              "bootstrap confidence interval, per dataset. Higher is better. ★ / blue: the best "
                              "model (anchor); green: not distinguishable from it; red: significantly worse "
                              f"(Wilcoxon signed-rank, Holm-adjusted, alpha {alpha}).", f))
    f = distributions_plot(cases, report)
    if f:
        out.append(("distributions", "Distribution of per-case Dice per model (box: quartiles and median, whiskers "
                                     "1.5 IQR; dots: every test case). Higher is better; a long left tail means "
                                     "cases a model fails on.", f))
    f = pairwise_plot(report)
    if f:
        out.append(("pairwise", "Every pair of models: difference in mean per-case Dice, row minus column, in "
                                "points (positive: the row model is better), and the Holm-adjusted Wilcoxon "
                                f"p-value (colour; darker is smaller; * below alpha {alpha}).", f))
    return out


def figure_key(b64: str) -> str:
    return hashlib.sha1(b64.encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "figure"


def write_figure_files(out_dir: Path, groups: list[tuple[str, list[tuple[str, str]]]]) -> dict[str, str]:
    """Write every (name, base64 PNG) of each (group, items) to ``out_dir/figures/<group>/<name>.png``; returns
    :func:`figure_key` -> path relative to ``out_dir`` (what the Markdown report links)."""
    links: dict[str, str] = {}
    for group, items in groups:
        for name, b64 in items:
            rel = Path("figures") / _slug(group) / f"{_slug(name)}.png"
            path = out_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            data = base64.b64decode(b64)
            atomic_write(path, lambda tmp, data=data: Path(tmp).write_bytes(data), suffix=".png")
            links[figure_key(b64)] = rel.as_posix()
    return links


def add_figures(ctx: dict[str, Any], out_dir: Path) -> None:
    """Put the opening figures in ``ctx["verdict_figures"]`` and write every report image to files
    (``ctx["figure_files"]``)."""
    ev = ctx["evidence"]
    figs = verdict_figures(ctx["report"], ev.cases)
    ctx["verdict_figures"] = figs
    groups: list[tuple[str, list[tuple[str, str]]]] = [("verdict", [(n, b) for n, _, b in figs])]
    groups.append(("training", [(f"curves_{ds}", b) for ds, b in ctx.get("curves", {}).items()]))
    groups.append(("statistics", list(ev.figures.items())))
    groups += [(f"gallery_{ds}_{m}", imgs) for (ds, m), imgs in ctx.get("gallery", {}).items()]
    groups.append(("xai", [(f"{k}_{n}", b) for k, v in getattr(ev, "xai_images", {}).items() for n, b in v]))
    ctx["figure_files"] = write_figure_files(out_dir, groups)


__all__ = ["add_figures", "figure_key", "forest_plot", "distributions_plot", "pairwise_plot", "verdict_figures",
           "write_figure_files"]
