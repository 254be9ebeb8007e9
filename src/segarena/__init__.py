"""segarena: which segmentation architecture should we use for our 2D medical images? — answered with evidence."""
from __future__ import annotations

from ._errors import ConfigError, DataError, SegarenaError
from .config import DataConfig, ModelConfig, ProtocolConfig, RunSpec

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataConfig", "DataError", "ModelConfig", "ProtocolConfig", "RunSpec", "SegarenaError",
           "__version__"]
