"""Rules 3 and 4: idle and over-runtime GPU containers -- warn the owner, then stop.

Only running containers that hold a GPU are considered ("GPU access means ephemeral
enforcement"); both clocks restart with every start (the last ``StartedAt``).

The warning ladder (shared by both rules): a warning at each level (80/95 % of the idle timeout,
75/90 % of the max runtime), at most one per pass (the highest level reached). The stop is due at
``max(start + timeout, first_warning_sent_at + lead)`` with ``lead = min(warn_lead_s, 0.2 *
timeout)``, so the owner always gets a real lead time and the stop never happens in the pass that
sends the first warning: when the stop comes due with no warning delivered yet, the warning goes
out now and the stop waits (``WaitingForWarning``). Delivery is recorded by the executor through
``ControllerMemory.with_warning(container_id, WarnParams.warning_key, at)``.

Idle warnings belong to one idle streak: their keys carry the streak's start, and an active
sample voids them. Runtime warnings belong to one start. A pass in which a rule leaves the
container alone (protected, monitoring, exempt, no limit) voids that rule's warnings: when it
applies again, the owner is warned again with a full lead before any stop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controller.memory import ContainerMemory, KeepAliveSeen, Sample
from controller.plan.context import (
    GO_ON,
    Check,
    Collector,
    Halt,
    PassContext,
    deferral,
    fmt_duration,
    iso,
    seconds,
    span,
)
from controller.plan.idle import IDLE_WARNING_PREFIX, IdleStatus, grace_end, idle_status, keepalive_verdict
from controller.plan.rules.common import (
    exempted,
    files_kept,
    gpu_evidence,
    kept_after_stop,
    kept_evidence,
    shielded,
)
from controller.plan.types import (
    KEPT_AFTER_STOP_S,
    Action,
    ActionKind,
    DeferReason,
    Reason,
    StopParams,
    WarnParams,
)
from controller.plan.values import built
from controller.snapshot import ContainerObs, ContainerState, Domain, KeepAlive, KeepAliveState
from desired_state.effective import LEAD_FRACTION, EffectivePolicy, ExemptFrom

# The enum members the rules use, read once: a member read from its class goes through the enum's
# metaclass, several times the cost of reading a global, and both rules run for every running GPU
# container on every pass.
_RUNNING = ContainerState.RUNNING
_IDLE_TIMEOUT, _MAX_RUNTIME_EXCEEDED = Reason.IDLE_TIMEOUT, Reason.MAX_RUNTIME_EXCEEDED
_EXEMPT_IDLE, _EXEMPT_MAX_RUNTIME = ExemptFrom.IDLE, ExemptFrom.MAX_RUNTIME
_NOT_DUE, _WAITING_FOR_WARNING = DeferReason.NOT_DUE, DeferReason.WAITING_FOR_WARNING
_WARN_OWNER, _STOP_CONTAINER = ActionKind.WARN_OWNER, ActionKind.STOP_CONTAINER
_DONE = Halt.DONE


@functools.lru_cache(maxsize=64)
def stop_params(grace_s: float, *, remove: bool) -> StopParams:
    """A stop's params, shared (they are frozen)."""
    return StopParams(grace_s=grace_s, remove=remove)


@dataclass(frozen=True, slots=True)
class Ladder:
    """One rule's ladder. ``notice`` (the lines after the first of the owner's notice) and
    ``stop_params`` are built from the policy only when a warning or a stop needs them: most
    passes only defer. ``notice`` is handed what the stop keeps (:func:`kept_after_stop`'s text,
    None where the stop removes the container), worked out once for the warning's evidence and its
    notice."""

    stop_reason: Reason
    warn_reason: Reason
    levels_pct: tuple[int, ...]
    key_prefix: str  # warning-key prefix, e.g. "idle"
    what: str  # "idle" / "running"
    notice: Callable[[ContainerObs, EffectivePolicy, ContainerMemory | None, datetime, str | None], list[str]]
    stop_params: Callable[[EffectivePolicy], StopParams]
    removes: Callable[[EffectivePolicy], bool]  # stop_params(policy).remove, read for each warning
    # Read for every running GPU container on every pass: derived once from the fields above.
    fractions: tuple[float, ...] = field(init=False)  # each level as a fraction of the limit
    first_fraction: float = field(init=False)  # the first level's
    warn_value: str = field(init=False)  # warn_reason.value, for the action keys

    def __post_init__(self) -> None:
        object.__setattr__(self, "fractions", tuple(lvl / 100 for lvl in self.levels_pct))
        object.__setattr__(self, "first_fraction", min(self.levels_pct) / 100)
        object.__setattr__(self, "warn_value", self.warn_reason.value)


def lead_s(policy: EffectivePolicy, timeout_s: float) -> float:
    return min(policy.warn_lead_s.value, LEAD_FRACTION * timeout_s)


def _warn_keys(ladder: Ladder, c: ContainerObs, scope: str, level: int) -> tuple[str, str]:
    warning_key = f"{ladder.key_prefix}:{level}:{scope}"
    action_key = f"WarnOwner:{c.id}:{ladder.warn_value}:{level}:{scope}"
    return warning_key, action_key


