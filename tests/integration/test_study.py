"""Study runner: expansion and hashing, the LR phase on validation only, fail soft, SIGKILL + resume, the paper's
study at smoke scale end to end, and the Ray executor on a local instance."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from segarena import ConfigError
from segarena.runner.study import load_study, pick_lr, study_from_dict
from segarena.runner.study_runner import run_study, study_status

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "configs" / "studies" / "borst2026.yaml"


def _tiny_study(tmp_path: Path, real_data_root: Path, **over) -> dict:
    raw = {
        "name": "t", "models": ["tiny-fcn"], "datasets": ["kvasir-seg"], "folds": [0, 1],
        "data": {"limit": 20, "root": str(real_data_root)},
        "protocol": {"input_size": 32, "epochs": 1, "batch_size": 4, "max_steps_per_epoch": 2, "patience": None,
                     "amp": False, "augmentation": "none"},
        "lr_search": {"lrs": [1e-3, 1e-5], "epochs": 1},
    }
    raw.update(over)
    return raw


def test_expansion_and_hashing():
    s = load_study(PAPER)
    assert len(s.models) == 11 and s.datasets == ("isic2018", "neopolyp", "camus")
    search = s.search_specs("segnext-l", "camus")
    assert [x.protocol.lr for x in search] == [1e-4, 5e-5, 1e-5]
    assert all(not x.protocol.evaluate_test and x.protocol.epochs == 100 for x in search)
    cv = s.cv_specs("segnext-l", "camus", lr=5e-5)
    assert [x.data.fold for x in cv] == [0, 1, 2, 3, 4] and {x.protocol.lr for x in cv} == {5e-5}
    assert all(x.protocol.epochs == 150 and x.protocol.amp is False for x in cv)  # SegNeXt without AMP
    assert s.cv_specs("ukan-l", "camus")[0].model.pretrained is False
    assert s.cv_specs("unet", "camus")[0].model.pretrained is True
    ids = [x.run_id for m, d in s.pairs() for x in s.search_specs(m, d) + s.cv_specs(m, d)]
    assert len(ids) == len(set(ids)) == 11 * 3 * (3 + 5)
    assert [x.run_id for x in load_study(PAPER).cv_specs("unet", "isic2018")] == \
        [x.run_id for x in s.cv_specs("unet", "isic2018")]


def test_invalid_study_reports_every_problem(tmp_path):
    bad = {"name": "x", "models": ["unet", "segformr-b3"], "datasets": ["kvasir"], "folds": [0, 9],
           "protocol": {"lr": "fast", "epochz": 3}, "lr_search": {"lrs": [1e-4], "epoch": 2}}
    with pytest.raises(ConfigError) as exc:
        study_from_dict(bad, where="bad.yaml")
    msg = str(exc.value)
    for part in ("models[1]", "segformer-b3", "datasets[0]", "kvasir-seg", "folds[1]", "protocol.lr",
                 "protocol.epochz", "lr_search.epoch", "bad.yaml: 6 problem(s)"):
        assert part in msg, part


def test_pick_lr_uses_validation_and_breaks_ties_by_grid_order():
    runs = [{"lr": 1e-5, "best_val": {"val_mdsc": 0.8}}, {"lr": 1e-4, "best_val": {"val_mdsc": 0.8}},
            {"lr": 5e-5, "best_val": {"val_mdsc": 0.7}}]
    assert pick_lr(runs, order=(1e-4, 5e-5, 1e-5)) == 1e-4
    assert pick_lr(runs[::-1], order=(1e-4, 5e-5, 1e-5)) == 1e-4
    assert pick_lr([{"lr": 1.0, "best_val": {"val_loss": 0.2}}, {"lr": 2.0, "best_val": {"val_loss": 0.1}}],
                   monitor="val_loss") == 2.0


@pytest.mark.realdata
def test_lr_phase_never_touches_test_and_cv_uses_chosen_rate(tmp_path, real_data_root):
    study = study_from_dict(_tiny_study(tmp_path, real_data_root))
    out = run_study(study, tmp_path / "r", workers=1, progress=False)
    assert not out.failed
    runs = sorted((tmp_path / "r" / "runs").iterdir())
    search = [d for d in runs if json.loads((d / "summary.json").read_text()).get("validation_only")]
    assert len(search) == 2
    for d in search:  # model selection runs: no test records, no test predictions
        assert not (d / "records.parquet").exists() and not (d / "predictions.npz").exists()
    vals = {s["lr"]: s["best_val"]["val_mdsc"] for s in (json.loads((d / "summary.json").read_text()) for d in search)}
    # the best validation mDSC; a tie goes to the earlier rate of the study's grid (not to a folder's name)
    lr = next(r for r in study.lr_search.lrs if vals[r] == max(vals.values()))
    assert out.chosen_lr == {"tiny-fcn|kvasir-seg": lr}
    cv = [d for d in runs if d not in search]
    assert len(cv) == 2 and all(json.loads((d / "spec.json").read_text())["protocol"]["lr"] == lr for d in cv)
    # rerunning the study does no work: every run is returned from the store
    again = run_study(study, tmp_path / "r", workers=1, progress=False)
    assert {r["state"] for r in again.results.values()} == {"skipped"}


@pytest.mark.realdata
def test_failed_run_is_recorded_and_others_finish(tmp_path, real_data_root):
    raw = _tiny_study(tmp_path, real_data_root, models=["tiny-fcn", "tiny-unet"], lr_search=None,
                      model_overrides={"tiny-unet": {"kwargs": {"no_such_arg": 1}}})
    # the preflight would refuse this study (the bad kwarg fails the meta build); skip it to test run-time failure
    out = run_study(study_from_dict(raw), tmp_path / "r", workers=2, retries=1, progress=False, preflight=False)
    assert len(out.failed) == 2 and all("no_such_arg" in f["error"] for f in out.failed)
    assert sum(r["state"] == "complete" for r in out.results.values()) == 2
    assert max(out.attempts.values()) == 2  # retried once
    # every run gets the fixed per-run thread count (1), never one derived from the number of workers
    threads = {r["threads"] for r in out.results.values() if r["state"] == "complete"}
    assert threads == {1}
    st = study_status(tmp_path / "r")[0]
    assert (st["done"], st["failed"], st["pending"], st["state"]) == (2, 2, 0, "failed")


def _readable(path: Path) -> None:
    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".parquet":
        pd.read_parquet(path)
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        load_file(str(path))


def _session_processes(sid: int, wait_s: float) -> list[str]:
    """Command lines of processes still in session ``sid`` (the killed study's workers, resource tracker, ...),
    after waiting up to ``wait_s`` for them to go."""
    deadline = time.time() + wait_s
    while True:
        found = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                stat = (p / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                if int(fields[3]) == sid and fields[0] != "Z":
                    found.append((p / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
            except (OSError, ValueError):
                continue
        if not found or time.time() > deadline:
            return found
        time.sleep(0.5)


def _status_agrees_with_disk(results: Path) -> None:
    """After a kill: `study status` counts exactly the complete runs on disk, nothing reads as running, and
    runs (and the study) whose process is gone read as interrupted."""
    if not (results / "studies").is_dir():
        return  # killed before the manifest was written
    st = study_status(results)[0]
    on_disk = [d for d in (results / "runs").iterdir() if (d / "summary.json").is_file()
               and json.loads((d / "status.json").read_text())["state"] == "complete"] \
        if (results / "runs").is_dir() else []
    assert st["done"] == len(on_disk), st
    assert st["running"] == 0 and st["state"] in ("interrupted", "complete"), st
    started = [d for d in (results / "runs").iterdir() if (d / "status.json").is_file()] \
        if (results / "runs").is_dir() else []
    states = {json.loads((d / "status.json").read_text())["state"] for d in started}
    assert st["interrupted"] == sum(json.loads((d / "status.json").read_text())["state"] == "running"
                                    for d in started), (st, states)


@pytest.mark.realdata
@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(tmp_path, real_data_root):
    """Kill the study with SIGKILL several times (the whole group, or only the study process); after each kill no
    process of it survives and `study status` agrees with disk; the resumed study has every run exactly once and
    no unreadable file."""
    raw = _tiny_study(tmp_path, real_data_root)
    raw["protocol"] = {**raw["protocol"], "epochs": 3, "max_steps_per_epoch": 3}
    raw["lr_search"] = {**raw["lr_search"], "epochs": 3}
    study_file = tmp_path / "s.yaml"
    study_file.write_text(yaml.safe_dump(raw))
    results = tmp_path / "r"
    cmd = [sys.executable, "-m", "segarena", "study", "run", str(study_file), "--results", str(results),
           "--workers", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rng = random.Random(0)
    for i in range(4):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(rng.uniform(3.0, 9.0) if i < 2 else rng.uniform(12.0, 20.0))
        if proc.poll() is None:
            if i % 2:  # the whole process group, as a job scheduler does
                os.killpg(proc.pid, signal.SIGKILL)
            else:  # only the study process, as the OOM killer or `kill -9 <pid>` does: its workers must follow
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        survivors = _session_processes(proc.pid, wait_s=15.0)
        if survivors:
            os.killpg(proc.pid, signal.SIGKILL)
        assert not survivors, f"kill {i}: processes outlived the study: {survivors}"
        _status_agrees_with_disk(results)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    study = study_from_dict(raw)
    run_dirs = sorted((results / "runs").iterdir())
    assert len(run_dirs) == 4  # 2 search + 2 CV: one folder per run id, none duplicated
    for d in run_dirs:
        assert json.loads((d / "status.json").read_text())["state"] == "complete"
        log = json.loads((d / "log.json").read_text())
        assert [e["epoch"] for e in log] == [0, 1, 2]  # every epoch exactly once
        for f in d.rglob("*"):
            if f.is_file() and not f.name.startswith("."):
                _readable(f)
    st = study_status(results)[0]
    assert (st["done"], st["failed"], st["pending"]) == (4, 0, 0)
    assert study.name == st["study"]


@pytest.mark.realdata
@pytest.mark.slow
def test_paper_study_at_smoke_scale_end_to_end(tmp_path, real_data_root):
    from segarena.cli import main

    rc = main(["study", "run", str(PAPER), "--scale", "smoke", "--results", str(tmp_path / "r"), "--workers", "2",
               "--data-root", str(real_data_root)])
    assert rc == 0
    st = study_status(tmp_path / "r")[0]
    assert (st["study"], st["done"], st["failed"]) == ("borst2026", 2 * 2 * (3 + 2), 0)
    html = (tmp_path / "r" / "report" / "report.html").read_text()
    assert "Learning-rate search" in html and "tiny-unet" in html


@pytest.mark.realdata
@pytest.mark.slow
def test_ray_executor_local_instance(tmp_path, real_data_root):
    ray = pytest.importorskip("ray")
    raw = _tiny_study(tmp_path, real_data_root, models=["tiny-fcn", "tiny-unet"], lr_search=None, folds=[0])
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        out = run_study(study_from_dict(raw), tmp_path / "r", executor="ray", progress=False)
    finally:
        ray.shutdown()
    assert not out.failed and len(out.results) == 2
    assert all((Path(tmp_path / "r" / "runs") / r["summary"]["run_name"] / "records.parquet").is_file()
               for r in out.results.values())


@pytest.mark.realdata
def test_study_status_reads_the_runs_on_disk(tmp_path, real_data_root):
    """A manifest that lags behind (killed between a run finishing and the manifest being rewritten, or written
    by an older version) must not say "0 done" while the runs are complete on disk; a study whose process is gone
    reads interrupted, not running."""
    raw = _tiny_study(tmp_path, real_data_root, lr_search=None)
    run_study(study_from_dict(raw), tmp_path / "r", progress=False)
    mf = tmp_path / "r" / "studies" / "t.json"
    info = json.loads(mf.read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mf.write_text(json.dumps({**info, "state": "running", "submitted": {}, "runs": {}, "pid": dead.pid,
                              "pid_start": None}))
    st = study_status(tmp_path / "r")[0]
    assert (st["done"], st["pending"], st["state"]) == (2, 0, "complete")
    # one run deleted: the study is no longer complete, and with its process gone it reads interrupted
    import shutil

    shutil.rmtree(next((tmp_path / "r" / "runs").iterdir()))
    st = study_status(tmp_path / "r")[0]
    assert (st["done"], st["pending"], st["running"], st["state"]) == (1, 1, 0, "interrupted")
