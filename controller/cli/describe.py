"""``ds01ctl describe container|gpu|user``: everything known about one object, kubectl-style.

Sections: identity; owner and type with the rule that decided each; GPUs; the current signals
next to their thresholds; the effective policy with the provenance of every value; the timers;
the decision (why it is, or is not, being acted on, read from the plan's actions and deferred
items, never re-derived); the last events. Pure: renders a :class:`~controller.cli.view.View`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from controller.cli.errors import CliError
from controller.cli.get import (
    NAME_MAX,
    _device_processes,
    container_named,
    containers_table,
    gpu_item,
    gpu_state,
    process_container,
    process_verdict,
)
from controller.cli.planview import kind_text
from controller.cli.render import (
    PLAIN,
    UNKNOWN,
    Sections,
    Style,
    Table,
    ago,
    clean,
    clock,
    evidence_value,
    fmt_age,
    fmt_bytes,
    fmt_duration,
    fmt_percent,
    known_bytes,
    since,
    stamp,
    until,
)
from controller.cli.view import (
    HELD_BY_GATE,
    NO_RATE_YET,
    IdleState,
    UnlistedDevice,
    View,
    container_sort_key,
    created_at,
    gpu_util,
    held_when,
    idleness,
    process_devices,
    rate_unknowns,
    rates,
    release_breaker_line,
    removing_phrase,
    rule_of,
    schedule,
    unlisted_devices,
    verb,
)
from controller.plan.types import Action, ClockEvidence, DeferReason, Deferred, Reason
from controller.snapshot import ContainerObs, ContainerState, GpuObs, GpuProcessObs, KeepAliveState
from desired_state.effective import setting_interactions

if TYPE_CHECKING:
    from controller.memory import ContainerMemory
    from desired_state.effective import EffectivePolicy

EVENTS_SHOWN = 10

_IDLE_RULES = (Reason.IDLE_WARNING, Reason.IDLE_TIMEOUT, Reason.IDLE_EXEMPT_NOTICE)
_RUNTIME_RULES = (Reason.MAX_RUNTIME_WARNING, Reason.MAX_RUNTIME_EXCEEDED)
_HOLD_RULES = (Reason.STOPPED_HOLD_EXPIRED, Reason.GPU_HOLD_EXPIRED)
_CREATED_RULES = (Reason.CREATED_NEVER_STARTED,)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _when(view: View, at: Any) -> str:
    if at is None:
        return UNKNOWN  # a time Docker or the ledger did not give: not "none"
    return f"{ago(at, view.now)} ({stamp(at)})"


def _evidence(evidence: Mapping[str, Any]) -> str:
    parts = []
    for k, raw in evidence.items():
        v = evidence_value(k, raw)
        text = v if isinstance(v, str) else _compact(v)
        parts.append(f"{clean(k, 40)}={clean(text, 120)}")
    return ", ".join(parts)


def _compact(v: Any) -> str:
    import json

    return json.dumps(v, separators=(",", ":"), ensure_ascii=True, default=str)


WHY: dict[DeferReason, str] = {
    DeferReason.GRACE_PERIOD: "in its grace period",
    DeferReason.KEEP_ALIVE: "kept alive by its keep-alive file",
    DeferReason.EXEMPT: "exempt",
    DeferReason.UNKNOWN_SIGNAL: "a signal is unknown, and unknown is not idle",
    DeferReason.PROTECTED: "protected",
    DeferReason.MONITORING: "part of the monitoring stack",
    DeferReason.WAITING_FOR_WINDOW: "waiting for enough idle samples",
    DeferReason.WAITING_FOR_WARNING: "waiting out the warning lead time",
    DeferReason.NOT_DUE: "not due yet",
    DeferReason.BUDGET_EXHAUSTED: "this pass's action budget is spent",
    DeferReason.BREAKER_OPEN: "the circuit breaker is tripped",
    DeferReason.DOMAIN_UNAVAILABLE: "an observation domain is unavailable",
    DeferReason.BACKOFF: "backing off after a failure",
    DeferReason.NEEDS_SECOND_SIGHTING: "waiting to see it a second time",
    DeferReason.RESET_NOT_ALLOWED: "not reset (the policy, or what still uses the GPU: see below)",
    DeferReason.BELOW_USAGE: "the limit would cut into what the container uses now",
    DeferReason.NOT_ENFORCED: "the policy only reports it",
}


def decision_lines(
    view: View,
    items: Sequence[Action | Deferred],
    s: Sections,
    indent: int = 2,
    delivered: Sequence[Action] = (),
) -> None:
    """The plan's actions and deferrals for one object, each with reason, due time and evidence;
    then the admin alerts about it that are open, delivered already (``delivered``)."""
    actions = sorted((i for i in items if isinstance(i, Action)), key=lambda a: (a.due_at, a.key))
    deferred = sorted(
        (i for i in items if isinstance(i, Deferred)),
        key=lambda d: (d.due_at is None, d.due_at or view.now, d.rule.value),
    )
    for a in actions:
        colour = "red" if a.destructive else "yellow"
        s.line(f"{s.style('ACTING', colour)}    {kind_text(a)} ({a.reason.value}) now", indent)
        s.line(clean(a.message, 300), indent + 4)
        if a.evidence:
            s.line(f"evidence: {_evidence(a.evidence)}", indent + 4)
    for d in deferred:
        why = WHY.get(d.why, d.why.value)
        removes = view.idle_stop_removes(d.target.container_id)
        head = f"{s.style('DEFERRED', 'cyan')}  {verb(d, idle_removes=removes)} ({d.rule.value})"
        s.line(f"{head}: {why} [{d.why.value}]; {when_text(view, d)}", indent)
        s.line(clean(d.message, 300), indent + 4)
        if d.evidence:
            s.line(f"evidence: {_evidence(d.evidence)}", indent + 4)
    for a in sorted(delivered, key=lambda x: x.key):
        head = f"{s.style('OPEN', 'yellow')}      {kind_text(a)} ({a.reason.value})"
        s.line(f"{head}: delivered already, open while its cause lasts (ds01ctl get alerts)", indent)
        s.line(clean(a.message, 300), indent + 4)


def when_text(view: View, d: Deferred) -> str:
    """``warn 12:05 (in 5m), stop 12:08 (in 8m)``, ``at the next pass`` or ``in 3 passes`` (held by
    the per-pass action budget), ``until an admin resets the breaker``, or ``no due time``."""
    if d.why in HELD_BY_GATE:
        return held_when(d)
    if d.due_at is None:
        return "no due time"
    steps = schedule(d, idle_removes=view.idle_stop_removes(d.target.container_id))
    return ", ".join(f"{v} {_clock(view, at)} ({until(at, view.now)})" for v, at in steps if at)


def _clock(view: View, at: datetime) -> str:
    """A wall-clock time in the viewer's zone (``12:18``; the date too when not today)."""
    return clock(at.astimezone(), view.now.astimezone())


