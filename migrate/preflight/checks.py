"""Pre-flight checks: one small pure function per check, registered in CHECKS.

Every engine trap the tool cannot fix by itself (docs/engine-facts.md) becomes a check
here, so `plan` refuses before anything is touched instead of failing mid-window. Checks
read a `CheckInput` (the host facts, the options and the estimate) and return a `Check` or None.
Check ids are stable kebab-case: scripts and tickets refer to them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

from migrate.archives.writing import RESERVE_BYTES
from migrate.errors import DaemonConfigError
from migrate.host.daemon_json import (
    DEFAULT_PATH,
    LEGACY_STORAGE_DRIVER_MAPPING,
    SNAPSHOTTER_FEATURE,
    DaemonConfigState,
    choose_snapshotter,
)
from migrate.host.fs import VOLATILE_FILESYSTEMS
from migrate.host.launch import (
    DaemonLaunch,
    canonical_path,
    config_file_read,
    containerd_endpoint,
    names_containerd,
)
from migrate.host.restart_command import RESTART_COMMAND_HINT
from migrate.host.systemd import SERVICE, SOCKET, describe_limit
from migrate.journal.state_dir import DEFAULT_STATE_DIR
from migrate.models import VOLUME_GUARD_NAME, Frozen, Inventory, Store
from migrate.preflight.containers import (
    commit_bytes,
    is_swarm_task,
    recreate_plan,
    removed_by_stop,
)
from migrate.preflight.estimate import Estimate, estimate
from migrate.preflight.facts import FilesystemFacts, HostFacts, PlanOptions


class Severity(StrEnum):
    BLOCKER = "blocker"
    WARNING = "warning"
    INFO = "info"


BLOCKER, WARNING, INFO = Severity.BLOCKER, Severity.WARNING, Severity.INFO


class Check(Frozen):
    id: str
    severity: Severity
    message: str
    hint: str = ""
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckInput:
    facts: HostFacts
    options: PlanOptions
    estimate: Estimate

    @property
    def inventory(self) -> Inventory:
        return self.facts.inventory

    @property
    def config(self) -> DaemonConfigState:
        return self.facts.daemon_config

    @property
    def launch(self) -> DaemonLaunch:
        return self.facts.launch


def _check(
    id_: str, severity: Severity, message: str, hint: str = "", details: Iterable[str] = ()
) -> Check:
    return Check(id=id_, severity=severity, message=message, hint=hint, details=tuple(details))




MIN_ENGINE = (24, 0)


def parse_version(version: str) -> tuple[int, int] | None:
    match = re.match(r"^v?(\d+)\.(\d+)", version.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def engine_too_old(given: CheckInput) -> Check | None:
    version = given.inventory.engine.version
    parsed = parse_version(version)
    if parsed is None:
        return _check("engine-too-old", WARNING, f"cannot parse the engine version {version!r}",
                      "make sure Docker Engine is 24.0 or newer")
    if parsed >= MIN_ENGINE:
        return None
    return _check("engine-too-old", BLOCKER, f"Docker Engine {version} is older than 24.0",
                  "upgrade Docker Engine first; the containerd image store needs 24.0+")


SNAP_PREFIXES = ("/snap/", "/var/snap/")


def unsupported_setup(given: CheckInput) -> Check | None:
    """Rootless Docker, the snap and Docker Desktop: their daemon.json, data root and
    restart are not the system daemon's that the tool edits and restarts (README, "Tested
    host set-ups")."""
    engine = given.inventory.engine
    if "name=rootless" in engine.security_options:
        what, why = "rootless Docker", (
            "its daemon runs as a user, reads ~/.config/docker/daemon.json and is restarted "
            "with `systemctl --user restart docker`")
    elif engine.data_root.startswith(SNAP_PREFIXES) or (
            given.launch.argv and given.launch.argv[0].startswith(SNAP_PREFIXES)):
        what, why = "the Docker snap", (
            "its daemon.json is /var/snap/docker/current/config/daemon.json, its data root "
            "lives under /var/snap/docker, and `snap restart docker` restarts it")
    elif engine.operating_system == "Docker Desktop":
        what, why = "Docker Desktop", (
            "its daemon runs in Desktop's own VM, whose daemon.json and image store are "
            "Desktop settings")
    else:
        return None
    return _check("unsupported-setup", BLOCKER,
                  f"this daemon is {what}, which containerd-migrate does not support: {why}",
                  "the tool migrates a system dockerd (docker.service, a daemon.json in "
                  "/etc/docker); Docker Desktop switches stores itself (Settings, General, "
                  "'Use containerd for pulling and storing images')")


