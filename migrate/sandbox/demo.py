"""`python -m migrate.sandbox.demo` (`make demo`): the whole product on a throwaway sandbox engine.

Builds a sample legacy host in a private dockerd (never the machine's own Docker), shows
`plan`, migrates with progress bars, prints the verification report and `status`, then
rolls back and shows every image and container back on the legacy store.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from migrate.sandbox.daemon import Sandbox
from migrate.sandbox.fetch import docker_cli
from migrate.sandbox.samples import populate_sandbox


def _banner(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def _cli(sandbox: Sandbox, state_dir: Path, *args: str, check: bool = True) -> int:
    argv = [sys.executable, "-m", "migrate", "--host", sandbox.host,
            "--daemon-config", str(sandbox.daemon_json), "--state-dir", str(state_dir), *args]
    print("$ containerd-migrate " + " ".join(args), flush=True)
    code = subprocess.run(argv, check=False).returncode
    if check and code != 0:
        raise SystemExit(f"demo: `containerd-migrate {' '.join(args)}` exited {code}")
    return code


def _docker(sandbox: Sandbox, *args: str) -> None:
    print("$ docker " + " ".join(args), flush=True)
    # The machine may have no docker CLI of its own: the fetched Debian one serves then.
    subprocess.run([docker_cli(), "-H", sandbox.host, *args], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m migrate.sandbox.demo")
    parser.add_argument("--engine", default=os.environ.get("DEMO_ENGINE", "28"),
                        choices=["26", "28"])
    parser.add_argument("--keep", action="store_true", help="leave the sandbox running")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="cm-demo-", dir="/tmp"))
    sandbox = Sandbox(base / "engine", args.engine)
    state_dir = base / "state"
    restart = f"{sys.executable} -m migrate.sandbox restart --dir {sandbox.dir}"
    try:
        _banner(f"starting a throwaway Docker Engine ({args.engine}) in {sandbox.dir}")
        sandbox.start()
        _banner("building a sample legacy host: shared layers, many tags, a dangling "
                "image, containers, a volume")
        populate_sandbox(sandbox)
        _docker(sandbox, "images", "-a")
        _docker(sandbox, "ps", "-a")
        _banner("dry run: what would move, what would break (exit 3 = blocked)")
        _cli(sandbox, state_dir, "plan", check=False)
        _banner("the plan again, accepting that containers are stopped and kept hidden")
        _cli(sandbox, state_dir, "plan", "--containers", "leave", "--format", "markdown")
        _banner("the migration: snapshot, export, quiesce, switch, restart, import, verify")
        _cli(sandbox, state_dir, "run", "--yes", "--containers", "leave",
             "--restart-command", restart)
        _banner("verification report")
        print((state_dir / "reports" / "verification.txt").read_text(), end="")
        _docker(sandbox, "info", "--format", "{{json .DriverStatus}}")
        _docker(sandbox, "images")
        _cli(sandbox, state_dir, "status")
        _banner("rolling back: the host returns to the legacy store")
        _cli(sandbox, state_dir, "rollback", "--yes")
        _docker(sandbox, "images", "-a")
        _docker(sandbox, "ps", "-a")
        _cli(sandbox, state_dir, "status")
        _banner("demo done: every image and container is back where it was")
    finally:
        if not args.keep:
            sandbox.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
