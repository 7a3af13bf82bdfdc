from __future__ import annotations

import errno
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrate.errors import DiskFullError, ExitCode
from migrate.host import fs as fsutil
from migrate.host.fs import (
    HashingWriter,
    atomic_write_bytes,
    disk_full_guard,
    free_bytes,
    fsync_dir,
    sha256_file,
)

pytestmark = pytest.mark.unit

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


@pytest.mark.usefixtures("umask_077")
def test_atomic_write_sets_exact_mode_despite_umask(tmp_path: Path) -> None:
    target = tmp_path / "daemon.json"
    atomic_write_bytes(target, b'{"a": 1}', 0o644)
    assert target.read_bytes() == b'{"a": 1}'
    assert _mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["daemon.json"]


def test_atomic_write_replacing_keeps_requested_mode(tmp_path: Path) -> None:
    target = tmp_path / "daemon.json"
    target.write_bytes(b"old")
    target.chmod(0o640)
    atomic_write_bytes(target, b"new", _mode(target))
    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o640


@needs_root
def test_atomic_write_chowns(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write_bytes(target, b"x", 0o600, uid=1234, gid=4321)
    info = target.stat()
    assert (info.st_uid, info.st_gid) == (1234, 4321)


def test_atomic_write_failure_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "daemon.json"
    target.write_bytes(b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="I/O error"):
        atomic_write_bytes(target, b"new", 0o600)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["daemon.json"]


def test_atomic_write_disk_full_is_disk_full_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_write(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_write)
    with pytest.raises(DiskFullError) as caught:
        atomic_write_bytes(tmp_path / "f", b"data", 0o600)
    assert caught.value.exit_code == ExitCode.DISK_FULL
    assert list(tmp_path.iterdir()) == []


def test_fsync_dir_fsyncs_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    fsync_dir(tmp_path)
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("code", "reason"), [(errno.ENOSPC, "no space left"), (errno.EDQUOT, "quota exceeded")]
)
def test_disk_full_guard_maps_enospc_and_edquot(tmp_path: Path, code: int, reason: str) -> None:
    with pytest.raises(DiskFullError) as caught, disk_full_guard(tmp_path, "saving nginx"):
        raise OSError(code, os.strerror(code))
    error = caught.value
    assert reason in error.message
    assert str(tmp_path) in error.message
    assert "saving nginx" in error.message
    assert "bytes free" in error.hint
    assert isinstance(error.__cause__, OSError)


def test_disk_full_guard_passes_other_errors(tmp_path: Path) -> None:
    with pytest.raises(PermissionError), disk_full_guard(tmp_path, "x"):
        raise PermissionError(errno.EACCES, "denied")


def test_sha256_file_and_progress(tmp_path: Path) -> None:
    data = os.urandom(fsutil.CHUNK_SIZE * 2 + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    seen: list[int] = []
    assert sha256_file(path, on_bytes=seen.append) == hashlib.sha256(data).hexdigest()
    assert sum(seen) == len(data)
    assert len(seen) == 3


def test_free_bytes_uses_nearest_existing_ancestor(tmp_path: Path) -> None:
    free = free_bytes(tmp_path / "not" / "yet" / "there")
    assert free > 0
    stats = os.statvfs(tmp_path)
    # Other processes write meanwhile, so allow some slack.
    assert abs(free - stats.f_bavail * stats.f_frsize) < 64 * 1024 * 1024


def test_hashing_writer_hashes_and_counts() -> None:
    sink = io.BytesIO()
    writer = HashingWriter(sink)
    chunks: list[bytes | bytearray | memoryview] = [b"abc", bytearray(b"def"), memoryview(b"ghi")]
    for chunk in chunks:
        assert writer.write(chunk) == 3
    writer.flush()
    assert sink.getvalue() == b"abcdefghi"
    assert writer.bytes_written == 9
    assert writer.hexdigest() == hashlib.sha256(b"abcdefghi").hexdigest()


class _Trickle(io.RawIOBase):
    """Accepts at most two bytes per call, like a raw file under pressure."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        chunk = bytes(memoryview(b))[:2]  # type: ignore[arg-type]
        self.data += chunk
        return len(chunk)


def test_hashing_writer_handles_short_writes() -> None:
    sink = _Trickle()
    writer = HashingWriter(sink)  # type: ignore[arg-type]
    assert writer.write(b"hello world") == 11
    assert bytes(sink.data) == b"hello world"
    assert writer.hexdigest() == hashlib.sha256(b"hello world").hexdigest()


def test_flush_filesystem_syncs_the_filesystem_of_the_path(tmp_path: Path) -> None:
    (tmp_path / "written").write_bytes(b"x" * 4096)
    assert fsutil.flush_filesystem(tmp_path) == "syncfs"
    with pytest.raises(FileNotFoundError):
        fsutil.flush_filesystem(tmp_path / "missing")


def test_flush_filesystem_falls_back_to_sync_without_syncfs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[bool] = []
    monkeypatch.setattr(fsutil, "_syncfs", lambda: None)
    monkeypatch.setattr(os, "sync", lambda: synced.append(True))
    assert fsutil.flush_filesystem(tmp_path) == "sync"
    assert synced == [True]


MOUNTINFO = """\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
35 22 0:31 / /run rw,nosuid shared:5 - tmpfs tmpfs rw,size=200k
36 22 0:40 / /srv/state rw master:1 - ramfs none rw
"""


@pytest.mark.parametrize(("device", "fs_type"), [
    (os.makedev(254, 1), "ext4"), (os.makedev(0, 31), "tmpfs"), (os.makedev(0, 40), "ramfs"),
    (os.makedev(8, 3), None)])
def test_filesystem_type_from_mountinfo(device: int, fs_type: str | None) -> None:
    assert fsutil.filesystem_type(device, MOUNTINFO) == fs_type



def test_tree_bytes_counts_allocated_blocks_and_a_hard_link_once(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "data").write_bytes(os.urandom(64 * 1024))
    alone = fsutil.tree_bytes([tree])
    os.link(tree / "sub" / "data", tree / "link")
    assert fsutil.tree_bytes([tree]) == alone >= 64 * 1024
    assert fsutil.tree_bytes([tmp_path / "missing"]) == 0
