"""UPerNet (Xiao et al., ECCV 2018, arXiv:1807.10221) on timm backbones: ConvNeXt-T/S and Swin-T/S.

The recipe is the one the ConvNeXt and Swin papers used for ADE20K in MMSegmentation: the four stage outputs of
an ImageNet-1k backbone, each through its own LayerNorm (the ``norm0..norm3`` of MMSeg's Swin and MMCls' ConvNeXt
backbones), into :class:`~segarena.models.zoo.heads.UPerNetHead` with 512 channels; logits at 1/4 resolution. The
auxiliary FCN head those configs add as a training-only loss is not built: parameter counts are for inference.

Backbones come from timm (``features_only=True``), whose ConvNeXt and Swin follow the official weights. Swin is
built for 512x512 (the protocol size, so every stage - the 16x16 last one included - uses shifted windows as in
MMSeg) with ``strict_img_size=False``: any input size runs, attention masks are built for it on each forward and
windows that do not fit are padded inside the blocks (timm pads after the cyclic shift, MMSeg before it).

:class:`TimmPyramid` and :func:`convert_timm_backbone` are shared with the VWFormer-on-ConvNeXt model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..._errors import SegarenaError
from ..._paths import is_offline
from ..card import ModelCard, Weights, register_model
from ..weights import adapt_first_conv, load_pretrained, strip_prefixes
from .heads import UPerNetHead


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an ``[N, C, H, W]`` map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class TimmPyramid(nn.Module):
    """A timm backbone as four NCHW feature maps (strides 4-32), each followed by its own LayerNorm.

    ``body`` is timm's ``features_only`` network (its state-dict keys are timm's with the first ``.`` of
    ``stem.0``/``stages.0``/``layers.0`` turned into ``_``); ``norms`` are the per-level output norms, which the
    ImageNet checkpoints do not contain (MMSeg initialises them to identity too).
    """

    def __init__(self, timm_name: str, in_channels: int = 3, pretrained: bool = False, out_norm_eps: float = 1e-6,
                 **timm_kwargs) -> None:
        super().__init__()
        import timm

        self.timm_name = timm_name
        self.timm_kwargs = dict(timm_kwargs)
        self.in_channels = in_channels
        self.body = timm.create_model(timm_name, pretrained=pretrained, features_only=True, in_chans=in_channels,
                                      out_indices=(0, 1, 2, 3), **timm_kwargs)
        self.channels: list[int] = list(self.body.feature_info.channels())
        fmt = getattr(self.body, "output_fmt", "NCHW")  # Swin's features are channels-last
        self.nhwc = str(getattr(fmt, "value", fmt)) == "NHWC"
        self.norms = nn.ModuleList(LayerNorm2d(c, eps=out_norm_eps) for c in self.channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        if self.nhwc:
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        return [norm(f) for norm, f in zip(self.norms, feats)]


def convert_timm_backbone(state: dict[str, torch.Tensor], pyramid: TimmPyramid) -> dict[str, torch.Tensor]:
    """An ImageNet checkpoint of ``pyramid``'s backbone -> keys of ``pyramid.body``.

    Accepts timm's own layout and the official releases (facebookresearch/ConvNeXt ``downsample_layers``/
    ``stages``, microsoft/Swin-Transformer with downsampling at the end of each stage) through timm's
    ``checkpoint_filter_fn``; drops the classifier and final norm; adapts the first conv to ``in_channels``.
    """
    import timm

    state = strip_prefixes(state, ("module.", "backbone."))
    ref = timm.create_model(pyramid.timm_name, pretrained=False, in_chans=3, **pyramid.timm_kwargs)
    module = __import__(type(ref).__module__, fromlist=["checkpoint_filter_fn"])
    filt = getattr(module, "checkpoint_filter_fn", None)
    if filt is not None:
        state = filt(state, ref)
    own = set(pyramid.body.state_dict())
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.startswith(("head.", "norm.", "fc_norm.")) or "relative_position_index" in k or "attn_mask" in k:
            continue  # classifier, final norm, non-persistent buffers
        if k not in own:
            k = re.sub(r"^([a-z_]+)\.(\d+)\.", r"\1_\2.", k)  # stem.0.w -> stem_0.w, layers.1.x -> layers_1.x
        out[k] = v
    first = next(k for k in pyramid.body.state_dict() if k.endswith("weight"))
    return adapt_first_conv(out, first, pyramid.in_channels)


def build_pyramid(timm_name: str, in_channels: int, pretrained: bool | str, what: str, **timm_kwargs) -> TimmPyramid:
    """Build a :class:`TimmPyramid`; ``pretrained=True`` downloads through timm's hub code (clear error offline)."""
    use_hub = pretrained is True
    if use_hub and is_offline():
        raise SegarenaError(f"{what} ImageNet weights cannot be downloaded offline",
                            fix="pass a local checkpoint file as pretrained, or unset HF_HUB_OFFLINE")
    try:
        return TimmPyramid(timm_name, in_channels, pretrained=use_hub, **timm_kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if not use_hub:
            raise
        raise SegarenaError(f"{what} ImageNet weights could not be fetched ({type(exc).__name__})",
                            fix="connect once to cache them, or pass a local checkpoint file") from None


class UPerNet(nn.Module):
    """``backbone`` (a :class:`TimmPyramid`) + ``decode_head`` (:class:`UPerNetHead`); logits at 1/4."""

    def __init__(self, backbone: TimmPyramid, num_classes: int, channels: int = 512) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = UPerNetHead(backbone.channels, channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x))


