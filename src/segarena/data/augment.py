"""Augmentation presets, applied to whole uint8 batches on the training device.

Written in torch rather than albumentations on purpose: images come from the memory-mapped prepared cache as
uint8 batches, so one batched affine warp on the GPU (or CPU) replaces per-sample CPU work and worker processes,
and every model sees exactly the same random stream for a given seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._registry import Registry


@dataclass(frozen=True)
class AugPreset:
    name: str
    hflip: float = 0.0
    vflip: float = 0.0
    rotate_deg: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    translate: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    description: str = ""


AUGMENTATIONS: Registry[AugPreset] = Registry("augmentation")
for _p in (
    AugPreset("none", description="no augmentation"),
    AugPreset("light", hflip=0.5, vflip=0.5, description="random horizontal and vertical flips"),
    AugPreset("paper", hflip=0.5, vflip=0.5, rotate_deg=15.0, scale=(0.9, 1.1), translate=0.05, brightness=0.1,
              contrast=0.1, description="flips, rotation ±15°, scale 0.9-1.1, shift ±5%, brightness ±0.1 σ, contrast ±10% "
                                        "(the paper's exact augmentations are not published; identical for all "
                                        "models)"),
):
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


def augment(images: torch.Tensor, masks: torch.Tensor, preset: AugPreset,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``preset`` to float images [N, C, H, W] (already normalized) and long masks [N, H, W].

    Geometry is shared by image and mask (bilinear for the image, nearest for the mask; pixels moved in from
    outside are zero / background). Random numbers come from ``generator`` (CPU), so runs are reproducible.
    """
    n = images.shape[0]
    if preset.name == "none" or n == 0:
        return images, masks

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (hi - lo) + lo

    flip_x = torch.where(torch.rand(n, generator=generator) < preset.hflip, -1.0, 1.0)
    flip_y = torch.where(torch.rand(n, generator=generator) < preset.vflip, -1.0, 1.0)
    angle = u(-preset.rotate_deg, preset.rotate_deg) * math.pi / 180
    scale = u(*preset.scale)
    tx, ty = u(-preset.translate, preset.translate) * 2, u(-preset.translate, preset.translate) * 2
    bright = u(-preset.brightness, preset.brightness)
    contrast = u(1 - preset.contrast, 1 + preset.contrast)
    geometric = preset.rotate_deg or preset.scale != (1.0, 1.0) or preset.translate
    dev = images.device
    if geometric:
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * flip_x, -sin * flip_y, tx
        theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin * flip_x, cos * flip_y, ty
        grid = F.affine_grid(theta.to(dev, images.dtype), list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        masks = F.grid_sample(masks[:, None].to(images.dtype), grid, mode="nearest", padding_mode="zeros",
                              align_corners=False)[:, 0].round().long()
    else:  # flips only: touch just the samples that flip
        images, masks = images.clone(), masks.clone()
        for flip, dim in ((flip_x, -1), (flip_y, -2)):
            sel = torch.nonzero(flip < 0).flatten().to(dev)
            if sel.numel():
                images[sel] = images[sel].flip(dim)
                masks[sel] = masks[sel].flip(dim)
    if preset.brightness or preset.contrast:
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * contrast.to(dev).view(-1, 1, 1, 1) + mean + bright.to(dev).view(-1, 1, 1, 1)
    return images, masks


