"""Plan, Action and Deferred: what the planner decides, with reasons and evidence.

The JSON form of these types (``Plan.model_dump(mode="json")``) is the stable schema printed by
``ds01ctl plan -o json``; change it only by adding optional fields.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from controller.memory import ControllerMemory


class ActionKind(StrEnum):
    STOP_CONTAINER = "StopContainer"
    REMOVE_CONTAINER = "RemoveContainer"
    WARN_OWNER = "WarnOwner"
    RELEASE_ALLOCATION = "ReleaseAllocation"
    KILL_PROCESS = "KillProcess"
    RESET_GPU = "ResetGpu"
    ALERT_ADMIN = "AlertAdmin"
    UPDATE_RESOURCES = "UpdateResources"


# A released ledger row makes its GPU look free to the allocator: while the row is in use, that
# puts a second user on the GPU. Releases are destructive (budget, breakers) for that reason.
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


class ResourceUpdate(BaseModel):
    """Parameters of an UpdateResources action: the limits to set (None: leave as it is).

    ``memory_floor_bytes`` and ``pids_floor`` are the executor's re-check: it reads the container's
    use again right before ``docker update`` and does not lower below them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    nano_cpus: int | None = None
    cpu_quota_us: int | None = Field(
        default=None,
        description="Set instead of nano_cpus when the "
        "container's CPU limit is a quota (Docker refuses to mix them)",
    )
    cpu_period_us: int | None = None
    memory_bytes: int | None = None
    memory_swap_bytes: int | None = Field(default=None, description="Memory plus swap; -1: unlimited")
    pids_limit: int | None = None
    memory_margin_pct: float = 10.0


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
        return self.gpu or "host"


class Action(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ActionKind
    target: Target
    reason: Reason
    message: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    due_at: datetime
    key: str = Field(description="Idempotency key: the same decision in a later pass has the same key")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Executor parameters (stop timeout, remove after stop, ...)"
    )

    @property
    def destructive(self) -> bool:
        return self.kind in DESTRUCTIVE_KINDS


class Deferred(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    target: Target
    rule: Reason = Field(description="The rule that would act")
    why: DeferReason
    message: str
    due_at: datetime | None = Field(default=None, description="When it becomes due if nothing changes")
    evidence: dict[str, Any] = Field(default_factory=dict)


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    observed_at: datetime
    evaluated_at: datetime
    actions: tuple[Action, ...] = ()
    deferred: tuple[Deferred, ...] = ()
    memory: ControllerMemory = Field(
        default_factory=ControllerMemory,
        description="Memory after this pass's observations (samples, sightings), before any outcome",
        exclude=True,
    )

    @property
    def next_due_at(self) -> datetime | None:
        times = [d.due_at for d in self.deferred if d.due_at is not None]
        return min(times) if times else None
