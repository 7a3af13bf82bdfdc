"""`python -m migrate.sandbox`: drive a sandbox from a shell or from another process.

`restart` is what the migration tool's restart hook calls in tests, so it exits 0 only when
the daemon answers again, and otherwise prints the tail of dockerd.log on stderr.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from migrate.sandbox.daemon import Sandbox, SandboxError
from migrate.sandbox.fetch import ENGINES, FetchError, engine_dir, ensure_engine, fetched_versions
from migrate.sandbox.samples import MIB, SampleError, populate_sandbox
from migrate.sandbox.systemd_host import SystemdHost


def _sandbox(args: argparse.Namespace) -> Sandbox:
    directory = Path(args.dir).absolute()
    engine: str | None = getattr(args, "engine", None)
    if engine is None:
        return Sandbox.open(directory)
    return Sandbox(directory, engine, external_containerd=args.external_containerd,
                   containerd_namespace=args.containerd_namespace,
                   containerd_in_daemon_json=args.containerd_in_daemon_json)


def _systemd_host(args: argparse.Namespace) -> SystemdHost | None:
    """The systemd host the command is about; None for a plain sandbox."""
    directory = Path(args.dir).absolute()
    if args.command == "start" and args.systemd:
        if args.engine is None and not SystemdHost.is_host(directory):
            raise SandboxError("the first start of a systemd host needs --engine")
        return SystemdHost(directory, args.engine) if args.engine else SystemdHost.open(
            directory)
    return SystemdHost.open(directory) if SystemdHost.is_host(directory) else None


def _run(args: argparse.Namespace) -> int:
    if args.command == "fetch":
        for key in sorted(ENGINES) if args.engine == "all" else [args.engine]:
            ensure_engine(key)
            print(f"engine {key}: {engine_dir(key)} {fetched_versions(key)}")
        return 0
    host = _systemd_host(args)
    if args.command == "exec":
        if host is None:
            raise SandboxError(f"{args.dir} is not a systemd host; a plain sandbox runs no "
                               "commands of its own (use DOCKER_HOST)")
        # stdin, stdout and stderr pass through; the exit status is the command's.
        return subprocess.run(host.exec_argv(args.argv), check=False).returncode
    target: Sandbox | SystemdHost = host if host is not None else _sandbox(args)
    if args.command in ("start", "stop", "restart", "destroy"):
        _start_or_stop(target, args)
    elif isinstance(target, SystemdHost):
        raise SandboxError(f"`{args.command}` is for plain sandboxes; inside a systemd host "
                           "the tool runs with its defaults (`exec --dir D containerd-migrate "
                           "...`)")
    else:
        _plain_only(target, args)
    return 0


def _start_or_stop(target: Sandbox | SystemdHost, args: argparse.Namespace) -> None:
    if args.command == "start":
        target.start(args.timeout)
        print(f"export DOCKER_HOST={shlex.quote(target.host)}")
    elif args.command == "stop":
        target.stop(args.timeout)
    elif args.command == "restart":
        target.stop()
        target.start(args.timeout)
    else:
        target.destroy()


def _plain_only(target: Sandbox, args: argparse.Namespace) -> None:
    if args.command == "samples":
        samples = populate_sandbox(target, big_layer_bytes=args.big_mib * MIB)
        print(f"{len(samples.tags)} tags, {len(samples.containers)} containers -> "
              f"{target.dir / 'samples.json'}")  # fmt: skip
    elif args.command == "env":
        state_dir = Path(args.state_dir).absolute() if args.state_dir else target.dir / "state"
        for name, value in target.migrate_env(state_dir).items():
            print(f"export {name}={shlex.quote(value)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m migrate.sandbox")
    commands = parser.add_subparsers(dest="command", required=True)
    engines = [*sorted(ENGINES)]
    fetch = commands.add_parser("fetch", help="download engine binaries into the cache")
    fetch.add_argument("--engine", choices=[*engines, "all"], default="all")
    for name, help_text in (
        ("start", "start the daemon (first start needs --engine); with --systemd, boot a "
                  "Debian host whose systemd runs Debian's docker.io"),
        ("stop", "stop the daemon and unmount its leftovers"),
        ("restart", "stop, start, and wait until the daemon answers"),
        ("destroy", "stop the daemon and delete the sandbox dir"),
        ("samples", "build the sample host in a running sandbox"),
        ("exec", "run a command inside a systemd host (stdin and exit status pass through)"),
        ("env", "print the CONTAINERD_MIGRATE_* (and DOCKER_HOST) exports that aim "
                "containerd-migrate at the sandbox: eval \"$(python -m migrate.sandbox env "
                "--dir D)\""),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--dir", required=True, help="sandbox directory (keep it short)")
        if name == "start":
            sub.add_argument("--engine", choices=engines, default=None)
            sub.add_argument("--systemd", action="store_true",
                             help="boot a systemd-managed Debian host (trixie for 26, sid "
                                  "for 28) under systemd-nspawn; the daemon is reached at "
                                  "DIR/docker.sock")
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
        if name == "exec":
            sub.add_argument("argv", nargs=argparse.REMAINDER, help="the command to run")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (SandboxError, FetchError, SampleError) as error:
        print(f"sandbox {args.command} failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
