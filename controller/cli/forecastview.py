"""``ds01ctl plan --at`` and ``plan --policy``: the forecast of the daemon's coming passes.

``plan --at T`` simulates every pass the daemon would run from now until T
(:func:`controller.plan.forecast.forecast`) and prints the predicted actions in time order, the
deferrals left at the end, and the assumptions. ``plan --policy CANDIDATE [--at H]`` runs the
forecast under the installed policy and the candidate (default horizon 24 h) and prints the
difference: containers stopped sooner, later, newly, or no longer. The NEXT column of ``get
containers`` and ``describe container`` read the same forecast (:func:`next_text`).

The command itself (the observation, the memory, the policies) is
:mod:`controller.cli.forecastcmd`; this module is the forecast and its formatting, below
:mod:`controller.cli.gather`. Heavy imports happen inside the functions so ``ds01ctl --help`` stays fast.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from controller.cli.render import PLAIN, UNKNOWN, Style, clean, stamp

if TYPE_CHECKING:
    from collections.abc import Callable

    from controller.cli.view import View
    from controller.memory import ControllerMemory
    from controller.plan.forecast import Forecast, PredictedAction, StopChange
    from controller.plan.types import Deferred
    from controller.snapshot import Snapshot

DEFAULT_DIFF_HORIZON = timedelta(hours=24)
# NEXT and describe look this far ahead.
NEXT_HORIZON = timedelta(hours=24)
# `get containers` forecasts only hosts this small: the forecast re-plans the host at each pass (about
# 2 ms a pass for 25 running GPU containers), and `get` must stay quick.
NEXT_MAX_RUNNING = 25
# `describe container` (one container, a command run by hand) forecasts hosts up to this size.
DESCRIBE_MAX_RUNNING = 100
NEXT_MAX_PASSES = 400
# `plan --at` and `plan --policy` re-plan the whole host at each simulated pass: on a large host the
# pass bound shrinks so a command stays within a minute or so (the forecast says when it is cut short).
CONTAINER_PASSES = 200_000
MIN_PASSES = 100


def run_forecast(
    view: View,
    horizon: datetime,
    interval_s: float,
    max_passes: int | None = None,
    memory: ControllerMemory | None = None,
) -> Forecast:
    """The forecast from the view's observation and ``memory`` (default: the view's; the daemon's
    when it has one)."""
    from controller.memory import ControllerMemory
    from controller.plan.forecast import DEFAULT_MAX_PASSES, forecast

    assert view.desired is not None
    start = memory if memory is not None else view.memory
    if max_passes is None:
        by_size = CONTAINER_PASSES // (len(view.snapshot.containers) + 1)
        max_passes = min(DEFAULT_MAX_PASSES, max(MIN_PASSES, by_size))
    f = forecast(
        view.snapshot,
        view.desired,
        start or ControllerMemory(),
        until=horizon,
        interval_s=interval_s,
        max_passes=max_passes,
    )
    if start is None:
        note = "the controller's memory could not be read: timers and warnings start from this observation"
        f = f.model_copy(update={"assumptions": (*f.assumptions, note)})
    return f


# --- plan --at -------------------------------------------------------------------------------


def forecast_json(f: Forecast) -> dict[str, Any]:
    """``Forecast.model_dump(mode="json")`` with every string cleaned (schema in docs/cli.md)."""
    from controller.cli.render import clean_tree

    data: dict[str, Any] = clean_tree(f.model_dump(mode="json"))
    return data


def predicted_lines(p: PredictedAction, style: Style, wide: bool) -> list[str]:
    from controller.cli.planview import evidence_text, kind_text

    a = p.action
    mark = style("!", "red") if a.destructive else style("+", "yellow")
    lines = [
        f"  {stamp(p.pass_at)}  {mark} {kind_text(a)} {clean(a.target.label(), 64)}  [{a.reason.value}]",
        f"      {clean(a.message, 400)}",
    ]
    if a.due_at < p.pass_at - timedelta(seconds=1):
        lines.append(f"      due since {stamp(a.due_at)}")
    if a.evidence and wide:
        lines.append(f"      evidence: {evidence_text(a.evidence)}")
    return lines


def forecast_text(
    f: Forecast,
    style: Style = PLAIN,
    heading: str = "Forecast",
    wide: bool = False,
    idle_removes: Callable[[Deferred], bool] | None = None,
) -> str:
    """``plan --at``; ``idle_removes`` as :func:`controller.cli.planview.plan_text`'s."""
    from controller.cli.planview import deferred_lines

    lines = [
        f"{heading} from {stamp(f.start_at)} until {stamp(f.until)} "
        f"({f.passes} simulated pass{'es' if f.passes != 1 else ''}"
        + (f", cut short at {stamp(f.last_pass_at)}" if f.truncated else "")
        + f"; host observed at {stamp(f.observed_at)})",
        "Assuming:",
        *(f"  - {clean(a, 400)}" for a in f.assumptions),
        "",
    ]
    if f.actions:
        lines.append(f"Predicted actions ({len(f.actions)}), in time order:")
        for p in f.actions:
            lines.extend(predicted_lines(p, style, wide))
    elif f.truncated:
        lines.append(f"No actions predicted until {stamp(f.last_pass_at)}, the last simulated pass.")
    else:
        lines.append("No actions predicted: nothing would change until then.")
    shown = [d for d in f.deferred if wide or d.why.value != "NotDue"]
    if f.deferred:
        lines += ["", f"Deferred at {stamp(f.last_pass_at)} ({len(f.deferred)}):"]
        for d in shown:
            removes = idle_removes is not None and idle_removes(d)
            lines.extend(deferred_lines(d, f.last_pass_at, style, wide, idle_removes=removes))
        if len(shown) < len(f.deferred):
            lines.append(f"  ... and {len(f.deferred) - len(shown)} not due yet (-o wide lists them)")
    stops = sum(1 for p in f.actions if p.action.destructive)
    lines += [
        "",
        f"Forecast: {len(f.actions)} action(s) ({stops} destructive), {len(f.deferred)} deferred at the end.",
    ]
    if f.truncated:
        lines.append(
            f"The forecast was cut short after {f.max_passes} passes at {stamp(f.last_pass_at)}, "
            f"short of {stamp(f.until)}: later actions are missing."
        )
    return "\n".join(lines) + "\n"


