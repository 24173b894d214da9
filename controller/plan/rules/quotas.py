"""Per-user quotas: containers per user, GPU-equivalents per user, GPU units per container.

* **ContainerQuotaExceeded**: an owner runs more live containers (running, paused, restarting)
  than ``maxContainersPerUser``.
* **GpuQuotaExceeded**: an owner's live containers hold more GPU-equivalents than
  ``maxGpuEquivalents``: a full GPU is 1.0, a MIG device its share of the GPU's compute slices
  (``MigDeviceObs.gpu_equivalents``, read live from NVML), over the union of their units (a GPU
  two of them share counts once; :class:`_Frees`). A device whose share is unknown (NVML
  down, a reference that did not resolve) makes the total unknown: when the known part alone is
  within the quota nothing is decided (``UnknownSignal``); unknown is not "within".
* **GpuSlotsAboveSpec**: one running container holds more distinct GPU/MIG units than
  ``maxGpuSlotsPerContainer``; a container cannot be shrunk in place. A reference that did not
  resolve, or names a device NVML does not list now (NVML down: a MIG device's GPU is unknown), may
  name a unit counted already: when the units NVML lists alone are within the cap, nothing is
  decided (``UnknownSignal``).

Default (``resourceEnforcement.enforce: report``): the owner is warned once (WarnOwner, on the
newest container beyond the quota) and the admin alerted (AlertAdmin); nothing is stopped. With
``enforce: stop`` the newest containers beyond the quota are stopped (kept, not removed) once their
own stop warning (not the report mode's notice) has had the owner's full ``warnLead``; a container
that is not to be stopped in a pass loses that warning (:func:`_void_stop_warnings`), so a later
stop has a full lead again. Never a protected, monitoring or devcontainer one, nor one whose type or
owner is opted out of the resource rules (``resourcesExempt``, an Exemption from ``resources``): the
next newest are chosen instead, and what cannot be stopped is only reported. For the GPU quota
each is weighed by what stopping it frees (a newer one that a stop leaves sole holder of a shared
GPU goes before an older one), and a stop the others already cover is not made
(:func:`_weighed_victims`). One stop per container
and pass: none for a container another rule (idle, max runtime) or another quota stops, and such a
container no longer counts towards the owner's quotas in that pass (else one more is stopped than
the quota needs). Owner
``unknown`` is many people, not one: never counted, nor an owner a container only claims while
labels are not trusted (:meth:`PassContext.counted_owner`). Pure; called by the planner once per
pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controller.memory import Attempt, ContainerMemory
from controller.plan.context import Collector, PassContext, fmt_duration, host_target, iso
from controller.plan.desired import policy_identity
from controller.plan.rules.aggregate import gpu_holders, owners
from controller.plan.rules.common import files_kept, kept_after_stop, kept_evidence
from controller.plan.types import KEPT_AFTER_STOP_S, ActionKind, DeferReason, Reason, StopParams, WarnParams
from controller.plan.values import built
from controller.snapshot import ContainerId, ContainerObs, ContainerState
from crd_like_specs.vocabulary import ContainerType
from desired_state.effective import EffectivePolicy, ExemptFrom

ENFORCE_STOP = "stop"
UNRESOLVED = "unresolved:"  # a unit named by a reference that did not resolve: what it says
QUOTA_REASONS = (Reason.CONTAINER_QUOTA_EXCEEDED, Reason.GPU_QUOTA_EXCEEDED, Reason.GPU_SLOTS_ABOVE_SPEC)
# The warning that a container will be stopped for a quota, recorded under this key in the
# container's memory. Not the report mode's notice (``quota:<reason>``): a user asked to stop "a
# container" has not been told that this one will be stopped.
STOP_WARNING_PREFIX = "quota-stop:"
# Each quota's stop-warning key, built once (looked up for every container in every pass).
_STOP_WARNINGS = {r: f"{STOP_WARNING_PREFIX}{r.value}" for r in QUOTA_REASONS}
_STOP_WARNING_KEYS = frozenset(_STOP_WARNINGS.values())
_RUNNING = ContainerState.RUNNING  # (read once: an enum member read from its class costs a lookup)
_STOP = ActionKind.STOP_CONTAINER  # (the same, for the scan of every action proposed so far)


@dataclass
class _Stops:
    """One pass's quota stops: the (container, quota) pairs to be stopped once warned, and the
    containers a StopContainer is proposed for (by any rule)."""

    proposed: set[str | None]
    warned: set[tuple[ContainerId, Reason]] = field(default_factory=set)


def user_quotas(ctx: PassContext, out: Collector) -> None:
    """Every owner's container and GPU quota, and every running container's GPU units."""
    by_owner = owners(ctx)  # oldest first: the newest are the ones beyond a quota
    shares = mig_shares(ctx)
    # The containers another rule stops in this pass (idle, max runtime): one stop per container.
    # A stop that failed before (retried, or in back-off) is not counted on to free its container:
    # while it keeps failing the quota is judged with it, and a warning of another container holds.
    attempts = ctx.memory.attempts
    stops = _Stops(
        proposed={
            a.target.container_id
            for a in out.actions
            if a.kind == _STOP and _never_failed(attempts.get(a.key))
        }
    )
    policies = ctx.policies
    holders_of = gpu_holders(ctx)
    for owner in sorted(by_owner):
        owned, holders = by_owner[owner], holders_of[owner]
        units = _units_of(ctx, holders)  # counted once for the quota and the caps
        # A container stopped in this pass (by another rule, or for the quota judged before) no
        # longer counts: judged with it, one more would be stopped than the quota needs. The GPU
        # quota first: the container it stops counts against the container quota too.
        left = _not_stopping(owned, stops)
        if left:
            proposed = len(stops.proposed)
            # (The holders are among the owned: none is stopping when none of those is.)
            held = holders if left is owned else _not_stopping(holders, stops)
            warned = len(stops.warned)
            _gpu_quota(ctx, out, owner, left, held, shares, units, stops)
            if len(stops.proposed) != proposed:
                left = _not_stopping(left, stops)
            if len(stops.warned) != warned:
                # Told they will be stopped for the GPU quota: once they are, they no longer count
                # against the container quota either, and a container that quota would stop now is
                # told it will be stopped, and is not (its warning voided once they stop).
                gq = Reason.GPU_QUOTA_EXCEEDED
                left = [c for c in left if (c.id, gq) not in stops.warned]
        if left:
            _container_quota(ctx, out, owner, left, stops)
        for c in holders:
            if c.state == _RUNNING:
                # Most holders are within their cap (tested here, before _gpu_slots says more).
                cap = policies[c.id].resources.max_gpu_slots_per_container.value
                if cap is not None and len(units[c.id]) > cap:
                    _gpu_slots(ctx, out, c, units[c.id], stops)
    _void_stop_warnings(ctx, stops)


def _units_of(ctx: PassContext, holders: list[ContainerObs]) -> dict[ContainerId, list[str]]:
    """``{c.id: gpu_units(ctx, c)}`` for each holder, gpu_units' one-reference case (most holders)
    written out here rather than called for each."""
    mig, physical_of = ctx.mig_uuids, ctx.physical_of
    units: dict[ContainerId, list[str]] = {}
    for c in holders:
        refs = c.gpu_refs
        if len(refs) == 1 and not c.all_gpus:
            ref = refs[0]
            unit = ref.uuid or f"{UNRESOLVED}{ref.raw}"
            units[c.id] = [unit] if unit not in mig or physical_of.get(unit) != unit else []
        else:
            units[c.id] = gpu_units(ctx, c)
    return units


def _never_failed(attempt: Attempt | None) -> bool:
    return attempt is None or attempt.failures == 0


def _not_stopping(containers: list[ContainerObs], stops: _Stops) -> list[ContainerObs]:
    """``containers`` without those a stop is proposed for in this pass (the same list if none)."""
    proposed = stops.proposed
    if not proposed or proposed.isdisjoint(c.id for c in containers):
        return containers
    return [c for c in containers if c.id not in proposed]


def _stop_warning(reason: Reason) -> str:
    return _STOP_WARNINGS[reason]


def _stop_warn_key(c: ContainerObs, reason: Reason) -> str:
    return f"WarnOwner:{c.id}:{reason.value}:stop:{iso(c.started_at)}"


def _void_stop_warnings(ctx: PassContext, stops: _Stops) -> None:
    """A stop warning holds while its container stays beyond the quota, pass after pass.

    A container not to be stopped for a quota in this pass (the owner back within it, the quota
    raised, enforcement off, the share unknown, the container stopped) loses that warning: if it is
    beyond the quota again later it is warned again and has a full lead again, never stopped at once
    on a warning of another time.
    """
    # Most memories hold no warning at all: only those that hold one (found as the planner wrote
    # them) are looked at for a stop warning, and only their containers visited.
    keys, cmem = _STOP_WARNING_KEYS, ctx.cmem
    holding = [cid for cid in ctx.warned_ids if not keys.isdisjoint(cmem[cid].warnings)]
    for cid in holding:
        c = ctx.by_id.get(cid)
        if c is None:
            continue  # a memory of no listed container: nothing to void
        mem = ctx.cmem[cid]
        held = mem.warnings
        void = [r for r, key in _STOP_WARNINGS.items() if key in held and (c.id, r) not in stops.warned]
        if void:
            dropped = {_STOP_WARNINGS[r] for r in void}
            keep = {k: at for k, at in mem.warnings.items() if k not in dropped}
            told = {k: at for k, at in mem.announced.items() if k not in dropped}
            ctx.cmem[c.id] = mem.model_copy(update={"warnings": keep, "announced": told})
            ctx.forget_done.update(_stop_warn_key(c, r) for r in void)


def mig_shares(ctx: PassContext) -> dict[str, float | None]:
    """GPU-equivalents of each device: 1.0 for a full GPU, a MIG device's share (None: unknown)."""
    shares: dict[str, float | None] = {}
    for g in ctx.gpus:
        shares[g.uuid] = 1.0
        for m in g.mig_devices:
            shares[m.uuid] = m.gpu_equivalents
    return shares


