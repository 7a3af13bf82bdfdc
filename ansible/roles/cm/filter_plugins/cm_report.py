"""Filters that turn containerd-migrate's JSON output into fleet records and reports.

Everything here reads only what the CLI prints as JSON (`plan`, `status`, `run`, `rollback`
and `cleanup` with `--format json`; the documents' schema is in the README), the
`error:`/`hint:` lines on stderr and the exit codes it documents; nothing imports the tool
itself, so the control node does not need it. Human text (the output of `export`/`stage`)
is only shown in the reports, never read for a decision.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

EXIT_CODES: dict[int, tuple[str, str]] = {
    0: ("ok", "done / ready"),
    1: ("error", "error"),
    2: ("usage", "usage (bad option, no confirmation)"),
    3: ("blocked", "blocked by checks, or daemon.json drifted (rollback without --force)"),
    4: ("verify_failed", "verification failed"),
    5: ("unreachable", "Docker daemon unreachable"),
    6: ("config_invalid", "daemon.json invalid or unusable"),
    7: ("state_invalid", "state dir or journal unusable"),
    8: ("locked", "another run holds the lock"),
    9: ("disk_full", "disk full"),
    10: ("rolled_back", "the run failed and was rolled back automatically"),
    130: ("interrupted", "interrupted; run again to resume"),
}
LOCKED = 8
# Phases during which the daemon or its containers are not serving (quiesce ... verify).
WINDOW_PHASES = ("quiesce", "switch", "restart", "import", "verify")
# Outcomes of migrate.yml that fail the host, so that `max_fail_percentage` stops the rollout.
FAILED_OUTCOMES = ("rolled_back", "failed")
# A canary in one of these lets the batches start (a re-run after a stop finds it migrated).
DONE_OUTCOMES = ("migrated", "already_migrated")
ROLLOUT_OUTCOMES = ("migrated", "already_migrated", "rolled_back", "failed", "skipped",
                    "not_started")
ALREADY_DONE = "already-containerd"


def exit_name(rc: Any) -> str:
    """Short name of a containerd-migrate exit code (`rolled_back` for 10)."""
    code = _int(rc)
    if code is None:
        return "no_exit_code"
    return EXIT_CODES.get(code, ("exit_" + str(code), ""))[0]


def exit_meaning(rc: Any) -> str:
    """`exit 10: the run failed and was rolled back automatically`."""
    code = _int(rc)
    if code is None:
        return "did not run"
    return f"exit {code}: " + EXIT_CODES.get(code, ("", "unknown exit code"))[1]


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _json(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def cli_error(result: Mapping[str, Any] | None) -> dict[str, str]:
    """The `error:` and `hint:` lines the CLI prints on stderr (or Ansible's own message)."""
    result = result or {}
    error, hint = [], []
    for line in str(result.get("stderr") or "").splitlines():
        if line.startswith("error: "):
            error.append(line.removeprefix("error: "))
        elif line.startswith("hint: "):
            hint.append(line.removeprefix("hint: "))
        elif line.startswith("{"):
            event = _json(line)
            if event and event.get("level") in ("error", "critical"):
                error.append(str(event.get("event", "")))
    if not error and result.get("unreachable"):
        error.append("host unreachable: " + str(result.get("msg", "")))
    failed = _int(result.get("rc")) not in (0, None) or result.get("failed")
    if not error and failed and str(result.get("stderr") or "").strip():
        error.append(str(result["stderr"]).strip().splitlines()[-1])
    if not error and failed and result.get("msg"):
        error.append(str(result["msg"]))
    return {"error": " ".join(error), "hint": " ".join(hint)}


def duration_seconds(delta: Any) -> float | None:
    """Seconds of an Ansible `delta` ("0:00:02.552013")."""
    if not isinstance(delta, str) or not delta:
        return None
    match = re.fullmatch(r"(?:(\d+) days?, )?(\d+):(\d+):(\d+(?:\.\d+)?)", delta.strip())
    if not match:
        return None
    days, hours, minutes, seconds = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return round(total, 1)


def human_bytes(value: Any) -> str:
    number = _int(value)
    if number is None:
        return "-"
    size = float(number)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover


def human_seconds(value: Any) -> str:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def md_cell(value: Any) -> str:
    """Text safe inside a markdown table cell."""
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")


def now_utc() -> str:
    # timezone.utc, not datetime.UTC: ansible-core 2.17 controllers may run Python 3.10.
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: UP017


def host_facts(hostvars: Mapping[str, Any], names: Iterable[str], key: str) -> list[Any]:
    """hostvars[name][key] for each name, None where the host has no such variable."""
    found = []
    for name in names:
        try:
            value = hostvars[name][key]
        except (KeyError, TypeError):
            value = None
        found.append(value)
    return found


# --- plan --------------------------------------------------------------------------------


def _checks(plan: Mapping[str, Any], severity: str) -> list[dict[str, Any]]:
    return [
        {
            "id": str(check.get("id", "")),
            "message": str(check.get("message", "")),
            "hint": str(check.get("hint", "")),
            "details": [str(d) for d in check.get("details") or []],
        }
        for check in plan.get("checks") or []
        if check.get("severity") == severity
    ]


def _disk(plan: Mapping[str, Any], key: str, need_key: str) -> dict[str, Any]:
    place = plan.get(key) or {}
    estimate = plan.get("estimate") or {}
    free, need = place.get("free_bytes"), estimate.get(need_key)
    return {
        "path": place.get("path"),
        "mount_point": place.get("mount_point"),
        "free_bytes": free,
        "need_bytes": need,
        "enough": None if free is None or need is None else free >= need,
    }


def plan_record(result: Mapping[str, Any] | None, host: str) -> dict[str, Any]:
    """One host's line of the fleet report, from the registered `plan --format json` task."""
    result = result or {}
    rc = _int(result.get("rc"))
    plan = _json(result.get("stdout"))
    record: dict[str, Any] = {
        "host": host,
        "exit_code": rc,
        "exit": exit_meaning(rc),
        **cli_error(result),
    }
    if result.get("unreachable"):
        record["state"] = "unreachable"
    elif plan is None:
        record["state"] = "error"
    elif plan.get("ready") and rc == 0:
        record["state"] = "ready"
    elif any(c["id"] == ALREADY_DONE for c in _checks(plan, "blocker")):
        # On the containerd store already: nothing to migrate, whatever else the plan says
        # about a migration that will not happen.
        record["state"] = "migrated"
    else:
        record["state"] = "blocked"
    if plan is None:
        record.update(blockers=[], warnings=[], infos=[], verdict=record["error"] or record["exit"])
        return record
    engine = plan.get("engine") or {}
    images = plan.get("images") or []
    containers = plan.get("containers") or []
    estimate = plan.get("estimate") or {}
    record.update(
        verdict=plan.get("verdict", ""),
        blockers=_checks(plan, "blocker"),
        warnings=_checks(plan, "warning"),
        infos=_checks(plan, "info"),
        engine={
            "version": engine.get("version"),
            "store": engine.get("store"),
            "driver": engine.get("driver"),
        },
        containers_option=(plan.get("options") or {}).get("containers"),
        images=len(images),
        tags=sum(len(image.get("tags") or []) for image in images),
        dangling=sum(1 for image in images if not image.get("tags")),
        containers=len(containers),
        running=sum(1 for c in containers if c.get("state") == "running"),
        volumes=len(plan.get("volumes") or []),
        estimate={
            key: estimate.get(key)
            for key in (
                "unique_layer_bytes", "archive_bytes", "new_store_bytes", "export_seconds",
                "restart_seconds", "import_seconds", "verify_seconds", "total_seconds",
                "downtime_seconds",
            )
        },
        disk={
            "shared_filesystem": estimate.get("shared_filesystem"),
            "state_dir": _disk(plan, "state_dir", "state_dir_need_bytes"),
            "data_root": _disk(plan, "data_root", "data_root_need_bytes"),
        },
        generated_at=plan.get("generated_at"),
    )
    return record


def _sum(records: Iterable[Mapping[str, Any]], *path: str) -> float:
    total = 0.0
    for record in records:
        value: Any = record
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, int | float):
            total += value
    return total


