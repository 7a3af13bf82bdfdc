"""`containerd-migrate rehearse`: the migration for real, on a throwaway engine.

A second, private dockerd from the host's own binaries (host/throwaway.py) gets the
daemon.json the switch would write; every image goes into it with the code `run` uses
(`docker save` from the live daemon into archives, `docker load` into the throwaway
engine; with `--staged`, the stage phase's `docker save` streamed into `ctr import` of the
throwaway engine's own containerd), the verify phase's verification runs against it, and
every container is created (not started) with the recreate phase's request body. The
live daemon keeps serving and nothing of it changes; the rehearsal is not a migration (the
journal does not know of it). Figures measured on the way (engine start, load or staging
rate, verification) give the window a `run` would take on this host.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from migrate.archives.batching import Batch, plan_batches
from migrate.archives.manifest import ArchiveManifest
from migrate.archives.saved_tar import ExpectedImage
from migrate.archives.writing import batch_cap, closing_stream, room_needed, write_batches
from migrate.commands.context import GlobalOptions, connect, open_state
from migrate.engine import Engine
from migrate.engine.containerd import Containerd
from migrate.errors import BlockedError, EngineError, ExitCode, MigrateError, UsageError
from migrate.host.daemon_json import DEFAULT_SNAPSHOTTER, read_daemon_config, target_config
from migrate.host.fs import free_bytes, write_private
from migrate.host.launch import (
    DaemonLaunch,
    detect_launch,
    dockerd_binary,
)
from migrate.host.throwaway import (
    RECORD_NAME,
    ThrowawayEngine,
    engine_env,
    live_search_path,
    locate_binaries,
    private_config,
)
from migrate.journal.state_dir import StateDir
from migrate.models import (
    DOCKERD_CONTAINERD_NAMESPACE,
    ContainerRecord,
    ImageRecord,
    Inventory,
    Store,
)
from migrate.phases.base import PhaseContext, RunOptions, moved_image_ids
from migrate.phases.import_ import load_refused
from migrate.phases.recreate import create_body, image_for
from migrate.phases.stage import StoreView, stream_batch
from migrate.phases.verify import verify
from migrate.preflight import rehearsal as rehearsal_report
from migrate.preflight.containers import creation_order, volumes_from_sources
from migrate.preflight.estimate import batch_bytes, stop_bound
from migrate.preflight.facts import launch_ctr
from migrate.preflight.rehearsal import (
    REHEARSAL_SCHEMA_VERSION,
    MovePath,
    RehearsalFigures,
    RehearsalReport,
    images_fingerprint,
)
from migrate.preflight.render import Format, render_rehearsal
from migrate.support import failpoints
from migrate.support.logconfig import get_logger
from migrate.support.progress import byte_bar
from migrate.support.sizes import human_bytes

log = get_logger(__name__)

DEFAULT_DIR_NAME = "rehearsal"
# Names the directory of a rehearsal in progress, written before that directory is made:
# a rehearsal killed at any moment is found (and cleaned up) from the state dir alone.
PENDING_NAME = "rehearsal-pending.json"
# The report of the last rehearsal that ran to its end: `<state-dir>/reports/REPORT_NAME`.
REPORT_NAME = rehearsal_report.REPORT_NAME
# The staging copies: about twice the unique layer bytes, as `plan` counts for staging.
STORE_FACTOR = 2
CHUNK_SIZE = 1 << 20
# Network settings that only a network the throwaway engine does not have can honour.
_NETWORK_HOST_KEYS = ("PortBindings", "PublishAllPorts", "Links")


@dataclass(frozen=True)
class RehearseArgs:
    fmt: str = "text"  # text, json or markdown
    dir: Path | None = None
    keep: bool = False
    snapshotter: str | None = None
    start_timeout: float = 60.0
    # Also start the containers that ran (networking off), then stop them again.
    start: bool = False
    # Move the images with the stage phase's code (`docker save` into `ctr import`).
    staged: bool = False


@dataclass(frozen=True)
class MovedImages:
    """How the images reached the throwaway engine: the archives (export path) or the
    images the containerd store proves (staging path), and what moving them took."""

    path: MovePath
    manifest: ArchiveManifest
    staged: tuple[ExpectedImage, ...]
    bytes: int
    # Outside a run's window: the export's save, or the whole staging stream.
    before_window_s: float
    # Inside it: the import phase's `docker load` (0 when staged: nothing is left to load).
    load_s: float

    @property
    def image_ids(self) -> dict[str, str]:
        return moved_image_ids(self.manifest, self.staged)


# --- pure parts ------------------------------------------------------------------------------


def rehearsal_dir(state_dir: Path, given: Path | None) -> Path:
    return Path(os.path.abspath(given)) if given is not None else state_dir / DEFAULT_DIR_NAME


def room_for(inventory: Inventory) -> int:
    """Bytes the rehearsal directory's filesystem needs: the archives, and the throwaway
    store's content and snapshots (about twice the unique layer bytes)."""
    return room_needed(sum(batch_bytes(inventory))
                       + STORE_FACTOR * inventory.unique_layer_bytes())


