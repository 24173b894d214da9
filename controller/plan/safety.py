"""The safety gates every proposed action passes, in this order, after all rules have run.

1. **Duplicates**: one action per idempotency key (the first proposal wins; rules run in a fixed
   order).
2. **Done**: one-shot actions (warnings, notices, admin alerts) whose key is in ``memory.done``
   are not proposed again. Destructive actions are never suppressed by ``done``: if the world
   still shows the target, the previous attempt did not take (level-triggered).
3. **Back-off**: an action whose key has ``attempts[key].next_attempt_at`` in the future is
   deferred ``Backoff`` until then.
4. **Breaker**: while ``memory.breaker`` is tripped, every destructive action is deferred
   ``BreakerOpen`` until an admin resets it. It trips when one pass would stop more than
   ``breaker_max_fraction`` of the running GPU containers, and at least
   ``breaker_min_containers`` of them: then nothing destructive runs, an admin is alerted, and
   the next memory carries the tripped breaker. A mass stop is far more likely a broken signal
   than a mass exodus of users. It trips the same way when one pass would remove more than
   ``breaker_max_remove_fraction`` of the host's stopped containers, at least
   ``breaker_min_removals`` of them (:func:`removal_breaker`): a mass removal is far more likely a
   mass stop nobody chose (an engine or host restart it did not recognise) than a mass of expired
   holds.
   The **release breaker** (``memory.release_breaker``) does the same for ledger releases alone: it
   trips when one pass would release more than ``release_breaker_max_fraction`` of the ledger's
   rows, and at least ``release_breaker_min_rows`` of them (a containers list that came back
   empty, or GPU references that stopped parsing, make every row look leaked at once); while it
   is tripped every ReleaseAllocation is deferred ``BreakerOpen``, other actions are not. Both
   stay tripped until ``ds01ctl breaker reset`` (which closes both).
5. **Budget**: at most ``max_destructive_actions_per_pass`` destructive actions (releases
   included), the oldest due first (ties broken by key); the rest are deferred
   ``BudgetExhausted`` to the next pass.

Pure; called by :func:`controller.plan.planner.plan` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any, TypeAlias

from controller.memory import Breaker, RemovedContainer
from controller.plan.context import Collector, PassContext, Proposal, host_target, iso
from controller.plan.types import (
    DESTRUCTIVE_KINDS,
    Action,
    ActionKind,
    AlertParams,
    DeferReason,
    Deferred,
    Reason,
    budget_turn,
)
from controller.plan.values import built
from controller.snapshot import ContainerObs, ContainerState, LedgerEntry

ONE_SHOT_KINDS = frozenset({ActionKind.WARN_OWNER, ActionKind.ALERT_ADMIN})
# Beyond its SIGTERM grace, how long a stop may take from the engine's FinishedAt to the executor's
# record of it (the engine's SIGKILL, the wait for the state, the record).
OWN_STOP_SLACK_S = 60.0
# A ledger row names a container the controller removed by its name, its id or an id prefix at
# least this long (Docker's short id).
ID_PREFIX_MIN = 12
# What the gates pass or hold back: an action, or one whose message and evidence are written only
# if it passes (the gates read neither).
Proposed: TypeAlias = Action | Proposal
# The order of actions: the oldest due first, ties broken by the key.
_DUE_ORDER = attrgetter("due_at", "key")
# The kinds' names, as the messages and evidence quote them (``.value`` goes through the enum's
# descriptor: read once each, not once per deferral).
_KIND_VALUE = {kind: kind.value for kind in ActionKind}
# The members the gates compare every action or container with, read once: an enum member read from
# its class goes through the enum's metaclass, several times the cost of the comparison.
_STOP, _REMOVE, _RELEASE = (
    ActionKind.STOP_CONTAINER,
    ActionKind.REMOVE_CONTAINER,
    ActionKind.RELEASE_ALLOCATION,
)
_RUNNING = ContainerState.RUNNING
_EXITED_OR_DEAD = (ContainerState.EXITED, ContainerState.DEAD)


@dataclass
class GateResult:
    actions: list[Action]
    deferred: list[Deferred]
    breaker: Breaker
    release_breaker: Breaker
    delivered_alerts: list[Action] = field(default_factory=list)  # raised again, delivered already


def _written(a: Proposed) -> Action:
    return a if isinstance(a, Action) else a.action()


def _defer(
    out: Collector,
    a: Proposed,
    why: DeferReason,
    message: str,
    due: datetime | None,
    extra: dict[str, object],
) -> None:
    # (Built here, not through out.defer: a backlog past the budget defers thousands a pass.)
    out.deferred.append(
        built(
            Deferred,
            {
                "target": a.target,
                "rule": a.reason,
                "why": why,
                "message": message,
                "due_at": due,
                "evidence": {"action": _KIND_VALUE[a.kind], "key": a.key, **extra},
            },
        )
    )


def apply_gates(ctx: PassContext, proposed: Collector) -> GateResult:
    """Gates 1-5, in order (see the module docstring)."""
    out = Collector(deferred=list(proposed.deferred))
    delivered_alerts: list[Action] = []
    unique = _dedupe_and_back_off(ctx, out, [*proposed.actions, *proposed.proposals], delivered_alerts)
    passive: list[Proposed] = []
    destructive: list[Proposed] = []
    for a in unique:
        (destructive if a.kind in DESTRUCTIVE_KINDS else passive).append(a)
    destructive.sort(key=_DUE_ORDER)
    breaker = ctx.memory.breaker
    if not breaker.tripped and destructive:
        breaker = _stop_breaker(ctx, destructive, passive)
    if not breaker.tripped and destructive:
        tripped = removal_breaker(ctx, destructive)
        if tripped is not None:
            breaker, alert = tripped
            passive.append(alert)
    release_breaker = _release_breaker(ctx, destructive, passive)
    performed: list[Proposed] = list(passive)
    if not breaker.tripped and release_breaker.tripped:
        destructive = _hold_releases(out, destructive, release_breaker)
    if breaker.tripped:
        for a in destructive:
            _defer(
                out,
                a,
                DeferReason.BREAKER_OPEN,
                f"{a.kind.value} {a.target.label()}: circuit breaker open since "
                f"{iso(breaker.tripped_at)} ({breaker.reason})",
                None,
                {"breaker_tripped_at": iso(breaker.tripped_at)},
            )
    else:
        performed.extend(_within_budget(ctx, out, destructive))
    performed.sort(key=_DUE_ORDER)
    return GateResult(
        # (_written, in place: one call fewer for each action performed)
        [a if isinstance(a, Action) else a.action() for a in performed],
        out.deferred,
        breaker,
        release_breaker,
        delivered_alerts,
    )


def _dedupe_and_back_off(
    ctx: PassContext, out: Collector, proposed: list[Proposed], delivered_alerts: list[Action]
) -> list[Proposed]:
    """Gates 1-3: one action per key, one-shot actions already done dropped, back-off deferred.

    A dropped AlertAdmin is kept in ``delivered_alerts``: its condition still holds, so the alert is
    still open (``controller.plan.open_alerts``), although it is not sent again."""
    now, done, attempts = ctx.now, ctx.memory.done, ctx.memory.attempts
    unique: list[Proposed] = []
    seen: set[str] = set()
    for a in proposed:
        key = a.key
        if key in seen:
            continue
        seen.add(key)
        if a.kind in ONE_SHOT_KINDS and key in done:
            if a.kind is ActionKind.ALERT_ADMIN:
                delivered_alerts.append(_written(a))
            continue
        attempt = attempts.get(key)
        if attempt is not None and attempt.next_attempt_at is not None and attempt.next_attempt_at > now:
            _defer(
                out,
                a,
                DeferReason.BACKOFF,
                f"{a.kind.value} {a.target.label()}: {attempt.failures} failed attempt(s), last: "
                f"{attempt.last_error or '?'}; retry at {attempt.next_attempt_at.isoformat()}",
                attempt.next_attempt_at,
                {"failures": attempt.failures, "last_error": attempt.last_error},
            )
            continue
        unique.append(a)
    return unique


def _stop_breaker(ctx: PassContext, destructive: list[Proposed], passive: list[Proposed]) -> Breaker:
    """Gate 4 for stops: a mass stop trips the breaker (and alerts an admin)."""
    stops = [a for a in destructive if a.kind == _STOP]
    max_fraction = ctx.glob.breaker_max_fraction.value
    min_containers = ctx.glob.breaker_min_containers.value
    if not stops or len(stops) < min_containers:
        return ctx.memory.breaker
    # Each population is weighed alone, the minimum and the share: stops of GPU containers (idle,
    # max runtime, GPU quotas) against the running GPU containers, stops of containers without a GPU
    # (container quotas) against the running ones without. A few quota stops of CPU-only containers
    # are not a mass stop because the host runs few GPU containers. Counted only now: a pass with
    # too few stops to trip it need not scan every container.
    by_id = ctx.by_id
    gpu_stops = sum(1 for a in stops if (c := by_id.get(a.target.container_id or "")) is None or c.has_gpu)
    other_stops = len(stops) - gpu_stops
    running_gpu = running_other = 0
    for c in ctx.containers:
        if c.state == _RUNNING:
            if c.has_gpu:
                running_gpu += 1
            else:
                running_other += 1
    if gpu_stops >= min_containers and gpu_stops > max_fraction * running_gpu:
        what = f"{gpu_stops} of {running_gpu} running GPU containers"
    elif other_stops >= min_containers and other_stops > max_fraction * running_other:
        what = f"{other_stops} of {running_other} running containers without a GPU"
    else:
        return ctx.memory.breaker
    reason = f"this pass would stop {what} (more than {max_fraction:.0%}, at least {min_containers})"
    passive.append(
        breaker_alert(
            ctx.now,
            f"circuit breaker tripped: {reason}; no destructive action runs until 'ds01ctl breaker reset'",
            {
                "would_stop": len(stops),
                "would_stop_gpu": gpu_stops,
                "running_gpu_containers": running_gpu,
                "running_containers_without_gpu": running_other,
                "breaker_max_fraction": max_fraction,
                "breaker_min_containers": min_containers,
                "stop_keys": [a.key for a in stops],
            },
        )
    )
    return Breaker(tripped=True, tripped_at=ctx.now, reason=reason)


def _hold_releases(out: Collector, destructive: list[Proposed], release_breaker: Breaker) -> list[Proposed]:
    """Gate 4 for releases: while the release breaker is open every release waits."""
    for a in destructive:
        if a.kind == _RELEASE:
            _defer(
                out,
                a,
                DeferReason.BREAKER_OPEN,
                f"{a.kind.value} {a.target.label()}: release breaker open since "
                f"{iso(release_breaker.tripped_at)} ({release_breaker.reason})",
                None,
                {"release_breaker_tripped_at": iso(release_breaker.tripped_at)},
            )
    return [a for a in destructive if a.kind != _RELEASE]


def _within_budget(ctx: PassContext, out: Collector, destructive: list[Proposed]) -> list[Proposed]:
    """Gate 5: the oldest due first, up to the budget; the rest wait their turn, ``budget`` a pass
    (``in_passes``: the pass that carries it out at this rate, 1 the next; 0 never while the
    budget is 0)."""
    budget = max(0, ctx.glob.max_destructive_actions_per_pass.value)
    # A backlog defers thousands of actions in one pass: each tail is formatted once.
    spent = f": the budget of {budget} destructive actions per pass is spent"
    tails: dict[int, str] = {}
    # _defer, written out: the deferral's fields and evidence (in _defer's order), without a call
    # and a merged dict for each of them.
    deferred, why = out.deferred, DeferReason.BUDGET_EXHAUSTED
    for i, a in enumerate(destructive[budget:]):
        passes = i // budget + 1 if budget else 0
        tail = tails.get(passes)
        if tail is None:
            tail = tails[passes] = f"{spent}; {budget_turn(passes) if budget else 'none runs while it is 0'}"
        kind, target = _KIND_VALUE[a.kind], a.target
        deferred.append(
            built(
                Deferred,
                {
                    "target": target,
                    "rule": a.reason,
                    "why": why,
                    # (label() is the container's name when it has one, as most do)
                    "message": f"{kind} {target.container or target.label()}{tail}",
                    "due_at": None,
                    "evidence": {
                        "action": kind,
                        "key": a.key,
                        "budget": budget,
                        "due_at": iso(a.due_at),
                        "in_passes": passes,
                    },
                },
            )
        )
    return destructive[:budget]


def _release_breaker(ctx: PassContext, destructive: list[Proposed], passive: list[Proposed]) -> Breaker:
    """The release breaker after this pass: tripped (with an admin alert) on a mass release."""
    current = ctx.memory.release_breaker
    releases = [a for a in destructive if a.kind == _RELEASE]
    max_fraction = ctx.glob.release_breaker_max_fraction.value
    min_rows = ctx.glob.release_breaker_min_rows.value
    if current.tripped or len(releases) < min_rows:
        return current
    # The rows of containers the controller removed itself count on neither side: the removals were
    # weighed when they were made, and their rows are leaked by them, not by a broken listing.
    entries = {
        _row_key(e.container, e.gpu, e.allocated_at.isoformat()): e for e in ctx.snapshot.ledger.entries
    }
    own = {key for key, e in entries.items() if _of_own_removal(e, ctx.memory.removed)}
    releases = [a for a in releases if _release_key(a) not in own]
    rows = len(entries) - len(own)
    if len(releases) < min_rows or len(releases) <= max_fraction * rows:
        return current
    now = ctx.now
    reason = (
        f"this pass would release {len(releases)} of {rows} ledger rows "
        f"(more than {max_fraction:.0%}, at least {min_rows})"
    )
    passive.append(
        breaker_alert(
            now,
            f"release breaker tripped: {reason}; no ledger row is released until 'ds01ctl breaker reset'",
            {
                "breaker": "release",
                "would_release": len(releases),
                "ledger_rows": rows,
                "release_breaker_max_fraction": max_fraction,
                "release_breaker_min_rows": min_rows,
                "release_keys": [a.key for a in releases],
            },
            key_name="ReleaseBreakerTripped",
        )
    )
    return Breaker(tripped=True, tripped_at=now, reason=reason)


def removals_still_named(ctx: PassContext) -> dict[str, RemovedContainer]:
    """The next memory's record of the controller's removals: those whose ledger rows are still
    there (the rest are of no more use: an allocator writes a container's row before the container
    exists, never after it is gone); all of them while the ledger cannot be read. So the record stays
    as small as the leaks it explains, on a host that creates and removes containers all day."""
    removed = ctx.memory.removed
    ledger = ctx.snapshot.ledger
    if not removed or ledger.error is not None:
        return removed
    return {cid: r for cid, r in removed.items() if any(_row_of(e, cid, r) for e in ledger.entries)}


def _of_own_removal(e: LedgerEntry, removed: dict[str, RemovedContainer]) -> bool:
    """Is ``e`` the row of a container the controller removed itself?"""
    return any(_row_of(e, cid, r) for cid, r in removed.items())


def _row_of(e: LedgerEntry, cid: str, r: RemovedContainer) -> bool:
    """``e`` names the removed container (its id, an id prefix of :data:`ID_PREFIX_MIN` digits or
    more, or its name) and was written before the removal: a row written since names a new container
    of that name, which the record says nothing about."""
    if e.allocated_at > r.removed_at:
        return False
    name = e.container
    return name == r.name or name == cid or (len(name) >= ID_PREFIX_MIN and cid.startswith(name))


def _row_key(container: object, gpu: object, allocated_at: object) -> tuple[str, str, str]:
    return (str(container), str(gpu), str(allocated_at))


def _release_key(a: Proposed) -> tuple[str, str, str]:
    """The key of the row a release names (``allocations.row_of``: the time in ISO form)."""
    row = a.target.ledger_entry or {}
    return _row_key(row.get("container"), row.get("gpu"), row.get("allocated_at"))


def breaker_alert(
    now: datetime, message: str, evidence: dict[str, Any], key_name: str = "BreakerTripped"
) -> Action:
    """The admin alert of a breaker that trips in this pass (one key per breaker and pass)."""
    return Action(
        kind=ActionKind.ALERT_ADMIN,
        target=host_target(),
        reason=Reason.BREAKER_TRIPPED,
        message=message,
        evidence=evidence,
        due_at=now,
        key=f"AlertAdmin:{key_name}:{iso(now)}",
        params=AlertParams(),
    )


REMOVAL_REASONS = frozenset({Reason.GPU_HOLD_EXPIRED, Reason.STOPPED_HOLD_EXPIRED})


def _stopped_by_controller(ctx: PassContext, c: ContainerObs) -> bool:
    """Did the controller's own StopContainer end this start of ``c``? Its memory says so, and the
    engine's FinishedAt agrees: no earlier than the recorded stop less the time a stop may take (the
    SIGTERM grace, and :data:`OWN_STOP_SLACK_S` for the engine). A FinishedAt that does not fit is a
    signal nobody here vouches for: the container counts like any other."""
    m = ctx.cmem.get(c.id)
    at = m.stopped_by_controller_at if m is not None else None
    if at is None or c.finished_at is None:
        return False
    took_s = ctx.policies[c.id].sigterm_grace_s.value + OWN_STOP_SLACK_S
    return c.finished_at >= at - timedelta(seconds=took_s)


def removal_breaker(ctx: PassContext, destructive: list[Proposed]) -> tuple[Breaker, Action] | None:
    """The removal share of the breaker: the tripped breaker and its alert, or None.

    Counts the removals of stopped containers (expired holds) that fell due since the last pass
    (all of them on a first pass: a fresh memory knows no backlog) against the host's stopped
    containers; created-never-started removals are not stopped containers. Removals already
    overdue at the last pass are a backlog an admin let through (a reset) or that came due one by
    one: they do not trip it again. "The last pass" is the last that planned the containers
    (``last_pass_at``): removals that fell due while Docker was unavailable were never planned, and
    count (an engine restart that stopped everything and kept Docker away past the holds is what
    the breaker is for).

    Containers the controller stopped itself (``ContainerMemory.stopped_by_controller_at``, written
    by the executor for this start of the container, and a FinishedAt that fits it: see
    :func:`_stopped_by_controller`) count on neither side: the stop breaker
    weighed those stops when they were made, and a batch of them (a quota lowered, jobs launched
    together reaching their max runtime) comes due together by design. The breaker is for stops
    nobody here chose: a restart, a broken signal. A memory that lost the mark counts them again.
    """
    since = ctx.memory.last_pass_at
    if since is not None and since > ctx.now:
        # A last pass in the future (a wall clock stepped forward then back, a memory file from
        # elsewhere) would make every due removal look like a backlog: none is known.
        since = None
    removals = [
        a
        for a in destructive
        if a.kind == _REMOVE and a.reason in REMOVAL_REASONS and (since is None or a.due_at > since)
    ]
    max_fraction = ctx.glob.breaker_max_remove_fraction.value
    min_removals = ctx.glob.breaker_min_removals.value
    if not removals or len(removals) < min_removals:
        return None
    stopped = [c for c in ctx.containers if c.state in _EXITED_OR_DEAD]
    own = {c.id for c in stopped if _stopped_by_controller(ctx, c)}
    removals = [a for a in removals if a.target.container_id not in own]
    stopped_others = len(stopped) - len(own)
    if len(removals) < min_removals or len(removals) <= max_fraction * stopped_others:
        return None
    now = ctx.now
    reason = (
        f"this pass would remove {len(removals)} of {stopped_others} stopped containers "
        f"(more than {max_fraction:.0%}, at least {min_removals})"
    )
    alert = breaker_alert(
        now,
        f"circuit breaker tripped: {reason}; no destructive action runs until "
        f"'ds01ctl breaker reset' (were they all stopped at once, by a restart?)",
        {
            "would_remove": len(removals),
            "stopped_containers": stopped_others,
            "breaker_max_remove_fraction": max_fraction,
            "breaker_min_removals": min_removals,
            "remove_keys": [a.key for a in removals],
        },
    )
    return Breaker(tripped=True, tripped_at=now, reason=reason), alert
