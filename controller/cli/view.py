"""What one ``ds01ctl`` command looks at, and the facts every table derives from it.

A :class:`View` bundles one snapshot, the plan made from it (with the memory after this pass's
observations), the desired state and the notes that explain what is missing (timers unavailable,
a domain down, a policy that did not load). :mod:`controller.cli.gather` builds it from the live
host; tests build it from values. Everything here is pure: no Docker, no NVML, no files.

The "next step" of a container is read from the plan's actions and deferred items, never
re-derived: ``get``, ``describe`` and ``plan`` must tell the same story.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from controller.cli.render import UNKNOWN, clean, iso, since, stamp, until
from controller.plan.types import (
    Action,
    ActionKind,
    DeferReason,
    Deferred,
    Plan,
    Reason,
    StopParams,
    budget_turn,
)
from controller.snapshot import CREATED_UNKNOWN, ContainerObs, ContainerState, Domain, GpuObs, Snapshot

if TYPE_CHECKING:
    from controller.act.events import EventFilter
    from controller.memory import ContainerMemory, ControllerMemory
    from controller.plan.context import PassContext
    from controller.plan.desired import DesiredState
    from controller.plan.forecast import Forecast
    from desired_state.effective import EffectivePolicy

# How far back ``describe container`` reads the event log's rotations for a container's events (the
# shipped rotation is weekly: two weeks reach into the rotation before the last).
EVENTS_LOOKBACK = timedelta(days=14)
CREATED_SLACK = timedelta(minutes=1)


@dataclass(frozen=True)
class PolicySource:
    """One loaded spec, for ``get policies`` and ``describe``."""

    kind: str
    name: str
    source: str
    detail: str = ""


@dataclass(frozen=True)
class PolicyInfo:
    """The policy the view was planned with, where it came from, and whether loading it failed."""

    origin: str = "built-in default"
    sources: tuple[PolicySource, ...] = ()
    error: str | None = None
    candidate: bool = False
    daemon_error: str | None = None  # the running daemon's last reload failed (it kept its policy)
    daemon_error_at: str | None = None
    # The running daemon cannot write its record (event log or memory): it runs no destructive action.
    record_error: str | None = None
    # The running daemon's policy is not this one (other sources or content): what this view plans
    # is not what the daemon does. One line naming both.
    daemon_mismatch: str | None = None


@dataclass
class View:
    snapshot: Snapshot
    now: datetime
    plan: Plan | None = None
    memory: ControllerMemory | None = None
    desired: DesiredState | None = None
    policy: PolicyInfo = field(default_factory=PolicyInfo)
    timers_note: str | None = None
    notes: list[str] = field(default_factory=list)
    events: Sequence[Mapping[str, Any]] = ()
    event_source: EventSource | None = None
    policy_errors: dict[str, str] = field(default_factory=dict)
    # The coming passes (controller.plan.forecast), for NEXT and describe; None: not forecast.
    forecast: Forecast | None = None
    # Set when the view is the daemon's last pass (controller/lastpass.py), not a live observation.
    as_of: datetime | None = None

    # --- indexes, built once per command ---------------------------------------------------
    @cached_property
    def items_by_container(self) -> dict[str, list[Action | Deferred]]:
        out: dict[str, list[Action | Deferred]] = {}
        by_name = {c.name: c.id for c in self.snapshot.containers}
        for item in self._items():
            cid = item.target.container_id or by_name.get(item.target.container or "")
            if cid:
                out.setdefault(cid, []).append(item)
        return out

    @cached_property
    def items_by_pid(self) -> dict[int, list[Action | Deferred]]:
        out: dict[int, list[Action | Deferred]] = {}
        for item in self._items():
            if item.target.pid is not None:
                out.setdefault(item.target.pid, []).append(item)
        return out

    @cached_property
    def items_by_gpu(self) -> dict[str, list[Action | Deferred]]:
        out: dict[str, list[Action | Deferred]] = {}
        for item in self._items():
            if item.target.gpu:
                out.setdefault(item.target.gpu, []).append(item)
        return out

    @cached_property
    def slots(self) -> dict[str, str]:
        """GPU or MIG UUID -> DS01 slot notation (``0`` for a GPU, ``1.2`` for a MIG device)."""
        out: dict[str, str] = {}
        for g in self.snapshot.gpus:
            out[g.uuid] = str(g.index)
            for m in g.mig_devices:
                out[m.uuid] = f"{g.index}.{m.index}"
        return out

    @cached_property
    def short_refs(self) -> dict[str, str]:
        """UUID (or an unresolved reference as written) -> the shortest prefix (12 characters or
        more) that tells it from every other one a container references: without NVML the slot is
        unknown, and two references that share their first characters must not print alike."""
        distinct = sorted({r.uuid or r.raw for c in self.snapshot.containers for r in c.gpu_refs})
        length = 12
        while length < max((len(u) for u in distinct), default=0):
            if len({u[:length] for u in distinct}) == len(distinct):
                break
            length += 4
        return {u: u[:length] for u in distinct}

    @cached_property
    def holders(self) -> dict[str, list[ContainerObs]]:
        """Device UUID -> containers that reference it (``all`` holders on every GPU and on every
        MIG device: ``--gpus all`` makes each MIG device of a GPU in MIG mode visible too)."""
        out: dict[str, list[ContainerObs]] = {}
        for c in sorted(self.snapshot.containers, key=container_sort_key):
            for uuid in c.gpu_uuids:
                out.setdefault(uuid, []).append(c)
            if c.all_gpus:
                for g in self.snapshot.gpus:
                    for uuid in (g.uuid, *(m.uuid for m in g.mig_devices)):
                        if c not in out.get(uuid, []):
                            out.setdefault(uuid, []).append(c)
        return out

    def _items(self) -> Iterable[Action | Deferred]:
        if self.plan is None:
            return ()
        return (*self.plan.actions, *self.plan.deferred)

    def delivered(
        self, *, container_id: str | None = None, gpus: Iterable[str] = (), user: str | None = None
    ) -> list[Action]:
        """The admin alerts this pass raised again, delivered already (``Plan.delivered_alerts``:
        open, as ``get alerts`` lists them, though not proposed again) about a container, one of
        ``gpus`` or a user's containers or processes."""
        if self.plan is None:
            return []
        wanted = set(gpus)
        theirs = {c.id for c in self.snapshot.containers if c.owner == user} if user is not None else set()
        return [
            a
            for a in self.plan.delivered_alerts
            if (container_id is not None and a.target.container_id == container_id)
            or (a.target.gpu is not None and a.target.gpu in wanted)
            or (user is not None and (a.target.user == user or a.target.container_id in theirs))
        ]

    # --- per-object facts -------------------------------------------------------------------
    def container_memory(self, container_id: str) -> ContainerMemory | None:
        if self.memory is None:
            return None
        return self.memory.containers.get(container_id)

    def container_items(self, c: ContainerObs) -> list[Action | Deferred]:
        return self.items_by_container.get(c.id, [])

    def effective(self, c: ContainerObs) -> EffectivePolicy | None:
        """The container's effective policy; ``None`` (and :meth:`policy_problem`) when unknown."""
        if self.desired is None:
            return None
        try:
            return self.desired.effective(c, self.now)
        except Exception as exc:  # one container that cannot resolve must not hide the others
            self.policy_errors[c.id] = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            return None

    def idle_stop_removes(self, container_id: str | None) -> bool:
        """Whether this container's idle stop also removes it (``removeAfterIdleStop`` of its
        policy, which the idle rule's StopContainer carries as ``remove``): a deferred idle stop
        says "stop and remove" then. False when the container or its policy is unknown."""
        c = self.by_id.get(container_id or "")
        pol = self.effective(c) if c is not None else None
        return pol is not None and bool(pol.remove_after_idle_stop.value)

    @cached_property
    def by_id(self) -> dict[str, ContainerObs]:
        return {c.id: c for c in self.snapshot.containers}

    def policy_problem(self, c: ContainerObs) -> str:
        if self.desired is None:
            return self.policy.error or "no policy loaded"
        return self.policy_errors.get(c.id, "the policy could not be resolved")

    def user_policy(self, owner: str) -> EffectivePolicy | None:
        """The policy a new atomic container of ``owner`` would get (for ``describe user``)."""
        from controller.snapshot import ContainerId
        from crd_like_specs.vocabulary import ContainerType

        probe = ContainerObs(
            id=ContainerId(""),
            name="",
            image="",
            state=ContainerState.CREATED,
            created_at=self.now,
            owner=owner,
            container_type=ContainerType.ATOMIC,
        )
        return self.effective(probe)

    # --- events -----------------------------------------------------------------------------
    def events_for_container(self, c: ContainerObs, n: int = 10) -> tuple[list[dict[str, Any]], str | None]:
        # Its events are those since it was created (a minute's slack: a wrapper logs its request
        # first), read back through the log's rotations when the live log holds fewer, but never
        # more than EVENTS_LOOKBACK: a long-lived container's would be every rotation, unpacked.
        created = created_at(c)
        floor = self.now - EVENTS_LOOKBACK
        since = max(created - CREATED_SLACK, floor) if created is not None else floor
        # By its id as well as its name: a docker rename keeps the id, and the events logged before
        # it name the old name.
        return self._events(n, container=c.name, container_id=c.id, since=since)

    def events_for_user(self, user: str, n: int = 10) -> tuple[list[dict[str, Any]], str | None]:
        return self._events(n, user=user)

    def events_for_gpu(self, uuids: set[str], n: int = 10) -> tuple[list[dict[str, Any]], str | None]:
        # Filtered as the log is read back, not among its last lines: a reset a day ago, behind a
        # day of usage samples, is still the GPU's.
        return self._events(n, gpus=frozenset(uuids))

    def _events(
        self,
        n: int,
        *,
        container: str | None = None,
        container_id: str | None = None,
        user: str | None = None,
        since: datetime | None = None,
        gpus: frozenset[str] = frozenset(),
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The last ``n`` matching events, or a note saying why there are none to show."""
        if self.event_source is None:
            return [], "event log not read"
        from controller.act.events import EventFilter

        flt = EventFilter(container=container, container_id=container_id, user=user, since=since, gpus=gpus)
        try:
            return self.event_source.tail(n, flt), None
        except FileNotFoundError:
            rotated = self.event_source.rotated()
            if rotated:
                # logrotate renames the log and the next event creates it again: not "no events".
                return [], (
                    f"none since the log was rotated ({self.event_source.describe()} does not exist"
                    f" yet; older events are in {rotated[-1].name} and before: ds01ctl get events"
                    " --since 7d reads them)"
                )
            return [], f"no events yet ({self.event_source.describe()} does not exist)"
        except OSError as exc:
            return [], f"unavailable: cannot read {self.event_source.describe()}: {exc.strerror or exc}"

    @cached_property
    def _pass_context(self) -> PassContext | None:
        """The planner's index of this snapshot (None without a policy)."""
        if self.desired is None:
            return None
        from controller.memory import ControllerMemory
        from controller.plan.context import PassContext

        return PassContext.build(self.snapshot, self.now, self.desired.global_policy, ControllerMemory())

    def gpu_readings(self, c: ContainerObs) -> dict[str, float | None]:
        """The utilization of each device the idle rule reads for ``c`` (``None``: unknown): its own
        readings, every GPU for a reference that did not resolve, and each device NVML lists a
        process of it on (:meth:`PassContext.gpu_pct_for`); without a policy, its own readings."""
        ctx = self._pass_context
        if ctx is not None:
            return ctx.gpu_pct_for(c)
        return {r.uuid: r.percent for r in c.signals.gpu_util} if c.signals is not None else {}

    def slot(self, uuid: str | None) -> str:
        if uuid is None:
            return UNKNOWN
        return self.slots.get(uuid, uuid)

    @property
    def docker_ok(self) -> bool:
        return self.snapshot.domain_ok(Domain.DOCKER)

    @property
    def nvml_ok(self) -> bool:
        return self.snapshot.domain_ok(Domain.NVML)


class EventSource(Protocol):
    """Where ``describe`` and ``get events`` read events from."""

    def tail(
        self, n: int, flt: EventFilter, extra: Callable[[Mapping[str, Any]], bool] | None = None
    ) -> list[dict[str, Any]]: ...

    def describe(self) -> str: ...

    def rotated(self) -> list[Path]:
        """Its rotated copies, oldest first (none where there are no rotations)."""
        ...


@dataclass(frozen=True)
class LogEventSource:
    """The event log file, read from its end (:func:`controller.act.events.tail`); with a filter's
    ``since``, its rotations too where the period begins before the live file does
    (:func:`controller.act.event_files.tail_since`)."""

    path: Path
    # A predicate the log's own filter cannot express is applied to a wider window.
    widen: int = 50

    def tail(
        self, n: int, flt: EventFilter, extra: Callable[[Mapping[str, Any]], bool] | None = None
    ) -> list[dict[str, Any]]:
        if flt.since is not None:
            from controller.act.event_files import tail_since  # (gzip: only for a period)

            return tail_since(self.path, n, flt, extra, self.widen)
        from controller.act.events import tail_matching

        return tail_matching(self.path, n, flt, extra, self.widen)

    def describe(self) -> str:
        return str(self.path)

    def rotated(self) -> list[Path]:
        from controller.act.event_files import log_files

        return [p for p in log_files(self.path) if p != self.path]


def created_at(c: ContainerObs) -> datetime | None:
    """When the container was created; ``None`` when Docker's Created could not be read (the
    observer's ``CREATED_UNKNOWN``, the oldest time there is, is no age: the planner ages such a
    container from its first sighting)."""
    return None if c.created_at == CREATED_UNKNOWN else c.created_at


def container_sort_key(c: ContainerObs) -> tuple[str, str]:
    return (c.name, c.id)


# --- the next step ---------------------------------------------------------------------------

_KIND_VERB: dict[ActionKind, str] = {
    ActionKind.STOP_CONTAINER: "stop",
    ActionKind.REMOVE_CONTAINER: "remove",
    ActionKind.WARN_OWNER: "warn",
    ActionKind.RELEASE_ALLOCATION: "release",
    ActionKind.KILL_PROCESS: "kill",
    ActionKind.RESET_GPU: "reset",
    ActionKind.ALERT_ADMIN: "alert",
    ActionKind.UPDATE_RESOURCES: "limit",
}

# A deferred item names the rule that would act; this is the action that rule produces.
_RULE_VERB: dict[Reason, str] = {
    Reason.CREATED_NEVER_STARTED: "remove",
    Reason.GPU_HOLD_EXPIRED: "remove",
    Reason.STOPPED_HOLD_EXPIRED: "remove",
    Reason.IDLE_TIMEOUT: "stop",
    Reason.IDLE_WARNING: "warn",
    Reason.IDLE_EXEMPT_NOTICE: "notify",
    Reason.MAX_RUNTIME_EXCEEDED: "stop",
    Reason.MAX_RUNTIME_WARNING: "warn",
    Reason.LEAKED_ALLOCATION: "release",
    Reason.DUPLICATE_GPU_HOLDER: "alert",
    Reason.ORPHANED_PROCESS: "kill",
    Reason.FOREIGN_PROCESS_ON_GPU: "alert",
    Reason.HOST_GPU_PROCESS: "alert",
    Reason.FOREIGN_GPU_WORKLOAD: "alert",
    Reason.GPU_DIRTY: "reset",
    Reason.KILL_FAILED: "alert",
    Reason.BREAKER_TRIPPED: "alert",
    Reason.LEDGER_UNREADABLE: "alert",
    Reason.LIMITS_MISSING: "limit",
    Reason.LIMITS_ABOVE_SPEC: "limit",
    Reason.LIMITS_BELOW_USAGE: "warn",
    Reason.CONTAINER_QUOTA_EXCEEDED: "warn",
    Reason.GPU_QUOTA_EXCEEDED: "warn",
    Reason.GPU_SLOTS_ABOVE_SPEC: "warn",
    Reason.AGGREGATE_CAP_BYPASSED: "alert",
    Reason.AGGREGATE_CAP_EXCEEDED: "alert",
}


def rule_of(item: Action | Deferred) -> Reason:
    """The rule behind an action (its reason) or a deferral (the rule that would act)."""
    return item.reason if isinstance(item, Action) else item.rule


def verb(item: Action | Deferred, *, idle_removes: bool = False) -> str:
    """The step in a word or three (``stop``, ``warn``, ``stop and remove``...).

    A stop that also removes the container says so: an action by its params, a deferred idle stop
    by ``idle_removes`` (the container's ``removeAfterIdleStop``, :meth:`View.idle_stop_removes`),
    which the idle rule's stop takes its params from."""
    if isinstance(item, Action):
        if item.kind == ActionKind.WARN_OWNER and item.reason == Reason.IDLE_EXEMPT_NOTICE:
            return "notify"
        if (
            item.kind == ActionKind.STOP_CONTAINER
            and isinstance(item.params, StopParams)
            and item.params.remove
        ):
            return STOP_AND_REMOVE
        return _KIND_VERB.get(item.kind, item.kind.value)
    word = _deferred_verb(item)
    if word == "stop" and idle_removes and item.rule == Reason.IDLE_TIMEOUT:
        return STOP_AND_REMOVE
    return word


def _deferred_verb(item: Deferred) -> str:
    held = item.evidence.get("action")  # a safety gate's deferral names the action it holds back
    if isinstance(held, str) and held in _KIND_OF and item.rule != Reason.IDLE_EXEMPT_NOTICE:
        return _KIND_VERB.get(_KIND_OF[held], held)
    if item.rule in _QUOTA_RULES and item.why in _QUOTA_STOP_WAITS:
        # The quota rules defer only an enforced stop this way (enforce: stop): the warning went
        # out, and the stop waits for its lead, or for a paused container to run again. Reported
        # only, a quota defers as NotEnforced, never so.
        return "stop"
    return _RULE_VERB.get(item.rule, item.rule.value)


STOP_AND_REMOVE = "stop and remove"
_KIND_OF = {k.value: k for k in ActionKind}
_QUOTA_RULES = frozenset(
    {Reason.CONTAINER_QUOTA_EXCEEDED, Reason.GPU_QUOTA_EXCEEDED, Reason.GPU_SLOTS_ABOVE_SPEC}
)
_QUOTA_STOP_WAITS = frozenset({DeferReason.WAITING_FOR_WARNING, DeferReason.NOT_DUE})


@dataclass(frozen=True)
class NextStep:
    """The next thing the controller will do to an object, as the plan says."""

    verb: str
    rule: str
    due_at: datetime | None
    pending: bool = False
    why: str | None = None
    # Due, but held by the per-pass action budget: the pass that carries it out at this rate (1:
    # the daemon's next; 0: none while the budget is 0; None: not held). No due time.
    in_passes: int | None = None

    @property
    def next_pass(self) -> bool:
        """Held by the budget (ordered after this pass's actions, before any timed step)."""
        return self.in_passes is not None

    @property
    def held_by_admin(self) -> bool:
        """Due, but no pass carries it out until an admin acts: a tripped breaker (until it is
        reset), or a per-pass action budget of 0."""
        return self.why == DeferReason.BREAKER_OPEN.value or self.in_passes == 0

    def text(self, now: datetime) -> str:
        if self.verb in (UNKNOWN_STEP, NO_STEP):
            return self.verb
        if self.pending:
            return f"{self.verb} now"
        if self.in_passes is not None:
            # (A budget of 0 runs none: held.)
            return f"{self.verb} {budget_turn(self.in_passes) if self.in_passes else 'held'}"
        if self.due_at is None:
            return f"{self.verb} held"
        when = until(self.due_at, now)
        return f"{self.verb} due" if when == "now" else f"{self.verb} {when}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.verb,
            "rule": self.rule,
            "pending": self.pending,
            "due_at": iso(self.due_at),
            "deferred_because": self.why,
        }


