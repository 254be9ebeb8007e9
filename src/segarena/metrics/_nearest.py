"""Compiled exact nearest-boundary search (numba): distance from each source pixel to the nearest destination pixel.

Imported lazily by :mod:`segarena.metrics.distance` (numba costs ~0.5 s to import and compiles this kernel once,
then caches it on disk). The search is exact, not approximate:

* the destination pixels come in row-major order (``np.flatnonzero`` of the boundary), so each row's pixels are
  a sorted run of column indices; a row index ``starts`` locates the run of any row in O(1);
* for a source pixel ``(y, x)`` the rows are visited outwards, ``y, y - 1, y + 1, y - 2, y + 2, ...``; in a row
  ``y'`` the nearest pixel to column ``x`` is found by binary search in that row's run (the nearest column is
  the first one ``>= x`` or the one before it), giving ``((y' - y) sy)^2 + ((x' - x) sx)^2``;
* every pixel of a row ``k`` rows away is at least ``k * sy`` away, so the search stops as soon as
  ``(k * sy)^2`` exceeds the best squared distance found: no row that could hold a nearer pixel is skipped.

The squared distance is formed from the integer offsets (offset times spacing, squared, summed) and its square
root taken, as ``distance_transform_edt`` does; it matches a k-d tree search to within one rounding error
(only where two pixels are equally near up to rounding can the two pick different ones).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def nearest_sq(ys: np.ndarray, xs: np.ndarray, starts: np.ndarray, xd: np.ndarray,
               sy: float, sx: float) -> np.ndarray:  # pragma: no cover - compiled
    """Squared distance (mm^2) from each ``(ys[i], xs[i])`` to the nearest destination pixel.

    ``starts[r]:starts[r + 1]`` is the run of destination columns ``xd`` in row ``r`` (sorted ascending);
    ``starts`` has one entry per row of the box plus one.
    """
    n = ys.shape[0]
    height = starts.shape[0] - 1
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        y = ys[i]
        x = xs[i]
        best = np.inf
        k = 0
        while True:
            dyk = k * sy
            dy2 = dyk * dyk
            if dy2 > best or (y - k < 0 and y + k >= height):
                break
            for side in range(2 if k > 0 else 1):
                r = y - k if side == 0 else y + k
                if r < 0 or r >= height:
                    continue
                lo = starts[r]
                hi = starts[r + 1]
                if lo == hi:
                    continue
                a = lo
                b = hi
                while a < b:  # first column >= x
                    mid = (a + b) // 2
                    if xd[mid] < x:
                        a = mid + 1
                    else:
                        b = mid
                if a < hi:
                    dx = (xd[a] - x) * sx
                    d2 = dy2 + dx * dx
                    if d2 < best:
                        best = d2
                if a > lo:
                    dx = (xd[a - 1] - x) * sx
                    d2 = dy2 + dx * dx
                    if d2 < best:
                        best = d2
            k += 1
        out[i] = best
    return out