def _missing(host: str, what: str) -> dict[str, Any]:
    return {"host": host, "state": "error", "exit_code": None, "exit": "did not run",
            "error": f"no {what} recorded: the host failed before it", "hint": "",
            "blockers": [], "warnings": [], "infos": [], "verdict": ""}  # fmt: skip


def plan_fleet(
    records: Iterable[Mapping[str, Any] | None], names: Iterable[str] | None = None, **meta: Any
) -> dict[str, Any]:
    """The fleet report: every host, totals, hosts grouped by state and by blocker.

    `records` are plan_record() results in the order of `names` (None: the host has none).
    """
    given = list(records)
    order = list(names) if names is not None else [r["host"] for r in given if r]
    hosts = [dict(r) if r else _missing(h, "plan") for h, r in zip(order, given, strict=False)]
    by_state: dict[str, list[str]] = {"ready": [], "blocked": [], "migrated": [], "error": [],
                                      "unreachable": []}  # fmt: skip
    by_blocker: dict[str, dict[str, Any]] = {}
    by_warning: dict[str, dict[str, Any]] = {}
    for record in hosts:
        by_state.setdefault(record["state"], []).append(record["host"])
        if record["state"] == "migrated":
            continue  # listed apart: its checks are about a migration that will not happen
        for key, group in (("blockers", by_blocker), ("warnings", by_warning)):
            for check in record.get(key) or []:
                entry = group.setdefault(
                    check["id"], {"id": check["id"], "hint": check["hint"], "hosts": []}
                )
                entry["hosts"].append({"host": record["host"], "message": check["message"]})
    if by_state["error"] or by_state["unreachable"]:
        by_blocker_errors = by_state["error"] + by_state["unreachable"]
        by_blocker["plan-failed"] = {
            "id": "plan-failed",
            "hint": "the plan did not run to the end: see the host's error",
            "hosts": [
                {"host": r["host"], "message": r.get("error") or r.get("exit")}
                for r in hosts
                if r["host"] in by_blocker_errors
            ],
        }
    # A migrated host moves nothing: its estimates would only inflate the fleet's.
    planned = [r for r in hosts if "estimate" in r and r["state"] != "migrated"]
    totals = {
        "hosts": len(hosts),
        **{state: len(names) for state, names in by_state.items()},
        "images": int(_sum(planned, "images")),
        "tags": int(_sum(planned, "tags")),
        "containers": int(_sum(planned, "containers")),
        "running": int(_sum(planned, "running")),
        "volumes": int(_sum(planned, "volumes")),
        "archive_bytes": int(_sum(planned, "estimate", "archive_bytes")),
        "state_dir_need_bytes": int(_sum(planned, "disk", "state_dir", "need_bytes")),
        "downtime_seconds": round(_sum(planned, "estimate", "downtime_seconds"), 1),
        "total_seconds": round(_sum(planned, "estimate", "total_seconds"), 1),
        "longest_downtime_seconds": round(
            max((r["estimate"].get("downtime_seconds") or 0 for r in planned), default=0), 1
        ),
    }
    return {
        "kind": "containerd-migrate fleet plan",
        "generated_at": now_utc(),
        **meta,
        "totals": totals,
        "by_state": by_state,
        "by_blocker": sorted(by_blocker.values(), key=lambda g: (-len(g["hosts"]), g["id"])),
        "by_warning": sorted(by_warning.values(), key=lambda g: (-len(g["hosts"]), g["id"])),
        "hosts": hosts,
    }


