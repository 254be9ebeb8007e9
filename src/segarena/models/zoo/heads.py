"""Decoder heads and checkpoint-key helpers shared by several zoo models.

:class:`UPerNetHead` is the Unified Perceptual Parsing decoder (Xiao et al., ECCV 2018, arXiv:1807.10221) as the
general-purpose segmentation papers use it on top of a four-stage backbone (Swin, ConvNeXt, InternImage,
TransNeXt): a pyramid pooling module (PSPNet) on the deepest feature, a top-down FPN over all stages, and a 3x3
fusion of the upsampled pyramid. Widths follow the MMSegmentation ``UPerHead`` configs those papers trained with
(512 channels, pool scales 1/2/3/6, dropout 0.1 before the classifier); the module and attribute names mirror
that layout (``psp_modules``, ``bottleneck``, ``lateral_convs``, ``fpn_convs``, ``fpn_bottleneck``, ``conv_seg``,
each conv block with ``conv``/``bn``), so an ``decode_head.*`` state dict from those checkpoints maps onto it by
stripping the prefix. The auxiliary FCN head used only as a training loss in those configs is not part of it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ConvBNReLU", "UPerNetHead"]


class ConvBNReLU(nn.Module):
    """Convolution (no bias) -> BatchNorm -> ReLU, the block MMSegmentation calls ``ConvModule``."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, padding: int | None = None) -> None:
        super().__init__()
        pad = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=pad, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")  # as ConvModule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class UPerNetHead(nn.Module):
    """UPerNet decoder: PPM on the last feature + FPN top-down path + fusion, logits at the first feature's stride.

    ``in_channels`` lists the backbone's feature widths from the highest resolution (stride 4) to the lowest;
    ``forward`` takes the features in the same order and returns ``[N, num_classes, H/4, W/4]`` logits (the
    :class:`~segarena.models.contract.SegModel` wrapper upsamples them to the input size).
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 512, num_classes: int = 1,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1) -> None:
        super().__init__()
        in_channels = [int(c) for c in in_channels]
        if len(in_channels) < 2:
            raise ValueError(f"UPerNetHead needs at least two feature levels, got in_channels={in_channels}")
        self.in_channels = in_channels
        self.channels = channels
        last = in_channels[-1]
        # pyramid pooling on the deepest feature: pool to s x s, 1x1 conv, upsample back
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvBNReLU(last, channels, 1)) for s in pool_scales)
        self.bottleneck = ConvBNReLU(last + len(pool_scales) * channels, channels, 3)
        # FPN: 1x1 laterals and 3x3 output convs for every level except the deepest (that one is the PPM output)
        self.lateral_convs = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvBNReLU(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)  # MMSeg's decode-head classifier init
        nn.init.zeros_(self.conv_seg.bias)

    def psp_forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x] + [_resize(m(x), x.shape[-2:]) for m in self.psp_modules]
        return self.bottleneck(torch.cat(outs, dim=1))

    def fuse(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """The fused ``channels``-wide feature map at the first level's stride (before the classifier)."""
        if len(feats) != len(self.in_channels):
            raise ValueError(f"UPerNetHead was built for {len(self.in_channels)} feature levels, got {len(feats)}")
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        laterals.append(self.psp_forward(feats[-1]))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: add the upsampled coarser level
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        return self.fpn_bottleneck(torch.cat([_resize(o, size) for o in outs], dim=1))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.fuse(feats)))
