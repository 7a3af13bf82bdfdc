"""Plan and rehearsal reports as text (terminal), markdown (change ticket) or JSON
(machines).

Text and markdown are built from the same tables so they never disagree; only the
formatting differs. The verdict is always the last line: operators and scripts look there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from migrate.errors import UsageError
from migrate.host.launch import containerd_endpoint, names_containerd
from migrate.preflight.checks import Check, Severity
from migrate.preflight.estimate import Estimate
from migrate.preflight.facts import FilesystemFacts
from migrate.preflight.rehearsal import RehearsalFigures, RehearsalReport
from migrate.preflight.report import PlanReport
from migrate.support.sizes import human_binary_bytes
from migrate.support.sizes import human_bytes as decimal_bytes

Format = Literal["text", "json", "markdown"]
_SEVERITY_TITLES = ((Severity.BLOCKER, "Blockers"), (Severity.WARNING, "Warnings"),
                    (Severity.INFO, "Info"))


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    # Two-column "key: value" sections print without a header row in text.
    key_value: bool = False


def human_bytes(size: int | None) -> str:
    return "unknown" if size is None else human_binary_bytes(size)


def human_duration(seconds: float) -> str:
    if seconds < 1:
        return "<1 s" if seconds > 0 else "0 s"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _fs(fs: FilesystemFacts) -> str:
    mount = f" on {fs.mount_point}" if fs.mount_point else ""
    return f"{fs.path} ({human_bytes(fs.free_bytes)} free{mount})"


def _config_status(report: PlanReport) -> str:
    config = report.daemon_config
    if not config.exists:
        return f"{config.path} (absent, will be created)"
    owner = f"mode {config.mode:04o}, {config.uid}:{config.gid}" if config.mode is not None else ""
    state = "valid" if config.valid else f"INVALID: {config.parse_error or 'bad values'}"
    link = f", symlink to {config.symlink_target}" if config.is_symlink else ""
    return f"{config.path} ({state}{link}{', ' if owner else ''}{owner})"


def _containerd(report: PlanReport) -> str:
    data = report.daemon_config.data
    if names_containerd(report.launch, data):
        # A flag or daemon.json's key: Engine 26 reports no address for either.
        socket, namespace = containerd_endpoint(report.launch, data)
        return f"{socket} (namespace {namespace})"
    return report.engine.containerd_address or "managed"


def engine_table(report: PlanReport) -> Table:
    engine, launch = report.engine, report.launch
    target = report.target_config
    rows = (
        ("host", report.hostname or "unknown"),
        ("daemon", report.daemon_host or "unknown"),
        ("engine", f"Docker Engine {engine.version} (API {engine.api_version})"),
        ("store", f"{engine.store} (driver {engine.driver})"),
        ("data root", _fs(report.data_root)),
        ("state dir", _fs(report.state_dir)),
        ("containerd", _containerd(report)),
        ("launched by", f"{launch.source}" + (f" (pid {launch.pid})" if launch.pid else "")),
        ("command", " ".join(launch.argv) or "unknown"),
        ("daemon.json", _config_status(report)),
        ("new daemon.json", json.dumps(target) if target is not None else "cannot be computed"),
    )
    return Table("Engine", ("", ""), rows, key_value=True)


def images_table(report: PlanReport) -> Table:
    rows = tuple(
        (short_id(img.id), ", ".join(img.tags) or "<none>", human_bytes(img.size),
         "yes" if img.dangling else "")
        for img in report.images
    )
    return Table(f"Images ({len(rows)})", ("ID", "TAGS", "SIZE", "DANGLING"), rows)


def containers_table(report: PlanReport) -> Table:
    rows = tuple(
        (ct.name, ct.state, ct.image, ct.compose_project or "",
         ", ".join(m.name or m.source for m in ct.mounts))
        for ct in report.containers
    )
    return Table(f"Containers ({len(rows)})", ("NAME", "STATE", "IMAGE", "COMPOSE", "MOUNTS"),
                 rows)


def volumes_table(report: PlanReport) -> Table:
    rows = tuple((v.name, v.driver, ", ".join(v.used_by)) for v in report.volumes)
    return Table(f"Volumes ({len(rows)})", ("NAME", "DRIVER", "USED BY"), rows)


def estimate_table(report: PlanReport) -> Table:
    e = report.estimate
    shared = " (shared filesystem)" if e.shared_filesystem else ""
    rows = (
        ("unique layers", human_bytes(e.unique_layer_bytes)),
        ("archives", f"{human_bytes(e.archive_bytes)} in {e.batch_count} docker save call(s)"),
        ("save staging", human_bytes(e.staging_bytes)),
        ("new store", human_bytes(e.new_store_bytes)),
        ("need on state dir", human_bytes(e.state_dir_need_bytes) + shared),
        ("need on data root", human_bytes(e.data_root_need_bytes) + shared),
        ("throughput", f"save {e.save_mbps:g} MB/s, load {e.load_mbps:g} MB/s"),
        *((name, figure(e, name)) for name in ("export", "stop", "restart", "import",
                                               "verify")),
        ("total", human_duration(e.total_seconds)),
        ("window", f"{human_duration(e.window_seconds)} (stop, restart, import, verify)"),
        ("images unusable", f"{human_duration(e.downtime_seconds)} (restart, import, "
         "verify)"),
        *((("rehearsal", e.rehearsal.text()),) if e.rehearsal is not None else ()),
    )
    return Table("Estimate", ("", ""), rows, key_value=True)


def figure(est: Estimate, name: str) -> str:
    """`12 s (bound: ...)`: an estimate's time figure with what it stands on."""
    seconds = float(getattr(est, f"{name}_seconds"))
    basis = est.bases.get(name)
    return human_duration(seconds) + (f" ({basis.label()})" if basis else "")


