"""Byte progress bars: visible on a terminal, silent in pipes, CI and with -q."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from tqdm import tqdm

_enabled = True


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


@contextmanager
def byte_bar(label: str, total: int | None) -> Iterator[ByteProgress]:
    show = _enabled and sys.stderr.isatty()
    bar: tqdm[object] | None = (
        tqdm(total=total or None, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
             file=sys.stderr, leave=True, dynamic_ncols=True)  # type: ignore[assignment]
        if show
        else None
    )
    try:
        yield _Bar(bar)
    finally:
        if bar is not None:
            bar.close()
