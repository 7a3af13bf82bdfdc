"""Issue 11, hostile conditions, on real engines: a planted journal, another host, a second
state dir, prunes after the switch, a daemon.json dockerd rejects, a restart that outlives
its killed run, and the odd inputs that used to crash or hang."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from migrate.errors import ExitCode
from migrate.journal import replay
from migrate.phases.volume_guard import GUARD_NAME
from migrate.sandbox import Sandbox, SandboxFactory, docker, sandbox_samples
from migrate.support.failpoints import ENV as FAILPOINTS_ENV
from migrate.support.failpoints import PAUSE_TIMEOUT_ENV, RESUME_ENV, reached_path

from .cli import child_signals, cli, restart_command, run_args, wait_for_file

pytestmark = pytest.mark.engine

ENGINES = ["26", "28"]


def _show(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def expect(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, _show(result)
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out
    return out


def _volumes(sandbox: Sandbox) -> set[str]:
    return set(docker(sandbox.host, "volume", "ls", "-q").stdout.split())


def _spawn(sandbox: Sandbox, state: Path, *args: str, env: dict[str, str],
           ) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "migrate", "--host", sandbox.host, "--daemon-config",
            str(sandbox.daemon_json), "--state-dir", str(state), *args]
    return subprocess.Popen(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=child_signals)  # noqa: PLW1509  (no threads here)


def _dockerds(sandbox: Sandbox) -> list[int]:
    """Live dockerd processes of this sandbox (by its data-root on the command line)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and argv and argv[0].endswith(b"dockerd") and any(
                str(sandbox.data_root).encode() in arg for arg in argv):
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize("engine", ENGINES)
def test_untrusted_state_other_host_and_second_state_dir_are_refused(
    fresh_sandbox: SandboxFactory, tmp_path: Path, engine: str,
    engine26: Sandbox, engine28: Sandbox,
) -> None:
    """Items 1, 4, 5: every refusal is exit 7 (8 for the lock) and changes nothing; then a
    real rollback with explicit options restores the host."""
    sandbox = fresh_sandbox(engine, samples=True)
    other = engine28 if engine == "26" else engine26
    original = sandbox.daemon_json.read_bytes()
    state, second = tmp_path / "state", tmp_path / "second"

    # A group-writable state dir is refused, its mode is left as it is.
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o2770)
    out = expect(cli(sandbox, loose, *run_args(sandbox)), ExitCode.STATE_INVALID)
    assert "group-writable" in out
    assert loose.stat().st_mode & 0o7777 == 0o2770
    plan = expect(cli(sandbox, loose, "plan", "--containers", "leave"), ExitCode.BLOCKED)
    assert "state-dir-unusable" in plan

    # Host-wide lock: a second state dir against the same daemon waits for nobody.
    resume = tmp_path / "resume"
    env = {FAILPOINTS_ENV: "before:export=pause,after:restart=kill", RESUME_ENV: str(resume),
           PAUSE_TIMEOUT_ENV: "120"}
    first = _spawn(sandbox, state, *run_args(sandbox), env=env)
    try:
        wait_for_file(reached_path(resume), first)
        out = expect(cli(sandbox, second, *run_args(sandbox)), ExitCode.LOCKED)
        assert f"pid {first.pid}" in out and "data-root" in out
    finally:
        resume.touch()
        first.communicate(timeout=300)
    assert first.returncode == -9, "the run should die at after:restart"
    assert replay(state / "journal.jsonl").phase("restart").status == "done"
    assert sandbox.containerd_snapshotter()

    # Resumed against ANOTHER engine: its data-root and ID differ.
    other_run = subprocess.run(
        [sys.executable, "-m", "migrate", "--host", other.host, "--daemon-config",
         str(sandbox.daemon_json), "--state-dir", str(state), *run_args(sandbox)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    assert "belongs to data-root" in expect(other_run, ExitCode.STATE_INVALID)

    # An edited host.json (other machine) is refused by rollback.
    host_json = state / "host.json"
    kept = host_json.read_bytes()
    identity = json.loads(kept)
    assert identity["daemon_id"] == sandbox.info()["ID"]
    host_json.write_text(json.dumps({**identity, "machine_id": "0" * 32}))
    host_json.chmod(0o600)
    out = expect(cli(sandbox, state, "rollback", "--yes"), ExitCode.STATE_INVALID)
    assert "machine-id" in out
    host_json.write_bytes(kept)

    # A planted switch record naming another file and a setuid mode: refused, not written.
    journal = state / "journal.jsonl"
    kept_journal = journal.read_bytes()
    target = tmp_path / "elsewhere" / "planted"
    lines = []
    for line in kept_journal.splitlines():
        record = json.loads(line)
        if record.get("phase") == "switch" and record["event"] in ("phase_started",
                                                                     "phase_done"):
            body = record["intent" if record["event"] == "phase_started" else "undo"]
            body.update(path=str(target), mode=0o6755,
                        original_b64=base64.b64encode(b"#!/bin/sh\nid\n").decode())
        lines.append(json.dumps(record).encode())
    journal.write_bytes(b"\n".join(lines) + b"\n")
    out = expect(cli(sandbox, state, "rollback", "--yes", "--force"), ExitCode.STATE_INVALID)
    assert str(target) in out and not target.exists()
    journal.write_bytes(kept_journal)

    # Explicit --restart-command/--restart-timeout win over the journal, and the command
    # is printed before it runs.
    good = restart_command(sandbox)
    out = expect(cli(sandbox, state, "rollback", "--yes", "--restart-command", good,
                     "--restart-timeout", "97"), 0)
    assert f"`{good}` (given now), waiting up to 97 s" in out
    assert "volume(s) present" in out
    assert not sandbox.containerd_snapshotter()
    assert sandbox.daemon_json.read_bytes() == original


@pytest.mark.parametrize("engine", ENGINES)
def test_volumes_survive_every_prune_and_plan_refuses_a_preswitched_config(
    fresh_sandbox: SandboxFactory, tmp_path: Path, engine: str,
) -> None:
    """Items 2, 3, 7: a daemon.json that already enables the flag blocks plan and run; after
    the switch the running guard keeps every volume of a hidden container through
    `docker system prune -a -f --volumes` and `docker volume prune -a -f`; cleanup refuses
    to prune without a readable snapshot; rollback checks every volume."""
    sandbox = fresh_sandbox(engine, samples=True)
    state = tmp_path / "state"
    original = sandbox.daemon_json.read_bytes()
    switched = json.loads(original or b"{}")
    switched.setdefault("features", {})["containerd-snapshotter"] = True
    sandbox.daemon_json.write_text(json.dumps(switched))
    out = expect(cli(sandbox, state, "plan", "--containers", "leave"), ExitCode.BLOCKED)
    assert "config-already-switched" in out
    out = expect(cli(sandbox, state, *run_args(sandbox)), ExitCode.BLOCKED)
    assert "config-already-switched" in out
    sandbox.daemon_json.write_bytes(original)

    before = _volumes(sandbox)
    assert len(before) >= 2  # the named sample volume and an anonymous one
    expect(cli(sandbox, state, *run_args(sandbox)), 0)
    assert sandbox.containerd_snapshotter()
    docker(sandbox.host, "system", "prune", "-a", "-f", "--volumes")
    docker(sandbox.host, "volume", "prune", "-a", "-f")
    assert _volumes(sandbox) == before
    running = docker(sandbox.host, "ps", "--format", "{{.Names}}").stdout.split()
    assert GUARD_NAME in running

    # cleanup --prune-legacy without a readable snapshot: refused, nothing deleted.
    inventory = state / "inventory.json"
    kept = inventory.read_bytes()
    archives = sorted(p.name for p in (state / "archives").iterdir())
    for damage in (None, b"{not an inventory"):
        if damage is None:
            inventory.unlink()
        else:
            inventory.write_bytes(damage)
            inventory.chmod(0o600)
        out = expect(cli(sandbox, state, "cleanup", "--prune-legacy", "--yes"),
                     ExitCode.STATE_INVALID)
        assert "snapshot" in out
        assert sorted(p.name for p in (state / "archives").iterdir()) == archives
        assert not (state / "legacy-pruned").exists()
        assert GUARD_NAME in docker(sandbox.host, "ps", "--format", "{{.Names}}").stdout
    inventory.write_bytes(kept)

    out = expect(cli(sandbox, state, "rollback", "--yes"), 0)
    assert f"all {len(before)} volume(s) present" in out
    assert not sandbox.containerd_snapshotter()
    assert _volumes(sandbox) == before
    assert sandbox.daemon_json.read_bytes() == original
    samples = sandbox_samples(sandbox)
    for key, content in samples.volume_files.items():
        volume, _, name = key.partition("/")
        shown = docker(sandbox.host, "run", "--rm", "-v", f"{volume}:/v", samples.base_image,
                       "cat", f"/v/{name}").stdout
        assert shown == content


@pytest.mark.parametrize("engine", ENGINES)
def test_daemon_json_dockerd_rejects_and_odd_inputs(
    fresh_sandbox: SandboxFactory, tmp_path: Path, engine: str,
) -> None:
    """Items 9, 10, 12.3: what dockerd would reject blocks plan and run before the switch;
    a FIFO, deep nesting and huge numbers never hang or crash; a state dir under a file,
    on a full filesystem, or a Ctrl-C at start-up get their exit codes."""
    sandbox = fresh_sandbox(engine)
    state = tmp_path / "state"
    original = sandbox.daemon_json.read_bytes()
    config = sandbox.daemon_json

    def set_config(raw: bytes) -> None:
        config.unlink()
        config.write_bytes(raw)

    data = json.loads(original or b"{}")
    for raw, check in (
        (json.dumps({**data, "labels": ["no-equals-sign"]}).encode(), "daemon-config-rejected"),
        (json.dumps(data)[:-1].encode() + b', "debug": NaN}', "daemon-config-invalid"),
        (b'{"debug": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "daemon-config-invalid"),
        (b'{"max-concurrent-downloads": ' + b"9" * 5000 + b"}", "daemon-config-invalid"),
    ):
        set_config(raw)
        out = expect(cli(sandbox, state, "plan"), ExitCode.BLOCKED)
        assert check in out, out
        result = cli(sandbox, state, *run_args(sandbox))
        assert result.returncode in (ExitCode.BLOCKED, ExitCode.CONFIG_INVALID), _show(result)
        assert "Traceback" not in result.stderr
        assert config.read_bytes() == raw
        assert sandbox.ping() and not sandbox.containerd_snapshotter()
    set_config(original)

    config.unlink()
    os.mkfifo(config)
    try:
        out = expect(cli(sandbox, state, "plan", timeout=60), ExitCode.BLOCKED)
        assert "not a regular file" in out
        result = cli(sandbox, state, *run_args(sandbox), timeout=60)
        assert result.returncode in (ExitCode.BLOCKED, ExitCode.CONFIG_INVALID), _show(result)
    finally:
        config.unlink()
        config.write_bytes(original)

    (tmp_path / "file").write_text("x")
    under_file = tmp_path / "file" / "sub"
    expect(cli(sandbox, under_file, *run_args(sandbox)), ExitCode.STATE_INVALID)
    assert "state-dir-unusable" in expect(cli(sandbox, under_file, "plan"), ExitCode.BLOCKED)

    full = tmp_path / "full"
    full.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(full)],
                   check=True)
    try:
        filler = full / "filler"
        with filler.open("wb") as handle, contextlib.suppress(OSError):
            handle.write(b"x" * 200_000)
        result = cli(sandbox, full / "state", *run_args(sandbox))
        assert result.returncode == ExitCode.DISK_FULL, _show(result)
        assert "Traceback" not in result.stderr and "no space left" in result.stderr
        # Nothing to roll back: it needs no room, and creates nothing there.
        result = cli(sandbox, full / "state", "rollback", "--yes")
        assert result.returncode == ExitCode.OK and "no migration to roll back" in result.stdout
    finally:
        subprocess.run(["umount", "-l", str(full)], check=False)

    result = cli(sandbox, state, "plan", failpoints="start-up=sigint")
    assert result.returncode == ExitCode.INTERRUPTED, _show(result)
    assert "Traceback" not in result.stderr and "interrupted" in result.stderr


@pytest.mark.parametrize("engine", ENGINES)
def test_resume_waits_for_a_restart_that_outlived_its_killed_run(
    fresh_sandbox: SandboxFactory, tmp_path: Path, engine: str,
) -> None:
    """Item 6: the CLI is SIGKILLed while a 4 s restart command runs; the resumed run waits
    for that command, sees the daemon on the containerd store and does not restart it
    again (one dockerd), then completes."""
    sandbox = fresh_sandbox(engine, samples=True)
    state = tmp_path / "state"
    # Its output goes nowhere: the killed CLI's pipes would end it early.
    slow = f"sh -c 'exec >/dev/null 2>&1; sleep 4; exec {restart_command(sandbox)}'"
    killed = cli(sandbox, state, "run", "--yes", "--containers", "leave", "--restart-command",
                 slow, failpoints="restart:command-started=kill")
    assert killed.returncode == -9, _show(killed)
    progress = replay(state / "journal.jsonl").phase("restart").progress
    pid = progress[-1]["restart_pid"]
    assert isinstance(pid, int)
    assert Path(f"/proc/{pid}").exists(), "the restart command should still run"
    resumed = cli(sandbox, state, *run_args(sandbox))
    expect(resumed, 0)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    restart = replay(state / "journal.jsonl").phase("restart")
    assert (restart.result or {}).get("restarted") is False, restart.result
    assert sandbox.containerd_snapshotter()
    assert len(_dockerds(sandbox)) == 1, _dockerds(sandbox)
    expect(cli(sandbox, state, "rollback", "--yes", "--purge-imported"), 0)
    assert not sandbox.containerd_snapshotter()
    assert re.search(r"\d", sandbox.info()["ID"])


@pytest.mark.parametrize("engine", ENGINES)
def test_rollback_again_waits_for_the_restart_its_killed_rollback_left(
    fresh_sandbox: SandboxFactory, tmp_path: Path, engine: str,
) -> None:
    """The rollback is SIGKILLed while its own 4 s restart command runs: the next rollback
    waits for that command (journaled by the switch undo), finds the daemon back on the
    legacy store and does not restart it a second time."""
    sandbox = fresh_sandbox(engine, samples=True)
    state = tmp_path / "state"
    expect(cli(sandbox, state, *run_args(sandbox)), 0)
    slow = f"sh -c 'exec >/dev/null 2>&1; sleep 4; exec {restart_command(sandbox)}'"
    killed = cli(sandbox, state, "rollback", "--yes", "--restart-command", slow,
                 failpoints="rollback:restart-command-started=kill")
    assert killed.returncode == -9, _show(killed)
    progress = replay(state / "journal.jsonl").phase("switch").progress
    pid = progress[-1]["restart_pid"]
    assert isinstance(pid, int)
    assert Path(f"/proc/{pid}").exists(), "the restart command should still run"
    again = cli(sandbox, state, "rollback", "--yes")
    expect(again, 0)
    assert "already runs on the legacy store" in again.stdout + again.stderr, _show(again)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert not sandbox.containerd_snapshotter()
    assert len(_dockerds(sandbox)) == 1, _dockerds(sandbox)
