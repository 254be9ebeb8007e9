"""User-facing errors.

Anything the user can fix (a bad path, an unknown name, a malformed file) raises :class:`SegarenaError`.
The CLI turns it into one line on stderr and exit code 2, with no traceback. Bugs stay ordinary exceptions.
"""
from __future__ import annotations


class SegarenaError(Exception):
    """A problem the user can fix. ``str(err)`` is one line: what is wrong, where, and the fix."""

    exit_code = 2

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(message if not fix else f"{message} — {fix}")


class DataError(SegarenaError):
    """A dataset file or folder is missing, unreadable or inconsistent."""


class ConfigError(SegarenaError):
    """A config value, override or spec file is invalid."""


class RunFailed(Exception):
    """A run stopped for a recorded reason (NaN loss, ...). Fails loud inside a run, soft across a grid."""