def already_containerd(given: CheckInput) -> Check | None:
    if given.inventory.engine.store is not Store.CONTAINERD:
        return None
    return _check("already-containerd", BLOCKER,
                  "the daemon already uses the containerd image store: nothing to do")


def config_already_switched(given: CheckInput) -> Check | None:
    if given.inventory.engine.store is not Store.LEGACY \
            or given.config.containerd_snapshotter is not True:
        return None
    # The switch journals these bytes as the original: a rollback restoring them would
    # bring the daemon back on the containerd store, with no way back to legacy.
    return _check("config-already-switched", BLOCKER,
                  f"{given.config.path} already enables {SNAPSHOTTER_FEATURE} but the daemon "
                  "runs the legacy store: a rollback could not bring it back to legacy",
                  f"remove {SNAPSHOTTER_FEATURE} from {given.config.path} (the daemon has not "
                  "read it yet; an unplanned restart would switch without the images), then "
                  "re-run plan")


def dockerd_rejects_config(given: CheckInput) -> Check | None:
    verdict = given.facts.dockerd_verdict
    if verdict is None:
        return None
    if verdict.dockerd is None:
        return _check("dockerd-validate-unavailable", WARNING,
                      "no dockerd binary found to validate daemon.json with",
                      "check it by hand: dockerd --validate --config-file FILE")
    if verdict.current is not None and given.config.valid:
        # The daemon runs on an older config: its next start, and so the rollback's,
        # would fail. Stopping before the switch is the only safe answer.
        return _check("daemon-config-rejected", BLOCKER,
                      f"dockerd rejects {given.config.path} as it is now: {verdict.current}",
                      "the running daemon was started before this content; fix the file "
                      f"(`{verdict.dockerd} --validate --config-file {given.config.path}`), "
                      "then re-run plan")
    if verdict.target is not None and verdict.current is None:
        return _check("target-config-rejected", BLOCKER,
                      f"dockerd would reject daemon.json as the switch writes it: "
                      f"{verdict.target}",
                      "see the planned daemon.json in this report; fix the original or pick "
                      "--snapshotter, then re-run plan")
    return None


def state_dir_unusable(given: CheckInput) -> Check | None:
    problem = given.facts.state_dir_problem
    if problem is None:
        return None
    return _check("state-dir-unusable", BLOCKER, problem,
                  "pick a private directory of root's with --state-dir (see README, Security)")


def volatile_state_dir(fs: FilesystemFacts) -> Check | None:
    """The state dir on a filesystem a reboot empties; `run` warns with it too."""
    if fs.fs_type not in VOLATILE_FILESYSTEMS:
        return None
    return _check("state-dir-volatile", WARNING,
                  f"the state dir {fs.path} is on a {fs.fs_type}: a reboot before cleanup "
                  "loses its journal, which holds the only copy of the original daemon.json "
                  "(and with it the rollback)",
                  "pick a --state-dir on a disk-backed filesystem (the default is "
                  f"{DEFAULT_STATE_DIR})")


def state_dir_volatile(given: CheckInput) -> Check | None:
    return volatile_state_dir(given.facts.state_dir)


def daemon_config_invalid(given: CheckInput) -> Check | None:
    config = given.config
    if not config.exists or config.valid:
        return None
    return _check("daemon-config-invalid", BLOCKER,
                  f"{config.path} is unusable: {config.parse_error or 'invalid values'}",
                  "fix daemon.json by hand (dockerd exits at start with it), then re-run plan",
                  config.problems)


def _same_file(edited: DaemonConfigState, read: str) -> bool:
    path = os.path.abspath(edited.path)
    candidates = [path]
    if edited.symlink_target:
        candidates.append(os.path.join(os.path.dirname(path), edited.symlink_target))
    return any(canonical_path(candidate) == read for candidate in candidates)


