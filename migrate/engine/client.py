"""The typed boundary to the Docker Engine API: with `convert`, the only code that touches `docker`.

The SDK returns untyped dicts; every method here turns them into the frozen models of
`migrate.models` at once (through `convert`), so nothing else in the product depends on
the raw API shapes. Errors from the SDK are mapped to `EngineUnreachable` / `EngineError`
with hints.

Read-only calls on a unix socket (`_UnixReads`) bypass the SDK: measured on 1,000 images,
an image inspect costs 0.85 ms over `http.client` on a keep-alive connection, 4.3 ms through
the SDK, and less again with the few lines of HTTP/1.1 that the daemon's answers need. The
SDK (docker, requests, urllib3: a fifth of a second to import) is imported only when a call
needs it: everything that changes the host, and every call to a daemon that is not on a
local socket. `plan` and `status` on a local daemon never load it.

`save` and `load` use the SDK's private request helpers (`_get`, `_post`, `_url`,
`_stream_raw_result`, `_stream_helper`): the public `get_image`/`load_image` cannot stream
a request body with a known Content-Length, nor turn off the read timeout for one call,
and both matter for multi-gigabyte archives. pyproject.toml pins the SDK to the tested
range for that reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Self, TypeVar, cast

from migrate.engine.convert import (
    JSON,
    Change,
    ContainerInspect,
    ContainerSummary,
    HistoryEntry,
    IdAnswer,
    ImageInspect,
    ImageSummary,
    InfoAnswer,
    VersionAnswer,
    VolumesAnswer,
    chain_ids,
    checked,
    container_record,
    engine_info,
    fits,
    image_manifests,
    image_record,
    writable_layer,
)
from migrate.errors import EngineError, EngineUnreachable, UsageError
from migrate.models import (
    ContainerRecord,
    EngineInfo,
    ImageManifest,
    ImageRecord,
    Inventory,
    VolumeRecord,
    WritableLayer,
)

if TYPE_CHECKING:
    import docker

T = TypeVar("T")
R = TypeVar("R")
CHUNK_SIZE = 1024 * 1024
# One short API answer: a daemon that hangs half-started must not eat a whole deadline.
PROBE_TIMEOUT = 5.0


def _unreachable_hint(host: str) -> str:
    # Generic on purpose: a command that has a migration to resume adds how (the runner).
    return (
        f"check that dockerd is running, that {host} is its address (--host or DOCKER_HOST, "
        "e.g. unix:///var/run/docker.sock), and that you may use its socket (usually: run "
        "as root)"
    )


def _reason(exc: BaseException) -> str:
    """The cause in a few words, not urllib3's nested repr."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, FileNotFoundError):
            return "no such socket"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, PermissionError):
            return "permission denied on the socket"
        inner = getattr(seen, "reason", None)  # urllib3's MaxRetryError wraps the cause
        seen = inner if isinstance(inner, BaseException) else seen.__cause__ or seen.__context__
    text = str(exc)
    for needle, reason in (("No such file", "no such socket"),
                           ("Connection refused", "connection refused"),
                           ("Permission denied", "permission denied on the socket"),
                           ("Name or service not known", "unknown host name")):
        if needle in text:
            return reason
    return "no answer"


# What a unix socket address holds (sun_path is 108 bytes with its closing NUL).
MAX_SOCKET_PATH = 107
_SUPPORTED_ADDRESSES = ("supported: unix:///path/to/docker.sock (or the absolute path itself), "
                        "or tcp://HOST:PORT")


def base_url(host: str, given_as: str = "--host") -> str:
    """The SDK's address for `host` (a bare socket path is unix://PATH), or a UsageError
    saying what is wrong with it: only a unix socket and tcp:// are spoken here."""
    def refuse(why: str, hint: str = _SUPPORTED_ADDRESSES) -> UsageError:
        return UsageError(f"{given_as} {host!r} {why}", hint)

    if not host:
        raise refuse("is empty")
    scheme, found, rest = host.partition("://")
    if host.startswith("/"):
        scheme, rest = "unix", host
    elif not found:
        raise refuse("is neither a URL nor an absolute socket path")
    if scheme == "unix":
        if not rest.startswith("/"):
            raise refuse("does not name a socket by its absolute path")
        size = len(os.fsencode(rest))
        if size > MAX_SOCKET_PATH or "\0" in rest:
            raise refuse(f"is not a usable socket path ({size} bytes; a unix socket address "
                         f"holds at most {MAX_SOCKET_PATH}, without NUL bytes)",
                         "pass a shorter path to the same socket, e.g. a symlink to it; "
                         + _SUPPORTED_ADDRESSES)
        return f"unix://{rest}"
    if scheme == "tcp":
        try:
            parsed = urllib.parse.urlsplit(host)
            port = parsed.port
        except ValueError as error:
            raise refuse(f"is not a valid address: {error}") from error
        if not parsed.hostname or port is None or not 0 < port <= 65535 \
                or parsed.username is not None or parsed.path not in ("", "/") \
                or parsed.query or parsed.fragment:
            raise refuse("is not of the form tcp://HOST:PORT (port 1 to 65535)")
        return host
    raise refuse(f"uses {scheme}://, which containerd-migrate does not speak",
                 f"run it on the daemon's host, against its socket; {_SUPPORTED_ADDRESSES}")


