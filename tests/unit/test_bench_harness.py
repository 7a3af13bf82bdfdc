"""The benchmark scripts' shared harness (benchmarks/harness.py), on a fake sandbox."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from benchmarks.harness import BenchError, bench_sandbox, run_in_sandbox, run_main

pytestmark = pytest.mark.unit


@dataclass
class FakeSandbox:
    """Records what the harness did to it; says so on stderr when destroyed, so a test sees
    the order of that and the harness's own lines."""

    dir: Path
    fail_start: bool = False
    events: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"unix://{self.dir}/docker.sock"

    def start(self) -> None:
        self.events.append("start")
        if self.fail_start:
            raise RuntimeError("dockerd did not come up")

    def destroy(self) -> None:
        self.events.append("destroy")
        print("destroyed", file=sys.stderr)


def test_a_failed_block_destroys_the_started_sandbox(tmp_path: Path) -> None:
    sandbox = FakeSandbox(tmp_path / "sb")
    with pytest.raises(BenchError, match="a step"), bench_sandbox(sandbox, keep=False) as s:
        assert s is sandbox
        assert sandbox.events == ["start"]
        raise BenchError("a step")
    assert sandbox.events == ["start", "destroy"]


def test_a_sandbox_that_fails_to_start_is_destroyed_too(tmp_path: Path) -> None:
    sandbox = FakeSandbox(tmp_path / "sb", fail_start=True)
    with pytest.raises(RuntimeError, match="did not come up"), bench_sandbox(sandbox, False):
        pytest.fail("the block must not run without a started sandbox")
    assert sandbox.events == ["start", "destroy"]


def test_keep_leaves_the_sandbox_and_reports_where_it_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sandbox = FakeSandbox(tmp_path / "sb")
    with bench_sandbox(sandbox, keep=True):
        pass
    assert sandbox.events == ["start"]
    assert capsys.readouterr().out == (
        f"kept: {tmp_path / 'sb'} (DOCKER_HOST=unix://{tmp_path / 'sb'}/docker.sock)\n")


def test_keep_reports_with_the_scripts_own_line_or_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sandbox = FakeSandbox(tmp_path / "sb")
    with bench_sandbox(sandbox, keep=True, kept=lambda s: f"kept: {s.dir}"):
        pass
    assert capsys.readouterr().out == f"kept: {tmp_path / 'sb'}\n"
    with bench_sandbox(sandbox, keep=True, kept=None):
        pass
    assert capsys.readouterr().out == ""
    assert "destroy" not in sandbox.events


def test_also_removed_goes_with_the_sandbox_and_stays_with_keep(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "sub").mkdir(parents=True)
    (state / "sub" / "file").write_text("x")
    with bench_sandbox(FakeSandbox(tmp_path / "sb"), keep=True, also_removed=state):
        pass
    assert (state / "sub" / "file").exists()
    with bench_sandbox(FakeSandbox(tmp_path / "sb"), keep=False, also_removed=state):
        pass
    assert not state.exists()


def test_run_main_turns_a_failed_step_into_one_line_and_exit_1(
        capsys: pytest.CaptureFixture[str]) -> None:
    def failing() -> int:
        raise BenchError("docker load failed (1): no space")

    assert run_main(failing) == 1
    assert capsys.readouterr().err == "benchmark failed: docker load failed (1): no space\n"
    assert run_main(lambda: 7) == 7
    assert capsys.readouterr().err == ""


def test_run_main_lets_other_errors_through() -> None:
    def broken() -> int:
        raise KeyError("figures")

    with pytest.raises(KeyError):
        run_main(broken)


def test_run_in_sandbox_reports_the_failure_before_the_sandbox_goes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sandbox = FakeSandbox(tmp_path / "sb")

    def body(started: FakeSandbox) -> int:
        assert started.events == ["start"]
        raise BenchError("the journal says 0 bytes")

    assert run_in_sandbox(sandbox, False, body) == 1
    assert capsys.readouterr().err == "benchmark failed: the journal says 0 bytes\ndestroyed\n"
    assert sandbox.events == ["start", "destroy"]


def test_run_in_sandbox_returns_the_body_s_status_and_keeps_on_request(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sandbox = FakeSandbox(tmp_path / "sb")
    assert run_in_sandbox(sandbox, True, lambda started: 0,
                          kept=lambda s: f"kept: {s.dir}, state") == 0
    assert capsys.readouterr().out == f"kept: {tmp_path / 'sb'}, state\n"
    assert sandbox.events == ["start"]
