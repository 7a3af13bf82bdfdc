"""`python -m migrate.sandbox`: drive a sandbox from a shell or from another process.

`restart` is what the migration tool's restart hook calls in tests, so it exits 0 only when
the daemon answers again, and otherwise prints the tail of dockerd.log on stderr.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from migrate.sandbox.daemon import Sandbox, SandboxError
from migrate.sandbox.fetch import ENGINES, FetchError, engine_dir, ensure_engine, fetched_versions
from migrate.sandbox.samples import MIB, SampleError, populate_sandbox


def _sandbox(args: argparse.Namespace) -> Sandbox:
    directory = Path(args.dir).absolute()
    engine: str | None = getattr(args, "engine", None)
    if engine is None:
        return Sandbox.open(directory)
    return Sandbox(directory, engine, external_containerd=args.external_containerd,
                   containerd_namespace=args.containerd_namespace,
                   containerd_in_daemon_json=args.containerd_in_daemon_json)


def _run(args: argparse.Namespace) -> None:
    if args.command == "fetch":
        for key in sorted(ENGINES) if args.engine == "all" else [args.engine]:
            ensure_engine(key)
            print(f"engine {key}: {engine_dir(key)} {fetched_versions(key)}")
        return
    sandbox = _sandbox(args)
    if args.command == "start":
        sandbox.start(args.timeout)
        print(f"export DOCKER_HOST={shlex.quote(sandbox.host)}")
    elif args.command == "stop":
        sandbox.stop(args.timeout)
    elif args.command == "restart":
        sandbox.stop()
        sandbox.start(args.timeout)
    elif args.command == "destroy":
        sandbox.destroy()
    elif args.command == "samples":
        samples = populate_sandbox(sandbox, big_layer_bytes=args.big_mib * MIB)
        print(f"{len(samples.tags)} tags, {len(samples.containers)} containers -> "
              f"{sandbox.dir / 'samples.json'}")  # fmt: skip
    elif args.command == "env":
        state_dir = Path(args.state_dir).absolute() if args.state_dir else sandbox.dir / "state"
        for name, value in sandbox.migrate_env(state_dir).items():
            print(f"export {name}={shlex.quote(value)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m migrate.sandbox")
    commands = parser.add_subparsers(dest="command", required=True)
    engines = [*sorted(ENGINES)]
    fetch = commands.add_parser("fetch", help="download engine binaries into the cache")
    fetch.add_argument("--engine", choices=[*engines, "all"], default="all")
    for name, help_text in (
        ("start", "start the daemon (first start needs --engine)"),
        ("stop", "stop the daemon and unmount its leftovers"),
        ("restart", "stop, start, and wait until the daemon answers"),
        ("destroy", "stop the daemon and delete the sandbox dir"),
        ("samples", "build the sample host in a running sandbox"),
        ("env", "print the CONTAINERD_MIGRATE_* (and DOCKER_HOST) exports that aim "
                "containerd-migrate at the sandbox: eval \"$(python -m migrate.sandbox env "
                "--dir D)\""),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--dir", required=True, help="sandbox directory (keep it short)")
        if name == "start":
            sub.add_argument("--engine", choices=engines, default=None)
            sub.add_argument("--external-containerd", action="store_true",
                             help="first start only: run a containerd of the sandbox's own "
                                  "and start dockerd with --containerd on its socket")
            sub.add_argument("--containerd-namespace", default=None,
                             help="with --external-containerd: dockerd's namespace there "
                                  "[default: moby]")
            sub.add_argument("--containerd-in-daemon-json", action="store_true",
                             help="with --external-containerd: name the endpoint in "
                                  "daemon.json instead of dockerd flags")
        if name in ("start", "stop", "restart"):
            sub.add_argument("--timeout", type=float, default=60.0)
        if name == "env":
            sub.add_argument("--state-dir", default=None,
                             help="state dir for containerd-migrate [default: DIR/state]")
        if name == "samples":
            sub.add_argument("--big-mib", type=int, default=8, help="random layer size")
    args = parser.parse_args(argv)
    try:
        _run(args)
    except (SandboxError, FetchError, SampleError) as error:
        print(f"sandbox {args.command} failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
