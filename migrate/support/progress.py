"""Byte progress: a bar on a terminal that reports a size, a log line every few seconds
anywhere else (a pty without a size, Ansible, a pipe to a file), nothing with -q.

While a bar is drawn, log lines are written through it (tqdm.write), so a line never lands
in the middle of the bar.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from migrate.support.logconfig import get_logger, write_logs_through
from migrate.support.sizes import human_bytes

if TYPE_CHECKING:
    from tqdm import tqdm

log = get_logger(__name__)

_enabled = True
# The rate is averaged over the whole bar, not the last updates: a `docker save` sends
# nothing while it stages and then bursts, and a moving average makes the ETA swing from
# hours to seconds in the first second. Nothing is drawn before DELAY seconds.
SMOOTHING = 0.0
DELAY = 1.0
# Off a sized terminal: one progress line per this many seconds of a long phase.
LOG_EVERY_SECONDS = 5.0


def set_enabled(enabled: bool) -> None:
    global _enabled  # noqa: PLW0603 - one process-wide switch set by the CLI
    _enabled = enabled


class ByteProgress(Protocol):
    def advance(self, nbytes: int) -> None: ...

    def describe(self, text: str) -> None: ...


class _Bar:
    def __init__(self, bar: tqdm[object] | None):
        self._bar = bar

    def advance(self, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.update(nbytes)

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(text, refresh=False)


def bar_settings(label: str, total: int | None) -> dict[str, Any] | None:
    """tqdm's arguments for a byte bar, or None when there is nothing to show (pure)."""
    if total is not None and total <= 0:
        return None  # nothing to transfer: an empty `export: 0.00B` bar says nothing
    return {"total": total or None, "desc": label, "unit": "B", "unit_scale": True,
            "unit_divisor": 1000, "smoothing": SMOOTHING, "delay": DELAY, "leave": True,
            "dynamic_ncols": True}


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class LoggedProgress:
    """A byte progress without a bar: every `every` seconds, one log line with the bytes
    done, the rate (over the whole transfer, as the bar's) and the time left when the total
    is known."""

    def __init__(self, label: str, total: int | None, every: float = LOG_EVERY_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 emit: Callable[..., Any] | None = None):
        self._label, self._total, self._every, self._clock = label, total, every, clock
        self._emit = emit  # None: the logger, looked up at the first line (see logconfig)
        self._started = self._last = clock()
        self._done = 0
        self._detail = ""

    def advance(self, nbytes: int) -> None:
        self._done += nbytes
        now = self._clock()
        if now - self._last < self._every:
            return
        self._last = now
        rate = self._done / max(now - self._started, 1e-9)
        fields: dict[str, Any] = {"bytes_done": self._done,
                                  "rate": f"{human_bytes(int(rate))}/s"}
        if self._total:
            fields["bytes_total"] = self._total
            fields["percent"] = round(100 * min(self._done / self._total, 1.0))
            if rate > 0:
                fields["eta"] = _duration(max(self._total - self._done, 0) / rate)
        if self._detail:
            fields["at"] = self._detail
        (self._emit or log.info)(f"{self._label}: progress", **fields)

    def describe(self, text: str) -> None:
        self._detail = text


def sized_terminal(stream: TextIO) -> bool:
    """A terminal that reports its size: a bar can be drawn there (pure but for the ioctl)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):
        return False


@contextmanager
def byte_bar(label: str, total: int | None) -> Iterator[ByteProgress]:
    settings = bar_settings(label, total) if _enabled else None
    if settings is None:
        yield _Bar(None)
        return
    if not sized_terminal(sys.stderr):
        yield LoggedProgress(label, total)
        return
    # Imported here: tqdm costs every command 50 ms at start-up, and only a terminal
    # shows a bar.
    from tqdm import tqdm  # noqa: PLC0415

    bar: tqdm[object] = tqdm(file=sys.stderr, **settings)
    write_logs_through(lambda line, stream: tqdm.write(line, file=stream))
    try:
        yield _Bar(bar)
    finally:
        write_logs_through(None)
        bar.close()