# --- plan --policy ---------------------------------------------------------------------------

_CHANGE_TEXT = {
    "sooner": "stopped sooner",
    "later": "stopped later",
    "newly": "newly stopped",
    "no-longer": "no longer stopped",
}
# A container stopped already (exited, created) is removed: never "stopped".
_REMOVAL_TEXT = {
    "sooner": "removed sooner",
    "later": "removed later",
    "newly": "newly removed",
    "no-longer": "no longer removed",
}


def _removal(ch: StopChange) -> bool:
    """A change of when it is removed: both stop it alike, or each side that ends the container
    removes one that is not running (no stop)."""
    return ch.what == "removal" or all(
        a in (None, "remove") for a in (ch.current_action, ch.candidate_action)
    )


def _change_text(ch: StopChange) -> str:
    return (_REMOVAL_TEXT if _removal(ch) else _CHANGE_TEXT)[ch.change.value]


def _when(at: datetime | None, reach: datetime, cut_short: bool) -> str:
    if at is not None:
        return stamp(at)
    return f"not before {stamp(reach)}" if cut_short else "not before the horizon"


def _cut_short(current: Forecast, candidate: Forecast) -> list[str]:
    """Which forecast was cut short, and so how far the comparison goes (nothing when neither was)."""
    short = [(name, f) for name, f in (("installed", current), ("candidate", candidate)) if f.truncated]
    if not short:
        return []
    reach = stamp(min(current.reach, candidate.reach))
    return [
        *(
            f"The {name} policy's forecast was cut short after {f.max_passes} passes at "
            f"{stamp(f.last_pass_at)}, short of {stamp(f.until)}."
            for name, f in short
        ),
        f"Compared until {reach} only: later differences are not shown.",
    ]


