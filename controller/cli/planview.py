"""How a :class:`~controller.plan.types.Plan` reads on a terminal (``ds01ctl plan``, ``reconcile``,
``ds01-controller run --once``) and as JSON (the stable ``Plan.model_dump(mode="json")`` shape).

Like ``terraform plan``: each action with its reason and evidence, then the deferred items with
why and until when, then a one-line summary. Pure formatting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from controller.cli.render import PLAIN, Style, clean, clean_tree, clock, evidence_value, stamp, until

if TYPE_CHECKING:
    from controller.plan.types import Action, Deferred, Plan

EVIDENCE_VALUE_MAX = 160


def plan_json(plan: Plan) -> dict[str, Any]:
    """``Plan.model_dump(mode="json")`` with every string cleaned; the shape is unchanged."""
    data: dict[str, Any] = clean_tree(plan.model_dump(mode="json"))
    return data


def evidence_text(evidence: Mapping[str, Any]) -> str:
    import json

    parts = []
    for key, raw in evidence.items():
        value = evidence_value(key, raw)
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
        parts.append(f"{clean(key, 48)}={clean(text, EVIDENCE_VALUE_MAX)}")
    return ", ".join(parts)


def _local(when: datetime, now: datetime) -> str:
    return clock(when.astimezone(), now.astimezone())


def action_lines(a: Action, now: datetime, style: Style, wide: bool = True) -> list[str]:
    mark = style("!", "red") if a.destructive else style("+", "yellow")
    head = f"  {mark} {a.kind.value} {clean(a.target.label(), 64)}  [{a.reason.value}]"
    lines = [head, f"      {clean(a.message, 400)}"]
    if a.evidence and wide:
        lines.append(f"      evidence: {evidence_text(a.evidence)}")
    if a.due_at > now:
        lines.append(f"      due: {_local(a.due_at, now)} ({until(a.due_at, now)})")
    return lines


def deferred_lines(d: Deferred, now: datetime, style: Style, wide: bool = True) -> list[str]:
    from controller.cli.view import schedule

    when = "no due time"
    if d.due_at is not None:
        when = ", ".join(f"{v} {_local(at, now)} ({until(at, now)})" for v, at in schedule(d) if at)
    head = f"  {style('~', 'cyan')} {d.rule.value} {clean(d.target.label(), 64)}  [{d.why.value}; {when}]"
    lines = [head, f"      {clean(d.message, 400)}"]
    if d.evidence and wide:
        lines.append(f"      evidence: {evidence_text(d.evidence)}")
    return lines


def _quiet(d: Deferred) -> bool:
    """A deferral only ``-o wide`` lists: not due yet, nothing wrong, nothing to explain."""
    from controller.plan.types import DeferReason

    return d.why == DeferReason.NOT_DUE


def plan_text(plan: Plan, style: Style = PLAIN, heading: str | None = None, wide: bool = True) -> str:
    """The plan for people. ``wide=False`` (``ds01ctl plan``'s default) leaves out the evidence and
    counts the not-due deferrals in one line; ``wide`` (``-o wide``) lists everything."""
    now = plan.evaluated_at
    lines: list[str] = []
    observed = stamp(plan.observed_at)
    evaluated = stamp(plan.evaluated_at)
    head = heading or "Plan"
    if observed == evaluated:
        lines.append(f"{head} at {evaluated}")
    else:
        lines.append(f"{head} evaluated at {evaluated} (host observed at {observed})")
    lines.append("")
    actions = _sorted_actions(plan.actions)
    deferred = _sorted_deferred(plan.deferred, now)
    if actions:
        lines.append(f"Actions ({len(actions)}):")
        for a in actions:
            lines.extend(action_lines(a, now, style, wide))
    else:
        lines.append("No actions: nothing would change.")
    shown = deferred if wide else [d for d in deferred if not _quiet(d)]
    hidden = len(deferred) - len(shown)
    if deferred:
        lines.append("")
        lines.append(f"Deferred ({len(deferred)}):")
        for d in shown:
            lines.extend(deferred_lines(d, now, style, wide))
        if hidden:
            lines.append(
                f"  ... and {hidden} not due yet (ds01ctl plan -o wide lists them, with the evidence)"
            )
    lines.append("")
    has_evidence = any(a.evidence for a in actions) or any(d.evidence for d in shown)
    hint = "" if wide or not (hidden or has_evidence) else " (-o wide: evidence)"
    lines.append(summary(plan) + hint)
    return "\n".join(lines) + "\n"


def summary(plan: Plan) -> str:
    destructive = sum(1 for a in plan.actions if a.destructive)
    return f"Plan: {len(plan.actions)} to do ({destructive} destructive), {len(plan.deferred)} deferred."


def _sorted_actions(actions: Sequence[Action]) -> list[Action]:
    return sorted(actions, key=lambda a: (a.due_at, a.kind.value, a.target.label(), a.key))


def _sorted_deferred(deferred: Sequence[Deferred], now: datetime) -> list[Deferred]:
    return sorted(
        deferred,
        key=lambda d: (d.due_at is None, d.due_at or now, d.rule.value, d.target.label()),
    )


__all__ = ["PLAIN", "plan_json", "plan_text", "summary"]


def render_plan_table(plan: Plan, style: Style = PLAIN) -> str:
    """A plan as ``ds01ctl plan`` prints it (also used by ``ds01-controller run --once``)."""
    return plan_text(plan, style)