# The rules whose deferral's due time may be a warning on the way to the stop (the warning ladder).
_LADDER_RULES = frozenset({Reason.IDLE_TIMEOUT, Reason.MAX_RUNTIME_EXCEEDED})


def stop_due_at(d: Deferred) -> datetime | None:
    """When the plan says a deferred stop falls due: its ``stop_due_at`` evidence, or the clock
    start plus the timeout it reports. ``None`` when the plan does not say."""
    from controller.plan.types import ClockEvidence

    clock = ClockEvidence.of(d)
    return clock.stop_at() if clock is not None else None


def schedule(d: Deferred, *, idle_removes: bool = False) -> list[tuple[str, datetime | None]]:
    """What a deferral will do and when: a stop rule's deferral is due at its next wake-up, which
    is a warning when the plan's own evidence puts the stop later. An exemption or a keep-alive
    holding a step off is due when it ends: no stop then (but the ladder's warning and its lead),
    no removal then (but the hold's end, if later). The grace period's end is when idle checks
    begin, not a stop: idle time counts from then."""
    if d.why == DeferReason.GRACE_PERIOD:
        return [(GRACE_STEP, d.due_at)]
    hold_ends = _HOLD_ENDS.get(d.why)
    if hold_ends is not None and d.due_at is not None:
        # Any rule: a cleanup exemption ending is no removal either (the hold may run longer).
        return [(hold_ends, d.due_at)]
    if d.rule in _LADDER_RULES and d.due_at is not None:
        stop_at = stop_due_at(d)
        if stop_at is not None and d.due_at < stop_at:
            return [("warn", d.due_at), (verb(d, idle_removes=idle_removes), stop_at)]
    return [(verb(d, idle_removes=idle_removes), d.due_at)]


