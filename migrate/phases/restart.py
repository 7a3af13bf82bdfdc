"""Phase "restart": restart dockerd so it reads the switched daemon.json, and prove the store.

A daemon that answers is not proof: it must answer with the containerd snapshotter
driver type, or the flag was ignored (docs/engine-facts.md). Any failure raises
RestartFailed, which the runner turns into an automatic rollback.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from migrate.engine import restart as daemon_control
from migrate.models import EngineInfo, Store
from migrate.phases.base import JSONDict, Phase, PhaseContext, PhaseOutcome, UndoContext

# Time left for the daemon to answer even when the restart command used up the budget.
MIN_WAIT = 10.0


def _restart_argv(ctx: PhaseContext) -> tuple[str, ...]:
    switch = ctx.done.get("switch") or {}
    return daemon_control.resolve_restart_command(ctx.options.restart_command,
                                                  switch.get("restart_command"))


def _timeout(ctx: PhaseContext) -> float:
    switch = ctx.done.get("switch") or {}
    return daemon_control.resolve_restart_timeout(ctx.options.restart_timeout,
                                                  switch.get("restart_timeout"))


def _config_is_switched(ctx: PhaseContext) -> bool:
    switch = ctx.done.get("switch") or {}
    path, written = switch.get("path"), switch.get("written_sha256")
    if not path or not written:
        return False
    try:
        return hashlib.sha256(Path(str(path)).read_bytes()).hexdigest() == str(written)
    except OSError:
        return False


class RestartPhase(Phase):
    name = "restart"

    def intent(self, ctx: PhaseContext) -> JSONDict:
        return {
            "restart_command": list(_restart_argv(ctx)),
            "restart_timeout": _timeout(ctx),
            "host": ctx.options.host,
        }

    def run(self, ctx: PhaseContext) -> PhaseOutcome:
        host, timeout = ctx.options.host, _timeout(ctx)
        before = daemon_control.current_info(host)
        if before is not None and before.store is Store.CONTAINERD and _config_is_switched(ctx):
            # Resumed after the restart had already happened: another one is pure downtime.
            return PhaseOutcome(result=_result(before, restarted=False, seconds=0.0))
        argv = _restart_argv(ctx)
        started = time.monotonic()
        daemon_control.run_restart_command(argv, timeout)
        remaining = max(min(MIN_WAIT, timeout), timeout - (time.monotonic() - started))
        info = daemon_control.wait_for_daemon(host, Store.CONTAINERD, remaining)
        return PhaseOutcome(
            result=_result(info, restarted=True, seconds=time.monotonic() - started)
        )

    def undo(self, ctx: UndoContext, record: JSONDict) -> list[str]:
        return [
            "restart: nothing to undo here; the switch undo restores daemon.json and "
            "restarts the daemon on the legacy store"
        ]


def _result(info: EngineInfo, restarted: bool, seconds: float) -> JSONDict:
    return {
        "restarted": restarted,
        "seconds": round(seconds, 2),
        "store": info.store.value,
        "version": info.version,
        "driver_status": [list(pair) for pair in info.driver_status],
    }


PHASE = RestartPhase()
