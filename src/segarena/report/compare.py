"""``compare``: run a grid of models x datasets x folds x seeds, then build its report -- the one library call
behind ``segarena compare`` and ``segarena demo`` (the demo is a fixed set of runs,
:func:`segarena.demo.demo_specs`)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import RunSpec
from ..runner.grid import GridRow, GridSpec, run_grid
from ..store import ResultsDir
from .build import build_report, leaderboard_text, load_results


@dataclass
class Comparison:
    """What a comparison left: one row per run, the printed leaderboard, and the report's files."""
    rows: list[GridRow]
    leaderboard: str
    paths: dict[str, Any]

    @property
    def failed(self) -> list[GridRow]:
        return [r for r in self.rows if r.state == "failed"]


def compare(grid: GridSpec | Sequence[RunSpec], results: str | os.PathLike, *,
            data_root: str | os.PathLike | None = None, device: str | None = None, progress: bool = True,
            argv: Sequence[str] | None = None) -> Comparison:
    """Run every spec of ``grid`` (a :class:`GridSpec`, or run specs; finished runs are reused; a failed run is a
    row, the others go on), then write the report. ``argv``: the command line, logged in ``commands.log`` before
    the report (which prints it)."""
    specs = grid.expand() if isinstance(grid, GridSpec) else list(grid)
    rows = run_grid(specs, results, data_root=data_root, device=device, progress=progress)
    board = leaderboard_text(load_results(results)["runs"])
    if argv is not None:
        ResultsDir(results).log_command(list(argv))
    return Comparison(rows, board, build_report(results))


__all__ = ["Comparison", "compare"]
