"""What a plan is computed from: the host facts and the operator's options.

The types are frozen values; `gather_facts` and `probe_filesystem` read them from the
live engine and filesystems (impure). Everything downstream (checks, estimate, report)
is pure over these values.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field

from migrate.archives.manifest import written_bytes
from migrate.engine.client import Engine
from migrate.engine.containerd import Containerd, ContainerdError, find_ctr
from migrate.errors import BlockedError, DaemonConfigError, UsageError
from migrate.host import systemd
from migrate.host.daemon_json import (
    DEFAULT_SNAPSHOTTER,
    DaemonConfigState,
    choose_snapshotter,
    read_daemon_config,
    read_regular,
    render_config,
    target_config,
    validate_with_dockerd,
)
from migrate.host.fs import filesystem_type, free_bytes
from migrate.host.launch import (
    DaemonLaunch,
    containerd_endpoint,
    detect_launch,
    dockerd_binary,
    names_containerd,
)
from migrate.host.processes import executable
from migrate.host.restart_command import resolve_restart_command
from migrate.host.systemd import UnitState
from migrate.journal import replay
from migrate.journal.state_dir import StateDir
from migrate.models import DOCKERD_CONTAINERD_NAMESPACE, EngineInfo, Frozen, Inventory
from migrate.preflight.rehearsal import REPORT_NAME, RehearsalReport, read_report

# The one list of containers policies: the CLI's choices are read from it.
ContainersPolicy = Literal["refuse", "leave", "recreate"]
CONTAINERS_POLICIES: tuple[str, ...] = get_args(ContainersPolicy)
DEFAULT_CONTAINERS_POLICY: ContainersPolicy = "refuse"


class PlanOptions(Frozen):
    containers: ContainersPolicy = DEFAULT_CONTAINERS_POLICY
    snapshotter: str | None = None
    throughput_mbps: float | None = Field(default=None, gt=0)
    follow_symlinks: bool = False
    # Containers' and images' Env values in the report (`plan --show-env`); masked otherwise.
    show_env: bool = False


class FilesystemFacts(Frozen):
    path: str
    free_bytes: int | None = None
    # st_dev: two paths with the same device compete for the same free space.
    device: int | None = None
    mount_point: str | None = None
    # The filesystem's type (/proc/self/mountinfo): a tmpfs loses its content at a reboot.
    fs_type: str | None = None


class StagingFacts(Frozen):
    """Whether `stage` can fill the containerd store dockerd will use, and what it holds."""

    ctr: str | None = None
    address: str = ""
    namespace: str = DOCKERD_CONTAINERD_NAMESPACE
    snapshotter: str = DEFAULT_SNAPSHOTTER
    server_version: str | None = None
    local_import: bool = False
    # dockerd's own containerd (its root is under the data root), not a `--containerd` one.
    managed: bool = True
    # Why staging is unavailable; None when it is available.
    problem: str | None = None
    # What the namespace holds now (staged or not): images, and about how much disk.
    images: int = 0
    content_bytes: int = 0
    snapshot_bytes: int = 0

    @property
    def available(self) -> bool:
        return self.problem is None

    def client(self) -> Containerd:
        if self.ctr is None or self.problem is not None:
            raise ContainerdError(f"pre-staging is unavailable: {self.problem}",
                                  "run `containerd-migrate plan` for the staging check; "
                                  "`containerd-migrate run` alone still migrates")
        return Containerd(Path(self.ctr), self.address, self.namespace)


class DockerdVerdict(Frozen):
    """What the host's own dockerd says of daemon.json now and as the switch would write it."""

    dockerd: str | None = None  # None: no dockerd binary found, nothing was validated
    current: str | None = None  # dockerd's refusal of the current file; None = accepted
    target: str | None = None   # ... of the switched file


