from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from migrate.commands.run import confirmation_question
from migrate.errors import UsageError
from migrate.host.daemon_json import DaemonConfigState
from migrate.host.launch import parse_dockerd_argv
from migrate.journal import JournalState
from migrate.models import (
    ContainerRecord,
    EngineInfo,
    ImageRecord,
    Inventory,
    MountRecord,
    Store,
    VolumeRecord,
)
from migrate.phases.base import PreparedPlan, RunOptions
from migrate.preflight.containers import recreate_plan
from migrate.preflight.facts import FilesystemFacts, HostFacts, PlanOptions
from migrate.preflight.render import (
    human_bytes,
    human_duration,
    md_escape,
    md_text,
    render,
    short_id,
)
from migrate.preflight.report import PlanReport, build_plan

pytestmark = pytest.mark.unit

GIB = 1024**3
TAKEN = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
IMAGES = (
    ImageRecord(id="sha256:" + "a" * 64, tags=("acme/app:1", "acme/app:latest"),
                repo_digests=("acme/app@sha256:" + "f" * 64,), diff_ids=("sha256:base",),
                layer_sizes=(300 * 1024**2,), size=300 * 1024**2),
    ImageRecord(id="sha256:" + "b" * 64, tags=("registry.example:5000/team/web_ui:2.0",),
                diff_ids=("sha256:base", "sha256:web"), layer_sizes=(300 * 1024**2, 1024),
                size=300 * 1024**2 + 1024),
    ImageRecord(id="sha256:" + "c" * 64, diff_ids=("sha256:old",), layer_sizes=(5000,),
                size=5000),
)
CONTAINER = ContainerRecord(id="c1", name="web", image="acme/app:1", image_id=IMAGES[0].id,
                            state="running", compose_project="shop",
                            mounts=(MountRecord(type="volume", name="db", destination="/d"),))


def host(*, containers: bool = True, secret_env: bool = False) -> HostFacts:
    engine = EngineInfo(version="26.1.5", api_version="1.45", store=Store.LEGACY,
                        driver="overlay2", data_root="/var/lib/docker")
    inventory = Inventory(
        taken_at=TAKEN, engine=engine, images=IMAGES,
        containers=(CONTAINER,) if containers else (),
        volumes=(VolumeRecord(name="db", used_by=("web",)),) if containers else (),
    )
    data = {"storage-driver": "overlay2",
            "proxies": {"http-proxy": "http://bob:hunter2@proxy:3128"}}
    config = DaemonConfigState(path="/etc/docker/daemon.json", exists=True, readable=True,
                               data=data, storage_driver="overlay2", writable=True, mode=0o644,
                               uid=0, gid=0)
    env = {"DOCKER_TLS": "1", "AWS_SECRET_ACCESS_KEY": "s3cr3t"} if secret_env else {}
    return HostFacts(
        inventory=inventory,
        daemon_config=config,
        launch=parse_dockerd_argv(["/usr/bin/dockerd", "-H", "fd://"], env, source="systemd",
                                  pid=812),
        state_dir=FilesystemFacts(path="/var/lib/containerd-migrate", free_bytes=50 * GIB,
                                  device=1, mount_point="/"),
        data_root=FilesystemFacts(path="/var/lib/docker", free_bytes=80 * GIB, device=2,
                                  mount_point="/var/lib/docker"),
        is_root=True,
    )


def blocked() -> PlanReport:
    return build_plan(host(), PlanOptions())


def ready() -> PlanReport:
    return build_plan(host(containers=False), PlanOptions())


# --- plan --------------------------------------------------------------------------------


def test_plan_verdicts() -> None:
    report = blocked()
    assert not report.ready
    assert report.verdict == "BLOCKED: 1 blocker(s): containers-present"
    good = ready()
    assert good.ready
    assert good.verdict.startswith("READY: 3 image(s) to move, 1 warning(s)")  # registry digests


