"""Answers of the wrong shape (a string where the API has a list, ...) from whatever
answers on the daemon's socket: one error naming the answer and the field, never a
ValueError or a traceback (issue 23 item 14)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.errors import ExitCode
from tests.unit.fake_api import CONTAINER_ID, IMAGE_ID, fake_api, populated_daemon

pytestmark = pytest.mark.unit

Change = Callable[[dict[str, Any]], None]


def _set(path: str, *keys: str | int, value: Any) -> Change:
    def change(routes: dict[str, Any]) -> None:
        target = routes[path]
        for key in keys[:-1]:
            target = target[key]
        if keys:
            target[keys[-1]] = value
        else:
            routes[path] = value
    return change


IMAGE = f"/images/{IMAGE_ID}/json"
CONTAINER = f"/containers/{CONTAINER_ID}/json"

WRONG_SHAPES: dict[str, tuple[Change, str]] = {
    "driver-status-a-string": (_set("/info", "DriverStatus", value="overlay2"),
                               "DriverStatus"),
    "info-a-list": (_set("/info", value=["Driver", "overlay2"]), "/info"),
    "version-a-string": (_set("/version", value="26.1"), "/version"),
    "security-options-a-string": (_set("/info", "SecurityOptions", value="name=seccomp"),
                                  "SecurityOptions"),
    "images-a-string": (_set("/images/json", value="app:1"), "/images/json"),
    "image-without-id": (_set("/images/json", 0, "Id", value=None), "Id"),
    "repo-tags-a-string": (_set(IMAGE, "RepoTags", value="app:1"), "RepoTags"),
    "layers-a-string": (_set(IMAGE, "RootFS", "Layers", value="sha256:1"), "Layers"),
    "env-a-string": (_set(IMAGE, "Config", "Env", value="A=1"), "Env"),
    "size-a-word": (_set(IMAGE, "Size", value="big"), "Size"),
    "history-a-dict": (_set(f"/images/{IMAGE_ID}/history", value={"Size": 1}), "history"),
    "names-a-string": (_set("/containers/json", 0, "Names", value="/web"), "Names"),
    "mounts-a-string": (_set("/containers/json", 0, "Mounts", value="/data"), "Mounts"),
    "links-a-string": (_set(CONTAINER, "HostConfig", "Links", value="db:db"), "Links"),
    "networks-a-list": (_set(CONTAINER, "NetworkSettings", "Networks", value=["bridge"]),
                        "Networks"),
    "labels-a-list": (_set(CONTAINER, "Config", "Labels", value=["a=b"]), "Labels"),
    "changes-a-string": (_set(f"/containers/{CONTAINER_ID}/changes", value="/etc"),
                         "changes"),
    "volumes-a-string": (_set("/volumes", "Volumes", value="data"), "Volumes"),
}


def _run(tmp_path: Path, change: Change | None, *args: str) -> tuple[int, str]:
    routes = populated_daemon(tmp_path / "data-root")
    if change is not None:
        change(routes)
    with fake_api(tmp_path, routes) as api:
        result = CliRunner().invoke(main, [
            "-q", "--host", api.host, "--daemon-config", str(tmp_path / "daemon.json"),
            "--state-dir", str(tmp_path / "state"), *args])
    assert "Traceback" not in result.output and (
        result.exception is None or isinstance(result.exception, SystemExit)), result.output
    return result.exit_code, result.output


def test_plan_reads_a_well_formed_fake_daemon(tmp_path: Path) -> None:
    code, output = _run(tmp_path, None, "plan", "--restart-command", "true")
    assert code in (ExitCode.OK, ExitCode.BLOCKED), output
    assert "app:1" in output and "web" in output, output


@pytest.mark.parametrize("case", sorted(WRONG_SHAPES))
def test_plan_names_the_wrong_field(tmp_path: Path, case: str) -> None:
    change, field = WRONG_SHAPES[case]
    code, output = _run(tmp_path, change, "plan", "--restart-command", "true")
    assert code == ExitCode.ERROR, output
    error, hint = output.strip().splitlines()
    assert error.startswith("error: the Docker daemon's answer to ") and field in error, error
    assert "docker version" in hint


@pytest.mark.parametrize("command", ["export", "stage", "run"])
def test_commands_that_snapshot_name_the_wrong_field(tmp_path: Path, command: str) -> None:
    change, field = WRONG_SHAPES["driver-status-a-string"]
    extra = ("--yes",) if command == "run" else ()
    code, output = _run(tmp_path, change, command, "--restart-command", "true", *extra)
    assert code == ExitCode.ERROR, output
    assert "does not have the shape of the Docker API" in output and field in output, output
