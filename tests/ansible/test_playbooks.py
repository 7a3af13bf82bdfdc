"""Issue 10: the Ansible fleet layer, run with the real ansible-playbook against 4 sandbox
engines (Engine 28.5) on this machine, one inventory host each (connection local).

The module installs the tool once with install.yml (a wheel built from the repository's HEAD
on the control node, or the wheel named by $CM_ANSIBLE_WHEEL), into one virtualenv per host,
then runs plan.yml, migrate.yml and rollback.yml. Each test gets fresh state dirs and leaves
every host on the legacy store, as it found it. A host is "broken on purpose" with a restart
command that makes dockerd read a config file in which the feature name is misspelt, so the
daemon really comes back on the legacy store and the tool rolls back by itself (exit 10).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.host.throwaway import RECORD_NAME, ThrowawayEngine
from migrate.sandbox import BASE_DIR, Sandbox, SandboxError, populate_sandbox, sandbox_samples

from .fleet import WHEEL_ENV, Fleet, FleetHost, ansible_playbook, output, read_json

PLAYBOOK = ansible_playbook()
pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(PLAYBOOK is None, reason="ansible-playbook not found: "
                       "pip install ansible-core (the dev extra has it)"),
]  # fmt: skip

MIB = 1024 * 1024
HOSTS = ("host1", "host2", "host3", "host4")
LEGACY_RESTART = """#!/bin/sh
# Restart dockerd so that it reads a config file with the feature name misspelt: it comes
# back on the legacy store whatever daemon.json says.
set -e
dir="$1"
printf '{"features": {"containerd-snapshoter": true}}\\n' > "$dir/typo.json"
printf '["--config-file", "%s/typo.json"]\\n' "$dir" > "$dir/extra-args.json"
exec {python} -m migrate.sandbox restart --dir "$dir"
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    assert PLAYBOOK is not None
    workdir = tmp_path_factory.mktemp("ansible-fleet")
    sandboxes: list[Sandbox] = []
    try:
        hosts = []
        for name in HOSTS:
            # pt-<pid>-: the prefix conftest reaps when a crashed session left it behind.
            sandbox = Sandbox(BASE_DIR / f"pt-{os.getpid()}-ans-{name}", "28")
            sandboxes.append(sandbox)
            sandbox.start()
            populate_sandbox(sandbox, big_layer_bytes=MIB)
            hosts.append(FleetHost(name, sandbox, workdir / name / "tool",
                                   {"cm_state_dir": str(workdir / name / "install-state")}))
        fleet = Fleet(hosts, workdir, PLAYBOOK)
        wheel = os.environ.get(WHEEL_ENV)
        extra = {"cm_wheel": wheel} if wheel else {"cm_wheel_dir": str(workdir / "dist")}
        done = fleet.playbook("install.yml", fleet.write_inventory(workdir / "install.json"),
                              extra=extra)  # fmt: skip
        assert done.returncode == 0, output(done)
        yield fleet
    finally:
        errors = []
        for sandbox in sandboxes:
            try:
                sandbox.destroy()
            except SandboxError as error:
                errors.append(str(error))
        assert not errors, errors


@pytest.fixture(autouse=True)
def _back_to_legacy(fleet: Fleet) -> Iterator[None]:
    """After each test (passed or not): every host back on the legacy store, for the next."""
    yield
    for host in fleet.hosts:
        if host.sandbox.extra_args_file.exists():
            _repair(host)
        host.sandbox.start()  # no-op when it runs
        if host.sandbox.containerd_snapshotter() and host.state_dir.exists():
            tool = host.install_dir / "venv" / "bin" / "containerd-migrate"
            subprocess.run([str(tool), "--host", host.sandbox.host,
                            "--daemon-config", str(host.sandbox.daemon_json),
                            "--state-dir", str(host.state_dir), "rollback", "--yes",
                            "--restart-command", host.sandbox.restart_command],
                           capture_output=True, check=False, timeout=300)  # fmt: skip


def _fresh(fleet: Fleet, tag: str) -> dict[str, bytes]:
    """New state dirs and default settings for every host; daemon.json of each as it is now."""
    originals = {}
    for host in fleet.hosts:
        host.vars = {"cm_state_dir": str(fleet.workdir / tag / host.name / "state")}
        assert not host.sandbox.containerd_snapshotter(), f"{host.name} not on the legacy store"
        originals[host.name] = host.sandbox.daemon_json.read_bytes()
    return originals


