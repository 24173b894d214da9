"""Rule UpdateResources: bring a container's CPU, memory, swap and pids limits down to its owner's spec.

For a running or created container whose limits were observed (``ContainerObs.limits``), each limit
the owner's spec sets (``EffectivePolicy.resources``) is compared with the container's:

* unset (no limit) -> **LimitsMissing**; above the spec -> **LimitsAboveSpec**: an UpdateResources
  action (``docker update``, in place, no restart) sets the spec's value. The rule is the
  container's, for its update and the changes that wait alike: LimitsMissing when a limit it lacks
  is set or waits, else LimitsAboveSpec;
* at or below the spec: left alone (an admin or the owner chose it). A limit is never raised.

Guards (unknown is not idle):

* **memory** is never lowered below the container's current use plus ``memoryMarginPct``, nor
  below its cgroup's peak use since it started plus the margin (a job that needed that much once
  needs it again): the kernel would reclaim or OOM-kill a live job. The memory (and swap) part waits
  (``BelowUsage``) and the owner is warned once (``LimitsBelowUsage``); it is applied by a later
  pass once the use allows. A running container whose use is unknown waits (``UnknownSignal``).
* **pids** is never set below the current task count, nor below its peak since the container
  started (``pids.peak``, where the kernel keeps one), plus the same margin, and never without at
  least one task of room (a limit equal to the count fails the job's next thread or fork), with the
  same wait and warning. A spec of 0
  or below is no limit (Docker's ``--pids-limit`` reads 0 and -1 as unlimited).
* swap (memory plus swap, ``docker --memory-swap``) is changed only together with a memory limit
  (Docker refuses a swap limit without one) and never below the memory limit, nor below the
  container's current memory plus swap use, nor below its peak since it started, plus the margin
  (the same wait and warning; unknown use waits). While it waits, a memory change keeps the
  container's memory-plus-swap total.
* a memory reservation (``docker --memory-reservation``, a soft limit) above the memory limit the
  update sets comes down to that limit in the same update. Docker takes the update without it, but
  then refuses to start the container ("Minimum memory limit can not be less than memory
  reservation limit"): a created container could never start, a running one not after its next
  stop. Lowering it changes nothing the kernel does: the use never passes the hard limit, so a
  soft limit (v1: what memory pressure reclaims the container down to; v2: ``memory.low``, what
  it is protected up to) at or above it acts as one equal to it. It is never lowered on its own,
  nor below the memory limit.
* CPU: nothing to do when the spec allows at least the host's CPUs (Docker refuses more); a
  container limited by ``CpuQuota``, or with a ``CpuPeriod`` set, keeps its period and gets a quota
  (Docker refuses ``NanoCpus`` with either); otherwise ``NanoCpus``. With the host's CPU count
  unknown (``Snapshot.host_cpus`` None: a snapshot recorded without it) a ``NanoCpus`` limit above
  one CPU waits (``UnknownSignal``): Docker would refuse it, every pass, were it above the count.

Protected and monitoring containers, a container type with ``resourcesExempt`` and an owner with a
``resources`` Exemption are left alone (deferred with why). With ``resourceEnforcement.updateLimits:
false`` the update is only reported (``NotEnforced``). UpdateResources is destructive for the safety
gates: under the budget and the breaker. Pure; called by the planner per container.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from controller.plan.context import Collector, PassContext, host_target
from controller.plan.limits_update import lowered_reservation
from controller.plan.rules.common import shielded
from controller.plan.types import ActionKind, DeferReason, Reason, ResourceUpdate, WarnParams
from controller.snapshot import ContainerObs, ContainerState, ResourceLimits
from desired_state.effective import EffectivePolicy, ExemptFrom, ResourceSpec

UPDATABLE_STATES = frozenset({ContainerState.RUNNING, ContainerState.CREATED})
DEFAULT_CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1000  # Docker refuses a smaller --cpu-quota
_CPU_EPSILON = 1e-6


@dataclass
class _Decision:
    """What one pass would change on one container, and what waits."""

    update: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # limits the update sets that were unset
    above: list[str] = field(default_factory=list)  # limits the update lowers
    waits: list[tuple[DeferReason, str, dict[str, Any]]] = field(default_factory=list)
    missing_waiting: list[str] = field(default_factory=list)  # unset limits whose change waits
    reservation_was: int | None = None  # a memory reservation the update lowers with the memory


def memory_floor(usage_bytes: int, margin_pct: float) -> int:
    """The lowest memory limit a container using ``usage_bytes`` may be given."""
    return int(usage_bytes * (1 + margin_pct / 100.0)) + 1


def highest_use(used: int, peak: int | None) -> int:
    """What a limit must leave room for: the use now, or the cgroup's peak since the container
    started when that is higher (memory, memory plus swap, tasks; None: the kernel keeps no peak)."""
    return used if peak is None else max(used, peak)


def _running_peak(c: ContainerObs, peak: int | None, used: int) -> int | None:
    """The cgroup's ``peak`` since the container started, where it is above the use now (None: no
    higher peak, the kernel keeps none, or the container is not running: a created one's counters
    start afresh when it starts)."""
    return peak if c.state == ContainerState.RUNNING and peak is not None and peak > used else None


def _below_use(c: ContainerObs, now: str, peak: str | None, limit: str, until: str) -> str:
    """Why a limit waits for the container's use: what it uses ``now``, its ``peak`` since it started
    (where higher), and the ``limit`` with the room it would leave; ``until``: what lets it come down."""
    if peak is None:
        return f"{c.name} {now}; its {limit}: not lowered until {until}"
    return (
        f"{c.name} {now} and {peak} since it started; its {limit}: not lowered while it runs "
        "(at its next start its peak starts afresh)"
    )


def pids_floor(tasks: int, margin_pct: float) -> int:
    """The lowest pids limit a container running ``tasks`` tasks may be given: the margin, and at
    least one task of room (a limit equal to the count fails the job's next thread or fork)."""
    return tasks + max(1, math.ceil(tasks * margin_pct / 100.0))


def update_resources(ctx: PassContext, out: Collector, c: ContainerObs, policy: EffectivePolicy) -> None:
    """Propose the UpdateResources action (and any wait or warning) for one container."""
    limits = c.limits
    if limits is None or c.state not in UPDATABLE_STATES:
        return  # not inspected (nothing known to compare), or a state docker update does not serve
    if not ctx.glob.update_limits.value:
        return  # reported once for the host by report_limits
    spec = policy.resources
    if not out_of_spec(limits, spec, ctx.snapshot.host_cpus):
        return  # (the common case once limits were brought down: no decision, no message written)
    decision = _decide(c, limits, spec, ctx.glob.memory_margin_pct.value, ctx.snapshot.host_cpus)
    if not decision.update and not decision.waits:
        return
    # The container's rule, for its update and its waits alike: a limit it lacks (set now or waiting)
    # makes it LimitsMissing, else one above the spec LimitsAboveSpec.
    rule = Reason.LIMITS_MISSING if decision.missing or decision.missing_waiting else Reason.LIMITS_ABOVE_SPEC
    if shielded(ctx, out, c, policy, rule, ExemptFrom.RESOURCES):
        return
    target = ctx.target(c)
    if spec.exempt.value:
        out.defer(
            target,
            rule,
            DeferReason.EXEMPT,
            f"{c.name}: opted out of the resource limits ({spec.exempt.source})",
            evidence={"exempt_source": spec.exempt.source},
        )
        return
    evidence = _evidence(c, limits, spec, ctx.glob.memory_margin_pct.value)
    memory_warned = False
    for why, message, extra in decision.waits:
        out.defer(target, rule, why, message, evidence={**evidence, **extra})
        if why == DeferReason.BELOW_USAGE and not (memory_warned and "memory_swap_wanted_bytes" in extra):
            # One notice about memory: a swap total below the use follows from the memory's.
            memory_warned = memory_warned or "memory_wanted_bytes" in extra
            _warn_below_usage(ctx, out, c, message, extra, spec)
    if not decision.update:
        return
    params = ResourceUpdate(memory_margin_pct=ctx.glob.memory_margin_pct.value, **decision.update)
    values = ",".join(f"{k}={v}" for k, v in sorted(decision.update.items()))
    out.act(
        ActionKind.UPDATE_RESOURCES,
        target,
        rule,
        f"bring {c.name} (owner {c.owner}) under its limits in place: {_summary(decision)}",
        due_at=ctx.now,
        key=f"UpdateResources:{c.id}:{values}",
        evidence={**evidence, "missing": decision.missing, "above_spec": decision.above},
        params=params,
    )


REPORT_NAMES = 20


def report_limits(ctx: PassContext, out: Collector) -> None:
    """With ``updateLimits: false``: one deferral for the host naming the containers whose limits
    are unset or above their owner's (``describe container`` shows each one's detail).

    One line, not one per container: on a host where nothing was ever limited that would be every
    container, every pass, for a report nobody acts on yet.
    """
    if ctx.glob.update_limits.value:
        return
    names: list[str] = []
    host_cpus = ctx.snapshot.host_cpus
    for c in ctx.containers:
        limits = c.limits
        if limits is None or c.state not in UPDATABLE_STATES:
            continue  # (the common case, checked before the policy is looked up)
        policy = ctx.policies.get(c.id)
        if policy is None:
            continue
        if policy.protected.value or policy.monitoring.value or policy.resources.exempt.value:
            continue
        if policy.exemption(ExemptFrom.RESOURCES) is not None:
            continue
        if out_of_spec(limits, policy.resources, host_cpus):
            names.append(c.name)
    if not names:
        return
    shown = ", ".join(names[:REPORT_NAMES]) + (
        f" and {len(names) - REPORT_NAMES} more" if len(names) > REPORT_NAMES else ""
    )
    out.defer(
        host_target(),
        Reason.LIMITS_ABOVE_SPEC,
        DeferReason.NOT_ENFORCED,
        f"{len(names)} containers have a limit unset or above their owner's ({shown}); only reported "
        f"(updateLimits: false in {ctx.glob.update_limits.source})",
        evidence={"containers": len(names), "names": names[:REPORT_NAMES]},
    )


def out_of_spec(limits: ResourceLimits, spec: ResourceSpec, host_cpus: int | None) -> bool:
    """Whether :func:`_decide` would change a limit or hold a change back (``update or waits``),
    without reading the container's use or writing a message.

    Memory, swap and pids past their first test (a limit the spec sets, unset or above it) always
    either change or wait; swap is judged against the memory limit as it is (when the memory limit
    changes, that alone decides). The CPU part may change nothing past its first test (a host with
    no more CPUs, a quota Docker cannot lower): it is asked. ``tests/unit/test_plan_pass_fast_paths.py``
    holds this equal to the decision.
    """
    memory, want_memory = limits.memory_bytes, spec.memory_bytes.value
    if want_memory is not None and (memory is None or memory > want_memory):
        return True
    want_swap = spec.memory_swap_bytes.value
    if memory is not None and want_swap is not None:
        swap = limits.total_swap_bytes
        if swap is None or swap > max(want_swap, memory):
            return True
    return _pids_out(limits, spec) or _cpus_out(limits, spec, host_cpus)


def limits_out_of_spec(
    limits: ResourceLimits, spec: ResourceSpec, host_cpus: int | None
) -> tuple[bool, bool, bool]:
    """Which of the CPU, memory and pids limits the rule changes or holds a change of: a limit the
    spec sets, unset or above it, that the rule would lower (not a CPU limit the host's CPUs already
    bound, nor a pids spec of 0 or below, which is no limit). For the marks of ``ds01ctl``."""
    memory, want_memory = limits.memory_bytes, spec.memory_bytes.value
    memory_out = want_memory is not None and (memory is None or memory > want_memory)
    return _cpus_out(limits, spec, host_cpus), memory_out, _pids_out(limits, spec)


def _pids_out(limits: ResourceLimits, spec: ResourceSpec) -> bool:
    want_pids, pids = spec.pids_limit.value, limits.pids_limit
    return want_pids is not None and want_pids > 0 and (pids is None or pids > want_pids)


def _cpus_out(limits: ResourceLimits, spec: ResourceSpec, host_cpus: int | None) -> bool:
    want_cpus, cpus = spec.max_cpus.value, limits.cpus
    if want_cpus is None or (cpus is not None and cpus <= want_cpus + _CPU_EPSILON):
        return False
    d = _Decision()
    _cpu(d, limits, spec, host_cpus, "")
    return bool(d.update or d.waits)


def _decide(
    c: ContainerObs, limits: ResourceLimits, spec: ResourceSpec, margin_pct: float, host_cpus: int | None
) -> _Decision:
    d = _Decision()
    _cpu(d, limits, spec, host_cpus, c.name)
    new_memory = _memory(d, c, limits, spec, margin_pct)
    _swap(d, c, limits, spec, new_memory, margin_pct)
    _reservation(d, limits)
    _pids(d, c, limits, spec, margin_pct)
    return d


def _mark(d: _Decision, name: str, observed: object) -> None:
    (d.missing if observed is None else d.above).append(name)


def _wait(
    d: _Decision, name: str, observed: object, why: DeferReason, message: str, evidence: dict[str, Any]
) -> None:
    """Hold back the change of limit ``name`` (unset when ``observed`` is None) for this pass."""
    if observed is None:
        d.missing_waiting.append(name)
    d.waits.append((why, message, evidence))


def _cpu(d: _Decision, limits: ResourceLimits, spec: ResourceSpec, host_cpus: int | None, name: str) -> None:
    want = spec.max_cpus.value
    have = limits.cpus
    if want is None or (have is not None and have <= want + _CPU_EPSILON):
        return
    if host_cpus is not None and want >= host_cpus and (have is None or have >= host_cpus):
        # The host has no more CPUs than the spec allows: nothing to limit (and Docker refuses a
        # --cpus above the host's count).
        return
    if limits.nano_cpus is None and (limits.cpu_quota_us is not None or limits.cpu_period_us is not None):
        # Docker refuses NanoCpus once CpuQuota or CpuPeriod is set (and a quota with NanoCpus set).
        period = limits.cpu_period_us or DEFAULT_CPU_PERIOD_US
        quota = max(MIN_CPU_QUOTA_US, int(want * period))
        if limits.cpu_quota_us is not None and 0 < limits.cpu_quota_us <= quota:
            # A short period cannot express the spec (Docker's smallest quota): nothing lower to set,
            # and a no-op update each pass would take a slot of the destructive budget.
            return
        _mark(d, "cpus", have)
        d.update["cpu_quota_us"] = quota
        d.update["cpu_period_us"] = period
    elif host_cpus is None and want > 1:
        # Docker refuses NanoCpus above its CPU count ("Range of CPUs is from 0.01 to N.00"), and
        # the count is not known: sent blind, a limit above it would fail every pass. Every host
        # has one CPU, so a limit of at most one is sent; a quota (above) is never refused.
        _wait(
            d,
            "cpus",
            have,
            DeferReason.UNKNOWN_SIGNAL,
            f"{name}: CPU limit {_cpus(have)} -> {want:g} waits: the host's CPU count is unknown, and "
            "Docker refuses a limit above it",
            {"host_cpus": None, "cpus_wanted": want},
        )
    else:
        _mark(d, "cpus", have)
        d.update["nano_cpus"] = int(want * 1e9)


def _cpus(cpus: float | None) -> str:
    return "unlimited" if cpus is None else f"{cpus:g}"


def _usage(c: ContainerObs, what: str) -> tuple[int | None, str | None]:
    """(current use, None), or (None, why unknown); a created container uses nothing."""
    if c.state == ContainerState.CREATED:
        return 0, None
    s = c.signals
    if s is None:
        return None, "no signals read"
    if what == "memory":
        return s.memory_bytes, (s.memory_unknown or "not read") if s.memory_bytes is None else None
    if what == "memory_swap":
        used = s.memory_swap_bytes
        return used, (s.memory_swap_unknown or "not read") if used is None else None
    return s.pids_current, (s.pids_unknown or "not read") if s.pids_current is None else None


def _memory(
    d: _Decision, c: ContainerObs, limits: ResourceLimits, spec: ResourceSpec, margin_pct: float
) -> int | None:
    """The memory limit after this pass (the current one when it does not change)."""
    want = spec.memory_bytes.value
    have = limits.memory_bytes
    if want is None or (have is not None and have <= want):
        return have
    used, unknown = _usage(c, "memory")
    if used is None:
        _wait(
            d,
            "memory",
            have,
            DeferReason.UNKNOWN_SIGNAL,
            f"{c.name}: memory limit {_mib(have)} -> {_mib(want)} waits: "
            f"its memory use is unknown ({unknown})",
            {"memory_unknown": unknown},
        )
        return have
    # The peak since it started: a job that needed that much once (a data load, an evaluation)
    # needs it again, and a lower limit OOM-kills it then.
    peak = _running_peak(c, c.signals.memory_peak_bytes if c.signals is not None else None, used)
    floor = memory_floor(highest_use(used, peak), margin_pct)
    if want < floor:
        evidence = {"memory_used_bytes": used, "memory_floor_bytes": floor, "memory_wanted_bytes": want}
        if peak is not None:
            evidence["memory_peak_bytes"] = peak
        message = _below_use(
            c,
            f"uses {_mib(used)} of memory",
            f"used up to {_mib(peak)}" if peak is not None else None,
            f"limit of {_mib(want)} ({spec.memory_bytes.source}) is below that plus {margin_pct:g} % "
            f"({_mib(floor)})",
            "it uses less",
        )
        _wait(d, "memory", have, DeferReason.BELOW_USAGE, message, evidence)
        return have
    _mark(d, "memory", have)
    d.update["memory_bytes"] = want
    return want


def _swap(
    d: _Decision,
    c: ContainerObs,
    limits: ResourceLimits,
    spec: ResourceSpec,
    new_memory: int | None,
    margin_pct: float,
) -> None:
    if new_memory is None:
        return  # no memory limit: Docker takes no swap limit without one
    want = spec.memory_swap_bytes.value
    changed_memory = "memory_bytes" in d.update
    # What the swap total would be after a memory change that left MemorySwap alone.
    have = limits.total_swap_bytes
    # Keep the swap total the container had (never raise it); Docker needs it sent with memory.
    keep = -1 if have is None else max(have, new_memory)
    if want is None:
        if changed_memory:
            d.update["memory_swap_bytes"] = keep
        return
    want = max(want, new_memory)
    if have is not None and have <= want:
        if changed_memory:
            d.update["memory_swap_bytes"] = max(have, new_memory)
        return
    if not _swap_fits(d, c, have, want, spec, margin_pct):
        if changed_memory:
            d.update["memory_swap_bytes"] = keep
        return
    _mark(d, "memory_swap", have)
    d.update["memory_swap_bytes"] = want
    if not changed_memory:
        d.update["memory_bytes"] = new_memory  # Docker needs the memory limit with the swap limit


def _swap_fits(
    d: _Decision, c: ContainerObs, have: int | None, want: int, spec: ResourceSpec, margin_pct: float
) -> bool:
    """Whether the memory-plus-swap total may come down to ``want``: never below what the container
    has in memory and swap now plus the margin (pages swapped out have nowhere else to go: the
    kernel OOM-kills the job once it touches them). Otherwise the wait is noted in ``d``."""
    used, unknown = _usage(c, "memory_swap")
    if used is None:
        _wait(
            d,
            "memory_swap",
            have,
            DeferReason.UNKNOWN_SIGNAL,
            f"{c.name}: memory+swap limit {_mib(have)} -> {_mib(want)} waits: "
            f"its memory plus swap use is unknown ({unknown})",
            {"memory_swap_unknown": unknown},
        )
        return False
    # As for memory: a job that needed that much memory and swap once needs it again, and pages
    # with nowhere to go get it OOM-killed then.
    peak = _running_peak(c, c.signals.memory_swap_peak_bytes if c.signals is not None else None, used)
    floor = memory_floor(highest_use(used, peak), margin_pct)
    if want < floor:
        evidence = {
            "memory_swap_used_bytes": used,
            "memory_swap_floor_bytes": floor,
            "memory_swap_wanted_bytes": want,
        }
        if peak is not None:
            evidence["memory_swap_peak_bytes"] = peak
        message = _below_use(
            c,
            f"uses {_mib(used)} of memory plus swap",
            f"used up to {_mib(peak)}" if peak is not None else None,
            f"memory+swap limit of {_mib(want)} ({spec.memory_swap_bytes.source}) is below that plus "
            f"{margin_pct:g} % ({_mib(floor)})",
            "it uses less",
        )
        _wait(d, "memory_swap", have, DeferReason.BELOW_USAGE, message, evidence)
        return False
    return True


def _reservation(d: _Decision, limits: ResourceLimits) -> None:
    """Bring a reservation above the memory limit the update sets down to that limit.

    Only with a memory limit in the update (so it never makes an update by itself, and ``out_of_spec``
    need not know of it); the update sets the memory whenever it lowers the memory or the swap.
    """
    lowered = lowered_reservation(d.update.get("memory_bytes"), limits.memory_reservation_bytes)
    if lowered is not None:
        d.update["memory_reservation_bytes"] = lowered
        d.reservation_was = limits.memory_reservation_bytes


def _pids(
    d: _Decision, c: ContainerObs, limits: ResourceLimits, spec: ResourceSpec, margin_pct: float
) -> None:
    want = spec.pids_limit.value
    have = limits.pids_limit
    if want is None or want <= 0:
        return  # Docker reads 0 and -1 as unlimited: sending one would remove the container's limit
    if have is not None and have <= want:
        return
    used, unknown = _usage(c, "pids")
    if used is None:
        _wait(
            d,
            "pids",
            have,
            DeferReason.UNKNOWN_SIGNAL,
            f"{c.name}: pids limit -> {want} waits: its task count is unknown ({unknown})",
            {"pids_unknown": unknown},
        )
        return
    # As for memory: a job that ran that many tasks once (an epoch's data loaders) starts them
    # again, and the fork or thread beyond the limit fails then.
    peak = _running_peak(c, c.signals.pids_peak if c.signals is not None else None, used)
    floor = pids_floor(highest_use(used, peak), margin_pct)
    if want < floor:
        evidence: dict[str, Any] = {"pids_current": used, "pids_floor": floor, "pids_wanted": want}
        if peak is not None:
            evidence["pids_peak"] = peak
        message = _below_use(
            c,
            f"runs {used} tasks",
            f"ran up to {peak}" if peak is not None else None,
            f"pids limit of {want} ({spec.pids_limit.source}) leaves less than {margin_pct:g} % (at least "
            f"one task) of room over that ({floor})",
            "it runs fewer",
        )
        _wait(d, "pids", have, DeferReason.BELOW_USAGE, message, evidence)
        return
    _mark(d, "pids", have)
    d.update["pids_limit"] = want


def _warn_below_usage(
    ctx: PassContext, out: Collector, c: ContainerObs, message: str, extra: dict[str, Any], spec: ResourceSpec
) -> None:
    what, wanted = next(
        (what, extra[key])
        for what, key in (
            ("memory", "memory_wanted_bytes"),
            ("swap", "memory_swap_wanted_bytes"),
            ("pids", "pids_wanted"),
        )
        if key in extra
    )
    out.act(
        ActionKind.WARN_OWNER,
        ctx.target(c),
        Reason.LIMITS_BELOW_USAGE,
        f"{message}; please reduce it, the limit is applied once it fits",
        due_at=ctx.now,
        key=f"WarnOwner:{c.id}:LimitsBelowUsage:{what}={wanted}",
        evidence=extra,
        params=WarnParams(
            warning_key=f"LimitsBelowUsage:{what}",
            notice=limit_notice(c, what, extra, spec, ctx.glob.memory_margin_pct.value),
        ),
    )


def limit_notice(
    c: ContainerObs, what: str, extra: dict[str, Any], spec: ResourceSpec, margin_pct: float
) -> str:
    """The owner's notice when a limit waits because the container uses too much (params ``notice``):
    what is over, with the figures and where the limit comes from; that nothing is stopped and the
    limit is applied in place once the use allows; what the limit means then; where to see more."""
    if what == "pids":
        used, want, src = extra["pids_current"], extra["pids_wanted"], spec.pids_limit.source
        over = (
            f"Your container {c.name} runs {used} processes and threads; its pids limit of {want} ({src}) "
            f"would leave less than {margin_pct:g} % of room."
        )
        means = (
            f"Once applied, it cannot run more than {want} processes and threads: a new one fails to start."
        )
        fix = "end processes you no longer need (e.g. idle workers or notebooks' kernels)"
    else:
        swap = what == "swap"
        used = extra["memory_swap_used_bytes" if swap else "memory_used_bytes"]
        want = extra["memory_swap_wanted_bytes" if swap else "memory_wanted_bytes"]
        src = (spec.memory_swap_bytes if swap else spec.memory_bytes).source
        kind = "memory plus swap" if swap else "memory"
        over = (
            f"Your container {c.name} uses {_size(used)} of {kind}; its {kind} limit of {_size(want)} "
            f"({src}) is below that plus a {margin_pct:g} % margin."
        )
        means = (
            f"Once applied, it cannot use more than {_size(want)} of {kind}: a process that needs more is "
            "killed by the kernel (out of memory)."
        )
        fix = "free memory (end processes or drop data you no longer need)"
    return "\n".join(
        [
            over,
            "Nothing is stopped: the limit waits, and is applied in place (no restart) once the container "
            "uses less. " + means,
            f"What to do: {fix}, or save your work and plan for the limit.",
            f"More: ds01ctl describe container {c.name}; ds01ctl describe user {c.owner}",
        ]
    )


def _size(n_bytes: int) -> str:
    """A size as people read it: 7.5GiB, 900MiB."""
    if n_bytes >= 1 << 30:
        return f"{n_bytes / (1 << 30):.1f}".removesuffix(".0") + "GiB"
    return f"{n_bytes / (1 << 20):.0f}MiB"


def _evidence(
    c: ContainerObs, limits: ResourceLimits, spec: ResourceSpec, margin_pct: float
) -> dict[str, Any]:
    # Compact (describe prints it on one line); the source of each desired value is in describe's
    # Resources section and in the plan's policy.
    s = c.signals
    return {
        "observed": {
            "cpus": limits.cpus,
            "memory": limits.memory_bytes,
            "swap": limits.total_swap_bytes,
            "pids": limits.pids_limit,
            # Only when set (rarely): the update lowers it with the memory when it is above.
            **(
                {"memory_reservation": limits.memory_reservation_bytes}
                if limits.memory_reservation_bytes is not None
                else {}
            ),
        },
        "desired": {
            "cpus": spec.max_cpus.value,
            "memory": spec.memory_bytes.value,
            "swap": spec.memory_swap_bytes.value,
            "pids": spec.pids_limit.value,
        },
        "usage": {
            "memory": s.memory_bytes if s is not None else None,
            "pids": s.pids_current if s is not None else None,
        },
        "margin_pct": margin_pct,
    }


def _summary(d: _Decision) -> str:
    parts = []
    u = d.update
    if "nano_cpus" in u:
        parts.append(f"cpus {u['nano_cpus'] / 1e9:g}")
    if "cpu_quota_us" in u:
        parts.append(f"cpus {u['cpu_quota_us'] / u['cpu_period_us']:g} (quota)")
    if "memory_bytes" in u:
        parts.append(f"memory {_mib(u['memory_bytes'])}")
    if "memory_swap_bytes" in u:
        swap = u["memory_swap_bytes"]
        parts.append("memory+swap unlimited" if swap == -1 else f"memory+swap {_mib(swap)}")
    if "memory_reservation_bytes" in u:
        parts.append(
            f"memory reservation {_mib(u['memory_reservation_bytes'])} "
            f"(from {_mib(d.reservation_was)}: above the new memory limit)"
        )
    if "pids_limit" in u:
        parts.append(f"pids {u['pids_limit']}")
    unset = f"unset: {', '.join(d.missing)}" if d.missing else ""
    above = f"above the spec: {', '.join(d.above)}" if d.above else ""
    why = "; ".join(x for x in (unset, above) if x)
    return ", ".join(parts) + (f" ({why})" if why else "")


def _mib(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "unlimited"
    if n_bytes >= 1 << 30 and n_bytes % (1 << 30) == 0:
        return f"{n_bytes >> 30}GiB"
    return f"{n_bytes / (1 << 20):.1f}MiB"
