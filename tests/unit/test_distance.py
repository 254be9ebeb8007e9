"""Boundary metrics against medpy and MONAI on 500+ random and edge cases, plus the documented conventions."""
from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from segarena._errors import ConfigError
from segarena.metrics.distance import boundary, case_surface_metrics, directed_distances, surface_metrics

medpy_binary = pytest.importorskip("medpy.metric.binary")
torch = pytest.importorskip("torch")
monai_metrics = pytest.importorskip("monai.metrics")

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- case generator
def _blob(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    x = ndimage.gaussian_filter(rng.standard_normal(shape), rng.uniform(1, 6))
    return x > np.quantile(x, rng.uniform(0.3, 0.95))


def _shape(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """One mask of a random kind: blobs, ellipses, rectangles, thin lines, single pixels, noise, full image."""
    h, w = shape
    m = np.zeros(shape, dtype=bool)
    kind = rng.integers(8)
    if kind == 0:
        return _blob(rng, shape)
    if kind == 1:  # ellipse, possibly cut by the image border
        yy, xx = np.mgrid[:h, :w]
        cy, cx = rng.uniform(-5, h + 5), rng.uniform(-5, w + 5)
        return ((yy - cy) / rng.uniform(2, h / 2)) ** 2 + ((xx - cx) / rng.uniform(2, w / 2)) ** 2 < 1
    if kind == 2:  # rectangle touching one or more image borders
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        m[y0 * rng.integers(2):, x0 * rng.integers(2): rng.integers(x0 + 1, w + 1)] = True
        return m
    if kind == 3:  # thin structures: 1-pixel lines, straight and diagonal
        m[rng.integers(h), :] = True
        d = np.arange(min(h, w))
        m[d, np.clip(d + rng.integers(-5, 6), 0, w - 1)] = True
        return m
    if kind == 4:  # a few single pixels
        m[rng.integers(0, h, 3), rng.integers(0, w, 3)] = True
        return m
    if kind == 5:  # salt noise
        return rng.random(shape) < rng.uniform(0.01, 0.3)
    if kind == 6:  # the whole image
        return ~m
    m[rng.integers(h), rng.integers(w)] = True  # one pixel
    return m


def _case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple[float, float], float]:
    shape = (int(rng.integers(32, 97)), int(rng.integers(32, 97)))
    ref = _shape(rng, shape)
    r = rng.random()
    if r < 0.35:  # a perturbed copy of the reference (the usual prediction)
        pred = np.roll(ref, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
        pred = ndimage.binary_dilation(pred) if rng.random() < 0.5 else pred
    elif r < 0.45:
        pred = ref.copy()
    else:
        pred = _shape(rng, shape)
    if not pred.any():
        pred[rng.integers(shape[0]), rng.integers(shape[1])] = True
    if not ref.any():
        ref[rng.integers(shape[0]), rng.integers(shape[1])] = True
    spacing = (1.0, 1.0) if rng.random() < 0.3 else (float(rng.uniform(0.3, 2.5)), float(rng.uniform(0.3, 2.5)))
    tau = float(rng.choice([0.0, 1.0, 2.0, 3.0, 5.5]) if rng.random() < 0.5 else rng.uniform(0.1, 8))
    return pred, ref, spacing, tau


def _monai(pred, ref, spacing, tau):
    p = torch.from_numpy(pred)[None, None]
    r = torch.from_numpy(ref)[None, None]
    kw = {"include_background": True, "spacing": spacing}
    return (monai_metrics.compute_hausdorff_distance(p, r, **kw).item(),
            monai_metrics.compute_hausdorff_distance(p, r, percentile=95, **kw).item(),
            monai_metrics.compute_average_surface_distance(p, r, symmetric=True, **kw).item(),
            monai_metrics.compute_surface_dice(p, r, [tau], **kw).item())


# ---------------------------------------------------------------- agreement with the references
def _cases() -> list[tuple[np.ndarray, np.ndarray, tuple[float, float], float]]:
    """500 random cases (32-96 px, anisotropic spacing in 70 %) + 20 fixed edge cases, all non-empty."""
    rng = np.random.default_rng(2026)
    cases = [_case(rng) for _ in range(500)]
    px = np.zeros((40, 50), dtype=bool)
    for (y, x) in [(0, 0), (39, 49), (0, 49), (20, 25)]:  # single pixels at corners and centre
        a = px.copy()
        a[y, x] = True
        cases.append((a, np.roll(a, 7, axis=1), (1.0, 1.0), 7.0))
        cases.append((a, a, (0.7, 1.9), 0.0))
    full = ~px
    cases += [(full, full, (1.0, 1.0), 1.0), (full, np.pad(full[1:-1, 1:-1], 1), (0.5, 0.5), 0.5)]
    line_h, line_v = px.copy(), px.copy()
    line_h[10, :] = True
    line_v[:, 30] = True
    cases += [(line_h, line_v, (1.0, 1.0), 2.0), (line_h, np.roll(line_h, 1, 0), (3.0, 0.2), 3.0)]
    checker = (np.indices((40, 50)).sum(0) % 2).astype(bool)
    cases += [(checker, ~checker, (1.0, 1.0), 1.0), (checker, line_h, (1.2, 0.8), 1.0)]
    aniso = np.zeros((64, 64), dtype=bool)
    aniso[10:50, 20:30] = True
    cases += [(aniso, aniso.T.copy(), (0.25, 4.0), 2.0), (aniso, np.roll(aniso, 3, 0), (4.0, 0.25), 12.0)]
    return cases


def test_agrees_with_medpy_on_520_cases():
    """medpy computes in float64 with the same boundary: HD, pooled HD95 and ASSD agree to 1e-9 mm through its
    public API; the directed HD95 and NSD agree to 1e-9 when built from medpy's own directed surface distances."""
    directed = getattr(medpy_binary, "__surface_distances")
    worst = 0.0
    differ = 0
    for pred, ref, spacing, tau in _cases():
        ours = surface_metrics(pred, ref, spacing, tau)
        assert ours.empty == "none"
        d_pr, d_rp = directed(pred, ref, spacing), directed(ref, pred, spacing)
        theirs = (medpy_binary.hd(pred, ref, spacing), medpy_binary.hd95(pred, ref, spacing),
                  medpy_binary.assd(pred, ref, spacing), max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)),
                  (np.sum(d_pr <= tau) + np.sum(d_rp <= tau)) / (d_pr.size + d_rp.size))
        mine = (ours.hd, ours.hd95_pooled, ours.assd, ours.hd95, ours.nsd)
        worst = max(worst, *(abs(a - b) for a, b in zip(theirs, mine)))
        differ += ours.hd95 != ours.hd95_pooled
    assert worst < 1e-9
    assert differ > 50  # the two HD95 variants really differ on many of these cases


