"""Quantitative measures of an explanation, per case, and their aggregates with bootstrap confidence intervals.

*Energy share* (the "energy-based pointing game" of Wang et al., Score-CAM, CVPR-W 2020): the share of the CAM's
total mass that lies inside the ground-truth region of the class. 1 = the map points only at the reference
structure; the share of the image the structure covers is what a uniform map would get. Localisation, not
faithfulness: a map can point at the lesion and still not be what the model used.

*Deletion* (Petsiuk et al., RISE, BMVC 2018): remove the most salient pixels first, in ``steps`` equal steps, and
record the target score after each step; the area under that curve (x from 0 to 1 = share of pixels removed) is
low when the pixels the map ranks highest are the ones the model needs. Faithfulness, not localisation. The score is
the mean predicted probability of the class inside the region the model originally predicted for it (fixed during
the curve). Removed pixels are set to

``"mean"``  zero in the normalised input space, i.e. the normalisation's mean colour -- the same value the model
            wrapper pads with, and RISE's choice for deletion;
``"blur"``  a Gaussian-blurred copy of the image (sigma = max(H, W) / 50), which keeps the low frequencies and so
            introduces fewer out-of-distribution edges.

Compare a map's deletion AUC with the AUC of a random pixel order on the same case (``deletion_auc_random``):
below random = the map ranks the pixels the model needs first.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import ConfigError
from .cam import class_channel

if TYPE_CHECKING:
    import pandas as pd

BASELINES = ("mean", "blur")
MEASURES = ("energy_share", "deletion_auc", "deletion_auc_random")


def energy_share(cam: np.ndarray, reference: np.ndarray) -> float:
    """Sum of ``cam`` inside the boolean ``reference`` over its total; NaN when the map is all zero."""
    cam = np.asarray(cam, np.float64)
    total = cam.sum()
    if not total > 0:
        return float("nan")
    return float(cam[np.asarray(reference, bool)].sum() / total)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad = (radius, radius, radius, radius)
    y = F.pad(x, pad, mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def removal_baseline(x: torch.Tensor, baseline: str = "mean") -> torch.Tensor:
    """What deleted pixels of ``x`` [1, C, H, W] (normalised) become."""
    if baseline == "mean":
        return torch.zeros_like(x)
    if baseline == "blur":
        return _blur(x, max(x.shape[-2:]) / 50.0)
    raise ConfigError(f"unknown deletion baseline {baseline!r}", fix=f"use one of {', '.join(BASELINES)}")


def class_score(logits: torch.Tensor, cls: int, region: torch.Tensor) -> torch.Tensor:
    """Mean predicted probability of label ``cls`` inside ``region`` [H, W], for each item of ``logits``."""
    channel, sigmoid = class_channel(cls, logits.shape[1])
    prob = logits[:, channel].sigmoid() if sigmoid else logits.softmax(1)[:, channel]
    r = region.to(prob.device, prob.dtype)
    return (prob * r).flatten(1).sum(1) / r.sum()


@torch.no_grad()
def deletion_curve(model: torch.nn.Module, x: torch.Tensor, saliency: np.ndarray, cls: int, region: np.ndarray,
                   steps: int = 20, baseline: str = "mean", seed: int = 0, batch_size: int = 8) -> np.ndarray:
    """Target score after removing the top ``i/steps`` most salient pixels, ``i = 0..steps`` -> [steps + 1].

    ``x`` is one normalised image [1, C, H, W]; ``saliency`` [H, W] ranks its pixels (ties broken by a seeded
    random order, so flat regions of a map are not removed in raster order); ``region`` [H, W] is the originally
    predicted region of ``cls`` over which the score is averaged. NaN everywhere when the region is empty.
    """
    if steps < 1:
        raise ConfigError(f"deletion steps={steps} must be >= 1", fix="use e.g. 20")
    region_t = torch.as_tensor(np.asarray(region, bool))
    if not region_t.any():
        return np.full(steps + 1, np.nan)
    h, w = x.shape[-2:]
    sal = np.asarray(saliency, np.float64).reshape(-1)
    if sal.size != h * w:
        raise ValueError(f"saliency has {sal.size} pixels, image has {h * w}")
    tiebreak = np.random.default_rng(seed).random(sal.size)
    order = np.lexsort((tiebreak, -sal))  # most salient first
    rank = np.empty(sal.size, np.int64)
    rank[order] = np.arange(sal.size)
    rank_t = torch.from_numpy(rank).view(1, 1, h, w).to(x.device)
    counts = np.round(np.linspace(0.0, 1.0, steps + 1) * sal.size).astype(np.int64)
    base = removal_baseline(x, baseline)
    was_training = model.training
    model.eval()
    scores: list[float] = []
    try:
        for start in range(0, steps + 1, batch_size):
            ks = torch.as_tensor(counts[start:start + batch_size], device=x.device).view(-1, 1, 1, 1)
            removed = rank_t < ks  # [B, 1, H, W]
            xb = torch.where(removed, base, x)
            logits = model(xb).float()
            scores += class_score(logits, cls, region_t).cpu().tolist()
    finally:
        model.train(was_training)
    return np.asarray(scores, np.float64)


def curve_auc(curve: Sequence[float] | np.ndarray) -> float:
    """Trapezoidal area under a curve sampled at equal steps over [0, 1]."""
    c = np.asarray(curve, np.float64)
    if c.size < 2:
        raise ValueError("a curve needs at least two points")
    return float(((c[:-1] + c[1:]) / 2).sum() / (c.size - 1))


def _local_bootstrap(values: np.ndarray, n_boot: int, level: float, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, n_boot: int = 2000, level: float = 0.95,
                      seed: int = 0) -> dict[str, float]:
    """Mean of the finite values with a seeded percentile-bootstrap CI (cases resampled with replacement)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    lo, hi = _ci(v, n_boot, level, seed)
    return {"mean": float(v.mean()), "ci_low": lo, "ci_high": hi, "n": int(v.size)}


def _ci(v: np.ndarray, n_boot: int, level: float, seed: int) -> tuple[float, float]:
    if v.size == 1:
        return float(v[0]), float(v[0])
    try:  # the project's shared implementation (segarena.stats), where installed
        from ..stats.bootstrap import bootstrap_ci
    except ImportError:
        return _local_bootstrap(v, n_boot, level, seed)
    ci = bootstrap_ci(v, level=level, n_boot=n_boot, seed=seed)
    return ci.low, ci.high


def summarize(df: pd.DataFrame, by: Sequence[str] = ("model", "method", "class_name"),
              measures: Sequence[str] = MEASURES, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per group (default: model x method x class, so one row = one case): mean and 95% bootstrap CI of each
    measure, NaN rows (empty predicted region, all-zero map) left out and counted."""
    import pandas as pd

    by = [b for b in by if b in df.columns]
    rows = []
    for key, g in df.groupby(by, sort=True, dropna=False) if by else [((), df)]:
        row: dict[str, Any] = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["cases"] = len(g)
        for m in measures:
            if m not in g.columns:
                continue
            s = bootstrap_mean_ci(g[m].to_numpy(), n_boot=n_boot, seed=seed)
            row.update({m: s["mean"], f"{m}_ci_low": s["ci_low"], f"{m}_ci_high": s["ci_high"], f"{m}_n": s["n"]})
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = [
    "BASELINES",
    "MEASURES",
    "bootstrap_mean_ci",
    "class_score",
    "curve_auc",
    "deletion_curve",
    "energy_share",
    "removal_baseline",
    "summarize",
]
