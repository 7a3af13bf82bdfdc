"""The inventory's own HTTP/1.1 reader and the image-config reader, against crafted input:
whatever a daemon (or a file in its data root) holds, they answer exactly or refuse."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.engine import unix_http
from migrate.engine.legacy_store import _go_rfc3339_nano
from migrate.engine.legacy_store import inspect_from_disk as _inspect_from_disk
from migrate.engine.transport import ProtocolError, ReadFailed, ReadNotFound
from migrate.engine.transport import answer as _answer_json
from migrate.engine.unix_http import UnixReads as _UnixReads
from migrate.engine.unix_http import _read_response
from migrate.errors import MigrateError, Terminated
from migrate.journal import Journal

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("created", "inspect_says"), [
    ("2024-05-06T07:08:09Z", "2024-05-06T07:08:09Z"),
    ("2024-05-06T07:08:09.120000000Z", "2024-05-06T07:08:09.12Z"),
    ("2024-05-06T07:08:09.000Z", "2024-05-06T07:08:09Z"),
    ("2024-05-06T07:08:09.5+00:00", "2024-05-06T07:08:09.5Z"),
    ("2024-05-06T07:08:09-00:00", "2024-05-06T07:08:09Z"),
    ("2024-05-06T09:08:09.123456789+02:00", "2024-05-06T09:08:09.123456789+02:00"),
])
def test_created_is_formatted_as_go_formats_it(created: str, inspect_says: str) -> None:
    assert _go_rfc3339_nano(created) == inspect_says


@pytest.mark.parametrize("created", [
    None, 17, "", "2024-05-06", "2024-05-06 07:08:09Z", "2024-05-06t07:08:09z",
    "2024-05-06T07:08:09.1234567891Z", "2024-05-06T07:08:09", "2024-05-06T07:08:09Z junk",
])
def test_unusual_created_is_left_to_the_daemon(created: object) -> None:
    assert _go_rfc3339_nano(created) is None


def _store(tmp_path: Path, config: object,
           raw: bytes | None = None) -> tuple[Path, dict[str, object]]:
    data = raw if raw is not None else json.dumps(config).encode()
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / digest).write_bytes(data)
    summary: dict[str, object] = {"Id": f"sha256:{digest}", "RepoTags": ["a/b:1", "<none>:<none>"],
                                  "RepoDigests": ["<none>@<none>"], "Size": 42}
    return tmp_path, summary


GOOD = {"created": "2024-05-06T07:08:09.100Z", "os": "linux", "architecture": "amd64",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
        "config": {"Env": ["A=1"], "Cmd": ["sh"]}, "history": []}


def test_a_plain_config_gives_what_inspect_would(tmp_path: Path) -> None:
    imagedb, summary = _store(tmp_path, GOOD)
    assert _inspect_from_disk(imagedb, summary) == {
        "Id": summary["Id"], "RepoTags": ["a/b:1"], "RepoDigests": [],
        "Created": "2024-05-06T07:08:09.1Z", "Os": "linux", "Architecture": "amd64",
        "Variant": "", "RootFS": {"Layers": ["sha256:" + "1" * 64]}, "Size": 42,
        "Config": {"Env": ["A=1"], "Cmd": ["sh"]},
    }


@pytest.mark.parametrize("change", [
    {"OS": "linux"},                                   # Go would read it as `os`
    {"config": {"ENV": ["A=1"]}},                      # ... and this as Env
    {"config": ["not", "an", "object"]},
    {"os": ""},                                        # the daemon says linux
    {"os": 3},
    {"created": None},
    {"rootfs": {"type": "layers"}},
    {"rootfs": {"diff_ids": [1, 2]}},
    {"variant": ["v8"]},
])
def test_a_config_go_would_read_otherwise_is_left_to_the_daemon(
    tmp_path: Path, change: dict[str, object],
) -> None:
    imagedb, summary = _store(tmp_path, {**GOOD, **change})
    assert _inspect_from_disk(imagedb, summary) is None


def test_a_config_that_is_not_the_image_is_not_trusted(tmp_path: Path) -> None:
    imagedb, summary = _store(tmp_path, GOOD)
    digest = str(summary["Id"]).removeprefix("sha256:")
    (imagedb / digest).write_text(json.dumps({**GOOD, "os": "windows"}))  # hash no longer fits
    assert _inspect_from_disk(imagedb, summary) is None
    assert _inspect_from_disk(imagedb, {**summary, "Id": "sha256:../../etc/passwd"}) is None
    assert _inspect_from_disk(imagedb, {**summary, "Id": "sha256:" + "f" * 64}) is None
    not_json, summary = _store(tmp_path, None, raw=b"\xff{")
    assert _inspect_from_disk(not_json, summary) is None


def _answer(raw: bytes) -> tuple[int, bytes, bool]:
    return _read_response(io.BytesIO(raw))


def test_http_answers_of_every_framing_are_read_whole() -> None:
    assert _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nApi-Version: 1.45\r\n\r\n{}"
                   b"HTTP/1.1 200 OK\r\n") == (200, b"{}", True)
    chunked = (b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4;ext=1\r\n{\"me\r\n9\r\nssage\":1}\r\n0\r\nTrailer: x\r\n\r\n")
    assert _answer(chunked) == (404, b'{"message":1}', True)
    assert _answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n1") \
        == (200, b"1", False)
    assert _answer(b"HTTP/1.0 200 OK\r\n\r\n[1, 2]") == (200, b"[1, 2]", False)


@pytest.mark.parametrize("raw", [
    b"",                                                          # closed before answering
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",        # cut short
])
def test_answers_cut_off_are_connection_errors(raw: bytes) -> None:
    with pytest.raises(ConnectionError):
        _answer(raw)


@pytest.mark.parametrize("raw", [
    b"SSH-2.0-OpenSSH\r\n\r\n",                                   # not HTTP
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n",       # endless header
])
def test_garbled_http_answers_are_protocol_errors(raw: bytes) -> None:
    """Not "cannot reach the daemon": something answered, in a way no daemon does."""
    with pytest.raises(ProtocolError) as garbled:
        _answer(raw)
    assert not isinstance(garbled.value, ConnectionError)


def test_an_answer_that_is_not_json_is_a_failed_read() -> None:
    with pytest.raises(ReadFailed, match="not JSON"):
        _answer_json(200, b"<html>proxy error</html>")


@pytest.fixture
def daemon_socket(tmp_path: Path) -> Iterator[tuple[str, list[int]]]:
    """A unix-socket peer answering GETs in order, as dockerd does, that closes every
    connection after three answers: (socket path, answers per connection)."""
    path = str(tmp_path / "d.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    served: list[int] = []

    def serve(conn: socket.socket) -> None:
        # The client may drop the connection (as it must after an interrupted read).
        with contextlib.suppress(OSError):
            answer(conn)
        conn.close()

    def answer(conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        answered = 0
        while answered < 3 and (line := reader.readline()):
            while reader.readline() not in (b"\r\n", b""):
                pass
            target = line.split()[1].decode()
            status = b"404 Not Found" if "missing" in target else b"200 OK"
            body = json.dumps({"message": "no such thing"} if b"404" in status
                              else {"path": target}).encode()
            last = answered == 2
            conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n%s\r\n%s" % (
                len(body), b"Connection: close\r\n" if last else b"", body))
            answered += 1
        served.append(answered)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield path, served
    server.close()


def test_pipelined_reads_survive_closed_connections_and_keep_order(
    daemon_socket: tuple[str, list[int]],
) -> None:
    path, served = daemon_socket
    reads = _UnixReads(path, timeout=5)
    paths = [f"/containers/{i}/json" for i in range(8)] + ["/containers/missing/json"]
    answers = reads.get_many(paths)
    reads.close()
    assert [a["path"] for a in answers[:8]] == paths[:8]
    assert isinstance(answers[8], ReadNotFound) and answers[8].explanation == "no such thing"
    # The server thread counts a connection's answers after sending the last one: under
    # load the client can be done first, so wait (with a deadline) for its bookkeeping.
    deadline = time.monotonic() + 10
    while sum(served) < len(paths) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sum(served) == len(paths) and len(served) >= 3, "went on over new connections"


def test_an_exchange_stopped_midway_never_hands_its_answer_to_the_next_request(
    daemon_socket: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGTERM (or a timeout) between sending a request and reading its answer leaves
    that answer on the connection: the next request must not take it for its own."""
    path, _served = daemon_socket
    reads = _UnixReads(path, timeout=5)
    original = unix_http._read_response
    calls = {"n": 0}

    def interrupted_once(reader: Any, limit: int) -> tuple[int, bytes, bool]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Terminated
        return original(reader, limit)

    monkeypatch.setattr(unix_http, "_read_response", interrupted_once)
    with pytest.raises(Terminated):
        reads.get("/first")
    assert reads.get("/second") == {"path": "/second"}
    reads.close()


def test_sigterm_is_not_a_migrate_error_and_is_journaled_as_such(tmp_path: Path) -> None:
    """Code that copes with a failed engine call (`except MigrateError`) must let it by."""
    assert not issubclass(Terminated, Exception)
    journal = Journal(tmp_path / "journal.jsonl")
    journal.start_run("test", ("run",), {})
    with pytest.raises(Terminated), journal.phase("snapshot", {}):
        try:
            raise Terminated
        except MigrateError:
            pytest.fail("a MigrateError handler caught SIGTERM")
    last = json.loads((tmp_path / "journal.jsonl").read_text().splitlines()[-1])
    assert (last["event"], last["signal"]) == ("interrupted", "SIGTERM")
