"""A forward wall-clock step survives a lost memory: the daemon writes it to the event log and the
salvage rebuilds ``clock_steps`` from it, so that the planner does not count the step as hold time,
reservation time or runtime for the records it starts afresh.

The double fault: the wall clock steps forward 2 h (a pass records it), then ``memory.json`` is lost
(corrupt, deleted, restored from an old backup). Without the steps, a container stopped a minute
before the step looks 2 h stopped and is removed at once, a ledger row written during an image pull
looks past its reservation window and is released, a max-runtime stop comes 2 h early.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controller.act.events import EventType, format_line, tail
from controller.act.salvage import memory_from_event_log, memory_from_events, not_older_than_the_log
from controller.memory import ClockStep, ControllerMemory
from controller.plan.clock import STEP_BACK, STEP_FORWARD, clock_step_details
from controller.plan.types import ActionKind, DeferReason, Plan, Reason
from controller.snapshot import ContainerObs, Domain, Snapshot
from tests.fixtures import builders as b

MONO_AT_START = 50_000.0
STEP = 2 * b.HOUR
DAY = 24 * b.HOUR
WINDOW = timedelta(minutes=5)  # the test policy's reservation window


class LostMemoryHost:
    """Passes of the real planner on one host; the wall clock is ``offset_s`` ahead of real time.

    Between passes it writes the ``controller.clock_step`` lines the daemon writes (the loop:
    ``clock_step_details`` of the memories before and after a pass), and :meth:`lose_memory`
    replaces the memory with the one the salvage rebuilds from them."""

    def __init__(self, policy: Any = None) -> None:
        self.runner = b.Passes(b.desired(policy or b.policy()))
        self.offset_s = 0.0
        self.events: list[dict[str, Any]] = []

    def wall(self, true_s: float) -> datetime:
        return b.T0 + timedelta(seconds=true_s + self.offset_s)

    def observe(self, true_s: float, containers: list[ContainerObs], **kw: Any) -> Plan:
        snap = b.snapshot(observed_at=self.wall(true_s), containers=containers, gpus=[b.gpu(0)], **kw)
        snap = snap.model_copy(update={"observed_monotonic_s": MONO_AT_START + true_s})
        before = self.runner.memory
        p = self.runner.run(snap)
        self._log(before, p.memory, snap)
        return p

    def _log(self, before: ControllerMemory, after: ControllerMemory, snap: Snapshot) -> None:
        details = clock_step_details(before, after, snap.observed_at)
        if details is not None:
            line = format_line(
                EventType.CLOCK_STEP,
                user=None,
                source="ds01-controller",
                details=details,
                at=snap.observed_at,
            )
            self.events.append(json.loads(line))

    def lose_memory(self, true_s: float) -> None:
        self.runner.memory = memory_from_events(self.events, self.wall(true_s))


# --- (a) a stopped GPU container keeps its hold -------------------------------------------------


def test_a_step_before_the_memory_was_lost_is_not_hold_time() -> None:
    # A GPU container (30 min hold) stopped a real minute before the first pass; the wall clock steps
    # forward 2 h before the second; the memory is lost after it. A real 10 minutes on, its hold has
    # 20 minutes to run: not removed. A real 31 minutes after its stop, it is.
    h = LostMemoryHost(b.policy(gpu_hold_after_stop_s=30 * b.MIN))
    train = b.exited(
        "train", gpus=[b.GPU0], started_at=b.T0 - timedelta(hours=1), finished_at=b.T0 - timedelta(minutes=1)
    )
    h.observe(0, [train])
    h.offset_s = STEP
    h.observe(30, [train])
    assert [e["details"]["direction"] for e in h.events] == [STEP_FORWARD]
    h.lose_memory(60)
    assert h.runner.memory.containers == {}
    ten = h.observe(9 * 60, [train])
    assert b.removed(ten) == [], "removed 10 real minutes after its stop, the step counted as hold time"
    (d,) = [d for d in ten.deferred if d.target.container == "train"]
    assert d.why == DeferReason.NOT_DUE
    assert d.due_at == b.T0 - timedelta(minutes=1) + timedelta(minutes=30) + timedelta(seconds=STEP)
    assert d.evidence["clock_step_discount_s"] == STEP
    assert b.removed(h.observe(30 * 60, [train])) == ["train"]


def test_docker_down_at_the_first_pass_after_the_loss_keeps_the_steps_for_its_return() -> None:
    # A GPU container held two days, stopped a real minute before the first pass; the step, then
    # the memory lost two real days later, and the first pass after the loss finds Docker down. The
    # container's record starts when Docker answers again, a real 30 minutes before its hold ends:
    # the step is still not hold time then. A real two days after its stop, it is removed.
    h = LostMemoryHost(b.policy(gpu_hold_after_stop_s=2 * DAY, container_hold_after_stop_s=2 * DAY))
    finished = b.T0 - timedelta(minutes=1)
    train = b.exited("train", gpus=[b.GPU0], started_at=b.T0 - timedelta(hours=1), finished_at=finished)
    h.observe(0, [train])
    h.offset_s = STEP
    h.observe(30, [train])
    h.lose_memory(2 * DAY - 40 * 60)
    down = h.observe(2 * DAY - 35 * 60, [], down=[Domain.DOCKER])
    assert b.removed(down) == []
    assert h.runner.memory.clock_steps == (ClockStep(seen_at=h.wall(30), step_s=STEP),)
    back = h.observe(2 * DAY - 30 * 60, [train])
    assert b.removed(back) == [], "removed a real 29 minutes before its hold ends: the step counted"
    (d,) = [d for d in back.deferred if d.target.container == "train"]
    assert d.due_at == finished + timedelta(days=2, seconds=STEP)
    assert d.evidence["clock_step_discount_s"] == STEP
    assert b.removed(h.observe(2 * DAY, [train])) == ["train"]


def test_a_backup_restored_after_a_reboot_keeps_the_hold_of_a_container_it_saw_stopped(
    tmp_path: Path,
) -> None:
    # The backup saw the GPU container stopped (30 min hold) a real minute before; the wall clock
    # steps forward 2 h, a pass logs it; the host reboots (the monotonic clock starts again, so no
    # pass sees the step as a rise of the offset), and the backup is restored. A real 10 minutes after
    # the stop its hold has 20 minutes to run: not removed.
    h = LostMemoryHost(b.policy(gpu_hold_after_stop_s=30 * b.MIN))
    finished = b.T0 - timedelta(minutes=1)
    train = b.exited("train", gpus=[b.GPU0], started_at=b.T0 - timedelta(hours=1), finished_at=finished)
    h.observe(0, [train])
    backup = h.runner.memory
    h.offset_s = STEP
    h.observe(30, [train])
    log = tmp_path / "events.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in h.events))
    h.runner.memory = not_older_than_the_log(backup, log, h.wall(8 * 60))
    after_boot = b.snapshot(observed_at=h.wall(9 * 60), containers=[train], gpus=[b.gpu(0)])
    p = h.runner.run(after_boot.model_copy(update={"observed_monotonic_s": 60.0}))
    assert b.removed(p) == [], "removed 10 real minutes after its stop, the step counted as hold time"
    (d,) = [d for d in p.deferred if d.target.container == "train"]
    assert d.due_at == finished + timedelta(minutes=30, seconds=STEP)


# --- (b) a ledger row keeps its reservation window ------------------------------------------------


def test_a_step_before_the_memory_was_lost_is_not_reservation_time() -> None:
    # The allocator wrote the row a real minute before the first pass (its container still being
    # pulled); the step, then the memory lost. A real 3 minutes after it was written the row is inside
    # its 5 min window: kept. A real 31 minutes on, released.
    h = LostMemoryHost()
    row = b.ledger_entry("train", allocated_at=b.T0 - timedelta(minutes=1))
    h.observe(0, [], ledger=b.ledger(row))
    h.offset_s = STEP
    h.observe(30, [], ledger=b.ledger(row))
    h.lose_memory(60)
    inside = h.observe(2 * 60, [], ledger=b.ledger(row))
    assert b.released(inside) == [], "released 3 real minutes after it was written"
    (d,) = [d for d in inside.deferred if d.rule == Reason.LEAKED_ALLOCATION]
    assert d.evidence["clock_step_discount_s"] == STEP
    assert d.due_at == b.T0 - timedelta(minutes=1) + WINDOW + timedelta(seconds=STEP)
    assert b.released(h.observe(31 * 60, [], ledger=b.ledger(row))) == ["train"]


def test_a_step_before_the_memory_was_lost_is_not_runtime() -> None:
    # Busy on its GPU, started a real 30 min before the first pass (2 h limit, warnings at 90 and
    # 108 min with 10 min of lead). The step, then the memory lost: no warning or stop until its true
    # runtime calls for them.
    h = LostMemoryHost(b.policy(max_runtime_s=2 * b.HOUR, idle_timeout_s=None))
    started = b.T0 - timedelta(minutes=30)

    def job(true_s: float) -> ContainerObs:
        sig = b.signals(h.wall(true_s), gpu_pct={b.GPU0: 99.0})
        return b.running("job", gpus=[b.GPU0], started_at=started, sig=sig)

    h.observe(0, [job(0)])
    h.offset_s = STEP
    h.observe(30, [job(30)])
    h.lose_memory(60)
    stops, warnings = [], []
    for minute in range(1, 100):
        p = h.observe(minute * 60, [job(minute * 60)])
        stops += [minute for a in p.actions if a.kind == ActionKind.STOP_CONTAINER]
        warnings += [minute for a in p.actions if a.reason == Reason.MAX_RUNTIME_WARNING]
    assert warnings and warnings[0] >= 60, f"warned after {30 + warnings[0]} real minutes of runtime"
    assert stops and stops[0] >= 90, f"stopped after {30 + stops[0]} real minutes of runtime"
    assert h.runner.memory.containers[b.cid("job")].runtime_discount_s == STEP


# --- (c) the daemon writes the step to the event log ----------------------------------------------


def test_the_daemon_writes_each_clock_step_to_the_event_log(tmp_path: Path) -> None:
    """Forward and back, once each, with the observation that saw it; nothing for a pass with no
    step or after a reboot. The salvage rebuilds the forward one from the log the daemon wrote."""
    from tests.fixtures.scripted import FailingExecutor, ScriptedObserver, make_controller

    def at(wall_s: float, mono_s: float) -> Snapshot:
        wall = b.T0 + timedelta(seconds=wall_s)
        return b.snapshot(observed_at=wall).model_copy(update={"observed_monotonic_s": mono_s})

    clock = [b.T0]
    observer = ScriptedObserver(at(0, MONO_AT_START))
    controller = make_controller(tmp_path, observer, clock, FailingExecutor())
    m = MONO_AT_START
    passes = [(0, m), (60, m + 60), (3720, m + 120), (3780, m + 180), (3240, m + 240), (3300, m + 300)]
    for wall_s, mono_s in [*passes, (9999, 5.0)]:
        clock[0] = b.T0 + timedelta(seconds=wall_s)
        observer.current = at(wall_s, mono_s)
        controller.run_pass()
    log = tmp_path / "events.jsonl"
    steps = [e["details"] for e in tail(log, 1000) if e["event_type"] == EventType.CLOCK_STEP]
    assert [(s["step_s"], s["direction"]) for s in steps] == [(3600.0, STEP_FORWARD), (600.0, STEP_BACK)]
    assert steps[0]["seen_at"] == (b.T0 + timedelta(seconds=3720)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rebuilt = memory_from_event_log(log, b.T0 + timedelta(seconds=4000))
    assert rebuilt.clock_steps == (ClockStep(seen_at=b.T0 + timedelta(seconds=3720), step_s=3600.0),)


# --- (d) the salvage round trip -------------------------------------------------------------------


def _step_line(seen_at: datetime, step_s: float, direction: str = STEP_FORWARD) -> dict[str, Any]:
    details = {"seen_at": seen_at, "step_s": step_s, "direction": direction}
    return json.loads(
        format_line(EventType.CLOCK_STEP, user=None, source="ds01-controller", details=details, at=seen_at)
    )


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_the_salvage_rebuilds_the_forward_steps_only() -> None:
    seen = NOW - timedelta(hours=1)
    events = [
        _step_line(NOW - timedelta(days=40), 3600.0),  # past the retention: gone
        _step_line(seen, 7200.0),
        _step_line(seen + timedelta(minutes=5), 600.0, STEP_BACK),  # never discounted
        {"event_type": EventType.CLOCK_STEP, "timestamp": "2026-03-01T11:30:00Z", "details": {"step_s": "x"}},
    ]
    assert memory_from_events(events, NOW).clock_steps == (ClockStep(seen_at=seen, step_s=7200.0),)
    assert memory_from_events([], NOW).clock_steps == ()


def test_an_unreadable_or_absent_log_behaves_as_before(tmp_path: Path) -> None:
    absent = memory_from_event_log(tmp_path / "none.jsonl", NOW)
    assert absent == ControllerMemory()
    unreadable = memory_from_event_log(tmp_path, NOW)  # a directory: cannot be read as a log
    assert unreadable.breaker.tripped and unreadable.clock_steps == ()
    kept = ControllerMemory(clock_steps=(ClockStep(seen_at=NOW, step_s=60.0),))
    assert not_older_than_the_log(kept, tmp_path, NOW) is kept


def test_a_memory_restored_from_a_backup_gains_the_steps_seen_after_it(tmp_path: Path) -> None:
    saved_at = NOW - timedelta(hours=3)
    backup = ControllerMemory(
        last_pass_at=saved_at,
        clock_offset_s=saved_at.timestamp() - MONO_AT_START,
        clock_monotonic_s=MONO_AT_START,
        clock_steps=(ClockStep(seen_at=saved_at - timedelta(hours=1), step_s=100.0),),
    )
    log = tmp_path / "events.jsonl"
    lines = [
        _step_line(saved_at - timedelta(hours=1), 100.0),  # the backup holds it already
        _step_line(saved_at - timedelta(minutes=30), 50.0),  # seen before the backup's last reading
        _step_line(NOW - timedelta(hours=1), 7200.0),
    ]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    restored = not_older_than_the_log(backup, log, NOW)
    assert restored.clock_steps == (
        ClockStep(seen_at=saved_at - timedelta(hours=1), step_s=100.0),
        ClockStep(seen_at=NOW - timedelta(hours=1), step_s=7200.0),
    )


def test_a_record_of_an_earlier_start_rebuilt_from_the_log_does_not_make_the_step_hold_time() -> None:
    # The log holds a restart's mark for an earlier start of the container (stopped by a reboot a
    # week ago, started again since by its owner, stopped a real minute before the first pass). The
    # step, then the memory lost: the rebuilt record of that earlier start is not a record of this
    # start, which gathered no step. A real 10 minutes after its stop its hold has 20 minutes to run.
    h = LostMemoryHost(b.policy(gpu_hold_after_stop_s=30 * b.MIN))
    finished = b.T0 - timedelta(minutes=1)
    train = b.exited("train", gpus=[b.GPU0], started_at=b.T0 - timedelta(hours=1), finished_at=finished)
    mark = {
        "container": "train",
        "container_id": train.id,
        "started_at": b.T0 - timedelta(days=8),
        "restart_at": b.T0 - timedelta(days=7),
    }
    line = format_line(EventType.RESTART_STOP, user=None, source="ds01-controller", details=mark, at=b.T0)
    h.events.append(json.loads(line))
    h.observe(0, [train])
    h.offset_s = STEP
    h.observe(30, [train])
    h.lose_memory(60)
    assert h.runner.memory.containers[train.id].started_at == b.T0 - timedelta(days=8)
    ten = h.observe(9 * 60, [train])
    assert b.removed(ten) == [], "removed 10 real minutes after its stop, the step counted as hold time"
    (d,) = [d for d in ten.deferred if d.target.container == "train"]
    assert d.due_at == finished + timedelta(minutes=30, seconds=STEP)
    assert b.removed(h.observe(30 * 60, [train])) == ["train"]
