"""The thread-count rule: a run's records depend only on its spec, not on how many workers share the machine."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from segarena._errors import SegarenaError
from segarena.runner.executors import run_threads
from segarena.runner.study import study_from_dict
from segarena.runner.study_runner import run_study


def _study(real_data_root: Path) -> dict:
    return {"name": "threads", "models": ["tiny-unet"], "datasets": ["kvasir-seg"], "folds": [0], "seeds": [0, 1],
            "data": {"limit": 16, "root": str(real_data_root)},
            "protocol": {"input_size": 32, "epochs": 1, "batch_size": 4, "max_steps_per_epoch": 3, "patience": None,
                         "amp": False, "augmentation": "paper"}}


def _records(results: Path) -> dict[str, tuple]:
    """Per run folder: the hash of every weights file and the per-case metric records."""
    out = {}
    for metrics in sorted(results.rglob("*.parquet")):
        run = metrics.parent
        weights = sorted(run.rglob("*.safetensors"))
        digest = tuple(hashlib.sha256(w.read_bytes()).hexdigest() for w in weights)
        frame = pd.read_parquet(metrics)
        out[str(metrics.relative_to(results))] = (digest, frame.sort_values(list(frame.columns[:2])).to_csv())
    return out


@pytest.mark.realdata
@pytest.mark.slow
def test_worker_count_does_not_change_records(tmp_path, real_data_root, monkeypatch):
    monkeypatch.delenv("SEGARENA_THREADS_PER_RUN", raising=False)
    monkeypatch.delenv("SEGARENA_THREADS_PER_WORKER", raising=False)
    one = run_study(study_from_dict(_study(real_data_root)), tmp_path / "w1", workers=1, progress=False)
    two = run_study(study_from_dict(_study(real_data_root)), tmp_path / "w2", workers=2, progress=False)
    assert not one.failed and not two.failed
    assert {r["threads"] for r in one.results.values()} == {r["threads"] for r in two.results.values()} == {1}
    rec1, rec2 = _records(tmp_path / "w1"), _records(tmp_path / "w2")
    assert rec1 and rec1.keys() == rec2.keys()
    assert any(digest for digest, _ in rec1.values())  # weights were compared, not only metrics
    assert rec1 == rec2


def test_thread_count_setting_is_checked(monkeypatch):
    monkeypatch.setenv("SEGARENA_THREADS_PER_RUN", "3")
    assert run_threads() == 3
    monkeypatch.setenv("SEGARENA_THREADS_PER_RUN", "zero")
    with pytest.raises(SegarenaError, match="SEGARENA_THREADS_PER_RUN"):
        run_threads()
    monkeypatch.delenv("SEGARENA_THREADS_PER_RUN")
    monkeypatch.delenv("SEGARENA_THREADS_PER_WORKER", raising=False)
    assert run_threads() == 1
