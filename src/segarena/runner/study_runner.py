"""Runs a study: submits ready runs to an executor, retries failures, moves from the LR search to the CV phase,
and keeps a manifest (``<results>/studies/<name>.json``) that ``segarena study status`` reads.

Idempotent: run ids are hashes of resolved specs, finished runs are returned from the store without work, and
the chosen learning rates are recomputed from the stored search results, so rerunning a study (after a crash,
SIGKILL, or on another machine) completes exactly what is missing.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import write_json
from ..config import RunSpec, to_dict
from .executors import make_executor
from .store import ResultsDir, RunStore
from .study import StudySpec, pick_lr


@dataclass
class StudyOutcome:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # run_id -> last outcome
    chosen_lr: dict[str, float] = field(default_factory=dict)  # "model|dataset" -> lr
    attempts: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results.values() if r["state"] == "failed"]


def _manifest_path(results: Path, name: str) -> Path:
    return results / "studies" / f"{name}.json"


def _study_tracker(study: StudySpec, results: Path):
    """The study's parent in TensorBoard/MLflow (``study.tracking``), or None when no logger is configured."""
    if not study.tracking.loggers:
        return None
    from ..protocol.trackers import StudyTracker

    return StudyTracker(study.tracking, study.name, results)


def run_study(study: StudySpec, results: str | os.PathLike, *, executor: str = "local", workers: int = 1,
              address: str | None = None, data_root: str | None = None, retries: int = 1,
              time_limit_s: float | None = None, progress: bool = True) -> StudyOutcome:
    from tqdm import tqdm

    rd = ResultsDir(results)
    manifest = _manifest_path(rd.path, study.name)
    out = StudyOutcome()
    specs: dict[str, RunSpec] = {}
    search_left: dict[str, set[str]] = {}
    search_done: dict[str, list[dict[str, Any]]] = {}
    ex = make_executor(executor, workers, address)
    total = sum(len(study.search_specs(m, d)) + len(study.cv_specs(m, d)) for m, d in study.pairs())
    bar = tqdm(total=total, desc=f"study {study.name}", disable=not progress, unit="run")

    def save_manifest(state: str) -> None:
        write_json(manifest, {"name": study.name, "state": state, "time": time.time(), "workers": workers,
                              "executor": executor, "study": to_dict(study), "chosen_lr": out.chosen_lr,
                              "expected_runs": total,
                              "submitted": {rid: sp.run_name for rid, sp in specs.items()},
                              "runs": {rid: {"name": specs[rid].run_name, "state": r["state"],
                                             "error": r.get("error")} for rid, r in out.results.items()}})

    tracker = _study_tracker(study, rd.path)

    def submit(spec: RunSpec) -> None:
        specs[spec.run_id] = spec
        out.attempts[spec.run_id] = out.attempts.get(spec.run_id, 0) + 1
        sent = tracker.child(spec) if tracker is not None else spec  # same run id, tracking points at the parent
        ex.submit(spec.run_id, to_dict(sent), str(rd.path), data_root, time_limit_s)

    def start_cv(pair: str, lr: float | None) -> None:
        m, d = pair.split("|")
        for spec in study.cv_specs(m, d, lr):
            submit(spec)

    save_manifest("running")
    try:
        for m, d in study.pairs():
            pair = f"{m}|{d}"
            search = study.search_specs(m, d)
            if search:
                search_left[pair] = {s.run_id for s in search}
                search_done[pair] = []
                for s in search:
                    submit(s)
            else:
                start_cv(pair, None)
        while ex.pending():
            for run_id, res in ex.wait():
                spec = specs[run_id]
                if res["state"] == "failed" and out.attempts[run_id] <= retries:
                    if progress:
                        tqdm.write(f"retrying {spec.run_name}: {res.get('error')}")
                    submit(spec)
                    continue
                out.results[run_id] = res
                bar.update(1)
                if res["state"] == "failed" and progress:
                    tqdm.write(f"failed {spec.run_name}: {res.get('error')}")
                pair = f"{spec.model.name}|{spec.data.name}"
                if not spec.protocol.evaluate_test and pair in search_left:
                    search_left[pair].discard(run_id)
                    if res["state"] != "failed":
                        search_done[pair].append(res["summary"])
                    if not search_left[pair]:
                        if search_done[pair]:
                            out.chosen_lr[pair] = pick_lr(search_done[pair], study.protocol.monitor,
                                                             study.lr_search.lrs if study.lr_search else None)
                            start_cv(pair, out.chosen_lr[pair])
                        else:
                            bar.update(len(study.cv_specs(*pair.split("|"))))
                            if progress:
                                tqdm.write(f"skipping CV of {pair}: every learning-rate search run failed")
                save_manifest("running")
        save_manifest("failed" if out.failed else "complete")
        if tracker is not None:
            tracker.finish([r["summary"] for r in out.results.values() if r.get("summary")], len(out.failed),
                           out.chosen_lr)
    except BaseException:
        save_manifest("interrupted")
        raise
    finally:
        bar.close()
        ex.shutdown()
    return out


def study_status(results: str | os.PathLike) -> list[dict[str, Any]]:
    """Per study in the folder: done / running / failed / pending counts and an ETA."""
    rd = ResultsDir(results, create=False)
    out = []
    for mf in sorted((rd.path / "studies").glob("*.json")):
        info = json.loads(mf.read_text())
        counts = {"done": 0, "running": 0, "failed": 0, "queued": 0}
        durations = []
        for rid, name in info.get("submitted", {}).items():
            store_dir = rd.path / "runs" / name
            st = RunStore(store_dir).status() if (store_dir / "spec.json").is_file() else {"state": "pending"}
            state = st.get("state")
            if state == "complete":
                counts["done"] += 1
                summ = store_dir / "summary.json"
                if summ.is_file():
                    durations.append(json.loads(summ.read_text()).get("wall_seconds", 0.0))
            elif state == "failed" and info.get("runs", {}).get(rid, {}).get("state") == "failed":
                counts["failed"] += 1  # failed for good (retries exhausted)
            elif state == "running" and (store_dir / ".lock").exists():
                counts["running"] += 1
            else:
                counts["queued"] += 1
        expected = info.get("expected_runs", 0)
        pending = max(0, expected - counts["done"] - counts["failed"] - counts["running"])
        counts.pop("queued")
        mean = sum(durations) / len(durations) if durations else None
        workers = max(1, int(info.get("workers", 1)))
        eta = mean * (pending + counts["running"]) / workers if mean is not None else None
        out.append({"study": info["name"], "state": info["state"], **counts, "pending": pending,
                    "expected": expected, "eta_seconds": eta, "chosen_lr": info.get("chosen_lr", {})})
    return out
