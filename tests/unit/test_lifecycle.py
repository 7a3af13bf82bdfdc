"""The lifecycle of a state dir: one table, and every hint in it a command that parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from migrate.errors import ExitCode
from migrate.journal import Journal
from migrate.phases.lifecycle import (
    COMMANDS,
    HostNow,
    Lifecycle,
    decide,
    default_command_line,
    lifecycle_of,
    next_step,
    sample_states,
    transition_table,
)
from migrate.phases.records import records_of
from tests.unit.test_documented_commands import command_problem

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def test_the_documented_table_is_the_code() -> None:
    text = DOC.read_text()
    block = text.split("<!-- lifecycle-table")[1].split("<!-- /lifecycle-table -->")[0]
    rows = [line.strip("|").split("|") for line in block.splitlines()
            if line.startswith("| ") and not line.startswith("| state")]
    documented = {(cells[0].strip(), COMMANDS[i]): cell.strip()
                  for cells in rows for i, cell in enumerate(cells[1:])}
    in_code = {(state.value, command): action for state, command, action in transition_table()}
    assert documented == in_code


def test_every_sample_state_is_the_state_it_stands_for() -> None:
    for expected, state in sample_states().items():
        assert lifecycle_of(state) is expected


def _parses(args: tuple[str, ...]) -> None:
    argv = shlex.split(default_command_line(args))[1:]
    assert command_problem(argv) is None, argv


@pytest.mark.parametrize("lifecycle", list(Lifecycle))
def test_every_next_step_and_refusal_names_commands_that_parse(lifecycle: Lifecycle) -> None:
    state = sample_states()[lifecycle]
    steps = [next_step(state, HostNow(store=store, archive_bytes=size, volume_guard=guard))
             for store in ("legacy", "containerd", None) for size in (0, 10)
             for guard in (False, True)]
    steps += [d.next for command in COMMANDS if (d := decide(state, command)).next]
    for step in steps:
        assert step.text.count("{}") == len(step.commands), step
        for args in step.commands:
            _parses(args)
        rendered = step.render(default_command_line)
        assert "{" not in rendered and "}" not in rendered, rendered


def test_refusals_are_blocked_errors_with_a_next_step() -> None:
    for state in sample_states().values():
        for command in COMMANDS:
            decision = decide(state, command)
            if decision.action != "refuse":
                continue
            error = decision.refusal(default_command_line)
            assert error.exit_code == ExitCode.BLOCKED
            assert error.message and error.hint


def test_the_next_migration_after_a_rollback_keeps_its_containers_policy(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.start_run("0", (), {"containers": "recreate"})
    with journal.phase("snapshot", {}) as handle:
        handle.done()
    with journal.undo("snapshot"):
        pass
    journal.finish("rolled_back")
    state = journal.state()
    assert lifecycle_of(state) is Lifecycle.ROLLED_BACK
    rendered = next_step(state).render(default_command_line)
    assert "`containerd-migrate run --yes --containers recreate`" in rendered
    # A new migration plans from a clean slate: nothing of the old one is done for it.
    fresh = state.for_next_run()
    assert fresh.last_migration_id is None and fresh.phase("snapshot").status == "pending"


def test_a_completed_migration_whose_rollback_failed_is_half_rolled_back(
        tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.start_run("0", (), {"containers": "recreate"})
    for name in ("snapshot", "export", "quiesce", "commit"):
        with journal.phase(name, {}) as handle:
            handle.done(undo={"commits": [{"container": "c1", "ref": "r"}]}
                        if name == "commit" else {})
    journal.finish("completed")
    assert lifecycle_of(journal.state()) is Lifecycle.COMPLETED
    journal.start_run("0", (), {}, migration_id=journal.state().last_migration_id)
    with journal.undo("commit") as undo:
        undo.failed("commit: could not remove the commit images: in use")
    state = journal.state()
    assert lifecycle_of(state) is Lifecycle.HALF_ROLLED_BACK
    assert decide(state, "run").action == "refuse"
    assert decide(state, "rollback").action == "proceed"
    assert next(p.name for p in state.phases_to_undo()) == "commit"
    assert records_of(state).commit_undo.commits[0].container == "c1"


def test_status_never_suggests_the_blocked_policy() -> None:
    # A host with containers refuses `--containers refuse`: no hint may suggest it.
    for state in sample_states().values():
        for host in (HostNow(), HostNow(store="legacy", archive_bytes=5)):
            rendered = next_step(state, host).render(default_command_line)
            assert not re.search(r"--containers refuse", rendered), rendered