def gpu_units(ctx: PassContext, c: ContainerObs) -> list[str]:
    """The distinct GPU/MIG units a container references (unresolved ones by what they say).

    A MIG device of a GPU the container holds whole (by its UUID, or every GPU) is part of that GPU,
    not another unit: counted apart, it would add its share to the whole GPU's 1.0."""
    refs = c.gpu_refs
    if len(refs) == 1 and not c.all_gpus:
        # Most holders name one unit: the filter below drops it only if it is a MIG device that is
        # its own GPU (the same test, on a set of one).
        ref = refs[0]
        unit = ref.uuid or f"{UNRESOLVED}{ref.raw}"
        return [unit] if unit not in ctx.mig_uuids or ctx.physical_of.get(unit) != unit else []
    units: dict[str, None] = {}
    for ref in refs:
        units.setdefault(ref.uuid or f"{UNRESOLVED}{ref.raw}", None)
    if c.all_gpus:
        for g in ctx.gpus:
            units.setdefault(g.uuid, None)
    mig = ctx.mig_uuids
    return [u for u in units if u not in mig or ctx.physical_of.get(u) not in units]


def gpu_equivalents(
    ctx: PassContext,
    c: ContainerObs,
    shares: dict[str, float | None],
    units: list[str] | None = None,
) -> tuple[float, list[str]]:
    """(known GPU-equivalents, the units whose share is unknown) of one container (``units``: its
    ``gpu_units`` when counted already)."""
    known = 0.0
    unknown: list[str] = []
    for unit in gpu_units(ctx, c) if units is None else units:
        share = shares.get(unit)
        if share is None:
            unknown.append(unit)
        else:
            known += share
    if c.all_gpus and not ctx.gpus:
        unknown.append("all GPUs (NVML lists none)")
    return known, unknown


