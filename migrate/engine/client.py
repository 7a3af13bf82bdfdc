"""The typed boundary to the Docker Engine API: with `convert`, the only code that touches `docker`.

The SDK returns untyped dicts; every method here turns them into the frozen models of
`migrate.models` at once (through `convert`), so nothing else in the product depends on
the raw API shapes. Errors from the SDK are mapped to `EngineUnreachable` / `EngineError`
with hints.

Read-only inventory calls on a unix socket (`_UnixReads`) bypass the SDK's requests stack:
measured on 1,000 images, an image inspect costs 0.85 ms over a plain keep-alive
`http.client` connection and 4.3 ms through the SDK, and `plan` makes two or three such
calls per image and container. Everything that changes the host still goes through the SDK.

`save` and `load` use the SDK's private request helpers (`_get`, `_post`, `_url`,
`_stream_raw_result`, `_stream_helper`): the public `get_image`/`load_image` cannot stream
a request body with a known Content-Length, nor turn off the read timeout for one call,
and both matter for multi-gigabyte archives. pyproject.toml pins the SDK to the tested
range for that reason.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import docker
import docker.errors
import requests.exceptions

from migrate.engine.convert import (
    JSON,
    chain_ids,
    container_record,
    engine_info,
    image_record,
    writable_layer,
)
from migrate.errors import EngineError, EngineUnreachable, UsageError
from migrate.models import (
    ContainerRecord,
    EngineInfo,
    ImageRecord,
    Inventory,
    VolumeRecord,
    WritableLayer,
)

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


def base_url(host: str) -> str:
    """The SDK's address for `host`; a bare socket path is taken as unix://PATH."""
    if host.startswith("/"):
        return f"unix://{host}"
    if "://" not in host:
        raise UsageError(
            f"--host {host!r} is neither a URL nor an absolute socket path",
            "use unix:///path/to/docker.sock (or the path itself), or tcp://HOST:2375",
        )
    return host