class ReadFailed(Exception):
    """A read-only call the daemon answered with an error status."""

    def __init__(self, status: int, explanation: str):
        super().__init__(explanation)
        self.status = status
        self.explanation = explanation


class ReadNotFound(ReadFailed):
    """404: no such image, container, ..."""


def _loaded(module: str, name: str, *always: type[BaseException],
            ) -> tuple[type[BaseException], ...]:
    """`always` plus an SDK module's exception class once something imported that module;
    before, nothing can raise it. Called in `except` clauses, which are evaluated only when
    an exception arrives: after the SDK may have been imported inside the block."""
    found = sys.modules.get(module)
    return always if found is None else (*always, getattr(found, name))


@contextmanager
def _mapped_errors(host: str, action: str) -> Iterator[None]:
    try:
        yield
    except ReadFailed as exc:
        raise EngineError(
            f"the Docker daemon refused to {action}: {exc.explanation}",
            "see the daemon log (journalctl -u docker) for details",
        ) from exc
    except _loaded("requests.exceptions", "ConnectionError", FileNotFoundError,
                   ConnectionError) as exc:
        raise EngineUnreachable(
            f"cannot reach the Docker daemon at {host} ({_reason(exc)}) while trying to "
            f"{action}", _unreachable_hint(host),
        ) from exc
    except _loaded("requests.exceptions", "Timeout", TimeoutError) as exc:
        raise EngineUnreachable(
            f"the Docker daemon at {host} did not answer in time while trying to {action}",
            "the daemon may be overloaded or hung; check `journalctl -u docker` and retry",
        ) from exc
    except _loaded("docker.errors", "DockerException") as exc:
        explanation = getattr(exc, "explanation", None) or str(exc)
        if "Connection" in str(exc) or "No such file" in str(exc):
            raise EngineUnreachable(
                f"cannot reach the Docker daemon at {host} ({_reason(exc)})",
                _unreachable_hint(host),
            ) from exc
        raise EngineError(
            f"the Docker daemon refused to {action}: {explanation}",
            "see the daemon log (journalctl -u docker) for details",
        ) from exc


class _SizedBody:
    """Chunks whose total length is known: requests then sends a Content-Length header."""

    def __init__(self, chunks: Iterable[bytes], size: int):
        self._chunks = chunks
        self._size = size

    def __iter__(self) -> Iterator[bytes]:
        # A body shorter than announced would leave the daemon waiting for the rest (and
        # us for its answer, with no read timeout): abort the upload instead.
        sent = 0
        for chunk in self._chunks:
            sent += len(chunk)
            if sent > self._size:
                break
            yield chunk
        if sent != self._size:
            raise EngineError(f"the archive to load changed while it was sent ({sent} bytes "
                              f"instead of {self._size}); nothing was loaded from it",
                              "run the same command again")

    def __len__(self) -> int:
        return self._size


# Longest status or header line accepted from the daemon: a hostile or broken peer must
# not make the reader buffer without end.
_MAX_LINE = 65536


class _Disconnected(ConnectionError):
    """The daemon closed the connection before answering (e.g. an idle keep-alive one)."""


MiB = 1 << 20
# The largest answer read from each endpoint: whatever answers on the socket, memory stays
# bounded (a 3 GB `docker info` once took 6.3 GB). Far above what a daemon sends: an image
# with a 1 MiB label inspects in about 1 MiB, 10,000 images list in about 10 MB.
SMALL_ANSWER_LIMIT = 4 * MiB      # /_ping, /version, /info
OBJECT_ANSWER_LIMIT = 64 * MiB    # one inspect, one history
LIST_ANSWER_LIMIT = 256 * MiB     # every image, container or volume; a container's changes


