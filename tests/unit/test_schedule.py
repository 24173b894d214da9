"""How the acting daemon runs a plan's actions: side by side, one per target, within deadlines, never
from a stale plan (issue 11 case 6, issue 18 item 5).

The pass tests run the real :class:`~controller.loop.Controller` (real planner, policy, executor,
memory store, event log) on :mod:`tests.unit.fake_host`: a simulated host whose Docker seam makes a
stop of a container that ignores SIGTERM last a real fraction of a second. The scheduler tests drive
:class:`~controller.act.schedule.ActionScheduler` directly.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.act.report import ActionOutcome, ExecutionReport, Outcome
from controller.act.schedule import ActionScheduler, Limits, conflict_keys, merge_outcome
from controller.loop import Controller, PassResult, next_wait_s
from controller.memory import ControllerMemory
from controller.plan.desired import PolicySetDesired
from controller.plan.types import Action, ActionKind, DeferReason, Deferred, Plan, Reason, Target
from controller.plan.wake import DUE_GROUP_S, DUE_SLACK_S
from controller.settings import Settings
from controller.store import MemoryStore
from desired_state.errors import PolicyLoadError
from desired_state.load import PolicyHolder, builtin_policy, load_spec_text
from tests.fixtures import builders as b
from tests.fixtures.act import RecordingNotifier, read_events
from tests.unit.fake_host import FakeContainer, FakeHost

PASS_EVERY_S = 300.0


def spec(**safety: str) -> str:
    lines = "".join(f"    {k}: {v}\n" for k, v in {"breakerMinContainers": "10", **safety}.items())
    return f"""\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: test