def daemon_config_not_read(given: CheckInput) -> Check | None:
    read = config_file_read(given.launch)
    if read is None:
        return _check("daemon-config-not-read", WARNING,
                      "cannot tell which daemon.json dockerd reads (its command line is "
                      "unknown)",
                      f"make sure dockerd reads {given.config.path}: its --config-file, else "
                      f"{DEFAULT_PATH}")
    if _same_file(given.config, read):
        return None
    if read == os.devnull and not given.config.exists:
        # A launcher that passes /dev/null while there is no daemon.json and the file once
        # it exists (as the test sandboxes do) reads the switched file; a plain dockerd not.
        return _check("daemon-config-not-read", WARNING,
                      f"dockerd is started with --config-file {read}: it reads no daemon.json "
                      f"now; the switch creates {given.config.path}",
                      f"make sure the restart passes --config-file {given.config.path}")
    # Switching a file dockerd never reads brings the daemon back on the legacy store.
    return _check("daemon-config-not-read", BLOCKER,
                  f"dockerd reads {read}, not {given.config.path}",
                  f"pass --daemon-config {read} (the --config-file on dockerd's command line, "
                  f"else {DEFAULT_PATH})",
                  [f"dockerd command line: {' '.join(given.launch.argv)}"]
                  + [f"unit file: {u}" for u in given.launch.unit_files])


def daemon_config_symlink(given: CheckInput) -> Check | None:
    config = given.config
    if not config.is_symlink:
        return None
    if given.options.follow_symlinks:
        return _check("daemon-config-symlink", INFO,
                      f"{config.path} is a symlink to {config.symlink_target}; the target will "
                      "be edited")
    return _check("daemon-config-symlink", BLOCKER,
                  f"{config.path} is a symlink to {config.symlink_target}",
                  "pass --follow-symlinks to edit the target, or replace the link by a file")


def _new_snapshotter(given: CheckInput) -> str | None:
    return choose_snapshotter(given.config.storage_driver, given.options.snapshotter,
                              given.inventory.engine.legacy_driver)


def storage_driver_rewrite(given: CheckInput) -> Check | None:
    try:
        new = _new_snapshotter(given)
    except DaemonConfigError:
        return None
    old = given.config.storage_driver or given.inventory.engine.legacy_driver
    if new is None or new == given.config.storage_driver:
        return None
    message = f"storage-driver {old} will be written as {new} in daemon.json"
    if given.options.snapshotter is None and old == "vfs":
        return _check("storage-driver-rewrite", WARNING, message,
                      "the native snapshotter copies every layer in full: expect more disk "
                      "use than estimated")
    reason = "explicit --snapshotter" if given.options.snapshotter else "automatic mapping"
    return _check("storage-driver-rewrite", INFO, f"{message} ({reason})")


def storage_driver_unmappable(given: CheckInput) -> Check | None:
    try:
        _new_snapshotter(given)
    except DaemonConfigError as exc:
        return _check("storage-driver-unmappable", BLOCKER, exc.message, exc.hint)
    return None


def storage_driver_flag(given: CheckInput) -> Check | None:
    launch = given.launch
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


def feature_flag_conflict(given: CheckInput) -> Check | None:
    flags = given.launch.feature_flags
    if not flags:
        return None
    return _check("feature-flag-conflict", BLOCKER,
                  "dockerd is started with --feature flags, which conflict with any 'features' "
                  "key in daemon.json: the daemon would refuse to start",
                  "remove the --feature flags from ExecStart and move them into daemon.json",
                  [f"--feature {flag}" for flag in flags])


def feature_typo(given: CheckInput) -> Check | None:
    typos = given.config.feature_typos
    if not typos:
        return None
    return _check("feature-typo", WARNING,
                  f"daemon.json features look like misspellings of {SNAPSHOTTER_FEATURE}; "
                  "dockerd ignores unknown features silently",
                  "fix or remove them; the switch writes the correct key and checks the store "
                  "after the restart", [f"features.{key}" for key in typos])


