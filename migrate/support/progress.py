"""Byte progress bars: visible on a terminal, silent in pipes, CI and with -q."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tqdm import tqdm

_enabled = True
# The rate is averaged over the whole bar, not the last updates: a `docker save` sends
# nothing while it stages and then bursts, and a moving average makes the ETA swing from
# hours to seconds in the first second. Nothing is drawn before DELAY seconds.
SMOOTHING = 0.0
DELAY = 1.0


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


@contextmanager
def byte_bar(label: str, total: int | None) -> Iterator[ByteProgress]:
    settings = bar_settings(label, total) if _enabled and sys.stderr.isatty() else None
    bar: tqdm[object] | None = None
    if settings is not None:
        # Imported here: tqdm costs every command 50 ms at start-up, and only a terminal
        # shows a bar.
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(file=sys.stderr, **settings)
    try:
        yield _Bar(bar)
    finally:
        if bar is not None:
            bar.close()
