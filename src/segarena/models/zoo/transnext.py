"""TransNeXt (Shi, CVPR 2024, arXiv:2311.17132) encoders with the UPerNet head.

TransNeXt is a four-stage vision transformer whose token mixer, *aggregated attention*, lets every query attend
jointly (one softmax) to (a) its 3x3 neighbourhood at full resolution ("pixel-focused attention") and (b) a
pooled, LayerNorm-ed copy of the whole feature map; L2-normalised queries and keys with a learned temperature and
a length-dependent scale, a query embedding, a continuous relative position bias from a small MLP (for the pooled
keys), a learned bias for the window, and "learnable tokens" that add a query-dependent term to the window
weights. Stage 4 uses plain (full) attention with the same tricks. The channel mixer is a convolutional GLU.

Written by hand after the official PyTorch-native implementation (github.com/DaiShiResearch/TransNeXt,
``segmentation/upernet/transnext_native.py``; the repo's CUDA kernel only accelerates the window part); the
window part is unfold-based, checked in the unit tests against an explicit per-query loop over the window.
Settings follow the official UPerNet ADE20K configs (window 3, pooling ratios 8/4/2/1, qkv bias):

=====  ====================  ==============  ==============  =========
name   widths                heads           depths          drop path
=====  ====================  ==============  ==============  =========
micro  48, 96, 192, 384      2, 4, 8, 16     2, 2, 15, 2     0.3 (*)
tiny   72, 144, 288, 576     3, 6, 12, 24    2, 2, 15, 2     0.4
small  72, 144, 288, 576     3, 6, 12, 24    5, 5, 22, 5     0.6
=====  ====================  ==============  ==============  =========

(*) there is no official segmentation config for micro; we add 0.15 to its ImageNet rate as tiny/small do.

**Input sizes.** The position biases of the pooled keys (and of stage 4) come from relative coordinates that
depend on the feature size. ``pos_bias="extrapolate"`` (default) computes the coordinates for the actual feature
size (the official "extrapolation" mode); ``pos_bias="interpolate"`` computes them once for a nominal
``img_size`` and bilinearly resizes the bias maps to the actual size (the official single-scale configs, with
``img_size=512``). At the study's 512x512 input the two are identical (the resize is an identity), so the default
reproduces the official training setting there; at other sizes it is the cheaper one (no 512-sized bias maps)
and the official multi-scale results favour it slightly (ADE20K 51.7 vs 51.5 mIoU for Tiny). Either way any
input size works; the wrapper pads inputs to a multiple of 32 so every pooled grid is at least 1x1.

Parameter counts (1 output logit, our count): micro 41.1M, tiny 57.7M, small 79.2M. The official "59M / 80M" for
UPerNet-TransNeXt-T/S also contain mmseg's training-only auxiliary FCN head (+0.7M at 150 classes), not built here.
Pretrained: the official ImageNet-1k checkpoints ``transnext_{micro,tiny,small}_224_1k.pth`` (Hugging Face repos
``DaiShiResearch/transnext-{micro,tiny,small}-224-1k``, Apache-2.0), loaded strictly through
:func:`convert_official` with ``pretrain_size=224`` as in the official configs.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..card import ModelCard, Weights, register_model
from ..weights import load_pretrained
from ._init import init_official
from .heads import UPerNetHead

__all__ = ["AggregatedAttention", "TransNeXt", "TransNeXtUPerNet", "convert_official"]

PosBias = Literal["interpolate", "extrapolate"]
#: (index, table, query grid, key grid) of the relative coordinates a position bias is computed from
RelCoords = tuple[torch.Tensor, torch.Tensor, tuple[int, int], tuple[int, int]]
_LICENSE = "Apache-2.0"
_PAPER = "Shi, TransNeXt: Robust Foveal Visual Perception for Vision Transformers, CVPR 2024, arXiv:2311.17132"
_REPO = "https://github.com/DaiShiResearch/TransNeXt"


@torch.no_grad()
def relative_coords(query: tuple[int, int], key: tuple[int, int], pretrain: tuple[int, int],
                    device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-spaced relative (dy, dx) between every query cell and every adaptively pooled key cell.

    Returns ``(index, table)``: ``table`` ``[U, 2]`` holds the distinct coordinates in lexicographic order (scaled
    by the pre-training feature size, so the bias MLP sees the ranges it was trained on) and ``index``
    ``[Nq*Nk]`` points into it. Rows and columns are independent, so the distinct pairs are the product of the
    distinct dy and dx values; building them per axis gives the same table as a 2-D ``unique`` over all
    ``Nq*Nk`` pairs (what the official code does) without sorting millions of rows.
    """
    def axis(n_q: int, n_k: int, n_pre: int) -> tuple[torch.Tensor, torch.Tensor]:
        q = torch.arange(n_q, dtype=torch.float32, device=device)
        k = F.adaptive_avg_pool1d(q[None], n_k)[0]  # a pooled cell sits at the mean of its query cells
        values, inverse = torch.unique((q[:, None] - k[None]) / (n_pre - 1) * 8, return_inverse=True)
        return values, inverse  # [U_axis], [n_q, n_k]

    vy, iy = axis(query[0], key[0], pretrain[0])
    vx, ix = axis(query[1], key[1], pretrain[1])
    index = iy[:, None, :, None] * len(vx) + ix[None, :, None, :]  # [Hq, Wq, Hk, Wk]
    table = torch.stack(torch.meshgrid(vy, vx, indexing="ij"), dim=-1).reshape(-1, 2)
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return index.reshape(-1), table


