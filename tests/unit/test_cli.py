"""Bad input at the command line: one paragraph, a hint, a distinct exit code, no traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from migrate.cli import main
from migrate.errors import ExitCode
from migrate.journal import Journal

pytestmark = pytest.mark.unit

NOWHERE = "unix:///nonexistent/containerd-migrate-test.sock"


def _invoke(tmp_path: Path, *args: str, host: str = NOWHERE) -> Result:
    state = tmp_path / "state"
    return CliRunner().invoke(
        main,
        ["--host", host, "--daemon-config", str(tmp_path / "daemon.json"),
         "--state-dir", str(state), *args],
        catch_exceptions=False,
    )


def _no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output


def test_unknown_option_value_is_a_usage_error(tmp_path: Path) -> None:
    result = _invoke(tmp_path, "plan", "--format", "bogus")
    assert result.exit_code == ExitCode.USAGE
    assert "bogus" in result.output


def test_unreachable_daemon_is_one_paragraph_with_a_hint(tmp_path: Path) -> None:
    result = _invoke(tmp_path, "plan")
    assert result.exit_code == ExitCode.ENGINE_UNREACHABLE
    assert result.output.startswith("error: cannot reach the Docker daemon")
    assert "\nhint: " in result.output
    _no_traceback(result)


def test_run_without_yes_and_without_terminal_changes_nothing(tmp_path: Path) -> None:
    result = _invoke(tmp_path, "run", "--restart-command", "true")
    assert result.exit_code == ExitCode.USAGE
    assert "--yes" in result.output
    assert not (tmp_path / "state").exists()


def test_empty_restart_command_is_refused(tmp_path: Path) -> None:
    result = _invoke(tmp_path, "run", "--yes", "--restart-command", "  ")
    assert result.exit_code == ExitCode.USAGE
    _no_traceback(result)


def test_world_writable_state_dir_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o777)
    result = _invoke(tmp_path, "run", "--yes", "--restart-command", "true")
    assert result.exit_code == ExitCode.STATE_INVALID
    assert "hint:" in result.output


def test_symlinked_state_dir_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "state").symlink_to(real)
    result = _invoke(tmp_path, "rollback", "--yes")
    assert result.exit_code == ExitCode.STATE_INVALID


def test_status_without_a_migration(tmp_path: Path) -> None:
    result = _invoke(tmp_path, "status")
    assert result.exit_code == 0
    assert "no migration" in result.output


def test_status_on_a_journal_damaged_before_its_last_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    good = {"event": "run_started", "journal_version": 1, "seq": 1,
            "ts": "2026-01-01T00:00:00Z", "migration_id": "m", "run_id": "r",
            "tool_version": "0.1.0"}
    (state / "journal.jsonl").write_text("garbage{\n" + json.dumps(good) + "\n")
    result = _invoke(tmp_path, "status")
    assert result.exit_code == ExitCode.STATE_INVALID
    assert "damaged" in result.output
    _no_traceback(result)


def test_journal_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    future = {"event": "run_started", "journal_version": 99, "seq": 1,
              "ts": "2026-01-01T00:00:00Z", "migration_id": "m", "run_id": "r",
              "tool_version": "9.0"}
    (state / "journal.jsonl").write_text(json.dumps(future) + "\n")
    result = _invoke(tmp_path, "status")
    assert result.exit_code == ExitCode.STATE_INVALID
    assert "version 99" in result.output


def test_rollback_without_a_migration_is_a_no_op(tmp_path: Path) -> None:
    result = _invoke(tmp_path, "rollback", "--yes")
    assert result.exit_code == 0
    assert "no migration to roll back" in result.output


def test_cleanup_before_a_completed_migration_is_blocked(tmp_path: Path) -> None:
    result = _invoke(tmp_path, "cleanup")
    assert result.exit_code == ExitCode.BLOCKED
    assert "hint:" in result.output


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    state = tmp_path / "state"
    runner = CliRunner()
    result = runner.invoke(main, ["--debug", "--host", NOWHERE, "--state-dir", str(state),
                                  "plan"])
    assert result.exit_code != 0
    assert result.exception is not None


def test_env_vars_set_global_options(tmp_path: Path) -> None:
    state = tmp_path / "envstate"
    state.mkdir(mode=0o700)
    journal = Journal(state / "journal.jsonl")
    migration = journal.start_run("0.1.0").migration_id
    journal.close()
    result = CliRunner().invoke(main, ["status"],
                                env={"CONTAINERD_MIGRATE_STATE_DIR": str(state)})
    assert result.exit_code == 0
    assert f"migration {migration} (in progress" in result.output
