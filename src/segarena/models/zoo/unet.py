"""Classic U-Net (Ronneberger et al., MICCAI 2015): 64 base channels, 4 down/up levels, transposed-conv upsampling.

Written by hand: the classic design is ~60 lines and no well-kept library ships it at the paper's size (smp's
``Unet`` puts a ResNet/VGG encoder in front). Same-padded convolutions with batch norm, so the output has the input
size (the original used valid convolutions and cropping); 31.0M parameters as in Borst & Kounev's Table.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..card import ModelCard, register_model


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, base: int = 64, depth: int = 4) -> None:
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList(DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                for i in reversed(range(depth)))
        self.dec = nn.ModuleList(DoubleConv(widths[i] * 2, widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(self.pool(skips[-1])))
        y = skips.pop()
        for up, dec in zip(self.up, self.dec):
            y = dec(torch.cat([skips.pop(), up(y)], dim=1))
        return self.head(y)


@register_model(ModelCard(
    name="unet", family="medical", title="U-Net (classic, 64 base channels)",
    paper="Ronneberger et al., U-Net: Convolutional Networks for Biomedical Image Segmentation, MICCAI 2015, "
          "arXiv:1505.04597",
    repo="https://lmb.informatik.uni-freiburg.de/people/ronneber/u-net/", license="design: public (paper)",
    params_paper_m=31.0, input_divisor=16, gradcam_layer="dec.3",
    notes="Same-padded convolutions with batch norm; trained from scratch (no official ImageNet weights). The "
          "paper's U-Net had an ImageNet encoder: the study and the paper preset use unet-vgg16 for it.",
))
def build_unet(num_classes: int, in_channels: int = 3, pretrained: bool | str = False, base: int = 64,
               depth: int = 4) -> nn.Module:
    return UNet(in_channels, num_classes, base=base, depth=depth)
