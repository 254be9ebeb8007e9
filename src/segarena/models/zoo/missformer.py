"""MISSFormer (Huang et al., IEEE TMI 2022): a MiT-B1-shaped encoder with Enhanced Mix-FFN blocks, the Enhanced
Transformer Context Bridge over all four scales, and a transformer decoder with patch expanding.

Faithful to the official code (github.com/ZhifangDeng/MISSFormer, ``networks/MISSFormer.py``, ``segformer.py``),
with the official module names:

* **Encoder** (``backbone``): MiT-B1 widths 64/128/320/512, two blocks per stage, heads 1/2/5/8, spatial
  reduction 8/4/2/1. Every transformer block uses the *Enhanced Mix-FFN* (``mix_skip``): fc1, a depth-wise 3x3
  conv whose output is added to the fc1 output ("skip"), LayerNorm, GELU, fc2. (The official Mix-FFN creates two
  more LayerNorms it never uses; they are kept so the parameter count and key layout match.)
* **Bridge**: four Enhanced Transformer Context Bridge layers. The four encoder maps are flattened to 64-wide
  tokens (a 128-channel map becomes twice as many tokens, and so on, exactly like the official reshapes) and
  concatenated; one attention runs over all of them with keys/values from the spatially reduced maps; the tokens
  are then split back per scale for per-scale Enhanced Mix-FFNs.
* **Decoder**: four stages of (concat with the bridge skip -> linear -> 2 transformer blocks -> patch expanding),
  the last one expanding 4x and ending in a 1x1 convolution. As in the official code, the deepest stage only
  expands: its linear layer and its two transformer blocks are built (and counted, 42.0M parameters in all) but
  never run.

The official code is built for 224x224 (token counts are hard-coded); this implementation derives the counts from
the feature maps and works for any multiple of 32, but the card keeps ``fixed_size=224`` like the official code
and the paper, so the wrapper resizes in and out.

Pretrained (as in Borst & Kounev): the official MiT-B1 ImageNet-1k checkpoint (``mit_b1.pth`` from NVlabs
SegFormer; the same keys on the Hugging Face hub as ``smp-hub/mit_b1.imagenet``) fills the whole encoder
(``backbone``): patch embeddings, attention, fc1/dwconv/fc2 of every Mix-FFN, stage norms. Not in MiT-B1 and so
initialised: the Enhanced Mix-FFN LayerNorms (``block*.*.mlp.norm1/2/3``), the bridge and the decoder. The
official repository itself ships no loading code (its README trains from scratch).
"""
from __future__ import annotations

import torch
from torch import nn

from ..card import ModelCard, Weights, register_model
from ..weights import adapt_first_conv, load_checked, local_file, read_state_dict, resolve

MIT_B1 = Weights(source="hf-hub:smp-hub/mit_b1.imagenet::model.safetensors",
                 license="NVIDIA Source Code License for SegFormer (non-commercial research)",
                 dataset="ImageNet-1k", target="backbone")
DIMS = (64, 128, 320, 512)
HEADS = (1, 2, 5, 8)
SR = (8, 4, 2, 1)