spec:
  safety:
{lines}"""


def make_controller(
    tmp_path: Path,
    host: FakeHost,
    policy_text: str,
    *,
    interval_s: float = 30.0,
    executor_clock: Callable[[], datetime] | None = None,
) -> Controller:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "policy.yaml").write_text(policy_text)
    settings = Settings(
        specs=specs,
        state_dir=tmp_path / "state",
        events_log=tmp_path / "events.jsonl",
        ledger=tmp_path / "gpu-ledger.json",
        interval_s=interval_s,
    )
    event_log = EventLog(settings.events_log)
    store = MemoryStore(settings.state_dir)
    return Controller(
        settings=settings,
        observer=host.observer,  # type: ignore[arg-type]
        policy=PolicyHolder(specs),
        executor=RealExecutor(
            host.client, event_log, RecordingNotifier(), settings.ledger, clock=executor_clock or host.clock
        ),
        store=store,
        event_log=event_log,
        memory=store.load(),
        clock=host.clock,
    )


def stops_of(result: PassResult) -> list[str]:
    return [a.target.label() for a in result.plan.actions if a.kind is ActionKind.STOP_CONTAINER]


def until_stops(controller: Controller, host: FakeHost) -> PassResult:
    """Passes every 5 simulated minutes until one plans idle stops (warnings delivered on the way)."""
    for _ in range(30):
        result = controller.run_pass()
        if stops_of(result):
            return result
        host.advance(PASS_EVERY_S)
    pytest.fail("no idle stop was ever planned")


# --- the policy keys ------------------------------------------------------------------------------


def test_the_safety_keys_resolve_with_their_defaults() -> None:
    builtin = PolicySetDesired(builtin_policy()).global_policy
    assert builtin.max_concurrent_actions.value == 4
    assert builtin.max_action_age_s.value is None, "null: the daemon's resync interval"
    written = PolicySetDesired(
        load_spec_text(spec(maxConcurrentActions="2", maxActionAge="2m"), "p.yaml")
    ).global_policy
    assert (written.max_concurrent_actions.value, written.max_action_age_s.value) == (2, 120.0)
    assert written.max_action_age_s.source == "LifecyclePolicy/test"


@pytest.mark.parametrize(("key", "value"), [("maxActionAge", "0s"), ("maxConcurrentActions", "0")])
def test_a_bound_that_would_stop_every_action_is_refused(key: str, value: str) -> None:
    with pytest.raises(PolicyLoadError, match=key):
        load_spec_text(spec(**{key: value}), "p.yaml")


def test_the_plan_age_bound_is_the_resync_interval_unless_set(tmp_path: Path) -> None:
    host = FakeHost(term_ignored_s=0.0)
    host.add("idle-a")
    controller = make_controller(tmp_path, host, spec(), interval_s=7.0)
    until_stops(controller, host)
    assert controller.scheduler.limits == Limits(max_concurrent=4, max_age_s=7.0, kill_grace_s=10.0)


# --- issue 11 case 6: a stale plan is re-planned, not acted on ----------------------------------


def test_a_container_that_became_active_while_earlier_stops_ran_is_not_stopped(tmp_path: Path) -> None:
    # Five idle GPU containers whose processes ignore SIGTERM, stopped one at a time: each stop
    # waits out its 60 s grace. While the first stop runs, the owner of another comes back to it.
    host = FakeHost(term_ignored_s=0.9)
    for n in "abcde":
        host.add(f"idle-{n}")
    controller = make_controller(tmp_path, host, spec(maxConcurrentActions="1", maxActionAge="0.5s"))
    came_back: list[str] = []

    def on_stopped(stopped: FakeContainer, grace_s: int) -> None:
        host.advance(grace_s)  # the simulated minute the engine waited before SIGKILL
        if not came_back:
            others = sorted(c.name for c in host.containers.values() if c is not stopped)
            came_back.append(others[-1])
            host.containers[others[-1]].busy = True

    host.on_stopped = on_stopped
    first = until_stops(controller, host)
    assert sorted(stops_of(first)) == [f"idle-{n}" for n in "abcde"]
    assert len(host.stops) == 1, "only the first stop ran within maxActionAge of its observation"
    assert first.report.count(Outcome.STALE) == 4
    stale = [o for o in first.report.outcomes if o.outcome is Outcome.STALE]
    assert all("re-planned from a fresh observation" in o.detail for o in stale)

    # The loop re-plans at once; every pass stops one more of the containers still idle.
    for _ in range(10):
        result = controller.run_pass()
        if not stops_of(result):
            break
    assert came_back[0] not in host.stopped(), "a container active since the plan was stopped"
    assert sorted(host.stopped()) == sorted(f"idle-{n}" for n in "abcde" if f"idle-{n}" != came_back[0])
    assert host.containers[came_back[0]].status == "running"


# --- issue 18 item 5: stops side by side, the watchdog fed meanwhile ----------------------------


def test_four_stops_that_ignore_sigterm_take_one_grace_and_keep_the_heartbeat(tmp_path: Path) -> None:
    host = FakeHost(term_ignored_s=0.8)
    for n in "abcd":
        host.add(f"idle-{n}")
    controller = make_controller(tmp_path, host, spec())
    beats: list[int] = []
    controller.heartbeat = lambda: beats.append(host.in_flight)
    host.advance(0)
    result = until_stops(controller, host)
    assert sorted(stops_of(result)) == ["idle-a", "idle-b", "idle-c", "idle-d"]
    assert [o.outcome for o in result.report.outcomes] == [Outcome.DONE] * 4
    assert host.max_in_flight == 4
    assert result.duration_s < 2 * 0.8, f"the four stops took {result.duration_s:.2f} s, not about one grace"
    assert not host.containers, "each stop removes its container (removeAfterIdleStop)"
    assert sum(1 for n in beats if n > 0) >= 2, "no heartbeat while the stops were in flight"


def test_the_loop_wakes_after_the_last_of_due_times_close_together() -> None:
    def plan_due(*offsets_s: float) -> Plan:
        deferred = tuple(
            Deferred(
                target=Target(container=f"c{i}"),
                rule=Reason.IDLE_TIMEOUT,
                why=DeferReason.WAITING_FOR_WARNING,
                message="lead time",
                due_at=b.T0 + timedelta(seconds=s),
            )
            for i, s in enumerate(offsets_s)
        )
        return plan_of().model_copy(update={"deferred": deferred})

    slack = DUE_SLACK_S
    # Warned milliseconds apart: one wake, after the last of them (never before any).
    assert next_wait_s(plan_due(10.0, 10.004, 10.031), b.T0, 30.0) == pytest.approx(10.031 + slack)
    # Further apart than DUE_GROUP_S: the first is not held back for the later one.
    assert next_wait_s(plan_due(10.0, 10.0 + DUE_GROUP_S + 0.1), b.T0, 30.0) == pytest.approx(10.0 + slack)
    # Past due times and the resync interval bound it as before.
    assert next_wait_s(plan_due(-1.0, 40.0), b.T0, 30.0) == 30.0


def test_stops_warned_side_by_side_come_due_in_one_pass(tmp_path: Path) -> None:
    # Three containers idle since the same reading are warned in the same pass, side by side; each
    # warning is stamped when it was delivered, a few milliseconds apart. The loop sleeps as the
    # daemon does (next_wait_s): the three stops come due in one pass, none before its lead time.
    host = FakeHost(term_ignored_s=0.0)
    for n in "abc":
        host.add(f"idle-{n}")
    ticks = itertools.count(1)
    jitter = threading.Lock()

    def delivered_at() -> datetime:
        with jitter:  # every reading of the executor's clock is 7 ms later than the one before
            return host.clock() + timedelta(milliseconds=7 * next(ticks))

    controller = make_controller(tmp_path, host, spec(), interval_s=PASS_EVERY_S, executor_clock=delivered_at)
    planned: list[list[str]] = []
    for _ in range(60):
        result = controller.run_pass()
        stops = [a for a in result.plan.actions if a.kind is ActionKind.STOP_CONTAINER]
        if stops:
            planned.append(sorted(a.target.label() for a in stops))
        for stop in stops:  # never before the full lead time after the warning was delivered
            warned_at = datetime.fromisoformat(stop.evidence["first_warning_at"])
            assert warned_at + timedelta(seconds=stop.evidence["lead_s"]) <= result.plan.evaluated_at
        if not host.containers:
            break
        host.advance(next_wait_s(result.plan, host.clock(), PASS_EVERY_S))
    assert planned == [["idle-a", "idle-b", "idle-c"]], f"stops by pass: {planned}"


# --- the scheduler's rules ------------------------------------------------------------------------


def action(kind: ActionKind, label: str, *, pid: int | None = None, **params: Any) -> Action:
    cid = b.cid(label) if kind is not ActionKind.KILL_PROCESS else None
    target = Target(
        container=label if cid else None,
        container_id=cid,
        expected_state="running" if cid else None,
        expected_started_at=b.ago(hours=2) if cid else None,
        pid=pid,
        gpu=b.GPU0 if kind is ActionKind.RESET_GPU else None,
        ledger_entry={"container": label, "gpu": "0"} if kind is ActionKind.RELEASE_ALLOCATION else None,
    )
    return Action(
        kind=kind,
        target=target,
        reason=Reason.IDLE_TIMEOUT,
        message=f"{kind.value} {label}",
        due_at=b.T0,
        key=f"{kind.value}:{label}:{pid}:{sorted(params.items())}",
        params=params,
    )


def plan_of(*actions: Action, memory: ControllerMemory | None = None) -> Plan:
    return Plan(observed_at=b.T0, evaluated_at=b.T0, actions=actions, memory=memory or ControllerMemory())


@dataclass
class Recorder:
    """A ``run_one`` that takes ``seconds`` of real time and records a warning-style memory change."""

    seconds: float = 0.05
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, plan: Plan, memory: ControllerMemory, now: datetime) -> ExecutionReport:
        (a,) = plan.actions
        start = time.monotonic()
        time.sleep(self.seconds)
        with self.lock:
            self.intervals[a.key] = (start, time.monotonic())
        mem = plan.memory.with_done(a.key, now)
        if a.target.container_id:
            mem = mem.with_warning(a.target.container_id, a.key, now)
        out = ActionOutcome(
            key=a.key, kind=a.kind, reason=a.reason, target=a.target, outcome=Outcome.DONE, detail="ok"
        )
        return ExecutionReport(outcomes=(out,), memory=mem)

    def overlap(self, k1: str, k2: str) -> bool:
        (s1, e1), (s2, e2) = self.intervals[k1], self.intervals[k2]
        return s1 < e2 and s2 < e1

    def most_at_once(self) -> int:
        edges = sorted(
            [(s, 1) for s, _ in self.intervals.values()] + [(e, -1) for _, e in self.intervals.values()]
        )
        level = peak = 0
        for _, step in edges:
            level += step
            peak = max(peak, level)
        return peak


def run(
    scheduler: ActionScheduler, plan: Plan, run_one: Callable[..., ExecutionReport], **kw: Any
) -> ExecutionReport:
    return scheduler.run(plan, b.T0, run_one, observed_at=scheduler.monotonic(), **kw)


def wait_until_no_abandoned(scheduler: ActionScheduler, timeout_s: float = 10.0) -> None:
    """Until every abandoned action has ended (asserting that they all did within ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while scheduler.abandoned and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scheduler.abandoned == ()


def test_never_two_actions_on_one_target_and_never_more_than_the_limit() -> None:
    actions = (
        action(ActionKind.WARN_OWNER, "a"),
        action(ActionKind.STOP_CONTAINER, "a", timeout_s=60),
        action(ActionKind.STOP_CONTAINER, "b", timeout_s=60),
        action(ActionKind.RELEASE_ALLOCATION, "r1"),
        action(ActionKind.RELEASE_ALLOCATION, "r2"),
        action(ActionKind.KILL_PROCESS, "p", pid=100),
        action(ActionKind.KILL_PROCESS, "p", pid=100, grace_s=1),  # the same pid again
        action(ActionKind.STOP_CONTAINER, "c", timeout_s=60),
        action(ActionKind.STOP_CONTAINER, "d", timeout_s=60),
    )
    recorder = Recorder(seconds=0.1)
    report = run(ActionScheduler(Limits(max_concurrent=3, max_age_s=60)), plan_of(*actions), recorder)
    assert [o.key for o in report.outcomes] == [a.key for a in actions], "outcomes in plan order"
    assert all(o.outcome is Outcome.DONE for o in report.outcomes)
    assert recorder.most_at_once() == 3
    for i, x in enumerate(actions):
        for y in actions[i + 1 :]:
            if conflict_keys(x) & conflict_keys(y):
                assert not recorder.overlap(x.key, y.key), (x.key, y.key)
                assert recorder.intervals[x.key][1] <= recorder.intervals[y.key][0], "plan order per target"
    # Every action's memory change survives the merge: concurrent outcomes are not lost.
    assert set(report.memory.done) == {a.key for a in actions}
    assert report.memory.containers[b.cid("a")].warnings.keys() == {actions[0].key, actions[1].key}


def test_a_gpu_reset_runs_alone() -> None:
    actions = (
        action(ActionKind.STOP_CONTAINER, "a"),
        action(ActionKind.KILL_PROCESS, "p", pid=7),
        action(ActionKind.RESET_GPU, "gpu"),
        action(ActionKind.STOP_CONTAINER, "b"),
    )
    recorder = Recorder()
    run(ActionScheduler(Limits(max_concurrent=4, max_age_s=60)), plan_of(*actions), recorder)
    reset = actions[2].key
    for other in (a.key for a in actions if a.key != reset):
        assert not recorder.overlap(reset, other), other
    assert recorder.intervals[actions[3].key][0] >= recorder.intervals[reset][1], "nothing overtakes a reset"


def test_a_gpu_reset_waits_for_a_stop_abandoned_past_its_deadline() -> None:
    """A reset runs alone, and an abandoned stop is still in flight: a stop hung in the engine (its
    process stuck in the driver) is on the very GPU a reset would be planned for."""
    release = threading.Event()
    recorder = Recorder(seconds=0.01)
    log: list[str] = []

    def run_one(plan: Plan, memory: ControllerMemory, now: datetime) -> ExecutionReport:
        (a,) = plan.actions
        log.append(f"{a.kind.value} starts")
        if a.target.container == "gpujob":
            release.wait(10)  # docker stop hangs in the engine
        log.append(f"{a.kind.value} ends")
        return recorder(plan, memory, now)

    # The scheduler's clock runs 200 times faster: the stop's 60 s grace plus slack passes in 0.6 s.
    scheduler = ActionScheduler(
        Limits(max_concurrent=4, max_age_s=1e9), monotonic=lambda: time.monotonic() * 200
    )
    stop = action(ActionKind.STOP_CONTAINER, "gpujob", timeout_s=60)
    try:
        first = run(scheduler, plan_of(stop), run_one)
        assert first.outcomes[0].outcome is Outcome.FAILED and scheduler.abandoned == (stop.key,)
        second = run(scheduler, plan_of(action(ActionKind.RESET_GPU, "gpu")), run_one)
        (o,) = second.outcomes
        assert o.outcome is Outcome.SKIPPED, o.detail
        assert o.detail.startswith("not started: StopContainer gpujob is still running"), o.detail
        assert "a GPU reset runs alone" in o.detail
        assert log == ["StopContainer starts"], "the reset ran beside the stop still under way"
        # A stop of another container is not held up by it (only a reset runs alone).
        other = run(scheduler, plan_of(action(ActionKind.STOP_CONTAINER, "other")), run_one)
        assert other.outcomes[0].outcome is Outcome.DONE
    finally:
        release.set()
    wait_until_no_abandoned(scheduler)
    again = run(scheduler, plan_of(action(ActionKind.RESET_GPU, "gpu")), run_one)
    assert again.outcomes[0].outcome is Outcome.DONE, "once the stop ended, the reset runs"


def test_actions_not_started_within_max_age_are_stale_and_untouched() -> None:
    ticks = [0.0]
    scheduler = ActionScheduler(Limits(max_concurrent=1, max_age_s=30), monotonic=lambda: ticks[0])

    def slow(plan: Plan, memory: ControllerMemory, now: datetime) -> ExecutionReport:
        ticks[0] += 20.0  # each stop waits out a 20 s grace
        return Recorder(seconds=0)(plan, memory, now)

    actions = tuple(action(ActionKind.STOP_CONTAINER, n) for n in "abcd")
    report = run(scheduler, plan_of(*actions), slow)
    assert [o.outcome for o in report.outcomes] == [Outcome.DONE, Outcome.DONE, Outcome.STALE, Outcome.STALE]
    assert set(report.memory.done) == {actions[0].key, actions[1].key}, "a stale action changes no memory"


def test_an_action_past_its_deadline_is_abandoned_and_its_target_stays_locked(tmp_path: Path) -> None:
    host = FakeHost(term_ignored_s=0.01)
    hung, quick = host.add("hung"), host.add("quick")
    release = threading.Event()
    original_stop = host.api._stop

    def stop(cid: str, timeout: int) -> int:
        if cid == hung.id:
            release.wait(30)  # an engine that never answers for this one
        return original_stop(cid, timeout)

    host.api._stop = stop  # type: ignore[method-assign]
    executor = RealExecutor(host.client, EventLog(tmp_path / "e.jsonl"), RecordingNotifier(), tmp_path / "l")
    # The scheduler's clock runs 200 times faster: a 60 s grace plus slack passes in 0.6 s.
    scheduler = ActionScheduler(
        Limits(max_concurrent=4, max_age_s=1e9), monotonic=lambda: time.monotonic() * 200
    )

    def stop_action(c: FakeContainer) -> Action:
        a = action(ActionKind.STOP_CONTAINER, c.name, timeout_s=60)
        return a.model_copy(
            update={
                "target": a.target.model_copy(
                    update={"container_id": c.id, "expected_started_at": c.started_at}
                )
            }
        )

    beats: list[float] = []
    try:
        report = run(
            scheduler,
            plan_of(stop_action(hung), stop_action(quick)),
            executor.execute,
            heartbeat=lambda: beats.append(1),
        )
        by_name = {o.target.label(): o for o in report.outcomes}
        assert by_name["quick"].outcome is Outcome.DONE, "a stuck stop must not hold up another target"
        assert by_name["hung"].outcome is Outcome.FAILED
        assert "past its deadline" in by_name["hung"].detail
        assert report.memory.attempts[stop_action(hung).key].failures == 1, "back-off, like any failure"
        assert beats, "the heartbeat went on while the stuck stop was waited for"
        assert scheduler.abandoned == (stop_action(hung).key,)
        # The next pass plans the same target again: not started while the first is still running.
        again = run(scheduler, plan_of(stop_action(hung)), executor.execute)
        assert again.outcomes[0].outcome is Outcome.SKIPPED
        assert "still running" in again.outcomes[0].detail
    finally:
        release.set()
    wait_until_no_abandoned(scheduler)
    assert hung.status == "exited"


def test_merge_keeps_what_each_action_changed() -> None:
    base = ControllerMemory()
    one = base.with_warning("c1", "idle:80", b.T0)
    two = base.with_failure("Stop:c2", "engine error", b.T0)
    merged = merge_outcome(merge_outcome(base, base, one), base, two)
    assert merged.containers["c1"].warnings == {"idle:80": b.T0}
    assert merged.attempts["Stop:c2"].failures == 1
    # A change that removes a key (a success clears its failure record) is merged too.
    cleared = two.model_copy(update={"attempts": {}})
    assert merge_outcome(merged, two, cleared).attempts == {}
    assert merge_outcome(merged, two, two) is merged


def test_a_stop_request_starts_nothing_new_and_waits_for_what_runs() -> None:
    stop = threading.Event()
    recorder = Recorder(seconds=0.2)
    actions = tuple(action(ActionKind.STOP_CONTAINER, n) for n in "abcdef")
    scheduler = ActionScheduler(Limits(max_concurrent=2, max_age_s=60))
    timer = threading.Timer(0.05, stop.set)
    timer.start()
    report = run(scheduler, plan_of(*actions), recorder, should_stop=stop.is_set)
    timer.join()
    assert [o.key for o in report.outcomes] == [actions[0].key, actions[1].key]
    assert all(o.outcome is Outcome.DONE for o in report.outcomes)


# --- the loop -----------------------------------------------------------------------------------------


def test_stale_actions_make_the_loop_replan_at_once() -> None:
    from controller.loop import Waker, _loop
    from controller.ops.sdnotify import Notifier

    class Docker:
        def events(self, **_kw: Any) -> Any:
            raise ConnectionError("no engine in this test")

    class Observer:
        docker = Docker()

        def invalidate(self, _cid: str | None) -> None:
            pass

    a = action(ActionKind.STOP_CONTAINER, "a")
    snap = b.snapshot()
    started: list[float] = []

    @dataclass
    class Stub:
        settings: Settings = field(default_factory=lambda: Settings(interval_s=30.0))
        observer: Observer = field(default_factory=Observer)
        metrics: None = None
        memory: ControllerMemory = field(default_factory=ControllerMemory)
        clock: Callable[[], datetime] = lambda: b.T0
        heartbeat: Callable[[], None] = lambda: None

        def run_pass(self) -> PassResult:
            started.append(time.monotonic())
            outcome = Outcome.STALE if len(started) == 1 else Outcome.DONE
            out = ActionOutcome(key=a.key, kind=a.kind, reason=a.reason, target=a.target, outcome=outcome)
            p = plan_of(a)
            return PassResult(snap, p, ExecutionReport(outcomes=(out,)), 0.0, "pass")

    waker = Waker()

    def on_pass(_result: PassResult) -> None:
        if len(started) >= 2:
            waker.stop()

    timer = threading.Timer(5.0, waker.stop)  # the 30 s resync would come much later
    timer.start()
    try:
        _loop(Stub(), Notifier(env={}), waker, once=False, on_pass=on_pass)  # type: ignore[arg-type]
    finally:
        timer.cancel()
        waker.close()
    assert len(started) == 2
    assert started[1] - started[0] < 2.0, "the stale actions waited for the next resync"


def test_heartbeat_only_while_actions_are_within_their_deadlines() -> None:
    # The dispatcher is the only caller; a dispatcher that stops turning stops the heartbeat.
    beats: list[float] = []
    recorder = Recorder(seconds=1.5)
    scheduler = ActionScheduler(Limits(max_concurrent=1, max_age_s=60))
    run(
        scheduler,
        plan_of(action(ActionKind.STOP_CONTAINER, "a")),
        recorder,
        heartbeat=lambda: beats.append(time.monotonic()),
    )
    assert len(beats) >= 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(beats)]
    assert max(gaps) < 0.75


