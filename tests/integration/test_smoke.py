"""End to end on real Kvasir-SEG images: tiny model, low resolution, 1 epoch -> records -> report.
Also: a finished run is not redone, an interrupted run resumes, a failed run in a grid becomes a row."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from segarena import DataConfig, ModelConfig, ProtocolConfig, RunSpec
from segarena.protocol import run
from segarena.report import build_report, leaderboard, load_results
from segarena.runner.grid import GridSpec, run_grid

pytestmark = pytest.mark.realdata


def _spec(real_data_root, **proto):
    p = dict(input_size=48, epochs=1, batch_size=4, max_steps_per_epoch=3, augmentation="paper", amp=False, lr=1e-3)
    p.update(proto)
    return RunSpec(data=DataConfig(name="kvasir-seg", root=str(real_data_root), limit=30),
                   model=ModelConfig(name="tiny-unet"), protocol=ProtocolConfig(**p))


def test_end_to_end_run_and_report(real_data_root, tmp_path):
    spec = _spec(real_data_root)
    res = run(spec, tmp_path)
    d = res.store.dir
    for f in ("spec.json", "status.json", "log.json", "records.parquet", "summary.json", "split.json",
              "checkpoint/model.safetensors", "checkpoint/model.json", "predictions.npz"):
        assert (d / f).is_file(), f
    assert not (d / "state" / "last.pt").exists()  # resume state is dropped once complete
    s = json.loads((d / "summary.json").read_text())
    split = json.loads((d / "split.json").read_text())
    assert s["n_test"] == len(split["test"]) and s["n_train"] == len(split["train"])
    rec = pd.read_parquet(d / "records.parquet")
    assert set(rec["case_id"]) == set(split["test"])
    # evaluated at the native resolution of each image
    assert (rec["height"] > 48).all() and rec["width"].nunique() > 1
    tp, fp, fn = rec["tp"].sum(), rec["fp"].sum(), rec["fn"].sum()
    assert s["metrics"]["mdsc"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert 0.0 <= s["metrics"]["mdsc"] <= 1.0
    assert len(list((d / "gallery").glob("*.png"))) == 6
    # boundary metrics on every record (pixels: Kvasir has no pixel size), efficiency in the summary
    assert rec[["hd", "hd95", "assd", "nsd"]].notna().all().all() and (rec["spacing_unit"] == "px").all()
    assert (rec["hd95"] <= rec["hd"] + 1e-9).all() and rec["nsd"].between(0, 1).all()
    assert s["metrics"]["hd95_mean"] == pytest.approx(rec["hd95"].mean())
    eff = s["efficiency"]
    assert eff["params"] == s["params"] and eff["flops"] > 0 and eff["macs"] == eff["flops"] // 2
    assert eff["latency_ms"] > 0 and eff["device"]
    assert s["seconds_per_epoch"] > 0 and s["train_peak_memory_mb"] > 0

    again = run(spec, tmp_path)  # a finished run id does nothing
    assert again.skipped and (d / "summary.json").read_text() == json.dumps(s, indent=2, sort_keys=True) + "\n"

    paths = build_report(tmp_path)
    html = paths["html"].read_text()
    assert "tiny-unet" in html and "data:image/png;base64," in html and "Leaderboard" in html
    assert "mDSC" in paths["markdown"].read_text()


def test_resume_after_interruption(real_data_root, tmp_path, monkeypatch):
    """Kill a 3-epoch run after epoch 1; the rerun resumes at epoch 2 and ends like an uninterrupted run."""
    from segarena.protocol import loop

    spec = _spec(real_data_root, epochs=3, patience=None, augmentation="none")
    real_validate = loop._validate
    calls = {"n": 0}

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # stands in for SIGKILL after epoch 0 was saved
        return real_validate(*a, **k)

    monkeypatch.setattr(loop, "_validate", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(spec, tmp_path / "a")
    store_dir = next((tmp_path / "a" / "runs").iterdir())
    assert json.loads((store_dir / "status.json").read_text())["state"] == "failed"
    assert (store_dir / "state" / "last.pt").is_file()
    monkeypatch.setattr(loop, "_validate", real_validate)
    resumed = run(spec, tmp_path / "a")
    log = json.loads((store_dir / "log.json").read_text())
    assert [e["epoch"] for e in log] == [0, 1, 2]
    straight = run(spec, tmp_path / "b")
    # same seed, same data: the resumed run ends where the uninterrupted one does
    assert resumed.summary["metrics"]["mdsc"] == pytest.approx(straight.summary["metrics"]["mdsc"], abs=1e-6)


def test_determinism_same_spec_same_records(real_data_root, tmp_path):
    spec = _spec(real_data_root, deterministic=True)
    a = run(spec, tmp_path / "a").store.records()
    b = run(spec, tmp_path / "b").store.records()
    assert np.array_equal(a[["tp", "fp", "fn"]].to_numpy(), b[["tp", "fp", "fn"]].to_numpy())


def test_grid_fails_soft(real_data_root, tmp_path):
    base = _spec(real_data_root)
    grid = GridSpec(models=("tiny-unet", "tiny-fcn"), datasets=("kvasir-seg",), folds=(0,),
                    protocol=base.protocol, data=base.data, model_kwargs={"tiny-fcn": {"bogus": 1}})
    rows = run_grid(grid.expand(), tmp_path, progress=False)
    assert [r.state for r in rows] == ["complete", "failed"]
    assert "bogus" in rows[1].error
    res = load_results(tmp_path)
    assert len(res["runs"]) == 1 and len(res["failed"]) == 1
    lb = leaderboard(res["runs"])
    assert list(lb["model"]) == ["tiny-unet"]
    assert "Runs not complete" in build_report(tmp_path)["html"].read_text()


def test_nan_loss_stops_the_run_with_a_recorded_reason(real_data_root, tmp_path, monkeypatch):
    import torch

    from segarena import RunFailed
    from segarena.protocol import losses

    real = losses.LOSSES.get("bce")
    monkeypatch.setitem(losses.LOSSES._entries, "bce", losses.LossSpec(
        "bce", True, lambda lg, t: real.fn(lg, t) * torch.tensor(float("nan"))))
    with pytest.raises(RunFailed, match="non-finite training loss"):
        run(_spec(real_data_root), tmp_path)
    d = next((tmp_path / "runs").iterdir())
    status = json.loads((d / "status.json").read_text())
    assert status["state"] == "failed" and "non-finite training loss" in status["error"]
    assert not (d / "summary.json").exists() and not (d / "checkpoint" / "model.safetensors").exists()
