"""U-KAN (Li et al., AAAI 2025): a U-Net whose two deepest encoder stages and two shallowest-bottleneck decoder
stages are *tokenized KAN blocks* (Kolmogorov-Arnold layers with learnable B-spline activations).

Faithful to the official segmentation code (github.com/Zhaoyi-Yan/U-KAN, ``Seg_UKAN/archs.py`` and ``kan.py``,
itself derived from UNeXt and efficient-KAN), with its module names:

* three conv stages (two 3x3 conv-BN-ReLU each, then 2x max-pool and ReLU) with widths C0/8, C0/4, C0;
* two tokenized KAN stages: overlapping 3x3 stride-2 patch embedding to C1 and C2, a KAN block (LayerNorm, then
  three KANLinear layers, each followed by a depth-wise 3x3 conv + BN + ReLU on the token grid; residual),
  LayerNorm;
* a decoder of (conv-BN-ReLU x2 -> 2x bilinear upsampling -> ReLU -> add the skip), with KAN blocks after the two
  deepest skips, and a 1x1 head at full resolution.

``embed_dims = (C0, C1, C2)``. The official default for training (``--input_list``) is (128, 160, 256): the
``ukan`` model here, 6.36M parameters. The official ``UKAN`` class default is (256, 320, 512), U-KAN-L in the
paper's scaling study: 25.4M parameters, the 25M of Borst & Kounev's table (``ukan-l``).

KANLinear (efficient-KAN): ``y = W_b SiLU(x) + (W_s * s) . B(x)``, with cubic B-spline bases B on a uniform grid
of 5 intervals over [-1, 1] (extended by 3 knots each side), a per-edge spline weight W_s and scaler s.
Trained from scratch, as in both papers (no ImageNet weights exist).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..card import ModelCard, register_model
from ._init import init_official


class KANLinear(nn.Module):
    """A Kolmogorov-Arnold layer (efficient-KAN formulation) on [batch, in_features] inputs."""

    def __init__(self, in_features: int, out_features: int, grid_size: int = 5, spline_order: int = 3,
                 scale_noise: float = 0.1, scale_base: float = 1.0, scale_spline: float = 1.0,
                 grid_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.grid_size, self.spline_order = grid_size, spline_order
        h = (grid_range[1] - grid_range[0]) / grid_size
        knots = torch.arange(-spline_order, grid_size + spline_order + 1) * h + grid_range[0]
        self.register_buffer("grid", knots.expand(in_features, -1).contiguous())
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, grid_size + spline_order))
        self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features))
        self.base_activation = nn.SiLU()
        self.scale_noise, self.scale_base, self.scale_spline = scale_noise, scale_base, scale_spline
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """efficient-KAN initialisation: Kaiming-uniform base weights and scalers; spline weights fitted (least
        squares) to small random noise at the grid points."""
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5) * self.scale_base)
        with torch.no_grad():
            noise = (torch.rand(self.grid_size + 1, self.in_features, self.out_features) - 0.5) \
                * self.scale_noise / self.grid_size
            self.spline_weight.copy_(self.curve2coeff(self.grid.T[self.spline_order:-self.spline_order], noise))
        nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5) * self.scale_spline)

    def b_splines(self, x: torch.Tensor) -> torch.Tensor:
        """B-spline bases of ``x`` [B, in] by the Cox-de Boor recursion -> [B, in, grid_size + spline_order]."""
        g = self.grid
        x = x.unsqueeze(-1)
        bases = ((x >= g[:, :-1]) & (x < g[:, 1:])).to(x.dtype)
        for k in range(1, self.spline_order + 1):
            bases = ((x - g[:, :-(k + 1)]) / (g[:, k:-1] - g[:, :-(k + 1)]) * bases[:, :, :-1]
                     + (g[:, k + 1:] - x) / (g[:, k + 1:] - g[:, 1:-k]) * bases[:, :, 1:])
        return bases.contiguous()

    def curve2coeff(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Spline coefficients [out, in, coeff] interpolating ``y`` [B, in, out] at ``x`` [B, in]."""
        a = self.b_splines(x).transpose(0, 1)  # [in, B, coeff]
        # the minimum-norm least-squares solution (what efficient-KAN's lstsq returns), via the pseudo-inverse:
        # computed once when every input feature shares the grid (always at initialisation), 100x faster on CPU
        pinv = torch.linalg.pinv(a[:1] if torch.equal(a, a[:1].expand_as(a)) else a)
        return (pinv @ y.transpose(0, 1)).permute(2, 0, 1).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(self.base_activation(x), self.base_weight)
        scaled = self.spline_weight * self.spline_scaler.unsqueeze(-1)
        spline = F.linear(self.b_splines(x).view(x.shape[0], -1), scaled.view(self.out_features, -1))
        return base + spline


