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
