"""Named fault-injection points, for the crash-safety and fault suites.

`CONTAINERD_MIGRATE_FAILPOINTS="after:switch=kill,export:archive-written=sigint"` makes the
process die (SIGKILL), interrupt itself (SIGINT, like Ctrl-C) or raise at that point, so a
test can stop a real run at an exact moment instead of racing it with timers. Unset in
production: `hit()` is then a dictionary lookup on an empty map.
"""

from __future__ import annotations

import os
import signal

ENV = "CONTAINERD_MIGRATE_FAILPOINTS"


class FailpointError(RuntimeError):
    pass


def _armed() -> dict[str, str]:
    spec = os.environ.get(ENV, "")
    points = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        points[name] = action or "kill"
    return points


def hit(name: str) -> None:
    action = _armed().get(name)
    if action is None:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
    else:
        raise FailpointError(f"failpoint {name} hit")