# What ends at the due time of a deferral that holds a step off (a stop, a removal, a limit).
_HOLD_ENDS = {DeferReason.EXEMPT: "exemption ends", DeferReason.KEEP_ALIVE: "keep-alive ends"}


UNKNOWN_STEP = "unknown"  # the step depends on a signal that cannot be read (NVML down)
NO_STEP = "-"
GRACE_STEP = "grace ends"
# Deferrals of the idle rules that say the idle stop cannot be judged at all.
_IDLE_RULES_UNJUDGED = frozenset({DeferReason.DOMAIN_UNAVAILABLE})


# The safety gates' deferrals of an action due now: no due time; held_when says which pass runs it.
HELD_BY_GATE = frozenset({DeferReason.BUDGET_EXHAUSTED, DeferReason.BREAKER_OPEN})


def held_when(d: Deferred) -> str:
    """When an action a safety gate holds comes (``describe`` and ``plan`` alike): ``at the next
    pass``, ``in 3 passes``, never while the budget is 0, or once an admin resets the tripped
    breaker."""
    if d.why == DeferReason.BREAKER_OPEN:
        return "until an admin resets the breaker (ds01ctl breaker reset)"
    turn = held_turn(d)
    if turn == 0:
        return "not while the per-pass action budget is 0"
    return "at the next pass" if turn == 1 else budget_turn(turn)


