"""Bad input at the command line: one paragraph, a hint, a distinct exit code, no traceback."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from migrate.cli import hoist_global_options, main
from migrate.commands.context import GlobalOptions
from migrate.engine.client import base_url
from migrate.engine.daemon_wait import DEFAULT_RESTART_TIMEOUT, resolve_restart_timeout
from migrate.errors import ExitCode, UsageError
from migrate.journal import Journal
from migrate.preflight.facts import CONTAINERS_POLICIES

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


# --- first real use: where operators type global options, what --host accepts ----------


def test_global_options_after_the_command_are_accepted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = CliRunner().invoke(main, ["status", "--state-dir", str(state), "--format",
                                       "json", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["migration_id"] is None


def test_hoisting_keeps_the_commands_own_option_values() -> None:
    hoisted = hoist_global_options(
        ["run", "--restart-command", "--debug", "--host=/x.sock", "--yes", "--state-dir", "S"],
        main.commands)
    assert hoisted == ["--host=/x.sock", "--state-dir", "S", "run", "--restart-command",
                       "--debug", "--yes"]
    assert hoist_global_options(["--host", "plan", "plan", "-q"],
                                main.commands) == [
        "--host", "plan", "-q", "plan"]


def test_bare_socket_path_is_a_unix_address_and_a_bare_word_is_refused() -> None:
    assert base_url("/run/docker.sock") == "unix:///run/docker.sock"
    assert base_url("tcp://10.0.0.1:2375") == "tcp://10.0.0.1:2375"
    with pytest.raises(UsageError) as refused:
        base_url("docker.sock")
    assert "unix://" in refused.value.hint


def test_unreachable_plan_is_one_sentence_without_a_resume_hint(tmp_path: Path) -> None:
    result = _invoke(tmp_path, "plan", host="/nonexistent/containerd-migrate-test.sock")
    assert result.exit_code == ExitCode.ENGINE_UNREACHABLE
    error, hint = result.output.strip().splitlines()
    assert error.startswith("error: cannot reach the Docker daemon at ") and \
        error.count(". ") == 0 and len(error) < 160, error
    assert "resume" not in hint and "rollback" not in hint


def test_restart_command_comes_from_its_own_variable() -> None:
    """Every command with --restart-command reads the same variable, and every command that
    resolves or runs the restart command has the option."""
    having = {name for name, command in main.commands.items()
              if any(p.name == "restart_command" for p in command.params)}
    assert having == {"plan", "export", "stage", "run", "rollback"}
    for name in having:
        param = next(p for p in main.commands[name].params if p.name == "restart_command")
        assert param.envvar == "CONTAINERD_MIGRATE_RESTART_COMMAND", name


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_is_a_function_of_global_options_and_its_args(name: str) -> None:
    function = getattr(importlib.import_module(f"migrate.commands.{name}"), name)
    assert list(inspect.signature(function).parameters) == ["opts", "args"]


@pytest.mark.parametrize("name", ["plan", "export", "stage", "run", "rollback"])
def test_the_restart_command_variable_reaches_the_command(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set only in the environment, the restart command is what the command receives, and
    the CLI hands the command line and the terminal over in GlobalOptions."""
    module = importlib.import_module(f"migrate.commands.{name}")
    seen: list[tuple[Any, ...]] = []

    def record(opts: GlobalOptions, *args: Any) -> int:
        seen.append((opts, *args))
        return 0

    monkeypatch.setattr(module, name, record)
    monkeypatch.setenv("CONTAINERD_MIGRATE_RESTART_COMMAND", "rc-service docker restart")
    monkeypatch.setattr(sys, "argv", ["containerd-migrate", name, "--as-typed"])
    result = _invoke(tmp_path, name)
    assert result.exit_code == 0, result.output
    ((opts, *args),) = seen
    given = [getattr(arg, "restart_command", arg) for arg in args]
    assert "rc-service docker restart" in given
    assert opts.argv == (name, "--as-typed")  # journaled with the run as typed
    assert opts.interactive is False  # CliRunner's stdin is no terminal


def test_containers_choices_live_in_one_place() -> None:
    having = {name for name, command in main.commands.items()
              if any(p.name == "containers" for p in command.params)}
    assert having == {"plan", "export", "stage", "run"}
    for command in having:
        param = next(p for p in main.commands[command].params
                     if p.name == "containers")
        assert tuple(param.type.choices) == CONTAINERS_POLICIES  # type: ignore[attr-defined]
        assert param.default is None  # None: the journaled policy, else the default


