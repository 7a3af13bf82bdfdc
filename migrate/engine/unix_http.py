"""The engine's own HTTP/1.1 reader for the daemon's local socket (`UnixReads`).

Read-only calls on a unix socket bypass the SDK: measured on 1,000 images, an image inspect
costs 0.85 ms over `http.client` on a keep-alive connection, 4.3 ms through the SDK, and less
again with the few lines of HTTP/1.1 that the daemon's answers need; many reads are
pipelined. `plan` and `status` on a local daemon never load the SDK (a fifth of a second to
import). Every answer is bounded in size and in time, whatever the peer does.
"""

from __future__ import annotations

import io
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, cast

from migrate.engine.convert import JSON, VersionAnswer, checked
from migrate.engine.transport import (
    LIST_ANSWER_LIMIT,
    ProtocolError,
    ReadFailed,
    answer,
    answer_limit,
    too_large,
)

# Pipelined reads (`UnixReads.get_many`) send this many requests before reading answers,
# on this many connections at once: the daemon answers each connection's requests in turn.
PIPELINE_WINDOW = 32
PIPELINES = 2


# Longest status or header line accepted from the daemon: a hostile or broken peer must
# not make the reader buffer without end.
_MAX_LINE = 65536


class _Disconnected(ConnectionError):
    """The daemon closed the connection before answering (e.g. an idle keep-alive one)."""




class _TooLarge(Exception):
    """An answer longer than its limit: nothing more is read from it."""