def held_turn(d: Deferred) -> int:
    """The pass that carries out an action the per-pass budget holds (its ``in_passes``; a pass
    recorded before it was given counts as the next)."""
    turn = d.evidence.get("in_passes", 1)
    return turn if isinstance(turn, int) and not isinstance(turn, bool) and turn >= 0 else 1


def next_step(
    items: Sequence[Action | Deferred], *, nvml_ok: bool = True, idle_removes: bool = False
) -> NextStep | None:
    """Actions of this pass come first (they happen now; a destructive one over a warning); then
    an action the per-pass budget holds to the next pass, then one a tripped breaker holds;
    otherwise the earliest timed deferral.

    A deferral with no due time (protected, exempt, unknown signal) is not a scheduled step:
    nothing will happen unless something changes, so the column shows ``-`` and ``describe``
    says why. The end of a grace period is not a step either (idle checks begin then; a busy
    container is not stopped): it shows as ``grace ends in ...`` only when nothing else is due.
    When the idle rule cannot see GPU activity (NVML down) and no other rule has a due time, the
    step is ``unknown``, never a countdown.
    """
    actions = [i for i in items if isinstance(i, Action)]
    if actions:
        # Every action of the plan is carried out in this pass, whatever its due time (a warning's
        # is the time its level was reached, which may precede a stop's): the destructive one is
        # the step that matters, so it wins over a warning of the same pass.
        first = min(actions, key=lambda a: (not a.destructive, a.due_at, a.key))
        return NextStep(verb=verb(first), rule=first.reason.value, due_at=first.due_at, pending=True)
    deferred = [i for i in items if isinstance(i, Deferred)]
    # Due now but over this pass's action budget: the daemon carries it out at its next pass,
    # sooner than any timed deferral (those, too, only act at a pass).
    budget_held = [d for d in deferred if d.why == DeferReason.BUDGET_EXHAUSTED]
    if budget_held:
        d = min(budget_held, key=lambda x: (held_turn(x), x.rule.value))
        return NextStep(
            verb=verb(d, idle_removes=idle_removes),
            rule=d.rule.value,
            due_at=None,
            why=d.why.value,
            in_passes=held_turn(d),
        )
    # Due, but held by a tripped breaker: no pass carries it out until an admin resets it, and the
    # pass after that does (no due time; not "nothing to do", nor a later step).
    breaker_held = [d for d in deferred if d.why == DeferReason.BREAKER_OPEN]
    if breaker_held:
        d = min(breaker_held, key=lambda x: x.rule.value)
        return NextStep(
            verb=verb(d, idle_removes=idle_removes), rule=d.rule.value, due_at=None, why=d.why.value
        )
    timed = [d for d in deferred if d.due_at is not None and d.why != DeferReason.GRACE_PERIOD]
    grace = [d for d in deferred if d.why == DeferReason.GRACE_PERIOD and d.due_at is not None]
    unjudged = [
        d
        for d in deferred
        if d.rule in _IDLE_STOP_RULES
        and (d.why in _IDLE_RULES_UNJUDGED or (not nvml_ok and d.why == DeferReason.GRACE_PERIOD))
    ]
    if timed:
        d = min(timed, key=lambda x: (x.due_at, x.rule.value))
        step_verb, at = schedule(d, idle_removes=idle_removes)[0]
        return NextStep(verb=step_verb, rule=d.rule.value, due_at=at, why=d.why.value)
    if unjudged:
        u = unjudged[0]
        return NextStep(verb=UNKNOWN_STEP, rule=u.rule.value, due_at=None, why=u.why.value)
    if grace:
        g = min(grace, key=lambda x: (x.due_at, x.rule.value))
        return NextStep(verb=GRACE_STEP, rule=g.rule.value, due_at=g.due_at, why=g.why.value)
    return None


