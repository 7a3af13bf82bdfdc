"""How the engine reads the daemon's API: the read protocol, and what its answers mean.

`Engine` (client.py) reads the API through a `Reads`: `unix_http.UnixReads`, its own
pipelined HTTP/1.1 reader, on a local socket; `sdk_reads.SdkReads` on any other address
(`--host tcp://...`), through the docker SDK. Both answer the same way: the decoded JSON, or
`ReadNotFound` (404) / `ReadFailed` (any other error status, or a body that is not JSON) /
`ProtocolError` (an answer that is not HTTP). Writes always go through the SDK (client.py),
imported only when needed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from migrate.errors import EngineError


class ReadFailed(Exception):
    """A read-only call the daemon answered with an error status."""

    def __init__(self, status: int, explanation: str):
        super().__init__(explanation)
        self.status = status
        self.explanation = explanation


class ReadNotFound(ReadFailed):
    """404: no such image, container, ... (the only status that means "not there")."""


class ProtocolError(Exception):
    """Something answered, but not as a daemon does: not HTTP, a malformed length, an
    over-long line. Not a connection problem: the peer is there."""


class Reads(Protocol):
    """Read-only calls to the daemon's API."""

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """The decoded answer to `GET path`; ReadNotFound, ReadFailed or ProtocolError."""
        ...

    def get_all(self, paths: Sequence[str]) -> list[Any]:
        """The answers to many GETs, in order; a failed call's place holds its ReadFailed."""
        ...

    def close(self) -> None:
        ...


def answer(status: int, body: bytes) -> Any:
    """The decoded JSON of an answer, or the error its status means."""
    if status == 404:
        raise ReadNotFound(status, message(body))
    if status >= 400:
        raise ReadFailed(status, message(body))
    try:
        return json.loads(body)
    except ValueError:
        # Kept a failed read (not a ProtocolError): the reads that may fail (history, diff)
        # go on without it, as they always did.
        raise ReadFailed(status, f"its answer is not JSON: {body[:80]!r}") from None


def message(body: bytes) -> str:
    """The daemon's error message (`{"message": ...}`), else the body as text."""
    try:
        return str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        return body.decode(errors="replace").strip()


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


def too_large(path: str) -> EngineError:
    limit = answer_limit(path)
    return EngineError(
        f"the Docker daemon's answer to {path} is larger than {limit // MiB} MiB; it was "
        "not read further",
        "check that --host is a Docker daemon and that nothing between us and it rewrites "
        "its answers (a daemon's answers are far smaller)")
