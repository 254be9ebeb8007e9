"""Model zoo: registry, cards, the ``SegModel`` contract, and weight loading."""
from __future__ import annotations

from typing import Any

import torch

from .._errors import ConfigError
from . import zoo  # noqa: F401  (registers the models)
from .card import ENTRY_POINT_GROUP, MODELS, PLUGIN_ERRORS, ModelCard, ModelEntry, Weights, load_plugins, register_model
from .contract import SegModel

load_plugins()  # models of installed packages (entry-point group ``segarena.models``)

__all__ = ["ENTRY_POINT_GROUP", "MODELS", "ModelCard", "ModelEntry", "PLUGIN_ERRORS", "SegModel", "Weights",
           "create_model", "list_models", "load_plugins", "count_params", "count_flops", "model_info",
           "register_model"]


def list_models(family: str | None = None) -> list[str]:
    return [n for n, e in MODELS.items() if family is None or e.card.family == family]


def create_model(name: str, num_classes: int, in_channels: int = 3, pretrained: bool | str = False,
                 **kwargs: Any) -> SegModel:
    """Build a registered model wrapped in the contract. ``num_classes`` is the number of output logits
    (1 for a binary task trained with BCE). ``pretrained`` may be ``True`` (default tag) or a local file."""
    entry = MODELS.get(name)
    if in_channels not in entry.card.in_channels:
        raise ConfigError(f"model {name!r} takes {entry.card.in_channels} input channels, not {in_channels}",
                          fix="convert the images or choose another model")
    if pretrained and not entry.card.pretrained:
        raise ConfigError(f"model {name!r} has no pretrained weights", fix="use --set model.pretrained=false")
    try:
        net = entry.build(num_classes=num_classes, in_channels=in_channels, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ConfigError(f"model {name!r}: {exc}".replace("build() ", ""),
                              fix="check the model.kwargs overrides") from None
        raise
    return SegModel(net, entry.card, num_classes, in_channels)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: torch.nn.Module, size: int = 512, in_channels: int = 3, device: str = "cpu") -> int:
    """Forward FLOPs for one image (PyTorch's own counter: convolutions, matmuls and attention included).

    ``device="meta"`` (the model built on the meta device) counts from shapes alone, without computing. The one
    counter is :func:`segarena.metrics.efficiency.count_flops`; this only builds the input and sets eval mode."""
    from ..metrics.efficiency import count_flops as _count

    was_training = model.training
    model.eval()
    try:
        return _count(model, torch.zeros(1, in_channels, size, size, device=device))
    finally:
        model.train(was_training)


def model_info(name: str, num_classes: int = 2, size: int | None = 512, in_channels: int = 3) -> dict[str, Any]:
    """Card + parameter count (+ FLOPs at ``size``) of a registered model."""
    entry = MODELS.get(name)
    out_ch = 1 if num_classes == 2 else num_classes
    info = entry.card.to_dict()
    try:  # on the meta device: no weights allocated or initialised, no arithmetic done (seconds, not a minute)
        with torch.device("meta"):
            model = create_model(name, out_ch, in_channels=in_channels)
        info["params"] = count_params(model)
        if size:
            flops = count_flops(model, size, in_channels, device="meta")
        info["flops_counted_on"] = "meta"
    except Exception:  # noqa: BLE001 - an op without a meta kernel (or a data-dependent shape): count for real
        model = create_model(name, out_ch, in_channels=in_channels)
        info["params"] = count_params(model)
        if size:
            flops = count_flops(model, size, in_channels)
        info["flops_counted_on"] = "cpu"
    if size:
        info.update(input_size=size, flops=flops, macs=flops // 2)
    return info
