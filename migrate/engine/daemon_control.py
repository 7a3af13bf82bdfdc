"""Restarting dockerd and waiting until it answers in the image store we asked for.

The tool never restarts the daemon itself: it runs the host's own service manager (or
the operator's --restart-command) as an argv list, then polls the API. A daemon that
answers is not enough: a typo in the feature name, or a `--feature` flag on the dockerd
command line, makes it start happily in the wrong store (docs/engine-facts.md).
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from migrate.engine.client import PROBE_TIMEOUT, probe
from migrate.errors import BlockedError, MigrateError, RestartFailed, UsageError
from migrate.models import EngineInfo, Store

RESTART_COMMAND_HINT = (
    "pass --restart-command with the command that restarts dockerd on this host, "
    "e.g. --restart-command 'systemctl restart docker'"
)
# Where systemd looks for unit files; a docker.service in any of them is "known".
SYSTEMD_UNIT_DIRS: tuple[Path, ...] = (
    Path("/etc/systemd/system"),
    Path("/run/systemd/system"),
    Path("/usr/local/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
    Path("/lib/systemd/system"),
)
# sd_booted(3): this directory exists only when systemd is PID 1.
SYSTEMD_RUNTIME_DIR = Path("/run/systemd/system")
SYSV_INIT_SCRIPT = Path("/etc/init.d/docker")
STDERR_TAIL_LINES = 15
WRONG_STORE_GRACE = 10.0
DEFAULT_RESTART_TIMEOUT = 120.0


def _systemd_knows_docker() -> bool:
    return any((folder / "docker.service").exists() for folder in SYSTEMD_UNIT_DIRS)


def default_restart_command() -> tuple[str, ...]:
    """The host's own way to restart dockerd, or a UsageError asking for --restart-command."""
    if SYSTEMD_RUNTIME_DIR.is_dir() and shutil.which("systemctl") and _systemd_knows_docker():
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


def resolve_restart_timeout(explicit: float | None = None, recorded: object = None) -> float:
    """Seconds to wait for the daemon: the operator's, else the journaled one, else 120.

    Like the command, an explicit value wins: a journaled timeout too short for this host
    must not make every rollback fail the same way.
    """
    if explicit is not None:
        return float(explicit)
    if isinstance(recorded, int | float) and not isinstance(recorded, bool) and recorded > 0 \
            and math.isfinite(recorded):
        return float(recorded)
    return DEFAULT_RESTART_TIMEOUT


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


def process_start_time(pid: int, proc_root: str = "/proc") -> int | None:
    """Start time (clock ticks since boot) of a live process; None when it is gone or a
    zombie. With the pid it names one process: a reused pid has another start time."""
    try:
        stat_line = (Path(proc_root) / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat_line.rsplit(")", 1)[-1].split()
    if len(fields) < 20 or fields[0] == "Z":
        return None
    return int(fields[19])


def wait_for_exit(pid: int, started: int, timeout: float, poll: float = 0.2) -> bool:
    """Wait until process `pid` (started at `started`) has ended; False at the deadline."""
    deadline = time.monotonic() + timeout
    while process_start_time(pid) == started:
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


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


def current_info(host: str) -> EngineInfo | None:
    """What the daemon at `host` answers right now; None when it does not answer."""
    try:
        return probe(host)
    except MigrateError:
        return None


def wait_for_daemon(
    host: str, want: Store, timeout: float, poll: float = 0.25,
    wrong_store_grace: float = WRONG_STORE_GRACE,
) -> EngineInfo:
    """Poll `host` until the API answers in store `want`; RestartFailed at the deadline.

    A daemon that keeps answering in the other store for `wrong_store_grace` seconds
    fails early: the grace only covers an asynchronous restart command whose old daemon
    still answers for a moment, and waiting out the full timeout would be pure downtime.
    """
    deadline = time.monotonic() + timeout
    last_info: EngineInfo | None = None
    last_error: str = ""
    wrong_since: float | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            info = probe(host, max(0.2, min(PROBE_TIMEOUT, remaining)))
        except MigrateError as error:
            last_info, last_error, wrong_since = None, error.message, None
        else:
            if info.store == want:
                return info
            last_info = info
            wrong_since = wrong_since if wrong_since is not None else time.monotonic()
            if time.monotonic() - wrong_since >= wrong_store_grace:
                break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(poll, remaining))
    if last_info is None:
        raise RestartFailed(
            f"the Docker daemon at {host} did not answer within {timeout:.0f} s after the "
            f"restart (last error: {last_error})",
            "see why dockerd did not start in `journalctl -u docker` (or the daemon log, "
            "e.g. /var/log/docker.log); a daemon.json it rejects makes it exit at once",
        )
    raise RestartFailed(
        f"the Docker daemon at {host} came back in the {last_info.store.value} image store, "
        f"not the {want.value} store",
        _wrong_store_hint(want),
    )


def _wrong_store_hint(want: Store) -> str:
    if want is Store.CONTAINERD:
        return (
            "dockerd ignored the containerd-snapshotter feature: check daemon.json for a typo "
            "in the feature name, and the dockerd command line (systemd ExecStart and drop-ins, "
            "/etc/default/docker) for a `--feature` flag, which overrides daemon.json"
        )
    return (
        "dockerd still enables the containerd-snapshotter feature: check for a `--feature "
        "containerd-snapshotter` flag on the dockerd command line (systemd ExecStart and "
        "drop-ins) and that daemon.json is the file this dockerd reads (--config-file)"
    )

