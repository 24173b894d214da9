"""How a :class:`~controller.plan.types.Plan` reads on a terminal (``ds01ctl plan``, ``reconcile``,
``ds01-controller run --once``) and as JSON (the stable ``Plan.model_dump(mode="json")`` shape).

Like ``terraform plan``: each action with its reason and evidence, then the deferred items with
why and until when, then a one-line summary. Pure formatting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from controller.act.sanitize import ELLIPSIS
from controller.cli.render import PLAIN, Style, ago, clean, clean_tree, clock, evidence_value, stamp, until

if TYPE_CHECKING:
    from controller.plan.types import Action, Deferred, Plan

EVIDENCE_VALUE_MAX = 160
SHORTENED_NOTE = "(shortened; -o json has every value whole)"
_MIN_ROOM = 8  # the least room worth giving one more item of a shortened list or mapping


def plan_json(plan: Plan) -> dict[str, Any]:
    """``Plan.model_dump(mode="json")`` with every string cleaned; the shape is unchanged."""
    data: dict[str, Any] = clean_tree(plan.model_dump(mode="json"))
    return data


def evidence_text(evidence: Mapping[str, Any]) -> str:
    """``key=value, ...`` for people. A value longer than :data:`EVIDENCE_VALUE_MAX` is shortened
    without being broken (see :func:`short_value`), and the line then ends with :data:`SHORTENED_NOTE`."""
    parts = []
    shortened = False
    for key, raw in evidence.items():
        text, cut = short_value(evidence_value(key, raw), EVIDENCE_VALUE_MAX)
        shortened |= cut
        parts.append(f"{clean(key, 48)}={text}")
    return ", ".join(parts) + (f" {SHORTENED_NOTE}" if shortened else "")


def short_value(value: Any, budget: int) -> tuple[str, bool]:
    """An evidence value in about ``budget`` characters, and whether it was shortened.

    A string is printed as it is, cut at a word with an ellipsis; anything else as compact JSON that
    still parses when shortened: a long list keeps its first items and ends with ``"… +N more"``, a
    long mapping its first keys and ``"…": "+N more"``, a long string inside either ends in ``…``.
    """
    value = clean_tree(value, _UNCUT)
    if isinstance(value, str):
        return (value, False) if len(value) <= budget else (_cut_at_word(value, budget), True)
    text = _short_json(value, budget)
    return text, text != _dumps(value)


_UNCUT = 1 << 30  # clean_tree without a length limit: shortening is done here, keeping the JSON whole


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _cut_at_word(text: str, budget: int) -> str:
    """``text`` in at most ``budget`` characters, ending in ``…``; cut after a word when one ends in
    the second half."""
    if len(text) <= budget:
        return text
    head = text[: max(budget - 1, 1)]
    space = head.rfind(" ")
    if space >= len(head) // 2:
        head = head[:space]
    return head.rstrip(" ,;:") + ELLIPSIS


def _piece(prefix: str, item: Any, room: int, *, first: bool) -> str | None:
    """One item of a shortened list or mapping in ``room`` characters: whole, or shortened when it is
    the first (a reader sees at least the start of one); ``None`` when it does not fit."""
    whole = prefix + _dumps(item)
    if len(whole) <= room:
        return whole
    if not first or room - len(prefix) < _MIN_ROOM:
        return None
    piece = prefix + _short_json(item, room - len(prefix))
    return piece if len(piece) <= room else None


def _short_json(value: Any, budget: int) -> str:
    """Compact JSON of ``value`` in about ``budget`` characters that always parses."""
    full = _dumps(value)
    if len(full) <= budget:
        return full
    if isinstance(value, str):
        return _dumps(_cut_at_word(value, max(budget - 2, _MIN_ROOM)))
    if isinstance(value, Mapping):
        pairs = [(str(k), v) for k, v in value.items()]
        kept: list[str] = []
        for key, item in pairs:
            more = f',"{ELLIPSIS}":"+{len(pairs) - len(kept)} more"'
            room = budget - 2 - sum(len(p) + 1 for p in kept) - len(more)
            piece = _piece(_dumps(key) + ":", item, room, first=not kept)
            if piece is None:
                break
            kept.append(piece)
        if len(kept) == len(pairs):
            return "{" + ",".join(kept) + "}"
        more = f'"{ELLIPSIS}":"+{len(pairs) - len(kept)} more"'
        return "{" + ",".join([*kept, more]) + "}"
    if isinstance(value, list | tuple):
        items = list(value)
        kept = []
        for item in items:
            more = f',"{ELLIPSIS} +{len(items) - len(kept)} more"'
            room = budget - 2 - sum(len(p) + 1 for p in kept) - len(more)
            piece = _piece("", item, room, first=not kept)
            if piece is None:
                break
            kept.append(piece)
        if len(kept) == len(items):
            return "[" + ",".join(kept) + "]"
        return "[" + ",".join([*kept, f'"{ELLIPSIS} +{len(items) - len(kept)} more"']) + "]"
    return _dumps(_cut_at_word(full, max(budget - 2, _MIN_ROOM)))  # an odd scalar: as a JSON string


def _local(when: datetime, now: datetime) -> str:
    return clock(when.astimezone(), now.astimezone())


def kind_text(a: Action) -> str:
    """The action's kind as printed: a stop that also removes the container (its ``remove``
    param: ``removeAfterIdleStop``) says so, ``StopContainer and remove``."""
    if a.kind.value == "StopContainer" and getattr(a.params, "remove", False):
        return f"{a.kind.value} and remove"
    return a.kind.value


def action_lines(a: Action, now: datetime, style: Style, wide: bool = True) -> list[str]:
    mark = style("!", "red") if a.destructive else style("+", "yellow")
    head = f"  {mark} {kind_text(a)} {clean(a.target.label(), 64)}  [{a.reason.value}]"
    lines = [head, f"      {clean(a.message, 400)}"]
    if a.evidence and wide:
        lines.append(f"      evidence: {evidence_text(a.evidence)}")
    if a.due_at > now:
        lines.append(f"      due: {_local(a.due_at, now)} ({until(a.due_at, now)})")
    return lines


def deferred_lines(
    d: Deferred, now: datetime, style: Style, wide: bool = True, *, idle_removes: bool = False
) -> list[str]:
    """One deferral; ``idle_removes``: the container's idle stop also removes it (see
    :func:`controller.cli.view.verb`)."""
    from controller.cli.view import HELD_BY_GATE, held_when, schedule

    when = "no due time"
    if d.why in HELD_BY_GATE:
        when = held_when(d)  # no due time: due already, it comes at a pass the gate allows
    elif d.due_at is not None:
        steps = schedule(d, idle_removes=idle_removes)
        when = ", ".join(f"{v} {_local(at, now)} ({until(at, now)})" for v, at in steps if at)
    head = f"  {style('~', 'cyan')} {d.rule.value} {clean(d.target.label(), 64)}  [{d.why.value}; {when}]"
    lines = [head, f"      {clean(d.message, 400)}"]
    if d.evidence and wide:
        lines.append(f"      evidence: {evidence_text(d.evidence)}")
    return lines


def _quiet(d: Deferred) -> bool:
    """A deferral only ``-o wide`` lists: not due yet, nothing wrong, nothing to explain."""
    from controller.plan.types import DeferReason

    return d.why == DeferReason.NOT_DUE


def plan_text(
    plan: Plan,
    style: Style = PLAIN,
    heading: str | None = None,
    wide: bool = True,
    idle_removes: Callable[[Deferred], bool] | None = None,
) -> str:
    """The plan for people. ``wide=False`` (``ds01ctl plan``'s default) leaves out the evidence and
    counts the not-due deferrals in one line; ``wide`` (``-o wide``) lists everything.
    ``idle_removes`` says whether a deferral's container is removed by its idle stop (its policy's
    ``removeAfterIdleStop``; an action says so in its params)."""
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
        lines.append("No actions." if _under_way(plan) else "No actions: nothing would change.")
    shown = deferred if wide else [d for d in deferred if not _quiet(d)]
    hidden = len(deferred) - len(shown)
    if deferred:
        lines.append("")
        lines.append(f"Deferred ({len(deferred)}):")
        for d in shown:
            removes = idle_removes is not None and idle_removes(d)
            lines.extend(deferred_lines(d, now, style, wide, idle_removes=removes))
        if hidden:
            lines.append(
                f"  ... and {hidden} not due yet (ds01ctl plan -o wide lists them, with the evidence)"
            )
    lines.extend(_under_way_lines(plan))
    lines.append("")
    has_evidence = any(a.evidence for a in actions) or any(d.evidence for d in shown)
    hint = "" if wide or not (hidden or has_evidence) else " (-o wide: evidence)"
    lines.append(summary(plan) + hint)
    return "\n".join(lines) + "\n"


def _under_way(plan: Plan) -> list[tuple[str, Any]]:
    """The actions started and not recorded yet (their intents open): a removal the engine is still
    carrying out, or one the controller was stopped during; the next pass records each."""
    return sorted(
        ((key, i) for key, i in plan.memory.intents.items() if not i.closing and key not in plan.memory.done),
        key=lambda ki: (ki[1].started_at, ki[0]),
    )


def _under_way_lines(plan: Plan) -> list[str]:
    open_ = _under_way(plan)
    if not open_:
        return []
    lines = ["", f"Under way ({len(open_)}):"]
    for _key, intent in open_:
        action = intent.action
        target = action.get("target")
        what = target.get("container") or target.get("gpu") if isinstance(target, Mapping) else None
        started = ago(intent.started_at, plan.evaluated_at)
        lines.append(
            f"  {clean(action.get('kind') or '?', 40)} {clean(what or '?', 64)} "
            f"[{clean(action.get('reason') or '?', 40)}] started {started}: "
            "its outcome is not recorded yet; the next pass records it (a removal the engine is still "
            "carrying out, once the container is gone)"
        )
    return lines


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
