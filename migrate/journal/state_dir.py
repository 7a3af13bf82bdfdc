"""The state dir: journal, inventory, archives and reports of one host's migration.

It holds everything needed to undo a migration (original daemon.json, image archives),
so it must not be writable by anyone else, must not be a symlink an attacker could
retarget, and must not be reused by mistake for another host or data-root: replaying
another host's undo records would "restore" the wrong daemon.json.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from migrate.errors import LockedError, StateError
from migrate.host.fs import atomic_write_bytes, disk_full_guard, fsync_dir, is_disk_full
from migrate.journal.writer import Journal
from migrate.models import Inventory

DEFAULT_STATE_DIR: Final = Path("/var/lib/containerd-migrate")
# One lock per daemon for the whole host, whatever state dir a run uses: two migrations
# of one daemon from two state dirs would each journal half of the truth.
HOST_LOCK_DIR: Final = Path("/run/containerd-migrate")
MACHINE_ID_FILE: Final = Path("/etc/machine-id")
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600

_OTHER_DIR_HINT = "use --state-dir to pick a state dir of your own"


class HostIdentity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    machine_id: str
    source: Literal["machine-id", "hostname"]
    data_root: str
    # `docker info` ID: survives restarts and the store switch (docs/engine-facts.md), and
    # tells two daemons with the same data-root path apart. Empty in older state dirs.
    daemon_id: str = ""

    def mismatch(self, other: HostIdentity) -> str | None:
        """What differs between two identities ("" fields are unknown, never a mismatch)."""
        if self.machine_id != other.machine_id:
            return f"{self.source} {self.machine_id}, not {other.source} {other.machine_id}"
        if self.data_root and other.data_root and os.path.normpath(
                self.data_root) != os.path.normpath(other.data_root):
            return f"data-root {self.data_root}, not {other.data_root}"
        if self.daemon_id and other.daemon_id and self.daemon_id != other.daemon_id:
            return f"daemon ID {self.daemon_id}, not {other.daemon_id}"
        return None


def current_host_identity(data_root: str, machine_id_file: Path = MACHINE_ID_FILE,
                          daemon_id: str = "") -> HostIdentity:
    """machine-id survives renames; the hostname is only a fallback for hosts without one."""
    try:
        machine_id = machine_id_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        machine_id = ""
    if machine_id:
        return HostIdentity(machine_id=machine_id, source="machine-id", data_root=data_root,
                            daemon_id=daemon_id)
    return HostIdentity(machine_id=socket.gethostname(), source="hostname", data_root=data_root,
                        daemon_id=daemon_id)


def read_inventory(path: Path) -> Inventory | None:
    """The snapshot a migration compares against; None before the snapshot phase ran."""
    try:
        return Inventory.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


def trusted_owners() -> frozenset[int]:
    """Root, and the user running the tool: nobody else may have written the state."""
    return frozenset({0, os.geteuid()})


def check_trusted(path: Path, info: os.stat_result, what: str, hint: str = _OTHER_DIR_HINT,
                  ) -> None:
    """Refuse what someone other than root or us owns or can write; never fix its mode."""
    if info.st_uid not in trusted_owners():
        raise StateError(
            f"{what} {path} is owned by uid {info.st_uid}, not by root or uid {os.geteuid()}; "
            "its content cannot be trusted",
            hint=f"check who wrote it and what it holds; {hint}",
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        kind = "world-writable" if info.st_mode & stat.S_IWOTH else "group-writable"
        # Whoever could write it may have planted undo records, archives or a lock:
        # nothing in it is trusted, and fixing the mode now would hide that.
        raise StateError(
            f"{what} {path} is {kind} (mode {stat.S_IMODE(info.st_mode):04o}); its content "
            "cannot be trusted",
            hint=f"check what it holds and who could write it, then `chmod go-w {path}`; "
            f"or {hint}",
        )


def _refuse_symlink(path: Path, error: OSError) -> None:
    if error.errno == errno.ELOOP:
        raise StateError(f"{path} is a symlink; refusing to follow it", hint=_OTHER_DIR_HINT)


class StateDir:
    def __init__(
        self, path: str | os.PathLike[str] = DEFAULT_STATE_DIR, *,
        machine_id_file: Path = MACHINE_ID_FILE,
    ) -> None:
        self.path = Path(os.path.abspath(path))
        self._machine_id_file = machine_id_file

    @property
    def journal_path(self) -> Path:
        return self.path / "journal.jsonl"

    @property
    def inventory_path(self) -> Path:
        return self.path / "inventory.json"

    @property
    def archives_dir(self) -> Path:
        """Created (0700) by `ensure()`."""
        return self.path / "archives"

    @property
    def reports_dir(self) -> Path:
        """Created (0700) by `ensure()`."""
        return self.path / "reports"

    @property
    def host_identity_path(self) -> Path:
        return self.path / "host.json"

    @property
    def lock_path(self) -> Path:
        return self.path / "lock"

    @property
    def legacy_pruned_path(self) -> Path:
        """Written by `cleanup --prune-legacy` before it deletes anything: no rollback after."""
        return self.path / "legacy-pruned"

    def ensure(self) -> StateDir:
        """Create the dir and its subdirs (0700) or check an existing one; idempotent.

        What is in it decides what rollback writes and runs as root, so a dir or file that
        someone else owns or can write is refused, never repaired.
        """
        for folder in (self.path, self.archives_dir, self.reports_dir):
            self._create(folder)
            self._check_dir(folder)
            self._check_entries(folder)
        return self

    def _create(self, folder: Path) -> None:
        try:
            with disk_full_guard(folder, "creating the state dir"):
                folder.parent.mkdir(parents=True, exist_ok=True)
                folder.mkdir(mode=DIR_MODE)
                fsync_dir(folder.parent)
        except FileExistsError:
            pass
        except PermissionError as error:
            raise StateError(f"cannot create {folder}: {error.strerror}",
                             hint=f"run as root, or {_OTHER_DIR_HINT}") from error
        except OSError as error:
            if is_disk_full(error):
                raise
            raise StateError(f"cannot create state dir {folder}: {error.strerror}",
                             hint=_OTHER_DIR_HINT) from error

    def problem(self) -> str | None:
        """Why `ensure()` would refuse this state dir, or None; creates and changes nothing."""
        try:
            os.lstat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            pass  # not there yet, or a file on the way there: the walk below says which
        except OSError as error:  # a name too long, a loop of symlinks, no permission
            return f"state dir {self.path} cannot be used: {error.strerror}"
        probe = self.path
        while not os.path.lexists(probe) and probe != probe.parent:
            probe = probe.parent
        try:
            if probe != self.path:
                if not probe.is_dir():
                    return f"{probe} is not a directory, so {self.path} cannot be created"
                if not os.access(probe, os.W_OK):
                    return f"{probe} is not writable, so {self.path} cannot be created"
                return None
            for folder in (self.path, self.archives_dir, self.reports_dir):
                if os.path.lexists(folder):
                    self._check_dir(folder)
                    self._check_entries(folder)
        except StateError as error:
            return error.message
        if not os.access(self.path, os.W_OK):
            return f"state dir {self.path} is not writable"
        return None

    def check_usable(self) -> StateDir:
        """For a command that only reads: the same refusals as `ensure()` (StateError, one
        line), without creating anything."""
        problem = self.problem()
        if problem is not None:
            raise StateError(problem, hint=_OTHER_DIR_HINT)
        return self

    def _check_dir(self, folder: Path) -> None:
        try:
            info = os.lstat(folder)
        except OSError as error:
            raise StateError(f"cannot create state dir {folder}: {error.strerror}",
                             hint=_OTHER_DIR_HINT) from error
        if stat.S_ISLNK(info.st_mode):
            raise StateError(f"state dir {folder} is a symlink; refusing to follow it",
                             hint=f"pass the real path, or {_OTHER_DIR_HINT}")
        if not stat.S_ISDIR(info.st_mode):
            raise StateError(f"state dir {folder} is not a directory", hint=_OTHER_DIR_HINT)
        check_trusted(folder, info, "state dir")

    def _check_entries(self, folder: Path) -> None:
        """Every file in the dir: no symlinks, nothing another user owns or can write."""
        try:
            names = os.listdir(folder)
        except OSError as error:
            raise StateError(f"cannot list state dir {folder}: {error.strerror}",
                             hint=_OTHER_DIR_HINT) from error
        for name in names:
            path = folder / name
            if path in (self.archives_dir, self.reports_dir):
                continue  # a folder of its own, checked as one
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue  # removed meanwhile (an old *.partial)
            if stat.S_ISLNK(info.st_mode):
                raise StateError(f"{path} is a symlink; refusing to follow it",
                                 hint=_OTHER_DIR_HINT)
            check_trusted(path, info, "state file")

    def load_inventory(self) -> Inventory | None:
        return read_inventory(self.inventory_path)

    def journal(self) -> Journal:
        """A writer for this dir's journal; append to it only while holding `lock()`."""
        return Journal(self.journal_path)

    def write_file(self, path: Path, data: bytes) -> None:
        """Atomically write a private (0600) file inside the state dir."""
        if not path.is_absolute() or path.parent not in (
            self.path, self.archives_dir, self.reports_dir
        ):
            raise StateError(f"{path} is not inside state dir {self.path}")
        if path.is_symlink():
            raise StateError(f"{path} is a symlink; refusing to replace it", hint=_OTHER_DIR_HINT)
        with disk_full_guard(path, f"writing {path.name}"):
            atomic_write_bytes(path, data, FILE_MODE)

    def stored_identity(self) -> HostIdentity | None:
        """host.json: the host this state dir was bound to; None before the first bind."""
        path = self.host_identity_path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as error:
            _refuse_symlink(path, error)
            raise
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(1 << 16)
        try:
            return HostIdentity.model_validate_json(raw)
        except ValidationError as error:
            raise StateError(f"{path} is unreadable", hint=_OTHER_DIR_HINT) from error

    def check_host(self, data_root: str = "", daemon_id: str = "") -> HostIdentity:
        """Bind the state dir to this host, data-root and daemon on first use; refuse a
        mismatch on every later use. Empty `data_root`/`daemon_id`: the daemon does not
        answer now, only the machine can be compared."""
        self.ensure()
        current = current_host_identity(data_root, self._machine_id_file, daemon_id)
        stored = self.stored_identity()
        if stored is None:
            if not data_root:
                return current
            self.write_file(self.host_identity_path,
                            current.model_dump_json(indent=2).encode() + b"\n")
            return current
        mismatch = stored.mismatch(current)
        if mismatch is not None:
            raise StateError(
                f"state dir {self.path} belongs to {mismatch}",
                hint="its journal describes another host or engine: check --host and "
                f"--state-dir; {_OTHER_DIR_HINT}",
            )
        if daemon_id and not stored.daemon_id:
            stored = stored.model_copy(update={"daemon_id": daemon_id})
            self.write_file(self.host_identity_path,
                            stored.model_dump_json(indent=2).encode() + b"\n")
        return stored

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive, non-blocking; the kernel drops it if we die, so it never goes stale."""
        self.ensure()
        with hold_lock(self.lock_path, f"state dir {self.path}"):
            yield


@contextmanager
def host_lock(data_root: str, lock_dir: Path = HOST_LOCK_DIR) -> Iterator[None]:
    """Exclusive lock on the daemon with this data-root, for every state dir on the host."""
    key = hashlib.sha256(os.path.normpath(data_root).encode()).hexdigest()[:16]
    try:
        lock_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        info = os.lstat(lock_dir)
    except OSError as error:
        raise StateError(f"cannot create the host lock dir {lock_dir}: {error.strerror}",
                         "run as root") from error
    if not stat.S_ISDIR(info.st_mode):
        raise StateError(f"host lock dir {lock_dir} is not a directory (or is a symlink)",
                         f"remove {lock_dir}; containerd-migrate creates it")
    check_trusted(lock_dir, info, "host lock dir", hint=f"remove {lock_dir} and run again")
    with hold_lock(lock_dir / f"{key}.lock", f"the daemon with data-root {data_root}"):
        yield


@contextmanager
def hold_lock(path: Path, what: str) -> Iterator[None]:
    """flock `path` (created 0600, never through a symlink) and write our pid into it."""
    with disk_full_guard(path, f"locking {what}"):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         FILE_MODE)
        except OSError as error:
            _refuse_symlink(path, error)
            raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateError(f"lock {path} is not a regular file", hint=_OTHER_DIR_HINT)
        check_trusted(path, info, "lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise LockedError(
                f"{what} is locked by {who}",
                hint="another containerd-migrate is working on this host; wait for it to "
                "finish (the lock is released as soon as that process exits)",
            ) from None
        with disk_full_guard(path, f"locking {what}"):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            # Cleared before unlocking so the file never names a finished process.
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
