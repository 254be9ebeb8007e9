"""benchmarks/gpu_check.py: everything but the CUDA timing, on CPU — the skip without CUDA, real training steps
through the loop's own functions with a finite loss, the speed levers timed one by one, the JSON document, and the
projection of a study's GPU-hours (and the plan's levers) from measured rows."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

from segarena.config import ProtocolConfig

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


def test_the_paper_models_with_their_precision_and_speed_levers(gpu_check):
    models = dict(gpu_check.study_models())
    assert len(models) == 11 and "unet-vgg16" in models
    assert models["segnext-l"].amp is False  # fp32, as in the paper
    assert all(p.amp for m, p in models.items() if m != "segnext-l")
    opts = gpu_check.loop_options(models["unet-vgg16"])  # measured as the study's runs train
    assert opts == {"amp": True, "channels_last": True, "compile_model": False, "data_on_device": "auto",
                    "augmentation": "paper"}


def test_training_steps_on_cpu_give_a_finite_loss_and_a_rate(gpu_check):
    row = gpu_check.train_steps("tiny-unet", torch.device("cpu"), amp=False, size=32, batch=2, steps=2, warmup=1)
    assert row["ok"] and row["finite"] and len(row["losses"]) == 3 and row["train_img_s"] > 0
    assert row["params"] > 0
    cl = gpu_check.train_steps("tiny-unet", torch.device("cpu"), amp=False, size=32, batch=2, steps=1, warmup=1,
                               channels_last=True, data_on_device="auto", augmentation="paper")
    assert cl["ok"] and cl["channels_last"] and cl["data_on_device"] is True and cl["warmup_seconds"] > 0


def test_the_check_steps_through_the_loops_own_functions_with_its_options(gpu_check, monkeypatch):
    from segarena.protocol import context, loop, speed

    seen = {"compile": 0, "gather": 0, "host": 0, "channels_last": []}
    real_step, real_gather, real_host = loop.train_step, speed.DeviceArrays.gather, context.host_batch

    def step(forward, x, *a, **k):
        seen["channels_last"].append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return real_step(forward, x, *a, **k)

    def compile_(model, *a, **k):
        seen["compile"] += 1
        return model

    def gather(self, idx):
        seen["gather"] += 1
        return real_gather(self, idx)

    def host(*a):
        seen["host"] += 1
        return real_host(*a)

    monkeypatch.setattr(loop, "train_step", step)
    monkeypatch.setattr(torch, "compile", compile_)
    monkeypatch.setattr(speed.DeviceArrays, "gather", gather)
    monkeypatch.setattr(context, "host_batch", host)
    row = gpu_check.train_steps("tiny-fcn", torch.device("cpu"), amp=False, size=16, batch=2, steps=2, warmup=1,
                                channels_last=True, compile_model=True, data_on_device=True)
    assert row["ok"] and seen["compile"] == 1 and seen["gather"] == 3 and seen["host"] == 0
    assert seen["channels_last"] == [True] * 3
    seen.update(compile=0, gather=0, host=0, channels_last=[])
    gpu_check.train_steps("tiny-fcn", torch.device("cpu"), amp=False, size=16, batch=2, steps=2, warmup=1)
    assert seen["compile"] == 0 and seen["gather"] == 0 and seen["host"] == 3 and seen["channels_last"] == [False] * 3


def test_levers_are_timed_one_by_one_against_all_off(gpu_check, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model, *a, **k: model)  # fast; the real compile is the loop's test
    rows = gpu_check.lever_rows("tiny-fcn", torch.device("cpu"), ProtocolConfig(amp=False, augmentation="none"),
                                size=16, batch=2, steps=1)
    assert [r["lever"] for r in rows] == ["channels_last", "compile", "data_on_device"]
    for r in rows:
        assert r["ok"] and r["ratio"] == pytest.approx(r["train_img_s"] / r["baseline_img_s"])
        assert isinstance(r["extra_warmup_s"], float)


def test_a_failing_model_is_a_row_not_a_crash(gpu_check):
    bad = gpu_check.train_steps("no-such-model", torch.device("cpu"), amp=False, size=32, batch=2, steps=1)
    assert bad["ok"] is False and "no-such-model" in bad["error"]


def test_run_check_writes_measured_rows_that_the_plan_uses(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model, *a, **k: model)  # the compile lever's row, fast
    study = {"name": "g", "models": ["tiny-unet", "tiny-fcn"], "datasets": ["kvasir-seg"], "folds": [0, 1],
             "protocol": {"input_size": 32, "epochs": 20, "batch_size": 2, "patience": 5, "amp": False},
             "lr_search": {"lrs": [1e-3, 1e-4], "epochs": 10}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    proto = ProtocolConfig(amp=False, augmentation="none")
    res = gpu_check.run_check(torch.device("cpu"), models=[("tiny-unet", proto), ("tiny-fcn", proto)],
                              foundation=("tiny-fcn",), size=32, batch=2, steps=1, levers=("tiny-fcn",),
                              study_path=path)
    assert res["status"] == "complete" and res["device"] == "cpu"
    assert [r["model"] for r in res["models"]] == ["tiny-unet", "tiny-fcn"] and all(r["ok"] for r in res["models"])
    assert res["foundation"][0]["ok"] and res["foundation"][0]["shape"] == [1, 1, 32, 32]
    assert set(res["kernels"]) >= {"mamba_ssm", "dcnv3", "flash_attn_package", "torch_flash_sdp"}
    gh = res["projected_gpu_hours"]
    assert gh["rows"] == ["measured"] and gh["measured_models"] == ["tiny-fcn", "tiny-unet"]
    assert 0 < gh["with_early_stopping"]["total"] < gh["without_early_stopping"]["total"]
    assert {r["lever"] for r in res["levers"]} == {"channels_last", "compile", "data_on_device"}
    json.dumps(res)  # one JSON document
    # the plan reads the lever ratios from the same file: measured, with the GPU and the models named
    from segarena.runner.plan import plan_study
    from segarena.runner.study import load_study

    out = tmp_path / "g.json"
    out.write_text(json.dumps(res))
    (tmp_path / "none").mkdir()
    plan = plan_study(load_study(path), data_root=tmp_path / "none", throughput=out, trace=False)
    levers = {lv["lever"].split(" (")[0]: lv for lv in plan.levers}
    for name in ("channels-last memory format", "torch.compile", "prepared data kept on the device"):
        assert levers[name]["kind"] == "measured" and "measured by gpu_check.py on cpu" in levers[name]["effect"]
        assert "tiny-fcn" in levers[name]["effect"]


def test_the_time_budget_lists_what_was_not_run(gpu_check, tmp_path):
    study = {"name": "g", "models": ["tiny-unet"], "datasets": ["kvasir-seg"], "folds": [0, 1],
             "protocol": {"input_size": 32, "epochs": 2, "batch_size": 2}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    res = gpu_check.run_check(torch.device("cpu"), models=[("tiny-unet", ProtocolConfig(amp=False))],
                              foundation=("tiny-fcn",), size=32, batch=2, steps=1, budget_s=0.0, levers=("tiny-unet",),
                              study_path=path)
    assert res["status"] == "partial" and res["not_run"] == ["tiny-unet", "tiny-unet (levers)", "tiny-fcn"]


def test_a_throughput_file_that_is_not_one_is_a_one_line_error(tmp_path, capsys):
    from segarena.cli import main

    study = Path(__file__).resolve().parents[2] / "configs" / "studies" / "borst2026.yaml"
    assert main(["study", "plan", str(study), "--throughput", str(tmp_path / "none.json")]) == 2
    assert "--throughput" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{\"models\": 3}")
    assert main(["study", "plan", str(study), "--throughput", str(bad)]) == 2
    assert "no 'models' list" in capsys.readouterr().err
