"""The engine's read seam (transport.Reads): what the operator reads when the answer is
garbled, which error status means "removed", and the SDK's implementation of the reads."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.engine.client import Engine
from migrate.engine.sdk_reads import SdkReads
from migrate.engine.transport import MiB, ReadFailed, ReadNotFound
from migrate.errors import EngineError, EngineUnreachable, ExitCode
from tests.unit.fake_api import CONTAINER_ID, fake_api, json_answer, populated_daemon
from tests.unit.memory_engine import memory_engine

pytestmark = pytest.mark.unit


def _not_http(conn: socket.socket) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")


def test_a_garbled_answer_is_reported_as_such(tmp_path: Path) -> None:
    routes = populated_daemon(tmp_path / "root")
    routes["/info"] = _not_http
    with fake_api(tmp_path, routes) as api:
        result = CliRunner().invoke(main, [
            "-q", "--host", api.host, "--daemon-config", str(tmp_path / "daemon.json"),
            "--state-dir", str(tmp_path / "state"), "plan", "--restart-command", "true"])
    assert result.exit_code == ExitCode.ERROR, result.output  # not 5: something answered
    error, hint = result.output.strip().splitlines()
    assert error.startswith(f"error: {api.host} sent a garbled answer while trying to read "
                            "`docker info`: the daemon's answer is not HTTP"), error
    assert "cannot reach" not in error
    assert hint.startswith("hint: check that --host is a Docker daemon")


@pytest.mark.parametrize(("status", "removed"), [("404 Not Found", True),
                                                 ("500 Internal Server Error", False)])
def test_only_a_404_means_the_container_was_removed(tmp_path: Path, status: str,
                                                     removed: bool) -> None:
    routes = populated_daemon(tmp_path / "root")
    answer = json_answer({"message": "boom"}, status)
    routes[f"/containers/{CONTAINER_ID}/json"] = lambda conn: conn.sendall(answer)
    with fake_api(tmp_path, routes) as api, Engine(api.host, timeout=5) as engine:
        if removed:
            (container,) = engine.list_containers()
            assert container.id == CONTAINER_ID  # kept with what the list said
        else:
            with pytest.raises(EngineError, match=r"refused to inspect containers/.*: boom"):
                engine.list_containers()


class _Response:
    def __init__(self, status: int, body: bytes, pace: float = 0.0):
        self.status_code = status
        self._body = body
        self._pace = pace
        self.closed = False

    def iter_content(self, size: int) -> Iterator[bytes]:
        for start in range(0, len(self._body), size):
            if self.closed:
                raise ConnectionError("closed")
            time.sleep(self._pace)
            yield self._body[start:start + size]

    def close(self) -> None:
        self.closed = True


class _Api:
    """The few private SDK calls SdkReads makes, answering from a table of
    (status, body, seconds per chunk)."""

    def __init__(self, routes: dict[str, tuple[int, bytes, float]]):
        self.routes = routes

    def _url(self, template: str, path: str) -> str:
        return template.format(path)

    def _get(self, url: str, params: Any = None, stream: bool = False) -> _Response:
        assert stream, "answers are streamed, so their size can be bounded"
        return _Response(*self.routes[url])


def test_the_sdk_reads_answer_like_the_unix_reader() -> None:
    api = _Api({"/info": (200, b'{"ID": "x"}', 0.0),
                "/gone": (404, b'{"message": "no such container"}', 0.0),
                "/broken": (500, b'{"message": "boom"}', 0.0)})
    reads = SdkReads(lambda: api, lambda fn, items: [fn(item) for item in items])
    assert reads.get("/info") == {"ID": "x"}
    with pytest.raises(ReadNotFound):
        reads.get("/gone")
    gone, broken, info = reads.get_all(["/gone", "/broken", "/info"])
    assert isinstance(gone, ReadNotFound) and gone.status == 404
    assert isinstance(broken, ReadFailed) and not isinstance(broken, ReadNotFound)
    assert broken.status == 500 and info == {"ID": "x"}


def test_the_sdk_reads_are_bounded_in_size_and_time() -> None:
    """Hostile round 3, item 10, for `--host tcp://`: the same limits as the unix reader."""
    api = _Api({"/info": (200, b"x" * (5 * MiB), 0.0),
                "/version": (200, b'{"Version": "1"}' + b" " * (3 * 65536), 0.4)})
    reads = SdkReads(lambda: api, lambda fn, items: [fn(item) for item in items],
                     timeout=0.5)
    with pytest.raises(EngineError, match="larger than 4 MiB"):
        reads.get("/info")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        reads.get("/version")
    assert time.monotonic() - started < 1.5


def test_an_engine_reads_an_in_memory_daemon_behind_the_same_protocol(tmp_path: Path) -> None:
    """What makes the runner's lifecycle tests possible without a daemon."""
    routes = populated_daemon(tmp_path / "root")
    with memory_engine(routes) as engine:
        inventory = engine.inventory()
        assert [i.tags for i in inventory.images] == [("app:1",)]
        assert [c.name for c in inventory.containers] == ["web"]
        assert engine.inspect_container("gone") is None  # a 404 of the table
    routes["/version"] = ConnectionRefusedError("refused")
    with pytest.raises(EngineUnreachable, match="connection refused"):
        memory_engine(routes)