class DWBNReLU(nn.Module):
    """Depth-wise 3x3 conv + BN + ReLU applied to tokens on their [h, w] grid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.bn = nn.BatchNorm2d(dim)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        n, _, c = x.shape
        y = self.relu(self.bn(self.dwconv(x.transpose(1, 2).reshape(n, c, h, w))))
        return y.flatten(2).transpose(1, 2)


def _init_conv(m: nn.Module) -> None:
    """The UNeXt/U-KAN initialisation for convolutions inside token blocks: N(0, sqrt(2 / fan_out))."""
    init_official(m, linear=False, conv=True)


class KANLayer(nn.Module):
    """Three (KANLinear -> DW-conv-BN-ReLU) pairs; widths stay at ``dim`` (the official block uses ratio 1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = KANLinear(dim, dim), KANLinear(dim, dim), KANLinear(dim, dim)
        self.dwconv_1, self.dwconv_2, self.dwconv_3 = DWBNReLU(dim), DWBNReLU(dim), DWBNReLU(dim)
        self.apply(_init_conv)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        n, t, c = x.shape
        for fc, dw in ((self.fc1, self.dwconv_1), (self.fc2, self.dwconv_2), (self.fc3, self.dwconv_3)):
            x = dw(fc(x.reshape(n * t, c)).reshape(n, t, c), h, w)
        return x


class KANBlock(nn.Module):
    def __init__(self, dim: int, drop_path: float = 0.0) -> None:
        super().__init__()
        from timm.layers import DropPath

        self.norm2 = nn.LayerNorm(dim)
        self.layer = KANLayer(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.apply(_init_conv)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return x + self.drop_path(self.layer(self.norm2(x), h, w))


class PatchEmbed(nn.Module):
    """Overlapping 3x3 stride-2 patch embedding + LayerNorm."""

    def __init__(self, cin: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, 3, 2, 1)
        self.norm = nn.LayerNorm(dim)
        self.apply(_init_conv)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class ConvLayer(nn.Module):
    """Two 3x3 conv-BN-ReLU; official ``ConvLayer`` (cmid = cout) and ``D_ConvLayer`` (cmid = cin)."""

    def __init__(self, cin: int, cmid: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cmid, 3, padding=1), nn.BatchNorm2d(cmid), nn.ReLU(inplace=True),
                                  nn.Conv2d(cmid, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UKAN(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 1, embed_dims: tuple[int, int, int] = (256, 320, 512),
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        c0, c1, c2 = embed_dims
        self.encoder1 = ConvLayer(in_channels, c0 // 8, c0 // 8)
        self.encoder2 = ConvLayer(c0 // 8, c0 // 4, c0 // 4)
        self.encoder3 = ConvLayer(c0 // 4, c0, c0)
        self.norm3, self.norm4 = nn.LayerNorm(c1), nn.LayerNorm(c2)
        self.dnorm3, self.dnorm4 = nn.LayerNorm(c1), nn.LayerNorm(c0)
        dpr = torch.linspace(0, drop_path_rate, 3).tolist()
        self.block1 = nn.ModuleList([KANBlock(c1, dpr[0])])
        self.block2 = nn.ModuleList([KANBlock(c2, dpr[1])])
        self.dblock1 = nn.ModuleList([KANBlock(c1, dpr[0])])
        self.dblock2 = nn.ModuleList([KANBlock(c0, dpr[1])])
        self.patch_embed3 = PatchEmbed(c0, c1)
        self.patch_embed4 = PatchEmbed(c1, c2)
        # D_ConvLayer: the first conv keeps the input width, the second changes it
        self.decoder1 = ConvLayer(c2, c2, c1)
        self.decoder2 = ConvLayer(c1, c1, c0)
        self.decoder3 = ConvLayer(c0, c0, c0 // 4)
        self.decoder4 = ConvLayer(c0 // 4, c0 // 4, c0 // 8)
        self.decoder5 = ConvLayer(c0 // 8, c0 // 8, c0 // 8)
        self.final = nn.Conv2d(c0 // 8, num_classes, 1)

    @staticmethod
    def _tokens_stage(x: torch.Tensor, embed: PatchEmbed, blocks: nn.ModuleList, norm: nn.LayerNorm) -> torch.Tensor:
        t, h, w = embed(x)
        for blk in blocks:
            t = blk(t, h, w)
        return norm(t).transpose(1, 2).reshape(x.shape[0], -1, h, w)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t1 = F.relu(F.max_pool2d(self.encoder1(x), 2, 2))
        t2 = F.relu(F.max_pool2d(self.encoder2(t1), 2, 2))
        t3 = F.relu(F.max_pool2d(self.encoder3(t2), 2, 2))
        t4 = self._tokens_stage(t3, self.patch_embed3, self.block1, self.norm3)
        out = self._tokens_stage(t4, self.patch_embed4, self.block2, self.norm4)
        for dec, skip, blocks, norm in ((self.decoder1, t4, self.dblock1, self.dnorm3),
                                        (self.decoder2, t3, self.dblock2, self.dnorm4)):
            out = self._up(dec(out)) + skip
            n, c, h, w = out.shape
            tok = out.flatten(2).transpose(1, 2)
            for blk in blocks:
                tok = blk(tok, h, w)
            out = norm(tok).transpose(1, 2).reshape(n, c, h, w)
        out = self._up(self.decoder3(out)) + t2
        out = self._up(self.decoder4(out)) + t1
        out = self._up(self.decoder5(out))
        return self.final(out)


_SIZES = {"ukan": ((128, 160, 256), None, "U-KAN (official training default, embed dims 128-160-256)"),
          "ukan-l": ((256, 320, 512), 25.0, "U-KAN-L (embed dims 256-320-512)")}


def _register(name: str) -> None:
    dims, params, title = _SIZES[name]

    @register_model(ModelCard(
        name=name, family="medical", title=title,
        paper="Li et al., U-KAN Makes Strong Backbone for Medical Image Segmentation and Generation, AAAI 2025, "
              "arXiv:2406.02918",
        repo="https://github.com/Zhaoyi-Yan/U-KAN", license="MIT (official code)", params_paper_m=params,
        input_divisor=32, min_size=32, gradcam_layer="decoder5", gradcam_reshape=None,
        notes=f"embed_dims={dims}; tokenized KAN blocks (efficient-KAN B-splines, grid 5, order 3). Trained from "
              "scratch as in the paper (no pretrained weights exist).",
    ))
    def build(num_classes: int, in_channels: int = 3, pretrained: bool | str = False,
              drop_path_rate: float = 0.0) -> nn.Module:
        return UKAN(in_channels, num_classes, dims, drop_path_rate)


for _n in _SIZES:
    _register(_n)
