"""The restore check after a rollback, over built container records (pure part)."""

from __future__ import annotations

import pytest

from migrate.models import ContainerRecord
from migrate.phases.rollback_check import containers_restored

pytestmark = pytest.mark.unit

WEB = ContainerRecord(id="c1", name="web", image="acme/app:1", image_id="sha256:a",
                      state="running")
TASK = ContainerRecord(id="c2", name="svc.1.abc", image="acme/app:1", image_id="sha256:a",
                       state="running", labels={"com.docker.swarm.task.id": "abc"})


def test_every_container_back_and_running_is_fine() -> None:
    ok, problems = containers_restored([WEB], [WEB])
    assert problems == [] and ok == ["all 1 container(s) present"]


def test_a_missing_or_stopped_container_is_a_problem() -> None:
    assert containers_restored([WEB], [])[1] == ["container(s) missing: web"]
    stopped = WEB.model_copy(update={"state": "exited"})
    assert containers_restored([WEB], [stopped])[1] == [
        "container(s) running before but not now: web"]


def test_swarm_tasks_are_left_to_swarm() -> None:
    # Swarm replaced the task stopped for the switch: the old one is gone, and that is swarm's.
    ok, problems = containers_restored([WEB, TASK], [WEB])
    assert problems == []
    assert ok == ["all 1 container(s) present",
                  "swarm task(s) left to swarm, not checked: svc.1.abc"]
    stopped = TASK.model_copy(update={"state": "exited"})
    assert containers_restored([TASK], [stopped])[1] == []
