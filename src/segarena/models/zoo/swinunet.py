"""Swin-UNet (Cao et al., ECCV Workshops 2022): a pure Swin Transformer U-shaped encoder-decoder.

Layout of the official code (github.com/HuCaoFighting/Swin-Unet, config ``swin_tiny_patch4_window7_224_lite``):
patch embedding 4x4 -> four Swin stages (depths 2-2-2-2, heads 3-6-12-24, window 7, patch merging between
stages) -> a mirrored decoder of Swin stages with *patch expanding* (a linear layer that doubles the channels,
then a pixel shuffle) and skip connections concatenated and projected back (``concat_back_dim``) -> a final 4x
patch expanding and a 1x1 convolution. The Swin blocks are timm's ``SwinTransformerBlock`` (the same parameters
and key names as the official Swin code); the decoder parts are written here. Tensors travel as [N, H, W, C].

The network runs at 224x224 as in the official code (its windows and masks are built for that grid), so the card
sets ``fixed_size=224`` and the wrapper resizes in and out. Pretrained: the official Swin-T ImageNet-1k checkpoint
``swin_tiny_patch4_window7_224.pth``. As in the official ``load_from``, encoder stage i also initialises decoder
stage 3-i (the "mirror"): the Swin blocks of stages 0-2 are copied into the decoder; Swin-T's blocks 2-5 of stage
2 and stage 3's blocks have no place in the 2-2-2-2 net and are dropped. Decoder-only parts (patch expanding,
``concat_back_dim``, ``norm_up``, the final expanding and the output convolution) keep their initialisation.

This module also holds the pieces the other Swin-based medical models share (HiFormer, MISSFormer): a Swin stage,
patch expanding, and the checked partial loader.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

import torch
from torch import nn

from ..._errors import SegarenaError
from ..card import ModelCard, Weights, register_model
from ..weights import adapt_first_conv, load_checked, local_file, read_state_dict, resolve
from ._init import init_official

#: buffers official Swin checkpoints store and timm rebuilds (non-persistent there)
SWIN_BUFFERS = ("relative_position_index", "attn_mask")
SWIN_T_URL = "https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth"
SWIN_T = Weights(source=SWIN_T_URL, license="MIT (microsoft/Swin-Transformer)", dataset="ImageNet-1k", target="")


# ---------------------------------------------------------------------------------------------------- shared parts
class SwinStage(nn.Module):
    """One Swin stage of the official ``BasicLayer``: ``depth`` blocks alternating plain and shifted windows, then
    optional patch merging (``downsample``) or patch expanding (``upsample``). Input and output are [N, H, W, C]."""

    def __init__(self, dim: int, resolution: int, depth: int, num_heads: int, window_size: int = 7,
                 mlp_ratio: float = 4.0, drop_path: Iterable[float] | float = 0.0, resample: str | None = None,
                 ) -> None:
        super().__init__()
        from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock

        dpr = list(drop_path) if not isinstance(drop_path, float) else [drop_path] * depth
        self.blocks = nn.Sequential(*[
            SwinTransformerBlock(dim, (resolution, resolution), num_heads=num_heads, window_size=window_size,
                                 shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio,
                                 qkv_bias=True, drop_path=dpr[i])
            for i in range(depth)])
        if resample == "down":
            self.downsample = PatchMerging(dim)  # official channel order (x00, x10, x01, x11), 4C -> 2C
        elif resample == "up":
            self.upsample = PatchExpand(dim)
        elif resample is not None:
            raise ValueError(f"resample must be 'down', 'up' or None, not {resample!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)
        for name in ("downsample", "upsample"):
            if hasattr(self, name):
                x = getattr(self, name)(x)
        return x


class PatchExpand(nn.Module):
    """Swin-UNet's patch expanding: linear C -> 2C, then a 2x2 pixel shuffle to C/2 channels, then LayerNorm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.expand = nn.Linear(dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(dim // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_shuffle(self.expand(x), 2))


