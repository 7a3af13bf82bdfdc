"""The containerd side of the Docker/containerd boundary: `ctr` against dockerd's store.

Pre-staging fills the containerd image store that dockerd will use after the switch while
the daemon still serves on the legacy store (docs/engine-facts.md, "Pre-staging"). The
host already has a client for it: the `ctr` of the containerd package, next to dockerd
or on PATH. Everything here runs that binary; nothing talks to the containerd API
directly, so no gRPC stack is needed and the client always matches the host's server.

Where the socket is, which namespace and which snapshotter are decided above this layer
(from the launch facts and daemon.json); this module gets them as plain values.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from migrate.engine.convert import chain_ids
from migrate.errors import MigrateError
from migrate.models import DOCKERD_CONTAINERD_NAMESPACE

CTR = "ctr"
# dockerd in containerd mode names an untagged image `moby-dangling@<target digest>` and
# treats exactly that name as dangling; `--digests --base-name moby-dangling` makes
# `ctr import` create that name itself.
DANGLING_BASE = "moby-dangling"
DANGLING_PREFIX = f"{DANGLING_BASE}@"
# Answers of a healthy containerd are immediate; a hung one must not eat the window.
CALL_TIMEOUT = 60.0
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^(?P<num>[0-9.]+)\s*(?P<unit>[a-zA-Z]*)$")


class ContainerdError(MigrateError):
    """`ctr` is missing, the socket does not answer, or a ctr command failed."""


def find_ctr(dockerd_exe: Path | None, argv0: str | None = None,
             path: str | None = None) -> Path | None:
    """`ctr` next to the running dockerd (its directory, or ../bin of it), else on PATH.

    The one next to dockerd comes from the same packages as the containerd that dockerd
    runs, so it speaks its protocol version. The running dockerd's executable
    (`host.processes.executable`) names a deleted file once the package was upgraded under
    the running daemon; its command line's first word may still name the installed one.
    """
    binaries: list[Path] = []
    if dockerd_exe is not None:
        binaries.append(dockerd_exe)
    if argv0 and os.path.isabs(argv0):
        binaries.append(Path(argv0))
    dirs = [d for exe in binaries for d in (exe.parent, exe.parent.parent / "bin")]
    for directory in dirs:
        candidate = directory / CTR
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(CTR, path=path)
    return Path(found) if found else None


def parse_size(text: str) -> int:
    """`1.9 MiB`, `3.584kB` (as ctr prints them) -> bytes; 0 when unreadable."""
    match = _SIZE.match(text.strip())
    if match is None:
        return 0
    factor = _UNITS.get(match.group("unit").lower())
    return int(float(match.group("num")) * factor) if factor else 0


def chain_id(diff_ids: tuple[str, ...]) -> str | None:
    """The snapshot key of an unpacked image: the OCI chain ID of its layers."""
    chains = chain_ids(diff_ids)
    return chains[-1] if chains else None


def _table(output: str) -> list[list[str]]:
    """Rows of a ctr table without its header; columns are whitespace-separated."""
    return [line.split() for line in output.splitlines()[1:] if line.strip()]


@dataclass(frozen=True)
class Containerd:
    ctr: Path
    address: str
    namespace: str = DOCKERD_CONTAINERD_NAMESPACE

    def _argv(self, *args: str) -> list[str]:
        return [str(self.ctr), "--address", self.address, "--namespace", self.namespace, *args]

    def _run(self, *args: str, timeout: float = CALL_TIMEOUT) -> str:
        argv = self._argv(*args)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ContainerdError(f"`{' '.join(argv[3:])}` against {self.address} failed: "
                                  f"{exc}", self._hint()) from exc
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ContainerdError(f"ctr {' '.join(args[:2])} against {self.address} failed: "
                                  f"{said[0]}", self._hint())
        return done.stdout

    def _hint(self) -> str:
        return (f"check that containerd answers on {self.address} (`{self.ctr} --address "
                f"{self.address} version`) and that you may use that socket (run as root)")

    def server_version(self) -> str:
        """Asks the server, so it also proves the socket answers."""
        out = self._run("version", timeout=10)
        server = out.partition("Server:")[2]
        match = re.search(r"Version:\s*(\S+)", server)
        if match is None:
            raise ContainerdError(f"containerd at {self.address} did not say its version",
                                  self._hint())
        return match.group(1)

    def images(self) -> dict[str, str]:
        """Image name -> target digest, in this namespace."""
        return {row[0]: row[2] for row in _table(self._run("images", "ls")) if len(row) >= 3}

    def content(self, digest: str) -> bytes:
        try:
            done = subprocess.run(self._argv("content", "get", digest), capture_output=True,
                                  timeout=CALL_TIMEOUT, check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ContainerdError(f"cannot read {digest} from containerd: {exc}",
                                  self._hint()) from exc
        if done.returncode != 0:
            raise ContainerdError(f"containerd has no content {digest}: "
                                  f"{done.stderr.decode(errors='replace').strip()}", self._hint())
        return done.stdout

    def manifest_config(self, manifest_digest: str) -> tuple[str, bool]:
        """The config digest an image manifest names, and whether that config's bytes
        hash to it (the proof `expected_images` asks for)."""
        manifest = json.loads(self.content(manifest_digest))
        config = str(manifest["config"]["digest"])
        raw = self.content(config)
        return config, "sha256:" + hashlib.sha256(raw).hexdigest() == config

    def snapshots(self, snapshotter: str) -> set[str]:
        out = self._run("snapshots", "--snapshotter", snapshotter, "ls")
        return {row[0] for row in _table(out) if row}

    def usage_bytes(self, snapshotter: str) -> tuple[int, int]:
        """About how much disk the namespace's content and snapshots take (ctr rounds)."""
        content = sum(parse_size(row[1]) for row in _table(self._run("content", "ls"))
                      if len(row) >= 2)
        usage = _table(self._run("snapshots", "--snapshotter", snapshotter, "usage"))
        snapshots = sum(parse_size(" ".join(row[1:-1])) for row in usage if len(row) >= 3)
        return content, snapshots

    def remove_images(self, names: list[str]) -> None:
        if names:
            self._run("images", "rm", *names)

    def local_import(self) -> bool:
        """Whether `images import` takes `--local` (skip the transfer service: 2x faster on
        containerd 2.x, where the transfer service is the default)."""
        return "--local" in self._run("images", "import", "--help", timeout=10)

    def start_import(self, snapshotter: str, *, dangling: bool, local: bool,
                     output: IO[bytes]) -> subprocess.Popen[bytes]:
        """`ctr images import` reading a `docker save` stream from its stdin, unpacking
        for `snapshotter`. The caller writes the stream, closes stdin and waits."""
        args = ["images", "import", "--snapshotter", snapshotter]
        if local:
            args.append("--local")
        if dangling:
            args += ["--digests", "--base-name", DANGLING_BASE]
        try:
            return subprocess.Popen(self._argv(*args, "-"), stdin=subprocess.PIPE,
                                    stdout=output, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise ContainerdError(f"cannot start {self.ctr}: {exc}", self._hint()) from exc


def import_output() -> IO[bytes]:
    """Where a running import writes: a file, so a chatty ctr never blocks on a full pipe."""
    return tempfile.TemporaryFile(prefix="cm-ctr-")


def is_ctr_import(argv: Sequence[bytes] | None) -> bool:
    """A live process's command line (`host.processes.command_line`; None when it is gone)
    is a `ctr ... images import`, not whatever got its pid since."""
    return argv is not None and any(a.endswith(b"ctr") for a in argv[:1]) \
        and b"import" in argv