def _events_section(view: View, found: tuple[list[dict[str, Any]], str | None], s: Sections) -> None:
    from controller.cli.get import events_table

    events, note = found
    s.heading("Events")
    if note is not None:
        s.line(clean(note, 300), 2)
        return
    if not events:
        s.line("<none>", 2)
        return
    s.table(events_table(view, events[-EVENTS_SHOWN:], wide=False))


# --- container -------------------------------------------------------------------------------


def find_container(view: View, key: str) -> ContainerObs:
    return container_named(view, key)


def describe_container(view: View, key: str, style: Style = PLAIN) -> str:
    c = find_container(view, key)
    s = Sections(style)
    pol = view.effective(c)
    state = c.state.value
    if c.state == ContainerState.RUNNING:
        state += f", started {_when(view, c.started_at)}"
    elif c.finished_at is not None:
        state += f", finished {_when(view, c.finished_at)}"
        if c.exit_code is not None:
            state += f", exit code {c.exit_code}"
    group = f"{clean(pol.group.value, 64)}   ({clean(pol.group.source, 160)})" if pol else "unknown"
    s.fields(
        [
            ("Name", clean(c.name, 200)),
            ("ID", c.id),
            ("Image", clean(c.image, 200)),
            ("State", state),
            ("Created", _when(view, created_at(c))),
            ("Restarts", str(c.restart_count)),
            ("Owner", f"{clean(c.owner, 64)}   (decided by {c.owner_rule.value})"),
            ("Type", f"{c.container_type.value}   (decided by {c.type_rule.value})"),
            ("Group", group),
            ("Managed", _yes(c.managed)),
            ("Protected", _flag(pol.protected if pol else None, c.protected_label)),
            ("Monitoring", _flag(pol.monitoring if pol else None, c.monitoring_label)),
        ]
    )
    labels = sorted(c.labels.items())
    if labels:
        s.line("Labels:")
        for k, v in labels:
            s.line(f"{clean(k, 80)}={clean(v, 160)}", 2)
    else:
        s.fields([("Labels", "<none>")])

    s.heading("GPUs")
    if c.all_gpus:
        s.line("all GPUs (--gpus all / NVIDIA_VISIBLE_DEVICES=all)", 2)
    if c.gpu_refs:
        t = Table(["SLOT", "UUID", "REFERENCE", "SOURCE", "MIG"])
        for ref in c.gpu_refs:
            t.add(
                [
                    view.slots.get(ref.uuid, UNKNOWN) if ref.uuid else UNKNOWN,
                    ref.uuid or f"unresolved: {clean(ref.unresolved_reason or 'unknown', 60)}",
                    clean(ref.raw, 60),
                    ref.source.value,
                    _yes(ref.is_mig),
                ]
            )
        s.table(t)
    elif not c.all_gpus:
        s.line("<none>", 2)

    _signals_section(view, c, pol, s)
    _policy_section(pol, s, view.policy_problem(c))
    from controller.cli.users import limits_deferral, limits_section

    update_limits = view.desired.global_policy.update_limits if view.desired is not None else None
    limits_section(c, pol, s, update_limits, view.now)
    _timers_section(view, c, pol, s)

    s.heading("Decision")
    items = view.container_items(c)
    not_enforced = limits_deferral(view, c, pol)
    if not_enforced is not None:
        items = [*items, not_enforced]
    delivered = view.delivered(container_id=c.id)
    if view.plan is None:
        s.line(f"unknown: no plan ({clean(view.policy.error or 'the policy did not load', 300)})", 2)
    elif items or delivered:
        decision_lines(view, items, s, delivered=delivered)
    elif c.state == ContainerState.REMOVING:
        s.line(removing_phrase(view, c), 2)  # acted on already, or by someone else: not "not acted on"
    else:
        s.line(f"not acted on: {_quiet_reason(view, c)}", 2)
    if view.plan is not None:
        from controller.cli.forecastview import forecast_section

        forecast_section(view, c.id, s)
    _events_section(view, view.events_for_container(c), s)
    return s.render()


def _flag(sourced: Any, label: bool) -> str:
    if sourced is None:
        return f"{_yes(label)} (label only; policy unknown)"
    text = f"{_yes(bool(sourced.value))}   ({clean(sourced.source, 160)})"
    if label and not sourced.value:
        text += "; the label is set but not trusted"
    return text


def _quiet_reason(view: View, c: ContainerObs) -> str:
    """Why the plan says nothing about it: a statement of the facts, not a second decision."""
    if c.state == ContainerState.RUNNING and not c.has_gpu:
        return "it holds no GPU, and idle and runtime limits apply only to GPU containers"
    if c.state == ContainerState.RUNNING:
        return f"{idleness(view, c).phrase(view.now)}; no rule is due"
    if c.state == ContainerState.PAUSED and c.has_gpu:
        return (
            "it is paused: no rule acts on it until it runs again, while its runtime counts on (see Timers)"
        )
    return "no rule is due for it"