def test_agrees_with_monai_public_api():
    """MONAI's four public functions on every 4th case (its per-call overhead is large). MONAI computes in
    float32, so agreement is 1e-6 relative to the case's largest distance (its float32 resolution)."""
    worst = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for pred, ref, spacing, tau in _cases()[::4]:
            ours = surface_metrics(pred, ref, spacing, tau)
            theirs = _monai(pred, ref, spacing, tau)
            mine = (ours.hd, ours.hd95, ours.assd, ours.nsd)
            worst = max(worst, *(abs(a - b) / max(1.0, ours.hd) for a, b in zip(theirs, mine)))
    assert worst < 1e-6


def test_hd95_variants_documented_difference():
    """A small far-away false positive: the max of the directed 95th percentiles (ours, MONAI, Metrics Reloaded)
    sees it, the percentile of the pooled distances (medpy) dilutes it among the long reference boundary."""
    ref = np.zeros((96, 96), dtype=bool)
    ref[20:60, 20:60] = True
    pred = ref.copy()
    pred[83:88, 83:88] = True  # a 5x5 blob, >= 34 px away from the reference
    ours = surface_metrics(pred, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_hd95 = _monai(pred, ref, (1.0, 1.0), 1.0)[1]
    medpy_hd95 = medpy_binary.hd95(pred, ref)
    assert ours.hd95 == pytest.approx(monai_hd95, rel=1e-6)
    assert ours.hd95_pooled == pytest.approx(medpy_hd95, abs=1e-12)
    # by hand: pred's boundary = the square's 156 pixels (d = 0) + the blob's 16 (d >= hypot(24, 24) = 33.9),
    # so the blob is 9.3 % of the directed pred->ref distances (above the 5 % tail: directed HD95 > 33.9) but
    # only 4.9 % of the 156 + 172 pooled ones (inside the tail: pooled HD95 = 0)
    d_pr, d_rp = directed_distances(pred, ref)
    assert (d_pr.size, d_rp.size) == (156 + 16, 156)
    assert not d_rp.any() and np.count_nonzero(d_pr) == 16
    assert ours.hd95 > math.hypot(24, 24) and ours.hd95_pooled == 0.0
    assert ours.hd == d_pr.max() == math.hypot(87 - 59, 87 - 59)


def test_golden_values_by_hand():
    a = np.zeros((10, 10), dtype=bool)
    b = a.copy()
    a[0, 0] = True
    b[3, 4] = True
    m = surface_metrics(a, b, tau=5.0)
    assert (m.hd, m.hd95, m.assd, m.nsd, m.empty) == (5.0, 5.0, 5.0, 1.0, "none")
    assert surface_metrics(a, b, tau=4.999).nsd == 0.0
    m = surface_metrics(a, b, spacing=(2.0, 0.5))  # dy = 3 px * 2 mm, dx = 4 px * 0.5 mm
    assert m.hd == pytest.approx(math.sqrt(36 + 4))
    # identical masks: every distance 0, NSD 1 even at tau 0
    m = surface_metrics(b | a, b | a, tau=0.0)
    assert (m.hd, m.hd95, m.assd, m.nsd) == (0.0, 0.0, 0.0, 1.0)
    # a 3x3 square vs the same square grown to 5x5: the 8 inner boundary pixels are all 1 px from the outer
    # ring; of the 16 outer ones, the 12 edge pixels are 1 px and the 4 corners sqrt(2) px from the inner ring
    s = np.zeros((9, 9), dtype=bool)
    s[3:6, 3:6] = True
    g = ndimage.binary_dilation(s, structure=np.ones((3, 3)))
    d_sg, d_gs = directed_distances(s, g)
    assert sorted(d_sg) == [1.0] * 8
    assert sorted(d_gs) == [1.0] * 12 + [math.sqrt(2)] * 4
    m = surface_metrics(s, g, tau=1.0)
    assert m.hd == math.sqrt(2) and m.nsd == 20 / 24
    assert m.assd == pytest.approx((20 + 4 * math.sqrt(2)) / 24, abs=1e-15)
    assert m.hd95 == math.sqrt(2)  # directed g->s: position 0.95 * 15 = 14.25 of 16 sorted, among the corners
    assert m.hd95_pooled == math.sqrt(2)  # pooled: position 0.95 * 23 = 21.85 of 24 sorted, also a corner


def test_boundary_is_4_neighbour_erosion_border_with_outside_as_background():
    rng = np.random.default_rng(1)
    for _ in range(50):
        m = _shape(rng, (int(rng.integers(5, 40)), int(rng.integers(5, 40))))
        expected = m ^ ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(2, 1), border_value=0)
        assert np.array_equal(boundary(m), expected)
    assert boundary(np.ones((4, 5), dtype=bool)).sum() == 2 * 4 + 2 * 5 - 4  # the image edge is a boundary


