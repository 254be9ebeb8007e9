"""Speed and agreement of segarena's boundary metrics against MONAI (on equal work) and medpy.

Like with like: every method produces the same four numbers (HD, HD95, ASSD, NSD) of one case, on the same
masks, in the same process, on one thread, after a warm-up. MONAI is given its fastest ways to do one edge pass
and one distance pass per direction, reused for all four numbers (its public metric functions redo both for each
metric; that naive total is printed for context only):

* ``monai-edges``: ``get_edge_surface_distance(symmetric=True)`` on tensors (what its metric classes call),
* ``monai-np-crop`` / ``monai-np-full``: ``get_mask_edges`` on numpy arrays (cropped to the foreground, or not)
  then ``get_surface_distance`` in both directions (a k-d tree over the edge pixels),

and the four numbers computed from those distances with numpy. The headline ratio is against the fastest of the
three (by median). medpy (``hd``, ``hd95``, ``assd``: three public calls, each with its own distance transforms,
no NSD) is timed at sizes up to 512 x 512 only, for context.

Timing is interleaved: each repeat times every case once with every method (methods in a rotating order), so a
busy machine slows all methods alike; the ratio is taken per repeat and min / median / max over repeats printed.

Mask generator (:func:`lesion_case`): one irregular lesion (a circle with two sinusoidal wobbles of its radius)
covering 2-40 % of the image; the prediction is the reference shifted by up to 1/40 of the image side, grown or
shrunk by up to 1/60 of it, in 30 % of cases plus a false-positive disc, and in 5 % of cases empty (empty cases are
skipped: MONAI returns inf/NaN there). Sizes: 512 x 512 and native sizes of the paper's datasets up to
1920 x 1080 (Kvasir-SEG's largest frames); spacing (0.8, 1.1) mm, NSD tolerance 2 mm.

    python benchmarks/bench_metrics.py                       # 30 cases per size, 7 interleaved repeats
    python benchmarks/bench_metrics.py --sizes 512x512 --medpy
    python benchmarks/bench_metrics.py --tiny                # seconds; the test suite runs this
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread for everyone (MONAI's torch ops would use all cores)

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from segarena.metrics.distance import surface_metrics  # noqa: E402

SPACING = (0.8, 1.1)
TAU = 2.0


def lesion_case(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A (pred, ref) pair of an ``[H, W]`` image: an irregular lesion of 2-40 % of the image and a perturbed copy."""
    h, w = shape
    side = min(h, w)
    frac = rng.uniform(0.02, 0.4)
    radius = min(np.sqrt(frac * h * w / np.pi), 0.45 * side)
    cy, cx = rng.uniform(radius, h - radius), rng.uniform(radius, w - radius)
    yy, xx = np.mgrid[:h, :w]
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + 0.15 * np.sin(3 * angle + rng.uniform(0, 6)) + 0.1 * np.sin(5 * angle + rng.uniform(0, 6))
    ref = np.hypot(yy - cy, xx - cx) < radius * wobble
    if rng.random() < 0.05:
        return np.zeros_like(ref), ref
    pred = np.roll(ref, tuple(rng.integers(-side // 40, side // 40 + 1, 2)), axis=(0, 1))
    grow = int(rng.integers(-side // 60, side // 60 + 1))
    if grow > 0:
        pred = ndimage.binary_dilation(pred, iterations=grow)
    elif grow < 0:
        pred = ndimage.binary_erosion(pred, iterations=-grow)
    if rng.random() < 0.3:
        r = side // 30
        y, x = rng.integers(r, h - r), rng.integers(r, w - r)
        pred = pred | (np.hypot(yy - y, xx - x) < r)
    return pred, ref


def _four(d_pr: np.ndarray, d_rp: np.ndarray, tau: float) -> tuple[float, float, float, float]:
    pooled = np.concatenate([d_pr, d_rp])
    return (float(max(d_pr.max(), d_rp.max())), float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))),
            float(pooled.mean()), float(np.count_nonzero(pooled <= tau) / pooled.size))


def ours(pred: np.ndarray, ref: np.ndarray) -> tuple:
    m = surface_metrics(pred, ref, SPACING, TAU)
    return m.hd, m.hd95, m.assd, m.nsd


def monai_edges(pred: np.ndarray, ref: np.ndarray) -> tuple:
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    _, (d_pr, d_rp), _ = get_edge_surface_distance(torch.from_numpy(pred), torch.from_numpy(ref),
                                                    spacing=SPACING, symmetric=True)
    return _four(d_pr.numpy(), d_rp.numpy(), TAU)


def _monai_np(pred: np.ndarray, ref: np.ndarray, crop: bool) -> tuple:
    from monai.metrics.utils import get_mask_edges, get_surface_distance

    e_p, e_r = get_mask_edges(pred, ref, crop=crop)
    return _four(get_surface_distance(e_p, e_r, spacing=SPACING), get_surface_distance(e_r, e_p, spacing=SPACING),
                 TAU)


def monai_np_crop(pred: np.ndarray, ref: np.ndarray) -> tuple:
    return _monai_np(pred, ref, True)


def monai_np_full(pred: np.ndarray, ref: np.ndarray) -> tuple:
    return _monai_np(pred, ref, False)


def monai_four_calls(pred: np.ndarray, ref: np.ndarray) -> tuple:
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    p, r = torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None]
    kw = {"include_background": True, "spacing": SPACING}
    return tuple(float(v.item()) for v in (
        compute_hausdorff_distance(p, r, **kw), compute_hausdorff_distance(p, r, percentile=95, **kw),
        compute_average_surface_distance(p, r, symmetric=True, **kw), compute_surface_dice(p, r, [TAU], **kw)))


def medpy_three_calls(pred: np.ndarray, ref: np.ndarray) -> tuple:
    from medpy.metric import binary

    return binary.hd(pred, ref, SPACING), binary.hd95(pred, ref, SPACING), binary.assd(pred, ref, SPACING)


EQUAL_WORK = ("monai-edges", "monai-np-crop", "monai-np-full")


def run(shape: tuple[int, int], n: int, repeats: int, medpy: bool, seed: int = 0) -> dict:
    """Interleaved timings of every method on ``n`` cases of ``shape``; per-repeat totals (s) and value checks."""
    rng = np.random.default_rng(seed)
    cases = [c for c in (lesion_case(rng, shape) for _ in range(n)) if c[0].any()]
    methods: dict[str, Callable] = {"segarena": ours, "monai-edges": monai_edges, "monai-np-crop": monai_np_crop,
                                    "monai-np-full": monai_np_full, "monai-4-calls": monai_four_calls}
    if medpy:
        methods["medpy-3-calls"] = medpy_three_calls
    names = list(methods)
    totals = {k: [] for k in names}
    diff = dict.fromkeys(("hd", "hd95", "assd", "nsd"), 0.0)
    diff_medpy = dict.fromkeys(("hd", "hd95_pooled", "assd"), 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for pred, ref in cases[:1]:  # warm-up: imports and first-call caches are not timed
            for f in methods.values():
                f(pred, ref)
        for pred, ref in cases:  # values: ours against MONAI's distances (float32, so ~1e-5 mm)
            for k, a, b in zip(diff, ours(pred, ref), monai_edges(pred, ref)):
                diff[k] = max(diff[k], abs(a - b) / max(1.0, abs(a)))
            if medpy:  # medpy computes in float64: absolute agreement (its HD95 is the pooled one)
                m = surface_metrics(pred, ref, SPACING, TAU)
                for k, a, b in zip(diff_medpy, (m.hd, m.hd95_pooled, m.assd), medpy_three_calls(pred, ref)):
                    diff_medpy[k] = max(diff_medpy[k], abs(a - b))
        for rep in range(repeats):
            acc = dict.fromkeys(names, 0.0)
            for i, (pred, ref) in enumerate(cases):
                shift = (rep + i) % len(names)
                for k in names[shift:] + names[:shift]:
                    t = time.perf_counter()
                    methods[k](pred, ref)
                    acc[k] += time.perf_counter() - t
            for k in names:
                totals[k].append(acc[k])
    fastest = min(EQUAL_WORK, key=lambda k: float(np.median(totals[k])))
    return {"shape": shape, "cases": len(cases), "totals": totals, "fastest_monai": fastest, "max_rel_diff": diff,
            "max_abs_diff_medpy": diff_medpy if medpy else {}}


def _ratios(res: dict, key: str) -> np.ndarray:
    return np.asarray(res["totals"][key]) / np.asarray(res["totals"]["segarena"])


def report(res: dict) -> None:
    h, w = res["shape"]
    k = res["cases"]
    print(f"\n{h}x{w}: {k} cases, {len(res['totals']['segarena'])} interleaved repeats; ms per case (median) and "
          "ratio to segarena per repeat (min / median / max)")
    for name, tot in res["totals"].items():
        line = f"  {name:15s} {1e3 * float(np.median(tot)) / k:8.2f} ms"
        if name != "segarena":
            r = _ratios(res, name)
            line += f"   ratio {r.min():6.1f} / {np.median(r):6.1f} / {r.max():6.1f}"
        print(line)
    r = _ratios(res, res["fastest_monai"])
    print(f"  equal-work ratio vs MONAI's fastest ({res['fastest_monai']}): min {r.min():.1f}, median "
          f"{np.median(r):.1f}, max {r.max():.1f} (target >= 10)")
    print("  max relative difference to MONAI: " + ", ".join(f"{m} {v:.1e}" for m, v in res["max_rel_diff"].items()))
    if res["max_abs_diff_medpy"]:
        print("  max abs difference to medpy: "
              + ", ".join(f"{m} {v:.1e}" for m, v in res["max_abs_diff_medpy"].items()))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=30, help="cases per size")
    ap.add_argument("--sizes", nargs="+", default=["512x512", "576x720", "1080x1920"], metavar="HxW")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved timing repeats")
    ap.add_argument("--medpy", action="store_true", help="also time medpy (sizes up to 512x512 by default)")
    ap.add_argument("--tiny", action="store_true", help="4 cases at 64x64 and 48x80, 2 repeats (smoke test)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.n, args.sizes, args.repeats, args.medpy = 4, ["64x64", "48x80"], 2, True
    out = []
    for size in args.sizes:
        h, w = (int(v) for v in size.lower().split("x"))
        res = run((h, w), args.n, args.repeats, args.medpy and h * w <= 512 * 512)
        report(res)
        out.append(res)
    return out


if __name__ == "__main__":
    main()