# --- migrate -----------------------------------------------------------------------------


def window_seconds(status: Mapping[str, Any] | None) -> float | None:
    """Seconds the host spent in quiesce..verify (its maintenance window) per `status`."""
    phases = (status or {}).get("phases") or []
    seconds = [p.get("seconds") for p in phases if p.get("name") in WINDOW_PHASES]
    known = [s for s in seconds if isinstance(s, int | float)]
    return round(sum(known), 1) if known else None


# The schema of the run/rollback/cleanup documents these filters read (README).
SCHEMA_VERSION = 1


def command_document(result: Mapping[str, Any] | None) -> dict[str, Any]:
    """The JSON document of a `run`/`rollback`/`cleanup --format json` task; {} when it
    printed none (it did not start, or a usage error) or one of another schema version."""
    doc = _json((result or {}).get("stdout"))
    if doc is None or doc.get("schema_version") != SCHEMA_VERSION:
        return {}
    return doc


def command_result(result: Mapping[str, Any] | None) -> str:
    """The document's `result` (`rolled_back`, `nothing_to_do`, ...), "" without one."""
    return str(command_document(result).get("result") or "")


def document_lines(doc: Mapping[str, Any]) -> list[str]:
    """A document as lines for a report: what the command said, then what it did."""
    undone = doc.get("automatic_rollback") or doc
    return [*(str(m) for m in doc.get("messages") or []),
            *(f"did: {line}" for line in undone.get("did") or []),
            *(f"FAILED: {line}" for line in undone.get("failed") or []),
            *(f"ok: {line}" for line in undone.get("checked") or []),
            *(f"PROBLEM: {line}" for line in undone.get("problems") or [])]  # fmt: skip


