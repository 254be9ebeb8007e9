"""VWFormer (Yan et al., ICLR 2024, arXiv:2404.16573): a multi-scale decoder built on varying-window attention.

The decoder (``VWHead`` of github.com/yan-hao-tian/VW, ADE20K variant) works at 1/8 resolution:

1. *Multi-layer aggregation*: stages 2-4 are projected to ``C`` channels per pixel (SegFormer-style linear layers),
   resized to 1/8, concatenated and fused by a 1x1 conv + BN + ReLU.
2. *Varying-window attention* (VWA): the map is cut into 8x8 local windows of ``p x p`` pixels (the queries). For
   each ratio ``r`` in (2, 4, 8) the context of a window is the ``rp x rp`` region centred on it. To keep the cost
   of a plain local window, the context is first reduced to ``C / r^2`` channels by an ``r x r`` conv ("DOPE"
   pre-scaling), then every ``r x r`` block of context pixels is folded into the channels, giving again ``p x p``
   tokens of ``C`` channels. Windows at the border get their context by *copy-shift padding* (a shifted copy of
   the neighbouring content instead of zeros). Attention is single/multi-head scaled dot product (non-local
   ``embedded_gaussian`` block: 1x1 query/key/value convs, 1x1 conv + BN output, zero-initialised output BN), with
   a shortcut from the fused map.
3. The short path (1x1 conv), an image-pooling branch and the three VWA outputs are concatenated (5C) and fused.
4. *Low-level enhancement*: stage 1 projected to 48 channels is concatenated at 1/4 and fused; logits at 1/4.

Module/attribute names follow the official head (``linear_c*``, ``linear_fuse``, ``attn.{j}.{theta,phi,g,conv_out}``,
``ds``, ``short_path``, ``image_pool``, ``cat``, ``low_level_fuse``, ``conv_seg``) so official decoder weights map by
name. The window grid needs the 1/8 map to be a multiple of 16 (8 windows of an even size, which copy-shift padding
requires): the input divisor is 128 (512x512 runs unpadded).

Registered: ``vw-mit`` (MiT-B3 encoder from smp, 1 head, as Borst & Kounev's VWFormerMiTB3) and ``vw-conv``
(ConvNeXt-S from timm with per-level LayerNorms as the official MMCls backbone, 16 heads as the official
ConvNeXt-S config). Decoder width 512, shortcut on (the official ADE20K setting).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..._errors import SegarenaError
from ..._paths import is_offline
from ..card import ModelCard, Weights, register_model
from ..weights import adapt_first_conv, load_pretrained, strip_prefixes
from .heads import ConvBNReLU
from .upernet import build_pyramid, convert_timm_backbone, timm_weights

RATIOS = (2, 4, 8)
N_WINDOWS = 8  # windows per side of the 1/8 map, as in the official head


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PixelLinear(nn.Module):
    """A per-pixel ``nn.Linear`` (``proj``) on an ``[N, C, H, W]`` map (SegFormer's MLP embedding)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class _Conv1x1(nn.Module):
    """1x1 conv with bias named ``conv`` (MMCV ``ConvModule`` without norm/activation)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _ConvBN(nn.Module):
    """1x1 conv (no bias) + BN, no activation (the non-local block's output projection)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class VWA(nn.Module):
    """Attention of ``[B, C, p, p]`` query windows over their ``[B, C, p, p]`` folded contexts."""

    def __init__(self, channels: int, heads: int = 1) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"VWA: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.theta, self.phi, self.g = _Conv1x1(channels, channels), _Conv1x1(channels, channels), \
            _Conv1x1(channels, channels)
        self.conv_out = _ConvBN(channels, channels)
        # initialisation of the official block: query N(0, 0.01); key/value Kaiming (re-created ConvModules);
        # output BN zeroed, so each attention branch starts as its shortcut
        nn.init.normal_(self.theta.conv.weight, 0.0, 0.01)
        nn.init.zeros_(self.theta.conv.bias)
        for m in (self.phi, self.g):
            nn.init.kaiming_normal_(m.conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.conv.bias)
        nn.init.zeros_(self.conv_out.bn.weight)
        nn.init.zeros_(self.conv_out.bn.bias)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n, c, h, w = query.shape
        d = c // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:  # [n, C, h, w] -> [n, heads, h*w, d]
            return t.reshape(n, self.heads, d, -1).transpose(2, 3)

        y = F.scaled_dot_product_attention(split(self.theta(query)), split(self.phi(context)),
                                           split(self.g(context)))  # softmax(q k^T / sqrt(d)) v
        return self.conv_out(y.transpose(2, 3).reshape(n, c, h, w))


def to_windows(x: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
    """``[B, C, nh*p, nw*q]`` -> ``[B*nh*nw, C, p, q]`` (row-major window order)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, nh, h // nh, nw, w // nw).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * nh * nw, c, h // nh, w // nw)


def from_windows(x: torch.Tensor, b: int, nh: int, nw: int) -> torch.Tensor:
    """Inverse of :func:`to_windows`."""
    _, c, p, q = x.shape
    return x.reshape(b, nh, nw, c, p, q).permute(0, 3, 1, 4, 2, 5).reshape(b, c, nh * p, nw * q)


def copy_shift_pad(x: torch.Tensor, r: int, ph: int, pw: int) -> torch.Tensor:
    """Pad each side by ``(r-1)p/2`` with a shifted copy of the map's own content (the official CSP rule: columns
    ``[(r+1)p/2, rp)`` go left, ``[-rp, -(r+1)p/2)`` go right; rows alike), so border windows see real context."""
    a, b = (r + 1) * pw // 2, r * pw
    x = torch.cat([x[..., a:b], x, x[..., -b:-a]], dim=3)
    a, b = (r + 1) * ph // 2, r * ph
    return torch.cat([x[..., a:b, :], x, x[..., -b:-a, :]], dim=2)


def window_contexts(x: torch.Tensor, r: int, ph: int, pw: int) -> torch.Tensor:
    """``[B, c, 8ph, 8pw]`` -> the ``[B*64, c, r*ph, r*pw]`` context of every window (row-major), each centred on
    its window, taken from the copy-shift-padded map."""
    b, c = x.shape[:2]
    cols = F.unfold(copy_shift_pad(x, r, ph, pw), kernel_size=(r * ph, r * pw), stride=(ph, pw))
    if cols.shape[-1] != N_WINDOWS * N_WINDOWS:
        raise ValueError(f"VWFormer: {cols.shape[-1]} context windows for a {N_WINDOWS}x{N_WINDOWS} grid "
                         f"(window {ph}x{pw}; copy-shift padding needs even window sizes)")
    return cols.reshape(b, c, r * ph, r * pw, -1).permute(0, 4, 1, 2, 3).reshape(-1, c, r * ph, r * pw)


def fold_blocks(x: torch.Tensor, r: int) -> torch.Tensor:
    """Space-to-depth: ``[B, c, r*p, r*q]`` -> ``[B, r*r*c, p, q]``, each ``r x r`` block of neighbours into the
    channels in the official order ``(row-in-block, column-in-block, channel)``."""
    n, c, h, w = x.shape
    p, q = h // r, w // r
    return x.reshape(n, c, p, r, q, r).permute(0, 3, 5, 1, 2, 4).reshape(n, r * r * c, p, q)


class VWFormerHead(nn.Module):
    """The VWFormer decoder on four feature maps (strides 4, 8, 16, 32); returns logits at stride 4."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 512, heads: int = 1,
                 short_cut: bool = True, dropout: float = 0.1) -> None:
        super().__init__()
        c = channels
        self.short_cut = short_cut
        self.linear_c4 = PixelLinear(in_channels[3], c)
        self.linear_c3 = PixelLinear(in_channels[2], c)
        self.linear_c2 = PixelLinear(in_channels[1], c)
        self.linear_fuse = ConvBNReLU(3 * c, c, 1)
        self.attn = nn.ModuleList(VWA(c, heads) for _ in RATIOS)
        self.ds = nn.ModuleList(ConvBNReLU(c, c // (r * r), r, padding=0) for r in RATIOS)
        self.short_path = ConvBNReLU(c, c, 1)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(c, c, 1))
        self.cat = ConvBNReLU(5 * c, c, 1)
        self.linear_c1 = PixelLinear(in_channels[0], 48)
        self.low_level_fuse = ConvBNReLU(c + 48, c, 1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(c, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def varying_window_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if h % (2 * N_WINDOWS) or w % (2 * N_WINDOWS):
            raise SegarenaError(f"VWFormer: the 1/8 feature map is {h}x{w}, not a multiple of {2 * N_WINDOWS}",
                                fix="use an input size that is a multiple of 128 (the model wrapper pads to it)")
        ph, pw = h // N_WINDOWS, w // N_WINDOWS
        query = to_windows(x, N_WINDOWS, N_WINDOWS)
        outs = [self.short_path(x), _resize(self.image_pool(x), (h, w))]
        for r, ds, attn in zip(RATIOS, self.ds, self.attn):
            lo, hi = r // 2 - 1, r // 2  # "same" padding for the even r x r pre-scaling conv
            ctx = ds(F.pad(x, (lo, hi, lo, hi)))                        # [b, C/r^2, h, w]
            ctx = fold_blocks(window_contexts(ctx, r, ph, pw), r)          # [b*64, C, ph, pw]
            y = from_windows(attn(query, ctx), b, N_WINDOWS, N_WINDOWS)
            outs.append(y + x if self.short_cut else y)
        return self.cat(torch.cat(outs, dim=1))

    def fuse(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """The ``C``-channel map at stride 4 before the classifier."""
        c1, c2, c3, c4 = feats
        size = c2.shape[-2:]
        x = self.linear_fuse(torch.cat([_resize(self.linear_c4(c4), size), _resize(self.linear_c3(c3), size),
                                        self.linear_c2(c2)], dim=1))
        x = self.varying_window_attention(x)
        return self.low_level_fuse(torch.cat([_resize(x, c1.shape[-2:]), self.linear_c1(c1)], dim=1))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.fuse(feats)))


class SmpPyramid(nn.Module):
    """An smp encoder (``encoder``) as its four stride-4..32 maps (smp also returns the input and a stride-2
    placeholder). The wrapper also gives a plain ``load_state_dict``: smp's MiT overrides it without ``strict``."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.channels: list[int] = list(encoder.out_channels)[-4:]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.encoder(x))[-4:]


class VWFormer(nn.Module):
    """``backbone`` returning four stride-4..32 maps + :class:`VWFormerHead` (``decode_head``)."""

    def __init__(self, backbone: nn.Module, in_channels: Sequence[int], num_classes: int, heads: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = VWFormerHead(in_channels, num_classes, heads=heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x))


# ----------------------------------------------------------------------------------------------------- registry
_PAPER = ("Yan et al., Multi-Scale Representations by Varying Window Attention for Semantic Segmentation, "
          "ICLR 2024, arXiv:2404.16573")
_REPO = "https://github.com/yan-hao-tian/VW"
_MIT_LICENSE = "NVIDIA Source Code License for SegFormer (non-commercial research)"
_MIT_WEIGHTS = Weights(source="hf-hub:smp-hub/mit_b3.imagenet", license=_MIT_LICENSE, dataset="ImageNet-1k",
                       target="backbone")
_CONVNEXT_WEIGHTS = timm_weights("convnext_small", "fb_in1k", "MIT")
_COMMON = ("Decoder: 512 channels, window ratios 2/4/8 over an 8x8 window grid at 1/8, shortcut on, logits at "
           "1/4. Input sizes are padded to a multiple of 128 (window grid). Train with batch size >= 2 (the "
           "image-pooling branch has batch norm).")


def convert_mit(state: dict[str, torch.Tensor], in_channels: int = 3) -> dict[str, torch.Tensor]:
    """Official NVlabs ``mit_b3.pth`` (or smp's copy) -> :class:`SmpPyramid` keys: the MiT names under
    ``encoder.``, classifier dropped, patch-embedding filters adapted to ``in_channels``."""
    state = {k: v for k, v in strip_prefixes(state, ("module.", "backbone.")).items() if not k.startswith("head.")}
    state = adapt_first_conv(state, "patch_embed1.proj.weight", in_channels)
    return {f"encoder.{k}": v for k, v in state.items()}


@register_model(ModelCard(
    name="vw-mit", family="general", title="VWFormer on MiT-B3 (VW-MiT)", paper=_PAPER, repo=_REPO,
    license=f"MIT (VWFormer); encoder weights: {_MIT_LICENSE}", params_paper_m=51.0, input_divisor=128,
    pretrained={"imagenet": _MIT_WEIGHTS}, gradcam_layer="decode_head.low_level_fuse",
    notes="MiT-B3 encoder from segmentation_models_pytorch (official key layout, drop-path 0.1), 1 attention "
          "head as in Borst & Kounev's VWFormerMiTB3. " + _COMMON,
))
def build_vw_mit(num_classes: int, in_channels: int = 3, pretrained: bool | str = False, heads: int = 1) -> nn.Module:
    import segmentation_models_pytorch as smp

    use_hub = pretrained is True
    if use_hub and is_offline():
        raise SegarenaError("MiT-B3 ImageNet weights cannot be downloaded offline",
                            fix="pass a local official mit_b3.pth as pretrained, or unset HF_HUB_OFFLINE")
    try:
        encoder = smp.encoders.get_encoder("mit_b3", in_channels=in_channels, depth=5,
                                           weights="imagenet" if use_hub else None)
    except (OSError, RuntimeError, ValueError) as exc:
        if not use_hub:
            raise
        raise SegarenaError(f"MiT-B3 ImageNet weights could not be fetched ({type(exc).__name__})",
                            fix="connect once to cache them, or pass a local official mit_b3.pth") from None
    backbone = SmpPyramid(encoder)
    net = VWFormer(backbone, backbone.channels, num_classes, heads=heads)
    if isinstance(pretrained, str):
        load_pretrained(net, _MIT_WEIGHTS, lambda s: convert_mit(s, in_channels), local=pretrained)
    return net


@register_model(ModelCard(
    name="vw-conv", family="general", title="VWFormer on ConvNeXt-S (VW-Conv)", paper=_PAPER, repo=_REPO,
    license="MIT (VWFormer, ConvNeXt)", params_paper_m=57.0, input_divisor=128,
    pretrained={"imagenet": _CONVNEXT_WEIGHTS}, gradcam_layer="decode_head.low_level_fuse",
    notes="ConvNeXt-S from timm (convnext_small.fb_in1k, features_only, drop-path 0.4) with a LayerNorm on each "
          "stage output as the official MMCls backbone; 16 attention heads as the official ConvNeXt-S config. "
          + _COMMON,
))
def build_vw_conv(num_classes: int, in_channels: int = 3, pretrained: bool | str = False, heads: int = 16,
                  drop_path_rate: float = 0.4) -> nn.Module:
    backbone = build_pyramid("convnext_small", in_channels, pretrained, "ConvNeXt-S", drop_path_rate=drop_path_rate)
    net = VWFormer(backbone, backbone.channels, num_classes, heads=heads)
    if isinstance(pretrained, str):
        load_pretrained(net, _CONVNEXT_WEIGHTS, lambda s: convert_timm_backbone(s, backbone), local=pretrained)
    return net
