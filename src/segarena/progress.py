"""Progress output a person can read, in a terminal and in a log file.

* In a terminal (stderr is a TTY): a tqdm bar that redraws itself on one line.
* Otherwise (CI logs, ``> log.txt``, a pipe): no carriage-return redraws; one plain line when a step starts, a
  line each time another ``every`` percent (default 10) is done, and one when it ends -- at most ~12 lines per
  bar, whatever its length.

:func:`spinner` covers steps of unknown length (FLOP counting, a dataset check, an explanation): a ticking elapsed
time in a terminal, a start and an end line otherwise. Both write to stderr, so stdout stays parseable.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

T = TypeVar("T")


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


#: seconds a bar stays silent: steps that finish (or fail) sooner print nothing, so a bad input still gets its
#: one-line error and nothing else
DEFAULT_DELAY = 1.0


def _plural(unit: str) -> str:
    """``image`` -> ``images``, ``batch`` -> ``batches``, ``epoch`` -> ``epochs`` (log lines read "50/500
    images"; tqdm shows rates)."""
    if unit == "it" or unit.endswith("s"):
        return unit
    return unit + ("es" if unit.endswith(("x", "tch", "sh")) else "s")


class LineProgress:
    """A tqdm-like bar for non-terminal output: a line at start, at every ``every`` percent, and at the end.

    Silent for the first ``delay`` seconds (default :data:`DEFAULT_DELAY`); the start line is written with the
    first line after that. Nothing is written when the loop ends by an exception."""

    def __init__(self, iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", every: float = 10.0, stream: TextIO | None = None,
                 delay: float | None = None) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.every = desc, _plural(unit), every
        self.stream = stream or sys.stderr
        self.n, self.postfix, self.t0 = 0, "", time.time()
        self.delay = DEFAULT_DELAY if delay is None else delay
        self._next = every
        self._closed = False
        self._started = False

    def _emit(self, text: str) -> None:
        if not self._started:
            if time.time() - self.t0 < self.delay:
                return
            self._started = True
            print(f"{self.desc}: started" + (f" ({self.total} {self.unit})" if self.total else ""),
                  file=self.stream, flush=True)
        print(text, file=self.stream, flush=True)

    def _line(self) -> str:
        elapsed = time.time() - self.t0
        pct = f"{100 * self.n / self.total:.0f}% " if self.total else ""
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        return f"{self.desc}: {pct}({count} {self.unit}, {elapsed:.0f}s)" + (f" {self.postfix}" if self.postfix else "")

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total:
            pct = 100 * self.n / self.total
            if pct >= self._next and self.n < self.total:
                self._emit(self._line())
                while self._next <= pct:
                    self._next += self.every

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in kw.items())

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._emit(self._line().replace(f"{self.desc}: ", f"{self.desc}: done ", 1))

    def __iter__(self) -> Iterator[T]:
        try:
            for item in self.iterable:  # type: ignore[union-attr]
                yield item
                self.update(1)
        except BaseException:
            self._closed = True  # a failing step: its error message is the one line the user needs
            raise
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True


class _Null:
    """A disabled bar: iterates, accepts every call, prints nothing."""

    def __init__(self, iterable: Iterable[T] | None = None) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[T]:
        return iter(self.iterable or ())

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None

    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def progress_bar(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
                 enabled: bool = True, unit: str = "it", leave: bool = False, every: float = 10.0,
                 stream: TextIO | None = None, delay: float | None = None) -> Any:
    """A tqdm bar in a terminal, a :class:`LineProgress` elsewhere, nothing when ``enabled`` is false."""
    if not enabled:
        return _Null(iterable)
    stream = stream or sys.stderr
    if is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, file=stream, dynamic_ncols=True,
                    delay=DEFAULT_DELAY if delay is None else delay)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, every=every, stream=stream, delay=delay)


@contextmanager
def spinner(desc: str, *, enabled: bool = True, stream: TextIO | None = None, interval: float = 0.5,
            delay: float = 0.5) -> Iterator[None]:
    """Show that a step of unknown length is running: ``desc … 12s`` ticking in a terminal (one line, erased
    at the end), a start and an end line elsewhere. Nothing is shown for steps shorter than ``delay`` seconds,
    so a command that fails at once still prints its one-line error and nothing else."""
    if not enabled:
        yield
        return
    stream = stream or sys.stderr
    t0 = time.time()
    tty = is_terminal(stream)
    stop = threading.Event()
    shown = threading.Event()
    frames = "|/-\\"

    def tick() -> None:
        if stop.wait(delay):
            return
        shown.set()
        if not tty:
            print(f"{desc} …", file=stream, flush=True)
            return
        i = 0
        while True:
            stream.write(f"\r{desc} {frames[i % 4]} {time.time() - t0:.0f}s")
            stream.flush()
            i += 1
            if stop.wait(interval):
                return

    th = threading.Thread(target=tick, daemon=True)
    th.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        stop.set()
        th.join()
        if shown.is_set():
            if tty:
                stream.write("\r\033[K")
                stream.flush()
            elif ok:
                print(f"{desc}: done in {time.time() - t0:.0f}s", file=stream, flush=True)


__all__ = ["DEFAULT_DELAY", "LineProgress", "is_terminal", "progress_bar", "spinner"]
