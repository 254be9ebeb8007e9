"""Tiny models for tests and smoke runs: same contract, a few thousand parameters."""
from __future__ import annotations

import torch.nn as nn

from ..card import ModelCard, register_model
from .unet import UNet


@register_model(ModelCard(
    name="tiny-unet", family="test", title="Tiny U-Net (8 base channels, 2 levels)",
    paper="test model (U-Net design: Ronneberger et al., MICCAI 2015)", repo="segarena", license="Apache-2.0",
    input_divisor=4, min_size=8, gradcam_layer="dec.1",
))
def build_tiny_unet(num_classes: int, in_channels: int = 3, pretrained: bool | str = False) -> nn.Module:
    return UNet(in_channels, num_classes, base=8, depth=2)


@register_model(ModelCard(
    name="tiny-fcn", family="test", title="Tiny fully-convolutional net (3 conv layers)",
    paper="test model", repo="segarena", license="Apache-2.0", input_divisor=1, min_size=4,
    gradcam_layer="1",
))
def build_tiny_fcn(num_classes: int, in_channels: int = 3, pretrained: bool | str = False) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(8, num_classes, 1))
