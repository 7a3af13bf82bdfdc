"""Gathering the facts a plan needs from the live host (impure; the plan itself is pure)."""

from __future__ import annotations

import os
from pathlib import Path

from migrate.daemon_config import read_daemon_config
from migrate.engine import Engine
from migrate.launch import detect_launch
from migrate.models import Inventory
from migrate.plan import HostFacts, probe_filesystem


def gather_facts(
    engine: Engine,
    daemon_config: Path,
    state_dir: Path,
    inventory: Inventory | None = None,
) -> HostFacts:
    inventory = inventory or engine.inventory()
    data_root = inventory.engine.data_root
    return HostFacts(
        inventory=inventory,
        daemon_config=read_daemon_config(daemon_config),
        launch=detect_launch(inventory.engine.pid, engine.host),
        state_dir=probe_filesystem(state_dir),
        data_root=probe_filesystem(data_root) if data_root else probe_filesystem("/"),
        is_root=os.geteuid() == 0,
    )
