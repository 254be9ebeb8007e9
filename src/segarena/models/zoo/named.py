"""Library models picked by name, with cards generated from the library's own metadata.

``smp:<Arch>:<encoder>``
    any architecture of segmentation_models_pytorch (``Unet``, ``UnetPlusPlus``, ``FPN``, ``DeepLabV3Plus``,
    ``UPerNet``, ...; case-insensitive) on any of its encoders (``resnet34``, ``efficientnet-b0``, ``mit_b2``) or
    on a timm backbone through smp's universal encoder (``tu-<timm name>``). The card takes the paper link from the
    architecture's docstring, the encoder's output channels and ImageNet weights from smp's encoder table, the
    normalization from timm's pretrained config where the encoder is a timm one. ``model.kwargs`` go to smp's
    constructor (``decoder_channels``, ``encoder_depth``, ...).
``upernet:timm:<name>``
    a timm backbone (``features_only``, four stages at strides 4-32) under segarena's UPerNet head, the recipe of
    the ``upernet-convnext-t`` model; the card takes license, weights, paper and normalization from timm's
    pretrained config.

Names are resolved on first use (:meth:`segarena._registry.Registry.add_resolver`), so ``segarena models list``
imports neither library; a name that cannot be built is a user error naming the closest valid choices.
"""
from __future__ import annotations

import difflib
import re
from typing import Any

import torch.nn as nn

from ..._errors import ConfigError, SegarenaError
from ..._paths import is_offline
from ..card import MODELS, ModelCard, ModelEntry, Weights

SMP_REPO = "https://github.com/qubvel-org/segmentation_models.pytorch"
#: smp architectures designed for medical images (the rest are general-purpose designs)
_MEDICAL = {"unet", "unetplusplus", "manet"}
#: smp's output stride of each architecture's encoder (DeepLab keeps 1/8 and upsamples itself)
_DIVISOR = {"deeplabv3": 8, "deeplabv3plus": 16}


