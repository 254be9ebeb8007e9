"""TransUNet (Chen et al., 2021): an R50+ViT-B/16 hybrid encoder and a cascaded upsampler (CUP) with CNN skips.

Faithful to the official code (github.com/Beckschen/TransUNet, ``networks/vit_seg_modeling*.py``, config
``R50-ViT-B_16``, ``n_skip=3``):

* **ResNet-50 (v2-style BiT trunk)**: weight-standardised convolutions with GroupNorm (32 groups), stem 7x7/2 +
  3x3/2 max-pool *without padding*, units 3-4-9 (the 4th ResNet stage is not used), post-activation bottlenecks.
  Skip maps at 1/2 (64), 1/4 (256) and 1/8 (512 channels); the max-pool's odd output is zero-padded to 1/4
  exactly as the official code does.
* **ViT-B/16 on the 1/16 map**: 1x1 patch embedding to 768, learned position embeddings, 12 pre-norm blocks
  (12 heads, MLP 3072, LayerNorm eps 1e-6), dropout 0.1 on embeddings and MLPs, final LayerNorm.
* **CUP**: 3x3 conv to 512, then four (2x bilinear upsampling, concat skip, two 3x3 conv-BN-ReLU) blocks to
  256/128/64/16 channels (the last without skip), and a 3x3 segmentation head at full resolution.

timm's ``vit_base_r50_s16_224`` is *not* reused: its trunk pads "same" (TF-style) in the stem and max-pool and uses
a different weight-standardisation epsilon, so its features differ from TransUNet's.

Input size: the official model builds its position embeddings for the training size (``img_size // 16`` squared;
14x14 at its 224 default) and resizes the ImageNet table once when loading. Here ``img_size`` (default 224) sets
the learned table, and inputs of any other size (a multiple of 16) use it resized bilinearly (corner-aligned, like
the official linear ``ndimage.zoom``) at every forward; build with ``img_size=512`` to learn a 32x32 table as the
official code would for 512 inputs.

Pretrained: Google's ImageNet-21k ``R50+ViT-B_16.npz`` (the checkpoint the TransUNet README points to), read
with numpy (no pickles) and converted from its Flax key layout: ResNet trunk, patch embedding, position embeddings
(class token dropped, grid resized), all transformer blocks and the final norm fill ``encoder`` strictly; the
CUP decoder and the head start from scratch, as in the paper. 105.3M parameters (the paper: 105.28M).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..._errors import SegarenaError
from ..card import ModelCard, Weights, register_model
from ..weights import adapt_first_conv, load_into, local_file, resolve

R50_VIT_B16 = Weights(source="https://storage.googleapis.com/vit_models/imagenet21k/R50+ViT-B_16.npz",
                      license="Apache-2.0 (google-research/vision_transformer)", dataset="ImageNet-21k",
                      target="encoder", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # ViT's [-1, 1] inputs


class StdConv2d(nn.Conv2d):
    """Convolution with weight standardisation (per output channel, eps 1e-5), as in BiT and TransUNet."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v, m = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        return F.conv2d(x, (self.weight - m) / torch.sqrt(v + 1e-5), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


