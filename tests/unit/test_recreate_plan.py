"""Recreate's pure parts: the container spec from inspect, the order, the create body, the plan."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from migrate.engine.convert import container_record, writable_layer
from migrate.models import ContainerRecord, EngineInfo, ImageRecord, Inventory, Store
from migrate.phases.quiesce import in_levels
from migrate.phases.records import QuiesceUndo
from migrate.phases.recreate import (
    RECREATED_LABEL,
    create_body,
    first_stopped_first,
    image_for,
)
from migrate.preflight.containers import (
    DAEMON_STOP_TIMEOUT,
    creation_order,
    dependency_levels,
    recreate_plan,
    stop_timeout,
)

pytestmark = pytest.mark.unit

OLD_IMAGE = "sha256:" + "a" * 64
NEW_IMAGE = "sha256:" + "b" * 64


def _inspect(cid: str, name: str, *, host: dict[str, Any] | None = None,
             labels: dict[str, str] | None = None, networks: dict[str, Any] | None = None,
             mounts: list[dict[str, Any]] | None = None, state: str = "running") -> dict[str, Any]:
    return {
        "Id": cid, "Name": f"/{name}", "Image": OLD_IMAGE, "State": {"Status": state},
        "Config": {"Image": "app:1", "Hostname": cid[:12], "Env": ["A=1"],
                   "Cmd": ["sleep", "1"], "Labels": labels or {},
                   "ExposedPorts": {"80/tcp": {}}},
        "HostConfig": {"NetworkMode": "rcnet", "RestartPolicy": {"Name": "always"},
                       "Binds": ["data:/data"], **(host or {})},
        "NetworkSettings": {"Networks": networks or {}},
        "Mounts": mounts or [],
    }


def _record(cid: str, name: str, **kwargs: Any) -> ContainerRecord:
    inspect = _inspect(cid, name, **kwargs)
    return container_record({"Id": cid, "Names": [f"/{name}"], "State": "running"}, inspect)


def _id(char: str) -> str:
    return char * 64


def test_inspect_becomes_a_typed_spec_with_the_raw_config() -> None:
    record = _record(_id("1"), "web", host={"Links": ["/db:/web/db"],
                                            "VolumesFrom": ["store:ro"],
                                            "Devices": [{"PathOnHost": "/dev/fuse"}],
                                            "AutoRemove": True, "Runtime": "runc"},
                     networks={"rcnet": {"IPAMConfig": {"IPv4Address": "10.0.0.5"},
                                         "Aliases": ["web-alias"], "IPAddress": "10.0.0.5"},
                               "bridge": {"IPAddress": "172.17.0.2"}})
    assert record.restart_policy == "always"
    assert record.links == ("/db:/web/db",) and record.volumes_from == ("store:ro",)
    assert record.devices == ("/dev/fuse",) and record.auto_remove
    assert [n.network for n in record.networks] == ["rcnet"]  # built-in networks left out
    assert record.networks[0].ipv4_address == "10.0.0.5"
    assert record.config["Env"] == ["A=1"] and record.detailed


def test_writable_layer_ignores_mount_points_but_not_real_changes() -> None:
    diff = [{"Path": "/data", "Kind": 1}, {"Path": "/srv", "Kind": 0},
            {"Path": "/srv/data", "Kind": 1}, {"Path": "/etc", "Kind": 0},
            {"Path": "/etc/group", "Kind": 2}, {"Path": "/new.txt", "Kind": 1}]
    layer = writable_layer(diff, 12, ["/data", "/srv/data"])
    assert layer is not None
    assert (layer.added, layer.changed, layer.deleted, layer.size_bytes) == (1, 1, 1, 12)
    only_mounts = writable_layer([{"Path": "/data", "Kind": 1}], None, ["/data"])
    assert only_mounts is not None and only_mounts.paths == 0
    assert writable_layer(None, None) is None


def test_order_respects_links_network_volumes_from_and_compose_depends_on() -> None:
    db = _record(_id("1"), "zz-db", labels={"com.docker.compose.project": "p",
                                            "com.docker.compose.service": "db"})
    app = _record(_id("2"), "aa-app", labels={"com.docker.compose.project": "p",
                                              "com.docker.compose.service": "app",
                                              "com.docker.compose.depends_on":
                                                  "db:service_started:false"})
    side = _record(_id("3"), "side", host={"NetworkMode": f"container:{_id('4')}"})
    net = _record(_id("4"), "zz-net", host={"Links": ["/zz-db:/zz-net/db"]})
    reader = _record(_id("5"), "a-reader", host={"VolumesFrom": [f"{_id('1')[:12]}:ro"]})
    order = [c.name for c in creation_order([app, side, net, reader, db])]
    assert order.index("zz-db") < order.index("aa-app")
    assert order.index("zz-db") < order.index("zz-net") < order.index("side")
    assert order.index("zz-db") < order.index("a-reader")


def test_create_body_rewrites_ids_keeps_volumes_and_networks() -> None:
    short = _id("9")[:12]
    sidecar = _record(_id("3"), "side", host={"NetworkMode": f"container:{_id('4')}",
                                              "VolumesFrom": [f"{_id('4')}:ro"]})
    body = create_body(sidecar, "app:1", {_id("4"): _id("8")}, {})
    assert body["HostConfig"]["NetworkMode"] == f"container:{_id('8')}"
    assert body["HostConfig"]["VolumesFrom"] == [f"{_id('8')}:ro"]
    # The engine refuses these next to container: mode and fills them in itself.
    assert "Hostname" not in body and "ExposedPorts" not in body
    assert body["NetworkingConfig"] == {"EndpointsConfig": {}}

    web = _record(_id("9"), "web", labels={"com.docker.compose.image": OLD_IMAGE},
                  networks={"rcnet": {"IPAMConfig": {"IPv4Address": "10.0.0.5"},
                                      "Aliases": ["alpha", short], "IPAddress": "10.0.0.5"}},
                  mounts=[{"Type": "volume", "Name": "data", "Destination": "/data",
                           "RW": True},
                          {"Type": "volume", "Name": "c0ffee", "Destination": "/anon",
                           "RW": False}])
    body = create_body(web, "app:1", {}, {OLD_IMAGE: NEW_IMAGE})
    assert body["Image"] == "app:1" and body["Hostname"] == short
    assert body["Labels"] == {"com.docker.compose.image": NEW_IMAGE, RECREATED_LABEL: _id("9")}
    assert body["HostConfig"]["Binds"] == ["data:/data"]
    # The anonymous volume is mounted again by name, not replaced by a fresh one.
    assert body["HostConfig"]["Mounts"] == [{"Type": "volume", "Source": "c0ffee",
                                             "Target": "/anon", "ReadOnly": True}]
    assert body["NetworkingConfig"]["EndpointsConfig"]["rcnet"] == {
        "IPAMConfig": {"IPv4Address": "10.0.0.5"}, "Aliases": ["alpha"], "Links": None,
        "DriverOpts": None}


def test_image_is_the_commit_when_there_is_one() -> None:
    web = _record(_id("9"), "web")
    assert image_for(web, {}, {OLD_IMAGE: NEW_IMAGE}) == NEW_IMAGE
    assert image_for(web, {web.id: "containerd-migrate/commit:x"}, {}) == \
        "containerd-migrate/commit:x"
    assert image_for(web, {}, {}) is None


def _inventory(*containers: ContainerRecord) -> Inventory:
    engine = EngineInfo(version="28.5.2", api_version="1.51", store=Store.LEGACY,
                        driver="overlay2", data_root="/var/lib/docker")
    return Inventory(taken_at=datetime.now(UTC), engine=engine,
                     images=(ImageRecord(id=OLD_IMAGE, tags=("app:1",)),),
                     containers=containers)


def test_plan_blocks_what_recreate_cannot_carry_and_says_what_it_does() -> None:
    ok = _record(_id("1"), "ok", networks={"rcnet": {"Aliases": ["alpha"],
                                                     "IPAMConfig": {"IPv4Address": "10.0.0.5"}}})
    ok = ok.model_copy(update={"has_changes": False})
    rm = _record(_id("2"), "rm", host={"AutoRemove": True})
    orphan = _record(_id("3"), "orphan", host={"NetworkMode": "container:gone"})
    swarm = _record(_id("4"), "task", labels={"com.docker.swarm.task.id": "t1"})
    foreign = _record(_id("5"), "foreign").model_copy(update={"image_id": "sha256:" + "f" * 64})
    plans = {p.name: p for p in recreate_plan(_inventory(ok, rm, orphan, swarm, foreign))}
    assert plans["ok"].blockers == ()
    assert plans["ok"].actions[0] == "create from app:1"
    assert "attach to rcnet, aliases alpha, IP 10.0.0.5" in plans["ok"].actions
    assert not any("commit" in action for action in plans["ok"].actions)
    assert plans["ok"].actions[-1].startswith("start it")
    assert "auto-remove" in plans["rm"].blockers[0]
    assert "gone" in plans["orphan"].blockers[0]
    assert "swarm" in plans["task"].blockers[0]
    assert "not among the images to move" in plans["foreign"].blockers[0]


def test_ipc_and_pid_namespaces_follow_their_owner_and_order_the_creation() -> None:
    owner = _record(_id("5"), "zz-owner")
    joiner = _record(_id("6"), "a-joiner", host={"IpcMode": f"container:{_id('5')}",
                                                 "PidMode": "container:zz-owner"})
    order = [c.name for c in creation_order([joiner, owner])]
    assert order == ["zz-owner", "a-joiner"]
    body = create_body(joiner, "app:1", {_id("5"): _id("7")}, {}, "m-1")
    assert body["HostConfig"]["IpcMode"] == f"container:{_id('7')}"
    assert body["HostConfig"]["PidMode"] == "container:zz-owner"  # by name: the name stays
    assert body["Labels"]["io.containerd-migrate.migration"] == "m-1"


def test_levels_hold_what_can_run_at_once_and_flatten_to_the_creation_order() -> None:
    db = _record(_id("1"), "db")
    cache = _record(_id("2"), "cache")
    app = _record(_id("3"), "app", host={"Links": ["/db:/app/db", "/cache:/app/cache"]})
    side = _record(_id("4"), "side", host={"NetworkMode": "container:app"})
    levels = [[c.name for c in level] for level in dependency_levels([side, app, db, cache])]
    assert levels == [["cache", "db"], ["app"], ["side"]]
    assert [c.name for c in creation_order([side, app, db, cache])] == \
        [name for level in levels for name in level]


def test_a_level_comes_back_in_the_order_it_was_stopped_and_the_stopped_ones_first() -> None:
    names = ("a", "b", "c", "d", "e")
    a, b, c, d, e = (_record(_id(str(n)), name) for n, name in enumerate(names, 1))
    stopped_at = {c.id: "2026-12-05T11:00:00.100000+00:00",
                  a.id: "2026-12-05T11:00:00.300000+00:00",
                  e.id: "2026-12-05T11:00:01.000000+00:00"}
    # b and d were not running: nothing waits for them, they come last, by name.
    assert [x.name for x in first_stopped_first([a, b, c, d, e], stopped_at)] == \
        ["c", "a", "e", "b", "d"]
    assert [x.name for x in first_stopped_first([e, d], {})] == ["d", "e"]


def test_stop_timeout_is_the_containers_own_else_the_default() -> None:
    web = _record(_id("1"), "web")
    assert stop_timeout(web) == DAEMON_STOP_TIMEOUT == 10
    assert stop_timeout(web, 7) == 7
    for own, expected in ((30, 30), (0, 0), (-1, 10), (True, 10), ("5", 10)):
        config = {**web.config, "StopTimeout": own}
        assert stop_timeout(web.model_copy(update={"config": config})) == expected, own


def test_quiesce_groups_entries_by_level_and_old_entries_one_by_one() -> None:
    # As journaled: 0.1.0 wrote no level.
    entries = QuiesceUndo.model_validate({"containers": [
        {"id": "a", "level": 0}, {"id": "b", "level": 0}, {"id": "c", "level": 1},
        {"id": "d"}, {"id": "e"}]}).containers
    assert [[e.id for e in level] for level in in_levels(entries)] == \
        [["a", "b"], ["c"], ["d"], ["e"]]
