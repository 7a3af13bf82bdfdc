"""`run`, `rollback` and `cleanup --format json`: one document on stdout, also on failure,
built from typed values (the README's schema, version 1). The Ansible role reads nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from migrate.commands.cleanup import CleanupArgs, cleanup
from migrate.commands.context import GlobalOptions
from migrate.commands.output import SCHEMA_VERSION, Report
from migrate.commands.rollback import RollbackArgs, rollback
from migrate.commands.run import RunArgs, run, run_fields
from migrate.errors import BlockedError, ExitCode, MigrateError, RolledBack
from migrate.journal import replay

pytestmark = pytest.mark.unit

JOURNALS = Path(__file__).parent / "journals"
# Every document has these keys, whatever the command and its result.
COMMON = {"schema_version", "command", "result", "exit_code", "migration_id", "error",
          "messages"}


@dataclass
class Shown:
    lines: list[str] = field(default_factory=list)

    def emit(self, text: str) -> None:
        self.lines.append(text)

    def ask(self, question: str) -> bool:
        return False


def _opts(tmp_path: Path, shown: Shown, journal: str | None = None) -> GlobalOptions:
    state_dir = tmp_path / "state"
    if journal is not None:
        state_dir.mkdir(mode=0o700)
        path = state_dir / "journal.jsonl"
        path.write_bytes((JOURNALS / journal).read_bytes())
        path.chmod(0o600)
    return GlobalOptions(host=f"unix://{tmp_path}/no-daemon.sock",
                         daemon_config=tmp_path / "daemon.json", state_dir=state_dir,
                         console=shown)


def _document(shown: Shown) -> dict[str, Any]:
    """Exactly one thing printed, and it is the document."""
    assert len(shown.lines) == 1, shown.lines
    doc: dict[str, Any] = json.loads(shown.lines[0])
    assert set(doc) >= COMMON, doc
    assert doc["schema_version"] == SCHEMA_VERSION
    return doc


def test_rollback_with_nothing_to_undo(tmp_path: Path) -> None:
    shown = Shown()
    assert rollback(_opts(tmp_path, shown), RollbackArgs(yes=True, fmt="json")) == 0
    doc = _document(shown)
    assert (doc["command"], doc["result"], doc["exit_code"]) == ("rollback", "nothing_to_do", 0)
    assert doc["reason"] and doc["error"] is None and doc["messages"] == []
    assert (doc["did"], doc["failed"], doc["checked"], doc["problems"]) == ([], [], [], [])
    assert not (tmp_path / "state").exists()
    # The text stays the default, and says the same reason.
    text = Shown()
    rollback(_opts(tmp_path, text), RollbackArgs(yes=True))
    assert text.lines[0].startswith(doc["reason"])


def test_a_refused_cleanup_prints_its_document_then_raises(tmp_path: Path) -> None:
    shown = Shown()
    with pytest.raises(MigrateError) as refused:
        cleanup(_opts(tmp_path, shown), CleanupArgs(yes=True, fmt="json"))
    doc = _document(shown)
    assert (doc["command"], doc["result"]) == ("cleanup", "failed")
    assert doc["exit_code"] == int(refused.value.exit_code) == int(ExitCode.BLOCKED)
    assert doc["error"] == {"message": refused.value.message, "hint": refused.value.hint}


def test_cleanup_after_a_rollback_keeping_the_images(tmp_path: Path) -> None:
    shown = Shown()
    opts = _opts(tmp_path, shown, "journal-0.1.0-completed-then-rolled-back.jsonl")
    assert cleanup(opts, CleanupArgs(yes=True, keep_images=True, fmt="json")) == 0
    doc = _document(shown)
    assert (doc["result"], doc["after"], doc["kept_images"]) == ("cleaned_up", "rolled_back",
                                                                 True)
    assert (doc["freed_bytes"], doc["did"], doc["failed"]) == (0, [], [])
    assert doc["migration_id"] == replay(opts.state_dir / "journal.jsonl").last_migration_id


def test_a_run_that_cannot_reach_the_daemon(tmp_path: Path) -> None:
    shown = Shown()
    with pytest.raises(MigrateError) as failed:
        run(_opts(tmp_path, shown), RunArgs(yes=True, restart_command="true", fmt="json"))
    doc = _document(shown)
    assert (doc["command"], doc["result"]) == ("run", "failed")
    assert doc["exit_code"] == int(failed.value.exit_code) == int(ExitCode.ENGINE_UNREACHABLE)
    assert doc["automatic_rollback"] is None and doc["migration_id"] is None
    assert doc["steps"] is None
    assert doc["error"]["message"] == failed.value.message


def test_a_completed_run_says_what_became_of_the_containers() -> None:
    state = replay(JOURNALS / "journal-0.1.0-completed-recreate.jsonl")
    fields = run_fields(state)
    containers = fields["containers"]
    assert containers["policy"] == "recreate"
    assert containers["recreated"] and containers["down"] == []
    assert set(containers["running"]) <= set(containers["recreated"])
    assert fields["multi_platform"] in (None, "supported", "unsupported", "unchecked")
    json.dumps(fields)  # a document holds JSON values only


def test_an_automatic_rollback_is_its_own_result(tmp_path: Path) -> None:
    shown = Shown()
    report = Report(_opts(tmp_path, shown), "run", "json")
    report.opts.console.emit("rolling back automatically ...\n  switch: restored")
    report.failed(RolledBack("restart failed", "fix it"))
    doc = _document(shown)
    assert (doc["result"], doc["exit_code"]) == ("rolled_back", int(ExitCode.ROLLED_BACK))
    assert doc["messages"] == ["rolling back automatically ...", "  switch: restored"]
    # A rollback that found problems exits 1: it is a failure, not a clean rollback.
    shown.lines.clear()
    Report(_opts(tmp_path, shown), "run", "json").failed(
        RolledBack("x", "y", exit_code=ExitCode.ERROR))
    assert _document(shown)["result"] == "failed"
    shown.lines.clear()
    Report(_opts(tmp_path, shown), "run", "text").failed(BlockedError("x", "y"))
    assert shown.lines == []  # text mode: the CLI prints the error, nothing else


def test_rollback_purge_imported_after_a_rollback_prints_cleanups_document(
        tmp_path: Path) -> None:
    """Routed to cleanup: exactly one document, cleanup's, also when cleanup fails (here:
    the daemon does not answer, so the tool's images cannot be removed)."""
    shown = Shown()
    opts = _opts(tmp_path, shown, "journal-0.1.0-completed-then-rolled-back.jsonl")
    with pytest.raises(MigrateError) as failed:
        rollback(opts, RollbackArgs(yes=True, purge_imported=True, fmt="json"))
    doc = _document(shown)
    assert (doc["command"], doc["result"]) == ("cleanup", "failed")
    assert doc["exit_code"] == int(failed.value.exit_code)
