from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from migrate.errors import BlockedError, ExitCode, RestartFailed, UsageError
from migrate.host import processes, restart_command, systemd
from migrate.host.restart_command import (
    default_restart_command,
    parse_restart_command,
    run_restart_command,
)

pytestmark = pytest.mark.unit


# --- parse_restart_command -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "argv"),
    [
        ("systemctl restart docker", ("systemctl", "restart", "docker")),
        ("  rc-service   docker restart ", ("rc-service", "docker", "restart")),
        ("sv restart 'my docker'", ("sv", "restart", "my docker")),
        ('/opt/x/restart "a b" c\\ d', ("/opt/x/restart", "a b", "c d")),
        # Shell syntax is just text: nothing is ever run through a shell.
        ("restart; rm -rf /", ("restart;", "rm", "-rf", "/")),
    ],
)
def test_parse_restart_command_splits_like_a_shell(text: str, argv: tuple[str, ...]) -> None:
    assert parse_restart_command(text) == argv


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_parse_restart_command_rejects_empty(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_restart_command(text)
    assert caught.value.exit_code == ExitCode.USAGE
    assert "--restart-command" in caught.value.hint


def test_parse_restart_command_rejects_unbalanced_quotes() -> None:
    with pytest.raises(UsageError, match="cannot parse"):
        parse_restart_command("systemctl restart 'docker")


# --- default_restart_command -----------------------------------------------------------


@pytest.fixture
def host_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake root: no systemd, no init script, no tools, until a test adds them."""
    runtime = tmp_path / "run-systemd-system"
    units = tmp_path / "lib-systemd-system"
    monkeypatch.setattr(systemd, "RUNTIME_DIR", runtime)
    monkeypatch.setattr(systemd, "UNIT_DIRS", (units,))
    monkeypatch.setattr(restart_command, "SYSV_INIT_SCRIPT", tmp_path / "init.d-docker")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    return tmp_path


def _tools(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    found = {name: f"/usr/bin/{name}" for name in names}
    monkeypatch.setattr(shutil, "which", found.get)


def _systemd(root: Path, with_unit: bool = True) -> None:
    (root / "run-systemd-system").mkdir()
    units = root / "lib-systemd-system"
    units.mkdir()
    if with_unit:
        (units / "docker.service").write_text("[Service]\n")


def test_default_is_systemctl_when_systemd_runs_docker_service(
    host_layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _systemd(host_layout)
    (host_layout / "init.d-docker").write_text("#!/bin/sh\n")
    _tools(monkeypatch, "systemctl", "service")
    assert default_restart_command() == ("systemctl", "restart", "docker")


def test_default_is_service_when_systemd_does_not_know_docker(
    host_layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _systemd(host_layout, with_unit=False)
    (host_layout / "init.d-docker").write_text("#!/bin/sh\n")
    _tools(monkeypatch, "systemctl", "service")
    assert default_restart_command() == ("service", "docker", "restart")


def test_default_is_service_when_systemd_is_not_pid1(
    host_layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # systemctl installed in a container without systemd running: it cannot restart anything.
    (host_layout / "lib-systemd-system").mkdir()
    (host_layout / "lib-systemd-system" / "docker.service").write_text("")
    (host_layout / "init.d-docker").write_text("#!/bin/sh\n")
    _tools(monkeypatch, "systemctl", "service")
    assert default_restart_command() == ("service", "docker", "restart")


@pytest.mark.parametrize(
    ("tools", "init_script"),
    [((), False), (("service",), False), ((), True), (("systemctl",), False)],
)
def test_default_without_a_known_service_manager_asks_for_the_flag(
    host_layout: Path, monkeypatch: pytest.MonkeyPatch, tools: tuple[str, ...],
    init_script: bool,
) -> None:
    if init_script:
        (host_layout / "init.d-docker").write_text("#!/bin/sh\n")
    _tools(monkeypatch, *tools)
    with pytest.raises(BlockedError) as caught:
        default_restart_command()
    assert "--restart-command" in caught.value.hint
    # The same refusal as plan's `restart-command` blocker, with plan's exit code.
    assert caught.value.exit_code == ExitCode.BLOCKED


# --- run_restart_command ---------------------------------------------------------------


def test_run_restart_command_success(tmp_path: Path) -> None:
    """It ran (the command's own effect is there), it was reported started with its pid,
    and it was waited for: the pid is gone by the time the call returns."""
    marker = tmp_path / "ran"
    seen: list[tuple[int, int]] = []
    run_restart_command([sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ok')"],
                        timeout=30, started=lambda pid, when: seen.append((pid, when)))
    assert marker.read_text() == "ok"
    ((pid, when),) = seen
    assert processes.process_start_time(pid) != when  # ended (reaped), not left behind


def test_run_restart_command_failure_shows_stderr_tail() -> None:
    script = "import sys\nfor i in range(40): print(f'line {i}', file=sys.stderr)\nsys.exit(3)"
    with pytest.raises(RestartFailed) as caught:
        run_restart_command([sys.executable, "-c", script], timeout=30)
    message = caught.value.message
    assert "status 3" in message
    assert "line 39" in message
    assert "line 10\n" not in message  # only the tail
    assert "journalctl -u docker" in caught.value.hint


def test_run_restart_command_missing_binary() -> None:
    with pytest.raises(RestartFailed, match="not found"):
        run_restart_command(["/nonexistent/restart-docker"], timeout=5)


def test_run_restart_command_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(RestartFailed, match="did not finish"):
        run_restart_command([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert time.monotonic() - started < 10


def _background_child(pidfile: Path, then: str) -> list[str]:
    """A command that leaves a child in the background holding its stdout and stderr."""
    return ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; echo started >&2; {then}"]


def _alive(pid: int) -> bool:
    return processes.process_start_time(pid) is not None


def test_a_background_child_holding_the_output_does_not_hold_the_command(
        tmp_path: Path) -> None:
    """The command exits at once: it is done, whatever its child does with the pipes."""
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    try:
        with pytest.raises(RestartFailed) as caught:
            run_restart_command(_background_child(pidfile, "exit 4"), timeout=20)
        assert time.monotonic() - started < 5
        assert "status 4" in caught.value.message and "started" in caught.value.message
        child = int(pidfile.read_text())
        assert _alive(child), "a child of a command that finished is left alone"
    finally:
        if pidfile.exists() and _alive(child := int(pidfile.read_text())):
            os.kill(child, signal.SIGKILL)  # the test's own child: we started it


def test_the_deadline_holds_and_ends_what_the_command_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(RestartFailed, match="did not finish within 1 s"):
        run_restart_command(_background_child(pidfile, "sleep 60"), timeout=1)
    assert time.monotonic() - started < 5
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the command's process group is killed at the deadline"
