"""An interrupted stop that the next pass resumes is recorded as the controller's stop.

The daemon died in `docker stop`; the intent stayed open (the stop may still be under way) and the
next pass planned the same stop. That run resumes the intent (it writes nothing), and the earlier
stop may finish while it runs: the container it finds exited is the interrupted action's own
effect, not a change since the plan.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.act.report import Outcome
from controller.memory import ControllerMemory, Intent
from controller.plan.types import Action, ActionKind, Reason, StopParams, Target
from tests.fixtures import builders as b
from tests.fixtures.act import RecordingNotifier, make_plan, read_events
from tests.unit.fake_host import FakeContainer, FakeHost


def interrupted_stop(c: Any, reason: Reason, at: datetime) -> tuple[Action, ControllerMemory]:
    """A StopContainer of the running ``job`` due 5 minutes before ``at``, and a memory holding its
    intent, written 20 seconds before ``at`` and never closed (the daemon died in `docker stop`)."""
    action = Action(
        kind=ActionKind.STOP_CONTAINER,
        target=Target(
            container="job",
            container_id=c.id,
            expected_state="running",
            expected_started_at=c.started_at,
            user="alice",
        ),
        reason=reason,
        message="stop job",
        due_at=at - timedelta(minutes=5),
        key=f"StopContainer:{c.id}:{reason.value}",
        params=StopParams(grace_s=30),
    )
    interrupted = Intent(action=action.model_dump(mode="json"), started_at=at - timedelta(seconds=20))
    return action, ControllerMemory(intents={action.key: interrupted})


def stopped_after_the_first_look(host: FakeHost, c: FakeContainer, then_s: float = 0.0) -> list[str]:
    """``c`` stops (the interrupted request's stop completing, or its owner's ``docker stop``) right
    after the executor's first look at it, and ``then_s`` seconds pass; returns the states each
    look saw."""
    inspect = host.api.inspect_container
    looks: list[str] = []

    def inspect_container(cid: str) -> dict[str, Any]:
        data = inspect(cid)
        looks.append(data["State"]["Status"])
        if len(looks) == 1:
            c.status, c.finished_at = "exited", host.now
            host.advance(then_s)
        return data

    host.api.inspect_container = inspect_container  # type: ignore[method-assign]
    return looks


def test_a_resumed_stop_that_completes_meanwhile_is_recorded_as_done(tmp_path: Path) -> None:
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("job")
    seen = stopped_after_the_first_look(host, c)  # the interrupted stop completes right after it
    action, memory = interrupted_stop(c, Reason.MAX_RUNTIME_EXCEEDED, b.T0)
    log = tmp_path / "events.jsonl"
    ex = RealExecutor(host.client, EventLog(log), RecordingNotifier(), tmp_path / "ledger", clock=host.clock)
    report = ex.execute(make_plan(action, memory=memory), memory, b.T0)
    (o,) = report.outcomes
    assert o.outcome is Outcome.DONE, o.detail
    assert seen[0] == "running"
    assert report.memory.intents == {}
    assert report.memory.containers[c.id].stopped_by_controller_at is not None
    (event,) = read_events(log, intents=True)
    assert event["event_type"] == "maintenance.runtime_kill" and event["details"]["phase"] == "done"


def test_the_notice_of_a_stop_recorded_after_a_restart_gives_the_time_of_the_stop(tmp_path: Path) -> None:
    # The daemon died during `docker stop` and came back three hours later (the host rebooted): the
    # engine had finished the stop then. The owner's notice, sent by the recovery, says when the
    # container was stopped, not when the controller came back.
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("job")
    stopped_at = host.now - timedelta(hours=3)
    c.status, c.finished_at = "exited", stopped_at
    _, memory = interrupted_stop(c, Reason.IDLE_TIMEOUT, stopped_at)
    notifier = RecordingNotifier()
    ex = RealExecutor(
        host.client, EventLog(tmp_path / "events.jsonl"), notifier, tmp_path / "ledger", clock=host.clock
    )
    _, outcomes = ex.recover(memory, host.now)
    assert [o.outcome for o in outcomes] == [Outcome.DONE]
    ((_user, text, _severity),) = notifier.sent
    local = "%Y-%m-%d %H:%M"
    assert f"was stopped at {stopped_at.astimezone().strftime(local)}" in text, text
    assert host.now.astimezone().strftime(local) not in text


def test_a_resumed_stop_answered_304_does_not_remove_a_container_it_may_not_have_stopped(
    tmp_path: Path,
) -> None:
    # An idle stop that removes (removeAfterIdleStop), interrupted; the next pass resumes it. Its
    # owner stops the container right after that pass's look, and the engine answers the resumed
    # stop 304: the interrupted request's stop, or the owner's, nothing tells them apart. The
    # container is kept (its hold removes it later), never deleted on a stop that may be the owner's.
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("job")
    stopped_after_the_first_look(host, c)
    action, memory = interrupted_stop(c, Reason.IDLE_TIMEOUT, b.T0)
    action = action.model_copy(update={"params": StopParams(grace_s=30, remove=True)})
    memory = memory.with_intent(
        action.key, memory.intents[action.key].model_copy(update={"action": action.model_dump(mode="json")})
    )
    log = tmp_path / "events.jsonl"
    ex = RealExecutor(host.client, EventLog(log), RecordingNotifier(), tmp_path / "ledger", clock=host.clock)
    report = ex.execute(make_plan(action, memory=memory), memory, b.T0)
    (o,) = report.outcomes
    assert "job" in host.containers, f"the stopped container was removed: {o.detail}"
    assert host.containers["job"].status == "exited"
    assert report.memory.intents == {}
    (event,) = read_events(log)
    assert event["details"]["removed"] is False