_IDLE_STOP_RULES = frozenset({Reason.IDLE_TIMEOUT, Reason.IDLE_WARNING})


# --- idleness --------------------------------------------------------------------------------


class IdleState(StrEnum):
    IDLE = "idle"
    ACTIVE = "active"
    UNKNOWN = "unknown"  # the last sample could not be decided (a signal unreadable)
    NO_DATA = "no-data"  # not sampled yet (first sighting)
    NOT_RUNNING = "not-running"
    NO_GPU = "no-gpu"  # running without a GPU: only GPU containers are sampled (or idle-stopped)
    UNAVAILABLE = "unavailable"  # the state store could not be read
    # The last sample is idle but no idle time counts yet: the grace period, or the streak starts
    # with the next reading. Not "active": the container does nothing.
    IDLE_GRACE = "idle-grace"
    IDLE_UNCOUNTED = "idle-uncounted"


@dataclass(frozen=True)
class Idleness:
    state: IdleState
    since: datetime | None = None

    def text(self, now: datetime) -> str:
        if self.state == IdleState.IDLE:
            return since(self.since, now)
        return _IDLE_COLUMN[self.state]

    def phrase(self, now: datetime) -> str:
        """For sentences (``describe``): ``idle 42m``, ``not sampled yet``..."""
        if self.state == IdleState.IDLE:
            return f"idle {since(self.since, now)}"
        return _IDLE_PHRASE[self.state]