@torch.no_grad()
def window_mask(size: tuple[int, int], window: int, device: torch.device | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(valid [N, 1], padded [N, window**2])``: how many window cells fall inside the map, and which do not."""
    ones = torch.ones(1, 1, *size, device=device)
    inside = F.unfold(ones, window, padding=window // 2)[0].transpose(0, 1)  # [N, window**2]
    return inside.sum(-1, keepdim=True), inside == 0


class _CPB(nn.Module):
    """Continuous position bias: an MLP from relative coordinates to one bias per head (names as official)."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.cpb_fc1 = nn.Linear(2, 512)
        self.cpb_act = nn.ReLU(inplace=True)
        self.cpb_fc2 = nn.Linear(512, heads)

    def table_bias(self, index: torch.Tensor, table: torch.Tensor, n_q: int, n_k: int) -> torch.Tensor:
        values = self.cpb_fc2(self.cpb_act(self.cpb_fc1(table)))  # [U, heads]
        return values.transpose(0, 1)[:, index.reshape(-1)].reshape(-1, n_q, n_k)


def _resize_bias(bias: torch.Tensor, q_from: tuple[int, int], k_from: tuple[int, int], q_to: tuple[int, int],
                 k_to: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a ``[heads, Nq, Nk]`` bias over its key grid, then its query grid (official order)."""
    heads = bias.shape[0]
    if k_from != k_to:
        bias = F.interpolate(bias.reshape(heads, -1, *k_from), size=k_to, mode="bilinear", align_corners=False)
    bias = bias.reshape(heads, q_from[0] * q_from[1], -1).transpose(1, 2)  # [heads, Nk, Nq]
    if q_from != q_to:
        bias = F.interpolate(bias.reshape(heads, -1, *q_from), size=q_to, mode="bilinear", align_corners=False)
    return bias.reshape(heads, k_to[0] * k_to[1], -1).transpose(1, 2)


class _Attention(_CPB):
    """Shared parts: normalised queries with temperature, query embedding, position bias for the pooled keys."""

    def __init__(self, dim: int, heads: int, sr_ratio: int) -> None:
        super().__init__(heads)
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.head_dim, self.sr_ratio = heads, dim // heads, sr_ratio
        # softplus(temperature) starts at 1/0.24
        self.temperature = nn.Parameter(torch.full((heads, 1, 1), math.log(math.expm1(1 / 0.24))))
        self.query_embedding = nn.Parameter(nn.init.trunc_normal_(torch.empty(heads, 1, self.head_dim), std=0.02))
        self.proj = nn.Linear(dim, dim)

    def position_bias(self, rel: RelCoords, size: tuple[int, int], pool: tuple[int, int]) -> torch.Tensor:
        """``[heads, H*W, pool_H*pool_W]`` bias of every query for every pooled key at this feature size.

        ``rel`` holds the relative coordinates for a (query grid, key grid) that may differ from the actual one
        (the nominal ``img_size``); the bias is then resized bilinearly, key grid first, as the official code does.
        """
        index, table, q_from, k_from = rel
        bias = self.table_bias(index, table.to(self.cpb_fc1.weight.dtype), q_from[0] * q_from[1], k_from[0] * k_from[1])
        return _resize_bias(bias, q_from, k_from, size, pool)

    def scaled_queries(self, q: torch.Tensor, length_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, heads, N, d]`` projections -> (unit queries, queries scaled for the softmax)."""
        q = F.normalize(q, dim=-1)
        return q, (q + self.query_embedding) * F.softplus(self.temperature) * length_scale


class AggregatedAttention(_Attention):
    """Pixel-focused attention over a ``window x window`` neighbourhood plus pooled keys, one joint softmax."""

    def __init__(self, dim: int, heads: int, sr_ratio: int, window: int = 3) -> None:
        super().__init__(dim, heads, sr_ratio)
        if window % 2 != 1:
            raise ValueError(f"window size must be odd, got {window}")
        self.window, self.local_len = window, window * window
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.sr = nn.Conv2d(dim, dim, 1)
        self.norm = nn.LayerNorm(dim)
        self.act = nn.GELU()
        self.relative_pos_bias_local = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(heads, self.local_len), std=0.0004))
        self.learnable_tokens = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(heads, self.head_dim, self.local_len), std=0.02))
        self.learnable_bias = nn.Parameter(torch.zeros(heads, 1, self.local_len))

    def forward(self, x: torch.Tensor, size: tuple[int, int], rel: RelCoords) -> torch.Tensor:
        b, n, c = x.shape
        h, w = size
        pool = (h // self.sr_ratio, w // self.sr_ratio)
        valid, padded = window_mask(size, self.window, device=x.device)
        length_scale = torch.log(valid + pool[0] * pool[1])  # [N, 1]: log of the keys each query sees
        q_unit, q = self.scaled_queries(self.q(x).reshape(b, n, self.heads, -1).transpose(1, 2), length_scale)

        # window keys/values: unfold the (normalised) key and value maps, zero outside the image
        k, v = self.kv(x).chunk(2, dim=-1)
        k = F.normalize(k.reshape(b, n, self.heads, -1), dim=-1).reshape(b, n, c)
        kv = torch.cat([k, v], dim=-1).transpose(1, 2).reshape(b, 2 * c, h, w)
        kv = F.unfold(kv, self.window, padding=self.window // 2)  # [B, 2C*L, N]
        k_win, v_win = kv.reshape(b, 2 * self.heads, self.head_dim, self.local_len, n).permute(0, 1, 4, 2, 3).chunk(2, 1)
        attn_win = (q.unsqueeze(-2) @ k_win).squeeze(-2) + self.relative_pos_bias_local.unsqueeze(1)
        attn_win = attn_win.masked_fill(padded, float("-inf"))  # [B, heads, N, L]

        # pooled keys/values: 1x1 conv + GELU, adaptive average pooling, LayerNorm, shared kv projection
        xp = F.adaptive_avg_pool2d(self.act(self.sr(x.transpose(1, 2).reshape(b, c, h, w))), pool)
        xp = self.norm(xp.reshape(b, c, -1).transpose(1, 2))
        k_pool, v_pool = self.kv(xp).reshape(b, -1, 2 * self.heads, self.head_dim).transpose(1, 2).chunk(2, dim=1)
        attn_pool = q @ F.normalize(k_pool, dim=-1).transpose(-2, -1) + self.position_bias(rel, size, pool)

        attn = torch.cat([attn_win, attn_pool], dim=-1).softmax(dim=-1)
        attn_win, attn_pool = attn.split([self.local_len, pool[0] * pool[1]], dim=-1)
        # learnable tokens: a query-dependent, softmax-free term added to the window weights
        weights_win = q_unit @ self.learnable_tokens + self.learnable_bias + attn_win
        out = (weights_win.unsqueeze(-2) @ v_win.transpose(-2, -1)).squeeze(-2) + attn_pool @ v_pool
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class FullAttention(_Attention):
    """Stage-4 attention: every token to every token, with the same normalisation and position-bias scheme."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__(dim, heads, 1)
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int], rel: RelCoords) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3 * self.heads, -1).transpose(1, 2).chunk(3, dim=1)
        _, q = self.scaled_queries(q, torch.log(torch.tensor(float(n), device=x.device)))
        attn = q @ F.normalize(k, dim=-1).transpose(-2, -1) + self.position_bias(rel, size, size)
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class ConvGLU(nn.Module):
    """Convolutional GLU: ``fc2(GELU(dwconv3x3(a)) * b)`` with ``[a, b] = fc1(x)``, hidden width 2/3 of the MLP's."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = int(2 * hidden / 3)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        a, gate = self.fc1(x).chunk(2, dim=-1)
        b, _, c = a.shape
        a = self.dwconv(a.transpose(1, 2).reshape(b, c, *size)).flatten(2).transpose(1, 2)
        return self.fc2(self.act(a) * gate)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, sr_ratio: int, window: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn: nn.Module
        if sr_ratio == 1:
            self.attn = FullAttention(dim, heads)
        else:
            self.attn = AggregatedAttention(dim, heads, sr_ratio, window)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ConvGLU(dim, int(dim * mlp_ratio))
        if drop_path > 0:
            from timm.layers import DropPath

            self.drop_path: nn.Module = DropPath(drop_path)
        else:
            self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor, size: tuple[int, int], rel: RelCoords) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), size, rel))
        return x + self.drop_path(self.mlp(self.norm2(x), size))


