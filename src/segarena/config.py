"""Typed, frozen, serializable configs. A run's identity is the hash of its resolved spec.

``RunSpec`` = ``DataConfig`` + ``ModelConfig`` + ``ProtocolConfig``. YAML/JSON only serialize these classes;
overrides are explicit ``section.key=value`` strings (``--set protocol.lr=5e-5``) checked against the fields.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from ._errors import ConfigError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, which split, which fold."""

    name: str = "kvasir-seg"
    #: where the raw data lies; not part of the run id (moving data must not change results' identity)
    root: str | None = None
    num_folds: int = 5
    #: rotation index: test fold = ``fold``, validation fold = ``fold + 1`` (mod ``num_folds``)
    fold: int = 0
    split_seed: int = 0
    #: use only the first ``limit`` cases (sorted by id) — for smoke runs and demos
    limit: int | None = None
    #: exact/near duplicates: ``group`` keeps each cluster in one fold; ``remove`` keeps one image per cluster
    #: (the paper's curation); either way they are recorded in the split file
    duplicates: Literal["group", "remove"] = "group"
    #: ``kfold``: seeded group-aware folds; ``official``: the dataset's published partition (``meta["fold_<k>"]``)
    split: Literal["kfold", "official"] = "kfold"
    #: adapter options (e.g. ``{"path": ..., "mask_values": {"255": 1}}`` for the ``folder`` adapter)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "unet"
    #: ``True``: the card's official weights (downloaded and cached); a path: a local official checkpoint
    pretrained: bool | str = False
    #: extra keyword arguments of the model builder
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProtocolConfig:
    """The one training/evaluation protocol. Defaults follow Borst & Kounev (2026)."""

    input_size: int = 512
    augmentation: str = "paper"
    #: ``auto``: BCE on one foreground logit for binary tasks, cross-entropy otherwise (as in the paper)
    loss: str = "auto"
    optimizer: Literal["adamw"] = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.01
    schedule: Literal["rex", "constant", "cosine"] = "rex"
    epochs: int = 150
    batch_size: int = 8
    #: stop when the validation metric has not improved for this many epochs (``None``: never)
    patience: int | None = 20
    monitor: Literal["val_mdsc", "val_loss"] = "val_mdsc"
    amp: bool = True
    seed: int = 0
    deterministic: bool = False
    #: ``native``: predictions resampled to each image's original size (default); ``network``: as in the paper
    eval_resolution: Literal["native", "network"] = "native"
    #: cap on optimizer steps per epoch (``None``: full epoch) — for CPU-sized protocols
    max_steps_per_epoch: int | None = None
    grad_clip: float | None = None
    #: normalized surface Dice tolerance, in mm where the dataset gives a pixel spacing, else in pixels
    nsd_tau: float = 2.0
    #: ``False`` for model-selection runs (the learning-rate search): no test evaluation at all
    evaluate_test: bool = True
    # GPU speed levers (see docs/protocol.md, "Speed options"). The first two can change numbers at rounding level
    # (other convolution and fused kernels), so they are part of the run id when on; at their default (off) they
    # are left out of it, so runs named before they existed keep their ids.
    #: model weights and every input batch in channels-last memory format (4-D tensors; faster convolutions on
    #: tensor cores)
    channels_last: bool = False
    #: train through ``torch.compile(model)`` (the default mode); validation, test and the checkpoint use the
    #: uncompiled module, so checkpoints keep their plain keys and test predictions are what ``predict`` gives
    compile: bool = False
    #: copy the prepared uint8 images and masks to the device once and gather every batch there (no per-step
    #: host-to-device copy of the pixels). ``auto``: on CUDA when they fit in a quarter of the free memory, always
    #: on CPU (the arrays are indexed in place); ``True``: required (an error where they do not fit); ``False``:
    #: copy each batch. Never part of the run id: the batches are the same bytes either way (like the device, it
    #: changes no number)
    data_on_device: bool | Literal["auto"] = False


@dataclass(frozen=True)
class TrackingConfig:
    """Where a run's per-epoch numbers also go (besides ``log.json``). Not part of the run id: watching a run
    does not change its results."""

    #: any of ``tensorboard`` (``pip install segarena[tensorboard]``) and ``mlflow`` (``segarena[mlflow]``)
    loggers: tuple[str, ...] = ()
    #: TensorBoard log root (default ``<results>/tensorboard``); each run writes ``<dir>/<study or runs>/<run>``
    dir: str | None = None
    #: MLflow tracking URI (default: the file store ``<results>/mlruns``); ``http://...`` for a server
    mlflow_uri: str | None = None
    experiment: str = "segarena"
    #: set by ``study run``: the study's name and its MLflow parent run (``<study>`` or ``<study>@<run id>``)
    parent: str | None = None