_IDLE_COLUMN = {
    IdleState.ACTIVE: "active",
    IdleState.UNKNOWN: "unknown",
    IdleState.NO_DATA: UNKNOWN,
    IdleState.NOT_RUNNING: "-",
    IdleState.NO_GPU: "-",
    IdleState.UNAVAILABLE: UNKNOWN,
    IdleState.IDLE_GRACE: "idle (grace)",
    IdleState.IDLE_UNCOUNTED: "idle (new)",
}
_IDLE_PHRASE = {
    IdleState.ACTIVE: "active",
    IdleState.UNKNOWN: "idle state unknown (a signal could not be read)",
    IdleState.NO_DATA: "not sampled yet",
    IdleState.NOT_RUNNING: "not running",
    IdleState.NO_GPU: "not watched for idleness (it holds no GPU)",
    IdleState.UNAVAILABLE: "idle time unavailable",
    IdleState.IDLE_GRACE: "idle, not counted during the grace period",
    IdleState.IDLE_UNCOUNTED: "idle, counted from the next reading",
}


_REMOVALS = frozenset({ActionKind.REMOVE_CONTAINER.value, ActionKind.STOP_CONTAINER.value})


def removal_under_way(view: View, c: ContainerObs) -> tuple[str, str, datetime] | None:
    """The controller's action a container the engine is still removing (state ``removing``) is in:
    its kind, reason and start, from the intent the executor keeps open until the engine shows the
    container gone (a removal, or a stop whose container is removed with it)."""
    if c.state != ContainerState.REMOVING or view.memory is None:
        return None
    for intent in view.memory.intents.values():
        action = intent.action
        target = action.get("target")
        if (
            action.get("kind") in _REMOVALS
            and isinstance(target, dict)
            and target.get("container_id") == c.id
        ):
            return str(action["kind"]), str(action.get("reason") or UNKNOWN), intent.started_at
    return None