def answer_limit(path: str) -> int:
    """The size limit for the answer to `path` (without its /vX.Y prefix and query)."""
    if path in ("/_ping", "/version", "/info"):
        return SMALL_ANSWER_LIMIT
    if path in ("/images/json", "/containers/json", "/volumes") or path.endswith("/changes"):
        return LIST_ANSWER_LIMIT
    return OBJECT_ANSWER_LIMIT


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
        raise ConnectionError("the daemon sent an over-long HTTP line")
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
        raise ConnectionError(f"the daemon sent a malformed HTTP length: {text[:40]!r}")
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
        raise ConnectionError(f"the daemon's answer is not HTTP: {status_line[:80]!r}")
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


def _too_large(path: str) -> EngineError:
    limit = answer_limit(path)
    return EngineError(
        f"the Docker daemon's answer to {path} is larger than {limit // MiB} MiB; it was "
        "not read further",
        "check that --host is a Docker daemon and that nothing between us and it rewrites "
        "its answers (a daemon's answers are far smaller)")


class _UnixReads:
    """`GET` + JSON decode over the daemon's unix socket, one keep-alive connection per
    thread. Raises ReadNotFound for 404, ReadFailed for other error statuses."""

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
            raise _too_large(path) from None
        except BaseException:
            # Whatever stopped the exchange midway (a timeout, a signal) may have left part
            # of an answer unread: the next request must not read it as its own.
            self._drop()
            raise
        if not keep_alive:
            self._drop()
        return _answer(status, body)

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
                        raise _too_large(asked) from None
                    try:
                        answers.append(_answer(status, body))
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

    def close(self) -> None:
        for conn in self._opened:
            conn.close()


def _legacy_store(info: EngineInfo, *parts: str) -> Path | None:
    """A folder of the legacy image store's metadata, when this process can see it."""
    if info.legacy_driver is None or not info.data_root:
        return None
    folder = Path(info.data_root, "image", info.legacy_driver, *parts)
    return folder if folder.is_dir() else None


class _LayerSizes:
    """Each layer's size as the legacy store recorded it (`layerdb/<chain>/size`, the number
    `docker history` reports), read once per chain: images share their base layers."""

    def __init__(self, layerdb: Path):
        self._layerdb = str(layerdb)
        self._known: dict[str, int | None] = {}

    def _size(self, chain: str) -> int | None:
        if chain not in self._known:
            try:
                with open(f"{self._layerdb}/{chain.removeprefix('sha256:')}/size", "rb") as f:
                    size: int | None = int(f.read(32))
            except (OSError, ValueError):
                size = None
            self._known[chain] = size if size is not None and size >= 0 else None
        return self._known[chain]

    def of(self, diff_ids: Iterable[str]) -> tuple[int, ...] | None:
        """None as soon as one is missing or unreadable: then history is asked."""
        sizes = []
        for chain in chain_ids(diff_ids):
            size = self._size(chain)
            if size is None:
                return None
            sizes.append(size)
        return tuple(sizes)


# An image config bigger than this is not read from disk (the daemon is asked instead).
_MAX_CONFIG_BYTES = 8 * 1024 * 1024
_HEX_ID = re.compile(r"sha256:([0-9a-f]{64})")
# Go's time.Time in JSON, which the daemon re-formats as RFC 3339 with nanoseconds.
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")
# The config keys the inventory keeps, as Go's image structs spell them.
_CONFIG_KEYS = frozenset({"created", "os", "architecture", "variant", "rootfs", "config"})
_CONTAINER_CONFIG_KEYS = frozenset({"Env", "Cmd", "Entrypoint", "Labels", "WorkingDir", "User",
                                    "ExposedPorts", "Volumes"})


def _go_rfc3339_nano(value: object) -> str | None:
    """`created` as `docker image inspect` prints it (Go's time.RFC3339Nano: trailing zeros
    of the fraction dropped, a zero offset written Z); None for anything unusual."""
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    seconds, fraction, zone = match.groups()
    fraction = (fraction or "").rstrip("0")
    zone = "Z" if zone in ("+00:00", "-00:00") else zone
    return seconds + (f".{fraction}" if fraction else "") + zone


def _spelled_exactly(mapping: JSON, names: frozenset[str]) -> bool:
    """Go's JSON decoder also takes `ENV` for `Env`: a config spelled so is left to the daemon."""
    folded = {name.casefold() for name in names}
    return all(key in names or key.casefold() not in folded for key in mapping)


