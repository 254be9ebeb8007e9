"""Shipped configuration presets (protocols; study files live in the repository's configs/ folder)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .._errors import ConfigError
from ..config import ProtocolConfig, from_dict, load_yaml

PROTOCOLS = Path(__file__).parent / "protocols"


def protocol_presets() -> list[str]:
    return sorted(p.stem for p in PROTOCOLS.glob("*.yaml"))


def load_protocol(name_or_path: str) -> ProtocolConfig:
    """A shipped preset by name (``paper``, ``cpu-demo``, ``smoke``) or a YAML file of ProtocolConfig fields."""
    return load_preset(name_or_path)[0]


def load_preset(name_or_path: str) -> tuple[ProtocolConfig, dict[str, Any]]:
    """A preset's protocol and its model defaults (the optional ``model:`` section, e.g. ``pretrained: auto``
    in ``paper``: the card's ImageNet weights for every model that has them, from scratch for the others)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROTOCOLS / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown protocol preset {name_or_path!r}",
                              fix=f"use one of {', '.join(protocol_presets())} or a YAML file")
    raw = load_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name}: expected a mapping of protocol fields", fix="write e.g. `epochs: 10`")
    raw = dict(raw)
    model = raw.pop("model", None) or {}
    if not isinstance(model, dict) or set(model) - {"pretrained"}:
        raise ConfigError(f"{path.name}: model: expected a mapping with pretrained only",
                          fix="write e.g. `model: {pretrained: auto}`")
    return from_dict(ProtocolConfig, raw, where=f"{path.name}"), model
