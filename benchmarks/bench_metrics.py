"""Speed and agreement of segarena's boundary metrics against MONAI and medpy.

Prints, over N synthetic 512x512 cases shaped like lesion masks (one irregular object; the prediction is the
reference shifted, grown or shrunk, sometimes with a false-positive blob, sometimes empty), the time per case of

* segarena ``surface_metrics`` (HD, HD95, ASSD and NSD from one call),
* MONAI: ``compute_hausdorff_distance`` (twice: max and 95th percentile), ``compute_average_surface_distance``
  and ``compute_surface_dice`` -- the four calls a MONAI user needs for the same four numbers,
* medpy: ``hd``, ``hd95`` and ``assd`` (medpy has no NSD),

the speed ratios, and the largest absolute difference of each metric where the definitions coincide (medpy's
HD95 is compared with our ``hd95_pooled``; MONAI computes in float32, so its differences are ~1e-5 mm).
Cases with an empty mask are timed only for segarena (the references raise or return NaN/inf there).

    python benchmarks/bench_metrics.py            # 100 cases at 512x512, spacing (0.8, 1.1) mm
    python benchmarks/bench_metrics.py --tiny     # a few 64x64 cases: the test suite runs this so it cannot rot
"""
from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from segarena.metrics.distance import surface_metrics


def lesion_case(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A (pred, ref) pair: an irregular blob of 2-40 % of the image and a perturbed copy of it."""
    frac = rng.uniform(0.02, 0.4)
    radius = np.sqrt(frac * size * size / np.pi)
    cy, cx = rng.uniform(radius * 0.6, size - radius * 0.6, 2)
    yy, xx = np.mgrid[:size, :size]
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + 0.15 * np.sin(3 * angle + rng.uniform(0, 6)) + 0.1 * np.sin(5 * angle + rng.uniform(0, 6))
    ref = np.hypot(yy - cy, xx - cx) < radius * wobble
    if rng.random() < 0.05:
        return np.zeros_like(ref), ref
    pred = np.roll(ref, tuple(rng.integers(-size // 40, size // 40 + 1, 2)), axis=(0, 1))
    grow = int(rng.integers(-size // 60, size // 60 + 1))
    if grow > 0:
        pred = ndimage.binary_dilation(pred, iterations=grow)
    elif grow < 0:
        pred = ndimage.binary_erosion(pred, iterations=-grow)
    if rng.random() < 0.3:
        r = size // 30
        y, x = rng.integers(r, size - r, 2)
        pred = pred | (np.hypot(yy - y, xx - x) < r)
    return pred, ref


def _monai(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float], tau: float) -> tuple:
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    p = torch.from_numpy(pred)[None, None]
    r = torch.from_numpy(ref)[None, None]
    kw = {"include_background": True, "spacing": spacing}
    hd = compute_hausdorff_distance(p, r, **kw)
    hd95 = compute_hausdorff_distance(p, r, percentile=95, **kw)
    assd = compute_average_surface_distance(p, r, symmetric=True, **kw)
    nsd = compute_surface_dice(p, r, [tau], **kw)
    return tuple(float(v.item()) for v in (hd, hd95, assd, nsd))


def _medpy(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float]) -> tuple:
    from medpy.metric import binary

    return binary.hd(pred, ref, spacing), binary.hd95(pred, ref, spacing), binary.assd(pred, ref, spacing)


def _time(fn: Callable[[], object], repeats: int) -> float:
    """Best of ``repeats`` wall times (s): the least disturbed by other processes on a shared machine."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run(n: int, size: int, spacing: tuple[float, float], tau: float, repeats: int, seed: int = 0) -> dict:
    """Benchmark ``n`` cases; returns the timings (s, summed over cases), ratios and max abs differences."""
    rng = np.random.default_rng(seed)
    cases = [lesion_case(rng, size) for _ in range(n)]
    t_ours = t_monai = t_medpy = 0.0
    diff = {k: 0.0 for k in ("monai_hd", "monai_hd95", "monai_assd", "monai_nsd",
                             "medpy_hd", "medpy_hd95_pooled", "medpy_assd")}
    timed = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warm = np.zeros((8, 8), dtype=bool)
        warm[2:5, 2:5] = True
        _monai(warm, warm, spacing, tau)  # warm-up: imports and first-call caches are not timed
        _medpy(warm, warm, spacing)
        for pred, ref in cases:
            ours = surface_metrics(pred, ref, spacing, tau)
            if ours.empty != "none":
                continue
            timed += 1
            t_ours += _time(lambda p=pred, r=ref: surface_metrics(p, r, spacing, tau), repeats)
            t_monai += _time(lambda p=pred, r=ref: _monai(p, r, spacing, tau), repeats)
            t_medpy += _time(lambda p=pred, r=ref: _medpy(p, r, spacing), repeats)
            m = _monai(pred, ref, spacing, tau)
            d = _medpy(pred, ref, spacing)
            for key, a, b in zip(("monai_hd", "monai_hd95", "monai_assd", "monai_nsd"), m,
                                 (ours.hd, ours.hd95, ours.assd, ours.nsd)):
                diff[key] = max(diff[key], abs(a - b))
            for key, a, b in zip(("medpy_hd", "medpy_hd95_pooled", "medpy_assd"), d,
                                 (ours.hd, ours.hd95_pooled, ours.assd)):
                diff[key] = max(diff[key], abs(a - b))
    return {"cases": n, "timed": timed, "size": size, "t_ours": t_ours, "t_monai": t_monai, "t_medpy": t_medpy,
            "ratio_monai": t_monai / t_ours, "ratio_medpy": t_medpy / t_ours, "max_abs_diff": diff}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100, help="number of cases")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--spacing", type=float, nargs=2, default=(0.8, 1.1), metavar=("SY", "SX"))
    ap.add_argument("--tau", type=float, default=2.0, help="NSD tolerance in mm")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats per case (best is kept)")
    ap.add_argument("--tiny", action="store_true", help="4 cases at 64x64, 1 repeat (smoke test)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.n, args.size, args.repeats = 4, 64, 1
    res = run(args.n, args.size, tuple(args.spacing), args.tau, args.repeats)
    k = max(res["timed"], 1)
    print(f"{res['timed']} of {res['cases']} cases timed ({res['size']}x{res['size']}, spacing {tuple(args.spacing)},"
          f" tau {args.tau}); time per case, best of {args.repeats}:")
    print(f"  segarena (HD, HD95, ASSD, NSD)  {1e3 * res['t_ours'] / k:8.2f} ms")
    print(f"  MONAI    (4 calls)              {1e3 * res['t_monai'] / k:8.2f} ms   ratio {res['ratio_monai']:6.1f}x")
    print(f"  medpy    (hd, hd95, assd)       {1e3 * res['t_medpy'] / k:8.2f} ms   ratio {res['ratio_medpy']:6.1f}x")
    print("max abs difference: " + ", ".join(f"{key} {v:.2e}" for key, v in res["max_abs_diff"].items()))
    return res


if __name__ == "__main__":
    main()
