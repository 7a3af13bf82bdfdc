"""What systemd says: whether it runs this host and knows docker.service, docker.service's start
limit, and whether it refused a start.

Debian's docker.service allows 3 starts in 60 s (`StartLimitBurst=3`,
`StartLimitIntervalSec=60s`) and the boot start counts. A migration and its rollback, or an
operator who restarted docker twice while looking around, use that up: the next start
fails with the unit's `Result=start-limit-hit`, docker.socket fails with it
(`service-start-limit-hit`), and the daemon stays down until `systemctl reset-failed`
(docs/engine-facts.md, "Start limit"). The tool reads the result from `systemctl show`,
never from systemctl's prose. Parsing is pure; the probes run `systemctl`. A restart
through docker.service gets `start_limit_recovery` as its `recover` hook.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from migrate.errors import RestartFailed
from migrate.models import Frozen
from migrate.support.logconfig import get_logger

log = get_logger(__name__)

# Where systemd looks for unit files; a docker.service in any of them is "known".
UNIT_DIRS: tuple[Path, ...] = (
    Path("/etc/systemd/system"),
    Path("/run/systemd/system"),
    Path("/usr/local/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
    Path("/lib/systemd/system"),
)
# sd_booted(3): this directory exists only when systemd is PID 1.
RUNTIME_DIR = Path("/run/systemd/system")
SERVICE = "docker.service"
SOCKET = "docker.socket"
START_LIMIT_HIT = "start-limit-hit"
SYSTEMCTL_TIMEOUT = 15.0
# SD_MESSAGE_UNIT_STARTING (sd-messages.h): PID 1 logs it when a start job begins.
UNIT_STARTING_MESSAGE = "7d4958e842da4a758f6c1cdc7b36dcc5"
UNIT_PROPERTIES = (
    "LoadState", "ActiveState", "Result", "StartLimitBurst", "StartLimitIntervalUSec",
    "NRestarts", "InactiveExitTimestampMonotonic",
)  # fmt: skip
# systemd's time span units (systemd.time(7)), in microseconds.
_SPAN_UNITS = {
    "us": 1, "usec": 1, "ms": 1_000, "msec": 1_000, "s": 1_000_000, "sec": 1_000_000,
    "second": 1_000_000, "seconds": 1_000_000, "m": 60_000_000, "min": 60_000_000,
    "minute": 60_000_000, "minutes": 60_000_000, "h": 3_600_000_000, "hr": 3_600_000_000,
    "hour": 3_600_000_000, "hours": 3_600_000_000, "d": 86_400_000_000,
    "day": 86_400_000_000, "days": 86_400_000_000, "w": 604_800_000_000,
    "week": 604_800_000_000, "weeks": 604_800_000_000,
}  # fmt: skip
_SPAN_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


def booted() -> bool:
    """Whether systemd is PID 1 on this host (sd_booted(3))."""
    return RUNTIME_DIR.is_dir()


def knows_docker() -> bool:
    """Whether systemd has a docker.service unit file."""
    return any((folder / SERVICE).exists() for folder in UNIT_DIRS)


class UnitState(Frozen):
    """A unit as `systemctl show` reports it (the properties the start limit needs)."""

    unit: str
    load_state: str = ""
    active_state: str = ""
    result: str = ""
    # 0: no limit (StartLimitIntervalSec=0 or StartLimitBurst=0).
    start_limit_burst: int = 0
    start_limit_interval_us: int = 0
    # Automatic restarts (Restart=) since the unit was loaded; each one is a start too.
    n_restarts: int = 0
    # CLOCK_MONOTONIC (µs) of the last start attempt; None: never started since boot.
    last_start_us: int | None = None

    @property
    def loaded(self) -> bool:
        return self.load_state == "loaded"

    @property
    def start_limit_hit(self) -> bool:
        return self.result == START_LIMIT_HIT

    @property
    def limited(self) -> bool:
        return self.start_limit_burst > 0 and self.start_limit_interval_us > 0


def parse_timespan(text: str) -> int | None:
    """Microseconds of a systemd time span as `systemctl show` prints it ("1min 30s",
    "500ms", "60"); None for "infinity" or what is not a span."""
    text = text.strip()
    if not text or text == "infinity":
        return None
    total, pos = 0.0, 0
    for match in _SPAN_PART.finditer(text):
        if text[pos:match.start()].strip():
            return None
        unit = _SPAN_UNITS.get(match.group(2) or "s")
        if unit is None:
            return None
        total += float(match.group(1)) * unit
        pos = match.end()
    return round(total) if pos and not text[pos:].strip() else None


def parse_unit_state(unit: str, text: str) -> UnitState:
    """`systemctl show UNIT -p ...` output -> UnitState (pure; unknown values are zero)."""
    props = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)

    def number(name: str) -> int:
        value = props.get(name, "")
        return int(value) if value.isdigit() else 0

    last_start = number("InactiveExitTimestampMonotonic")
    return UnitState(
        unit=unit,
        load_state=props.get("LoadState", ""),
        active_state=props.get("ActiveState", ""),
        result=props.get("Result", ""),
        start_limit_burst=number("StartLimitBurst"),
        start_limit_interval_us=parse_timespan(props.get("StartLimitIntervalUSec", "")) or 0,
        n_restarts=number("NRestarts"),
        last_start_us=last_start or None,
    )


def seconds_since_start(state: UnitState, now_us: int) -> float | None:
    """Seconds since the unit's last start attempt (pure); None when it never started."""
    if state.last_start_us is None:
        return None
    return max(0.0, (now_us - state.last_start_us) / 1_000_000)


