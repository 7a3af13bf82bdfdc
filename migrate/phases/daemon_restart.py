"""Restarting dockerd into a store, as the restart phase (into containerd) and the switch's
undo (back to legacy) both do: one procedure, so both journal and recover the same way.

Not a phase: the phases that restart the daemon share it (a phase never imports another).
A restart command outlives a CLI killed under it, so its pid and start time are journaled
before anything waits for it, and whoever resumes waits for a journaled one that still runs
(`wait_for_journaled_restarts`) instead of starting a second daemon beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from migrate.engine import daemon_wait
from migrate.errors import RestartFailed
from migrate.host import processes, restart_command, systemd
from migrate.models import EngineInfo, Store
from migrate.support import failpoints
from migrate.support.logconfig import get_logger

log = get_logger(__name__)

# Time left for the daemon to answer even when the restart command used up the budget.
MIN_WAIT = 10.0


def restart_into(store: Store, host: str, argv: Sequence[str], timeout: float,
                 checkpoint: Callable[[Mapping[str, Any]], None], failpoint: str,
                 say: Callable[[str], None] | None = None) -> EngineInfo:
    """Run the restart command (its pid journaled through `checkpoint` before the wait;
    once more after systemd's start limit was reset), then wait for the daemon at `host`
    to answer in `store`, all within `timeout` (at least MIN_WAIT for the daemon)."""
    started = time.monotonic()

    def journal_pid(pid: int, start_time: int) -> None:
        checkpoint({"restart_pid": pid, "restart_started": start_time})
        failpoints.hit(failpoint)

    restart_command.run_restart_with_recovery(
        argv, timeout, started=journal_pid,
        recover=systemd.start_limit_recovery(argv, checkpoint, say))
    remaining = max(min(MIN_WAIT, timeout), timeout - (time.monotonic() - started))
    return daemon_wait.wait_for_daemon(host, store, remaining)


def wait_for_journaled_restarts(progress: Sequence[Mapping[str, Any]], timeout: float) -> None:
    """Wait (at most `timeout`) for every journaled restart command that still runs."""
    for record in progress:
        pid, started = record.get("restart_pid"), record.get("restart_started")
        if not isinstance(pid, int) or not isinstance(started, int):
            continue
        if processes.process_start_time(pid) != started:
            continue  # ended (or the pid now names another process)
        log.info("waiting for an earlier restart command", pid=pid)
        if not processes.wait_for_exit(pid, started, timeout):
            raise RestartFailed(
                f"the restart command started by an interrupted run (pid {pid}) is still "
                f"running after {timeout:.0f} s",
                f"see what it waits for (`ps -o pid,args -p {pid}`, the daemon log); once it "
                "has ended, run the same command again")
