"""Augmentation cost per batch: the kornia presets (light, paper, nnunet) against the hand-written torch version
segarena used before (flips, one batched affine warp, brightness/contrast; kept below verbatim in behaviour as the
baseline). Per-batch milliseconds on the training device, uint8 batch -> augmented, normalized float batch.

    python benchmarks/bench_augment.py --size 512 --batch 8 --repeat 20
"""
from __future__ import annotations

import math
import statistics
import time

import torch
import torch.nn.functional as F

from _common import device_name, parser, sync

from segarena.data.augment import AUGMENTATIONS, augment, normalize, normalize_unit, to_unit

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def handwritten_paper(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
    """The pre-kornia 'paper' preset: flips, rotation ±15°, scale 0.9-1.1, shift ±5%, brightness/contrast ±0.1,
    as one affine_grid + grid_sample on normalized images (the baseline of this benchmark)."""
    n = images.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (hi - lo) + lo

    flip_x = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    flip_y = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    angle, scale = u(-15.0, 15.0) * math.pi / 180, u(0.9, 1.1)
    tx, ty = u(-0.05, 0.05) * 2, u(-0.05, 0.05) * 2
    bright, contrast = u(-0.1, 0.1), u(0.9, 1.1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * flip_x, -sin * flip_y, tx
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin * flip_x, cos * flip_y, ty
    dev = images.device
    grid = F.affine_grid(theta.to(dev, images.dtype), list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks[:, None].to(images.dtype), grid, mode="nearest", padding_mode="zeros",
                          align_corners=False)[:, 0].round().long()
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * contrast.to(dev).view(-1, 1, 1, 1) + mean + bright.to(dev).view(-1, 1, 1, 1)
    return images, masks


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeat", type=int, default=20)
    a = p.parse_args()
    if a.tiny:
        a.size, a.batch, a.repeat = 64, 4, 3
    device = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (a.batch, a.size, a.size, 3), dtype=torch.uint8, generator=g).to(device)
    masks = (torch.rand(a.batch, a.size, a.size, generator=g) > 0.7).long().to(device)
    print(f"augmentation cost per batch of {a.batch} x {a.size}x{a.size} RGB on {device_name(device)} "
          f"({a.repeat} interleaved rounds, one call of each per round; milliseconds, lower is better)")
    gen = torch.Generator().manual_seed(0)
    calls = {"normalize only (no augmentation)": lambda: normalize(images, MEAN, STD),
             "hand-written paper (before kornia)": lambda: handwritten_paper(normalize(images, MEAN, STD), masks,
                                                                            gen)}
    for name in ("light", "paper", "nnunet"):
        def step(preset=AUGMENTATIONS.get(name)) -> None:
            x, y = augment(to_unit(images), masks, preset, gen)
            normalize_unit(x, MEAN, STD)

        calls["kornia " + name] = step
    for f in calls.values():  # warm-up: builds each kornia pipeline once (cached per process), as a first step does
        f()
    times = {k: [] for k in calls}
    for _ in range(a.repeat):
        for k, f in calls.items():
            sync(device)
            t = time.perf_counter()
            f()
            sync(device)
            times[k].append(time.perf_counter() - t)
    base = times["hand-written paper (before kornia)"]
    for k, t in times.items():
        r = [v / b for v, b in zip(t, base)]
        print(f"  {k:<44}{statistics.median(t) * 1000:8.2f} ms   ratio vs hand-written min / median / max "
              f"{min(r):.2f} / {statistics.median(r):.2f} / {max(r):.2f}")


if __name__ == "__main__":
    main()