@dataclass(frozen=True)
class RunSpec:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    #: digest of the split this run trains and tests on (the results folder's ``splits/`` file); filled in by
    #: :meth:`segarena.store.ResultsDir.bind`, never by hand. Part of the run id: a changed split is a new run.
    split_digest: str | None = None

    @property
    def run_id(self) -> str:
        return config_hash(self)

    @property
    def run_name(self) -> str:
        """Readable, unique folder name: ``<model>__<dataset>__f<fold>__s<seed>__<hash>``."""
        from ._paths import file_part  # registered names are plain; a plugin's `smp:Unet/x` must not nest folders

        return (f"{file_part(self.model.name, 120)}__{file_part(self.data.name, 120)}__f{self.data.fold}__"
                f"s{self.protocol.seed}__{self.run_id[:10]}")


C = TypeVar("C")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


#: protocol options that change no number of a run (where the batches come from): never part of a run id
EXECUTION_ONLY = ("data_on_device",)
#: protocol options added after run ids were first handed out: left out of the id at these values, so every run
#: named before them keeps its id; set to anything else they are part of it
LATER_OPTIONS = {"channels_last": False, "compile": False}


def identity_dict(spec: RunSpec) -> dict[str, Any]:
    """The part of a spec that defines a run's identity (everything but local paths and execution-only options),
    plus the full parameter list of its augmentation preset: a preset whose operations change gives new run ids
    (``none`` adds nothing)."""
    from ._augment_presets import preset_identity

    d = to_dict(spec)
    d["data"].pop("root", None)
    d.pop("tracking", None)  # loggers watch a run; they do not change its results
    for key in EXECUTION_ONLY:
        d["protocol"].pop(key, None)
    for key, default in LATER_OPTIONS.items():
        if d["protocol"].get(key) == default:
            d["protocol"].pop(key)
    if d.get("split_digest") is None:  # not bound to a split yet: the id of the configuration alone
        d.pop("split_digest", None)
    d["schema"] = SCHEMA_VERSION
    pipeline = preset_identity(spec.protocol.augmentation)
    if pipeline is not None:
        d["protocol"]["augmentation_pipeline"] = pipeline
    return d


def config_hash(spec: RunSpec) -> str:
    blob = json.dumps(identity_dict(spec), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def from_dict(cls: type[C], data: Any, where: str = "") -> C:
    """Build a config dataclass from plain data, strictly: unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}",
                          fix="give key: value pairs here")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            raise ConfigError(f"unknown config key {path!r}" + (f": did you mean {close[0]!r}?" if close else ""),
                              fix=f"valid keys: {', '.join(sorted(names))}")
        kwargs[key] = _coerce(hints[key], value, path)
    return cls(**kwargs)


def spec_from_dict(data: dict[str, Any]) -> RunSpec:
    if not isinstance(data, dict):
        raise ConfigError(f"a run spec must be a mapping of data/model/protocol sections, got {type(data).__name__}",
                          fix="write e.g. `protocol: {epochs: 10}` at the top level")
    data = {k: v for k, v in data.items() if k != "schema"}
    return from_dict(RunSpec, data)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{path}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not allowed", fix=f"use one of {', '.join(map(str, args))}")
        return value
    if origin in (dict,):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}", fix="use e.g. {key: value}")
        return dict(value)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}", fix="use e.g. [a, b]")
        return origin(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}", fix="use true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {value!r}", fix="use a whole number, e.g. 10")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {value!r}", fix="use a number, e.g. 1e-4")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}", fix="quote the value")
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"protocol.lr=5e-5"`` -> (["protocol", "lr"], 5e-05). Values are parsed as YAML scalars."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE", fix="e.g. --set protocol.lr=5e-5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads 1e-4 as a string (it wants 1.0e-4); accept the usual float spelling.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else value
        except ValueError:
            pass
    return key.strip().split("."), value


def apply_overrides(spec: RunSpec, overrides: list[str] | tuple[str, ...]) -> RunSpec:
    """Apply ``section.key=value`` overrides, validating keys and types."""
    data = to_dict(spec)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for i, key in enumerate(keys):
            # free-form mappings: adapter options and model builder kwargs accept new keys
            free = i >= 2 and keys[0] in ("data", "model") and keys[1] in ("options", "kwargs")
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {'.'.join(keys[:i])} has no sub-keys")
            if key not in node and not free:
                _unknown_key(text, keys[: i + 1], node)
            if i == len(keys) - 1:
                node[key] = value
            else:
                node = node.setdefault(key, {}) if free else node[key]
    return spec_from_dict(data)


def _unknown_key(text: str, keys: list[str], node: dict[str, Any]) -> None:
    close = difflib.get_close_matches(keys[-1], list(node), n=1)
    hint = f": did you mean {'.'.join(keys[:-1] + [close[0]])!r}?" if close else ""
    raise ConfigError(f"--set {text!r}: unknown key {'.'.join(keys)!r}{hint}",
                      fix=f"valid keys here: {', '.join(sorted(node))}")


def load_yaml(path: str | Path) -> Any:
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", fix="check the path") from None
    except (IsADirectoryError, UnicodeDecodeError):
        raise ConfigError(f"config file {path} is not a YAML text file", fix="pass a .yaml file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}",
                          fix="check the indentation, colons and brackets there") from None


def dump_yaml(cfg: Any) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg, sort_keys=False)