def held_gpu_equivalents(
    ctx: PassContext, holders: Sequence[ContainerObs], shares: dict[str, float | None]
) -> tuple[float, list[str]]:
    """(known GPU-equivalents, the units whose share is unknown) an owner's holders hold together,
    as the GPU quota counts them: the union of their units (:class:`_Frees`). For views that must
    say what the quota rule sees (``ds01ctl get users``)."""
    units = {c.id: gpu_units(ctx, c) for c in holders}
    unknown: list[str] = []
    for c in holders:
        unknown.extend(f"{c.name}: {u}" for u in gpu_equivalents(ctx, c, shares, units[c.id])[1])
    return round(_Frees(ctx, holders, units, shares).held, 6), unknown


def _policy(ctx: PassContext, owned: Sequence[ContainerObs]) -> EffectivePolicy:
    # The quotas are per user (no per-type layer): the newest container's policy carries them.
    return ctx.policies[owned[-1].id]


def _container_quota(
    ctx: PassContext,
    out: Collector,
    owner: str,
    owned: list[ContainerObs],
    stops: _Stops,
) -> None:
    quota = _policy(ctx, owned).resources.max_containers_per_user
    if quota.value is None or len(owned) <= quota.value:
        return
    evidence = {
        "owner": owner,
        "containers": len(owned),
        "quota": quota.value,
        "quota_source": quota.source,
        "container_names": [c.name for c in owned],
    }
    what = f"{owner} runs {len(owned)} containers; the quota is {quota.value} ({quota.source})"
    excess = len(owned) - quota.value
    _beyond(ctx, out, owner, owned, excess, None, Reason.CONTAINER_QUOTA_EXCEEDED, what, evidence, stops)


def _gpu_quota(
    ctx: PassContext,
    out: Collector,
    owner: str,
    owned: list[ContainerObs],
    holders: list[ContainerObs],
    shares: dict[str, float | None],
    units: dict[ContainerId, list[str]],
    stops: _Stops,
) -> None:
    quota = _policy(ctx, owned).resources.max_gpu_equivalents
    if quota.value is None or not holders:
        return
    per, unknown = _per_holder(ctx, holders, shares, units)
    if not unknown and sum(per.values()) <= quota.value + 1e-9:
        return  # within the quota even counted per container, every share known (most owners)
    # What the owner holds is the union of the units: a GPU two of their containers share counts
    # once (and a MIG device of a GPU another of them holds whole, not at all).
    frees = _Frees(ctx, holders, units, shares)
    total = round(frees.held, 6)
    within = total <= quota.value + 1e-9
    if within and not unknown:
        return  # within the quota and every share known: nothing to say
    evidence: dict[str, Any] = {
        "owner": owner,
        "gpu_equivalents": total,
        "quota": quota.value,
        "quota_source": quota.source,
        "per_container": {c.name: per[c.id] for c in holders},
        "unknown_units": unknown,
    }
    if within:
        out.defer(
            host_target(user=owner),
            Reason.GPU_QUOTA_EXCEEDED,
            DeferReason.UNKNOWN_SIGNAL,
            f"{owner} holds {total:g} known GPU-equivalents (quota {quota.value:g}) and units "
            f"whose share is unknown ({', '.join(unknown)}): the quota cannot be judged",
            evidence=evidence,
        )
        return
    # The newest holders beyond the quota: dropped one by one, each by what stopping it frees (the
    # units none of the rest holds), until the rest fit.
    excess = total - quota.value
    what = f"{owner} holds {total:g} GPU-equivalents; the quota is {quota.value:g} ({quota.source})"
    _beyond(ctx, out, owner, holders, excess, frees, Reason.GPU_QUOTA_EXCEEDED, what, evidence, stops)