class _PatchEmbed(nn.Module):
    """Overlapping strided conv (7x7/4 for the stem, 3x3/2 after) + LayerNorm; returns tokens and grid size."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(cout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        return self.norm(x.flatten(2).transpose(1, 2)), (x.shape[2], x.shape[3])


class _Stage(nn.Module):
    """Patch embedding, blocks, LayerNorm; owns the relative coordinates its blocks' position biases use."""

    def __init__(self, patch_embed: _PatchEmbed, blocks: Sequence[Block], dim: int, sr_ratio: int, stride: int,
                 img_size: int, pretrain_size: int, pos_bias: PosBias) -> None:
        super().__init__()
        self.patch_embed = patch_embed
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.sr_ratio, self.pos_bias = sr_ratio, pos_bias
        self.pretrain = (pretrain_size // stride,) * 2
        self.trained = (img_size // stride,) * 2
        self.trained_pool = (self.trained[0] // sr_ratio,) * 2
        if pos_bias == "interpolate":  # one table for the nominal size, shared by the stage's blocks
            index, table = relative_coords(self.trained, self.trained_pool, self.pretrain)
            self.register_buffer("relative_pos_index", index, persistent=False)
            self.register_buffer("relative_coords_table", table, persistent=False)

    def relative(self, size: tuple[int, int]) -> RelCoords:
        if self.pos_bias == "interpolate":
            return self.relative_pos_index, self.relative_coords_table, self.trained, self.trained_pool
        pool = (size[0] // self.sr_ratio, size[1] // self.sr_ratio)
        index, table = relative_coords(size, pool, self.pretrain, device=self.norm.weight.device)
        return index, table, size, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = self.patch_embed(x)
        rel = self.relative(size)
        for blk in self.blocks:
            x = blk(x, size, rel)
        return self.norm(x).transpose(1, 2).reshape(x.shape[0], -1, *size)


class TransNeXt(nn.Module):
    """The TransNeXt encoder: four features ``[N, dims[i], H/2^(i+2), W/2^(i+2)]``."""

    def __init__(self, in_channels: int = 3, dims: Sequence[int] = (72, 144, 288, 576),
                 heads: Sequence[int] = (3, 6, 12, 24), depths: Sequence[int] = (2, 2, 15, 2),
                 mlp_ratios: Sequence[float] = (8, 8, 4, 4), sr_ratios: Sequence[int] = (8, 4, 2, 1),
                 window: int = 3, drop_path: float = 0.4, img_size: int = 512, pretrain_size: int = 224,
                 pos_bias: PosBias = "extrapolate") -> None:
        super().__init__()
        if pos_bias not in ("interpolate", "extrapolate"):
            raise ValueError(f"pos_bias must be 'interpolate' or 'extrapolate', got {pos_bias!r}")
        self.out_channels = list(dims)
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            embed = _PatchEmbed(in_channels if i == 0 else dims[i - 1], dims[i], 7 if i == 0 else 3, 4 if i == 0 else 2)
            start = sum(depths[:i])
            blocks = [Block(dims[i], heads[i], mlp_ratios[i], sr_ratios[i], window, rates[start + j])
                      for j in range(depth)]
            self.stages.append(_Stage(embed, blocks, dims[i], sr_ratios[i], 2 ** (i + 2), img_size, pretrain_size,
                                      pos_bias))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """Official initialisation: truncated-normal linears, He-normal (fan-out) convs, unit LayerNorms."""
        init_official(m, conv=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class TransNeXtUPerNet(nn.Module):
    """TransNeXt encoder + UPerNet head; logits at 1/4 of the (padded) input size."""

    def __init__(self, encoder: TransNeXt, num_classes: int, channels: int = 512) -> None:
        super().__init__()
        self.encoder = encoder
        self.decode_head = UPerNetHead(encoder.out_channels, channels=channels, num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.encoder(x))


_RENAMES: tuple[tuple[str, str | Callable[[re.Match[str]], str]], ...] = (
    (r"^patch_embed(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.patch_embed."),
    (r"^block(\d)\.(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}."),
    (r"^norm(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.norm."),
    (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
)
_CLASSIFIER = ("head.",)


def convert_official(state: dict[str, torch.Tensor], encoder: TransNeXt) -> dict[str, torch.Tensor]:
    """Official TransNeXt keys (classification checkpoint or mmseg ``backbone.*``) -> :class:`TransNeXt` keys.

    ``patch_embed{i}`` / ``block{i}.{j}`` / ``norm{i}`` (1-based) become ``stages.{i-1}.*``; the GLU's
    ``dwconv.dwconv`` becomes ``dwconv``; the stem convolution is adapted to ``in_channels != 3`` (timm's rule).
    The classifier ``head.*`` passes through and is ignored by the loader.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone."):
            key = key.removeprefix(prefix)
        if key.startswith(("decode_head.", "auxiliary_head.")):
            continue
        for pattern, repl in _RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    w = out.get("stages.0.patch_embed.proj.weight")
    want = encoder.stages[0].patch_embed.proj.in_channels
    if w is not None and w.shape[1] == 3 and want != 3:
        from timm.models import adapt_input_conv

        out["stages.0.patch_embed.proj.weight"] = adapt_input_conv(want, w)
    return out


@dataclass(frozen=True)
class _Variant:
    dims: tuple[int, int, int, int]
    heads: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    drop_path: float
    params_paper_m: float | None = None


_VARIANTS = {
    "micro": _Variant((48, 96, 192, 384), (2, 4, 8, 16), (2, 2, 15, 2), 0.3),
    "tiny": _Variant((72, 144, 288, 576), (3, 6, 12, 24), (2, 2, 15, 2), 0.4, params_paper_m=58.0),
    "small": _Variant((72, 144, 288, 576), (3, 6, 12, 24), (5, 5, 22, 5), 0.6),
}


def _weights(v: str) -> Weights:
    return Weights(source=f"hf-hub:DaiShiResearch/transnext-{v}-224-1k::transnext_{v}_224_1k.pth",
                   license=_LICENSE, dataset="ImageNet-1k", target="encoder")


def _build(v: str, num_classes: int, in_channels: int, pretrained: bool | str, img_size: int = 512,
           pos_bias: PosBias = "extrapolate", drop_path: float | None = None) -> nn.Module:
    cfg = _VARIANTS[v]
    encoder = TransNeXt(in_channels, cfg.dims, cfg.heads, cfg.depths,
                        drop_path=cfg.drop_path if drop_path is None else drop_path, img_size=img_size,
                        pretrain_size=224, pos_bias=pos_bias)
    net = TransNeXtUPerNet(encoder, num_classes)
    if pretrained:
        load_pretrained(net, _weights(v), converter=lambda s: convert_official(s, encoder),
                        local=pretrained if isinstance(pretrained, str) else None, ignore=_CLASSIFIER)
    return net


def _register(v: str) -> None:
    cfg = _VARIANTS[v]
    card = ModelCard(
        name=f"transnext-{v}-upernet", family="general", title=f"TransNeXt-{v.capitalize()} + UPerNet",
        paper=_PAPER, repo=_REPO, license=_LICENSE, params_paper_m=cfg.params_paper_m, input_divisor=32,
        min_size=32, pretrained={"imagenet": _weights(v)}, gradcam_layer="decode_head.fpn_bottleneck",
        notes="Pure-PyTorch aggregated attention (unfold window). Position biases are computed for the actual "
              "feature size (official 'extrapolation' mode; identical to the official single-scale setting at "
              "512x512); build option pos_bias='interpolate' (with img_size) resizes 512-sized biases instead. "
              "Inputs padded to a multiple of 32. Params exclude mmseg's training-only auxiliary FCN head.",
    )

    @register_model(card)
    def build(num_classes: int, in_channels: int = 3, pretrained: bool | str = False, img_size: int = 512,
              pos_bias: PosBias = "extrapolate", drop_path: float | None = None) -> nn.Module:
        return _build(v, num_classes, in_channels, pretrained, img_size, pos_bias, drop_path)


for _v in _VARIANTS:
    _register(_v)
