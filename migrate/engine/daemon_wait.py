"""Waiting, after a restart, until dockerd answers in the image store we asked for.

The restart itself is the host's (host/restart_command.py); this module polls the API. A
daemon that answers is not enough: a typo in the feature name, or a `--feature` flag on
the dockerd command line, makes it start happily in the wrong store
(docs/engine-facts.md).
"""

from __future__ import annotations

import math
import time

from migrate.engine.client import PROBE_TIMEOUT, probe
from migrate.errors import MigrateError, RestartFailed
from migrate.models import EngineInfo, Store

WRONG_STORE_GRACE = 10.0
DEFAULT_RESTART_TIMEOUT = 120.0


def resolve_restart_timeout(explicit: float | None = None, recorded: object = None) -> float:
    """Seconds to wait for the daemon: the operator's, else the journaled one, else 120.

    Like the command, an explicit value wins: a journaled timeout too short for this host
    must not make every rollback fail the same way.
    """
    if explicit is not None:
        return float(explicit)
    if isinstance(recorded, int | float) and not isinstance(recorded, bool) and recorded > 0 \
            and math.isfinite(recorded):
        return float(recorded)
    return DEFAULT_RESTART_TIMEOUT


def current_info(host: str) -> EngineInfo | None:
    """What the daemon at `host` answers right now; None when it does not answer."""
    try:
        return probe(host)
    except MigrateError:
        return None


def wait_for_daemon(
    host: str, want: Store, timeout: float, poll: float = 0.25,
    wrong_store_grace: float = WRONG_STORE_GRACE,
) -> EngineInfo:
    """Poll `host` until the API answers in store `want`; RestartFailed at the deadline.

    A daemon that keeps answering in the other store for `wrong_store_grace` seconds
    fails early: the grace only covers an asynchronous restart command whose old daemon
    still answers for a moment, and waiting out the full timeout would be pure downtime.
    """
    deadline = time.monotonic() + timeout
    last_info: EngineInfo | None = None
    last_error: str = ""
    wrong_since: float | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            info = probe(host, max(0.2, min(PROBE_TIMEOUT, remaining)))
        except MigrateError as error:
            last_info, last_error, wrong_since = None, error.message, None
        else:
            if info.store == want:
                return info
            last_info = info
            wrong_since = wrong_since if wrong_since is not None else time.monotonic()
            if time.monotonic() - wrong_since >= wrong_store_grace:
                break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(poll, remaining))
    if last_info is None:
        raise RestartFailed(
            f"the Docker daemon at {host} did not answer within {timeout:.0f} s after the "
            f"restart (last error: {last_error})",
            "see why dockerd did not start in `journalctl -u docker` (or the daemon log, "
            "e.g. /var/log/docker.log); a daemon.json it rejects makes it exit at once",
        )
    raise RestartFailed(
        f"the Docker daemon at {host} came back in the {last_info.store.value} image store, "
        f"not the {want.value} store",
        _wrong_store_hint(want),
    )


def _wrong_store_hint(want: Store) -> str:
    if want is Store.CONTAINERD:
        return (
            "dockerd ignored the containerd-snapshotter feature: check daemon.json for a typo "
            "in the feature name, and the dockerd command line (systemd ExecStart and drop-ins, "
            "/etc/default/docker) for a `--feature` flag, which overrides daemon.json"
        )
    return (
        "dockerd still enables the containerd-snapshotter feature: check for a `--feature "
        "containerd-snapshotter` flag on the dockerd command line (systemd ExecStart and "
        "drop-ins) and that daemon.json is the file this dockerd reads (--config-file)"
    )

