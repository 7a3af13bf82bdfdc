"""Throwaway Docker Engine sandboxes for tests, the demo and benchmarks.

Each sandbox is one dockerd (Debian engine packages, see fetch.py) whose whole state lives in
one directory, so it can be driven from pytest or from `python -m migrate.sandbox`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from migrate.sandbox.daemon import BASE_DIR, Sandbox, SandboxError
from migrate.sandbox.fetch import ENGINES, FetchError, engine_bin_dirs, ensure_engine
from migrate.sandbox.samples import (
    SampleError,
    SampleHost,
    build_bulk_images,
    build_large_images,
    build_sample_host,
    docker,
    populate_sandbox,
    sandbox_samples,
)


class SandboxFactory(Protocol):
    """Type of the `fresh_sandbox` pytest fixture."""

    def __call__(self, engine: str = "26", samples: bool = False, *,
                 external_containerd: bool = False, containerd_namespace: str | None = None,
                 containerd_in_daemon_json: bool = False,
                 daemon_json: Mapping[str, object] | None = None) -> Sandbox: ...


__all__ = [
    "BASE_DIR",
    "ENGINES",
    "FetchError",
    "SampleError",
    "SampleHost",
    "Sandbox",
    "SandboxError",
    "SandboxFactory",
    "build_bulk_images",
    "build_large_images",
    "build_sample_host",
    "docker",
    "engine_bin_dirs",
    "ensure_engine",
    "populate_sandbox",
    "sandbox_samples",
]
