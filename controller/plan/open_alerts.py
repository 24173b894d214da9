"""Admin alerts that are open now: raised by the current state and not cleared. Pure.

**Open** means: the planner raises the alert for *this* observation. An AlertAdmin is a one-shot
action (delivered once, its key then kept in ``memory.done``), so a plan only *carries* an alert
the first time; an alert already delivered whose condition still holds is found by planning the
same observation again with the delivered AlertAdmin keys left out of the memory (only when there
are any). It is **cleared** when the condition no longer holds (the planner no longer raises it):
the two holders of a GPU are down to one, the dirty GPU is clean, the ledger reads again.
A tripped circuit breaker stays open until ``ds01ctl breaker reset`` (its alert is raised once,
when it trips, so it is taken from the breaker's state instead).

Called by the daemon loop (the ``ds01_admin_alerts_open`` gauge) and ``ds01ctl get alerts``; both
compute it the same way from an observation, the policy and the memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.memory import ControllerMemory
from controller.plan.desired import DesiredState
from controller.plan.planner import plan as make_plan
from controller.plan.types import ActionKind, Plan, Reason
from controller.snapshot import Snapshot

ALERT_KEY_PREFIX = "AlertAdmin:"
_BREAKER_KEYS = ("AlertAdmin:BreakerTripped:", "AlertAdmin:ReleaseBreakerTripped:")


@dataclass(frozen=True)
class OpenAlert:
    """One open admin alert with the planner's evidence."""

    reason: str
    key: str
    target: str
    message: str
    since: datetime | None  # when it was first delivered (memory.done); None: raised in this pass
    evidence: Mapping[str, Any] = field(default_factory=dict)


def open_alerts(
    snapshot: Snapshot, desired: DesiredState, memory: ControllerMemory, now: datetime, the_plan: Plan
) -> tuple[OpenAlert, ...]:
    """The alerts open at ``now``; ``the_plan`` is the plan of (snapshot, desired, memory, now)."""
    # A breaker's alert is raised once, when it trips (its key names that pass): taken from the breaker below.
    delivered = {
        k: at
        for k, at in memory.done.items()
        if k.startswith(ALERT_KEY_PREFIX) and not k.startswith(_BREAKER_KEYS)
    }
    source = the_plan
    if delivered:
        undone = {k: at for k, at in memory.done.items() if k not in delivered}
        source = make_plan(snapshot, desired, memory.model_copy(update={"done": undone}), now)
    found = [
        OpenAlert(
            reason=a.reason.value,
            key=a.key,
            target=a.target.label(),
            message=a.message,
            since=delivered.get(a.key),
            evidence=dict(a.evidence),
        )
        for a in source.actions
        if a.kind is ActionKind.ALERT_ADMIN and a.reason is not Reason.BREAKER_TRIPPED
    ]
    breakers = (
        ("BreakerTripped", the_plan.memory.breaker),
        ("ReleaseBreakerTripped", the_plan.memory.release_breaker),
    )
    for name, breaker in breakers:
        if breaker.tripped:
            found.append(
                OpenAlert(
                    reason=Reason.BREAKER_TRIPPED.value,
                    key=f"{ALERT_KEY_PREFIX}{name}",
                    target="host",
                    message=breaker.reason or name,
                    since=breaker.tripped_at,
                    evidence={"breaker": name, "tripped_at": breaker.tripped_at},
                )
            )
    return tuple(sorted(found, key=lambda a: (a.reason, a.key)))


def count_by_reason(alerts: tuple[OpenAlert, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in alerts:
        counts[a.reason] = counts.get(a.reason, 0) + 1
    return counts