def _output(result: Mapping[str, Any], limit: int = 60) -> list[str]:
    doc = command_document(result)
    text = "\n".join(document_lines(doc)) if doc else str(result.get("stdout") or "")
    lines = [line.rstrip() for line in text.splitlines()]
    lines = [line for line in lines if line.strip()]
    if len(lines) <= limit:
        return lines
    return [*lines[: limit - 1], f"... {len(lines) - limit + 1} more"]


def migrate_record(
    host: str,
    plan: Mapping[str, Any] | None,
    prepare: Mapping[str, Any] | None,
    run: Mapping[str, Any] | None,
    verify: Mapping[str, Any] | None,
    rollback: Mapping[str, Any] | None,
    status: Mapping[str, Any] | None,
    wave: str = "rollout",
    canary_required: bool = True,
) -> dict[str, Any]:
    """What happened to one host in migrate.yml, with its outcome.

    outcome: migrated | already_migrated (plan: already-containerd, nothing to do) |
    rolled_back (a failure: the tool restored the host) | failed (the host may be half way: see
    `status`) | skipped (plan not ready, blocked at run time, or locked).
    `failed` is what fails the host in the play: rolled_back and failed always, and a canary
    that did not migrate when `canary_required` (the batches must not go first).
    """
    plan_info = plan_record(plan, host)
    state = _json((status or {}).get("stdout"))
    record: dict[str, Any] = {
        "host": host,
        "wave": wave,
        "plan": plan_info["state"],
        "blockers": [b["id"] for b in plan_info.get("blockers") or []],
        "steps": {},
        "migration_id": (state or {}).get("migration_id"),
        "journal_outcome": (state or {}).get("outcome"),
        "window_seconds": window_seconds(state),
        "run_seconds": None,
    }
    for name, result in (("prepare", prepare), ("run", run), ("verify", verify),
                         ("rollback", rollback)):  # fmt: skip
        if result and _ran(result):
            record["steps"][name] = {
                "exit_code": _int(result["rc"]),
                "exit": exit_meaning(result["rc"]),
                "seconds": duration_seconds(result.get("delta")),
                "attempts": result.get("attempts", 1),
                # run/rollback: the document's result ("" for a step without one).
                "result": command_result(result),
                **cli_error(result),
                "output": _output(result),
            }
    if "run" in record["steps"]:
        record["run_seconds"] = record["steps"]["run"]["seconds"]
    outcome, reason = _migrate_outcome(plan_info, record["steps"])
    failed = outcome in FAILED_OUTCOMES
    if wave == "canary" and outcome not in DONE_OUTCOMES and canary_required:
        failed = True
        reason += "; the canary did not migrate, so the batches do not start"
    record.update(outcome=outcome, reason=reason, failed=failed)
    return record


