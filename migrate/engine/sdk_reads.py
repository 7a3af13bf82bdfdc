"""`transport.Reads` through the docker SDK: the reads of a daemon not on a local socket
(`--host tcp://...`). The SDK is imported by the engine before any read (it made a client).

Bounded like the unix reader: every answer is streamed and read no further than its
endpoint's size limit, and every request ends at a total deadline however slowly the peer
sends (the SDK's own timeout is per read: an answer trickled a byte a second never meets it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from migrate.engine.transport import ReadFailed, answer, answer_limit, too_large

# How much of an answer is read at a time: small enough that a huge answer is stopped
# early, large enough that a normal one takes few reads.
CHUNK_BYTES = 64 * 1024

if TYPE_CHECKING:
    import docker


class SdkReads:
    """`Reads` through the docker SDK: `api()` is this thread's client, `parallel` maps a
    function over items on the engine's worker threads (each with its own client)."""

    def __init__(self, api: Callable[[], docker.APIClient],
                 parallel: Callable[[Callable[[str], Any], Iterable[str]], list[Any]],
                 timeout: float = 60.0):
        self._api = api
        self._parallel = parallel
        self._timeout = timeout

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        api = self._api()
        deadline = time.monotonic() + self._timeout
        response = api._get(api._url("{0}", path), params=params, stream=True)
        # At the deadline the connection is closed under the read, which then ends.
        watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), response.close)
        watchdog.daemon = True
        watchdog.start()
        try:
            body = _bounded_body(response, answer_limit(path), path)
        except Exception:
            if time.monotonic() >= deadline:
                raise TimeoutError("the daemon's answer did not arrive in time") from None
            raise
        finally:
            watchdog.cancel()
            response.close()
        if time.monotonic() >= deadline:
            raise TimeoutError("the daemon's answer did not arrive in time")
        return answer(response.status_code, body)

    def get_all(self, paths: Sequence[str]) -> list[Any]:
        def one(path: str) -> Any:
            try:
                return self.get(path)
            except ReadFailed as failed:
                return failed
        return self._parallel(one, paths)

    def close(self) -> None:
        """The clients are the engine's: it closes them."""


def _bounded_body(response: Any, limit: int, path: str) -> bytes:
    pieces: list[bytes] = []
    read = 0
    for piece in response.iter_content(CHUNK_BYTES):
        read += len(piece)
        if read > limit:
            raise too_large(path)
        pieces.append(piece)
    return b"".join(pieces)
