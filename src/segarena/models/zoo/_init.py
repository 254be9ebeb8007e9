"""The weight initialisation the official Swin/PVT/VMamba/MSCAN/UNeXt code bases share, written once.

Linear: truncated normal (std 0.02), zero bias. Conv2d (where the official code does it): normal with
std sqrt(2 / fan_out), zero bias. LayerNorm: unit weight, zero bias. Applied with ``module.apply`` before any
checkpoint is loaded; each model passes the flags its official code uses.
"""
from __future__ import annotations

import math

from torch import nn


def init_official(m: nn.Module, *, linear: bool = True, conv: bool = False) -> None:
    if linear and isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif conv and isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
