"""The planner: ``plan(snapshot, desired, memory, now) -> Plan``.

Compares one observed :class:`Snapshot` with desired state and the controller's memory and
returns every action to take now, every action held back (with why and until when), and the next
memory (new samples, streaks, sightings). Called by the daemon loop each pass and by
``ds01ctl plan``; the executors carry the actions out.

It must stay a pure function: no I/O, no clock reads (``now`` is an argument), no logging, and
deterministic -- containers, processes, GPUs and ledger rows are sorted before use, so the order
of the input never changes the plan. Each input collection is indexed once, so the cost is linear
in the size of the host.

Order of work:

1. fold the observation into memory (per container id; a restart starts a fresh record; a
   container gone from a *healthy* Docker view is forgotten, nothing is forgotten while Docker is
   unavailable);
2. container rules, per container in id order: created (rule 1), stopped (rule 2), idle (3) and
   max runtime (4) -- at most one stop per container, the max-runtime stop winning because it
   keeps the container (the hold rules then apply);
3. ledger rows and duplicate holders (rule 5), GPU processes and dirty GPUs (rule 6);
4. the safety gates (:mod:`controller.plan.safety`).
"""

from __future__ import annotations

import gc
from bisect import bisect_left, bisect_right
from collections import Counter
from datetime import UTC, datetime
from operator import attrgetter

from controller.memory import ClockStep, ContainerMemory, ControllerMemory
from controller.plan.clock import ClockCheck, check_clock, recent_steps, step_discount_s, with_clock_step
from controller.plan.context import Collector, PassContext, host_target, iso
from controller.plan.desired import DesiredState
from controller.plan.idle import Thresholds, advance, fresh_memory, mark_unobserved
from controller.plan.rules.aggregate import aggregate_caps
from controller.plan.rules.allocations import duplicate_holders, ledger_rows
from controller.plan.rules.cleanup import (
    STOPPED_STATES,
    created_never_started,
    restart_time,
    stopped_by_restart,
    stopped_hold,
)
from controller.plan.rules.lifecycle import idle_stop, runtime_stop
from controller.plan.rules.processes import gpu_processes
from controller.plan.rules.quotas import user_quotas
from controller.plan.rules.resources import report_limits, update_resources
from controller.plan.safety import apply_gates, removals_still_named
from controller.plan.types import Action, DeferReason, Deferred, Plan, Reason
from controller.plan.values import built
from controller.snapshot import ContainerObs, ContainerState, Domain, Snapshot
from desired_state.effective import EffectivePolicy

_FINISHED = frozenset({ContainerState.CREATED, ContainerState.EXITED, ContainerState.DEAD})
# The states the per-container loops test, read once: an enum member read from its class goes
# through the enum's metaclass, several times the cost of the comparison, on every container.
_RUNNING, _CREATED, _PAUSED = ContainerState.RUNNING, ContainerState.CREATED, ContainerState.PAUSED

CONTAINER_RULES = (
    Reason.CREATED_NEVER_STARTED,
    Reason.GPU_HOLD_EXPIRED,
    Reason.STOPPED_HOLD_EXPIRED,
    Reason.IDLE_TIMEOUT,
    Reason.MAX_RUNTIME_EXCEEDED,
)


def plan(snapshot: Snapshot, desired: DesiredState, memory: ControllerMemory, now: datetime) -> Plan:
    """Decide what to do now. Pure and deterministic; see the module docstring."""
    # A pass allocates tens of thousands of small objects that all live until the plan is
    # returned; generational GC would re-traverse the whole snapshot many times for nothing (more
    # than half the time of a 10,000-container pass). Collection resumes when the pass ends.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _plan(snapshot, desired, memory, now)
    finally:
        if gc_was_enabled:
            gc.enable()


