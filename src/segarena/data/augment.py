"""Augmentation presets, applied with kornia to whole batches on the training device, inside the training step.

The presets themselves (operations, parameters, probabilities, which values are inferred) are plain data in
:mod:`segarena._augment_presets`: ``none``, ``light`` (flips), ``paper`` (the authors' known WoundAmbit pipeline)
and ``nnunet`` (nnU-Net's standard 2D set). Images come from the memory-mapped prepared cache as uint8 batches,
are scaled to [0, 1] on the device, augmented, then normalized; every geometric operation moves the mask with
the image (nearest-neighbour, so label values stay labels). Random numbers come from one seed drawn per batch
from the run's generator, so a run is reproducible, resumes identically, and every model of a study sees the
same augmentation stream for the same seed.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F

from .._augment_presets import KINDS, PRESETS, AugPreset, Op
from .._registry import Registry

AUGMENTATIONS: Registry[AugPreset] = Registry("augmentation")
for _p in PRESETS.values():
    AUGMENTATIONS.register(_p.name, _p)


def channel_stats(mean: tuple[float, ...], std: tuple[float, ...], channels: int) -> tuple[tuple[float, ...],
                                                                                        tuple[float, ...]]:
    """The mean/std actually applied to ``channels`` input channels: the card's values for RGB; for one channel
    the average of the card's values (an RGB card's three means would otherwise be ambiguous)."""
    if channels == 1 and len(mean) > 1:
        return (float(sum(mean) / len(mean)),), (float(sum(std) / len(std)),)
    return tuple(float(v) for v in mean[:channels]), tuple(float(v) for v in std[:channels])


def normalize(images_u8: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 [N, H, W, C] -> float [N, C, H, W], scaled to [0, 1] then normalized per channel
    (:func:`channel_stats` gives the values used)."""
    c = images_u8.shape[-1]
    cm, cs = channel_stats(tuple(mean), tuple(std), c)
    m = torch.tensor(cm, dtype=torch.float32)
    s = torch.tensor(cs, dtype=torch.float32)
    # (x / 255 - m) / s as one fused multiply-add over a contiguous NCHW float copy: two passes over the batch
    # instead of five (this runs on every training step)
    scale = (1.0 / (255.0 * s)).to(images_u8.device).view(1, -1, 1, 1)
    shift = (-m / s).to(images_u8.device).view(1, -1, 1, 1)
    x = images_u8.permute(0, 3, 1, 2).contiguous().float()
    return torch.addcmul(shift, x, scale)


def to_unit(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, C] -> float [N, C, H, W] in [0, 1] (the space the augmentations work in)."""
    return images_u8.permute(0, 3, 1, 2).contiguous().float().div_(255.0)


def normalize_unit(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """float [N, C, H, W] in [0, 1] -> normalized with :func:`channel_stats` (the same values as
    :func:`normalize` applies to uint8 batches)."""
    cm, cs = channel_stats(tuple(mean), tuple(std), images.shape[1])
    m = torch.tensor(cm, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(cs, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s


Stage = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _kornia_stage(op: Op, channels: int) -> Stage | None:
    try:
        import kornia.augmentation as K
    except ImportError:
        from .._errors import ConfigError

        raise ConfigError(f"augmentation operation {op.kind!r} needs kornia",
                          fix="pip install kornia (a core dependency of segarena)") from None
    a = dict(op.params)
    if op.kind == "hflip":
        aug = K.RandomHorizontalFlip(p=op.p)
    elif op.kind == "vflip":
        aug = K.RandomVerticalFlip(p=op.p)
    elif op.kind in ("affine", "rotate", "scale"):
        t = a.get("translate")
        aug = K.RandomAffine(degrees=a.get("degrees", 0.0), translate=(t, t) if t else None, scale=a.get("scale"),
                             shear=a.get("shear"), p=op.p, padding_mode="zeros")
    elif op.kind == "blur":
        aug = K.RandomGaussianBlur(a["kernel_size"], a["sigma"], p=op.p)
    elif op.kind == "color":
        jitter = {k: a[k] for k in ("brightness", "contrast", "saturation", "hue") if k in a}
        if channels != 3:  # saturation and hue do not change gray values
            jitter = {k: v for k, v in jitter.items() if k in ("brightness", "contrast")}
        if not jitter:
            return None
        aug = K.ColorJitter(**jitter, p=op.p)
    elif op.kind == "noise":
        aug = K.RandomGaussianNoise(mean=0.0, std=a["std"], p=op.p)
    elif op.kind == "gamma":
        aug = K.RandomGamma(gamma=a["gamma"], p=op.p)
    elif op.kind == "lowres":
        return lambda x, m: (_low_resolution(x, op.p, a["zoom"]), m)
    else:  # pragma: no cover - the preset table only uses KINDS
        raise ValueError(f"unknown augmentation operation {op.kind!r} (known: {', '.join(KINDS)})")
    seq = K.AugmentationSequential(aug, data_keys=["input", "mask"])
    geometric = op.kind in ("hflip", "vflip", "affine", "rotate", "scale")

    def run(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if geometric:
            return tuple(seq(x, m))  # type: ignore[return-value]
        return aug(x).clamp_(0.0, 1.0), m

    return run


def _low_resolution(x: torch.Tensor, p: float, zoom: tuple[float, float]) -> torch.Tensor:
    """nnU-Net's low-resolution simulation per image: nearest-neighbour down by a zoom in ``zoom``, bicubic up."""
    n, _, h, w = x.shape
    pick = torch.rand(n) < p
    z = torch.rand(n) * (zoom[1] - zoom[0]) + zoom[0]
    if not pick.any():
        return x
    x = x.clone()
    for i in torch.nonzero(pick).flatten().tolist():
        size = (max(1, round(h * float(z[i]))), max(1, round(w * float(z[i]))))
        small = F.interpolate(x[i:i + 1], size=size, mode="nearest")
        x[i:i + 1] = F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
    return x


@lru_cache(maxsize=16)
def pipeline(name: str, channels: int) -> tuple[Stage, ...]:
    """The stages of preset ``name`` for ``channels``-channel images (built once per process)."""
    preset = AUGMENTATIONS.get(name)
    return tuple(s for s in (_kornia_stage(op, channels) for op in preset.ops) if s is not None)


def augment(images: torch.Tensor, masks: torch.Tensor, preset: AugPreset,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``preset`` to float images [N, C, H, W] in [0, 1] and long masks [N, H, W] on their device.

    One seed is drawn from ``generator`` (CPU) per call and every random draw of the pipeline happens under it
    (``torch.random.fork_rng``), so the global RNG is untouched and the result depends only on the generator's
    state: reproducible, resumable, identical for every model given the same seed and batch.
    """
    n = images.shape[0]
    stages = pipeline(preset.name, images.shape[1]) if preset.ops else ()
    if not stages or n == 0:
        return images, masks
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    devices = [images.device] if images.device.type == "cuda" else []
    m = masks[:, None].to(images.dtype)
    with torch.random.fork_rng(devices=devices, device_type="cuda" if devices else "cpu"):
        torch.manual_seed(seed)
        x = images
        for stage in stages:
            x, m = stage(x, m)
    return x, m[:, 0].round().long()