def test_crop_changes_nothing():
    """The same masks embedded in a larger empty image give identical values (crop + frame is exact)."""
    rng = np.random.default_rng(3)
    for _ in range(30):
        p, r = _blob(rng, (30, 30)), _blob(rng, (30, 30))
        p[0, 0] = r[29, 29] = True
        big_p, big_r = np.zeros((90, 70), dtype=bool), np.zeros((90, 70), dtype=bool)
        big_p[40:70, 20:50], big_r[40:70, 20:50] = p, r
        a = surface_metrics(p, r, (0.9, 1.3), 2.0)
        b = surface_metrics(big_p, big_r, (0.9, 1.3), 2.0)
        assert (a.hd, a.hd95, a.assd, a.nsd) == (b.hd, b.hd95, b.assd, b.nsd)


# ---------------------------------------------------------------- empty-mask policy (Metrics Reloaded)
def test_empty_policy():
    e = np.zeros((30, 40), dtype=bool)
    x = e.copy()
    x[5:9, 5:9] = True
    both = surface_metrics(e, e)
    assert (both.hd, both.hd95, both.assd, both.nsd, both.empty) == (0.0, 0.0, 0.0, 1.0, "both")
    diag = math.hypot(30 * 0.5, 40 * 2.0)  # physical image diagonal in mm
    for pred, ref, flag in [(e, x, "pred"), (x, e, "ref")]:
        m = surface_metrics(pred, ref, spacing=(0.5, 2.0))
        assert (m.hd, m.hd95, m.assd, m.nsd, m.empty) == (diag, diag, diag, 0.0, flag)
        # worse than any distance that can occur between two non-empty masks in the same image
        corner = e.copy()
        corner[0, 0] = True
        far = e.copy()
        far[-1, -1] = True
        assert m.hd > surface_metrics(corner, far, spacing=(0.5, 2.0)).hd
    with pytest.raises(ValueError):
        directed_distances(e, x)


