"""`python -m migrate.sandbox.demo` (`make demo`): the whole product on a throwaway sandbox engine.

Builds a sample legacy host in a private dockerd (never the machine's own Docker), shows
`plan`, then the recommended path: `stage` before the window, `run --containers recreate`
in it, with progress bars; prints the verification report, the containers running again
on the containerd store and `status`, then rolls back and shows every image and container
back on the legacy store.

Every command is printed exactly as it runs: the tool is aimed at the sandbox with the
CONTAINERD_MIGRATE_* variables printed first (`python -m migrate.sandbox env`), so each
line can be pasted into a shell that has evaluated them.

`--systemd` runs the same story where an operator runs it: inside a systemd-managed Debian
host (Debian's docker.io under docker.service, booted with systemd-nspawn; the first time
debootstraps its rootfs, about a minute), with the tool's defaults only: no variable, and
`systemctl restart docker` as the restart.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from migrate.sandbox.daemon import Sandbox
from migrate.sandbox.fetch import docker_cli
from migrate.sandbox.samples import populate_sandbox
from migrate.sandbox.systemd_host import SystemdHost, populate_host


def _banner(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


class _Demo:
    def __init__(self, sandbox: Sandbox, state_dir: Path):
        self.sandbox = sandbox
        self.env = {**os.environ, **sandbox.migrate_env(state_dir)}

    def cli(self, *args: str, check: bool = True) -> int:
        print(f"$ {shlex.join(['containerd-migrate', *args])}", flush=True)
        code = subprocess.run([sys.executable, "-m", "migrate", *args], env=self.env,
                              check=False).returncode
        if check and code != 0:
            raise SystemExit(f"demo: `{shlex.join(['containerd-migrate', *args])}` exited {code}")
        return code

    def docker(self, *args: str) -> None:
        print(f"$ {shlex.join(['docker', *args])}", flush=True)
        # The machine may have no docker CLI of its own: the fetched Debian one serves then.
        subprocess.run([docker_cli(), *args], env=self.env, check=False)


class _HostDemo:
    """The demo's commands, run inside a systemd host exactly as printed."""

    def __init__(self, host: SystemdHost):
        self.host = host

    def run(self, *argv: str, check: bool = True) -> int:
        print(f"$ {shlex.join(argv)}", flush=True)
        code = subprocess.run(self.host.exec_argv(argv), check=False).returncode
        if check and code != 0:
            raise SystemExit(f"demo: `{shlex.join(argv)}` exited {code}")
        return code