# Not frozen (nothing changes them): one is built per clock per running GPU container per pass,
# and a frozen dataclass's __init__ costs twice as much.
@dataclass(slots=True)
class LadderClock:
    """One clock to run through the ladder: where it starts, its limit, and the policy that says
    what a stop does and what the owner is told (the ladder's ``notice`` and ``stop_params``).

    ``not_ready`` (message, due) says the stop may not happen yet even past the timeout (the idle
    window is not filled); ``not_before``, when the stop can come no earlier than a known time past
    the timeout (the minimum idle span): the stop time shown and announced is then that time.
    ``evidence`` is the clock's own dict (built for it, shared with nothing yet): the ladder
    completes it in place rather than copying it.
    """

    start: datetime
    scope: str  # what the warnings belong to (a start, an idle streak)
    timeout_s: float
    policy: EffectivePolicy
    evidence: dict[str, Any]
    not_ready: tuple[str, datetime | None] | None = None
    not_before: datetime | None = None


@dataclass(slots=True)  # not frozen: see LadderClock
class _Progress:
    """Where one clock stands on its ladder in this pass."""

    clock: LadderClock
    elapsed_s: float
    lead_s: float
    due_stop: datetime
    first_sent: datetime | None
    top_sent: int
    reached: list[int]
    evidence: dict[str, Any]
    keys: dict[int, tuple[str, str]]  # level -> its (warning key, action key)
    announced: datetime | None  # the latest stop time a delivered warning of this clock announced
    mem: ContainerMemory | None  # the container's memory (the owner's notice reads its keep-alive)

    def stop_at(self, now: datetime) -> datetime:
        """The stop is due at the timeout, never before the lead time after the first warning, and
        never before a time a delivered warning announced: the timeout can shrink after it (high
        demand halves the idle timeout, a policy reload shortens a limit), the owner's notice not."""
        at = max(self.due_stop, (self.first_sent or now) + span(self.lead_s))
        not_before = self.clock.not_before
        if not_before is not None and not_before > at:
            at = not_before  # the minimum idle span ends after the timeout: the stop waits for it
        announced = self.announced
        return announced if announced is not None and announced > at else at


def run_ladder(
    ctx: PassContext,
    out: Collector,
    c: ContainerObs,
    mem: ContainerMemory | None,
    ladder: Ladder,
    clock: LadderClock,
) -> Action | None:
    """Warn and/or return the stop for one clock (see the module docstring).

    The stop is returned, not recorded, so the caller can pick one stop when both rules want one.
    """
    elapsed_s = seconds(ctx.now - clock.start)
    if out.stopped(_before_first_level(ctx, c, ladder, clock, elapsed_s)):
        return None
    pr = _progress(ctx, c, mem, ladder, clock, elapsed_s)
    check = (
        _before_timeout(ctx, out, c, ladder, pr)
        or _window_not_filled(ctx, out, c, ladder, pr)
        or _never_warned(ctx, out, c, ladder, pr)
        or _inside_lead(ctx, out, c, ladder, pr)
    )
    if out.stopped(check):
        return None
    return _stop(ctx, c, ladder, pr)


def _before_first_level(
    ctx: PassContext, c: ContainerObs, ladder: Ladder, clock: LadderClock, elapsed_s: float
) -> Check:
    """The common case on a busy host: nothing to say yet but when the first warning is due.
    (Kept cheap: this runs for every running GPU container on every pass.)"""
    first_level_s = ladder.first_fraction * clock.timeout_s
    if elapsed_s >= first_level_s:
        return GO_ON
    evidence = clock.evidence
    evidence["clock_start"] = iso(clock.start)
    evidence["elapsed_s"] = elapsed_s
    evidence["timeout_s"] = clock.timeout_s
    return deferral(
        ctx.target(c),
        ladder.stop_reason,
        _NOT_DUE,
        f"{c.name}: {ladder.what} for {fmt_duration(elapsed_s)} of {fmt_duration(clock.timeout_s)}",
        due_at=clock.start + span(first_level_s),
        evidence=evidence,
    )


def _progress(
    ctx: PassContext,
    c: ContainerObs,
    mem: ContainerMemory | None,
    ladder: Ladder,
    clock: LadderClock,
    elapsed_s: float,
) -> _Progress:
    sent: dict[int, datetime] = {}
    keys: dict[int, tuple[str, str]] = {}
    announced: datetime | None = None
    told = mem.announced if mem is not None else None
    for level in ladder.levels_pct:
        wk, ak = keys[level] = _warn_keys(ladder, c, clock.scope, level)
        at = ctx.sent_at(mem, wk, ak)
        if at is not None:
            sent[level] = at
        if told:
            # A delivered warning's time, or one rebuilt from the event log after a lost memory
            # (controller.act.salvage) whose warning is sent again: the stop never comes before it.
            said = told.get(wk)
            if said is not None and (announced is None or said > announced):
                announced = said
    timeout_s = clock.timeout_s
    lead = lead_s(clock.policy, timeout_s)
    evidence = clock.evidence  # completed in place, these keys after the clock's own
    evidence["clock_start"] = iso(clock.start)
    evidence["elapsed_s"] = elapsed_s
    evidence["timeout_s"] = timeout_s
    evidence["lead_s"] = lead
    evidence["warnings_sent"] = {str(lvl): iso(at) for lvl, at in sorted(sent.items())} if sent else {}
    return _Progress(
        clock=clock,
        elapsed_s=elapsed_s,
        lead_s=lead,
        due_stop=clock.start + span(timeout_s),
        first_sent=min(sent.values()) if sent else None,
        top_sent=max(sent) if sent else 0,
        reached=[lvl for lvl, f in zip(ladder.levels_pct, ladder.fractions) if elapsed_s >= f * timeout_s],
        evidence=evidence,
        keys=keys,
        announced=announced,
        mem=mem,
    )


