"""Processes by pid, read from /proc: one process for good is its pid plus its start time.

A pid alone is not a process: the kernel recycles it. The tool journals the pid AND the
start time of what it starts (the restart command, `ctr images import`, a rehearsal's
dockerd), and later waits for or stops a pid only while both still match.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

PROC = "/proc"
POLL = 0.1
# Field 22 of /proc/<pid>/stat is the start time; counted from field 3 (the state) on.
_START_TIME_FIELD = 19
_ENDED_STATES = ("Z", "X")


def stat_fields(pid: int, proc_root: str = PROC) -> list[str]:
    """/proc/<pid>/stat from field 3 (the state) on; [] when there is no such process."""
    try:
        stat = Path(proc_root, str(pid), "stat").read_text()
    except OSError:
        return []
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return stat.rpartition(")")[2].split()


def process_start_time(pid: int, proc_root: str = PROC) -> int | None:
    """Start time (clock ticks after boot) of a live process; None when it is gone or has
    exited (a zombie). With the pid it names one process: a reused pid has another."""
    fields = stat_fields(pid, proc_root)
    if len(fields) <= _START_TIME_FIELD or fields[0] in _ENDED_STATES:
        return None
    try:
        return int(fields[_START_TIME_FIELD])
    except ValueError:
        return None


def executable(pid: int, proc_root: str = PROC) -> Path | None:
    """The file a process runs (/proc/<pid>/exe); a deleted one once its package was
    upgraded under it. None when it cannot be read."""
    try:
        return Path(os.readlink(Path(proc_root, str(pid), "exe")))
    except OSError:
        return None


def command_line(pid: int, proc_root: str = PROC) -> tuple[bytes, ...] | None:
    """The argv of a live process; None when it is gone or has exited (a zombie)."""
    try:
        argv = Path(proc_root, str(pid), "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    fields = stat_fields(pid, proc_root)
    if not fields or fields[0] in _ENDED_STATES:
        return None
    return tuple(argv)


def alive_as(pid: int, started: int | None) -> bool:
    """Whether `pid` is still the process that started at `started` and has not exited. An
    exited child of ours (a zombie) is reaped here."""
    fields = stat_fields(pid)
    if started is None or len(fields) <= _START_TIME_FIELD \
            or fields[_START_TIME_FIELD] != str(started):
        return False
    if fields[0] in _ENDED_STATES:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def wait_for_exit(pid: int, started: int | None, timeout: float, poll: float = POLL) -> bool:
    """Wait until process `pid` (started at `started`) has ended; False at the deadline."""
    deadline = time.monotonic() + timeout
    while alive_as(pid, started):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


def stop_process(pid: int, started: int | None, timeout: float = 30.0) -> bool:
    """SIGTERM, then SIGKILL after `timeout`: only while `pid` is still the process that
    started at `started`. True when it was that process and is gone now."""
    if not alive_as(pid, started):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if wait_for_exit(pid, started, wait):
            return True
    return True
