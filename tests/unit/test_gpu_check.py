"""benchmarks/gpu_check.py: everything but the CUDA timing, on CPU — the skip without CUDA, real training steps
with a finite loss, the JSON document, and the projection of a study's GPU-hours from measured rows."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_without_cuda_it_skips_with_a_clear_message(gpu_check, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "g.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    assert "skipped: no CUDA device" in capsys.readouterr().out
    assert json.loads(out.read_text())["status"] == "skipped"


def test_the_paper_models_and_their_precision(gpu_check):
    models = dict(gpu_check.study_models())
    assert len(models) == 11 and "unet-vgg16" in models
    assert models["segnext-l"] is False  # fp32, as in the paper
    assert all(amp for m, amp in models.items() if m != "segnext-l")


def test_training_steps_on_cpu_give_a_finite_loss_and_a_rate(gpu_check):
    row = gpu_check.train_steps("tiny-unet", torch.device("cpu"), amp=False, size=32, batch=2, steps=2, warmup=1)
    assert row["ok"] and row["finite"] and len(row["losses"]) == 3 and row["train_img_s"] > 0
    assert row["params"] > 0
    cl = gpu_check.train_steps("tiny-unet", torch.device("cpu"), amp=False, size=32, batch=2, steps=1, warmup=1,
                               channels_last=True)
    assert cl["ok"] and cl["channels_last"]


def test_a_failing_model_is_a_row_not_a_crash(gpu_check):
    bad = gpu_check.train_steps("no-such-model", torch.device("cpu"), amp=False, size=32, batch=2, steps=1)
    assert bad["ok"] is False and "no-such-model" in bad["error"]


def test_run_check_writes_measured_rows_that_the_plan_uses(gpu_check, tmp_path):
    study = {"name": "g", "models": ["tiny-unet", "tiny-fcn"], "datasets": ["kvasir-seg"], "folds": [0, 1],
             "protocol": {"input_size": 32, "epochs": 20, "batch_size": 2, "patience": 5, "amp": False},
             "lr_search": {"lrs": [1e-3, 1e-4], "epochs": 10}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    res = gpu_check.run_check(torch.device("cpu"), models=[("tiny-unet", False), ("tiny-fcn", False)],
                              foundation=("tiny-fcn",), size=32, batch=2, steps=1, study_path=path)
    assert res["status"] == "complete" and res["device"] == "cpu"
    assert [r["model"] for r in res["models"]] == ["tiny-unet", "tiny-fcn"] and all(r["ok"] for r in res["models"])
    assert res["foundation"][0]["ok"] and res["foundation"][0]["shape"] == [1, 1, 32, 32]
    assert set(res["kernels"]) >= {"mamba_ssm", "dcnv3", "flash_attn_package", "torch_flash_sdp"}
    gh = res["projected_gpu_hours"]
    assert gh["rows"] == ["measured"] and gh["measured_models"] == ["tiny-fcn", "tiny-unet"]
    assert 0 < gh["with_early_stopping"]["total"] < gh["without_early_stopping"]["total"]
    json.dumps(res)  # one JSON document


def test_the_time_budget_lists_what_was_not_run(gpu_check, tmp_path):
    study = {"name": "g", "models": ["tiny-unet"], "datasets": ["kvasir-seg"], "folds": [0, 1],
             "protocol": {"input_size": 32, "epochs": 2, "batch_size": 2}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    res = gpu_check.run_check(torch.device("cpu"), models=[("tiny-unet", False)], foundation=("tiny-fcn",),
                              size=32, batch=2, steps=1, budget_s=0.0, study_path=path)
    assert res["status"] == "partial" and res["not_run"] == ["tiny-unet", "tiny-fcn"]


def test_a_throughput_file_that_is_not_one_is_a_one_line_error(tmp_path, capsys):
    from segarena.cli import main

    study = Path(__file__).resolve().parents[2] / "configs" / "studies" / "borst2026.yaml"
    assert main(["study", "plan", str(study), "--throughput", str(tmp_path / "none.json")]) == 2
    assert "--throughput" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{\"models\": 3}")
    assert main(["study", "plan", str(study), "--throughput", str(bad)]) == 2
    assert "no 'models' list" in capsys.readouterr().err