def _warn(
    ctx: PassContext, out: Collector, c: ContainerObs, ladder: Ladder, pr: _Progress, level: int
) -> None:
    clock, now = pr.clock, ctx.now
    wk, ak = pr.keys[level]
    stop_at = pr.stop_at(now)
    stop_at_iso = iso(stop_at)
    left = fmt_duration(max(0.0, seconds(stop_at - now)))
    elapsed, limit = fmt_duration(pr.elapsed_s), fmt_duration(clock.timeout_s)
    # The share of the limit actually elapsed at this pass, not the level: a late first warning
    # (the daemon was down, `plan --at`) must not say "2h (90% of 1h)".
    elapsed_pct = int(100 * pr.elapsed_s / clock.timeout_s + 1e-9) if clock.timeout_s > 0 else level
    kept, hold_s = _warned_kept(ladder, c, pr)
    evidence = {**pr.evidence, "level_pct": level, "stop_expected_at": stop_at_iso}
    if hold_s is not None:
        evidence[KEPT_AFTER_STOP_S] = hold_s
    out.act(
        _WARN_OWNER,
        ctx.target(c),
        ladder.warn_reason,
        f"{c.name}: {ladder.what} for {elapsed} ({elapsed_pct}% of {limit}); it will be stopped in about "
        f"{left}",
        due_at=clock.start + span(level / 100 * clock.timeout_s),
        key=ak,
        evidence=evidence,
        params=built(
            WarnParams,
            {
                "warning_key": wk,
                "level_pct": level,
                "stop_expected_at": stop_at_iso,
                "severity": None,
                # ``{stop_at}`` is filled in at delivery, in the server's local time
                # (:func:`controller.act.notify.notice_text`).
                "notice": "\n".join(
                    [
                        f"Your container {c.name} has been {ladder.what} for {elapsed} (limit {limit}). "
                        f"It will be stopped at {{stop_at}} (in about {left}).",
                        *ladder.notice(c, clock.policy, pr.mem, now, kept),
                    ]
                ),
            },
        ),
    )


def _warn_highest_new(
    ctx: PassContext, out: Collector, c: ContainerObs, ladder: Ladder, pr: _Progress
) -> bool:
    """At most one warning per pass: the highest level reached and not yet sent (True: one is)."""
    fresh = [lvl for lvl in pr.reached if lvl > pr.top_sent]
    if fresh:
        _warn(ctx, out, c, ladder, pr, max(fresh))
    return bool(fresh)


def _before_timeout(
    ctx: PassContext, out: Collector, c: ContainerObs, ladder: Ladder, pr: _Progress
) -> Check:
    if ctx.now >= pr.due_stop:
        return GO_ON
    warned_now = _warn_highest_new(ctx, out, c, ladder, pr)
    clock = pr.clock
    upcoming = [
        clock.start + span(f * clock.timeout_s)
        for lvl, f in zip(ladder.levels_pct, ladder.fractions)
        if lvl not in pr.reached
    ]
    # The stop comes at the timeout, but never before the lead time after the first warning (sent
    # late, after a daemon outage, or still to come on a short limit) nor before what a delivered
    # warning announced: the time shown and forecast is the one the daemon will keep.
    first = pr.first_sent or (ctx.now if warned_now else min(upcoming, default=None))
    stop_at = pr.stop_at(first) if first is not None else pr.due_stop
    return deferral(
        ctx.target(c),
        ladder.stop_reason,
        _NOT_DUE,
        f"{c.name}: {ladder.what} for {fmt_duration(pr.elapsed_s)} of {fmt_duration(clock.timeout_s)}",
        due_at=min([*upcoming, stop_at]),
        evidence={**pr.evidence, "stop_due_at": iso(stop_at)},
    )


def _window_not_filled(
    ctx: PassContext, out: Collector, c: ContainerObs, ladder: Ladder, pr: _Progress
) -> Check:
    if pr.clock.not_ready is None:
        return GO_ON
    _warn_highest_new(ctx, out, c, ladder, pr)
    message, due = pr.clock.not_ready
    return deferral(
        ctx.target(c),
        ladder.stop_reason,
        DeferReason.WAITING_FOR_WINDOW,
        message,
        due_at=due,
        evidence=pr.evidence,
    )


def _never_warned(ctx: PassContext, out: Collector, c: ContainerObs, ladder: Ladder, pr: _Progress) -> Check:
    """Due, but the owner has not been told: tell them now and give them the lead time."""
    if pr.first_sent is not None:
        return GO_ON
    _warn(ctx, out, c, ladder, pr, max(ladder.levels_pct))
    lead = pr.lead_s
    return deferral(
        ctx.target(c),
        ladder.stop_reason,
        _WAITING_FOR_WARNING,
        f"{c.name}: stop is due but no warning was delivered yet; warning now, stop in {fmt_duration(lead)}",
        due_at=ctx.now + span(lead),
        evidence=pr.evidence,
    )


