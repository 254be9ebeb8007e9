"""Runs a study: submits ready runs to an executor, retries failures, moves from the LR search to the CV phase,
and keeps a manifest (``<results>/studies/<name>.json``) that ``segarena study status`` reads.

Idempotent: run ids are hashes of resolved specs, finished runs are returned from the store without work, and
the chosen learning rates are recomputed from the stored search results, so rerunning a study (after a crash,
SIGKILL, or on another machine) completes exactly what is missing.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import write_json
from ..config import RunSpec, to_dict
from .executors import make_executor
from ..store import ResultsDir, process_alive, process_start, scan_runs
from .study import StudySpec, pick_lr


@dataclass
class StudyOutcome:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # run_id -> last outcome
    chosen_lr: dict[str, float] = field(default_factory=dict)  # "model|dataset" -> lr
    attempts: dict[str, int] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # run_id -> run folder name
    #: (model, dataset) pairs whose CV never started because every learning-rate search run failed
    skipped_cv: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results.values() if r["state"] == "failed"]

    @property
    def failed_names(self) -> list[str]:
        """Folder names of the runs that failed for good (after retries)."""
        return sorted(self.names.get(rid, rid) for rid, r in self.results.items() if r["state"] == "failed")


def _manifest_path(results: Path, name: str) -> Path:
    from .._paths import check_name, inside

    return inside(results / "studies", check_name(name, "study name") + ".json", what="study name")


def _study_tracker(study: StudySpec, results: Path):
    """The study's parent in TensorBoard/MLflow (``study.tracking``), or None when no logger is configured."""
    if not study.tracking.loggers:
        return None
    from ..protocol.trackers import StudyTracker

    return StudyTracker(study.tracking, study.name, results)


def run_study(study: StudySpec, results: str | os.PathLike, *, executor: str = "local", workers: int = 1,
              address: str | None = None, data_root: str | None = None, retries: int = 1,
              time_limit_s: float | None = None, progress: bool = True, preflight: bool = True,
              allow_missing_data: bool = False, throughput: str | os.PathLike | None = None) -> StudyOutcome:
    """Run (or resume) ``study``. First the preflight (:func:`.plan.preflight`): nothing starts while a run has a
    problem (``allow_missing_data``: the datasets that are missing are left out). The (model, dataset) pairs are
    submitted largest estimated GPU time first, so workers finish close together."""
    from tqdm import tqdm  # tqdm.write prints above a live terminal bar

    from ..progress import progress_bar

    order: dict[tuple[str, str], float] = {}
    if preflight:
        from .plan import preflight as check

        study, plan = check(study, data_root=data_root, allow_missing_data=allow_missing_data, throughput=throughput)
        for r in plan.runs:
            order[(r.model, r.dataset)] = order.get((r.model, r.dataset), 0.0) + (r.gpu_seconds or 0.0)
    rd = ResultsDir(results)
    manifest = _manifest_path(rd.path, study.name)
    out = StudyOutcome()
    specs: dict[str, RunSpec] = {}
    search_left: dict[str, set[str]] = {}
    search_done: dict[str, list[dict[str, Any]]] = {}
    ex = make_executor(executor, workers, address)
    total = sum(len(study.search_specs(m, d)) + len(study.cv_specs(m, d)) for m, d in study.pairs())
    bar = progress_bar(total=total, desc=f"study {study.name}", enabled=progress, unit="run")

    def save_manifest(state: str) -> None:
        write_json(manifest, {"name": study.name, "state": state, "time": time.time(), "workers": workers,
                              "pid": os.getpid(), "host": socket.gethostname(), "pid_start": process_start(os.getpid()),
                              "executor": executor, "study": to_dict(study), "chosen_lr": out.chosen_lr,
                              "expected_runs": total,
                              "submitted": {rid: rd.bind(sp).run_name for rid, sp in specs.items()},
                              "runs": {rid: {"name": rd.bind(specs[rid]).run_name, "state": r["state"],
                                             "error": r.get("error")} for rid, r in out.results.items()}})

    tracker = _study_tracker(study, rd.path)

    def submit(spec: RunSpec) -> None:
        specs[spec.run_id] = spec
        out.names[spec.run_id] = spec.run_name
        out.attempts[spec.run_id] = out.attempts.get(spec.run_id, 0) + 1
        sent = tracker.child(spec) if tracker is not None else spec  # same run id, tracking points at the parent
        ex.submit(spec.run_id, to_dict(sent), str(rd.path), data_root, time_limit_s)

    def start_cv(pair: str, lr: float | None) -> None:
        m, d = pair.split("|")
        for spec in study.cv_specs(m, d, lr):
            submit(spec)

    save_manifest("running")
    try:
        for m, d in sorted(study.pairs(), key=lambda md: -order.get(md, 0.0)):  # stable: study order on ties
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
                out.names[run_id] = rd.bind(spec).run_name  # the folder it ran in, named after its split
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
                            out.skipped_cv.append(pair)
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


