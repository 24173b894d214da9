"""A container is never stopped before the time its delivered warning announced.

The ladder's stop time was recomputed on every pass from the limit in force then: high demand
starting after a warning halves the idle timeout, and a policy reload can shorten the idle timeout
or the max runtime. The stop then came minutes (or, for max runtime, hours) before the time the
owner had been told, sometimes with no new warning. The executor now records, with each delivered
warning, the stop time it announced (``ContainerMemory.announced``), and the ladder never stops
before the latest of them. Real planner, passes every minute, warnings delivered as planned.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from controller.act.events import EventLog
from controller.memory import ControllerMemory
from controller.plan.desired import EffectivePolicy
from controller.plan.types import Action, ActionKind, Plan, Reason, Target, WarnParams
from controller.snapshot import ContainerObs
from tests.fixtures import builders as b

IDLE_60 = b.policy(idle_timeout_s=60 * b.MIN, warn_lead_s=10 * b.MIN, max_runtime_s=None)


class IdleHost:
    """One idle GPU container ``train`` on GPU0, observed every minute; from ``busy_from`` on, the
    other three GPUs are held by busy containers (high demand: the idle timeout is halved)."""

    def __init__(self, policy: Callable[[int], EffectivePolicy], busy_from: int | None = None) -> None:
        self.minute = 0
        self.policy = policy
        self.passes = b.Passes(b.desired(lambda c, now: self.policy(self.minute)))
        self.counters = b.Counters()
        self.busy_from = busy_from

    def run(self, minute: int) -> Plan:
        self.counters.step((minute - self.minute) * 60, cpu_pct=0.1)
        self.minute = minute
        now = b.at(minutes=minute)
        sig = self.counters.read(now, gpu_pct={b.GPU0: 0.0})
        containers: list[ContainerObs] = [
            b.running("train", gpus=[b.GPU0], started_at=b.ago(hours=2), sig=sig)
        ]
        if self.busy_from is not None and minute >= self.busy_from:
            containers += [
                b.running(
                    f"busy{i}", gpus=[g], started_at=b.ago(hours=1), sig=b.signals(now, gpu_pct={g: 99.0})
                )
                for i, g in enumerate(b.GPUS[1:])
            ]
        gpus = [b.gpu(i, u) for i, u in enumerate(b.GPUS)]
        return self.passes.run(b.snapshot(observed_at=now, containers=containers, gpus=gpus))


def announced(a: Action) -> datetime:
    at = a.params_as(WarnParams).announced_stop()
    assert at is not None
    return at


def until_stopped(run: Callable[[int], Plan], minutes: range) -> tuple[int, list[datetime]]:
    """The minute ``train`` is stopped at, and the stop times its warnings announced."""
    told: list[datetime] = []
    for m in minutes:
        p = run(m)
        ours = [a for a in p.actions if a.target.container in ("train", "job")]
        told += [announced(a) for a in ours if a.kind is ActionKind.WARN_OWNER]
        if any(a.kind is ActionKind.STOP_CONTAINER for a in ours):
            return m, told
    raise AssertionError("never stopped")


def test_high_demand_after_the_first_warning_does_not_bring_the_stop_forward() -> None:
    stopped, told = until_stopped(IdleHost(lambda m: IDLE_60, busy_from=52).run, range(90))
    assert told[0] == b.at(minutes=61)  # 48 min idle of 60 at minute 49; announced 12 min ahead
    assert b.at(minutes=stopped) >= max(told) == told[0], (stopped, told)
    # Every later warning announces the same time: the owner is never told an earlier one.
    assert set(told) == {b.at(minutes=61)}


def test_high_demand_after_both_warnings_does_not_stop_at_once() -> None:
    stopped, told = until_stopped(IdleHost(lambda m: IDLE_60, busy_from=59).run, range(90))
    assert len(told) == 2 and stopped == 61


def test_a_reload_that_shortens_the_idle_timeout_keeps_the_announced_time() -> None:
    shorter = b.policy(idle_timeout_s=40 * b.MIN, warn_lead_s=10 * b.MIN, max_runtime_s=None)
    stopped, told = until_stopped(IdleHost(lambda m: IDLE_60 if m < 50 else shorter).run, range(90))
    assert stopped == 61 and told[0] == b.at(minutes=61)


def test_a_reload_that_shortens_the_max_runtime_keeps_the_announced_time() -> None:
    state = {"policy": b.policy(max_runtime_s=10 * b.HOUR, idle_timeout_s=None)}
    runner = b.Passes(b.desired(lambda c, now: state["policy"]))

    def run(minute: int) -> Plan:
        if minute >= 456:  # after the 75 % warning at 7.5 h: the limit drops to 8 h
            state["policy"] = b.policy(max_runtime_s=8 * b.HOUR, idle_timeout_s=None)
        now = b.at(minutes=minute)
        c = b.running("job", gpus=[b.GPU0], started_at=b.T0, sig=b.signals(now, gpu_pct={b.GPU0: 99.0}))
        return runner.run(b.snapshot(observed_at=now, containers=[c], gpus=[b.gpu(0), b.gpu(1)]))

    stopped, told = until_stopped(run, range(0, 11 * 60, 5))
    assert told[0] == b.at(hours=10) and stopped == 600, (stopped, told)


def test_the_waiting_stop_says_which_time_holds_it() -> None:
    host = IdleHost(lambda m: IDLE_60, busy_from=52)
    for m in range(56):
        p = host.run(m)
    (d,) = [d for d in p.deferred if d.target.container == "train" and d.rule.value == "IdleTimeout"]
    assert d.due_at == b.at(minutes=61)
    assert "its warning announced the stop for 2026-03-02T13:01:00+00:00" in d.message, d.message


def test_a_forward_clock_step_moves_the_announced_time_with_the_clock() -> None:
    """The announced wall time is shifted as the delivered warnings are: the real time left stays."""
    from controller.plan.clock import with_clock_step

    mem = ControllerMemory().with_warning("c" * 64, "idle:80:x", b.T0, announced=b.at(minutes=12))
    cm = mem.containers["c" * 64].model_copy(update={"started_at": b.ago(hours=1)})
    moved = with_clock_step(cm, 240.0, b.at(minutes=5))
    assert moved.announced == {"idle:80:x": b.at(minutes=16)}


def test_announcements_of_voided_warnings_are_dropped() -> None:
    mem = ControllerMemory().with_warning("c" * 64, "idle:80:old", b.T0, announced=b.at(minutes=12))
    cm = mem.containers["c" * 64]
    voided = ControllerMemory(containers={"c" * 64: cm.model_copy(update={"warnings": {}})})
    again = voided.with_warning("c" * 64, "idle:80:new", b.at(minutes=30), announced=b.at(minutes=42))
    assert again.containers["c" * 64].announced == {"idle:80:new": b.at(minutes=42)}


def test_the_executor_records_what_the_warning_announced(tmp_path: Path) -> None:
    """What the planner reads back is what the real executor wrote at delivery."""
    from controller.act.executor import RealExecutor
    from tests.fixtures.act import RecordingNotifier, make_plan
    from tests.unit.fake_host import FakeHost

    host = FakeHost()
    c = host.add("train")
    stop_at = b.at(minutes=61)
    warn = Action(
        kind=ActionKind.WARN_OWNER,
        target=Target(
            container="train",
            container_id=c.id,
            expected_state="running",
            expected_started_at=c.started_at,
            user="alice",
        ),
        reason=Reason.IDLE_WARNING,
        message="idle",
        due_at=b.T0 - timedelta(minutes=1),
        key="WarnOwner:x",
        params=WarnParams(warning_key="idle:80:s", level_pct=80, stop_expected_at=stop_at.isoformat()),
    )
    ex = RealExecutor(
        host.client, EventLog(tmp_path / "e.jsonl"), RecordingNotifier(), tmp_path / "l", clock=host.clock
    )
    report = ex.execute(make_plan(warn), ControllerMemory(), host.clock())
    assert [o.outcome.value for o in report.outcomes] == ["done"]
    assert report.memory.containers[c.id].announced == {"idle:80:s": stop_at}


def test_a_lowered_warn_lead_does_not_bring_a_quota_stop_forward() -> None:
    """The quota warning told the owner "stopped at T0+10m"; warnLead lowered to 1 min after it."""
    from controller.plan.planner import plan
    from desired_state.effective import ResourceSpec, Sourced

    def policy(lead_s: float) -> EffectivePolicy:
        quota = Sourced(value=1, source="UserGroup/student")
        resources = ResourceSpec(max_containers_per_user=quota, exempt=Sourced(value=False, source="test"))
        return b.policy(warn_lead_s=lead_s).model_copy(update={"resources": resources})

    containers = [b.running(f"alice-{i}", owner="alice", started_at=b.ago(hours=2 - i)) for i in range(2)]

    def run(lead_s: float, memory: ControllerMemory, minutes: int) -> Plan:
        now = b.at(minutes=minutes)
        snap = b.snapshot(containers=containers, observed_at=now)
        return plan(snap, b.desired(policy(lead_s), b.global_policy(quota_enforce="stop")), memory, now)

    first = run(600.0, ControllerMemory(), 0)
    (warn,) = [a for a in first.actions if a.kind is ActionKind.WARN_OWNER]
    assert announced(warn) == b.at(minutes=10)
    memory = b.record_outcomes(first, b.T0)
    for minutes in (2, 9):
        waiting = run(60.0, memory, minutes)
        assert [a for a in waiting.actions if a.kind is ActionKind.STOP_CONTAINER] == []
        (d,) = [d for d in waiting.deferred if d.target.container == "alice-1"]
        assert d.due_at == b.at(minutes=10) and "(the time its warning announced)" in d.message
    stops = [a.target.container for a in run(60.0, memory, 10).actions if a.kind is ActionKind.STOP_CONTAINER]
    assert stops == ["alice-1"]


def test_a_touch_answering_the_warning_starts_the_warnings_over() -> None:
    """The keep-alive file existed long before the idle streak (first seen at its start). The owner
    answers the idle warning by touching it: honoured until one cap after that first sighting.
    When it lapses the owner is warned again with a full lead; the old warning does not count (it
    did: the stop came at the lapse, with no warning after the touch)."""
    policy = b.policy(keepalive_max_age_s=b.HOUR, idle_timeout_s=30 * b.MIN, max_runtime_s=None)
    runner = b.Passes(b.desired(policy))
    counters = b.Counters()
    warned: list[int] = []
    for m in range(0, 200, 5):
        if m:
            counters.step(5 * 60, cpu_pct=0.1)
        touched = b.at(minutes=m - 1) if m > 30 else None
        keep = b.keepalive(mtime=touched or b.ago(days=3))
        sig = counters.read(b.at(minutes=m), gpu_pct={b.GPU0: 0.0}, keep=keep)
        c = b.running("train", gpus=[b.GPU0], started_at=b.ago(hours=2), sig=sig)
        p = runner.run(b.snapshot(observed_at=b.at(minutes=m), containers=[c], gpus=[b.gpu(0), b.gpu(1)]))
        warned += [m for a in p.actions if a.kind is ActionKind.WARN_OWNER]
        stops = [a for a in p.actions if a.kind is ActionKind.STOP_CONTAINER]
        if stops:
            break
    else:
        raise AssertionError("never stopped")
    (stop,) = stops
    # Warned at 30 (before the touch), and again once the honoured touch lapsed at 60.
    assert warned[0] == 30 and any(w >= 60 for w in warned), warned
    last = max(warned)
    assert m >= last + 6, (m, warned)  # the full lead (20 % of 30 min) after that warning
    assert datetime.fromisoformat(str(stop.evidence["first_warning_at"])) >= b.at(minutes=60)


def test_a_later_warning_that_names_no_time_drops_the_old_announcement() -> None:
    """A quota warning announced T0+24h; the quota was raised (the warning voided), then lowered
    again with a 10-minute lead while the container was paused (its warning names no time: "once
    it runs again"). The old time came back with the key and held the stop for 22 hours."""
    from controller.plan.planner import plan
    from controller.snapshot import ContainerState
    from desired_state.effective import ResourceSpec, Sourced

    def policy(quota: int, lead_s: float) -> EffectivePolicy:
        spec = ResourceSpec(
            max_containers_per_user=Sourced(value=quota, source="UserGroup/student"),
            exempt=Sourced(value=False, source="test"),
        )
        return b.policy(warn_lead_s=lead_s).model_copy(update={"resources": spec})

    a0 = b.running("alice-0", owner="alice", started_at=b.ago(hours=3))
    a1 = b.running("alice-1", owner="alice", started_at=b.ago(hours=2))
    paused = b.container("alice-1", state=ContainerState.PAUSED, owner="alice", started_at=b.ago(hours=2))
    memory = ControllerMemory()
    stopped_at = None
    for minutes, containers, pol in (
        (0, [a0, a1], policy(1, 24 * b.HOUR)),
        (60, [a0, a1], policy(2, 24 * b.HOUR)),
        (120, [a0, paused], policy(1, 10 * b.MIN)),
        (180, [a0, a1], policy(1, 10 * b.MIN)),
    ):
        now = b.at(minutes=minutes)
        desired = b.desired(pol, b.global_policy(quota_enforce="stop"))
        p = plan(b.snapshot(containers=containers, observed_at=now), desired, memory, now)
        if any(a.kind is ActionKind.STOP_CONTAINER for a in p.actions):
            stopped_at = minutes
        memory = b.record_outcomes(p, now)
    assert stopped_at == 180