def _policy_args(report: PlanReport) -> str:
    if not report.containers:
        return ""
    policy = report.options.containers
    if policy == "refuse":
        # The policy that blocks this plan is no step: name the way out the README leads with
        # (the containers-present check names the others).
        policy = "recreate"
    return f" with `--containers {policy}`"


def steps_table(report: PlanReport) -> Table:
    """The commands of the change, in order, as the operator types them."""
    policy = _policy_args(report)
    est = report.estimate
    rows = (
        ("1. before the window", f"`containerd-migrate export`{policy} (about "
         f"{human_duration(est.export_seconds)}; the daemon keeps serving)"),
        ("2. in the window", "`containerd-migrate run` (uses the export's containers policy; "
         f"asks once, `--yes` in scripts; about {human_duration(est.window_seconds)})"),
        ("3. check", "`containerd-migrate status` and `containerd-migrate verify`"),
        ("4. once happy", "`containerd-migrate cleanup` (deletes the archives)"),
    )
    return Table("Steps", ("", ""), rows, key_value=True)


# What each containers policy does to the running containers, as the plan says it.
_CONTAINERS_FATE = {
    "recreate": "stopped, then created again in the containerd store and started after "
                "verification",
    "leave": "stopped and kept hidden in the legacy store (down until you recreate them, or "
             "roll back)",
    "refuse": "none: the migration refuses while containers exist (choose --containers "
              "recreate or leave)",
}


def _containers_impact(report: PlanReport) -> tuple[str, str]:
    running = [ct.name for ct in report.containers if ct.running]
    policy = report.options.containers
    if not report.containers:
        return ("containers", "none on this host")
    if policy == "refuse" or not running:
        fate = _CONTAINERS_FATE["refuse"] if policy == "refuse" else (
            "no running container" + ("; the others are created again in the containerd "
                                      "store" if policy == "recreate" else
                                      "; the others stay hidden in the legacy store"))
        return ("containers", fate)
    return ("containers stopped", f"{', '.join(running)}: {_CONTAINERS_FATE[policy]}")


def _not_carried(report: PlanReport) -> tuple[tuple[str, str], ...]:
    """What `--containers recreate` cannot carry, so nobody discovers it after the window."""
    if report.options.containers != "recreate" or not report.containers:
        return ()
    exited = [ct.name for ct in report.containers if not ct.running and ct.state != "created"]
    text = "`docker logs` of every recreated container starts empty (the old log stays " \
        "with the legacy container)"
    if exited:
        text += (f"; {', '.join(exited)} come(s) back as created, not exited (no exit code, "
                 "no finish time)")
    return (("not carried", text),)


