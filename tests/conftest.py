"""Engine sandboxes for the test suite.

Session fixtures (engine26, engine28, engine_sandbox, sample_host) share one daemon per engine
with the sample host built once: treat them as read-only. Tests that restart a daemon, edit
daemon.json or change images/containers use the function-scoped `fresh_sandbox` factory.

Set CONTAINERD_MIGRATE_SKIP_ENGINE=1 to skip engine- and host-marked tests; otherwise missing
engines are fetched automatically on first use.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from migrate.sandbox import (
    BASE_DIR,
    SampleHost,
    Sandbox,
    SandboxError,
    SandboxFactory,
    populate_sandbox,
    sandbox_samples,
)

ENGINE_KEYS = ("26", "28")
SKIP_ENV = "CONTAINERD_MIGRATE_SKIP_ENGINE"
# Sandbox dirs carry the owning pytest pid so a later session can reap crashed leftovers
# without touching sandboxes of other sessions running at the same time.
OWNER_PREFIX = "pt-"


def _engine_skipped() -> bool:
    return os.environ.get(SKIP_ENV) == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _engine_skipped():
        return
    skip = pytest.mark.skip(reason=f"{SKIP_ENV}=1")
    for item in items:
        if "engine" in item.keywords or "host" in item.keywords:
            item.add_marker(skip)


def reap_stale(prefix: str, destroy: Callable[[Path], None]) -> None:
    """Destroy BASE_DIR/<prefix><pid>-... dirs whose pytest session (pid) has ended."""
    if not BASE_DIR.is_dir():
        return
    for directory in BASE_DIR.glob(f"{prefix}*"):
        owner = directory.name.removeprefix(prefix).split("-", 1)[0]
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        try:
            destroy(directory)
        except SandboxError:
            shutil.rmtree(directory, ignore_errors=True)


def _reap_stale_sandboxes() -> None:
    reap_stale(OWNER_PREFIX, lambda directory: Sandbox.open(directory).destroy())


_names = itertools.count()


def _new_dir(kind: str) -> Path:
    return BASE_DIR / f"{OWNER_PREFIX}{os.getpid()}-{kind}{next(_names)}"


class _SessionEngines:
    """Starts each engine once, lazily, with the sample host built once."""

    def __init__(self) -> None:
        self._running: dict[str, Sandbox] = {}

    def get(self, engine: str) -> Sandbox:
        if engine not in self._running:
            sandbox = Sandbox(_new_dir(f"s{engine}-"), engine)
            self._running[engine] = sandbox
            sandbox.start()
            populate_sandbox(sandbox)
        return self._running[engine]

    def close(self) -> None:
        for sandbox in self._running.values():
            with contextlib.suppress(SandboxError):
                sandbox.destroy()


@pytest.fixture(scope="session")
def _session_engines() -> Iterator[_SessionEngines]:
    if _engine_skipped():
        pytest.skip(f"{SKIP_ENV}=1")
    _reap_stale_sandboxes()
    engines = _SessionEngines()
    yield engines
    engines.close()


@pytest.fixture(scope="session")
def engine26(_session_engines: _SessionEngines) -> Sandbox:
    """Shared Engine 26.1 daemon (legacy store) with the sample host. Read-only."""
    return _session_engines.get("26")


@pytest.fixture(scope="session")
def engine28(_session_engines: _SessionEngines) -> Sandbox:
    """Shared Engine 28.5 daemon (legacy store) with the sample host. Read-only."""
    return _session_engines.get("28")


@pytest.fixture(scope="session", params=ENGINE_KEYS, ids=[f"engine{k}" for k in ENGINE_KEYS])
def engine_sandbox(request: pytest.FixtureRequest) -> Sandbox:
    """engine26 and engine28 in turn: tests using it run once per engine."""
    sandbox: Sandbox = request.getfixturevalue(f"engine{request.param}")
    return sandbox


@pytest.fixture(scope="session")
def sample_host(engine_sandbox: Sandbox) -> SampleHost:
    """The SampleHost built in the current engine_sandbox."""
    return sandbox_samples(engine_sandbox)


@pytest.fixture
def fresh_sandbox() -> Iterator[SandboxFactory]:
    """Factory for private daemons, destroyed at teardown.

    fresh_sandbox(engine="26", samples=False) -> running Sandbox; with samples=True the
    sample host is built too (about 1.5 s) and readable with sandbox_samples(sandbox).
    `external_containerd=True` gives dockerd a containerd of the sandbox's own
    (`--containerd`), optionally with `containerd_namespace` (`--containerd-namespace`) and
    `containerd_in_daemon_json` (both as daemon.json keys instead of flags); `daemon_json`
    is the daemon.json of the first start (e.g. {"storage-driver": "vfs"}: a legacy store
    on vfs without a restart).
    """
    if _engine_skipped():
        pytest.skip(f"{SKIP_ENV}=1")
    created: list[Sandbox] = []

    def factory(engine: str = "26", samples: bool = False, *,
                external_containerd: bool = False, containerd_namespace: str | None = None,
                containerd_in_daemon_json: bool = False,
                daemon_json: Mapping[str, object] | None = None) -> Sandbox:
        sandbox = Sandbox(_new_dir(f"f{engine}-"), engine,
                          external_containerd=external_containerd,
                          containerd_namespace=containerd_namespace,
                          containerd_in_daemon_json=containerd_in_daemon_json)
        created.append(sandbox)
        if daemon_json is not None:
            sandbox.dir.mkdir(parents=True)
            sandbox.daemon_json.write_text(json.dumps(daemon_json) + "\n")
        sandbox.start()
        if samples:
            populate_sandbox(sandbox)
        return sandbox

    yield factory
    errors = []
    for sandbox in created:
        try:
            sandbox.destroy()
        except SandboxError as error:
            errors.append(str(error))
    if errors:
        pytest.fail("sandbox teardown failed: " + "; ".join(errors))