class Bottleneck(nn.Module):
    """The official ``PreActBottleneck`` (despite its name, normalisation and ReLU follow each convolution)."""

    def __init__(self, cin: int, cout: int, cmid: int, stride: int = 1) -> None:
        super().__init__()
        self.gn1 = nn.GroupNorm(32, cmid, eps=1e-6)
        self.conv1 = StdConv2d(cin, cmid, 1, bias=False)
        self.gn2 = nn.GroupNorm(32, cmid, eps=1e-6)
        self.conv2 = StdConv2d(cmid, cmid, 3, stride, 1, bias=False)
        self.gn3 = nn.GroupNorm(32, cout, eps=1e-6)
        self.conv3 = StdConv2d(cmid, cout, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or cin != cout:
            self.downsample = StdConv2d(cin, cout, 1, stride, bias=False)
            self.gn_proj = nn.GroupNorm(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.gn_proj(self.downsample(x)) if hasattr(self, "downsample") else x
        y = self.relu(self.gn1(self.conv1(x)))
        y = self.relu(self.gn2(self.conv2(y)))
        return self.relu(res + self.gn3(self.conv3(y)))


class ResNetV2(nn.Module):
    def __init__(self, in_channels: int = 3, units: tuple[int, ...] = (3, 4, 9), width: int = 64) -> None:
        super().__init__()
        self.root = nn.Sequential(OrderedDict(
            conv=StdConv2d(in_channels, width, 7, 2, 3, bias=False), gn=nn.GroupNorm(32, width, eps=1e-6),
            relu=nn.ReLU(inplace=True)))
        blocks = []
        cin = width
        for b, n in enumerate(units):
            cout, cmid = width * 4 * 2**b, width * 2**b
            blocks.append((f"block{b + 1}", nn.Sequential(OrderedDict(
                (f"unit{u + 1}", Bottleneck(cin if u == 0 else cout, cout, cmid, 2 if (u == 0 and b > 0) else 1))
                for u in range(n)))))
            cin = cout
        self.body = nn.Sequential(OrderedDict(blocks))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, w = x.shape[-2:]
        x = self.root(x)
        feats = [x]
        x = F.max_pool2d(x, 3, 2, 0)
        for i, block in enumerate(self.body[:-1]):
            x = block(x)
            th, tw = h // 4 // (i + 1), w // 4 // (i + 1)
            # the unpadded max-pool loses a row/column: zero-pad the skip back to its nominal size (official)
            feats.append(F.pad(x, (0, tw - x.shape[-1], 0, th - x.shape[-2])))
        return self.body[-1](x), feats[::-1]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = (lin(x).view(n, t, self.heads, c // self.heads).transpose(1, 2)
                   for lin in (self.query, self.key, self.value))
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(drop)
        for fc in (self.fc1, self.fc2):  # the official initialisation
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, drop: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = Mlp(dim, mlp_dim, drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attention_norm(x))
        return x + self.ffn(self.ffn_norm(x))


def resize_pos_embed(pe: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """[1, old_h*old_w, C] -> [1, new_h*new_w, C], bilinear with aligned corners (the official ``ndimage.zoom``,
    order 1)."""
    if tuple(old) == tuple(new):
        return pe
    c = pe.shape[-1]
    grid = pe.reshape(1, old[0], old[1], c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, mode="bilinear", align_corners=True)
    return grid.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], c)


class HybridEncoder(nn.Module):
    """R50 trunk + ViT-B/16 over its 1/16 map. Returns the encoded tokens, their grid, and the CNN skips."""

    def __init__(self, in_channels: int = 3, img_size: int = 224, dim: int = 768, depth: int = 12, heads: int = 12,
                 mlp_dim: int = 3072, drop: float = 0.1) -> None:
        super().__init__()
        self.resnet = ResNetV2(in_channels)
        self.patch_embeddings = nn.Conv2d(1024, dim, 1)
        self.grid = (img_size // 16, img_size // 16)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], dim))
        self.dropout = nn.Dropout(drop)
        self.layer = nn.ModuleList(Block(dim, heads, mlp_dim, drop) for _ in range(depth))
        self.encoder_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], list[torch.Tensor]]:
        x, skips = self.resnet(x)
        x = self.patch_embeddings(x)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2) + resize_pos_embed(self.position_embeddings, self.grid, grid)
        x = self.dropout(x)
        for blk in self.layer:
            x = blk(x)
        return self.encoder_norm(x), grid, skips


def _conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, skip: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(cin + skip, cout)
        self.conv2 = _conv_bn_relu(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)  # UpsamplingBilinear2d
        if skip is not None:
            x = torch.cat([x, skip], 1)
        return self.conv2(self.conv1(x))


