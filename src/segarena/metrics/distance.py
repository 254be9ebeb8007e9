"""Boundary (surface-distance) metrics per case and class: HD, HD95, ASSD and NSD from one pair of boundary searches.

Overlap metrics (Dice, IoU) barely notice a wrong contour on a large object; boundary metrics measure it in mm.
All four metrics are computed from the same two nearest-boundary searches: the boundary pixels are read from
the union of both bounding boxes, word by word, and each one's nearest boundary pixel of the other mask is found
by an exact compiled scan of bands of rows outwards (k-d tree without numba); see "Boundary metrics: how they are
computed, and why exactly" in ``docs/evaluation.md``. The conventions, each stated once (see ``docs/evaluation.md``):

* **Boundary**: a foreground pixel is on the boundary when at least one of its 4 neighbours (up, down, left,
  right) is background; pixels outside the image count as background, so an object touching the image edge has
  a boundary there. This is ``mask XOR binary_erosion(mask, cross)`` with ``border_value=0``, exactly what medpy
  (``connectivity=1``) and MONAI (``use_subvoxels=False``) use; the resulting contour is 8-connected.
* **Distances** are measured between pixel centres, in mm through ``spacing=(sy, sx)``, from every boundary
  pixel of one mask to the nearest boundary pixel of the other (both directions).
* **HD** = max of both directed maxima. **HD95** = max of the two *directed* 95th percentiles (linear
  interpolation), as MONAI, DeepMind's ``surface-distance`` and Metrics Reloaded define it; medpy instead takes
  the 95th percentile of the *pooled* distances (available here as ``hd95_pooled``, for comparison only).
* **ASSD** = mean of the pooled distances of both directions (sum of both / number of boundary pixels of both).
* **NSD** at tolerance ``tau`` mm (Nikolov et al. 2021): fraction of boundary pixels of both masks that lie
  within ``tau`` of the other boundary (``d <= tau``), counting pixels, not surfel areas.
* **Empty masks** (Metrics Reloaded): both empty -> HD = HD95 = ASSD = 0, NSD = 1; exactly one empty -> HD =
  HD95 = ASSD = the physical image diagonal ``sqrt((H*sy)^2 + (W*sx)^2)`` mm (longer than any distance that can
  occur inside the image, so an empty or hallucinated mask is always the worst case) and NSD = 0. Such cases are
  never dropped; :attr:`SurfaceMetrics.empty` flags them so reports can count them.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .._errors import ConfigError

__all__ = ["EMPTY_FLAGS", "SurfaceMetrics", "boundary", "case_surface_metrics", "directed_distances",
           "surface_metrics"]

#: Values of :attr:`SurfaceMetrics.empty`: "none" (both masks present), "both", "pred" or "ref" (that one empty).
EMPTY_FLAGS = ("none", "both", "pred", "ref")


@dataclass(frozen=True)
class SurfaceMetrics:
    """Boundary metrics of one case and class; distances in mm (pixels when spacing is (1, 1))."""

    hd: float
    hd95: float
    assd: float
    nsd: float
    nsd_tau: float
    empty: str = "none"
    hd95_pooled: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a 2D boolean mask: foreground with a 4-neighbour in the background (outside = background)."""
    m = np.asarray(mask, dtype=bool)
    padded = np.zeros((m.shape[0] + 2, m.shape[1] + 2), dtype=bool)
    padded[1:-1, 1:-1] = m
    return _boundary_padded(padded)[1:-1, 1:-1]


def _boundary_padded(p: np.ndarray) -> np.ndarray:
    """Boundary of a mask that already has a one-pixel background frame (the frame itself stays False)."""
    inner = p[1:-1, 1:-1]
    interior = inner & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    out = np.zeros_like(p)
    out[1:-1, 1:-1] = inner & ~interior
    return out


