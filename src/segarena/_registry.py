"""One generic registry, used for models, datasets, losses and augmentation presets.

Registration happens through a decorator at import time; a duplicate name is a programming error and raises.
Looking up an unknown name raises a user error that suggests the closest registered names.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ._errors import SegarenaError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> entry mapping filled by :meth:`register`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> Callable[[T], T] | T:
        """Register ``entry`` under ``name``; usable as ``@registry.register("name")``."""

        def _add(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return _add(entry) if entry is not None else _add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise SegarenaError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(self._entries)[:20])}"
        return f"unknown {self.kind} {name!r}: {hint} (list them with `segarena {self.kind}s list`)"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(k, self._entries[k]) for k in self.names()]
