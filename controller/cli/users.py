"""``ds01ctl`` views of the resource limits and quotas: limit columns, the describe sections, ``get users``.

* :func:`limit_cells`: the CPU / MEM / PIDS limit columns of ``get containers -o wide``; a ``*``
  marks a limit that is unset or above the owner's spec (what UpdateResources would change; never
  on a container the rule leaves alone).
* :func:`limits_section`: ``describe container``'s desired vs observed limits, with the source of
  each desired value and the container's use.
* :func:`user_rows` / :func:`users_table`: ``get users`` (kubectl's ``get resourcequota`` is the
  model): per owner, group, containers used/allowed, GPU-equivalents used/allowed, memory in use,
  CPU limits summed, and what is over.
* :func:`quota_section`: the same for ``describe user``.
* :func:`aggregate_cell` / :func:`aggregate_section`: the aggregate caps (``get users -o wide``'s
  AGG column, ``describe user``'s Aggregate section): the summed CPU limits, memory and tasks
  against the owner's slice caps, and the containers outside the owner's slice. The figures are the
  rule's own (:func:`controller.plan.rules.aggregate.aggregate_figures`), never re-derived here.

Reads the view (snapshot, effective policies, plan); decides nothing (the planner's rules do).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.cli.render import UNKNOWN, Sections, Table, clean, fmt_bytes
from controller.cli.view import View
from controller.memory import ControllerMemory
from controller.plan.context import UNKNOWN_OWNER, Collector, PassContext
from controller.plan.rules.aggregate import AggregateFigures, Sum, aggregate_figures, evidence_of, owners
from controller.plan.rules.quotas import held_gpu_equivalents, mig_shares
from controller.plan.rules.resources import UPDATABLE_STATES, limits_out_of_spec, update_resources
from controller.plan.types import Action, ActionKind, DeferReason, Deferred, Reason
from controller.snapshot import ContainerObs, ContainerState, ResourceLimits
from desired_state.effective import EffectivePolicy, ExemptFrom, ResourceSpec, Sourced

LIVE = frozenset({ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING})
OVER_MARK = "*"


def _cpus(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def shielded_from_limits(pol: EffectivePolicy, now: datetime | None) -> str | None:
    """Why the UpdateResources rule leaves this container's limits alone (``None``: it does not):
    protected, monitoring, or its owner's unexpired ``resources`` exemption (the rule's own
    ``shielded``); a type opted out (``resourcesExempt``) is told apart by the callers."""
    if pol.protected.value:
        return f"protected ({pol.protected.source})"
    if pol.monitoring.value:
        return f"part of the monitoring stack ({pol.monitoring.source})"
    ex = pol.exemption(ExemptFrom.RESOURCES)
    if ex is not None and (ex.expires_at is None or now is None or ex.expires_at > now):
        return f"exempt from resources ({ex.name})"
    return None


def limit_cells(
    c: ContainerObs, pol: EffectivePolicy | None, now: datetime | None = None, host_cpus: int | None = None
) -> list[str]:
    """CPU, MEM, PIDS limit cells: ``-`` no limit, ``unknown`` not observed, ``*`` unset or above the
    spec where the rule would lower it (:func:`limits_out_of_spec`: not a CPU limit the host's
    ``host_cpus`` already bound, nor a pids spec of 0 or below; never on a container the rule
    leaves alone: stopped, opted out, protected, monitoring, exempt)."""
    lim = c.limits
    if lim is None:
        return [UNKNOWN, UNKNOWN, UNKNOWN]
    # The rule judges the limits of a running or created container only (a stopped one's are judged
    # when it runs again): a mark on an exited one would promise a change nothing makes.
    left_alone = (
        pol is None
        or c.state not in UPDATABLE_STATES
        or pol.resources.exempt.value
        or shielded_from_limits(pol, now) is not None
    )
    spec = pol.resources if pol is not None and not left_alone else ResourceSpec()
    marks = limits_out_of_spec(lim, spec, host_cpus)
    texts = [
        _cpus(lim.cpus),
        fmt_bytes(lim.memory_bytes),
        "-" if lim.pids_limit is None else str(lim.pids_limit),
    ]
    return [text + (OVER_MARK if over else "") for text, over in zip(texts, marks, strict=True)]


def limits_section(
    c: ContainerObs,
    pol: EffectivePolicy | None,
    s: Sections,
    update_limits: Sourced[bool] | None = None,
    now: datetime | None = None,
) -> None:
    """Desired vs observed limits with provenance, and the container's use; the footnote says
    whether the controller lowers them (``resourceEnforcement.updateLimits``), or that it leaves
    this container's alone."""
    s.heading("Resources")
    lim = c.limits
    if lim is None:
        s.line("limits not observed (no inspect)", 2)
        return
    if pol is None:
        s.line("desired limits unknown: the policy did not load", 2)
    spec = pol.resources if pol is not None else ResourceSpec()
    sig = c.signals
    t = Table(["LIMIT", "OBSERVED", "DESIRED", "SOURCE", "IN USE"])
    mem_use = (
        "-" if sig is None else (fmt_bytes(sig.memory_bytes) if sig.memory_bytes is not None else "unknown")
    )
    pids_use = "-" if sig is None else (str(sig.pids_current) if sig.pids_current is not None else "unknown")
    rows: list[tuple[str, str, str, Any, str]] = [
        ("cpus", _cpus(lim.cpus), _cpus(spec.max_cpus.value), spec.max_cpus, "-"),
        (
            "memory",
            fmt_bytes(lim.memory_bytes),
            fmt_bytes(spec.memory_bytes.value),
            spec.memory_bytes,
            mem_use,
        ),
        (
            "memory+swap",
            fmt_bytes(lim.total_swap_bytes),
            fmt_bytes(spec.memory_swap_bytes.value),
            spec.memory_swap_bytes,
            "-",
        ),
        (
            "pids",
            "-" if lim.pids_limit is None else str(lim.pids_limit),
            # A spec of 0 or below is no limit, as the rule reads it (Docker's unlimited).
            "-"
            if spec.pids_limit.value is None or spec.pids_limit.value <= 0
            else str(spec.pids_limit.value),
            spec.pids_limit,
            pids_use,
        ),
    ]
    for name, have, want, sourced, use in rows:
        t.add([name, have, want, clean(sourced.source, 80), use])
    s.table(t)
    extra = [("cpuset", lim.cpuset_cpus or "-"), ("shm", fmt_bytes(lim.shm_size_bytes))]
    extra.append(("cgroup parent", clean(lim.cgroup_parent, 120) or "- (the engine's default)"))
    if spec.exempt.value:
        extra.append(("opted out", clean(spec.exempt.source, 120)))
    s.fields(extra, 2)
    shield = shielded_from_limits(pol, now) if pol is not None else None
    if spec.exempt.value:
        note = "the controller never changes this container's limits: opted out"
    elif shield is not None:
        note = f"the controller never changes this container's limits: {clean(shield, 160)}"
    elif c.state not in UPDATABLE_STATES:
        note = (
            f"the controller neither lowers nor reports the limits of a container {c.state.value}; it"
            " judges them while the container runs, or is created and not yet started"
        )
    else:
        note = _enforcement_note(update_limits)
    s.line(f"('-' is no limit; {note})", 2)


