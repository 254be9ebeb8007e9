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
        #: prefix -> (resolver, pattern, examples): names built on demand, e.g. ``smp:<Arch>:<encoder>``
        self._resolvers: dict[str, tuple[Callable[[str], T], str, tuple[str, ...]]] = {}

    def add_resolver(self, prefix: str, resolver: Callable[[str], T], pattern: str,
                     examples: tuple[str, ...] = ()) -> None:
        """Names starting with ``prefix`` are built by ``resolver(name)`` on first lookup (then cached like a
        registered entry); ``resolver`` raises a user error for a name it cannot build. ``pattern`` documents the
        name form in error messages and listings; ``examples`` are names that must resolve (contract tests)."""
        if prefix in self._resolvers:
            raise KeyError(f"{self.kind} name prefix {prefix!r} is registered twice")
        self._resolvers[prefix] = (resolver, pattern, tuple(examples))

    def patterns(self) -> list[tuple[str, tuple[str, ...]]]:
        """``(pattern, examples)`` of every name resolver."""
        return [(pattern, examples) for _, pattern, examples in self._resolvers.values()]

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
            pass
        for prefix, (resolver, _, _) in self._resolvers.items():
            if isinstance(name, str) and name.startswith(prefix):
                entry = resolver(name)
                self._entries.setdefault(name, entry)
                return self._entries[name]
        raise SegarenaError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(self._entries)[:20])}"
        forms = "; or by name: " + ", ".join(p for p, _ in self.patterns()) if self._resolvers else ""
        return f"unknown {self.kind} {name!r}: {hint}{forms} (list them with `segarena {self.kind}s list`)"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if name in self._entries:
            return True
        if isinstance(name, str) and any(name.startswith(p) for p in self._resolvers):
            try:
                self.get(name)
            except SegarenaError:
                return False
            return True
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(k, self._entries[k]) for k in self.names()]
