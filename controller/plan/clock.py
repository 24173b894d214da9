"""Forward wall-clock steps, told apart from real time by the monotonic clock (pure).

Runtime is measured on the wall clock (``now - StartedAt``): a forward step (NTP correcting a
wrong RTC, a VM restored from a snapshot) would count as runtime that never happened and cut the
max-runtime allowance short. The observer reads ``CLOCK_MONOTONIC`` with the wall clock
(``Snapshot.observed_monotonic_s``); it does not jump with the wall clock, so their difference
(the *offset*) rises by the size of a forward step, and stays put when real time passes -- also
across a daemon outage, which is runtime.

The memory keeps the offset the last pass read (``ControllerMemory.clock_offset_s``): a rise by
more than :data:`STEP_TOLERANCE_S` since then is a forward step. A backward step lowers the offset
and is not discounted (it lengthens every allowance, erring on the side of not acting). The forward
step that later undoes it *is* a step: a time written while the clock was behind (a container
stopped, started or created then, a ledger row written then) would otherwise look older by the
whole correction, and a hold or allowance would end that much early. A time written before the
backward step gets the correction too, so its allowance ends late by the size of the backward step
(never early). A clock stepped back and forth again and again slows every time the controller keeps
by each forward step. A monotonic reading lower than the last one means the host rebooted (the
monotonic clock restarts): the offset starts afresh (a reboot restarts every container anyway). An
unknown reading (an old snapshot, a given time) records nothing and keeps the last offset.

Every container known at the step gets it as ``runtime_discount_s`` (capped at the time since
its start, for one started during an unobserved span that may have come after the step) and its
delivered warnings move with the clock, so a warning's lead time is not cut short either. A
stopped container, or one never started, also gets it as ``hold_discount_s`` (capped at the time
since its FinishedAt or Created): a step is not hold time, and a container stopped a minute ago is
not removed at once because the wall clock jumped past its hold.

A ledger row's reservation window runs from its ``allocated_at``, written by the allocator on the
wall clock, and the row is not in the memory: the steps themselves are kept
(``ControllerMemory.clock_steps``, while a row they concern may still be inside its window) and a
row gets each step seen after its ``allocated_at``, capped at the time from then to the pass that
saw it (:func:`step_discount_s`). A row written before the step gets it whole, one written between
the step and that pass only that much: a release comes later, never earlier.

The daemon writes each step to the event log as well (``controller.clock_step``,
:func:`clock_step_details`): a memory lost or restored from a backup rebuilds ``clock_steps`` from
it (:mod:`controller.act.salvage`), and a container with no record of its own (every one, after a
lost memory) starts its hold and runtime discounts from the steps seen after its hold began or it
started (:func:`step_discount_s`): a step is not hold time, runtime or reservation time after a lost
memory either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.memory import ClockStep, ContainerMemory, ControllerMemory
from controller.snapshot import Snapshot

STEP_TOLERANCE_S = 5.0
# The direction of a step in its ``controller.clock_step`` event (clock_step_details).
STEP_FORWARD, STEP_BACK = "forward", "back"


@dataclass(frozen=True, slots=True)
class ClockCheck:
    step_s: float  # forward step since the last pass; 0.0: none (or unknown)
    offset_s: float | None  # the offset to remember
    monotonic_s: float | None


def check_clock(snapshot: Snapshot, memory: ControllerMemory) -> ClockCheck:
    mono = snapshot.observed_monotonic_s
    if mono is None:
        return ClockCheck(0.0, memory.clock_offset_s, memory.clock_monotonic_s)
    offset = snapshot.observed_at.timestamp() - mono
    last = memory.clock_offset_s
    if last is None or memory.clock_monotonic_s is None or mono < memory.clock_monotonic_s:
        return ClockCheck(0.0, offset, mono)  # first reading, or a reboot: a fresh start
    # Measured from the last pass, not from the highest offset seen: the forward step that undoes a
    # backward one is a step for every time written while the clock was behind.
    step_s = offset - last if offset - last > STEP_TOLERANCE_S else 0.0
    return ClockCheck(step_s, offset, mono)


def clock_change_s(before: ControllerMemory, after: ControllerMemory) -> float:
    """The wall clock's step between two passes' memories: positive forward, negative back; 0.0 for
    none (within :data:`STEP_TOLERANCE_S`), an unknown reading or a reboot (the monotonic clock
    restarts). A forward one is the step the later pass recorded (:func:`check_clock`)."""
    was, now = before.clock_offset_s, after.clock_offset_s
    was_mono, now_mono = before.clock_monotonic_s, after.clock_monotonic_s
    if was is None or now is None or was_mono is None or now_mono is None or now_mono < was_mono:
        return 0.0
    change_s = now - was
    return change_s if abs(change_s) > STEP_TOLERANCE_S else 0.0


def clock_step_line(before: ControllerMemory, after: ControllerMemory) -> str | None:
    """The journal line for a wall-clock step between two passes' memories, or None.

    Every allowance the controller keeps moves with a step (later, never earlier), so an admin who
    wonders why a hold or a stop came late needs to see it: forward steps, and backward ones (whose
    correction is discounted later). A reboot (the monotonic clock restarts) or an unknown reading
    says nothing."""
    change_s = clock_change_s(before, after)
    if change_s > 0:
        return (
            f"clock: the wall clock stepped forward {change_s:.0f}s since the last pass; holds, "
            "runtimes, reservations and warning leads do not count the step"
        )
    if change_s < 0:
        return (
            f"clock: the wall clock stepped back {-change_s:.0f}s since the last pass; allowances "
            "run late until it is corrected, and the correction is not counted either"
        )
    return None


def clock_step_details(
    before: ControllerMemory, after: ControllerMemory, seen_at: datetime
) -> dict[str, object] | None:
    """The details of the ``controller.clock_step`` event for a step between two passes' memories
    (``seen_at``: the observation that saw it), or None: what a memory rebuilt from the event log
    keeps of the forward steps (:func:`controller.act.salvage.memory_from_events`), as the planner
    keeps them in ``clock_steps``. A backward step is written too, for the admin; it is not
    discounted (see the module)."""
    change_s = clock_change_s(before, after)
    if not change_s:
        return None
    return {
        "seen_at": seen_at,
        "step_s": abs(change_s),
        "direction": STEP_FORWARD if change_s > 0 else STEP_BACK,
    }


def with_clock_step(
    mem: ContainerMemory, step_s: float, now: datetime, hold_since: datetime | None = None
) -> ContainerMemory:
    """A container's memory after a forward step of ``step_s`` seen at ``now`` (wall, after it).

    ``hold_since``: where the container's hold runs from, for a stopped container (FinishedAt) or
    one never started (Created); the step, capped at the time since then (a stop made after the
    step took none of it), is not hold time either (``hold_discount_s``)."""
    if step_s <= 0:
        return mem
    update: dict[str, object] = {}
    if hold_since is not None:
        update["hold_discount_s"] = mem.hold_discount_s + _capped(step_s, now, hold_since)
    if mem.started_at is not None:
        shift = timedelta(seconds=step_s)
        update["runtime_discount_s"] = mem.runtime_discount_s + _capped(step_s, now, mem.started_at)
        update["warnings"] = {k: at + shift for k, at in mem.warnings.items()}
        if mem.announced:
            update["announced"] = {k: at + shift for k, at in mem.announced.items()}
    return mem.model_copy(update=update) if update else mem


def _capped(step_s: float, now: datetime, since: datetime) -> float:
    return min(step_s, max(0.0, (now - since).total_seconds()))


def recent_steps(
    steps: tuple[ClockStep, ...],
    clock: ClockCheck,
    seen_at: datetime,
    now: datetime,
    window_s: float,
    *,
    listed: bool = True,
) -> tuple[ClockStep, ...]:
    """The steps to keep after this pass: this pass's step added, and any step dropped once no row
    written before it can still be inside a reservation window of ``window_s`` (plus the step).

    ``listed``: this pass listed the containers. One that did not (Docker unavailable) drops none:
    a container with no record yet (every one, after a lost memory) starts its hold discount from
    the steps when it is next listed, however old they are by then."""
    if clock.step_s > 0:
        steps = (*steps, ClockStep(seen_at=seen_at, step_s=clock.step_s))
    if not steps or not listed:
        return steps
    return tuple(s for s in steps if s.seen_at + timedelta(seconds=window_s + s.step_s) >= now)


def step_discount_s(steps: tuple[ClockStep, ...], since: datetime) -> float:
    """How much of the wall time since ``since`` is forward steps: each step seen after it, capped
    at the time from ``since`` to the pass that saw it."""
    return sum(_capped(s.step_s, s.seen_at, since) for s in steps if s.seen_at > since)