def _enforcement_note(update_limits: Sourced[bool] | None) -> str:
    if update_limits is None:
        return "whether the controller lowers a limit is unknown: the policy did not load"
    src = clean(update_limits.source, 80)
    if update_limits.value:
        return (
            "the controller lowers a limit that is unset or above the desired one in place "
            f"(resourceEnforcement.updateLimits: true, {src})"
        )
    return (
        f"a limit unset or above the desired one is only reported: resourceEnforcement.updateLimits is "
        f"false ({src}); resourceEnforcement.updateLimits: true lowers it in place"
    )


def limits_deferral(view: View, c: ContainerObs, pol: EffectivePolicy | None) -> Deferred | None:
    """With ``updateLimits: false``: this container's share of the plan's one ``NotEnforced`` report
    for the host, with what the UpdateResources rule would do to it were it on (the rule's own
    decision, run for this container alone); ``None`` when it would change nothing."""
    if view.plan is None or view.desired is None or pol is None:
        return None
    glob = view.desired.global_policy
    if glob.update_limits.value:
        return None  # the plan's own UpdateResources action and waits are the container's items
    report = next(
        (
            d
            for d in view.plan.deferred
            if d.why is DeferReason.NOT_ENFORCED
            and d.rule in (Reason.LIMITS_MISSING, Reason.LIMITS_ABOVE_SPEC)
        ),
        None,
    )
    if report is None:
        return None
    on = glob.model_copy(update={"update_limits": Sourced(value=True, source=glob.update_limits.source)})
    ctx = PassContext.build(view.snapshot, view.now, on, ControllerMemory())
    out = Collector()
    update_resources(ctx, out, c, pol)
    would = [a for a in out.actions if a.kind is ActionKind.UPDATE_RESOURCES]
    waits = [d for d in out.deferred if d.rule in (Reason.LIMITS_MISSING, Reason.LIMITS_ABOVE_SPEC)]
    if would:
        first: Action | Deferred = would[0]
        what = f"would {would[0].message}"
    elif waits and all(d.why in _LIMIT_WAITS for d in waits):
        first = waits[0]
        what = "would wait: " + "; ".join(d.message for d in waits)
    else:
        return None  # nothing to lower, or shielded (protected, exempt): the rule says so when on
    rule = first.reason if isinstance(first, Action) else first.rule
    return Deferred(
        target=first.target,
        rule=rule,
        why=DeferReason.NOT_ENFORCED,
        message=(
            f"{what}; only reported (updateLimits: false in {glob.update_limits.source}); "
            "resourceEnforcement.updateLimits: true lowers it in place"
        ),
        evidence=first.evidence,
    )


