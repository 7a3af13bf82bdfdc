"""What a first real use found (issue 12): plan predicts run, honest status and verify.

Real engines, the real CLI in a subprocess (except where the confirmation prompt itself
is under test: that needs a console that answers, so `commands.run` is called in-process).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from migrate.commands.context import GlobalOptions
from migrate.commands.run import RunArgs, run
from migrate.errors import BlockedError, ExitCode, UsageError
from migrate.host.restart_command import default_restart_command
from migrate.journal import replay
from migrate.sandbox import SandboxFactory
from migrate.sandbox.daemon import Sandbox
from migrate.sandbox.samples import build_bulk_images, docker, sandbox_samples
from tests.engine.cli import UNSET, cli, restart_command

pytestmark = pytest.mark.engine

RESTART_ENV = "CONTAINERD_MIGRATE_RESTART_COMMAND"
CD_CONFIG = b'{"features": {"containerd-snapshotter": true}}\n'


def _tags(sandbox: Sandbox) -> set[str]:
    out = docker(sandbox.host, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    return {line for line in out.split() if "<none>" not in line}


def _json_plan(sandbox: Sandbox, state: Path, *args: str,
               env: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    done = cli(sandbox, state, "plan", "--format", "json", *args, env=env)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def _check_ids(report: dict[str, object]) -> set[str]:
    return {str(c["id"]) for c in report["checks"]  # type: ignore[attr-defined]
            if c["severity"] == "blocker"}


def test_plan_predicts_run_config_file_restart_command_and_socket_path(
        engine_sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox, state = engine_sandbox, tmp_path / "state"
    env = {RESTART_ENV: restart_command(sandbox)}
    # Items 2 and 13: the variable reaches plan, a bare socket path after the command works.
    code, report = _json_plan(sandbox, state, "--containers", "leave", "--host",
                              str(sandbox.socket_path), env=env)
    assert code == 0, report["verdict"]
    assert report["restart_command"] == shlex.split(restart_command(sandbox))

    # Item 1: a daemon.json dockerd does not read (the sandbox runs with --config-file).
    other = tmp_path / "daemon.json"
    other.write_text("{}\n")
    code, report = _json_plan(sandbox, state, "--containers", "leave", "--daemon-config",
                              str(other), env=env)
    assert code == ExitCode.BLOCKED and _check_ids(report) == {"daemon-config-not-read"}
    check = next(c for c in report["checks"]  # type: ignore[attr-defined]
                 if c["id"] == "daemon-config-not-read")
    assert str(sandbox.daemon_json) in check["message"]

    # Item 2: no restart command and none this host can offer: a blocker, as run would fail.
    try:
        default_restart_command()
    except BlockedError:
        code, report = _json_plan(sandbox, state, "--containers", "leave",
                                  env={RESTART_ENV: UNSET})
        assert code == ExitCode.BLOCKED and _check_ids(report) == {"restart-command"}
    assert not state.exists() or not (state / "journal.jsonl").exists(), "plan wrote state"


class _Recorder:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.questions: list[str] = []
        self.lines: list[str] = []

    def emit(self, text: str) -> None:
        self.lines.append(text)

    def ask(self, question: str) -> bool:
        self.questions.append(question)
        return self.answer


def test_run_finds_blockers_before_asking_and_the_question_says_what_happens(
        engine_sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox = engine_sandbox
    samples = sandbox_samples(sandbox)
    console = _Recorder(answer=False)
    opts = GlobalOptions(host=sandbox.host, daemon_config=sandbox.daemon_json,
                         state_dir=tmp_path / "state", console=console, interactive=True)
    restart = restart_command(sandbox)
    # The sample host has containers: under the default policy the run is blocked, and the
    # operator is not asked to confirm a run that is going to refuse.
    with pytest.raises(BlockedError, match="containers-present"):
        run(opts, RunArgs(restart_command=restart))
    assert console.questions == []

    with pytest.raises(UsageError, match="not confirmed"):
        run(opts, RunArgs(containers="leave", restart_command=restart))
    (question,) = console.questions
    running = [name for name, state in samples.containers.items() if state == "running"]
    assert running and all(name in question for name in running), question
    assert sandbox.host in question and str(sandbox.daemon_json) in question
    assert restart in question and "window: about" in question
    assert replay(opts.state_dir / "journal.jsonl").phase("export").status == "pending"


def _status(sandbox: Sandbox, state: Path) -> dict[str, Any]:
    done = cli(sandbox, state, "status", "--format", "json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def _verification(state: Path) -> Path:
    return state / "reports" / "verification.txt"


@pytest.mark.parametrize("engine", ["26", "28"])
def test_one_policy_honest_verify_and_status_and_cleanup_after_rollback(
        fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine, samples=True)
    state = tmp_path / "state"
    env = {RESTART_ENV: restart_command(sandbox)}

    exported = cli(sandbox, state, "export", "--containers", "leave", env=env)
    assert exported.returncode == 0, exported.stderr
    assert "{" not in exported.stdout and " run --yes`" in exported.stdout

    status = _status(sandbox, state)
    done = {p["name"] for p in status["phases"] if p["status"] == "done"}
    assert done == {"snapshot", "export"} and not done & set(status["remaining"])
    assert " run --yes`" in status["next"]  # printed with this host's options

    early = cli(sandbox, state, "verify")
    assert early.returncode == ExitCode.BLOCKED, early.stdout + early.stderr
    said = (early.stdout + early.stderr).strip().splitlines()  # one refusal and its hint
    assert said[0].startswith("error: ") and len(said) == 2, said
    assert not _verification(state).exists()

    # Item 5: export's policy and restart command are the run's; the advice works as given.
    ran = cli(sandbox, state, "run", "--yes")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert cli(sandbox, state, "verify").returncode == 0
    report = _verification(state).read_bytes()

    back = cli(sandbox, state, "rollback", "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    after = cli(sandbox, state, "verify")
    assert after.returncode == ExitCode.BLOCKED
    assert "rolled back" in after.stderr and "legacy store" in after.stderr
    assert _verification(state).read_bytes() == report, "verify overwrote the good report"

    status = _status(sandbox, state)
    assert status["store_now"] == "legacy" and status["volume_guard"] is False
    assert status["next"].startswith("next: `containerd-migrate ")
    assert "cleanup` deletes what the migration left" in status["next"]
    assert list((state / "archives").glob("*.tar"))

    cleaned = cli(sandbox, state, "cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    assert not list((state / "archives").glob("*.tar"))
    status = _status(sandbox, state)
    assert " plan --containers leave`" in status["next"]
    assert set(sandbox_samples(sandbox).tags) <= _tags(sandbox)


def test_purge_imported_also_removes_what_earlier_rolled_back_migrations_imported(
        fresh_sandbox: SandboxFactory, tmp_path: Path) -> None:
    sandbox = fresh_sandbox("26")
    tags = build_bulk_images(sandbox.host, 3)
    state = tmp_path / "state"
    env = {RESTART_ENV: restart_command(sandbox)}
    assert cli(sandbox, state, "run", "--yes", env=env).returncode == 0
    assert cli(sandbox, state, "rollback", "--yes", env=env).returncode == 0
    # Gone from the legacy store: the second migration does not import it again.
    gone = tags[0]
    docker(sandbox.host, "rmi", gone)
    assert cli(sandbox, state, "run", "--yes", env=env).returncode == 0

    # Status believes the host after a cleanup: no guard, no archives, the next step.
    assert cli(sandbox, state, "cleanup").returncode == 0
    status = _status(sandbox, state)
    assert status["volume_guard"] is False and status["archive_bytes"] == 0
    assert "cleanup --prune-legacy --yes" in status["next"]

    back = cli(sandbox, state, "rollback", "--yes", "--purge-imported", env=env)
    assert back.returncode == 0, back.stdout + back.stderr
    sandbox.stop()
    sandbox.daemon_json.write_bytes(CD_CONFIG)
    sandbox.start()
    left = _tags(sandbox)
    assert gone not in left, f"an earlier migration's import was left behind: {left}"
    assert not set(tags) & left
