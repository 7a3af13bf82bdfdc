"""The dry-run plan: facts about the host in, a versioned report out (pure).

`HostFacts` (see `facts`) is everything gathered from the engine and the filesystem;
`build_plan` turns it into a `PlanReport` without touching the host, so tests assert plans
as values and
`containerd-migrate plan --format json` is a stable, schema-checked document.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, Literal

from migrate.errors import DaemonConfigError
from migrate.host.daemon_json import DaemonConfigState, redact, target_config
from migrate.host.launch import DaemonLaunch
from migrate.models import (
    ContainerRecord,
    EngineInfo,
    Frozen,
    ImageRecord,
    VolumeRecord,
)
from migrate.preflight.checks import Check, Severity, evaluate_checks, plan_estimate
from migrate.preflight.estimate import Estimate
from migrate.preflight.facts import FilesystemFacts, HostFacts, PlanOptions
from migrate.support.sizes import human_binary_bytes

PLAN_SCHEMA_VERSION = 1
# Environment variables that change how dockerd stores images; the rest may hold secrets
# and has no place in a report pasted into a ticket.
_REPORTED_ENV_PREFIXES = ("DOCKER_", "CONTAINERD_")
# What an Env value becomes in a report: passwords and tokens live in containers' and
# images' Env, and reports get pasted into tickets. The names stay: they say what is set.
MASKED_ENV_VALUE = "***"

class SwitchEffect(Frozen):
    """One thing the containerd image store brings, costs or needs, for the change ticket."""

    kind: Literal["brings", "costs", "needs"]
    id: str
    text: str


class PlanReport(Frozen):
    schema_version: int = PLAN_SCHEMA_VERSION
    generated_at: datetime
    hostname: str = ""
    daemon_host: str = ""
    options: PlanOptions
    engine: EngineInfo
    daemon_config: DaemonConfigState
    # What daemon.json would become; None when it cannot be computed (see the checks).
    target_config: dict[str, Any] | None = None
    launch: DaemonLaunch
    state_dir: FilesystemFacts
    data_root: FilesystemFacts
    # The command `run` will restart dockerd with (empty: unknown, see the checks).
    restart_command: tuple[str, ...] = ()
    images: tuple[ImageRecord, ...] = ()
    containers: tuple[ContainerRecord, ...] = ()
    volumes: tuple[VolumeRecord, ...] = ()
    estimate: Estimate
    checks: tuple[Check, ...] = ()
    # What the store switch changes for good, whatever the checks say (not a check: nothing
    # here blocks or needs fixing, but the change ticket must say it).
    switch: tuple[SwitchEffect, ...] = ()
    ready: bool
    verdict: str


def verdict(checks: tuple[Check, ...], images: int) -> str:
    blockers = [check.id for check in checks if check.severity is Severity.BLOCKER]
    if blockers:
        return f"BLOCKED: {len(blockers)} blocker(s): {', '.join(blockers)}"
    warnings = sum(check.severity is Severity.WARNING for check in checks)
    return f"READY: {images} image(s) to move, {warnings} warning(s) to review"


def planned_config(facts: HostFacts, options: PlanOptions) -> dict[str, Any] | None:
    config = facts.daemon_config
    if config.parse_error is not None:
        return None
    driver = facts.inventory.engine.legacy_driver
    try:
        result = target_config(config.data, options.snapshotter, engine_driver=driver)
    except DaemonConfigError:
        return None
    redacted: dict[str, Any] = redact(result)
    return redacted


def public_launch(launch: DaemonLaunch) -> DaemonLaunch:
    env = {k: redact(v) for k, v in launch.environment.items()
           if k.startswith(_REPORTED_ENV_PREFIXES)}
    argv = tuple(redact(arg) for arg in launch.argv)
    return launch.model_copy(update={"environment": env, "argv": argv})


def public_config(config: DaemonConfigState) -> DaemonConfigState:
    if config.data is None:
        return config
    return config.model_copy(update={"data": redact(config.data)})


def switch_effects(images: tuple[ImageRecord, ...], est: Estimate) -> tuple[SwitchEffect, ...]:
    """What moving to the containerd image store brings and costs from then on (pure)."""
    pulled = sum(1 for image in images if image.repo_digests)
    digests = (f"{pulled} image(s) lose their registry digests (RepoDigests) until pulled "
               "again: `image@sha256:<digest>` references to them stop resolving"
               if pulled else "no image has a registry digest now; images pulled later keep "
               "theirs")
    return (
        SwitchEffect(kind="brings", id="multi-platform",
                     text="multi-platform images: one name for an index of several platforms "
                          "(`docker buildx build --platform linux/amd64,linux/arm64` with the "
                          "default builder, `docker pull --platform`), which the legacy store "
                          "cannot keep"),
        SwitchEffect(kind="brings", id="attestations",
                     text="build attestations (provenance, SBOM) stored with the image"),
        SwitchEffect(kind="costs", id="registry-digests", text=digests),
        SwitchEffect(kind="costs", id="disk",
                     text="images take about twice the disk from now on (the compressed "
                          "content plus the unpacked snapshot): about "
                          f"{human_binary_bytes(est.new_store_bytes)} for these images, on top "
                          "of the legacy data until `containerd-migrate cleanup "
                          "--prune-legacy`"),
        SwitchEffect(kind="needs", id="buildx",
                     text="multi-platform builds need the buildx plugin (`docker buildx`; "
                          "Debian: docker-buildx, Docker's packages: docker-buildx-plugin); the "
                          "classic builder (DOCKER_BUILDKIT=0) builds one platform"),
    )


def masked_env(env: Any) -> Any:
    """`NAME=value` entries as `NAME=***` (an entry without `=` names a variable only)."""
    if not isinstance(env, list | tuple):
        return env
    return type(env)(f"{entry.partition('=')[0]}={MASKED_ENV_VALUE}"
                     if isinstance(entry, str) and "=" in entry else entry for entry in env)


def public_image(image: ImageRecord) -> ImageRecord:
    config = image.config.model_copy(update={"env": masked_env(image.config.env)})
    return image.model_copy(update={"config": config})


def public_container(container: ContainerRecord) -> ContainerRecord:
    if "Env" not in container.config:
        return container
    config = {**container.config, "Env": masked_env(container.config["Env"])}
    return container.model_copy(update={"config": config})


def build_plan(
    facts: HostFacts, options: PlanOptions, *, generated_at: datetime | None = None,
    staged: Collection[str] = (),
) -> PlanReport:
    """The plan for these facts. `generated_at` defaults to the inventory time (pure);
    `staged`: legacy IDs of the images this migration staged already."""
    inventory = facts.inventory
    est = plan_estimate(facts, options, staged)
    checks = evaluate_checks(facts, options, est)
    return PlanReport(
        generated_at=(generated_at or inventory.taken_at).replace(microsecond=0),
        hostname=facts.hostname,
        daemon_host=facts.daemon_host,
        options=options,
        engine=inventory.engine,
        daemon_config=public_config(facts.daemon_config),
        target_config=planned_config(facts, options),
        launch=public_launch(facts.launch),
        state_dir=facts.state_dir,
        data_root=facts.data_root,
        restart_command=tuple(redact(word) for word in facts.restart_command),
        images=inventory.images if options.show_env
        else tuple(public_image(image) for image in inventory.images),
        containers=inventory.containers if options.show_env
        else tuple(public_container(container) for container in inventory.containers),
        volumes=inventory.volumes,
        estimate=est,
        checks=checks,
        switch=switch_effects(inventory.images, est),
        ready=not any(check.severity is Severity.BLOCKER for check in checks),
        verdict=verdict(checks, len(inventory.images)),
    )
