"""Names that become paths: every name taken from a config, a manifest or a dataset (study names, run names, case
ids, output names) must stay inside the folder it is joined to.

Two tools: :func:`check_name` refuses a user-chosen name that is not one plain path component (so a study called
``../../escaped`` is a config error, not a file written elsewhere); :func:`file_part` turns a data-derived name
(a case id such as ``benign/benign (1)``) into a safe file-name fragment; :func:`inside` is the last guard where a
folder is built from a stored name.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ._errors import ConfigError, SegarenaError

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@-]+")


def name_problem(value: object) -> str | None:
    """Why ``value`` cannot be a single file/folder name, or None when it can."""
    if not isinstance(value, str) or not value:
        return f"expected a non-empty name, got {value!r}"
    if "/" in value or "\\" in value or "\0" in value:
        return f"{value!r} contains a path separator"
    if value in (".", "..") or value.startswith("."):
        return f"{value!r} starts with a dot (hidden or a parent folder)"
    if len(value) > 200:
        return f"{value[:20]!r}... is longer than 200 characters"
    return None


def check_name(value: object, what: str) -> str:
    """``value`` if it is one plain path component, else a :class:`ConfigError` naming ``what``."""
    problem = name_problem(value)
    if problem:
        raise ConfigError(f"{what}: {problem}", fix="use letters, digits, '-', '_' and '.' only, e.g. my-study")
    return str(value)


def file_part(value: object, limit: int = 80) -> str:
    """A fragment safe inside a file name: runs of other characters become ``_``; never empty, never a dot-name."""
    text = _UNSAFE.sub("_", str(value))[:limit].lstrip(".")
    return text or "_"


def inside(base: str | os.PathLike, *parts: str, what: str = "name") -> Path:
    """``base / parts``, refused unless the result (symlinks resolved) stays inside ``base``."""
    base = Path(base)
    path = base.joinpath(*parts)
    root = base.resolve()
    target = path.resolve()
    if target != root and root not in target.parents:
        raise SegarenaError(f"{what} {'/'.join(parts)!r} points outside {base}",
                            fix="fix or delete the file that holds this name; segarena only writes inside its folders")
    return path


def is_offline() -> bool:
    """True when ``SEGARENA_OFFLINE`` or ``HF_HUB_OFFLINE`` is set (to anything but ``0``): nothing may be downloaded.

    A foundation, because data (dataset downloads), models (weights, hub configs) and the study plan all ask it.
    """
    return any(os.environ.get(v, "") not in ("", "0") for v in ("SEGARENA_OFFLINE", "HF_HUB_OFFLINE"))
