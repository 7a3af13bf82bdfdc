"""Command line: parses options, configures logging, maps MigrateError to exit codes.

Every command is a plain function in `migrate.commands`; this module only wires click to
them, so they stay usable (and testable) without click.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from migrate import __version__
from migrate.engine.client import base_url
from migrate.errors import ExitCode, HungUp, Interrupted, MigrateError, Terminated, UsageError
from migrate.host.daemon_json import DEFAULT_PATH as DEFAULT_DAEMON_CONFIG
from migrate.host.launch import DEFAULT_SOCKET
from migrate.journal.state_dir import DEFAULT_STATE_DIR
from migrate.preflight.facts import CONTAINERS_POLICIES, DEFAULT_CONTAINERS_POLICY
from migrate.support import progress
from migrate.support.logconfig import LogFormat, configure_logging
from migrate.support.streams import survive_lost_output

if TYPE_CHECKING:
    from migrate.commands.context import GlobalOptions
    from migrate.commands.output import Format

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_HOST = f"unix://{DEFAULT_SOCKET}"


def _host(given: str | None) -> str:
    """--host, else DOCKER_HOST (empty counts as unset, as for the docker CLI), else the
    default; a UsageError when it is not an address containerd-migrate can use."""
    if given is not None:
        base_url(given, "--host")
        return given
    from_env = os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    base_url(from_env, "DOCKER_HOST")
    return from_env


def _refuse_empty(ctx: click.Context) -> None:
    """An option given as "" (or its variable set to "") is a mistake, never a request for
    the default: an empty --state-dir must not quietly become the default state dir."""
    for context in (ctx.find_root(), ctx):
        for param in context.command.params:
            if not isinstance(param, click.Option) or param.is_flag or param.count \
                    or param.name is None:
                continue
            envvar = param.envvar or (f"{context.auto_envvar_prefix}_{param.name.upper()}"
                                      if context.auto_envvar_prefix else None)
            source = context.get_parameter_source(param.name)
            if context.params.get(param.name) == "":
                raise UsageError(f"{max(param.opts, key=len)} is empty",
                                 "give it a value, or leave it out for the default")
            if source is click.core.ParameterSource.DEFAULT and isinstance(envvar, str) \
                    and os.environ.get(envvar) == "":
                raise UsageError(f"{envvar} is set but empty",
                                 f"unset it for the default of {max(param.opts, key=len)}, "
                                 "or give "
                                 "it a value")


def _run(ctx: click.Context, fn: Callable[[], int]) -> None:
    debug = bool(ctx.find_root().params.get("debug"))
    try:
        _refuse_empty(ctx)
        code = fn()
    except MigrateError as exc:
        if debug:
            raise
        click.echo(exc.render(), err=True)
        ctx.exit(int(exc.exit_code))
    except KeyboardInterrupt as stop:
        if debug:
            raise
        said = (f"stopped by {stop.signal_name}" if isinstance(stop, Terminated)
                else "interrupted")
        click.echo(Interrupted(said, "run the same command again to resume").render(), err=True)
        ctx.exit(int(ExitCode.INTERRUPTED))
    ctx.exit(code)


class ClickConsole:
    """The commands' console on a terminal: reports on stdout, questions on stderr."""

    def emit(self, text: str) -> None:
        click.echo(text)

    def ask(self, question: str) -> bool:
        return click.confirm(question, default=False, err=True)


def _globals(ctx: click.Context) -> GlobalOptions:
    from migrate.commands.context import GlobalOptions

    params = ctx.find_root().params
    return GlobalOptions(
        host=_host(params["host"]),
        daemon_config=Path(params["daemon_config"]),
        state_dir=Path(params["state_dir"]),
        follow_symlinks=params["follow_symlinks"],
        console=ClickConsole(),
        argv=tuple(sys.argv[1:]),
        interactive=sys.stdin.isatty(),
    )


def _containers_option(f: F) -> F:
    return click.option(
        "--containers",
        type=click.Choice(list(CONTAINERS_POLICIES)),
        default=None,
        help="refuse: containers block the migration; leave: stop them and keep "
        "them hidden in the legacy store (they come back on rollback); recreate: stop them "
        "and create them again in the containerd store (same name, config, volumes, "
        "networks). Chosen once per migration: `export` journals it and `run` uses it unless "
        f"given another. [default: {DEFAULT_CONTAINERS_POLICY}]",
    )(f)