def systemctl_show(unit: str, properties: Sequence[str]) -> str | None:
    """`systemctl show UNIT -p P ...` output; None when systemctl cannot answer."""
    command = ["systemctl", "show", unit, "--no-pager"]
    for prop in properties:
        command += ["-p", prop]
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=SYSTEMCTL_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def unit_state(unit: str = SERVICE) -> UnitState | None:
    """What systemd says about `unit` now; None when systemctl cannot answer."""
    text = systemctl_show(unit, UNIT_PROPERTIES)
    return parse_unit_state(unit, text) if text is not None else None


def parse_journal_starts(text: str) -> int:
    """How many `journalctl -o json` entries there are (one per line; pure)."""
    return sum(1 for line in text.splitlines() if line.strip().startswith("{"))


def recent_starts(state: UnitState) -> int | None:
    """Start attempts of the unit within its start-limit interval, counted in the journal
    by systemd's structured "unit starting" message (restarts log one too; starts that
    the limit refused do not). None when the journal cannot be read."""
    seconds = max(1, state.start_limit_interval_us // 1_000_000)
    command = ["journalctl", "--no-pager", "-q", "-o", "json", f"--since=-{seconds}s",
               f"UNIT={state.unit}", f"MESSAGE_ID={UNIT_STARTING_MESSAGE}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=SYSTEMCTL_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_journal_starts(done.stdout) if done.returncode == 0 else None


def monotonic_us() -> int:
    """CLOCK_MONOTONIC in µs: the clock of systemd's *TimestampMonotonic properties."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1_000


def restarts_docker_service(argv: Sequence[str]) -> bool:
    """Whether a restart command goes through systemd's docker.service (pure):
    `systemctl restart docker[.service]`, or `service docker restart`, which systemd hosts
    redirect to systemctl. Only then is the unit's start limit the restart's business."""
    if not argv:
        return False
    program, args = Path(argv[0]).name, list(argv[1:])
    if program == "systemctl":
        return any(word in ("docker", SERVICE) for word in args)
    return program == "service" and args[:1] == ["docker"]


def reset_start_limit_if_hit(before_reset: Callable[[UnitState, tuple[str, ...]], None],
                             ) -> bool:
    """After a failed restart: when systemd refused docker.service's start because of its
    start limit, run `systemctl reset-failed` on docker.service and docker.socket, as an
    operator would, and return True (the caller restarts again). `before_reset(state,
    units)` runs first, so the reset is journaled before it happens. False when the start
    limit is not why the restart failed, or the reset failed.
    """
    state = unit_state(SERVICE)
    if state is None or not state.loaded or not state.start_limit_hit:
        return False
    socket = unit_state(SOCKET)
    units = (SERVICE, SOCKET) if socket is not None and socket.loaded else (SERVICE,)
    before_reset(state, units)
    try:
        done = subprocess.run(["systemctl", "reset-failed", *units], capture_output=True,
                              text=True, timeout=SYSTEMCTL_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def describe_limit(state: UnitState) -> str:
    """"3 starts in 1min" for people (pure)."""
    seconds = state.start_limit_interval_us / 1_000_000
    span = f"{seconds / 60:g}min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g}s"
    return f"{state.start_limit_burst} starts in {span}"


def start_limit_recovery(argv: Sequence[str], journal: Callable[[Mapping[str, Any]], None],
                         say: Callable[[str], None] | None = None,
                         ) -> Callable[[RestartFailed], bool] | None:
    """The `recover` hook of a restart through docker.service (None for other restart
    commands; see `restart_command.run_restart_with_recovery`): when systemd refused to
    start the unit because of its start limit, journal it, reset it and let the restart
    run once more, as an operator would. The restart phase and the switch's undo use it."""
    if not restarts_docker_service(argv):
        return None

    def before_reset(state: UnitState, units: tuple[str, ...]) -> None:
        limit = describe_limit(state)
        journal({"start_limit_reset": list(units), "start_limit": limit})
        log.warning("start limit hit: resetting it and restarting once more",
                    unit=state.unit, start_limit=limit, reset=list(units))
        if say is not None:
            say(f"{state.unit} refused to start: its start limit ({limit}) was hit; running "
                f"`systemctl reset-failed {' '.join(units)}` and restarting once more")

    def recover(_failure: RestartFailed) -> bool:
        return reset_start_limit_if_hit(before_reset)

    return recover
