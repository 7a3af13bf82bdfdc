"""An in-memory daemon behind the engine's read protocol (`transport.Reads`), the idea of
httpx's MockTransport: a real `Engine` (its conversions, checks and error mapping) over a
table of answers, for unit tests of code that reads the daemon. Writes are not faked."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from migrate.engine.client import Engine
from migrate.engine.transport import ReadFailed, ReadNotFound


class MemoryReads:
    """`Reads` from `routes` (a path without its version prefix -> the JSON answer, or an
    exception to raise: ReadFailed, ConnectionRefusedError ...); anything else is a 404."""

    def __init__(self, routes: dict[str, Any]):
        self.routes = routes
        self.asked: list[str] = []

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        self.asked.append(path)
        if path not in self.routes:
            raise ReadNotFound(404, f"no such thing: {path}")
        found = self.routes[path]
        if isinstance(found, BaseException):
            raise found
        return copy.deepcopy(found)

    def get_all(self, paths: Sequence[str]) -> list[Any]:
        answers: list[Any] = []
        for path in paths:
            try:
                answers.append(self.get(path))
            except ReadFailed as failed:
                answers.append(failed)
        return answers

    def close(self) -> None:
        return None


def memory_engine(routes: dict[str, Any]) -> Engine:
    """An Engine reading from `routes` (e.g. tests.unit.fake_api.populated_daemon)."""
    return Engine("unix:///memory/docker.sock", reads=MemoryReads(routes))