def _break(fleet: Fleet, host: FleetHost) -> None:
    script = fleet.workdir / "restart-legacy.sh"
    script.write_text(LEGACY_RESTART.replace("{python}", sys.executable))
    host.vars["cm_restart_command"] = f"/bin/sh {script} {host.sandbox.dir}"


def _repair(host: FleetHost) -> None:
    """Undo _break: dockerd reads its own daemon.json again."""
    host.sandbox.extra_args_file.unlink(missing_ok=True)
    (host.sandbox.dir / "typo.json").unlink(missing_ok=True)
    host.sandbox.restart()


def _untouched(host: FleetHost, originals: dict[str, bytes]) -> None:
    """Still on the legacy store, daemon.json byte-identical, no state dir at all."""
    assert not host.sandbox.containerd_snapshotter(), host.name
    assert host.sandbox.daemon_json.read_bytes() == originals[host.name], host.name
    assert not host.state_dir.exists(), f"{host.name}: {host.state_dir} was created"


def _restored(host: FleetHost, originals: dict[str, bytes]) -> None:
    assert not host.sandbox.containerd_snapshotter(), host.name
    assert host.sandbox.daemon_json.read_bytes() == originals[host.name], host.name
    images = {tag for image in host.sandbox.api("/images/json") for tag in image["RepoTags"] or []}
    assert set(sandbox_samples(host.sandbox).tags) <= images, host.name


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["host"]: row for row in report["hosts"]}


def _recap(done: subprocess.CompletedProcess[str], host: str) -> dict[str, int]:
    match = re.search(rf"^{host}\s*:\s*(.*)$", done.stdout, re.MULTILINE)
    assert match, output(done)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def test_install_gives_every_host_its_own_virtualenv(fleet: Fleet) -> None:
    for host in fleet.hosts:
        tool = host.install_dir / "venv" / "bin" / "containerd-migrate"
        assert tool.is_file(), host.name
        version = subprocess.run([str(tool), "--version"], capture_output=True, text=True,
                                 check=True)  # fmt: skip
        assert version.stdout.startswith("containerd-migrate, version"), version
        assert list((host.install_dir / "wheels").glob("containerd_migrate-*.whl")), host.name
    if not os.environ.get(WHEEL_ENV):
        assert list((fleet.workdir / "dist").glob("*/wheel/containerd_migrate-*.whl"))
    # Installing again changes nothing (one host is enough: every host runs the same tasks).
    extra = ({"cm_wheel": os.environ[WHEEL_ENV]} if os.environ.get(WHEEL_ENV)
             else {"cm_wheel_dir": str(fleet.workdir / "dist")})  # fmt: skip
    done = fleet.playbook("install.yml", fleet.write_inventory(fleet.workdir / "again.json"),
                          "--limit", "host1", extra=extra)  # fmt: skip
    assert done.returncode == 0, output(done)
    assert _recap(done, "host1")["changed"] == 0, output(done)


