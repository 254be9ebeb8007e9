"""DINOv2 (Oquab et al., 2023) ViT-S/14 and ViT-B/14 encoders with a DPT head or a linear head.

A foundation-model baseline beyond Borst & Kounev's zoo. The encoder is timm's DINOv2 ViT (the official
architecture; timm's hub weights ``lvd142m`` are the official LVD-142M checkpoints re-saved) with a dynamic image
size: the absolute position embedding (trained at 518 px, a 37x37 grid) is interpolated to the input's patch grid,
so any multiple of 14 works and the wrapper pads to one.

Heads (both as in DINOv2's own dense evaluations):

* ``linear`` -- DINOv2's linear segmentation probe: batch norm + a 1x1 convolution on the (final-normed) patch
  tokens of the last block; logits at 1/14, upsampled by the wrapper.
* ``dpt`` -- the DPT head of Ranftl et al. (ICCV 2021) in the configuration DINOv2 uses for dense prediction:
  tokens of blocks 3, 6, 9, 12 (final norm applied), "project" readout (the class token is concatenated to every
  patch token and projected back), reassembly to 4x, 2x, 1x and 0.5x the patch grid with widths
  C/8, C/4, C/2, C (C = embedding width), 3x3 convolutions to 256 channels, four RefineNet-style fusion blocks with
  pre-activation residual units (BN), a 3x3 conv-BN-ReLU and a 1x1 classifier. Unlike the fixed 2x upsampling of
  the original (which needs inputs divisible by 32 patches), each fusion block upsamples to the next skip's size,
  as Depth Anything does, so odd patch grids work. Logits at 2x the 1/4-of-grid scale (stride 3.5), upsampled by
  the wrapper.

``freeze_encoder=True`` (``--set model.kwargs.freeze_encoder=true``) trains the head only: the ViT's parameters get
``requires_grad=False`` and the encoder stays in eval mode even when the model is put in training mode.

Pretrained: ``pretrained=True`` loads timm's ``lvd142m`` hub weights; ``pretrained=/path`` loads a local official
``dinov2_vit{s,b}14_pretrain.pth`` (facebookresearch layout) or timm ``model.safetensors``. Both go through
:func:`convert_dinov2` and a strict load. Official repo: https://github.com/facebookresearch/dinov2 (Apache-2.0).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..card import ModelCard, Weights, register_model
from ..weights import load_pretrained, resolve

_PAPER = ("Oquab et al., DINOv2: Learning Robust Visual Features without Supervision, TMLR 2024, arXiv:2304.07193; "
          "DPT head: Ranftl et al., Vision Transformers for Dense Prediction, ICCV 2021, arXiv:2103.13413")
_REPO = "https://github.com/facebookresearch/dinov2"
_VARIANTS = {"s": ("vit_small_patch14_dinov2", "ViT-S/14"), "b": ("vit_base_patch14_dinov2", "ViT-B/14")}
#: blocks whose tokens feed the DPT head (0-based), DINOv2's choice for 12-block ViTs
DPT_LAYERS = (2, 5, 8, 11)


def _weights(arch: str) -> Weights:
    return Weights(source=f"hf-hub:timm/{arch}.lvd142m::model.safetensors", license="Apache-2.0",
                   dataset="LVD-142M (self-supervised)", target="encoder")


def adapt_patch_embed(state: dict[str, torch.Tensor], key: str, in_channels: int) -> dict[str, torch.Tensor]:
    """Fit an RGB patch-embedding kernel to ``in_channels`` (1 channel: summed over RGB, timm's rule)."""
    w = state.get(key)
    if w is not None and w.shape[1] != in_channels:
        from timm.models import adapt_input_conv

        state[key] = adapt_input_conv(in_channels, w)
    return state


def convert_dinov2(in_channels: int = 3) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Converter from the official DINOv2 (or timm) checkpoint layout onto timm's ``VisionTransformer``.

    The official ViT-S/B keys equal timm's except ``mask_token`` (used only by iBOT-style masked pretraining),
    which is dropped; a classification ``head`` (none in the official files) is dropped too."""

    def convert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {k: v for k, v in state.items() if k != "mask_token" and not k.startswith("head.")}
        return adapt_patch_embed(out, "patch_embed.proj.weight", in_channels)

    return convert


def freeze_(module: nn.Module) -> None:
    """Stop training ``module``: no gradients for its parameters, eval mode (norm statistics and dropout fixed)."""
    module.requires_grad_(False)
    module.eval()


# ----------------------------------------------------------------------------------------------------- DPT head
class _Readout(nn.Module):
    """DPT "project" readout: concatenate the class token to every patch token, project back to C with GELU."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

    def forward(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [N, hw, C]
        tokens = self.proj(torch.cat([tokens, cls.expand(-1, h * w, -1)], dim=-1))
        return tokens.transpose(1, 2).reshape(n, c, h, w)


class _PreActResidual(nn.Module):
    """Two (ReLU -> 3x3 conv -> BN) steps with an identity skip (DPT's residual conv unit)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch),
                                  nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _Fusion(nn.Module):
    """RefineNet-style fusion: add the refined skip, refine, upsample (to ``size`` or 2x), 1x1 projection."""

    def __init__(self, ch: int, has_skip: bool) -> None:
        super().__init__()
        self.skip_unit = _PreActResidual(ch) if has_skip else None
        self.unit = _PreActResidual(ch)
        self.project = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        if skip is not None and self.skip_unit is not None:
            if skip.shape[-2:] != x.shape[-2:]:
                skip = F.interpolate(skip, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + self.skip_unit(skip)
        x = self.unit(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.project(x)


class DPTHead(nn.Module):
    """DPT decoder over four ViT token maps ``[(patch NCHW, cls [N, 1, C]), ...]`` (shallow to deep)."""

    def __init__(self, embed_dim: int, num_classes: int, channels: int = 256,
                 widths: tuple[int, ...] | None = None) -> None:
        super().__init__()
        widths = widths or tuple(embed_dim // 2 ** (3 - i) for i in range(4))
        self.readouts = nn.ModuleList(_Readout(embed_dim) for _ in widths)
        self.projects = nn.ModuleList(nn.Conv2d(embed_dim, w, 1) for w in widths)
        self.resamples = nn.ModuleList([
            nn.ConvTranspose2d(widths[0], widths[0], 4, stride=4),
            nn.ConvTranspose2d(widths[1], widths[1], 2, stride=2),
            nn.Identity(),
            nn.Conv2d(widths[3], widths[3], 3, stride=2, padding=1),
        ])
        self.convs = nn.ModuleList(nn.Conv2d(w, channels, 3, padding=1, bias=False) for w in widths)
        self.fusions = nn.ModuleList(_Fusion(channels, has_skip=i > 0) for i in range(len(widths)))
        self.project = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                     nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(channels, num_classes, 1))

    def forward(self, feats: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        maps = []
        for i, (x, cls) in enumerate(feats):
            x = self.resamples[i](self.projects[i](self.readouts[i](x, cls)))
            maps.append(self.convs[i](x))
        # deepest first; each fusion upsamples to the next (shallower) map's size, the last one by 2x
        out = self.fusions[0](maps[-1], size=maps[-2].shape[-2:])
        for i in range(1, len(maps)):
            nxt = maps[-(i + 2)].shape[-2:] if i + 2 <= len(maps) else None
            out = self.fusions[i](out, maps[-(i + 1)], size=nxt)
        return self.classifier(self.project(out))


class LinearHead(nn.Module):
    """DINOv2's linear probe: BN + 1x1 convolution on the last block's patch tokens."""

    def __init__(self, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(embed_dim)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, feats: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        return self.classifier(self.bn(feats[-1][0]))


class DinoV2Seg(nn.Module):
    """DINOv2 ViT encoder (timm, dynamic image size) + a dense head fed with intermediate token maps."""

    def __init__(self, arch: str, head: str, num_classes: int, in_channels: int = 3,
                 freeze_encoder: bool = False) -> None:
        super().__init__()
        import timm

        self.encoder = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_channels,
                                         dynamic_img_size=True)
        dim = self.encoder.embed_dim
        self.layers = list(DPT_LAYERS) if head == "dpt" else [len(self.encoder.blocks) - 1]
        self.head = DPTHead(dim, num_classes) if head == "dpt" else LinearHead(dim, num_classes)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            freeze_(self.encoder)

    def train(self, mode: bool = True) -> DinoV2Seg:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder.forward_intermediates(x, indices=self.layers, return_prefix_tokens=True, norm=True,
                                                   output_fmt="NCHW", intermediates_only=True)
        return self.head(feats)


def build_dinov2(size: str, head: str, num_classes: int, in_channels: int = 3, pretrained: bool | str = False,
                 freeze_encoder: bool = False) -> DinoV2Seg:
    """Build ``dinov2-{size}-{head}``; ``pretrained`` is False, True (timm hub ``lvd142m``) or a local file."""
    arch = _VARIANTS[size][0]
    # resolve the checkpoint first: a missing file or an offline cache miss fails before the net is built
    ckpt = resolve(_weights(arch), pretrained if isinstance(pretrained, str) else None) if pretrained else None
    net = DinoV2Seg(arch, head, num_classes, in_channels, freeze_encoder=freeze_encoder)
    if ckpt is not None:
        load_pretrained(net, _weights(arch), convert_dinov2(in_channels), local=ckpt)
    return net


def _register(size: str, head: str) -> None:
    arch, title = _VARIANTS[size]
    head_title = ("DPT head (4 reassembled layers, fusion blocks)" if head == "dpt"
                  else "linear head (BN + 1x1 conv on last patch tokens)")
    card = ModelCard(
        name=f"dinov2-{size}-{head}", family="general", title=f"DINOv2 {title} + {head_title}",
        paper=_PAPER, repo=_REPO, license="Apache-2.0", params_paper_m=None, input_divisor=14, min_size=28,
        pretrained={"lvd142m": _weights(arch)},
        gradcam_layer="head.project" if head == "dpt" else "head.bn",
        notes="Foundation-model encoder (timm, dynamic image size: position embeddings interpolated to the patch "
              "grid). kwargs: freeze_encoder (train the head only). Not in Borst & Kounev (2026).",
    )

    @register_model(card)
    def build(num_classes: int, in_channels: int = 3, pretrained: bool | str = False,
              freeze_encoder: bool = False) -> nn.Module:
        return build_dinov2(size, head, num_classes, in_channels, pretrained, freeze_encoder)


for _size in _VARIANTS:
    for _head in ("dpt", "linear"):
        _register(_size, _head)
