"""What every benchmark script shares: its error, --engine, its sandbox's life and its exit
status.

A script starts its command line from `bench_parser`, builds its Sandbox, then either hands
its measuring to `run_in_sandbox` (started; a failed step reported as one line and exit 1;
destroyed afterwards unless --keep), or, when it needs a sandbox for less than its whole run
(staging.py: one per host), uses `bench_sandbox` around that part and `run_main` around the
whole.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

from migrate.sandbox import BASE_DIR, ENGINES


class BenchError(RuntimeError):
    """A step of the benchmark failed."""


class Disposable(Protocol):
    """What a benchmark does with its sandbox around the measuring (a Sandbox is one)."""

    @property
    def dir(self) -> Path: ...

    @property
    def host(self) -> str: ...

    def start(self) -> None: ...

    def destroy(self) -> None: ...


S = TypeVar("S", bound=Disposable)


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """The command line every script starts from: the first paragraph of its docstring as
    the description, and --engine, one the sandbox can fetch."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--engine", choices=sorted(ENGINES), default="28")
    return parser


def own_path(prefix: str) -> Path:
    """BASE_DIR/PREFIX-PID: a sandbox or state dir no other run of a script uses."""
    return BASE_DIR / f"{prefix}-{os.getpid()}"


def remove_tree(path: Path) -> None:
    subprocess.run(["rm", "-rf", str(path)], check=False)


def with_docker_host(sandbox: Disposable) -> str:
    """The line a kept sandbox is reported with: where it is and how to reach its daemon."""
    return f"kept: {sandbox.dir} (DOCKER_HOST={sandbox.host})"


@contextmanager
def bench_sandbox(sandbox: S, keep: bool, *,
                  kept: Callable[[S], str] | None = with_docker_host,
                  also_removed: Path | None = None) -> Iterator[S]:
    """The sandbox started; afterwards, however the block ended, destroyed (and
    `also_removed` with it) or with `keep` left as it is and reported by `kept` (if given)."""
    try:
        sandbox.start()
        yield sandbox
    finally:
        if keep:
            if kept is not None:
                print(kept(sandbox))
        else:
            sandbox.destroy()
            if also_removed is not None:
                remove_tree(also_removed)


def run_main(body: Callable[[], int]) -> int:
    """The body's exit status; a failed step (BenchError) is one line on stderr and exit 1."""
    try:
        return body()
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1


def run_in_sandbox(sandbox: S, keep: bool, body: Callable[[S], int], *,
                   kept: Callable[[S], str] | None = with_docker_host,
                   also_removed: Path | None = None) -> int:
    """`body` on the started sandbox under `run_main`: a failure is reported before the
    sandbox is destroyed or kept, as the scripts always did."""
    with bench_sandbox(sandbox, keep, kept=kept, also_removed=also_removed) as started:
        status = run_main(lambda: body(started))
    return status
