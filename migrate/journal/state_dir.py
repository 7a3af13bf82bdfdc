"""The state dir: journal, inventory, archives and reports of one host's migration.

It holds everything needed to undo a migration (original daemon.json, image archives),
so it must not be writable by anyone else, must not be a symlink an attacker could
retarget, and must not be reused by mistake for another host or data-root: replaying
another host's undo records would "restore" the wrong daemon.json.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from migrate.errors import LockedError, StateError
from migrate.host.fs import atomic_write_bytes, fsync_dir
from migrate.journal.writer import Journal
from migrate.models import Inventory

DEFAULT_STATE_DIR: Final = Path("/var/lib/containerd-migrate")
MACHINE_ID_FILE: Final = Path("/etc/machine-id")
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600

_OTHER_DIR_HINT = "use --state-dir to pick a state dir of your own"


class HostIdentity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    machine_id: str
    source: Literal["machine-id", "hostname"]
    data_root: str

    def same_host(self, other: HostIdentity) -> bool:
        return self.machine_id == other.machine_id and os.path.normpath(
            self.data_root
        ) == os.path.normpath(other.data_root)


def current_host_identity(data_root: str, machine_id_file: Path = MACHINE_ID_FILE) -> HostIdentity:
    """machine-id survives renames; the hostname is only a fallback for hosts without one."""
    try:
        machine_id = machine_id_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        machine_id = ""
    if machine_id:
        return HostIdentity(machine_id=machine_id, source="machine-id", data_root=data_root)
    return HostIdentity(machine_id=socket.gethostname(), source="hostname", data_root=data_root)


def read_inventory(path: Path) -> Inventory | None:
    """The snapshot a migration compares against; None before the snapshot phase ran."""
    try:
        return Inventory.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


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
        """Create the dir and its subdirs (0700) or check an existing one; idempotent."""
        for folder in (self.path, self.archives_dir, self.reports_dir):
            try:
                folder.parent.mkdir(parents=True, exist_ok=True)
                folder.mkdir(mode=DIR_MODE)
                fsync_dir(folder.parent)
            except FileExistsError:
                pass
            except PermissionError as error:
                raise StateError(
                    f"cannot create {folder}: {error.strerror}",
                    hint=f"run as root, or {_OTHER_DIR_HINT}",
                ) from error
            self._check_dir(folder)
        for name in ("journal.jsonl", "inventory.json", "host.json", "lock"):
            if (self.path / name).is_symlink():
                raise StateError(f"{self.path / name} is a symlink; refusing to follow it",
                                 hint=_OTHER_DIR_HINT)
        return self

    def _check_dir(self, folder: Path) -> None:
        info = os.lstat(folder)
        if stat.S_ISLNK(info.st_mode):
            raise StateError(f"state dir {folder} is a symlink; refusing to follow it",
                             hint=f"pass the real path, or {_OTHER_DIR_HINT}")
        if not stat.S_ISDIR(info.st_mode):
            raise StateError(f"state dir {folder} is not a directory", hint=_OTHER_DIR_HINT)
        if info.st_uid != os.geteuid():
            raise StateError(
                f"state dir {folder} is owned by uid {info.st_uid}, not {os.geteuid()}",
                hint=f"run as the owner, or {_OTHER_DIR_HINT}",
            )
        if info.st_mode & stat.S_IWOTH:
            # Anyone could have planted undo records or archives: nothing in it is trusted.
            raise StateError(f"state dir {folder} is world-writable", hint=_OTHER_DIR_HINT)
        if stat.S_IMODE(info.st_mode) != DIR_MODE:
            os.chmod(folder, DIR_MODE)

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
        atomic_write_bytes(path, data, FILE_MODE)

    def check_host(self, data_root: str) -> HostIdentity:
        """Bind the state dir to this host and data-root on first use; refuse a mismatch."""
        self.ensure()
        current = current_host_identity(data_root, self._machine_id_file)
        path = self.host_identity_path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            self.write_file(path, current.model_dump_json(indent=2).encode() + b"\n")
            return current
        except OSError as error:
            _refuse_symlink(path, error)
            raise
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read()
        try:
            stored = HostIdentity.model_validate_json(raw)
        except ValidationError as error:
            raise StateError(f"{path} is unreadable", hint=_OTHER_DIR_HINT) from error
        if not stored.same_host(current):
            raise StateError(
                f"state dir {self.path} belongs to {stored.source} {stored.machine_id} with "
                f"data-root {stored.data_root}, not to {current.source} {current.machine_id} "
                f"with data-root {current.data_root}",
                hint=f"its journal describes another engine; {_OTHER_DIR_HINT}",
            )
        return stored

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive, non-blocking; the kernel drops it if we die, so it never goes stale."""
        self.ensure()
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         FILE_MODE)
        except OSError as error:
            _refuse_symlink(self.lock_path, error)
            raise
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                who = f"pid {holder}" if holder.isdigit() else "another process"
                raise LockedError(
                    f"state dir {self.path} is locked by {who}",
                    hint="another containerd-migrate is working on this host; wait for it to "
                    "finish (the lock is released as soon as that process exits)",
                ) from None
            os.fchmod(fd, FILE_MODE)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                # Cleared before unlocking so the file never names a finished process.
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)
