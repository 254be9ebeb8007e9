"""The results store: one folder per run id; all writes atomic; a finished run is never redone.

``<results>/segarena-results.json``           marks the folder as a segarena results store
``<results>/runs/<run_name>/``                 one run (``<model>__<dataset>__f<fold>__s<seed>__<hash>``)
    spec.json        the resolved RunSpec (with its run_id)      status.json   running | complete | failed (+ error)
    log.json         per-epoch training log                      split.json    the case ids of train/val/test
    records.parquet  per-case, per-class test records            summary.json  named reductions + timings
    predictions.npz  test predictions at network size (report)   checkpoint/   model.safetensors + model.json
    state/last.pt    resume state (weights_only-loadable)        .lock         held while a process runs it
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from .._errors import SegarenaError
from .._io import read_json, write_json
from ..config import RunSpec, spec_from_dict, to_dict

MARKER = "segarena-results.json"


class ResultsDir:
    def __init__(self, path: str | os.PathLike, create: bool = True) -> None:
        self.path = Path(path).expanduser()
        marker = self.path / MARKER
        if self.path.exists() and not self.path.is_dir():
            raise SegarenaError(f"{self.path} is a file, not a results folder", fix="choose a folder for results")
        if not marker.is_file():
            if not create:
                raise SegarenaError(f"{self.path} is not a segarena results folder (no {MARKER})",
                                    fix="pass the folder given as --results to `segarena run/compare/study run`")
            if self.path.is_dir() and any(p for p in self.path.iterdir() if not p.name.startswith(".")):
                raise SegarenaError(f"{self.path} is not a segarena results folder (no {MARKER}) and is not empty",
                                    fix="choose an empty or new folder so nothing of yours gets overwritten")
            write_json(marker, {"format": "segarena-results", "version": 1})
        (self.path / "runs").mkdir(parents=True, exist_ok=True)

    def log_command(self, argv: list[str]) -> None:
        """Append the command line to ``commands.log`` (the report prints the commands behind its numbers)."""
        import shlex

        line = time.strftime("%Y-%m-%d %H:%M:%S") + "  segarena " + " ".join(shlex.quote(a) for a in argv)
        with open(self.path / "commands.log", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def run(self, spec: RunSpec) -> RunStore:
        return RunStore(self.path / "runs" / spec.run_name, spec)

    def run_dirs(self) -> list[Path]:
        return sorted(p for p in (self.path / "runs").iterdir() if p.is_dir() and (p / "spec.json").is_file())


class RunStore:
    def __init__(self, folder: Path, spec: RunSpec | None = None) -> None:
        self.dir = Path(folder)
        if spec is None:
            spec = load_spec(self.dir)
        self.spec = spec

    # -- paths ---------------------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def weights(self) -> Path:
        return self.dir / "checkpoint" / "model.safetensors"

    @property
    def state_file(self) -> Path:
        return self.dir / "state" / "last.pt"

    # -- status --------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        p = self.dir / "status.json"
        try:
            return json.loads(p.read_text()) if p.is_file() else {"state": "pending"}
        except json.JSONDecodeError:
            return {"state": "pending"}

    def is_complete(self) -> bool:
        return self.status().get("state") == "complete" and (self.dir / "summary.json").is_file()

    def set_status(self, state: str, **extra: Any) -> None:
        write_json(self.dir / "status.json", {"state": state, "time": time.time(), **extra})

    def init(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.dir / "spec.json"
        if not spec_file.is_file():
            write_json(spec_file, {"run_id": self.spec.run_id, **to_dict(self.spec)})

    # -- lock: one process per run ---------------------------------------------------------------------------
    def acquire(self) -> bool:
        """Take the run's lock; False if a live process on this host holds it. Stale locks are taken over."""
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = self.dir / ".lock"
        me = f"{socket.gethostname()}:{os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                with os.fdopen(fd, "w") as fh:
                    fh.write(me)
                return True
            except FileExistsError:
                holder = lock.read_text().strip() if lock.exists() else ""
                host, _, pid = holder.partition(":")
                if host == socket.gethostname() and pid.isdigit() and _alive(int(pid)) and int(pid) != os.getpid():
                    return False
                if host and host != socket.gethostname():
                    return False  # another machine of a cluster holds it
                lock.unlink(missing_ok=True)  # stale: its process is gone
        return False

    def release(self) -> None:
        (self.dir / ".lock").unlink(missing_ok=True)

    # -- results -------------------------------------------------------------------------------------------
    def log(self) -> list[dict[str, Any]]:
        p = self.dir / "log.json"
        return json.loads(p.read_text()) if p.is_file() else []

    def summary(self) -> dict[str, Any]:
        return read_json(self.dir / "summary.json")

    def records(self):
        import pandas as pd

        return pd.read_parquet(self.dir / "records.parquet")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_spec(folder: Path) -> RunSpec:
    data = read_json(Path(folder) / "spec.json")
    data.pop("run_id", None)
    return spec_from_dict(data)
