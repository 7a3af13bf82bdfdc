"""The SDK's read path (`--host tcp://...`, sdk_reads.SdkReads) reads what the unix reader
reads: the same inventory from the same daemon, reached through a loopback TCP relay to its
socket (the sandbox daemons listen on a unix socket only)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from migrate.engine import Engine
from migrate.engine.sdk_reads import SdkReads
from migrate.engine.unix_http import UnixReads
from migrate.sandbox import Sandbox

pytestmark = pytest.mark.engine


def _pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def tcp_relay(unix_path: str) -> Iterator[str]:
    """tcp://127.0.0.1:PORT forwarding every connection to the unix socket."""
    server = socket.create_server(("127.0.0.1", 0))
    opened: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            daemon.connect(unix_path)
            opened.extend((client, daemon))
            for a, b in ((client, daemon), (daemon, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for sock in opened:
            sock.close()


def test_the_sdk_reads_the_same_inventory_as_the_unix_reader(engine_sandbox: Sandbox) -> None:
    with Engine(engine_sandbox.host) as local:
        assert isinstance(local._reads, UnixReads)
        info = local.info()
        expected = local.inventory(info)
        # Without `info` every image is inspected: the inventory reads their configs on disk.
        inspected = local.list_images()
        missing = local.inspect_container("cm-no-such-container")
    with tcp_relay(engine_sandbox.host.removeprefix("unix://")) as address, \
            Engine(address, timeout=60) as remote:
        assert isinstance(remote._reads, SdkReads)
        assert remote.info() == info
        found = remote.inventory(info)
        assert remote.list_images() == inspected
        assert remote.inspect_container("cm-no-such-container") is missing is None
    assert found.images == expected.images
    assert found.containers == expected.containers
    assert found.volumes == expected.volumes