class FinalPatchExpand(nn.Module):
    """The last 4x patch expanding: linear C -> 16C, a 4x4 pixel shuffle back to C channels, LayerNorm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.expand = nn.Linear(dim, 16 * dim, bias=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_shuffle(self.expand(x), 4))


def _shuffle(x: torch.Tensor, s: int) -> torch.Tensor:
    """[N, H, W, s*s*c] -> [N, s*H, s*W, c], channels read as (row offset, column offset, c) like the official
    ``rearrange('b h w (p1 p2 c) -> b (h p1) (w p2) c')``."""
    n, h, w, c = x.shape
    c //= s * s
    return x.view(n, h, w, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h * s, w * s, c)


def swin_official_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """An official Swin checkpoint without its non-persistent buffers (relative position index, attention masks)."""
    state = read_state_dict(path)
    return {k: v for k, v in state.items() if not k.endswith(SWIN_BUFFERS)}


# --------------------------------------------------------------------------------------------------------- network
class SwinUNet(nn.Module):
    """Swin-UNet with the official module names (so the official checkpoint keys map one to one)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 9, img_size: int = 224, embed_dim: int = 96,
                 depths: tuple[int, ...] = (2, 2, 2, 2), num_heads: tuple[int, ...] = (3, 6, 12, 24),
                 window_size: int = 7, drop_path_rate: float = 0.2) -> None:
        super().__init__()
        n = len(depths)
        res = img_size // 4
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_channels, embed_dim, 4, stride=4)
        self.patch_embed.norm = nn.LayerNorm(embed_dim)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        span = [dpr[sum(depths[:i]):sum(depths[:i + 1])] for i in range(n)]
        self.layers = nn.ModuleList(
            SwinStage(embed_dim * 2**i, res // 2**i, depths[i], num_heads[i], window_size, drop_path=span[i],
                      resample="down" if i < n - 1 else None) for i in range(n))
        self.norm = nn.LayerNorm(embed_dim * 2 ** (n - 1))
        # decoder: stage j mirrors encoder stage n-1-j (the official code reuses the encoder depths and heads)
        self.layers_up = nn.ModuleList([PatchExpand(embed_dim * 2 ** (n - 1))])
        self.concat_back_dim = nn.ModuleList([nn.Identity()])
        for j in range(1, n):
            i = n - 1 - j
            dim = embed_dim * 2**i
            self.layers_up.append(SwinStage(dim, res // 2**i, depths[i], num_heads[i], window_size,
                                            drop_path=span[i], resample="up" if j < n - 1 else None))
            self.concat_back_dim.append(nn.Linear(2 * dim, dim))
        self.norm_up = nn.LayerNorm(embed_dim)
        self.up = FinalPatchExpand(embed_dim)
        self.output = nn.Conv2d(embed_dim, num_classes, 1, bias=False)
        self.apply(init_official)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.norm(self.patch_embed.proj(x).permute(0, 2, 3, 1))
        skips = []
        for layer in self.layers:
            skips.append(x)
            x = layer(x)
        x = self.norm(x)
        for j, (layer, proj) in enumerate(zip(self.layers_up, self.concat_back_dim)):
            if j > 0:
                x = proj(torch.cat([x, skips[len(skips) - 1 - j]], dim=-1))
            x = layer(x)
        x = self.up(self.norm_up(x))
        return self.output(x.permute(0, 3, 1, 2))


#: parts of the network that no ImageNet checkpoint can fill (the official code leaves them initialised as well)
SWINUNET_DECODER_ONLY = ("layers_up.0.", "layers_up.1.upsample.", "layers_up.2.upsample.", "concat_back_dim.",
                         "norm_up.", "up.", "output.")


def swinunet_from_swin(state: dict[str, torch.Tensor], net: SwinUNet, in_channels: int = 3) -> dict[str, torch.Tensor]:
    """Official Swin-T keys -> Swin-UNet keys, mirrored like the official ``load_from``: ``layers.i.*`` stays and
    is also copied to ``layers_up.(3-i).*`` where that key exists. Dropped on purpose: the classifier head and
    Swin-T blocks beyond this net's depth (stage 2 has 6 blocks in Swin-T, 2 here). Any other key is passed on, so
    a checkpoint of another layout fails the strict load instead of loading silently."""
    own = net.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("head.") and not k.endswith(SWIN_BUFFERS)}
    adapt_first_conv(state, "patch_embed.proj.weight", in_channels)
    out: dict[str, torch.Tensor] = {}
    n = len(net.layers)
    for k, v in state.items():
        if k.startswith("layers.") and ".blocks." in k:
            i, _, j = k.split(".")[1:4]
            if int(j) >= len(net.layers[int(i)].blocks):
                continue  # deeper than this net's stage
        out[k] = v
        if k.startswith("layers."):
            i, rest = k[len("layers."):].split(".", 1)
            mirror = f"layers_up.{n - 1 - int(i)}.{rest}"
            if mirror in own:
                out[mirror] = v
    return out


def _load_swinunet(net: SwinUNet, pretrained: bool | str, in_channels: int) -> None:
    path = local_file(pretrained, ["swin_tiny_patch4_window7_224.pth"])
    state = swin_official_state(resolve(SWIN_T, path))
    if "layers.0.blocks.0.attn.qkv.weight" not in state:
        raise SegarenaError("checkpoint is not an official Swin Transformer checkpoint",
                            fix="use swin_tiny_patch4_window7_224.pth from microsoft/Swin-Transformer")
    load_checked(net, swinunet_from_swin(state, net, in_channels), what="SwinUNet", keep_init=SWINUNET_DECODER_ONLY)


@register_model(ModelCard(
    name="swin-unet", family="medical", title="Swin-UNet (Swin-T, depths 2-2-2-2, 224x224)",
    paper="Cao et al., Swin-Unet: Unet-like Pure Transformer for Medical Image Segmentation, ECCV Workshops 2022, "
          "arXiv:2105.05537",
    repo="https://github.com/HuCaoFighting/Swin-Unet", license="design: paper; official code without a license file",
    params_paper_m=None, fixed_size=224, input_divisor=32, min_size=32, pretrained={"imagenet": SWIN_T},
    gradcam_layer="norm_up", gradcam_reshape="nhwc",
    notes="Runs internally at 224x224 like the official code (the wrapper resizes in and out). Swin-T ImageNet "
          "weights fill the encoder and, mirrored as in the official load_from, the decoder's Swin blocks; patch "
          "expanding, concat_back_dim, norm_up and the output layers start from scratch. 27.2M parameters.",
))
def build_swinunet(num_classes: int, in_channels: int = 3, pretrained: bool | str = False) -> nn.Module:
    net = SwinUNet(in_channels, num_classes)
    if pretrained:
        _load_swinunet(net, pretrained, in_channels)
    return net


__all__ = [
    "FinalPatchExpand",
    "PatchExpand",
    "SwinStage",
    "SwinUNet",
    "build_swinunet",
    "init_official",
    "swinunet_from_swin",
]
