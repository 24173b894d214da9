"""Admin alerts that are open now: raised by the current state and not cleared. Pure.

**Open** means: the planner raises the alert for *this* observation. An AlertAdmin is a one-shot
action (delivered once, its key then kept in ``memory.done``), so a plan only *proposes* an alert
the first time; after that the gates list it in ``Plan.delivered_alerts`` for as long as the rule
still raises it (no second planning of the observation is needed). It is **cleared** when the
condition no longer holds (the planner no longer raises it): the two holders of a GPU are down to
one, the dirty GPU is clean, the ledger reads again.
A tripped circuit breaker stays open until ``ds01ctl breaker reset`` (its alert is raised once,
when it trips, so it is taken from the breaker's state instead).

Called by the daemon loop (the ``ds01_admin_alerts_open`` gauge) and ``ds01ctl get alerts``; both
compute it the same way from a plan and the memory it was made with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.memory import ControllerMemory
from controller.plan.types import ActionKind, Plan, Reason

ALERT_KEY_PREFIX = "AlertAdmin:"


@dataclass(frozen=True)
class OpenAlert:
    """One open admin alert with the planner's evidence."""

    reason: str
    key: str
    target: str
    message: str
    since: datetime | None  # when it was first delivered (memory.done); None: raised in this pass
    evidence: Mapping[str, Any] = field(default_factory=dict)
    user: str | None = None  # the target's user: the owner of the container or process it is about


def open_alerts(memory: ControllerMemory, the_plan: Plan) -> tuple[OpenAlert, ...]:
    """The alerts open when ``the_plan`` was made with ``memory``."""
    # A breaker's alert is raised once, when it trips (its key names that pass): taken from the breaker below.
    raised = [*the_plan.actions, *the_plan.delivered_alerts]
    found = [
        OpenAlert(
            reason=a.reason.value,
            key=a.key,
            target=a.target.label(),
            message=a.message,
            since=memory.done.get(a.key),
            evidence=dict(a.evidence),
            user=a.target.user,
        )
        for a in raised
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