def _plan(snapshot: Snapshot, desired: DesiredState, memory: ControllerMemory, now: datetime) -> Plan:
    ctx = PassContext.build(snapshot, now, desired.global_policy, memory)
    out = Collector()
    clock = check_clock(snapshot, memory)
    ctx.clock_steps = _steps_kept(ctx, clock)

    if ctx.docker_ok:
        _observe_containers(ctx, desired, clock)
        next_containers: dict[str, ContainerMemory] = ctx.cmem
        for c in ctx.containers:
            _container_rules(ctx, out, c)
        user_quotas(ctx, out)
        aggregate_caps(ctx, out)
        report_limits(ctx, out)
    else:
        next_containers = _docker_unavailable(ctx, out, clock)

    ledger_rows(ctx, out)
    duplicate_holders(ctx, out)
    procs = gpu_processes(ctx, out)
    gates = apply_gates(ctx, out)

    next_memory = built(
        ControllerMemory,
        {
            "schema_version": memory.schema_version,
            "containers": next_containers,
            "processes": procs.processes,
            "attempts": memory.attempts,
            "done": _without(memory.done, ctx.forget_done),
            "breaker": gates.breaker,
            "release_breaker": gates.release_breaker,
            "dirty_gpus": procs.dirty_gpus,
            # Only a pass that planned the containers: removals that fell due while Docker was away
            # were never planned, and are not a backlog (see removal_breaker).
            "last_pass_at": now if ctx.docker_ok else memory.last_pass_at,
            "clock_offset_s": clock.offset_s,
            "clock_monotonic_s": clock.monotonic_s,
            "clock_steps": ctx.clock_steps,
            "intents": memory.intents,  # the executor's records of actions in flight, carried unchanged
            "removed": removals_still_named(ctx),  # the executor's record of its removals
            # Taken by the first pass that lists the containers (_start_record), kept until one does.
            "rebuilt": {} if ctx.docker_ok else memory.rebuilt,
        },
    ).pruned(now)
    if ctx.docker_ok:
        # Containers listed before and not now are gone (a failed listing forgets nothing).
        next_memory = next_memory.without_containers(memory.containers.keys() - next_containers.keys())
    return Plan(
        observed_at=snapshot.observed_at,
        evaluated_at=now,
        actions=tuple(gates.actions),
        deferred=_in_order(gates.deferred),
        delivered_alerts=tuple(sorted(gates.delivered_alerts, key=lambda a: a.key)),
        memory=next_memory,
    )


def _steps_kept(ctx: PassContext, clock: ClockCheck) -> tuple[ClockStep, ...]:
    """The forward clock steps to keep after this pass (:func:`recent_steps`). A pass that listed no
    container (Docker unavailable) drops none: the containers listed next with no record (every one,
    after a lost memory) start their hold discounts from them (:func:`_with_steps_before`)."""
    window_s = ctx.glob.ledger_reservation_window_s.value
    return recent_steps(
        ctx.memory.clock_steps, clock, ctx.snapshot.observed_at, ctx.now, window_s, listed=ctx.docker_ok
    )


def _docker_unavailable(ctx: PassContext, out: Collector, clock: ClockCheck) -> dict[str, ContainerMemory]:
    """No container is touched and nothing is forgotten (a container missing from a failed listing
    is not a removed container). Nobody is watched meanwhile: the next sample of each container
    spans an unobserved period. Returns the containers' next memory."""
    snapshot = ctx.snapshot
    why = f"Docker unavailable at {iso(ctx.now)}"
    for rule in CONTAINER_RULES:
        out.defer(
            host_target(),
            rule,
            DeferReason.DOMAIN_UNAVAILABLE,
            f"Docker is unavailable ({snapshot.domain_error(Domain.DOCKER)}): no container action",
            evidence={"docker_error": snapshot.domain_error(Domain.DOCKER)},
        )
    return {
        cid: with_clock_step(
            mark_unobserved(m, why),
            clock.step_s,
            snapshot.observed_at,
            # Any of them may have stopped before the step, unseen: the whole step is not hold time
            # for any (capped at the time since its hold began when it is listed held again; a
            # container listed running drops it then: _hold_discount).
            _NEVER_BEFORE,
        )
        for cid, m in ctx.memory.containers.items()
    }


_HELD_STATES = frozenset({*STOPPED_STATES, ContainerState.CREATED})  # those with a hold to count
_NEVER_BEFORE = datetime.min.replace(tzinfo=UTC)


