"""Output that may go away: a closed terminal, `| head`, a `tee` that died.

A migration must never fail because nobody is reading its logs any more: the journal is
the record that matters. So stdout and stderr are wrapped once, at start-up: the first
write or flush that fails with an OSError (EPIPE, EIO) points that descriptor at
/dev/null, and everything written afterwards is dropped quietly. Nothing else changes.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO


class _SurvivingStream:
    """A text stream that outlives its reader (everything else is the wrapped stream's)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.lost = False

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self._stream.write(text)
            except OSError:
                self._lose()
        return len(text)

    def flush(self) -> None:
        if self.lost:
            return
        try:
            self._stream.flush()
        except OSError:
            self._lose()

    def _lose(self) -> None:
        self.lost = True
        # Later writes by anyone (tqdm, the interpreter's last flush) go to /dev/null.
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self._stream.fileno())
            finally:
                os.close(null)
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def survive_lost_output() -> None:
    """Wrap sys.stdout and sys.stderr (once) so that losing them never raises."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _SurvivingStream):
            setattr(sys, name, _SurvivingStream(stream))