def _ran(result: Mapping[str, Any]) -> bool:
    return not result.get("skipped") and "rc" in result


def _migrate_outcome(
    plan: Mapping[str, Any], steps: Mapping[str, Mapping[str, Any]]
) -> tuple[str, str]:
    if plan["state"] == "migrated":
        return "already_migrated", "already on the containerd store: nothing to do"
    if plan["state"] != "ready":
        blockers = ", ".join(b["id"] for b in plan.get("blockers") or [])
        why = f"blocked: {blockers}" if blockers else f"{plan['exit']}: {plan.get('error')}"
        return "skipped", f"plan not ready ({why})"
    for name in ("prepare", "run"):
        step = steps.get(name)
        if step is None:
            continue
        code = step["exit_code"]
        detail = step["error"] or step["exit"]
        if code == LOCKED:
            return "skipped", f"{name}: locked by another run after {step['attempts']} attempt(s)"
        if code == 3:
            return "skipped", f"{name} blocked: {detail}"
        if code == 10:
            return "rolled_back", f"{name}: {detail}"
        if code != 0:
            return "failed", f"{name}: {step['exit']}: {detail}"
    if "run" not in steps:
        return "failed", "run did not start"
    verify = steps.get("verify")
    if verify is not None and verify["exit_code"] != 0:
        rollback = steps.get("rollback")
        detail = verify["error"] or verify["exit"]
        if rollback is not None and rollback["exit_code"] == 0:
            return "rolled_back", f"verify: {detail}; rolled back by the play"
        return "failed", f"verify: {verify['exit']}: {detail}"
    return "migrated", "verified on the containerd store"


def _wave_name(wave: str) -> str:
    return "the canary" if wave == "canary" else wave


def _percent(value: Any) -> float:
    text = str(value if value is not None else 0).strip().rstrip("%")
    try:
        return float(text)
    except ValueError:
        return 0.0


def migrate_summary(
    records: Iterable[Mapping[str, Any] | None],
    names: Iterable[str],
    *,
    canary: Iterable[str] = (),
    batch: Iterable[str] = (),
    wave: str = "rollout",
    max_fail_percentage: Any = 0,
    **meta: Any,
) -> dict[str, Any]:
    """The rollout summary after the current wave: every host, attempted or not.

    `stopped` says whether the rollout stops after this wave, as Ansible decides it: more than
    max_fail_percentage of the wave's hosts failed (the canary: any), or all of them did.
    """
    order = list(names)
    by_host = {r["host"]: dict(r) for r in records if r}
    wave_hosts = list(batch)
    failed_now = [h for h in wave_hosts if by_host.get(h, {}).get("failed")]
    limit = 0.0 if wave == "canary" else _percent(max_fail_percentage)
    stopped = bool(wave_hosts) and bool(failed_now) and (
        len(failed_now) * 100.0 / len(wave_hosts) > limit or len(failed_now) == len(wave_hosts)
    )
    rows = []
    for host in order:
        row = by_host.get(host)
        if row is None:
            why = (f"the rollout stopped after {_wave_name(wave)}" if stopped
                   else "pending: a later batch")  # fmt: skip
            row = {"host": host, "wave": None, "outcome": "not_started", "reason": why,
                   "failed": False, "steps": {}, "migration_id": None, "journal_outcome": None,
                   "window_seconds": None, "run_seconds": None}  # fmt: skip
        rows.append(row)
    groups = {
        outcome: [r["host"] for r in rows if r["outcome"] == outcome]
        for outcome in ROLLOUT_OUTCOMES
    }
    if stopped:
        state = f"stopped after {_wave_name(wave)}: " + ", ".join(
            f"{h} {by_host[h]['outcome'].replace('_', ' ')}" for h in failed_now
        )
    elif groups["not_started"]:
        state = f"in progress: {_wave_name(wave)} done"
    else:
        state = "complete"
    return {
        "kind": "containerd-migrate rollout",
        "generated_at": now_utc(),
        **meta,
        "canary": list(canary),
        "last_wave": wave,
        "last_wave_hosts": wave_hosts,
        "max_fail_percentage": limit,
        "stopped": stopped,
        "state": state,
        "counts": {outcome: len(hosts) for outcome, hosts in groups.items()},
        "outcomes": groups,
        "hosts": rows,
    }