def test_plan_writes_one_fleet_report(fleet: Fleet) -> None:
    originals = _fresh(fleet, "plan")
    fleet["host3"].vars["cm_containers"] = "refuse"  # 3 containers: blocker containers-present
    down = fleet["host4"].sandbox
    reports = fleet.workdir / "plan-reports"
    down.stop()  # plan exits 5: daemon unreachable
    try:
        done = fleet.playbook("plan.yml", fleet.write_inventory(fleet.workdir / "plan.json"),
                              extra={"cm_report_dir": str(reports)})  # fmt: skip
    finally:
        down.start()
    assert done.returncode == 0, output(done)

    report = read_json(reports / "plan.json")
    assert report["by_state"] == {"ready": ["host1", "host2"], "blocked": ["host3"],
                                  "migrated": [], "error": ["host4"],
                                  "unreachable": []}  # fmt: skip
    rows = _rows(report)
    samples = sandbox_samples(fleet["host1"].sandbox)
    for name in ("host1", "host2", "host3"):
        row = rows[name]
        assert row["tags"] == len(samples.tags), row
        assert row["dangling"] == len(samples.dangling_ids)
        assert row["containers"] == len(samples.containers)
        assert row["engine"]["store"] == "legacy"
        assert row["estimate"]["downtime_seconds"] > 0
        assert row["disk"]["state_dir"]["need_bytes"] > 0
        assert row["disk"]["state_dir"]["free_bytes"] > row["disk"]["state_dir"]["need_bytes"]
        assert {w["id"] for w in row["warnings"]} >= {"volumes-only-used-by-containers"}
        assert all(w["hint"] for w in row["warnings"])
        assert read_json(reports / "plan-hosts" / f"{name}.json")["ready"] == (name != "host3")
        # Private, as the tool's own reports (issue 23 item 20).
        assert (reports / "plan-hosts" / f"{name}.json").stat().st_mode & 0o777 == 0o600
    assert [b["id"] for b in rows["host3"]["blockers"]] == ["containers-present"]
    assert rows["host3"]["blockers"][0]["hint"]
    assert rows["host4"]["exit_code"] == 5
    assert "cannot reach the Docker daemon" in rows["host4"]["error"]
    by_blocker = {g["id"]: [h["host"] for h in g["hosts"]] for g in report["by_blocker"]}
    assert by_blocker == {"containers-present": ["host3"], "plan-failed": ["host4"]}
    totals = report["totals"]
    assert totals["hosts"] == 4 and totals["ready"] == 2 and totals["blocked"] == 1
    assert totals["tags"] == 3 * len(samples.tags)
    assert totals["downtime_seconds"] > 0

    markdown = (reports / "plan.md").read_text()
    for name, state in (("host1", "READY"), ("host2", "READY"), ("host3", "BLOCKED"),
                        ("host4", "ERROR")):  # fmt: skip
        assert f"### {name}: {state}" in markdown
    assert "## Hosts by blocker" in markdown
    assert "### `containers-present`: 1 host(s)" in markdown
    assert "fleet plan: 4 host(s), 2 ready, 1 blocked, 1 error/unreachable" in done.stdout
    for host in fleet.hosts:  # a dry run: nothing changed anywhere
        assert host.sandbox.daemon_json.read_bytes() == originals[host.name]
        assert not host.sandbox.containerd_snapshotter()


def test_migrate_a_healthy_fleet_then_roll_it_back(fleet: Fleet) -> None:
    originals = _fresh(fleet, "healthy")
    inventory = fleet.write_inventory(fleet.workdir / "healthy.json")
    reports = fleet.workdir / "healthy-reports"
    done = fleet.playbook("prepare.yml", inventory, extra={"cm_report_dir": str(reports)})
    assert done.returncode == 0, output(done)
    prepared = read_json(reports / "prepare.json")
    assert prepared["counts"] == {"prepared": 4}, prepared
    for host in fleet.hosts:
        assert list((host.state_dir / "archives").glob("*.tar")), host.name
        assert not host.sandbox.containerd_snapshotter()  # export does not touch the daemon

    done = fleet.playbook("migrate.yml", inventory, extra={
        "cm_report_dir": str(reports), "cm_serial": 2, "cm_prepare": "export"})  # fmt: skip
    assert done.returncode == 0, output(done)
    summary = read_json(reports / "migrate.json")
    assert summary["state"] == "complete" and not summary["stopped"], summary
    assert summary["counts"] == {"migrated": 4, "already_migrated": 0, "rolled_back": 0,
                                 "failed": 0, "skipped": 0, "not_started": 0}  # fmt: skip
    rows = _rows(summary)
    assert {n: r["wave"] for n, r in rows.items()} == {
        "host1": "canary", "host2": "batch 1", "host3": "batch 1", "host4": "batch 2"}
    for host in fleet.hosts:
        row = rows[host.name]
        assert row["outcome"] == "migrated", row
        assert {k: s["exit_code"] for k, s in row["steps"].items()} == {
            "prepare": 0, "run": 0, "verify": 0}
        assert row["journal_outcome"] == "completed"
        assert row["window_seconds"] > 0 and row["run_seconds"] > 0
        assert host.sandbox.containerd_snapshotter(), host.name
    assert "rollout complete: 4 migrated, 0 rolled back" in done.stdout
    assert "| host1 | canary | **migrated** |" in (reports / "migrate.md").read_text()

    # The fleet plan of a migrated fleet: every host migrated, apart, nothing in the totals.
    done = fleet.playbook("plan.yml", inventory, extra={"cm_report_dir": str(reports)})
    assert done.returncode == 0, output(done)
    plan = read_json(reports / "plan.json")
    assert plan["by_state"]["migrated"] == [h.name for h in fleet.hosts], plan["by_state"]
    assert plan["by_blocker"] == [] and plan["totals"]["blocked"] == 0
    assert plan["totals"]["downtime_seconds"] == 0 and plan["totals"]["images"] == 0
    assert "fleet plan: 4 host(s), 0 ready, 0 blocked, 4 already migrated" in done.stdout
    assert "### host1: ALREADY MIGRATED" in (reports / "plan.md").read_text()

    done = fleet.playbook("rollback.yml", inventory,
                          extra={"cm_report_dir": str(reports), "cm_targets": "all"})
    assert done.returncode == 0, output(done)
    report = read_json(reports / "rollback.json")
    assert report["counts"] == {"restored": 4}, report
    for host in fleet.hosts:
        row = _rows(report)[host.name]
        assert row["outcome_before"] == "completed" and row["outcome_after"] == "rolled_back"
        assert any("restored the original" in line for line in row["restored"]), row
        assert any("legacy store" in line for line in row["checked"]), row
        _restored(host, originals)
    assert "## host1: restored" in (reports / "rollback.md").read_text()
    # The summary gives each thing restored a line of its own, not one line per host.
    shown = re.search(r'"  (switch: restored the original [^"]*)"', done.stdout)
    assert shown and ";" not in shown.group(1), output(done)


