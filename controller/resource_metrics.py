"""The resource-limit and quota figures of one pass, for :mod:`controller.pass_metrics`.

Read from the plan (what the rules decided, deferrals included, so a limit held back by the
budget or an owner over a quota that is only reported still counts) and the execution report.
Pure; called by the daemon loop after each pass.
"""

from __future__ import annotations

from controller.act.report import ExecutionReport, Outcome
from controller.plan.types import ActionKind, Plan, Reason, ResourceUpdate, Target

LIMIT_REASONS = frozenset({Reason.LIMITS_MISSING, Reason.LIMITS_ABOVE_SPEC})
QUOTA_REASONS = frozenset({Reason.CONTAINER_QUOTA_EXCEEDED, Reason.GPU_QUOTA_EXCEEDED})


def resource_figures(plan: Plan, report: ExecutionReport) -> tuple[int, int, int]:
    """(containers over spec, owners over a quota, memory brought under limits by this pass)"""
    over_spec: set[str] = set()
    over_quota: set[str] = set()
    items: list[tuple[Reason, Target]] = [(a.reason, a.target) for a in plan.actions]
    items += [(d.rule, d.target) for d in plan.deferred]
    reported = 0  # the host-level report of updateLimits: false counts its containers
    for d in plan.deferred:
        if d.rule in LIMIT_REASONS and not d.target.container_id:
            n = d.evidence.get("containers")
            reported += n if isinstance(n, int) else 0
    for rule, t in items:
        if rule in LIMIT_REASONS and t.container_id:
            over_spec.add(t.container_id)
        elif rule in QUOTA_REASONS and t.user:
            over_quota.add(t.user)
    done = {
        o.key for o in report.outcomes if o.kind == ActionKind.UPDATE_RESOURCES and o.outcome == Outcome.DONE
    }
    brought = 0
    for a in plan.actions:
        if a.key in done and isinstance(a.params, ResourceUpdate) and a.params.memory_bytes is not None:
            usage = a.evidence.get("usage")
            used = usage.get("memory") if isinstance(usage, dict) else None
            if isinstance(used, int):
                brought += used
    return len(over_spec) + reported, len(over_quota), brought