def userns_remap(given: CheckInput) -> Check | None:
    sources = []
    if given.config.userns_remap:
        sources.append(f"daemon.json userns-remap: {given.config.userns_remap}")
    if given.launch.userns_remap_flag:
        sources.append(f"dockerd flag --userns-remap {given.launch.userns_remap_flag}")
    if any("userns" in opt for opt in given.inventory.engine.security_options):
        sources.append("docker info SecurityOptions: userns")
    if not sources:
        return None
    return _check("userns-remap", BLOCKER, "user namespace remapping is enabled",
                  "the migration does not support userns-remap; disable it or migrate by hand",
                  sources)


def external_containerd(given: CheckInput) -> Check | None:
    # The daemon.json keys count like the flags: dockerd reads either (flag wins).
    socket, namespace = containerd_endpoint(given.launch, given.config.data)
    if not names_containerd(given.launch, given.config.data):
        # Engine 28 reports Containerd.Address in `docker info` for the containerd it
        # manages itself (EXEC_ROOT/containerd/containerd.sock) too: that one is not
        # external. Another address there means a launch we could not read.
        reported = given.inventory.engine.containerd_address
        if not reported or canonical_path(reported) == canonical_path(socket):
            return None
        socket = reported
    return _check("external-containerd", INFO,
                  f"dockerd uses the containerd at {socket} (namespace {namespace})",
                  "pre-staging must import through that socket; the new store lives in that "
                  "containerd's root, not under the data root")


def live_restore(given: CheckInput) -> Check | None:
    data = given.config.data or {}
    if not (given.inventory.engine.live_restore or given.launch.live_restore
            or data.get("live-restore")):
        return None
    running = [ct.name for ct in given.inventory.containers if ct.running]
    return _check("live-restore", WARNING if running else INFO,
                  "live-restore is on: running containers would survive the restart as "
                  "invisible orphans", "they will be stopped deliberately before the switch",
                  running)



def not_root(given: CheckInput) -> Check | None:
    if given.facts.is_root:
        return None
    return _check("not-root", BLOCKER, "not running as root",
                  "run as root: the switch edits daemon.json and restarts dockerd")


def restart_command_unknown(given: CheckInput) -> Check | None:
    if given.facts.restart_problem is None:
        return None
    return _check("restart-command", BLOCKER, given.facts.restart_problem, RESTART_COMMAND_HINT
                  + " (or set CONTAINERD_MIGRATE_RESTART_COMMAND)")


def restart_command_fails(given: CheckInput) -> Check | None:
    argv = given.facts.restart_command
    if not argv:
        return None  # restart-command says why there is none
    program = argv[0]
    if not given.facts.restart_program_found:
        why = f"`{program}` is not found on PATH"
    elif os.path.basename(program) == "systemctl" and not given.facts.systemd_booted:
        why = ("`systemctl` needs systemd as PID 1, and systemd is not running this host (no "
               "/run/systemd/system)")
    else:
        return None
    # A warning: the operator may know better (a PATH of its own in the window), but a
    # restart that fails costs a rollback with the containers down meanwhile.
    return _check("restart-command-fails", WARNING,
                  f"the restart command would fail in the window: {why}",
                  RESTART_COMMAND_HINT + " (or set CONTAINERD_MIGRATE_RESTART_COMMAND)")


# A migration starts docker.service once, its rollback once more.
STARTS_PER_MIGRATION = 2


