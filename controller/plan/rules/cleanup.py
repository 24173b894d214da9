"""Rules 1 and 2: containers that were created but never started, and stopped containers.

* Created, never started: removed once older than ``created_container_timeout_s`` measured from
  ``Created``. DS01's release-stale path removed such containers at once; the timeout governs here
  (a ``docker create`` followed later by ``docker start`` is a legitimate pattern).
* Exited or dead: removed once ``FinishedAt`` is older than the GPU hold (containers holding a GPU)
  or the container hold, whichever comes first. ``None`` holds mean never. Paused and restarting
  containers are not stopped containers. A missing ``FinishedAt`` makes the age unknown: skipped.

Both are cleanup: protected and monitoring containers and cleanup exemptions shield them.
"""

from __future__ import annotations

from datetime import timedelta

from controller.plan.context import Collector, PassContext, fmt_duration, iso, seconds
from controller.plan.rules.common import gpu_evidence, shielded
from controller.plan.types import ActionKind, DeferReason, Reason
from controller.snapshot import ContainerObs, ContainerState
from desired_state.effective import EffectivePolicy, ExemptFrom

STOPPED_STATES = frozenset({ContainerState.EXITED, ContainerState.DEAD})
REMOVE_PARAMS = {"force": False}


def created_never_started(ctx: PassContext, out: Collector, c: ContainerObs, policy: EffectivePolicy) -> None:
    timeout_s = policy.created_container_timeout_s.value
    if c.state != ContainerState.CREATED or timeout_s is None:
        return
    rule = Reason.CREATED_NEVER_STARTED
    if shielded(ctx, out, c, policy, rule, ExemptFrom.CLEANUP):
        return
    since, basis = c.created_at, "Created"
    mem = ctx.cmem.get(c.id)
    if since > ctx.now and mem is not None and mem.first_seen_at is not None:
        # Created lies in the future (clock skew or a forged value): age from our first sighting.
        since, basis = mem.first_seen_at, "first sighting (Created is in the future)"
    due = since + timedelta(seconds=timeout_s)
    age_s = seconds(ctx.now - since)
    evidence = {
        "created_at": iso(c.created_at),
        "age_basis": basis,
        "age_s": age_s,
        "timeout_s": timeout_s,
        "timeout_source": policy.created_container_timeout_s.source,
        **gpu_evidence(ctx, c),
    }
    target = ctx.target(c)
    if ctx.now < due:
        out.defer(
            target,
            rule,
            DeferReason.NOT_DUE,
            f"{c.name} was created {fmt_duration(age_s)} ago and never started; "
            f"removed after {fmt_duration(timeout_s)}",
            due_at=due,
            evidence=evidence,
        )
        return
    holds = f", releasing GPU(s) {', '.join(ctx.physical_gpus(c))}" if c.has_gpu else ""
    out.act(
        ActionKind.REMOVE_CONTAINER,
        target,
        rule,
        f"remove {c.name} (owner {c.owner}): created {fmt_duration(age_s)} ago and never started "
        f"(timeout {fmt_duration(timeout_s)}){holds}",
        due_at=due,
        key=f"RemoveContainer:{c.id}:CreatedNeverStarted",
        evidence=evidence,
        params=dict(REMOVE_PARAMS),
    )


def stopped_hold(ctx: PassContext, out: Collector, c: ContainerObs, policy: EffectivePolicy) -> None:
    if c.state not in STOPPED_STATES:
        return
    gpu_hold_s = policy.gpu_hold_after_stop_s.value if c.has_gpu else None
    hold_s = policy.container_hold_after_stop_s.value
    # (hold, tie-break, reason): the GPU hold wins a tie because it frees the scarce resource.
    holds: list[tuple[float, int, Reason]] = []
    if gpu_hold_s is not None:
        holds.append((gpu_hold_s, 0, Reason.GPU_HOLD_EXPIRED))
    if hold_s is not None:
        holds.append((hold_s, 1, Reason.STOPPED_HOLD_EXPIRED))
    if not holds:
        return  # both holds are "never"
    hold, _, rule = min(holds)
    if shielded(ctx, out, c, policy, rule, ExemptFrom.CLEANUP):
        return
    target = ctx.target(c)
    if c.finished_at is None:
        out.defer(
            target,
            rule,
            DeferReason.UNKNOWN_SIGNAL,
            f"{c.name} is {c.state.value} but its FinishedAt is unknown: its hold cannot be measured",
            evidence={"state": c.state.value},
        )
        return
    due = c.finished_at + timedelta(seconds=hold)
    stopped_s = seconds(ctx.now - c.finished_at)
    evidence = {
        "state": c.state.value,
        "finished_at": iso(c.finished_at),
        "stopped_for_s": stopped_s,
        "hold_s": hold,
        "gpu_hold_after_stop_s": gpu_hold_s,
        "gpu_hold_source": policy.gpu_hold_after_stop_s.source,
        "container_hold_after_stop_s": hold_s,
        "container_hold_source": policy.container_hold_after_stop_s.source,
        "exit_code": c.exit_code,
        **gpu_evidence(ctx, c),
    }
    what = "GPU hold" if rule == Reason.GPU_HOLD_EXPIRED else "hold"
    if ctx.now < due:
        out.defer(
            target,
            rule,
            DeferReason.NOT_DUE,
            f"{c.name} stopped {fmt_duration(stopped_s)} ago; removed when its {what} of "
            f"{fmt_duration(hold)} ends",
            due_at=due,
            evidence=evidence,
        )
        return
    out.act(
        ActionKind.REMOVE_CONTAINER,
        target,
        rule,
        f"remove {c.name} (owner {c.owner}): {c.state.value} for {fmt_duration(stopped_s)}, "
        f"past its {what} of {fmt_duration(hold)}",
        due_at=due,
        key=f"RemoveContainer:{c.id}:{iso(c.finished_at)}:{rule.value}",
        evidence=evidence,
        params=dict(REMOVE_PARAMS),
    )