def _check(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray, tuple]:
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.ndim != 2 or pred.shape != ref.shape:
        raise ConfigError(f"surface metrics need two 2D masks of the same shape, got {pred.shape} and {ref.shape}",
                          fix="pass one case and one class at a time as [H, W] arrays")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 2 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise ConfigError(f"spacing must be two positive numbers (sy, sx) in mm, got {spacing!r}",
                          fix="set the dataset's pixel spacing, or leave it at (1, 1) for pixels")
    return pred.astype(bool, copy=False), ref.astype(bool, copy=False), sp


def directed_distances(pred: np.ndarray, ref: np.ndarray,
                       spacing: Sequence[float] = (1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each boundary pixel of ``pred`` to the ``ref`` boundary, and from ``ref`` to ``pred``.

    Both masks must be non-empty. Each array is in row-major order of the boundary pixels (the order of
    ``np.nonzero(boundary(mask))``). The masks are cropped to the union of their bounding boxes with a one-pixel
    background frame: the frame makes the 4-neighbour erosion exact (the pixels just outside the box are
    background, or outside the image, which also counts as background), and every boundary pixel of either mask
    lies inside the box, so the nearest one is found there too and the crop changes no value.
    """
    pred, ref, sp = _check(pred, ref, spacing)
    if not pred.any() or not ref.any():
        raise ValueError("directed_distances needs two non-empty masks; use surface_metrics for the empty policy")
    (yp, xp), (yr, xr) = _boundary_coords(pred, ref)
    return _nearest_distance(yp, xp, yr, xr, sp), _nearest_distance(yr, xr, yp, xp, sp)


def _boundary_coords(pred: np.ndarray, ref: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Row and column (in the crop's frame) of every boundary pixel of both masks, in row-major order.

    Only the union of both bounding boxes is read, so the work is proportional to the objects' box, not the
    image: the box is copied into a frame of background (one pixel on every side, then up to a whole number of
    8-byte words per row), which makes the 4-neighbour erosion exact (outside the box is background, or outside
    the image, which counts as background too). See :func:`_frame_boundary` for how the frame is read.
    """
    r0, r1, c0, c1 = _union_bbox(pred, ref)
    if _compiled_words(pred, ref):
        try:  # compiled: the image's own words, no copy (same pixels, same order and coordinates)
            from ._nearest import boundary_words
        except ImportError:
            pass
        else:
            return tuple(boundary_words(m.view(np.uint64), r0, r1, c0, c1) for m in (pred, ref))
    width = -(-(c1 - c0 + 2) // 8) * 8
    out = []
    for m in (pred, ref):
        framed = np.zeros((r1 - r0 + 3, width), dtype=bool)  # one more background row: see _frame_boundary
        framed[1:-2, 1:c1 - c0 + 1] = m[r0:r1, c0:c1]
        out.append(_frame_boundary(framed))
    return tuple(out)


_FULL = np.uint64(0x0101010101010101)  # eight True bytes


def _frame_boundary(framed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boundary pixels of a framed mask, as row-major (rows, cols).

    ``framed`` has background in its first row, last two rows, first column and last column, and rows of a
    whole number of 8-byte words.

    Each row is read as 8-byte words. A word can hold a boundary pixel only if it holds foreground and it, or
    the word above, below, left or right of it, is not all foreground (a pixel whose 4 neighbours all lie in
    full words is interior). Only those candidate words, a band along the contour, are then tested pixel by
    pixel (foreground with a background 4-neighbour); the rest of the box costs one operation per 8 pixels.
    Candidates are visited in row-major order, and pixels within a word left to right, so the order is that of
    ``np.nonzero``.
    """
    h, w = framed.shape
    words = framed.view(np.uint64)
    full = words == _FULL
    inner = full[1:-1, 1:-1] & full[:-2, 1:-1] & full[2:, 1:-1] & full[1:-1, :-2] & full[1:-1, 2:]
    cand = words != 0
    cand[1:-1, 1:-1] &= ~inner
    wi, wj = np.divmod(np.flatnonzero(cand), w // 8)
    # one gather of each candidate's 3 x 10 window (rows above, at, below; one byte either side). The first and
    # last two rows are background, so no candidate lies there and every index stays inside the array; a byte
    # left of column 0 or right of the last column is the previous/next row's frame byte, and only decides the
    # (background) frame pixel next to it
    window = (np.arange(-1, 2)[:, None] * w + np.arange(-1, 9)[None, :]).reshape(-1)
    win = framed.reshape(-1)[(wi * w + wj * 8)[:, None] + window].reshape(-1, 3, 10)
    cur = win[:, 1, 1:9]
    hit = cur & ~(win[:, 0, 1:9] & win[:, 2, 1:9] & win[:, 1, :8] & win[:, 1, 2:])
    k, b = np.nonzero(hit)
    cols = wj[k] * 8 + b
    return wi[k], cols


def _compiled_words(pred: np.ndarray, ref: np.ndarray) -> bool:
    """Whether the compiled word kernels may read these masks in place: rows of whole 8-byte words, C order, and
    a little-endian machine (they read column ``8j + b`` from byte ``b`` of word ``j``)."""
    return (pred.shape[1] % 8 == 0 and pred.flags.c_contiguous and ref.flags.c_contiguous
            and sys.byteorder == "little")


def _union_bbox(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int, int]:
    """Rows ``[r0, r1)`` and columns ``[c0, c1)`` of the bounding box of ``pred | ref`` (both non-empty).

    When a row is a whole number of 8-byte words, the boolean bytes are read as ``uint64`` words: a row is
    occupied when any of its words is non-zero, and OR-ing the words down the rows gives, byte for byte, which
    columns are occupied. Same box, an eighth of the element operations (the full image is scanned here).
    """
    h, w = pred.shape
    if _compiled_words(pred, ref):
        try:  # compiled: one pass over both masks' words
            from ._nearest import union_box_words
        except ImportError:
            pass
        else:
            return union_box_words(pred.view(np.uint64), ref.view(np.uint64))
    if w % 8 == 0 and pred.flags.c_contiguous and ref.flags.c_contiguous:
        words = pred.view(np.uint64) | ref.view(np.uint64)
        rows = np.flatnonzero(words.any(axis=1))
        cols = np.flatnonzero(np.bitwise_or.reduce(words, axis=0).view(bool))
    else:
        rows = np.flatnonzero(pred.any(axis=1) | ref.any(axis=1))
        cols = np.flatnonzero(pred.any(axis=0) | ref.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _percentile(d: np.ndarray, q: float) -> float:
    """``np.percentile(d, q)`` (linear interpolation), from a partial sort of the two neighbouring order statistics.

    The interpolation is numpy's own (``a + (b - a) * t``, or ``b - (b - a) * (1 - t)`` when ``t >= 0.5``), so the
    value is the same float; only the full sort and numpy's generic dispatch are skipped.
    """
    pos = q / 100.0 * (d.size - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, d.size - 1)
    part = np.partition(d, (lo, hi)) if hi != lo else np.partition(d, lo)
    a, b = float(part[lo]), float(part[hi])
    t = pos - lo
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def _nearest_distance(ys: np.ndarray, xs: np.ndarray, yd: np.ndarray, xd: np.ndarray,
                      spacing: tuple[float, float]) -> np.ndarray:
    """Distance (mm) from each source pixel ``(ys, xs)`` to the nearest destination pixel ``(yd, xd)``.

    ``(yd, xd)`` must be in row-major order (as ``np.flatnonzero`` gives them). Only boundary pixels take part.
    The search is the compiled band-outward scan of :mod:`segarena.metrics._nearest` (exact, and several times
    faster than a k-d tree on lesion contours, whose nearest pixels are a few rows away); without numba, a k-d
    tree over the destination points answers the same queries exactly. Either way the distance is evaluated from
    the integer pixel offsets with the same float64 arithmetic as ``distance_transform_edt`` (offset times
    spacing, squared, summed, square root), so a distance that is exactly representable (1, sqrt(2) on a unit
    grid) comes out exactly.
    """
    try:
        from ._nearest import nearest_sq_bands
    except ImportError:  # numba missing: same values from a k-d tree
        return _nearest_distance_kdtree(ys, xs, yd, xd, spacing)
    return np.sqrt(nearest_sq_bands(ys, xs, yd, xd, float(spacing[0]), float(spacing[1])))


def _nearest_distance_kdtree(ys: np.ndarray, xs: np.ndarray, yd: np.ndarray, xd: np.ndarray,
                             spacing: tuple[float, float]) -> np.ndarray:
    """The k-d tree form of :func:`_nearest_distance` (O(n log n) in the boundary length), used without numba."""
    from scipy.spatial import cKDTree

    tree = cKDTree(np.column_stack([yd * spacing[0], xd * spacing[1]]))
    _, idx = tree.query(np.column_stack([ys * spacing[0], xs * spacing[1]]), k=1)
    dy = (yd[idx] - ys).astype(np.float64) * spacing[0]
    dx = (xd[idx] - xs).astype(np.float64) * spacing[1]
    return np.sqrt(dy * dy + dx * dx)


def surface_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] = (1.0, 1.0),
                    tau: float = 2.0) -> SurfaceMetrics:
    """HD, HD95, ASSD and NSD@``tau`` of one binary prediction against its reference (2D boolean arrays).

    ``spacing`` is the pixel size (sy, sx) in mm and ``tau`` the NSD tolerance in the same unit. Empty masks
    follow the policy in the module docstring and are flagged in ``.empty``.
    """
    pred, ref, sp = _check(pred, ref, spacing)
    tau = float(tau)
    if not np.isfinite(tau) or tau < 0:
        raise ConfigError(f"NSD tolerance tau must be a finite number >= 0 mm, got {tau!r}",
                          fix="give the NSD tolerance in mm, the unit of spacing")
    has_p, has_r = bool(pred.any()), bool(ref.any())
    if not has_p and not has_r:
        return SurfaceMetrics(0.0, 0.0, 0.0, 1.0, tau, "both", 0.0)
    if not has_p or not has_r:
        diag = float(np.hypot(pred.shape[0] * sp[0], pred.shape[1] * sp[1]))
        return SurfaceMetrics(diag, diag, diag, 0.0, tau, "pred" if not has_p else "ref", diag)
    (yp, xp), (yr, xr) = _boundary_coords(pred, ref)
    d_pr = _nearest_distance(yp, xp, yr, xr, sp)
    d_rp = _nearest_distance(yr, xr, yp, xp, sp)
    pooled = np.concatenate([d_pr, d_rp])
    hd = float(max(d_pr.max(), d_rp.max()))
    hd95 = max(_percentile(d_pr, 95), _percentile(d_rp, 95))
    assd = float(pooled.mean())
    nsd = float(np.count_nonzero(pooled <= tau) / pooled.size)
    return SurfaceMetrics(hd, hd95, assd, nsd, tau, "none", _percentile(pooled, 95))


def case_surface_metrics(pred: np.ndarray, ref: np.ndarray, classes: Iterable[int],
                         spacing: Sequence[float] = (1.0, 1.0), tau: float | dict[int, float] = 2.0,
                         case_id: str | None = None) -> list[dict[str, Any]]:
    """Tidy per-class records of one case from two label maps ``[H, W]`` (integer class ids).

    ``classes`` lists the class ids to evaluate (usually the foreground ones; for a binary task pass ``[1]``,
    a boolean mask counts as class 1). ``tau`` may be one tolerance or one per class. Each record is
    ``{"case_id", "class_id", "hd", "hd95", "assd", "nsd", "nsd_tau", "empty", "hd95_pooled"}``, to be merged
    with the overlap records of :func:`segarena.metrics.case_records` on ``(case_id, class_id)``.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    out = []
    for c in classes:
        t = tau[c] if isinstance(tau, dict) else tau
        m = surface_metrics(pred == c, ref == c, spacing, t)
        out.append({"case_id": case_id, "class_id": int(c), **m.to_dict()})
    return out