def start_limit(given: CheckInput) -> Check | None:
    """docker.service's start limit (Debian: 3 starts in 60 s, the boot start counts)."""
    unit = given.facts.docker_unit
    if unit is None or not unit.loaded or not unit.limited:
        return None
    limit, ago = describe_limit(unit), given.facts.docker_started_ago
    window = unit.start_limit_interval_us / 1_000_000
    # The journal counts every start in the window; the last start alone is at least one.
    recent = max(1 if ago is not None and ago < window else 0,
                 given.facts.docker_recent_starts or 0)
    details = [f"StartLimitBurst={unit.start_limit_burst}, StartLimitIntervalSec={window:g}s",
               f"last start: {'unknown' if ago is None else f'{ago:.0f} s ago'}",
               f"starts in the last {window:g} s: "
               + ("unknown" if given.facts.docker_recent_starts is None else str(recent)),
               f"automatic restarts since loaded: {unit.n_restarts}"]
    hint = ("if systemd refuses a restart (result start-limit-hit), the tool runs "
            f"`systemctl reset-failed {SERVICE} {SOCKET}` once and restarts again, and "
            "journals it")
    if unit.start_limit_hit or recent + STARTS_PER_MIGRATION > unit.start_limit_burst:
        if unit.start_limit_hit:
            why = " (its last start was refused: start-limit-hit)"
        elif recent and ago is not None:
            why = f" ({recent} start(s) in the last {window:g} s, the last {ago:.0f} s ago)"
            hint += f"; not restarting docker for {window:g} s before `run` avoids it"
        else:
            why = ""
        return _check("start-limit", WARNING, f"{SERVICE} allows {limit}: the restart and a "
                      f"rollback may exceed it{why}", hint, details)
    return _check("start-limit", INFO, f"{SERVICE} allows {limit}; a migration and its "
                  f"rollback start it {STARTS_PER_MIGRATION} times", hint, details)


def daemon_config_not_writable(given: CheckInput) -> Check | None:
    if given.config.writable:
        return None
    return _check("daemon-config-not-writable", BLOCKER,
                  f"{given.config.path} (or its directory) is not writable", "run as root")



DISK_HEADROOM = 1.2
GIB = 1024**3
MIB = 1024**2


def containers_present(given: CheckInput) -> Check | None:
    containers = given.inventory.containers
    if not containers:
        return None
    running = sum(ct.running for ct in containers)
    details = [f"{ct.name} ({ct.state}, image {ct.image})" for ct in containers]
    message = f"{len(containers)} container(s), {running} running"
    if given.options.containers == "recreate":
        plans = recreate_plan(given.inventory)
        return _check("containers-present", INFO,
                      f"{message}: each is recreated in the containerd store, running ones "
                      "stopped for the window and started again",
                      "same names, config, volumes and networks; see the container-map.json "
                      "report after the run", [plan.describe() for plan in plans])
    if given.options.containers == "leave":
        return _check("containers-present", WARNING,
                      f"{message}: they will be hidden after the switch, running ones stopped",
                      "they come back, writable layers intact, after a rollback", details)
    return _check("containers-present", BLOCKER, f"{message} would be hidden by the switch",
                  "pass --containers recreate to have them recreated in the containerd store "
                  "(the README's way), or --containers leave to stop them and keep them hidden "
                  "in the legacy store until a rollback, or remove them", details)


def containers_not_recreatable(given: CheckInput) -> Check | None:
    if given.options.containers != "recreate":
        return None
    blocked = [plan for plan in recreate_plan(given.inventory) if plan.blockers]
    if not blocked:
        return None
    return _check("containers-not-recreatable", BLOCKER,
                  f"{len(blocked)} container(s) cannot be recreated faithfully",
                  "change or remove them (or migrate with --containers leave, which keeps "
                  "them hidden in the legacy store), then plan again",
                  [plan.describe() for plan in blocked])


def containers_removed_by_stop(given: CheckInput) -> Check | None:
    # Under recreate, containers-not-recreatable names them among the rest.
    if given.options.containers == "recreate":
        return None
    lost = [f"{ct.name}: {why}" for ct in given.inventory.containers
            if (why := removed_by_stop(ct))]
    if not lost:
        return None
    return _check("containers-removed-by-stop", BLOCKER,
                  f"{len(lost)} running container(s) would be deleted by the stop before the "
                  "switch", "stop them yourself before the window (keep what you need from "
                  "them first), or start them again without --rm, then plan again", lost)


def reserved_container_name(given: CheckInput) -> Check | None:
    # Recreated containers and the tool's volume guard share the containerd store.
    if given.options.containers != "recreate":
        return None
    if not any(ct.name == VOLUME_GUARD_NAME for ct in given.inventory.containers):
        return None
    return _check("reserved-container-name", BLOCKER,
                  f"a container is named {VOLUME_GUARD_NAME}, the name of the volume guard the "
                  "migration creates in the containerd store: recreating it would collide",
                  f"rename it before the window (`docker rename {VOLUME_GUARD_NAME} "
                  f"{VOLUME_GUARD_NAME}-own`), then plan again")


