"""docker.service's start limit (systemctl's answers, the plan's check, the restart retry),
and the set-ups plan refuses: rootless Docker, the snap, Docker Desktop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from migrate.errors import RestartFailed
from migrate.host import systemd
from migrate.host.launch import parse_dockerd_argv
from migrate.host.restart_command import run_restart_with_recovery
from migrate.host.systemd import (
    UnitState,
    describe_limit,
    parse_journal_starts,
    parse_timespan,
    parse_unit_state,
    seconds_since_start,
)
from migrate.preflight.checks import Severity, evaluate_checks
from migrate.preflight.facts import PlanOptions

from .test_checks import facts

pytestmark = pytest.mark.unit

# What Debian trixie's docker.service answers after its 4th start within a minute.
SHOW_HIT = """LoadState=loaded
ActiveState=failed
Result=start-limit-hit
StartLimitBurst=3
StartLimitIntervalUSec=1min
NRestarts=0
InactiveExitTimestampMonotonic=832860955
"""


@pytest.mark.parametrize(("text", "micros"), [
    ("1min", 60_000_000), ("60", 60_000_000), ("10s", 10_000_000), ("1min 30s", 90_000_000),
    ("500ms", 500_000), ("2h", 7_200_000_000), ("1.5s", 1_500_000),
])
def test_parse_timespan(text: str, micros: int) -> None:
    assert parse_timespan(text) == micros


@pytest.mark.parametrize("text", ["", "infinity", "soon", "1 fortnight", "min"])
def test_parse_timespan_rejects(text: str) -> None:
    assert parse_timespan(text) is None


def test_parse_unit_state_reads_the_start_limit_and_its_result() -> None:
    state = parse_unit_state("docker.service", SHOW_HIT)
    assert state.loaded and state.limited and state.start_limit_hit
    assert (state.start_limit_burst, state.start_limit_interval_us) == (3, 60_000_000)
    assert state.last_start_us == 832860955
    assert describe_limit(state) == "3 starts in 1min"
    assert seconds_since_start(state, 842860955) == 10.0


def test_parse_unit_state_of_a_missing_unit() -> None:
    state = parse_unit_state("docker.service", "LoadState=not-found\nResult=success\n"
                             "StartLimitBurst=5\nStartLimitIntervalUSec=10s\n"
                             "InactiveExitTimestampMonotonic=0\n")
    assert not state.loaded and not state.start_limit_hit
    assert state.last_start_us is None and seconds_since_start(state, 1) is None


def test_parse_journal_starts_counts_entries() -> None:
    assert parse_journal_starts('{"UNIT":"docker.service"}\n{"UNIT":"docker.service"}\n') == 2
    assert parse_journal_starts("") == 0


def _unit(burst: int = 3, result: str = "success") -> UnitState:
    return UnitState(unit="docker.service", load_state="loaded", result=result,
                     start_limit_burst=burst, start_limit_interval_us=60_000_000)


def _start_limit_check(unit: UnitState | None, ago: float | None, starts: int | None,
                       ) -> tuple[Severity, str] | None:
    host = facts().model_copy(update={"docker_unit": unit, "docker_started_ago": ago,
                                      "docker_recent_starts": starts})
    found = [c for c in evaluate_checks(host, PlanOptions()) if c.id == "start-limit"]
    return (found[0].severity, found[0].message + found[0].hint) if found else None


def test_start_limit_check_warns_when_a_migration_may_exceed_it() -> None:
    # The boot start and an operator's restart: the migration's restart and its rollback
    # make four starts in a minute.
    severity, text = _start_limit_check(_unit(), ago=5.0, starts=2) or (None, "")
    assert severity is Severity.WARNING
    assert "3 starts in 1min" in text and "2 start(s) in the last 60 s" in text
    assert "systemctl reset-failed docker.service docker.socket" in text


def test_start_limit_check_is_info_with_room_left() -> None:
    # Only the boot start in the window: boot, restart and rollback make three.
    for ago, starts in ((5.0, 1), (300.0, 0), (5.0, None)):
        found = _start_limit_check(_unit(), ago=ago, starts=starts)
        assert found is not None and found[0] is Severity.INFO


def test_start_limit_check_warns_after_a_refused_start() -> None:
    severity, text = _start_limit_check(_unit(result="start-limit-hit"), None, None) or (
        None, "")
    assert severity is Severity.WARNING and "start-limit-hit" in text


def test_start_limit_check_is_silent_without_a_limit_or_a_unit() -> None:
    assert _start_limit_check(None, None, None) is None
    assert _start_limit_check(_unit(burst=0), 1.0, 5) is None


# --- the restart retry ------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "through_unit"), [
    (("systemctl", "restart", "docker"), True),
    (("/usr/bin/systemctl", "restart", "docker.service"), True),
    (("service", "docker", "restart"), True),
    (("systemctl", "restart", "containerd"), False),
    (("python3", "-m", "migrate.sandbox", "restart", "--dir", "/tmp/x"), False),
    (("rc-service", "docker", "restart"), False),
    ((), False),
])
def test_only_a_docker_service_restart_resets_its_start_limit(
        argv: tuple[str, ...], through_unit: bool) -> None:
    assert systemd.restarts_docker_service(argv) is through_unit
    assert (systemd.start_limit_recovery(argv, lambda _data: None) is not None) is through_unit


def _counting_command(tmp_path: Path, fail_first: int) -> tuple[list[str], Path]:
    """A restart command that fails its first `fail_first` runs; counts runs in a file."""
    counter = tmp_path / "runs"
    counter.write_text("0")
    script = (f"import sys, pathlib; p = pathlib.Path({str(counter)!r}); "
              f"n = int(p.read_text()) + 1; p.write_text(str(n)); "
              f"sys.exit(1 if n <= {fail_first} else 0)")
    return [sys.executable, "-c", script], counter


def test_restart_retries_once_when_the_cause_was_cleared(tmp_path: Path) -> None:
    argv, counter = _counting_command(tmp_path, fail_first=1)
    seen: list[RestartFailed] = []

    def recover(failure: RestartFailed) -> bool:
        seen.append(failure)
        return True

    run_restart_with_recovery(argv, 30, recover=recover)
    assert counter.read_text() == "2" and len(seen) == 1


def test_restart_retries_only_once(tmp_path: Path) -> None:
    argv, counter = _counting_command(tmp_path, fail_first=5)
    with pytest.raises(RestartFailed):
        run_restart_with_recovery(argv, 30, recover=lambda _failure: True)
    assert counter.read_text() == "2"


def test_restart_does_not_retry_when_nothing_was_cleared(tmp_path: Path) -> None:
    argv, counter = _counting_command(tmp_path, fail_first=1)
    with pytest.raises(RestartFailed):
        run_restart_with_recovery(argv, 30, recover=lambda _failure: False)
    assert counter.read_text() == "1"


def test_reset_only_after_start_limit_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    journaled: list[tuple[str, ...]] = []
    states = {"docker.service": parse_unit_state("docker.service", SHOW_HIT),
              "docker.socket": UnitState(unit="docker.socket", load_state="loaded",
                                         result="service-start-limit-hit")}
    monkeypatch.setattr(systemd, "unit_state", lambda unit="docker.service": states[unit])

    class Done:
        returncode = 0

    def fake_run(argv: list[str], **_kwargs: object) -> Done:
        # The reset is journaled before it runs.
        assert journaled, "reset-failed ran before it was journaled"
        calls.append(argv)
        return Done()

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert systemd.reset_start_limit_if_hit(lambda _state, units: journaled.append(units))
    assert calls == [["systemctl", "reset-failed", "docker.service", "docker.socket"]]
    assert journaled == [("docker.service", "docker.socket")]

    states["docker.service"] = _unit(result="exit-code")
    calls.clear()
    assert not systemd.reset_start_limit_if_hit(lambda _state, units: journaled.append(units))
    assert calls == []


# --- set-ups the tool does not support ---------------------------------------------------


def _setup_check(engine: dict[str, object], argv: tuple[str, ...] = ("dockerd",),
                 ) -> tuple[Severity, str] | None:
    host = facts(engine=engine, launch=parse_dockerd_argv(list(argv), source="proc"))
    found = [c for c in evaluate_checks(host, PlanOptions()) if c.id == "unsupported-setup"]
    return (found[0].severity, found[0].message + " " + found[0].hint) if found else None


@pytest.mark.parametrize(("engine", "argv", "named"), [
    ({"security_options": ("name=seccomp,profile=builtin", "name=rootless")}, ("dockerd",),
     "rootless Docker"),
    ({"data_root": "/var/snap/docker/common/var-lib-docker"}, ("dockerd",), "the Docker snap"),
    ({}, ("/snap/docker/2932/bin/dockerd",), "the Docker snap"),
    ({"operating_system": "Docker Desktop"}, ("dockerd",), "Docker Desktop"),
])
def test_unsupported_setups_block_with_the_reason(engine: dict[str, object],
                                                  argv: tuple[str, ...], named: str) -> None:
    found = _setup_check(engine, argv)
    assert found is not None
    severity, text = found
    assert severity is Severity.BLOCKER
    assert f"this daemon is {named}, which containerd-migrate does not support" in text


def test_a_system_daemon_is_supported() -> None:
    assert _setup_check({"operating_system": "Debian GNU/Linux 13 (trixie)",
                         "security_options": ("name=seccomp,profile=builtin",)}) is None