class HostFacts(Frozen):
    inventory: Inventory
    daemon_config: DaemonConfigState
    launch: DaemonLaunch
    state_dir: FilesystemFacts
    data_root: FilesystemFacts
    is_root: bool
    # How `run` will restart dockerd, resolved as `run` resolves it; empty with the reason
    # in `restart_problem` when it cannot be.
    restart_command: tuple[str, ...] = ()
    restart_problem: str | None = None
    # What `plan` can see of that command before the window: whether its program is found
    # (on PATH, or at the path given), and whether systemd is PID 1 (for a `systemctl`).
    restart_program_found: bool = True
    systemd_booted: bool = True
    # Which machine and which daemon: a change ticket names both.
    hostname: str = ""
    daemon_host: str = ""
    # Why the state dir cannot be used (StateDir.problem); None: usable.
    state_dir_problem: str | None = None
    dockerd_verdict: DockerdVerdict | None = None
    staging: StagingFacts | None = None
    # Archives already in the state dir that a run reuses (an export that stopped on a full
    # disk, say): they need no room again.
    archives_written_bytes: int = 0
    # Containers an earlier rollback of this state dir kept in the containerd store (by
    # name): hidden now, they are there again after the switch.
    kept_in_containerd: tuple[str, ...] = ()
    # docker.service when systemd runs this daemon: its start limit, and seconds since its
    # last start (None: unknown), which counts towards that limit.
    docker_unit: UnitState | None = None
    docker_started_ago: float | None = None
    # Its start attempts within the start-limit interval, from the journal (None: unread).
    docker_recent_starts: int | None = None
    # The last `containerd-migrate rehearse` of this state dir (None: none, or unreadable):
    # the estimate takes its figures when it is usable (preflight/rehearsal.py).
    rehearsal: RehearsalReport | None = None

    @property
    def shared_filesystem(self) -> bool:
        device = self.state_dir.device
        return device is not None and device == self.data_root.device


def probe_filesystem(path: str | os.PathLike[str]) -> FilesystemFacts:
    """Free space, device and mount point of the filesystem that will hold `path`."""
    probe = Path(os.path.abspath(path))
    # os.path.exists: False for a name too long too (Path.exists raises there).
    while not os.path.exists(probe) and probe != probe.parent:
        probe = probe.parent
    try:
        device = probe.stat().st_dev
        free = free_bytes(probe)
    except OSError:
        return FilesystemFacts(path=str(path))
    mount = probe
    while mount != mount.parent and mount.parent.stat().st_dev == device:
        mount = mount.parent
    return FilesystemFacts(path=str(path), free_bytes=free, device=device, mount_point=str(mount),
                           fs_type=filesystem_type(device))


def launch_ctr(launch: DaemonLaunch, pid: int | None = None) -> Path | None:
    """The `ctr` of this dockerd's containerd package: next to dockerd's executable (of
    the launch's pid, else `pid`) or its argv[0], else on PATH."""
    dockerd_pid = launch.pid or pid
    return find_ctr(executable(dockerd_pid) if dockerd_pid else None,
                    launch.argv[0] if launch.argv else None)


def staging_facts(info: EngineInfo, launch: DaemonLaunch, config: DaemonConfigState,
                  snapshotter_override: str | None = None, *, measure: bool = True,
                  ) -> StagingFacts:
    """Find `ctr` and the socket, ask the server, and (with `measure`) read its usage."""
    address, namespace = containerd_endpoint(launch, config.data)
    managed = not names_containerd(launch, config.data)
    base = StagingFacts(address=address, namespace=namespace, managed=managed)
    try:
        # The same mapping the switch writes into daemon.json: the store must match it.
        snapshotter = choose_snapshotter((config.data or {}).get("storage-driver"),
                                         snapshotter_override, info.legacy_driver)
    except DaemonConfigError as error:
        return base.model_copy(update={"problem": f"no target snapshotter: {error.message}"})
    base = base.model_copy(update={"snapshotter": snapshotter or DEFAULT_SNAPSHOTTER})
    ctr = launch_ctr(launch, info.pid)
    if ctr is None:
        return base.model_copy(update={"problem": "no `ctr` binary next to dockerd or on PATH "
                                       "(it comes with the containerd package)"})
    client = Containerd(ctr, address, namespace)
    try:
        changes: dict[str, object] = {"ctr": str(ctr), "server_version": client.server_version(),
                                      "local_import": client.local_import()}
        if measure:
            content, snapshots = client.usage_bytes(base.snapshotter)
            changes.update(images=len(client.images()), content_bytes=content,
                           snapshot_bytes=snapshots)
    except ContainerdError as error:
        return base.model_copy(update={"ctr": str(ctr), "problem": error.message})
    return base.model_copy(update=changes)