# What the UpdateResources rule waits for before a limit can be lowered (report_limits counts these).
_LIMIT_WAITS = frozenset({DeferReason.BELOW_USAGE, DeferReason.UNKNOWN_SIGNAL})


@dataclass(frozen=True)
class UserRow:
    user: str
    group: str
    containers: int
    containers_allowed: int | None
    gpu_equivalents: float
    gpu_unknown: bool
    gpu_allowed: float | None
    memory_in_use: int | None
    cpu_limits: float | None
    over: tuple[str, ...]
    aggregate: AggregateFigures | None = None  # None: owner unknown or no policy
    # The policy the quotas were read from, and the container it was resolved for (owner_policy).
    policy: EffectivePolicy | None = None
    policy_of: str | None = None


def _aggregate(
    view: View, owner: str, owned: list[ContainerObs], pol: EffectivePolicy | None
) -> AggregateFigures | None:
    if pol is None or owner == "unknown":
        return None
    policies: dict[str, EffectivePolicy] = {}
    for c in owned:
        p = view.effective(c)
        if p is not None:
            policies[c.id] = p
    return aggregate_figures(owner, owned, pol, policies)


def _quota_context(view: View) -> PassContext | None:
    """The planner's pass context for this view, so ``get users`` counts exactly as the quota rule
    does (owners only claimed by a label count for nobody while labels are not trusted; a MIG
    device of a GPU held whole is part of that GPU), with the live containers' policies (the
    quota rule's grouping, :func:`owners`, needs them). None: no policy loaded."""
    if view.desired is None:
        return None
    ctx = PassContext.build(view.snapshot, view.now, view.desired.global_policy, ControllerMemory())
    for c in ctx.containers:
        if c.state in LIVE:
            pol = view.effective(c)
            if pol is not None:
                ctx.policies[c.id] = pol
    return ctx


def owner_policy(view: View, owner: str) -> tuple[EffectivePolicy | None, ContainerObs | None]:
    """The policy the quota rule reads for ``owner``, and the container it is resolved for: that of
    their newest live container that counts for them (the rule's :func:`owners`, oldest first; a
    container that only claims them while labels are not trusted is not theirs). With none, the
    policy of a new atomic container of theirs (:meth:`View.user_policy`), and no container."""
    ctx = _quota_context(view)
    owned = owners(ctx).get(owner) if ctx is not None else None
    if ctx is not None and owned:
        return ctx.policies[owned[-1].id], owned[-1]
    return view.user_policy(owner), None


