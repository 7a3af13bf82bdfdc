"""A Debian host with systemd as PID 1: the set-up most operators have, booted for tests.

`SystemdHost` boots a debootstrapped Debian (trixie for Engine 26, sid for Engine 28) with
`systemd-nspawn -b`. Debian's own units run the engine: `docker.service` (`-H fd://`,
`--containerd=/run/containerd/containerd.sock`), `docker.socket` and `containerd.service`;
there is no daemon.json, and `systemctl restart docker` is the way to restart. The checkout
is mounted read-only inside and installed into a venv there (Debian's python3 and the
dependencies as Debian packages; no network inside), so `containerd-migrate` runs inside
with its defaults, as on a real host.

Why each nspawn option is needed on a machine without systemd is measured in
docs/engine-facts.md ("A systemd host on a non-systemd machine"). Everything of one host
lives in its directory D: `rootfs/` (a copy of the cached rootfs), `nspawn.pid`,
`nspawn.log`, and `docker.sock`, a symlink through /proc to the inner daemon's socket.
The rootfs is cached once per suite and package list under BASE_DIR/hostfs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from migrate.sandbox.daemon import BASE_DIR, SYSTEM_PATH, SandboxError
from migrate.sandbox.fetch import KEYRING, REPO_ROOT, locked, mirror_uri, run_checked, spec
from migrate.sandbox.layers import ArchiveImage, load_images, random_layer, rootfs_layer
from migrate.sandbox.samples import APPLETS, BUSY_LOOP, BUSYBOX
from migrate.sandbox.system import (
    POLL,
    is_alive,
    log_tail,
    start_logged,
    unix_ping,
    unmount_under,
    wait_exit,
)

HOSTFS_DIR = BASE_DIR / "hostfs"
# docker-cli is its own package since trixie, and debootstrap installs no Recommends.
# python3-setuptools: `pip install --no-build-isolation -e` builds with it, offline.
# docker-buildx: the runbook's multi-platform proof, as an operator would install it.
HOST_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "docker.io", "docker-cli", "docker-buildx",
    "containerd", "iproute2",
    "procps", "busybox-static", "python3", "python3-venv", "python3-setuptools",
    "python3-docker", "python3-click", "python3-pydantic", "python3-structlog",
    "python3-tqdm",
)  # fmt: skip
# Bump when _prepare_rootfs changes: the cache key includes it.
ROOTFS_LAYOUT = 1
# Packages of the machine the host kind needs: (command, Debian package).
HOST_TOOLS = (("debootstrap", "debootstrap"), ("systemd-nspawn", "systemd-container"))
MARKER = "systemd-host"
INNER_SRC = "/opt/containerd-migrate/src"
INNER_VENV = "/opt/containerd-migrate/venv"
INNER_CLI = "/usr/local/bin/containerd-migrate"
INNER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CGROUP_FS = Path("/sys/fs/cgroup")
# The launcher joins its own cgroup on every hierarchy nspawn uses (with --keep-unit it
# creates payload/ and supervisor/ below the current one), then mounts a tmpfs on
# /run/systemd in its private mount namespace: nspawn refuses a disk-backed /run.
LAUNCHER = """set -e
cgroups=$1; shift
for cg in $cgroups; do echo $$ > "$cg/cgroup.procs"; done
[ -d /run/systemd ] || mkdir /run/systemd
mount -t tmpfs -o mode=0755 tmpfs /run/systemd
exec "$@"
"""
BOOT_STATES = ("running", "degraded")
# The sample host inside (populate_host).
BASE_IMAGE = "cm-host/base:1"
APP_TAGS = ("cm-host/app:1", "cm-host/app:latest")
RUNNING = "web"
EXITED = "batch"
VOLUME = "webdata"


def ensure_host_tools() -> None:
    """Install debootstrap and systemd-nspawn when missing (as `make system-deps` does)."""
    missing = [package for command, package in HOST_TOOLS if shutil.which(command) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise SandboxError(f"a systemd host needs {' '.join(missing)} (a Debian machine)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"],
                 ["apt-get", "install", "-y", "--no-install-recommends", *missing]):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise SandboxError(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")


def rootfs_cache(engine: str) -> Path:
    """Where the cached rootfs of `engine`'s suite lives (the key changes with its recipe)."""
    suite = spec(engine).suite
    recipe = json.dumps([suite, HOST_PACKAGES, ROOTFS_LAYOUT]).encode()
    return HOSTFS_DIR / f"{suite}-{hashlib.sha256(recipe).hexdigest()[:12]}"