def test_rollback_needs_chosen_hosts(fleet: Fleet) -> None:
    _fresh(fleet, "unchosen")
    done = fleet.playbook("rollback.yml", fleet.write_inventory(fleet.workdir / "unchosen.json"))
    assert done.returncode != 0
    assert "choose the hosts to roll back" in done.stdout, output(done)
    for host in fleet.hosts:
        assert not host.state_dir.exists()


def test_a_failed_batch_host_is_rolled_back_and_stops_the_rollout(fleet: Fleet) -> None:
    originals = _fresh(fleet, "batch")
    fleet["host2"].vars["cm_containers"] = "refuse"  # blocked: skipped, not failed
    broken = fleet["host3"]
    _break(fleet, broken)
    inventory = fleet.write_inventory(fleet.workdir / "batch.json")
    reports = fleet.workdir / "batch-reports"
    try:
        done = fleet.playbook("migrate.yml", inventory,
                              extra={"cm_report_dir": str(reports), "cm_serial": 2})
    finally:
        _repair(broken)
    assert done.returncode == 2, output(done)  # ansible-playbook: some host failed
    summary = read_json(reports / "migrate.json")
    rows = _rows(summary)
    assert summary["stopped"] and summary["state"] == "stopped after batch 1: host3 rolled back"
    assert {n: r["outcome"] for n, r in rows.items()} == {
        "host1": "migrated", "host2": "skipped", "host3": "rolled_back",
        "host4": "not_started"}, summary  # fmt: skip
    assert "containers-present" in rows["host2"]["reason"]
    assert "came back in the legacy image store" in rows["host3"]["reason"]
    assert rows["host3"]["steps"]["run"]["exit_code"] == 10
    assert rows["host3"]["journal_outcome"] == "rolled_back"
    assert rows["host3"]["window_seconds"] is not None
    assert "the rollout stopped after batch 1" in rows["host4"]["reason"]
    assert _recap(done, "host3")["failed"] == 1
    assert _recap(done, "host2")["failed"] == 0
    assert "rollout stopped after batch 1: host3 rolled back" in done.stdout
    markdown = (reports / "migrate.md").read_text()
    assert "## host3: rolled back" in markdown and "exit 10" in markdown

    assert fleet["host1"].sandbox.containerd_snapshotter()
    for name in ("host2", "host3"):  # skipped; rolled back by the tool
        assert not fleet[name].sandbox.containerd_snapshotter()
        assert fleet[name].sandbox.daemon_json.read_bytes() == originals[name]
    _untouched(fleet["host4"], originals)

    # Put the canary back with rollback.yml on that host alone.
    done = fleet.playbook("rollback.yml", inventory, "--limit", "host1",
                          extra={"cm_report_dir": str(reports)})
    assert done.returncode == 0, output(done)
    assert [r["host"] for r in read_json(reports / "rollback.json")["hosts"]] == ["host1"]
    _restored(fleet["host1"], originals)


