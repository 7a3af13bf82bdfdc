"""Whatever answers on the daemon's socket, a read ends in bounded time and memory: an
answer trickled one byte at a time meets the request's total deadline, an endless or huge
one its endpoint's size limit (issue 23 item 10). Fake APIs on a unix socket only."""

from __future__ import annotations

import socket
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.engine import transport
from migrate.engine.client import Engine
from migrate.engine.transport import MiB, answer_limit
from migrate.engine.unix_http import UnixReads as _UnixReads
from migrate.errors import EngineError, EngineUnreachable, ExitCode
from tests.unit.fake_api import CONTAINER_ID, fake_api, populated_daemon

pytestmark = pytest.mark.unit

RawAnswer = Callable[[socket.socket], None]


def trickled(body: bytes = b'{"Version": "26.1.5", "ApiVersion": "1.45"}' * 6,
             pause: float = 0.05) -> RawAnswer:
    """A well-formed answer sent one byte at a time: each read is quick, the whole is not."""
    def send(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for byte in body:
            conn.sendall(bytes([byte]))
            time.sleep(pause)
    return send


def endless(framing: str) -> RawAnswer:
    """An answer that never ends: announced as 3 GB, or chunked, or until the close."""
    header = {"length": b"Content-Length: 3000000000\r\n",
              "chunked": b"Transfer-Encoding: chunked\r\n",
              "close": b"Connection: close\r\n"}[framing]
    piece = b"x" * 65536

    def send(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n" + header + b"\r\n")
        while True:
            conn.sendall(b"10000\r\n" + piece + b"\r\n" if framing == "chunked" else piece)
    return send


def test_a_trickled_answer_meets_the_total_deadline(tmp_path: Path) -> None:
    routes = populated_daemon(tmp_path / "root")
    routes["/version"] = trickled()  # 264 bytes: 13 s at this pace
    with fake_api(tmp_path, routes) as api:
        started = time.monotonic()
        with pytest.raises(EngineUnreachable, match="did not answer in time"):
            Engine(api.host, timeout=1.0)
        assert time.monotonic() - started < 3


def test_a_trickled_answer_among_pipelined_ones_meets_the_deadline(tmp_path: Path) -> None:
    routes = populated_daemon(tmp_path / "root")
    slow = f"/containers/{CONTAINER_ID}/json"
    routes[slow] = trickled()
    with fake_api(tmp_path, routes) as api:
        reads = _UnixReads(str(api.path), timeout=1.0)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            reads.get_many(["/info", slow, "/version"])
        assert time.monotonic() - started < 3
        # The connection it was read on is dropped: the next read is whole and its own.
        assert reads.get("/version")["ApiVersion"] == "1.45"
        reads.close()


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_an_endless_docker_info_is_refused_at_its_limit(tmp_path: Path, framing: str) -> None:
    routes = populated_daemon(tmp_path / "root")
    routes["/info"] = endless(framing)
    with fake_api(tmp_path, routes) as api:
        tracemalloc.start()
        try:
            result = CliRunner().invoke(main, [
                "-q", "--host", api.host, "--daemon-config", str(tmp_path / "daemon.json"),
                "--state-dir", str(tmp_path / "state"), "plan", "--restart-command", "true"])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert result.exit_code == ExitCode.ERROR, result.output
    error, hint = result.output.strip().splitlines()
    assert error == "error: the Docker daemon's answer to /info is larger than 4 MiB; it " \
        "was not read further", error
    assert hint.startswith("hint: check that --host is a Docker daemon")
    assert peak < 4 * answer_limit("/info"), f"{peak / MiB:.0f} MiB held"


def test_a_list_too_long_in_a_pipelined_read_is_refused(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        ) -> None:
    monkeypatch.setattr(transport, "OBJECT_ANSWER_LIMIT", MiB)
    routes = populated_daemon(tmp_path / "root")
    routes[f"/containers/{CONTAINER_ID}/json"] = endless("close")
    with fake_api(tmp_path, routes) as api:
        reads = _UnixReads(str(api.path), timeout=5.0)
        with pytest.raises(EngineError, match=f"/containers/{CONTAINER_ID}/json is larger "
                           "than 1 MiB"):
            reads.get_many(["/info", f"/containers/{CONTAINER_ID}/json"])
        assert reads.get("/version")["ApiVersion"] == "1.45"
        reads.close()


def test_each_endpoint_has_a_limit_suited_to_it() -> None:
    assert answer_limit("/info") == answer_limit("/version") == 4 * MiB
    assert answer_limit("/images/sha256:1/json") == 64 * MiB
    assert answer_limit("/images/json") == answer_limit("/containers/x/changes") == 256 * MiB