def test_a_pass_that_fails_while_actions_run_leaves_their_targets_locked() -> None:
    fast, slow = action(ActionKind.STOP_CONTAINER, "fast"), action(ActionKind.STOP_CONTAINER, "slow")

    def run_one(plan: Plan, memory: ControllerMemory, now: datetime) -> ExecutionReport:
        return Recorder(seconds=0.05 if plan.actions[0] is fast else 0.8)(plan, memory, now)

    def save(_memory: ControllerMemory) -> None:
        raise OSError(28, "No space left on device")

    scheduler = ActionScheduler(Limits(max_concurrent=2, max_age_s=60))
    with pytest.raises(OSError):
        run(scheduler, plan_of(fast, slow), run_one, on_progress=save)
    assert scheduler.abandoned == (slow.key,), "the stop still running must keep its target"
    again = run(scheduler, plan_of(slow), run_one)
    assert again.outcomes[0].outcome is Outcome.SKIPPED
    deadline = time.monotonic() + 5
    while scheduler.abandoned and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scheduler.abandoned == ()


def test_mid_action_saves_are_merged_with_every_other_outcome() -> None:
    # An executor that records something durably before it acts (an intent) saves mid-action;
    # a concurrent action's outcome, saved meanwhile, must neither drop it nor be dropped by it.
    saved: list[set[str]] = []

    def save(memory: ControllerMemory) -> None:
        saved.append(set(memory.done))

    scheduler = ActionScheduler(Limits(max_concurrent=2, max_age_s=60))
    save_mid_action = scheduler.saver(save)
    slow, fast = action(ActionKind.STOP_CONTAINER, "slow"), action(ActionKind.STOP_CONTAINER, "fast")

    def run_one(plan: Plan, memory: ControllerMemory, now: datetime) -> ExecutionReport:
        (a,) = plan.actions
        if a is slow:
            save_mid_action(plan.memory.with_done("intent:slow", now))
            time.sleep(0.4)
        else:
            time.sleep(0.1)
        # The final memory is built from the memory the action was given, as the executor does.
        out = ActionOutcome(key=a.key, kind=a.kind, reason=a.reason, target=a.target, outcome=Outcome.DONE)
        return ExecutionReport(outcomes=(out,), memory=plan.memory.with_done(a.key, now))

    report = run(scheduler, plan_of(slow, fast), run_one, on_progress=save)
    assert saved[0] == {"intent:slow"}
    assert saved[1] == {"intent:slow", fast.key}, "the fast outcome's save dropped the slow one's record"
    assert saved[-1] == {fast.key, slow.key}, "the record written mid-action is closed by its outcome"
    assert set(report.memory.done) == {fast.key, slow.key}
    # Outside a run the saver is the plain save.
    save_mid_action(ControllerMemory().with_done("alone", b.T0))
    assert saved[-1] == {"alone"}