@contextmanager
def _mapped_errors(host: str, action: str) -> Iterator[None]:
    try:
        yield
    except (requests.exceptions.ConnectionError, FileNotFoundError, ConnectionError) as exc:
        raise EngineUnreachable(
            f"cannot reach the Docker daemon at {host} ({_reason(exc)}) while trying to "
            f"{action}", _unreachable_hint(host),
        ) from exc
    except (requests.exceptions.Timeout, TimeoutError) as exc:
        raise EngineUnreachable(
            f"the Docker daemon at {host} did not answer in time while trying to {action}",
            "the daemon may be overloaded or hung; check `journalctl -u docker` and retry",
        ) from exc
    except docker.errors.DockerException as exc:
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


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class _UnixReads:
    """`GET` + JSON decode over the daemon's unix socket, one keep-alive connection per
    thread. Answers as the SDK would: NotFound for 404, APIError for other failures."""

    def __init__(self, path: str, version: str, timeout: float):
        self._path = path
        self._prefix = f"/v{version}"
        self._timeout = timeout
        self._local = threading.local()
        self._opened: list[_UnixConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> _UnixConnection:
        conn: _UnixConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _UnixConnection(self._path, self._timeout)
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        url = self._prefix + urllib.parse.quote(path, safe="/:")
        if params:
            url += "?" + urllib.parse.urlencode(params)
        conn = self._connection()
        for attempt in (1, 2):
            try:
                conn.request("GET", url)
                response = conn.getresponse()
                body = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # The daemon closed an idle keep-alive connection: one fresh try.
                conn.close()
                if attempt == 2:
                    raise
        if response.status == 404:
            raise docker.errors.NotFound(_message(body))
        if response.status >= 400:
            raise docker.errors.APIError(_message(body))
        return json.loads(body)

    def close(self) -> None:
        for conn in self._opened:
            conn.close()


def _layerdb(info: EngineInfo) -> Path | None:
    """The legacy layer store's metadata dir, when this process can see it."""
    if info.legacy_driver is None or not info.data_root:
        return None
    folder = Path(info.data_root) / "image" / info.legacy_driver / "layerdb" / "sha256"
    return folder if folder.is_dir() else None


def _disk_layer_sizes(layerdb: Path, diff_ids: Iterable[str]) -> tuple[int, ...] | None:
    """Each layer's size as the legacy store recorded it (the number `docker history`
    reports); None as soon as one is missing or unreadable: then history is asked."""
    sizes = []
    for chain in chain_ids(diff_ids):
        try:
            size = int((layerdb / chain.removeprefix("sha256:") / "size").read_text()[:32])
        except (OSError, ValueError):
            return None
        if size < 0:
            return None
        sizes.append(size)
    return tuple(sizes)


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


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        return body.decode(errors="replace").strip()


# Inventory calls (one inspect per image and container, one diff per container) run on
# this many connections at once: serial, they made `plan` 5x slower than the docker CLI on
# 1,000 images. Each worker thread has its own APIClient: a requests Session is not
# documented as thread-safe.
PARALLEL_CALLS = 8


class Engine:
    """A connection to one Docker daemon."""

    def __init__(self, host: str, timeout: float = 120.0):
        self.host = host
        self._timeout = timeout
        self._local = threading.local()
        self._workers: list[docker.APIClient] = []
        self._workers_lock = threading.Lock()
        with _mapped_errors(host, "connect"):
            url = base_url(host)
            self._main = docker.APIClient(base_url=url, version="auto", timeout=timeout)
        self._reads = (_UnixReads(url.removeprefix("unix://"), self._main.api_version, timeout)
                       if url.startswith("unix://") else None)

    @property
    def _api(self) -> docker.APIClient:
        """This thread's client: the main one, or a worker's own (see PARALLEL_CALLS)."""
        if threading.current_thread() is threading.main_thread():
            return self._main
        api: docker.APIClient | None = getattr(self._local, "api", None)
        if api is None:
            # The negotiated version is reused: no /version round trip per worker.
            api = docker.APIClient(base_url=base_url(self.host), version=self._main.api_version,
                                   timeout=self._timeout)
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
        self._main.close()

    def _get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """A read-only API call, e.g. `/images/{id}/json`; raises the SDK's errors."""
        if self._reads is not None:
            return self._reads.get(path, params)
        api = self._api
        return api._result(api._get(api._url("{0}", path), params=params), True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _call(self, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with _mapped_errors(self.host, action):
            return fn(*args, **kwargs)

    def info(self) -> EngineInfo:
        info = self._call("read `docker info`", self._api.info)
        version = self._call("read `docker version`", self._api.version)
        return engine_info(info, version)

    def inspect_image(self, ref: str, sizes: bool = True,
                      layerdb: Path | None = None) -> ImageRecord | None:
        """`sizes=False` skips the layer sizes: only the estimates need them. They are read
        from the legacy layer store's `layerdb` when given and readable, else from history."""
        inspect = self.raw_image(ref)
        if inspect is None:
            return None
        if not sizes:
            return image_record(inspect, [])
        diff_ids = (inspect.get("RootFS") or {}).get("Layers") or []
        on_disk = _disk_layer_sizes(layerdb, diff_ids) if layerdb is not None else None
        return image_record(inspect, self._history(inspect["Id"]) if on_disk is None else [],
                            on_disk)

    def _history(self, image_id: str) -> list[JSON]:
        # History only feeds size estimates; with `storage-driver: overlay2` left in a
        # containerd-mode config it fails (`snapshotter not loaded`) while inspect works.
        try:
            return cast(list[JSON], self._get_json(f"/images/{image_id}/history"))
        except docker.errors.APIError:
            return []

    def raw_image(self, ref: str) -> JSON | None:
        """The image's inspect answer as the daemon sent it; None when there is no such image."""
        with _mapped_errors(self.host, f"inspect image {ref}"):
            try:
                return cast(JSON, self._get_json(f"/images/{ref}/json"))
            except docker.errors.NotFound:
                return None

    def list_images(self, info: EngineInfo | None = None) -> tuple[ImageRecord, ...]:
        """Every image with its layer sizes; with the daemon's `info`, the sizes come from
        its layer store on disk when this host can read it (one API call per image less)."""
        # `all=False` hides intermediate build parents, which are not separate images to move.
        summaries = self._call("list images", self._api.images)
        layerdb = _layerdb(info) if info is not None else None
        records = self._map(lambda image_id: self.inspect_image(image_id, layerdb=layerdb),
                            [s["Id"] for s in summaries])
        return tuple(sorted((r for r in records if r), key=lambda r: (r.tags, r.id)))

    def list_containers(self, details: bool = True) -> tuple[ContainerRecord, ...]:
        """`details=False` skips the per-container inspect and diff calls (the full spec,
        changed writable layer): the inventory needs them, state checks do not."""
        summaries = self._call("list containers", self._api.containers, all=True)
        if not details:
            return tuple(sorted((container_record(s) for s in summaries), key=lambda r: r.name))
        found = self._map(self._details, [s["Id"] for s in summaries])
        records = [container_record(s, inspect, layer)
                   for s, (inspect, layer) in zip(summaries, found, strict=True)]
        return tuple(sorted(records, key=lambda r: r.name))

    def _details(self, container_id: str) -> tuple[JSON | None, WritableLayer | None]:
        # A container removed between the list and these calls is kept with what the list
        # said: the snapshot must not fail on a host that is in use.
        try:
            inspect = cast(JSON, self._get_json(f"/containers/{container_id}/json"))
        except docker.errors.APIError:
            return None, None
        if _upper_dir_empty(inspect):
            return inspect, writable_layer([], 0, [])
        try:
            diff = cast(list[JSON] | None,
                        self._get_json(f"/containers/{container_id}/changes")) or []
        except docker.errors.APIError:
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
            answer = self._get_json(f"/containers/{container_id}/json", {"size": "1"})
            return int(answer.get("SizeRw") or 0)
        except docker.errors.APIError:
            return None

    def inspect_container(self, ref: str) -> ContainerRecord | None:
        """One container with its full spec; None when there is no such container."""
        with _mapped_errors(self.host, f"inspect container {ref}"):
            try:
                inspect = cast(JSON, self._api.inspect_container(ref))
            except docker.errors.NotFound:
                return None
        summary = {"Id": inspect["Id"], "Names": [inspect.get("Name", "")],
                   "Labels": (inspect.get("Config") or {}).get("Labels") or {},
                   "State": (inspect.get("State") or {}).get("Status", "")}
        return container_record(summary, inspect)

    def create_container_from_spec(self, name: str, body: JSON) -> str:
        """`POST /containers/create` with a whole Config + HostConfig + NetworkingConfig."""
        created = self._call(f"create container {name}", self._api.create_container_from_config,
                             body, name=name)
        return str(created["Id"])

    def pause_container(self, container: str) -> None:
        self._call(f"pause container {container}", self._api.pause, container)

    def commit_container(self, container: str, repository: str, tag: str) -> str:
        """`docker commit` without pausing (the tool commits stopped containers only)."""
        answer = self._call(f"commit container {container}", self._api.commit, container,
                            repository=repository, tag=tag, pause=False)
        return str(answer["Id"])

    def list_volumes(self, containers: Iterable[ContainerRecord] = ()) -> tuple[VolumeRecord, ...]:
        answer = self._call("list volumes", self._api.volumes) or {}
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

    def inventory(self) -> Inventory:
        info = self.info()
        containers = self.list_containers()
        return Inventory(
            taken_at=datetime.now(UTC),
            engine=info,
            images=self.list_images(info),
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
                         ) -> str:
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
        )
        return str(created["Id"])

    def import_image(self, tarball: bytes, repository: str, tag: str) -> None:
        """`docker import`: an image whose single layer is `tarball`."""
        self._call(f"import {repository}:{tag}", self._api.import_image_from_data, tarball,
                   repository=repository, tag=tag)

    def running(self, container: str) -> bool:
        found = self._call(f"inspect container {container}", self._api.inspect_container,
                           container)
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
        found = self._call("list containers", self._api.containers, all=True,
                           filters={"label": label})
        return [str(c["Id"]) for c in found]


def probe(host: str, timeout: float = PROBE_TIMEOUT) -> EngineInfo:
    """`docker info` of the daemon at `host` with a short timeout, on a fresh connection.

    Raises EngineUnreachable while the daemon does not answer (e.g. during a restart).
    """
    with Engine(host, timeout=timeout) as engine:
        return engine.info()
