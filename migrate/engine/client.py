"""The typed boundary to the Docker Engine API: the only module that imports `docker`.

The SDK returns untyped dicts; every method here turns them into the frozen models of
`migrate.models` at once (through `convert`), so nothing else in the product depends on
the raw API shapes. Errors from the SDK are mapped to `EngineUnreachable` / `EngineError`
with hints.

Reads go through a `transport.Reads`: on a unix socket `unix_http.UnixReads` (the engine's
own pipelined HTTP/1.1 reader), elsewhere `sdk_reads.SdkReads`. The SDK (docker, requests,
urllib3: a fifth of a second to import) is imported only when a call needs it: everything
that changes the host, and every call to a daemon that is not on a local socket. `plan` and
`status` on a local daemon never load it. What is read from the data root's files instead
of the API is `legacy_store`'s.

`save` and `load` use the SDK's private request helpers (`_get`, `_post`, `_url`,
`_stream_raw_result`, `_stream_helper`): the public `get_image`/`load_image` cannot stream
a request body with a known Content-Length, nor turn off the read timeout for one call,
and both matter for multi-gigabyte archives. pyproject.toml pins the SDK to the tested
range for that reason.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

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
    checked,
    container_record,
    engine_info,
    fits,
    image_manifests,
    image_record,
    writable_layer,
)
from migrate.engine.legacy_store import (
    LayerSizes,
    image_folder,
    inspect_from_disk,
    upper_dir_empty,
)
from migrate.engine.sdk_reads import SdkReads
from migrate.engine.transport import ProtocolError, ReadFailed, ReadNotFound, Reads
from migrate.engine.unix_http import UnixReads
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
    except ProtocolError as exc:
        # The peer answered: it is there, but what it says is not the daemon's API.
        raise EngineError(
            f"{host} sent a garbled answer while trying to {action}: {exc}",
            "check that --host is a Docker daemon and that nothing between us and it "
            "rewrites its answers; see the daemon log (journalctl -u docker)",
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


def _removed_or_raise(host: str, path: str, failed: ReadFailed) -> ReadNotFound:
    """A container inspect that failed: removed since the list (404) is kept; any other
    error (a 500 of a daemon in trouble) is the daemon's refusal, not a removal."""
    if isinstance(failed, ReadNotFound):
        return failed
    with _mapped_errors(host, f"inspect {path.removesuffix('/json').lstrip('/')}"):
        raise failed


def _known_layer(inspected: JSON | ReadNotFound,
                 ) -> tuple[JSON | None, WritableLayer | None] | None:
    """A container's inspect and writable layer when no more calls are needed: it was
    removed since the list (404 only: kept with what the list said, the snapshot must not
    fail on a host in use), or its upper dir is empty. None: ask `docker diff`."""
    if isinstance(inspected, ReadNotFound):
        return None, None
    if upper_dir_empty(inspected):
        return inspected, writable_layer([], 0, [])
    return None


# Inventory calls that cannot be pipelined (image inspects, diffs: one after the other per
# image or container) run on this many connections at once: serial, they made `plan` 5x
# slower than the docker CLI on 1,000 images. Each worker thread has its own connection
# (and APIClient, for a remote daemon: a requests Session is not documented as thread-safe).
PARALLEL_CALLS = 8


class Engine:
    """A connection to one Docker daemon."""

    def __init__(self, host: str, timeout: float = 120.0, reads: Reads | None = None):
        """`reads`: the transport of the read-only calls (tests: an in-memory one); by
        default the unix reader on a local socket, else the SDK."""
        self.host = host
        self._timeout = timeout
        self._local = threading.local()
        self._main_api: docker.APIClient | None = None
        self._workers: list[docker.APIClient] = []
        self._workers_lock = threading.Lock()
        self._version: JSON | None = None
        url = base_url(host)
        unix = (UnixReads(url.removeprefix("unix://"), timeout)
                if reads is None and url.startswith("unix://") else None)
        self._reads: Reads = reads or unix or SdkReads(lambda: self._api, self._map, timeout)
        # Connect at once, as the SDK's `version="auto"` does: a dead socket fails here.
        with _mapped_errors(host, "connect"):
            if unix is not None:
                self._version = unix.negotiate()
            elif reads is not None:
                self._version = cast(JSON, checked(VersionAnswer, reads.get("/version"),
                                                   "/version"))
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
        self._reads.close()
        for api in self._workers:
            api.close()
        if self._main_api is not None:
            self._main_api.close()

    def _get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """A read-only API call, e.g. `/images/{id}/json`; raises ReadNotFound (404),
        ReadFailed (other error statuses) or ProtocolError, whichever way it went."""
        return self._reads.get(path, params)

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
                      layer_sizes: LayerSizes | None = None) -> ImageRecord | None:
        """`sizes=False` skips the layer sizes: only the estimates need them. They are read
        from the legacy layer store when given and readable, else from history."""
        inspect = self.raw_image(ref)
        if inspect is None:
            return None
        return self._image_record(inspect, sizes, layer_sizes)

    def _image_record(self, inspect: JSON, sizes: bool = True,
                      layer_sizes: LayerSizes | None = None) -> ImageRecord:
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

    def list_images(self, info: EngineInfo | None = None) -> tuple[ImageRecord, ...]:
        """Every image with its layer sizes. With the daemon's `info`, each image's config
        and layer sizes come from its legacy store on disk when this host can read it (no
        API call per image: an inspect costs the daemon and this process 0.4 ms of CPU
        each); an image whose config is not plainly readable there is inspected. Without
        `info`, every image is inspected and its sizes read from history. `plan`, the
        snapshot and `rehearse` all read with `info`."""
        # `all=False` hides intermediate build parents, which are not separate images to move.
        summaries = checked(ImageSummary, self._read("list images", "/images/json"),
                            "/images/json", many=True)
        layerdb = image_folder(info, "layerdb", "sha256") if info is not None else None
        layer_sizes = LayerSizes(layerdb) if layerdb is not None else None
        imagedb = image_folder(info, "imagedb", "content", "sha256") if info is not None else None

        read = {s["Id"]: inspect_from_disk(imagedb, s) for s in summaries} if imagedb else {}
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
            _removed_or_raise(self.host, path, inspected) if isinstance(inspected, ReadFailed)
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
        with _mapped_errors(self.host, "read the inventory"):
            return self._reads.get_all(paths)

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

    def inventory(self, info: EngineInfo | None = None) -> Inventory:
        """Everything the migration moves or keeps; images as `list_images(info)` reads them."""
        info = info or self.info()
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
