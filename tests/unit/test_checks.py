from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from migrate.host.daemon_json import DaemonConfigState
from migrate.host.launch import DaemonLaunch, parse_dockerd_argv
from migrate.models import (
    ContainerRecord,
    EngineInfo,
    ImageRecord,
    Inventory,
    Store,
    VolumeRecord,
    WritableLayer,
)
from migrate.preflight import checks
from migrate.preflight.checks import CHECKS, Check, Severity, evaluate_checks, parse_version
from migrate.preflight.estimate import MB
from migrate.preflight.facts import DockerdVerdict, FilesystemFacts, HostFacts, PlanOptions

pytestmark = pytest.mark.unit

GIB = 1024**3
APP = ImageRecord(id="sha256:" + "a" * 64, tags=("acme/app:1",), diff_ids=("sha256:l1",),
                  layer_sizes=(100 * MB,), size=100 * MB)
CONTAINER = ContainerRecord(id="c1", name="web", image="acme/app:1", image_id=APP.id,
                            state="running")
RM = CONTAINER.model_copy(update={"id": "c3", "name": "oneshot", "auto_remove": True,
                                 "config": {"Image": "acme/app:1"}})
TASK = CONTAINER.model_copy(update={"id": "c4", "name": "svc.1.abc",
                                   "labels": {"com.docker.swarm.task.id": "abc"}})


def facts(
    *,
    engine: dict[str, Any] | None = None,
    inventory: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    launch: DaemonLaunch | None = None,
    state_free: int | None = 100 * GIB,
    data_free: int | None = 100 * GIB,
    same_fs: bool = False,
    is_root: bool = True,
    restart_problem: str | None = None,
    verdict: DockerdVerdict | None = None,
    state_dir_problem: str | None = None,
    state_fs_type: str | None = "ext4",
    restart: tuple[str, ...] = ("systemctl", "restart", "docker"),
    **more: Any,
) -> HostFacts:
    """A host that is ready to migrate, with the given parts changed."""
    eng = EngineInfo.model_validate({
        "version": "26.1.5", "api_version": "1.45", "store": Store.LEGACY, "driver": "overlay2",
        "data_root": "/var/lib/docker", **(engine or {})})
    inv = Inventory.model_validate({
        "taken_at": datetime(2024, 6, 1, tzinfo=UTC), "engine": eng, "images": (APP,),
        **(inventory or {})})
    cfg = DaemonConfigState.model_validate({
        "path": "/etc/docker/daemon.json", "exists": True, "readable": True, "data": {},
        "mode": 0o644, "uid": 0, "gid": 0, "writable": True, **(config or {})})
    return HostFacts(
        inventory=inv,
        daemon_config=cfg,
        launch=launch or parse_dockerd_argv(["dockerd", "-H", "fd://"], source="systemd"),
        state_dir=FilesystemFacts(path="/var/lib/containerd-migrate", free_bytes=state_free,
                                  device=1, fs_type=state_fs_type),
        data_root=FilesystemFacts(path="/var/lib/docker", free_bytes=data_free,
                                  device=1 if same_fs else 2),
        is_root=is_root,
        restart_command=() if restart_problem else restart,
        restart_problem=restart_problem,
        dockerd_verdict=verdict,
        state_dir_problem=state_dir_problem,
        **more,
    )


def run(host: HostFacts, **options: Any) -> dict[str, Check]:
    checks = evaluate_checks(host, PlanOptions(**options))
    ids = [check.id for check in checks]
    assert len(ids) == len(set(ids)), "a check id fired twice"
    return {check.id: check for check in checks}


def severity(host: HostFacts, check_id: str, **options: Any) -> Severity | None:
    check = run(host, **options).get(check_id)
    return None if check is None else check.severity


def test_clean_host_has_no_findings() -> None:
    assert run(facts()) == {}


def test_registry_has_one_function_per_check() -> None:
    """Every public function of the checks module that takes the check context is
    registered, once: a check written and not registered never runs."""
    written = {name for name, fn in inspect.getmembers(checks, inspect.isfunction)
               if fn.__module__ == checks.__name__ and not name.startswith("_")
               and list(inspect.signature(fn).parameters) == ["given"]}
    registered = [fn.__name__ for fn in CHECKS]
    assert len(set(registered)) == len(registered)
    assert written == set(registered)


B, W, INFO = Severity.BLOCKER, Severity.WARNING, Severity.INFO
Case = tuple[str, Callable[[], HostFacts], dict[str, Any], Severity]

