"""Results store and grid execution."""
from .store import ResultsDir, RunStore

__all__ = ["ResultsDir", "RunStore"]
