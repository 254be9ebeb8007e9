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


@njit(cache=True, nogil=True, inline="always")
def _boundary_word(words: np.ndarray, y: int, j: int, prev, cur, nxt, height: int):  # pragma: no cover - compiled
    """The boundary bytes of word ``cur`` (row ``y``, word ``j``): ``cur & ~(up & down & left & right)``."""
    zero = np.uint64(0)
    up = words[y - 1, j] if y > 0 else zero
    dn = words[y + 1, j] if y + 1 < height else zero
    left = (cur << np.uint64(8)) | (prev >> np.uint64(56))
    right = (cur >> np.uint64(8)) | (nxt << np.uint64(56))
    return cur & ~(up & dn & left & right)


@njit(cache=True, nogil=True)
def boundary_words(words: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> tuple:  # pragma: no cover - compiled
    """Boundary pixels of a mask inside the box rows ``[r0, r1)``, columns ``[c0, c1)``, read as 8-byte words.

    ``words`` is the whole ``[H, W]`` boolean mask viewed as ``uint64`` (``W`` a multiple of 8), so word ``j`` of a
    row holds columns ``8j .. 8j + 7``, one byte (0 or 1) per pixel, column ``8j + b`` in byte ``b`` (bits
    ``8b .. 8b + 7``: little-endian, which the caller checks). The box must contain all foreground. A pixel is a
    boundary pixel when it is foreground and one of its 4 neighbours is background or outside the image, so for a
    whole word at once::

        boundary = w & ~(up & down & left & right)

    where ``up`` / ``down`` are the words above and below, ``left`` is ``w`` shifted up one byte with the last
    byte of the previous word shifted in (each byte then holds its left neighbour), ``right`` likewise, and a
    neighbour outside the image is 0: a few integer operations per 8 pixels, without branches on pixels. One pass
    keeps the non-zero results (a band along the contour) with their positions; a second pass over those words
    only splits them into pixels, left to right. (Growing the output inside the scan instead made numba count
    references on every word: 25x slower.) Returns (rows - r0 + 1, cols - c0 + 1), row-major: the coordinates
    the framed numpy path gives (a one-pixel frame around the box).
    """
    height, nw = words.shape
    zero = np.uint64(0)
    one = np.uint64(1)
    s8 = np.uint64(8)
    w0 = c0 // 8
    w1 = (c1 + 7) // 8
    size = (r1 - r0) * (w1 - w0)
    found = np.empty(size, dtype=np.uint64)
    at_y = np.empty(size, dtype=np.int64)
    at_j = np.empty(size, dtype=np.int64)
    k = 0
    for y in range(r0, r1):
        prev = words[y, w0 - 1] if w0 > 0 else zero
        cur = words[y, w0]
        for j in range(w0, w1):
            nxt = words[y, j + 1] if j + 1 < nw else zero
            if cur != zero:
                bnd = _boundary_word(words, y, j, prev, cur, nxt, height)
                if bnd != zero:
                    found[k] = bnd
                    at_y[k] = y - r0 + 1
                    at_j[k] = j
                    k += 1
            prev = cur
            cur = nxt
    ys = np.empty(8 * k, dtype=np.int64)
    xs = np.empty(8 * k, dtype=np.int64)
    n = 0
    for i in range(k):
        bits = found[i]
        x = 8 * at_j[i] - c0 + 1
        while bits != zero:
            if bits & one:
                ys[n] = at_y[i]
                xs[n] = x
                n += 1
            bits = bits >> s8
            x += 1
    return ys[:n].copy(), xs[:n].copy()


@njit(cache=True, nogil=True)
def union_box_words(a: np.ndarray, b: np.ndarray) -> tuple:  # pragma: no cover - compiled
    """Rows ``[r0, r1)`` and columns ``[c0, c1)`` of the bounding box of ``a | b`` (two masks viewed as ``uint64``
    words, as in :func:`boundary_words`), in one pass over both; ``(0, 0, 0, 0)`` when both are empty. The
    columns come from the OR of every row's words, read byte by byte (byte ``t`` of word ``j`` = column
    ``8j + t``)."""
    height, nw = a.shape
    zero = np.uint64(0)
    cols = np.zeros(nw, dtype=np.uint64)
    r0, r1 = -1, -1
    for y in range(height):
        row = zero
        for j in range(nw):
            w = a[y, j] | b[y, j]
            cols[j] |= w
            row |= w
        if row != zero:
            if r0 < 0:
                r0 = y
            r1 = y + 1
    if r0 < 0:
        return 0, 0, 0, 0
    c0, c1 = -1, -1
    for j in range(nw):
        w = cols[j]
        for t in range(8):
            if (w >> np.uint64(8 * t)) & np.uint64(1):
                if c0 < 0:
                    c0 = 8 * j + t
                c1 = 8 * j + t + 1
    return r0, r1, c0, c1


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