def _inspect_from_disk(imagedb: Path, summary: JSON) -> JSON | None:
    """The part of `docker image inspect` the inventory keeps, from the image list's entry
    and the legacy store's own copy of the image config, which is only trusted when its
    sha256 is the image ID. None whenever anything is unusual: then the daemon is asked.

    Measured on 1,000 images: an inspect costs the daemon 0.4 ms of CPU and this process
    about as much again; reading the config costs ~30 us.
    """
    match = _HEX_ID.fullmatch(str(summary.get("Id", "")))
    if match is None:
        return None
    try:
        with open(imagedb / match.group(1), "rb") as f:
            raw = f.read(_MAX_CONFIG_BYTES + 1)
        config = json.loads(raw)
    except (OSError, ValueError):
        return None
    if (len(raw) > _MAX_CONFIG_BYTES or hashlib.sha256(raw).hexdigest() != match.group(1)
            or not isinstance(config, dict) or not _spelled_exactly(config, _CONFIG_KEYS)):
        return None
    created = _go_rfc3339_nano(config.get("created"))
    rootfs = config.get("rootfs")
    inner = config.get("config")
    platform = [config.get(key, "") for key in ("os", "architecture", "variant")]
    if (created is None or not platform[0] or not all(isinstance(v, str) for v in platform)
            or not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list)
            or not all(isinstance(d, str) for d in rootfs["diff_ids"])
            or not (inner is None or (isinstance(inner, dict)
                                      and _spelled_exactly(inner, _CONTAINER_CONFIG_KEYS)))):
        return None
    return {
        "Id": summary["Id"],
        "RepoTags": [t for t in summary.get("RepoTags") or () if t != "<none>:<none>"],
        "RepoDigests": [d for d in summary.get("RepoDigests") or () if d != "<none>@<none>"],
        "Created": created,
        "Os": platform[0], "Architecture": platform[1], "Variant": platform[2],
        "RootFS": {"Layers": rootfs["diff_ids"]},
        "Size": summary.get("Size"),
        "Config": inner,
    }


def _upper_dir_empty(inspect: JSON) -> bool:
    """True when an overlay2 container's upper dir is empty: nothing added, changed or
    deleted (overlayfs records every change there, deletions as whiteouts).

    `docker diff` costs the daemon ~12 ms per container even then (measured on 300 never
    started containers: 3.7 s of a 4.5 s inventory), so an empty upper dir is read here;
    any other case (another driver, a remote daemon, an unreadable or non-empty dir) asks
    the daemon.
    """
    driver = inspect.get("GraphDriver") or {}
    upper = (driver.get("Data") or {}).get("UpperDir")
    if driver.get("Name") != "overlay2" or not isinstance(upper, str) or not upper:
        return False
    try:
        with os.scandir(upper) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def _answer(status: int, body: bytes) -> Any:
    if status == 404:
        raise ReadNotFound(status, _message(body))
    if status >= 400:
        raise ReadFailed(status, _message(body))
    try:
        return json.loads(body)
    except ValueError:
        raise ReadFailed(status, f"its answer is not JSON: {body[:80]!r}") from None


def _known_layer(inspected: JSON | ReadFailed,
                 ) -> tuple[JSON | None, WritableLayer | None] | None:
    """A container's inspect and writable layer when no more calls are needed: it was
    removed since the list (kept with what the list said: the snapshot must not fail on
    a host in use), or its upper dir is empty. None: ask `docker diff`."""
    if isinstance(inspected, ReadFailed):
        return None, None
    if _upper_dir_empty(inspected):
        return inspected, writable_layer([], 0, [])
    return None


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        return body.decode(errors="replace").strip()


# Pipelined reads (`_UnixReads.get_many`) send this many requests before reading answers,
# on this many connections at once: the daemon answers each connection's requests in turn.
PIPELINE_WINDOW = 32
PIPELINES = 2

# Inventory calls that cannot be pipelined (image inspects, diffs: one after the other per
# image or container) run on this many connections at once: serial, they made `plan` 5x
# slower than the docker CLI on 1,000 images. Each worker thread has its own connection
# (and APIClient, for a remote daemon: a requests Session is not documented as thread-safe).
PARALLEL_CALLS = 8