def test_an_abandoned_action_may_not_save_its_record() -> None:
    release = threading.Event()
    refused: list[OSError] = []
    scheduler = ActionScheduler(
        Limits(max_concurrent=1, max_age_s=1e9), monotonic=lambda: time.monotonic() * 500
    )
    save_mid_action = scheduler.saver(lambda _m: None)
    hung = action(ActionKind.STOP_CONTAINER, "hung", timeout_s=60)

    def run_one(plan: Plan, memory: ControllerMemory, now: datetime) -> ExecutionReport:
        release.wait(10)  # stuck before it recorded anything, until after it was abandoned
        try:
            save_mid_action(plan.memory.with_done("intent:hung", now))
        except OSError as exc:
            refused.append(exc)
        return Recorder(seconds=0)(plan, memory, now)

    report = run(scheduler, plan_of(hung), run_one)
    assert report.outcomes[0].outcome is Outcome.FAILED
    release.set()
    deadline = time.monotonic() + 5
    while scheduler.abandoned and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(refused) == 1 and "abandoned" in str(refused[0])


def test_an_abandoned_stop_is_recorded_once_by_itself_not_by_the_next_passes_recovery(
    tmp_path: Path,
) -> None:
    # A stop hung in the engine past its deadline is abandoned, its intent left open (saved before
    # the stop began) while its thread goes on. The next pass's recovery must not take that intent
    # for one a crash left: it would record the stop "not carried out" (the container is still
    # running), and the engine's stop, ending later, would record it done as well.
    host = FakeHost(term_ignored_s=0.0)
    hung = host.add("idle-hung")
    controller = make_controller(tmp_path, host, spec(maxActionAge="1h"))
    # As the daemon wires it: the intent is saved mid-action, and deadlines pass 200 times faster.
    scheduler = ActionScheduler(monotonic=lambda: time.monotonic() * 200)
    controller.scheduler = scheduler
    controller.executor = RealExecutor(
        host.client,
        controller.event_log,
        RecordingNotifier(),
        controller.settings.ledger,
        clock=host.clock,
        save_memory=scheduler.saver(controller.store.save),
    )
    host.stop_gate.clear()  # the engine does not answer the stop until released
    try:
        first = until_stops(controller, host)
        (stopped,) = (o for o in first.report.outcomes if o.kind is ActionKind.STOP_CONTAINER)
        assert stopped.outcome is Outcome.FAILED and "past its deadline" in stopped.detail
        assert scheduler.abandoned == (stopped.key,)
        assert stopped.key in controller.memory.intents, "the stop's intent is saved, and open"
        host.advance(PASS_EVERY_S)
        controller.run_pass()  # the stop is still in flight
    finally:
        host.stop_gate.set()
    wait_until_no_abandoned(scheduler)
    host.advance(PASS_EVERY_S)
    controller.run_pass()
    assert hung.name not in host.containers, "the engine carried the stop (and removal) out"
    closing = [
        e
        for e in read_events(controller.settings.events_log)
        if e["details"].get("key") == stopped.key and e["details"].get("phase") is not None
    ]
    assert [(e["event_type"], e["details"]["phase"]) for e in closing] == [
        ("maintenance.idle_kill", "done")
    ], "one stop, one outcome: the one the stop itself recorded"
    assert controller.memory.intents == {}
