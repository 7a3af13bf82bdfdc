"""`python -m migrate.sandbox.demo` (`make demo`): the whole product on a throwaway sandbox engine.

Builds a sample legacy host in a private dockerd (never the machine's own Docker), shows
`plan`, then the recommended path: `stage` before the window, `run --containers recreate`
in it, with progress bars; prints the verification report, the containers running again
on the containerd store and `status`, then rolls back and shows every image and container
back on the legacy store.

Every command is printed exactly as it runs: the tool is aimed at the sandbox with the
CONTAINERD_MIGRATE_* variables printed first (`python -m migrate.sandbox env`), so each
line can be pasted into a shell that has evaluated them.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m migrate.sandbox.demo")
    parser.add_argument("--engine", default=os.environ.get("DEMO_ENGINE", "28"),
                        choices=["26", "28"])
    parser.add_argument("--keep", action="store_true",
                        help="leave the sandbox running and its state on disk")
    args = parser.parse_args(argv)
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
