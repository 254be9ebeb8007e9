"""Shipped configuration presets (protocols; study files live in the repository's configs/ folder)."""
from __future__ import annotations

from pathlib import Path

from .._errors import ConfigError
from ..config import ProtocolConfig, from_dict, load_yaml

PROTOCOLS = Path(__file__).parent / "protocols"


def protocol_presets() -> list[str]:
    return sorted(p.stem for p in PROTOCOLS.glob("*.yaml"))


def load_protocol(name_or_path: str) -> ProtocolConfig:
    """A shipped preset by name (``paper``, ``cpu-demo``, ``smoke``) or a YAML file of ProtocolConfig fields."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROTOCOLS / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown protocol preset {name_or_path!r}",
                              fix=f"use one of {', '.join(protocol_presets())} or a YAML file")
    return from_dict(ProtocolConfig, load_yaml(path) or {}, where=f"{path.name}")
