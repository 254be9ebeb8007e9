"""Compiled exact nearest-boundary search (numba): distance from each source pixel to the nearest destination pixel.

Imported lazily by :mod:`segarena.metrics.distance` (numba costs ~0.5 s to import and compiles this kernel once,
then caches it on disk). The search is exact, not approximate:

* the destination pixels come in row-major order (boundary pixels are read row by row), so every band of 8
  rows is one contiguous run; within its band each run is sorted by column;
* for a source pixel the bands are visited outwards; a band whose nearest row is farther than the best
  distance found so far cannot hold a nearer pixel and is skipped, and the scan stops when the next band
  above and the next below are both skipped (farther bands are farther still);
* inside a band a binary search finds the query's column, and the pixels are walked left and right while their
  column offset alone is below the best distance (the pixels beyond are farther still).

The squared distance is formed from the integer offsets (offset times spacing, squared, summed) and its square
root taken, as ``distance_transform_edt`` does; it matches a k-d tree search to within one rounding error
(only where two pixels are equally near up to rounding can the two pick different ones).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def boundary_words(words: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> tuple:  # pragma: no cover - compiled
    """Boundary pixels of a mask inside the box rows ``[r0, r1)``, columns ``[c0, c1)``, read as 8-byte words.

    ``words`` is the whole ``[H, W]`` boolean mask viewed as ``uint64`` (``W`` a multiple of 8), so word ``j`` of a
    row holds columns ``8j .. 8j + 7``. The box must contain all foreground. A word that is zero holds no
    boundary pixel; a full word whose neighbours above and below are full and whose left and right neighbour
    pixels are foreground holds none either; any other word is tested pixel by pixel (foreground with a 4-neighbour
    in the background, or outside the image). Returns (rows - r0 + 1, cols - c0 + 1), row-major: the coordinates
    the framed numpy path gives (a one-pixel frame around the box).
    """
    full = np.uint64(0x0101010101010101)
    height, nw = words.shape
    bytes_ = words.view(np.uint8).reshape(height, nw * 8)
    w0 = c0 // 8
    w1 = (c1 + 7) // 8
    cap = 64
    ys = np.empty(cap, dtype=np.int64)
    xs = np.empty(cap, dtype=np.int64)
    n = 0
    for y in range(r0, r1):
        for j in range(w0, w1):
            w = words[y, j]
            if w == 0:
                continue
            if w == full:
                up = words[y - 1, j] if y > 0 else np.uint64(0)
                dn = words[y + 1, j] if y + 1 < height else np.uint64(0)
                lft = bytes_[y, 8 * j - 1] if j > 0 else 0
                rgt = bytes_[y, 8 * j + 8] if j + 1 < nw else 0
                if up == full and dn == full and lft != 0 and rgt != 0:
                    continue
            for b in range(8):
                x = 8 * j + b
                if bytes_[y, x] == 0:
                    continue
                if (y == 0 or y + 1 == height or x == 0 or x + 1 == nw * 8 or bytes_[y - 1, x] == 0
                        or bytes_[y + 1, x] == 0 or bytes_[y, x - 1] == 0 or bytes_[y, x + 1] == 0):
                    if n == cap:
                        cap *= 2
                        ys2 = np.empty(cap, dtype=np.int64)
                        xs2 = np.empty(cap, dtype=np.int64)
                        ys2[:n] = ys[:n]
                        xs2[:n] = xs[:n]
                        ys = ys2
                        xs = xs2
                    ys[n] = y - r0 + 1
                    xs[n] = x - c0 + 1
                    n += 1
    return ys[:n].copy(), xs[:n].copy()


BAND = 8  # rows per band of nearest_sq_bands


@njit(cache=True, nogil=True)
def nearest_sq_bands(ys: np.ndarray, xs: np.ndarray, yd: np.ndarray, xd: np.ndarray,
                     sy: float, sx: float) -> np.ndarray:  # pragma: no cover - compiled
    """Squared distance (mm^2) from each ``(ys[i], xs[i])`` to the nearest ``(yd, xd)`` pixel, by bands of rows.

    An exact search, eight rows at a time: the destination pixels (row-major, so
    each band of ``BAND`` rows is one contiguous run) are sorted by column within their band. For a query the
    bands are visited outwards; a band whose nearest row is farther than the best distance found is skipped, and
    the scan stops when both the next band above and the next below are. Inside a band, a binary search finds
    the query's column and the pixels are walked left and right while their column offset alone is below the best
    distance (the pixels beyond are farther still). Nothing that could be nearer is skipped, so the minimum is
    exact; a query visits about D / (8 sy) bands instead of D / sy rows.
    """
    m = yd.shape[0]
    height = max(ys.max(), yd.max()) + 1
    nb = (height + BAND - 1) // BAND
    starts = np.searchsorted(yd, np.arange(nb + 1) * BAND)
    bx = np.empty(m, dtype=np.int64)
    by = np.empty(m, dtype=np.int64)
    for b in range(nb):
        s, e = starts[b], starts[b + 1]
        if e > s:
            order = np.argsort(xd[s:e], kind="mergesort")
            for t in range(e - s):
                bx[s + t] = xd[s + order[t]]
                by[s + t] = yd[s + order[t]]
    out = np.empty(ys.shape[0], dtype=np.float64)
    for i in range(ys.shape[0]):
        y = ys[i]
        x = xs[i]
        qb = y // BAND
        best = np.inf
        k = 0
        while True:
            active = False
            for side in range(2 if k > 0 else 1):
                b = qb - k if side == 0 else qb + k
                if b < 0 or b >= nb:
                    continue
                if b < qb:
                    lb = (y - (b * BAND + BAND - 1)) * sy
                elif b > qb:
                    lb = (b * BAND - y) * sy
                else:
                    lb = 0.0
                if lb * lb > best:
                    continue
                active = True
                s, e = starts[b], starts[b + 1]
                lo, hi = s, e
                while lo < hi:  # first column >= x
                    mid = (lo + hi) // 2
                    if bx[mid] < x:
                        lo = mid + 1
                    else:
                        hi = mid
                j = lo
                while j < e:
                    dx = (bx[j] - x) * sx
                    dx2 = dx * dx
                    if dx2 > best:
                        break
                    dy = (by[j] - y) * sy
                    d2 = dy * dy + dx2
                    if d2 < best:
                        best = d2
                    j += 1
                j = lo - 1
                while j >= s:
                    dx = (bx[j] - x) * sx
                    dx2 = dx * dx
                    if dx2 > best:
                        break
                    dy = (by[j] - y) * sy
                    d2 = dy * dy + dx2
                    if d2 < best:
                        best = d2
                    j -= 1
            if (k > 0 and not active) or (qb - k < 0 and qb + k >= nb):
                break  # farther bands only have larger lower bounds
            k += 1
        out[i] = best
    return out
