"""`Runner.forward` and `Runner.rollback` without a daemon: a real `Engine` over an
in-memory daemon (tests/unit/memory_engine.py, behind the engine's read protocol) and stub
phases that record what ran. The
phases' own behaviour is the engine suite's; these pin the lifecycle: confirmation first,
the automatic rollback, every refusal before any undo, the host binding, the half rolled
back state and resumption after each phase."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from migrate.engine import Engine
from migrate.errors import BlockedError, EngineUnreachable, MigrateError, RolledBack, StateError
from migrate.journal import JournalState, PhaseName
from migrate.journal import state_dir as state_dir_module
from migrate.journal.records import PHASE_ORDER
from migrate.journal.state_dir import StateDir
from migrate.phases import runner as runner_module
from migrate.phases.base import (
    GivenOptions,
    Phase,
    PhaseContext,
    PhaseOutcome,
    PreparedPlan,
    RunOptions,
    UndoContext,
    UndoReport,
)
from migrate.phases.records import RecordModel
from migrate.phases.runner import RUN_PHASES, Runner
from tests.unit.fake_api import empty_daemon
from tests.unit.memory_engine import memory_engine

pytestmark = pytest.mark.unit

WINDOW: tuple[PhaseName, ...] = ("quiesce", "commit", "switch", "restart", "import", "verify",
                                 "recreate")


@dataclass
class Daemon:
    """The daemon as the runner reads it (through a real Engine over MemoryReads): who it
    is and whether it answers."""

    routes: dict[str, Any]

    def connect(self) -> Engine:
        return memory_engine(self.routes)

    def be(self, daemon_id: str) -> None:
        self.routes["/info"] = {**self.routes["/info"], "ID": daemon_id}

    def stop(self) -> None:
        self.routes["/version"] = ConnectionRefusedError("connection refused")


@dataclass
class Host:
    """What happened, in order: `run:<phase>`, `undo:<phase>`; and what is to go wrong."""

    events: list[str] = field(default_factory=list)
    fail_run: set[str] = field(default_factory=set)
    fail_undo: set[str] = field(default_factory=set)
    refuse_undo: set[str] = field(default_factory=set)


class StubRecord(RecordModel):
    """The stub's intent, undo record and result: the phase that wrote it."""

    stub: str = ""


@dataclass
class StubPhase:
    name: str
    host: Host
    undo_model: type[StubRecord] = StubRecord

    def intent(self, ctx: PhaseContext) -> StubRecord:
        return StubRecord(stub=self.name)

    def run(self, ctx: PhaseContext) -> PhaseOutcome[StubRecord, StubRecord]:
        self.host.events.append(f"run:{self.name}")
        if self.name in self.host.fail_run:
            raise MigrateError(f"{self.name} failed (stub)", "fix it")
        return PhaseOutcome(StubRecord(stub=self.name), StubRecord(stub=self.name))

    def undo(self, ctx: UndoContext, record: StubRecord) -> UndoReport:
        # Each undo gets its own record back, typed: from the journal, never another's.
        assert record.stub == self.name, record
        self.host.events.append(f"undo:{self.name}")
        if self.name in self.host.fail_undo:
            return UndoReport.failure(f"{self.name}: could not undo (stub)")
        return UndoReport.done(f"{self.name}: undone")

    def refuse_undo(self, ctx: UndoContext, record: StubRecord) -> None:
        if self.name in self.host.refuse_undo:
            raise BlockedError(f"{self.name} refuses its undo (stub)", "see why")


@dataclass
class Rig:
    runner: Runner
    host: Host
    daemon: Daemon
    asked: list[tuple[PhaseName, ...]]

    def forward(self, auto_rollback: bool = True) -> Any:
        def confirm(steps: tuple[PhaseName, ...], state: JournalState,
                    options: RunOptions) -> PreparedPlan | None:
            self.asked.append(steps)
            self.host.events.append("confirmed")
            return None
        return self.runner.forward(RUN_PHASES, confirm, ("run",), auto_rollback=auto_rollback)

    def rollback(self) -> Any:
        return self.runner.rollback(lambda state: self.host.events.append("confirmed"),
                                    ("rollback",))

    def state(self) -> JournalState:
        return self.runner.state_dir.journal().state()


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    host = Host()
    daemon = Daemon(empty_daemon(tmp_path / "data-root"))
    monkeypatch.setattr(runner_module, "PHASES", {
        name: cast(Phase[StubRecord, StubRecord, StubRecord], StubPhase(name, host))
        for name in PHASE_ORDER})
    locks = tmp_path / "host-locks"
    real_host_lock = state_dir_module.host_lock
    monkeypatch.setattr(runner_module, "host_lock",
                        lambda data_root: real_host_lock(data_root, locks))
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    state_dir = StateDir(tmp_path / "state", machine_id_file=machine_id)
    options = GivenOptions(host="unix:///fake.sock", daemon_config=tmp_path / "daemon.json",
                           state_dir=state_dir.path, restart_command=("true",),
                           restart_timeout=5)
    runner = Runner(state_dir, options, daemon.connect, say=lambda _text: None)
    yield Rig(runner, host, daemon, [])


def _ran(host: Host) -> list[str]:
    return [e.removeprefix("run:") for e in host.events if e.startswith("run:")]


def _undone(host: Host) -> list[str]:
    return [e.removeprefix("undo:") for e in host.events if e.startswith("undo:")]