CASES: list[Case] = [
    ("engine-too-old", lambda: facts(engine={"version": "23.0.6"}), {}, B),
    ("engine-too-old", lambda: facts(engine={"version": "dev"}), {}, W),
    ("already-containerd", lambda: facts(engine={"store": Store.CONTAINERD}), {}, B),
    ("config-already-switched",
     lambda: facts(config={"containerd_snapshotter": True}), {}, B),
    ("daemon-config-rejected", lambda: facts(verdict=DockerdVerdict(
        dockerd="/usr/bin/dockerd", current="bad attribute format: foo")), {}, B),
    ("target-config-rejected", lambda: facts(verdict=DockerdVerdict(
        dockerd="/usr/bin/dockerd", target="invalid userland-proxy-path")), {}, B),
    ("dockerd-validate-unavailable", lambda: facts(verdict=DockerdVerdict()), {}, W),
    ("state-dir-unusable",
     lambda: facts(state_dir_problem="state dir /x is group-writable (mode 2770)"), {}, B),
    ("daemon-config-invalid",
     lambda: facts(config={"parse_error": "not valid JSON", "data": None}), {}, B),
    ("daemon-config-invalid",
     lambda: facts(config={"problems": ('features.x is the string "true"',)}), {}, B),
    ("daemon-config-symlink",
     lambda: facts(config={"is_symlink": True, "symlink_target": "/srv/d.json"}), {}, B),
    ("daemon-config-not-read",
     lambda: facts(launch=parse_dockerd_argv(["dockerd", "--config-file", "/srv/d.json"],
                                             source="proc")), {}, B),
    ("daemon-config-not-read", lambda: facts(config={"path": "/etc/docker/other.json"}), {}, B),
    ("daemon-config-not-read", lambda: facts(launch=DaemonLaunch()), {}, W),
    ("restart-command", lambda: facts(restart_problem="cannot tell how dockerd is restarted"),
     {}, B),
    ("daemon-config-symlink",
     lambda: facts(config={"is_symlink": True, "symlink_target": "/srv/d.json"}),
     {"follow_symlinks": True}, INFO),
    ("storage-driver-rewrite", lambda: facts(config={"storage_driver": "overlay2"}), {}, INFO),
    ("storage-driver-rewrite", lambda: facts(config={"storage_driver": "vfs"}), {}, W),
    ("storage-driver-rewrite", lambda: facts(engine={"driver": "vfs"}), {}, W),
    ("storage-driver-rewrite", lambda: facts(config={"storage_driver": "btrfs"}),
     {"snapshotter": "overlayfs"}, INFO),
    ("storage-driver-rewrite", facts, {"snapshotter": "native"}, INFO),
    ("storage-driver-unmappable", lambda: facts(config={"storage_driver": "btrfs"}), {}, B),
    ("storage-driver-unmappable", lambda: facts(engine={"driver": "zfs"}), {}, B),
    ("storage-driver-unmappable", facts, {"snapshotter": "overlay2"}, B),
    ("storage-driver-flag",
     lambda: facts(launch=parse_dockerd_argv(["dockerd", "-s", "overlay2"])), {}, B),
    ("storage-driver-flag",
     lambda: facts(launch=parse_dockerd_argv(["dockerd"], {"DOCKER_DRIVER": "overlay2"})), {}, B),
    ("feature-flag-conflict",
     lambda: facts(launch=parse_dockerd_argv(["dockerd", "--feature", "cdi=true"])), {}, B),
    ("feature-typo", lambda: facts(config={"feature_typos": ("containerd-snapshoter",)}), {}, W),
    ("userns-remap", lambda: facts(config={"userns_remap": "default"}), {}, B),
    ("userns-remap",
     lambda: facts(launch=parse_dockerd_argv(["dockerd", "--userns-remap=default"])), {}, B),
    ("userns-remap", lambda: facts(engine={"security_options": ("name=userns",)}), {}, B),
    ("external-containerd",
     lambda: facts(launch=parse_dockerd_argv(["dockerd", "--containerd=/run/c.sock"])), {}, INFO),
    ("external-containerd", lambda: facts(engine={"containerd_address": "/run/c.sock"}), {}, INFO),
    ("live-restore", lambda: facts(engine={"live_restore": True}), {}, INFO),
    ("live-restore",
     lambda: facts(config={"data": {"live-restore": True}},
                   inventory={"containers": (CONTAINER,)}), {"containers": "leave"}, W),
    ("containers-present", lambda: facts(inventory={"containers": (CONTAINER,)}), {}, B),
    ("containers-present", lambda: facts(inventory={"containers": (CONTAINER,)}),
     {"containers": "leave"}, W),
    ("containers-removed-by-stop", lambda: facts(inventory={"containers": (RM,)}),
     {"containers": "leave"}, B),
    ("swarm-tasks", lambda: facts(inventory={"containers": (TASK,)}), {"containers": "leave"}, W),
    ("restart-command-fails", lambda: facts(systemd_booted=False), {}, W),
    ("restart-command-fails",
     lambda: facts(restart=("/opt/bin/restart-docker",), restart_program_found=False), {}, W),
    ("state-dir-volatile", lambda: facts(state_fs_type="tmpfs"), {}, W),
    ("state-dir-volatile", lambda: facts(state_fs_type="ramfs"), {}, W),
    ("volumes-only-used-by-containers",
     lambda: facts(inventory={"volumes": (VolumeRecord(name="db", used_by=("web",)),)}), {}, W),
    ("registry-digests",
     lambda: facts(inventory={"images": (APP.model_copy(
         update={"repo_digests": ("acme/app@sha256:" + "f" * 64,)}),)}), {}, W),
    ("dangling-images",
     lambda: facts(inventory={"images": (APP, APP.model_copy(update={"id": "sha256:d",
                                                                      "tags": ()}))}), {}, INFO),
    # Needs include the 256 MiB reserve the export's pre-check keeps (archives.writing.room_needed).
    ("disk-state-dir", lambda: facts(state_free=300 * MB), {}, B),
    ("disk-state-dir", lambda: facts(state_free=400 * MB), {}, W),
    ("disk-state-dir", lambda: facts(state_free=None), {}, W),
    ("disk-data-root", lambda: facts(data_free=500 * MB), {}, B),
    ("disk-data-root", lambda: facts(data_free=600 * MB), {}, W),
    ("not-root", lambda: facts(is_root=False), {}, B),
    ("daemon-config-not-writable", lambda: facts(config={"writable": False}), {}, B),
    ("no-images", lambda: facts(inventory={"images": ()}), {}, INFO),
]


