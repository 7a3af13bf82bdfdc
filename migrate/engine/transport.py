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
