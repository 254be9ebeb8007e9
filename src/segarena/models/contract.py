"""The one model contract: ``SegModel(x)`` with ``x`` ``[N, C, H, W]`` returns logits ``[N, K, H, W]``.

Wrappers absorb each network's documented quirks so the protocol never special-cases a model: an input whose
size is not a multiple of ``card.input_divisor`` is zero-padded at the bottom/right and the logits cropped back
(the card field says so); ``card.fixed_size`` networks run at that size; decoders that predict at a stride are
upsampled. What the wrapper cannot fix it refuses, with the shape to use: an input that is not ``[N, C, H, W]``,
the wrong number of input channels, an input below ``card.min_size``, and a network whose logits do not have
``num_classes`` channels (``num_classes`` is the number of logits: 1 for a sigmoid binary loss).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._errors import ConfigError
from .card import ModelCard


class SegModel(nn.Module):
    def __init__(self, net: nn.Module, card: ModelCard, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.net = net
        self.card = card
        self.num_classes = num_classes
        self.in_channels = in_channels

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ConfigError(f"model {self.card.name!r}: expected input [N, C, H, W], got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ConfigError(f"model {self.card.name!r} was built for {self.in_channels} input channel(s), got "
                              f"{x.shape[1]}", fix="build it with in_channels matching the data")
        if min(x.shape[-2:]) < self.card.min_size:
            raise ConfigError(f"model {self.card.name!r}: input {tuple(x.shape[-2:])} is smaller than its minimum "
                              f"{self.card.min_size}", fix=f"use --set protocol.input_size>={self.card.min_size}")

    def check_output(self, y: torch.Tensor, n: int) -> None:
        """Logits must be ``[N, num_classes, h, w]``; anything else is a network built with the wrong head."""
        if not isinstance(y, torch.Tensor) or y.ndim != 4 or y.shape[0] != n:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ConfigError(f"model {self.card.name!r} returned {shape}, not logits [N, K, H, W] for N={n}",
                              fix="make the network return one tensor [N, num_classes, H, W] (or a dict with 'out')")
        if y.shape[1] != self.num_classes:
            raise ConfigError(f"model {self.card.name!r} returned {y.shape[1]} output channel(s), shape "
                              f"{tuple(y.shape)}, but was built for {self.num_classes} logit(s)",
                              fix=f"build its head with {self.num_classes} output channels: logits of shape "
                                  f"[{n}, {self.num_classes}, {y.shape[2]}, {y.shape[3]}]")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        h, w = x.shape[-2:]
        if self.card.fixed_size:
            s = self.card.fixed_size
            y = self._run(F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False))
            return F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        d = self.card.input_divisor
        ph, pw = (-h) % d, (-w) % d
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="constant", value=0.0)
        y = self._run(x)
        if y.shape[-2:] != x.shape[-2:]:  # decoders that predict at a stride (SegFormer: 1/4)
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y[..., :h, :w]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if isinstance(y, dict):
            y = y.get("out", next(iter(y.values())))
        elif isinstance(y, (list, tuple)):
            y = y[0]  # deep supervision: the first output is the full-resolution one
        self.check_output(y, x.shape[0])
        return y