@pytest.mark.parametrize(("check_id", "make", "options", "expected"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_check_fires(check_id: str, make: Callable[[], HostFacts], options: dict[str, Any],
                     expected: Severity) -> None:
    found = run(make(), **options)
    assert check_id in found, f"{check_id} did not fire: {sorted(found)}"
    assert found[check_id].severity is expected
    assert found[check_id].message and "\n" not in found[check_id].message


@pytest.mark.parametrize(
    ("check_id", "make"),
    [
        ("engine-too-old", lambda: facts(engine={"version": "24.0.0"})),
        ("daemon-config-invalid", lambda: facts(config={"exists": False, "data": None})),
        ("storage-driver-rewrite", lambda: facts(config={"storage_driver": "overlayfs"})),
        ("storage-driver-unmappable", lambda: facts(config={"storage_driver": "btrfs"})),
        ("feature-flag-conflict", lambda: facts(launch=parse_dockerd_argv(["dockerd", "-D"]))),
        ("config-already-switched",
         lambda: facts(engine={"store": Store.CONTAINERD},
                       config={"containerd_snapshotter": True})),
        ("live-restore", lambda: facts(config={"data": {"live-restore": False}})),
        # Engine 28 reports the containerd it manages itself, under daemon.json's exec-root.
        ("external-containerd",
         lambda: facts(engine={"containerd_address": "/run/e/containerd/containerd.sock"},
                       config={"data": {"exec-root": "/run/e"}})),
        ("disk-state-dir", lambda: facts(state_free=10 * MB, same_fs=True, data_free=10 * GIB)),
        # Stopping a stopped --rm container deletes nothing.
        ("containers-removed-by-stop",
         lambda: facts(inventory={"containers": (RM.model_copy(update={"state": "exited"}),)})),
        # systemd is not needed by another restart command; `service` works with init.d.
        ("restart-command-fails",
         lambda: facts(restart=("service", "docker", "restart"), systemd_booted=False)),
        ("state-dir-volatile", lambda: facts(state_fs_type=None)),
    ],
)
def test_check_stays_quiet(check_id: str, make: Callable[[], HostFacts]) -> None:
    assert check_id not in run(make(), snapshotter="btrfs" if "unmappable" in check_id else None)


def test_unmappable_hint_names_the_override() -> None:
    check = run(facts(config={"storage_driver": "devicemapper"}))["storage-driver-unmappable"]
    assert "devmapper" in check.hint


def test_storage_driver_flag_details_list_sources() -> None:
    launch = parse_dockerd_argv(["dockerd", "-svfs"], {"DOCKER_DRIVER": "overlay2"})
    launch = launch.model_copy(update={"unit_files": ("/etc/systemd/system/docker.service",)})
    check = run(facts(launch=launch))["storage-driver-flag"]
    assert check.details == ("dockerd flag --storage-driver vfs",
                             "environment DOCKER_DRIVER=overlay2",
                             "unit file: /etc/systemd/system/docker.service")


@pytest.mark.parametrize("launch", [
    ["dockerd", "--containerd=/run/c.sock", "--containerd-namespace", "ns"],
    ["dockerd"],  # both as daemon.json keys: Engine 26 reports no containerd address
])
def test_external_containerd_names_the_socket_and_namespace_dockerd_uses(
        launch: list[str]) -> None:
    data = {} if len(launch) > 1 else {"containerd": "/run/c.sock", "containerd-namespace": "ns"}
    check = run(facts(launch=parse_dockerd_argv(launch), config={"data": data}))
    assert "dockerd uses the containerd at /run/c.sock (namespace ns)" in (
        check["external-containerd"].message)


def test_containers_blocker_lists_them() -> None:
    stopped = CONTAINER.model_copy(update={"id": "c2", "name": "old", "state": "exited"})
    check = run(facts(inventory={"containers": (CONTAINER, stopped)}))["containers-present"]
    assert check.details == ("web (running, image acme/app:1)", "old (exited, image acme/app:1)")
    assert "1 running" in check.message


def test_volumes_unused_are_not_listed() -> None:
    volumes = (VolumeRecord(name="db", used_by=("web",)), VolumeRecord(name="cache"))
    check = run(facts(inventory={"volumes": volumes}))["volumes-only-used-by-containers"]
    assert check.details == ("db (used by web)",)


def test_shared_filesystem_adds_needs() -> None:
    # Apart: archive ~100 MB on the state dir, staging + 2x store ~300 MB on the data root,
    # each plus the 268 MB reserve.
    assert severity(facts(data_free=650 * MB), "disk-data-root") is Severity.WARNING
    shared = run(facts(data_free=650 * MB, same_fs=True))
    assert shared["disk-data-root"].severity is Severity.BLOCKER
    assert "same filesystem" in shared["disk-data-root"].message
    assert "disk-state-dir" not in shared


def test_blockers_accumulate() -> None:
    host = facts(engine={"version": "20.10.24"}, is_root=False, config={"writable": False})
    blockers = [c.id for c in evaluate_checks(host, PlanOptions())
                if c.severity is Severity.BLOCKER]
    assert blockers == ["engine-too-old", "not-root", "daemon-config-not-writable"]


@pytest.mark.parametrize(("text", "expected"), [("26.1.5", (26, 1)), ("v24.0.0-rc.1", (24, 0)),
                                                ("28.5.2+dfsg1", (28, 5)), ("dev", None)])
def test_parse_version(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize("launch", [
    ["dockerd", "--config-file", "/etc/docker/daemon.json"],
    ["dockerd", "--config-file=/etc/docker/./daemon.json"],
    ["dockerd", "-H", "fd://"],  # no --config-file: dockerd reads its default
])
def test_daemon_config_read_by_dockerd_is_not_a_finding(launch: list[str]) -> None:
    assert "daemon-config-not-read" not in run(facts(launch=parse_dockerd_argv(launch,
                                                                              source="proc")))


def test_daemon_config_symlink_to_the_file_dockerd_reads_matches() -> None:
    host = facts(config={"path": "/etc/docker/daemon.json", "is_symlink": True,
                         "symlink_target": "/srv/d.json"},
                 launch=parse_dockerd_argv(["dockerd", "--config-file", "/srv/d.json"],
                                           source="proc"))
    assert "daemon-config-not-read" not in run(host, follow_symlinks=True)


def test_daemon_config_mismatch_names_the_file_dockerd_reads() -> None:
    check = run(facts(launch=parse_dockerd_argv(["dockerd", "--config-file", "/srv/d.json"],
                                                source="proc")))["daemon-config-not-read"]
    assert "/srv/d.json" in check.message and "--daemon-config /srv/d.json" in check.hint


def test_dev_null_config_with_no_daemon_json_is_a_warning() -> None:
    host = facts(config={"exists": False, "data": None},
                 launch=parse_dockerd_argv(["dockerd", "--config-file", "/dev/null"],
                                           source="proc"))
    assert severity(host, "daemon-config-not-read") is Severity.WARNING


def test_containers_blocker_names_every_way_out() -> None:
    hint = run(facts(inventory={"containers": (CONTAINER,)}))["containers-present"].hint
    assert hint.index("--containers recreate") < hint.index("--containers leave")
    assert "remove them" in hint


@pytest.mark.parametrize("policy", ["leave", "refuse"])
def test_running_auto_remove_container_blocks_every_policy_that_stops_it(policy: str) -> None:
    found = run(facts(inventory={"containers": (RM, CONTAINER)}), containers=policy)
    check = found["containers-removed-by-stop"]
    assert check.details == ("oneshot: it runs with --rm (auto-remove): stopping it for the "
                             "switch would delete it and its anonymous volumes",)
    assert "without --rm" in check.hint


def test_running_auto_remove_container_under_recreate_is_blocked_once() -> None:
    found = run(facts(inventory={"containers": (RM,)}), containers="recreate")
    assert "containers-removed-by-stop" not in found
    assert "--rm" in found["containers-not-recreatable"].details[0]


def test_swarm_tasks_warning_names_them_only_under_leave() -> None:
    host = facts(inventory={"containers": (TASK, CONTAINER)})
    assert run(host, containers="leave")["swarm-tasks"].details == ("svc.1.abc",)
    assert "swarm-tasks" not in run(host, containers="recreate")
    assert "swarm-tasks" not in run(host)


def test_restart_command_fails_says_why() -> None:
    check = run(facts(systemd_booted=False))["restart-command-fails"]
    assert "systemd is not running this host" in check.message
    assert "--restart-command" in check.hint
    missing = run(facts(restart=("rc-service", "docker", "restart"),
                        restart_program_found=False))["restart-command-fails"]
    assert "`rc-service` is not found on PATH" in missing.message


def test_volatile_state_dir_says_what_a_reboot_loses() -> None:
    check = run(facts(state_fs_type="tmpfs"))["state-dir-volatile"]
    assert "tmpfs" in check.message and "original daemon.json" in check.message


def test_disk_message_says_how_much_of_the_need_is_the_fixed_reserve() -> None:
    small = run(facts(state_free=300 * MB))["disk-state-dir"].message
    assert small.startswith("/var/lib/containerd-migrate: 286.1 MiB free, 351.4 MiB needed "
                            "for the export archives (most of it the fixed 256.0 MiB reserve)")
    big = facts(inventory={"images": (APP.model_copy(update={"layer_sizes": (2 * GIB,),
                                                             "size": 2 * GIB}),)},
                state_free=GIB)
    assert "(including a fixed 256.0 MiB reserve)" in run(big)["disk-state-dir"].message


def test_the_disk_checks_count_the_writable_layers_recreate_commits() -> None:
    """Hostile round 3, item 6: a 315 MB writable layer on a small state dir passed plan,
    then the commit phase ran out of room."""
    changed = CONTAINER.model_copy(update={"writable_layer": WritableLayer(
        added=1, size_bytes=315 * MB)})
    host = facts(inventory={"containers": (changed,)}, state_free=400 * 1024 * 1024,
                 data_free=100 * GIB)
    by_policy = {policy: {c.id: c.severity for c in evaluate_checks(
        host, PlanOptions(containers=policy))} for policy in ("recreate", "leave")}
    assert by_policy["recreate"].get("disk-state-dir") == "blocker"
    assert by_policy["leave"].get("disk-state-dir") != "blocker"


def test_a_container_named_like_the_volume_guard_blocks_recreate() -> None:
    """Hostile round 3, item 7: found after the switch, it stranded every service."""
    named = CONTAINER.model_copy(update={"name": "containerd-migrate-volume-guard"})
    host = facts(inventory={"containers": (named,)})
    recreate = {c.id: c for c in evaluate_checks(host, PlanOptions(containers="recreate"))}
    assert recreate["reserved-container-name"].severity == "blocker"
    assert "docker rename" in recreate["reserved-container-name"].hint
    leave = {c.id for c in evaluate_checks(host, PlanOptions(containers="leave"))}
    assert "reserved-container-name" not in leave


def test_archives_already_written_need_no_room_again() -> None:
    """Hostile round 3, item 19: after an export stopped on a full disk and space was
    freed, the archive already written counts for what it is."""
    short = facts(state_free=300 * MB)
    credited = short.model_copy(update={"archives_written_bytes": 100 * MB})
    before = {c.id: c for c in evaluate_checks(short, PlanOptions())}
    after = {c.id: c for c in evaluate_checks(credited, PlanOptions())}
    assert before["disk-state-dir"].severity == "blocker"
    assert after.get("disk-state-dir") is None or after["disk-state-dir"].severity != "blocker"