def _inside_lead(ctx: PassContext, out: Collector, c: ContainerObs, ladder: Ladder, pr: _Progress) -> Check:
    stop_at = pr.stop_at(ctx.now)
    if pr.first_sent is None or ctx.now >= stop_at:
        return GO_ON
    _warn_highest_new(ctx, out, c, ladder, pr)
    if pr.announced is not None and pr.announced >= stop_at:
        why = f"its warning announced the stop for {iso(pr.announced)}"
    else:
        why = f"stop after the lead time of {fmt_duration(pr.lead_s)}"
    return deferral(
        ctx.target(c),
        ladder.stop_reason,
        _WAITING_FOR_WARNING,
        f"{c.name}: first warned at {pr.first_sent.isoformat()}; {why}",
        due_at=stop_at,
        evidence=pr.evidence,
    )


def _stop(ctx: PassContext, c: ContainerObs, ladder: Ladder, pr: _Progress) -> Action:
    stop_at = pr.stop_at(ctx.now)
    first_sent = pr.first_sent or stop_at  # always set here: _never_warned went on
    return Action.model_construct(
        kind=_STOP_CONTAINER,
        target=ctx.target(c),
        reason=ladder.stop_reason,
        message=f"stop {c.name} (owner {c.owner}): {ladder.what} for {fmt_duration(pr.elapsed_s)}, "
        f"limit {fmt_duration(pr.clock.timeout_s)}; first warned {first_sent.isoformat()}",
        # The GPUs it holds: the executor releases them (gpu.release) once the container is removed.
        evidence={
            **pr.evidence,
            **gpu_evidence(ctx, c),
            "first_warning_at": iso(first_sent),
            "stop_due_at": iso(stop_at),
            # What the owner's notice after the stop says is kept (the holds remove it later, never
            # before the hold it names).
            **kept_evidence(c, pr.clock.policy, _promised(pr.mem)),
        },
        due_at=stop_at,
        key=f"StopContainer:{c.id}:{iso(c.started_at)}:{ladder.stop_reason.value}",
        params=ladder.stop_params(pr.clock.policy),
    )


def _promised(mem: ContainerMemory | None) -> float | None:
    """The longest hold after a stop that a notice to the owner named for this start (None: none)."""
    return mem.promised_hold_s if mem is not None else None


def _warned_kept(ladder: Ladder, c: ContainerObs, pr: _Progress) -> tuple[str | None, float | None]:
    """What the stop a warning announces keeps, for its notice (:func:`kept_after_stop`'s text;
    None where that stop removes the container, ``removeAfterIdleStop``), and the hold after the
    stop its notice names, for the warning's evidence (:data:`KEPT_AFTER_STOP_S`), which the
    executor records for this start when it sends it: None where the stop removes the container or
    the notice names no hold."""
    policy = pr.clock.policy
    if ladder.removes(policy):
        return None, None
    return kept_after_stop(c, policy, _promised(pr.mem))


def _idle_notice(
    c: ContainerObs, policy: EffectivePolicy, mem: ContainerMemory | None, now: datetime, stopped: str | None
) -> list[str]:
    """What the owner of an idle container can do, what a stop keeps and loses, where to see more
    (``stopped``: what of the stopped container is kept, None where the stop removes it)."""
    if stopped is None and c.workspace_mounted is False:
        kept = "nothing: it has no /workspace mount, so its files go with it"
        lost = "the container itself is removed after the stop, with its processes and all its files"
    elif stopped is None:
        kept = "your files under /workspace"
        lost = (
            "the container itself is removed after the stop, with its processes and every file "
            "outside /workspace"
        )
    else:
        kept = f"{files_kept(stopped, c.workspace_mounted)}; start it again to continue"
        lost = "its running processes"
    return [
        "Why: GPU, CPU and network have all stayed below the idle thresholds since then.",
        _keep_it(
            policy,
            mem.keepalive if mem is not None else None,
            now,
            c.signals.keepalive if c.signals is not None else None,
        ),
        f"What is kept: {kept}. What is lost: {lost}.",
        f"More: ds01ctl describe container {c.name}",
    ]


