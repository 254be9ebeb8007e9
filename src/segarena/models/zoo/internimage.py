"""InternImage (Wang et al., CVPR 2023, arXiv:2211.05778) encoders with the UPerNet head.

InternImage is a hierarchical ConvNeXt/Swin-shaped network whose token mixer is DCNv3, a grouped deformable
convolution with softmax-normalised modulation (see :mod:`._dcnv3`). Written by hand after the official code
(github.com/OpenGVLab/InternImage, ``segmentation/mmseg_custom/models/backbones/intern_image.py``): no installed
library ships it. Variants and settings follow the official ADE20K UPerNet configs
(``upernet_internimage_{t,s,b}_512_160k_ade20k.py``):

====  ========  ==============  ==================  =========  ===========  =========
name  channels  depths          groups              post-norm  layer scale  drop path
====  ========  ==============  ==================  =========  ===========  =========
T     64        4, 4, 18, 4     4, 8, 16, 32        no         1.0          0.2
S     80        4, 4, 21, 4     5, 10, 20, 40       yes        1.0          0.3
B     112       4, 4, 21, 4     7, 14, 28, 56       yes        1.0          0.4
====  ========  ==============  ==================  =========  ===========  =========

The head is the shared :class:`~.heads.UPerNetHead` (512 channels). Parameter counts (1 output logit, our
count): T 58.4M, S 79.0M, B 127.2M; the official "59M / 80M / 128M" also contain the auxiliary FCN head that
mmseg trains on stage 3 and drops at inference (+0.6M / +0.8M / +1.1M at 150 classes). We do not build that
auxiliary head: the study's protocol trains one loss on the main output.

Pretrained: the official ImageNet-1k classification checkpoints (``internimage_{t,s,b}_1k_224.pth`` on the
Hugging Face repo ``OpenGVLab/InternImage``, MIT). :func:`convert_official` maps their keys onto our module
names; the classifier (``conv_head``, ``head``) is dropped. The InternImage-T classification model was trained
without layer scale while its UPerNet config uses ``layer_scale=1.0``: the official loader leaves the missing
``gamma`` parameters at their initial value 1.0, and so does the converter (only when all of them are absent).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..card import ModelCard, Weights, register_model
from ..weights import load_pretrained
from ._dcnv3 import DCNv3
from ._init import init_official
from .heads import UPerNetHead

__all__ = ["InternImage", "InternImageUPerNet", "convert_official"]

_LICENSE = "MIT"
_PAPER = ("Wang et al., InternImage: Exploring Large-Scale Vision Foundation Models with Deformable Convolutions, "
          "CVPR 2023, arXiv:2211.05778")
_REPO = "https://github.com/OpenGVLab/InternImage"


@dataclass(frozen=True)
class _Variant:
    channels: int
    depths: tuple[int, int, int, int]
    groups: tuple[int, int, int, int]
    post_norm: bool
    drop_path: float
    layer_scale: float = 1.0
    mlp_ratio: float = 4.0
    params_paper_m: float | None = None


_VARIANTS = {
    "t": _Variant(64, (4, 4, 18, 4), (4, 8, 16, 32), post_norm=False, drop_path=0.2, params_paper_m=58.0),
    "s": _Variant(80, (4, 4, 21, 4), (5, 10, 20, 40), post_norm=True, drop_path=0.3),
    "b": _Variant(112, (4, 4, 21, 4), (7, 14, 28, 56), post_norm=True, drop_path=0.4),
}


def _drop_path(rate: float) -> nn.Module:
    if rate <= 0:
        return nn.Identity()
    from timm.layers import DropPath

    return DropPath(rate)


class _Stem(nn.Module):
    """Two stride-2 3x3 convs, each followed by LayerNorm (GELU between): image -> stride 4, channels-last out.

    The official configs build the stem with ``norm_layer='LN'`` (LayerNorm over channels), not BatchNorm.
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels // 2, 3, stride=2, padding=1)
        self.norm1 = nn.LayerNorm(channels // 2, eps=1e-6)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1)
        self.norm2 = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.conv1(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.norm2(self.conv2(self.act(x)).permute(0, 2, 3, 1))


class _Downsample(nn.Module):
    """Stride-2 3x3 conv (no bias) doubling the width, then LayerNorm; channels-last in and out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class _MLP(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class InternImageLayer(nn.Module):
    """One block: DCNv3 token mixer + MLP, each residual, pre-norm (T) or post-norm (S, B), with layer scale."""

    def __init__(self, channels: int, group: int, mlp_ratio: float, drop_path: float, post_norm: bool,
                 layer_scale: float | None) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.norm1 = nn.LayerNorm(channels, eps=1e-6)
        self.dcn = DCNv3(channels, group, kernel_size=3, stride=1, pad=1, dilation=1, offset_scale=1.0)
        self.norm2 = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = _MLP(channels, int(channels * mlp_ratio))
        self.drop_path = _drop_path(drop_path)
        if layer_scale is not None:
            self.gamma1 = nn.Parameter(torch.full((channels,), float(layer_scale)))
            self.gamma2 = nn.Parameter(torch.full((channels,), float(layer_scale)))
        else:
            self.gamma1 = self.gamma2 = None

    def _scale(self, y: torch.Tensor, gamma: torch.Tensor | None) -> torch.Tensor:
        return y if gamma is None else gamma * y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.post_norm:
            x = x + self.drop_path(self._scale(self.norm1(self.dcn(x)), self.gamma1))
            return x + self.drop_path(self._scale(self.norm2(self.mlp(x)), self.gamma2))
        x = x + self.drop_path(self._scale(self.dcn(self.norm1(x)), self.gamma1))
        return x + self.drop_path(self._scale(self.mlp(self.norm2(x)), self.gamma2))


class InternImageStage(nn.Module):
    """``depth`` blocks at one resolution, a closing LayerNorm (pre-norm variants only), then the downsampling."""

    def __init__(self, channels: int, depth: int, group: int, mlp_ratio: float, drop_paths: Sequence[float],
                 post_norm: bool, layer_scale: float | None, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(InternImageLayer(channels, group, mlp_ratio, drop_paths[i], post_norm,
                                                     layer_scale) for i in range(depth))
        self.norm = nn.Identity() if post_norm else nn.LayerNorm(channels, eps=1e-6)
        self.downsample = _Downsample(channels) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (input of the next stage, this stage's output feature), both channels-last."""
        for blk in self.blocks:
            x = blk(x)
        feat = self.norm(x)
        return (self.downsample(feat) if self.downsample is not None else feat), feat


class InternImage(nn.Module):
    """The InternImage encoder: four features ``[N, C_i, H/2^(i+2), W/2^(i+2)]``, ``C_i = channels * 2^i``."""

    def __init__(self, in_channels: int = 3, channels: int = 64, depths: Sequence[int] = (4, 4, 18, 4),
                 groups: Sequence[int] = (4, 8, 16, 32), mlp_ratio: float = 4.0, drop_path: float = 0.2,
                 post_norm: bool = False, layer_scale: float | None = 1.0) -> None:
        super().__init__()
        self.out_channels = [channels * 2**i for i in range(len(depths))]
        self.stem = _Stem(in_channels, channels)
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.stages.append(InternImageStage(self.out_channels[i], depth, groups[i], mlp_ratio,
                                                rates[start:start + depth], post_norm, layer_scale,
                                                downsample=i < len(depths) - 1))
        self.apply(self._init_weights)
        for m in self.modules():
            if isinstance(m, DCNv3):
                m.reset_parameters()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        init_official(m)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x, feat = stage(x)
            feats.append(feat.permute(0, 3, 1, 2).contiguous())
        return feats


class InternImageUPerNet(nn.Module):
    """InternImage encoder + UPerNet head; logits at 1/4 of the (padded) input size."""

    def __init__(self, encoder: InternImage, num_classes: int, channels: int = 512) -> None:
        super().__init__()
        self.encoder = encoder
        self.decode_head = UPerNetHead(encoder.out_channels, channels=channels, num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.encoder(x))


# official key layout -> ours, applied in order (classifier keys pass through and are ignored by the loader)
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^patch_embed\.", "stem."),
    (r"^levels\.", "stages."),
    (r"^stem\.norm([12])\.1\.", r"stem.norm\1."),      # [to_channels_last, LayerNorm(, to_channels_first)]
    (r"\.norm([12])\.0\.", r".norm\1."),             # block LayerNorms
    (r"\.dcn\.dw_conv\.0\.", ".dcn.dw_conv."),
    (r"\.dcn\.dw_conv\.1\.1\.", ".dcn.dw_norm."),    # [to_channels_last, LayerNorm] -> LayerNorm
    (r"^(stages\.\d+)\.norm\.0\.", r"\1.norm."),
    (r"\.downsample\.norm\.1\.", ".downsample.norm."),
)
_CLASSIFIER = ("conv_head.", "head.", "fc_norm.", "clip_projector.")


def convert_official(state: dict[str, torch.Tensor], encoder: InternImage) -> dict[str, torch.Tensor]:
    """Official InternImage (classification or mmseg backbone) keys -> :class:`InternImage` keys.

    Strips ``backbone.``/``module.`` prefixes, renames, fills ``gamma`` with the layer-scale init when the checkpoint
    has none (InternImage-T), and adapts the stem's
    first convolution to ``in_channels != 3`` (timm's rule: sum, or repeat and rescale, the RGB filters).
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
    own = encoder.state_dict()
    gammas = [k for k in own if k.endswith((".gamma1", ".gamma2"))]
    if gammas and not any(k in out for k in gammas):
        out.update({k: own[k].detach().new_ones(own[k].shape) for k in gammas})
    w = out.get("stem.conv1.weight")
    want = own["stem.conv1.weight"].shape[1]
    if w is not None and w.shape[1] == 3 and want != 3:
        from timm.models import adapt_input_conv

        out["stem.conv1.weight"] = adapt_input_conv(want, w)
    return out


def _weights(v: str) -> Weights:
    return Weights(source=f"hf-hub:OpenGVLab/InternImage::internimage_{v}_1k_224.pth", license=_LICENSE,
                   dataset="ImageNet-1k", target="encoder")


def _build(v: str, num_classes: int, in_channels: int, pretrained: bool | str, **kwargs: object) -> nn.Module:
    cfg = _VARIANTS[v]
    encoder = InternImage(in_channels, cfg.channels, cfg.depths, cfg.groups, cfg.mlp_ratio,
                          float(kwargs.pop("drop_path", cfg.drop_path)), cfg.post_norm, cfg.layer_scale)
    if kwargs:
        raise TypeError(f"internimage-{v}-upernet: unexpected options {sorted(kwargs)}")
    net = InternImageUPerNet(encoder, num_classes)
    if pretrained:
        load_pretrained(net, _weights(v), converter=lambda s: convert_official(s, encoder),
                        local=pretrained if isinstance(pretrained, str) else None, ignore=_CLASSIFIER)
    return net


def _register(v: str) -> None:
    cfg = _VARIANTS[v]
    card = ModelCard(
        name=f"internimage-{v}-upernet", family="general", title=f"InternImage-{v.upper()} + UPerNet",
        paper=_PAPER, repo=_REPO, license=_LICENSE, params_paper_m=cfg.params_paper_m, input_divisor=32,
        min_size=32, pretrained={"imagenet": _weights(v)}, gradcam_layer="decode_head.fpn_bottleneck",
        notes="DCNv3 runs as a pure-PyTorch grid_sample core (any device) or, for CUDA inputs, the official compiled "
              "kernel when the DCNv3 extension is installed. Params exclude mmseg's auxiliary FCN head (training "
              "only). Logits at 1/4, upsampled by the wrapper; inputs padded to a multiple of 32.",
    )

    @register_model(card)
    def build(num_classes: int, in_channels: int = 3, pretrained: bool | str = False, **kwargs: object) -> nn.Module:
        return _build(v, num_classes, in_channels, pretrained, **kwargs)


for _v in _VARIANTS:
    _register(_v)
