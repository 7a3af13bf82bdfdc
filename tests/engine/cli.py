"""Run the real CLI as a separate process against a sandbox, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from migrate.sandbox.daemon import Sandbox
from migrate.support.failpoints import ENV as FAILPOINTS_ENV

RESTART_ENV = "CONTAINERD_MIGRATE_RESTART_COMMAND"


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
    full_env = {k: v for k, v in os.environ.items() if k != FAILPOINTS_ENV}
    full_env[RESTART_ENV] = sandbox.restart_command
    full_env.update(env or {})
    if failpoints:
        full_env[FAILPOINTS_ENV] = failpoints
    argv = [
        sys.executable, "-m", "migrate",
        "--host", sandbox.host,
        "--daemon-config", str(sandbox.daemon_json),
        "--state-dir", str(state_dir),
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def run_args(sandbox: Sandbox, *extra: str) -> tuple[str, ...]:
    """`run --yes --containers leave --restart-command <sandbox restart>` plus extras."""
    return ("run", "--yes", "--containers", "leave",
            "--restart-command", restart_command(sandbox), *extra)