# --- prepare -----------------------------------------------------------------------------


def prepare_record(
    host: str,
    plan: Mapping[str, Any] | None,
    prepare: Mapping[str, Any] | None,
    command: str = "export",
) -> dict[str, Any]:
    """One host of prepare.yml: prepared | skipped (not ready, blocked, locked) | failed."""
    plan_info = plan_record(plan, host)
    record: dict[str, Any] = {"host": host, "command": command, "plan": plan_info["state"],
                              "blockers": [b["id"] for b in plan_info.get("blockers") or []],
                              "exit_code": None, "exit": "did not run", "seconds": None,
                              "error": "", "hint": "", "output": []}  # fmt: skip
    if prepare and _ran(prepare):
        record.update(exit_code=_int(prepare["rc"]), exit=exit_meaning(prepare["rc"]),
                      seconds=duration_seconds(prepare.get("delta")), output=_output(prepare),
                      attempts=prepare.get("attempts", 1), **cli_error(prepare))  # fmt: skip
    outcome, reason = _migrate_outcome(plan_info, {"prepare": record} if prepare and
                                       _ran(prepare) else {})  # fmt: skip
    if outcome == "failed" and record["exit_code"] == 0:
        outcome, reason = "prepared", f"{command} done"
    record.update(outcome=outcome, reason=reason, failed=outcome == "failed")
    record["line"] = f"{host}: {outcome}" + (
        f", {human_seconds(record['seconds'])}" if record["seconds"] is not None else ""
    ) + ("" if outcome == "prepared" else f" ({reason})")
    return record


def prepare_summary(
    records: Iterable[Mapping[str, Any] | None], names: Iterable[str], **meta: Any
) -> dict[str, Any]:
    order = list(names)
    rows = [dict(r) if r else {**_missing(h, "prepare"), "outcome": "failed", "failed": True,
                               "line": f"{h}: failed (no outcome recorded)"}
            for h, r in zip(order, records, strict=False)]  # fmt: skip
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    summary = {"kind": "containerd-migrate fleet prepare", "generated_at": now_utc(), **meta,
               "counts": counts}  # fmt: skip
    if meta.get("command") == "rehearse":
        summary["totals"] = rehearsal_totals(rows)
    return {**summary, "hosts": rows}


# --- rehearse ----------------------------------------------------------------------------

# The keys of a `rehearse --format json` report the fleet report carries per host (README).
REHEARSAL_KEYS = ("ok", "exit_code", "finished_at", "hostname", "engine_version", "dockerd",
                  "binaries", "path", "images", "containers", "containers_created",
                  "containers_started",
                  "failures", "notes", "blockers", "dir", "leftovers_removed", "figures")
# A report without `schema_version` is the first one (version 2 added keys, hostname among them);
# a later version is not read.
REHEARSAL_SCHEMA_VERSIONS = (None, 1, 2)