def _restart_command_option(f: F) -> F:
    return click.option(
        "--restart-command", default=None, envvar="CONTAINERD_MIGRATE_RESTART_COMMAND",
        help='Command that restarts dockerd, e.g. "systemctl restart docker" (split like a '
        "shell would, but never run through a shell) [env: CONTAINERD_MIGRATE_RESTART_COMMAND; "
        "default: systemd's or the init script's]")(f)


def _snapshotter_option(f: F) -> F:
    return click.option(
        "--snapshotter",
        default=None,
        help="Snapshotter to use when the storage driver has no automatic mapping "
        "(btrfs, zfs, devicemapper, aufs, fuse-overlayfs).",
    )(f)


def _format_option(*choices: str) -> Callable[[F], F]:
    return click.option(
        "--format", "fmt", type=click.Choice(list(choices)), default=choices[0],
        show_default=True, help="Output format.",
    )


def _result_format_option(f: F) -> F:
    return click.option(
        "--format", "fmt", type=click.Choice(["text", "json"]), default="text",
        show_default=True,
        help="json: one document on stdout, also on failure (schema in the README).")(f)


if TYPE_CHECKING:
    _FloatParam = click.ParamType[float]
else:  # click 8.1 (Debian 13's, which the systemd host tier installs) is not generic
    _FloatParam = click.ParamType


class _PositiveNumber(_FloatParam):
    """A finite number of at least `least`: click's FloatRange lets NaN and infinity through
    (every comparison with NaN is false), and either would reach the journal and a deadline."""

    name = "number"

    def __init__(self, least: float, unit: str):
        self.least = least
        self.unit = unit

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None,
                ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of {self.unit}", param, ctx)
        if not math.isfinite(number) or number < self.least:
            self.fail(f"{value!r} is not a finite number of {self.unit} of at least "
                      f"{self.least:g}", param, ctx)
        return number


def _restart_options(f: F) -> F:
    f = _restart_command_option(f)
    # default None: an explicit value must be told from the default, since on rollback it
    # beats the journaled one (engine.daemon_wait.resolve_restart_timeout).
    f = click.option("--restart-timeout", type=_PositiveNumber(1, "seconds"), default=None,
                     envvar="CONTAINERD_MIGRATE_RESTART_TIMEOUT",
                     help="Seconds to wait for the daemon to come back [default: the "
                     "journaled value, else 120].")(f)
    return f


_GLOBAL_VALUE_OPTIONS = frozenset({"--host", "--daemon-config", "--state-dir", "--log-format"})
_GLOBAL_FLAGS = frozenset({"--follow-symlinks", "-v", "--verbose", "-q", "--quiet", "--debug"})


def hoist_global_options(args: list[str], commands_by_name: Mapping[str, click.Command],
                         ) -> list[str]:
    """Move global options written after the command (`plan --host X`) before it.

    Operators type them where they type every other option; click only reads a group's
    options before its command. Values of the command's own options are skipped, so
    `--restart-command --debug` stays the command's.
    """
    position, index = None, 0
    while index < len(args):
        word = args[index]
        if word == "--":
            return args
        if word in _GLOBAL_VALUE_OPTIONS:
            index += 2
            continue
        if word in commands_by_name:
            position = index
            break
        index += 1
    if position is None:
        return args
    command = commands_by_name[args[position]]
    takes_value = {name for param in command.params if isinstance(param, click.Option)
                   and not param.is_flag and not param.count for name in param.opts}
    moved: list[str] = []
    rest: list[str] = []
    index = position + 1
    while index < len(args):
        word = args[index]
        name = word.split("=", 1)[0]
        if word == "--":
            rest.extend(args[index:])
            break
        if word in _GLOBAL_FLAGS:
            moved.append(word)
        elif name in _GLOBAL_VALUE_OPTIONS:
            moved.extend(args[index:index + 2] if "=" not in word else [word])
            index += 0 if "=" in word else 1
        elif word in takes_value:
            rest.extend(args[index:index + 2])
            index += 1
        else:
            rest.append(word)
        index += 1
    return [*args[:position], *moved, args[position], *rest]


class _GlobalsAnywhere(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(list(args), self.commands))


@click.group(cls=_GlobalsAnywhere,
             context_settings={"help_option_names": ["-h", "--help"],
                               "auto_envvar_prefix": "CONTAINERD_MIGRATE"})
@click.version_option(__version__, prog_name="containerd-migrate")
@click.option("--host", default=None, help="Docker daemon address [default: DOCKER_HOST, else "
              f"{DEFAULT_HOST}]")
@click.option("--daemon-config", default=DEFAULT_DAEMON_CONFIG, show_default=True,
              type=click.Path(dir_okay=False), help="The daemon.json that dockerd reads.")