def _per_holder(
    ctx: PassContext,
    holders: list[ContainerObs],
    shares: dict[str, float | None],
    units: dict[ContainerId, list[str]],
) -> tuple[dict[str, float], list[str]]:
    """Each holder's known GPU-equivalents, and every unit of unknown share as "name: unit":
    :func:`gpu_equivalents` of each holder (given its units), written out here rather than called
    for each (the known shares summed in the same order, the unknown ones named in the same order)."""
    per: dict[str, float] = {}
    unknown: list[str] = []
    listed = bool(ctx.gpus)
    for c in holders:
        known = 0.0
        for unit in units[c.id]:
            share = shares.get(unit)
            if share is None:
                unknown.append(f"{c.name}: {unit}")
            else:
                known += share
        if c.all_gpus and not listed:
            unknown.append(f"{c.name}: all GPUs (NVML lists none)")
        per[c.id] = known
    return per, unknown


class _Frees:
    """The known GPU-equivalents an owner's holders hold together, and what stopping one frees.

    Together: the union of their units, a MIG device left out when another of them holds its GPU
    whole. Stopping a holder frees what the rest then no longer hold (nothing, for a GPU another
    holder shares); :meth:`drop` takes a chosen victim out of the rest. Each unit's holders are
    counted, so what a stop frees is read off its own units; only where a MIG device and its GPU
    are both held (rare) is the union summed again."""

    def __init__(
        self,
        ctx: PassContext,
        holders: Sequence[ContainerObs],
        units: Mapping[ContainerId, list[str]],
        shares: Mapping[str, float | None],
    ) -> None:
        self.physical_of = ctx.physical_of
        self.units = units
        self.shares = shares
        self.left: list[ContainerId] = [c.id for c in holders]
        self.held = self.held_by(self.left)
        self._count: dict[str, int] | None = None  # counted once a victim is weighed
        self._nested = False

    @property
    def count(self) -> dict[str, int]:
        """Each unit's number of holders among the rest."""
        if self._count is None:
            count: dict[str, int] = {}
            for cid in self.left:
                for unit in self.units[cid]:  # (distinct within one container)
                    count[unit] = count.get(unit, 0) + 1
            physical_of = self.physical_of
            self._nested = any(physical_of.get(u, u) != u and physical_of.get(u) in count for u in count)
            self._count = count
        return self._count

    @property
    def nested(self) -> bool:
        """Are a MIG device and its GPU both held (then what a stop frees is summed again)?"""
        _ = self.count  # counted, and the nesting found, on first use
        return self._nested

    def held_by(self, ids: Sequence[ContainerId]) -> float:
        """The known GPU-equivalents ``ids`` hold together."""
        held: dict[str, None] = {}
        for cid in ids:
            held.update(dict.fromkeys(self.units[cid]))
        total = 0.0
        for unit in held:
            parent = self.physical_of.get(unit)
            if parent is not None and parent != unit and parent in held:
                continue  # a MIG device of a GPU held whole
            share = self.shares.get(unit)
            if share is not None:
                total += share
        return total

    def __getitem__(self, cid: str) -> float:
        count, shares = self.count, self.shares
        if self.nested:
            return self.held - self.held_by([i for i in self.left if i != cid])
        return sum(shares.get(u) or 0.0 for u in self.units[ContainerId(cid)] if count.get(u) == 1)

    def known(self, cid: str) -> bool:
        """Is the share of any unit the container holds known?"""
        return any(self.shares.get(u) is not None for u in self.units[ContainerId(cid)])

    def together(self, cid: str, others: Sequence[str]) -> float:
        """What stopping ``cid`` adds to stopping ``others`` too: the units only they hold."""
        rest = [i for i in self.left if i != cid and i not in others]
        return self.held_by([*rest, ContainerId(cid)]) - self.held_by(rest)

    def drop(self, cid: str) -> None:
        count = self.count
        freed = 0.0 if self.nested else self[cid]
        self.left = [i for i in self.left if i != cid]
        for unit in self.units[ContainerId(cid)]:
            left = count[unit] - 1
            if left:
                count[unit] = left
            else:
                del count[unit]
        self.held = self.held_by(self.left) if self.nested else self.held - freed