def _hold_since(c: ContainerObs) -> datetime | None:
    """Where a container's hold runs from: a stopped one's FinishedAt, a never-started one's Created."""
    if c.state in STOPPED_STATES:
        return c.finished_at
    return c.created_at if c.state == _CREATED else None


def _hold_discount(mem: ContainerMemory, prev: ContainerMemory, state: ContainerState) -> ContainerMemory:
    """A container not held now (running, paused, restarting) has no hold to discount: a discount
    gathered while Docker was away, or for an earlier stop, is dropped. One held again after a start
    nobody saw (Docker away) keeps what was gathered meanwhile: it may have stopped before a step
    then. (The rule caps the discount at the time since the hold began.)"""
    if state not in _HELD_STATES:
        return mem.model_copy(update={"hold_discount_s": 0.0}) if mem.hold_discount_s else mem
    if mem.started_at != prev.started_at and prev.hold_discount_s:
        return mem.model_copy(update={"hold_discount_s": prev.hold_discount_s + mem.hold_discount_s})
    return mem


def _with_steps_before(
    mem: ContainerMemory, c: ContainerObs, prev: ContainerMemory | None, steps: tuple[ClockStep, ...]
) -> ContainerMemory:
    """A fresh record's discounts from the steps earlier passes saw (``clock_steps``), for a record
    that did not gather them: a memory rebuilt from the event log (lost, corrupt) holds no records,
    and a step seen after a container's start or the start of its hold is not runtime or hold time.

    Runtime: a new start's discount begins at 0 (``fresh_memory``), so the steps seen after the start
    (while Docker was away, or before the memory was lost) are counted here once. Hold: only for a
    container with no record a pass listed (none at all, or one rebuilt from the event log, of this
    start or an earlier one: it gathered no step); one a pass listed already gathered every step
    seen since (``_docker_unavailable``) and keeps it (``_hold_discount``)."""
    update: dict[str, object] = {}
    if c.started_at is not None:
        runtime_s = step_discount_s(steps, c.started_at)
        if runtime_s:
            update["runtime_discount_s"] = runtime_s
    if prev is None or not prev.last_state:
        since = _hold_since(c)
        hold_s = step_discount_s(steps, since) if since is not None else 0.0
        if hold_s:
            update["hold_discount_s"] = hold_s
    return mem.model_copy(update=update) if update else mem


def _first_listed(
    prev: ContainerMemory, c: ContainerObs, seen_at: datetime, steps: tuple[ClockStep, ...]
) -> ContainerMemory:
    """A record of this start that no pass listed yet: rebuilt from the event log with a lost memory
    (a stop notice's hold, a restart's mark: :mod:`controller.act.salvage`), or the executor's record
    of a stop it recovered before the first pass. It gathered no clock step: its discounts start from
    the steps seen before, as a fresh record's do (:func:`_with_steps_before`), never lower than its
    own."""
    first = prev.first_seen_at if prev.first_seen_at is not None else seen_at
    mem = prev.model_copy(update={"name": c.name, "first_seen_at": first})
    if not steps:
        return mem
    stepped = _with_steps_before(mem, c, None, steps)
    return stepped.model_copy(
        update={
            "runtime_discount_s": max(prev.runtime_discount_s, stepped.runtime_discount_s),
            "hold_discount_s": max(prev.hold_discount_s, stepped.hold_discount_s),
        }
    )


def _start_record(
    prev: ContainerMemory | None,
    rebuilt: ContainerMemory | None,
    c: ContainerObs,
    seen_at: datetime,
    steps: tuple[ClockStep, ...],
) -> tuple[ContainerMemory | None, ContainerMemory]:
    """The record ``c`` starts from when the memory holds none of its start (``prev``: none, or one
    of another start) or one no pass listed yet, and the record to take as the previous one.

    The event log's record of the start listed now (``rebuilt``: :attr:`ControllerMemory.rebuilt`, a
    memory older than the log kept its own record of an earlier start) is taken as one no pass
    listed; only for that start: the log's lines are not authenticated, and one naming another start
    must not replace the record of this one."""
    if prev is None or prev.started_at != c.started_at:
        if rebuilt is None or rebuilt.started_at is None or rebuilt.started_at != c.started_at:
            mem = fresh_memory(c, seen_at, prev)
            return prev, (_with_steps_before(mem, c, prev, steps) if steps else mem)
        prev = rebuilt
    return prev, _first_listed(prev, c, seen_at, steps)


