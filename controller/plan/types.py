"""Plan, Action and Deferred: what the planner decides, with reasons and evidence.

The JSON form of these types (``Plan.model_dump(mode="json")``) is the stable schema printed by
``ds01ctl plan -o json``; change it only by adding optional fields.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controller.memory import ControllerMemory
from controller.snapshot import ContainerId


class ActionKind(StrEnum):
    STOP_CONTAINER = "StopContainer"
    REMOVE_CONTAINER = "RemoveContainer"
    WARN_OWNER = "WarnOwner"
    RELEASE_ALLOCATION = "ReleaseAllocation"
    KILL_PROCESS = "KillProcess"
    RESET_GPU = "ResetGpu"
    ALERT_ADMIN = "AlertAdmin"
    UPDATE_RESOURCES = "UpdateResources"


# Kinds whose success is recorded in ``memory.done``: the one-shots (never repeated), and GPU resets
# (the planner alerts instead of resetting the same dirty GPU twice). Stops, removals, kills and
# releases are level-triggered: if the world still shows the target, they run again.
DONE_KINDS = frozenset({ActionKind.WARN_OWNER, ActionKind.ALERT_ADMIN, ActionKind.RESET_GPU})


# A released ledger row makes its GPU look free to the allocator: while the row is in use, that
# puts a second user on the GPU. Releases are destructive (budget, breakers) for that reason.
# The evidence key of a StopContainer that leaves the container in place, and of a WarnOwner before
# such a stop: the hold after the stop that the owner's notice names ("kept for 2d after the stop"),
# in seconds; absent when it names none.
KEPT_AFTER_STOP_S = "kept_after_stop_s"

DESTRUCTIVE_KINDS = frozenset(
    {
        ActionKind.STOP_CONTAINER,
        ActionKind.REMOVE_CONTAINER,
        ActionKind.KILL_PROCESS,
        ActionKind.RESET_GPU,
        ActionKind.RELEASE_ALLOCATION,
        # Changes a live container's cgroup: under the budget and the breaker like the others.
        ActionKind.UPDATE_RESOURCES,
    }
)


class Reason(StrEnum):
    CREATED_NEVER_STARTED = "CreatedNeverStarted"
    GPU_HOLD_EXPIRED = "GpuHoldExpired"
    STOPPED_HOLD_EXPIRED = "StoppedHoldExpired"
    IDLE_TIMEOUT = "IdleTimeout"
    IDLE_WARNING = "IdleWarning"
    IDLE_EXEMPT_NOTICE = "IdleExemptNotice"
    MAX_RUNTIME_EXCEEDED = "MaxRuntimeExceeded"
    MAX_RUNTIME_WARNING = "MaxRuntimeWarning"
    LEAKED_ALLOCATION = "LeakedAllocation"
    DUPLICATE_GPU_HOLDER = "DuplicateGpuHolder"
    ORPHANED_PROCESS = "OrphanedProcess"
    FOREIGN_PROCESS_ON_GPU = "ForeignProcessOnGpu"
    HOST_GPU_PROCESS = "HostGpuProcess"
    FOREIGN_GPU_WORKLOAD = "ForeignGpuWorkload"
    GPU_DIRTY = "GpuDirty"
    KILL_FAILED = "KillFailed"
    BREAKER_TRIPPED = "BreakerTripped"
    LEDGER_UNREADABLE = "LedgerUnreadable"
    LIMITS_MISSING = "LimitsMissing"
    LIMITS_ABOVE_SPEC = "LimitsAboveSpec"
    LIMITS_BELOW_USAGE = "LimitsBelowUsage"  # the spec's limit is below what the container uses now
    CONTAINER_QUOTA_EXCEEDED = "ContainerQuotaExceeded"
    GPU_QUOTA_EXCEEDED = "GpuQuotaExceeded"
    GPU_SLOTS_ABOVE_SPEC = "GpuSlotsAboveSpec"
    AGGREGATE_CAP_BYPASSED = "AggregateCapBypassed"  # a container outside its owner's slice
    AGGREGATE_CAP_EXCEEDED = "AggregateCapExceeded"  # a user's containers sum over the slice caps


class DeferReason(StrEnum):
    GRACE_PERIOD = "GracePeriod"
    KEEP_ALIVE = "KeepAlive"
    EXEMPT = "Exempt"
    UNKNOWN_SIGNAL = "UnknownSignal"
    PROTECTED = "Protected"
    MONITORING = "Monitoring"
    WAITING_FOR_WINDOW = "WaitingForWindow"
    WAITING_FOR_WARNING = "WaitingForWarning"
    NOT_DUE = "NotDue"
    BUDGET_EXHAUSTED = "BudgetExhausted"
    BREAKER_OPEN = "BreakerOpen"
    DOMAIN_UNAVAILABLE = "DomainUnavailable"
    BACKOFF = "Backoff"
    NEEDS_SECOND_SIGHTING = "NeedsSecondSighting"
    RESET_NOT_ALLOWED = "ResetNotAllowed"
    BELOW_USAGE = "BelowUsage"  # a lower limit would cut into what the container uses now
    NOT_ENFORCED = "NotEnforced"  # the policy only reports it


def budget_turn(in_passes: int) -> str:
    """When an action the per-pass budget holds comes, ``in_passes`` (1 or more) passes on:
    ``next pass``, ``in 3 passes`` (the planner's message and ``ds01ctl`` say it alike)."""
    return "next pass" if in_passes == 1 else f"in {in_passes} passes"


class Target(BaseModel):
    """What an action touches, plus what must still be true when it runs (the precondition)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    container: str | None = Field(default=None, description="Container name")
    container_id: str | None = None
    expected_state: str | None = Field(default=None, description="Container state the plan saw")
    expected_started_at: datetime | None = Field(default=None, description="State.StartedAt the plan saw")
    pid: int | None = None
    pid_start_time: float | None = Field(default=None, description="Start time of pid; guards PID reuse")
    gpu: str | None = Field(default=None, description="GPU or MIG UUID")
    user: str | None = Field(default=None, description="Owner, for notifications and the event log")
    ledger_entry: dict[str, str] | None = Field(default=None, description="The ledger row to release")

    def label(self) -> str:
        if self.container:
            return self.container
        if self.pid is not None:
            return f"pid {self.pid}"
        if self.gpu:
            return self.gpu
        return f"user {self.user}" if self.user else "host"


class _Params(BaseModel):
    """Executor parameters of one action kind. Unset (None) values take the executor's default."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class StopParams(_Params):
    """``StopContainer``: ``docker stop -t grace_s``, then ``docker rm`` when ``remove``.

    ``quota_counted_ids`` (a per-user quota's stop only): the owner's other containers the quota
    judgement counted and keeps, those that make this one beyond the quota (for the GPU quota, the
    kept holders of a counted GPU). The executor stops only while every one of them is still live
    (running, paused, restarting): one stopped or removed since the plan may have brought the owner
    within the quota, and the stop is skipped for the next pass to judge again. New containers do
    not matter: they only add to what the owner runs.
    """

    grace_s: float | None = Field(default=None, description="SIGTERM grace before SIGKILL, seconds")
    remove: bool = Field(default=False, description="Remove the container after the stop")
    quota_counted_ids: tuple[ContainerId, ...] | None = Field(
        default=None,
        description="A ContainerQuotaExceeded or GpuQuotaExceeded stop: the ids of the owner's other "
        "containers the quota counted and keeps; the stop is skipped unless each is still live. "
        "None for every other stop",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_timeout(cls, data: Any) -> Any:
        # Plans and intent records written before the params were typed named the stop grace
        # "timeout_s" (as Docker's API does): they are read as grace_s, so an old intent recovers.
        if isinstance(data, dict) and "timeout_s" in data:
            data = dict(data)
            legacy = data.pop("timeout_s")
            data.setdefault("grace_s", legacy)
        return data


class RemoveParams(_Params):
    """``RemoveContainer``: ``docker rm`` (``force`` is never set by the planner)."""

    force: bool = False


class WarnParams(_Params):
    """``WarnOwner``: a notice to the owner, recorded as delivered under ``warning_key``."""

    warning_key: str | None = Field(default=None, description="Memory key the delivery is recorded under")
    level_pct: int | None = Field(default=None, description="Warning level reached, % of the limit")
    stop_expected_at: str | None = Field(default=None, description="ISO time the stop is expected")
    notice: str | None = Field(
        default=None, description="The owner's notice; {stop_at} filled in at delivery"
    )
    severity: str | None = None

    def announced_stop(self) -> datetime | None:
        """``stop_expected_at`` as a time (None when unset or unreadable): what the owner is told."""
        if not self.stop_expected_at:
            return None
        try:
            at = datetime.fromisoformat(self.stop_expected_at)
        except ValueError:
            return None
        return at if at.tzinfo is not None else None


class ReleaseParams(_Params):
    """``ReleaseAllocation``: the row to release is the target's ``ledger_entry``."""


class KillParams(_Params):
    """``KillProcess``: SIGTERM, then SIGKILL after ``grace_s``."""

    grace_s: float | None = Field(default=None, description="SIGTERM grace before SIGKILL, seconds")


class ResetParams(_Params):
    """``ResetGpu``: the reset command (``{uuid}`` filled in) and how long it may run."""

    command: tuple[str, ...] | None = Field(default=None, description="argv; None: the executor's own")
    timeout_s: float | None = Field(default=None, description="How long the reset command may run")


class AlertParams(_Params):
    """``AlertAdmin``: the message is the alert."""

    severity: str | None = None


class ResourceUpdate(_Params):
    """Parameters of an UpdateResources action: the limits to set (None: leave as it is).

    ``memory_floor_bytes`` and ``pids_floor`` are the executor's re-check: it reads the container's
    use again right before ``docker update`` and does not lower below them.
    """

    nano_cpus: int | None = None
    cpu_quota_us: int | None = Field(
        default=None,
        description="Set instead of nano_cpus when the "
        "container's CPU limit is a quota (Docker refuses to mix them)",
    )
    cpu_period_us: int | None = None
    memory_bytes: int | None = None
    memory_swap_bytes: int | None = Field(default=None, description="Memory plus swap; -1: unlimited")
    memory_reservation_bytes: int | None = Field(
        default=None,
        description="Set with a memory limit below the container's reservation (the new memory limit): "
        "Docker does not start a container whose reservation is above its limit",
    )
    pids_limit: int | None = None
    memory_margin_pct: float = 10.0


ActionParams = (
    StopParams
    | RemoveParams
    | WarnParams
    | ReleaseParams
    | KillParams
    | ResetParams
    | AlertParams
    | ResourceUpdate
)

# One params model per action kind: a new kind adds its ActionKind member, its model above, and its
# line here (the executor then dispatches on the kind).
PARAMS_BY_KIND: dict[ActionKind, type[_Params]] = {
    ActionKind.STOP_CONTAINER: StopParams,
    ActionKind.REMOVE_CONTAINER: RemoveParams,
    ActionKind.WARN_OWNER: WarnParams,
    ActionKind.RELEASE_ALLOCATION: ReleaseParams,
    ActionKind.KILL_PROCESS: KillParams,
    ActionKind.RESET_GPU: ResetParams,
    ActionKind.ALERT_ADMIN: AlertParams,
    ActionKind.UPDATE_RESOURCES: ResourceUpdate,
}

P = TypeVar("P", bound=_Params)


def params_for(kind: ActionKind, raw: Mapping[str, Any] | None = None) -> ActionParams:
    """The params model of ``kind`` read from a mapping (a plan or an intent record read back)."""
    return cast(ActionParams, PARAMS_BY_KIND[kind].model_validate(dict(raw or {})))


class Action(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ActionKind
    target: Target
    reason: Reason
    message: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    due_at: datetime
    key: str = Field(description="Idempotency key: the same decision in a later pass has the same key")
    params: ActionParams = Field(
        default_factory=AlertParams,
        description="Executor parameters, one model per kind (StopParams, KillParams, ResetParams, ...)",
    )

    @model_validator(mode="before")
    @classmethod
    def _params_of_kind(cls, data: Any) -> Any:
        # A mapping (a plan read back, an intent record) becomes the params model of the kind.
        if isinstance(data, dict):
            raw = data.get("params")
            try:
                kind = ActionKind(str(data.get("kind")))
            except ValueError:
                return data  # an unknown kind: the kind field's own error says so
            if raw is None or isinstance(raw, Mapping):
                data = {**data, "params": params_for(kind, raw)}
        return data

    def params_as(self, cls: type[P]) -> P:
        """The params as ``cls`` (the kind's model); the defaults when they are of another kind."""
        p = self.params
        return p if isinstance(p, cls) else cls()

    @property
    def destructive(self) -> bool:
        return self.kind in DESTRUCTIVE_KINDS

    def promised_hold_s(self) -> float | None:
        """The hold after the stop that this StopContainer's or WarnOwner's owner notice names
        (evidence :data:`KEPT_AFTER_STOP_S`), in seconds: that start of the container is not removed
        before its stop plus this. None: another kind, or it names no finite hold."""
        if self.kind not in _NOTICE_KINDS:
            return None
        hold_s = _number(self.evidence.get(KEPT_AFTER_STOP_S))
        return hold_s if hold_s is not None and math.isfinite(hold_s) else None


_ENDING_KINDS = frozenset({ActionKind.STOP_CONTAINER, ActionKind.REMOVE_CONTAINER})
_NOTICE_KINDS = frozenset({ActionKind.STOP_CONTAINER, ActionKind.WARN_OWNER})


def warning_record(memory: ControllerMemory, action: Action, at: datetime) -> ControllerMemory:
    """``memory`` with a WarnOwner sent at ``at`` (delivered to terminals or written to the alerts
    file): under its warning key, with the stop time it announced, and the hold after the stop its
    notice named (:meth:`Action.promised_hold_s`), for the start it was planned for (the longest one
    kept): a reload that shortens the holds before the stop does not remove that start sooner than
    the owner read. The executor records a warning this way, the forecast a predicted one."""
    t = action.target
    if action.kind is not ActionKind.WARN_OWNER or not t.container_id:
        return memory
    hold_s = action.promised_hold_s()
    if hold_s is not None and t.expected_started_at is not None:
        memory = memory.with_promised_hold(t.container_id, t.expected_started_at, hold_s)
    warn = action.params_as(WarnParams)
    return memory.with_warning(
        t.container_id, warn.warning_key or action.reason.value, at, warn.announced_stop()
    )


def own_record(memory: ControllerMemory, action: Action, at: datetime, *, removed: bool) -> ControllerMemory:
    """``memory`` with what a StopContainer or RemoveContainer of the controller's did, at ``at``:
    the executor records a done one this way, the forecast a predicted one.

    A container it removed (or stopped and removed) is remembered a day: the ledger rows still
    naming it are released without weighing on the release breaker. A container it stopped and left
    in place is marked for that start: its removal does not weigh on the removal breaker (see
    ``plan/safety.py``), and comes no earlier than the hold its owner's notice named
    (:meth:`Action.promised_hold_s`)."""
    t = action.target
    if not t.container_id or action.kind not in _ENDING_KINDS:
        return memory
    return memory.with_controller_end(
        t.container_id,
        t.container or "",
        t.expected_started_at,
        at,
        removed=removed,
        promised_hold_s=action.promised_hold_s(),
    )


class Deferred(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    target: Target
    rule: Reason = Field(description="The rule that would act")
    why: DeferReason
    message: str
    due_at: datetime | None = Field(default=None, description="When it becomes due if nothing changes")
    evidence: dict[str, Any] = Field(default_factory=dict)


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# The rules that run a clock through the warning ladder (rules 3 and 4), and their warnings.
CLOCK_RULES = frozenset(
    {Reason.IDLE_TIMEOUT, Reason.IDLE_WARNING, Reason.MAX_RUNTIME_EXCEEDED, Reason.MAX_RUNTIME_WARNING}
)


@dataclass(frozen=True, slots=True)
class ClockEvidence:
    """The documented evidence keys of the clock rules (:data:`CLOCK_RULES`), typed.

    In the JSON evidence: ``clock_start`` (when the clock started: the idle streak's first idle
    reading, or the start), ``timeout_s`` (the clock's limit: the idle timeout after any high-demand
    reduction, or the max runtime), ``base_timeout_s`` (the idle timeout before that reduction),
    ``elapsed_s``, ``lead_s``, ``stop_due_at``, and ``effective_stop_due_at`` (the end of the
    minimum idle span, where it ends after the timeout). Readers (``describe``, ``get``) use this,
    not the keys.
    """

    clock_start: datetime | None
    limit_s: float | None
    base_limit_s: float | None
    elapsed_s: float | None
    lead_s: float | None
    stop_due_at: datetime | None
    span_ends_at: datetime | None = None

    @classmethod
    def of(cls, item: Action | Deferred) -> ClockEvidence | None:
        """The clock evidence of a clock rule's action or deferral; None for other rules."""
        rule = item.reason if isinstance(item, Action) else item.rule
        if rule not in CLOCK_RULES:
            return None
        ev = item.evidence
        return cls(
            clock_start=_when(ev.get("clock_start")),
            limit_s=_number(ev.get("timeout_s")),
            base_limit_s=_number(ev.get("base_timeout_s")),
            elapsed_s=_number(ev.get("elapsed_s")),
            lead_s=_number(ev.get("lead_s")),
            stop_due_at=_when(ev.get("stop_due_at")),
            span_ends_at=_when(ev.get("effective_stop_due_at")),
        )

    def stop_at(self) -> datetime | None:
        """When the stop falls due: ``stop_due_at``, or the clock start plus the limit (not before
        the minimum idle span ends)."""
        if self.stop_due_at is not None:
            return self.stop_due_at
        if self.clock_start is not None and self.limit_s is not None:
            at = self.clock_start + timedelta(seconds=self.limit_s)
            span = self.span_ends_at
            return span if span is not None and span > at else at
        return None


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    observed_at: datetime
    evaluated_at: datetime
    actions: tuple[Action, ...] = ()
    deferred: tuple[Deferred, ...] = ()
    delivered_alerts: tuple[Action, ...] = Field(
        default=(),
        description="AlertAdmin actions this pass raised again but did not propose because each was "
        "delivered already (its key is in memory.done): with the AlertAdmin actions above, the admin "
        "alerts open now",
    )
    memory: ControllerMemory = Field(
        default_factory=ControllerMemory,
        description="Memory after this pass's observations (samples, sightings), before any outcome",
        exclude=True,
    )

    @property
    def next_due_at(self) -> datetime | None:
        times = [d.due_at for d in self.deferred if d.due_at is not None]
        return min(times) if times else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class GpuRefEvidence:
    """One entry of the ``gpus`` evidence: the device as the container was given it.

    The planner writes ``{"raw", "uuid", "source", "mig"}``; an intent record rebuilt from the event
    log (salvage) holds the bare device name, read as ``raw`` with the rest None.
    """

    raw: str | None
    uuid: str | None
    source: str | None
    mig: bool | None

    @property
    def device(self) -> str | None:
        """The device to name: the resolved UUID, else the reference as written."""
        return self.uuid or self.raw


@dataclass(frozen=True, slots=True)
class GpuEvidence:
    """The documented GPU evidence keys of the container rules, typed.

    In the JSON evidence: ``gpus`` (the container's device references, a list of
    ``{"raw", "uuid", "source", "mig"}``; bare names in records rebuilt from the event log) and
    ``physical_gpus`` (the UUIDs of the physical GPUs behind them). A missing or wrong-typed key
    reads as empty, and an entry of the wrong type is left out; reading never raises.
    """

    gpus: tuple[GpuRefEvidence, ...]
    physical_gpus: tuple[str, ...]

    @classmethod
    def from_evidence(cls, evidence: Mapping[str, Any] | None) -> GpuEvidence:
        ev = evidence if isinstance(evidence, Mapping) else {}
        refs: list[GpuRefEvidence] = []
        raw_refs = ev.get("gpus")
        for ref in raw_refs if isinstance(raw_refs, list | tuple) else ():
            if isinstance(ref, Mapping):
                mig = ref.get("mig")
                refs.append(
                    GpuRefEvidence(
                        raw=_text(ref.get("raw")),
                        uuid=_text(ref.get("uuid")),
                        source=_text(ref.get("source")),
                        mig=mig if isinstance(mig, bool) else None,
                    )
                )
            elif isinstance(ref, str) and ref:
                refs.append(GpuRefEvidence(raw=ref, uuid=None, source=None, mig=None))
        physical = ev.get("physical_gpus")
        uuids = (
            tuple(u for u in physical if isinstance(u, str) and u)
            if isinstance(physical, list | tuple)
            else ()
        )
        return cls(gpus=tuple(refs), physical_gpus=uuids)

    def devices(self) -> list[str]:
        """The devices held, in order and once each: the ``gpus`` references, else ``physical_gpus``."""
        found = dict.fromkeys(d for d in (r.device for r in self.gpus) if d)
        return list(found) if found else list(dict.fromkeys(self.physical_gpus))


@dataclass(frozen=True, slots=True)
class ProcessEvidence:
    """The documented identity evidence keys of the process rules (a ``KillProcess``), typed.

    In the JSON evidence: ``container_id`` (the container whose cgroup holds the process; null for
    a host process) and ``cgroup`` (the cgroup path the planner saw). ``has_container_id`` tells a
    null ``container_id`` (a host process) from a missing key (an old record: the target's is
    used); ``container_id_type`` names the type of a present value that is neither a string nor
    null (the executor refuses such an action). Reading never raises.
    """

    container_id: str | None
    has_container_id: bool
    container_id_type: str | None
    cgroup: str | None

    @classmethod
    def from_evidence(cls, evidence: Mapping[str, Any] | None) -> ProcessEvidence:
        ev = evidence if isinstance(evidence, Mapping) else {}
        cid = ev.get("container_id")
        cgroup = ev.get("cgroup")
        return cls(
            container_id=cid if isinstance(cid, str) else None,
            has_container_id="container_id" in ev,
            container_id_type=None if cid is None or isinstance(cid, str) else type(cid).__name__,
            cgroup=cgroup if isinstance(cgroup, str) else None,
        )

    def container_id_or(self, fallback: str | None) -> str | None:
        """The evidence's container (None: a host process); ``fallback`` when the key is missing."""
        return self.container_id if self.has_container_id else fallback


@dataclass(frozen=True, slots=True)
class OwnerEvidence:
    """The ``owner`` evidence key of the quota and aggregate-cap rules (the user over a limit).

    A missing, empty or wrong-typed value reads as None; reading never raises.
    """

    owner: str | None

    @classmethod
    def from_evidence(cls, evidence: Mapping[str, Any] | None) -> OwnerEvidence:
        ev = evidence if isinstance(evidence, Mapping) else {}
        return cls(owner=_text(ev.get("owner")))
