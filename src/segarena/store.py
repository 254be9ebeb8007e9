"""The results store: one folder per run id; all writes atomic; a finished run is never redone.

``<results>/segarena-results.json``           marks the folder as a segarena results store
``<results>/splits/<dataset>__<key>.json``     the dataset's folds, made once per (dataset, options, limit, folds,
                                               seed, duplicate policy, split); its digest is part of each run id
``<results>/runs/<run_name>/``                 one run (``<model>__<dataset>__f<fold>__s<seed>__<hash>``)
    spec.json        the resolved RunSpec (with its run_id)      status.json   running | complete | failed (+ error)
    log.json         per-epoch training log                      split.json    the case ids of train/val/test
    records.parquet  per-case, per-class test records            summary.json  named reductions + timings
    predictions.npz  test predictions at network size (report)   checkpoint/   model.safetensors + model.json
    state/last.pt    resume state (weights_only-loadable)        .lock         held while a process runs it
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import SegarenaError
from ._io import read_json, write_json
from .config import RunSpec, spec_from_dict, to_dict

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
        try:
            (self.path / "runs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unwritable(self.path, exc) from None

    def log_command(self, argv: list[str]) -> None:
        """Append the command line to ``commands.log`` (the report prints the commands behind its numbers)."""
        import shlex

        line = time.strftime("%Y-%m-%d %H:%M:%S") + "  segarena " + " ".join(shlex.quote(a) for a in argv)
        try:
            with open(self.path / "commands.log", "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError as exc:
            raise _unwritable(self.path, exc) from None

    def split_path(self, spec: RunSpec) -> Path:
        """Where the split of ``spec``'s data lives in this results folder (one file shared by its folds)."""
        return split_path(self.path, spec)

    def bind(self, spec: RunSpec) -> RunSpec:
        """``spec`` with the digest of its split in this folder (so with its final run id), once the split file
        exists; unchanged before that (no run on that split can exist yet) or when it is already bound."""
        if spec.split_digest is not None:
            return spec
        path = self.split_path(spec)
        if not path.is_file():
            return spec
        from dataclasses import replace

        from .data.splits import split_digest

        try:
            record = read_json(path)
            return replace(spec, split_digest=split_digest(record))
        except (KeyError, TypeError, AttributeError, ValueError, OSError):
            raise SegarenaError(f"split file {path} is damaged",
                                fix="delete it to have the split recomputed (runs on it keep their folders)") from None

    def run(self, spec: RunSpec) -> RunStore:
        """The run folder of ``spec`` (bound to its split, see :meth:`bind`)."""
        from ._paths import inside

        spec = self.bind(spec)
        return RunStore(inside(self.path / "runs", spec.run_name, what="run name"), spec)

    def run_dirs(self) -> list[Path]:
        return sorted(p for p in (self.path / "runs").iterdir() if p.is_dir() and (p / "spec.json").is_file())

    def scan(self, check_records: bool = True) -> Scan:
        """Every run folder, read defensively: see :func:`scan_runs`."""
        return scan_runs(self.path, check_records=check_records)


def split_path(results: str | os.PathLike, spec: RunSpec) -> Path:
    """``<results>/splits/<dataset>__<key>.json``: the split file of ``spec``'s data (the folder need not exist)."""
    from ._paths import file_part

    return Path(results).expanduser() / "splits" / f"{file_part(spec.data.name, 80)}__{split_key(spec)}.json"