def names_kept_in_containerd(given: CheckInput) -> Check | None:
    # The containerd store is hidden now; its containers are there again after the switch.
    if given.options.containers != "recreate" or not given.facts.kept_in_containerd:
        return None
    taken = sorted(set(given.facts.kept_in_containerd)
                   & {ct.name for ct in given.inventory.containers})
    if not taken:
        return None
    return _check("names-kept-in-containerd", BLOCKER,
                  f"{len(taken)} container name(s) are taken in the containerd store by "
                  "containers created there after an earlier switch and kept by its rollback: "
                  f"{', '.join(taken)}; recreating these containers would collide",
                  "migrate with `--containers leave`, then remove or rename those in the "
                  "containerd store and recreate yours (e.g. `docker compose up -d`); or switch "
                  "once by hand to remove them first")


def swarm_tasks(given: CheckInput) -> Check | None:
    # Under recreate, containers-not-recreatable blocks them; refuse blocks every container.
    if given.options.containers != "leave":
        return None
    tasks = [ct.name for ct in given.inventory.containers if is_swarm_task(ct)]
    if not tasks:
        return None
    return _check("swarm-tasks", WARNING,
                  f"{len(tasks)} container(s) are swarm tasks: swarm starts replacements while "
                  "they are stopped and hidden",
                  "swarm, not the tool, owns them: a rollback leaves them to swarm and does "
                  "not count them as missing", tasks)


def volumes_only_used_by_containers(given: CheckInput) -> Check | None:
    used = [v for v in given.inventory.volumes if v.used_by]
    if not used or given.options.containers == "recreate":
        return None  # recreated containers keep using their volumes
    return _check("volumes-only-used-by-containers", WARNING,
                  f"{len(used)} volume(s) will look unused once their containers are hidden",
                  "do not run docker volume rm/prune after the switch: it would delete them and "
                  "break the rollback",
                  [f"{v.name} (used by {', '.join(v.used_by)})" for v in used])


def registry_digests(given: CheckInput) -> Check | None:
    pulled = [img for img in given.inventory.images if img.repo_digests]
    if not pulled:
        return None
    return _check("registry-digests", WARNING,
                  f"{len(pulled)} image(s) lose their registry digests (RepoDigests)",
                  "image@sha256:<digest> references stop resolving until re-pulled; each tag "
                  "gets a synthetic repo@<new id>",
                  [f"{', '.join(img.tags) or img.id}: {', '.join(img.repo_digests)}"
                   for img in pulled])


def dangling_images(given: CheckInput) -> Check | None:
    dangling = given.inventory.dangling_images
    if not dangling:
        return None
    return _check("dangling-images", INFO,
                  f"{len(dangling)} untagged image(s) are exported separately by ID",
                  "they come back as <none>", [img.id for img in dangling])


def _size(size: int) -> str:
    # Not GiB alone: a small host (or a small state-dir filesystem) would read "0.0 GiB free,
    # needs 0.0 GiB".
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size / MIB:.1f} MiB"


def _disk(id_: str, fs: FilesystemFacts, need: int, what: str, hint: str) -> Check | None:
    if fs.free_bytes is None:
        return _check(id_, WARNING, f"cannot measure free space for {fs.path}",
                      f"make sure {_size(need)} are free for {what}")
    # The reserve (journal, reports, the daemon's own writes) is fixed: on a small host it is
    # most of the need, which the number alone does not say.
    reserve = _size(RESERVE_BYTES)
    share = (f"most of it the fixed {reserve} reserve" if need <= RESERVE_BYTES * 2
             else f"including a fixed {reserve} reserve")
    text = f"{fs.path}: {_size(fs.free_bytes)} free, {_size(need)} needed for {what} ({share})"
    if fs.free_bytes < need:
        return _check(id_, BLOCKER, text, hint)
    if fs.free_bytes < need * DISK_HEADROOM:
        return _check(id_, WARNING, f"{text} (less than 20% headroom)")
    return None


