"""The typed boundary to the Docker Engine API: with `convert`, the only code that touches `docker`.

The SDK returns untyped dicts; every method here turns them into the frozen models of
`migrate.models` at once (through `convert`), so nothing else in the product depends on
the raw API shapes. Errors from the SDK are mapped to `EngineUnreachable` / `EngineError`
with hints.

`save` and `load` use the SDK's private request helpers (`_get`, `_post`, `_url`,
`_stream_raw_result`, `_stream_helper`): the public `get_image`/`load_image` cannot stream
a request body with a known Content-Length, nor turn off the read timeout for one call,
and both matter for multi-gigabyte archives. pyproject.toml pins the SDK to the tested
range for that reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, cast

import docker
import docker.errors
import requests.exceptions

from migrate.engine.convert import JSON, engine_info, image_record
from migrate.errors import EngineError, EngineUnreachable
from migrate.models import (
    ContainerRecord,
    EngineInfo,
    ImageRecord,
    Inventory,
    MountRecord,
    VolumeRecord,
)

CHUNK_SIZE = 1024 * 1024
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
# One short API answer: a daemon that hangs half-started must not eat a whole deadline.
PROBE_TIMEOUT = 5.0


def _unreachable_hint(host: str) -> str:
    return (
        f"check that dockerd is running and that {host} is the right address "
        "(--host or DOCKER_HOST), and that you may use its socket (usually: run as root); "
        "a migration that stopped here resumes with `containerd-migrate run` once the "
        "daemon answers, or is undone with `containerd-migrate rollback`"
    )


@contextmanager
def _mapped_errors(host: str, action: str) -> Iterator[None]:
    try:
        yield
    except (requests.exceptions.ConnectionError, FileNotFoundError, ConnectionError) as exc:
        raise EngineUnreachable(
            f"cannot reach the Docker daemon at {host} while trying to {action}: {exc}",
            _unreachable_hint(host),
        ) from exc
    except requests.exceptions.Timeout as exc:
        raise EngineUnreachable(
            f"the Docker daemon at {host} did not answer in time while trying to {action}",
            "the daemon may be overloaded or hung; check `journalctl -u docker` and retry",
        ) from exc
    except docker.errors.DockerException as exc:
        explanation = getattr(exc, "explanation", None) or str(exc)
        if "Connection" in str(exc) or "No such file" in str(exc):
            raise EngineUnreachable(
                f"cannot reach the Docker daemon at {host}: {explanation}",
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


class Engine:
    """A connection to one Docker daemon."""

    def __init__(self, host: str, timeout: float = 120.0):
        self.host = host
        with _mapped_errors(host, "connect"):
            self._api = docker.APIClient(base_url=host, version="auto", timeout=timeout)

    def close(self) -> None:
        self._api.close()

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

    def inspect_image(self, ref: str, sizes: bool = True) -> ImageRecord | None:
        """`sizes=False` skips the history call: only the estimates need layer sizes."""
        inspect = self.raw_image(ref)
        if inspect is None:
            return None
        return image_record(inspect, self._history(inspect["Id"]) if sizes else [])

    def _history(self, image_id: str) -> list[JSON]:
        # History only feeds size estimates; with `storage-driver: overlay2` left in a
        # containerd-mode config it fails (`snapshotter not loaded`) while inspect works.
        try:
            return cast(list[JSON], self._api.history(image_id))
        except docker.errors.APIError:
            return []

    def raw_image(self, ref: str) -> JSON | None:
        """The image's inspect answer as the daemon sent it; None when there is no such image."""
        with _mapped_errors(self.host, f"inspect image {ref}"):
            try:
                return cast(JSON, self._api.inspect_image(ref))
            except docker.errors.NotFound:
                return None

    def list_images(self) -> tuple[ImageRecord, ...]:
        # `all=False` hides intermediate build parents, which are not separate images to move.
        summaries = self._call("list images", self._api.images)
        records = [self.inspect_image(s["Id"]) for s in summaries]
        return tuple(sorted((r for r in records if r), key=lambda r: (r.tags, r.id)))

    def list_containers(self, details: bool = True) -> tuple[ContainerRecord, ...]:
        """`details=False` skips the per-container inspect and diff calls (restart policy,
        changed writable layer): the inventory needs them, state checks do not."""
        summaries = self._call("list containers", self._api.containers, all=True)
        records = []
        for s in summaries:
            labels = s.get("Labels") or {}
            mounts = tuple(
                MountRecord(
                    type=m.get("Type", ""),
                    name=m.get("Name", "") or "",
                    source=m.get("Source", "") or "",
                    destination=m.get("Destination", ""),
                    rw=bool(m.get("RW", True)),
                )
                for m in s.get("Mounts") or ()
            )
            records.append(
                ContainerRecord(
                    id=s["Id"],
                    name=(s.get("Names") or ["/" + s["Id"][:12]])[0].lstrip("/"),
                    image=s.get("Image", ""),
                    image_id=s.get("ImageID", ""),
                    state=s.get("State", ""),
                    restart_policy=self._restart_policy(s["Id"]) if details else "",
                    compose_project=labels.get(COMPOSE_PROJECT_LABEL),
                    mounts=mounts,
                    has_changes=self._has_changes(s["Id"]) if details else None,
                )
            )
        return tuple(sorted(records, key=lambda r: r.name))

    def _restart_policy(self, container_id: str) -> str:
        try:
            inspect = self._api.inspect_container(container_id)
        except docker.errors.APIError:
            return ""
        return str(((inspect.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name", ""))

    def _has_changes(self, container_id: str) -> bool | None:
        try:
            return bool(self._api.diff(container_id))
        except docker.errors.APIError:
            return None

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
            images=self.list_images(),
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
