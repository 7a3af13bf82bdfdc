from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from migrate.errors import ExitCode, LockedError, StateError
from migrate.journal.state_dir import StateDir, current_host_identity

pytestmark = pytest.mark.unit

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")

HOLD_LOCK = """
import sys
from migrate.journal.state_dir import StateDir
with StateDir(sys.argv[1]).lock():
    print("locked", flush=True)
    sys.stdin.read()
"""


def _mode(path: Path) -> int:
    return path.lstat().st_mode & 0o7777


@pytest.fixture
def machine_id(tmp_path: Path) -> Path:
    path = tmp_path / "machine-id"
    path.write_text("0123456789abcdef0123456789abcdef\n")
    return path


@pytest.fixture
def state(tmp_path: Path, machine_id: Path) -> StateDir:
    return StateDir(tmp_path / "var" / "lib" / "cm", machine_id_file=machine_id)


def test_ensure_creates_private_dirs(state: StateDir) -> None:
    old = os.umask(0)
    try:
        state.ensure()
    finally:
        os.umask(old)
    for folder in (state.path, state.archives_dir, state.reports_dir):
        assert folder.is_dir()
        assert _mode(folder) == 0o700
    assert state.journal_path == state.path / "journal.jsonl"
    assert state.inventory_path == state.path / "inventory.json"
    state.ensure()  # idempotent


def test_ensure_accepts_a_readable_dir_without_changing_it(state: StateDir) -> None:
    state.path.mkdir(parents=True, mode=0o755)
    state.path.chmod(0o755)
    state.ensure()
    assert _mode(state.path) == 0o755
    assert state.problem() is None


@pytest.mark.parametrize("mode", [0o2770, 0o770, 0o720])
def test_group_writable_state_dir_is_refused_not_fixed(state: StateDir, mode: int) -> None:
    """Issue 11.1: a group member could have planted a journal; never chmod silently."""
    state.path.mkdir(parents=True)
    state.path.chmod(mode)
    with pytest.raises(StateError, match="group-writable") as caught:
        state.ensure()
    assert caught.value.exit_code == ExitCode.STATE_INVALID
    assert _mode(state.path) == mode
    assert state.problem() is not None and "group-writable" in state.problem()  # type: ignore[operator]


@pytest.mark.parametrize("name", ["journal.jsonl", "host.json", "archives/batch-1.tar"])
def test_group_writable_file_in_state_dir_is_refused(state: StateDir, name: str) -> None:
    state.ensure()
    planted = state.path / name
    planted.write_text("{}\n")
    planted.chmod(0o660)
    with pytest.raises(StateError, match=r"state file .* group-writable"):
        state.ensure()
    assert _mode(planted) == 0o660
    with pytest.raises(StateError, match="group-writable"):
        state.lock().__enter__()


@needs_root
def test_file_of_another_uid_in_state_dir_is_refused(state: StateDir) -> None:
    state.ensure()
    planted = state.journal_path
    planted.write_text("")
    os.chown(planted, 4242, 4242)
    with pytest.raises(StateError, match="owned by uid 4242"):
        state.ensure()


def test_state_dir_under_a_file_is_a_state_error(tmp_path: Path, machine_id: Path) -> None:
    """Issue 11.10: `--state-dir FILE/sub` raised NotADirectoryError."""
    (tmp_path / "file").write_text("x")
    state = StateDir(tmp_path / "file" / "sub", machine_id_file=machine_id)
    with pytest.raises(StateError, match="cannot create state dir") as caught:
        state.ensure()
    assert caught.value.exit_code == ExitCode.STATE_INVALID
    assert "not a directory" in (state.problem() or "")


def test_symlinked_state_dir_is_refused(tmp_path: Path, machine_id: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(StateError, match="symlink") as caught:
        StateDir(link, machine_id_file=machine_id).ensure()
    assert caught.value.exit_code == ExitCode.STATE_INVALID
    assert "--state-dir" in caught.value.hint
    assert list(real.iterdir()) == []


def test_world_writable_state_dir_is_refused(state: StateDir) -> None:
    state.path.mkdir(parents=True)
    state.path.chmod(0o777)
    with pytest.raises(StateError, match="world-writable"):
        state.ensure()


@needs_root
def test_state_dir_of_another_uid_is_refused(state: StateDir) -> None:
    state.path.mkdir(parents=True, mode=0o700)
    os.chown(state.path, 4242, 4242)
    with pytest.raises(StateError, match="owned by uid 4242"):
        state.ensure()


def test_symlinked_journal_is_refused(tmp_path: Path, state: StateDir) -> None:
    state.ensure()
    (tmp_path / "elsewhere").write_text("")
    state.journal_path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StateError, match="symlink"):
        state.ensure()
    with pytest.raises(StateError, match="symlink"):
        state.journal().open()


def test_write_file_is_private_and_confined(state: StateDir) -> None:
    state.ensure()
    state.write_file(state.inventory_path, b"{}")
    assert _mode(state.inventory_path) == 0o600
    with pytest.raises(StateError):
        state.write_file(state.path.parent / "outside", b"")


def test_journal_in_state_dir_is_private(state: StateDir) -> None:
    state.ensure()
    with state.lock(), state.journal() as journal:
        journal.start_run("0.1.0")
    assert _mode(state.journal_path) == 0o600


def test_host_identity_written_once_then_checked(state: StateDir) -> None:
    first = state.check_host("/var/lib/docker")
    assert first.source == "machine-id"
    assert _mode(state.host_identity_path) == 0o600
    stored = json.loads(state.host_identity_path.read_text())
    assert stored["machine_id"] == "0123456789abcdef0123456789abcdef"
    assert stored["data_root"] == "/var/lib/docker"
    assert state.check_host("/var/lib/docker/") == first


def test_other_data_root_is_refused(state: StateDir) -> None:
    state.check_host("/var/lib/docker")
    with pytest.raises(StateError, match="/srv/docker") as caught:
        state.check_host("/srv/docker")
    assert "--state-dir" in caught.value.hint


def test_other_host_is_refused(tmp_path: Path, state: StateDir) -> None:
    state.check_host("/var/lib/docker")
    other_id = tmp_path / "other-machine-id"
    other_id.write_text("ffffffffffffffffffffffffffffffff\n")
    with pytest.raises(StateError, match="belongs to"):
        StateDir(state.path, machine_id_file=other_id).check_host("/var/lib/docker")


def test_hostname_when_machine_id_is_unreadable(tmp_path: Path) -> None:
    identity = current_host_identity("/var/lib/docker", tmp_path / "missing")
    assert identity.source == "hostname"
    assert identity.machine_id == socket.gethostname()


def test_lock_records_pid_and_clears_it(state: StateDir) -> None:
    with state.lock():
        assert state.lock_path.read_text() == f"{os.getpid()}\n"
        assert _mode(state.lock_path) == 0o600
    assert state.lock_path.read_text() == ""


def test_second_lock_in_same_process_is_refused(state: StateDir) -> None:
    with state.lock(), pytest.raises(LockedError, match=f"pid {os.getpid()}"), state.lock():
        pass


def test_lock_held_by_another_process(state: StateDir) -> None:
    state.ensure()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(state.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(LockedError) as caught, state.lock():
            pass
        assert f"pid {holder.pid}" in caught.value.message
        assert caught.value.exit_code == ExitCode.LOCKED
        assert caught.value.hint
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    with state.lock():
        pass
