"""Rules 3 and 4: idle and over-runtime GPU containers -- warn the owner, then stop.

Only running containers that hold a GPU are considered ("GPU access means ephemeral
enforcement"); both clocks restart with every start (the last ``StartedAt``).

The warning ladder (shared by both rules): a warning at each level (80/95 % of the idle timeout,
75/90 % of the max runtime), at most one per pass (the highest level reached). The stop is due at
``max(start + timeout, first_warning_sent_at + lead)`` with ``lead = min(warn_lead_s, 0.2 *
timeout)``, so the owner always gets a real lead time and the stop never happens in the pass that
sends the first warning: when the stop comes due with no warning delivered yet, the warning goes
out now and the stop waits (``WaitingForWarning``). Delivery is recorded by the executor through
``ControllerMemory.with_warning(container_id, params["warning_key"], at)``.

Idle warnings belong to one idle streak: their keys carry the streak's start, and an active
sample voids them. Runtime warnings belong to one start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controller.memory import ContainerMemory
from controller.plan.context import Collector, PassContext, fmt_duration, iso, seconds
from controller.plan.idle import IDLE_WARNING_PREFIX, grace_end, idle_status, keepalive_verdict
from controller.plan.rules.common import exempted, gpu_evidence, shielded
from controller.plan.types import Action, ActionKind, DeferReason, Reason
from controller.snapshot import ContainerObs, ContainerState, Domain, KeepAliveState
from desired_state.effective import EffectivePolicy, ExemptFrom

LEAD_FRACTION = 0.2


@dataclass(frozen=True, slots=True)
class Ladder:
    stop_reason: Reason
    warn_reason: Reason
    levels_pct: tuple[int, ...]
    key_prefix: str  # warning-key prefix, e.g. "idle"
    what: str  # "idle" / "running"


IDLE_LADDER = Ladder(
    Reason.IDLE_TIMEOUT, Reason.IDLE_WARNING, (80, 95), IDLE_WARNING_PREFIX.rstrip(":"), "idle"
)
RUNTIME_LADDER = Ladder(
    Reason.MAX_RUNTIME_EXCEEDED, Reason.MAX_RUNTIME_WARNING, (75, 90), "runtime", "running"
)


def lead_s(policy: EffectivePolicy, timeout_s: float) -> float:
    return min(policy.warn_lead_s.value, LEAD_FRACTION * timeout_s)


def _warn_keys(ladder: Ladder, c: ContainerObs, scope: str, level: int) -> tuple[str, str]:
    warning_key = f"{ladder.key_prefix}:{level}:{scope}"
    action_key = f"WarnOwner:{c.id}:{ladder.warn_reason.value}:{level}:{scope}"
    return warning_key, action_key


def run_ladder(
    ctx: PassContext,
    out: Collector,
    c: ContainerObs,
    mem: ContainerMemory | None,
    ladder: Ladder,
    *,
    start: datetime,
    scope: str,
    timeout_s: float,
    lead: float,
    not_ready: tuple[str, datetime | None] | None,
    stop_params: dict[str, Any],
    evidence: dict[str, Any],
    notice_lines: Sequence[str] = (),
) -> Action | None:
    """Warn and/or return the stop for one clock that started at ``start``.

    ``notice_lines`` follow the first line of the owner's notice (params ``notice``): how to keep the
    container, what is kept and lost, how to see more. ``{stop_at}`` in it is filled in at delivery,
    in the server's local time (:func:`controller.act.notify.notice_text`).

    ``not_ready`` (message, due) says the stop may not happen yet even past the timeout (the idle
    window is not filled); the stop is returned, not recorded, so the caller can pick one stop
    when both rules want one.
    """
    now = ctx.now
    target = ctx.target(c)
    elapsed_s = seconds(now - start)
    first_level_s = min(ladder.levels_pct) / 100 * timeout_s
    if elapsed_s < first_level_s:
        # The common case on a busy host: nothing to say yet but when the first warning is due.
        # (Kept cheap: this runs for every running GPU container on every pass.)
        out.defer(
            target,
            ladder.stop_reason,
            DeferReason.NOT_DUE,
            f"{c.name}: {ladder.what} for {fmt_duration(elapsed_s)} of {fmt_duration(timeout_s)}",
            due_at=start + timedelta(seconds=first_level_s),
            evidence={**evidence, "clock_start": iso(start), "elapsed_s": elapsed_s, "timeout_s": timeout_s},
        )
        return None
    due_stop = start + timedelta(seconds=timeout_s)
    sent: dict[int, datetime] = {}
    for level in ladder.levels_pct:
        wk, ak = _warn_keys(ladder, c, scope, level)
        at = ctx.sent_at(mem, wk, ak)
        if at is not None:
            sent[level] = at
    first_sent = min(sent.values()) if sent else None
    top_sent = max(sent) if sent else 0
    reached = [lvl for lvl in ladder.levels_pct if elapsed_s >= lvl / 100 * timeout_s]
    evidence = {
        **evidence,
        "clock_start": iso(start),
        "elapsed_s": elapsed_s,
        "timeout_s": timeout_s,
        "lead_s": lead,
        "warnings_sent": {str(lvl): iso(at) for lvl, at in sorted(sent.items())},
    }

    def warn(level: int) -> None:
        wk, ak = _warn_keys(ladder, c, scope, level)
        stop_at = max(due_stop, (first_sent or now) + timedelta(seconds=lead))
        left_s = max(0.0, seconds(stop_at - now))
        # The share of the limit actually elapsed at this pass, not the level: a late first
        # warning (the daemon was down, `plan --at`) must not say "2h (90% of 1h)".
        elapsed_pct = int(100 * elapsed_s / timeout_s + 1e-9)
        out.act(
            ActionKind.WARN_OWNER,
            target,
            ladder.warn_reason,
            f"{c.name}: {ladder.what} for {fmt_duration(elapsed_s)} ({elapsed_pct}% of "
            f"{fmt_duration(timeout_s)}); it will be stopped in about {fmt_duration(left_s)}",
            due_at=start + timedelta(seconds=level / 100 * timeout_s),
            key=ak,
            evidence={**evidence, "level_pct": level, "stop_expected_at": iso(stop_at)},
            params={
                "warning_key": wk,
                "level_pct": level,
                "stop_expected_at": iso(stop_at),
                "notice": "\n".join(
                    [
                        f"Your container {c.name} has been {ladder.what} for {fmt_duration(elapsed_s)} "
                        f"(limit {fmt_duration(timeout_s)}). It will be stopped at {{stop_at}} "
                        f"(in about {fmt_duration(left_s)}).",
                        *notice_lines,
                    ]
                ),
            },
        )

    def warn_highest_new() -> None:
        fresh = [lvl for lvl in reached if lvl > top_sent]
        if fresh:
            warn(max(fresh))

    if now < due_stop:
        warn_highest_new()
        upcoming = [
            start + timedelta(seconds=lvl / 100 * timeout_s)
            for lvl in ladder.levels_pct
            if lvl not in reached
        ]
        next_at = min([*upcoming, due_stop])
        out.defer(
            target,
            ladder.stop_reason,
            DeferReason.NOT_DUE,
            f"{c.name}: {ladder.what} for {fmt_duration(elapsed_s)} of {fmt_duration(timeout_s)}",
            due_at=next_at,
            evidence={**evidence, "stop_due_at": iso(due_stop)},
        )
        return None
    if not_ready is not None:
        warn_highest_new()
        message, due = not_ready
        out.defer(
            target, ladder.stop_reason, DeferReason.WAITING_FOR_WINDOW, message, due_at=due, evidence=evidence
        )
        return None
    if first_sent is None:
        # Due, but the owner has not been told: tell them now and give them the lead time.
        warn(max(ladder.levels_pct))
        out.defer(
            target,
            ladder.stop_reason,
            DeferReason.WAITING_FOR_WARNING,
            f"{c.name}: stop is due but no warning was delivered yet; warning now, stop in "
            f"{fmt_duration(lead)}",
            due_at=now + timedelta(seconds=lead),
            evidence=evidence,
        )
        return None
    stop_at = max(due_stop, first_sent + timedelta(seconds=lead))
    if now < stop_at:
        warn_highest_new()
        out.defer(
            target,
            ladder.stop_reason,
            DeferReason.WAITING_FOR_WARNING,
            f"{c.name}: first warned at {first_sent.isoformat()}; stop after the lead time of "
            f"{fmt_duration(lead)}",
            due_at=stop_at,
            evidence=evidence,
        )
        return None
    return Action(
        kind=ActionKind.STOP_CONTAINER,
        target=target,
        reason=ladder.stop_reason,
        message=f"stop {c.name} (owner {c.owner}): {ladder.what} for {fmt_duration(elapsed_s)}, "
        f"limit {fmt_duration(timeout_s)}; first warned {first_sent.isoformat()}",
        # The GPUs it holds: the executor releases them (gpu.release) once the container is removed.
        evidence={
            **evidence,
            **gpu_evidence(ctx, c),
            "first_warning_at": iso(first_sent),
            "stop_due_at": iso(stop_at),
        },
        due_at=stop_at,
        key=f"StopContainer:{c.id}:{iso(c.started_at)}:{ladder.stop_reason.value}",
        params=stop_params,
    )


def _idle_notice(c: ContainerObs, policy: EffectivePolicy) -> list[str]:
    """What the owner of an idle container can do, what a stop keeps and loses, where to see more."""
    cap = policy.keepalive_max_age_s.value
    path = policy.keepalive_path.value
    lost = (
        "the container itself is removed after the stop, with its processes and every file outside /workspace"
        if policy.remove_after_idle_stop.value
        else "its running processes stop; the container stays, and can be started again"
    )
    return [
        "Why: GPU, CPU and network have all stayed below the idle thresholds since then.",
        f"To keep it: run `touch {path}` inside the container"
        + (
            f"; that keeps it for up to {fmt_duration(cap)} after the touch (touch it again after that)."
            if cap is not None
            else "."
        ),
        f"What is kept: your files under /workspace. What is lost: {lost}.",
        f"More: ds01ctl describe container {c.name}",
    ]


def _runtime_notice(c: ContainerObs) -> list[str]:
    return [
        "Why: the maximum runtime since its last start is reached; the keep-alive file does not extend it.",
        "What is kept: your files under /workspace and the stopped container (start it again to continue). "
        "What is lost: its running processes; save your work before the stop.",
        f"More: ds01ctl describe container {c.name}",
    ]


def idle_stop(ctx: PassContext, out: Collector, c: ContainerObs, policy: EffectivePolicy) -> Action | None:
    """Rule 3: the idle stop of a running GPU container (returns the stop, if due)."""
    if c.state != ContainerState.RUNNING or not c.has_gpu:
        return None
    base_timeout_s = policy.idle_timeout_s.value
    rule = Reason.IDLE_TIMEOUT
    if base_timeout_s is None:
        # Devcontainers and "never" policies: no idle enforcement. A policy that waived the timeout
        # because of an exemption (without keeping the value) still says why.
        exempted(ctx, out, c, policy, rule, ExemptFrom.IDLE)
        return None
    if shielded(ctx, out, c, policy, rule, None):
        return None
    target = ctx.target(c)
    now = ctx.now
    if c.started_at is None:
        out.defer(target, rule, DeferReason.UNKNOWN_SIGNAL, f"{c.name} is running but StartedAt is unknown")
        return None
    mem = ctx.cmem.get(c.id)
    grace_over_at = grace_end(mem, c.started_at, policy.grace_period_s.value)
    if now < grace_over_at:
        extension_s = seconds(grace_over_at - c.started_at) - policy.grace_period_s.value
        out.defer(
            target,
            rule,
            DeferReason.GRACE_PERIOD,
            f"{c.name} started {fmt_duration(seconds(now - c.started_at))} ago; idle checks begin after "
            f"the grace period of {fmt_duration(policy.grace_period_s.value)}"
            + (f" (+{fmt_duration(extension_s)} not observed)" if extension_s > 0 else ""),
            due_at=grace_over_at,
            evidence={
                "started_at": iso(c.started_at),
                "grace_period_s": policy.grace_period_s.value,
                "grace_extension_s": extension_s,
            },
        )
        return None
    if not ctx.nvml_ok:
        out.defer(
            target,
            rule,
            DeferReason.DOMAIN_UNAVAILABLE,
            f"{c.name}: NVML is unavailable, GPU activity cannot be seen; no GPU container is idle-stopped",
            evidence={"nvml_error": ctx.snapshot.domain_error(Domain.NVML)},
        )
        return None
    if mem is None:  # pragma: no cover - the planner observes every container first
        return None
    status = idle_status(mem, c)
    current = status.current
    if current is None:
        out.defer(target, rule, DeferReason.UNKNOWN_SIGNAL, f"{c.name}: no activity reading in this pass")
        return None
    if current.idle is False:
        return None  # active: nothing pending
    if current.idle is None:
        if len(mem.samples) == 1:
            due = now + timedelta(seconds=status.interval_s) if status.interval_s else None
            out.defer(
                target,
                rule,
                DeferReason.WAITING_FOR_WINDOW,
                f"{c.name}: first reading of this start is a baseline; rates need a second one",
                due_at=due,
                evidence={"sample": current.detail},
            )
        else:
            out.defer(
                target,
                rule,
                DeferReason.UNKNOWN_SIGNAL,
                f"{c.name}: activity undecidable ({current.detail}); unknown is not idle",
                evidence={"sample": current.detail},
            )
        return None
    idle_since = status.idle_since
    if idle_since is None:
        out.defer(
            target,
            rule,
            DeferReason.WAITING_FOR_WINDOW,
            f"{c.name}: idle, but the streak starts with the first idle reading after the grace period",
            evidence={"sample": current.detail},
        )
        return None

    demand = ctx.demand_fraction
    high_demand = demand is not None and demand >= policy.high_demand_threshold.value
    timeout_s = base_timeout_s * (policy.high_demand_idle_reduction.value if high_demand else 1.0)
    idle_s = seconds(now - idle_since)
    window = policy.idle_detection_window.value
    min_duration_s = policy.idle_min_duration_s.value
    evidence: dict[str, Any] = {
        "idle_since": iso(idle_since),
        "idle_for_s": idle_s,
        "last_active_at": iso(mem.last_active_at),
        "base_timeout_s": base_timeout_s,
        "timeout_source": policy.idle_timeout_s.source,
        "high_demand": high_demand,
        "demand_fraction": demand,
        "high_demand_threshold": policy.high_demand_threshold.value,
        "high_demand_idle_reduction": policy.high_demand_idle_reduction.value,
        "samples_in_streak": status.streak_samples,
        "idle_detection_window": window,
        "idle_min_duration_s": min_duration_s,
        "thresholds": {
            "gpu_pct": policy.gpu_idle_threshold_pct.value,
            "cpu_pct": policy.cpu_idle_threshold_pct.value,
            "net_bytes_per_s": policy.network_idle_threshold_bytes_per_s.value,
            "mig_idle_fallback": policy.mig_idle_fallback.value.value,
        },
        "last_sample": current.detail,
    }
    if min_duration_s > timeout_s:
        # The span, not the timeout, decides when the stop comes: say so (plan, describe, events).
        evidence["decided_by"] = (
            f"idleMinDuration {fmt_duration(min_duration_s)} ({policy.idle_min_duration_s.source}) is "
            f"longer than the idle timeout {fmt_duration(timeout_s)} ({policy.idle_timeout_s.source})"
        )
        evidence["effective_stop_due_at"] = iso(idle_since + timedelta(seconds=min_duration_s))
    window_ok = status.streak_samples >= window
    duration_ok = idle_s >= min_duration_s
    stop_ready = idle_s >= timeout_s and window_ok and duration_ok
    started_iso = iso(c.started_at)

    exemption = policy.exemption(ExemptFrom.IDLE)
    if exemption is not None and (exemption.expires_at is None or exemption.expires_at > now):
        if stop_ready:
            # Exempt owners get one FYI notice per start, never a stop.
            wk, ak = f"idle-exempt:{started_iso}", f"WarnOwner:{c.id}:IdleExemptNotice:{started_iso}"
            if ctx.sent_at(mem, wk, ak) is None:
                out.act(
                    ActionKind.WARN_OWNER,
                    target,
                    Reason.IDLE_EXEMPT_NOTICE,
                    f"{c.name}: idle for {fmt_duration(idle_s)} (limit {fmt_duration(timeout_s)}); not "
                    f"stopped because {c.owner} is exempt ({exemption.name}); please release the GPU if "
                    f"you are done",
                    due_at=now,
                    key=ak,
                    evidence={**evidence, "exemption": exemption.name},
                    params={"warning_key": wk},
                )
        exempted(ctx, out, c, policy, rule, ExemptFrom.IDLE)
        return None

    ka = c.signals.keepalive if c.signals is not None else None
    if ka is None or ka.state == KeepAliveState.UNKNOWN:
        # Unknown is not absent: an unreadable keep-alive (EACCES on a root-squashed NFS workspace,
        # the container root gone) may be a fresh one. No warning and no stop until it can be read.
        detail = (ka.detail if ka is not None else None) or "not read"
        out.defer(
            target,
            rule,
            DeferReason.UNKNOWN_SIGNAL,
            f"{c.name}: idle for {fmt_duration(idle_s)} but its keep-alive file "
            f"({policy.keepalive_path.value}) could not be read ({detail}); unknown is not absent",
            evidence={**evidence, "keepalive": f"unknown: {detail}"},
        )
        return None
    keep = keepalive_verdict(ka, mem.keepalive, policy.keepalive_max_age_s.value, now)
    evidence["keepalive"] = keep.detail
    if keep.honoured:
        out.defer(
            target,
            rule,
            DeferReason.KEEP_ALIVE,
            f"{c.name}: idle for {fmt_duration(idle_s)} but its keep-alive file is honoured "
            f"({policy.keepalive_path.value})",
            due_at=keep.until,
            evidence={
                **evidence,
                "keepalive_mtime": iso(ka.mtime if ka else None),
                "keepalive_first_seen_at": iso(mem.keepalive.first_seen_at if mem.keepalive else None),
                "keepalive_max_age_s": policy.keepalive_max_age_s.value,
            },
        )
        return None

    not_ready: tuple[str, datetime | None] | None = None
    if not (window_ok and duration_ok):
        dues: list[datetime] = []
        if not window_ok and status.interval_s:
            dues.append(current.at + timedelta(seconds=status.interval_s * (window - status.streak_samples)))
        if not duration_ok:
            dues.append(idle_since + timedelta(seconds=min_duration_s))
        waits = []
        if not window_ok:
            waits.append(
                f"only {status.streak_samples}/{window} idle samples (idleDetectionWindow from "
                f"{policy.idle_detection_window.source})"
            )
        if not duration_ok:
            waits.append(
                f"the minimum idle span idleMinDuration {fmt_duration(min_duration_s)} from "
                f"{policy.idle_min_duration_s.source} decides, not the idle timeout "
                f"{fmt_duration(timeout_s)}"
            )
        not_ready = (
            f"{c.name}: idle for {fmt_duration(idle_s)} but {'; '.join(waits)}",
            max(dues) if dues else None,
        )
    # Warnings belong to one idle streak. A keep-alive seen during it starts the warnings over once
    # it stops being honoured: the owner who answered a warning with a keep-alive is warned again
    # (with a full lead time) before the stop, not stopped on the strength of the old warning.
    scope = f"{started_iso}:{iso(idle_since)}"
    if mem.keepalive is not None:
        scope += f":ka:{iso(mem.keepalive.first_seen_at)}"
    return run_ladder(
        ctx,
        out,
        c,
        mem,
        IDLE_LADDER,
        start=idle_since,
        scope=scope,
        timeout_s=timeout_s,
        lead=lead_s(policy, timeout_s),
        not_ready=not_ready,
        stop_params={
            "timeout_s": policy.sigterm_grace_s.value,
            "remove": policy.remove_after_idle_stop.value,
        },
        evidence=evidence,
        notice_lines=_idle_notice(c, policy),
    )


def runtime_stop(ctx: PassContext, out: Collector, c: ContainerObs, policy: EffectivePolicy) -> Action | None:
    """Rule 4: max runtime since the last start (returns the stop, if due)."""
    if c.state != ContainerState.RUNNING or not c.has_gpu:
        return None
    timeout_s = policy.max_runtime_s.value
    rule = Reason.MAX_RUNTIME_EXCEEDED
    if timeout_s is None:
        exempted(ctx, out, c, policy, rule, ExemptFrom.MAX_RUNTIME)  # only says why, if exempt
        return None
    if shielded(ctx, out, c, policy, rule, ExemptFrom.MAX_RUNTIME):
        return None
    if c.started_at is None:
        out.defer(
            ctx.target(c), rule, DeferReason.UNKNOWN_SIGNAL, f"{c.name} is running but StartedAt is unknown"
        )
        return None
    mem = ctx.cmem.get(c.id)
    # Forward wall-clock steps during this start are not runtime (controller.plan.clock): the clock
    # starts that much later on the wall clock. Real time while the daemon was down still counts.
    discount_s = mem.runtime_discount_s if mem is not None and mem.started_at == c.started_at else 0.0
    start = c.started_at + timedelta(seconds=discount_s)
    # The boot-clock runtime (/proc) also holds across a step no pass saw: the smaller runtime wins
    # (a stop only ever later); real time while the daemon was down still advances the boot clock.
    # It was read at the observation: anchor it there, so a plan evaluated later (`plan --at`)
    # still ages the container.
    if c.running_for_s is not None:
        start = max(start, ctx.snapshot.observed_at - timedelta(seconds=c.running_for_s))
    return run_ladder(
        ctx,
        out,
        c,
        mem,
        RUNTIME_LADDER,
        start=start,
        scope=iso(c.started_at) or "",
        timeout_s=timeout_s,
        lead=lead_s(policy, timeout_s),
        not_ready=None,
        notice_lines=_runtime_notice(c),
        stop_params={"timeout_s": policy.sigterm_grace_s.value, "remove": False},
        evidence={
            "started_at": iso(c.started_at),
            "timeout_source": policy.max_runtime_s.source,
            "clock_step_discount_s": discount_s,
            "running_for_s": c.running_for_s,
        },
    )
