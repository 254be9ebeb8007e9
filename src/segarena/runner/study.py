"""Studies: models x datasets x folds x seeds under one protocol, in phases, from a YAML file.

The paper's two phases are first-class: ``lr_search`` trains each (model, dataset) once per candidate learning
rate on one rotation's train folds and picks the rate with the best *validation* score (``evaluate_test: false``:
the test split is never touched), then ``cv`` runs k-fold cross-validation with the chosen rate.

A study file (YAML) serializes :class:`StudySpec`; ``scales`` holds named variants (``smoke``) that replace fields
while keeping the study's shape (phases, LR grid, k-fold CV).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from ..config import DataConfig, ModelConfig, ProtocolConfig, RunSpec, TrackingConfig, from_dict, load_yaml


@dataclass(frozen=True)
class LRSearch:
    lrs: tuple[float, ...] = (1e-4, 5e-5, 1e-5)
    epochs: int = 100
    #: the rotation whose train/validation folds are used for the search
    fold: int = 0


@dataclass(frozen=True)
class StudySpec:
    name: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)
    seeds: tuple[int, ...] = (0,)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    data: DataConfig = field(default_factory=DataConfig)
    #: ``None``: no search, the protocol's lr is used for every model
    lr_search: LRSearch | None = None
    pretrained: bool = False
    #: per-model builder kwargs and protocol overrides, e.g. ``{"segnext-l": {"protocol": {"amp": false}}}``
    model_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per-dataset adapter options / data overrides, e.g. ``{"folder": {"options": {"path": "/data/x"}}}``
    dataset_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: TensorBoard / MLflow loggers: one parent for the study, its runs as children (not part of any run id)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    # -- expansion --------------------------------------------------------------------------------------------
    def _spec(self, model: str, dataset: str, fold: int, seed: int, **proto: Any) -> RunSpec:
        mo = self.model_overrides.get(model, {})
        do = self.dataset_overrides.get(dataset, {})
        protocol = dataclasses.replace(self.protocol, seed=seed, **{**mo.get("protocol", {}), **proto})
        data = dataclasses.replace(self.data, name=dataset, fold=fold, **do)
        return RunSpec(data=data, model=ModelConfig(name=model, pretrained=mo.get("pretrained", self.pretrained),
                                                    kwargs=dict(mo.get("kwargs", {}))), protocol=protocol,
                       tracking=self.tracking)

    def search_specs(self, model: str, dataset: str) -> list[RunSpec]:
        if self.lr_search is None:
            return []
        s = self.lr_search
        return [self._spec(model, dataset, s.fold, self.seeds[0], lr=lr, epochs=s.epochs, evaluate_test=False)
                for lr in s.lrs]

    def cv_specs(self, model: str, dataset: str, lr: float | None = None) -> list[RunSpec]:
        extra = {"lr": lr} if lr is not None else {}
        return [self._spec(model, dataset, f, s, **extra) for f in self.folds for s in self.seeds]

    def pairs(self) -> list[tuple[str, str]]:
        return [(m, d) for d in self.datasets for m in self.models]


def pick_lr(summaries: list[dict[str, Any]], monitor: str = "val_mdsc",
            order: tuple[float, ...] | None = None) -> float:
    """The learning rate whose search run reached the best validation score; ties go to the rate listed first in
    ``order`` (the study's LR grid), so the choice does not depend on which run finished first."""
    if not summaries:
        raise ValueError("no search results")
    sign = 1.0 if monitor == "val_mdsc" else -1.0
    rank = {lr: i for i, lr in enumerate(order or ())}
    best = max(summaries, key=lambda s: (sign * s["best_val"][monitor], -rank.get(s["lr"], 0)))
    return float(best["lr"])


# ---- loading and validation ------------------------------------------------------------------------------
def _problems(raw: dict[str, Any]) -> list[str]:
    """Every problem of a study file, each with its path in the file."""
    from .._paths import name_problem
    from ..data import DATASETS
    from ..data.augment import AUGMENTATIONS
    from ..models import MODELS

    out = []
    if "name" in raw and name_problem(raw["name"]):  # it names the manifest file: never a path
        out.append(f"name: {name_problem(raw['name'])} (use letters, digits, '-', '_' and '.')")
    if isinstance(raw.get("models"), str):  # `models: tiny-fcn` would otherwise be read letter by letter
        out.append(f"models: expected a list, got the string {raw['models']!r} (write models: [{raw['models']}])")
        raw = {**raw, "models": [raw["models"]]}
    if isinstance(raw.get("datasets"), str):
        out.append(f"datasets: expected a list, got the string {raw['datasets']!r} "
                   f"(write datasets: [{raw['datasets']}])")
        raw = {**raw, "datasets": [raw["datasets"]]}
    for i, m in enumerate(raw.get("models") or []):
        if m not in MODELS:
            out.append(f"models[{i}]: {MODELS.unknown_message(str(m))}")
    for i, d in enumerate(raw.get("datasets") or []):
        if d not in DATASETS:
            out.append(f"datasets[{i}]: {DATASETS.unknown_message(str(d))}")
    for key in ("models", "datasets"):
        if not raw.get(key):
            out.append(f"{key}: must list at least one name")
    for key in ("folds", "seeds"):
        for i, v in enumerate(raw.get(key) or []):
            if not isinstance(v, int) or isinstance(v, bool):
                out.append(f"{key}[{i}]: expected an integer, got {v!r}")
    proto = raw.get("protocol") or {}
    if isinstance(proto, dict) and "augmentation" in proto and proto["augmentation"] not in AUGMENTATIONS:
        out.append(f"protocol.augmentation: {AUGMENTATIONS.unknown_message(str(proto['augmentation']))}")
    for m, over in (raw.get("model_overrides") or {}).items():
        if m not in (raw.get("models") or []):
            out.append(f"model_overrides.{m}: not one of the study's models")
        elif not isinstance(over, dict) or set(over) - {"protocol", "kwargs", "pretrained"}:
            out.append(f"model_overrides.{m}: expected a mapping with protocol / kwargs / pretrained")
        elif isinstance(over.get("protocol"), dict):
            for key, v in over["protocol"].items():
                try:
                    from_dict(ProtocolConfig, {key: v}, where=f"model_overrides.{m}.protocol")
                except ConfigError as exc:
                    out.append(str(exc))
    # typed fields: every key of every section is checked, so all problems are reported at once
    for section, cls in (("protocol", ProtocolConfig), ("data", DataConfig), ("lr_search", LRSearch)):
        value = raw.get(section)
        if value is None:
            continue
        if not isinstance(value, dict):
            out.append(f"{section}: expected a mapping, got {value!r}")
            continue
        for key, v in value.items():
            try:
                from_dict(cls, {key: v}, where=section)
            except ConfigError as exc:
                out.append(str(exc))
    folds = raw.get("folds") or []
    k = (raw.get("data") or {}).get("num_folds", 5) if isinstance(raw.get("data"), dict) else 5
    for i, f in enumerate(folds):
        if isinstance(f, int) and not 0 <= f < k:
            out.append(f"folds[{i}]: {f} is out of range for {k} folds")
    return out


def study_from_dict(raw: Any, where: str = "study", scale: str | None = None) -> StudySpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    raw = dict(raw)
    scales = raw.pop("scales", {}) or {}
    if scale:
        if scale not in scales:
            raise ConfigError(f"{where}: no scale {scale!r}", fix=f"available: {', '.join(scales) or 'none'}")
        raw = _merge(raw, scales[scale])
    problems = _problems(raw)
    if problems:
        raise ConfigError(f"{where}: {len(problems)} problem(s): " + "; ".join(problems),
                          fix="correct them in the study file; nothing was run")
    for key in ("model_overrides", "dataset_overrides"):
        raw[key] = raw.get(key) or {}
    for key in ("models", "datasets", "folds", "seeds"):
        if key in raw:
            raw[key] = tuple(raw[key])
    if raw.get("lr_search") is not None and "lrs" in raw["lr_search"]:
        raw["lr_search"] = {**raw["lr_search"], "lrs": tuple(float(x) for x in raw["lr_search"]["lrs"])}
    return from_dict(StudySpec, raw, where=where)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_study(path: str | Path, scale: str | None = None) -> StudySpec:
    return study_from_dict(load_yaml(path), where=str(path), scale=scale)
