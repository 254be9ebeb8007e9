"""Grids of runs (models x datasets x folds x seeds), executed one after another.

Fail soft across the grid: a failed run becomes a row with its error; the others go on. Fail loud inside a run.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from typing import Any

from .._errors import RunFailed, SegarenaError
from ..config import DataConfig, ProtocolConfig, RunSpec
from ..data import DATASETS
from ..models import MODELS
from .study import StudySpec


def resolve_pretrained(model: str, pretrained: bool | str) -> bool | str:
    """``"auto"`` (the ``paper`` preset): the card's pretrained weights when ``model`` has them, else from
    scratch; any other value is returned as given."""
    if pretrained == "auto":
        return bool(MODELS.get(model).card.pretrained)
    return pretrained


@dataclass(frozen=True)
class GridSpec:
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    folds: tuple[int, ...] = (0,)
    seeds: tuple[int, ...] = (0,)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``True``, ``False``, a local checkpoint, or ``"auto"`` (per model: pretrained when it has weights)
    pretrained: bool | str = False

    def expand(self) -> list[RunSpec]:
        """The grid's run specs (datasets, then models, folds, seeds). There is one expansion: a grid is a study
        without a learning-rate search, so this is :meth:`~segarena.runner.study.StudySpec.cv_specs` per pair."""
        for m in self.models:
            MODELS.get(m)  # unknown names fail before anything runs
        for ds in self.datasets:
            DATASETS.get(ds)
        study = StudySpec(name="grid", models=tuple(self.models), datasets=tuple(self.datasets),
                          folds=tuple(self.folds), seeds=tuple(self.seeds), protocol=self.protocol, data=self.data,
                          model_overrides={m: {"pretrained": resolve_pretrained(m, self.pretrained),
                                               "kwargs": self.model_kwargs.get(m, {})} for m in self.models})
        return [spec for m, d in study.pairs() for spec in study.cv_specs(m, d)]


@dataclass
class GridRow:
    spec: RunSpec
    state: str  # complete | skipped | failed
    summary: dict[str, Any] | None = None
    error: str | None = None


def run_grid(specs: list[RunSpec], results: str | os.PathLike, *, data_root: str | os.PathLike | None = None,
             device: str | None = None, progress: bool = True, on_row=None) -> list[GridRow]:
    """Run each spec in turn; a failing run is recorded (status.json) and the grid continues."""
    from ..protocol import run

    rows = []
    for i, spec in enumerate(specs):
        if progress:
            # names, not the run id: the id printed before the split exists would not be the run folder's
            print(f"[{i + 1}/{len(specs)}] {spec.model.name} on {spec.data.name}, fold {spec.data.fold}, "
                  f"seed {spec.protocol.seed}", flush=True)
        try:
            res = run(spec, results, data_root=data_root, device=device, progress=progress)
            row = GridRow(spec, "skipped" if res.skipped else "complete", res.summary)
        except (SegarenaError, RunFailed) as exc:
            row = GridRow(spec, "failed", error=str(exc))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - fail soft across the grid; the traceback goes to the run folder
            row = GridRow(spec, "failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
            _save_traceback(results, spec)
        if progress and row.state == "failed":
            print(f"    failed: {row.error}", flush=True)
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def _save_traceback(results, spec: RunSpec) -> None:
    from .._io import write_text
    from ..store import ResultsDir

    try:
        write_text(ResultsDir(results).run(spec).dir / "traceback.txt", traceback.format_exc())
    except Exception:  # noqa: BLE001 - best effort only
        pass