def _observe_containers(ctx: PassContext, desired: DesiredState, clock: ClockCheck) -> None:
    seen_at = ctx.snapshot.observed_at
    now = ctx.now
    prev_all = ctx.memory.containers
    step_s = clock.step_s
    sampling = _Sampling(ctx)
    restart_at = restart_time(ctx.snapshot)
    last_pass_at = ctx.memory.last_pass_at  # the last pass before this one that Docker answered
    step_note = f"the wall clock stepped forward {step_s:.0f}s (seen {iso(seen_at)})" if step_s > 0 else ""
    policies, cmem, warned_ids = ctx.policies, ctx.cmem, ctx.warned_ids
    # The steps earlier passes saw (this pass's step is applied below, with_clock_step).
    steps_before, rebuilt = ctx.memory.clock_steps, ctx.memory.rebuilt
    for c in ctx.containers:
        cid = c.id
        policy = policies[cid] = desired.effective(c, now)
        prev = prev_all.get(cid)
        if prev is None or prev.started_at != c.started_at or not prev.last_state:
            prev, mem = _start_record(prev, rebuilt.get(cid), c, seen_at, steps_before)
        elif prev.name != c.name:
            mem = prev.model_copy(update={"name": c.name})
        else:
            mem = prev
        if step_s > 0:
            # A forward wall-clock step since the last pass is neither runtime nor hold time
            # (controller.plan.clock), nor idle time: the sample across it spreads its rates over
            # time that never passed, and is undecidable like any unobserved span.
            mem = mark_unobserved(with_clock_step(mem, step_s, seen_at, _hold_since(c)), step_note)
        state = c.state
        if prev is not None and (prev.hold_discount_s or mem.hold_discount_s):
            mem = _hold_discount(mem, prev, state)
        # Only GPU containers are ever idle-stopped, so only they are sampled (and memory stays small).
        # (``c.has_gpu`` written out: a property call costs several times its test, per container.)
        if (
            state == _RUNNING
            and (c.gpu_refs or c.all_gpus)
            and c.signals is not None
            and c.started_at is not None
        ):
            mem = sampling.fold(mem, c, policy)
        elif state == _PAUSED:
            # A paused container accrues no idle time: the sample after it resumes is undecidable.
            mem = mark_unobserved(mem, f"paused (seen {iso(seen_at)})")
        elif state in _FINISHED and mem.samples:
            # Samples belong to a start; a stopped container's next start begins afresh anyway.
            mem = mem.model_copy(update={"samples": (), "idle_since": None})
        # (Only a stopped container can have been stopped by a restart: the rest need no call.)
        by_restart = (
            stopped_by_restart(c, prev, restart_at, last_pass_at) if state in STOPPED_STATES else None
        )
        # ContainerState is a StrEnum: the state compares equal to its value (the string kept).
        if mem.last_state != state or mem.stopped_by_restart_at != by_restart:
            # Written only on a change: the state the controller saw, to tell later who stopped it.
            mem = mem.model_copy(update={"last_state": state.value, "stopped_by_restart_at": by_restart})
        cmem[cid] = mem
        if mem.warnings:
            warned_ids.append(cid)


