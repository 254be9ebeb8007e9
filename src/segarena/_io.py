"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A crash or a full disk leaves either the old file or the new one, never a half-written file. The file gets the
mode an ordinary ``open()`` would give it (0666 less the umask): ``mkstemp`` creates 0600, which would hide reports,
predictions and bundles from the user's group and from the other nodes of a cluster.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._errors import SegarenaError


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the real suffix goes last: writers such as np.save/np.savez append theirs when it is missing
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
        finally:
            os.close(fd)
    except OSError as exc:
        raise SegarenaError(f"cannot write into {path.parent}: {(exc.strerror or str(exc)).lower()}",
                            fix=_fix_for(exc)) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
            # again: writers that replace the file themselves (safetensors, some savers) create it 0600
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise SegarenaError(f"writing {path} failed: {(exc.strerror or str(exc)).lower()}",
                            fix=f"{_fix_for(exc)}; nothing was overwritten") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read from /proc on Linux; elsewhere set and restored under a lock)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _fix_for(exc: OSError) -> str:
    """What to do about a failed write, by its cause: permissions, a full disk, or anything else."""
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose a writable folder or fix its permissions"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space or choose a folder on another disk"
    return "check the folder or choose another one"


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None], suffix: str = "") -> None:
    """Call ``writer(tmp_path)`` and rename the result onto ``path``."""
    with atomic_path(path, suffix=suffix) as tmp:
        writer(tmp)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SegarenaError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SegarenaError(f"{path} is not valid JSON ({exc})", fix="delete it to have it rebuilt") from None


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