def ensure_rootfs(engine: str) -> Path:
    """The cached rootfs for `engine`, debootstrapped on first use (about 60 s)."""
    target = rootfs_cache(engine)
    if target.is_dir():
        return target
    ensure_host_tools()
    HOSTFS_DIR.mkdir(parents=True, exist_ok=True)
    suite = spec(engine).suite
    with locked(HOSTFS_DIR / f".{suite}.lock"):
        if target.is_dir():
            return target
        # Only one recipe per suite is kept: older ones and crashed builds go.
        for old in [*HOSTFS_DIR.glob(f"{suite}-*"), *HOSTFS_DIR.glob(f".{suite}-*")]:
            shutil.rmtree(old, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=HOSTFS_DIR))
        try:
            staging.chmod(0o755)
            run_checked(["debootstrap", "--variant=minbase", f"--keyring={KEYRING}",
                         f"--include={','.join(HOST_PACKAGES)}", suite, str(staging),
                         mirror_uri()])
            _prepare_rootfs(staging)
            # A complete rootfs appears at once: a crash leaves only a staging dir.
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


def _prepare_rootfs(root: Path) -> None:
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin",
                    "var/cache/apt/archives/*.deb"):
        for path in root.glob(pattern):
            if path.is_file():
                path.unlink()
    # It fails in a container and would leave the system "degraded".
    mask = root / "etc/systemd/system/systemd-modules-load.service"
    mask.unlink(missing_ok=True)
    mask.symlink_to("/dev/null")
    # Each host copy gets its own machine-id; without /etc/hostname the machine name is used.
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (root / "etc/hostname").unlink(missing_ok=True)


def cgroup_roots() -> tuple[Path, ...]:
    """The hierarchies a process must move on: the unified one, and name=systemd (hybrid)."""
    if (CGROUP_FS / "cgroup.controllers").exists():
        return (CGROUP_FS,)  # pure cgroup v2
    return tuple(root for root in (CGROUP_FS / "systemd", CGROUP_FS / "unified")
                 if (root / "cgroup.procs").exists())