def user_rows(view: View) -> list[UserRow]:
    """One row per owner of a live container, sorted by name (owner ``unknown`` included, never over:
    it collects the containers that count for nobody)."""
    ctx = _quota_context(view)
    shares = mig_shares(ctx) if ctx is not None else {}
    counted = owners(ctx) if ctx is not None else {}
    by_owner: dict[str, list[ContainerObs]] = {}
    for c in view.snapshot.containers:
        if c.state in LIVE:
            owner = (ctx.counted_owner(c) if ctx is not None else c.owner) or UNKNOWN_OWNER
            by_owner.setdefault(owner, []).append(c)
    rows: list[UserRow] = []
    for owner in sorted(by_owner):
        owned = by_owner[owner]
        # The quotas are read from the policy of the owner's newest counted container, as the
        # quota rule reads them (not the last one in the snapshot's order).
        newest = counted[owner][-1] if counted.get(owner) else max(owned, key=_started)
        pol = ctx.policies.get(newest.id) if ctx is not None else view.effective(newest)
        spec = pol.resources if pol is not None else ResourceSpec()
        holders = [c for c in owned if c.has_gpu]
        gpu, gpu_unknown = 0.0, bool(holders)  # no policy: the devices' shares are not judged
        if ctx is not None:
            # The union of the owner's units, as the GPU quota counts them: a GPU two of the
            # containers share counts once.
            gpu, missing = held_gpu_equivalents(ctx, holders, shares)
            gpu_unknown = bool(missing)
        memory: int | None = 0
        cpu: float | None = 0.0
        for c in owned:
            used = c.signals.memory_bytes if c.signals is not None else None
            memory = None if memory is None or used is None else memory + used
            lim: ResourceLimits | None = c.limits
            cpus = lim.cpus if lim is not None else None
            cpu = None if cpu is None or cpus is None else cpu + cpus
        over: list[str] = []
        allowed = spec.max_containers_per_user.value
        if owner != UNKNOWN_OWNER and allowed is not None and len(owned) > allowed:
            over.append("containers")
        gpu_allowed = spec.max_gpu_equivalents.value
        if owner != UNKNOWN_OWNER and gpu_allowed is not None and gpu > gpu_allowed + 1e-9:
            over.append("gpus")
        rows.append(
            UserRow(
                user=owner,
                group=pol.group.value if pol is not None else UNKNOWN,
                containers=len(owned),
                containers_allowed=allowed,
                gpu_equivalents=round(gpu, 3),
                gpu_unknown=gpu_unknown,
                gpu_allowed=gpu_allowed,
                memory_in_use=memory,
                cpu_limits=cpu,
                over=tuple(over),
                aggregate=_aggregate(view, owner, owned, pol),
                policy=pol,
                policy_of=newest.name,
            )
        )
    return rows


def _started(c: ContainerObs) -> tuple[datetime, str]:
    """The quota rule's order of an owner's containers (:func:`owners`): by start, then id."""
    return (c.started_at or c.created_at, c.id)


def _of(used: str, allowed: float | int | None) -> str:
    return f"{used}/{'-' if allowed is None else f'{allowed:g}'}"


def aggregate_cell(f: AggregateFigures | None) -> str:
    """``-`` no caps (or not judged), ``ok``, else ``over(cpu,memory)`` / ``bypass(n)`` / ``unknown``."""
    if f is None or not f.has_caps:
        return "-"
    marks = []
    if f.over:
        marks.append(f"over({','.join(f.over)})")
    if f.bypassing:
        marks.append(f"bypass({len(f.bypassing)})")
    if not marks and any(not s.judged for s in (f.cpus, f.memory_bytes, f.tasks) if s.cap is not None):
        marks.append(UNKNOWN)
    return ",".join(marks) or "ok"


def users_table(rows: Sequence[UserRow], wide: bool = False) -> Table:
    t = Table(
        [
            "USER",
            "GROUP",
            "CONTAINERS",
            "GPU-EQ",
            "MEM-IN-USE",
            "CPU-LIMITS",
            "OVER",
            *(["AGG"] if wide else []),
        ]
    )
    for r in rows:
        gpu = f"{r.gpu_equivalents:g}" + ("+?" if r.gpu_unknown else "")
        t.add(
            [
                clean(r.user, 32),
                clean(r.group, 32),
                _of(str(r.containers), r.containers_allowed),
                _of(gpu, r.gpu_allowed),
                fmt_bytes(r.memory_in_use) if r.memory_in_use is not None else "unknown",
                "unlimited" if r.cpu_limits is None else f"{r.cpu_limits:g}",
                ",".join(r.over) or "-",
                *([aggregate_cell(r.aggregate)] if wide else []),
            ]
        )
    return t


def user_item(r: UserRow) -> dict[str, Any]:
    return {
        "user": r.user,
        "group": r.group,
        "containers": r.containers,
        "containers_allowed": r.containers_allowed,
        "gpu_equivalents": r.gpu_equivalents,
        "gpu_equivalents_unknown": r.gpu_unknown,
        "gpu_equivalents_allowed": r.gpu_allowed,
        "memory_in_use_bytes": r.memory_in_use,
        "cpu_limits": r.cpu_limits,
        "over": list(r.over),
        "aggregate": None
        if r.aggregate is None
        else {"has_caps": r.aggregate.has_caps, **evidence_of(r.aggregate)},
    }


def _at_most(cap: int | None) -> str:
    return "no cap" if cap is None else f"at most {cap}"


