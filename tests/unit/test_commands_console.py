"""Commands are plain functions: they talk through a Console, so they run without click."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from migrate.commands.context import GlobalOptions, confirm
from migrate.commands.run import RunArgs, run
from migrate.commands.status import StatusArgs, status
from migrate.errors import MigrateError, UsageError
from migrate.preflight import facts as facts_module

pytestmark = pytest.mark.unit


@dataclass
class RecordingConsole:
    answer: bool = False
    shown: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def emit(self, text: str) -> None:
        self.shown.append(text)

    def ask(self, question: str) -> bool:
        self.asked.append(question)
        return self.answer


def _opts(tmp_path: Path, console: RecordingConsole) -> GlobalOptions:
    return GlobalOptions(host="unix:///nonexistent.sock",
                                  daemon_config=tmp_path / "daemon.json",
                                  state_dir=tmp_path / "state", console=console)


def test_status_reports_through_the_console(tmp_path: Path) -> None:
    console = RecordingConsole()
    assert status(_opts(tmp_path, console), StatusArgs(fmt="json")) == 0
    assert json.loads(console.shown[-1])["migration_id"] is None


def test_a_refused_question_changes_nothing(tmp_path: Path) -> None:
    console = RecordingConsole(answer=False)
    with pytest.raises(UsageError, match="not confirmed"):
        confirm(console, "switch?", yes=False, interactive=True)
    assert console.asked == ["switch?"]


def test_yes_skips_the_question_and_no_terminal_refuses(tmp_path: Path) -> None:
    console = RecordingConsole(answer=False)
    confirm(console, "switch?", yes=True, interactive=False)
    with pytest.raises(UsageError, match="no terminal"):
        confirm(console, "switch?", yes=False, interactive=False)
    assert console.asked == []


def test_run_warns_of_a_volatile_state_dir_before_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(facts_module, "filesystem_type", lambda device: "tmpfs")
    console = RecordingConsole()
    with pytest.raises(MigrateError):
        run(_opts(tmp_path, console), RunArgs(yes=True, restart_command="true"))
    assert console.shown[0].startswith(f"warning: the state dir {tmp_path / 'state'} is on a "
                                       "tmpfs")
    assert "--state-dir" in console.shown[0]