def rehearsal_document(result: Mapping[str, Any] | None) -> dict[str, Any]:
    """The report of a `rehearse --format json` task; {} when it printed none (it did not
    start: an error before the rehearsal, a usage error) or one of another schema."""
    doc = _json((result or {}).get("stdout"))
    if doc is None or doc.get("schema_version") not in REHEARSAL_SCHEMA_VERSIONS:
        return {}
    return {key: doc.get(key) for key in REHEARSAL_KEYS}


def _list(value: Any) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def _rehearse_outcome(record: Mapping[str, Any], doc: Mapping[str, Any]) -> tuple[str, str]:
    """rehearsed | skipped (blocked, locked) | failed (what failed, or the error)."""
    code, detail = record["exit_code"], record["error"] or record["exit"]
    if code == 0 and doc.get("ok"):
        return "rehearsed", "rehearsal passed"
    if code == LOCKED:
        return "skipped", f"rehearse: locked by another run after {record['attempts']} attempt(s)"
    if code == 3:
        return "skipped", "rehearse blocked: " + ("; ".join(_list(doc.get("blockers"))) or detail)
    failures = _list(doc.get("failures"))
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        return "failed", f"rehearsal failed, {record['exit']}: {failures[0]}{more}"
    if code is None:
        return "failed", detail
    return "failed", f"rehearse: {record['exit']}: {detail}"


def rehearse_record(host: str, rehearse: Mapping[str, Any] | None) -> dict[str, Any]:
    """One host of prepare.yml with cm_prepare=rehearse, from the registered `rehearse
    --format json` task: its report (`rehearsal`, None when it printed none) and outcome."""
    doc = rehearsal_document(rehearse) if rehearse and _ran(rehearse) else {}
    record: dict[str, Any] = {"host": host, "command": "rehearse", "exit_code": None,
                              "exit": "did not run", "seconds": None, "attempts": 0,
                              "error": "", "hint": "", "rehearsal": doc or None}  # fmt: skip
    if rehearse and _ran(rehearse):
        record.update(exit_code=_int(rehearse["rc"]), exit=exit_meaning(rehearse["rc"]),
                      seconds=duration_seconds(rehearse.get("delta")),
                      attempts=rehearse.get("attempts", 1), **cli_error(rehearse))
    elif rehearse:
        record.update(cli_error(rehearse))
    outcome, reason = _rehearse_outcome(record, doc)
    figures = doc.get("figures") or {}
    record.update(outcome=outcome, reason=reason, failed=outcome == "failed",
                  output=[*(f"FAIL {line}" for line in _list(doc.get("failures"))),
                          *(f"BLOCKER {line}" for line in _list(doc.get("blockers"))),
                          *(f"note {line}" for line in _list(doc.get("notes")))])
    shown = (f", window {human_seconds(figures.get('window_seconds'))}, run "
             f"{human_seconds(figures.get('run_seconds'))}" if figures else "")
    record["line"] = f"{host}: {outcome}{shown}" + (
        "" if outcome == "rehearsed" else f" ({reason})")
    return record


def rehearsal_totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The fleet's figures over the hosts whose rehearsal ran to its report."""
    ran = [r["rehearsal"] for r in rows if (r.get("rehearsal") or {}).get("figures")]

    def longest(key: str) -> float:
        return round(max((_number(d["figures"].get(key)) for d in ran), default=0.0), 1)

    return {
        "hosts_rehearsed": len(ran),
        "hosts_with_failures": sum(1 for d in ran if d.get("failures")),
        "failures": sum(len(_list(d.get("failures"))) for d in ran),
        "images": int(_sum(ran, "images")),
        "containers": int(_sum(ran, "containers")),
        "containers_created": int(_sum(ran, "containers_created")),
        "archive_bytes": int(_sum(ran, "figures", "archive_bytes")),
        "save_seconds": round(_sum(ran, "figures", "save_seconds"), 1),
        "load_seconds": round(_sum(ran, "figures", "load_seconds"), 1),
        "window_seconds": round(_sum(ran, "figures", "window_seconds"), 1),
        "run_seconds": round(_sum(ran, "figures", "run_seconds"), 1),
        "longest_window_seconds": longest("window_seconds"),
        "longest_run_seconds": longest("run_seconds"),
    }


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


