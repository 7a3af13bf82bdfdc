"""Every command, given a state dir it cannot use, says so in one paragraph with the state
dir's exit code: never a traceback, never a fall-back elsewhere (issue 23 item 13)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.errors import ExitCode
from tests.unit.fake_api import FakeApi, empty_daemon, fake_api

pytestmark = pytest.mark.unit

# Every command, with what it needs to get as far as the state dir.
COMMANDS: dict[str, tuple[str, ...]] = {
    "plan": ("plan", "--restart-command", "true"),
    "export": ("export", "--restart-command", "true"),
    "stage": ("stage", "--restart-command", "true"),
    "run": ("run", "--yes", "--restart-command", "true"),
    "status": ("status",),
    "verify": ("verify",),
    "rollback": ("rollback", "--yes", "--restart-command", "true"),
    "cleanup": ("cleanup", "--yes"),
    "rehearse": ("rehearse",),
}
# Those that write into the state dir before anything else (the lock): on a full
# filesystem they stop with the disk-full code.
# The commands that write to the state dir. rollback, cleanup and verify with no migration
# have nothing to do and write nothing (the lifecycle decides before the state dir is used).
WRITERS = ("export", "stage", "run", "rehearse")

Mount = Callable[[str], Path]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Mount]:
    """mount(options) -> a fresh tmpfs (root's, 0700); unmounted after the test."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        target = tmp_path / f"tmpfs-{len(mounted)}"
        target.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=64k,mode=0700,{options}",
                        "tmpfs", str(target)], check=True)
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", str(target)], check=False)


def _shape(name: str, tmp_path: Path, tmpfs: Mount) -> Path:
    if name == "under-a-file":
        (tmp_path / "file").write_text("x")
        return tmp_path / "file" / "sub"
    if name == "a-file":
        (tmp_path / "file").write_text("x")
        return tmp_path / "file"
    if name == "a-device":
        return Path("/dev/null")
    if name == "name-too-long":
        return tmp_path / ("n" * 300)
    if name == "dangling-symlink":
        (tmp_path / "link").symlink_to(tmp_path / "nowhere" / "state")
        return tmp_path / "link"
    if name == "read-only":
        return tmpfs("ro")
    if name == "under-read-only":
        return tmpfs("ro") / "state"
    assert name == "full"
    full = tmpfs("rw")
    (full / "state").mkdir(mode=0o700)
    with (full / "filler").open("wb") as filler, pytest.raises(OSError):
        filler.write(b"\0" * (1 << 20))
        filler.flush()
    return full / "state"


UNUSABLE = ("under-a-file", "a-file", "a-device", "name-too-long", "dangling-symlink",
            "read-only", "under-read-only")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[FakeApi]:
    # A daemon that answers: the state dir, not the daemon, must be what stops them.
    with fake_api(tmp_path, empty_daemon(tmp_path / "data-root")) as api:
        yield api


def _invoke(daemon: FakeApi, tmp_path: Path, state: Path, command: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [
        "-q", "--host", daemon.host, "--daemon-config", str(tmp_path / "daemon.json"),
        "--state-dir", str(state), *COMMANDS[command]])
    assert "Traceback" not in result.output and (
        result.exception is None or isinstance(result.exception, SystemExit)), result.output
    return result.exit_code, _without_warnings(result.output)


def _without_warnings(output: str) -> str:
    """The output without `warning:` paragraphs (a tmpfs state dir is warned about too)."""
    kept, skipping = [], False
    for line in output.splitlines(keepends=True):
        if line.startswith("warning: "):
            skipping = True
        elif skipping and line.startswith(" "):
            continue
        else:
            skipping = False
        if not skipping:
            kept.append(line)
    return "".join(kept)


def test_every_command_is_covered() -> None:
    assert set(COMMANDS) == set(main.commands)


@pytest.mark.parametrize("shape", UNUSABLE)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unusable_state_dir_is_one_paragraph_and_exit_7(
        tmp_path: Path, tmpfs: Mount, daemon: FakeApi, shape: str, command: str) -> None:
    state = _shape(shape, tmp_path, tmpfs)
    code, output = _invoke(daemon, tmp_path, state, command)
    if command == "plan":  # plan writes nothing: the state dir is one of its blockers
        assert code == ExitCode.BLOCKED, output
        assert "[state-dir-unusable]" in output, output
        return
    assert code == ExitCode.STATE_INVALID, output
    lines = output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") \
        and lines[1].startswith("hint: "), output
    assert str(state.parent) in lines[0], output


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_full_state_dir(tmp_path: Path, tmpfs: Mount, daemon: FakeApi,
                          command: str) -> None:
    state = _shape("full", tmp_path, tmpfs)
    code, output = _invoke(daemon, tmp_path, state, command)
    expected = {"plan": ExitCode.BLOCKED, "status": ExitCode.OK,
                # no migration in it: nothing to verify or clean up, nothing to roll back
                "verify": ExitCode.BLOCKED, "cleanup": ExitCode.BLOCKED,
                "rollback": ExitCode.OK}.get(command, ExitCode.DISK_FULL)
    assert code == expected, output
    if command in WRITERS:
        assert output.startswith("error: no space left"), output
    if command == "plan":
        assert "[disk-state-dir]" in output, output
