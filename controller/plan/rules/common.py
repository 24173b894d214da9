"""Shared pieces of the container rules: the never-act-on guards and GPU evidence."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from controller.plan.context import Collector, PassContext, fmt_duration, iso
from controller.plan.types import KEPT_AFTER_STOP_S, DeferReason, Reason
from controller.snapshot import ContainerObs
from desired_state.effective import EffectivePolicy, ExemptFrom


def after(ctx: PassContext, delay_s: float) -> Any:
    return ctx.now + timedelta(seconds=delay_s)


def kept_after_stop(
    c: ContainerObs, policy: EffectivePolicy, promised_s: float | None = None
) -> tuple[str, float | None]:
    """What of a stopped container is kept, for the owner's notices ("What is kept: your files
    under /workspace and ..."), and the hold that text names in seconds (None: it names none). It
    is removed once the shorter of its holds has passed (the GPU hold for one holding a GPU), unless
    a cleanup exemption holds it.

    ``promised_s``: the longest hold a notice to its owner already named for this start
    (``ContainerMemory.promised_hold_s``, as the executor recorded it): the hold rule keeps that start at
    least that long, so where it is longer than the policy's hold now (a reload shortened it since
    the warning), it is the hold named again.

    The text and the number come from here together: the number is what the executor records as
    the notice's promise (``ContainerMemory.promised_hold_s``), which the hold rule keeps."""
    if policy.exemption(ExemptFrom.CLEANUP) is not None:
        if promised_s is None:
            return "the stopped container while your cleanup exemption lasts", None
        return (
            "the stopped container while your cleanup exemption lasts, and at least "
            f"{fmt_duration(promised_s)} after the stop",
            promised_s,
        )
    gpu_hold = policy.gpu_hold_after_stop_s.value if c.has_gpu else None
    holds = [h for h in (gpu_hold, policy.container_hold_after_stop_s.value) if h is not None]
    if not holds:
        return "the stopped container", promised_s
    hold = min(holds)
    if promised_s is not None and promised_s > hold:
        hold = promised_s
    return f"the stopped container for {fmt_duration(hold)} after the stop (then it is removed)", hold


def files_kept(kept: str, workspace_mounted: bool | None) -> str:
    """What an owner's notice says is kept by a stop that keeps the container (``kept``:
    :func:`kept_after_stop`'s text): the files under ``/workspace`` and the container, or, for a
    container with no ``/workspace`` mount (``workspace_mounted`` False), the container with all its
    files, which go when it is removed. Not known (None): the usual mount is assumed, as DS01
    creates every container with one."""
    if workspace_mounted is False:
        return f"{kept}, with all its files (it has no /workspace mount: they go when it is removed)"
    return f"your files under /workspace and {kept}"


def kept_evidence(
    c: ContainerObs, policy: EffectivePolicy, promised_s: float | None = None
) -> dict[str, Any]:
    """A StopContainer's evidence of what its owner's notice says is kept: the text
    (``kept_after_stop``) and, where it names a hold, that hold (:data:`KEPT_AFTER_STOP_S`);
    ``promised_s`` as for :func:`kept_after_stop`."""
    kept, hold_s = kept_after_stop(c, policy, promised_s)
    if hold_s is None:
        return {"kept_after_stop": kept}
    return {"kept_after_stop": kept, KEPT_AFTER_STOP_S: hold_s}


def gpu_evidence(ctx: PassContext, c: ContainerObs) -> dict[str, Any]:
    refs = c.gpu_refs
    if len(refs) > 1:  # (most containers hold one GPU or none: nothing to sort)
        refs = tuple(sorted(refs, key=lambda r: (r.raw, r.source.value, r.uuid or "")))
    return {
        "gpus": [{"raw": r.raw, "uuid": r.uuid, "source": r.source.value, "mig": r.is_mig} for r in refs],
        "all_gpus": c.all_gpus,
        "physical_gpus": ctx.physical_gpus(c),
    }


def shielded(
    ctx: PassContext,
    out: Collector,
    c: ContainerObs,
    policy: EffectivePolicy,
    rule: Reason,
    exempt_from: ExemptFrom | None,
) -> bool:
    """True (and the deferral recorded) when ``policy`` says this rule must leave ``c`` alone.

    Protected and monitoring containers are shielded from every container rule; an active
    exemption only from the rule family it names, until it expires.
    """
    if policy.protected.value:
        out.defer(
            ctx.target(c),
            rule,
            DeferReason.PROTECTED,
            f"{c.name} is protected ({policy.protected.source}): never stopped or removed",
            evidence={"protected_source": policy.protected.source},
        )
        return True
    if policy.monitoring.value:
        out.defer(
            ctx.target(c),
            rule,
            DeferReason.MONITORING,
            f"{c.name} belongs to the monitoring stack ({policy.monitoring.source}): skipped",
            evidence={"monitoring_source": policy.monitoring.source},
        )
        return True
    # (Most policies carry no exemption: the lookup is skipped for them.)
    return (
        exempt_from is not None
        and bool(policy.exemptions)
        and exempted(ctx, out, c, policy, rule, exempt_from)
    )


def exempted(
    ctx: PassContext,
    out: Collector,
    c: ContainerObs,
    policy: EffectivePolicy,
    rule: Reason,
    exempt_from: ExemptFrom,
) -> bool:
    """True (and the deferral recorded) when an unexpired exemption of this kind covers ``c``."""
    ex = policy.exemption(exempt_from)
    if ex is None or (ex.expires_at is not None and ex.expires_at <= ctx.now):
        return False
    until = f"until {ex.expires_at.isoformat()}" if ex.expires_at else "permanently"
    out.defer(
        ctx.target(c),
        rule,
        DeferReason.EXEMPT,
        f"{c.name}: owner {c.owner} is exempt from {exempt_from.value} {until} ({ex.name})",
        due_at=ex.expires_at,
        evidence={
            "exemption": ex.name,
            "exempt_from": exempt_from.value,
            "expires_at": iso(ex.expires_at),
            "reason": ex.reason,
            "approved_by": ex.approved_by,
            "source": ex.source,
        },
    )
    return True