def _keep_it(
    policy: EffectivePolicy, seen: KeepAliveSeen | None, now: datetime, ka: KeepAlive | None = None
) -> str:
    """How the owner keeps an idle container. A keep-alive file counts for at most its cap after it
    was first seen in this idle streak (touching it again, or replacing it, does not renew that):
    once the cap is over, telling the owner to touch it would be untrue. So it is for a keep-alive
    that is a link or not a regular file (``ka``, as read now): never honoured, and `touch` follows
    a link and leaves it one."""
    cap = policy.keepalive_max_age_s.value
    path = policy.keepalive_path.value
    if ka is not None and ka.state in _IGNORED_KEEPALIVE:
        return (
            f"To keep it: use it (GPU, CPU or network), or make {path} a regular file of its own, with "
            f"no link on its path: the one there now is ignored ({ka.detail or ka.state.value}), and "
            "touching it changes nothing."
        )
    if cap is None:
        return f"To keep it: run `touch {path}` inside the container."
    if seen is None:
        return (
            f"To keep it: run `touch {path}` inside the container; a touch keeps it for up to "
            f"{fmt_duration(cap)}, and never beyond {fmt_duration(cap)} after the file was first seen while "
            "the container is idle: after that only using it (GPU, CPU or network) keeps it."
        )
    seen_s = seconds(now - seen.first_seen_at)
    if seen_s >= cap:
        return (
            f"To keep it: use it (GPU, CPU or network). The keep-alive file {path} no longer keeps it: "
            f"it was first seen {fmt_duration(seen_s)} ago while the container was idle, and a touch keeps "
            f"it for at most {fmt_duration(cap)} after that."
        )
    return (
        f"To keep it: run `touch {path}` inside the container; a touch now keeps it for at most "
        f"{fmt_duration(cap - seen_s)} more (the file was first seen {fmt_duration(seen_s)} ago while the "
        f"container was idle, and counts for {fmt_duration(cap)} from then): after that only using it "
        "(GPU, CPU or network) keeps it."
    )


_IGNORED_KEEPALIVE = frozenset({KeepAliveState.LINK, KeepAliveState.NOT_REGULAR})


def _runtime_notice(
    c: ContainerObs, policy: EffectivePolicy, mem: ContainerMemory | None, _now: datetime, stopped: str | None
) -> list[str]:
    """What the owner of a container near its maximum runtime keeps and loses, where to see more
    (``stopped``: what of the stopped container is kept; a runtime stop never removes it)."""
    if stopped is None:  # not reached: a runtime stop keeps the container
        stopped = kept_after_stop(c, policy, _promised(mem))[0]
    return [
        "Why: the maximum runtime since its last start is reached; the keep-alive file does not extend it.",
        f"What is kept: {files_kept(stopped, c.workspace_mounted)}; "
        "start it again to continue. What is lost: its running processes; save your work before the stop.",
        f"More: ds01ctl describe container {c.name}",
    ]


def _idle_stop_params(policy: EffectivePolicy) -> StopParams:
    return stop_params(policy.sigterm_grace_s.value, remove=policy.remove_after_idle_stop.value)


def _runtime_stop_params(policy: EffectivePolicy) -> StopParams:
    return stop_params(policy.sigterm_grace_s.value, remove=False)


def _idle_removes(policy: EffectivePolicy) -> bool:
    return bool(policy.remove_after_idle_stop.value)


def _runtime_removes(_policy: EffectivePolicy) -> bool:
    return False


IDLE_LADDER = Ladder(
    Reason.IDLE_TIMEOUT,
    Reason.IDLE_WARNING,
    (80, 95),
    IDLE_WARNING_PREFIX.rstrip(":"),
    "idle",
    notice=_idle_notice,
    stop_params=_idle_stop_params,
    removes=_idle_removes,
)
RUNTIME_LADDER = Ladder(
    Reason.MAX_RUNTIME_EXCEEDED,
    Reason.MAX_RUNTIME_WARNING,
    (75, 90),
    "runtime",
    "running",
    notice=_runtime_notice,
    stop_params=_runtime_stop_params,
    removes=_runtime_removes,
)


def _clock_applies(
    ctx: PassContext,
    out: Collector,
    c: ContainerObs,
    policy: EffectivePolicy,
    ladder: Ladder,
    limit_s: float | None,
    exempt_from: ExemptFrom,
    *,
    exemption_shields: bool,
) -> Check:
    """The prologue shared by rules 3 and 4: a running GPU container with a limit, not shielded,
    whose start is known. ``exemption_shields``: an active exemption ends the rule here (the idle
    rule still sends its FYI notice first, so it checks the exemption itself later). A running GPU
    container the rule leaves alone loses the warnings its ladder delivered (:func:`_void_warnings`)."""
    # (``not c.has_gpu`` written out: a property call costs several times its test.)
    if c.state != _RUNNING or not (c.gpu_refs or c.all_gpus):
        return _DONE
    rule = ladder.stop_reason
    if limit_s is None:
        # Devcontainers and "never" policies: no enforcement. A policy that waived the limit
        # because of an exemption (without keeping the value) still says why.
        exempted(ctx, out, c, policy, rule, exempt_from)
        _void_warnings(ctx, c, ladder)
        return _DONE
    if shielded(ctx, out, c, policy, rule, exempt_from if exemption_shields else None):
        _void_warnings(ctx, c, ladder)
        return _DONE
    if c.started_at is None:
        return deferral(
            ctx.target(c), rule, DeferReason.UNKNOWN_SIGNAL, f"{c.name} is running but StartedAt is unknown"
        )
    return GO_ON