# The settings the host is observed by (controller.observe.host.with_policy), by their spec names.
_OBSERVED_BY = (
    ("keepalivePath", "host_keepalive_path"),
    ("systemProcessNames", "system_process_names"),
    ("engineCgroupParents", "engine_cgroup_parents"),
)


def read_otherwise(installed: Any, candidate: Any) -> str | None:
    """One line when the candidate's global policy reads the host otherwise than the installed one
    (``plan --policy`` observes once, as the candidate reads it); ``None`` when it reads it alike."""

    def shown(value: Any) -> str:
        return ", ".join(value) if isinstance(value, tuple) else str(value)

    changed = [
        f"{name} {shown(getattr(installed, field).value)} -> {shown(getattr(candidate, field).value)}"
        for name, field in _OBSERVED_BY
        if getattr(installed, field).value != getattr(candidate, field).value
    ]
    if not changed:
        return None
    return (
        f"the candidate reads the host otherwise ({clean('; '.join(changed), 400)}): the host was "
        "observed once, as the candidate reads it, so the installed policy's forecast is not what its "
        "controller does where that reading differs"
    )


def diff_text(changes: tuple[StopChange, ...], current: Forecast, candidate: Forecast, origin: str) -> str:
    reach = min(current.reach, candidate.reach)
    cut_short = current.truncated or candidate.truncated
    lines = [
        f"Candidate policy {clean(origin, 200)} against the installed one, "
        f"from {stamp(current.start_at)} until {stamp(reach)}"
        + (f" (cut short of {stamp(current.until)})" if cut_short else ""),
        *_cut_short(current, candidate),
        "Assuming:",
        *(f"  - {clean(a, 400)}" for a in candidate.assumptions),
        "",
    ]
    if not changes:
        lines.append("No difference: the same containers are stopped and removed at the same times.")
    for ch in changes:
        lines.append(
            f"  {_change_text(ch):<17} {clean(ch.container, 64)} "
            f"({clean(ch.user or UNKNOWN, 32)}): "
            f"now {_when(ch.current_at, reach, cut_short)}"
            + (f" [{ch.current_reason}]" if ch.current_reason else "")
            + f" -> candidate {_when(ch.candidate_at, reach, cut_short)}"
            + (f" [{ch.candidate_reason}]" if ch.candidate_reason else "")
        )
    counts = {k: sum(1 for c in changes if c.change.value == k and not _removal(c)) for k in _CHANGE_TEXT}
    removals = {k: sum(1 for c in changes if c.change.value == k and _removal(c)) for k in _REMOVAL_TEXT}
    said = [f"{n} {_CHANGE_TEXT[k]}" for k, n in counts.items()]
    said += [f"{n} {_REMOVAL_TEXT[k]}" for k, n in removals.items() if n]
    lines += [
        "",
        "Difference: " + ", ".join(said) + ".",
        "ds01ctl plan --policy PATH --at H -o json lists both forecasts in full.",
    ]
    return "\n".join(lines) + "\n"


def diff_json(
    changes: tuple[StopChange, ...], current: Forecast, candidate: Forecast, origin: str, horizon: datetime
) -> dict[str, Any]:
    """``plan --policy -o json`` (schema in docs/cli.md); every time in UTC with a ``Z``, as in the
    forecasts it holds."""
    from controller.cli.render import iso

    return {
        "candidate_policy": clean(origin, 400),
        "until": iso(horizon.astimezone(UTC)),
        "compared_until": iso(min(current.reach, candidate.reach).astimezone(UTC)),
        "changes": [c.model_dump(mode="json") for c in changes],
        "current": forecast_json(current),
        "candidate": forecast_json(candidate),
    }


# --- the command -----------------------------------------------------------------------------


# --- NEXT and describe -------------------------------------------------------------------------