def blockers(store: Store, missing_binaries: tuple[str, ...], free: int | None, need: int,
             where: Path, socket_problem: str | None, config_problem: str | None,
             ) -> list[str]:
    """One line per reason the rehearsal cannot run (pure)."""
    lines = []
    if store is Store.CONTAINERD:
        lines.append("the daemon already runs on the containerd image store: there is "
                     "nothing to rehearse")
    if missing_binaries:
        lines.append("the host's engine binaries were not found: " + ", ".join(missing_binaries)
                     + " (looked where dockerd runs from and on its PATH)")
    if free is not None and free < need:
        lines.append(f"{where} has {human_bytes(free)} free, the rehearsal needs about "
                     f"{human_bytes(need)} (the archives and twice the unique layer bytes); "
                     "give another --dir")
    if socket_problem:
        lines.append(socket_problem)
    if config_problem:
        lines.append(config_problem)
    return lines


def rehearsal_body(container: ContainerRecord, image: str, new_ids: dict[str, str],
                   image_ids: dict[str, str], inherited: frozenset[str]) -> dict[str, Any]:
    """The recreate phase's body, without the networks the throwaway engine does not have
    (it runs with networking off): a container on a network is created on `none`."""
    body = create_body(container, image, new_ids, image_ids, "", inherited)
    host = dict(body.get("HostConfig") or {})
    mode = str(host.get("NetworkMode") or "")
    if not (mode.startswith("container:") or mode in ("host", "none")):
        host["NetworkMode"] = "none"
        for key in _NETWORK_HOST_KEYS:
            host.pop(key, None)
        body.pop("MacAddress", None)
        body["NetworkingConfig"] = None
    body["HostConfig"] = host
    return body


def outcome(image_failures: list[str], container_failures: list[str]) -> ExitCode:
    """The exit codes of `run`: an image that did not arrive fails its verification (4); a
    container the store refused fails its recreation (1)."""
    if image_failures:
        return ExitCode.VERIFY_FAILED
    return ExitCode.ERROR if container_failures else ExitCode.OK


def window_seconds(start: float, load: float, verify_s: float, create: float,
                   stop: float) -> float:
    """A `run`'s window from the rehearsal's figures: the containers stopped, the restart
    (the throwaway engine's start stands for it), the import, the verification, the
    containers created again. After a `stage` the load is not in the window: pass 0."""
    return stop + start + load + verify_s + create


