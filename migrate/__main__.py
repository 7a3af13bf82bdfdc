"""`python -m migrate` and the `containerd-migrate` entry point.

Importing the CLI (click, pydantic, the docker SDK) takes a noticeable moment; a Ctrl-C
during it must end like any other interruption (exit 130, one line, no traceback), so a
minimal handler is installed before anything heavy is imported.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

from migrate.errors import ExitCode
from migrate.support import failpoints

INTERRUPTED_AT_START = (
    "error: interrupted while starting; nothing was changed\n"
    "hint: run the same command again\n"
)


def _interrupted_at_start(signum: int, frame: FrameType | None) -> None:
    sys.stderr.write(INTERRUPTED_AT_START)
    sys.stderr.flush()
    os._exit(int(ExitCode.INTERRUPTED))


def entry() -> None:
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.SIG_IGN:  # started ignoring SIGINT (nohup, &): keep that
        signal.signal(signal.SIGINT, _interrupted_at_start)
    failpoints.hit("start-up")
    from migrate.cli import main  # noqa: PLC0415  (after the handler, on purpose)

    if previous is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, previous)
    main()


if __name__ == "__main__":
    entry()