def _gpu_slots(
    ctx: PassContext,
    out: Collector,
    c: ContainerObs,
    units: list[str],
    stops: _Stops,
) -> None:
    cap = ctx.policies[c.id].resources.max_gpu_slots_per_container
    if cap.value is None or len(units) <= cap.value:
        return
    evidence = {
        "owner": c.owner,
        "gpu_units": units,
        "quota": cap.value,
        "quota_source": cap.source,
    }
    # Known: a device NVML lists now. A reference that did not resolve, or a UUID NVML could not
    # verify (NVML down: a MIG device then has no known parent GPU) may name a unit it holds
    # already: unknown, not beyond.
    physical = ctx.physical_of
    known = [u for u in units if u in physical]
    if len(known) <= cap.value:
        out.defer(
            ctx.target(c),
            Reason.GPU_SLOTS_ABOVE_SPEC,
            DeferReason.UNKNOWN_SIGNAL,
            f"{c.name} holds {len(known)} known GPU units (at most {cap.value}, {cap.source}) and "
            f"references NVML does not list now ({', '.join(u for u in units if u not in known)}): "
            "the cap cannot be judged",
            evidence=evidence,
        )
        return
    what = f"{c.name} holds {len(units)} GPU units; at most {cap.value} per container ({cap.source})"
    _beyond(ctx, out, c.owner, [c], 1, None, Reason.GPU_SLOTS_ABOVE_SPEC, what, evidence, stops)


def _stoppable(ctx: PassContext, policy: EffectivePolicy, c: ContainerObs) -> str | None:
    """Why a quota never stops this container (None: it may be stopped)."""
    if policy.protected.value:
        return f"protected ({policy.protected.source})"
    if policy.monitoring.value:
        return f"monitoring ({policy.monitoring.source})"
    # The type policies are resolved for: without trusted labels a claimed type (a vsc-* name, a
    # label) is not one, and a claim never buys protection (docs/security.md).
    if policy_identity(c, ctx.glob.trust_labels.value)[1] == ContainerType.DEVCONTAINER:
        return "a devcontainer"
    if policy.resources.exempt.value:
        return f"opted out ({policy.resources.exempt.source})"
    ex = policy.exemption(ExemptFrom.RESOURCES)
    if ex is not None:
        return f"exempt ({ex.source})"
    return None


def _beyond(
    ctx: PassContext,
    out: Collector,
    owner: str,
    owned: list[ContainerObs],
    excess: float,
    weights: _Frees | None,
    reason: Reason,
    what: str,
    evidence: dict[str, Any],
    stops: _Stops,
) -> None:
    """Warn on and alert about the newest containers of ``owned`` whose weights (1 each when
    ``weights`` is None) cover ``excess``; stop them if enforced (each one added to ``stops``)."""
    enforce = ctx.glob.quota_enforce.value == ENFORCE_STOP
    victims, kept = _victims(ctx, owned, excess, weights, enforce)
    names = [c.name for c in victims]  # built once: the alert's text and evidence, the notices
    target = host_target(user=owner)  # one immutable target for the owner's alert and deferral
    scope = ",".join([c.id[:12] for c in victims]) or "none"
    out.act(
        ActionKind.ALERT_ADMIN,
        target,
        reason,
        f"{what}: beyond it "
        + (", ".join(names) or "nothing stoppable")
        + (f"; not stopped: {', '.join(f'{n} ({w})' for n, w in kept.items())}" if kept else ""),
        due_at=ctx.now,
        key=f"AlertAdmin:{reason.value}:{owner}:{scope}",
        evidence={**evidence, "beyond": list(names), "never_stopped": kept},
    )
    if not enforce:
        # Said every pass (the warning and the alert are one-shot): describe and the metrics see it.
        out.defer(
            target,
            reason,
            DeferReason.NOT_ENFORCED,
            f"{what}: reported, not enforced (enforce: report in {ctx.glob.quota_enforce.source})",
            evidence=evidence,
        )
    # Reported: one notice per owner, on the newest container beyond the quota (a user with a
    # hundred containers too many gets one message, not a hundred). Enforced: each container to be
    # stopped is warned itself, and its stop waits for that warning's lead.
    beyond = {**evidence, "beyond": names}
    counted = _counted(owned, victims, weights, reason) if enforce else None
    for c in victims if enforce else victims[:1]:
        if enforce:
            stops.warned.add((c.id, reason))
        _warn_then_stop(ctx, out, c, reason, what, beyond, enforce, stops, counted)


def _counted(
    owned: list[ContainerObs], victims: list[ContainerObs], weights: _Frees | None, reason: Reason
) -> tuple[ContainerId, ...] | None:
    """What the executor re-checks before a quota stop (``StopParams.quota_counted_ids``): the
    containers the quota counted and keeps, oldest first. Each victim is beyond the quota with all
    of them kept (the container quota keeps at least the quota's number; the GPU quota lets a victim
    off when the kept ones and it fit, :func:`_let_off`), so while each is still live the stop is
    still due; one gone may have brought the owner within it. None for the GPU-unit cap: it is one
    container's own, no other container counts towards it."""
    if reason == Reason.GPU_SLOTS_ABOVE_SPEC:
        return None
    chosen = {c.id for c in victims}
    # For the GPU quota, the holders of a unit whose share is known: one holding only units of
    # unknown share added nothing to the total judged over the quota.
    return tuple(c.id for c in owned if c.id not in chosen and (weights is None or weights.known(c.id)))