def _signals_section(view: View, c: ContainerObs, pol: EffectivePolicy | None, s: Sections) -> None:
    s.heading("Signals")
    if c.state != ContainerState.RUNNING:
        s.line("<not running>", 2)
        return
    if c.signals is None:
        s.line("<not read>", 2)
        return
    r = rates(view, c)
    cpu_why, net_why = rate_unknowns(view, c, r)  # as get containers -o json says them
    sig = c.signals
    t = Table(["SIGNAL", "NOW", "IDLE BELOW", "FROM"])
    cpu_now = fmt_percent(r.cpu_percent) if r.cpu_percent is not None else _unknown(cpu_why, NO_RATE_YET)
    net_now = (
        f"{fmt_bytes(r.net_bytes_per_s)}/s"
        if r.net_bytes_per_s is not None
        else _unknown(net_why, NO_RATE_YET)
    )
    util, util_unknown = gpu_util(view, c)
    gpu_now = f"{UNKNOWN} ({clean(util_unknown, 60)})" if util_unknown else fmt_percent(util)
    t.add(["cpu", cpu_now, _thr(pol, "cpu_idle_threshold_pct", "%"), _src(pol, "cpu_idle_threshold_pct")])
    t.add(
        [
            "network",
            net_now,
            _thr(pol, "network_idle_threshold_bytes_per_s", "B/s"),
            _src(pol, "network_idle_threshold_bytes_per_s"),
        ]
    )
    t.add(["gpu", gpu_now, _thr(pol, "gpu_idle_threshold_pct", "%"), _src(pol, "gpu_idle_threshold_pct")])
    procs = (
        str(sig.process_count) if sig.process_count is not None else _unknown(sig.process_unknown, "unknown")
    )
    t.add(["processes", procs, "-", "-"])
    ka = sig.keepalive
    ka_now = ka.state.value
    if ka.state == KeepAliveState.PRESENT:
        ka_now = f"touched {ago(ka.mtime, view.now)}" if ka.mtime is not None else f"touched {UNKNOWN}"
    elif ka.detail and ka.state != KeepAliveState.ABSENT:
        ka_now += f" ({clean(ka.detail, 60)})"
    max_age = fmt_duration(pol.keepalive_max_age_s.value, "no limit") if pol else UNKNOWN
    t.add(["keep-alive", ka_now, f"max age {max_age}", _src(pol, "keepalive_max_age_s")])
    s.table(t)
    cm = view.container_memory(c.id)
    if view.memory is None:
        s.line(f"last sample: unavailable ({clean(view.timers_note or 'no memory', 200)})", 2)
    elif cm is not None and cm.samples:
        last = cm.samples[-1]
        verdict = {True: "idle", False: "active", None: "undecided"}[last.idle]
        detail = f" ({clean(last.detail, 200)})" if last.detail else ""
        s.line(f"last sample: {verdict}{detail}, {ago(last.at, view.now)}", 2)


def _unknown(reason: str | None, default: str) -> str:
    return f"unknown ({clean(reason or default, 60)})"


def _thr(pol: EffectivePolicy | None, attr: str, unit: str) -> str:
    if pol is None:
        return UNKNOWN
    value = getattr(pol, attr).value
    if unit == "%":
        return fmt_percent(value)
    return f"{fmt_bytes(value)}/s"


def _src(pol: EffectivePolicy | None, attr: str) -> str:
    if pol is None:
        return UNKNOWN
    return clean(getattr(pol, attr).source, 120)


# Rows of the policy section: (label, attribute, kind of value).
_POLICY_ROWS: tuple[tuple[str, str, str], ...] = (
    ("idle timeout", "idle_timeout_s", "duration"),
    ("max runtime", "max_runtime_s", "duration"),
    ("warning lead", "warn_lead_s", "duration"),
    ("grace period", "grace_period_s", "duration"),
    ("idle window (samples)", "idle_detection_window", "int"),
    ("idle min duration", "idle_min_duration_s", "duration"),
    ("gpu hold after stop", "gpu_hold_after_stop_s", "duration"),
    ("container hold after stop", "container_hold_after_stop_s", "duration"),
    ("created-never-started timeout", "created_container_timeout_s", "duration"),
    ("sigterm grace", "sigterm_grace_s", "duration"),
    ("keep-alive path", "keepalive_path", "str"),
    ("keep-alive max age", "keepalive_max_age_s", "duration"),
    ("high-demand threshold", "high_demand_threshold", "float"),
    ("high-demand idle reduction", "high_demand_idle_reduction", "float"),
    ("remove after idle stop", "remove_after_idle_stop", "bool"),
)


def _policy_section(pol: EffectivePolicy | None, s: Sections, problem: str = "") -> None:
    s.heading("Policy")
    if pol is None:
        s.line(f"<unknown: {clean(problem or 'the policy could not be resolved', 300)}>", 2)
        return
    t = Table(["SETTING", "VALUE", "FROM"])
    for label, attr, kind in _POLICY_ROWS:
        sourced = getattr(pol, attr)
        value = sourced.value
        if kind == "duration":
            text = fmt_duration(value)
        elif kind == "bool":
            text = _yes(bool(value))
        elif kind == "float":
            text = f"{value:g}"
        else:
            text = clean(value, 80)
        if attr == "warn_lead_s":
            text += _lead_caps(pol)
        t.add([label, text, clean(sourced.source, 120)])
    s.table(t)
    for note in setting_interactions(pol):  # where one setting decides instead of another
        s.line(f"note: {clean(note, 400)}", 2)
    if pol.exemptions:
        s.line("exemptions:", 2)
        for e in pol.exemptions:
            expires = "permanent" if e.expires_at is None else f"until {stamp(e.expires_at)}"
            s.line(
                f"{e.exempt_from.value}: {clean(e.name, 64)} ({expires}; approved by "
                f"{clean(e.approved_by or 'unknown', 40)}; {clean(e.reason or 'no reason given', 120)}; "
                f"from {clean(e.source, 120)})",
                4,
            )
    else:
        s.line("exemptions: none", 2)


def _lead_caps(pol: EffectivePolicy) -> str:
    """The lead the planner gives where it is less than ``warnLead``: at most 20 % of the timeout
    (``lead_s``; the first warning at the ladder's first level, the stop at the timeout)."""
    from controller.plan.rules.lifecycle import lead_s

    caps = []
    for what, timeout in (("an idle stop", pol.idle_timeout_s), ("a runtime stop", pol.max_runtime_s)):
        if timeout.value is not None and lead_s(pol, timeout.value) < pol.warn_lead_s.value:
            caps.append(f"{fmt_duration(lead_s(pol, timeout.value))} before {what}")
    return f" ({', '.join(caps)}: 20% of its timeout)" if caps else ""