def impact_table(report: PlanReport) -> Table:
    est = report.estimate
    rows = (
        _containers_impact(report),
        *_not_carried(report),
        ("images unusable", f"about {human_duration(est.downtime_seconds)}, from the "
         "restart until verified"),
        *((("containers down", f"about {human_duration(est.window_seconds)} each, from "
             f"its stop until recreated and started (of which the stop, at most "
             f"{human_duration(est.stop_seconds)}: {est.bases['stop'].source})"),)
          if est.stop_seconds and report.options.containers == "recreate" else ()),
        ("daemon restart", f"once, about {figure(est, 'restart')}, with "
         + (f"`{' '.join(report.restart_command)}`" if report.restart_command
            else "an unknown command (see the checks)")),
    )
    return Table("Impact", ("", ""), rows, key_value=True)


def switch_table(report: PlanReport) -> Table:
    """What the store switch brings and costs for good (`report.switch_effects`)."""
    rows = tuple((effect.kind, effect.text) for effect in report.switch)
    return Table("What the switch brings and costs", ("", ""), rows, key_value=True)


def rollback_table(report: PlanReport) -> Table:
    rows = (
        ("command", "`containerd-migrate rollback --yes` (works from any phase; "
         "automatic when the restart or the verification fails)"),
        ("restores", f"{report.daemon_config.path} byte for byte, the legacy store with "
         "every image and container, the running containers"),
        ("takes", f"about {human_duration(report.estimate.restart_seconds)} (one restart)"),
        ("until", "`containerd-migrate cleanup --prune-legacy --yes` (no rollback after it)"),
    )
    return Table("Rollback", ("", ""), rows, key_value=True)


def tables(report: PlanReport) -> tuple[Table, ...]:
    builders: tuple[Callable[[PlanReport], Table], ...] = (
        engine_table, steps_table, impact_table, switch_table, rollback_table, images_table,
        containers_table, volumes_table, estimate_table)
    return tuple(build(report) for build in builders)


# --- text ------------------------------------------------------------------------------


