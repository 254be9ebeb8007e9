"""segarena: which segmentation architecture should we use for our 2D medical images? — answered with evidence."""
from __future__ import annotations

from ._errors import ConfigError, DataError, SegarenaError
from .config import DataConfig, ModelConfig, ProtocolConfig, RunSpec

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataConfig", "DataError", "ModelConfig", "ProtocolConfig", "RunSpec", "SegarenaError",
           "TrainedModel", "__version__", "load_trained"]

_LAZY = {"load_trained": "inference", "TrainedModel": "inference"}  # imported on first use: they pull in torch


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'segarena' has no attribute {name!r}")