def removing_phrase(view: View, c: ContainerObs) -> str:
    """Whose removal a container in state ``removing`` is in, as far as the controller knows."""
    from controller.cli.render import ago

    under_way = removal_under_way(view, c)
    if under_way is not None:
        kind, reason, started = under_way
        what = (
            "removing it"
            if kind == ActionKind.REMOVE_CONTAINER.value
            else "stopping it, and it is being removed"
        )
        return (
            f"the controller is {what} ({reason}) since {ago(started, view.now)}; the engine has "
            "not finished, and the controller records it once the container is gone"
        )
    if view.memory is None:
        return "the engine is removing it; whether the removal is the controller's is unknown (no memory)"
    return "the engine is removing it; no removal of the controller's is under way"


def idleness(view: View, c: ContainerObs) -> Idleness:
    if c.state != ContainerState.RUNNING:
        return Idleness(IdleState.NOT_RUNNING)
    if not c.has_gpu:
        return Idleness(IdleState.NO_GPU)  # never sampled: no idle time is ever known for it
    if view.memory is None:
        return Idleness(IdleState.UNAVAILABLE)
    cm = view.container_memory(c.id)
    if cm is None or not cm.samples:
        return Idleness(IdleState.NO_DATA)
    if cm.idle_since is not None:
        return Idleness(IdleState.IDLE, cm.idle_since)
    if cm.samples[-1].idle is None:
        return Idleness(IdleState.UNKNOWN)
    if cm.samples[-1].idle:
        in_grace = any(
            isinstance(i, Deferred) and i.why == DeferReason.GRACE_PERIOD for i in view.container_items(c)
        )
        return Idleness(IdleState.IDLE_GRACE if in_grace else IdleState.IDLE_UNCOUNTED)
    return Idleness(IdleState.ACTIVE)


# --- rates from the last two samples ----------------------------------------------------------


@dataclass(frozen=True)
class Rates:
    cpu_percent: float | None = None
    net_bytes_per_s: float | None = None
    net_bytes_per_interval: float | None = None


def rates(view: View, c: ContainerObs) -> Rates:
    """CPU share (% of one core) and network rate between the last two samples of this run."""
    cm = view.container_memory(c.id)
    if cm is None or len(cm.samples) < 2:
        return Rates()
    a, b = cm.samples[-2], cm.samples[-1]
    wall_s = (b.at - a.at).total_seconds()
    if wall_s <= 0:
        return Rates()
    cpu = None
    if a.cpu_usage_ns is not None and b.cpu_usage_ns is not None and b.cpu_usage_ns >= a.cpu_usage_ns:
        cpu = (b.cpu_usage_ns - a.cpu_usage_ns) / (wall_s * 1e9) * 100.0
    net_delta = None
    if a.net_bytes is not None and b.net_bytes is not None and b.net_bytes >= a.net_bytes:
        net_delta = float(b.net_bytes - a.net_bytes)
    return Rates(
        cpu_percent=cpu,
        net_bytes_per_s=None if net_delta is None else net_delta / wall_s,
        net_bytes_per_interval=net_delta,
    )


NO_RATE_YET = "no rate yet"
# A running container without a GPU: only GPU containers are sampled, so no rate ever comes.
NOT_SAMPLED = "not sampled: it holds no GPU"