def _systemd_demo(engine: str, keep: bool) -> int:
    base = Path(tempfile.mkdtemp(prefix="cm-demo-", dir="/tmp"))
    host = SystemdHost(base / "host", engine)
    demo = _HostDemo(host)
    try:
        _banner(f"booting a systemd-managed Debian host with Docker Engine {engine} "
                f"(docker.io under docker.service) in {host.dir}")
        host.start()
        print("# every command below runs inside the host as printed; for a shell there: "
              + shlex.join([sys.executable, "-m", "migrate.sandbox", "exec", "--dir",
                            str(host.dir), "bash"]))
        demo.run("systemctl", "--no-pager", "status", "docker.service", "docker.socket",
                 "containerd.service", check=False)
        _banner("a small sample host: images, a running container with a volume, an "
                "exited one")
        populate_host(host)
        demo.run("docker", "ps", "-a")
        _banner("dry run with the defaults: the daemon systemd runs, /etc/docker/daemon.json, "
                "`systemctl restart docker`")
        demo.run("containerd-migrate", "plan", "--containers", "recreate")
        _banner("the migration, containers recreated on the containerd store")
        demo.run("containerd-migrate", "run", "--yes", "--containers", "recreate")
        demo.run("docker", "info", "--format", "{{json .DriverStatus}}")
        demo.run("docker", "ps", "-a")
        demo.run("containerd-migrate", "status")
        _banner("rolling back: the host returns to the legacy store")
        demo.run("containerd-migrate", "rollback", "--yes")
        demo.run("docker", "ps", "-a")
        _banner("demo done: every image and container is back where it was")
    finally:
        if keep:
            print(f"\nkept: the host (running) in {host.dir}; remove it with: "
                  + shlex.join([sys.executable, "-m", "migrate.sandbox", "destroy", "--dir",
                                str(host.dir)]))
        else:
            host.destroy()
            shutil.rmtree(base, ignore_errors=True)
            print(f"\nremoved: the host under {base} (--keep leaves it)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m migrate.sandbox.demo")
    parser.add_argument("--engine", default=os.environ.get("DEMO_ENGINE", "28"),
                        choices=["26", "28"])
    parser.add_argument("--keep", action="store_true",
                        help="leave the sandbox running and its state on disk")
    parser.add_argument("--systemd", action="store_true",
                        help="run the demo inside a systemd-managed Debian host with the "
                             "tool's defaults (as on a real host)")
    args = parser.parse_args(argv)
    if args.systemd:
        return _systemd_demo(args.engine, args.keep)
    base = Path(tempfile.mkdtemp(prefix="cm-demo-", dir="/tmp"))
    sandbox = Sandbox(base / "engine", args.engine)
    state_dir = base / "state"
    demo = _Demo(sandbox, state_dir)
    try:
        _banner(f"starting a throwaway Docker Engine ({args.engine}) in {sandbox.dir}")
        sandbox.start()
        print("# the commands below see the sandbox through these variables; to repeat "
              "them, run in your shell:")
        print(f"eval \"$({shlex.join([sys.executable, '-m', 'migrate.sandbox', 'env', '--dir', str(sandbox.dir), '--state-dir', str(state_dir)])})\"")  # noqa: E501
        print(f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\"")
        _banner("building a sample legacy host: shared layers, many tags, a dangling "
                "image, containers, a volume")
        populate_sandbox(sandbox)
        demo.docker("images", "-a")
        demo.docker("ps", "-a")
        _banner("dry run: what would move, what would break (exit 3 = blocked)")
        demo.cli("plan", check=False)
        _banner("the plan again, with the containers recreated in the new store (as a "
                "change ticket)")
        demo.cli("plan", "--containers", "recreate", "--format", "markdown")
        _banner("before the window: stage the images into the containerd store while the "
                "daemon keeps serving")
        demo.cli("stage", "--containers", "recreate")
        _banner("the window: snapshot, quiesce, commit, switch, restart, import (staged: "
                "skipped), verify, recreate")
        demo.cli("run", "--yes", "--containers", "recreate")
        _banner("verification report")
        print((state_dir / "reports" / "verification.txt").read_text(), end="")
        demo.docker("info", "--format", "{{json .DriverStatus}}")
        demo.docker("images")
        _banner("the containers are back, running again, on the containerd store")
        demo.docker("ps", "-a")
        demo.cli("status")
        _banner("rolling back: the host returns to the legacy store")
        demo.cli("rollback", "--yes")
        demo.docker("images", "-a")
        demo.docker("ps", "-a")
        demo.cli("status")
        _banner("demo done: every image and container is back where it was")
        print("# on a real host the defaults apply (no variable): the daemon systemd runs, "
              "/etc/docker/daemon.json, `systemctl restart docker`; `--systemd` runs this "
              "demo inside such a host")
    finally:
        if args.keep:
            print(f"\nkept: the sandbox (running) in {sandbox.dir}, the state dir in "
                  f"{state_dir}; remove both with: "
                  f"{shlex.join([sys.executable, '-m', 'migrate.sandbox', 'destroy', '--dir', str(sandbox.dir)])} && rm -rf {shlex.quote(str(base))}")  # noqa: E501
        else:
            sandbox.destroy()
            shutil.rmtree(base, ignore_errors=True)
            print(f"\nremoved: the sandbox and the state dir under {base} "
                  "(--keep leaves them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
