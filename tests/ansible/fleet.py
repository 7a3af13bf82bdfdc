"""A fleet of sandbox engines driven by the real ansible-playbook, as an operator would.

Every inventory host is one Engine 28.5 sandbox on this machine (connection local), with its
own socket, daemon.json, state dir, restart command and tool virtualenv. The inventory is
written as JSON (YAML's subset), so the tests need no YAML library.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrate.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "ansible"
# A wheel to install instead of building one from the repository's HEAD (install.yml's
# default): set it to test uncommitted changes of the tool.
WHEEL_ENV = "CM_ANSIBLE_WHEEL"
PLAYBOOK_TIMEOUT = 600.0


def ansible_playbook() -> str | None:
    """ansible-playbook next to this interpreter (the dev virtualenv), else on PATH."""
    beside = Path(sys.executable).with_name("ansible-playbook")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("ansible-playbook")


@dataclass
class FleetHost:
    """One inventory host: a sandbox plus the per-host variables of the playbooks."""

    name: str
    sandbox: Sandbox
    install_dir: Path
    # Variables of this host for the next inventory (state dir, restart command...).
    vars: dict[str, Any] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return Path(str(self.vars["cm_state_dir"]))

    def host_vars(self) -> dict[str, Any]:
        return {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "cm_host": self.sandbox.host,
            "cm_daemon_config": str(self.sandbox.daemon_json),
            "cm_restart_command": self.sandbox.restart_command,
            "cm_restart_timeout": 60,
            "cm_containers": "leave",
            "cm_install_dir": str(self.install_dir),
            "cm_lock_delay": 1,
            **self.vars,
        }


@dataclass
class Fleet:
    hosts: list[FleetHost]
    workdir: Path
    playbook_bin: str

    def __getitem__(self, name: str) -> FleetHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [host.name for host in self.hosts]

    def write_inventory(
        self, path: Path, groups: Mapping[str, Sequence[str]] | None = None
    ) -> Path:
        children: dict[str, Any] = {name: {"hosts": {member: {} for member in members}}
                    for name, members in (groups or {}).items()}  # fmt: skip
        inventory = {"all": {"hosts": {h.name: h.host_vars() for h in self.hosts},
                             "children": children}}  # fmt: skip
        path.write_text(json.dumps(inventory, indent=2) + "\n")
        return path

    def env(self) -> dict[str, str]:
        home = self.workdir / "ansible-home"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DOCKER_", "CONTAINERD_MIGRATE_", "ANSIBLE_"))
        }
        env.update(
            # The playbooks' own ansible.cfg: nothing from ~/.ansible.cfg or /etc/ansible.
            ANSIBLE_CONFIG=str(PLAYBOOKS / "ansible.cfg"),
            ANSIBLE_HOME=str(home),
            ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
            ANSIBLE_REMOTE_TEMP=str(home / "remote-tmp"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_FORKS="4",
            LC_ALL="C.UTF-8",
            LANG="C.UTF-8",
        )
        return env

    def playbook(
        self, name: str, inventory: Path, *args: str, extra: Mapping[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """ansible-playbook ansible/NAME -i INVENTORY [-e JSON] ARGS; output kept in a log."""
        argv = [self.playbook_bin, "-i", str(inventory), str(PLAYBOOKS / name), *args]
        if extra:
            argv += ["-e", json.dumps(dict(extra))]
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env(),
                              cwd=self.workdir, stdin=subprocess.DEVNULL,
                              timeout=PLAYBOOK_TIMEOUT, check=False)  # fmt: skip
        log = self.workdir / f"{inventory.stem}-{name}.log"
        log.write_text(f"$ {' '.join(argv)}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done


def output(done: subprocess.CompletedProcess[str], tail: int = 12000) -> str:
    return (f"exit {done.returncode}\n--- stdout\n{done.stdout[-tail:]}\n"
            f"--- stderr\n{done.stderr[-4000:]}")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