def _hw(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[N, h*w, C] -> [N, C, h, w]."""
    return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)


class DWConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.dwconv(_hw(x, h, w)).flatten(2).transpose(1, 2)


class MixFFNSkip(nn.Module):
    """Enhanced Mix-FFN: ``fc2(GELU(LN(dwconv(fc1 x) + fc1 x)))``."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c1, c2)
        self.dwconv = DWConv(c2)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(c2, c1)
        self.norm1 = nn.LayerNorm(c2)
        self.norm2 = nn.LayerNorm(c2)  # created but unused in the official code
        self.norm3 = nn.LayerNorm(c2)  # created but unused in the official code

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        y = self.fc1(x)
        return self.fc2(self.act(self.norm1(self.dwconv(y, h, w) + y)))


class EfficientSelfAttention(nn.Module):
    """MiT attention: keys and values from the map reduced by a strided conv (``sr``) when ``reduction > 1``."""

    def __init__(self, dim: int, heads: int, reduction: int) -> None:
        super().__init__()
        self.heads = heads
        self.reduction = reduction
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if reduction > 1:
            self.sr = nn.Conv2d(dim, dim, reduction, reduction)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        kv = x
        if self.reduction > 1:
            kv = self.norm(self.sr(_hw(x, h, w)).flatten(2).transpose(1, 2))
        return _attend(self.q, self.kv, self.proj, self.heads, x, kv)


def _attend(q_lin: nn.Linear, kv_lin: nn.Linear, proj: nn.Linear, heads: int, x: torch.Tensor,
            kv_src: torch.Tensor) -> torch.Tensor:
    n, t, c = x.shape
    q = q_lin(x).view(n, t, heads, c // heads).transpose(1, 2)
    k, v = kv_lin(kv_src).view(n, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
    out = nn.functional.scaled_dot_product_attention(q, k, v)
    return proj(out.transpose(1, 2).reshape(n, t, c))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, reduction: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(dim, heads, reduction)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFNSkip(dim, 4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x), h, w)


class OverlapPatchEmbed(nn.Module):
    def __init__(self, patch: int, stride: int, cin: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, patch, stride, patch // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class MiT(nn.Module):
    """The MISSFormer encoder: MiT-B1 layout (keys ``patch_embed{i}``, ``block{i}``, ``norm{i}``)."""

    def __init__(self, in_channels: int, depths: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__()
        cins = (in_channels,) + DIMS[:3]
        for i in range(4):
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(7 if i == 0 else 3, 4 if i == 0 else 2,
                                                                  cins[i], DIMS[i]))
            setattr(self, f"block{i + 1}",
                    nn.ModuleList(TransformerBlock(DIMS[i], HEADS[i], SR[i]) for _ in range(depths[i])))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(DIMS[i]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, 5):
            x, h, w = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x, h, w)
            x = _hw(getattr(self, f"norm{i}")(x), h, w)
            outs.append(x)
        return outs


class ScaleReduce(nn.Module):
    """Keys/values of the bridge: each of the three finer maps reduced to the coarsest grid (stride 8/4/2 convs),
    flattened back to 64-wide tokens as the official code does, plus the coarsest map's own tokens."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.sr0 = nn.Conv2d(dim, dim, 8, 8)
        self.sr1 = nn.Conv2d(dim * 2, dim * 2, 4, 4)
        self.sr2 = nn.Conv2d(dim * 5, dim * 5, 2, 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, parts: list[torch.Tensor], sizes: list[tuple[int, int]]) -> torch.Tensor:
        n, _, c = parts[0].shape
        reduced = [sr(_nhwc_chunk(p, hw, m)).reshape(n, c, -1).transpose(1, 2)
                   for sr, p, hw, m in zip((self.sr0, self.sr1, self.sr2), parts, sizes, (1, 2, 5))]
        return self.norm(torch.cat(reduced + [parts[3]], 1))


def _nhwc_chunk(tokens: torch.Tensor, hw: tuple[int, int], mult: int) -> torch.Tensor:
    """64-wide tokens of one scale -> its [N, mult*64, h, w] map (the inverse of the bridge's flattening)."""
    n, _, c = tokens.shape
    return tokens.reshape(n, hw[0], hw[1], c * mult).permute(0, 3, 1, 2)


class BridgeLayer(nn.Module):
    """Enhanced Transformer Context Bridge layer over the concatenated tokens of all four scales."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.q = nn.Linear(dim, dim)
        self.attn.kv = nn.Linear(dim, 2 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.attn.scale_reduce = ScaleReduce(dim)
        self.norm2 = nn.LayerNorm(dim)
        for i, m in enumerate((1, 2, 5, 8)):
            setattr(self, f"mixffn{i + 1}", MixFFNSkip(dim * m, dim * m * 4))

    def forward(self, x: torch.Tensor, sizes: list[tuple[int, int]]) -> torch.Tensor:
        n, _, c = x.shape
        counts = [h * w * m for (h, w), m in zip(sizes, (1, 2, 5, 8))]
        y = self.norm1(x)
        x = x + _attend(self.attn.q, self.attn.kv, self.attn.proj, 1, y,
                        self.attn.scale_reduce(list(y.split(counts, 1)), sizes))
        parts = self.norm2(x).split(counts, 1)
        ffn = [getattr(self, f"mixffn{i + 1}")(p.reshape(n, h * w, c * m), h, w).reshape(n, -1, c)
               for i, (p, (h, w), m) in enumerate(zip(parts, sizes, (1, 2, 5, 8)))]
        return x + torch.cat(ffn, 1)


class Bridge(nn.Module):
    def __init__(self, dim: int = 64, depth: int = 4) -> None:
        super().__init__()
        for i in range(depth):
            setattr(self, f"bridge_layer{i + 1}", BridgeLayer(dim))
        self.depth = depth

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        n, c = feats[0].shape[:2]
        sizes = [tuple(f.shape[-2:]) for f in feats]
        x = torch.cat([f.permute(0, 2, 3, 1).reshape(n, -1, c) for f in feats], 1)
        for i in range(self.depth):
            x = getattr(self, f"bridge_layer{i + 1}")(x, sizes)
        counts = [h * w * m for (h, w), m in zip(sizes, (1, 2, 5, 8))]
        return [_nhwc_chunk(p, hw, m) for p, hw, m in zip(x.split(counts, 1), sizes, (1, 2, 5, 8))]


class DecoderLayer(nn.Module):
    """concat(previous, skip) -> linear -> 2 transformer blocks -> patch expanding (2x, or 4x + 1x1 conv)."""

    def __init__(self, dims: int, out_dim: int, heads: int, reduction: int, num_classes: int,
                 is_last: bool = False) -> None:
        super().__init__()
        from .swinunet import FinalPatchExpand, PatchExpand

        self.concat_linear = nn.Linear(dims * (4 if is_last else 2), out_dim)
        self.layer_up = FinalPatchExpand(out_dim) if is_last else PatchExpand(out_dim)
        self.last_layer = nn.Conv2d(out_dim, num_classes, 1) if is_last else None
        self.layer_former_1 = TransformerBlock(out_dim, heads, reduction)
        self.layer_former_2 = TransformerBlock(out_dim, heads, reduction)
        for m in self.modules():  # the official decoder initialisation
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: [N, h, w, C] from the stage below; ``skip``: the bridge map [N, C', h, w]."""
        if skip is None:  # the deepest stage only expands (official behaviour)
            return self.layer_up(x)
        n, _, h, w = skip.shape
        y = self.concat_linear(torch.cat([x.reshape(n, h * w, -1), skip.flatten(2).transpose(1, 2)], -1))
        y = self.layer_former_2(self.layer_former_1(y, h, w), h, w)
        y = self.layer_up(y.reshape(n, h, w, -1))
        return self.last_layer(y.permute(0, 3, 1, 2)) if self.last_layer is not None else y


class MISSFormer(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 9) -> None:
        super().__init__()
        self.backbone = MiT(in_channels)
        self.bridge = Bridge(64, 4)
        in_out = ((32, 64), (144, 128), (288, 320), (512, 512))
        for i in range(4):
            setattr(self, f"decoder_{i}", DecoderLayer(in_out[i][0], in_out[i][1], HEADS[i], SR[i], num_classes,
                                                       is_last=i == 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bridge(self.backbone(x))
        y = self.decoder_3(b[3].permute(0, 2, 3, 1))
        y = self.decoder_2(y, b[2])
        y = self.decoder_1(y, b[1])
        return self.decoder_0(y, b[0])


#: MISSFormer parts inside ``backbone`` that MiT-B1 does not have (the Enhanced Mix-FFN LayerNorms)
MIT_NEW = tuple(f"block{s}.{b}.mlp.norm{k}." for s in range(1, 5) for b in range(2) for k in (1, 2, 3))


def missformer_from_mit(state: dict[str, torch.Tensor], in_channels: int = 3) -> dict[str, torch.Tensor]:
    """Official MiT-B1 keys are MISSFormer ``backbone`` keys already; the ImageNet classifier is dropped and the
    first kernel fitted to ``in_channels``."""
    out = {k: v for k, v in state.items() if not k.startswith("head.")}
    adapt_first_conv(out, "patch_embed1.proj.weight", in_channels)
    return out


@register_model(ModelCard(
    name="missformer", family="medical", title="MISSFormer (MiT-B1-shaped encoder, Enhanced Mix-FFN, context bridge)",
    paper="Huang et al., MISSFormer: An Effective Transformer for 2D Medical Image Segmentation, IEEE TMI 2022, "
          "arXiv:2109.07162",
    repo="https://github.com/ZhifangDeng/MISSFormer", license="design: paper; official code without a license file",
    params_paper_m=42.0, fixed_size=224, input_divisor=32, min_size=32, pretrained={"imagenet": MIT_B1},
    gradcam_layer="decoder_0.layer_up", gradcam_reshape="nhwc",
    notes="Runs internally at 224x224 like the official code (the wrapper resizes in and out). MiT-B1 ImageNet "
          "weights fill the encoder except the Enhanced Mix-FFN LayerNorms; bridge and decoder start from scratch. "
          "The deepest decoder stage's linear layer and transformer blocks exist but are never run (official).",
))
def build_missformer(num_classes: int, in_channels: int = 3, pretrained: bool | str = False) -> nn.Module:
    net = MISSFormer(in_channels, num_classes)
    if pretrained:
        path = local_file(pretrained, ["mit_b1.pth", "model.safetensors"])
        state = missformer_from_mit(read_state_dict(resolve(MIT_B1, path)), in_channels)
        load_checked(net.backbone, state, what="MISSFormer encoder (MiT-B1)", keep_init=MIT_NEW)
    return net