def test_a_failed_canary_group_leaves_every_other_host_untouched(fleet: Fleet) -> None:
    originals = _fresh(fleet, "canary")
    broken = fleet["host4"]
    _break(fleet, broken)
    inventory = fleet.write_inventory(fleet.workdir / "canary.json", {"canaries": ["host4"]})
    reports = fleet.workdir / "canary-reports"
    try:
        done = fleet.playbook("migrate.yml", inventory,
                              extra={"cm_report_dir": str(reports), "cm_canary": "canaries"})
    finally:
        _repair(broken)
    assert done.returncode == 2, output(done)
    summary = read_json(reports / "migrate.json")
    rows = _rows(summary)
    assert summary["canary"] == ["host4"]
    assert summary["state"] == "stopped after the canary: host4 rolled back", summary
    assert rows["host4"]["wave"] == "canary" and rows["host4"]["outcome"] == "rolled_back"
    assert "the batches do not start" in rows["host4"]["reason"]
    for name in ("host1", "host2", "host3"):
        assert rows[name]["outcome"] == "not_started"
        _untouched(fleet[name], originals)
    assert not broken.sandbox.containerd_snapshotter()
    assert broken.sandbox.daemon_json.read_bytes() == originals["host4"]
    assert "PLAY [Migrate the other hosts in batches]" not in done.stdout


def test_a_locked_host_is_retried_then_skipped_and_reported(fleet: Fleet) -> None:
    """Another containerd-migrate holds host1's lock (a real run, paused by a failpoint right
    after its snapshot): migrate.yml retries host1's run, then skips and reports it. host1 is
    the canary, with cm_canary_required off: a skipped canary then does not stop the rollout."""
    originals = _fresh(fleet, "locked")
    locked = fleet["host1"]
    locked.vars.update(cm_lock_retries=2, cm_lock_delay=1)
    resume = fleet.workdir / "locked-resume"
    reached = resume.with_name(resume.name + ".reached")
    tool = locked.install_dir / "venv" / "bin" / "containerd-migrate"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "CONTAINERD_"))}
    env.update(CONTAINERD_MIGRATE_FAILPOINTS="after:snapshot=pause",
               CONTAINERD_MIGRATE_FAILPOINT_RESUME=str(resume))  # fmt: skip
    holder = subprocess.Popen(
        [str(tool), "--host", locked.sandbox.host, "--daemon-config",
         str(locked.sandbox.daemon_json), "--state-dir", str(locked.state_dir), "run", "--yes",
         "--containers", "leave", "--restart-command", locked.sandbox.restart_command],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)  # fmt: skip
    reports = fleet.workdir / "locked-reports"
    try:
        deadline = time.monotonic() + 120
        while not reached.exists():
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline, "the holding run never paused"
            time.sleep(0.05)
        done = fleet.playbook("migrate.yml", fleet.write_inventory(fleet.workdir / "locked.json"),
                              extra={"cm_report_dir": str(reports), "cm_targets": "host1",
                                     "cm_canary_required": False})  # fmt: skip
    finally:
        # Still paused after its snapshot: killing it leaves the host as it was.
        holder.kill()
        holder.communicate(timeout=60)
    assert done.returncode == 0, output(done)  # a locked host is skipped, not failed
    summary = read_json(reports / "migrate.json")
    row = _rows(summary)["host1"]
    assert summary["state"] == "complete", summary
    assert row["outcome"] == "skipped" and not row["failed"], row
    assert re.search(r"run: locked by another run after \d+ attempt", row["reason"]), row
    assert row["steps"]["run"]["exit_code"] == 8
    assert "is locked by pid" in row["steps"]["run"]["error"]
    assert "retries left" in done.stdout, output(done)  # Ansible really retried
    assert locked.sandbox.daemon_json.read_bytes() == originals["host1"]
    assert not locked.sandbox.containerd_snapshotter()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for rehearsals: their engine's sockets must fit in 108 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="cm-ra-", dir="/tmp"))
    yield folder
    # A failed test may leave a rehearsal's engine running: stopped by its recorded pid.
    for record in folder.glob(f"*/{RECORD_NAME}"):
        ThrowawayEngine(record.parent).destroy()
    shutil.rmtree(folder, ignore_errors=True)