def measured(start_s: float, moved: MovedImages, verify_s: float, create_s: float,
             stop_s: float) -> RehearsalFigures:
    """The report's figures from the seconds measured and plan's stop bound (pure)."""
    window = window_seconds(start_s, moved.load_s, verify_s, create_s, stop_s)
    # Staged: the rate of the stream (save and import at once), outside the window.
    moving_s = moved.load_s if moved.path == "export" else moved.before_window_s
    return RehearsalFigures(
        engine_start_seconds=round(start_s, 2), archive_bytes=moved.bytes,
        save_seconds=round(moved.before_window_s, 2), load_seconds=round(moved.load_s, 2),
        load_mbps=round(moved.bytes / 1e6 / moving_s if moving_s > 0 else 0.0, 1),
        verify_seconds=round(verify_s, 2), create_seconds=round(create_s, 2),
        window_seconds=round(window, 1), run_seconds=round(moved.before_window_s + window, 1),
        staged_window_seconds=round(window_seconds(start_s, 0.0, verify_s, create_s,
                                                   stop_s), 1))


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# --- leftovers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """`PENDING_NAME`: the directory of a rehearsal that has not finished (`kept`: one
    that finished with `--keep`, its directory left for inspection)."""

    dir: str | None
    kept: bool = False


def read_pending(state_dir: Path) -> Pending | None:
    """The pending record; None when there is none (a record that cannot be read names
    no directory)."""
    try:
        data = json.loads((state_dir / PENDING_NAME).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return Pending(dir=None)
    if not isinstance(data, dict):
        return Pending(dir=None)
    recorded = data.get("dir")
    return Pending(dir=recorded if isinstance(recorded, str) and recorded else None,
                   kept=data.get("kept") is True)


def remove_leftovers(state_dir: Path) -> list[str]:
    """What a killed rehearsal left (its engine, mounts, directory), found from the state
    dir: stopped (only the processes it started), unmounted and removed."""
    pending = state_dir / PENDING_NAME
    recorded = (read_pending(state_dir) or Pending(dir=None)).dir
    did: list[str] = []
    if recorded is not None:
        folder = Path(recorded)
        if folder.exists():
            did += ThrowawayEngine(folder).destroy()
    pending.unlink(missing_ok=True)
    return [f"rehearsal leftovers: {line}" for line in did]


def remove_leftovers_locked(state_dir: Path) -> list[str]:
    """`remove_leftovers` for another command (`cleanup`): under the state dir's lock, so a
    rehearsal still running (it holds the lock) is never cleaned up from under it."""
    folder = StateDir(state_dir)
    if folder.problem() is not None or not (folder.path / PENDING_NAME).exists():
        return []
    with folder.lock():
        return remove_leftovers(folder.path)


def _usable_dir(folder: Path) -> None:
    """Refuse a --dir that holds something else: a rehearsal removes its directory."""
    if not folder.exists():
        return
    if not folder.is_dir() or folder.is_symlink():
        raise UsageError(f"{folder} is not a directory", "give --dir a new directory")
    entries = os.listdir(folder)
    if entries and RECORD_NAME not in entries:
        raise UsageError(f"{folder} is not empty and is not a rehearsal's directory; a "
                         "rehearsal removes its directory when done",
                         "give --dir a new or empty directory")


# --- the command ----------------------------------------------------------------------------


def rehearse(opts: GlobalOptions, args: RehearseArgs) -> int:
    state_dir = open_state(opts)
    # One at a time, and never beside a `run` of the same state dir.
    with state_dir.lock():
        return _rehearse_locked(opts, args, state_dir)


def _rehearse_locked(opts: GlobalOptions, args: RehearseArgs, state_dir: StateDir) -> int:
    leftovers = remove_leftovers(state_dir.path)
    if args.fmt == "text":  # JSON output stays one document: the report carries them
        for line in leftovers:
            opts.console.emit(line)
    folder = rehearsal_dir(state_dir.path, args.dir)
    _usable_dir(folder)
    throwaway = ThrowawayEngine(folder)
    with connect(opts) as live:
        info = live.info()
        launch = detect_launch(info.pid, opts.host)
        binaries, missing = locate_binaries(dockerd_binary(launch.pid),
                                            live_search_path(launch.environment))
        config = read_daemon_config(opts.daemon_config)
        inventory = live.inventory(info)
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        need = room_for(inventory)
        config_problem = (f"{opts.daemon_config} cannot be read: {config.parse_error}"
                          if config.parse_error else None)
        found = blockers(info.store, missing, free_bytes(probe), need, probe,
                         throwaway.socket_problem(), config_problem)
        ctr = launch_ctr(launch) if args.staged else None
        if args.staged and ctr is None:
            found.append("--staged needs `ctr` next to dockerd or on PATH (it comes with the "
                         "containerd package); install it, or rehearse without --staged")
        if found:
            opts.console.emit(render_rehearsal(RehearsalReport(
                schema_version=REHEARSAL_SCHEMA_VERSION, ok=False,
                exit_code=int(ExitCode.BLOCKED), finished_at=_now(),
                hostname=socket.gethostname(), blockers=tuple(found)), cast(Format, args.fmt)))
            raise BlockedError(f"the rehearsal cannot run: {len(found)} blocker(s)",
                               "fix each BLOCKER line, then run `containerd-migrate "
                               "rehearse` again")
        target = private_config(target_config(config.data, args.snapshotter,
                                              engine_driver=info.driver))
        # The intent first: from here on a kill leaves a directory the next run removes.
        write_private(state_dir.path / PENDING_NAME,
                      json.dumps({"dir": str(folder)}).encode())
        try:
            report = _rehearse(opts, args, live, inventory, launch, binaries, throwaway,
                               target, ctr)
        finally:
            did = throwaway.destroy(keep=args.keep)
            log.info("rehearsal cleaned up", did=did, kept=args.keep)
            if args.keep:
                # Kept on purpose: `status` shows it and leaves it to `rehearse`/`cleanup`.
                write_private(state_dir.path / PENDING_NAME,
                              json.dumps({"dir": str(folder), "kept": True}).encode())
            else:
                (state_dir.path / PENDING_NAME).unlink(missing_ok=True)
    report = report.model_copy(update={"dir": str(folder) if args.keep else None,
                                       "leftovers_removed": tuple(leftovers)})
    state_dir.write_file(state_dir.reports_dir / REPORT_NAME, report.to_json().encode())
    opts.console.emit(render_rehearsal(report, cast(Format, args.fmt)))
    return report.exit_code


def _rehearse(opts: GlobalOptions, args: RehearseArgs, live: Engine, inventory: Inventory,
              launch: DaemonLaunch, binaries: dict[str, str], throwaway: ThrowawayEngine,
              config: dict[str, Any], ctr: Path | None) -> RehearsalReport:
    """`ctr` is given (found before the checks) exactly when the images move `--staged`."""
    throwaway.prepare(config)
    start_s = throwaway.start(binaries, engine_env(launch.environment, binaries),
                              args.start_timeout)
    failpoints.hit("rehearse:engine-started")
    failures: list[str] = []
    container_failures: list[str] = []
    notes: list[str] = []
    with Engine(throwaway.host) as new:
        new_info = new.info()
        moved = (_stage(live, inventory, ctr, throwaway, config, failures) if ctr is not None
                 else _export_and_load(opts, live, new, inventory, throwaway, failures))
        failpoints.hit("rehearse:images-moved")
        began = time.monotonic()
        # verify() itself says when the engine is not on the containerd store.
        failures += verify(new, inventory, moved.manifest, moved.staged).all_problems()
        verify_s = time.monotonic() - began
        began = time.monotonic()
        created = _create_containers(new, inventory, moved.image_ids, container_failures,
                                     notes)
        create_s = time.monotonic() - began
        failpoints.hit("rehearse:containers-created")
        started = _start_containers(new, inventory, created, container_failures) \
            if args.start else None
    code = outcome(failures, container_failures)
    return RehearsalReport(
        schema_version=REHEARSAL_SCHEMA_VERSION, ok=code is ExitCode.OK, exit_code=int(code),
        finished_at=_now(), hostname=socket.gethostname(), engine_version=new_info.version,
        dockerd=binaries["dockerd"], binaries=binaries, path=moved.path,
        images=len(inventory.images), containers=len(inventory.containers),
        containers_created=len(created), containers_started=started,
        failures=(*failures, *container_failures), notes=tuple(notes),
        images_fingerprint=images_fingerprint(inventory),
        # The stop is plan's bound (the containers' own stop timeouts): a rehearsal stops
        # nothing.
        figures=measured(start_s, moved, verify_s, create_s, stop_bound(inventory)))


def _export_and_load(opts: GlobalOptions, live: Engine, new: Engine, inventory: Inventory,
                     throwaway: ThrowawayEngine, failures: list[str]) -> MovedImages:
    """The export path of `run`: archives saved, then loaded."""
    manifest, archive_bytes, save_s = _save(opts, live, inventory, throwaway, failures)
    failpoints.hit("rehearse:saved")
    load_s = _load(new, manifest, throwaway, failures)
    return MovedImages("export", manifest, (), archive_bytes, save_s, load_s)


def _stage(live: Engine, inventory: Inventory, ctr: Path,
           throwaway: ThrowawayEngine, config: dict[str, Any],
           failures: list[str]) -> MovedImages:
    """The staging path of `run`: each batch's `docker save` streamed by the stage phase's
    code into `ctr import` of the throwaway engine's own containerd; an image counts as
    moved when that store proves it, as after a stage."""
    client = Containerd(ctr, str(throwaway.containerd_socket), DOCKERD_CONTAINERD_NAMESPACE)
    # The store the throwaway engine runs on, as its daemon.json (the switch's) names it.
    snapshotter = str(config.get("storage-driver") or DEFAULT_SNAPSHOTTER)
    local_import = client.local_import()
    data_root = inventory.engine.data_root
    cap = batch_cap(data_root, Path(data_root)) if data_root else None
    batches = plan_batches(inventory.images, set(), cap)
    began = time.monotonic()
    sent: list[int] = []
    with byte_bar("rehearse: stage", sum(b.estimated_bytes for b in batches)) as bar:
        move_batches(live, inventory.images, batches, cap, failures, lambda batch: sent.append(
            stream_batch(live, client, snapshotter, local_import, batch, bar,
                         throwaway.record_child)))
    view = StoreView(client, snapshotter)
    staged = tuple(e for image in inventory.images if (e := view.staged(image)) is not None)
    return MovedImages("staged", ArchiveManifest(), staged, sum(sent),
                       time.monotonic() - began, 0.0)


def move_batches(live: Engine, images: Sequence[ImageRecord], batches: tuple[Batch, ...],
                  cap: int | None, failures: list[str], move: Callable[[Batch], None],
                  ) -> None:
    """`move` each batch. When the daemon refuses to save one (a layer damaged in the
    legacy store), `run` would stop there; a rehearsal names every image that cannot be
    saved (each saved alone, to nowhere) as a failure, and moves the others of that batch
    in batches of their own. Any other failure of a batch is a failure naming it."""
    for batch in batches:
        try:
            move(batch)
        except EngineError as refused:
            members = [i for i in images if i.id in set(batch.image_ids)]
            bad = {image.id: why for image in members
                   if (why := _save_refused(live, image)) is not None}
            if not bad:  # the batch, not one of its images: say so and go on
                failures.append(f"cannot save {_refs(batch.refs)}: {refused.message}")
                continue
            failures += [f"cannot save {_refs(image.tags or (image.id,))}: {bad[image.id]}"
                         for image in members if image.id in bad]
            for again in plan_batches([i for i in members if i.id not in bad], set(), cap):
                try:
                    move(again)
                except MigrateError as error:
                    failures.append(f"cannot move {_refs(again.refs)}: {error.message}")
        except MigrateError as error:
            failures.append(f"cannot move {_refs(batch.refs)}: {error.message}")


def _save_refused(live: Engine, image: ImageRecord) -> str | None:
    """Why the daemon refuses to save `image` (its tags, or its ID when dangling)."""
    try:
        with closing_stream(live.save(list(image.tags or (image.id,)))) as chunks:
            for _chunk in chunks:
                pass
    except EngineError as error:
        return error.message
    return None


def _refs(refs: Sequence[str], shown: int = 5) -> str:
    more = f" and {len(refs) - shown} more" if len(refs) > shown else ""
    return ", ".join(refs[:shown]) + more


def _save(opts: GlobalOptions, live: Engine, inventory: Inventory,
          throwaway: ThrowawayEngine, failures: list[str]) -> tuple[ArchiveManifest, int, float]:
    """The export phase's batches, written by its own code into the rehearsal directory."""
    archives = throwaway.archives_dir
    archives.mkdir(mode=0o700, exist_ok=True)
    ctx = PhaseContext(
        options=RunOptions(host=opts.host, daemon_config=opts.daemon_config,
                           state_dir=opts.state_dir),
        connect=lambda: live, checkpoint=lambda _data: None, state_dir=StateDir(throwaway.dir))
    cap = batch_cap(inventory.engine.data_root, archives)
    batches = plan_batches(inventory.images, set(), cap)
    began = time.monotonic()
    manifest = ArchiveManifest()
    written = 0

    def write(batch: Batch) -> None:
        nonlocal manifest, written
        manifest, _written, _adopted, size = write_batches(
            ctx, live, inventory, manifest, (batch,), bar, "rehearse")
        written += size

    with byte_bar("rehearse: save", sum(b.estimated_bytes for b in batches)) as bar:
        move_batches(live, inventory.images, batches, cap, failures, write)
    return manifest, written, time.monotonic() - began


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            yield chunk


