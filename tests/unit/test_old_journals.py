"""Journals written by 0.1.0 (the last release) still replay, and every command still knows
what to do with them. The files under journals/ were written by the 0.1.0 CLI against a real
Engine 28 sandbox: a stage + recreate migration that failed in the recreate phase (the bug
the lifecycle issue fixes), its rollback, and a completed recreate migration and its rollback.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from migrate.commands.context import GlobalOptions
from migrate.commands.status import StatusArgs, render_status, status, status_document
from migrate.journal import replay
from migrate.phases.lifecycle import (
    COMMANDS,
    HostNow,
    Lifecycle,
    decide,
    default_command_line,
    lifecycle_of,
    next_step,
)
from migrate.phases.records import records_of
from migrate.phases.runner import steps_to_run
from tests.unit.test_documented_commands import command_problem

pytestmark = pytest.mark.unit

JOURNALS = Path(__file__).parent / "journals"
EXPECTED = {
    "journal-0.1.0-stage-recreate-failed.jsonl": Lifecycle.SWITCHING,
    "journal-0.1.0-stage-recreate-rolled-back.jsonl": Lifecycle.ROLLED_BACK,
    "journal-0.1.0-completed-recreate.jsonl": Lifecycle.COMPLETED,
    "journal-0.1.0-completed-then-rolled-back.jsonl": Lifecycle.ROLLED_BACK,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_0_1_0_journal_replays_into_its_state(name: str) -> None:
    state = replay(JOURNALS / name)
    assert lifecycle_of(state) is EXPECTED[name]
    records = records_of(state)
    # Every typed record reads without error, whatever the phase's status.
    assert records.quiesce_undo.policy in (None, "recreate")
    _ = (records.stage, records.export, records.quiesce, records.commit_undo, records.commit,
         records.switch_undo, records.verify, records.recreate, records.recreate_undo)
    assert {image.digest.startswith("sha256:") for image in state.tool_images} == {True}
    doc = status_document(state, HostNow(store="legacy"))
    assert doc["state"] == EXPECTED[name].value
    assert render_status(doc, state).splitlines()[-1].startswith("next: ")
    for command in COMMANDS:
        decide(state, command)
    for args in next_step(state).commands:
        assert command_problem(shlex.split(default_command_line(args))[1:]) is None


def test_the_failed_recreate_of_0_1_0_resumes_without_staging_again() -> None:
    state = replay(JOURNALS / "journal-0.1.0-stage-recreate-failed.jsonl")
    assert steps_to_run(state) == ("recreate",)
    assert records_of(state).stage.expected, "the staged images the recreate needs"


def test_a_new_migration_after_a_0_1_0_rollback_does_not_stage() -> None:
    state = replay(JOURNALS / "journal-0.1.0-stage-recreate-rolled-back.jsonl")
    assert "stage" not in steps_to_run(state)
    rendered = next_step(state).render(default_command_line)
    assert "run --yes --containers recreate" in rendered


def test_status_says_when_the_daemon_does_not_answer(tmp_path: Path) -> None:
    """The most important line at 3 a.m. is never left out."""
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    journal = state_dir / "journal.jsonl"
    journal.write_bytes((JOURNALS / "journal-0.1.0-stage-recreate-failed.jsonl").read_bytes())
    journal.chmod(0o600)
    said: list[str] = []

    class Console:
        def emit(self, text: str) -> None:
            said.append(text)

        def ask(self, question: str) -> bool:
            return False

    opts = GlobalOptions(host=f"unix://{tmp_path}/no-daemon.sock",
                         daemon_config=tmp_path / "daemon.json", state_dir=state_dir,
                         console=Console())
    assert status(opts, StatusArgs()) == 0
    text = "\n".join(said)
    assert "daemon now: NOT ANSWERING" in text, text
    assert "state: switching" in text