class _Sampling:
    """What folding a running GPU container's reading into its memory needs, set up once a pass."""

    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx
        self.max_sample_interval_s = ctx.glob.max_sample_interval_s.value
        # Devices that never report utilisation: MIG devices, and GPUs in MIG mode (an all-GPU holder).
        self.no_util = ctx.mig_uuids | {g.uuid for g in ctx.gpus if g.mig_enabled}
        # Thresholds built once per policy object: see _thresholds.
        self.thresholds: dict[int, Thresholds] = {}

    def _thresholds(self, policy: EffectivePolicy) -> Thresholds:
        """The policy's idle thresholds, built once per pass for each policy object.

        Keyed by the policy's identity: containers that resolve to one policy share one object (the
        desired-state memo hands it out), and every policy stays alive in ctx.policies all pass, so
        an id is never reused for another policy meanwhile.
        """
        thresholds = self.thresholds.get(id(policy))
        if thresholds is None:
            thresholds = self.thresholds[id(policy)] = Thresholds.from_policy(
                policy, max_sample_interval_s=self.max_sample_interval_s
            )
        return thresholds

    def fold(self, mem: ContainerMemory, c: ContainerObs, policy: EffectivePolicy) -> ContainerMemory:
        return advance(
            mem,
            c,
            thresholds=self._thresholds(policy),
            grace_period_s=policy.grace_period_s.value,
            gpu_pct=self.ctx.gpu_pct_for(c),
            nvml_ok=self.ctx.nvml_ok,
            mig_uuids=self.no_util,
        )


def _container_rules(ctx: PassContext, out: Collector, c: ContainerObs) -> None:
    state = c.state
    # Most containers are running without a GPU: no lifecycle rule applies to them, tested first.
    if state == _RUNNING:
        if c.gpu_refs or c.all_gpus:  # c.has_gpu, written out (see _observe_containers)
            _running_gpu_rules(ctx, out, c, ctx.policies[c.id])
    elif state == _CREATED:
        created_never_started(ctx, out, c, ctx.policies[c.id])
    elif state in STOPPED_STATES:
        stopped_hold(ctx, out, c, ctx.policies[c.id])
    # Limits are brought down in place, whatever else this pass does (a stopped one is not updated).
    # A container that reported no limits has nothing to compare: update_resources would return.
    if c.limits is not None:
        update_resources(ctx, out, c, ctx.policies[c.id])


def _running_gpu_rules(ctx: PassContext, out: Collector, c: ContainerObs, policy: EffectivePolicy) -> None:
    """Idle (rule 3) and max runtime (rule 4): at most one stop, the max-runtime stop winning."""
    idle = idle_stop(ctx, out, c, policy)
    runtime = runtime_stop(ctx, out, c, policy)
    stop: Action | None = runtime or idle
    if stop is not None:
        if runtime is not None and idle is not None:
            stop = runtime.model_copy(
                update={"evidence": {**runtime.evidence, "idle_stop_also_due": idle.key}}
            )
        out.actions.append(stop)


_NEVER = datetime.max.replace(tzinfo=UTC)
_CONTAINER_ID = attrgetter("target.container_id")


def _without(done: dict[str, datetime], keys: set[str]) -> dict[str, datetime]:
    """``done`` without ``keys`` (the same dict when none of them is there)."""
    if not keys or keys.isdisjoint(done):
        return done
    return {k: at for k, at in done.items() if k not in keys}


def _in_order(deferred: list[Deferred]) -> tuple[Deferred, ...]:
    """``sorted(deferred, key=_deferred_order)``, the whole key built only where container ids tie.

    Exact: sorted (stably) by the key's first field, the container id, each run of one id keeps
    its input order; sorting a run stably by the whole key then gives the order one sort by the
    whole key would. Most deferrals are the only one of their container (a run of one): only the
    few ids that occur more than once are looked up (by bisection) and their runs sorted again.
    """
    ids = [cid or "" for cid in map(_CONTAINER_ID, deferred)]
    order = sorted(range(len(deferred)), key=ids.__getitem__)
    out = [deferred[i] for i in order]
    tied = [cid for cid, n in Counter(ids).items() if n > 1]
    if tied:
        in_order = [ids[i] for i in order]
        for cid in tied:
            lo, hi = bisect_left(in_order, cid), bisect_right(in_order, cid)
            out[lo:hi] = sorted(out[lo:hi], key=_deferred_order)
    return tuple(out)


def _deferred_order(d: Deferred) -> tuple[str, str, str, int, str, str, datetime, str]:
    t = d.target
    return (
        t.container_id or "",
        t.container or "",
        t.gpu or "",
        t.pid if t.pid is not None else -1,
        d.rule,
        d.why,
        d.due_at or _NEVER,
        d.message,
    )