def _none_counted(view: View, name: str) -> str:
    """Why ``name`` has no row: no live container, or live ones that only claim them (a label or
    the name, while labels are not trusted), which the quota rule counts for nobody."""
    ctx = _quota_context(view)
    claimed = [
        c
        for c in view.snapshot.containers
        if c.state in LIVE and c.owner == name and ctx is not None and ctx.counted_owner(c) is None
    ]
    if not claimed:
        return "no live containers"
    n = len(claimed)
    return (
        f"none counted: {n} live container{'s' if n > 1 else ''} only claim{'' if n > 1 else 's'} them "
        "(a label or the name), and labels are not trusted (trustLabels): counted for nobody"
    )


def quota_section(view: View, name: str, s: Sections) -> None:
    """``describe user``: the quotas, used and allowed, with their sources."""
    s.heading("Quotas")
    found = [r for r in user_rows(view) if r.user == name]
    if not found:
        s.line(_none_counted(view, name), 2)
        return
    r = found[0]
    spec = r.policy.resources if r.policy is not None else ResourceSpec()
    gpu = f"{r.gpu_equivalents:g}" + (" (+ units of unknown share)" if r.gpu_unknown else "")
    containers = _of(str(r.containers), r.containers_allowed)
    slots = spec.max_gpu_slots_per_container
    cpu = "unlimited (a container without a limit)" if r.cpu_limits is None else f"{r.cpu_limits:g}"
    s.fields(
        [
            ("Containers", f"{containers}   ({clean(spec.max_containers_per_user.source, 80)})"),
            (
                "GPU-equivalents",
                f"{_of(gpu, r.gpu_allowed)}   ({clean(spec.max_gpu_equivalents.source, 80)})",
            ),
            ("GPU units/container", f"{_at_most(slots.value)}   ({clean(slots.source, 80)})"),
            ("Memory in use", fmt_bytes(r.memory_in_use) if r.memory_in_use is not None else "unknown"),
            ("CPU limits", cpu),
            ("Over", ",".join(r.over) or "-"),
        ],
        2,
    )


def _sum_text(s: Sum, show: Any) -> str:
    used = show(s.used) + (f" (+ unread: {', '.join(s.unknown)})" if s.unknown else "")
    if s.cap is None:
        return f"{used} / no cap   ({clean(s.cap_source, 80)})"
    return f"{used} / {show(s.cap)}{' OVER' if s.over else ''}   ({clean(s.cap_source, 80)})"


def aggregate_section(view: View, name: str, s: Sections) -> None:
    """``describe user``: the aggregate caps with their source, the sums, the bypassing containers."""
    s.heading("Aggregate")
    found = [r for r in user_rows(view) if r.user == name]
    f = found[0].aggregate if found else None
    if f is None:
        s.line(_none_counted(view, name) if not found else "not judged (owner unknown or no policy)", 2)
        return
    if not f.has_caps:
        s.line(f"no aggregate caps ({clean(f.cpus.cap_source, 80)})", 2)
        return
    unlimited = f" (no CPU limit: {', '.join(f.cpu_unlimited)})" if f.cpu_unlimited else ""
    bypass = ", ".join(f"{clean(n, 64)} ({clean(p, 80)})" for n, p in sorted(f.bypassing.items()))
    s.fields(
        [
            ("CPU limits", _sum_text(f.cpus, lambda v: f"{v:g}") + unlimited),
            ("Memory in use", _sum_text(f.memory_bytes, lambda v: fmt_bytes(int(v)))),
            ("Tasks", _sum_text(f.tasks, lambda v: f"{int(v)}")),
            ("Slice", " or ".join(f.expected_slices)),
            ("Bypassing", bypass or "-"),
            ("Parent unknown", ", ".join(clean(n, 64) for n in f.parent_unknown) or "-"),
        ],
        2,
    )
    alerts = view.desired.global_policy.aggregate_alerts if view.desired is not None else None
    s.line(f"(a container outside the slice escapes the caps; {_alerts_note(alerts)})", 2)


def _alerts_note(alerts: Sourced[bool] | None) -> str:
    if alerts is None:
        return "whether the controller alerts is unknown: the policy did not load; it never moves one"
    src = clean(alerts.source, 80)
    if alerts.value:
        return (
            f"the controller alerts the admins (resourceEnforcement.aggregateAlerts: true, {src}), "
            "it never moves one"
        )
    return (
        f"only reported: resourceEnforcement.aggregateAlerts is false ({src}), true alerts the admins; "
        "the controller never moves one"
    )