def test_a_run_asks_before_anything_and_runs_every_phase(rig: Rig) -> None:
    outcome = rig.forward()
    assert rig.host.events[0] == "confirmed"
    assert rig.asked == [RUN_PHASES]
    assert _ran(rig.host) == list(RUN_PHASES)
    assert outcome.steps == RUN_PHASES and rig.state().outcome == "completed"
    assert rig.runner.migration_id == outcome.migration_id is not None
    # Nothing to do the second time: completed is history.
    again = rig.forward()
    assert again.already_completed and _ran(rig.host) == list(RUN_PHASES)


def test_a_refused_confirmation_journals_nothing(rig: Rig) -> None:
    def refuse(steps: tuple[PhaseName, ...], state: JournalState, options: RunOptions) -> None:
        raise MigrateError("not confirmed", "answer yes")
    with pytest.raises(MigrateError, match="not confirmed"):
        rig.runner.forward(RUN_PHASES, refuse, ("run",))
    assert rig.host.events == [] and rig.state().migration_id is None


@pytest.mark.parametrize("failing", WINDOW)
def test_a_failure_in_the_window_rolls_back_at_once(rig: Rig, failing: PhaseName) -> None:
    rig.host.fail_run.add(failing)
    with pytest.raises(RolledBack) as rolled:
        rig.forward()
    assert rolled.value.exit_code == 10
    started = list(RUN_PHASES[:RUN_PHASES.index(failing) + 1])
    assert _ran(rig.host) == started
    # Every phase that may have touched the host, the failed one too, most recent first.
    assert _undone(rig.host) == list(reversed(started))
    assert rig.state().outcome == "rolled_back"
    undone = rig.runner.automatic_rollback
    assert undone is not None and undone.failed == () and undone.problems == ()
    assert f"{failing}: undone" in undone.lines


@pytest.mark.parametrize("failing", ["snapshot", "export"])
def test_a_failure_before_the_window_is_left_to_resume(rig: Rig, failing: PhaseName) -> None:
    rig.host.fail_run.add(failing)
    with pytest.raises(MigrateError, match="failed \\(stub\\)") as failed:
        rig.forward()
    assert not isinstance(failed.value, RolledBack)
    assert _undone(rig.host) == [] and rig.runner.automatic_rollback is None
    state = rig.state()
    assert state.outcome is None and state.remaining[:1] == (failing,)


@pytest.mark.parametrize("failing", RUN_PHASES)
def test_a_run_resumes_after_each_phase(rig: Rig, failing: PhaseName) -> None:
    rig.host.fail_run.add(failing)
    with pytest.raises(MigrateError):
        rig.forward(auto_rollback=False)
    first = rig.state().migration_id
    rig.host.fail_run.clear()
    rig.host.events.clear()
    rig.forward()
    frozen = RUN_PHASES.index(failing) >= RUN_PHASES.index("quiesce")  # quiesce started
    # Snapshot and export run again until containers are stopped; the rest resume where
    # the failure stopped them, in the same migration.
    expected = [p for p in RUN_PHASES
                if RUN_PHASES.index(p) >= RUN_PHASES.index(failing)
                or (p in ("snapshot", "export") and not frozen)]
    assert _ran(rig.host) == expected
    state = rig.state()
    assert state.outcome == "completed" and state.last_migration_id == first


def test_every_undo_is_refused_before_any_undo(rig: Rig) -> None:
    rig.forward()
    rig.host.refuse_undo.add("switch")  # an early phase: later ones would be undone first
    with pytest.raises(BlockedError, match="switch refuses"):
        rig.rollback()
    assert _undone(rig.host) == []
    assert rig.state().outcome == "completed"


class _NeedsMore(StubRecord):
    """An undo model the journaled record does not satisfy: a damaged record."""

    more: str


def test_a_damaged_undo_record_refuses_the_rollback_before_any_undo(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.forward()
    switch = cast(StubPhase, runner_module.PHASES["switch"])
    monkeypatch.setattr(switch, "undo_model", _NeedsMore)
    with pytest.raises(StateError, match="switch undo record is damaged"):
        rig.rollback()
    assert _undone(rig.host) == []
    assert rig.state().outcome == "completed"


def test_a_failed_undo_leaves_it_half_rolled_back_until_retried(rig: Rig) -> None:
    rig.forward()
    rig.host.fail_undo.add("import")
    outcome = rig.rollback()
    assert outcome.failed == ("import: could not undo (stub)",)
    assert _undone(rig.host) == list(reversed(RUN_PHASES))  # the others went on
    assert rig.state().half_rolled_back
    with pytest.raises(BlockedError):
        rig.forward()  # a run is refused while half rolled back
    rig.host.fail_undo.clear()
    rig.host.events.clear()
    retried = rig.rollback()
    assert retried.failed == () and _undone(rig.host) == ["import"]
    assert rig.state().outcome == "rolled_back"


def test_a_state_dir_of_another_daemon_is_refused_before_anything(rig: Rig) -> None:
    rig.host.fail_run.add("export")
    with pytest.raises(MigrateError):
        rig.forward()  # binds the state dir to DAEMON-A
    rig.host.events.clear()
    rig.daemon.be("ANOTHER:DAEMON")
    with pytest.raises(StateError, match="belongs to"):
        rig.forward()
    with pytest.raises(StateError, match="belongs to"):
        rig.rollback()
    assert rig.host.events == []


def test_a_run_needs_the_daemon_until_the_switch(rig: Rig) -> None:
    rig.daemon.stop()
    with pytest.raises(EngineUnreachable):
        rig.forward()
    assert rig.host.events == []
