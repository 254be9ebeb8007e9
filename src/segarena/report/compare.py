"""``compare``: run a grid of models x datasets x folds x seeds, then build its report -- the one library call
behind ``segarena compare`` and ``segarena demo`` (the demo is a fixed grid, :func:`demo_grid`)."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..runner.grid import GridRow, GridSpec, run_grid
from ..store import ResultsDir
from .build import build_report, leaderboard_text, load_results

#: the demo: U-Net (medical) vs SegFormer-B0 (general-purpose) on Kvasir-SEG, fold 0, the CPU-sized protocol
DEMO_MODELS = ("unet", "segformer-b0")
DEMO_DATASET = "kvasir-seg"
DEMO_PRESET = "cpu-demo"


@dataclass
class Comparison:
    """What a comparison left: one row per run, the printed leaderboard, and the report's files."""
    rows: list[GridRow]
    leaderboard: str
    paths: dict[str, Any]

    @property
    def failed(self) -> list[GridRow]:
        return [r for r in self.rows if r.state == "failed"]


def compare(grid: GridSpec, results: str | os.PathLike, *, data_root: str | os.PathLike | None = None,
            device: str | None = None, progress: bool = True, argv: Sequence[str] | None = None) -> Comparison:
    """Run every spec of ``grid`` (finished runs are reused; a failed run is a row, the others go on), then write
    the report. ``argv``: the command line, logged in ``commands.log`` before the report (which prints it)."""
    rows = run_grid(grid.expand(), results, data_root=data_root, device=device, progress=progress)
    board = leaderboard_text(load_results(results)["runs"])
    if argv is not None:
        ResultsDir(results).log_command(list(argv))
    return Comparison(rows, board, build_report(results))


def demo_grid(overrides: Sequence[str] = ()) -> GridSpec:
    """The demo's grid: :data:`DEMO_MODELS` on :data:`DEMO_DATASET`, fold 0, seed 0, the ``cpu-demo`` preset
    with ``--set`` style ``overrides`` applied on top."""
    from ..config import RunSpec, apply_overrides
    from ..configs import load_preset

    protocol, model_defaults = load_preset(DEMO_PRESET)
    base = RunSpec(protocol=protocol)
    base = dataclasses.replace(base, model=dataclasses.replace(base.model, **model_defaults))
    base = apply_overrides(base, list(overrides))
    return GridSpec(models=DEMO_MODELS, datasets=(DEMO_DATASET,), folds=(0,), seeds=(0,), protocol=base.protocol,
                    data=base.data, pretrained=base.model.pretrained)


__all__ = ["Comparison", "DEMO_MODELS", "compare", "demo_grid"]
