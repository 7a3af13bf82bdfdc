"""Phase "restart": restart dockerd so it reads the switched daemon.json, and prove the store.

A daemon that answers is not proof: it must answer with the containerd snapshotter
driver type, or the flag was ignored (docs/engine-facts.md). Any failure raises
RestartFailed, which the runner turns into an automatic rollback.
"""

from __future__ import annotations

import time
from pathlib import Path

from migrate.engine import daemon_wait
from migrate.host import restart_command
from migrate.models import EngineInfo, Store
from migrate.phases.base import Phase, PhaseContext, PhaseOutcome, UndoContext, UndoReport
from migrate.phases.daemon_restart import restart_into, wait_for_journaled_restarts
from migrate.phases.records import NoUndo, RecordModel


def _restart_argv(ctx: PhaseContext) -> tuple[str, ...]:
    return restart_command.resolve_restart_command(ctx.options.restart_command,
                                                  ctx.records.switch_undo.restart_command)


def _timeout(ctx: PhaseContext) -> float:
    return daemon_wait.resolve_restart_timeout(ctx.options.restart_timeout,
                                                  ctx.records.switch_undo.restart_timeout)


def _config_is_switched(ctx: PhaseContext) -> bool:
    switch = ctx.records.switch_undo
    if not switch.path:
        return False
    try:
        return switch.wrote(Path(switch.path).read_bytes())
    except OSError:
        return False


class RestartIntent(RecordModel):
    restart_command: tuple[str, ...] = ()
    restart_timeout: float | None = None
    host: str = ""


class RestartResult(RecordModel):
    restarted: bool = False
    seconds: float = 0.0
    store: str = ""
    version: str = ""
    driver_status: tuple[tuple[str, ...], ...] = ()

    def summary(self) -> str:
        return f"{self.store} store" if self.store else ""


class RestartPhase(Phase[RestartIntent, NoUndo, RestartResult]):
    """Its undo is the switch's: restoring daemon.json comes with the restart back."""

    name = "restart"
    undo_model = NoUndo
    result_model = RestartResult

    def intent(self, ctx: PhaseContext) -> RestartIntent:
        return RestartIntent(restart_command=_restart_argv(ctx), restart_timeout=_timeout(ctx),
                             host=ctx.options.host)

    def run(self, ctx: PhaseContext) -> PhaseOutcome[NoUndo, RestartResult]:
        host, timeout = ctx.options.host, _timeout(ctx)
        # A restart command started by a killed attempt may still be restarting dockerd:
        # let it finish, then look at the store, instead of starting a second daemon.
        wait_for_journaled_restarts(ctx.previous_progress, timeout)
        before = daemon_wait.current_info(host)
        if before is not None and before.store is Store.CONTAINERD and _config_is_switched(ctx):
            # Resumed after the restart had already happened: another one is pure downtime.
            return PhaseOutcome(NoUndo(), _result(before, restarted=False, seconds=0.0))
        started = time.monotonic()
        info = restart_into(Store.CONTAINERD, host, _restart_argv(ctx), timeout,
                            ctx.checkpoint, "restart:command-started")
        return PhaseOutcome(NoUndo(), _result(info, restarted=True,
                                              seconds=time.monotonic() - started))

    def undo(self, ctx: UndoContext, record: NoUndo) -> UndoReport:
        return UndoReport.done("restart: nothing to undo here; the switch undo restores "
                               "daemon.json and restarts the daemon on the legacy store")


def _result(info: EngineInfo, restarted: bool, seconds: float) -> RestartResult:
    return RestartResult(restarted=restarted, seconds=round(seconds, 2), store=info.store.value,
                         version=info.version,
                         driver_status=tuple(tuple(pair) for pair in info.driver_status))


PHASE = RestartPhase()