# click.Path() checks nothing: StateDir refuses every unusable shape alike (exit 7).
@click.option("--state-dir", default=str(DEFAULT_STATE_DIR), show_default=True,
              type=click.Path(), help="Journal, inventory, archives, reports.")
@click.option("--follow-symlinks", is_flag=True, help="Allow a daemon.json that is a symlink.")
@click.option("--log-format", type=click.Choice(["console", "json"]), default="console",
              show_default=True)
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(host: str | None, daemon_config: str, state_dir: str, follow_symlinks: bool,
         log_format: LogFormat, verbose: int, quiet: bool, debug: bool) -> None:
    """Move a Docker Engine host from the legacy image store to the containerd image store."""
    # Losing the terminal or the log pipe (`| head`, a dead `tee`) must not fail a phase;
    # wrapped before logging takes its stream.
    survive_lost_output()
    configure_logging(log_format, verbose, quiet)
    progress.set_enabled(not quiet)
    signal.signal(signal.SIGTERM, _terminated)
    # An ssh session that drops sends SIGHUP: an interruption like SIGTERM, journaled and
    # resumable, never a silent death (rc 129) in the middle of a phase. `nohup` (SIGHUP
    # ignored) keeps ignoring it.
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _hung_up)


def _terminated(signum: int, frame: object) -> None:
    # Like Ctrl-C: the journal records the interruption and `run` resumes later.
    raise Terminated


def _hung_up(signum: int, frame: object) -> None:
    raise HungUp


@main.command()
@_format_option("text", "json", "markdown")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write the report to this file instead of stdout.")
@click.option("--throughput", type=_PositiveNumber(0.1, "MB/s"), default=None,
              help="MB/s used for time estimates.")
@_containers_option
@_snapshotter_option
@_restart_command_option
@click.option("--show-env", is_flag=True,
              help="Show the values of containers' and images' environment variables in the "
              "report (masked as NAME=*** by default: they hold passwords and tokens).")
@click.pass_context
def plan(ctx: click.Context, fmt: str, output: str | None, throughput: float | None,
         containers: str | None, snapshotter: str | None, restart_command: str | None,
         show_env: bool) -> None:
    """Dry run: inventory, checks, disk and time estimates. Changes nothing.

    Exit code 0 when the host is ready, 3 when a blocker was found."""
    from migrate.commands.plan import PlanArgs
    from migrate.commands.plan import plan as command

    _run(ctx, lambda: command(_globals(ctx), PlanArgs(
        fmt=fmt, output=Path(output) if output else None, throughput=throughput,
        containers=containers, snapshotter=snapshotter, restart_command=restart_command,
        show_env=show_env)))


@main.command()
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_containers_option
@_snapshotter_option
@_restart_options
@click.option("--no-auto-rollback", is_flag=True,
              help="Leave the host as it is when the restart or verification fails.")
@_result_format_option
@click.pass_context
def run(ctx: click.Context, yes: bool, containers: str | None, snapshotter: str | None,
        restart_command: str | None, restart_timeout: float | None,
        no_auto_rollback: bool, fmt: Format) -> None:
    """Run (or resume) the whole migration."""
    from migrate.commands.run import RunArgs
    from migrate.commands.run import run as command

    _run(ctx, lambda: command(_globals(ctx), RunArgs(
        yes=yes, containers=containers, snapshotter=snapshotter,
        restart_command=restart_command, restart_timeout=restart_timeout,
        auto_rollback=not no_auto_rollback, fmt=fmt)))


@main.command()
# The same policy as `run` (journaled for it): an export that succeeds under a policy
# `run` would refuse leaves the operator with advice that does not work.
@_containers_option
@_restart_command_option
@click.pass_context
def export(ctx: click.Context, containers: str | None, restart_command: str | None) -> None:
    """Snapshot and export only, while the daemon keeps serving (before the window)."""
    from migrate.commands.export import export as command
    from migrate.commands.prepare import PrepareArgs

    _run(ctx, lambda: command(_globals(ctx), PrepareArgs(
        containers=containers, restart_command=restart_command)))


@main.command()
# Like export: the policy and restart command are journaled for the `run` in the window.
@_containers_option
@_restart_command_option
@_snapshotter_option
@click.pass_context
def stage(ctx: click.Context, containers: str | None, restart_command: str | None,
          snapshotter: str | None) -> None:
    """Put every image into the containerd store dockerd will use, while it keeps serving
    on the legacy store (before the window): `run` then costs one restart plus verify."""
    from migrate.commands.prepare import PrepareArgs
    from migrate.commands.stage import stage as command

    _run(ctx, lambda: command(_globals(ctx), PrepareArgs(
        containers=containers, restart_command=restart_command, snapshotter=snapshotter)))


