"""The one training / validation / test protocol."""
from .loop import RunResult, run

__all__ = ["RunResult", "run"]
