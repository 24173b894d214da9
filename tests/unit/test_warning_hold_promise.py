"""A warning's "what is kept" binds as the stop notice's does: a reload that shortens the hold between
the warning and the stop does not remove the stopped container before the time the owner read.

The warnings before an idle, runtime or quota stop tell the owner what is kept ("your files under
/workspace and the stopped container for 2d after the stop (then it is removed)"). Only the stop's
own notice bound the hold rule (``test_hold_promise.py``): after a reload to a 1 h hold between the
warning and the stop, the stop notice said 1 h and the container, with every file outside
/workspace, was removed an hour after the stop; an owner away from the terminal had read only the
warning, which said 2 d. The executor now records the hold each warning named with that start
(``ContainerMemory.promised_hold_s``, the longest kept), the later warnings and the stop's notice
name the longer of it and the policy's hold, and the hold rule keeps it. A warning whose stop
removes the container (``removeAfterIdleStop``) names no hold and records none.

The real planner decides, the real executor carries each plan out on a simulated host and writes the
real event log, as the daemon does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from controller.act.events import EventLog, EventType, parse_timestamp
from controller.act.executor import RealExecutor
from controller.act.salvage import memory_from_event_log
from controller.memory import ControllerMemory
from controller.plan.desired import EffectivePolicy
from controller.plan.planner import plan
from controller.plan.types import Action, ActionKind, Plan, StopParams
from tests.fixtures import builders as b
from tests.fixtures.act import RecordingNotifier
from tests.unit.fake_host import FakeHost
from tests.unit.test_hold_promise import AFTER, BEFORE, DAY, KEPT_2D, KEPT_AFTER_STOP_S

KEPT_1H = "the stopped container for 1h after the stop (then it is removed)"
STOPPED = "Your container job was stopped"


class Daemon:
    """One GPU container ``job`` on a simulated host; each pass planned by the real planner under
    ``self.policy`` (an admin's reload sets it) and carried out by the real executor."""

    def __init__(self, tmp_path: Path, policy: EffectivePolicy, *, started_ago_s: float, busy: bool) -> None:
        self.host = FakeHost(term_ignored_s=0.0)
        self.job = self.host.add("job", started_ago_s=started_ago_s, busy=busy)
        self.log = tmp_path / "events.jsonl"
        self.notifier = RecordingNotifier()
        self.executor = RealExecutor(
            self.host.client, EventLog(self.log), self.notifier, tmp_path / "ledger", clock=self.host.clock
        )
        self.policy = policy
        self.memory = ControllerMemory()
        self.actions: list[Action] = []

    def run(self) -> Plan:
        now = self.host.clock()
        p = plan(self.host.snapshot(), b.desired(lambda c, at: self.policy), self.memory, now)
        self.memory = self.executor.execute(p, self.memory, now).memory
        self.actions += [a for a in p.actions if a.target.container == "job"]
        return p

    def until(self, done: Callable[[Plan], bool], every_s: float, passes: int = 200) -> Plan:
        for _ in range(passes):
            p = self.run()
            if done(p):
                return p
            self.host.advance(every_s)
        raise AssertionError("never happened")

    def of(self, kind: ActionKind) -> list[Action]:
        return [a for a in self.actions if a.kind is kind]

    def notices(self) -> list[str]:
        return [text for _, text, _ in self.notifier.sent]

    def hold_pass(self, after: timedelta, pol: EffectivePolicy = AFTER) -> Plan:
        """A pass ``after`` the stop, under ``pol`` (the reloaded policy by default)."""
        assert self.job.finished_at is not None
        self.host.now = self.job.finished_at + after
        return plan(self.host.snapshot(), b.desired(pol), self.memory, self.host.now)

    def events(self, kind: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [e["details"] for e in lines if e["event_type"] == kind]


def warned(p: Plan) -> bool:
    return any(a.kind is ActionKind.WARN_OWNER for a in p.actions)


def stopped(p: Plan) -> bool:
    return any(a.kind is ActionKind.STOP_CONTAINER for a in p.actions)


def runtime_job(tmp_path: Path) -> Daemon:
    """A busy job with a 10 h max runtime, warned at 7.5 h that a stop keeps it 2 d; the admin then
    reloads the policy with 1 h holds."""
    d = Daemon(tmp_path, BEFORE, started_ago_s=7 * b.HOUR, busy=True)
    d.until(warned, 15 * 60)
    (first,) = d.of(ActionKind.WARN_OWNER)
    assert first.evidence[KEPT_AFTER_STOP_S] == 2 * DAY
    assert KEPT_2D in d.notices()[0]
    assert d.memory.containers[d.job.id].promised_hold_s == 2 * DAY
    d.policy = AFTER
    return d


def test_a_reload_between_the_warning_and_the_stop_keeps_the_hold_the_warning_named(tmp_path: Path) -> None:
    d = runtime_job(tmp_path)
    d.host.advance(15 * 60)
    d.until(stopped, 15 * 60)
    assert d.job.status == "exited" and d.job.finished_at == b.T0 + timedelta(hours=3)
    # The later warning and the stop's notice name the 2 d the owner was told first, not today's 1 h.
    assert [a.evidence[KEPT_AFTER_STOP_S] for a in d.of(ActionKind.WARN_OWNER)] == [2 * DAY, 2 * DAY]
    (stop,) = d.of(ActionKind.STOP_CONTAINER)
    assert (stop.evidence["kept_after_stop"], stop.evidence[KEPT_AFTER_STOP_S]) == (KEPT_2D, 2 * DAY)
    (notice,) = [text for text in d.notices() if text.startswith(STOPPED)]
    assert KEPT_2D in notice and KEPT_1H not in notice
    assert all(KEPT_1H not in text for text in d.notices())
    # Past the reloaded hold of 1 h: kept, until the 2 d it was told.
    waiting = d.hold_pass(timedelta(hours=2))
    assert b.removed(waiting) == [], "removed 2h after its stop; its warning said 2d"
    (held,) = [x for x in waiting.deferred if x.target.container == "job"]
    assert held.due_at == d.job.finished_at + timedelta(days=2)
    assert (
        "hold of 2d promised by the notice of the controller's stop (its GPU hold is 1h now)" in held.message
    )
    assert b.removed(d.hold_pass(timedelta(days=2, seconds=1))) == ["job"]


def test_a_warning_sent_to_no_terminal_binds_too(tmp_path: Path) -> None:
    """An owner away from the terminal finds the warning in the workspace's alerts file, or nowhere:
    it was sent all the same, and what it named is what is kept."""
    d = Daemon(tmp_path, BEFORE, started_ago_s=7 * b.HOUR, busy=True)
    d.notifier.terminals = 0
    d.until(warned, 15 * 60)
    (event,) = d.events(EventType.WARNING)
    assert event["terminals"] == 0
    assert d.memory.containers[d.job.id].promised_hold_s == 2 * DAY


def test_the_owners_own_stop_after_the_warning_keeps_it_too(tmp_path: Path) -> None:
    """Stopped by its owner after the warning, before the controller's stop: the same start, the
    hold its warning named."""
    d = runtime_job(tmp_path)
    d.job.status, d.job.finished_at = "exited", d.host.clock() + timedelta(minutes=5)
    waiting = d.hold_pass(timedelta(hours=2))
    assert b.removed(waiting) == []
    (held,) = [x for x in waiting.deferred if x.target.container == "job"]
    assert held.due_at == d.job.finished_at + timedelta(days=2)
    assert "hold of 2d promised by a notice to its owner (its GPU hold is 1h now)" in held.message
    assert held.evidence["stopped_by_controller_at"] is None
    assert "kept at least 2d after its stop, as a notice to its owner said" in describe(d, waiting)
    assert b.removed(d.hold_pass(timedelta(days=2, seconds=1))) == ["job"]


def describe(d: Daemon, p: Plan) -> str:
    from controller.cli.describe import describe_container
    from controller.cli.view import View

    world = d.host.snapshot()
    view = View(snapshot=world, now=d.host.now, plan=p, memory=p.memory, desired=b.desired(AFTER))
    return describe_container(view, "job")


def test_a_new_start_does_not_inherit_the_promise(tmp_path: Path) -> None:
    """Its owner starts it again after the warning: the new start is warned, stopped and held by the
    policy of its own time."""
    d = runtime_job(tmp_path)
    d.job.started_at = d.host.clock() + timedelta(minutes=5)
    d.host.advance(15 * 60)
    d.run()
    assert d.memory.containers[d.job.id].promised_hold_s is None
    d.until(stopped, 15 * 60)
    (stop,) = d.of(ActionKind.STOP_CONTAINER)
    assert stop.evidence[KEPT_AFTER_STOP_S] == b.HOUR
    assert [a.evidence[KEPT_AFTER_STOP_S] for a in d.of(ActionKind.WARN_OWNER)][1:] == [b.HOUR, b.HOUR]
    assert b.removed(d.hold_pass(timedelta(hours=1, seconds=1))) == ["job"]


def test_a_lost_memory_rebuilds_the_promise_from_the_warnings_line(tmp_path: Path) -> None:
    """The memory lost between the warning and the stop: the warning's ``controller.warning`` line
    names the hold and the start, and the stop after the salvage still names and keeps the 2 d."""
    d = runtime_job(tmp_path)
    (event,) = d.events(EventType.WARNING)
    assert event[KEPT_AFTER_STOP_S] == 2 * DAY
    assert parse_timestamp(event["expected_started_at"]) == d.job.started_at
    d.memory = memory_from_event_log(d.log, d.host.clock())
    assert d.memory.containers[d.job.id].promised_hold_s == 2 * DAY
    d.host.advance(15 * 60)
    d.until(stopped, 15 * 60)
    (stop,) = d.of(ActionKind.STOP_CONTAINER)
    assert stop.evidence[KEPT_AFTER_STOP_S] == 2 * DAY
    assert b.removed(d.hold_pass(timedelta(hours=2))) == []
    assert b.removed(d.hold_pass(timedelta(days=2, seconds=1))) == ["job"]


def idle_policy(hold_s: float, *, remove: bool) -> EffectivePolicy:
    return b.policy(
        idle_timeout_s=30 * b.MIN,
        max_runtime_s=None,
        gpu_hold_after_stop_s=hold_s,
        container_hold_after_stop_s=hold_s,
        remove_after_idle_stop=remove,
    )


def idle_job(tmp_path: Path, *, remove: bool) -> Daemon:
    """An idle job (idle timeout 30 min), warned with holds of 2 d, the holds then reloaded to 1 h,
    passes every 5 minutes until the idle stop."""
    d = Daemon(tmp_path, idle_policy(2 * DAY, remove=remove), started_ago_s=2 * b.HOUR, busy=False)
    d.until(warned, 5 * 60)
    d.policy = idle_policy(b.HOUR, remove=remove)
    d.host.advance(5 * 60)
    d.until(stopped, 5 * 60)
    return d


def test_an_idle_warning_binds_as_a_runtime_warning_does(tmp_path: Path) -> None:
    d = idle_job(tmp_path, remove=False)
    assert {a.evidence[KEPT_AFTER_STOP_S] for a in d.of(ActionKind.WARN_OWNER)} == {2 * DAY}
    (notice,) = [text for text in d.notices() if text.startswith(STOPPED)]
    assert KEPT_2D in notice
    assert b.removed(d.hold_pass(timedelta(hours=2))) == []
    assert b.removed(d.hold_pass(timedelta(days=2, seconds=1))) == ["job"]


def test_idle_warnings_of_a_stop_that_removes_the_container_promise_nothing(tmp_path: Path) -> None:
    """``removeAfterIdleStop``: the warnings say the container is removed at the stop; they name no
    hold, the executor records none, and the stop removes the container as before."""
    d = idle_job(tmp_path, remove=True)
    warnings = d.of(ActionKind.WARN_OWNER)
    assert warnings and all(KEPT_AFTER_STOP_S not in a.evidence for a in warnings)
    assert all(KEPT_AFTER_STOP_S not in e for e in d.events(EventType.WARNING))
    assert all("the container itself is removed after the stop" in t for t in d.notices()[: len(warnings)])
    (stop,) = d.of(ActionKind.STOP_CONTAINER)
    assert stop.params_as(StopParams).remove
    assert "job" not in d.host.containers
    assert memory_from_event_log(d.log, d.host.clock()).containers == {}


def test_the_longest_hold_a_warning_named_is_kept(tmp_path: Path) -> None:
    """The longest hold named is kept: a warning under a longer hold after one under a shorter
    raises the promise, and a shorter one after it does not lower it."""
    d = Daemon(tmp_path, AFTER, started_ago_s=7 * b.HOUR, busy=True)
    d.until(warned, 15 * 60)
    assert d.memory.containers[d.job.id].promised_hold_s == b.HOUR
    d.policy = BEFORE
    d.host.advance(15 * 60)
    d.until(warned, 15 * 60)
    assert d.memory.containers[d.job.id].promised_hold_s == 2 * DAY
    d.policy = AFTER
    d.host.advance(15 * 60)
    d.until(stopped, 15 * 60)
    (stop,) = d.of(ActionKind.STOP_CONTAINER)
    assert stop.evidence[KEPT_AFTER_STOP_S] == 2 * DAY


def test_a_quota_warning_binds_too() -> None:
    """An enforced container quota: the warning names 2 d, the holds are reloaded to 1 h before the
    stop; the stop names 2 d. (Outcomes recorded as the executor records them: ``warning_record``.)"""
    from desired_state.effective import ResourceSpec, Sourced

    def policy(hold_s: float) -> EffectivePolicy:
        quota = Sourced(value=1, source="UserGroup/student")
        resources = ResourceSpec(max_containers_per_user=quota, exempt=Sourced(value=False, source="test"))
        return b.policy(
            gpu_hold_after_stop_s=hold_s, container_hold_after_stop_s=hold_s, max_runtime_s=None
        ).model_copy(update={"resources": resources})

    containers = [b.running(f"alice-{i}", owner="alice", started_at=b.ago(hours=2 - i)) for i in range(2)]

    def run(hold_s: float, memory: ControllerMemory, minutes: int) -> Plan:
        now = b.at(minutes=minutes)
        snap = b.snapshot(containers=containers, observed_at=now)
        return plan(snap, b.desired(policy(hold_s), b.global_policy(quota_enforce="stop")), memory, now)

    first = run(2 * DAY, ControllerMemory(), 0)
    (warn,) = [a for a in first.actions if a.kind is ActionKind.WARN_OWNER]
    assert warn.evidence[KEPT_AFTER_STOP_S] == 2 * DAY
    memory = b.record_outcomes(first, b.T0)
    assert memory.containers[warn.target.container_id or ""].promised_hold_s == 2 * DAY
    (stop,) = [a for a in run(b.HOUR, memory, 10).actions if a.kind is ActionKind.STOP_CONTAINER]
    assert stop.target.container == warn.target.container
    assert stop.evidence[KEPT_AFTER_STOP_S] == 2 * DAY
    assert "the stopped container for 2d after the stop" in stop.evidence["kept_after_stop"]