# --- rollback ----------------------------------------------------------------------------


def rollback_record(
    host: str,
    before: Mapping[str, Any] | None,
    rollback: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """What `rollback --yes --format json` restored on one host, from its document and
    `status` around it."""
    status_before = _json((before or {}).get("stdout")) or {}
    status_after = _json((after or {}).get("stdout")) or {}
    rollback = rollback or {}
    rc = _int(rollback.get("rc"))
    doc = command_document(rollback)
    if rc == 0 and doc.get("result") == "nothing_to_do":
        outcome = "nothing_to_do"
    elif rc == 0:
        outcome = "restored"
    elif rc == 3:
        outcome = "drifted"
    elif rc == LOCKED:
        outcome = "locked"
    else:
        outcome = "failed"
    messages = [str(line) for line in doc.get("messages") or []]
    if doc.get("reason"):
        messages.append(str(doc["reason"]))
    return {
        "host": host,
        "outcome": outcome,
        "failed": outcome in ("failed", "drifted", "locked"),
        "exit_code": rc,
        "exit": exit_meaning(rc),
        **cli_error(rollback),
        "migration_id": (doc.get("migration_id") or status_after.get("migration_id")
                         or status_before.get("migration_id")),
        "outcome_before": status_before.get("outcome"),
        "outcome_after": status_after.get("outcome"),
        "would_undo": status_before.get("rollback_would_undo") or [],
        "restored": [str(line) for line in doc.get("did") or []],
        "checked": [str(line) for line in doc.get("checked") or []],
        "not_undone": [str(line) for line in doc.get("failed") or []],
        "problems": [str(line) for line in doc.get("problems") or []],
        "messages": messages,
        "seconds": duration_seconds(rollback.get("delta")),
        "attempts": rollback.get("attempts", 1),
    }


def rollback_summary(
    records: Iterable[Mapping[str, Any] | None], names: Iterable[str] | None = None, **meta: Any
) -> dict[str, Any]:
    given = list(records)
    order = list(names) if names is not None else [r["host"] for r in given if r]
    rows = [
        dict(r) if r else {**_missing(h, "rollback"), "outcome": "failed", "failed": True,
                           "restored": [], "checked": [], "not_undone": [], "problems": [],
                           "messages": [], "migration_id": None,
                           "outcome_before": None, "outcome_after": None, "seconds": None}
        for h, r in zip(order, given, strict=False)
    ]  # fmt: skip
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    return {
        "kind": "containerd-migrate fleet rollback",
        "generated_at": now_utc(),
        **meta,
        "counts": counts,
        "hosts": rows,
    }


class FilterModule:
    """containerd-migrate report filters (`cm_*`)."""

    def filters(self) -> dict[str, Any]:
        return {
            "cm_host_facts": host_facts,
            "cm_exit_name": exit_name,
            "cm_exit_meaning": exit_meaning,
            "cm_cli_error": cli_error,
            "cm_result": command_result,
            "cm_duration_seconds": duration_seconds,
            "cm_human_bytes": human_bytes,
            "cm_human_seconds": human_seconds,
            "cm_md": md_cell,
            "cm_plan_record": plan_record,
            "cm_plan_fleet": plan_fleet,
            "cm_window_seconds": window_seconds,
            "cm_migrate_record": migrate_record,
            "cm_migrate_summary": migrate_summary,
            "cm_prepare_record": prepare_record,
            "cm_prepare_summary": prepare_summary,
            "cm_rehearse_record": rehearse_record,
            "cm_rollback_record": rollback_record,
            "cm_rollback_summary": rollback_summary,
        }