def _due_text(view: View, items: Sequence[Action | Deferred], rules: Sequence[Reason]) -> list[str]:
    """``stop due 10:52 (in 8m)`` / ``stop now`` for the plan's items of these rules."""
    out: list[str] = []
    for item in items:
        if rule_of(item) not in rules:
            continue
        removes = view.idle_stop_removes(item.target.container_id)
        if isinstance(item, Action):
            out.append(f"{verb(item)} now")
        elif item.due_at is not None:
            held = (
                ""
                if item.why in (DeferReason.NOT_DUE, DeferReason.GRACE_PERIOD)
                else f"; {WHY.get(item.why, item.why.value)}"
            )
            for step_verb, at in schedule(item, idle_removes=removes):
                # "stop due 10:52", but "exemption ends 15:00" (a hold that ends is not "due").
                due = " " if step_verb.endswith(" ends") else " due "
                out.append(
                    f"{step_verb}{due}{_clock(view, at)} ({until(at, view.now)}{held})" if at else step_verb
                )
        else:
            # A gate's hold says when it ends (the Decision section's words): ``at the next pass``.
            when = f"; {held_when(item)}" if item.why in HELD_BY_GATE else ""
            out.append(f"{verb(item, idle_removes=removes)} held: {WHY.get(item.why, item.why.value)}{when}")
    return out


def _effective_idle_timeout_s(items: Sequence[Action | Deferred]) -> float | None:
    """The idle timeout the plan applied (after any high-demand reduction), from its evidence."""
    for item in items:
        if rule_of(item) in (Reason.IDLE_TIMEOUT, Reason.IDLE_WARNING):
            clock = ClockEvidence.of(item)
            if clock is not None and clock.limit_s is not None:
                return clock.limit_s
    return None


def _process_table(view: View, processes: Sequence[GpuProcessObs], by: str) -> Table:
    """GPU processes for ``describe gpu`` (``by="USER"``) and ``describe user`` (``by="GPU"``)."""
    head = ["PID", "MEMORY", "USER"] if by == "USER" else ["PID", "GPU", "MEMORY"]
    t = Table([*head, "CONTAINER", "COMMAND", "VERDICT"])
    for p in sorted(processes, key=lambda x: x.pid):
        memory = known_bytes(p.used_memory_bytes)
        if by == "USER":
            first = [str(p.pid), memory, clean(p.user or UNKNOWN, 32)]
        else:
            first = [str(p.pid), view.slot(p.device_uuid), memory]
        t.add(
            [
                *first,
                clean(process_container(view, p), NAME_MAX),
                clean(p.cmdline or UNKNOWN, 60),
                process_verdict(view, p),
            ]
        )
    return t


def _processes_lines(
    view: View,
    processes: Sequence[GpuProcessObs],
    unlisted: Sequence[UnlistedDevice],
    by: str,
    s: Sections,
    *,
    others_listed: bool,
) -> None:
    """The processes NVML listed, then each device it could not list: their processes are
    unknown, so "<none>" is said only of the devices it did list (``others_listed``: some in the
    section's scope were)."""
    if processes:
        s.table(_process_table(view, processes, by))
    if unlisted and unlisted[0].slot is None:
        s.line(f"{UNKNOWN} ({unlisted[0].text()})", 2)  # NVML unavailable: every device
        return
    if not unlisted:
        if not processes:
            s.line("<none>", 2)
        return
    if not processes and others_listed:
        s.line("<none> on the devices NVML listed", 2)
    if len(unlisted) == 1 and not processes and not others_listed:
        s.line(f"{UNKNOWN} ({clean(unlisted[0].reason, 300)})", 2)
        return
    for u in unlisted:
        s.line(f"{UNKNOWN} on {u.text()}", 2)


def _timers_section(view: View, c: ContainerObs, pol: EffectivePolicy | None, s: Sections) -> None:
    s.heading("Timers")
    items = view.container_items(c)
    lines: list[str] = []
    cm = view.container_memory(c.id)
    if c.state == ContainerState.RUNNING and not c.has_gpu:
        # The idle and runtime rules act on GPU containers only: no limit of theirs applies here.
        lines.append(idleness(view, c).phrase(view.now))
        lines.append(f"running {_runtime(view, c, items, cm)}; no runtime limit applies: it holds no GPU")
    elif c.state == ContainerState.RUNNING:
        idle = idleness(view, c)
        timeout = (
            f"{fmt_duration(pol.idle_timeout_s.value)} ({clean(pol.idle_timeout_s.source, 120)})"
            if pol
            else UNKNOWN
        )
        effective_s = _effective_idle_timeout_s(items)
        if pol and effective_s is not None and effective_s != pol.idle_timeout_s.value:
            # The plan's timeout, not the policy's: high demand shortens it; say both.
            timeout = (
                f"{fmt_duration(effective_s)} ({fmt_duration(pol.idle_timeout_s.value)} from "
                f"{clean(pol.idle_timeout_s.source, 120)}, reduced: high demand)"
            )
        if idle.state == IdleState.IDLE:
            parts = [f"idle {since(idle.since, view.now)} of {timeout}"]
        elif idle.state == IdleState.UNAVAILABLE:
            parts = [
                f"idle time unavailable ({clean(view.timers_note or 'no memory', 200)}); timeout {timeout}"
            ]
        else:
            parts = [f"{idle.phrase(view.now)}; idle timeout {timeout}"]
        if cm is not None:
            for key, at in sorted(cm.warnings.items(), key=lambda kv: kv[1]):
                if key.startswith("idle:"):  # the ladder's warnings, not an exemption's notice
                    parts.append(f"warned {_warned_at(view, c, cm, at)}")
        parts += _due_text(view, items, _IDLE_RULES)
        lines.append("; ".join(parts))
        parts = [f"running {_runtime(view, c, items, cm)} of {_max_runtime(pol)}", *_step_note(c, cm)]
        if cm is not None:
            for key, at in sorted(cm.warnings.items(), key=lambda kv: kv[1]):
                if key.startswith("runtime"):
                    parts.append(f"warned {_warned_at(view, c, cm, at)}")
        parts += _due_text(view, items, _RUNTIME_RULES)
        lines.append("; ".join(parts))
    elif c.state == ContainerState.CREATED:
        limit = fmt_duration(pol.created_container_timeout_s.value) if pol else UNKNOWN
        made = created_at(c)
        age = ago(made, view.now) if made is not None else "at an unknown time"
        parts = [f"created {age}, never started; limit {limit}"]
        parts += _due_text(view, items, _CREATED_RULES)
        lines.append("; ".join(parts))
    elif c.state in (ContainerState.EXITED, ContainerState.DEAD):
        hold = fmt_duration(pol.container_hold_after_stop_s.value) if pol else UNKNOWN
        parts = [f"stopped {since(c.finished_at, view.now)} of hold {hold}"]
        if c.has_gpu and pol is not None:
            parts.append(f"GPU hold {fmt_duration(pol.gpu_hold_after_stop_s.value)}")
        parts += _stopped_by(view, c, cm)
        parts += _due_text(view, items, _HOLD_RULES)
        lines.append("; ".join(parts))
    elif c.state == ContainerState.PAUSED and c.has_gpu:
        # The planner's rules act on running containers only; a paused one accrues no idle time
        # (its next sample is undecidable, the streak starts over), but its runtime counts from
        # StartedAt, which a pause does not change: over the limit, it is warned as soon as it runs
        # again and stopped a warning lead later.
        lines.append("paused: no idle time counts while it is paused")
        if pol is not None and pol.max_runtime_s.value is None:
            lines.append(f"runtime: no limit ({clean(pol.max_runtime_s.source, 120)})")
        else:
            lines.append(
                f"running {_runtime(view, c, items, cm)} of {_max_runtime(pol)}; the runtime counts while "
                "paused, and is acted on once it runs again"
            )
    elif c.state == ContainerState.RESTARTING and c.has_gpu:
        # Each restart is a new StartedAt: both clocks start again with it.
        lines.append("restarting: no timer runs; the idle and runtime clocks start again when it next starts")
    elif c.state == ContainerState.REMOVING:
        lines.append(f"removing: no timer runs; {removing_phrase(view, c)}")
    else:
        lines.append(f"{c.state.value}: no timer runs")
    for line in lines:
        s.line(line, 2)


