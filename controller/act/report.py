"""What an executor returns: one outcome per action, and the memory after the outcomes.

Shared by the real and the dry-run executor (and read by the loop, the metrics and ``ds01ctl``).
Values only.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from controller.memory import ControllerMemory
from controller.plan.types import ActionKind, Plan, Reason, Target


class Outcome(StrEnum):
    DONE = "done"
    ALREADY_DONE = "already_done"  # idempotent success: the container or process was already gone
    SKIPPED = "skipped"  # the precondition no longer held (or a safety gate); nothing was touched
    FAILED = "failed"  # the action was attempted and did not complete; retried after back-off
    DRY_RUN = "dry_run"  # reported, not performed
    STALE = "stale"  # not started: the plan outlived maxActionAge; re-planned from a fresh observation
    # Started, and the engine is still carrying it out when the wait ends (a removal of a large
    # writable layer): its intent stays open, and the pass that sees it end records it, once.
    IN_PROGRESS = "in_progress"


class ActionOutcome(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    kind: ActionKind
    reason: Reason
    target: Target
    outcome: Outcome
    detail: str = Field(default="", description="What was done, why it was skipped, or the error")
    duration_s: float = 0.0
    reclaimed_gpu_s: float | None = Field(
        default=None, description="A done idle stop: the GPU-seconds its container had been holding idle"
    )


class ExecutionReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    outcomes: tuple[ActionOutcome, ...] = ()
    memory: ControllerMemory = Field(default_factory=ControllerMemory)
    dry_run: bool = False

    def count(self, outcome: Outcome) -> int:
        return sum(1 for o in self.outcomes if o.outcome is outcome)


class Executor(Protocol):
    """Carries out a plan. Never raises: every failure is an outcome."""

    def execute(self, plan: Plan, memory: ControllerMemory, now: datetime) -> ExecutionReport: ...
