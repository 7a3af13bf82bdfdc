"""Phase "switch": turn on the containerd-snapshotter feature in daemon.json.

The intent record already holds everything undo needs (the original bytes, mode and
owner, the digest of what we are about to write, and how to restart the daemon), so a
crash between intent and done can be undone like a finished switch. A resumed attempt
gets a fresh intent; the original bytes survive through a checkpoint written just
before the file is replaced, because by then the file on disk may be ours.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import os
import shlex
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from migrate.engine import daemon_wait
from migrate.errors import BlockedError, DaemonConfigError, StateError
from migrate.host import restart_command
from migrate.host.daemon_json import (
    SNAPSHOTTER_FEATURE,
    load_for_edit,
    parse_config_bytes,
    read_regular,
    render_config,
    target_config,
)
from migrate.host.fs import atomic_write_bytes, fsync_dir
from migrate.models import Store
from migrate.phases.base import (
    Phase,
    PhaseContext,
    PhaseOutcome,
    RunOptions,
    UndoContext,
    UndoReport,
)
from migrate.phases.daemon_restart import restart_into
from migrate.phases.records import RecordModel, SwitchOriginal, SwitchUndo

NEW_DIR_MODE = 0o755
# Mode bits a daemon.json may be restored with: no setuid/setgid/sticky, no world-write.
SAFE_MODE_BITS = 0o775
DIFF_CONTEXT = 3


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def read_current(path: Path) -> bytes | None:
    try:
        return read_regular(path)[0]
    except FileNotFoundError:
        return None


def _engine_driver(ctx: PhaseContext) -> str | None:
    """The legacy graph driver: it decides the snapshotter when daemon.json names none."""
    if ctx.inventory_path.exists():
        return ctx.load_inventory().engine.legacy_driver
    with ctx.connect() as engine:
        return engine.info().legacy_driver


def _saved_original(ctx: PhaseContext) -> SwitchOriginal | None:
    for data in reversed(ctx.previous_progress):
        original = data.get("original")
        if isinstance(original, dict):
            return SwitchOriginal.model_validate(original)
    return None


def _original(ctx: PhaseContext) -> SwitchOriginal:
    saved = _saved_original(ctx)
    if saved is not None:
        return saved
    configured = ctx.options.daemon_config
    raw, mode, uid, gid = load_for_edit(configured, ctx.options.follow_symlinks)
    if raw is None and os.geteuid() != 0:
        # Only root can give a new file to root; a non-root run owns what it creates.
        uid, gid = os.geteuid(), os.getegid()
    if raw is not None and parse_config_bytes(raw).get("features", {}).get(
            SNAPSHOTTER_FEATURE) is True:
        # Restoring these bytes on rollback would bring the daemon back on containerd.
        raise BlockedError(
            f"{configured} already enables {SNAPSHOTTER_FEATURE}, but the daemon runs the "
            "legacy store: a rollback could not bring it back to legacy",
            f"remove the {SNAPSHOTTER_FEATURE} feature from {configured} (the daemon has not "
            "read it yet), then run again")
    path = edited_path(ctx.options)
    return SwitchOriginal(path=str(path), original_b64=_b64(raw), original_absent=raw is None,
                          mode=mode, uid=uid, gid=gid, dir_existed=path.parent.is_dir())


def edited_path(options: RunOptions) -> Path:
    """The file the switch edits and its undo restores: the daemon.json named now."""
    # With follow_symlinks the link target is edited and the link is left alone.
    configured = options.daemon_config
    return Path(os.path.abspath(configured.resolve() if options.follow_symlinks
                                else configured))


def plan_switch(ctx: PhaseContext) -> SwitchUndo:
    """The switch record: used as intent, checkpoint, and undo record alike."""
    original = _original(ctx)
    raw = _unb64(original.original_b64)
    data = parse_config_bytes(raw) if raw is not None else None
    target = render_config(
        target_config(data, ctx.options.snapshotter, engine_driver=_engine_driver(ctx))
    )
    return SwitchUndo(
        **original.model_dump(),
        written_sha256=sha256_hex(target),
        written_b64=_b64(target),
        restart_command=restart_command.resolve_restart_command(ctx.options.restart_command),
        restart_timeout=daemon_wait.resolve_restart_timeout(ctx.options.restart_timeout),
        host=ctx.options.host,
    )


def _mode(record: SwitchOriginal) -> int:
    """The mode to write daemon.json with; `refuse_untrusted` has checked it is plain."""
    if record.mode is None:
        raise _bad_mode(record)
    return record.mode


def _write(path: Path, data: bytes, record: SwitchOriginal) -> None:
    if not path.parent.is_dir():
        path.parent.mkdir(mode=NEW_DIR_MODE, parents=True, exist_ok=True)
        fsync_dir(path.parent.parent)
    atomic_write_bytes(path, data, _mode(record), record.uid, record.gid)


class SwitchResult(RecordModel):
    path: str = ""
    written_sha256: str | None = None
    # False: the file already had the switched content (a resumed attempt).
    rewritten: bool = False
    # True: there was no daemon.json before the switch.
    created: bool = False


class SwitchPhase(Phase[SwitchUndo, SwitchUndo, SwitchResult]):
    name = "switch"
    undo_model = SwitchUndo
    result_model = SwitchResult

    def intent(self, ctx: PhaseContext) -> SwitchUndo:
        return plan_switch(ctx)

    def run(self, ctx: PhaseContext) -> PhaseOutcome[SwitchUndo, SwitchResult]:
        record = plan_switch(ctx)
        path = _path(record)
        original = _unb64(record.original_b64)
        target = _unb64(record.written_b64)
        assert target is not None
        current = read_current(path)
        if current == target:
            rewritten = False  # resumed after the write, or the file was already switched
        elif current == original:
            if _saved_original(ctx) is None:
                kept = SwitchOriginal.model_validate(record.model_dump(
                    include=set(SwitchOriginal.model_fields)))
                ctx.checkpoint({"original": kept.to_json()})
            _write(path, target, record)
            rewritten = True
        else:
            raise DaemonConfigError(
                f"{path} changed since an interrupted attempt started editing it",
                "put back the content it had before the migration and resume, or roll back "
                "(which restores the original with --force)",
            )
        return PhaseOutcome(record, SwitchResult(path=str(path),
                                                 written_sha256=record.written_sha256,
                                                 rewritten=rewritten, created=original is None))

    def undo(self, ctx: UndoContext, record: SwitchUndo) -> UndoReport:
        lines = restore_config(record, force=ctx.force)
        lines.extend(_back_to_legacy(record, ctx))
        return UndoReport.done(*lines)

    def refuse_undo(self, ctx: UndoContext, record: SwitchUndo) -> None:
        refuse_untrusted(record, ctx.options)
        if not ctx.force:
            refuse_if_drifted(record)


def _path(record: SwitchOriginal) -> Path:
    return Path(os.path.abspath(record.path or ""))


def _bad_mode(record: SwitchOriginal) -> StateError:
    return StateError(
        f"the journal's switch record asks for mode {record.mode!r} on {_path(record)}; a "
        "daemon.json never has setuid, setgid, sticky or world-write bits",
        "the journal was not written by containerd-migrate; restore daemon.json by hand",
    )


def refuse_untrusted(record: SwitchOriginal, options: RunOptions) -> None:
    """The undo writes as root: only to the daemon.json named now, with a plain mode.

    Not overridable by --force: a record naming another path or a setuid mode was not
    written by a switch of this daemon.json.
    """
    journaled = _path(record)
    if journaled != edited_path(options):
        hint = ("pass --daemon-config with the file the migration switched, if that is really "
                "the file dockerd reads; otherwise the journal is not this host's")
        if edited_path(replace(options, follow_symlinks=True)) == journaled:
            # The migration ran with --follow-symlinks and edited the link's target.
            hint = (f"{options.daemon_config} is a symlink to {journaled}, the file the "
                    "migration switched: pass --follow-symlinks, as the migration did")
        raise StateError(
            f"the journal's switch record names {journaled}, but the daemon.json given now "
            f"is {edited_path(options)}; refusing to write a file that was not named", hint)
    if record.mode is None or record.mode & ~SAFE_MODE_BITS:
        raise _bad_mode(record)


def _drift(path: Path, written: bytes, current: bytes | None) -> BlockedError:
    diff = "".join(
        difflib.unified_diff(
            written.decode("utf-8", "replace").splitlines(keepends=True),
            (current or b"").decode("utf-8", "replace").splitlines(keepends=True),
            fromfile=f"{path} (written by containerd-migrate)",
            tofile=f"{path} (now)" if current is not None else f"{path} (now: deleted)",
            n=DIFF_CONTEXT,
        )
    )
    return BlockedError(
        f"{path} was changed after the switch; restoring the original would discard "
        f"these changes:\n{diff.rstrip()}",
        "keep what you need elsewhere, then roll back again with --force to restore the "
        "original daemon.json anyway",
    )


def refuse_if_drifted(record: SwitchUndo) -> None:
    """The refusal `restore_config(force=False)` would raise, without changing anything.

    Rollback calls it before undoing any phase: a rollback that is going to be refused
    must not first remove the volume guard or mark later phases undone.
    """
    path = _path(record)
    current = read_current(path)
    if current == _unb64(record.original_b64):
        return
    if not record.wrote(current):
        raise _drift(path, _unb64(record.written_b64) or b"", current)


def restore_config(record: SwitchUndo, force: bool) -> list[str]:
    """Put the original daemon.json back byte for byte, unless someone edited ours."""
    path = _path(record)
    original = _unb64(record.original_b64)
    current = read_current(path)
    if current == original:
        return [f"switch: {path} already has its original content"]
    if not force:
        refuse_if_drifted(record)
    lines = _keep_drifted(path, record, current)
    if original is None:
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
        lines.append(f"switch: removed {path} (it did not exist before the migration)")
        if not record.dir_existed:
            try:
                path.parent.rmdir()
                fsync_dir(path.parent.parent)
                lines.append(f"switch: removed the empty folder {path.parent} we had created")
            except OSError:
                pass  # someone put other files there: leave the folder
        return lines
    if not path.parent.is_dir():
        path.parent.mkdir(mode=NEW_DIR_MODE, parents=True, exist_ok=True)
    atomic_write_bytes(path, original, _mode(record), record.uid, record.gid)
    return [*lines, f"switch: restored the original {path} ({len(original)} bytes, "
            f"mode {_mode(record):04o})"]


def _keep_drifted(path: Path, record: SwitchUndo, current: bytes | None) -> list[str]:
    """A daemon.json edited since the switch (restored anyway with --force) is copied next
    to it first: the edits are not lost, and the operator is told where they are."""
    if current is None or record.wrote(current):
        return []
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    copy = path.with_name(f"{path.name}.drifted-{stamp}")
    atomic_write_bytes(copy, current, 0o600)
    return [f"switch: kept the edited {path} as {copy} before restoring the original"]


def _back_to_legacy(record: SwitchUndo, ctx: UndoContext) -> list[str]:
    # The daemon named now, which the runner proved is the journal's (never the journaled
    # address: the record is only trusted for what it restores).
    host = ctx.options.host
    now = daemon_wait.current_info(host)
    if now is not None and now.store is Store.LEGACY:
        return ["switch: the daemon already runs on the legacy store; no restart needed"]
    recorded = record.restart_command
    argv = restart_command.resolve_restart_command(ctx.options.restart_command, recorded)
    timeout = daemon_wait.resolve_restart_timeout(ctx.options.restart_timeout,
                                                  record.restart_timeout)
    source = "given now" if ctx.options.restart_command else (
        "from the journal" if recorded else "this host's default")
    ctx.say(f"switch: restarting the daemon with `{shlex.join(argv)}` ({source}), "
            f"waiting up to {timeout:.0f} s")

    info = restart_into(Store.LEGACY, host, argv, timeout,
                        lambda data: ctx.checkpoint("switch", data),
                        "rollback:restart-command-started", ctx.say)
    return [f"switch: restarted the daemon; Docker {info.version} is back on the legacy store"]


PHASE = SwitchPhase()