class _DeadlineSocket(io.RawIOBase):
    """A socket's reads that end at `deadline` (time.monotonic()) however slowly the peer
    sends: a per-read timeout alone lets an answer trickled one byte a second last for ever."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self.deadline = float("inf")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the daemon's answer did not arrive in time")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


def _read_line(reader: BinaryIO) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise ProtocolError("the daemon sent an over-long HTTP line")
    return line


def _read_exactly(reader: BinaryIO, size: int, limit: int) -> bytes:
    if size > limit:
        raise _TooLarge
    data = reader.read(size)
    if len(data) != size:
        raise _Disconnected("the daemon closed the connection mid-answer")
    return data


def _number(text: bytes, base: int = 10) -> int:
    try:
        value = int(text.strip(), base)
    except ValueError:
        value = -1
    if value < 0:
        raise ProtocolError(f"the daemon sent a malformed HTTP length: {text[:40]!r}")
    return value


def _read_response(reader: BinaryIO, limit: int = LIST_ANSWER_LIMIT,
                   ) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one HTTP/1.1 answer: what Go's net/http sends, i.e.
    a Content-Length or chunked body, or one that ends with the connection; _TooLarge as
    soon as the body is known to be longer than `limit` bytes."""
    status_line = _read_line(reader)
    if not status_line:
        raise _Disconnected("the daemon closed the connection")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ProtocolError(f"the daemon's answer is not HTTP: {status_line[:80]!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    keep_alive = parts[0] != b"HTTP/1.0"
    while (line := _read_line(reader)) not in (b"\r\n", b"\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = _number(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep_alive = keep_alive and b"close" not in value.lower()
    if chunked:
        pieces = []
        read = 0
        while (size := _number(_read_line(reader).split(b";")[0], 16)) > 0:
            pieces.append(_read_exactly(reader, size, limit - read))
            read += size
            _read_line(reader)
        while _read_line(reader) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return status, b"".join(pieces), keep_alive
    if length is not None:
        return status, _read_exactly(reader, length, limit), keep_alive
    body = reader.read(limit + 1)
    if len(body) > limit:
        raise _TooLarge
    return status, body, False


class _Connection:
    """One keep-alive connection to the daemon's unix socket."""

    def __init__(self, path: str, timeout: float):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._timeout = timeout
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(path)
        except BaseException:
            self._sock.close()
            raise
        self._raw = _DeadlineSocket(self._sock)
        self._reader = io.BufferedReader(self._raw, 65536)

    def send(self, urls: Iterable[str]) -> None:
        self._sock.settimeout(self._timeout)  # reads may have left it shorter
        self._sock.sendall(b"".join(f"GET {url} HTTP/1.1\r\nHost: docker\r\n"
                                    "User-Agent: containerd-migrate\r\n\r\n".encode()
                                    for url in urls))

    def read(self, limit: int) -> tuple[int, bytes, bool]:
        """The next answer, read whole within the timeout (not per read: in all)."""
        self._raw.deadline = time.monotonic() + self._timeout
        return _read_response(cast(BinaryIO, self._reader), limit)

    def get(self, url: str, limit: int) -> tuple[int, bytes, bool]:
        self.send([url])
        return self.read(limit)

    def close(self) -> None:
        self._reader.close()
        self._sock.close()




class UnixReads:
    """`Reads` over the daemon's unix socket: `GET` + JSON decode, one keep-alive
    connection per thread. Raises ReadNotFound for 404, ReadFailed for other error
    statuses or a body that is not JSON, ProtocolError for an answer that is not HTTP."""

    def __init__(self, path: str, timeout: float):
        self._path = path
        self._prefix = ""
        self._timeout = timeout
        self._local = threading.local()
        self._opened: list[_Connection] = []
        self._lock = threading.Lock()

    def negotiate(self) -> JSON:
        """Ask `/version` (unversioned, as the SDK's `version="auto"` does) and send every
        later call to the daemon's own API version; returns that answer."""
        answer = cast(JSON, checked(VersionAnswer, self.get("/version"), "/version"))
        self._prefix = f"/v{answer.get('ApiVersion', '')}"
        return answer

    def _connection(self, fresh: bool = False) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None and fresh:
            conn.close()
            conn = None
        if conn is None:
            conn = _Connection(self._path, self._timeout)
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    def _url(self, path: str, params: Mapping[str, str] | None = None) -> str:
        url = self._prefix + urllib.parse.quote(path, safe="/:")
        return url + "?" + urllib.parse.urlencode(params) if params else url

    def _drop(self) -> None:
        conn: _Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        url, limit = self._url(path, params), answer_limit(path)
        try:
            try:
                status, body, keep_alive = self._connection().get(url, limit)
            except (_Disconnected, BrokenPipeError, ConnectionResetError):
                # The daemon closed an idle keep-alive connection: one fresh try.
                status, body, keep_alive = self._connection(fresh=True).get(url, limit)
        except _TooLarge:
            self._drop()
            raise too_large(path) from None
        except BaseException:
            # Whatever stopped the exchange midway (a timeout, a signal) may have left part
            # of an answer unread: the next request must not read it as its own.
            self._drop()
            raise
        if not keep_alive:
            self._drop()
        return answer(status, body)

    def get_many(self, paths: Sequence[str]) -> list[Any]:
        """Answers to many GETs, in order, pipelined on this thread's connection (HTTP/1.1:
        the daemon answers them one after the other); a failed call's place holds its
        ReadFailed. The requests go out PIPELINE_WINDOW at a time, so that neither side's
        socket buffer can fill while the other is not reading."""
        urls = [self._url(path) for path in paths]
        answers: list[Any] = []
        fruitless = 0
        while len(answers) < len(urls):
            window = urls[len(answers):len(answers) + PIPELINE_WINDOW]
            before, keep_alive = len(answers), True
            try:
                conn = self._connection()
                conn.send(window)
                while keep_alive and len(answers) - before < len(window):
                    asked = paths[len(answers)]
                    try:
                        status, body, keep_alive = conn.read(answer_limit(asked))
                    except _TooLarge:
                        raise too_large(asked) from None
                    try:
                        answers.append(answer(status, body))
                    except ReadFailed as failed:
                        answers.append(failed)
            except (_Disconnected, BrokenPipeError, ConnectionResetError):
                # E.g. an idle connection the daemon had closed: the rest goes out again
                # on a fresh one, but a daemon that answers nothing twice is given up on.
                fruitless = fruitless + 1 if len(answers) == before else 0
                if fruitless > 1:
                    self._drop()
                    raise
                keep_alive = False
            except BaseException:
                self._drop()  # answers may be left unread on it (see `get`)
                raise
            if not keep_alive:
                self._drop()  # the rest goes out on a new connection, opened when needed
        return answers

    def get_all(self, paths: Sequence[str]) -> list[Any]:
        """`get_many` on PIPELINES connections at once, each with its share of `paths`."""
        share = -(-len(paths) // PIPELINES) or 1
        parts = [paths[i:i + share] for i in range(0, len(paths), share)]
        with ThreadPoolExecutor(max_workers=PIPELINES) as pool:
            return [found for part in pool.map(self.get_many, parts) for found in part]

    def close(self) -> None:
        for conn in self._opened:
            conn.close()
