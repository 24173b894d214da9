"""Max runtime across wall-clock steps (issue 11's risk "a forward clock step").

Runtime is ``now - StartedAt`` on the wall clock; the observer also reads the monotonic clock
(``Snapshot.observed_monotonic_s``), which a wall-clock step does not move. A forward step is no
runtime (and no warning lead time); real time while the daemon was down is runtime.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from controller.memory import ControllerMemory
from controller.plan.clock import STEP_TOLERANCE_S, check_clock
from controller.plan.types import ActionKind, Plan, Reason
from controller.snapshot import ContainerObs, Domain, Snapshot
from tests.fixtures import builders as b

LIMIT = b.policy(max_runtime_s=2 * b.HOUR, idle_timeout_s=None)  # warnings at 90/108 min, lead 10 min
MONO_AT_START = 50_000.0


class Host:
    """True time since the container's start, the wall clock's offset from it, the passes."""

    def __init__(self) -> None:
        self.true_s = 0.0
        self.offset_s = 0.0  # wall = T0 + true + offset
        self.runner = b.Passes(b.desired(LIMIT))
        self.stops_at: list[float] = []  # true seconds
        self.warnings_at: list[float] = []

    def observe(self, *, monotonic: bool = True) -> Plan:
        wall = b.T0 + timedelta(seconds=self.true_s + self.offset_s)
        sig = b.signals(wall, gpu_pct={b.GPU0: 99.0})
        job = b.running("job", gpus=[b.GPU0], started_at=b.T0, sig=sig)
        snap = b.snapshot(observed_at=wall, containers=[job], gpus=[b.gpu(0)])
        if monotonic:
            snap = snap.model_copy(update={"observed_monotonic_s": MONO_AT_START + self.true_s})
        p = self.runner.run(snap)
        for a in p.actions:
            if a.reason == Reason.MAX_RUNTIME_EXCEEDED and a.kind == ActionKind.STOP_CONTAINER:
                self.stops_at.append(self.true_s)
            if a.reason == Reason.MAX_RUNTIME_WARNING:
                self.warnings_at.append(self.true_s)
        return p

    def passes(self, until_min: float, every_s: float = 60.0) -> None:
        while self.true_s + every_s <= until_min * 60:
            self.true_s += every_s
            self.observe()


def test_forward_clock_steps_do_not_count_as_runtime() -> None:
    # Busy on its GPU; after 10 real minutes the wall clock steps forward 1 h, three times (one
    # pass apart). Main stopped it 2 real minutes after the steps (wall runtime over 3 h).
    h = Host()
    h.observe()
    h.passes(10)
    for _ in range(3):
        h.offset_s += b.HOUR
        h.true_s += 60
        h.observe()
    h.passes(140)
    assert h.warnings_at[0] >= 90 * 60  # 75 % of 2 h of true runtime
    assert h.stops_at and h.stops_at[0] >= 2 * b.HOUR  # stopped, but not before 2 h of true runtime
    assert h.stops_at[0] <= 2 * b.HOUR + 60
    assert h.runner.memory.containers[b.cid("job")].runtime_discount_s == 3 * b.HOUR


def test_a_step_after_the_warning_keeps_the_lead_time() -> None:
    # The daemon was down from real minute 80 to 125 (real time: runtime). The pass at 125 finds
    # the stop due and warns first (10 minutes of lead); then the wall clock steps forward 1 h.
    # The lead is counted in real time: no stop before real minute 135.
    h = Host()
    h.observe()
    h.passes(80)
    h.true_s = 125 * 60
    h.observe()
    assert h.warnings_at == [125 * 60] and not h.stops_at
    h.offset_s += b.HOUR
    h.passes(140)
    assert h.stops_at and h.stops_at[0] == 135 * 60


def test_daemon_down_gap_still_counts_as_runtime() -> None:
    # Daemon down for 3 h: wall and monotonic clocks both advance. That is real runtime: the next
    # pass warns at once (stop due) and the stop follows after the lead, not 3 h later.
    h = Host()
    h.observe()
    h.passes(10)
    h.true_s += 3 * b.HOUR
    h.observe()
    assert h.warnings_at == [h.true_s]
    h.passes(210)
    assert h.stops_at[0] == (190 + 10) * 60
    assert h.runner.memory.containers[b.cid("job")].runtime_discount_s == 0.0


def test_unknown_monotonic_reading_counts_wall_time_as_runtime() -> None:
    # No monotonic reading (an observation at a given time): nothing is discounted; the wall clock
    # is all there is, and the gap is runtime.
    h = Host()
    h.observe(monotonic=False)
    h.true_s += 3 * b.HOUR
    h.observe(monotonic=False)
    assert h.warnings_at == [3 * b.HOUR]
    h.true_s += 10 * 60
    h.observe(monotonic=False)
    assert h.stops_at == [h.true_s]


def test_backward_then_forward_step_ends_the_allowance_late_never_early() -> None:
    # The clock steps back 1 h (no discount: the allowance only grows), then NTP steps it forward
    # 1 h. The forward step is a step for every time written while the clock was behind; this
    # container started before the backward step, so it gets the correction too (capped at the
    # wall time since its start, 21 min) and runs that much past its limit, never less than it.
    h = Host()
    h.observe()
    h.passes(10)
    h.offset_s -= b.HOUR
    h.passes(20)
    h.offset_s += b.HOUR
    h.passes(200)
    assert h.runner.memory.containers[b.cid("job")].runtime_discount_s == 21 * 60
    assert h.stops_at and h.stops_at[0] == 2 * b.HOUR + 21 * 60


# --- a time written while the clock was behind, then the clock corrected forward ------------------
# The wall clock is stepped back 1 h (a wrong NTP source, `date -s`), a time is written while it is
# behind (a stop, a creation, a ledger row, a warning), then the clock is corrected forward 1 h. On
# the corrected clock that time looks 1 h older than it is: the correction is a step for it.

BEHIND = b.HOUR


def behind_then_corrected(
    true_times_s: list[float],
    containers: object,
    *,
    rows: object = (),
    policy: object = None,
    corrected_at_s: float = 300.0,
) -> list[Plan]:
    """Passes at the given true times; the clock is 1 h behind from true 60 s until
    ``corrected_at_s``. ``containers``/``rows``: (true seconds, wall time) -> what is listed."""
    runner = b.Passes(b.desired(policy or b.policy()))
    plans = []
    for true_s in true_times_s:
        offset_s = -BEHIND if 60 <= true_s < corrected_at_s else 0.0
        wall = b.T0 + timedelta(seconds=true_s + offset_s)
        snap = b.snapshot(
            observed_at=wall,
            containers=containers(true_s, wall),  # type: ignore[operator]
            gpus=[b.gpu(0), b.gpu(1)],
            ledger=b.ledger(*(rows(true_s) if callable(rows) else ())),
        ).model_copy(update={"observed_monotonic_s": MONO_AT_START + true_s})
        plans.append(runner.run(snap))
    return plans


def _behind(true_s: float) -> datetime:
    """The wall time at true second ``true_s`` while the clock is behind."""
    return b.T0 + timedelta(seconds=true_s) - timedelta(seconds=BEHIND)


def test_a_container_stopped_or_created_while_the_clock_was_behind_keeps_its_whole_hold() -> None:
    # ``train`` (GPU, 15 min hold) stopped at true 120 s, ``prep`` (30 min timeout) was created at
    # true 120 s, both on the behind clock; the clock is corrected at true 300 s.
    def listed(true_s: float, wall: datetime) -> list[ContainerObs]:
        if true_s < 120:
            return [
                b.running("train", gpus=[b.GPU0], started_at=b.T0 - timedelta(hours=2), sig=b.signals(wall))
            ]
        return [
            b.exited("train", gpus=[b.GPU0], started_at=b.T0 - timedelta(hours=2), finished_at=_behind(120)),
            b.created("prep", created_at=_behind(120)),
        ]

    times = [
        0.0,
        90.0,
        150.0,
        270.0,
        330.0,
        360.0,
        120 + 15 * 60 - 30,
        120 + 15 * 60 + 30,
        120 + 30 * 60 + 30,
    ]
    plans = behind_then_corrected(times, listed)
    by_time = dict(zip(times, plans, strict=True))
    for t, p in by_time.items():  # (the passes list them still: a due removal is planned again)
        due = sorted(name for name, hold in (("train", 15 * 60), ("prep", 30 * 60)) if t >= 120 + hold)
        assert removed(p) == due, f"at true {t} s, {t - 120} s after the stop and the creation"
    (d,) = [d for d in by_time[330.0].deferred if d.target.container == "train"]
    assert d.evidence["clock_step_discount_s"] == BEHIND


def test_a_row_written_while_the_clock_was_behind_keeps_its_reservation_window() -> None:
    row = b.ledger_entry("job2", b.GPU1, allocated_at=_behind(120))
    times = [0.0, 90.0, 150.0, 270.0, 330.0, 120 + 5 * 60 - 10, 120 + 5 * 60 + 30]
    plans = behind_then_corrected(times, lambda t, w: [], rows=lambda t: (row,) if t >= 120 else ())
    for t, p in zip(times[:-1], plans[:-1], strict=True):
        assert b.released(p) == [], f"released at true {t} s, {t - 120} s after it was written"
    assert b.released(plans[-1]) == ["job2"]


def test_a_warning_sent_while_the_clock_was_behind_keeps_its_lead() -> None:
    # ``job`` (max runtime 20 min; busy) started at true 120 s on the behind clock. Its first
    # warning (at 75 %) goes out behind; the clock is corrected 16 min after its start, making its
    # wall runtime 1 h more: neither its runtime nor its warning's lead is cut short.
    policy = b.policy(max_runtime_s=20 * 60, idle_timeout_s=None)

    def listed(true_s: float, wall: datetime) -> list[ContainerObs]:
        if true_s < 120:
            return []
        return [
            b.running(
                "job", gpus=[b.GPU0], started_at=_behind(120), sig=b.signals(wall, gpu_pct={b.GPU0: 99.0})
            )
        ]

    times = [0.0, 90.0, *[150.0 + 30 * i for i in range(120)]]
    stops, warned = [], []
    plans = behind_then_corrected(times, listed, policy=policy, corrected_at_s=120 + 16 * 60)
    for t, p in zip(times, plans, strict=True):
        if any(a.reason == Reason.MAX_RUNTIME_WARNING for a in p.actions):
            warned.append(t)
        if any(
            a.reason == Reason.MAX_RUNTIME_EXCEEDED and a.kind == ActionKind.STOP_CONTAINER for a in p.actions
        ):
            stops.append(t)
    assert warned and warned[0] < 120 + 16 * 60, "the first warning went out while the clock was behind"
    assert stops and stops[0] >= 120 + 20 * 60, f"stopped at true {stops[0] if stops else None} s"


def _snap(wall_s: float, mono: float | None) -> ControllerMemory:
    snap = b.snapshot(observed_at=b.T0 + timedelta(seconds=wall_s)).model_copy(
        update={"observed_monotonic_s": mono}
    )
    return b.Passes().run(snap).memory


def test_check_clock_reboot_and_tolerance() -> None:
    mem = _snap(0.0, MONO_AT_START)
    later = b.snapshot(observed_at=b.T0 + timedelta(hours=5))
    # A reboot: the monotonic clock restarted, so the offset moved by the downtime; no step.
    assert check_clock(later.model_copy(update={"observed_monotonic_s": 100.0}), mem).step_s == 0.0
    # Jitter within the tolerance is no step; a larger rise is.
    small = b.snapshot(observed_at=b.T0 + timedelta(seconds=60 + STEP_TOLERANCE_S))
    assert check_clock(small.model_copy(update={"observed_monotonic_s": MONO_AT_START + 60}), mem).step_s == 0
    big = b.snapshot(observed_at=b.T0 + timedelta(seconds=660))
    assert check_clock(big.model_copy(update={"observed_monotonic_s": MONO_AT_START + 60}), mem).step_s == 600
    # Unknown reading: the mark is kept for the next known one.
    unknown = check_clock(later, mem)
    assert (unknown.step_s, unknown.offset_s) == (0.0, mem.clock_offset_s)


def _boot_clock_stops(wall_runtime_s: float, running_for_s: float) -> list[Reason]:
    """Passes at the given runtimes and every minute for 15 more; the runtime reasons planned."""
    runner = b.Passes(b.desired(LIMIT))
    reasons: list[Reason] = []
    for extra_s in range(0, 16 * 60, 60):
        now = b.T0 + timedelta(seconds=wall_runtime_s + extra_s)
        sig = b.signals(now, gpu_pct={b.GPU0: 99.0})
        job = b.running("job", gpus=[b.GPU0], started_at=b.T0, sig=sig)
        job = job.model_copy(update={"running_for_s": running_for_s + extra_s})
        snap = b.snapshot(observed_at=now, containers=[job], gpus=[b.gpu(0)])
        reasons += [
            a.reason
            for a in runner.run(snap).actions
            if a.reason == Reason.MAX_RUNTIME_WARNING
            or (a.reason == Reason.MAX_RUNTIME_EXCEEDED and a.kind == ActionKind.STOP_CONTAINER)
        ]
    return reasons


def test_step_before_the_first_pass_is_not_runtime_on_the_boot_clock() -> None:
    # Running 1 h (boot clock, /proc), then the wall clock stepped +2 h before the daemon's first
    # pass: StartedAt is 3 h back on the wall clock. The boot-clock runtime wins: no stop, no warning.
    assert _boot_clock_stops(3 * b.HOUR, running_for_s=1 * b.HOUR) == []


def test_boot_clock_and_wall_clock_agreeing_over_the_limit_stop() -> None:
    # Both clocks say 3 h (e.g. a daemon-down gap: the boot clock runs on): warned at once,
    # stopped after the 10-minute lead.
    assert _boot_clock_stops(3 * b.HOUR, running_for_s=3 * b.HOUR)[:2] == [
        Reason.MAX_RUNTIME_WARNING,
        Reason.MAX_RUNTIME_EXCEEDED,
    ]


def test_a_plan_evaluated_later_still_ages_a_container_on_the_boot_clock() -> None:
    # `ds01ctl plan --at +2h` evaluates one observation at a later clock: the boot-clock runtime was
    # read at the observation, so the container is 1 h + 2 h old then, over the 2 h limit.
    from controller.plan.planner import plan

    observed = b.T0 + timedelta(hours=1)
    sig = b.signals(observed, gpu_pct={b.GPU0: 99.0})
    job = b.running("job", gpus=[b.GPU0], started_at=b.T0, sig=sig)
    job = job.model_copy(update={"running_for_s": 1.0 * b.HOUR})
    snap = b.snapshot(observed_at=observed, containers=[job], gpus=[b.gpu(0)])
    later = plan(snap, b.desired(LIMIT), ControllerMemory(), observed + timedelta(hours=2))
    assert [a.reason for a in later.actions] == [Reason.MAX_RUNTIME_WARNING]


# --- holds: a forward step is not hold time either ------------------------------------------------
# The stopped-container hold and the never-started timeout are measured on the wall clock from
# FinishedAt / Created. NTP correcting an RTC that was 2 h behind must not make a container its owner
# stopped (or created) a minute ago due for removal at once.


def held_host(*, finished_after_step: bool = False) -> list[Plan]:
    """Four passes, a real 30 s apart except the last (a real 30 min after the first): the wall
    clock steps forward 2 h between the first and the second. ``notebook`` (no GPU, 30 min hold)
    stopped a real minute before the first pass, or, with ``finished_after_step``, a real 10 s
    before the second; ``prep`` was created a real minute before the first and never started."""
    runner = b.Passes(b.desired(b.policy()))
    step = 2 * b.HOUR
    plans = []
    for true_s, offset_s in ((0.0, 0.0), (30.0, step), (60.0, step), (31 * 60.0, step)):
        wall = b.T0 + timedelta(seconds=true_s + offset_s)
        finished = b.T0 + timedelta(seconds=20 + step) if finished_after_step else b.T0 - timedelta(minutes=1)
        containers = [b.created("prep", created_at=b.T0 - timedelta(minutes=1))]
        if true_s > 0 or not finished_after_step:
            containers.append(
                b.exited("notebook", started_at=b.T0 - timedelta(hours=1), finished_at=finished)
            )
        else:
            containers.append(
                b.running("notebook", started_at=b.T0 - timedelta(hours=1), sig=b.signals(wall))
            )
        snap = b.snapshot(observed_at=wall, containers=containers).model_copy(
            update={"observed_monotonic_s": MONO_AT_START + true_s}
        )
        plans.append(runner.run(snap))
    return plans


def removed(p: Plan) -> list[str]:
    return sorted(a.target.container or "" for a in p.actions if a.kind == ActionKind.REMOVE_CONTAINER)


def test_a_forward_step_is_not_hold_time() -> None:
    first, stepped, next_pass, half_an_hour = held_host()
    assert removed(first) == removed(stepped) == removed(next_pass) == [], "removed 90 s after its stop"
    d = {d.target.container: d for d in stepped.deferred}
    assert d["notebook"].due_at == b.T0 - timedelta(minutes=1) + timedelta(minutes=30, hours=2)
    assert d["notebook"].evidence["clock_step_discount_s"] == 2 * b.HOUR
    assert d["prep"].due_at == b.T0 - timedelta(minutes=1) + timedelta(minutes=30, hours=2)
    # Half an hour of real time after the stop, both are due, the step notwithstanding.
    assert removed(half_an_hour) == ["notebook", "prep"]


def test_a_stop_made_after_the_step_takes_none_of_it() -> None:
    # It stopped between the step and the next pass: only the (real) 10 s since its stop are
    # discounted, and its hold still ends a real 30 min after the stop.
    stepped = held_host(finished_after_step=True)[1]
    (d,) = [d for d in stepped.deferred if d.target.container == "notebook"]
    assert d.evidence["clock_step_discount_s"] == 10.0
    assert d.due_at == b.T0 + timedelta(hours=2, minutes=30, seconds=30)


def test_a_step_while_docker_is_away_is_not_hold_time_either() -> None:
    runner = b.Passes(b.desired(b.policy()))
    notebook = b.exited(
        "notebook", started_at=b.T0 - timedelta(hours=1), finished_at=b.T0 - timedelta(minutes=1)
    )

    def observe(true_s: float, offset_s: float, *, docker: bool = True) -> Plan:
        wall = b.T0 + timedelta(seconds=true_s + offset_s)
        snap = (
            b.snapshot(observed_at=wall, containers=[notebook])
            if docker
            else b.snapshot(observed_at=wall, down=[Domain.DOCKER])
        )
        return runner.run(snap.model_copy(update={"observed_monotonic_s": MONO_AT_START + true_s}))

    observe(0, 0)
    observe(30, 2 * b.HOUR, docker=False)  # the step, seen while Docker does not answer
    back = observe(60, 2 * b.HOUR)
    assert removed(back) == []
    assert runner.memory.containers[notebook.id].hold_discount_s == 2 * b.HOUR


class AwayHost:
    """Passes of one container ``notebook`` (no GPU, 30 min hold), a real 30 s apart unless told,
    some with Docker away; the wall clock is ``offset_s`` ahead of real time."""

    def __init__(self) -> None:
        self.runner = b.Passes(b.desired(b.policy()))
        self.true_s = 0.0
        self.offset_s = 0.0

    def wall(self, true_s: float) -> datetime:
        return b.T0 + timedelta(seconds=true_s + self.offset_s)

    def observe(self, notebook: ContainerObs | None, *, after_s: float = 30.0) -> Plan:
        self.true_s += after_s
        wall = self.wall(self.true_s)
        if notebook is None:
            snap = b.snapshot(observed_at=wall, down=[Domain.DOCKER])
        else:
            snap = b.snapshot(observed_at=wall, containers=[notebook])
        return self.runner.run(snap.model_copy(update={"observed_monotonic_s": MONO_AT_START + self.true_s}))


def test_a_container_that_stopped_unseen_while_docker_was_away_keeps_its_hold_across_a_step() -> None:
    # Running at the last listing; stopped (an engine restart) while Docker did not answer, and
    # the clock stepped 2 h meanwhile. Listed again a real 50 s after its stop: not due.
    h = AwayHost()
    started = b.T0 - timedelta(hours=1)
    h.observe(b.running("notebook", started_at=started, sig=b.signals(h.wall(30))))
    stopped_at = h.wall(40)
    h.offset_s = 2 * b.HOUR
    h.observe(None)
    exited = b.exited("notebook", started_at=started, finished_at=stopped_at)
    back = h.observe(exited)
    assert removed(back) == []
    (d,) = [d for d in back.deferred if d.target.container == "notebook"]
    assert d.due_at == stopped_at + timedelta(hours=2, minutes=30)
    # Its hold still ends a real 30 min after the stop.
    assert removed(h.observe(exited, after_s=30 * 60)) == ["notebook"]


def test_a_container_started_and_stopped_again_unseen_keeps_what_was_gathered_meanwhile() -> None:
    # Stopped at the last listing; while Docker was away its owner started it again and it stopped
    # (a new StartedAt: a fresh memory), and the clock stepped 2 h. Not due a real minute later.
    h = AwayHost()
    h.observe(
        b.exited("notebook", started_at=b.T0 - timedelta(hours=3), finished_at=b.T0 - timedelta(hours=2))
    )
    restarted = b.exited("notebook", started_at=h.wall(40), finished_at=h.wall(45))  # before the step
    h.offset_s = 2 * b.HOUR
    h.observe(None)
    back = h.observe(restarted)
    assert removed(back) == []
    assert removed(h.observe(restarted, after_s=30 * 60)) == ["notebook"]


def test_a_container_running_through_a_step_while_docker_was_away_has_no_discount_for_a_later_stop() -> None:
    h = AwayHost()
    started = b.T0 - timedelta(hours=1)
    h.observe(b.running("notebook", started_at=started, sig=b.signals(h.wall(30))))
    h.offset_s = 2 * b.HOUR
    h.observe(None)
    h.observe(b.running("notebook", started_at=started, sig=b.signals(h.wall(90))))
    assert h.runner.memory.containers[b.cid("notebook")].hold_discount_s == 0.0
    stopped_at = h.wall(100)
    exited = b.exited("notebook", started_at=started, finished_at=stopped_at)
    (d,) = [d for d in h.observe(exited).deferred if d.target.container == "notebook"]
    assert d.due_at == stopped_at + timedelta(minutes=30)
    assert "clock_step_discount_s" not in d.evidence


# --- ledger rows: a forward step is not reservation time either -----------------------------------
# An allocator writes its ledger row before `docker run` creates the container (and pulls the image):
# the row is released only once its reservation window (from allocated_at on the wall clock; 5 min
# in the test policy, 30 min built in) has passed with no container for it. NTP moving the clock on
# 2 h must not release a row written a minute ago, for a container still being pulled: its GPU
# would be handed to someone else.
WINDOW = timedelta(minutes=5)


def ledger_host(*, written_after_step: bool = False, also_at_true_s: float | None = None) -> list[Plan]:
    """Passes a real 30 s apart, then one a real 31 min after the first (and one at
    ``also_at_true_s``): the wall clock steps forward 2 h between the first and the second. The row
    for ``train`` (no such container yet) was written a real minute before the first pass, or, with
    ``written_after_step``, a real 10 s before the second (on the stepped clock)."""
    runner = b.Passes(b.desired(b.policy()))
    step = 2 * b.HOUR
    written = b.T0 + timedelta(seconds=20 + step) if written_after_step else b.T0 - timedelta(minutes=1)
    row = b.ledger_entry("train", allocated_at=written)
    times = [0.0, 30.0, 60.0, 31 * 60.0, *([also_at_true_s] if also_at_true_s is not None else [])]
    plans = []
    for true_s in times:
        offset_s = step if true_s > 0 else 0.0
        wall = b.T0 + timedelta(seconds=true_s + offset_s)
        rows = (row,) if true_s > 0 or not written_after_step else ()
        snap = b.snapshot(observed_at=wall, gpus=[b.gpu(0)], ledger=b.ledger(*rows)).model_copy(
            update={"observed_monotonic_s": MONO_AT_START + true_s}
        )
        plans.append(runner.run(snap))
    return plans


def test_a_forward_step_is_not_reservation_time() -> None:
    first, stepped, next_pass, half_an_hour = ledger_host()
    assert b.released(first) == b.released(stepped) == b.released(next_pass) == [], (
        "released 90 s after it was written"
    )
    (d,) = [d for d in stepped.deferred if d.rule == Reason.LEAKED_ALLOCATION]
    assert d.evidence["reservation_window_s"] == WINDOW.total_seconds()
    assert d.due_at == b.T0 - timedelta(minutes=1) + WINDOW + timedelta(hours=2)
    assert d.evidence["clock_step_discount_s"] == 2 * b.HOUR
    assert "plus 2h the wall clock stepped forward" in d.message
    # Half an hour of real time later, the row is released, the step notwithstanding.
    assert b.released(half_an_hour) == ["train"]
    (a,) = [a for a in half_an_hour.actions if a.kind == ActionKind.RELEASE_ALLOCATION]
    assert a.due_at == d.due_at


def test_a_row_written_after_the_step_takes_only_the_time_since_it() -> None:
    # Written (on the stepped clock) 10 s before the pass that saw the step: only those 10 s are
    # discounted, and its window still ends a real 5 min after it was written.
    stepped = ledger_host(written_after_step=True)[1]
    (d,) = [d for d in stepped.deferred if d.rule == Reason.LEAKED_ALLOCATION]
    assert d.evidence["clock_step_discount_s"] == 10.0
    assert d.due_at == b.T0 + timedelta(hours=2, seconds=30) + WINDOW


def test_a_step_is_kept_only_while_a_row_written_before_it_may_be_reserved() -> None:
    *_, half_an_hour, later = ledger_host(also_at_true_s=5 * b.HOUR)
    (kept,) = half_an_hour.memory.clock_steps
    assert (kept.step_s, kept.seen_at) == (2 * b.HOUR, b.T0 + timedelta(seconds=30, hours=2))
    # The window and the 2 h step after it was seen, no row written before it is reserved.
    assert later.memory.clock_steps == ()
    loaded = ControllerMemory.model_validate_json(half_an_hour.memory.model_dump_json())
    assert loaded.clock_steps == half_an_hour.memory.clock_steps


# --- the journal says when the clock stepped ---------------------------------------------------------


def test_the_daemon_logs_each_clock_step_once(tmp_path: Path) -> None:
    """Every allowance moves with a step (later, never earlier): an admin asking why a hold or a
    stop came late finds the step in the journal, forward or back, once, and nothing for a pass
    with none or after a reboot."""
    from loguru import logger

    from tests.fixtures.scripted import FailingExecutor, ScriptedObserver, make_controller

    def at(wall_s: float, mono_s: float) -> Snapshot:
        wall = b.T0 + timedelta(seconds=wall_s)
        return b.snapshot(observed_at=wall).model_copy(update={"observed_monotonic_s": mono_s})

    clock = [b.T0]
    observer = ScriptedObserver(at(0, MONO_AT_START))
    controller = make_controller(tmp_path, observer, clock, FailingExecutor())
    lines: list[str] = []
    sink = logger.add(
        lines.append, level="WARNING", format="{message}", filter=lambda r: "clock:" in r["message"]
    )
    try:
        # (wall, monotonic) per pass, 60 s of real time apart: an hour forward, 10 min back, then a
        # reboot (the monotonic clock restarts: the offset moves, and that is no step).
        m = MONO_AT_START
        passes = [(0, m), (60, m + 60), (3720, m + 120), (3780, m + 180), (3240, m + 240), (3300, m + 300)]
        for wall_s, mono_s in [*passes, (9999, 5.0)]:
            clock[0] = b.T0 + timedelta(seconds=wall_s)
            observer.current = at(wall_s, mono_s)
            controller.run_pass()
    finally:
        logger.remove(sink)
    assert [line.split(";")[0] for line in lines] == [
        "clock: the wall clock stepped forward 3600s since the last pass",
        "clock: the wall clock stepped back 600s since the last pass",
    ], lines