def _void_warnings(ctx: PassContext, c: ContainerObs, ladder: Ladder) -> None:
    """The rule leaves ``c`` alone in this pass (protected, exempt, no limit): the warnings its
    ladder delivered are void, and the stop times they announced with them. When the rule applies
    again (the exemption expired, a reload lifted the protection or set a limit again) the owner,
    told meanwhile that nothing is stopped or told nothing, is warned again with a full lead before
    any stop, never stopped at once on a warning from before."""
    mem = ctx.cmem.get(c.id)
    if mem is None or not mem.warnings:
        return  # (most containers hold no warning)
    prefix = f"{ladder.key_prefix}:"
    void = [k for k in mem.warnings if k.startswith(prefix)]
    if not void:
        return
    keep = {k: at for k, at in mem.warnings.items() if k not in void}
    told = {k: at for k, at in mem.announced.items() if k in keep}
    ctx.cmem[c.id] = mem.model_copy(update={"warnings": keep, "announced": told})
    # Each warning's action key (see _warn_keys): the done record would count it as delivered.
    ctx.forget_done.update(f"WarnOwner:{c.id}:{ladder.warn_value}:{k[len(prefix) :]}" for k in void)


def idle_stop(ctx: PassContext, out: Collector, c: ContainerObs, policy: EffectivePolicy) -> Action | None:
    """Rule 3: the idle stop of a running GPU container (returns the stop, if due)."""
    base_timeout_s = policy.idle_timeout_s.value
    applies = _clock_applies(
        ctx, out, c, policy, IDLE_LADDER, base_timeout_s, _EXEMPT_IDLE, exemption_shields=False
    )
    if out.stopped(applies) or base_timeout_s is None or c.started_at is None:
        return None
    mem = ctx.cmem.get(c.id)
    if out.stopped(_in_grace(ctx, c, policy, mem, c.started_at) or _nvml_down(ctx, c)):
        return None
    if mem is None:  # pragma: no cover - the planner observes every container first
        return None
    if _active_now(mem, c):
        return None  # as _reading_undecided would decide, without the streak's status
    status = idle_status(mem, c)
    current, idle_since = status.current, status.idle_since
    if out.stopped(_reading_undecided(ctx, c, mem, status)) or current is None or idle_since is None:
        return None  # (the check said why)
    facts = _idle_facts(ctx, policy, mem, status, current, idle_since, base_timeout_s)
    if out.stopped(
        _exempt_notice(ctx, out, c, policy, mem, facts) or _keepalive_holds(ctx, c, policy, mem, facts)
    ):
        return None
    clock = LadderClock(
        start=idle_since,
        scope=_idle_scope(c, mem, idle_since, policy.remove_after_idle_stop.value),
        timeout_s=facts.timeout_s,
        policy=policy,
        evidence=facts.evidence,
        not_ready=_idle_not_ready(c, policy, facts),
        not_before=_span_ends(policy, facts),
    )
    return run_ladder(ctx, out, c, mem, IDLE_LADDER, clock)


def _span_ends(policy: EffectivePolicy, f: _IdleFacts) -> datetime | None:
    """When the minimum idle span ends, if it ends after the idle timeout (it then decides)."""
    min_duration_s = policy.idle_min_duration_s.value
    return f.idle_since + timedelta(seconds=min_duration_s) if min_duration_s > f.timeout_s else None


def _in_grace(
    ctx: PassContext,
    c: ContainerObs,
    policy: EffectivePolicy,
    mem: ContainerMemory | None,
    started_at: datetime,
) -> Check:
    grace_over_at = grace_end(mem, started_at, policy.grace_period_s.value)
    if ctx.now >= grace_over_at:
        return GO_ON
    extension_s = seconds(grace_over_at - started_at) - policy.grace_period_s.value
    return deferral(
        ctx.target(c),
        Reason.IDLE_TIMEOUT,
        DeferReason.GRACE_PERIOD,
        f"{c.name} started {fmt_duration(seconds(ctx.now - started_at))} ago; idle checks begin after "
        f"the grace period of {fmt_duration(policy.grace_period_s.value)}"
        + (f" (+{fmt_duration(extension_s)} not observed)" if extension_s > 0 else ""),
        due_at=grace_over_at,
        evidence={
            "started_at": iso(started_at),
            "grace_period_s": policy.grace_period_s.value,
            "grace_extension_s": extension_s,
        },
    )


def _nvml_down(ctx: PassContext, c: ContainerObs) -> Check:
    if ctx.nvml_ok:
        return GO_ON
    return deferral(
        ctx.target(c),
        Reason.IDLE_TIMEOUT,
        DeferReason.DOMAIN_UNAVAILABLE,
        f"{c.name}: NVML is unavailable, GPU activity cannot be seen; no GPU container is idle-stopped",
        evidence={"nvml_error": ctx.snapshot.domain_error(Domain.NVML)},
    )


def _active_now(mem: ContainerMemory, c: ContainerObs) -> bool:
    """This pass's reading is active (the common case on a busy host): nothing is pending.

    The same test as :func:`idle_status`'s current sample and :func:`_reading_undecided`'s
    ``current.idle is False``, read straight from the last sample."""
    samples, signals = mem.samples, c.signals
    return (
        bool(samples)
        and signals is not None
        and samples[-1].at == signals.read_at
        and samples[-1].idle is False
    )