def next_text(f: Forecast | None, container_id: str, now: datetime) -> str | None:
    """The forecast for one container in one line: ``warning 16:55, stop 17:10 if it stays idle``;
    ``None`` when nothing is predicted for it."""
    if f is None:
        return None
    from controller.cli.render import clock

    steps = f.for_container(container_id)
    if not steps:
        return None
    parts: list[str] = []
    warned = noticed = False
    for p in steps:
        kind = p.action.kind.value
        if p.action.reason.value == "IdleExemptNotice":
            # An exempt owner's FYI notice says it is not stopped: no warning of a stop.
            if not noticed:
                parts.append(f"notice {clock(p.pass_at, now)}")
                noticed = True
            continue
        if kind == "WarnOwner":
            if not warned:
                parts.append(f"warning {clock(p.pass_at, now)}")
                warned = True
            continue
        verb = {"StopContainer": "stop", "RemoveContainer": "remove"}.get(kind, kind)
        if kind == "StopContainer" and getattr(p.action.params, "remove", False):
            verb = "stop and remove"  # removeAfterIdleStop
        parts.append(f"{verb} {clock(p.pass_at, now)}")
        if kind in ("StopContainer", "RemoveContainer"):
            break
    text = ", ".join(parts)
    if any(p.action.reason.value == "IdleTimeout" for p in steps):
        text += " if it stays idle"
    return text


def running_gpu_containers(snapshot: Snapshot) -> int:
    """What a forecast's cost grows with: the running containers that hold a GPU."""
    return sum(1 for c in snapshot.containers if c.state.value == "running" and c.has_gpu)


def forecast_for_view(view: View, interval_s: float, *, small_hosts_only: bool) -> Forecast | None:
    """The 24 h forecast ``get containers`` and ``describe`` show; ``None`` without a plan, or on a
    host too large to re-plan a few hundred times within the command's time."""
    if view.plan is None or view.desired is None:
        return None
    running = running_gpu_containers(view.snapshot)
    if running > (NEXT_MAX_RUNNING if small_hosts_only else DESCRIBE_MAX_RUNNING):
        return None
    try:
        return run_forecast(view, view.now + NEXT_HORIZON, interval_s, max_passes=NEXT_MAX_PASSES)
    except Exception:  # the forecast is extra information: the plan of now still stands without it
        return None


def forecast_section(view: View, container_id: str, s: Any) -> None:
    """``describe container``'s Forecast block: the predicted steps of this container (24 h), or
    why there is none on a host too large to forecast within the command."""
    f, now = view.forecast, view.now
    if f is None:
        running = running_gpu_containers(view.snapshot)
        if view.plan is not None and running > DESCRIBE_MAX_RUNNING:
            s.heading("Forecast")
            s.line(
                f"not computed: {running} running GPU containers (more than {DESCRIBE_MAX_RUNNING}); "
                "ds01ctl plan --at +24h forecasts the whole host",
                2,
            )
        return
    from controller.cli.planview import kind_text

    s.heading("Forecast")
    steps = f.for_container(container_id)
    summary = next_text(f, container_id, now)
    if not steps:
        s.line(f"nothing predicted until {stamp(f.reach)} if nothing changes", 2)
    else:
        s.line(f"{summary} (if nothing else changes)", 2)
        for p in steps:
            s.line(
                f"{stamp(p.pass_at)}  {kind_text(p.action)} [{p.action.reason.value}]: "
                f"{clean(p.action.message, 300)}",
                4,
            )
    if f.truncated:
        s.line(
            f"(the forecast was cut short after {f.max_passes} passes, short of {stamp(f.until)}: "
            f"it looked until {stamp(f.last_pass_at)} only)",
            2,
        )
    s.line("assuming the signals stay as observed now; ds01ctl plan --at +24h lists every assumption", 2)


__all__ = ["diff_json", "forecast_json", "forecast_section", "forecast_text", "next_text", "run_forecast"]