def _load(new: Engine, manifest: ArchiveManifest, throwaway: ThrowawayEngine,
          failures: list[str]) -> float:
    """`docker load` of every archive into the throwaway engine; a refused archive is a
    failure in the import phase's words, and the others still load."""
    began = time.monotonic()
    for entry in manifest.archives:
        path = throwaway.archives_dir / entry.file
        try:
            new.load(_chunks(path), entry.bytes)
        except EngineError as error:
            failures.append(load_refused(error, path).message)
    return time.monotonic() - began


def _create_containers(new: Engine, inventory: Inventory, image_ids: dict[str, str],
                       failures: list[str], notes: list[str]) -> dict[str, str]:
    """Every container, in the recreate phase's order, created and never started."""
    new_ids: dict[str, str] = {}
    for container in creation_order(inventory.containers):
        image = image_for(container, {}, image_ids)
        if image is None:
            failures.append(f"no image for container {container.name}: its image "
                            f"{container.image_id} was neither exported nor staged")
            continue
        if container.networks and not container.network_mode.startswith("container:"):
            notes.append(f"{container.name}: created without its networks (the throwaway "
                         "engine has networking off)")
        body = rehearsal_body(container, image, new_ids, image_ids,
                              volumes_from_sources(container, inventory.containers))
        try:
            new_ids[container.id] = new.create_container_from_spec(container.name, body)
        except MigrateError as error:
            failures.append(f"cannot recreate container {container.name}: {error.message}")
    return new_ids


def _start_containers(new: Engine, inventory: Inventory, created: dict[str, str],
                      failures: list[str]) -> int:
    """`--start`: the containers that ran, started in creation order as the recreate phase
    does, then stopped again (before the engine stops, so nothing outlives it)."""
    started: list[str] = []
    try:
        for container in creation_order(inventory.containers):
            new_id = created.get(container.id)
            if new_id is None or not container.running:
                continue
            try:
                new.start_container(new_id)
            except MigrateError as error:
                failures.append(f"container {container.name} was recreated but does not "
                                f"start: {error.message}")
                continue
            started.append(new_id)
    finally:
        for new_id in reversed(started):
            try:
                new.stop_container(new_id)
            except MigrateError as error:
                log.warning("cannot stop a rehearsed container; the engine's stop kills it",
                            container=new_id, error=error.message)
    return len(started)