def _planned_runs(info: dict[str, Any], runs: dict[str, Any], rd: ResultsDir) -> list[str]:
    """Run folder names a study's manifest implies: its LR-search runs, and the CV runs of every pair whose
    learning rate is known (from the manifest, or recomputed from the search runs complete on disk, as the
    runner does); plus whatever it recorded as submitted."""
    from .study import study_from_dict

    names = list(dict.fromkeys((info.get("submitted") or {}).values()))
    try:
        study = study_from_dict(info["study"], where="manifest")
    except Exception:  # noqa: BLE001 - an older or edited manifest: fall back to what it recorded
        return names
    chosen = info.get("chosen_lr") or {}
    for m, d in study.pairs():
        search = study.search_specs(m, d)
        search_names = [rd.bind(s).run_name for s in search]
        names += search_names
        lr = chosen.get(f"{m}|{d}")
        if search and lr is None:
            done = [runs[n].summary for n in search_names if n in runs and runs[n].summary is not None]
            if len(done) < len(search):
                continue  # the search is not finished: its CV runs are not known yet
            lr = pick_lr(done, study.protocol.monitor, study.lr_search.lrs if study.lr_search else None)
        names += [rd.bind(s).run_name for s in study.cv_specs(m, d, lr)]
    return list(dict.fromkeys(names))


def study_status(results: str | os.PathLike) -> list[dict[str, Any]]:
    """Per study in the folder: done / running / interrupted / failed / pending counts and an ETA, read from
    the run folders on disk (the manifest only says which runs belong to the study), so the counts always agree
    with what is there — also after a SIGKILL. Damaged runs are counted and listed under ``problems``."""
    rd = ResultsDir(results, create=False)
    scan = scan_runs(rd.path, check_records=False)
    runs = {r.dir.name: r for r in scan.runs}
    damaged = {p.run: p for p in scan.problems if p.kind == "damaged"}
    out = []
    for mf in sorted((rd.path / "studies").glob("*.json")) if (rd.path / "studies").is_dir() else []:
        try:
            info = json.loads(mf.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            info = None
        if not isinstance(info, dict):
            fix = "rerun `segarena study run` with the study file: finished runs are kept and it is rewritten"
            out.append({"study": mf.stem, "state": "damaged", "done": 0, "running": 0, "interrupted": 0,
                        "failed": 0, "damaged": 0, "pending": 0, "expected": 0, "eta_seconds": None,
                        "chosen_lr": {}, "problems": [f"{mf} is damaged — {fix}"]})
            continue
        counts = {"done": 0, "running": 0, "interrupted": 0, "failed": 0, "damaged": 0}
        durations, problems = [], []
        for name in _planned_runs(info, runs, rd):
            if name in damaged:
                counts["damaged"] += 1
                problems.append(damaged[name].line())
                continue
            r = runs.get(name)
            if r is None:
                continue  # not started: pending
            if r.summary is not None:
                counts["done"] += 1
                durations.append(float(r.summary.get("wall_seconds", 0.0) or 0.0))
            elif r.state in ("running", "interrupted", "failed"):
                counts[r.state] += 1
        expected = int(info.get("expected_runs", 0) or 0)
        pending = max(0, expected - sum(counts.values()))
        state = info.get("state", "unknown")
        if state == "running" and "pid" in info and not process_alive(info.get("pid"), info.get("pid_start"),
                                                                      info.get("host")):
            state = "interrupted"  # the study process was killed without a word
        if expected and counts["done"] == expected:
            state = "complete"
        mean = sum(durations) / len(durations) if durations else None
        workers = max(1, int(info.get("workers", 1) or 1))
        eta = mean * (pending + counts["running"]) / workers if mean is not None else None
        out.append({"study": info.get("name", mf.stem), "state": state, **counts, "pending": pending,
                    "expected": expected, "eta_seconds": eta, "chosen_lr": info.get("chosen_lr", {}),
                    "problems": problems})
    return out