def _reading_undecided(ctx: PassContext, c: ContainerObs, mem: ContainerMemory, status: IdleStatus) -> Check:
    """The latest reading must be idle and inside an idle streak; unknown is not idle."""
    rule, target, current = _IDLE_TIMEOUT, ctx.target(c), status.current
    if current is None:
        return deferral(
            target, rule, DeferReason.UNKNOWN_SIGNAL, f"{c.name}: no activity reading in this pass"
        )
    if current.idle is False:
        return _DONE  # active: nothing pending
    if current.idle is None and len(mem.samples) == 1:
        return deferral(
            target,
            rule,
            DeferReason.WAITING_FOR_WINDOW,
            f"{c.name}: first reading of this start is a baseline; rates need a second one",
            due_at=ctx.now + timedelta(seconds=status.interval_s) if status.interval_s else None,
            evidence={"sample": current.detail},
        )
    if current.idle is None:
        return deferral(
            target,
            rule,
            DeferReason.UNKNOWN_SIGNAL,
            f"{c.name}: activity undecidable ({current.detail}); unknown is not idle",
            evidence={"sample": current.detail},
        )
    if status.idle_since is None:
        return deferral(
            target,
            rule,
            DeferReason.WAITING_FOR_WINDOW,
            f"{c.name}: idle, but the streak starts with the first idle reading after the grace period",
            evidence={"sample": current.detail},
        )
    return GO_ON


@dataclass(slots=True)
class _IdleFacts:
    """What the idle rule measured in this pass (the evidence every later step carries)."""

    idle_since: datetime
    at: datetime  # the current reading
    idle_s: float
    timeout_s: float
    window_ok: bool
    duration_ok: bool
    streak_samples: int
    interval_s: float | None
    evidence: dict[str, Any]

    @property
    def stop_ready(self) -> bool:
        return self.idle_s >= self.timeout_s and self.window_ok and self.duration_ok


def _idle_facts(
    ctx: PassContext,
    policy: EffectivePolicy,
    mem: ContainerMemory,
    status: IdleStatus,
    current: Sample,
    idle_since: datetime,
    base_timeout_s: float,
) -> _IdleFacts:
    demand = ctx.demand_fraction
    high_demand = demand is not None and demand >= policy.high_demand_threshold.value
    timeout_s = base_timeout_s * (policy.high_demand_idle_reduction.value if high_demand else 1.0)
    idle_s = seconds(ctx.now - idle_since)
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
    return _IdleFacts(
        idle_since=idle_since,
        at=current.at,
        idle_s=idle_s,
        timeout_s=timeout_s,
        window_ok=status.streak_samples >= window,
        duration_ok=idle_s >= min_duration_s,
        streak_samples=status.streak_samples,
        interval_s=status.interval_s,
        evidence=evidence,
    )


def _exempt_notice(
    ctx: PassContext,
    out: Collector,
    c: ContainerObs,
    policy: EffectivePolicy,
    mem: ContainerMemory,
    f: _IdleFacts,
) -> Check:
    """An exempt owner gets one FYI notice per start when the stop would be due, never a stop (the
    idle warnings delivered before the exemption are void: :func:`_void_warnings`)."""
    exemption = policy.exemption(_EXEMPT_IDLE)
    if exemption is None or (exemption.expires_at is not None and exemption.expires_at <= ctx.now):
        return GO_ON
    started_iso = iso(c.started_at)
    wk, ak = f"idle-exempt:{started_iso}", f"WarnOwner:{c.id}:IdleExemptNotice:{started_iso}"
    if f.stop_ready and ctx.sent_at(mem, wk, ak) is None:
        out.act(
            ActionKind.WARN_OWNER,
            ctx.target(c),
            Reason.IDLE_EXEMPT_NOTICE,
            f"{c.name}: idle for {fmt_duration(f.idle_s)} (limit {fmt_duration(f.timeout_s)}); not "
            f"stopped because {c.owner} is exempt ({exemption.name}); please release the GPU if "
            f"you are done",
            due_at=ctx.now,
            key=ak,
            evidence={**f.evidence, "exemption": exemption.name},
            params=WarnParams(warning_key=wk),
        )
    exempted(ctx, out, c, policy, Reason.IDLE_TIMEOUT, ExemptFrom.IDLE)
    _void_warnings(ctx, c, IDLE_LADDER)
    return Halt.DONE


def _keepalive_holds(
    ctx: PassContext, c: ContainerObs, policy: EffectivePolicy, mem: ContainerMemory, f: _IdleFacts
) -> Check:
    """A keep-alive file honoured, or one that could not be read, holds the stop back."""
    rule, target = _IDLE_TIMEOUT, ctx.target(c)
    ka = c.signals.keepalive if c.signals is not None else None
    if ka is None or ka.state == KeepAliveState.UNKNOWN:
        # Unknown is not absent: an unreadable keep-alive (EACCES on a root-squashed NFS workspace,
        # the container root gone) may be a fresh one. No warning and no stop until it can be read.
        detail = (ka.detail if ka is not None else None) or "not read"
        return deferral(
            target,
            rule,
            DeferReason.UNKNOWN_SIGNAL,
            f"{c.name}: idle for {fmt_duration(f.idle_s)} but its keep-alive file "
            f"({policy.keepalive_path.value}) could not be read ({detail}); unknown is not absent",
            evidence={**f.evidence, "keepalive": f"unknown: {detail}"},
        )
    seen = mem.keepalive
    keep = keepalive_verdict(ka, seen, policy.keepalive_max_age_s.value, ctx.now)
    f.evidence["keepalive"] = keep.detail
    if not keep.honoured:
        return GO_ON
    if seen is not None and ka.mtime is not None and seen.honoured_mtime != ka.mtime:
        # The owner answered (a touch): the warnings of before start over (see _idle_scope).
        ctx.cmem[c.id] = mem.model_copy(
            update={"keepalive": seen.model_copy(update={"honoured_mtime": ka.mtime})}
        )
    return deferral(
        target,
        rule,
        DeferReason.KEEP_ALIVE,
        f"{c.name}: idle for {fmt_duration(f.idle_s)} but its keep-alive file is honoured "
        f"({policy.keepalive_path.value})",
        due_at=keep.until,
        evidence={
            **f.evidence,
            "keepalive_mtime": iso(ka.mtime),
            "keepalive_first_seen_at": iso(mem.keepalive.first_seen_at if mem.keepalive else None),
            "keepalive_max_age_s": policy.keepalive_max_age_s.value,
        },
    )