def _victims(
    ctx: PassContext,
    owned: list[ContainerObs],
    excess: float,
    weights: _Frees | None,
    enforce: bool,
) -> tuple[list[ContainerObs], dict[str, str]]:
    """The newest containers of ``owned`` covering ``excess``, and those passed over (name -> why
    never stopped).

    Enforced, a container that is never stopped is passed over and covers nothing: the next newest
    are chosen until what they hold covers the excess, no more (a kept newest container holding
    less than an older one does not make the older one a victim too). A container whose GPU share
    is unknown (no known share at all) is passed over too: stopping it frees nothing known, and
    stopping it besides the ones that do cover the excess would stop one container too many."""
    if weights is None:
        if not enforce and isinstance(excess, int):
            # Reported, one each: the newest ``excess`` (what the loop below picks, without the walk).
            return owned[::-1][: max(excess, 0)], {}
        victims: list[ContainerObs] = []
        kept: dict[str, str] = {}
        for c in reversed(owned):
            if excess <= 1e-9:
                break
            why = _stoppable(ctx, ctx.policies[c.id], c) if enforce else None
            if why is None:
                victims.append(c)
                excess -= 1.0
            else:
                kept[c.name] = why
        return victims, kept
    return _weighed_victims(ctx, owned, excess, weights, enforce)


def _weighed_victims(
    ctx: PassContext,
    owned: list[ContainerObs],
    excess: float,
    weights: _Frees,
    enforce: bool,
) -> tuple[list[ContainerObs], dict[str, str]]:
    """:func:`_victims` for the GPU quota, each container weighed by what stopping it frees.

    Newest first. A container whose GPUs the owner's other containers share frees nothing alone; it
    waits, and is weighed again after each stop (the stop may have left it their only holder), so a
    newer one freed by a stop goes before an older one. Then every victim the others cover without
    it is let off, the oldest first: a newest container stopped first may turn out not to be needed
    once an older one holding more had to go too."""
    target = weights.held - excess  # what the owner may keep: the quota
    victims: list[ContainerObs] = []
    kept: dict[str, str] = {}
    waiting: list[ContainerObs] = []  # stoppable, known shares, but each frees nothing alone (yet)
    for c in reversed(owned):
        if excess <= 1e-9:
            break
        why = _stoppable(ctx, ctx.policies[c.id], c) if enforce else None
        freed = weights[c.id] if why is None else 0.0
        if why is None and freed <= 1e-9:
            if weights.known(c.id):
                waiting.append(c)  # its GPUs are shared: they are freed only with the others
                continue
            why = "its GPU share is unknown: stopping it frees nothing known"
        if why is not None:
            kept[c.name] = why
            continue
        excess -= freed
        victims.append(c)
        weights.drop(c.id)
        excess = _freed_by_now(weights, waiting, excess, victims)
    if waiting and excess > 1e-9:
        excess = _shared_victims(weights, waiting, excess, victims, kept)
    return _let_off(weights, owned, victims, target), kept


def _freed_by_now(
    weights: _Frees, waiting: list[ContainerObs], excess: float, victims: list[ContainerObs]
) -> float:
    """Waiting containers a stop has left sole holders of a GPU, the newest first, while the excess
    lasts (each taken out of ``waiting``). Returns the excess left."""
    for c in list(waiting):
        if excess <= 1e-9:
            break
        freed = weights[c.id]
        if freed > 1e-9:
            waiting.remove(c)
            victims.append(c)
            excess -= freed
            weights.drop(c.id)
    return excess


def _let_off(
    weights: _Frees, owned: list[ContainerObs], victims: list[ContainerObs], target: float
) -> list[ContainerObs]:
    """``victims`` without those the rest cover: the oldest first, a victim is let off when what the
    owner then keeps (every container not stopped, and it) is held within ``target``."""
    if len(victims) < 2:
        return victims
    age = {c.id: i for i, c in enumerate(owned)}
    keeping = list(weights.left)  # every holder that is not a victim
    chosen = {c.id for c in victims}
    for c in sorted(victims, key=lambda v: age[v.id]):
        if weights.held_by([*keeping, c.id]) <= target + 1e-9:
            chosen.discard(c.id)
            keeping.append(c.id)
    return [c for c in victims if c.id in chosen]


def _shared_victims(
    weights: _Frees,
    sharing: list[ContainerObs],
    excess: float,
    victims: list[ContainerObs],
    kept: dict[str, str],
) -> float:
    """Containers whose GPUs the owner's other containers share free them only together: the newest
    first, each one that helps free a unit only the group holds (one that shares every GPU with a
    container that is never stopped helps nothing), until the rest fit. Returns the excess left."""
    left = list(sharing)
    while left and excess > 1e-9:
        c = left.pop(0)
        if weights.together(c.id, [x.id for x in left]) <= 1e-9:
            kept[c.name] = "stopping it frees nothing: the GPUs it holds stay held by containers kept"
            continue
        victims.append(c)
        excess -= weights[c.id]
        weights.drop(c.id)
    for c in left:
        kept[c.name] = "stopping it frees nothing: the owner's other containers hold the same GPUs"
    return excess


def _then(c: ContainerObs, evidence: Mapping[str, Any], enforce: bool) -> str:
    if enforce:
        return f"{c.name} will be stopped"
    beyond = ", ".join(map(str, evidence.get("beyond", [c.name])))
    return f"please stop a container (beyond the quota: {beyond})"


