"""Protect volumes that only hidden legacy containers use.

In the containerd store those containers are invisible, so their volumes look unused and
`docker volume prune -a` would delete them, breaking the rollback. A container in the new
store that mounts them keeps them "in use". It must be RUNNING: `docker system prune -a
--volumes` deletes stopped containers first, then the volumes they freed (measured on
Engine 26 and 28, docs/engine-facts.md). No image that is sure to have a long-running
process exists on the host, so the guard runs its own: a 100-byte static ELF that only
waits for signals (like Kubernetes' pause container), imported as a one-file image. Its
restart policy `always` brings it back after a daemon restart.

The guard is never removed while the daemon is on the containerd store during a rollback:
the volumes are only safe again once the legacy containers are visible, and once the
daemon is back on legacy the guard is invisible and harmless. `cleanup` removes it; a
later migration replaces it.
"""

from __future__ import annotations

import io
import platform
import struct
import tarfile

from migrate.engine.client import Engine
from migrate.errors import EngineError, MigrateError
from migrate.models import VOLUME_GUARD_NAME, Inventory

GUARD_LABEL = "io.containerd-migrate.volume-guard"
GUARD_NAME = VOLUME_GUARD_NAME
GUARD_REPOSITORY = "containerd-migrate/volume-guard"
GUARD_TAG = "1"
GUARD_IMAGE = f"{GUARD_REPOSITORY}:{GUARD_TAG}"
GUARD_COMMAND = ("/pause",)
# The guard holds nothing and, as PID 1, ignores SIGTERM: stopping it with SIGTERM made every
# `docker stop` of it, and every daemon shutdown while it runs (the rollback's restart among
# them), wait the full 10 s stop timeout.
GUARD_STOP_SIGNAL = "SIGKILL"
GUARD_NOTE = (
    f"volume guard: container {GUARD_NAME} (running, restart always) keeps the volumes of "
    "hidden legacy containers in use so neither `docker volume prune -a` nor `docker system "
    "prune -a --volumes` can delete them; `containerd-migrate cleanup` removes it"
)

_LOAD_ADDRESS = 0x400000
_HEADERS = 64 + 56  # ELF header + one program header
# Machine code looping on a syscall that sleeps until a signal arrives (PID 1 in a
# container ignores signals it has no handler for, so only SIGKILL ends it).
_CODE = {
    # loop: mov eax, 34 (pause); syscall; jmp loop
    "x86_64": (62, bytes.fromhex("b822000000" "0f05" "ebf7")),
    # loop: x0..x3 = 0; x8 = 73 (ppoll); svc 0; b loop
    "aarch64": (183, struct.pack("<7I", 0xD2800000, 0xD2800001, 0xD2800002, 0xD2800003,
                                 0xD2800928, 0xD4000001, 0x17FFFFFA)),
}
_MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


def oci_architecture(machine: str) -> str | None:
    """`uname -m` (docker info's Architecture) as OCI platforms name it; None when the guard
    has no program for it."""
    return next((arch for arch, name in _MACHINES.items() if machine in (arch, name)), None)


def pause_binary(machine: str) -> bytes:
    """A static ELF executable for `machine` that sleeps forever (pure)."""
    key = _MACHINES.get(machine, machine)
    if key not in _CODE:
        raise EngineError(f"no volume guard program for the {machine} architecture",
                          "protect the volumes of hidden containers by hand (do not prune)")
    e_machine, code = _CODE[key]
    entry = _LOAD_ADDRESS + _HEADERS
    size = _HEADERS + len(code)
    header = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
              + struct.pack("<HHIQQQIHHHHHH", 2, e_machine, 1, entry, 64, 0, 0, 64, 56, 1,
                            0, 0, 0))
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, _LOAD_ADDRESS, _LOAD_ADDRESS, size, size,
                          0x1000)
    return header + program + code


def guard_tarball(machine: str) -> bytes:
    binary = pause_binary(machine)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("pause")
        info.size, info.mode = len(binary), 0o755
        tar.addfile(info, io.BytesIO(binary))
    return buffer.getvalue()


def guarded_volumes(inventory: Inventory, exclude: frozenset[str] = frozenset(),
                    ) -> tuple[str, ...]:
    """Local volumes (named or anonymous) that some snapshotted container mounts, leaving
    out the containers in `exclude` (IDs): recreated ones keep their volumes in use
    themselves."""
    used = {m.name for c in inventory.containers if c.id not in exclude for m in c.mounts
            if m.type == "volume"}
    return tuple(sorted(v.name for v in inventory.volumes if v.name in used))


def create_guard(engine: Engine, inventory: Inventory) -> tuple[str, ...]:
    """Start the guard mounting every volume of a hidden container; returns those volumes."""
    volumes = guarded_volumes(inventory)
    if not volumes:
        return ()
    remove_guard(engine)
    engine.import_image(guard_tarball(platform.machine()), GUARD_REPOSITORY, GUARD_TAG)
    container = engine.create_container(GUARD_IMAGE, name=GUARD_NAME, labels={GUARD_LABEL: "1"},
                                        volumes=volumes, command=GUARD_COMMAND,
                                        restart_always=True, stop_signal=GUARD_STOP_SIGNAL)
    engine.start_container(container)
    if not engine.running(container):
        raise EngineError(f"the volume guard {GUARD_NAME} does not stay running",
                          "see the daemon log; without it a prune can delete the volumes of "
                          "hidden containers")
    return volumes


def remove_guard(engine: Engine) -> int:
    """Remove the guard container(s) and the guard image; only on the containerd store."""
    removed = 0
    for container in engine.containers_with_label(GUARD_LABEL):
        try:
            engine.remove_container(container, force=True)
            removed += 1
        except EngineError:
            pass
    try:
        if engine.raw_image(GUARD_IMAGE) is not None:
            engine.remove_image(GUARD_IMAGE)
    except MigrateError:
        pass  # 1 KiB left behind is no reason to fail a cleanup
    return removed