def _runtime(
    view: View, c: ContainerObs, items: Sequence[Action | Deferred], cm: ContainerMemory | None
) -> str:
    """How long it has run, as the max-runtime rule counts: the plan's own elapsed time, which
    leaves out forward wall-clock steps (``runtime_discount_s``) and follows the boot clock. Where
    the rule said nothing (paused, exempt, no limit), the same count from the memory."""
    elapsed_s: float | None = None
    for item in items:
        if rule_of(item) in _RUNTIME_RULES:
            clock = ClockEvidence.of(item)
            if clock is not None and clock.elapsed_s is not None:
                elapsed_s = clock.elapsed_s
                break
    discount_s = _runtime_discount_s(c, cm)
    if elapsed_s is None and c.started_at is not None:
        start = c.started_at + timedelta(seconds=discount_s)
        if c.running_for_s is not None:
            start = max(start, view.snapshot.observed_at - timedelta(seconds=c.running_for_s))
        elapsed_s = (view.now - start).total_seconds()
    return UNKNOWN if elapsed_s is None else fmt_age(elapsed_s)  # StartedAt unknown: not "none"


def _step_note(c: ContainerObs, cm: ContainerMemory | None) -> list[str]:
    discount_s = _runtime_discount_s(c, cm)
    if discount_s <= 0:
        return []
    return [f"not counted: a forward wall-clock step of {fmt_duration(discount_s)} since it started"]


def _runtime_discount_s(c: ContainerObs, cm: ContainerMemory | None) -> float:
    """The forward wall-clock steps seen during this start (none recorded for another start)."""
    return cm.runtime_discount_s if cm is not None and cm.started_at == c.started_at else 0.0


def _warned_at(view: View, c: ContainerObs, cm: ContainerMemory, at: datetime) -> str:
    """When a warning was delivered, on the wall clock of then (as the event log has it).

    The memory moves a delivered warning forward with each forward wall-clock step, so that its
    lead time is kept; the steps the memory still lists are taken back off here. A warning
    delivered before a step reads earlier than the pass that saw the step, less the step; one
    delivered after it, no earlier than that pass. When the listed steps do not account for all
    that this start was moved by, the time is shown as moved, and said so."""
    steps = sorted(view.memory.clock_steps, key=lambda x: x.seen_at) if view.memory is not None else []
    discount_s = _runtime_discount_s(c, cm)
    start = c.started_at
    listed_s = sum(
        min(x.step_s, max(0.0, (x.seen_at - start).total_seconds()))
        for x in steps
        if start is not None and x.seen_at > start
    )
    if discount_s > 0 and abs(listed_s - discount_s) > 1.0:
        return f"{_clock(view, at)} (moved forward with a wall-clock step)"
    for step in reversed(steps):
        if at < step.seen_at:
            at -= timedelta(seconds=step.step_s)
    return _clock(view, at)


def _max_runtime(pol: EffectivePolicy | None) -> str:
    if pol is None:
        return UNKNOWN
    return f"{fmt_duration(pol.max_runtime_s.value, 'no limit')} ({clean(pol.max_runtime_s.source, 120)})"