def _warn(
    ctx: PassContext,
    out: Collector,
    c: ContainerObs,
    policy: EffectivePolicy,
    mem: ContainerMemory | None,
    reason: Reason,
    message: str,
    evidence: dict[str, Any],
    enforce: bool,
    lead_s: float,
    warning_key: str,
    warn_key: str,
) -> None:
    """The owner's warning, with its notice; enforced on a running container, the stop time too: never
    before the time an earlier warning announced (one a lost memory was rebuilt with, see salvage).
    Its evidence names the hold after a stop that the notice names (:data:`KEPT_AFTER_STOP_S`): the
    executor records it for this start, and the hold rule keeps it. ``policy`` and ``mem``: the
    container's, as the caller read them."""
    stop_at = ctx.now + timedelta(seconds=lead_s) if enforce and c.state == ContainerState.RUNNING else None
    told = mem.announced.get(warning_key) if stop_at is not None and mem is not None else None
    if told is not None and stop_at is not None and told > stop_at:
        stop_at = told
        lead_s = (told - ctx.now).total_seconds()
    kept, hold_s = kept_after_stop(c, policy, mem.promised_hold_s if mem is not None else None)
    out.act(
        ActionKind.WARN_OWNER,
        ctx.target(c),
        reason,
        message,
        due_at=ctx.now,
        key=warn_key,
        evidence=evidence if hold_s is None else {**evidence, KEPT_AFTER_STOP_S: hold_s},
        params=built(
            WarnParams,
            {
                "warning_key": warning_key,
                "level_pct": None,
                "stop_expected_at": iso(stop_at) if stop_at is not None else None,
                "notice": quota_notice(
                    c,
                    reason,
                    evidence,
                    enforce=enforce,
                    lead_s=lead_s if stop_at is not None else None,
                    kept=kept,
                ),
                "severity": None,
            },
        ),
    )


def _warning_keys(c: ContainerObs, reason: Reason, enforce: bool) -> tuple[str, str]:
    """(the memory's warning key, the WarnOwner action key): a stop warning when enforced, else the
    report mode's notice."""
    if enforce:
        return _stop_warning(reason), _stop_warn_key(c, reason)
    return f"quota:{reason.value}", f"WarnOwner:{c.id}:{reason.value}:{iso(c.started_at)}"


def _warn_then_stop(
    ctx: PassContext,
    out: Collector,
    c: ContainerObs,
    reason: Reason,
    what: str,
    evidence: dict[str, Any],
    enforce: bool,
    stops: _Stops,
    counted: tuple[ContainerId, ...] | None,
) -> None:
    policy = ctx.policies[c.id]
    warning_key, warn_key = _warning_keys(c, reason, enforce)
    mem = ctx.cmem.get(c.id)
    sent = ctx.sent_at(mem, warning_key, warn_key)
    lead = policy.warn_lead_s.value
    if sent is None:
        message = f"{what}; {_then(c, evidence, enforce)}"
        _warn(ctx, out, c, policy, mem, reason, message, evidence, enforce, lead, warning_key, warn_key)
    if not enforce:
        return
    if c.state != ContainerState.RUNNING:
        _waiting_to_run(ctx, out, c, reason, evidence, sent)
        return
    due, announced = _stop_due(ctx, mem, warning_key, sent, lead)
    if sent is None or ctx.now < due:
        out.defer(
            ctx.target(c),
            reason,
            DeferReason.WAITING_FOR_WARNING,
            f"{c.name}: stopped for the quota at {iso(due)}, {lead:g} s after its owner was warned"
            + (" (the time its warning announced)" if due == announced else ""),
            due_at=due,
            evidence={**evidence, "warned_at": iso(sent)},
        )
        return
    if c.id in stops.proposed:
        return  # stopped in this pass already, for another rule or another quota
    stops.proposed.add(c.id)
    _stop(
        ctx,
        out,
        c,
        policy,
        mem,
        reason,
        f"{what}; warned at {iso(sent)}",
        {**evidence, "warned_at": iso(sent)},
        due,
        counted,
    )


def _stop(
    ctx: PassContext,
    out: Collector,
    c: ContainerObs,
    policy: EffectivePolicy,
    mem: ContainerMemory | None,
    reason: Reason,
    why: str,
    evidence: dict[str, Any],
    due: datetime,
    counted: tuple[ContainerId, ...] | None,
) -> None:
    """The quota's StopContainer (kept, not removed); ``counted`` the containers its executor
    re-checks (:func:`_counted`); ``policy`` and ``mem`` the container's, as for :func:`_warn`."""
    out.act(
        ActionKind.STOP_CONTAINER,
        ctx.target(c),
        reason,
        f"stop {c.name} (owner {c.owner}): {why}",
        due_at=due,
        key=f"StopContainer:{c.id}:{reason.value}",
        evidence={**evidence, **kept_evidence(c, policy, mem.promised_hold_s if mem is not None else None)},
        params=StopParams(
            grace_s=float(policy.sigterm_grace_s.value), remove=False, quota_counted_ids=counted
        ),
    )