def test_case_records_multiclass():
    pred = np.zeros((20, 20), dtype=np.int64)
    ref = np.zeros((20, 20), dtype=np.int64)
    pred[2:8, 2:8] = 1
    ref[2:8, 3:9] = 1
    ref[12:15, 12:15] = 2  # class 2 missed entirely
    recs = case_surface_metrics(pred, ref, classes=[1, 2, 3], spacing=(1.0, 1.0), tau={1: 1.0, 2: 2.0, 3: 3.0},
                                case_id="c7")
    assert [r["class_id"] for r in recs] == [1, 2, 3]
    assert all(r["case_id"] == "c7" for r in recs)
    assert [r["empty"] for r in recs] == ["none", "pred", "both"]
    assert [r["nsd_tau"] for r in recs] == [1.0, 2.0, 3.0]
    assert recs[0]["hd"] == surface_metrics(pred == 1, ref == 1).hd == 1.0
    assert recs[1]["nsd"] == 0.0 and recs[2]["nsd"] == 1.0
    assert set(recs[0]) == {"case_id", "class_id", "hd", "hd95", "assd", "nsd", "nsd_tau", "empty",
                           "hd95_pooled"}
    # a boolean mask counts as class 1
    assert case_surface_metrics(pred == 1, ref == 1, classes=[1])[0]["hd"] == 1.0


def test_user_errors():
    a = np.zeros((5, 5), dtype=bool)
    with pytest.raises(ConfigError, match="same shape"):
        surface_metrics(a, np.zeros((5, 6), dtype=bool))
    with pytest.raises(ConfigError, match="same shape"):
        surface_metrics(np.zeros((2, 5, 5), dtype=bool), np.zeros((2, 5, 5), dtype=bool))
    with pytest.raises(ConfigError, match="spacing"):
        surface_metrics(a, a, spacing=(0.0, 1.0))
    with pytest.raises(ConfigError, match="tau"):
        surface_metrics(a, a, tau=-1.0)


def test_benchmark_tiny_runs_and_agrees(capsys):
    """The benchmark script's --tiny mode, loaded from its file (in-process: torch and MONAI are imported
    already), so it cannot rot; its value checks against MONAI and medpy hold."""
    spec = importlib.util.spec_from_file_location("bench_metrics", ROOT / "benchmarks" / "bench_metrics.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--tiny"])
    out = capsys.readouterr().out
    assert "equal-work ratio" in out and "max relative difference to MONAI" in out
    for res in results:
        assert res["cases"] > 0 and all(len(t) == 2 for t in res["totals"].values())
        assert res["fastest_monai"] in bench.EQUAL_WORK
        assert max(res["max_rel_diff"].values()) < 1e-5
        assert max(res["max_abs_diff_medpy"].values()) < 1e-9