class DecoderCup(nn.Module):
    def __init__(self, dim: int = 768, channels: tuple[int, ...] = (256, 128, 64, 16),
                 skips: tuple[int, ...] = (512, 256, 64, 0)) -> None:
        super().__init__()
        self.conv_more = _conv_bn_relu(dim, 512)
        cins = (512,) + channels[:-1]
        self.blocks = nn.ModuleList(DecoderBlock(i, o, s) for i, o, s in zip(cins, channels, skips))
        self.n_skip = sum(1 for s in skips if s)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv_more(tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid))
        for i, blk in enumerate(self.blocks):
            x = blk(x, skips[i] if i < self.n_skip else None)
        return x


class TransUNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 9, img_size: int = 224) -> None:
        super().__init__()
        self.encoder = HybridEncoder(in_channels, img_size)
        self.decoder = DecoderCup()
        self.segmentation_head = nn.Conv2d(16, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, grid, skips = self.encoder(x)
        return self.segmentation_head(self.decoder(tokens, grid, skips))


# ---------------------------------------------------------------------------------------------- pretrained weights
_NPZ_IGNORE = ("cls", "head/", "pre_logits/")


def read_npz(path: str) -> dict[str, np.ndarray]:
    """Arrays of a Flax/JAX ``.npz`` checkpoint (``allow_pickle=False``: nothing but arrays is read)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise SegarenaError(f"{path}: not a readable .npz checkpoint ({type(exc).__name__})",
                            fix="use R50+ViT-B_16.npz from Google's vit_models/imagenet21k storage") from None
    prefix = "opt/target/" if any(k.startswith("opt/target/") for k in arrays) else ""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _conv(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(3, 2, 0, 1)))  # HWIO -> OIHW


def _vec(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).reshape(-1)


def transunet_from_npz(w: dict[str, np.ndarray], grid: tuple[int, int], in_channels: int = 3
                       ) -> dict[str, torch.Tensor]:
    """Flax R50+ViT-B/16 keys -> ``encoder`` state dict. Unknown keys pass through under their Flax name (so a
    checkpoint of another layout fails the strict load); ``cls``, ``head/*`` and ``pre_logits/*`` are dropped."""
    w = dict(w)
    out: dict[str, torch.Tensor] = {}

    def take(key: str) -> np.ndarray:
        return w.pop(key)

    out["resnet.root.conv.weight"] = _conv(take("conv_root/kernel"))
    out["resnet.root.gn.weight"], out["resnet.root.gn.bias"] = _vec(take("gn_root/scale")), _vec(take("gn_root/bias"))
    units = sorted({k.rsplit("/", 2)[0] for k in w if k.startswith("block")})
    for unit in units:  # "block1/unit1"
        b, u = unit.split("/")
        dst = f"resnet.body.{b}.{u}."
        for src, name in (("conv1", "conv1"), ("conv2", "conv2"), ("conv3", "conv3"), ("conv_proj", "downsample")):
            if f"{unit}/{src}/kernel" in w:
                out[dst + name + ".weight"] = _conv(take(f"{unit}/{src}/kernel"))
        for gn in ("gn1", "gn2", "gn3", "gn_proj"):
            if f"{unit}/{gn}/scale" in w:
                out[dst + gn + ".weight"] = _vec(take(f"{unit}/{gn}/scale"))
                out[dst + gn + ".bias"] = _vec(take(f"{unit}/{gn}/bias"))
    out["patch_embeddings.weight"] = _conv(take("embedding/kernel"))
    out["patch_embeddings.bias"] = _vec(take("embedding/bias"))
    pe = torch.from_numpy(take("Transformer/posembed_input/pos_embedding"))
    pe = pe[:, 1:] if math.isqrt(pe.shape[1] - 1) ** 2 == pe.shape[1] - 1 else pe  # drop the class token
    g = math.isqrt(pe.shape[1])
    out["position_embeddings"] = resize_pos_embed(pe.float(), (g, g), grid)
    out["encoder_norm.weight"] = _vec(take("Transformer/encoder_norm/scale"))
    out["encoder_norm.bias"] = _vec(take("Transformer/encoder_norm/bias"))
    blocks = sorted({int(k.split("/")[1].rsplit("_", 1)[1]) for k in w if k.startswith("Transformer/encoderblock_")})
    for i in blocks:
        src, dst = f"Transformer/encoderblock_{i}/", f"layer.{i}."
        for n_src, n_dst in (("LayerNorm_0", "attention_norm"), ("LayerNorm_2", "ffn_norm")):
            out[dst + n_dst + ".weight"] = _vec(take(src + n_src + "/scale"))
            out[dst + n_dst + ".bias"] = _vec(take(src + n_src + "/bias"))
        for n_src, n_dst in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            out[dst + f"ffn.{n_dst}.weight"] = torch.from_numpy(take(src + f"MlpBlock_3/{n_src}/kernel").T.copy())
            out[dst + f"ffn.{n_dst}.bias"] = _vec(take(src + f"MlpBlock_3/{n_src}/bias"))
        for name in ("query", "key", "value", "out"):
            k = take(src + f"MultiHeadDotProductAttention_1/{name}/kernel")
            dim = k.shape[-1] if name == "out" else k.shape[0]
            out[dst + f"attn.{name}.weight"] = torch.from_numpy(k.reshape(dim, dim).T.copy())
            out[dst + f"attn.{name}.bias"] = _vec(take(src + f"MultiHeadDotProductAttention_1/{name}/bias"))
    adapt_first_conv(out, "resnet.root.conv.weight", in_channels)
    for k, v in w.items():
        if not k.startswith(_NPZ_IGNORE):
            out[k] = torch.from_numpy(np.asarray(v))
    return {k: v.float() for k, v in out.items()}


def load_transunet_pretrained(net: TransUNet, pretrained: bool | str, in_channels: int) -> None:
    path = resolve(R50_VIT_B16, local_file(pretrained, ["R50+ViT-B_16.npz"]))
    w = read_npz(str(path))
    if "conv_root/kernel" not in w or "embedding/kernel" not in w:
        raise SegarenaError(f"{path} is not an R50+ViT-B/16 checkpoint (no ResNet root or embedding)",
                            fix="use R50+ViT-B_16.npz from Google's vit_models/imagenet21k storage")
    try:
        state = transunet_from_npz(w, net.encoder.grid, in_channels)
    except KeyError as exc:
        raise SegarenaError(f"{path}: key {exc} missing for R50+ViT-B/16",
                            fix="use the official R50+ViT-B_16.npz") from None
    load_into(net.encoder, state, what="TransUNet encoder (R50+ViT-B/16)")


@register_model(ModelCard(
    name="transunet-r50-vit-b16", family="medical", title="TransUNet (R50+ViT-B/16 hybrid encoder, cascaded upsampler)",
    paper="Chen et al., TransUNet: Transformers Make Strong Encoders for Medical Image Segmentation, 2021, "
          "arXiv:2102.04306",
    repo="https://github.com/Beckschen/TransUNet", license="Apache-2.0 (official code)", params_paper_m=None,
    input_divisor=16, min_size=32, pretrained={"imagenet21k": R50_VIT_B16}, gradcam_layer="decoder.blocks.3",
    gradcam_reshape=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    notes="105.3M parameters (not in Borst & Kounev's table). Position embeddings are learned for img_size "
          "(default 224 -> 14x14) and resized bilinearly for other input sizes; ImageNet-21k R50+ViT-B/16 weights "
          "fill the encoder, the cascaded upsampler starts from scratch.",
))
def build_transunet(num_classes: int, in_channels: int = 3, pretrained: bool | str = False,
                    img_size: int = 224) -> nn.Module:
    net = TransUNet(in_channels, num_classes, img_size)
    if pretrained:
        load_transunet_pretrained(net, pretrained, in_channels)
    return net