def _align(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _text_table(table: Table) -> list[str]:
    lines = [table.title.upper()]
    if not table.rows:
        return [*lines, "  (none)"]
    rows = table.rows if table.key_value else (table.headers, *table.rows)
    return lines + _align(rows)


def _text_check(check: Check) -> list[str]:
    lines = [f"  [{check.id}] {check.message}"]
    lines += [f"      hint: {check.hint}"] if check.hint else []
    return lines + [f"      - {detail}" for detail in check.details]


def _text_checks(checks: Sequence[Check]) -> list[str]:
    lines = ["CHECKS"]
    for severity, title in _SEVERITY_TITLES:
        group = [check for check in checks if check.severity is severity]
        if group:
            lines.append(f" {title} ({len(group)})")
            lines += [line for check in group for line in _text_check(check)]
    return lines if len(lines) > 1 else [*lines, "  (none)"]


def render_text(report: PlanReport) -> str:
    lines = [f"containerd-migrate plan: {_heading(report)} (schema {report.schema_version})",
             ""]
    for table in tables(report):
        lines += [*_text_table(table), ""]
    lines += [*_text_checks(report.checks), "", report.verdict]
    return "\n".join(lines) + "\n"


# --- markdown --------------------------------------------------------------------------


def md_escape(text: str) -> str:
    # `<none>` would be swallowed as an HTML tag, `|` would split the cell.
    for old, new in (("\\", "\\\\"), ("|", "\\|"), ("*", "\\*"), ("_", "\\_"), ("`", "\\`"),
                     ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(old, new)
    return text


_TRAILING_PUNCTUATION = ".,;:"
_PATHLIKE = re.compile(r"(?<![\w`])((?:unix|tcp|fd)://\S*|/[\w.@:+-][\w./@:+-]*)")


def _code(text: str) -> str:
    # GFM reads `\|` inside a code span in a table as a literal bar; nothing else is escaped.
    return "`" + text.replace("|", "\\|") + "`"


def md_text(text: str) -> str:
    """Markdown for a line of prose: `code spans` and paths stay literal (nothing escaped
    inside them: a backslash there would be printed), the rest is escaped."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no spans at all
        parts = [text.replace("`", "'")]
    out: list[str] = []
    for index, part in enumerate(parts):
        if index % 2:
            out.append(_code(part))
            continue
        last = 0
        for match in _PATHLIKE.finditer(part):
            # Punctuation that ends the sentence or clause is prose, not the path's.
            path = match.group(1).rstrip(_TRAILING_PUNCTUATION) or match.group(1)
            out.append(md_escape(part[last:match.start()]))
            out.append(_code(path))
            last = match.start() + len(path)
        out.append(md_escape(part[last:]))
    return "".join(out)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(md_text(cell) or " " for cell in cells) + " |"


def _md_table(table: Table) -> list[str]:
    lines = [f"## {md_escape(table.title)}", ""]
    if not table.rows:
        return [*lines, "_none_", ""]
    headers = ("Item", "Value") if table.key_value else table.headers
    lines += [_md_row(headers), "|" + "---|" * len(headers)]
    return [*lines, *(_md_row(row) for row in table.rows), ""]


def _md_checks(checks: Sequence[Check]) -> list[str]:
    lines = ["## Checks", ""]
    for severity, title in _SEVERITY_TITLES:
        group = [check for check in checks if check.severity is severity]
        if not group:
            continue
        lines += [f"### {title} ({len(group)})", ""]
        for check in group:
            lines.append(f"- **{check.id}**: {md_text(check.message)}")
            lines += [f"  - hint: {md_text(check.hint)}"] if check.hint else []
            lines += [f"  - {md_text(detail)}" for detail in check.details]
        lines.append("")
    return lines if len(lines) > 2 else [*lines, "_none_", ""]


def _heading(report: PlanReport) -> str:
    return (f"{report.hostname or 'unknown host'}, Docker Engine {report.engine.version} at "
            f"{report.daemon_host or 'unknown daemon'}; facts from {_when(report)}")


def _when(report: PlanReport) -> str:
    return report.generated_at.replace(microsecond=0).isoformat(sep=" ")


def render_markdown(report: PlanReport) -> str:
    lines = [f"# containerd-migrate plan: {md_escape(report.hostname or 'unknown host')}", "",
             f"{md_text(_heading(report))} (schema {report.schema_version}).", ""]
    for table in tables(report):
        lines += _md_table(table)
    lines += [*_md_checks(report.checks), f"**{md_escape(report.verdict)}**"]
    return "\n".join(lines) + "\n"


# --- rehearsal --------------------------------------------------------------------------


def _result(report: RehearsalReport) -> str:
    if report.blockers:
        return f"BLOCKED (exit {report.exit_code})"
    return "OK" if report.ok else f"FAILED (exit {report.exit_code})"


def _moved_rows(report: RehearsalReport, figures: RehearsalFigures) -> tuple[tuple[str, str], ...]:
    # Decimal sizes, as the rates are MB/s.
    if report.path == "staged":
        return (("stage (before the window)", f"{decimal_bytes(figures.archive_bytes)} in "
                 f"{figures.save_seconds:.1f} s ({figures.load_mbps:.0f} MB/s)"),)
    return (("save", f"{decimal_bytes(figures.archive_bytes)} in {figures.save_seconds:.1f} s"),
            ("load", f"{figures.load_seconds:.1f} s ({figures.load_mbps:.0f} MB/s)"))


def rehearsal_figures_table(report: RehearsalReport, figures: RehearsalFigures) -> Table:
    """The figures a rehearsal measured on this host, and the windows computed from them."""
    staged = figures.staged_window_seconds
    rows = (
        ("engine start (stands for the restart)", f"{figures.engine_start_seconds:.1f} s"),
        *_moved_rows(report, figures),
        ("verification", f"{figures.verify_seconds:.1f} s"),
        ("containers created", f"{figures.create_seconds:.1f} s"),
        ("`run` window", f"about {human_duration(figures.window_seconds)} (stop, restart, "
         "load, verify, create)"),
        *((("`stage` + `run` window", f"about {human_duration(staged)} (the same, the "
            "images staged before it)"),) if staged is not None else ()),
        ("`run` in all", f"about {human_duration(figures.run_seconds)} (the save, then the "
         "window)"),
    )
    return Table("Figures measured on this host", ("Figure", "Measured"), rows,
                 key_value=True)


def render_rehearsal_text(report: RehearsalReport) -> str:
    if report.blockers:
        return "\n".join(f"BLOCKER {line}" for line in report.blockers)
    lines = [f"rehearsal {report.finished_at:%Y-%m-%dT%H:%M:%SZ}: {_result(report)} "
             f"({report.images} image(s), {report.containers} container(s), engine "
             f"{report.engine_version}, binaries from {report.dockerd})"]
    if report.containers_started is not None:
        lines.append(f"started {report.containers_started} container(s) that run on the "
                     "live daemon (networking off), then stopped them")
    lines += [f"FAIL {problem}" for problem in report.failures]
    lines += [f"note {note}" for note in report.notes]
    figures = report.figures
    if figures is not None:
        moved = (f"staged {decimal_bytes(figures.archive_bytes)} in "
                 f"{figures.save_seconds:.1f} s ({figures.load_mbps:.0f} MB/s)"
                 if report.path == "staged" else
                 f"saved {decimal_bytes(figures.archive_bytes)} in {figures.save_seconds:.1f} "
                 f"s; loaded in {figures.load_seconds:.1f} s ({figures.load_mbps:.0f} MB/s)")
        lines.append(
            f"engine start {figures.engine_start_seconds:.1f} s; {moved}; verified in "
            f"{figures.verify_seconds:.1f} s; containers created in "
            f"{figures.create_seconds:.1f} s")
        lines.append(f"a `run` would take about {figures.run_seconds:.0f} s, of which about "
                     f"{figures.window_seconds:.0f} s with the containers down and the "
                     "images unusable"
                     + (f" (about {figures.staged_window_seconds:.0f} s after a `stage`)"
                        if figures.staged_window_seconds is not None else ""))
    return "\n".join(lines)


def _md_list(title: str, items: Sequence[str]) -> list[str]:
    if not items:
        return []
    return [f"### {md_escape(title)} ({len(items)})", "",
            *(f"- {md_text(item)}" for item in items), ""]


def render_rehearsal_markdown(report: RehearsalReport) -> str:
    """The change ticket's rehearsal section: the result, the figures, what failed."""
    lines = [f"## Rehearsal: {_result(report)}", ""]
    if report.blockers:
        return "\n".join([*lines, *_md_list("Blockers", report.blockers)])
    started = (f", {report.containers_started} started and stopped again"
               if report.containers_started is not None else "")
    lines += [md_text(f"{report.hostname or 'This host'}, rehearsed {report.when()} on a "
                      f"throwaway Docker Engine {report.engine_version} from the host's own "
                      f"binaries ({report.dockerd}): {report.images} image(s) "
                      f"{'staged' if report.path == 'staged' else 'saved, loaded'} "
                      f"and verified, {report.containers_created} of {report.containers} "
                      f"container(s) created{started}; the live daemon kept serving."), ""]
    if report.figures is not None:
        table = rehearsal_figures_table(report, report.figures)
        lines += [f"### {md_escape(table.title)}", "", _md_row(table.headers),
                  "|" + "---|" * len(table.headers), *(_md_row(row) for row in table.rows),
                  ""]
    lines += _md_list("Failures", report.failures)
    lines += _md_list("Notes", report.notes)
    return "\n".join(lines)


def render_rehearsal(report: RehearsalReport, fmt: Format = "text") -> str:
    if fmt == "json":
        return report.to_json()
    if fmt == "markdown":
        return render_rehearsal_markdown(report)
    if fmt == "text":
        return render_rehearsal_text(report)
    raise UsageError(f"unknown report format {fmt!r}", hint="use text, json or markdown")


def render(report: PlanReport, fmt: Format = "text") -> str:
    if fmt == "json":
        return report.model_dump_json(indent=2) + "\n"
    if fmt == "markdown":
        return render_markdown(report)
    if fmt == "text":
        return render_text(report)
    raise UsageError(f"unknown report format {fmt!r}", hint="use text, json or markdown")