def judge_with_dockerd(launch: DaemonLaunch, config: DaemonConfigState,
                       target: bytes | None) -> DockerdVerdict:
    """Ask the host's dockerd (Engine >= 23 has --validate) about both files."""
    dockerd = dockerd_binary(launch.pid)
    if dockerd is None:
        return DockerdVerdict()
    current = None
    if config.exists:
        try:
            current = validate_with_dockerd(dockerd, read_regular(config.path)[0])
        except (OSError, DaemonConfigError):
            current = None  # unreadable: daemon-config-invalid already says so
    rejected = validate_with_dockerd(dockerd, target) if target is not None else None
    return DockerdVerdict(dockerd=dockerd, current=current, target=rejected)


def _target_bytes(config: DaemonConfigState, snapshotter: str | None,
                  driver: str | None) -> bytes | None:
    if config.parse_error is not None:
        return None
    try:
        return render_config(target_config(config.data, snapshotter, engine_driver=driver))
    except DaemonConfigError:
        return None  # unmappable driver and friends: their own checks say so


def gather_facts(
    engine: Engine,
    daemon_config: Path,
    state_dir: Path,
    inventory: Inventory | None = None,
    restart_command: Sequence[str] | None = None,
    snapshotter: str | None = None,
    *,
    staging: bool = True,
) -> HostFacts:
    """`staging=False` skips asking containerd (the snapshot phase does not need it). The
    inventory is `Engine.inventory`'s: `plan` and the snapshot read the host alike.

    `ctr` and `dockerd --validate` run while the inventory is read: they are other
    processes, and waiting for them one after the other cost `plan` 0.2 s.
    """
    info = inventory.engine if inventory is not None else engine.info()
    try:
        restart, restart_problem = resolve_restart_command(restart_command), None
    except (BlockedError, UsageError) as error:
        restart, restart_problem = (), error.message
    config = read_daemon_config(daemon_config)
    launch = detect_launch(info.pid, engine.host)
    target = _target_bytes(config, snapshotter, info.legacy_driver)
    with ThreadPoolExecutor(max_workers=2) as pool:
        staged = (pool.submit(staging_facts, info, launch, config, snapshotter) if staging
                  else None)
        verdict = pool.submit(judge_with_dockerd, launch, config, target)
        inventory = inventory or engine.inventory(info)
        staging_result = staged.result() if staged is not None else None
        dockerd_verdict = verdict.result()
    data_root = info.data_root
    state_problem = StateDir(state_dir).problem()
    return HostFacts(
        inventory=inventory,
        daemon_config=config,
        launch=launch,
        staging=staging_result,
        state_dir=probe_filesystem(state_dir),
        data_root=probe_filesystem(data_root) if data_root else probe_filesystem("/"),
        is_root=os.geteuid() == 0,
        restart_command=restart,
        restart_problem=restart_problem,
        restart_program_found=not restart or shutil.which(restart[0]) is not None,
        systemd_booted=systemd.booted(),
        hostname=socket.gethostname(),
        daemon_host=engine.host,
        state_dir_problem=state_problem,
        dockerd_verdict=dockerd_verdict,
        archives_written_bytes=0 if state_problem else written_bytes(
            StateDir(state_dir).archives_dir, inventory),
        kept_in_containerd=() if state_problem else replay(
            StateDir(state_dir).journal_path).kept_in_containerd,
        rehearsal=None if state_problem else read_report(
            StateDir(state_dir).reports_dir / REPORT_NAME),
        **_docker_unit_facts(launch),
    )


def _docker_unit_facts(launch: DaemonLaunch) -> dict[str, Any]:
    """docker.service's start limit and last start, when systemd runs this daemon."""
    if launch.source != "systemd":
        return {}
    unit = systemd.unit_state()
    if unit is None:
        return {}
    return {"docker_unit": unit,
            "docker_started_ago": systemd.seconds_since_start(unit, systemd.monotonic_us()),
            "docker_recent_starts": systemd.recent_starts(unit) if unit.limited else None}