def _idle_not_ready(
    c: ContainerObs, policy: EffectivePolicy, f: _IdleFacts
) -> tuple[str, datetime | None] | None:
    """Past the timeout the stop still waits for a full idle window and the minimum idle span."""
    if f.window_ok and f.duration_ok:
        return None
    window = policy.idle_detection_window.value
    min_duration_s = policy.idle_min_duration_s.value
    dues: list[datetime] = []
    waits: list[str] = []
    if not f.window_ok:
        if f.interval_s:
            dues.append(f.at + timedelta(seconds=f.interval_s * (window - f.streak_samples)))
        waits.append(
            f"only {f.streak_samples}/{window} idle samples (idleDetectionWindow from "
            f"{policy.idle_detection_window.source})"
        )
    if not f.duration_ok:
        dues.append(f.idle_since + timedelta(seconds=min_duration_s))
        waits.append(
            f"the minimum idle span idleMinDuration {fmt_duration(min_duration_s)} from "
            f"{policy.idle_min_duration_s.source} decides, not the idle timeout "
            f"{fmt_duration(f.timeout_s)}"
        )
    return f"{c.name}: idle for {fmt_duration(f.idle_s)} but {'; '.join(waits)}", max(dues) if dues else None


def _idle_scope(c: ContainerObs, mem: ContainerMemory, idle_since: datetime, removes: bool) -> str:
    """Warnings belong to one idle streak. A keep-alive seen during it, and each touch of it that
    held the stop off, starts the warnings over once it stops being honoured: the owner who
    answered a warning with a keep-alive is warned again (with a full lead time) before the stop,
    not stopped on the strength of the old warning (a file that existed before the warning, long
    untouched, was seen before it: a touch then changed nothing of the scope).

    They also belong to what the stop does (``removes``: ``removeAfterIdleStop``), which each
    warning tells the owner: a reload that turns the removal on after a warning that said the
    container is kept (or off, after one that said it is removed) starts them over, so the stop
    never does what no warning said (a container removed, its files outside /workspace lost, after
    its owner was told it would be kept)."""
    scope = f"{iso(c.started_at)}:{iso(idle_since)}"
    seen = mem.keepalive
    if seen is not None:
        scope += f":ka:{iso(seen.first_seen_at)}"
        if seen.honoured_mtime is not None:
            scope += f":{iso(seen.honoured_mtime)}"
    # (Removal is the built-in default, DS01's: its keys are the ones written before this suffix.)
    return scope if removes else f"{scope}:kept"


def runtime_stop(ctx: PassContext, out: Collector, c: ContainerObs, policy: EffectivePolicy) -> Action | None:
    """Rule 4: max runtime since the last start (returns the stop, if due)."""
    timeout_s = policy.max_runtime_s.value
    applies = _clock_applies(
        ctx, out, c, policy, RUNTIME_LADDER, timeout_s, _EXEMPT_MAX_RUNTIME, exemption_shields=True
    )
    if out.stopped(applies) or timeout_s is None or c.started_at is None:
        return None
    mem = ctx.cmem.get(c.id)
    # Forward wall-clock steps during this start are not runtime (controller.plan.clock): the clock
    # starts that much later on the wall clock. Real time while the daemon was down still counts.
    discount_s = mem.runtime_discount_s if mem is not None and mem.started_at == c.started_at else 0.0
    start = c.started_at + timedelta(seconds=discount_s) if discount_s else c.started_at
    # The boot-clock runtime (/proc) also holds across a step no pass saw: the smaller runtime wins
    # (a stop only ever later); real time while the daemon was down still advances the boot clock.
    # It was read at the observation: anchor it there, so a plan evaluated later (`plan --at`)
    # still ages the container.
    if c.running_for_s is not None:
        start = max(start, ctx.snapshot.observed_at - timedelta(seconds=c.running_for_s))
    started_iso = iso(c.started_at)
    clock = LadderClock(
        start=start,
        scope=started_iso or "",
        timeout_s=timeout_s,
        policy=policy,
        evidence={
            "started_at": started_iso,
            "timeout_source": policy.max_runtime_s.source,
            "clock_step_discount_s": discount_s,
            "running_for_s": c.running_for_s,
        },
    )
    return run_ladder(ctx, out, c, mem, RUNTIME_LADDER, clock)