def test_plan_is_pure_and_versioned() -> None:
    assert blocked() == blocked()
    assert blocked().generated_at == TAKEN
    assert blocked().schema_version == 1
    schema = PlanReport.model_json_schema()
    assert "checks" in schema["properties"] and "verdict" in schema["required"]


def test_plan_target_config_and_redaction() -> None:
    report = ready()
    assert report.target_config is not None
    assert report.target_config["storage-driver"] == "overlayfs"
    assert report.target_config["features"] == {"containerd-snapshotter": True}
    dumped = report.model_dump_json()
    assert "hunter2" not in dumped


def test_plan_drops_unrelated_environment() -> None:
    report = build_plan(host(secret_env=True), PlanOptions())
    assert report.launch.environment == {"DOCKER_TLS": "1"}
    assert "s3cr3t" not in report.model_dump_json()


def test_target_config_none_when_unmappable() -> None:
    facts = host(containers=False)
    config = facts.daemon_config.model_copy(update={"storage_driver": "zfs",
                                                    "data": {"storage-driver": "zfs"}})
    report = build_plan(facts.model_copy(update={"daemon_config": config}), PlanOptions())
    assert report.target_config is None
    assert not report.ready
    report = build_plan(facts.model_copy(update={"daemon_config": config}),
                        PlanOptions(snapshotter="zfs"))
    assert report.target_config is not None and report.target_config["storage-driver"] == "zfs"


# --- renderers ---------------------------------------------------------------------------


def test_text_report() -> None:
    report = blocked()
    text = render(report, "text")
    lines = text.rstrip("\n").splitlines()
    assert lines[-1] == report.verdict
    assert lines[-1].startswith("BLOCKED: 1 blocker(s)")
    for tag in (t for image in IMAGES for t in image.tags):
        assert tag in text
    assert "<none>" in text
    assert "aaaaaaaaaaaa" in text and "a" * 13 not in text
    assert "[containers-present]" in text
    assert "hint: " in text
    assert "- web (running, image acme/app:1)" in text
    for heading in ("ENGINE", "IMAGES (3)", "CONTAINERS (1)", "VOLUMES (1)", "ESTIMATE"):
        assert heading in lines
    assert "hunter2" not in text


@pytest.mark.parametrize(("argv", "data", "shown"), [
    (["dockerd"], {}, "managed"),
    (["dockerd", "--containerd=/run/c.sock"], {}, "/run/c.sock (namespace moby)"),
    (["dockerd"], {"containerd": "/run/c.sock", "containerd-namespace": "ns"},
     "/run/c.sock (namespace ns)"),
])
def test_engine_table_names_the_containerd_dockerd_uses(argv: list[str], data: dict[str, str],
                                                        shown: str) -> None:
    facts = host(containers=False)
    facts = facts.model_copy(update={
        "launch": parse_dockerd_argv(argv, source="proc"),
        "daemon_config": facts.daemon_config.model_copy(update={"data": data})})
    lines = render(build_plan(facts, PlanOptions()), "text").splitlines()
    row = next(line.split(None, 1) for line in lines if line.startswith("  containerd "))
    assert row[1] == shown


def test_text_tables_are_aligned() -> None:
    lines = render(blocked(), "text").splitlines()
    start = lines.index("IMAGES (3)") + 1
    header, *rows = lines[start:start + 4]
    tags_col = header.index("TAGS")
    size_col = header.index("SIZE")
    for row in rows:
        assert row[tags_col - 2:tags_col] == "  "
        assert row[size_col - 1] == " " and row[size_col] != " "


def test_text_ready_verdict() -> None:
    text = render(ready(), "text")
    assert text.rstrip("\n").splitlines()[-1].startswith("READY: ")
    assert "(none)" in text  # no containers


def test_markdown_report() -> None:
    report = blocked()
    md = render(report, "markdown")
    assert md.startswith("# containerd-migrate plan")
    assert "| ID | TAGS | SIZE | DANGLING |" in md
    assert "|---|---|---|---|" in md
    assert "&lt;none&gt;" in md
    assert "registry.example:5000/team/web\\_ui:2.0" in md
    assert "### Blockers (1)" in md
    assert "- **containers-present**:" in md
    assert md.rstrip("\n").splitlines()[-1] == f"**{report.verdict}**"


