"""A fake Docker API for unit tests: a unix socket only (never a network port) answering
GETs from a table, or in whatever hostile way a test writes raw."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Writes a whole answer (status line, headers, body) in its own way: slowly, huge, ...
RawAnswer = Callable[[socket.socket], None]


def empty_daemon(data_root: Path) -> dict[str, Any]:
    """The answers of a legacy-store daemon with nothing on it."""
    return {
        "/_ping": "OK",
        "/version": {"Version": "26.1.5", "ApiVersion": "1.45", "Os": "linux"},
        "/info": {"ID": "FAKE:DAEMON", "Driver": "overlay2",
                  "DriverStatus": [["Backing Filesystem", "extfs"]],
                  "DockerRootDir": str(data_root), "OSType": "linux",
                  "Architecture": "x86_64", "KernelVersion": "6.1", "SecurityOptions": [],
                  "Containerd": {"Address": "/run/containerd/containerd.sock"}},
        "/images/json": [],
        "/containers/json": [],
        "/volumes": {"Volumes": [], "Warnings": None},
    }


def json_answer(value: Any, status: str = "200 OK") -> bytes:
    body = json.dumps(value).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class FakeApi:
    """Serves `routes` (a path without its /vX.Y prefix and query -> a JSON value, or a
    RawAnswer) on `path`; anything else is a 404. `asked` lists the paths asked."""

    def __init__(self, path: Path, routes: dict[str, Any]):
        self.path = path
        self.routes = routes
        self.asked: list[str] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            reader = conn.makefile("rb")
            while line := reader.readline():
                while reader.readline() not in (b"\r\n", b"\n", b""):
                    pass
                target = line.split()[1].decode().split("?", 1)[0]
                parts = target.split("/", 2)
                if len(parts) > 2 and parts[1].startswith("v") and parts[1][1:2].isdigit():
                    target = "/" + parts[2]
                self.asked.append(target)
                route = self.routes.get(target)
                if callable(route):
                    route(conn)
                elif route is None:
                    conn.sendall(json_answer({"message": f"no such thing: {target}"},
                                             "404 Not Found"))
                else:
                    conn.sendall(json_answer(route))

    def close(self) -> None:
        self._server.close()


@contextlib.contextmanager
def fake_api(folder: Path, routes: dict[str, Any]) -> Iterator[FakeApi]:
    api = FakeApi(folder / "docker.sock", routes)
    try:
        yield api
    finally:
        api.close()


IMAGE_ID = "sha256:" + "a" * 64
CONTAINER_ID = "c" * 64


def populated_daemon(data_root: Path) -> dict[str, Any]:
    """`empty_daemon` with one image and one stopped container made from it."""
    routes = empty_daemon(data_root)
    config = {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Labels": {"a": "b"}}
    routes["/images/json"] = [{"Id": IMAGE_ID, "RepoTags": ["app:1"], "RepoDigests": [],
                               "Size": 10}]
    routes[f"/images/{IMAGE_ID}/json"] = {
        "Id": IMAGE_ID, "RepoTags": ["app:1"], "RepoDigests": [],
        "Created": "2024-05-06T07:08:09Z", "Os": "linux", "Architecture": "amd64",
        "RootFS": {"Type": "layers", "Layers": ["sha256:" + "1" * 64]}, "Size": 10,
        "Config": config}
    routes[f"/images/{IMAGE_ID}/history"] = [{"Id": IMAGE_ID, "Size": 10}]
    routes["/containers/json"] = [{
        "Id": CONTAINER_ID, "Names": ["/web"], "Image": "app:1", "ImageID": IMAGE_ID,
        "State": "exited", "Labels": {}, "Mounts": []}]
    routes[f"/containers/{CONTAINER_ID}/json"] = {
        "Id": CONTAINER_ID, "Name": "/web", "Image": IMAGE_ID,
        "Config": {**config, "Image": "app:1"},
        "HostConfig": {"RestartPolicy": {"Name": "no"}, "NetworkMode": "bridge",
                       "Links": None, "VolumesFrom": None, "Devices": []},
        "NetworkSettings": {"Networks": {"bridge": {"Aliases": None}}},
        "State": {"Status": "exited", "Running": False}, "Mounts": [],
        "GraphDriver": {"Name": "overlay2", "Data": {}}}
    routes[f"/containers/{CONTAINER_ID}/changes"] = None
    return routes