def _stopped_by(view: View, c: ContainerObs, cm: ContainerMemory | None) -> list[str]:
    """Who stopped this start of a stopped container, when the controller knows: an engine or host
    restart (which holds it longer, ``restartStoppedHold``) or the controller's own stop (which the
    removal breaker does not count; the hold its notice named keeps it at least that long). Its
    owner, or anyone else, is not said: nothing tells them apart; a hold a warning to the owner
    named is (it keeps that start at least that long, whoever stopped it)."""
    if cm is None or cm.started_at != c.started_at:
        return []
    if cm.stopped_by_restart_at is not None:
        restart = _clock(view, cm.stopped_by_restart_at)
        text = f"stopped by the engine or host restart of {restart}, not its owner"
        restart_hold = view.desired.global_policy.restart_stopped_hold_s if view.desired else None
        if restart_hold is not None:
            kept = (
                f"held at least {fmt_duration(restart_hold.value)}"
                if restart_hold.value is not None
                else "kept until an admin removes it"
            )
            text += f": {kept} (restartStoppedHold, {clean(restart_hold.source, 120)})"
        return [text]
    if cm.stopped_by_controller_at is not None:
        text = f"stopped by the controller at {_clock(view, cm.stopped_by_controller_at)}"
        if cm.promised_hold_s is not None:
            text += f": kept at least {fmt_duration(cm.promised_hold_s)}, as its stop notice said"
        return [text]
    if cm.promised_hold_s is not None:
        # A warning named the hold, and the controller's stop it announced did not come (or its mark
        # was lost with the memory): that start is kept that long all the same.
        return [
            f"kept at least {fmt_duration(cm.promised_hold_s)} after its stop, as a notice to its owner said"
        ]
    return []


# --- gpu -------------------------------------------------------------------------------------