@dataclass(frozen=True)
class SystemdHost:
    dir: Path
    engine: str

    @classmethod
    def open(cls, directory: Path) -> SystemdHost:
        """Rebuild the handle of an existing host from its directory alone."""
        marker = directory / MARKER
        if not marker.is_file():
            raise SandboxError(f"{directory} is not a systemd host (no {MARKER} file)")
        return cls(directory, marker.read_text().strip())

    @staticmethod
    def is_host(directory: Path) -> bool:
        return (directory / MARKER).is_file()

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def socket_path(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def log_path(self) -> Path:
        return self.dir / "nspawn.log"

    @property
    def _pidfile(self) -> Path:
        return self.dir / "nspawn.pid"

    @property
    def name(self) -> str:
        """Machine name (the inner hostname) and cgroup name: one per host directory."""
        digest = hashlib.sha256(str(self.dir.absolute()).encode()).hexdigest()[:10]
        return f"cm-host-{self.engine}-{digest}"

    def cgroups(self) -> tuple[Path, ...]:
        return tuple(root / self.name for root in cgroup_roots())

    def nspawn_pid(self) -> int | None:
        """The pid of this host's systemd-nspawn while it runs."""
        try:
            pid = int(self._pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        # A recycled pid is not ours: trust it only when it boots our rootfs.
        return pid if is_alive(pid) and str(self.rootfs).encode() in cmdline else None

    def init_pid(self) -> int | None:
        """The pid (on the machine) of the host's systemd, PID 1 inside."""
        nspawn = self.nspawn_pid()
        if nspawn is None:
            return None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm, _, rest = stat.partition("(")[2].rpartition(")")
            if int(rest.split()[1]) == nspawn and comm == "systemd":
                return int(entry.name)
        return None

    def is_running(self) -> bool:
        return self.nspawn_pid() is not None

    def _init_pid_or_fail(self) -> int:
        pid = self.init_pid()
        if pid is None:
            raise SandboxError(f"the systemd host in {self.dir} is not running")
        return pid

    def exec_argv(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                  ) -> list[str]:
        """The command line that runs `argv` inside the host, in a clean environment."""
        variables = {"PATH": INNER_PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
        return ["nsenter", "-t", str(self._init_pid_or_fail()), "-a", "--",
                "env", "-i", *(f"{k}={v}" for k, v in variables.items()), *argv]

    def exec(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
             timeout: float = 600, input_text: str | None = None,
             ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the host (no check: the caller reads the exit status)."""
        return subprocess.run(self.exec_argv(argv, env), capture_output=True, text=True,
                              timeout=timeout, input=input_text,
                              stdin=None if input_text is not None else subprocess.DEVNULL,
                              check=False)

    def checked(self, *argv: str, timeout: float = 120) -> str:
        """Run `argv` inside the host; its stdout, or SandboxError with its output."""
        done = self.exec(argv, timeout=timeout)
        if done.returncode != 0:
            raise SandboxError(f"{' '.join(argv)} in {self.dir} exited {done.returncode}:\n"
                               f"{done.stdout[-1500:]}{done.stderr[-1500:]}")
        return done.stdout

    def start(self, timeout: float = 120.0) -> None:
        """Boot the host (a copy of the cached rootfs on first start) until docker answers."""
        if self.is_running():
            return
        self._initialise()
        roots = self.cgroups()
        for cgroup in roots:
            cgroup.mkdir(exist_ok=True)
        env = {"PATH": SYSTEM_PATH, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", LAUNCHER, "sh",
                " ".join(map(str, roots)), *self._nspawn_argv()]
        proc, offset = start_logged(argv, self.log_path, env, self.dir)
        self._pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        try:
            self._wait_booted(proc, deadline)
            self._link_socket()
            self._install_tool()
            while not unix_ping(self.socket_path):
                self._check_deadline(proc, deadline, "docker did not answer")
                time.sleep(POLL)
        except BaseException as error:
            tail = self.log_tail(since=offset)
            self.stop()
            if isinstance(error, SandboxError):
                raise SandboxError(f"{error}\n{tail}") from error
            raise

    def _initialise(self) -> None:
        marker = self.dir / MARKER
        if marker.exists():
            recorded = marker.read_text().strip()
            if recorded != self.engine:
                raise SandboxError(f"{self.dir} belongs to engine {recorded}, not {self.engine}")
            return
        cache = ensure_rootfs(self.engine)
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.rootfs, ignore_errors=True)
        run_checked(["cp", "-a", "--reflink=auto", str(cache), str(self.rootfs)])
        (self.rootfs / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        marker.write_text(self.engine + "\n")

    def _nspawn_argv(self) -> list[str]:
        return [
            "systemd-nspawn", "--boot", "--directory", str(self.rootfs),
            "--machine", self.name,
            # No systemd or machined on the machine to register with or to own a scope.
            "--register=no", "--keep-unit",
            # The inner docker0 and iptables rules stay out of the machine's network.
            "--private-network",
            # runc joins a session keyring and loads a cgroup device filter.
            "--system-call-filter=@keyring bpf",
            "--console=passive",
            f"--bind-ro={REPO_ROOT}:{INNER_SRC}",
        ]  # fmt: skip

    def _check_deadline(self, proc: subprocess.Popen[bytes], deadline: float, what: str,
                        ) -> None:
        if proc.poll() is not None:
            raise SandboxError(f"systemd-nspawn in {self.dir} exited with {proc.returncode}")
        if time.monotonic() >= deadline:
            raise SandboxError(f"{what} in the systemd host {self.dir} in time")

    def _wait_booted(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        state = ""
        while True:
            self._check_deadline(proc, deadline, f"boot did not finish (state {state!r})")
            if self.init_pid() is not None:
                state = self.exec(["systemctl", "is-system-running"], timeout=10).stdout.strip()
                if state in BOOT_STATES:
                    break
            time.sleep(POLL)
        if state == "degraded":
            failed = self.exec(["systemctl", "--failed", "--no-pager"], timeout=10).stdout
            raise SandboxError(f"the systemd host {self.dir} booted degraded:\n{failed}")

    def _link_socket(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        self.socket_path.symlink_to(f"/proc/{self._init_pid_or_fail()}/root/run/docker.sock")

    def _install_tool(self) -> None:
        """The checkout, installed editable into a venv over Debian's packages (offline)."""
        # A symlink into the venv, absolute inside the host: not followed from outside.
        if (self.rootfs / INNER_CLI.lstrip("/")).is_symlink():
            return
        self.checked("python3", "-m", "venv", "--system-site-packages", INNER_VENV)
        # compat mode: a plain path entry, as the Makefile's install (see there why).
        self.checked(f"{INNER_VENV}/bin/pip", "install", "-q", "--no-index", "--no-deps",
                     "--no-build-isolation", "--config-settings", "editable_mode=compat",
                     "-e", INNER_SRC)
        self.checked("ln", "-sf", f"{INNER_VENV}/bin/containerd-migrate", INNER_CLI)

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the host down (an orderly halt, then SIGKILL); leaves no process, mount
        or cgroup of it behind."""
        pid = self.nspawn_pid()
        # SIGTERM makes nspawn halt a booted container in order.
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not wait_exit(pid, timeout):
                os.kill(pid, signal.SIGKILL)
                wait_exit(pid, 10.0)
        self._kill_cgroups()
        self._pidfile.unlink(missing_ok=True)
        self.socket_path.unlink(missing_ok=True)
        # The host's mounts live in its own mount namespace; this is for a launcher that
        # died before unsharing.
        unmount_under(self.dir)

    def _kill_cgroups(self, timeout: float = 10.0) -> None:
        """SIGKILL whatever is left in the host's cgroups, then remove them."""
        deadline = time.monotonic() + timeout
        for cgroup in self.cgroups():
            if not cgroup.is_dir():
                continue
            # Deepest first: a cgroup can only be removed once its children are.
            tree = sorted((d for d in cgroup.rglob("*") if d.is_dir()),
                          key=lambda d: len(d.parts), reverse=True)
            for directory in [*tree, cgroup]:
                while pids := _cgroup_pids(directory):
                    for pid in pids:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    if time.monotonic() >= deadline:
                        raise SandboxError(f"processes {pids} in {directory} do not die")
                    time.sleep(POLL)
                try:
                    directory.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as error:
                    raise SandboxError(f"cannot remove cgroup {directory}: {error}") from error

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.dir.exists():
            raise SandboxError(f"could not remove {self.dir}")

    def log_tail(self, lines: int = 30, since: int = 0) -> str:
        return log_tail(self.log_path, lines, since)


def _cgroup_pids(cgroup: Path) -> list[int]:
    try:
        return [int(line) for line in (cgroup / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []



def populate_host(host: SystemdHost) -> None:
    """A small sample host inside: images built FROM scratch around busybox (loaded through
    the inner docker CLI: no registry, no network inside), a running container writing to a
    named volume, and an exited one."""
    with tempfile.TemporaryDirectory(prefix="cm-host-img-") as tmp:
        work = Path(tmp)
        base = rootfs_layer(work, BUSYBOX, APPLETS)
        extra = random_layer(work, "app", 512 * 1024)
        load_images("", [ArchiveImage((BASE_IMAGE,), (base,)),
                         ArchiveImage(APP_TAGS, (base, extra))],
                    docker_argv=host.exec_argv(["docker"]))
    host.checked("docker", "volume", "create", VOLUME)
    host.checked("docker", "run", "-d", "--name", RUNNING, "-v", f"{VOLUME}:/data",
                 APP_TAGS[0], "sh", "-c", f"echo kept > /data/file; {BUSY_LOOP}")
    host.checked("docker", "run", "--name", EXITED, BASE_IMAGE, "true")