def _close(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    return f"did you mean {', '.join(close)}?" if close else f"e.g. {', '.join(sorted(options)[:8])}"


def _timm_cfg(name: str) -> dict[str, Any]:
    """timm's pretrained config of ``name`` (default tag), as a dict; empty when timm has none."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False) if hasattr(timm.models,
                                                                                   "get_pretrained_cfg") else None
    return cfg.to_dict() if cfg is not None else {}


def _check_timm_name(name: str, what: str) -> None:
    import timm

    if not timm.is_model(name.split(".")[0]):
        raise ConfigError(f"{what}: timm has no model {name!r}: {_close(name, timm.list_models())}",
                          fix="list them with timm.list_models()")


def _first_doc_link(cls: type) -> str:
    links = re.findall(r"https?://[^\s)>`]+", cls.__doc__ or "")
    papers = [u.rstrip(".,") for u in links if "arxiv.org" in u or "ieee" in u] or links
    return papers[-1].rstrip(".,") if papers else ""


# ---- smp:<Arch>:<encoder> ----------------------------------------------------------------------------------
def _resolve_smp(name: str) -> ModelEntry:
    parts = name.split(":")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise ConfigError(f"model {name!r}: expected smp:<Arch>:<encoder>", fix="e.g. smp:Unet:resnet34")
    import segmentation_models_pytorch as smp
    from segmentation_models_pytorch.encoders import encoders as smp_encoders

    arch_key, encoder = parts[1].lower(), parts[2]
    archs = smp.MODEL_ARCHITECTURES_MAPPING
    if arch_key not in archs:
        names = [c.__name__ for c in archs.values()]
        raise ConfigError(f"model {name!r}: smp has no architecture {parts[1]!r}: {_close(parts[1], names)}",
                          fix=f"use one of {', '.join(names)}")
    cls = archs[arch_key]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pretrained: dict[str, Weights] = {}
    if encoder.startswith("tu-"):
        timm_name = encoder[3:]
        _check_timm_name(timm_name, f"model {name!r}")
        cfg = _timm_cfg(timm_name)
        mean, std = tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))
        if cfg.get("hf_hub_id") or cfg.get("url"):
            pretrained["imagenet"] = Weights(source=f"library:timm/{cfg.get('hf_hub_id') or cfg.get('url')}",
                                             license=cfg.get("license") or "see the timm model card",
                                             mean=mean, std=std)
        encoder_note = f"timm {timm_name} through smp's universal encoder"
    else:
        if encoder not in smp_encoders:
            raise ConfigError(f"model {name!r}: smp has no encoder {encoder!r}: {_close(encoder, list(smp_encoders))}",
                              fix="or use a timm backbone as tu-<timm name>")
        settings = smp_encoders[encoder].get("pretrained_settings", {})
        for tag, st in settings.items():
            where = st.get("repo_id") or st.get("url") or tag
            pretrained[tag] = Weights(source=f"library:smp/{where}", license="see the encoder's source (smp docs)",
                                      dataset="ImageNet-1k" if tag == "imagenet" else tag,
                                      mean=tuple(st["mean"]) if "mean" in st else None,
                                      std=tuple(st["std"]) if "std" in st else None)
        channels = smp_encoders[encoder].get("params", {}).get("out_channels")
        encoder_note = f"smp encoder {encoder}" + (f" (stage channels {list(channels)})" if channels else "")
    divisor = _DIVISOR.get(arch_key, 32)
    card = ModelCard(
        name=name, family="medical" if arch_key in _MEDICAL else "general",
        title=f"{cls.__name__} + {encoder} (segmentation_models_pytorch)",
        paper=f"{cls.__name__}: {_first_doc_link(cls) or 'see the smp documentation'}",
        repo=SMP_REPO, license="MIT (smp code); encoder weights: their own licenses", input_divisor=divisor,
        pretrained=pretrained, gradcam_layer="decoder", mean=mean, std=std,
        notes=f"Built by name with smp {smp.__version__}: {cls.__name__} on the {encoder_note}; card generated from "
              "smp's architecture docstring and encoder table. Normalization: ImageNet (smp encoders) or the timm "
              "pretrained config (tu- encoders).",
    )

    def build(num_classes: int, in_channels: int = 3, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
        if isinstance(pretrained, str):
            raise ConfigError(f"model {name!r}: local checkpoint files are not supported for smp models by name",
                              fix="use model.pretrained=true (smp's hub download) or false")
        if pretrained is True and is_offline():
            raise SegarenaError(f"model {name!r}: encoder weights cannot be downloaded offline",
                                fix="unset HF_HUB_OFFLINE/SEGARENA_OFFLINE once to cache them, or pretrained=false")
        try:
            return smp.create_model(arch_key, encoder_name=encoder, encoder_weights="imagenet" if pretrained else None,
                                    in_channels=in_channels, classes=num_classes, **kwargs)
        except (KeyError, ValueError, AssertionError) as exc:
            raise ConfigError(f"model {name!r} cannot be built: {(str(exc).splitlines() or [repr(exc)])[0]}",
                              fix="check model.kwargs and that the encoder supports this architecture") from None

    return ModelEntry(card=card, build=build, origin="library")


# ---- upernet:timm:<name> -----------------------------------------------------------------------------------
def _resolve_upernet_timm(name: str) -> ModelEntry:
    timm_name = name[len("upernet:timm:"):]
    if not timm_name:
        raise ConfigError(f"model {name!r}: expected upernet:timm:<timm model name>",
                          fix="e.g. upernet:timm:convnext_tiny or upernet:timm:resnet50")
    _check_timm_name(timm_name, f"model {name!r}")
    from .upernet import UPerNet, build_pyramid

    cfg = _timm_cfg(timm_name)
    hub = cfg.get("hf_hub_id")
    paper = cfg.get("paper_ids") or cfg.get("paper_name") or cfg.get("origin_url") or "see the timm model card"
    card = ModelCard(
        name=name, family="general", title=f"UPerNet + {timm_name} (timm backbone)",
        paper=f"Xiao et al., Unified Perceptual Parsing for Scene Understanding, ECCV 2018, arXiv:1807.10221; "
              f"backbone: {paper}",
        repo=f"{cfg.get('origin_url') or 'https://github.com/huggingface/pytorch-image-models'} (backbone, timm)",
        license=cfg.get("license") or "see the timm model card", input_divisor=32,
        pretrained={"imagenet": Weights(source=f"library:timm/{hub or timm_name}",
                                        license=cfg.get("license") or "see the timm model card",
                                        target="backbone.body")} if (hub or cfg.get("url")) else {},
        gradcam_layer="decode_head.fpn_bottleneck", mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        notes=f"Built by name: timm {timm_name} (features_only, stages at strides 4-32, per-level LayerNorms) + "
              "segarena's UPerHead (512 channels); card from timm's pretrained config. Train with batch size >= 2.",
    )

    def build(num_classes: int, in_channels: int = 3, pretrained: bool | str = False, channels: int = 512,
              **timm_kwargs: Any) -> nn.Module:
        if isinstance(pretrained, str):
            raise ConfigError(f"model {name!r}: local checkpoint files are not supported for timm models by name",
                              fix="use model.pretrained=true (timm's hub download) or false")
        try:
            backbone = build_pyramid(timm_name, in_channels, pretrained, timm_name, **timm_kwargs)
        except (RuntimeError, TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, SegarenaError):
                raise
            raise ConfigError(f"model {name!r}: timm {timm_name} cannot give four feature stages "
                              f"({(str(exc).splitlines() or [type(exc).__name__])[0]})",
                              fix="choose a hierarchical backbone (ResNet, ConvNeXt, Swin, EfficientNet, ...)") from None
        return UPerNet(backbone, num_classes, channels=channels)

    return ModelEntry(card=card, build=build, origin="library")


MODELS.add_resolver("smp:", _resolve_smp, "smp:<Arch>:<encoder>", examples=("smp:Unet:resnet18",
                                                                          "smp:FPN:tu-resnet18"))
MODELS.add_resolver("upernet:timm:", _resolve_upernet_timm, "upernet:timm:<timm name>",
                    examples=("upernet:timm:resnet18",))
