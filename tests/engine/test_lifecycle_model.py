"""Random sequences of every command against one real engine, invariants after each step.

A model-based test (hypothesis' RuleBasedStateMachine): an operator, or a hostile tester,
runs plan, stage, export, run (each containers policy), verify, status, rollback (with and
without --purge-imported), cleanup (with and without --prune-legacy) and whatever `status`
prints as the next step, in any order, on a small host. After EVERY step:
- the daemon answers, and no command fails as a usage error or with a traceback;
- the host is on the legacy store with every original image (same IDs), container (same
  IDs) and volume with its data; or on the containerd store with every tag, and every
  container recreated (policy `recreate`) or hidden (`leave`);
- `status` never contradicts the host, and its next step parses as a command for this host;
- once rolled back and cleaned up, the containerd store holds nothing the tool put there.

Seeded and replayable: the seed is printed, and CONTAINERD_MIGRATE_MODEL_SEED replays it.
CONTAINERD_MIGRATE_MODEL_EXAMPLES / _STEPS make a longer run on demand.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from migrate.engine.containerd import Containerd, find_ctr
from migrate.errors import ExitCode
from migrate.models import DOCKERD_CONTAINERD_NAMESPACE
from migrate.sandbox import BASE_DIR, Sandbox, build_bulk_images
from migrate.sandbox.fetch import engine_bin_dirs
from migrate.sandbox.samples import BUSY_LOOP, docker, inspect
from tests.engine.cli import cli

pytestmark = pytest.mark.engine

SEED_ENV = "CONTAINERD_MIGRATE_MODEL_SEED"
EXAMPLES = int(os.environ.get("CONTAINERD_MIGRATE_MODEL_EXAMPLES", "3"))
STEPS = int(os.environ.get("CONTAINERD_MIGRATE_MODEL_STEPS", "7"))
ENGINE = os.environ.get("CONTAINERD_MIGRATE_MODEL_ENGINE", "28")
POLICIES = st.sampled_from(["recreate", "leave", "refuse"])
RUNNING, CREATED, VOLUME = "cm-model-run", "cm-model-created", "cm-model-data"
LEGACY_STATES = {"no migration", "preparing", "rolled back", "rolled back, cleaned up"}
CONTAINERD_STATES = {"completed", "completed, cleaned up", "completed, legacy data pruned"}


def _ctr(sandbox: Sandbox) -> Containerd:
    ctr = find_ctr(None, path=":".join(map(str, engine_bin_dirs(sandbox.engine))))
    assert ctr is not None
    return Containerd(ctr, str(sandbox.containerd_socket), DOCKERD_CONTAINERD_NAMESPACE)


class Host:
    """The small host: what it held before any migration."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        (self.tag,) = build_bulk_images(sandbox.host, 1, prefix="cm-model/app",
                                        workdir=sandbox.dir)
        host = sandbox.host
        docker(host, "volume", "create", VOLUME)
        docker(host, "run", "-d", "--name", RUNNING, "-v", f"{VOLUME}:/data", "-v", "/anon",
               self.tag, "sh", "-c", f"echo kept > /data/file; echo anon > /anon/f; {BUSY_LOOP}")
        docker(host, "create", "--name", CREATED, self.tag, "true")
        self.image_id = str(inspect(host, "image", self.tag)["Id"])
        self.ids = {n: str(inspect(host, "container", n)["Id"]) for n in (RUNNING, CREATED)}
        self.store_before = _ctr(sandbox).images()


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="cm-model-"))
        self.sandbox = Sandbox(BASE_DIR / f"pt-{os.getpid()}-model{random.randrange(10**6)}",
                               ENGINE)
        self.sandbox.start()
        self.host = Host(self.sandbox)
        self.state = self.tmp / "state"
        self.last: subprocess.CompletedProcess[str] | None = None
        self.trail: list[str] = []

    def teardown(self) -> None:
        self.sandbox.destroy()
        subprocess.run(["rm", "-rf", str(self.tmp)], check=False)

    # --- commands -----------------------------------------------------------------------

    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.trail.append(shlex.join(args))
        self.last = cli(self.sandbox, self.state, *args)
        return self.last

    @rule(policy=POLICIES)
    def plan(self, policy: str) -> None:
        self._cli("plan", "--containers", policy)

    @rule(policy=POLICIES)
    def stage(self, policy: str) -> None:
        self._cli("stage", "--containers", policy)

    @rule(policy=POLICIES)
    def export(self, policy: str) -> None:
        self._cli("export", "--containers", policy)

    @rule(policy=POLICIES)
    def run(self, policy: str) -> None:
        self._cli("run", "--yes", "--containers", policy)

    @rule()
    def resume(self) -> None:
        self._cli("run", "--yes")

    @rule()
    def verify(self) -> None:
        self._cli("verify")

    @rule(purge=st.booleans())
    def rollback(self, purge: bool) -> None:
        self._cli("rollback", "--yes", *(["--purge-imported"] if purge else []))

    @rule(prune=st.booleans())
    def cleanup(self, prune: bool) -> None:
        self._cli("cleanup", *(["--prune-legacy", "--yes"] if prune else []))

    @rule(which=st.integers(min_value=0, max_value=3))
    def follow_the_hint(self, which: int) -> None:
        """Run a command `status` prints as the next step, exactly as printed."""
        commands = self._hinted()
        if commands:
            argv = commands[which % len(commands)]
            self._cli(*argv)

    # --- what the host says ---------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        done = cli(self.sandbox, self.state, "status", "--format", "json")
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def _hinted(self) -> list[list[str]]:
        """The containerd-migrate commands of the next step, without the global options
        (which must name this host and state dir)."""
        found = []
        for span in self._status()["next"].split("`")[1::2]:
            argv = shlex.split(span)
            if argv[:1] != ["containerd-migrate"]:
                continue
            assert argv[1:7] == ["--host", self.sandbox.host, "--daemon-config",
                                 str(self.sandbox.daemon_json), "--state-dir",
                                 str(self.state)], span
            found.append(argv[7:])
        return found

    def _store(self) -> str:
        out = docker(self.sandbox.host, "info", "--format", "{{json .DriverStatus}}").stdout
        return "containerd" if "io.containerd.snapshotter.v1" in out else "legacy"

    def _containers(self) -> dict[str, tuple[str, str]]:
        out = docker(self.sandbox.host, "ps", "-a", "--no-trunc", "--format",
                     "{{.Names}} {{.ID}} {{.State}}").stdout
        return {n: (i, s) for n, i, s in (line.split() for line in out.splitlines() if line)}

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def no_usage_error_and_no_traceback(self) -> None:
        if self.last is None:
            return
        said = f"{self.trail}\n{self.last.stdout}\n{self.last.stderr[-3000:]}"
        assert self.last.returncode != ExitCode.USAGE, said
        assert "Traceback" not in self.last.stderr, said

    @invariant()
    def host_is_whole_on_one_store(self) -> None:
        assert self.sandbox.ping(), f"the daemon does not answer after {self.trail}"
        store = self._store()
        containers = self._containers()
        tags = docker(self.sandbox.host, "images", "--format", "{{.Repository}}:{{.Tag}}",
                      ).stdout.split()
        assert self.host.tag in tags, self.trail
        data = self.sandbox.data_root / "volumes" / VOLUME / "_data" / "file"
        assert data.read_text().strip() == "kept", self.trail
        if store == "legacy":
            assert str(inspect(self.sandbox.host, "image", self.host.tag)["Id"]) == \
                self.host.image_id, self.trail
            for name, container_id in self.host.ids.items():
                assert containers.get(name, ("",))[0] == container_id, (name, self.trail)
            assert containers[RUNNING][1] == "running", self.trail
            return
        policy = self._status().get("containers_policy")
        if policy == "recreate":
            assert containers[RUNNING][1] == "running", self.trail
            assert CREATED in containers, self.trail
        elif policy == "leave":
            assert RUNNING not in containers and CREATED not in containers, self.trail

    @invariant()
    def status_agrees_with_the_host(self) -> None:
        doc = self._status()
        store = self._store()
        assert doc["store_now"] in (store, None), (doc, self.trail)
        if doc["state"] in LEGACY_STATES:
            assert store == "legacy", (doc["state"], self.trail)
        if doc["state"] in CONTAINERD_STATES:
            assert store == "containerd", (doc["state"], self.trail)
        self._hinted()  # every printed command names this host and state dir
        if doc["state"] == "rolled back, cleaned up":
            assert _ctr(self.sandbox).images() == self.host.store_before, self.trail


@pytest.mark.skipif(ENGINE not in ("26", "28"), reason="engine 26 or 28")
def test_every_command_works_with_every_other() -> None:
    chosen = int(os.environ.get(SEED_ENV) or random.randrange(2**32))
    print(f"model seed: {chosen} (replay: {SEED_ENV}={chosen})")
    # @seed on the machine class is what run_state_machine_as_test reads.
    hypothesis_seed(chosen)(LifecycleMachine)
    run_state_machine_as_test(
        LifecycleMachine,
        settings=settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                          database=None, suppress_health_check=list(HealthCheck)))
