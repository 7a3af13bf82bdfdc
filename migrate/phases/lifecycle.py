"""The lifecycle of a state dir: one state machine, one place that decides.

A state dir holds a sequence of migrations; the journal of the most recent one says where
the host stands. `lifecycle_of` names that state, `decide` says what each command does in
it (start, resume, proceed, nothing to do, or refuse and why) and `next_step` what the
operator runs next. `status`, every command's refusal and every next-step hint come from
here, so they cannot disagree (docs/architecture.md shows the table).

Pure: the journal state and what the host says now (`HostNow`) in, values out. Next steps
are argument tuples; the commands layer renders them as full command lines for this host
and state dir, so a hint can be pasted as printed.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal, TypeAlias, get_args

from migrate.errors import BlockedError
from migrate.journal import JournalState
from migrate.models import Store
from migrate.phases.records import QuiesceUndo, read_record, records_of
from migrate.support.sizes import human_bytes

CommandLine: TypeAlias = Callable[[Sequence[str]], str]


def default_command_line(args: Sequence[str]) -> str:
    """A next step as a command line with the default host and state dir."""
    return shlex.join(("containerd-migrate", *args))


class Lifecycle(StrEnum):
    NONE = "no migration"
    # snapshot, stage, export: the host serves as before, nothing was stopped.
    PREPARING = "preparing"
    # containers stopped, daemon.json switched, or the daemon restarted: not finished.
    SWITCHING = "switching"
    HALF_ROLLED_BACK = "half rolled back"
    COMPLETED = "completed"
    # completed, then `cleanup` (archives, guard): a rollback is still possible.
    CLEANED = "completed, cleaned up"
    # `cleanup --prune-legacy`: the legacy data is gone, no rollback any more.
    PRUNED = "completed, legacy data pruned"
    ROLLED_BACK = "rolled back"
    # rolled back, then `cleanup`: archives and the tool's images in the containerd store gone.
    ROLLED_BACK_CLEANED = "rolled back, cleaned up"


Command: TypeAlias = Literal["plan", "stage", "export", "run", "verify", "status", "rollback",
                             "cleanup"]
COMMANDS: Final[tuple[Command, ...]] = get_args(Command)
Action: TypeAlias = Literal["start", "resume", "proceed", "nothing", "refuse"]


def lifecycle_of(state: JournalState, legacy_pruned: bool = False) -> Lifecycle:
    """`legacy_pruned`: the marker `cleanup --prune-legacy` writes before deleting anything
    (a prune that died half-way has no journal record yet, and is a prune all the same)."""
    if state.last_migration_id is None:
        return Lifecycle.NONE
    if state.migration_id is not None:
        if state.half_rolled_back:
            return Lifecycle.HALF_ROLLED_BACK
        if state.phase("quiesce").status == "pending":
            return Lifecycle.PREPARING
        return Lifecycle.SWITCHING
    if state.outcome == "rolled_back":
        return Lifecycle.ROLLED_BACK_CLEANED if state.cleaned else Lifecycle.ROLLED_BACK
    if state.pruned or legacy_pruned:
        return Lifecycle.PRUNED
    return Lifecycle.CLEANED if state.cleaned else Lifecycle.COMPLETED


@dataclass(frozen=True)
class HostNow:
    """What the host says now; None where it could not tell (daemon down)."""

    store: str | None = None
    volume_guard: bool | None = None
    archive_bytes: int = 0
    legacy_pruned: bool = False
    # Why the daemon could not be asked, when it could not.
    unreachable: str | None = None
    # Image names this tool put into the containerd store that are still there.
    tool_images: int = 0


@dataclass(frozen=True)
class NextStep:
    """A sentence with `{}` where commands go, and the commands (argument tuples)."""

    text: str
    commands: tuple[tuple[str, ...], ...] = ()

    def render(self, command_line: CommandLine) -> str:
        return self.text.format(*(f"`{command_line(c)}`" for c in self.commands))


@dataclass(frozen=True)
class Decision:
    action: Action
    # For "nothing" and "refuse": why, in one sentence.
    reason: str = ""
    next: NextStep | None = None

    def refusal(self, command_line: CommandLine) -> BlockedError:
        hint = self.next.render(command_line) if self.next else ""
        return BlockedError(self.reason, hint or "see `containerd-migrate status`")


def containers_policy_of(state: JournalState) -> str | None:
    """The containers policy the last migration ran (or was prepared) with: the one its
    containers were stopped under, else the one its last forward run was given (a rollback
    run of 0.1.0 journaled the default policy, not the migration's)."""
    # The quiesce intent reads as its undo record (what a half-done quiesce is undone from).
    stopped_under = read_record(QuiesceUndo, state.phase("quiesce").intent,
                                "quiesce intent").policy
    if stopped_under is not None:
        return stopped_under
    for run in reversed(state.runs):
        policy = run.options.get("containers")
        if isinstance(policy, str) and "rollback" not in run.argv:
            return policy
    return None


def _run_again(state: JournalState) -> tuple[str, ...]:
    # A new migration does not inherit the old one's policy: say it, so the pasted command
    # does what the rolled-back migration did (a host with containers refuses the default).
    policy = containers_policy_of(state) or "recreate"
    return ("run", "--yes", "--containers", policy)


_START = NextStep("{} first (a dry run); then, ahead of the window, {} and, in it, {}",
                  (("plan", "--containers", "recreate"), ("stage", "--containers", "recreate"),
                   ("run", "--yes", "--containers", "recreate")))
_RESUME = NextStep("resume with {}, or undo with {}", (("run", "--yes"), ("rollback", "--yes")))
_FINISH_ROLLBACK = NextStep("finish the rollback with {}", (("rollback", "--yes"),))


def _preparing_step(state: JournalState) -> NextStep:
    if state.phase("stage").status == "done":
        return NextStep("in the maintenance window: {} (it stages only what changed, then "
                        "switches); or {} drops the preparation", (("run", "--yes"),
                                                                   ("rollback", "--yes")))
    if state.phase("export").status == "done":
        return NextStep("in the maintenance window: {} (it refreshes the snapshot and exports "
                        "only what changed); or {} drops the preparation",
                        (("run", "--yes"), ("rollback", "--yes")))
    return _RESUME


def _completed_step(state: JournalState, host: HostNow) -> NextStep:
    if host.store == Store.LEGACY.value:
        return NextStep("the daemon is on the legacy store now although the migration "
                        "completed: {} restores the journaled daemon.json; or fix daemon.json "
                        "by hand and run {}", (("rollback", "--yes"), ("verify",)))
    hidden = _hidden_containers(state)
    containers = (f"recreate the {hidden} container(s) left hidden in the legacy store on "
                  "the new store (e.g. `docker compose up -d`); " if hidden else "")
    # The host over the journal: a cleanup by hand (or by 0.1.0, which journaled none) shows
    # as no archives and no guard.
    if host.archive_bytes or host.volume_guard:
        return NextStep(f"{containers}once you are happy, {{}} (or undo with {{}})",
                        (("cleanup",), ("rollback", "--yes")))
    return NextStep(f"{containers}nothing else to do; {{}} reclaims the legacy data (no "
                    "rollback after it)", (("cleanup", "--prune-legacy", "--yes"),))


def _hidden_containers(state: JournalState) -> int:
    """Containers the migration stopped and did not recreate (policy `leave`)."""
    records = records_of(state)
    if records.recreate.recreated:
        return 0
    return records.quiesce.containers


def next_step(state: JournalState, host: HostNow | None = None) -> NextStep:
    """The operator's next command in this state (pure)."""
    host = host or HostNow()
    match lifecycle_of(state, host.legacy_pruned):
        case Lifecycle.NONE:
            return _START
        case Lifecycle.PREPARING:
            return _preparing_step(state)
        case Lifecycle.SWITCHING:
            return _RESUME
        case Lifecycle.HALF_ROLLED_BACK:
            return _FINISH_ROLLBACK
        case Lifecycle.COMPLETED | Lifecycle.CLEANED:
            return _completed_step(state, host)
        case Lifecycle.PRUNED:
            return NextStep("nothing left to do: the legacy data was pruned (no rollback any "
                            "more)")
        case Lifecycle.ROLLED_BACK:
            size = f" ({human_bytes(host.archive_bytes)} of archives)" if host.archive_bytes \
                else ""
            return NextStep(f"{{}} deletes what the migration left{size} and removes the "
                            "tool's images from the containerd store; or {} migrates again",
                            (("cleanup",), _run_again(state)))
        case Lifecycle.ROLLED_BACK_CLEANED:
            return NextStep("when you want to migrate again: {}, then {}",
                            (("plan", "--containers", containers_policy_of(state) or
                              "recreate"), _run_again(state)))
    raise AssertionError("unreachable")  # pragma: no cover


def decide(state: JournalState, command: Command, host: HostNow | None = None, *,
           purge_imported: bool = False) -> Decision:
    """What `command` does now: the one table of the state machine (pure)."""
    host = host or HostNow()
    now = lifecycle_of(state, host.legacy_pruned)
    step = next_step(state, host)
    if command in ("plan", "status"):
        return Decision("proceed", next=step)
    if now is Lifecycle.HALF_ROLLED_BACK and command != "rollback":
        return Decision("refuse", f"migration {state.migration_id} is half rolled back; "
                        "nothing runs forward until the rollback finishes", step)
    match command:
        case "run":
            return _decide_run(now, state, step)
        case "stage" | "export":
            return _decide_prepare(now, state, command, step)
        case "verify":
            return _decide_verify(now, state, step)
        case "rollback":
            return _decide_rollback(now, state, step, purge_imported)
        case "cleanup":
            return _decide_cleanup(now, state, step)
    raise AssertionError(f"unknown command {command}")  # pragma: no cover


def _decide_run(now: Lifecycle, state: JournalState, step: NextStep) -> Decision:
    if now in (Lifecycle.NONE, Lifecycle.ROLLED_BACK, Lifecycle.ROLLED_BACK_CLEANED):
        return Decision("start", next=step)
    if now in (Lifecycle.PREPARING, Lifecycle.SWITCHING):
        return Decision("resume", next=step)
    return Decision("nothing", f"migration {state.last_migration_id} already completed",
                    NextStep("see {} and {}", (("status",), ("verify",))))


def _decide_prepare(now: Lifecycle, state: JournalState, command: str,
                    step: NextStep) -> Decision:
    if now in (Lifecycle.NONE, Lifecycle.ROLLED_BACK, Lifecycle.ROLLED_BACK_CLEANED):
        return Decision("start", next=step)
    if now is Lifecycle.PREPARING:
        return Decision("resume", next=step)
    if now is Lifecycle.SWITCHING:
        return Decision("refuse", f"`{command}` prepares a migration ahead of the window, and "
                        f"migration {state.migration_id} is already past that: containers "
                        "were stopped or the store switched", _RESUME)
    return Decision("refuse", f"`{command}` has nothing to prepare: migration "
                    f"{state.last_migration_id} completed and the host is on the containerd "
                    "image store", step)


def _decide_verify(now: Lifecycle, state: JournalState, step: NextStep) -> Decision:
    if now in (Lifecycle.COMPLETED, Lifecycle.CLEANED, Lifecycle.PRUNED):
        return Decision("proceed", next=step)
    if now is Lifecycle.SWITCHING and state.phase("restart").status == "done":
        return Decision("proceed", next=step)
    if now is Lifecycle.NONE:
        why = "no migration has been started with this state dir: nothing to verify"
    elif now in (Lifecycle.ROLLED_BACK, Lifecycle.ROLLED_BACK_CLEANED):
        why = (f"migration {state.last_migration_id} was rolled back: the host is on the "
               "legacy store, nothing migrated to verify")
    else:
        why = (f"migration {state.migration_id} has not switched the store yet: nothing "
               "migrated to verify")
    return Decision("refuse", why, step)


def _decide_rollback(now: Lifecycle, state: JournalState, step: NextStep,
                     purge_imported: bool) -> Decision:
    if now is Lifecycle.NONE:
        return Decision("nothing", "no migration to roll back", step)
    if now is Lifecycle.PRUNED:
        return Decision("refuse", "the legacy data was pruned by `containerd-migrate cleanup "
                        "--prune-legacy`; there is nothing to roll back to",
                        NextStep("re-pull or rebuild images if needed"))
    if now in (Lifecycle.ROLLED_BACK, Lifecycle.ROLLED_BACK_CLEANED):
        if purge_imported and now is Lifecycle.ROLLED_BACK:
            return Decision("proceed", next=step)  # removes the tool's images (cleanup's job)
        return Decision("nothing", f"migration {state.last_migration_id} is already rolled "
                        "back", step)
    return Decision("proceed", next=step)


def _decide_cleanup(now: Lifecycle, state: JournalState, step: NextStep) -> Decision:
    if now is Lifecycle.NONE:
        return Decision("refuse", "no migration has been started with this state dir: "
                        "nothing to clean up", step)
    if now in (Lifecycle.PREPARING, Lifecycle.SWITCHING):
        return Decision("refuse", f"migration {state.migration_id} is not finished: cleanup "
                        "needs a completed, verified migration or a rolled-back one", step)
    if now is Lifecycle.PRUNED:
        return Decision("nothing", "already cleaned up: the legacy data was pruned", step)
    if now in (Lifecycle.COMPLETED, Lifecycle.CLEANED) and state.phase("verify").status != \
            "done":
        return Decision("refuse", "cleanup needs a verified migration", step)
    return Decision("proceed", next=step)


def transition_table() -> list[tuple[Lifecycle, Command, Action]]:
    """Every state x command -> action, for docs/architecture.md and its test."""
    rows: list[tuple[Lifecycle, Command, Action]] = []
    for now, state in sample_states().items():
        rows.extend((now, command, decide(state, command).action) for command in COMMANDS)
    return rows


def sample_states() -> dict[Lifecycle, JournalState]:
    """One journal state per lifecycle state (pure; used by the table and its tests)."""
    from datetime import UTC, datetime  # noqa: PLC0415 - only the table needs it

    from migrate.journal.records import RunStarted  # noqa: PLC0415

    run = RunStarted(migration_id="m", run_id="r", tool_version="0", options={})
    base = JournalState(last_migration_id="m", migration_id="m", runs=(run,))
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def with_phases(state: JournalState, **statuses: str) -> JournalState:
        phases = tuple(p.model_copy(update={"status": statuses.get(p.name, p.status),
                                            "started_at": at})
                       for p in state.phases)
        return state.model_copy(update={"phases": phases})

    done = {name: "done" for name in ("snapshot", "export", "quiesce", "commit", "switch",
                                      "restart", "import", "verify", "recreate")}
    completed = with_phases(base, **done).model_copy(
        update={"migration_id": None, "finished": True, "outcome": "completed"})
    rolled = with_phases(base, **{k: "undone" for k in done}).model_copy(
        update={"migration_id": None, "finished": True, "outcome": "rolled_back"})
    return {
        Lifecycle.NONE: JournalState(),
        Lifecycle.PREPARING: with_phases(base, snapshot="done", export="done"),
        Lifecycle.SWITCHING: with_phases(base, snapshot="done", export="done",
                                         quiesce="done", switch="started"),
        Lifecycle.HALF_ROLLED_BACK: with_phases(base, snapshot="done", export="done",
                                                quiesce="undone", switch="done"),
        Lifecycle.COMPLETED: completed,
        Lifecycle.CLEANED: completed.model_copy(update={"cleaned": True}),
        Lifecycle.PRUNED: completed.model_copy(update={"cleaned": True, "pruned": True}),
        Lifecycle.ROLLED_BACK: rolled,
        Lifecycle.ROLLED_BACK_CLEANED: rolled.model_copy(update={"cleaned": True}),
    }
