"""Craft `docker save`-format archives and stream them into `docker load`.

Building hundreds of images (or gigabytes of layers) with the legacy builder is slow: each
build uploads a context and commits per step. One crafted archive loads in a single call,
and identical layer files are stored once by the daemon, so images really share a base.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from migrate.sandbox.fetch import docker_cli

MIB = 1024 * 1024
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "s390x": "s390x"}


class LoadError(RuntimeError):
    """docker load refused the crafted archive."""


@dataclass(frozen=True)
class Layer:
    path: Path
    diff_id: str


@dataclass(frozen=True)
class ArchiveImage:
    tags: tuple[str, ...]
    layers: tuple[Layer, ...]
    cmd: tuple[str, ...] = ("sh",)
    env: tuple[str, ...] = ("PATH=/bin",)
    # Top-level image config keys that replace the crafted ones (e.g. an odd `created`).
    config: tuple[tuple[str, object], ...] = ()


class _HashingFile:
    """Write-only file that hashes what passes through, so a layer is written only once."""

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self._target.write(data)


class _RandomReader:
    def read(self, size: int = MIB) -> bytes:
        return os.urandom(size)


def _info(
    name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, mode: int = 0o644
) -> tarfile.TarInfo:
    # Fixed owner and mtime: the same content always yields the same diff_id.
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode, info.mtime = size, kind, mode, 0
    return info


def _write_layer(path: Path, fill: list[tuple[tarfile.TarInfo, IO[bytes] | None]]) -> Layer:
    with path.open("wb") as raw:
        hashing = _HashingFile(raw)
        with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for info, content in fill:
                tar.addfile(info, content)
    return Layer(path, "sha256:" + hashing.sha.hexdigest())


def rootfs_layer(workdir: Path, busybox: Path, applets: tuple[str, ...]) -> Layer:
    """A minimal root filesystem: static busybox plus applet symlinks."""
    data = busybox.read_bytes()
    entries: list[tuple[tarfile.TarInfo, IO[bytes] | None]] = [
        (_info("bin", kind=tarfile.DIRTYPE, mode=0o755), None),
        (_info("bin/busybox", len(data), mode=0o755), io.BytesIO(data)),
    ]
    for applet in applets:
        link = _info(f"bin/{applet}", kind=tarfile.SYMTYPE, mode=0o777)
        link.linkname = "busybox"
        entries.append((link, None))
    return _write_layer(workdir / "base.tar", entries)


def random_layer(workdir: Path, name: str, size: int) -> Layer:
    """A layer holding one file of `size` random (incompressible, unique) bytes."""
    entries: list[tuple[tarfile.TarInfo, IO[bytes] | None]] = [
        (_info("data", kind=tarfile.DIRTYPE, mode=0o755), None),
        (_info(f"data/{name}.bin", size), _RandomReader()),  # type: ignore[list-item]
    ]
    return _write_layer(workdir / f"{name}.tar", entries)


def _config(image: ArchiveImage) -> bytes:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config: dict[str, object] = {
        "architecture": ARCH.get(platform.machine(), platform.machine()),
        "os": "linux",
        "created": created,
        "config": {"Env": list(image.env), "Cmd": list(image.cmd)},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in image.layers]},
        "history": [
            {
                "created": created,
                "created_by": f"containerd-migrate sandbox layer {layer.path.name}",
            }
            for layer in image.layers
        ],
    }
    config.update(image.config)
    return json.dumps(config, sort_keys=True).encode()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def load_images(host: str, images: list[ArchiveImage],
                docker_argv: Sequence[str] | None = None) -> None:
    """Stream one archive holding every image (shared layers once) into `docker load`.

    `docker_argv` replaces `docker -H host` (e.g. the docker CLI inside a systemd host).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    docker = list(docker_argv) if docker_argv else [docker_cli(), "-H", host]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [*docker, "load", "-q"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, env=env,
        )  # fmt: skip
        if proc.stdin is None:
            raise LoadError("docker load has no stdin pipe")
        try:
            with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
                _write_archive(tar, images)
        except BrokenPipeError:
            pass  # docker load gave up early; its stderr below says why
        finally:
            proc.stdin.close()
        if proc.wait() != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace")
            raise LoadError(f"docker load failed ({proc.returncode}): {message}")


def _write_archive(tar: tarfile.TarFile, images: list[ArchiveImage]) -> None:
    manifest: list[dict[str, object]] = []
    written: set[str] = set()
    for image in images:
        config = _config(image)
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        _add_bytes(tar, config_name, config)
        names = []
        for layer in image.layers:
            name = layer.diff_id.removeprefix("sha256:") + "/layer.tar"
            if name not in written:
                with layer.path.open("rb") as content:
                    tar.addfile(_info(name, layer.path.stat().st_size), content)
                written.add(name)
            names.append(name)
        manifest.append({"Config": config_name, "RepoTags": list(image.tags), "Layers": names})
    _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