def test_json_round_trips() -> None:
    report = blocked()
    out = render(report, "json")
    assert json.loads(out)["schema_version"] == 1
    assert PlanReport.model_validate_json(out) == report


def test_unknown_format() -> None:
    with pytest.raises(UsageError):
        render(blocked(), "yaml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "text"),
    [(None, "unknown"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"),
     (300 * 1024**2, "300.0 MiB"), (int(1.5 * GIB), "1.5 GiB"), (3 * 1024**4, "3.0 TiB")],
)
def test_human_bytes(size: int | None, text: str) -> None:
    assert human_bytes(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (0.2, "<1 s"), (12.4, "12 s"), (59.6, "1 min 00 s"), (125, "2 min 05 s"),
     (3725, "1 h 02 min")],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_helpers() -> None:
    assert short_id("sha256:0123456789abcdef") == "0123456789ab"
    assert md_escape("a|b <c>") == "a\\|b &lt;c&gt;"


@pytest.mark.parametrize(("policy", "says", "never"), [
    ("recreate", "created again in the containerd store and started", "kept hidden"),
    ("leave", "kept hidden in the legacy store", "created again"),
    ("refuse", "the migration refuses while containers exist", "stopped"),
])
def test_impact_says_what_the_containers_policy_does(policy: str, says: str,
                                                     never: str) -> None:
    report = build_plan(host(), PlanOptions(containers=policy))  # type: ignore[arg-type]
    for fmt in ("text", "markdown"):
        out = render(report, fmt).lower()
        impact = out[out.index("impact"):out.index("rollback")]
        assert says in impact, (fmt, impact)
        assert never not in impact, (fmt, impact)


def test_markdown_heading_keeps_punctuation_out_of_the_code_span() -> None:
    report = blocked().model_copy(update={"daemon_host": "unix:///var/run/docker.sock"})
    md = render(report, "markdown")
    assert "at `unix:///var/run/docker.sock`; facts from" in md
    assert md_text("see /etc/docker/daemon.json.") == "see `/etc/docker/daemon.json`."


def test_blocked_steps_name_a_way_out_not_the_refusing_policy() -> None:
    text = render(blocked(), "text")
    assert "--containers refuse" not in text
    steps = text[text.index("STEPS"):text.index("IMPACT")]
    assert "`containerd-migrate export` with `--containers recreate`" in steps
    leave = render(build_plan(host(), PlanOptions(containers="leave")), "text")
    assert "with `--containers leave`" in leave


# --- what the switch brings and costs ------------------------------------------------------


def test_plan_says_what_the_switch_brings_and_costs() -> None:
    report = ready()
    effects = {effect.id: effect for effect in report.switch}
    assert [e.kind for e in report.switch] == ["brings", "brings", "costs", "costs", "needs"]
    assert "linux/amd64,linux/arm64" in effects["multi-platform"].text
    assert "attestations" in effects["attestations"].text
    # One of the three images came from a registry; 2 x 300 MiB of unique layers.
    assert effects["registry-digests"].text.startswith("1 image(s) lose their registry digests")
    assert "twice the disk" in effects["disk"].text and "600.0 MiB" in effects["disk"].text
    assert "docker-buildx" in effects["buildx"].text
    without = build_plan(host(containers=False).model_copy(update={"inventory": Inventory(
        taken_at=TAKEN, engine=ready().engine, images=IMAGES[1:])}), PlanOptions())
    assert "no image has a registry digest" in {e.id: e for e in without.switch}[
        "registry-digests"].text


def test_switch_effects_in_every_format() -> None:
    report = ready()
    text = render(report, "text")
    assert "WHAT THE SWITCH BRINGS AND COSTS\n  brings  multi-platform images" in text
    assert "  costs   images take about twice the disk" in text
    assert text.index("WHAT THE SWITCH") < text.index("ROLLBACK")
    markdown = render(report, "markdown")
    assert "## What the switch brings and costs" in markdown
    assert ("| needs | multi-platform builds need the buildx plugin (`docker buildx`; Debian: "
            "docker-buildx") in markdown
    assert "`docker buildx build --platform linux/amd64,linux/arm64`" in markdown
    body = json.loads(render(report, "json"))
    assert [e["id"] for e in body["switch"]] == [
        "multi-platform", "attestations", "registry-digests", "disk", "buildx"]
    assert body["switch"][3]["kind"] == "costs"


def test_impact_and_actions_say_what_recreate_does_not_carry() -> None:
    exited = CONTAINER.model_copy(update={"id": "c2", "name": "job", "state": "exited"})
    created = CONTAINER.model_copy(update={"id": "c3", "name": "spare", "state": "created"})
    facts = host()
    inventory = facts.inventory.model_copy(update={"containers": (CONTAINER, exited, created)})
    facts = facts.model_copy(update={"inventory": inventory})
    report = build_plan(facts, PlanOptions(containers="recreate"))
    for fmt in ("text", "markdown"):
        out = render(report, fmt)
        assert "not carried" in out
        assert "docker logs` of every recreated container starts empty" in out
        assert "job come(s) back as created, not exited" in out.replace("\\", "")
        assert "spare come(s)" not in out
    plans = {plan.name: plan for plan in recreate_plan(inventory)}
    assert plans["web"].actions[-1].startswith("start it; `docker logs` starts empty")
    assert "comes back as created, not exited" in plans["job"].actions[-1]
    assert plans["spare"].actions[-1] == "leave it created (not started)"
    # Nothing to say without recreate.
    assert "not carried" not in render(build_plan(facts, PlanOptions(containers="leave")))


def test_every_time_figure_says_what_it_stands_on_in_every_format() -> None:
    facts = host()
    launch = facts.launch.model_copy(update={"last_start_seconds": 1.5})
    running = CONTAINER.model_copy(update={"config": {"StopTimeout": 3}})
    inventory = facts.inventory.model_copy(update={"containers": (running,)})
    facts = facts.model_copy(update={"launch": launch, "inventory": inventory})
    report = build_plan(facts, PlanOptions(containers="recreate"),
                        staged={image.id for image in IMAGES})
    text = render(report, "text")
    assert "2 s (measured: the daemon's last start took 1.5 s" in text
    assert "4 s (bound: the running containers' own stop timeouts" in text
    assert "0 s (measured: every image is staged: nothing to import)" in text
    assert "verify" in text and "(default: " in text
    assert "containers down" in text
    markdown = render(report, "markdown")
    assert "measured: the daemon" in markdown and "bound: the running" in markdown
    data = json.loads(render(report, "json"))
    bases = data["estimate"]["bases"]
    assert {name: basis["kind"] for name, basis in bases.items()} == {
        "export": "measured", "stop": "bound", "restart": "measured", "import": "measured",
        "verify": "default"}
    assert data["estimate"]["window_seconds"] == pytest.approx(3.5 + 2.5 + 0 + 2.6)


def test_confirmation_says_what_each_figure_of_the_window_stands_on() -> None:
    report = build_plan(host(), PlanOptions(containers="recreate"))
    prepared = PreparedPlan(facts=host(), report=report, taken_monotonic=0.0)
    options = RunOptions(host="unix:///run/docker.sock", daemon_config=Path("/d.json"),
                         state_dir=Path("/s"), restart_command=("systemctl", "restart",
                                                                "docker"),
                         containers="recreate")
    question = confirmation_question(options, ("snapshot", "export", "quiesce", "restart"),
                                     JournalState(), prepared)
    assert "window: about" in question
    assert "    stop 10 s (bound: " in question
    assert "    restart 4 s (default: the daemon's last start was not readable" in question
    assert "    import " in question and "(default: 90 MB/s" in question
    assert "before it, export " in question