def _credited(need: int, given: CheckInput) -> tuple[int, str]:
    """The need less the archives already written (reused by the run), and a note."""
    written = min(given.facts.archives_written_bytes, max(need - RESERVE_BYTES, 0))
    note = f", {_size(written)} of it already written" if written else ""
    return need - written, note


def disk_state_dir(given: CheckInput) -> Check | None:
    if given.facts.shared_filesystem:
        return None  # disk-data-root reports the combined need of the shared filesystem
    need, note = _credited(given.estimate.state_dir_need_bytes, given)
    return _disk("disk-state-dir", given.facts.state_dir, need, f"the export archives{note}",
                 "free space there or pick another --state-dir")


def disk_data_root(given: CheckInput) -> Check | None:
    what, need, note = "save staging + the new store", given.estimate.data_root_need_bytes, ""
    if given.facts.shared_filesystem:
        need, note = _credited(need, given)
        what = ("archives + save staging + the new store (state dir on the same "
                f"filesystem{note})")
    return _disk("disk-data-root", given.facts.data_root, need, what,
                 "free space on the data-root filesystem; the legacy data stays until cleanup")



def staging(given: CheckInput) -> Check | None:
    facts = given.facts.staging
    if facts is None:
        return None
    if not facts.available:
        return _check("staging-unavailable", WARNING,
                      f"pre-staging (`containerd-migrate stage`) is unavailable: {facts.problem}",
                      "install the containerd package's `ctr` or make the socket "
                      f"{facts.address} reachable; without staging the window includes "
                      "the import of every image")
    held = facts.content_bytes + facts.snapshot_bytes
    return _check("staging-available", INFO,
                  f"pre-staging available: {facts.ctr}, containerd {facts.server_version} at "
                  f"{facts.address} (namespace {facts.namespace}, snapshotter "
                  f"{facts.snapshotter}); that store holds {facts.images} image(s) using about "
                  f"{_size(held)} ({_size(facts.content_bytes)} content, "
                  f"{_size(facts.snapshot_bytes)} snapshots)",
                  "`containerd-migrate stage` before the window makes the window one restart "
                  "plus verification")


def no_images(given: CheckInput) -> Check | None:
    if given.inventory.images:
        return None
    return _check("no-images", INFO, "no images: only the daemon switch is needed")


CHECKS: tuple[Callable[[CheckInput], Check | None], ...] = (
    engine_too_old, unsupported_setup, already_containerd, config_already_switched,
    daemon_config_invalid,
    daemon_config_not_read, daemon_config_symlink, storage_driver_rewrite,
    storage_driver_unmappable,
    storage_driver_flag, feature_flag_conflict, feature_typo, userns_remap,
    external_containerd, live_restore, containers_present, containers_not_recreatable,
    containers_removed_by_stop, reserved_container_name, names_kept_in_containerd, swarm_tasks,
    volumes_only_used_by_containers,
    registry_digests, dangling_images, disk_state_dir, disk_data_root, not_root,
    daemon_config_not_writable, restart_command_unknown, restart_command_fails, start_limit,
    dockerd_rejects_config,
    state_dir_unusable, state_dir_volatile, no_images, staging,
)


def plan_estimate(facts: HostFacts, options: PlanOptions,
                  staged: Collection[str] = ()) -> Estimate:
    """The estimate a plan and its checks use: one rule, the commits included; `staged`:
    legacy IDs of the images this migration staged already."""
    inventory = facts.inventory
    return estimate(inventory, options.throughput_mbps, shared_filesystem=facts.shared_filesystem,
                    staged=staged, last_start_seconds=facts.launch.last_start_seconds,
                    stops_containers=options.containers != "refuse",
                    commit_bytes=commit_bytes(inventory, options.containers),
                    rehearsal=facts.rehearsal)


def evaluate_checks(
    facts: HostFacts, options: PlanOptions, est: Estimate | None = None
) -> tuple[Check, ...]:
    if est is None:
        est = plan_estimate(facts, options)
    given = CheckInput(facts, options, est)
    return tuple(check for fn in CHECKS if (check := fn(given)) is not None)
