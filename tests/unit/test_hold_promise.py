"""A container the controller stopped is never removed before the time its stop notice told the owner.

The owner's notice of a stop says what is kept ("the stopped container for 2d after the stop (then
it is removed)"), from the policy in force at the stop; the hold rule removed the stopped container
by the policy in force at each later pass. A reload that shortened the hold after the notice removed
it, and every file outside /workspace, before the time its owner had been told. The executor now
records the hold the notice named (``ContainerMemory.promised_hold_s``, from the stop's evidence
``kept_after_stop_s``) with the controller's stop, and the hold rule keeps that start at least that
long. Real planner; the stop recorded by the executor's own record (``own_record``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.memory import ControllerMemory
from controller.plan.desired import EffectivePolicy
from controller.plan.planner import plan
from controller.plan.types import Action, ActionKind, Plan, own_record
from controller.snapshot import ContainerObs, ContainerState, Snapshot
from tests.fixtures import builders as b

DAY = 24 * b.HOUR
# A 10 h runtime limit, and the stopped GPU container held two days: what the stop notice says.
BEFORE = b.policy(
    max_runtime_s=10 * b.HOUR,
    idle_timeout_s=None,
    gpu_hold_after_stop_s=2 * DAY,
    container_hold_after_stop_s=7 * DAY,
)
# The policy reloaded after the stop: both holds one hour.
AFTER = b.policy(
    max_runtime_s=10 * b.HOUR,
    idle_timeout_s=None,
    gpu_hold_after_stop_s=b.HOUR,
    container_hold_after_stop_s=b.HOUR,
)
# The evidence key of the hold a stop notice names (controller.plan.types.KEPT_AFTER_STOP_S).
KEPT_AFTER_STOP_S = "kept_after_stop_s"
KEPT_2D = "the stopped container for 2d after the stop (then it is removed)"


def busy(now: datetime, started_at: datetime = b.T0) -> ContainerObs:
    return b.running("job", gpus=[b.GPU0], started_at=started_at, sig=b.signals(now, gpu_pct={b.GPU0: 99.0}))


def snap(now: datetime, *containers: ContainerObs) -> Snapshot:
    return b.snapshot(observed_at=now, containers=containers, gpus=[b.gpu(0), b.gpu(1)])


def stopped_by_the_controller(
    policy: Callable[[int], EffectivePolicy] = lambda minute: BEFORE,
) -> tuple[Snapshot, ControllerMemory, Action]:
    """Passes every 15 min until the runtime stop; the stop carried out and recorded as the
    executor records it. The world and memory after it, and the stop."""
    runner = b.Passes(b.desired(lambda c, now: policy(int((now - b.T0).total_seconds() // 60))))
    for minute in range(0, 11 * 60, 15):
        now = b.at(minutes=minute)
        world = snap(now, busy(now))
        p = runner.run(world)
        stops = [a for a in p.actions if a.kind is ActionKind.STOP_CONTAINER]
        if stops:
            (stop,) = stops
            return b.apply_plan(world, p, now), own_record(runner.memory, stop, now, removed=False), stop
    raise AssertionError("never stopped")


def hold_pass(world: Snapshot, memory: ControllerMemory, now: datetime, pol: EffectivePolicy = AFTER) -> Plan:
    return plan(world.model_copy(update={"observed_at": now}), b.desired(pol), memory, now)


def test_the_stop_carries_the_hold_its_notice_names_and_the_executor_records_it() -> None:
    world, memory, stop = stopped_by_the_controller()
    assert stop.evidence["kept_after_stop"] == KEPT_2D
    assert stop.evidence[KEPT_AFTER_STOP_S] == 2 * DAY
    (c,) = world.containers
    assert c.state is ContainerState.EXITED and c.finished_at == b.at(hours=10)
    cm = memory.containers[c.id]
    assert (cm.stopped_by_controller_at, cm.promised_hold_s) == (b.at(hours=10), 2 * DAY)


def test_a_reload_that_shortens_the_hold_keeps_the_time_the_stop_notice_named() -> None:
    world, memory, _ = stopped_by_the_controller()
    (c,) = world.containers
    finished = c.finished_at
    assert finished is not None
    # Two hours after the stop, past the reloaded hold of 1 h: kept, until the 2 d it was told.
    waiting = hold_pass(world, memory, finished + timedelta(hours=2))
    assert b.summary(waiting) == []
    assert b.deferred_summary(waiting) == [("GpuHoldExpired", "NotDue", "job")]
    (d,) = waiting.deferred
    assert d.due_at == finished + timedelta(days=2)
    assert d.message == (
        "job stopped 2h ago; removed when its hold of 2d promised by the notice of the controller's stop "
        "(its GPU hold is 1h now) ends"
    )
    assert (d.evidence["hold_s"], d.evidence["promised_hold_s"]) == (b.HOUR, 2 * DAY)
    assert d.evidence["stopped_by_controller_at"] == finished.isoformat()
    # A second later than the time it was told: removed.
    due = hold_pass(world, memory, finished + timedelta(days=2, seconds=1))
    assert b.summary(due) == [("RemoveContainer", "GpuHoldExpired", "job")]
    assert due.deferred == ()
    (remove,) = due.actions
    assert remove.due_at == finished + timedelta(days=2)
    assert remove.evidence["promised_hold_s"] == 2 * DAY
    assert "past its hold of 2d promised by the notice of the controller's stop" in remove.message


def test_a_reload_before_the_stop_is_what_the_notice_says_and_what_is_kept() -> None:
    """Shortened before the stop and its warnings (the first at 7.5 h): the notice says 1h, and 1h
    it is."""
    world, memory, stop = stopped_by_the_controller(lambda minute: BEFORE if minute < 7 * 60 else AFTER)
    assert stop.evidence[KEPT_AFTER_STOP_S] == b.HOUR
    (c,) = world.containers
    assert c.finished_at is not None
    due = hold_pass(world, memory, c.finished_at + timedelta(hours=1, seconds=1))
    assert b.summary(due) == [("RemoveContainer", "GpuHoldExpired", "job")]
    assert "promised_hold_s" not in due.actions[0].evidence


def test_a_longer_policy_hold_wins_and_never_stays_never() -> None:
    world, memory, _ = stopped_by_the_controller()
    (c,) = world.containers
    finished = c.finished_at
    assert finished is not None
    longer = b.policy(gpu_hold_after_stop_s=3 * DAY, container_hold_after_stop_s=7 * DAY)
    waiting = hold_pass(world, memory, finished + timedelta(days=2, seconds=1), longer)
    assert b.summary(waiting) == []
    (d,) = waiting.deferred
    assert d.due_at == finished + timedelta(days=3)
    assert "promised_hold_s" not in d.evidence and "promised" not in d.message
    never = b.policy(gpu_hold_after_stop_s=None, container_hold_after_stop_s=None)
    kept = hold_pass(world, memory, finished + timedelta(days=30), never)
    assert (kept.actions, kept.deferred) == ((), ())


def test_the_promise_binds_only_the_start_it_was_made_for() -> None:
    """Started again by its owner and stopped by them: the policy of now applies to that stop."""
    world, memory, _ = stopped_by_the_controller()
    (c,) = world.containers
    assert c.finished_at is not None
    restarted_at = c.finished_at + timedelta(minutes=30)
    # A pass sees it running again (the memory of the earlier start is dropped)...
    running = snap(restarted_at, busy(restarted_at, started_at=restarted_at))
    memory = plan(running, b.desired(AFTER), memory, restarted_at).memory
    assert memory.containers[c.id].promised_hold_s is None
    # ...and its owner stops it.
    finished = restarted_at + timedelta(minutes=30)
    again = world.model_copy(
        update={"containers": (c.model_copy(update={"started_at": restarted_at, "finished_at": finished}),)}
    )
    due = hold_pass(again, memory, finished + timedelta(hours=1, seconds=1))
    assert b.summary(due) == [("RemoveContainer", "GpuHoldExpired", "job")]


def test_a_restart_and_stop_between_two_passes_is_a_new_start_too() -> None:
    """No pass saw the new start: the StartedAt the stopped container shows tells it apart."""
    world, memory, _ = stopped_by_the_controller()
    (c,) = world.containers
    assert c.finished_at is not None
    restarted_at = c.finished_at + timedelta(minutes=30)
    finished = restarted_at + timedelta(minutes=30)
    again = world.model_copy(
        update={"containers": (c.model_copy(update={"started_at": restarted_at, "finished_at": finished}),)}
    )
    due = hold_pass(again, memory, finished + timedelta(hours=1, seconds=1))
    assert b.summary(due) == [("RemoveContainer", "GpuHoldExpired", "job")]


def test_a_cleanup_exemption_still_only_extends() -> None:
    from desired_state.effective import ExemptFrom

    world, memory, _ = stopped_by_the_controller()
    (c,) = world.containers
    assert c.finished_at is not None
    exempt = AFTER.model_copy(
        update={
            "exemptions": (b.exemption(ExemptFrom.CLEANUP, expires_at=c.finished_at + timedelta(days=5)),)
        }
    )
    p = hold_pass(world, memory, c.finished_at + timedelta(days=3), exempt)
    assert b.summary(p) == []
    assert b.deferred_summary(p) == [("GpuHoldExpired", "Exempt", "job")]


def test_a_memory_written_before_the_promise_was_recorded_loads(tmp_path: Path) -> None:
    from controller.store import MemoryStore

    cid = "c" * 64
    stopped_at = b.at(hours=10)
    store = MemoryStore(tmp_path / "state")
    store.save(ControllerMemory().with_controller_stop(cid, b.T0, stopped_at, 2 * DAY))
    saved = json.loads(store.path.read_text())
    assert saved["containers"][cid]["promised_hold_s"] == 2 * DAY
    del saved["containers"][cid]["promised_hold_s"]  # as an older version wrote it
    store.path.write_text(json.dumps(saved))
    cm = MemoryStore(tmp_path / "state").load().containers[cid]
    assert (cm.stopped_by_controller_at, cm.promised_hold_s) == (stopped_at, None)


def test_a_stop_recorded_twice_keeps_the_longer_promise_and_another_start_is_not_marked() -> None:
    cid = "c" * 64
    mem = ControllerMemory().with_controller_stop(cid, b.T0, b.at(hours=1), 2 * DAY)
    assert (
        mem.with_controller_stop(cid, b.T0, b.at(hours=1), b.HOUR).containers[cid].promised_hold_s == 2 * DAY
    )
    assert mem.with_controller_stop(cid, b.T0, b.at(hours=1)).containers[cid].promised_hold_s == 2 * DAY
    assert mem.with_controller_stop(cid, b.at(hours=2), b.at(hours=3), 3 * DAY) is mem


def test_the_executor_records_the_hold_its_stop_notice_named(tmp_path: Path) -> None:
    """What the planner reads back is what the real executor wrote when it stopped the container
    and told its owner; a stop that names no hold records none."""
    from controller.act.events import EventLog
    from controller.act.executor import RealExecutor
    from controller.plan.types import Reason, StopParams, Target
    from tests.fixtures.act import RecordingNotifier, make_plan
    from tests.unit.fake_host import FakeHost

    host = FakeHost(term_ignored_s=0.0)
    promised, unnamed = host.add("job"), host.add("other")

    def stop(c: Any, kept: dict[str, Any]) -> Action:
        return Action(
            kind=ActionKind.STOP_CONTAINER,
            target=Target(
                container=c.name,
                container_id=c.id,
                expected_state="running",
                expected_started_at=c.started_at,
                user="alice",
            ),
            reason=Reason.MAX_RUNTIME_EXCEEDED,
            message=f"stop {c.name}",
            evidence=kept,
            due_at=b.T0 - timedelta(minutes=1),
            key=f"StopContainer:{c.id}:MaxRuntimeExceeded",
            params=StopParams(grace_s=1),
        )

    actions = (
        stop(promised, {"kept_after_stop": KEPT_2D, KEPT_AFTER_STOP_S: 2 * DAY}),
        stop(unnamed, {"kept_after_stop": "the stopped container"}),
    )
    notifier = RecordingNotifier()
    ex = RealExecutor(host.client, EventLog(tmp_path / "e.jsonl"), notifier, tmp_path / "l", clock=host.clock)
    report = ex.execute(make_plan(*actions), ControllerMemory(), host.clock())
    assert [o.outcome.value for o in report.outcomes] == ["done", "done"]
    (told,) = [text for _, text, _ in notifier.sent if KEPT_2D in text]
    assert "job" in told and len(notifier.sent) == 2
    marks = {
        c.name: (
            report.memory.containers[c.id].stopped_by_controller_at,
            report.memory.containers[c.id].promised_hold_s,
        )
        for c in (promised, unnamed)
    }
    assert marks == {"job": (host.clock(), 2 * DAY), "other": (host.clock(), None)}


def test_describe_says_the_promised_hold_and_the_removal_it_puts_off() -> None:
    from controller.cli.describe import describe_container
    from controller.cli.view import View

    world, memory, _ = stopped_by_the_controller()
    (c,) = world.containers
    assert c.finished_at is not None
    now = c.finished_at + timedelta(hours=2)
    world = world.model_copy(update={"observed_at": now})
    desired = b.desired(AFTER)
    p = plan(world, desired, memory, now)
    text = describe_container(View(snapshot=world, now=now, plan=p, memory=p.memory, desired=desired), "job")
    line = text.split("Timers:\n", 1)[1].splitlines()[0].strip()
    assert "GPU hold 1h" in line and "kept at least 2d, as its stop notice said" in line, line
    assert "remove due 2026-03-04 22:00 UTC (in 46h)" in line, line


def test_the_number_is_the_hold_the_text_names_and_absent_where_it_names_none() -> None:
    from controller.plan.rules.common import kept_evidence
    from desired_state.effective import ExemptFrom

    gpu, plain = b.exited("gpu", gpus=[b.GPU0]), b.exited("plain")
    holds = b.policy(gpu_hold_after_stop_s=b.HOUR, container_hold_after_stop_s=2 * DAY)
    assert kept_evidence(gpu, holds) == {
        "kept_after_stop": "the stopped container for 1h after the stop (then it is removed)",
        KEPT_AFTER_STOP_S: b.HOUR,
    }
    assert kept_evidence(plain, holds)[KEPT_AFTER_STOP_S] == 2 * DAY
    never = b.policy(gpu_hold_after_stop_s=None, container_hold_after_stop_s=None)
    assert kept_evidence(gpu, never) == {"kept_after_stop": "the stopped container"}
    exempt = holds.model_copy(update={"exemptions": (b.exemption(ExemptFrom.CLEANUP),)})
    assert kept_evidence(gpu, exempt) == {
        "kept_after_stop": "the stopped container while your cleanup exemption lasts"
    }


def test_only_a_finite_number_in_a_stops_evidence_is_a_promise() -> None:
    _, _, stop = stopped_by_the_controller()
    for value, read in ((2 * DAY, 2 * DAY), (3600, 3600.0), (True, None), ("2d", None), (float("nan"), None)):
        changed = stop.model_copy(update={"evidence": {**stop.evidence, KEPT_AFTER_STOP_S: value}})
        assert changed.promised_hold_s() == read, value
    # A warning before the stop names one too (it binds that start: test_warning_hold_promise.py).
    warn = stop.model_copy(update={"kind": ActionKind.WARN_OWNER})
    assert warn.promised_hold_s() == 2 * DAY
    alert = stop.model_copy(update={"kind": ActionKind.ALERT_ADMIN})
    assert alert.promised_hold_s() is None