def test_prepare_rehearses_every_host_and_reports_figures_and_failures(
        fleet: Fleet, short_dir: Path) -> None:
    """cm_prepare=rehearse: every host rehearses at once. host3's rehearsal fails (a
    snapshotter its containerd does not load: exit 4, the report still printed), host4's
    cannot run (its cm_rehearse_dir too deep for the engine's sockets: exit 3, blocked);
    the play writes the fleet report with each host's figures and failures, then fails
    host3 alone. No host is changed, and migrate.yml refuses a rehearsal as preparation."""
    originals = _fresh(fleet, "rehearse")
    for host in fleet.hosts:
        host.vars["cm_rehearse_dir"] = str(short_dir / host.name)
    fleet["host3"].vars["cm_snapshotter"] = "btrfs"
    fleet["host4"].vars["cm_rehearse_dir"] = str(short_dir / ("d" * 100))
    inventory = fleet.write_inventory(fleet.workdir / "rehearse.json")
    reports = fleet.workdir / "rehearse-reports"
    done = fleet.playbook("prepare.yml", inventory,
                          extra={"cm_report_dir": str(reports), "cm_prepare": "rehearse"})

    assert done.returncode == 2, output(done)  # host3 failed, after the report was written
    assert _recap(done, "host3")["failed"] == 1
    assert all(_recap(done, name)["failed"] == 0 for name in ("host1", "host2", "host4"))
    report = read_json(reports / "prepare.json")
    assert report["command"] == "rehearse"
    assert report["counts"] == {"rehearsed": 2, "failed": 1, "skipped": 1}, report
    rows = _rows(report)
    samples = sandbox_samples(fleet["host1"].sandbox)
    for name in ("host1", "host2"):
        row, sandbox = rows[name], fleet[name].sandbox
        assert (row["outcome"], row["exit_code"]) == ("rehearsed", 0), row
        rehearsal = row["rehearsal"]
        assert rehearsal["ok"] and rehearsal["exit_code"] == 0 and rehearsal["failures"] == []
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rehearsal["finished_at"])
        assert rehearsal["dockerd"] == str(Path(f"/proc/{sandbox.pid()}/exe").readlink())
        assert rehearsal["containers_created"] == len(samples.containers)
        figures = rehearsal["figures"]
        assert figures["archive_bytes"] > 0 and figures["load_seconds"] > 0
        assert figures["window_seconds"] >= figures["engine_start_seconds"] > 0
    failed = rows["host3"]
    assert (failed["outcome"], failed["failed"], failed["exit_code"]) == ("failed", True, 4)
    assert not failed["rehearsal"]["ok"] and failed["rehearsal"]["exit_code"] == 4
    assert any("snapshotter not loaded: btrfs" in line
               for line in failed["rehearsal"]["failures"]), failed
    assert failed["rehearsal"]["figures"]["archive_bytes"] > 0
    assert failed["reason"].startswith("rehearsal failed, exit 4: ")
    blocked = rows["host4"]
    assert (blocked["outcome"], blocked["failed"], blocked["exit_code"]) == ("skipped", False, 3)
    assert "too deep for unix sockets" in blocked["reason"], blocked
    assert blocked["rehearsal"]["figures"] is None
    totals = report["totals"]
    assert (totals["hosts_rehearsed"], totals["hosts_with_failures"]) == (3, 1), totals
    assert totals["failures"] == len(failed["rehearsal"]["failures"])
    assert totals["longest_window_seconds"] == max(
        rows[n]["rehearsal"]["figures"]["window_seconds"] for n in ("host1", "host2", "host3"))
    assert "prepare (rehearse): failed 1, rehearsed 2, skipped 1" in done.stdout, output(done)
    for host in fleet.hosts:
        assert not host.sandbox.containerd_snapshotter(), host.name
        assert host.sandbox.daemon_json.read_bytes() == originals[host.name], host.name
        # A rehearsal is not a migration: no journal, and its directory is gone.
        assert not (host.state_dir / "journal.jsonl").exists(), host.name
    assert list(short_dir.iterdir()) == []

    # migrate.yml: a rehearsal prepares nothing for `run`, so it is refused before any host.
    originals = _fresh(fleet, "rehearse-migrate")
    done = fleet.playbook("migrate.yml", fleet.write_inventory(fleet.workdir / "rm.json"),
                          extra={"cm_report_dir": str(reports), "cm_prepare": "rehearse"})
    assert done.returncode == 2, output(done)
    assert "cm_prepare=rehearse is for prepare.yml" in done.stdout, output(done)
    for host in fleet.hosts:
        _untouched(host, originals)
