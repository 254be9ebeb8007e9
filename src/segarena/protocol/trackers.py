"""Optional experiment trackers: TensorBoard and MLflow, chosen by ``tracking.loggers`` in the run spec.

Per epoch a run logs its training loss, validation loss and mDSC, learning rate, throughput (training images per
second) and epoch time; at the end its test metrics. ``log.json`` stays the record of truth; trackers only mirror
it, so they are not part of the run id. A study opens one parent (an MLflow parent run; a TensorBoard folder named
after the study) and each of its runs becomes a child.

Both libraries are optional extras, imported only when a logger is asked for:
``pip install segarena[tensorboard]`` (``torch.utils.tensorboard`` needs the ``tensorboard`` package) and
``pip install segarena[mlflow]``. MLflow's default store here is the file store ``<results>/mlruns``
(``mlflow ui --backend-store-uri <results>/mlruns``); MLflow 3 keeps it in maintenance mode behind
``MLFLOW_ALLOW_FILE_STORE``, which segarena sets for file URIs only. A tracker that fails while a run trains
is disabled with one warning: watching must never lose a run.
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from ..config import RunSpec, TrackingConfig, to_dict

LOGGERS = ("tensorboard", "mlflow")


def check_tracking(cfg: TrackingConfig) -> None:
    """Unknown logger names and missing packages are user errors, reported before anything runs."""
    import importlib.util

    for name in cfg.loggers:
        if name not in LOGGERS:
            raise ConfigError(f"tracking.loggers: unknown logger {name!r}", fix=f"use any of {', '.join(LOGGERS)}")
        module = "tensorboard" if name == "tensorboard" else "mlflow"
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"tracking.loggers: {name} needs the package {module}",
                              fix=f"pip install segarena[{name}]")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out |= _flat(v, key + ".")
        else:
            out[key] = str(v)[:500]
    return out


def _mlflow_uri(cfg: TrackingConfig, results: Path) -> str:
    uri = cfg.mlflow_uri or str(results / "mlruns")
    if "://" not in uri and not uri.startswith("file:"):
        uri = Path(uri).expanduser().resolve().as_uri()
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def _mlflow_client(cfg: TrackingConfig, results: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=_mlflow_uri(cfg, results))
    exp = client.get_experiment_by_name(cfg.experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(cfg.experiment)
    return client, exp_id


class _TensorBoard:
    def __init__(self, spec: RunSpec, results: Path, start_epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        group = (spec.tracking.parent or "runs").split("@")[0]
        root = Path(spec.tracking.dir).expanduser() if spec.tracking.dir else results / "tensorboard"
        self.folder = root / group / spec.run_name
        # purge_step: a resumed run rewrites the epochs after its last saved state instead of duplicating them
        self.writer = SummaryWriter(str(self.folder), purge_step=start_epoch or None)
        if not start_epoch:
            self.writer.add_text("spec", "```\n" + "\n".join(f"{k}: {v}" for k, v in _flat(to_dict(spec)).items())
                                 + "\n```", 0)

    def epoch(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def final(self, metrics: dict[str, float], step: int) -> None:
        self.epoch(step, metrics)

    def close(self, status: str) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, spec: RunSpec, results: Path, store_dir: Path) -> None:
        from mlflow.entities import Param

        from .._io import read_json, write_json

        self.client, exp_id = _mlflow_client(spec.tracking, results)
        marker = store_dir / "mlflow.json"
        previous = read_json(marker) if marker.is_file() else {}
        if previous.get("run_id") and previous.get("uri") == _mlflow_uri(spec.tracking, results):
            self.run_id = previous["run_id"]  # a resumed run continues its MLflow run
            self.client.update_run(self.run_id, status="RUNNING")
            return
        parent = spec.tracking.parent or ""
        tags = {"mlflow.runName": spec.run_name, "segarena.run_id": spec.run_id, "segarena.model": spec.model.name,
                "segarena.dataset": spec.data.name}
        if "@" in parent:
            tags |= {"mlflow.parentRunId": parent.split("@", 1)[1], "segarena.study": parent.split("@", 1)[0]}
        run = self.client.create_run(exp_id, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, v) for k, v in _flat(to_dict(spec)).items() if not k.startswith("tracking.")]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        write_json(marker, {"run_id": self.run_id, "uri": _mlflow_uri(spec.tracking, results)})

    def epoch(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def final(self, metrics: dict[str, float], step: int) -> None:
        self.epoch(step, metrics)

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


class RunTracker:
    """The loggers of one run. ``epoch``/``final`` never raise: a failing logger is dropped with a warning."""

    def __init__(self, spec: RunSpec, store_dir: Path, start_epoch: int = 0) -> None:
        check_tracking(spec.tracking)
        results = Path(store_dir).parent.parent
        self.backends: dict[str, Any] = {}
        for name in spec.tracking.loggers:
            self.backends[name] = (_TensorBoard(spec, results, start_epoch) if name == "tensorboard"
                                   else _MLflow(spec, results, Path(store_dir)))

    def _each(self, method: str, *args: Any) -> None:
        for name, backend in list(self.backends.items()):
            try:
                getattr(backend, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a tracker must never stop a run
                warnings.warn(f"tracking: {name} disabled after an error ({type(exc).__name__}: {exc})",
                              stacklevel=2)
                self.backends.pop(name)

    def epoch(self, entry: dict[str, Any], batch_size: int) -> None:
        """One ``log.json`` entry -> the scalars every tracker shows (step = epoch)."""
        train_s = entry.get("train_seconds") or 0.0
        metrics = {"train/loss": entry["train_loss"], "val/loss": entry["val_loss"], "val/mdsc": entry["val_mdsc"],
                   "lr": entry["lr"], "time/epoch_seconds": entry["seconds"]}
        if train_s > 0:
            metrics["throughput/train_images_per_second"] = entry["steps"] * batch_size / train_s
        self._each("epoch", int(entry["epoch"]), metrics)

    def final(self, summary: dict[str, Any]) -> None:
        metrics = {f"test/{k}": float(v) for k, v in (summary.get("metrics") or {}).items()
                   if isinstance(v, (int, float)) and v == v}
        metrics["best_epoch"] = float(summary.get("best_epoch", -1))
        self._each("final", metrics, int(summary.get("epochs_run", 0)))

    def close(self, status: str = "FINISHED") -> None:
        self._each("close", status)


def open_run_tracker(spec: RunSpec, store_dir: Path, start_epoch: int = 0) -> RunTracker | None:
    return RunTracker(spec, store_dir, start_epoch) if spec.tracking.loggers else None


class StudyTracker:
    """The parent of a study's runs: an MLflow parent run (its id is handed to every child run through
    ``tracking.parent``) and the TensorBoard folder ``<dir>/<study>``; at the end, the study's outcome."""

    def __init__(self, cfg: TrackingConfig, name: str, results: Path) -> None:
        check_tracking(cfg)
        self.cfg, self.name, self.parent = cfg, name, name
        self.client = self.run_id = None
        if "mlflow" in cfg.loggers:
            self.client, exp_id = _mlflow_client(cfg, Path(results))
            run = self.client.create_run(exp_id, tags={"mlflow.runName": f"study {name}", "segarena.study": name})
            self.run_id = run.info.run_id
            self.parent = f"{name}@{self.run_id}"

    def child(self, spec: RunSpec) -> RunSpec:
        """``spec`` as handed to a worker: same identity, its tracking pointing at this parent."""
        import dataclasses

        return dataclasses.replace(spec, tracking=dataclasses.replace(self.cfg, parent=self.parent))

    def finish(self, summaries: list[dict[str, Any]], failed: int, chosen_lr: dict[str, float]) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        per_model: dict[str, list[float]] = {}
        for s in summaries:
            mdsc = (s.get("metrics") or {}).get("mdsc")
            if mdsc is not None and not s.get("validation_only"):
                per_model.setdefault(s["model"], []).append(float(mdsc))
        metrics = [Metric("runs_complete", float(len(summaries)), now, 0), Metric("runs_failed", float(failed), now, 0)]
        metrics += [Metric(f"test_mdsc_mean/{m}", sum(v) / len(v), now, 0) for m, v in per_model.items()]
        params = [Param(f"chosen_lr/{k.replace('|', '/')}", f"{v:g}") for k, v in chosen_lr.items()]
        self.client.log_batch(self.run_id, metrics=metrics, params=params)
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


__all__ = ["LOGGERS", "RunTracker", "StudyTracker", "check_tracking", "open_run_tracker"]