class Engine:
    """A connection to one Docker daemon."""

    def __init__(self, host: str, timeout: float = 120.0):
        self.host = host
        self._timeout = timeout
        self._local = threading.local()
        self._main_api: docker.APIClient | None = None
        self._workers: list[docker.APIClient] = []
        self._workers_lock = threading.Lock()
        self._version: JSON | None = None
        url = base_url(host)
        self._reads = (_UnixReads(url.removeprefix("unix://"), timeout)
                       if url.startswith("unix://") else None)
        # Connect at once, as the SDK's `version="auto"` does: a dead socket fails here.
        with _mapped_errors(host, "connect"):
            if self._reads is not None:
                self._version = self._reads.negotiate()
            else:
                self._main_api = self._new_api("auto")

    def _new_api(self, version: str) -> docker.APIClient:
        import docker  # noqa: PLC0415  (see the module docstring: only when needed)

        return docker.APIClient(base_url=base_url(self.host), version=version,
                                timeout=self._timeout)

    @property
    def api_version(self) -> str:
        if self._version is not None:
            return str(self._version.get("ApiVersion", ""))
        return str(self._main.api_version)

    @property
    def _main(self) -> docker.APIClient:
        if self._main_api is None:
            with _mapped_errors(self.host, "connect"):
                # The negotiated version is reused: no second /version round trip.
                self._main_api = self._new_api(self.api_version)
        return self._main_api

    @property
    def _api(self) -> docker.APIClient:
        """This thread's client: the main one, or a worker's own (see PARALLEL_CALLS)."""
        if threading.current_thread() is threading.main_thread():
            return self._main
        api: docker.APIClient | None = getattr(self._local, "api", None)
        if api is None:
            api = self._new_api(self.api_version)
            self._local.api = api
            with self._workers_lock:
                self._workers.append(api)
        return api

    def _map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        with ThreadPoolExecutor(max_workers=PARALLEL_CALLS) as pool:
            return list(pool.map(fn, items))

    def close(self) -> None:
        if self._reads is not None:
            self._reads.close()
        for api in self._workers:
            api.close()
        if self._main_api is not None:
            self._main_api.close()

    def _get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """A read-only API call, e.g. `/images/{id}/json`; raises ReadNotFound (404) or
        ReadFailed (other error statuses) whichever way it went."""
        if self._reads is not None:
            return self._reads.get(path, params)
        import docker.errors  # noqa: PLC0415  (a remote daemon: the SDK is loaded already)

        api = self._api
        try:
            return api._result(api._get(api._url("{0}", path), params=params), True)
        except docker.errors.NotFound as exc:
            raise ReadNotFound(404, str(exc.explanation or exc)) from exc
        except docker.errors.APIError as exc:
            raise ReadFailed(exc.status_code or 500, str(exc.explanation or exc)) from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _call(self, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with _mapped_errors(self.host, action):
            return fn(*args, **kwargs)

    def _read(self, action: str, path: str, params: Mapping[str, str] | None = None) -> Any:
        with _mapped_errors(self.host, action):
            return self._get_json(path, params)

    def info(self) -> EngineInfo:
        info = checked(InfoAnswer, self._read("read `docker info`", "/info"), "/info")
        version = checked(VersionAnswer, self._read("read `docker version`", "/version"),
                          "/version")
        return engine_info(info, version)

    def inspect_image(self, ref: str, sizes: bool = True,
                      layer_sizes: _LayerSizes | None = None) -> ImageRecord | None:
        """`sizes=False` skips the layer sizes: only the estimates need them. They are read
        from the legacy layer store when given and readable, else from history."""
        inspect = self.raw_image(ref)
        if inspect is None:
            return None
        return self._image_record(inspect, sizes, layer_sizes)

    def _image_record(self, inspect: JSON, sizes: bool = True,
                      layer_sizes: _LayerSizes | None = None) -> ImageRecord:
        if not sizes:
            return image_record(inspect, [])
        diff_ids = (inspect.get("RootFS") or {}).get("Layers") or []
        on_disk = layer_sizes.of(diff_ids) if layer_sizes is not None else None
        return image_record(inspect, self._history(inspect["Id"]) if on_disk is None else [],
                            on_disk)

    def _history(self, image_id: str) -> list[JSON]:
        # History only feeds size estimates; with `storage-driver: overlay2` left in a
        # containerd-mode config it fails (`snapshotter not loaded`) while inspect works.
        try:
            path = f"/images/{image_id}/history"
            return cast(list[JSON], checked(HistoryEntry, self._get_json(path), path,
                                            many=True))
        except ReadFailed:
            return []

    def raw_image(self, ref: str) -> JSON | None:
        """The image's inspect answer as the daemon sent it; None when there is no such image."""
        with _mapped_errors(self.host, f"inspect image {ref}"):
            try:
                path = f"/images/{ref}/json"
                return cast(JSON, checked(ImageInspect, self._get_json(path), path))
            except ReadNotFound:
                return None

    def list_images(self, info: EngineInfo | None = None,
                    configs_from_disk: bool = False) -> tuple[ImageRecord, ...]:
        """Every image with its layer sizes; with the daemon's `info`, the sizes come from
        its layer store on disk when this host can read it (one API call per image less).
        `configs_from_disk` also reads each image's config there instead of inspecting it
        (`plan` on a big host); images whose config is not plainly readable are inspected."""
        # `all=False` hides intermediate build parents, which are not separate images to move.
        summaries = checked(ImageSummary, self._read("list images", "/images/json"),
                            "/images/json", many=True)
        layerdb = _legacy_store(info, "layerdb", "sha256") if info is not None else None
        layer_sizes = _LayerSizes(layerdb) if layerdb is not None else None
        imagedb = (_legacy_store(info, "imagedb", "content", "sha256")
                   if info is not None and configs_from_disk else None)

        read = {s["Id"]: _inspect_from_disk(imagedb, s) for s in summaries} if imagedb else {}
        # A config on disk the API's shape does not fit is asked of the daemon instead.
        read = {key: inspect if fits(ImageInspect, inspect) else None
                for key, inspect in read.items()}
        records: list[ImageRecord | None] = [
            self._image_record(inspect, layer_sizes=layer_sizes)
            for inspect in read.values() if inspect is not None]
        records += self._map(lambda image_id: self.inspect_image(image_id, layer_sizes=layer_sizes),
                             [s["Id"] for s in summaries if read.get(s["Id"]) is None])
        return tuple(sorted((r for r in records if r), key=lambda r: (r.tags, r.id)))

    def image_tags(self) -> dict[str, tuple[str, ...]]:
        """Image ID -> its tags, from the list call alone (what changed since a snapshot)."""
        summaries = self._read("list images", "/images/json")
        return {str(s["Id"]): tuple(t for t in s.get("RepoTags") or () if t != "<none>:<none>")
                for s in summaries}

    def list_containers(self, details: bool = True) -> tuple[ContainerRecord, ...]:
        """`details=False` skips the per-container inspect and diff calls (the full spec,
        changed writable layer): the inventory needs them, state checks do not."""
        summaries = checked(ContainerSummary, self._read(
            "list containers", "/containers/json", {"all": "1"}), "/containers/json", many=True)
        if not details:
            return tuple(sorted((container_record(s) for s in summaries), key=lambda r: r.name))
        paths = [f"/containers/{s['Id']}/json" for s in summaries]
        inspects: list[Any] = [
            inspected if isinstance(inspected, ReadFailed)
            else checked(ContainerInspect, inspected, path)
            for path, inspected in zip(paths, self._get_many(paths), strict=True)]
        found = [_known_layer(inspected) for inspected in inspects]
        # Only the containers whose writable layer must be asked about take more calls.
        asked = iter(self._map(self._diffed, [inspected for inspected, known
                                              in zip(inspects, found, strict=True)
                                              if known is None]))
        records = [container_record(s, *(known or next(asked)))
                   for s, known in zip(summaries, found, strict=True)]
        return tuple(sorted(records, key=lambda r: r.name))

    def _get_many(self, paths: Sequence[str]) -> list[Any]:
        """Many read-only calls at once: each answer, or the ReadFailed it raised."""
        if self._reads is None:
            def one(path: str) -> Any:
                try:
                    return self._get_json(path)
                except ReadFailed as failed:
                    return failed
            return self._map(one, paths)
        reads = self._reads
        share = -(-len(paths) // PIPELINES) or 1
        parts = [paths[i:i + share] for i in range(0, len(paths), share)]
        with _mapped_errors(self.host, "read the inventory"), \
                ThreadPoolExecutor(max_workers=PIPELINES) as pool:
            return [answer for part in pool.map(reads.get_many, parts) for answer in part]

    def _diffed(self, inspect: JSON) -> tuple[JSON, WritableLayer | None]:
        """The container and its writable layer, from `docker diff` (and its size)."""
        container_id = str(inspect["Id"])
        try:
            path = f"/containers/{container_id}/changes"
            diff = cast(list[JSON] | None,
                        checked(Change, self._get_json(path) or [], path, many=True))
        except ReadFailed:
            return inspect, None
        points = [str(m.get("Destination", "")) for m in inspect.get("Mounts") or ()]
        layer = writable_layer(diff, None, points)
        if layer is not None and layer.paths:
            # Sizing walks the layer: only for the containers that have one.
            layer = writable_layer(diff, self._size_rw(container_id), points)
        return inspect, layer

    def _size_rw(self, container_id: str) -> int | None:
        # The SDK's inspect_container cannot ask for sizes.
        try:
            path = f"/containers/{container_id}/json"
            answer = checked(ContainerInspect, self._get_json(path, {"size": "1"}), path)
            return int(answer.get("SizeRw") or 0)
        except ReadFailed:
            return None

    def inspect_container(self, ref: str) -> ContainerRecord | None:
        """One container with its full spec; None when there is no such container."""
        with _mapped_errors(self.host, f"inspect container {ref}"):
            try:
                path = f"/containers/{ref}/json"
                inspect = cast(JSON, checked(ContainerInspect, self._get_json(path), path))
            except ReadNotFound:
                return None
        summary = {"Id": inspect["Id"], "Names": [inspect.get("Name", "")],
                   "Labels": (inspect.get("Config") or {}).get("Labels") or {},
                   "State": (inspect.get("State") or {}).get("Status", "")}
        return container_record(summary, inspect)

    def create_container_from_spec(self, name: str, body: JSON) -> str:
        """`POST /containers/create` with a whole Config + HostConfig + NetworkingConfig."""
        created = self._call(f"create container {name}", self._api.create_container_from_config,
                             body, name=name)
        return str(checked(IdAnswer, created, "/containers/create")["Id"])

    def pause_container(self, container: str) -> None:
        self._call(f"pause container {container}", self._api.pause, container)

    def commit_container(self, container: str, repository: str, tag: str) -> str:
        """`docker commit` without pausing (the tool commits stopped containers only)."""
        answer = self._call(f"commit container {container}", self._api.commit, container,
                            repository=repository, tag=tag, pause=False)
        return str(checked(IdAnswer, answer, "/commit")["Id"])

    def list_volumes(self, containers: Iterable[ContainerRecord] = ()) -> tuple[VolumeRecord, ...]:
        answer = checked(VolumesAnswer, self._read("list volumes", "/volumes") or {}, "/volumes")
        users: dict[str, list[str]] = {}
        for container in containers:
            for mount in container.mounts:
                if mount.type == "volume" and mount.name:
                    users.setdefault(mount.name, []).append(container.name)
        return tuple(
            sorted(
                (
                    VolumeRecord(
                        name=v["Name"],
                        driver=v.get("Driver", "local"),
                        mountpoint=v.get("Mountpoint", "") or "",
                        labels=dict(v.get("Labels") or {}),
                        used_by=tuple(sorted(users.get(v["Name"], ()))),
                    )
                    for v in answer.get("Volumes") or ()
                ),
                key=lambda v: v.name,
            )
        )

    def inventory(self, info: EngineInfo | None = None,
                  configs_from_disk: bool = False) -> Inventory:
        """Everything the migration moves or keeps; `configs_from_disk`: see list_images."""
        info = info or self.info()
        containers = self.list_containers()
        return Inventory(
            taken_at=datetime.now(UTC),
            engine=info,
            images=self.list_images(info, configs_from_disk),
            containers=containers,
            volumes=self.list_volumes(containers),
        )

    def save(self, refs: list[str]) -> Iterator[bytes]:
        """Stream `docker save` of several references as raw tar chunks."""
        with _mapped_errors(self.host, f"save {len(refs)} image(s)"):
            # No read timeout: legacy save sends nothing until it has staged the whole batch.
            response = self._api._get(
                self._api._url("/images/get"), params={"names": refs}, stream=True, timeout=None
            )
            yield from self._api._stream_raw_result(response, CHUNK_SIZE, False)

    def load(self, chunks: Iterable[bytes], size: int | None = None) -> list[str]:
        """`docker load` from a stream of chunks; returns what the daemon said it loaded.

        With the total `size` the chunks go out as they are, under a Content-Length;
        without it, in chunked encoding, which copies every chunk once more.
        """
        loaded: list[str] = []
        body: Iterable[bytes] = chunks if size is None else _SizedBody(chunks, size)
        with _mapped_errors(self.host, "load an image archive"):
            # No read timeout: cd-mode load answers only once the content is ingested.
            response = self._api._post(
                self._api._url("/images/load"), data=body, stream=True, timeout=None
            )
            for message in self._api._stream_helper(response, decode=True):
                if not isinstance(message, dict):
                    continue  # not a progress message: nothing in it is read
                if "error" in message or "errorDetail" in message:
                    detail = message.get("error") or message.get("errorDetail")
                    raise EngineError(
                        f"the daemon failed to load an archive: {detail}",
                        "check that the archive is intact (its checksum) and that the "
                        "data-root filesystem has free space",
                    )
                stream = str(message.get("stream", "")).strip()
                for prefix in ("Loaded image: ", "Loaded image ID: "):
                    if stream.startswith(prefix):
                        loaded.append(stream[len(prefix) :])
        return loaded

    def create_container(self, image: str, name: str | None = None, labels: dict[str, str]
                         | None = None, volumes: Iterable[str] = (),
                         command: tuple[str, ...] = ("true",), restart_always: bool = False,
                         stop_signal: str | None = None) -> str:
        binds = {v: {"bind": f"/guard/{v}", "mode": "ro"} for v in volumes}
        config: dict[str, Any] = {}
        if binds:
            config["binds"] = binds
        if restart_always:
            config["restart_policy"] = {"Name": "always"}
        host_config = self._api.create_host_config(**config) if config else None
        created = self._call(
            f"create a container from {image}",
            self._api.create_container,
            image,
            command=list(command),
            name=name,
            labels=labels or {},
            host_config=host_config,
            stop_signal=stop_signal,
        )
        return str(checked(IdAnswer, created, "/containers/create")["Id"])

    def import_image(self, tarball: bytes, repository: str, tag: str) -> None:
        """`docker import`: an image whose single layer is `tarball`."""
        self._call(f"import {repository}:{tag}", self._api.import_image_from_data, tarball,
                   repository=repository, tag=tag)

    def running(self, container: str) -> bool:
        path = f"/containers/{container}/json"
        found = checked(ContainerInspect, self._read(f"inspect container {container}", path),
                        path)
        return bool((found.get("State") or {}).get("Running"))

    def remove_container(self, container: str, force: bool = False) -> None:
        self._call(f"remove container {container}", self._api.remove_container, container,
                   force=force)

    def stop_container(self, container: str, timeout: int = 10) -> None:
        self._call(f"stop container {container}", self._api.stop, container, timeout=timeout)

    def start_container(self, container: str) -> None:
        self._call(f"start container {container}", self._api.start, container)

    def remove_image(self, ref: str, force: bool = False) -> None:
        self._call(f"remove image {ref}", self._api.remove_image, ref, force=force)

    def tag_image(self, image: str, repository: str, tag: str) -> None:
        self._call(f"tag {image}", self._api.tag, image, repository, tag)

    def containers_with_label(self, label: str) -> list[str]:
        found = checked(ContainerSummary, self._read(
            "list containers", "/containers/json",
            {"all": "1", "filters": json.dumps({"label": [label]})}), "/containers/json",
            many=True)
        return [str(c["Id"]) for c in found]

    # --- multi-platform images (the verify phase's capability check) --------------------

    def image_manifests(self, ref: str) -> tuple[ImageManifest, ...] | None:
        """The platforms an image holds, from its inspect with the manifest list
        (`manifests=1`, API 1.48+, Engine 28); None when the daemon's API has no such list:
        Engine 26's inspect describes the native platform only (docs/engine-facts.md)."""
        if _api_at_least(self.api_version, MANIFESTS_API):
            inspect = self._read(f"inspect image {ref}", f"/images/{ref}/json",
                                 {"manifests": "1"})
            return image_manifests(inspect)
        return None

    def create_for_platform(self, image: str, platform: str, name: str,
                            labels: dict[str, str], command: tuple[str, ...]) -> str:
        """Create (not start) a container from `platform`'s manifest of a multi-platform
        image: the daemon refuses when the image does not hold that platform."""
        created = self._call(f"create a {platform} container from {image}",
                             self._api.create_container, image, command=list(command),
                             name=name, labels=labels, platform=platform)
        return str(created["Id"])

    def discard_container(self, container: str) -> None:
        """Remove a throw-away container with its anonymous volumes: without `v`, every
        container of an image that declares VOLUME leaves an empty volume behind."""
        self._call(f"remove container {container}", self._api.remove_container, container,
                   force=True, v=True)


# The first API version whose image inspect lists an image's manifests (Engine 28.0).
MANIFESTS_API = (1, 48)


def _api_at_least(version: str, wanted: tuple[int, int]) -> bool:
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= wanted


def probe(host: str, timeout: float = PROBE_TIMEOUT) -> EngineInfo:
    """`docker info` of the daemon at `host` with a short timeout, on a fresh connection.

    Raises EngineUnreachable while the daemon does not answer (e.g. during a restart).
    """
    with Engine(host, timeout=timeout) as engine:
        return engine.info()
