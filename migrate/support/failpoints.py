"""Named fault-injection points, for the crash-safety and fault suites.

`CONTAINERD_MIGRATE_FAILPOINTS="after:switch=kill,export:archive-written=sigint"` makes the
process die (SIGKILL), interrupt itself (SIGINT, like Ctrl-C), raise, or pause at that
point, so a test can stop a real run at an exact moment instead of racing it with timers.

`pause` writes `<R>.reached` (the point's name and our pid) and waits until the file `R`
named by CONTAINERD_MIGRATE_FAILPOINT_RESUME exists, so a test can act on the host at that
exact moment (fill a disk, kill the daemon, start a second run) and then let the run go
on. A pause point hit again after the release does not wait again. Unset in production:
`hit()` is then a dictionary lookup on an empty map.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ENV = "CONTAINERD_MIGRATE_FAILPOINTS"
RESUME_ENV = "CONTAINERD_MIGRATE_FAILPOINT_RESUME"
PAUSE_TIMEOUT_ENV = "CONTAINERD_MIGRATE_FAILPOINT_TIMEOUT"
DEFAULT_PAUSE_TIMEOUT = 300.0
PAUSE_POLL = 0.05


class FailpointError(RuntimeError):
    pass


def _armed() -> dict[str, str]:
    spec = os.environ.get(ENV, "")
    points = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        points[name] = action or "kill"
    return points


def reached_path(resume: Path) -> Path:
    return resume.with_name(resume.name + ".reached")


def _pause(name: str) -> None:
    resume_name = os.environ.get(RESUME_ENV)
    if not resume_name:
        raise FailpointError(f"failpoint {name}=pause needs {RESUME_ENV}")
    resume = Path(resume_name)
    if resume.exists():
        return  # released already: a point hit again (the next archive) goes on
    reached_path(resume).write_text(f"{name} {os.getpid()}\n")
    timeout = float(os.environ.get(PAUSE_TIMEOUT_ENV) or DEFAULT_PAUSE_TIMEOUT)
    deadline = time.monotonic() + timeout
    while not resume.exists():
        if time.monotonic() >= deadline:
            raise FailpointError(f"failpoint {name} paused for {timeout:.0f} s; nobody "
                                 f"created {resume}")
        time.sleep(PAUSE_POLL)


def hit(name: str) -> None:
    action = _armed().get(name)
    if action is None:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
    elif action == "pause":
        _pause(name)
    else:
        raise FailpointError(f"failpoint {name} hit")
