"""A read-only registry (the OCI distribution API, as much as `docker pull` uses) for tests.

No registry is reachable from the test machine, but dockerd treats registries on
127.0.0.0/8 as insecure by default (plain HTTP, no configuration), so one image served
from a thread on 127.0.0.1 is enough to prove that pulls keep working.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from migrate.sandbox.layers import ARCH

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class RegistryImage:
    """One single-layer image as a registry stores it: blobs by digest, one manifest."""

    name: str
    tag: str
    manifest: bytes
    blobs: dict[str, bytes]
    config_digest: str

    @classmethod
    def from_layer(cls, name: str, tag: str, layer_tar: Path, cmd: list[str]) -> RegistryImage:
        raw = layer_tar.read_bytes()
        layer = gzip.compress(raw, mtime=0)
        config = json.dumps({
            "architecture": ARCH.get(platform.machine(), platform.machine()),
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [_digest(raw)]},
        }, sort_keys=True).encode()
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": _digest(config)},
            "layers": [{"mediaType": LAYER_TYPE, "size": len(layer), "digest": _digest(layer)}],
        }).encode()
        return cls(name, tag, manifest, {_digest(config): config, _digest(layer): layer},
                   _digest(config))

    @property
    def manifest_digest(self) -> str:
        return _digest(self.manifest)


class _Handler(BaseHTTPRequestHandler):
    image: RegistryImage  # set on the subclass made per server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # dockerd first tries HTTPS: those handshakes land here as garbage

    def _answer(self, status: int, body: bytes = b"", content_type: str = "application/json",
                digest: str | None = None, send_body: bool = True) -> None:
        self.send_response(status)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _route(self, send_body: bool) -> None:
        image = self.image
        path = self.path.split("?", 1)[0]
        if path in ("/v2", "/v2/"):
            self._answer(200, b"{}", send_body=send_body)
            return
        prefix = f"/v2/{image.name}/"
        if path.startswith(prefix + "manifests/"):
            ref = path.removeprefix(prefix + "manifests/")
            if ref in (image.tag, image.manifest_digest):
                self._answer(200, image.manifest, MANIFEST_TYPE, image.manifest_digest,
                             send_body)
                return
        if path.startswith(prefix + "blobs/"):
            digest = path.removeprefix(prefix + "blobs/")
            if digest in image.blobs:
                self._answer(200, image.blobs[digest], "application/octet-stream", digest,
                             send_body)
                return
        self._answer(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"not here"}]}',
                     send_body=send_body)

    def do_GET(self) -> None:
        self._route(send_body=True)

    def do_HEAD(self) -> None:
        self._route(send_body=False)


@contextmanager
def serve(image: RegistryImage) -> Iterator[str]:
    """Serve `image` on an ephemeral 127.0.0.1 port; yields `127.0.0.1:PORT`."""
    handler = type("Handler", (_Handler,), {"image": image})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