def rate_unknowns(view: View, c: ContainerObs, r: Rates) -> tuple[str | None, str | None]:
    """Why ``r``'s CPU share and network rate are unknown, each ``None`` where it is known or does
    not apply (a container not running): the counter's own reason, else that the controller's
    samples could not be read, else that it has not taken two samples of this run yet (or never
    does: a container without a GPU is not sampled)."""
    if c.state != ContainerState.RUNNING or c.signals is None:
        return None, None
    why = (
        NOT_SAMPLED
        if not c.has_gpu
        else NO_RATE_YET
        if view.memory is not None
        else "state not read: no samples"
    )
    cpu = None if r.cpu_percent is not None else c.signals.cpu_unknown or why
    net = None if r.net_bytes_per_s is not None else c.signals.net_unknown or why
    return cpu, net


def gpu_util(view: View, c: ContainerObs) -> tuple[float | None, str | None]:
    """The highest utilization over the devices the idle rule reads for the container
    (:meth:`View.gpu_readings`), or why one of them is unknown."""
    if c.signals is None:
        return None, None
    readings = view.gpu_readings(c)
    if not readings:
        return None, None
    reasons: dict[str, str | None] = {r.uuid: r.unknown_reason for r in c.signals.gpu_util}
    values: list[float] = []
    for uuid, percent in readings.items():
        if percent is None:
            return None, reasons.get(uuid) or _unread_reason(view.snapshot.gpus, uuid)
        values.append(percent)
    return max(values), None


def _unread_reason(gpus: Sequence[GpuObs], uuid: str) -> str:
    """Why NVML gave no utilization for a device the container has no reading of its own for."""
    for g in gpus:
        if g.uuid == uuid:
            return g.utilization_unknown or "not reported by NVML"
        if any(m.uuid == uuid for m in g.mig_devices):
            return "per-MIG utilization is not reported by NVML"
    return "unknown"


def gpu_devices(gpus: Sequence[GpuObs]) -> list[tuple[GpuObs, str | None]]:
    """Every addressable device: each GPU, then its MIG devices (uuid of the MIG device)."""
    out: list[tuple[GpuObs, str | None]] = []
    for g in sorted(gpus, key=lambda x: x.index):
        out.append((g, None))
        for m in sorted(g.mig_devices, key=lambda x: x.index):
            out.append((g, m.uuid))
    return out


@dataclass(frozen=True)
class UnlistedDevice:
    """A device whose compute processes NVML could not list: they are unknown, not none. With NVML
    down there is one for the whole host (``slot`` and ``uuid`` None)."""

    slot: str | None
    uuid: str | None
    reason: str

    def text(self) -> str:
        """``GPU 2: <why>``, ``MIG device 1.1: <why>``, or the whole host's ``NVML unavailable: <why>``."""
        if self.slot is None:
            return clean(self.reason, 300)
        what = "MIG device" if "." in self.slot else "GPU"
        return f"{what} {self.slot}: {clean(self.reason, 300)}"


def unlisted_devices(snapshot: Snapshot) -> list[UnlistedDevice]:
    """The devices whose processes NVML could not list, in slot order; one entry for the whole host
    when NVML is unavailable. A GPU in MIG mode has its processes on its MIG devices (each its own
    entry), so it is never one itself."""
    if not snapshot.domain_ok(Domain.NVML):
        error = snapshot.domain_error(Domain.NVML) or "unknown error"
        return [UnlistedDevice(None, None, f"NVML unavailable: {error}")]
    return [UnlistedDevice(slot, uuid, why) for slot, uuid, why in process_devices(snapshot.gpus) if why]


def process_devices(gpus: Sequence[GpuObs]) -> list[tuple[str, str, str | None]]:
    """The devices NVML lists compute processes on, in slot order, each as (slot, uuid, why its
    processes are unknown or None): every GPU not in MIG mode, and every MIG device (a GPU in MIG
    mode has its processes on its MIG devices, none of its own)."""
    out: list[tuple[str, str, str | None]] = []
    for g in sorted(gpus, key=lambda x: x.index):
        if not g.mig_enabled:
            out.append((str(g.index), g.uuid, g.processes_unknown))
        out.extend(
            (f"{g.index}.{m.index}", m.uuid, m.processes_unknown)
            for m in sorted(g.mig_devices, key=lambda x: x.index)
        )
    return out


def release_breaker_line(memory: Any) -> str:
    """One line on the release breaker (``breaker status``, ``get allocations``, ``describe gpu``)."""
    rb = memory.release_breaker
    if rb.tripped:
        return (
            f"release breaker: TRIPPED at {stamp(rb.tripped_at)}: {clean(rb.reason, 600)}; no ledger row is "
            "released until an admin resets it: sudo ds01ctl breaker reset"
        )
    return "release breaker: closed (ledger rows released within the per-pass budget)"