def find_gpu(view: View, key: str) -> tuple[GpuObs, str | None]:
    for g in view.snapshot.gpus:
        if key in (str(g.index), g.uuid):
            return g, None
        for m in g.mig_devices:
            if key in (f"{g.index}.{m.index}", f"{g.index}:{m.index}", m.uuid):
                return g, m.uuid
    if len(key) >= 8:
        matches: list[tuple[GpuObs, str | None]] = [
            (g, None) for g in view.snapshot.gpus if g.uuid.startswith(key)
        ]
        matches += [(g, m.uuid) for g in view.snapshot.gpus for m in g.mig_devices if m.uuid.startswith(key)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise CliError(
                f"GPU UUID prefix {clean(key, 64)!r} matches {len(matches)} devices (give more of the UUID, "
                "or the index)"
            )
    raise CliError(f"GPU {clean(key, 64)!r} not found (ds01ctl get gpus lists every GPU and MIG device)")


def _nvml() -> Any:
    from controller.snapshot import Domain

    return Domain.NVML


def _references(ref_raw: str, uuid: str | None, key: str) -> bool:
    """Does a reference (as written, and resolved) name the GPU the user asked for by ``key``?"""
    if key in (ref_raw, uuid):
        return True
    return len(key) >= 8 and uuid is not None and uuid.startswith(key)


def describe_gpu_without_nvml(view: View, key: str, style: Style = PLAIN) -> str:
    """``describe gpu`` with NVML down: what the ledger, the containers and the plan still say,
    and that the GPU's own state (model, memory, utilization, processes) is unknown."""
    error = clean(view.snapshot.domain_error(_nvml()) or "unknown error", 200)
    holding = [
        c
        for c in sorted(view.snapshot.containers, key=container_sort_key)
        if any(_references(r.raw, r.uuid, key) for r in c.gpu_refs)
    ]
    uuids: set[str] = {
        r.uuid for c in holding for r in c.gpu_refs if r.uuid and _references(r.raw, r.uuid, key)
    }
    entries = [
        e
        for e in view.snapshot.ledger.entries
        if _references(e.gpu, e.gpu_uuid, key) or (e.gpu_uuid is not None and e.gpu_uuid in uuids)
    ]
    uuids |= {e.gpu_uuid for e in entries if e.gpu_uuid}
    s = Sections(style)
    s.fields(
        [
            ("GPU", clean(key, 64)),
            ("UUID", ", ".join(sorted(uuids)) or UNKNOWN),
            ("Model", UNKNOWN),
            ("MIG", UNKNOWN),
            ("Memory", UNKNOWN),
            ("Utilization", UNKNOWN),
            ("State", f"unavailable (NVML: {error})"),
        ]
    )
    if view.docker_ok:
        s.line(
            "NVML is unavailable: below is what the containers, the ledger and the plan say about this GPU."
        )
    else:
        s.line("NVML and Docker are unavailable: below is what the ledger and the plan say about this GPU.")
    s.heading("Holders (containers that reference it)")
    if not view.docker_ok:
        _holders_unknown(view, s)
    elif holding:
        s.table(containers_table(view, holding, wide=False))
    else:
        s.line("<none>", 2)
    s.heading("Processes")
    s.line(f"{UNKNOWN} (NVML: {error})", 2)
    s.heading("Ledger")
    _release_breaker_note(view, s)
    _ledger_lines(view, entries, s)
    s.heading("Decision")
    _gpu_decision(view, [i for u in sorted(uuids) for i in view.items_by_gpu.get(u, [])], s, uuids)
    _events_section(view, view.events_for_gpu(uuids or {key}), s)
    return s.render()


def _holders_unknown(view: View, s: Sections) -> None:
    """The Holders section with Docker down: unknown and why, never "<none>" (the containers that
    hold the GPU could not be listed, which is not that none does)."""
    from controller.cli.gather import docker_unreachable

    problem = (docker_unreachable(view.snapshot) or ("the Docker engine is unavailable", ""))[0]
    s.line(f"{UNKNOWN}: the containers cannot be listed ({problem})", 2)


# A GPU's own rules (reset, its processes, its ledger rows): when a domain they need is down, the
# plan holds them back for the whole host, and describe gpu says so rather than "not acted on".
_GPU_RULES = frozenset({Reason.GPU_DIRTY, Reason.ORPHANED_PROCESS, Reason.LEAKED_ALLOCATION})


def _gpu_decision(view: View, items: Sequence[Action | Deferred], s: Sections, uuids: Iterable[str]) -> None:
    """describe gpu's Decision: the plan's items about the device (``uuids``: it and its MIG
    devices), its open alerts delivered already, and the host-wide holds of the GPU rules while
    Docker, NVML or /proc is down (the plan's own words: nothing re-derived)."""
    if view.plan is None:
        s.line(f"{UNKNOWN}: no plan ({clean(view.policy.error or 'the policy did not load', 300)})", 2)
        return
    held = [
        d
        for d in view.plan.deferred
        if d.target.label() == "host" and d.why == DeferReason.DOMAIN_UNAVAILABLE and d.rule in _GPU_RULES
    ]
    delivered = view.delivered(gpus=uuids)
    if items or held or delivered:
        decision_lines(view, [*items, *held], s, delivered=delivered)
    elif view.docker_ok:
        s.line("not acted on: no rule concerns this GPU itself (its holders are described above)", 2)
    else:
        s.line("not acted on: no rule concerns this GPU itself (its holders are unknown: see above)", 2)


def _mig_field(item: Mapping[str, Any]) -> str:
    if item["mig"] == "device":
        return f"device, profile {clean(item.get('mig_profile') or UNKNOWN, 24)}"
    return str(item["mig"])


def describe_gpu(view: View, key: str, style: Style = PLAIN) -> str:
    if not view.nvml_ok and not view.snapshot.gpus:
        return describe_gpu_without_nvml(view, key, style)
    gpu, device = find_gpu(view, key)
    uuid = device or gpu.uuid
    item = gpu_item(view, gpu, device)
    s = Sections(style)
    util = fmt_percent(item["utilization_percent"])
    if item["utilization_percent"] is None and item["utilization_unknown"]:
        util = f"{UNKNOWN} ({clean(item['utilization_unknown'], 120)})"
    memory = f"{known_bytes(item['memory_used_bytes'])} used of {known_bytes(item['memory_total_bytes'])}"
    mig = next((m for m in gpu.mig_devices if m.uuid == device), None)
    unread = mig.memory_used_unknown if mig is not None else gpu.memory_used_unknown
    if item["memory_used_bytes"] is None and unread:
        memory += f" ({clean(unread, 120)})"  # why, as the utilization beside it says its own
    s.fields(
        [
            ("Index", item["slot"]),
            ("UUID", uuid),
            ("Parent", gpu.uuid if device else "-"),
            ("Model", clean(gpu.name, 80)),
            ("MIG", _mig_field(item)),
            ("Memory", memory),
            ("Utilization", util),
            (
                "State",
                f"{UNKNOWN} (Docker is unavailable: its holders cannot be listed)"
                if item["state"] == UNKNOWN and not view.docker_ok
                else item["state"],
            ),
        ]
    )
    if view.memory is not None and gpu.uuid in view.memory.dirty_gpus:
        mark = view.memory.dirty_gpus[gpu.uuid]
        s.fields([("Dirty", f"{mark.cause.value} since {_when(view, mark.since)}")])
    if device is None and gpu.mig_devices:
        s.heading("MIG devices")
        t = Table(["SLOT", "UUID", "PROFILE", "MEMORY", "HOLDERS", "STATE"])
        for m in sorted(gpu.mig_devices, key=lambda x: x.index):
            holders = (
                ",".join(clean(h.name, 32) for h in view.holders.get(m.uuid, [])) or "-"
                if view.docker_ok
                else UNKNOWN
            )
            t.add(
                [
                    view.slot(m.uuid),
                    m.uuid,
                    clean(m.profile or UNKNOWN, 24),
                    f"{known_bytes(m.memory_used_bytes)}/{known_bytes(m.memory_total_bytes)}",
                    holders,
                    gpu_state(view, gpu, m.uuid),
                ]
            )
        s.table(t)
    s.heading("Holders")
    holding = view.holders.get(uuid, [])
    in_mig_mode = device is None and gpu.mig_enabled and bool(gpu.mig_devices)
    if not view.docker_ok:
        _holders_unknown(view, s)
    elif holding:
        s.table(containers_table(view, holding, wide=False))
    elif in_mig_mode:
        # Its devices are held, not the GPU itself: "<none>" would deny what the table above shows.
        s.line("none of the GPU itself; its MIG devices' holders are listed above", 2)
    else:
        s.line("<none>", 2)
    s.heading("Processes")
    if device is None and gpu.mig_enabled:
        # In MIG mode NVML lists the processes on the MIG devices (the GPU itself has none): these.
        mig_uuids = {m.uuid for m in gpu.mig_devices}
        unlisted = [u for u in unlisted_devices(view.snapshot) if u.uuid in mig_uuids]
        _processes_lines(
            view,
            [p for p in view.snapshot.processes if p.device_uuid in mig_uuids],
            unlisted,
            "GPU",
            s,
            others_listed=len(unlisted) < len(mig_uuids),
        )
    else:
        _processes_lines(
            view,
            _device_processes(view, uuid),
            [u for u in unlisted_devices(view.snapshot) if u.uuid == uuid],
            "USER",
            s,
            others_listed=False,
        )
    s.heading("Ledger")
    _release_breaker_note(view, s)
    # A GPU in MIG mode: its rows and its devices' (as its Processes and Decision cover them).
    devices = {uuid: item["slot"]}
    if in_mig_mode:
        devices |= {m.uuid: view.slot(m.uuid) for m in gpu.mig_devices}
    entries = [
        e
        for e in view.snapshot.ledger.entries
        if (e.gpu_uuid in devices) or e.gpu in devices or e.gpu in devices.values()
    ]
    _ledger_lines(view, entries, s, device_slots=devices if in_mig_mode else None)
    s.heading("Decision")
    uuids = {uuid, *(m.uuid for m in gpu.mig_devices)} if device is None else {uuid}
    _gpu_decision(view, [i for u in sorted(uuids) for i in view.items_by_gpu.get(u, [])], s, uuids)
    _events_section(view, view.events_for_gpu(uuids), s)
    return s.render()


# --- user ------------------------------------------------------------------------------------


def describe_user(view: View, name: str, style: Style = PLAIN) -> str:
    if not view.docker_ok:
        # Without Docker none of the user's containers can be listed: "0 containers", "no live
        # containers" and "no rule is due" would be guesses. As describe container and get users.
        from controller.cli.gather import docker_error

        problem = docker_error(view.snapshot) or "the Docker engine is unavailable"
        raise CliError(
            f"cannot describe user {clean(name, 64)!r}: their containers cannot be listed: {problem}"
        )
    containers = sorted((c for c in view.snapshot.containers if c.owner == name), key=container_sort_key)
    # Theirs: run as them, or in one of their containers (as root, often), as get processes --owner.
    theirs = {c.id for c in containers}
    processes = [p for p in view.snapshot.processes if p.user == name or p.container_id in theirs]
    ledger = [e for e in view.snapshot.ledger.entries if e.user == name]
    unknown_here = not containers and not processes and not ledger and not _is_login(name)
    # With a device's processes unlisted, or the ledger unreadable, "none" is not known of them.
    unlisted_any = bool(unlisted_devices(view.snapshot))
    if view.snapshot.ledger.error:
        none_of = (
            "no containers, no GPU process NVML listed" if unlisted_any else "no containers or GPU processes"
        )
        none_of += " (their ledger rows unknown: the ledger is unreadable)"
    elif unlisted_any:
        none_of = "no containers or ledger rows, no GPU process NVML listed"
    else:
        none_of = "no containers, GPU processes or ledger rows"
    if unknown_here and not _USER_NAME.fullmatch(name):
        raise CliError(f"user {clean(name, 64)!r} not found: {none_of}, and not a login name")
    s = Sections(style)
    if unknown_here:
        # An admin previews the policy of a user who has not arrived yet (or a typo: said plainly).
        s.line(
            f"note: {clean(name, 64)!r} has {none_of}, and is no login "
            "on this host; below is the policy a new atomic container of theirs would get",
            0,
        )
    from controller.cli.users import aggregate_section, owner_policy, quota_section

    # The policy the quotas are read from: their newest container that counts for them, not one
    # that only claims them (while labels are not trusted it gets the default group's policy).
    pol, resolved_for = owner_policy(view, name)
    group = f"{clean(pol.group.value, 64)}   ({clean(pol.group.source, 160)})" if pol else "unknown"
    held = sorted({view.slot(u) for c in containers for u in c.gpu_uuids})
    if any(c.all_gpus for c in containers):
        held.append("all")
    s.fields(
        [
            ("Name", clean(name, 64)),
            ("Group", group),
            (
                "Containers",
                f"{len(containers)} ({sum(c.state == ContainerState.RUNNING for c in containers)} running)",
            ),
            ("GPUs held", ",".join(held) or "-"),
        ]
    )
    s.heading("Containers")
    if containers:
        s.table(containers_table(view, containers, wide=False))
    else:
        s.line("<none>", 2)
    quota_section(view, name, s)
    aggregate_section(view, name, s)
    s.heading("GPU processes")
    unlisted = unlisted_devices(view.snapshot)
    devices = len(process_devices(view.snapshot.gpus))
    _processes_lines(view, processes, unlisted, "GPU", s, others_listed=len(unlisted) < devices)
    s.heading("Ledger")
    _release_breaker_note(view, s)
    if view.snapshot.ledger.error:
        # Unreadable: their rows are unknown, not none (as describe gpu says).
        s.line(f"unreadable: {clean(view.snapshot.ledger.error, 200)}", 2)
    elif ledger:
        for e in ledger:
            s.line(
                f"{clean(e.gpu, 64)} -> {clean(e.container, 64)}, allocated {_when(view, e.allocated_at)}", 2
            )
    else:
        s.line("<no entry>", 2)
    if pol is not None:
        _policy_section(pol, s)
    if pol is not None and resolved_for is not None:
        s.line(
            f"(resolved for {clean(resolved_for.name, NAME_MAX)}, the newest live container counted as "
            "theirs, whose policy the quotas are read from; other types may differ)",
            2,
        )
    elif pol is not None:
        s.line("(resolved for a new atomic container of theirs; other types may differ)", 2)
    s.heading("Decision")
    items = [i for c in containers for i in view.container_items(c)]
    seen = {id(i) for i in items}
    items += [i for i in _user_items(view, name) if id(i) not in seen]
    delivered = view.delivered(user=name)
    if view.plan is None:
        s.line(f"unknown: no plan ({clean(view.policy.error or 'the policy did not load', 300)})", 2)
    elif items or delivered:
        for c in containers:
            own = view.container_items(c)
            own_alerts = [a for a in delivered if a.target.container_id == c.id]
            if own or own_alerts:
                s.line(f"{clean(c.name, NAME_MAX)}:", 2)
                decision_lines(view, own, s, indent=4, delivered=own_alerts)
        own_ids = {id(i) for c in containers for i in view.container_items(c)}
        rest = [i for i in items if id(i) not in own_ids]
        ids = {c.id for c in containers}
        rest_alerts = [a for a in delivered if a.target.container_id not in ids]
        if rest or rest_alerts:
            s.line("other:", 2)
            decision_lines(view, rest, s, indent=4, delivered=rest_alerts)
    else:
        s.line("not acted on: no rule is due for any of this user's containers", 2)
    _events_section(view, view.events_for_user(name), s)
    return s.render()


def _release_breaker_note(view: View, s: Sections) -> None:
    """A tripped release breaker holds back every ledger release: say so where rows are listed."""
    if view.memory is not None and view.memory.release_breaker.tripped:
        s.line(release_breaker_line(view.memory), 2)


def _user_items(view: View, name: str) -> list[Action | Deferred]:
    if view.plan is None:
        return []
    items: list[Action | Deferred] = [*view.plan.actions, *view.plan.deferred]
    return [i for i in items if i.target.user == name]


# What a login name may look like (POSIX portable, plus DS01's domain logins ``a.b@example.org``).
_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")


def _is_login(name: str) -> bool:
    try:
        import pwd

        pwd.getpwnam(name)
    except (KeyError, ImportError):
        return False
    return True


__all__ = ["describe_container", "describe_gpu", "describe_user"]


def _ledger_lines(
    view: View, entries: Sequence[Any], s: Sections, device_slots: Mapping[str, str] | None = None
) -> None:
    """A GPU's ledger rows (or why there are none) under describe gpu's Ledger heading; with
    ``device_slots`` (a GPU in MIG mode: uuid -> slot), each row names the device it is for."""
    if view.snapshot.ledger.error:
        s.line(f"unreadable: {clean(view.snapshot.ledger.error, 200)}", 2)
    elif entries:
        for e in entries:
            on = ""
            if device_slots is not None:
                slot = device_slots.get(e.gpu_uuid or "") or device_slots.get(e.gpu) or clean(e.gpu, 64)
                on = f"{slot}: "
            who = f"{clean(e.container, 64)} ({clean(e.user, 32)})"
            s.line(f"{on}{who}, allocated {_when(view, e.allocated_at)}", 2)
    else:
        s.line("<no entry>", 2)
