"""Aggregate caps: each user's summed use against the ``aggregate`` block, and the containers that bypass it.

DS01 caps a user's containers together with a systemd slice, ``ds01-<group>-<user>.slice`` (the
sanitised login name; ``ds01-override-<user>.slice`` for a user with an override entry), given to
each container as its cgroup parent by DS01's ``docker`` wrapper. A container created around the
wrapper (a devcontainer, ``docker compose``, the real binary) has another parent and escapes the
caps. Per owner with an aggregate block:

* :func:`aggregate_figures` (also what ``ds01ctl get/describe users`` shows): the summed CPU limits
  (containers without one listed apart), the summed memory use and task count, each against its
  cap, and the containers whose cgroup parent is not the owner's slice. A use that could not be
  read makes the sum unknown, unless the known part alone is over; a container never inspected
  has no known parent and is not listed as bypassing. Unknown is not "within", nor "over".
* :func:`aggregate_caps` (the rule): with ``resourceEnforcement.aggregateAlerts: true``, one
  AlertAdmin per user, ``AggregateCapBypassed`` when a container bypasses the slice (else
  ``AggregateCapExceeded`` for a sum over a cap), keyed by what it is about so a changed set alerts
  again. Never an action on a container: the slice cannot be changed on a live container.

Protected and monitoring containers, and those opted out of the resource rules, are never listed
as bypassing (they still count in the sums). Owner ``unknown`` is many people: never judged; nor is
an owner a container only claims while labels are not trusted (:meth:`PassContext.counted_owner`).
Pure; called by the planner once per pass and by the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any

from controller.plan.context import UNKNOWN_OWNER, Collector, PassContext, host_target
from controller.plan.desired import CLAIMED_OWNER_RULES
from controller.plan.types import ActionKind, DeferReason, Reason
from controller.snapshot import LIVE_STATES, ContainerObs, OwnerRule
from desired_state.effective import EffectivePolicy, ExemptFrom
from desired_state.policy_set import sanitise_username

SLICE_PREFIX = "ds01"
OVERRIDE_GROUP = "override"  # DS01 names a user with an override entry's slice so


@dataclass(frozen=True)
class Sum:
    """One summed figure against its cap: ``used`` the known part, ``unknown`` the containers unread."""

    used: float
    cap: float | None
    cap_source: str
    unknown: tuple[str, ...] = ()

    @property
    def over(self) -> bool:
        return self.cap is not None and self.used > self.cap + 1e-9

    @property
    def judged(self) -> bool:
        """Over, or known to be within (no unknown part)."""
        return self.over or not self.unknown


@dataclass(frozen=True)
class AggregateFigures:
    """One owner's live containers against the owner's aggregate caps."""

    owner: str
    has_caps: bool
    expected_slices: tuple[str, ...]
    cpus: Sum
    memory_bytes: Sum
    tasks: Sum
    cpu_unlimited: tuple[str, ...] = ()  # containers without a CPU limit (not in the CPU sum)
    bypassing: dict[str, str] = field(default_factory=dict)  # name -> its cgroup parent
    parent_unknown: tuple[str, ...] = ()  # never inspected: the parent is not known

    @property
    def over(self) -> tuple[str, ...]:
        return tuple(
            n for n, s in (("cpu", self.cpus), ("memory", self.memory_bytes), ("tasks", self.tasks)) if s.over
        )


def expected_slices(owner: str, group: str) -> tuple[str, ...]:
    """The cgroup parents that put ``owner``'s container under the owner's aggregate caps."""
    user = sanitise_username(owner)
    return (f"{SLICE_PREFIX}-{group}-{user}.slice", f"{SLICE_PREFIX}-{OVERRIDE_GROUP}-{user}.slice")


def _under(parent: str, slices: Sequence[str]) -> bool:
    # A parent may be given as the slice name or as a path ending in it (cgroupfs driver).
    last = parent.rstrip("/").rsplit("/", 1)[-1]
    return last in slices


def _judged_for_bypass(policy: EffectivePolicy) -> bool:
    if policy.protected.value or policy.monitoring.value or policy.resources.exempt.value:
        return False
    return policy.exemption(ExemptFrom.RESOURCES) is None


def aggregate_figures(
    owner: str,
    owned: Sequence[ContainerObs],
    policy: EffectivePolicy,
    policies: Mapping[str, EffectivePolicy],
) -> AggregateFigures:
    """The owner's sums against the caps and the containers outside the owner's slice (pure)."""
    spec = policy.resources
    caps = (spec.aggregate_cpus, spec.aggregate_memory_bytes, spec.aggregate_tasks)
    has_caps = any(cap.value is not None for cap in caps)  # no cap: no slice to bypass
    slices = expected_slices(owner, policy.group.value)
    cpu, memory, tasks = 0.0, 0, 0
    unlimited, mem_unknown, tasks_unknown, parent_unknown = [], [], [], []
    bypassing: dict[str, str] = {}
    for c in owned:
        lim, sig = c.limits, c.signals
        if lim is None:
            parent_unknown.append(c.name)
        else:
            if lim.cpus is None:
                unlimited.append(c.name)
            else:
                cpu += lim.cpus
            pol = policies.get(c.id)
            judged = has_caps and (pol is None or _judged_for_bypass(pol))
            if judged and not _under(lim.cgroup_parent, slices):
                bypassing[c.name] = lim.cgroup_parent or "the engine's default"
        if sig is None or sig.memory_bytes is None:
            mem_unknown.append(c.name)
        else:
            memory += sig.memory_bytes
        if sig is None or sig.pids_current is None:
            tasks_unknown.append(c.name)
        else:
            tasks += sig.pids_current
    return AggregateFigures(
        owner=owner,
        has_caps=has_caps,
        expected_slices=slices,
        cpus=Sum(round(cpu, 6), spec.aggregate_cpus.value, spec.aggregate_cpus.source, tuple(parent_unknown)),
        memory_bytes=Sum(
            memory, spec.aggregate_memory_bytes.value, spec.aggregate_memory_bytes.source, tuple(mem_unknown)
        ),
        tasks=Sum(tasks, spec.aggregate_tasks.value, spec.aggregate_tasks.source, tuple(tasks_unknown)),
        cpu_unlimited=tuple(unlimited),
        bypassing=bypassing,
        parent_unknown=tuple(parent_unknown),
    )


def owners(ctx: PassContext) -> dict[str, list[ContainerObs]]:
    """Each known owner's live containers with a policy, oldest first (not to be changed: grouped
    once a pass, after the policies are resolved, for the quotas and the aggregate caps alike)."""
    if ctx.by_owner is None:
        ctx.by_owner, ctx.owner_gpu_holders = _owners(ctx)
    return ctx.by_owner


def gpu_holders(ctx: PassContext) -> dict[str, list[ContainerObs]]:
    """Each owner's GPU holders (``has_gpu``) of :func:`owners`, in the same order; found in the
    same walk, while each container is at hand (an owner holding none has an empty list)."""
    owners(ctx)
    return ctx.owner_gpu_holders


def _owners(ctx: PassContext) -> tuple[dict[str, list[ContainerObs]], dict[str, list[ContainerObs]]]:
    # Each owner's (start, container, holds a GPU): read while the container is at hand (a walk
    # over thousands of containers costs mostly in reaching each one), and the sort compares the
    # starts alone.
    by_owner: dict[str, list[tuple[datetime, ContainerObs, bool]]] = {}
    policies = ctx.policies
    # ctx.counted_owner(c), written out with its pass-wide part read once: the owner rules that only
    # claim an owner (none while labels are trusted). Kept the same test as counted_owner's.
    claimed: frozenset[OwnerRule] = frozenset() if ctx.glob.trust_labels.value else CLAIMED_OWNER_RULES
    for c in ctx.containers:
        if c.state in LIVE_STATES and c.id in policies:
            owner = c.owner
            if not owner or owner == UNKNOWN_OWNER or c.owner_rule in claimed:
                continue  # counted for nobody (counted_owner: None)
            owned = by_owner.get(owner)
            if owned is None:
                by_owner[owner] = owned = []
            # (c.has_gpu, without the property's call)
            owned.append((c.started_at or c.created_at, c, bool(c.gpu_refs) or c.all_gpus))
    containers: dict[str, list[ContainerObs]] = {}
    holders: dict[str, list[ContainerObs]] = {}
    for owner, owned in by_owner.items():
        # By (start, id): the entries are in id order already (ctx.containers) and the sort is stable.
        owned.sort(key=_START)
        containers[owner] = [c for _, c, _ in owned]
        holders[owner] = [c for _, c, gpu in owned if gpu]
    return containers, holders


_START = itemgetter(0)


def aggregate_caps(ctx: PassContext, out: Collector) -> None:
    """With ``aggregateAlerts``: one AlertAdmin per owner bypassing or over the aggregate caps."""
    if not ctx.glob.aggregate_alerts.value:
        return  # only shown by ds01ctl get/describe users
    by_owner = owners(ctx)
    for owner in sorted(by_owner):
        owned = by_owner[owner]
        # The caps are per user: the newest container's policy carries them (as the quotas).
        figures = aggregate_figures(owner, owned, ctx.policies[owned[-1].id], ctx.policies)
        if figures.has_caps:
            _judge(ctx, out, figures)


def evidence_of(f: AggregateFigures) -> dict[str, Any]:
    """The figures as plain values (the alert's evidence, ``get users -o json``)."""

    def one(s: Sum) -> dict[str, Any]:
        return {"used": s.used, "cap": s.cap, "cap_source": s.cap_source, "unknown": list(s.unknown)}

    return {
        "owner": f.owner,
        "cpus": one(f.cpus),
        "cpu_unlimited": list(f.cpu_unlimited),
        "memory_bytes": one(f.memory_bytes),
        "tasks": one(f.tasks),
        "expected_slices": list(f.expected_slices),
        "bypassing": dict(f.bypassing),
        "parent_unknown": list(f.parent_unknown),
        "over": list(f.over),
    }


def _judge(ctx: PassContext, out: Collector, f: AggregateFigures) -> None:
    evidence = evidence_of(f)
    target = host_target(user=f.owner)
    if f.bypassing:
        reason = Reason.AGGREGATE_CAP_BYPASSED
        names = ", ".join(f"{n} ({p})" for n, p in sorted(f.bypassing.items()))
        what = (
            f"{f.owner}'s containers outside the slice {f.expected_slices[0]} escape the aggregate "
            f"caps: {names}"
        )
        about = ",".join(sorted(f.bypassing))
    elif f.over:
        reason = Reason.AGGREGATE_CAP_EXCEEDED
        what = f"{f.owner}'s containers together exceed the aggregate caps: {', '.join(f.over)}"
        about = ",".join(f.over)
    else:
        unread = [s for s in (f.cpus, f.memory_bytes, f.tasks) if s.cap is not None and not s.judged]
        if unread:
            # Unknown is not "within": said, not alerted.
            out.defer(
                target,
                Reason.AGGREGATE_CAP_EXCEEDED,
                DeferReason.UNKNOWN_SIGNAL,
                f"{f.owner}'s use against the aggregate caps cannot be judged: unread "
                + ", ".join(sorted({n for s in unread for n in s.unknown})),
                evidence=evidence,
            )
        return
    if f.over and reason == Reason.AGGREGATE_CAP_BYPASSED:
        what += f"; over: {', '.join(f.over)}"
    out.act(
        ActionKind.ALERT_ADMIN,
        target,
        reason,
        what + " (no action on the containers: a cgroup parent cannot change while one lives)",
        due_at=ctx.now,
        key=f"AlertAdmin:{reason.value}:{f.owner}:{about}",
        evidence=evidence,
    )
