"""Pre-flight checks: one small pure function per check, registered in CHECKS.

Every trap in engine-facts.md that the tool cannot fix by itself becomes a check here,
so `plan` refuses before anything is touched instead of failing mid-window.
Check ids are stable kebab-case: scripts and tickets refer to them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

# The shared types live in checks_base and the disk/container/volume/image checks in
# checks_host; they are re-exported here so that callers keep importing from migrate.checks.
from migrate.checks_base import BLOCKER, INFO, WARNING, Check, Ctx, Severity, _check
from migrate.checks_host import (
    DISK_HEADROOM,
    GIB,
    containers_present,
    dangling_images,
    disk_data_root,
    disk_state_dir,
    no_images,
    registry_digests,
    volumes_only_used_by_containers,
)
from migrate.daemon_config import (
    LEGACY_STORAGE_DRIVER_MAPPING,
    SNAPSHOTTER_FEATURE,
    choose_snapshotter,
)
from migrate.errors import DaemonConfigError
from migrate.estimate import Estimate, estimate
from migrate.models import Store

if TYPE_CHECKING:  # plan.py imports this module at runtime
    from migrate.plan import HostFacts, PlanOptions

__all__ = [
    "BLOCKER", "CHECKS", "DEFAULT_EXEC_ROOT", "DISK_HEADROOM", "GIB", "INFO", "MIN_ENGINE",
    "WARNING", "Check", "Ctx", "Severity", "already_containerd", "config_already_switched",
    "containers_present", "daemon_config_invalid", "daemon_config_not_writable",
    "daemon_config_symlink", "dangling_images", "disk_data_root", "disk_state_dir",
    "engine_too_old", "evaluate_checks", "external_containerd", "feature_flag_conflict",
    "feature_typo", "live_restore", "no_images", "not_root", "parse_version",
    "registry_digests", "storage_driver_flag", "storage_driver_rewrite",
    "storage_driver_unmappable", "userns_remap", "volumes_only_used_by_containers",
]

MIN_ENGINE = (24, 0)
DEFAULT_EXEC_ROOT = "/var/run/docker"


def parse_version(version: str) -> tuple[int, int] | None:
    match = re.match(r"^v?(\d+)\.(\d+)", version.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def engine_too_old(c: Ctx) -> Check | None:
    version = c.inv.engine.version
    parsed = parse_version(version)
    if parsed is None:
        return _check("engine-too-old", WARNING, f"cannot parse the engine version {version!r}",
                      "make sure Docker Engine is 24.0 or newer")
    if parsed >= MIN_ENGINE:
        return None
    return _check("engine-too-old", BLOCKER, f"Docker Engine {version} is older than 24.0",
                  "upgrade Docker Engine first; the containerd image store needs 24.0+")


def already_containerd(c: Ctx) -> Check | None:
    if c.inv.engine.store is not Store.CONTAINERD:
        return None
    return _check("already-containerd", BLOCKER,
                  "the daemon already uses the containerd image store: nothing to do")


def config_already_switched(c: Ctx) -> Check | None:
    if c.inv.engine.store is not Store.LEGACY or c.config.containerd_snapshotter is not True:
        return None
    return _check("config-already-switched", WARNING,
                  f"{c.config.path} already enables {SNAPSHOTTER_FEATURE} but the daemon "
                  "runs the legacy store",
                  "an unplanned restart would switch without exporting the images; let the "
                  "migration do the restart")


def daemon_config_invalid(c: Ctx) -> Check | None:
    config = c.config
    if not config.exists or config.valid:
        return None
    return _check("daemon-config-invalid", BLOCKER,
                  f"{config.path} is unusable: {config.parse_error or 'invalid values'}",
                  "fix daemon.json by hand (dockerd exits at start with it), then re-run plan",
                  config.problems)


def daemon_config_symlink(c: Ctx) -> Check | None:
    config = c.config
    if not config.is_symlink:
        return None
    if c.options.follow_symlinks:
        return _check("daemon-config-symlink", INFO,
                      f"{config.path} is a symlink to {config.symlink_target}; the target will "
                      "be edited")
    return _check("daemon-config-symlink", BLOCKER,
                  f"{config.path} is a symlink to {config.symlink_target}",
                  "pass --follow-symlinks to edit the target, or replace the link by a file")


def _engine_driver(c: Ctx) -> str | None:
    return c.inv.engine.driver if c.inv.engine.store is Store.LEGACY else None


def _new_snapshotter(c: Ctx) -> str | None:
    return choose_snapshotter(c.config.storage_driver, c.options.snapshotter, _engine_driver(c))


def storage_driver_rewrite(c: Ctx) -> Check | None:
    try:
        new = _new_snapshotter(c)
    except DaemonConfigError:
        return None
    old = c.config.storage_driver or _engine_driver(c)
    if new is None or new == c.config.storage_driver:
        return None
    message = f"storage-driver {old} will be written as {new} in daemon.json"
    if c.options.snapshotter is None and old == "vfs":
        return _check("storage-driver-rewrite", WARNING, message,
                      "the native snapshotter copies every layer in full: expect more disk "
                      "use than estimated")
    reason = "explicit --snapshotter" if c.options.snapshotter else "automatic mapping"
    return _check("storage-driver-rewrite", INFO, f"{message} ({reason})")


def storage_driver_unmappable(c: Ctx) -> Check | None:
    try:
        _new_snapshotter(c)
    except DaemonConfigError as exc:
        return _check("storage-driver-unmappable", BLOCKER, exc.message, exc.hint)
    return None


def storage_driver_flag(c: Ctx) -> Check | None:
    launch = c.launch
    found = []
    if launch.storage_driver_flag:
        found.append(f"dockerd flag --storage-driver {launch.storage_driver_flag}")
    if launch.docker_driver_env:
        found.append(f"environment DOCKER_DRIVER={launch.docker_driver_env}")
    if not found:
        return None
    mapping = ", ".join(f"{k} -> {v}" for k, v in LEGACY_STORAGE_DRIVER_MAPPING.items())
    return _check("storage-driver-flag", BLOCKER,
                  "dockerd gets its storage driver from the command line or environment",
                  "remove it from ExecStart/Environment (systemctl edit docker, or the drop-in) "
                  f"and restart; only daemon.json can be rewritten ({mapping})",
                  found + [f"unit file: {u}" for u in launch.unit_files])


def feature_flag_conflict(c: Ctx) -> Check | None:
    flags = c.launch.feature_flags
    if not flags:
        return None
    return _check("feature-flag-conflict", BLOCKER,
                  "dockerd is started with --feature flags, which conflict with any 'features' "
                  "key in daemon.json: the daemon would refuse to start",
                  "remove the --feature flags from ExecStart and move them into daemon.json",
                  [f"--feature {flag}" for flag in flags])


def feature_typo(c: Ctx) -> Check | None:
    typos = c.config.feature_typos
    if not typos:
        return None
    return _check("feature-typo", WARNING,
                  f"daemon.json features look like misspellings of {SNAPSHOTTER_FEATURE}; "
                  "dockerd ignores unknown features silently",
                  "fix or remove them; the switch writes the correct key and checks the store "
                  "after the restart", [f"features.{key}" for key in typos])


def userns_remap(c: Ctx) -> Check | None:
    sources = []
    if c.config.userns_remap:
        sources.append(f"daemon.json userns-remap: {c.config.userns_remap}")
    if c.launch.userns_remap_flag:
        sources.append(f"dockerd flag --userns-remap {c.launch.userns_remap_flag}")
    if any("userns" in opt for opt in c.inv.engine.security_options):
        sources.append("docker info SecurityOptions: userns")
    if not sources:
        return None
    return _check("userns-remap", BLOCKER, "user namespace remapping is enabled",
                  "the migration does not support userns-remap; disable it or migrate by hand",
                  sources)


def _managed_containerd_socket(c: Ctx) -> str:
    exec_root = c.launch.exec_root or DEFAULT_EXEC_ROOT
    return os.path.join(exec_root, "containerd", "containerd.sock")


def _same_path(a: str, b: str) -> bool:
    # /var/run is a symlink to /run on every systemd distribution.
    def canonical(p: str) -> str:
        p = os.path.normpath(p)
        return "/run/" + p.removeprefix("/var/run/") if p.startswith("/var/run/") else p

    return canonical(a) == canonical(b)


def external_containerd(c: Ctx) -> Check | None:
    socket = c.launch.containerd_flag or c.inv.engine.containerd_address
    if not socket:
        return None
    # Engine 28 reports Containerd.Address in `docker info` for the containerd it manages
    # itself (EXEC_ROOT/containerd/containerd.sock) too: that one is not external.
    if not c.launch.containerd_flag and _same_path(socket, _managed_containerd_socket(c)):
        return None
    namespace = c.launch.containerd_namespace or "moby"
    return _check("external-containerd", INFO,
                  f"dockerd uses the containerd at {socket} (namespace {namespace})",
                  "pre-staging must import through that socket; the new store lives in that "
                  "containerd's root, not under the data root")


def live_restore(c: Ctx) -> Check | None:
    data = c.config.data or {}
    if not (c.inv.engine.live_restore or c.launch.live_restore or data.get("live-restore")):
        return None
    running = [ct.name for ct in c.inv.containers if ct.running]
    return _check("live-restore", WARNING if running else INFO,
                  "live-restore is on: running containers would survive the restart as "
                  "invisible orphans", "they will be stopped deliberately before the switch",
                  running)



def not_root(c: Ctx) -> Check | None:
    if c.facts.is_root:
        return None
    return _check("not-root", BLOCKER, "not running as root",
                  "run as root: the switch edits daemon.json and restarts dockerd")


def daemon_config_not_writable(c: Ctx) -> Check | None:
    if c.config.writable:
        return None
    return _check("daemon-config-not-writable", BLOCKER,
                  f"{c.config.path} (or its directory) is not writable", "run as root")



CHECKS: tuple[Callable[[Ctx], Check | None], ...] = (
    engine_too_old, already_containerd, config_already_switched, daemon_config_invalid,
    daemon_config_symlink, storage_driver_rewrite, storage_driver_unmappable,
    storage_driver_flag, feature_flag_conflict, feature_typo, userns_remap,
    external_containerd, live_restore, containers_present, volumes_only_used_by_containers,
    registry_digests, dangling_images, disk_state_dir, disk_data_root, not_root,
    daemon_config_not_writable, no_images,
)


def evaluate_checks(
    facts: HostFacts, options: PlanOptions, est: Estimate | None = None
) -> tuple[Check, ...]:
    if est is None:
        est = estimate(facts.inventory, options.throughput_mbps,
                       shared_filesystem=facts.shared_filesystem)
    ctx = Ctx(facts, options, est)
    return tuple(check for fn in CHECKS if (check := fn(ctx)) is not None)
