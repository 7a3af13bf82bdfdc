"""Run the real CLI as a separate process against a sandbox, as an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from migrate.sandbox.daemon import Sandbox
from migrate.support.failpoints import ENV as FAILPOINTS_ENV

RESTART_ENV = "CONTAINERD_MIGRATE_RESTART_COMMAND"
# An `env` value for cli()/spawn() that removes the variable from the CLI's environment.
UNSET = "\0unset"


def child_signals() -> None:
    """preexec_fn for every CLI child: SIGINT back to its default, so Python turns it into
    KeyboardInterrupt even when pytest runs from a background job (which starts with
    SIGINT ignored, inherited by every child)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def restart_command(sandbox: Sandbox) -> str:
    return sandbox.restart_command


def cli(
    sandbox: Sandbox,
    state_dir: Path,
    *args: str,
    failpoints: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """`containerd-migrate --host ... --daemon-config ... --state-dir ... ARGS`, with the
    sandbox's restart command in CONTAINERD_MIGRATE_RESTART_COMMAND, as
    `python -m migrate.sandbox env` sets it for an operator (`env` may override it)."""
    return subprocess.run(_argv(sandbox, state_dir, args), capture_output=True, text=True,
                          env=_env(sandbox, failpoints, env), timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False, preexec_fn=child_signals)


def spawn(
    sandbox: Sandbox,
    state_dir: Path,
    *args: str,
    failpoints: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[str]:
    """The same command as `cli()`, started in the background (for pause failpoints)."""
    return subprocess.Popen(_argv(sandbox, state_dir, args), env=_env(sandbox, failpoints, env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=child_signals)  # noqa: PLW1509  (no threads here)


def _argv(sandbox: Sandbox, state_dir: Path, args: tuple[str, ...]) -> list[str]:
    return [
        sys.executable, "-m", "migrate",
        "--host", sandbox.host,
        "--daemon-config", str(sandbox.daemon_json),
        "--state-dir", str(state_dir),
        *args,
    ]


def _env(sandbox: Sandbox, failpoints: str | None, env: Mapping[str, str] | None,
         ) -> dict[str, str]:
    full_env = {k: v for k, v in os.environ.items() if k != FAILPOINTS_ENV}
    full_env[RESTART_ENV] = sandbox.restart_command
    full_env.update(env or {})
    # UNSET as a value removes the variable (an empty value is an error of its own).
    for name in [name for name, value in full_env.items() if value == UNSET]:
        del full_env[name]
    if failpoints:
        full_env[FAILPOINTS_ENV] = failpoints
    return full_env


def run_args(sandbox: Sandbox, *extra: str) -> tuple[str, ...]:
    """`run --yes --containers leave --restart-command <sandbox restart>` plus extras."""
    return ("run", "--yes", "--containers", "leave",
            "--restart-command", restart_command(sandbox), *extra)


def wait_for_file(path: Path, process: subprocess.Popen[str], timeout: float = 180) -> None:
    """Poll until `path` exists (a failpoint's `.reached` file); fail if the CLI ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"CLI exited early: {process.communicate()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