def split_key(spec: RunSpec) -> str:
    """What decides a dataset's split, hashed: the data config except its local root, the fold (all folds share
    one split) and any bound digest."""
    import hashlib

    d = to_dict(spec.data)
    for k in ("root", "fold"):
        d.pop(k, None)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


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
        """status.json, with a ``running`` run whose process is gone read as ``interrupted`` (pid + start time)."""
        p = self.dir / "status.json"
        try:
            st = json.loads(p.read_text()) if p.is_file() else {"state": "pending"}
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            return {"state": "pending"}
        if not isinstance(st, dict):
            return {"state": "pending"}
        return {**st, "state": live_state(st)}

    def is_complete(self) -> bool:
        return self.status().get("state") == "complete" and (self.dir / "summary.json").is_file()

    def set_status(self, state: str, **extra: Any) -> None:
        if state == "running":  # who runs it, so a reader can tell a live run from a killed one
            extra = {"pid": os.getpid(), "host": socket.gethostname(), "pid_start": process_start(os.getpid()),
                     **extra}
        write_json(self.dir / "status.json", {"state": state, "time": time.time(), **extra})

    def init(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unwritable(self.dir.parent, exc) from None
        spec_file = self.dir / "spec.json"
        if not spec_file.is_file():
            write_json(spec_file, {"run_id": self.spec.run_id, **to_dict(self.spec)})

    # -- lock: one process per run ---------------------------------------------------------------------------
    def acquire(self) -> bool:
        """Take the run's lock; False if a live process on this host holds it. Stale locks are taken over."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unwritable(self.dir.parent, exc) from None
        lock = self.dir / ".lock"
        me = f"{socket.gethostname()}:{os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                with os.fdopen(fd, "w") as fh:
                    fh.write(me)
                return True
            except PermissionError as exc:
                raise _unwritable(self.dir, exc) from None
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise _unwritable(self.dir, exc) from None
                holder = lock.read_text().strip() if lock.exists() else ""
                host, _, pid = holder.partition(":")
                live = pid.isdigit() and _alive(int(pid)) and not _zombie(int(pid))
                if host == socket.gethostname() and live and int(pid) != os.getpid():
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


def _unwritable(folder: Path, exc: OSError) -> SegarenaError:
    """One-line error for a results folder that cannot be written (read-only, full, permissions)."""
    from ._io import _fix_for

    return SegarenaError(f"cannot write into the results folder {folder}: {(exc.strerror or str(exc)).lower()}",
                         fix=f"{_fix_for(exc)}, e.g. --results another/folder; nothing was written")


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or None where unknown: with the
    pid it identifies a process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid: object, start: object = None, host: object = None) -> bool:
    """Whether the process that wrote (pid, start, host) still runs; a process on another host counts as alive
    (it cannot be checked from here)."""
    if host and host != socket.gethostname():
        return True
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not _alive(pid) or _zombie(pid):
        return False
    now = process_start(pid)
    return start is None or now is None or now == start


def live_state(status: dict[str, Any]) -> str:
    """The recorded state, except ``running`` -> ``interrupted`` when the recorded process is gone."""
    state = status.get("state", "pending")
    if state == "running" and "pid" in status and not process_alive(status.get("pid"), status.get("pid_start"),
                                                                   status.get("host")):
        return "interrupted"
    return str(state)


def _zombie(pid: int) -> bool:
    """A dead process not yet reaped (its orphan may wait under a container's pid 1 that never reaps)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X")
    except (OSError, ValueError, IndexError):
        return False


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


# ---- reading a results folder that may be damaged ---------------------------------------------------------------
@dataclass
class Problem:
    """A damaged or partial run: which folder, which file, what is wrong, and the fix."""

    run: str
    file: str
    what: str
    fix: str
    #: ``damaged`` (the run is left out), ``partial`` (kept, a secondary file is missing or damaged) or
    #: ``interrupted`` (its process is gone)
    kind: str = "damaged"

    def line(self) -> str:
        return f"{self.run}: {self.file} {self.what} — {self.fix}"


@dataclass
class RunInfo:
    """A run whose files could be read: its folder, spec (as stored), status (live state), and, when complete,
    its summary and log."""

    dir: Path
    spec: dict[str, Any]
    status: dict[str, Any]
    summary: dict[str, Any] | None = None
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> str:
        return str(self.status.get("state", "pending"))


@dataclass
class Scan:
    runs: list[RunInfo]
    problems: list[Problem]

    @property
    def complete(self) -> list[RunInfo]:
        return [r for r in self.runs if r.summary is not None]


_REDO = "delete this run folder and rerun the command that made it (only this run is redone)"


def _read_json_file(path: Path) -> tuple[Any, str | None]:
    """(content, None), or (None, what is wrong with the file)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, "is missing"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"is damaged (not valid JSON: {str(exc).splitlines()[0]})"
    except OSError as exc:
        return None, f"cannot be read ({(exc.strerror or str(exc)).lower()})"


def _parquet_problem(path: Path) -> str | None:
    if not path.is_file():
        return "is missing"
    try:
        import pyarrow.parquet as pq

        pq.ParquetFile(path).metadata  # noqa: B018 - reads the footer: a truncated file fails here
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several classes for damaged files
        return f"is damaged ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return None


def scan_runs(results: str | os.PathLike, check_records: bool = True) -> Scan:
    """Read every run folder of a results store without ever raising on a damaged file: good runs (complete ones
    with their summary and log) plus one :class:`Problem` per damaged or partial file, each with its fix.
    ``report``, ``study status`` and ``crossval`` share this so they agree on what is usable."""
    root = Path(results) / "runs"
    runs: list[RunInfo] = []
    problems: list[Problem] = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    for d in folders:
        spec, bad = _read_json_file(d / "spec.json")
        if bad or not isinstance(spec, dict) or not isinstance(spec.get("model"), dict) or \
                not isinstance(spec.get("data"), dict):
            if bad == "is missing" and not any(p for p in d.iterdir() if not p.name.startswith(".")):
                continue  # an empty folder (a run that had not started): nothing to report
            problems.append(Problem(d.name, "spec.json", bad or "is not a run spec", _REDO))
            continue
        status, bad = _read_json_file(d / "status.json")
        if bad == "is missing":
            status = {"state": "pending"}
        elif bad or not isinstance(status, dict):
            problems.append(Problem(d.name, "status.json", bad or "is not a status record",
                                    "delete status.json and rerun the command: the run resumes from its saved state"))
            continue
        status = {**status, "state": live_state(status)}
        info = RunInfo(d, spec, status)
        if info.state == "complete":
            summary, bad = _read_json_file(d / "summary.json")
            if bad or not isinstance(summary, dict) or not isinstance(summary.get("metrics"), dict):
                problems.append(Problem(d.name, "summary.json", bad or "lacks its metrics", _REDO))
                continue
            if check_records and not summary.get("validation_only"):
                bad = _parquet_problem(d / "records.parquet")
                if bad:
                    problems.append(Problem(d.name, "records.parquet", bad, _REDO))
                    continue
            log, bad = _read_json_file(d / "log.json")
            if bad and bad != "is missing":
                problems.append(Problem(d.name, "log.json", bad + " (training curves left out)",
                                        "delete log.json to silence this; the scores are unaffected", "partial"))
            info.summary, info.log = summary, log if isinstance(log, list) else []
            external = isinstance(summary, dict) and summary.get("family") == "external"
            if not external and not (d / "checkpoint" / "model.safetensors").is_file():  # add-method: no model
                problems.append(Problem(d.name, "checkpoint/model.safetensors",
                                        "is missing (scores kept; predict, export and crossval cannot use this run)",
                                        "to get the weights back, " + _REDO, "partial"))
        elif info.state == "interrupted":
            problems.append(Problem(d.name, "status.json",
                                    f"says running, but its process (pid {status.get('pid')}) is gone: interrupted",
                                    "rerun the command: the run resumes from its last saved epoch", "interrupted"))
        runs.append(info)
    return Scan(runs, problems)
