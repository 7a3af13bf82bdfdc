"""The command that restarts dockerd on this host, and running it.

The tool never restarts the daemon itself: it runs the host's own service manager (or
the operator's --restart-command) as an argv list, never through a shell; whether the
daemon came back, and in which store, is engine/daemon_wait.py's to see.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from migrate.errors import BlockedError, RestartFailed, UsageError
from migrate.host import systemd
from migrate.host.processes import process_start_time

RESTART_COMMAND_HINT = (
    "pass --restart-command with the command that restarts dockerd on this host, "
    "e.g. --restart-command 'systemctl restart docker'"
)
SYSV_INIT_SCRIPT = Path("/etc/init.d/docker")
STDERR_TAIL_LINES = 15


def default_restart_command() -> tuple[str, ...]:
    """The host's own way to restart dockerd, or a BlockedError asking for --restart-command."""
    if systemd.booted() and shutil.which("systemctl") and systemd.knows_docker():
        return ("systemctl", "restart", "docker")
    if shutil.which("service") and SYSV_INIT_SCRIPT.exists():
        return ("service", "docker", "restart")
    raise BlockedError(
        "cannot tell how dockerd is restarted on this host: systemd is not running a "
        "docker.service and there is no /etc/init.d/docker",
        RESTART_COMMAND_HINT,
    )


def resolve_restart_command(
    explicit: Sequence[str] | None = None, recorded: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The restart command to run: the operator's, else the journaled one, else the host's.

    An explicit command always wins: it is how an operator fixes a journaled one that
    leaves the daemon down.
    """
    if explicit:
        return tuple(explicit)
    if recorded:
        return tuple(str(word) for word in recorded)
    return default_restart_command()


def parse_restart_command(text: str) -> tuple[str, ...]:
    """Split the operator's --restart-command like a POSIX shell would, without running one."""
    try:
        argv = tuple(shlex.split(text))
    except ValueError as error:
        raise UsageError(f"cannot parse --restart-command {text!r}: {error}",
                         "quote it like a shell command line, e.g. 'rc-service docker restart'"
                         ) from error
    if not argv:
        raise UsageError("--restart-command is empty", RESTART_COMMAND_HINT)
    return argv


# Read back from the end of the command's output: enough for STDERR_TAIL_LINES lines.
OUTPUT_TAIL_BYTES = 64 * 1024


def _read_tail(output: IO[bytes]) -> str:
    output.seek(0, os.SEEK_END)
    output.seek(max(0, output.tell() - OUTPUT_TAIL_BYTES))
    return output.read(OUTPUT_TAIL_BYTES).decode(errors="replace")


def _tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(kept)


def run_restart_command(argv: Sequence[str], timeout: float,
                        started: Callable[[int, int], None] | None = None) -> None:
    """Run the restart command; any failure to run it or a non-zero exit is RestartFailed.

    `started(pid, start_time)` is called once it runs and before it is waited for, so the
    caller can journal it: the command may outlive a killed CLI, and a resumed run must
    wait for it instead of racing it with a second restart.
    """
    shown = shlex.join(argv)
    if not argv:
        raise UsageError("the restart command is empty", RESTART_COMMAND_HINT)
    # Output goes to files, not pipes: a child the command leaves in the background (an init
    # script's daemon) may hold them open for ever, and waiting for a pipe's end ignored the
    # deadline; closing a pipe under it would kill it (SIGPIPE) at its next log line.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        returncode = _run_within(argv, shown, timeout, started, out, err)
        if returncode != 0:
            tail = _tail(_read_tail(err)) or _tail(_read_tail(out)) or "(no output)"
            raise RestartFailed(
                f"the restart command `{shown}` exited with status {returncode}:\n{tail}",
                "check `journalctl -u docker` (or the daemon log) for why dockerd did not "
                "start; after several quick restarts systemd may need `systemctl reset-failed "
                "docker`",
            )


def _run_within(argv: Sequence[str], shown: str, timeout: float,
                started: Callable[[int, int], None] | None, out: IO[bytes], err: IO[bytes],
                ) -> int:
    """The command's exit status once it has exited; at the deadline, its process group
    (the command and whatever it started there, nothing else) is killed: RestartFailed."""
    try:
        # A process group of its own, so that a timeout ends what the command started too.
        process = subprocess.Popen(list(argv), stdout=out, stderr=err,
                                   stdin=subprocess.DEVNULL, process_group=0)
    except FileNotFoundError as error:
        raise RestartFailed(f"the restart command `{shown}` was not found: {error}",
                            RESTART_COMMAND_HINT) from error
    except PermissionError as error:
        raise RestartFailed(f"the restart command `{shown}` cannot be run: {error}",
                            "run containerd-migrate as root or fix --restart-command") from error
    try:
        if started is not None:
            start_time = process_start_time(process.pid)
            if start_time is not None:
                started(process.pid, start_time)
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired as error:
        with contextlib.suppress(ProcessLookupError):  # the group ended meanwhile
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()  # the command itself, dead: no pipe to wait on
        raise RestartFailed(
            f"the restart command `{shown}` did not finish within {timeout:.0f} s",
            "check `journalctl -u docker` for what dockerd is waiting on; raise "
            "--restart-timeout if this host is just slow",
        ) from error


def run_restart_with_recovery(argv: Sequence[str], timeout: float,
                              started: Callable[[int, int], None] | None = None,
                              recover: Callable[[RestartFailed], bool] | None = None) -> None:
    """`run_restart_command`, once more if it failed and `recover(failure)` cleared the
    cause (systemd's start limit: host/systemd.py). Only one retry: a cause that comes
    back is the operator's to see."""
    try:
        run_restart_command(argv, timeout, started)
    except RestartFailed as failure:
        if recover is None or not recover(failure):
            raise
        run_restart_command(argv, timeout, started)