# --- hostile input: numbers, daemon addresses, state dirs (issue 23) ---------------------

NOT_POSITIVE_FINITE = ("nan", "NaN", "inf", "-inf", "infinity", "0", "-5", "1e999", "ten")


@pytest.mark.parametrize("value", NOT_POSITIVE_FINITE)
@pytest.mark.parametrize("command", [("run", "--yes", "--restart-timeout"),
                                     ("rollback", "--yes", "--restart-timeout"),
                                     ("plan", "--throughput")])
def test_numbers_that_are_not_positive_and_finite_are_usage_errors(
        tmp_path: Path, command: tuple[str, ...], value: str) -> None:
    result = _invoke(tmp_path, *command, value)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert command[-1] in result.output
    _no_traceback(result)
    assert not (tmp_path / "state").exists()  # refused before anything was touched


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_restart_timeout_from_its_variable_is_checked_the_same(tmp_path: Path,
                                                               value: str) -> None:
    result = CliRunner().invoke(
        main, ["--host", NOWHERE, "--state-dir", str(tmp_path / "state"), "rollback", "--yes"],
        env={"CONTAINERD_MIGRATE_RESTART_TIMEOUT": value})
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "--restart-timeout" in result.output
    assert not (tmp_path / "state").exists()


def test_a_journaled_timeout_that_is_not_finite_is_not_used() -> None:
    for recorded in (float("nan"), float("inf"), -3.0, 0):
        assert resolve_restart_timeout(None, recorded) == DEFAULT_RESTART_TIMEOUT
    assert resolve_restart_timeout(None, 30) == 30.0


LONG_SOCKET = "/" + "s" * 107  # 108 bytes: one more than a unix socket address holds


@pytest.mark.parametrize("host", [
    "unix://", "unix://relative/docker.sock", f"unix://{LONG_SOCKET}", LONG_SOCKET,
    "tcp://[::1:bad", "tcp://127.0.0.1:70000", "tcp://127.0.0.1:0", "tcp://", "tcp://host",
    "tcp://127.0.0.1:2375/path", "ssh://user@host", "npipe:////./pipe/docker_engine", "fd://",
    "https://host:2376", "docker.sock", ""])
@pytest.mark.parametrize("command", ["plan", "status", "run"])
def test_unusable_daemon_addresses_are_usage_errors(tmp_path: Path, host: str,
                                                    command: str) -> None:
    result = _invoke(tmp_path, command, host=host)
    assert result.exit_code == ExitCode.USAGE, result.output
    error, hint = result.output.strip().splitlines()
    assert error.startswith("error: --host"), error
    assert "daemon log" not in result.output
    assert ("unix://" in hint and "tcp://" in hint) or "value" in hint, hint
    assert not (tmp_path / "state").exists()


def test_docker_host_is_checked_like_host(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--state-dir", str(tmp_path / "s"), "status"],
                                env={"DOCKER_HOST": "ssh://user@host"})
    assert result.exit_code == ExitCode.USAGE
    assert result.output.startswith("error: DOCKER_HOST 'ssh://user@host'")


def test_addresses_that_are_usable() -> None:
    longest = "/" + "s" * 106
    assert base_url(longest) == f"unix://{longest}"
    assert base_url("tcp://[::1]:2375") == "tcp://[::1]:2375"
    assert base_url("tcp://localhost:65535/") == "tcp://localhost:65535/"


@pytest.mark.parametrize(("env", "args", "named"), [
    ({"CONTAINERD_MIGRATE_STATE_DIR": ""}, ["status"], "CONTAINERD_MIGRATE_STATE_DIR"),
    ({"CONTAINERD_MIGRATE_HOST": ""}, ["status"], "CONTAINERD_MIGRATE_HOST"),
    ({"CONTAINERD_MIGRATE_RESTART_TIMEOUT": ""}, ["rollback", "--yes"],
     "CONTAINERD_MIGRATE_RESTART_TIMEOUT"),
    ({}, ["--state-dir", "", "status"], "--state-dir"),
    ({}, ["--daemon-config", "", "status"], "--daemon-config"),
    ({}, ["plan", "--output", ""], "--output"),
    ({}, ["run", "--yes", "--restart-command", ""], "--restart-command"),
])
def test_empty_values_are_errors_not_the_default(tmp_path: Path, env: dict[str, str],
                                                 args: list[str], named: str) -> None:
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert result.output.startswith(f"error: {named} is"), result.output
