"""A container-quota stop on the real engine: carried out only while what the quota counted is live.

One owner (unique to each test: the engine is shared) runs three containers under a quota of two,
with ``enforce: stop``. The real observer reads them, the planner warns the newest and, after the
warning's lead, plans its stop naming the two it counted and keeps (``quota_counted_ids``). Then,
before the executor acts, the owner stops or removes one of those two: the stop is skipped, the
newest keeps running, and the next pass judges the quota again. Nothing changed, one of them only
paused (a paused container still counts), or a new one started: the stop is made.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.act.executor import RealExecutor
from controller.act.report import Outcome
from controller.memory import ControllerMemory
from controller.observe import HostObserver, ObserveConfig
from controller.plan.desired import PolicySetDesired
from controller.plan.planner import plan
from controller.plan.types import Action, ActionKind, Reason, StopParams
from desired_state.load import load_spec_text
from tests.fixtures import builders as b
from tests.fixtures.act import NOW, make_plan, read_events
from tests.fixtures.docker_host import ContainerFactory
from tests.fixtures.nvml import NoGpus

pytestmark = pytest.mark.docker

SPEC = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata: {name: site}
spec:
  settings: {sigtermGrace: 1s}
  resources: {maxContainersPerUser: 2}
  resourceEnforcement: {updateLimits: false, enforce: stop}
"""


def over_the_quota(make_container: ContainerFactory, tmp_path: Path) -> tuple[str, list[Any], Action]:
    """The owner, their three containers (oldest first) and the planned stop of the newest."""
    owner = f"quota{make_container.test_id[-8:]}"
    containers = []
    for _ in range(3):
        containers.append(make_container(network_mode="none", labels={"ds01.user": owner}))
        time.sleep(1.1)  # distinct starts: the newest is the one beyond the quota
    with HostObserver(ObserveConfig(ledger_path=tmp_path / "ledger.json"), nvml=NoGpus()) as observer:
        snap = observer.observe()
    desired = PolicySetDesired(load_spec_text(SPEC))
    now = datetime.now(UTC)
    first = plan(snap, desired, ControllerMemory(), now)
    warned = [a for a in first.actions if a.kind is ActionKind.WARN_OWNER and a.target.user == owner]
    assert [a.target.container_id for a in warned] == [containers[2].id]
    # The warning delivered; the pass after its 10-minute lead plans the stop.
    due = plan(snap, desired, b.record_outcomes(first, now), now + timedelta(minutes=11))
    (stop,) = [a for a in due.actions if a.kind is ActionKind.STOP_CONTAINER and a.target.user == owner]
    assert stop.reason is Reason.CONTAINER_QUOTA_EXCEEDED
    assert stop.target.container_id == containers[2].id
    # Exactly the two the quota counted and keeps, oldest first.
    assert stop.params_as(StopParams).quota_counted_ids == (containers[0].id, containers[1].id)
    return owner, containers, stop


def status(container: Any) -> str:
    container.reload()
    return str(container.status)


@pytest.mark.parametrize("change", ["stopped", "removed"])
def test_a_counted_container_gone_since_the_plan_keeps_the_stop_from_being_made(
    real_executor: RealExecutor,
    make_container: ContainerFactory,
    docker_client: Any,
    tmp_path: Path,
    event_log_path: Path,
    change: str,
) -> None:
    owner, (oldest, middle, newest), stop = over_the_quota(make_container, tmp_path)
    # The owner brings themselves within the quota before the executor acts.
    if change == "stopped":
        docker_client.api.stop(middle.id, timeout=0)
    else:
        docker_client.api.remove_container(middle.id, force=True)

    report = real_executor.execute(make_plan(stop), ControllerMemory(), NOW)
    (outcome,) = report.outcomes
    assert outcome.outcome is Outcome.SKIPPED, outcome.detail
    assert "the quota must be judged again" in outcome.detail
    said = f"{middle.name} exited" if change == "stopped" else f"{middle.id[:12]} gone"
    assert said in outcome.detail and owner in outcome.detail
    assert status(newest) == "running" and status(oldest) == "running"
    # A skip, journaled as every re-check's skip is: no failure, no back-off, no stop of the
    # controller's on record, no intent left open.
    (event,) = read_events(event_log_path)
    assert event["event_type"] == "controller.action_skipped"
    assert event["details"]["key"] == stop.key and said in event["details"]["why"]
    assert report.memory.attempts == {} and report.memory.intents == {}
    assert newest.id not in report.memory.containers


@pytest.mark.parametrize("change", ["nothing", "one paused", "a new one started"])
def test_the_stop_is_made_while_every_counted_container_is_live(
    real_executor: RealExecutor,
    make_container: ContainerFactory,
    docker_client: Any,
    tmp_path: Path,
    event_log_path: Path,
    change: str,
) -> None:
    owner, (oldest, middle, newest), stop = over_the_quota(make_container, tmp_path)
    if change == "one paused":
        docker_client.api.pause(middle.id)  # paused still counts against the quota
    elif change == "a new one started":
        make_container(network_mode="none", labels={"ds01.user": owner})  # only adds to the count

    report = real_executor.execute(make_plan(stop), ControllerMemory(), NOW)
    (outcome,) = report.outcomes
    assert outcome.outcome is Outcome.DONE, outcome.detail
    assert status(newest) == "exited"
    assert status(oldest) == "running"
    assert status(middle) == ("paused" if change == "one paused" else "running")
    assert [e["event_type"] for e in read_events(event_log_path)] == ["container.stop"]
