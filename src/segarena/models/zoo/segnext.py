"""SegNeXt (Guo et al., NeurIPS 2022, arXiv:2209.08575): MSCAN encoder + LightHamHead decoder.

MSCAN is a four-stage convolutional encoder whose token mixer is *multi-scale convolutional attention*: a 5x5
depth-wise conv followed by three strip-convolution branches (1x7/7x1, 1x11/11x1, 1x21/21x1), summed, mixed by a
1x1 conv and used as a multiplicative attention map on its input. Batch norm everywhere inside the stages, a
LayerNorm on each stage output. The LightHamHead concatenates stages 2-4 at 1/8 resolution, squeezes them with a
1x1 conv, and runs a *Hamburger*: 1x1 conv -> ReLU -> non-negative matrix factorisation (NMF, multiplicative
updates from random bases) -> 1x1 conv + GroupNorm, added back to its input. Widths, depths, decoder channels and
NMF ranks follow the official ADE20K configs of github.com/Visual-Attention-Network/SegNeXt; module and attribute
names follow its checkpoints, so the official MSCAN ImageNet weights load by name.

Two numerics points the card records:

* The Hamburger runs in fp32 even under autocast. NMF's multiplicative updates divide by sums of products that
  underflow/overflow in fp16; Borst & Kounev trained SegNeXt without AMP because it was unstable with it.
* Gradients. The official SegNeXt/MMSeg code back-propagates through all NMF iterations (the ``@torch.no_grad()``
  of HamNet's ``local_inference`` is commented out there). HamNet (Geng et al., ICLR 2021) instead proposed a
  *one-step gradient*: iterate without gradient, then take one differentiable update. ``nmf_grad="full"`` (default,
  the official SegNeXt behaviour) or ``"one_step"`` (HamNet) selects it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..card import ModelCard, Weights, register_model
from ..weights import adapt_first_conv, load_pretrained, strip_prefixes
from ._init import init_official


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the residual branch per sample with probability ``p``."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


# ---------------------------------------------------------------------------------------------------------- MSCAN
class StemConv(nn.Module):
    """Two stride-2 3x3 convs (stride 4 in total) with batch norm, GELU in between."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(cin, cout // 2, 3, stride=2, padding=1), nn.BatchNorm2d(cout // 2), nn.GELU(),
            nn.Conv2d(cout // 2, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class PatchEmbed(nn.Module):
    """Stride-2 3x3 conv + batch norm between stages."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class MSCA(nn.Module):
    """Multi-scale convolutional attention: depth-wise 5x5, three strip-conv branches, 1x1 mix, times input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        for i, k in enumerate((7, 11, 21)):
            setattr(self, f"conv{i}_1", nn.Conv2d(dim, dim, (1, k), padding=(0, k // 2), groups=dim))
            setattr(self, f"conv{i}_2", nn.Conv2d(dim, dim, (k, 1), padding=(k // 2, 0), groups=dim))
        self.conv3 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv0(x)
        s = a
        for i in range(3):
            s = s + getattr(self, f"conv{i}_2")(getattr(self, f"conv{i}_1")(a))
        return self.conv3(s) * x


class SpatialAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = MSCA(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class _DWConv(nn.Module):
    """Depth-wise 3x3 conv, wrapped so the parameter names match the official checkpoints (``dwconv.dwconv``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = _DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.dwconv(self.fc1(x))))))


class MSCABlock(nn.Module):
    """BN -> MSCA attention and BN -> conv MLP, each with layer scale (init 1e-2) and stochastic depth."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(1e-2 * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(1e-2 * torch.ones(dim))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)), self.drop_path,
                             self.training)


class MSCAN(nn.Module):
    """The SegNeXt encoder; returns the four stage outputs (strides 4, 8, 16, 32) as ``[N, C_i, h_i, w_i]``."""

    def __init__(self, in_channels: int, dims: Sequence[int], depths: Sequence[int], mlp_ratios: Sequence[float],
                 drop_path_rate: float = 0.1) -> None:
        super().__init__()
        self.dims = list(dims)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        cur = 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            embed = StemConv(in_channels, dim) if i == 0 else PatchEmbed(dims[i - 1], dim)
            blocks = nn.ModuleList(MSCABlock(dim, mlp_ratios[i], rates[cur + j]) for j in range(depth))
            cur += depth
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dim))
        self._init_weights()

    def _init_weights(self) -> None:
        # as the official MSCAN init: fan-out normal for convs, unit LayerNorm
        for m in self.modules():
            init_official(m, linear=False, conv=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(len(self.dims)):
            x = getattr(self, f"patch_embed{i + 1}")(x)
            for blk in getattr(self, f"block{i + 1}"):
                x = blk(x)
            x = getattr(self, f"norm{i + 1}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs


# ------------------------------------------------------------------------------------------------- LightHamHead
class NMF2D(nn.Module):
    """Non-negative matrix factorisation of a ``[N, C, H, W]`` map as ``C x HW ~ bases (C x R) @ coef^T (R x HW)``.

    Bases are drawn uniformly at random and L2-normalised on every call (no learned parameters), the coefficients
    start as a softmax of the projections, and ``train_steps``/``eval_steps`` multiplicative updates refine both; a
    last coefficient update produces the reconstruction ``bases @ coef^T`` that is returned. The input must be
    non-negative (the Hamburger applies ReLU first), and so is the output.
    """

    def __init__(self, rank: int = 64, train_steps: int = 6, eval_steps: int = 7, grad: str = "full",
                 eps: float = 1e-6) -> None:
        super().__init__()
        if grad not in ("full", "one_step"):
            raise ValueError(f"NMF2D grad must be 'full' or 'one_step', got {grad!r}")
        self.rank, self.train_steps, self.eval_steps, self.grad, self.eps = rank, train_steps, eval_steps, grad, eps

    def _update_coef(self, x: torch.Tensor, bases: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        num = torch.bmm(x.transpose(1, 2), bases)                      # [B, N, R]
        den = coef.bmm(bases.transpose(1, 2).bmm(bases))               # [B, N, R]
        return coef * num / (den + self.eps)

    def _update_bases(self, x: torch.Tensor, bases: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        num = torch.bmm(x, coef)                                       # [B, D, R]
        den = bases.bmm(coef.transpose(1, 2).bmm(coef))                # [B, D, R]
        return bases * num / (den + self.eps)

    def _iterate(self, x: torch.Tensor, bases: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coef = F.softmax(torch.bmm(x.transpose(1, 2), bases), dim=-1)  # inverse temperature 1 for NMF
        for _ in range(self.train_steps if self.training else self.eval_steps):
            coef = self._update_coef(x, bases, coef)
            bases = self._update_bases(x, bases, coef)
        return bases, coef

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        if self.training:
            bases = torch.rand(b, c, self.rank, device=x.device, dtype=x.dtype)
        else:
            # evaluation draws the same bases every call (a fixed CPU generator): the official code draws fresh
            # ones, which makes two predictions of one image differ; a benchmark's test numbers must not
            g = torch.Generator().manual_seed(0)
            bases = torch.rand(b, c, self.rank, generator=g).to(x.device, x.dtype)
        bases = F.normalize(bases, dim=1)
        if self.grad == "one_step":
            with torch.no_grad():
                bases, coef = self._iterate(flat, bases)
        else:
            bases, coef = self._iterate(flat, bases)
        coef = self._update_coef(flat, bases, coef)
        return torch.bmm(bases, coef.transpose(1, 2)).reshape(b, c, h, w)


class ConvGNReLU(nn.Module):
    """1x1 conv (no bias) -> GroupNorm(32) -> optional ReLU; attribute names as MMSeg's ``ConvModule``."""

    def __init__(self, cin: int, cout: int, act: bool = True, groups: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.gn = nn.GroupNorm(groups, cout)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.gn(self.conv(x)))


class _Conv(nn.Module):
    """A bare 1x1 conv with bias, named ``conv`` (MMSeg ``ConvModule`` without norm/activation)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Hamburger(nn.Module):
    """``relu(x + GN(conv(NMF(relu(conv(x))))))``, computed in fp32 even inside an autocast region."""

    def __init__(self, channels: int, rank: int, nmf_grad: str = "full") -> None:
        super().__init__()
        self.ham_in = _Conv(channels, channels)
        self.ham = NMF2D(rank=rank, grad=nmf_grad)
        self.ham_out = ConvGNReLU(channels, channels, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            enjoy = self.ham_out(self.ham(F.relu(self.ham_in(x))))
            return F.relu(x + enjoy)


class LightHamHead(nn.Module):
    """Stages 2-4 resized to 1/8, concatenated, squeezed, Hamburger, aligned, classified (logits at 1/8)."""

    def __init__(self, in_channels: Sequence[int], channels: int, ham_channels: int, rank: int,
                 num_classes: int, dropout: float = 0.1, nmf_grad: str = "full") -> None:
        super().__init__()
        self.squeeze = ConvGNReLU(sum(in_channels), ham_channels)
        self.hamburger = Hamburger(ham_channels, rank, nmf_grad)
        self.align = ConvGNReLU(ham_channels, channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        x = torch.cat([f if f.shape[-2:] == size else
                       F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats], dim=1)
        x = self.align(self.hamburger(self.squeeze(x)))
        return self.conv_seg(self.dropout(x))


class SegNeXt(nn.Module):
    """MSCAN encoder (``backbone``) + LightHamHead (``decode_head``) on stages 2-4; logits at 1/8 resolution."""

    def __init__(self, spec: _Spec, num_classes: int, in_channels: int = 3, drop_path_rate: float | None = None,
                 nmf_grad: str = "full") -> None:
        super().__init__()
        self.backbone = MSCAN(in_channels, spec.dims, spec.depths, spec.mlp_ratios,
                              spec.drop_path if drop_path_rate is None else drop_path_rate)
        self.decode_head = LightHamHead(spec.dims[1:], spec.head_channels, spec.head_channels, spec.rank,
                                        num_classes, nmf_grad=nmf_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x)[1:])


# ----------------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class _Spec:
    dims: tuple[int, ...]
    depths: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    head_channels: int
    rank: int
    drop_path: float
    params_m: float  # the SegNeXt paper's Table (ADE20K, 150 classes)
    sha_prefix: str  # first 8 hex digits of the checkpoint's sha256 (OpenMMLab file-name convention)


_SPECS = {
    "t": _Spec((32, 64, 160, 256), (3, 3, 5, 2), (8, 8, 4, 4), 256, 16, 0.1, 4.3, "119e8c9f"),
    "s": _Spec((64, 128, 320, 512), (2, 2, 4, 2), (8, 8, 4, 4), 256, 16, 0.1, 13.9, "f33ccdf2"),
    "b": _Spec((64, 128, 320, 512), (3, 3, 12, 3), (8, 8, 4, 4), 512, 64, 0.1, 27.6, "3ab7d230"),
    "l": _Spec((64, 128, 320, 512), (3, 5, 27, 3), (8, 8, 4, 4), 1024, 64, 0.3, 48.9, "cef260d4"),
}
_NAMES = {"t": "Tiny", "s": "Small", "b": "Base", "l": "Large"}
_LICENSE = "Apache-2.0"


def _mscan_weights(v: str) -> Weights:
    return Weights(
        source=f"https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segnext/"
               f"mscan_{v}_20230227-{_SPECS[v].sha_prefix}.pth",
        license=_LICENSE, dataset="ImageNet-1k", target="backbone")


def convert_mscan(state: dict[str, torch.Tensor], in_channels: int = 3) -> dict[str, torch.Tensor]:
    """Official/MMSeg MSCAN ImageNet checkpoint -> :class:`MSCAN` keys.

    Accepts the SegNeXt release layout (``mlp.dwconv.dwconv.*``) and the MMSeg 1.x re-export (``mlp.dwconv.*``),
    with or without a ``backbone.``/``module.`` prefix; drops the ImageNet classifier (``head.*``) and any
    segmentation head; sums the stem's RGB filters when ``in_channels`` is not 3.
    """
    state = strip_prefixes(state, ("module.", "backbone."))
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.startswith(("head.", "decode_head.", "auxiliary_head.")):
            continue
        if ".mlp.dwconv." in k and ".mlp.dwconv.dwconv." not in k:
            k = k.replace(".mlp.dwconv.", ".mlp.dwconv.dwconv.")
        out[k] = v
    return adapt_first_conv(out, "patch_embed1.proj.0.weight", in_channels)


def _register(v: str) -> None:
    spec = _SPECS[v]
    card = ModelCard(
        name=f"segnext-{v}", family="general", title=f"SegNeXt-{v.upper()} (MSCAN-{v.upper()} + LightHamHead)",
        paper="Guo et al., SegNeXt: Rethinking Convolutional Attention Design for Semantic Segmentation, "
              "NeurIPS 2022, arXiv:2209.08575",
        repo="https://github.com/Visual-Attention-Network/SegNeXt", license=_LICENSE,
        params_paper_m=49.0 if v == "l" else None, input_divisor=32,
        pretrained={"imagenet": _mscan_weights(v)}, gradcam_layer="decode_head.align", precision="fp32",
        notes=(f"MSCAN-{_NAMES[v]} dims {spec.dims}, depths {spec.depths}; LightHamHead {spec.head_channels} "
               f"channels, NMF rank {spec.rank} (6 train / 7 eval steps); logits at 1/8. SegNeXt paper: "
               f"{spec.params_m}M params (150 classes). The Hamburger always runs in fp32; Borst & Kounev trained "
               "SegNeXt WITHOUT mixed precision (unstable with AMP). NMF gradients flow through all iterations as "
               "in the official code (model kwarg nmf_grad='one_step' for HamNet's one-step gradient). Weights: "
               "official MSCAN ImageNet-1k release (cloud.tsinghua.edu.cn/d/c15b25a6745946618462) as re-hosted by "
               f"OpenMMLab; sha256 starts with {spec.sha_prefix}. Batch norm as in the official code (SyncBN "
               "there)."),
    )

    @register_model(card)
    def build(num_classes: int, in_channels: int = 3, pretrained: bool | str = False,
              drop_path_rate: float | None = None, nmf_grad: str = "full") -> nn.Module:
        net = SegNeXt(spec, num_classes, in_channels, drop_path_rate=drop_path_rate, nmf_grad=nmf_grad)
        if pretrained:
            load_pretrained(net, card.pretrained["imagenet"], lambda s: convert_mscan(s, in_channels),
                            local=pretrained if isinstance(pretrained, str) else None)
        return net


for _v in _SPECS:
    _register(_v)