def _stop_due(
    ctx: PassContext, mem: ContainerMemory | None, warning_key: str, sent: datetime | None, lead: float
) -> tuple[datetime, datetime | None]:
    """When the quota stop is due: the lead after the warning, and never before the time the
    delivered warning announced (``warnLead`` may be lowered since), or one a lost memory was rebuilt
    with (its warning sent again); and that announced time."""
    due: datetime = (sent or ctx.now) + timedelta(seconds=lead)
    announced = mem.announced.get(warning_key) if mem is not None else None
    if announced is not None and announced > due:
        due = announced
    return due, announced


def _waiting_to_run(
    ctx: PassContext,
    out: Collector,
    c: ContainerObs,
    reason: Reason,
    evidence: dict[str, Any],
    sent: datetime | None,
) -> None:
    """A paused or restarting container beyond an enforced quota is stopped once it runs again (its
    notice says so): said every pass, so ``describe`` and ``plan`` show the stop that waits."""
    warned = f"its owner was warned at {iso(sent)}" if sent is not None else "its owner is warned now"
    out.defer(
        ctx.target(c),
        reason,
        DeferReason.NOT_DUE,
        f"{c.name} is {c.state.value}: stopped for the quota once it runs again ({warned})",
        evidence={**evidence, "state": c.state.value, "warned_at": iso(sent)},
    )


NOTICE_NAMES = 8  # names listed in one line of a notice (a terminal line is cut at 300 characters)


def _names(names: Sequence[object]) -> str:
    shown = ", ".join(str(n) for n in names[:NOTICE_NAMES])
    return shown + (f" and {len(names) - NOTICE_NAMES} more" if len(names) > NOTICE_NAMES else "")


def _over(c: ContainerObs, reason: Reason, evidence: Mapping[str, Any]) -> str:
    """What is over, with the figures and where the quota comes from."""
    quota, source = evidence["quota"], evidence["quota_source"]
    if reason == Reason.CONTAINER_QUOTA_EXCEEDED:
        names = _names(evidence.get("container_names", []))
        return (
            f"You ({c.owner}) run {evidence['containers']} containers ({names}); "
            f"your quota is {quota} ({source})."
        )
    if reason == Reason.GPU_QUOTA_EXCEEDED:
        shares = _names([f"{n} {v:g}" for n, v in evidence.get("per_container", {}).items()])
        return (
            f"You ({c.owner}) hold {evidence['gpu_equivalents']:g} GPUs in your containers ({shares}; "
            f"a MIG device counts as its share of the GPU); your quota is {quota:g} ({source})."
        )
    return (
        f"Your container {c.name} holds {len(evidence['gpu_units'])} GPU units (GPUs or MIG devices); "
        f"at most {quota} per container ({source})."
    )


def quota_notice(
    c: ContainerObs,
    reason: Reason,
    evidence: Mapping[str, Any],
    *,
    enforce: bool,
    lead_s: float | None,
    kept: str = "the stopped container",
) -> str:
    """The owner's notice for a quota (params ``notice``; ``{stop_at}`` is filled in at delivery, in
    the server's local time): what is over, what happens next and when, what to do, where to see more.

    Reported (``enforce`` False): nothing is stopped, the owner is asked to stop one of the
    containers beyond the quota. Enforced: this container is stopped at ``{stop_at}`` (``lead_s``
    from now; None when it is not running now, so stopped once it runs again).
    """
    slots = reason == Reason.GPU_SLOTS_ABOVE_SPEC
    beyond = _names(evidence.get("beyond", [c.name])) or c.name
    more = f"More: ds01ctl describe user {c.owner}; ds01ctl describe container {c.name}"
    if not enforce:
        fix = (
            f"Please stop it (docker stop {c.name}) and start it again with at most {evidence['quota']} GPUs."
            if slots
            else f"Please stop one (beyond the quota: {beyond}), e.g. docker stop {c.name}."
        )
        return "\n".join(
            [
                _over(c, reason, evidence),
                "Nothing is stopped: this server only reports this quota for now. " + fix,
                f"What a stop keeps: {files_kept(kept, c.workspace_mounted)}; start it again once you are "
                "within the quota.",
                more,
            ]
        )
    when = (
        f"Your container {c.name} will be stopped at {{stop_at}} (in about {fmt_duration(lead_s)})."
        if lead_s is not None
        else f"Your container {c.name} ({c.state.value}) will be stopped once it runs again."
    )
    keep = (
        f"To keep your work: stop it yourself before then and start it again with at most "
        f"{evidence['quota']} GPUs."
        if slots
        else f"To keep it: stop another of your {'GPU ' if reason == Reason.GPU_QUOTA_EXCEEDED else ''}"
        "containers before then (docker stop NAME); once you are within the quota, nothing is stopped."
    )
    return "\n".join(
        [
            when,
            "Why: " + _over(c, reason, evidence),
            keep + " The keep-alive file does not hold off a quota stop.",
            f"What is kept: {files_kept(kept, c.workspace_mounted)}; start it again once you are within "
            "the quota. What is lost: its running processes; save your work before the stop.",
            more,
        ]
    )
