"""`transport.Reads` through the docker SDK: the reads of a daemon not on a local socket
(`--host tcp://...`). The SDK is imported by the engine before any read (it made a client)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from migrate.engine.transport import ReadFailed, ReadNotFound

if TYPE_CHECKING:
    import docker


class SdkReads:
    """`Reads` through the docker SDK: `api()` is this thread's client, `parallel` maps a
    function over items on the engine's worker threads (each with its own client)."""

    def __init__(self, api: Callable[[], docker.APIClient],
                 parallel: Callable[[Callable[[str], Any], Iterable[str]], list[Any]]):
        self._api = api
        self._parallel = parallel

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        import docker.errors  # noqa: PLC0415  (the SDK is loaded already: `api` made a client)

        api = self._api()
        try:
            return api._result(api._get(api._url("{0}", path), params=params), True)
        except docker.errors.NotFound as exc:
            raise ReadNotFound(404, str(exc.explanation or exc)) from exc
        except docker.errors.APIError as exc:
            raise ReadFailed(exc.status_code or 500, str(exc.explanation or exc)) from exc

    def get_all(self, paths: Sequence[str]) -> list[Any]:
        def one(path: str) -> Any:
            try:
                return self.get(path)
            except ReadFailed as failed:
                return failed
        return self._parallel(one, paths)

    def close(self) -> None:
        """The clients are the engine's: it closes them."""