@main.command()
@_format_option("text", "json")
@click.pass_context
def status(ctx: click.Context, fmt: str) -> None:
    """Show the state of the current (or last) migration."""
    from migrate.commands.status import StatusArgs
    from migrate.commands.status import status as command

    _run(ctx, lambda: command(_globals(ctx), StatusArgs(fmt=fmt)))


@main.command()
@click.pass_context
def verify(ctx: click.Context) -> None:
    """Re-run the verification of the migrated images."""
    from migrate.commands.verify import VerifyArgs
    from migrate.commands.verify import verify as command

    _run(ctx, lambda: command(_globals(ctx), VerifyArgs()))


@main.command()
@_restart_options
@click.option("--force", is_flag=True, help="Overwrite a daemon.json changed since the switch.")
@click.option("--purge-imported", is_flag=True,
              help="Also remove the images this migration imported into the containerd store.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_result_format_option
@click.pass_context
def rollback(ctx: click.Context, restart_command: str | None, restart_timeout: float | None,
             force: bool, purge_imported: bool, yes: bool, fmt: Format) -> None:
    """Undo the current migration and bring the host back to the legacy store."""
    from migrate.commands.rollback import RollbackArgs
    from migrate.commands.rollback import rollback as command

    _run(ctx, lambda: command(_globals(ctx), RollbackArgs(
        restart_command=restart_command, restart_timeout=restart_timeout, force=force,
        purge_imported=purge_imported, yes=yes, fmt=fmt)))


@main.command()
@click.option("--prune-legacy", is_flag=True,
              help="Also delete the legacy graph-driver data (no rollback after this).")
@click.option("--remove-legacy-containers", is_flag=True,
              help="With --prune-legacy: also delete hidden legacy containers that were not "
              "recreated (asks for confirmation).")
@click.option("--keep-images", is_flag=True,
              help="After a rollback: keep the images this tool put into the containerd "
              "store (a later migration reuses them).")
@click.option("--yes", "-y", is_flag=True, help="Confirm without asking.")
@_result_format_option
@click.pass_context
def cleanup(ctx: click.Context, prune_legacy: bool, remove_legacy_containers: bool,
            keep_images: bool, yes: bool, fmt: Format) -> None:
    """After a verified migration: delete the archives (and optionally legacy data). After
    a rollback: delete the archives and the tool's images in the containerd store."""
    from migrate.commands.cleanup import CleanupArgs
    from migrate.commands.cleanup import cleanup as command

    _run(ctx, lambda: command(_globals(ctx), CleanupArgs(
        prune_legacy=prune_legacy, remove_legacy_containers=remove_legacy_containers,
        keep_images=keep_images, yes=yes, fmt=fmt)))


@main.command()
@_format_option("text", "json", "markdown")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where the throwaway engine, its archives and its store live (new or "
              "empty; removed afterwards) [default: STATE_DIR/rehearsal].")
@click.option("--keep", is_flag=True,
              help="Keep the rehearsal directory (its engine is stopped) for inspection.")
@_snapshotter_option
@click.option("--start-timeout", type=_PositiveNumber(1, "seconds"), default=60.0,
              show_default=True, help="Seconds to wait for the throwaway engine to answer.")
@click.option("--start", "start", is_flag=True,
              help="Also start the containers that run on the live daemon (networking off; "
              "they really run: a cron job or a mailer runs twice), then stop them.")
@click.option("--staged", is_flag=True,
              help="Move the images as `containerd-migrate stage` does before a `run`: "
              "`docker save` streamed into `ctr import` of the throwaway engine's "
              "containerd (no archives); the figures then give the staging rate.")
@click.pass_context
def rehearse(ctx: click.Context, fmt: str, directory: str | None, keep: bool,
             snapshotter: str | None, start_timeout: float, start: bool,
             staged: bool) -> None:
    """Rehearse the migration on a throwaway engine from this host's own binaries: every
    image saved, loaded and verified, every container created (not started). The live
    daemon keeps serving and is not changed.

    Exit code 0 when everything passed, 3 when it cannot run, 4 when an image failed its
    verification, 1 when a container was refused."""
    from migrate.commands.rehearse import RehearseArgs
    from migrate.commands.rehearse import rehearse as command

    _run(ctx, lambda: command(_globals(ctx), RehearseArgs(
        fmt=fmt, dir=Path(directory) if directory else None, keep=keep,
        snapshotter=snapshotter, start_timeout=start_timeout, start=start, staged=staged)))