@dataclass(frozen=True)
class _Spec:
    timm_name: str
    tag: str
    drop_path: float
    title: str
    paper: str
    repo: str
    license: str
    swin: bool = False


_CONVNEXT = ("Liu et al., A ConvNet for the 2020s, CVPR 2022, arXiv:2201.03545",
             "https://github.com/facebookresearch/ConvNeXt", "MIT")
_SWIN = ("Liu et al., Swin Transformer: Hierarchical Vision Transformer using Shifted Windows, ICCV 2021, "
         "arXiv:2103.14030", "https://github.com/microsoft/Swin-Transformer", "MIT")
_UPER = "Xiao et al., Unified Perceptual Parsing for Scene Understanding, ECCV 2018, arXiv:1807.10221"

_SPECS = {
    "upernet-convnext-t": _Spec("convnext_tiny", "fb_in1k", 0.4, "ConvNeXt-T", *_CONVNEXT),
    "upernet-convnext-s": _Spec("convnext_small", "fb_in1k", 0.3, "ConvNeXt-S", *_CONVNEXT),
    "upernet-swin-t": _Spec("swin_tiny_patch4_window7_224", "ms_in1k", 0.3, "Swin-T", *_SWIN, swin=True),
    "upernet-swin-s": _Spec("swin_small_patch4_window7_224", "ms_in1k", 0.3, "Swin-S", *_SWIN, swin=True),
}


def timm_weights(timm_name: str, tag: str, license: str) -> Weights:
    return Weights(source=f"hf-hub:timm/{timm_name}.{tag}::model.safetensors", license=license,
                   dataset="ImageNet-1k", target="backbone.body")


def _register(name: str, spec: _Spec) -> None:
    weights = timm_weights(spec.timm_name, spec.tag, spec.license)
    size_note = ("timm Swin built for img_size=512 with strict_img_size=False: any size that is a multiple of 32 "
                 "runs (the wrapper pads to it); windows are padded inside blocks and shift masks rebuilt per size. "
                 if spec.swin else "")
    card = ModelCard(
        name=name, family="general", title=f"UPerNet + {spec.title}",
        paper=f"{_UPER}; backbone: {spec.paper}", repo=f"{spec.repo} (backbone); "
                                                        "https://github.com/open-mmlab/mmsegmentation (UPerNet recipe)",
        license=spec.license, params_paper_m=None, input_divisor=32, pretrained={"imagenet": weights},
        gradcam_layer="decode_head.fpn_bottleneck",
        notes=(f"timm {spec.timm_name}.{spec.tag} backbone (features_only) + per-level LayerNorms + UPerHead "
               f"(512 channels, pool scales 1/2/3/6); logits at 1/4. No auxiliary FCN head. Drop-path "
               f"{spec.drop_path} as in the MMSeg config. {size_note}"
               "Train with batch size >= 2: the 1x1 pyramid-pooling branch has batch norm."),
    )

    @register_model(card)
    def build(num_classes: int, in_channels: int = 3, pretrained: bool | str = False,
              drop_path_rate: float | None = None) -> nn.Module:
        kwargs: dict = {"drop_path_rate": spec.drop_path if drop_path_rate is None else drop_path_rate}
        if spec.swin:
            kwargs.update(img_size=512, strict_img_size=False)
        backbone = build_pyramid(spec.timm_name, in_channels, pretrained, spec.title,
                                 out_norm_eps=1e-5 if spec.swin else 1e-6, **kwargs)
        net = UPerNet(backbone, num_classes)
        if isinstance(pretrained, str):
            load_pretrained(net, weights, lambda s: convert_timm_backbone(s, backbone), local=pretrained)
        return net


for _name, _spec in _SPECS.items():
    _register(_name, _spec)

__all__ = ["LayerNorm2d", "TimmPyramid", "UPerNet", "build_pyramid", "convert_timm_backbone",
                          "timm_weights"]
