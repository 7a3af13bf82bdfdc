"""The inventory's fast reads: the plain unix-socket GETs and the empty-upper-dir shortcut
answer exactly what the daemon's own `docker diff` and inspect answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from migrate.engine import Engine
from migrate.engine.legacy_store import LayerSizes, image_folder
from migrate.models import EngineInfo, ImageRecord
from migrate.sandbox import SampleHost, Sandbox, SandboxFactory, docker, sandbox_samples
from migrate.sandbox.layers import ArchiveImage, load_images, random_layer
from tests.engine.cli import cli

pytestmark = pytest.mark.engine


@pytest.mark.parametrize("engine", ["26", "28"])
def test_untouched_container_needs_no_diff_and_changes_are_still_seen(
    fresh_sandbox: SandboxFactory, tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    sandbox = fresh_sandbox(engine, samples=True)
    base = sandbox_samples(sandbox).base_image
    docker(sandbox.host, "create", "--name", "untouched", base, "true")
    docker(sandbox.host, "create", "--name", "touched", base, "true")
    added = tmp_path / "added.txt"
    added.write_text("new\n")
    docker(sandbox.host, "cp", str(added), "touched:/added.txt")

    asked: list[str] = []
    with Engine(sandbox.host) as engine_api:
        original = engine_api._get_json

        def counting(path: str, params: Any = None) -> Any:
            asked.append(path)
            return original(path, params)

        monkeypatch.setattr(engine_api, "_get_json", counting)
        records = {c.name: c for c in engine_api.list_containers()}
        assert engine_api.raw_image("no-such-image:1") is None
        assert engine_api.raw_image(base) is not None

    by_id = {c.id: c.name for c in records.values()}
    diffed = {by_id[p.split("/")[2]] for p in asked if p.endswith("/changes")}
    assert "untouched" not in diffed, "an empty upper dir needs no docker diff"
    assert "touched" in diffed
    untouched, touched = records["untouched"].writable_layer, records["touched"].writable_layer
    assert untouched is not None and (untouched.added, untouched.changed, untouched.deleted) \
        == (0, 0, 0)
    assert touched is not None and touched.added == 1
    # The same answer as the daemon's own diff, which the shortcut skipped.
    assert docker(sandbox.host, "diff", "untouched").stdout.strip() == ""


def test_layer_sizes_from_the_layer_store_equal_what_history_says(
    engine_sandbox: Sandbox, sample_host: SampleHost, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Engine(engine_sandbox.host) as engine:
        info = engine.info()
        original = engine._get_json
        asked: list[str] = []

        def counting(path: str, params: Any = None) -> Any:
            asked.append(path)
            return original(path, params)

        monkeypatch.setattr(engine, "_get_json", counting)
        from_disk = {i.id: i for i in engine.list_images(info)}
        assert not [p for p in asked if p.endswith("/history")], "sizes came from history"
        from_history = {i.id: i for i in engine.list_images()}
        assert [p for p in asked if p.endswith("/history")]
    assert from_disk.keys() == from_history.keys() >= set(sample_host.image_ids.values())
    for image_id, image in from_history.items():
        assert from_disk[image_id].layer_sizes == image.layer_sizes, image.tags
    big = next(i for i in from_disk.values() if sample_host.big_image in i.tags)
    assert max(big.layer_sizes) >= sample_host.big_layer_bytes


def _inspected_images(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The image inspects `engine` makes from now on (the disk path's fall-backs)."""
    original = engine._get_json
    asked: list[str] = []

    def counting(path: str, params: Any = None) -> Any:
        if path.startswith("/images/sha256:") and path.endswith("/json"):
            asked.append(path.split("/")[2])
        return original(path, params)

    monkeypatch.setattr(engine, "_get_json", counting)
    return asked


def _inspected_records(engine: Engine, info: EngineInfo) -> dict[str, ImageRecord]:
    """Every image as its inspect answer says, with the same layer sizes `list_images`
    reads: what the records read from disk must equal."""
    layerdb = image_folder(info, "layerdb", "sha256")
    assert layerdb is not None, "the sandbox's layer store is readable"
    records = [engine.inspect_image(image_id, layer_sizes=LayerSizes(layerdb))
               for image_id in engine.image_tags()]
    return {r.id: r for r in records if r is not None}


def test_image_configs_read_from_disk_equal_what_inspect_says(
    engine_sandbox: Sandbox, sample_host: SampleHost, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Engine(engine_sandbox.host) as engine:
        info = engine.info()
        inspected = _inspected_images(engine, monkeypatch)
        from_disk = {i.id: i for i in engine.list_images(info)}
        assert inspected == [], "every sample image's config was read from disk"
        from_api = _inspected_records(engine, info)
    assert from_disk.keys() >= set(sample_host.image_ids.values())
    assert from_disk == from_api


@pytest.mark.parametrize("engine", ["26", "28"])
def test_unusual_image_configs_from_disk_equal_inspect_or_are_inspected(
    fresh_sandbox: SandboxFactory, tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Go re-formats `created` (fraction without trailing zeros, a zero offset as Z), takes
    `env` for `Env` and an empty `os` for linux: the disk reader matches the first and
    leaves the others to the daemon."""
    sandbox = fresh_sandbox(engine, samples=False)
    layer = random_layer(tmp_path, "odd", 4096)
    odd = {
        "cm-odd/zero-offset:1": (("created", "2024-05-06T07:08:09.120000000+00:00"),),
        "cm-odd/plus-two:1": (("created", "2024-05-06T09:08:09.5+02:00"),),
        "cm-odd/lower-env:1": (("config", {"env": ["A=1"], "Cmd": ["sh"]}),),
        "cm-odd/no-created:1": (("created", None),),
        "cm-odd/empty-os:1": (("os", ""),),
    }
    load_images(sandbox.host, [ArchiveImage(tags=(tag,), layers=(layer,), config=config)
                               for tag, config in odd.items()])
    with Engine(sandbox.host) as engine_api:
        info = engine_api.info()
        inspected = _inspected_images(engine_api, monkeypatch)
        from_disk = {i.tags[0]: i for i in engine_api.list_images(info)}
        from_api = {i.tags[0]: i for i in _inspected_records(engine_api, info).values()}
    assert from_disk == from_api
    assert from_api["cm-odd/zero-offset:1"].created == "2024-05-06T07:08:09.12Z"
    assert from_api["cm-odd/plus-two:1"].created == "2024-05-06T09:08:09.5+02:00"
    assert from_api["cm-odd/lower-env:1"].config.env == ("A=1",)
    left_to_daemon = {from_api[tag].id for tag in
                      ("cm-odd/lower-env:1", "cm-odd/no-created:1", "cm-odd/empty-os:1")}
    assert set(inspected[:3]) == left_to_daemon and len(inspected) == 3 + len(odd)


def test_plan_on_a_local_daemon_loads_neither_the_sdk_nor_structlog(
    engine_sandbox: Sandbox, sample_host: SampleHost, tmp_path: Path,
) -> None:
    """Their imports were a third of `plan` on a big host; reads need neither."""
    done = cli(engine_sandbox, tmp_path / "state", "plan", "--format", "json",
               "--containers", "leave", env={"PYTHONPROFILEIMPORTTIME": "1"})
    report = json.loads(done.stdout)
    assert {i["id"] for i in report["images"]} >= set(sample_host.image_ids.values())
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "migrate.engine.client" in imported, "the import log is read"
    assert not imported & {"docker", "requests", "urllib3", "structlog", "tqdm", "rich"}
