"""Commands together, more than once on one host (the lifecycle issue), on 26.1 and 28.5.

A minimal host (one image, one running and one created container, a named volume) goes
through the sequences operators really run: stage then run with recreate, a recreate that
fails in the window, a rollback then another migration, stage on a migrated host, cleanup
after a rollback, an undo that fails and is retried. Every test reads the host itself
(docker, ctr), not only our journal.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from migrate.engine.containerd import Containerd, find_ctr
from migrate.errors import ExitCode
from migrate.journal import JournalState, replay
from migrate.models import DOCKERD_CONTAINERD_NAMESPACE
from migrate.sandbox import Sandbox, SandboxFactory, build_bulk_images
from migrate.sandbox.fetch import engine_bin_dirs
from migrate.sandbox.samples import BUSY_LOOP, docker, inspect
from migrate.support.failpoints import PAUSE_TIMEOUT_ENV, RESUME_ENV, reached_path
from tests.engine.cli import cli, spawn, wait_for_file

pytestmark = pytest.mark.engine

ENGINES = ["26", "28"]
RUNNING, CREATED = "cm-life-run", "cm-life-created"
RECREATE = ("--containers", "recreate")


def _out(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-6000:]}"


def _small_host(sandbox: Sandbox) -> dict[str, str]:
    """One image, a running container with a named volume holding data, a created one.
    Returns container name -> ID."""
    (tag,) = build_bulk_images(sandbox.host, 1, prefix="cm-life/app", workdir=sandbox.dir)
    docker(sandbox.host, "volume", "create", "cm-life-data")
    docker(sandbox.host, "run", "--rm", "-v", "cm-life-data:/data", tag, "sh", "-c",
           "echo kept > /data/file")
    docker(sandbox.host, "run", "-d", "--name", RUNNING, "-v", "cm-life-data:/data", tag,
           "sh", "-c", BUSY_LOOP)
    docker(sandbox.host, "create", "--name", CREATED, tag, "true")
    return {name: str(inspect(sandbox.host, "container", name)["Id"])
            for name in (RUNNING, CREATED)}


def _restart(sandbox: Sandbox) -> tuple[str, ...]:
    return ("--restart-command", sandbox.restart_command)


def _journal(state: Path) -> JournalState:
    return replay(state / "journal.jsonl")


def _store(sandbox: Sandbox) -> str:
    out = docker(sandbox.host, "info", "--format", "{{json .DriverStatus}}").stdout
    return "containerd" if "io.containerd.snapshotter.v1" in out else "legacy"


def _containers(sandbox: Sandbox) -> dict[str, tuple[str, str]]:
    """name -> (ID, state), as the daemon lists them now."""
    out = docker(sandbox.host, "ps", "-a", "--no-trunc", "--format",
                 "{{.Names}} {{.ID}} {{.State}}").stdout
    return {n: (i, s) for n, i, s in (line.split() for line in out.splitlines() if line)}


def _ctr(sandbox: Sandbox) -> Containerd:
    ctr = find_ctr(None, path=":".join(map(str, engine_bin_dirs(sandbox.engine))))
    assert ctr is not None
    return Containerd(ctr, str(sandbox.containerd_socket), DOCKERD_CONTAINERD_NAMESPACE)


def _assert_legacy_restored(sandbox: Sandbox, ids: dict[str, str]) -> None:
    assert _store(sandbox) == "legacy"
    now = _containers(sandbox)
    assert now[RUNNING] == (ids[RUNNING], "running")
    assert now[CREATED][0] == ids[CREATED]


def _next_step(sandbox: Sandbox, state: Path) -> list[str]:
    """The next-step command `status` prints, as an argv (the first one it names)."""
    text = cli(sandbox, state, "status").stdout
    line = next(line for line in text.splitlines() if line.startswith("next:"))
    command = line.split("`")[1]
    argv = shlex.split(command)
    assert argv[0] == "containerd-migrate", line
    return argv[1:]


def _cli_argv(sandbox: Sandbox, state: Path, argv: list[str],
              ) -> subprocess.CompletedProcess[str]:
    """Run a printed command (its global options included) against the sandbox."""
    globals_end = argv.index("--state-dir") + 2
    assert argv[globals_end - 1] == str(state)
    # The sandbox has no service manager: its restart command comes from the environment
    # (CONTAINERD_MIGRATE_RESTART_COMMAND, set by cli()), as on a shell set up by
    # `python -m migrate.sandbox env`.
    return cli(sandbox, state, *argv[globals_end:])


@pytest.mark.parametrize("engine", ENGINES)
def test_stage_with_recreate_then_run_recreates_from_staged_images(
        fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine)
    ids = _small_host(sandbox)
    state = tmp_path / "state"

    staged = cli(sandbox, state, "stage", *RECREATE, *_restart(sandbox))
    assert staged.returncode == 0, _out(staged)
    ran = cli(sandbox, state, "run", "--yes", *RECREATE, *_restart(sandbox))

    assert ran.returncode == 0, _out(ran)
    assert _store(sandbox) == "containerd"
    now = _containers(sandbox)
    assert now[RUNNING][1] == "running" and now[CREATED][1] == "created"
    assert docker(sandbox.host, "exec", RUNNING, "cat", "/data/file").stdout.strip() == "kept"
    # The run moved nothing twice: everything came from the staged store.
    assert not (_journal(state).phase("import").result or {}).get("loaded")
    # status tells the truth: every container was recreated, none is left hidden.
    status = cli(sandbox, state, "status").stdout
    assert "left hidden" not in status, status

    rolled = cli(sandbox, state, "rollback", "--yes")
    assert rolled.returncode == 0, _out(rolled)
    _assert_legacy_restored(sandbox, ids)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_recreate_that_fails_rolls_back_and_the_next_migration_starts_clean(
        fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine)
    ids = _small_host(sandbox)
    state = tmp_path / "state"
    assert cli(sandbox, state, "stage", *RECREATE, *_restart(sandbox)).returncode == 0
    resume = tmp_path / "resume"

    # After verification, someone creates a container with a recreated one's name.
    run = spawn(sandbox, state, "run", "--yes", *RECREATE, *_restart(sandbox),
                failpoints="after:verify=pause",
                env={RESUME_ENV: str(resume), PAUSE_TIMEOUT_ENV: "120"})
    try:
        wait_for_file(reached_path(resume), run)
        image = str(inspect(sandbox.host, "image", "cm-life/app-0000:1")["Id"])
        docker(sandbox.host, "create", "--name", RUNNING, image, "true")
    finally:
        resume.touch()
        out, err = run.communicate(timeout=300)

    assert run.returncode == ExitCode.ROLLED_BACK, f"{out}\n{err[-4000:]}"
    assert RUNNING in err and "already exists" in err
    _assert_legacy_restored(sandbox, ids)
    assert _journal(state).outcome == "rolled_back"

    # The colliding container stays (hidden) in the containerd store: the rollback journaled
    # it, so the next run's plan refuses before anything stops, naming it.
    first = _journal(state).last_migration_id
    argv = _next_step(sandbox, state)
    assert argv[argv.index("--state-dir") + 2:][:1] == ["cleanup"], argv
    again = cli(sandbox, state, "run", "--yes", *RECREATE, *_restart(sandbox))
    assert again.returncode == ExitCode.BLOCKED, _out(again)
    assert "names-kept-in-containerd" in again.stderr and RUNNING in again.stderr
    assert _journal(state).last_migration_id == first  # refused: no migration opened
    _assert_legacy_restored(sandbox, ids)


@pytest.mark.parametrize("engine", ENGINES)
def test_rollback_then_run_again_from_the_printed_hint(
        fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine)
    ids = _small_host(sandbox)
    state = tmp_path / "state"
    assert cli(sandbox, state, "stage", *RECREATE, *_restart(sandbox)).returncode == 0
    assert cli(sandbox, state, "rollback", "--yes").returncode == 0
    _assert_legacy_restored(sandbox, ids)

    # "or `... run --yes --containers recreate` migrates again": the second command.
    text = cli(sandbox, state, "status").stdout
    line = next(line for line in text.splitlines() if line.startswith("next:"))
    rerun = shlex.split(line.split("`")[3])
    assert rerun[rerun.index("--state-dir") + 2:] == ["run", "--yes", "--containers",
                                                      "recreate"], line
    ran = _cli_argv(sandbox, state, rerun)

    assert ran.returncode == 0, _out(ran)
    steps = _journal(state).runs[-1]
    assert _journal(state).phase("stage").status == "pending", "a new migration staged again"
    assert steps.migration_id == _journal(state).last_migration_id
    assert _containers(sandbox)[RUNNING][1] == "running"


@pytest.mark.parametrize("engine", ENGINES)
def test_stage_and_export_refuse_on_a_migrated_host_and_rollback_still_works(
        fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine)
    ids = _small_host(sandbox)
    state = tmp_path / "state"
    assert cli(sandbox, state, "run", "--yes", *RECREATE, *_restart(sandbox)).returncode == 0
    migration = _journal(state).last_migration_id

    for command in ("stage", "export"):
        refused = cli(sandbox, state, command, *RECREATE, *_restart(sandbox))
        assert refused.returncode == ExitCode.BLOCKED, _out(refused)
        assert "completed" in refused.stderr and "Traceback" not in refused.stderr
    assert _journal(state).last_migration_id == migration  # no migration opened over it
    # A state dir that never saw this host's migration: the plan blocks (already migrated).
    other = tmp_path / "other"
    fresh = cli(sandbox, other, "stage", *RECREATE, *_restart(sandbox))
    assert fresh.returncode == ExitCode.BLOCKED, _out(fresh)
    assert "already-containerd" in fresh.stderr and _journal(other).last_migration_id is None

    assert cli(sandbox, state, "cleanup").returncode == 0
    rolled = cli(sandbox, state, "rollback", "--yes")
    assert rolled.returncode == 0, _out(rolled)
    _assert_legacy_restored(sandbox, ids)
    assert "archives are kept" not in rolled.stdout, rolled.stdout  # cleanup deleted them
    assert cli(sandbox, state, "cleanup").returncode == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_cleanup_after_rollback_frees_the_containerd_store_of_every_migration(
        fresh_sandbox: SandboxFactory, engine: str, tmp_path: Path) -> None:
    sandbox = fresh_sandbox(engine)
    ids = _small_host(sandbox)
    before = _ctr(sandbox).images()
    state = tmp_path / "state"
    # Two migrations of one state dir: a staged one rolled back, then a completed one
    # (imports, commits) rolled back.
    assert cli(sandbox, state, "stage", *RECREATE, *_restart(sandbox)).returncode == 0
    assert cli(sandbox, state, "rollback", "--yes").returncode == 0
    docker(sandbox.host, "exec", RUNNING, "sh", "-c", "echo changed > /changed")
    assert cli(sandbox, state, "run", "--yes", *RECREATE, *_restart(sandbox)).returncode == 0
    rolled = cli(sandbox, state, "rollback", "--yes")
    assert rolled.returncode == 0, _out(rolled)
    assert len(_ctr(sandbox).images()) > len(before)
    assert "containerd store" in cli(sandbox, state, "status").stdout

    cleaned = cli(sandbox, state, "cleanup")

    assert cleaned.returncode == 0, _out(cleaned)
    assert _ctr(sandbox).images() == before
    _assert_legacy_restored(sandbox, ids)
    status = cli(sandbox, state, "status")
    assert "rolled back, cleaned up" in status.stdout, status.stdout
    # `rollback --purge-imported` after the fact has nothing left either, and says so.
    assert cli(sandbox, state, "rollback", "--yes", "--purge-imported").returncode == 0


def test_an_undo_that_fails_is_a_failure_and_rollback_retries_it(
        fresh_sandbox: SandboxFactory, tmp_path: Path) -> None:
    sandbox = fresh_sandbox("28")
    ids = _small_host(sandbox)
    docker(sandbox.host, "exec", RUNNING, "sh", "-c", "echo changed > /changed")
    state = tmp_path / "state"
    resume = tmp_path / "resume"
    # While the run pauses after the commit phase, someone creates a container from the
    # commit image in the legacy store: the rollback cannot remove that image then.
    run = spawn(sandbox, state, "run", "--yes", *RECREATE, *_restart(sandbox),
                failpoints="after:commit=pause",
                env={RESUME_ENV: str(resume), PAUSE_TIMEOUT_ENV: "120"})
    try:
        wait_for_file(reached_path(resume), run)
        docker(sandbox.host, "create", "--name", "cm-life-blocker",
               f"containerd-migrate/commit:{ids[RUNNING]}", "true")
    finally:
        resume.touch()
        out, err = run.communicate(timeout=300)
    assert run.returncode == 0, f"{out}\n{err[-4000:]}"

    failed = cli(sandbox, state, "rollback", "--yes")

    assert failed.returncode == ExitCode.ERROR, _out(failed)
    assert "could not remove the commit images" in failed.stdout + failed.stderr
    journal = _journal(state)
    assert journal.phase("commit").undo_error and journal.outcome is None
    assert "half rolled back" in cli(sandbox, state, "status").stdout
    _assert_legacy_restored(sandbox, ids)  # the rest of the rollback went on

    docker(sandbox.host, "rm", "cm-life-blocker")
    again = cli(sandbox, state, "rollback", "--yes")
    assert again.returncode == 0, _out(again)
    assert _journal(state).outcome == "rolled_back"
    assert docker(sandbox.host, "image", "inspect",
                  f"containerd-migrate/commit:{ids[RUNNING]}", check=False).returncode != 0


def test_commands_with_nothing_to_do_create_no_state_dir(fresh_sandbox: SandboxFactory,
                                                        tmp_path: Path) -> None:
    sandbox = fresh_sandbox("28")
    state = tmp_path / "never"
    expected = {"rollback": 0, "cleanup": ExitCode.BLOCKED, "verify": ExitCode.BLOCKED,
                "status": 0}
    for command, code in expected.items():
        args = (command, "--yes") if command == "rollback" else (command,)
        done = cli(sandbox, state, *args)
        assert done.returncode == code, (command, _out(done))
        assert not state.exists(), command


def test_a_refused_run_leaves_no_migration_behind(fresh_sandbox: SandboxFactory,
                                                  tmp_path: Path) -> None:
    sandbox = fresh_sandbox("28")
    _small_host(sandbox)
    state = tmp_path / "state"
    # Containers present and the default policy (refuse): blocked before anything happens.
    refused = cli(sandbox, state, "run", "--yes", *_restart(sandbox))
    assert refused.returncode == ExitCode.BLOCKED, _out(refused)
    assert _journal(state).last_migration_id is None
    status = cli(sandbox, state, "status").stdout
    assert "no migration has been started" in status, status


def test_a_tag_deleted_after_a_rollback_does_not_come_back(fresh_sandbox: SandboxFactory,
                                                          tmp_path: Path) -> None:
    """Hostile round 3, item 18: a migration moves its own snapshot, nothing more."""
    sandbox = fresh_sandbox("28")
    _small_host(sandbox)
    docker(sandbox.host, "tag", "cm-life/app-0000:1", "cm-life/gone:1")
    state = tmp_path / "state"
    assert cli(sandbox, state, "run", "--yes", *RECREATE, *_restart(sandbox)).returncode == 0
    assert cli(sandbox, state, "rollback", "--yes").returncode == 0  # keeps the imports
    docker(sandbox.host, "rmi", "cm-life/gone:1")

    again = cli(sandbox, state, "run", "--yes", *RECREATE, *_restart(sandbox))

    assert again.returncode == 0, _out(again)
    tags = docker(sandbox.host, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert "cm-life/gone:1" not in tags and "cm-life/app-0000:1" in tags, tags


def test_with_live_restore_no_guard_keeps_running_after_the_rollback(
        fresh_sandbox: SandboxFactory, tmp_path: Path) -> None:
    """Hostile round 3, item 17: the volume guard (a container of the containerd store)
    went on running invisibly under the legacy daemon after a rollback."""
    sandbox = fresh_sandbox("28", daemon_json={"live-restore": True})
    _small_host(sandbox)
    state = tmp_path / "state"
    ran = cli(sandbox, state, "run", "--yes", "--containers", "leave", *_restart(sandbox))
    assert ran.returncode == 0, _out(ran)
    assert "volume guard" in cli(sandbox, state, "status").stdout  # hidden volumes guarded

    rolled = cli(sandbox, state, "rollback", "--yes")

    assert rolled.returncode == 0, _out(rolled)
    client = _ctr(sandbox)
    tasks = subprocess.run([str(client.ctr), "--address", client.address, "-n",
                            client.namespace, "tasks", "ls", "-q"], capture_output=True,
                           text=True, check=True).stdout.split()
    legacy = docker(sandbox.host, "ps", "-q", "--no-trunc").stdout.split()
    assert set(tasks) <= set(legacy), (tasks, legacy)


def test_plan_sees_a_name_a_rollback_kept_in_the_containerd_store(
        fresh_sandbox: SandboxFactory, tmp_path: Path) -> None:
    """Hostile round 3, item 7: a container made in the containerd store after the switch
    (e.g. `compose up --force-recreate`) stays there after a rollback; the next recreate
    would collide with it after the switch, so the plan blocks before."""
    sandbox = fresh_sandbox("28")
    _small_host(sandbox)
    state = tmp_path / "state"
    assert cli(sandbox, state, "run", "--yes", *RECREATE, *_restart(sandbox)).returncode == 0
    docker(sandbox.host, "rm", "-f", CREATED)
    docker(sandbox.host, "create", "--name", CREATED, "cm-life/app-0000:1", "true")
    rolled = cli(sandbox, state, "rollback", "--yes")
    assert rolled.returncode == 0, _out(rolled)
    assert "kept in the containerd store" in rolled.stdout and CREATED in rolled.stdout

    plan = cli(sandbox, state, "plan", *RECREATE, *_restart(sandbox))

    assert plan.returncode == ExitCode.BLOCKED, _out(plan)
    assert "names-kept-in-containerd" in plan.stdout and CREATED in plan.stdout
    leave = cli(sandbox, state, "plan", "--containers", "leave", *_restart(sandbox))
    assert "names-kept-in-containerd" not in leave.stdout


def test_prune_legacy_fails_closed_on_a_container_it_cannot_read(
        fresh_sandbox: SandboxFactory, tmp_path: Path) -> None:
    """Lifecycle item 7: a legacy container whose config.v2.json cannot be read blocks the
    prune (it may need the layers the prune deletes), named in the refusal."""
    sandbox = fresh_sandbox("28")
    ids = _small_host(sandbox)
    state = tmp_path / "state"
    assert cli(sandbox, state, "run", "--yes", *RECREATE, *_restart(sandbox)).returncode == 0
    config = sandbox.data_root / "containers" / ids[CREATED] / "config.v2.json"
    config.write_text("{not json")

    pruned = cli(sandbox, state, "cleanup", "--prune-legacy", "--yes")

    assert pruned.returncode == ExitCode.BLOCKED, _out(pruned)
    assert ids[CREATED][:12] in pruned.stderr and "nothing was deleted" in pruned.stderr
    assert (sandbox.data_root / "image" / "overlay2").is_dir()
