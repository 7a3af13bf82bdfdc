"""Verify's capability check: the migrated daemon keeps multi-platform images.

Moving to the containerd store is what makes an OCI index holding several platforms, and
`docker buildx build --platform linux/amd64,linux/arm64` on the docker driver, possible.
The image checks prove that every old image came across; this check proves that the store
is what the operator migrated for. It loads a tiny two-platform image built here (the
volume guard's 100-byte program for amd64 and arm64, no download), checks that the daemon
keeps both platforms under one name, runs the native platform's program in a throw-away
container and removes all it created.

How "both platforms under one name" is proven depends on the daemon's API
(docs/engine-facts.md): the name's image ID is the index's digest on every engine (a store
that kept one platform would name a manifest); a container create asking for each
platform succeeds only for a platform the image holds; and from API 1.48 (Engine 28) the
image's inspect lists its manifests, each with its platform and whether its content is
there. Engine 26 (API 1.45) has no such list.

A failure here does not fail the verification: the images are fine, and a rollback would
not bring the capability back. It is reported on its own line and in the reports.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from collections.abc import Mapping
from functools import cache
from typing import Any

from migrate.engine.client import Engine
from migrate.errors import EngineError, MigrateError
from migrate.models import Frozen
from migrate.phases.volume_guard import GUARD_COMMAND, guard_tarball, oci_architecture
from migrate.support.logconfig import get_logger

log = get_logger(__name__)

# A registry host under the reserved `.invalid` top-level domain (RFC 2606): no image the
# operator pulled or built can carry this name, so removing it by name removes only ours.
PROBE_IMAGE = "containerd-migrate.invalid/multi-platform-check:1"
PROBE_LABEL = "io.containerd-migrate.multi-platform-check"
PROBE_PLATFORMS = ("linux/amd64", "linux/arm64")
# The instant every probe config carries: the same bytes, so the same digests, every time.
_CREATED = "2000-01-01T00:00:00Z"
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


class ProbeLayout(Frozen):
    """The probe image as an OCI layout tar (what `docker load` takes) and its digests."""

    tar: bytes
    index_digest: str
    # platform -> its manifest's digest
    manifests: dict[str, str]


class PlatformCheck(Frozen):
    # None: not checked (see `note`).
    supported: bool | None
    # The platforms the daemon keeps under the probe's name, and how that was read.
    platforms: tuple[str, ...] = ()
    evidence: str = ""
    ran: str = ""
    problems: tuple[str, ...] = ()
    note: str = ""

    def line(self) -> str:
        if self.supported is None:
            return f"multi-platform: not checked ({self.note})"
        if self.supported:
            return (f"multi-platform: supported ({' and '.join(self.platforms)} under one "
                    f"name, {self.evidence}; ran the {self.ran} program; nothing left behind)")
        return ("multi-platform: NOT SUPPORTED: " + "; ".join(self.problems)
                + " (the migrated images are not affected: this is about what the store can "
                  "do from now on)")


def multi_platform_status(check: PlatformCheck | None) -> str:
    """One word for journals and scripts: supported, unsupported or unchecked."""
    if check is None or check.supported is None:
        return "unchecked"
    return "supported" if check.supported else "unsupported"


def report_check(check: PlatformCheck | None, phase: str, report: str) -> None:
    """Log what the check found: a warning when the store lacks the capability (said,
    never raised: the migration is sound and a rollback would not help)."""
    if check is not None and check.supported is False:
        log.warning("the containerd store does not keep multi-platform images as expected",
                    phase=phase, problems=list(check.problems), report=report)
    elif check is not None:
        log.info(check.line(), phase=phase)


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


@cache
def probe_layout() -> ProbeLayout:
    """index.json -> one image index named PROBE_IMAGE -> one manifest per platform, each
    with a config and one layer holding that platform's program (pure, deterministic)."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes, media_type: str) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    manifests = []
    for platform in PROBE_PLATFORMS:
        os_name, arch = platform.split("/")
        layer = blob(guard_tarball(arch), _OCI_LAYER)
        config = blob(_json({
            "architecture": arch, "os": os_name, "created": _CREATED,
            "config": {"Cmd": list(GUARD_COMMAND), "Labels": {PROBE_LABEL: "1"}},
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}), _OCI_CONFIG)
        manifest = blob(_json({"schemaVersion": 2, "mediaType": _OCI_MANIFEST,
                               "config": config, "layers": [layer]}), _OCI_MANIFEST)
        manifests.append({**manifest, "platform": {"architecture": arch, "os": os_name}})
    index = blob(_json({"schemaVersion": 2, "mediaType": _OCI_INDEX, "manifests": manifests}),
                 _OCI_INDEX)
    index["annotations"] = {"io.containerd.image.name": PROBE_IMAGE,
                            "org.opencontainers.image.ref.name": PROBE_IMAGE.rsplit(":", 1)[1]}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add(tar, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        _add(tar, "index.json", _json({"schemaVersion": 2, "mediaType": _OCI_INDEX,
                                       "manifests": [index]}))
        for digest, data in blobs.items():
            _add(tar, f"blobs/sha256/{digest.removeprefix('sha256:')}", data)
    return ProbeLayout(tar=buffer.getvalue(), index_digest=index["digest"],
                       manifests={p: m["digest"] for p, m in zip(PROBE_PLATFORMS, manifests,
                                                                 strict=True)})


def remove_probe(engine: Engine) -> list[str]:
    """Remove the probe's containers (with their anonymous volumes) and image, whatever
    verify left them (a killed one too); returns what could not be removed. The daemon
    deletes the image's content and snapshots with its last name."""
    failed = []
    for container in engine.containers_with_label(PROBE_LABEL):
        try:
            engine.discard_container(container)
        except MigrateError as error:
            failed.append(f"container {container[:12]} ({error.message})")
    try:
        if engine.inspect_image(PROBE_IMAGE, sizes=False) is not None:
            engine.remove_image(PROBE_IMAGE, force=True)
    except MigrateError as error:
        failed.append(f"image {PROBE_IMAGE} ({error.message})")
    return failed


def _platforms_listed(engine: Engine, layout: ProbeLayout) -> tuple[list[str] | None, list[str]]:
    """(the platforms the name's manifest list holds, None when the API has no such list;
    problems). Raises EngineError when the name is missing."""
    image = engine.inspect_image(PROBE_IMAGE, sizes=False)
    if image is None:
        raise EngineError(f"{PROBE_IMAGE} is missing after `docker load` reported it")
    problems = []
    if image.id != layout.index_digest:
        problems.append(f"{PROBE_IMAGE} is {image.id}, not the index {layout.index_digest}: "
                        "the store kept one platform of it")
    manifests = engine.image_manifests(PROBE_IMAGE)
    if manifests is None:
        return None, problems
    listed = [m.platform for m in manifests if m.available]
    problems += [f"the image's manifest list lacks {p}" for p in PROBE_PLATFORMS
                 if p not in listed]
    return listed, problems


def _create_platforms(engine: Engine, native: str, labels: Mapping[str, str],
                      ) -> tuple[list[str], list[str]]:
    """(the platforms a container could be created for, problems): a container for each
    platform, the native one started; their removal is remove_probe's."""
    created, problems = [], []
    for platform in PROBE_PLATFORMS:
        name = f"containerd-migrate-multi-platform-{uuid.uuid4().hex[:12]}"
        try:
            container = engine.create_for_platform(PROBE_IMAGE, platform, name,
                                                   {**labels, PROBE_LABEL: "1"}, GUARD_COMMAND)
            created.append(platform)
            if platform == native:
                engine.start_container(container)
                if not engine.running(container):
                    problems.append(f"the {platform} program did not stay running")
        except MigrateError as error:
            problems.append(f"{platform}: {error.message}")
    return created, problems


def check_multi_platform(engine: Engine, machine: str,
                         labels: Mapping[str, str]) -> PlatformCheck:
    """Load the probe, check both platforms, run the native one, remove it all. `machine`
    is docker info's Architecture; `labels` go on the throw-away containers. Never raises
    a MigrateError: what failed is in the result."""
    arch = oci_architecture(machine)
    native = f"linux/{arch}"
    if native not in PROBE_PLATFORMS:
        return PlatformCheck(supported=None,
                             note=f"no test program for the {machine or 'unknown'} machine")
    layout = probe_layout()
    problems: list[str] = []
    kept: list[str] = []
    evidence = ""
    try:
        # A verify killed midway may have left them; a stale image would be checked instead.
        problems += [f"cannot remove {what} left by an earlier verify"
                     for what in remove_probe(engine)]
        engine.load([layout.tar], size=len(layout.tar))
        listed, found = _platforms_listed(engine, layout)
        created, refused = _create_platforms(engine, native, labels)
        problems += found + refused
        if listed is None:
            # Engine 26: no manifest list; a create succeeds only for a platform it holds.
            kept, evidence = created, "its ID is the index and each platform's create works"
        else:
            kept, evidence = listed, "from the image's manifest list"
    except MigrateError as error:
        problems.append(error.message)
    finally:
        try:
            left = remove_probe(engine)
        except MigrateError as error:
            left = [f"the probe ({error.message})"]
        problems += [f"could not remove {what}: remove it by hand" for what in left]
    return PlatformCheck(supported=not problems, platforms=tuple(kept), evidence=evidence,
                         ran=native, problems=tuple(problems))
