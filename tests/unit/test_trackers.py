"""TensorBoard and MLflow loggers, chosen by config: per epoch and per study (one parent, child runs), read back
with TensorBoard's own event reader and MLflow's own client on its file store; they never change a run's id."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec
from segarena.cli import main
from segarena.config import TrackingConfig
from segarena.protocol import run

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


def _data(root: Path, n: int = 9) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        m = np.zeros((32, 32), np.uint8)
        y, x = rng.integers(4, 16, 2)
        m[y:y + 12, x:x + 12] = 255
        img = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
        img[m > 0] += 150
        Image.fromarray(img).save(root / "images" / f"c{i}.png")
        Image.fromarray(m).save(root / "masks" / f"c{i}.png")
    return root


def _spec(data: Path, loggers=(), model="tiny-fcn", **tracking) -> RunSpec:
    return RunSpec(data=DataConfig(name="folder", num_folds=3, options={"path": str(data)}),
                   model=ModelConfig(name=model),
                   protocol=ProtocolConfig(input_size=32, epochs=3, batch_size=2, max_steps_per_epoch=2,
                                           augmentation="light", amp=False, lr=1e-2, patience=None),
                   tracking=TrackingConfig(loggers=tuple(loggers), **tracking))


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _client(uri: Path):
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri.resolve().as_uri())


def test_tracking_does_not_change_the_run_id(tmp_path):
    plain = _spec(tmp_path)
    tracked = _spec(tmp_path, ("tensorboard", "mlflow"), dir="/elsewhere", experiment="lab")
    assert plain.run_id == tracked.run_id and plain.run_name == tracked.run_name


def test_unknown_logger_is_a_one_line_error(capsys):
    assert main(["config", "show", "--set", "tracking.loggers=[wandb]"]) == 2
    err = capsys.readouterr().err
    assert "unknown logger 'wandb'" in err and "tensorboard, mlflow" in err and err.count("\n") == 1


@pytest.mark.slow
def test_run_logs_every_epoch_to_tensorboard_and_mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGARENA_CACHE", str(tmp_path / "cache"))
    spec = _spec(_data(tmp_path / "d"), ("tensorboard", "mlflow"))
    res = run(spec, tmp_path / "r", device="cpu")
    log = res.store.log()
    assert len(log) == 3
    tb = _scalars(tmp_path / "r" / "tensorboard" / "runs" / res.store.dir.name)
    for tag, key in (("val/mdsc", "val_mdsc"), ("train/loss", "train_loss"), ("val/loss", "val_loss"),
                     ("lr", "lr")):
        assert [s for s, _ in tb[tag]] == [0, 1, 2]
        assert np.allclose([v for _, v in tb[tag]], [e[key] for e in log], rtol=1e-6), tag
    assert all(v > 0 for _, v in tb["throughput/train_images_per_second"])
    assert np.isclose(tb["test/mdsc"][0][1], res.summary["metrics"]["mdsc"], rtol=1e-6)

    client = _client(tmp_path / "r" / "mlruns")
    exp = client.get_experiment_by_name("segarena")
    (mrun,) = client.search_runs([exp.experiment_id])
    bound = res.store.spec  # the spec bound to its split: the run id it was stored under
    assert mrun.info.run_name == bound.run_name == res.store.dir.name and mrun.info.status == "FINISHED"
    assert mrun.data.tags["segarena.run_id"] == bound.run_id
    assert mrun.data.params["model.name"] == "tiny-fcn" and mrun.data.params["protocol.augmentation"] == "light"
    hist = client.get_metric_history(mrun.info.run_id, "val/mdsc")
    assert [(m.step, m.value) for m in sorted(hist, key=lambda m: m.step)] == \
        [(e["epoch"], pytest.approx(e["val_mdsc"])) for e in log]
    assert mrun.data.metrics["test/mdsc"] == pytest.approx(res.summary["metrics"]["mdsc"])
    assert len(client.get_metric_history(mrun.info.run_id, "throughput/train_images_per_second")) == 3


@pytest.mark.slow
def test_study_has_one_parent_and_its_runs_as_children(tmp_path, monkeypatch):
    from segarena.runner.study import study_from_dict
    from segarena.runner.study_runner import run_study
    from segarena.store import ResultsDir

    monkeypatch.setenv("SEGARENA_CACHE", str(tmp_path / "cache"))
    data = _data(tmp_path / "d")
    raw = {"name": "lab", "models": ["tiny-fcn", "tiny-unet"], "datasets": ["folder"], "folds": [0],
           "data": {"num_folds": 3, "options": {"path": str(data)}},
           "protocol": {"input_size": 32, "epochs": 2, "batch_size": 2, "max_steps_per_epoch": 1, "patience": None,
                        "amp": False, "augmentation": "none"},
           "tracking": {"loggers": ["tensorboard", "mlflow"], "experiment": "lab-study"}}
    study = study_from_dict(raw)
    out = run_study(study, tmp_path / "r", workers=1, progress=False)
    assert not out.failed and len(out.results) == 2
    client = _client(tmp_path / "r" / "mlruns")
    exp = client.get_experiment_by_name("lab-study")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == "study lab" and parents[0].info.status == "FINISHED"
    assert len(children) == 2 and {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert parents[0].data.metrics["runs_complete"] == 2
    assert set(parents[0].data.metrics) >= {"test_mdsc_mean/tiny-fcn", "test_mdsc_mean/tiny-unet"}
    names = {p.name for p in (tmp_path / "r" / "tensorboard" / "lab").iterdir()}
    assert names == {d.name for d in (tmp_path / "r" / "runs").iterdir()}  # one TensorBoard folder per child
    for folder in (tmp_path / "r" / "tensorboard" / "lab").iterdir():
        assert [s for s, _ in _scalars(folder)["val/mdsc"]] == [0, 1]
    # the run ids are the study's own, untouched by tracking
    assert {d.name for d in (tmp_path / "r" / "runs").iterdir()} == \
        {ResultsDir(tmp_path / "r").bind(s).run_name for m, d in study.pairs() for s in study.cv_specs(m, d)}
