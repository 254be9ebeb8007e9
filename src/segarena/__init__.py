"""segarena: which segmentation architecture should we use for our 2D medical images? — answered with evidence.

The public API is small; heavy parts are imported on first use::

    from segarena import RunSpec, DataConfig, ModelConfig, ProtocolConfig, run, create_model, build_report

Your own model: ``@segarena.register_model(segarena.ModelCard(...))`` on its builder, or an installed package's
entry point in the group ``segarena.models`` (docs/models/your-own-model.md).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import ConfigError, DataError, RunFailed, SegarenaError
from .config import DataConfig, ModelConfig, ProtocolConfig, RunSpec

from ._version import __version__

__all__ = ["ConfigError", "DataConfig", "DataError", "ModelCard", "ModelConfig", "ProtocolConfig", "RunFailed",
           "RunSpec", "SegarenaError", "TrainedModel", "Weights", "__version__", "build_report", "create_model",
           "evaluate_folders", "list_models", "load_study", "load_trained", "register_model", "run", "run_study",
           "select"]

#: name -> module, imported on first use (they pull in torch and the model zoo)
_LAZY = {"load_trained": "inference", "TrainedModel": "inference", "run": "protocol", "create_model": "models",
         "list_models": "models", "build_report": "report", "load_study": "runner.study",
         "run_study": "runner.study_runner", "select": "runner.select", "evaluate_folders": "evaluate",
         "register_model": "models", "ModelCard": "models", "Weights": "models"}

if TYPE_CHECKING:  # pragma: no cover
    from .evaluate import evaluate_folders
    from .inference import TrainedModel, load_trained
    from .models import ModelCard, Weights, create_model, list_models, register_model
    from .protocol import run
    from .report import build_report
    from .runner.select import select
    from .runner.study import load_study
    from .runner.study_runner import run_study


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'segarena' has no attribute {name!r}")
