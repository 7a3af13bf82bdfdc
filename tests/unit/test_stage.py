"""Pure parts of pre-staging: where the store is, snapshot keys, ctr sizes, the run plan."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from migrate.engine.containerd import chain_id, find_ctr, is_ctr_import, parse_size
from migrate.engine.convert import chain_ids
from migrate.host.launch import DaemonLaunch, containerd_endpoint
from migrate.journal import Journal
from migrate.phases import stage
from migrate.phases.runner import RUN_PHASES, STAGE_PHASES, steps_to_run

pytestmark = pytest.mark.unit


def test_endpoint_is_the_managed_containerd_under_the_exec_root() -> None:
    launch = DaemonLaunch(exec_root="/run/d")
    assert containerd_endpoint(launch) == ("/run/d/containerd/containerd.sock", "moby")
    assert containerd_endpoint(DaemonLaunch()) == (
        "/var/run/docker/containerd/containerd.sock", "moby")


def test_endpoint_flags_win_over_daemon_json() -> None:
    config = {"containerd": "/cfg.sock", "containerd-namespace": "cfg", "exec-root": "/e"}
    assert containerd_endpoint(DaemonLaunch(), config) == ("/cfg.sock", "cfg")
    flagged = DaemonLaunch(containerd_flag="/flag.sock", containerd_namespace="ns")
    assert containerd_endpoint(flagged, config) == ("/flag.sock", "ns")


def test_chain_id_follows_the_oci_rule() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert chain_id(()) is None
    assert chain_id((a,)) == a
    assert chain_id((a, b)) == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    # One rule: the snapshot key is the legacy layer store's last ChainID.
    assert chain_ids((a, b, a)) == [a, chain_id((a, b)), chain_id((a, b, a))]


@pytest.mark.parametrize(("text", "size"), [
    ("3.584kB", 3584), ("1.9 MiB", int(1.9 * 2**20)), ("12 B", 12), ("2GB", 2 * 10**9),
    ("garbage", 0),
])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_find_ctr_prefers_the_one_next_to_dockerd(tmp_path: Path) -> None:
    (tmp_path / "sbin").mkdir()
    (tmp_path / "bin").mkdir()
    ctr = tmp_path / "bin" / "ctr"
    ctr.write_text("#!/bin/sh\n")
    ctr.chmod(0o755)
    assert find_ctr(None, str(tmp_path / "sbin" / "dockerd"), path="/nonexistent") == ctr
    assert find_ctr(None, None, path="/nonexistent") is None
    # The running dockerd's executable (host.processes.executable) is looked next to first.
    assert find_ctr(tmp_path / "sbin" / "dockerd", None, path="/nonexistent") == ctr


def test_only_a_ctr_import_counts_as_one() -> None:
    assert is_ctr_import((b"/usr/bin/ctr", b"-n", b"moby", b"images", b"import", b"-"))
    assert not is_ctr_import(None)  # gone, or a zombie
    assert not is_ctr_import((b"/usr/bin/ctr", b"images", b"ls"))
    assert not is_ctr_import((b"/bin/sleep", b"import"))  # a recycled pid


def test_stage_is_opt_in_then_rerun_until_containers_stop(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    assert "stage" not in steps_to_run(journal.state())
    assert steps_to_run(journal.state(), STAGE_PHASES) == ("snapshot", "stage")
    journal.start_run("0.1.0")
    for name in STAGE_PHASES:
        with journal.phase(name, {}) as handle:
            handle.done()
    # `run` after `stage`: stages again (what changed), exports what is not staged.
    assert steps_to_run(journal.state(), RUN_PHASES)[:3] == ("snapshot", "stage", "export")
    assert journal.state().remaining[:1] == ("export",)
    with journal.phase("export", {}) as handle:
        handle.done()
    with journal.phase("quiesce", {}) as handle:
        handle.done()
    assert steps_to_run(journal.state(), RUN_PHASES) == (
        "commit", "switch", "restart", "import", "verify", "recreate")


def test_flush_targets_the_data_root_of_a_managed_store_else_everything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[bool] = []
    monkeypatch.setattr(os, "sync", lambda: synced.append(True))
    assert stage._flush(str(tmp_path), managed=True).how == "syncfs"
    assert synced == []
    # Another containerd's root may be anywhere; a data root this host cannot see, too.
    assert stage._flush(str(tmp_path), managed=False).how == "sync"
    assert stage._flush(str(tmp_path / "elsewhere"), managed=True).how == "sync"
    assert stage._flush("", managed=True).how == "sync"
    assert synced == [True, True, True]