# ---------------------------------------------------------------- the fast path against the plain ones
def _random_masks(rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for _ in range(n):
        shape = (int(rng.integers(8, 70)), int(rng.integers(8, 70)))
        p, r = _shape(rng, shape), _shape(rng, shape)
        if p.any() and r.any():
            out.append((p, r))
    return out


def test_word_boundary_equals_erosion_definition():
    """The word-wise boundary (candidate words, then pixels) gives exactly the pixels, in the order, of the plain
    definition ``mask & ~binary_erosion(mask, cross, border_value=0)``; widths that are and are not multiples of
    8, non-contiguous inputs, single rows and columns."""
    from segarena.metrics.distance import _boundary_coords, _union_bbox

    rng = np.random.default_rng(7)
    cases = _random_masks(rng, 300)
    big = np.zeros((40, 200), dtype=bool)
    big[3:37, 5:190] = True
    cases += [(big, big[:, ::-1]), (big[:, ::2], big[:, 1::2]), (np.ones((1, 1), bool), np.ones((1, 1), bool)),
              (np.ones((1, 17), bool), np.ones((1, 17), bool)), (np.ones((23, 1), bool), np.eye(23, 1, dtype=bool)),
              # whole-word widths (the compiled path): foreground touching every image edge and word seam
              (np.ones((1, 8), bool), np.ones((1, 8), bool)), (np.ones((9, 16), bool), np.eye(9, 16, dtype=bool)),
              (np.ones((5, 24), bool), np.ones((5, 24), bool) & (np.arange(24) % 8 != 7))]
    for p, r in cases:
        r0, r1, c0, c1 = _union_bbox(p, r)
        u = p | r
        assert (r0, r1) == (np.flatnonzero(u.any(1))[0], np.flatnonzero(u.any(1))[-1] + 1)
        assert (c0, c1) == (np.flatnonzero(u.any(0))[0], np.flatnonzero(u.any(0))[-1] + 1)
        for m, (ys, xs) in zip((p, r), _boundary_coords(p, r)):
            ref = m & ~ndimage.binary_erosion(m, ndimage.generate_binary_structure(2, 1), border_value=0)
            ey, ex = np.nonzero(ref[r0:r1, c0:c1])
            assert np.array_equal(ys - 1, ey) and np.array_equal(xs - 1, ex)


def test_compiled_search_equals_kdtree_and_fallback(monkeypatch):
    """The compiled band-outward search equals the k-d tree search to one rounding error on every case, and with
    numba unavailable surface_metrics gives the same values through the k-d tree."""
    import builtins

    from segarena.metrics import distance

    worst = 0.0
    cases = _cases()[::3]
    for pred, ref, spacing, _ in cases:
        (yp, xp), (yr, xr) = distance._boundary_coords(pred, ref)
        for a, b in (((yp, xp), (yr, xr)), ((yr, xr), (yp, xp))):
            fast = distance._nearest_distance(*a, *b, spacing)
            slow = distance._nearest_distance_kdtree(*a, *b, spacing)
            worst = max(worst, float(np.max(np.abs(fast - slow) / np.maximum(slow, 1.0))))
    assert worst < 1e-14
    fast = [surface_metrics(p, r, s, t) for p, r, s, t in cases[:40]]
    real_import = builtins.__import__

    def no_numba(name, *args, **kwargs):
        if name == "numba" or name.endswith("_nearest") or (args and args[2] and "_nearest" in args[2]):
            raise ImportError("numba hidden by the test")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_numba)
    slow = [surface_metrics(p, r, s, t) for p, r, s, t in cases[:40]]
    monkeypatch.undo()
    for a, b in zip(fast, slow):
        for k in ("hd", "hd95", "assd", "nsd", "hd95_pooled"):
            assert abs(getattr(a, k) - getattr(b, k)) <= 1e-12 * max(1.0, getattr(a, k))


def test_native_size_lesion_agrees_with_medpy():
    """A Kvasir-sized frame (1080 x 1920) with a large lesion: medpy's float64 values through its public API."""
    spec = importlib.util.spec_from_file_location("bench_metrics", ROOT / "benchmarks" / "bench_metrics.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(11)
    pred, ref = bench.lesion_case(rng, (1080, 1920))
    while not pred.any():
        pred, ref = bench.lesion_case(rng, (1080, 1920))
    ours = surface_metrics(pred, ref, (0.8, 1.1))
    assert ours.hd == pytest.approx(medpy_binary.hd(pred, ref, (0.8, 1.1)), abs=1e-9)
    assert ours.assd == pytest.approx(medpy_binary.assd(pred, ref, (0.8, 1.1)), abs=1e-9)
    assert ours.hd95_pooled == pytest.approx(medpy_binary.hd95(pred, ref, (0.8, 1.1)), abs=1e-9)
