"""Rule UpdateResources: named cases and properties (never raises, never below use + margin, idempotent)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.memory import Breaker, ControllerMemory
from controller.plan.planner import plan
from controller.plan.rules.resources import memory_floor, pids_floor
from controller.plan.types import ActionKind, DeferReason, Plan, Reason, ResourceUpdate
from controller.snapshot import ContainerObs, ContainerState, ResourceLimits
from desired_state.effective import ExemptFrom, ResourceSpec, Sourced
from tests.fixtures import builders as b

MiB = 1 << 20
GiB = 1 << 30


def spec(
    *,
    cpus: float | None = 4.0,
    memory: int | None = 8 * GiB,
    swap: int | None = 8 * GiB,
    pids: int | None = 1024,
    exempt: bool = False,
) -> ResourceSpec:
    return ResourceSpec(
        max_cpus=Sourced(value=cpus, source="UserGroup/student"),
        memory_bytes=Sourced(value=memory, source="UserGroup/student"),
        memory_swap_bytes=Sourced(value=swap, source="UserGroup/student"),
        pids_limit=Sourced(value=pids, source="UserGroup/student"),
        exempt=Sourced(value=exempt, source="container type api (test): resourcesExempt"),
    )


def box(
    name: str = "c1",
    *,
    state: ContainerState = ContainerState.RUNNING,
    limits: ResourceLimits | None = None,
    used: int | None = 100 * MiB,
    tasks: int | None = 5,
    peak: int | None = None,
    **kw: Any,
) -> ContainerObs:
    c = b.container(name, state=state, sig=b.signals(b.T0), **kw)
    update: dict[str, Any] = {"limits": limits if limits is not None else ResourceLimits()}
    if c.signals is not None:
        update["signals"] = c.signals.model_copy(
            update={
                "memory_bytes": used,
                "memory_peak_bytes": peak,
                "memory_unknown": None if used is not None else "memory.usage_in_bytes unreadable",
                # Nothing swapped out unless a test says so (``swapping``).
                "memory_swap_bytes": used,
                "memory_swap_unknown": None if used is not None else "memory.memsw.usage_in_bytes unreadable",
                "pids_current": tasks,
                "pids_unknown": None if tasks is not None else "pids.current unreadable",
            }
        )
    return c.model_copy(update=update)


def run(
    *containers: ContainerObs,
    res: ResourceSpec | None = None,
    memory: ControllerMemory | None = None,
    host_cpus: int | None = b.HOST_CPUS,
    **glob: Any,
) -> Plan:
    pol = b.policy().model_copy(update={"resources": res or spec()})
    snap = b.snapshot(containers=list(containers), host_cpus=host_cpus)
    return plan(
        snap, b.desired(pol, b.global_policy(**glob) if glob else None), memory or ControllerMemory(), b.T0
    )


def updates(p: Plan) -> list[Any]:
    return [a for a in p.actions if a.kind == ActionKind.UPDATE_RESOURCES]


def params(p: Plan) -> ResourceUpdate:
    (action,) = updates(p)
    return ResourceUpdate.model_validate(action.params)


def deferrals(p: Plan) -> list[tuple[str, str]]:
    return [
        (d.rule.value, d.why.value)
        for d in p.deferred
        if d.rule in (Reason.LIMITS_MISSING, Reason.LIMITS_ABOVE_SPEC)
    ]


def test_a_container_without_limits_gets_every_limit_of_its_owner() -> None:
    p = run(box())
    (action,) = updates(p)
    assert action.reason == Reason.LIMITS_MISSING
    assert action.destructive and action.key.startswith(f"UpdateResources:{b.cid('c1')}:")
    got = ResourceUpdate.model_validate(action.params)
    assert (got.nano_cpus, got.memory_bytes, got.memory_swap_bytes, got.pids_limit) == (
        4_000_000_000,
        8 * GiB,
        8 * GiB,
        1024,
    )
    assert action.evidence["desired"]["memory"] == 8 * GiB and action.evidence["observed"]["memory"] is None
    assert sorted(action.evidence["missing"]) == ["cpus", "memory", "memory_swap", "pids"]


def test_limits_above_the_spec_are_lowered_and_those_below_are_left_alone() -> None:
    above = ResourceLimits(
        nano_cpus=16 * 10**9, memory_bytes=64 * GiB, memory_swap_bytes=128 * GiB, pids_limit=512
    )
    p = run(box(limits=above))
    (action,) = updates(p)
    assert action.reason == Reason.LIMITS_ABOVE_SPEC
    got = ResourceUpdate.model_validate(action.params)
    assert (got.nano_cpus, got.memory_bytes, got.memory_swap_bytes) == (4 * 10**9, 8 * GiB, 8 * GiB)
    assert got.pids_limit is None  # 512 is below the spec's 1024: the owner's choice, kept

    below = ResourceLimits(nano_cpus=10**9, memory_bytes=GiB, memory_swap_bytes=GiB, pids_limit=100)
    assert updates(run(box(limits=below))) == []
    assert deferrals(run(box(limits=below))) == []


def test_memory_is_never_lowered_below_use_plus_margin_the_owner_is_warned() -> None:
    # 7.5 GiB in use, the spec says 8 GiB: 8 GiB < 7.5 GiB + 10 %. CPU and pids still come down.
    p = run(box(used=int(7.5 * GiB)))
    got = params(p)
    assert got.memory_bytes is None and got.memory_swap_bytes is None
    assert got.nano_cpus == 4 * 10**9 and got.pids_limit == 1024
    assert ("LimitsMissing", "BelowUsage") in deferrals(p)
    (warn,) = [a for a in p.actions if a.kind == ActionKind.WARN_OWNER]
    assert warn.reason == Reason.LIMITS_BELOW_USAGE and "7.5GiB" not in warn.message
    assert warn.evidence["memory_used_bytes"] == int(7.5 * GiB)


def test_memory_is_never_lowered_below_the_peak_since_it_started() -> None:
    # 1 GiB in use now, but 12 GiB at its peak (a data load): an 8 GiB limit OOM-kills it when it
    # needs that much again. The memory waits for the run (the peak does not fall); the rest comes.
    p = run(box(used=GiB, peak=12 * GiB))
    got = params(p)
    assert got.memory_bytes is None and got.memory_swap_bytes is None and got.pids_limit == 1024
    (wait,) = [d for d in p.deferred if d.why is DeferReason.BELOW_USAGE]
    assert "used up to 12GiB since it started" in wait.message, wait.message
    assert wait.evidence["memory_peak_bytes"] == 12 * GiB
    # A peak within the limit plus the margin does not hold it back; nor does one of a created container.
    assert params(run(box(used=GiB, peak=7 * GiB))).memory_bytes == 8 * GiB
    created = box(state=ContainerState.CREATED, used=GiB, peak=12 * GiB)
    assert params(run(created)).memory_bytes == 8 * GiB


def test_the_margin_is_policy() -> None:
    used = 7 * GiB  # 8 GiB fits 7 GiB + 10 %, not 7 GiB + 20 %
    assert params(run(box(used=used))).memory_bytes == 8 * GiB
    p = run(box(used=used), memory_margin_pct=20.0)
    assert params(p).memory_bytes is None
    assert ("LimitsMissing", "BelowUsage") in deferrals(p)


def test_unknown_use_defers_the_memory_and_pids_without_a_warning() -> None:
    p = run(box(used=None, tasks=None))
    got = params(p)
    assert got.memory_bytes is None and got.pids_limit is None and got.nano_cpus == 4 * 10**9
    assert deferrals(p).count(("LimitsMissing", "UnknownSignal")) == 2
    assert not [a for a in p.actions if a.kind == ActionKind.WARN_OWNER]


def test_a_change_that_waits_on_an_unset_limit_is_named_limits_missing() -> None:
    """With no other change in the pass, a wait was named LimitsAboveSpec (the rule came from the
    limits the update set alone): a container with no memory limit is LimitsMissing, waiting or not."""
    only = {"cpus": None, "swap": None}
    unknown = run(box(used=None, tasks=None), res=spec(pids=None, **only))
    assert b.deferred_summary(unknown) == [("LimitsMissing", "UnknownSignal", "c1")]
    assert updates(unknown) == []
    below = run(box(used=int(7.5 * GiB)), res=spec(pids=None, **only))
    assert b.deferred_summary(below) == [("LimitsMissing", "BelowUsage", "c1")]
    assert [(a.kind, a.reason) for a in below.actions] == [(ActionKind.WARN_OWNER, Reason.LIMITS_BELOW_USAGE)]
    pids = run(box(tasks=None), res=spec(memory=None, **only))
    assert b.deferred_summary(pids) == [("LimitsMissing", "UnknownSignal", "c1")]
    # A limit above the spec that waits is LimitsAboveSpec; with an unset one beside it, LimitsMissing.
    high = ResourceLimits(memory_bytes=64 * GiB)
    above = run(box(limits=high, used=None), res=spec(pids=None, **only))
    assert b.deferred_summary(above) == [("LimitsAboveSpec", "UnknownSignal", "c1")]
    both = run(box(limits=high, used=None, tasks=None), res=spec(**only))
    assert b.deferred_summary(both) == [
        ("LimitsMissing", "UnknownSignal", "c1"),
        ("LimitsMissing", "UnknownSignal", "c1"),
    ]


def test_pids_are_never_set_below_the_current_count() -> None:
    p = run(box(tasks=2000))
    assert params(p).pids_limit is None
    assert ("LimitsMissing", "BelowUsage") in deferrals(p)


def test_a_pids_limit_leaves_room_to_fork() -> None:
    """A limit equal to the task count (or within the margin of it) would make the job's next
    thread or DataLoader worker fail: it waits like memory, with at least one task of room."""
    for tasks in (1024, 1000, 931):  # 1024 is not above 931 + 10 % (1,025)
        p = run(box(tasks=tasks))
        assert params(p).pids_limit is None, tasks
        assert ("LimitsMissing", "BelowUsage") in deferrals(p)
    assert params(run(box(tasks=930))).pids_limit == 1024  # 930 + 10 % = 1,023: room for one more
    assert params(run(box(tasks=1023), memory_margin_pct=0.0)).pids_limit == 1024
    assert params(run(box(tasks=1024), memory_margin_pct=0.0)).pids_limit is None
    assert [pids_floor(n, 10.0) for n in (0, 5, 100, 1000)] == [1, 6, 110, 1100]
    assert [pids_floor(n, 0.0) for n in (0, 5, 1000)] == [1, 6, 1001]


def test_a_created_container_is_limited_whatever_its_use() -> None:
    got = params(run(box(state=ContainerState.CREATED, used=None, tasks=None)))
    assert (got.memory_bytes, got.pids_limit) == (8 * GiB, 1024)


def test_stopped_and_unobserved_containers_are_not_updated() -> None:
    assert updates(run(box(state=ContainerState.EXITED))) == []
    unobserved = box().model_copy(update={"limits": None})
    assert updates(run(unobserved)) == [] and deferrals(run(unobserved)) == []


def test_a_cpu_quota_keeps_its_period() -> None:
    got = params(run(box(limits=ResourceLimits(cpu_quota_us=800_000, cpu_period_us=50_000))))
    assert (got.cpu_quota_us, got.cpu_period_us, got.nano_cpus) == (200_000, 50_000, None)


def test_a_quota_at_dockers_minimum_is_not_planned_again_each_pass() -> None:
    """With a 1 ms period, 0.5 CPUs cannot be expressed (Docker's smallest quota is 1 ms): the quota
    comes down to 1 ms once, and then no update is planned pass after pass (each would be a no-op
    taking a slot of the destructive budget from stops and removals)."""
    first = params(run(box(limits=ResourceLimits(cpu_quota_us=2000, cpu_period_us=1000)), res=spec(cpus=0.5)))
    assert (first.cpu_quota_us, first.cpu_period_us) == (1000, 1000)
    at_floor = box(limits=ResourceLimits(cpu_quota_us=1000, cpu_period_us=1000))
    assert updates(run(at_floor, res=spec(cpus=0.5, memory=None, swap=None, pids=None))) == []


def test_protected_exempt_and_opted_out_containers_are_left_alone() -> None:
    protected = b.policy(protected=True).model_copy(update={"resources": spec()})
    snap = b.snapshot(containers=[box()])
    p = plan(snap, b.desired(protected), ControllerMemory(), b.T0)
    assert updates(p) == [] and ("LimitsMissing", "Protected") in deferrals(p)

    assert ("LimitsMissing", "Exempt") in deferrals(run(box(), res=spec(exempt=True)))
    assert updates(run(box(), res=spec(exempt=True))) == []

    exempted = b.policy(exemptions=[b.exemption(ExemptFrom.RESOURCES)]).model_copy(
        update={"resources": spec()}
    )
    p = plan(snap, b.desired(exempted), ControllerMemory(), b.T0)
    assert updates(p) == [] and ("LimitsMissing", "Exempt") in deferrals(p)


def test_report_only_defers_with_why() -> None:
    p = run(box(), update_limits=False)
    assert updates(p) == []
    (d,) = [d for d in p.deferred if d.why == DeferReason.NOT_ENFORCED]
    assert "updateLimits: false" in d.message and d.evidence["containers"] == 1 and d.target.container is None


def test_updates_are_under_the_budget_and_the_breaker() -> None:
    boxes = [box(f"c{i}") for i in range(5)]
    p = run(*boxes, max_destructive_actions_per_pass=2)
    assert len(updates(p)) == 2
    assert sum(1 for d in p.deferred if d.why == DeferReason.BUDGET_EXHAUSTED) == 3
    tripped = ControllerMemory(breaker=Breaker(tripped=True, tripped_at=b.T0, reason="test"))
    p = run(box(), memory=tripped)
    assert updates(p) == [] and ("LimitsMissing", "BreakerOpen") in deferrals(p)


def test_a_second_pass_after_the_update_plans_nothing() -> None:
    first = params(run(box()))
    assert updates(run(box(limits=applied(ResourceLimits(), first)))) == []


# --- properties -----------------------------------------------------------------------------------


def applied(limits: ResourceLimits, u: ResourceUpdate) -> ResourceLimits:
    """The limits after ``docker update`` with ``u`` (what the engine stores)."""
    change: dict[str, Any] = {}
    if u.nano_cpus is not None:
        change.update(nano_cpus=u.nano_cpus, cpu_quota_us=None)
    if u.cpu_quota_us is not None:
        change.update(cpu_quota_us=u.cpu_quota_us, cpu_period_us=u.cpu_period_us)
    if u.memory_bytes is not None:
        change["memory_bytes"] = u.memory_bytes
    if u.memory_swap_bytes is not None:
        change["memory_swap_bytes"] = u.memory_swap_bytes
    if u.memory_reservation_bytes is not None:
        change["memory_reservation_bytes"] = u.memory_reservation_bytes
    if u.pids_limit is not None:
        change["pids_limit"] = u.pids_limit
    return limits.model_copy(update=change)


sizes = st.one_of(st.none(), st.integers(min_value=6 * MiB, max_value=256 * GiB))
limits_strategy = st.builds(
    ResourceLimits,
    nano_cpus=st.one_of(st.none(), st.integers(min_value=10**8, max_value=128 * 10**9)),
    memory_bytes=sizes,
    memory_swap_bytes=st.one_of(st.none(), st.just(-1), st.integers(min_value=6 * MiB, max_value=512 * GiB)),
    memory_reservation_bytes=sizes,
    pids_limit=st.one_of(st.none(), st.integers(min_value=1, max_value=100_000)),
)
spec_strategy = st.builds(
    spec,
    cpus=st.one_of(st.none(), st.floats(min_value=0.01, max_value=64)),
    memory=sizes,
    swap=sizes,
    pids=st.one_of(st.none(), st.integers(min_value=1, max_value=100_000)),
)


def _consistent(limits: ResourceLimits) -> ResourceLimits:
    # Docker keeps MemorySwap >= Memory, and no swap limit without a memory limit.
    if limits.memory_bytes is None:
        return limits.model_copy(update={"memory_swap_bytes": None})
    swap = limits.memory_swap_bytes
    if swap is not None and swap != -1 and swap < limits.memory_bytes:
        return limits.model_copy(update={"memory_swap_bytes": limits.memory_bytes})
    return limits


@settings(max_examples=300, deadline=None)
@given(
    limits=limits_strategy,
    res=spec_strategy,
    used=st.integers(min_value=0, max_value=300 * GiB),
    tasks=st.integers(min_value=0, max_value=120_000),
    margin=st.floats(min_value=0, max_value=50),
    swapped=st.integers(min_value=0, max_value=300 * GiB),
    above_now=st.none() | st.integers(min_value=0, max_value=300 * GiB),
)
def test_property_never_raises_never_below_use_and_idempotent(
    limits: ResourceLimits,
    res: ResourceSpec,
    used: int,
    tasks: int,
    margin: float,
    swapped: int,
    above_now: int | None,
) -> None:
    limits = _consistent(limits)
    peak = None if above_now is None else used + above_now
    c = swapping(box(limits=limits, used=used, tasks=tasks, peak=peak), used + swapped)
    p = run(c, res=res, memory_margin_pct=margin)
    found = updates(p)
    if not found:
        return
    u = ResourceUpdate.model_validate(found[0].params)
    # Never raises a limit.
    if u.nano_cpus is not None:
        assert limits.cpus is None or u.nano_cpus <= limits.cpus * 1e9 + 1
    if u.memory_bytes is not None:
        assert limits.memory_bytes is None or u.memory_bytes <= limits.memory_bytes
        # Never below what it uses now, or used at its peak, plus the margin.
        high = used if peak is None else peak
        assert u.memory_bytes >= memory_floor(high, margin) or u.memory_bytes == limits.memory_bytes
    if u.memory_swap_bytes is not None and u.memory_swap_bytes != -1:
        assert limits.total_swap_bytes is None or u.memory_swap_bytes <= limits.total_swap_bytes
        assert u.memory_bytes is not None and u.memory_swap_bytes >= u.memory_bytes
        # A lowered memory-plus-swap total leaves room for what is in memory and swap now.
        if limits.total_swap_bytes is None or u.memory_swap_bytes < limits.total_swap_bytes:
            assert u.memory_swap_bytes >= memory_floor(used + swapped, margin)
    if u.memory_swap_bytes == -1:
        assert limits.total_swap_bytes is None
    # The update never leaves a reservation above the memory limit it sets (Docker would not start
    # the container again), lowers one only with the memory, and only to the memory limit.
    if u.memory_bytes is not None and limits.memory_reservation_bytes is not None:
        assert u.memory_reservation_bytes == (
            u.memory_bytes if limits.memory_reservation_bytes > u.memory_bytes else None
        )
    else:
        assert u.memory_reservation_bytes is None
    if u.pids_limit is not None:
        assert (
            limits.pids_limit is None or u.pids_limit <= limits.pids_limit
        ) and u.pids_limit >= pids_floor(tasks, margin)
    # Idempotent: once applied, the next pass plans no update.
    again = run(
        swapping(box(limits=applied(limits, u), used=used, tasks=tasks, peak=peak), used + swapped),
        res=res,
        memory_margin_pct=margin,
    )
    assert updates(again) == [], (limits, u, updates(again)[0].params)


def test_a_cpu_limit_of_at_least_the_hosts_cpus_is_not_applied() -> None:
    # Docker refuses --cpus above the host's count; such a limit limits nothing anyway.
    pol = b.policy().model_copy(update={"resources": spec(cpus=32.0)})
    snap = b.snapshot(containers=[box()]).model_copy(update={"host_cpus": 2})
    got = ResourceUpdate.model_validate(
        updates(plan(snap, b.desired(pol), ControllerMemory(), b.T0))[0].params
    )
    assert got.nano_cpus is None and got.memory_bytes == 8 * GiB
    pol = b.policy().model_copy(update={"resources": spec(cpus=1.0)})
    got = ResourceUpdate.model_validate(
        updates(plan(snap, b.desired(pol), ControllerMemory(), b.T0))[0].params
    )
    assert got.nano_cpus == 10**9


def test_with_the_hosts_cpu_count_unknown_a_cpu_limit_above_one_waits() -> None:
    """A snapshot without the host's CPU count (recorded before it was observed) sent --cpus 32 on
    a 2-CPU host: Docker refuses it ("Range of CPUs is from 0.01 to 2.00"), every pass. The CPU
    part waits (unknown is not "fits"); the memory and pids come down; one CPU fits every host."""
    unknown = run(box(), res=spec(cpus=32.0), host_cpus=None)
    assert b.summary(unknown) == [("UpdateResources", "LimitsMissing", "c1")]
    got = params(unknown)
    assert (got.nano_cpus, got.memory_bytes, got.pids_limit) == (None, 8 * GiB, 1024)
    assert b.deferred_summary(unknown) == [("LimitsMissing", "UnknownSignal", "c1")]
    (wait,) = unknown.deferred
    assert wait.message == (
        "c1: CPU limit unlimited -> 32 waits: the host's CPU count is unknown, and Docker refuses a "
        "limit above it"
    )
    assert (wait.evidence["host_cpus"], wait.evidence["cpus_wanted"]) == (None, 32.0)
    # Above the spec and alone: LimitsAboveSpec, nothing sent.
    above = run(
        box(limits=ResourceLimits(nano_cpus=64 * 10**9)),
        res=spec(cpus=32.0, memory=None, swap=None, pids=None),
        host_cpus=None,
    )
    assert (b.summary(above), b.deferred_summary(above)) == ([], [("LimitsAboveSpec", "UnknownSignal", "c1")])
    # One CPU or less is within every host's count; a quota (CpuQuota) is never refused for it.
    assert params(run(box(), res=spec(cpus=1.0), host_cpus=None)).nano_cpus == 10**9
    quota = box(limits=ResourceLimits(cpu_quota_us=800_000, cpu_period_us=100_000))
    got = params(run(quota, res=spec(cpus=4.0), host_cpus=None))
    assert (got.cpu_quota_us, got.nano_cpus) == (400_000, None)
    # Known, the count decides as before.
    assert params(run(box(), res=spec(cpus=32.0), host_cpus=64)).nano_cpus == 32 * 10**9


def test_a_pids_limit_of_zero_or_below_is_unlimited_and_never_removes_one() -> None:
    # Docker reads --pids-limit 0 and -1 as "unlimited": sending one would remove a container's limit.
    for pids in (0, -1):
        limited = box(state=ContainerState.CREATED, limits=ResourceLimits(pids_limit=500))
        assert updates(run(limited, res=spec(cpus=None, memory=None, swap=None, pids=pids))) == []
        got = params(run(box(state=ContainerState.CREATED), res=spec(pids=pids)))
        assert got.pids_limit is None
        # A running container is not held back, nor its owner warned, by a "limit" below its count.
        p = run(
            box(limits=ResourceLimits(pids_limit=500)), res=spec(cpus=None, memory=None, swap=None, pids=pids)
        )
        assert updates(p) == [] and deferrals(p) == []
        assert not [a for a in p.actions if a.kind == ActionKind.WARN_OWNER]


def test_a_cpu_period_without_a_quota_gets_a_quota() -> None:
    # Docker refuses NanoCpus on a container whose CpuPeriod is set ("--cpu-period" alone).
    got = params(run(box(limits=ResourceLimits(cpu_period_us=50_000))))
    assert (got.cpu_quota_us, got.cpu_period_us, got.nano_cpus) == (200_000, 50_000, None)


def swapping(c: ContainerObs, memory_and_swap: int | None) -> ContainerObs:
    assert c.signals is not None
    signals = c.signals.model_copy(
        update={
            "memory_swap_bytes": memory_and_swap,
            "memory_swap_unknown": None
            if memory_and_swap is not None
            else "memory.memsw.usage_in_bytes unreadable",
        }
    )
    return c.model_copy(update={"signals": signals})


def test_memory_plus_swap_is_never_lowered_below_its_use_plus_margin() -> None:
    # 4 GiB in memory and 6 GiB swapped out: a memory-plus-swap limit of 8 GiB would leave the
    # job's 10 GiB nowhere to go (the kernel OOM-kills it when it touches its swapped pages).
    limited = ResourceLimits(
        nano_cpus=4 * 10**9, memory_bytes=8 * GiB, memory_swap_bytes=32 * GiB, pids_limit=1024
    )
    p = run(swapping(box(limits=limited, used=4 * GiB), 10 * GiB))
    assert updates(p) == []
    assert ("LimitsAboveSpec", "BelowUsage") in deferrals(p)
    (warn,) = [a for a in p.actions if a.kind == ActionKind.WARN_OWNER]
    assert warn.reason == Reason.LIMITS_BELOW_USAGE and warn.evidence["memory_swap_used_bytes"] == 10 * GiB
    # When the memory itself comes down, the memory-plus-swap total is kept, not lowered.
    p = run(
        swapping(box(limits=limited.model_copy(update={"memory_bytes": 16 * GiB}), used=4 * GiB), 10 * GiB)
    )
    got = params(p)
    assert (got.memory_bytes, got.memory_swap_bytes) == (8 * GiB, 32 * GiB)
    # With room for its use, the total comes down.
    p = run(swapping(box(limits=limited, used=4 * GiB), 5 * GiB))
    assert params(p).memory_swap_bytes == 8 * GiB


def test_memory_plus_swap_is_never_lowered_below_its_peak_since_it_started() -> None:
    # 4 GiB in memory, nothing swapped now; at its peak (a data load) it had 20 GiB in memory and
    # swap together. A memory-plus-swap total of 8 GiB OOM-kills it when it needs that much again,
    # as a memory limit below its memory peak would: the total waits for the run.
    limited = ResourceLimits(
        nano_cpus=4 * 10**9, memory_bytes=8 * GiB, memory_swap_bytes=32 * GiB, pids_limit=1024
    )
    c = swapping(box(limits=limited, used=4 * GiB, peak=7 * GiB), 4 * GiB)
    assert c.signals is not None
    c = c.model_copy(update={"signals": c.signals.model_copy(update={"memory_swap_peak_bytes": 20 * GiB})})
    p = run(c)
    assert updates(p) == []
    assert deferrals(p) == [("LimitsAboveSpec", "BelowUsage")]
    (warn,) = [a for a in p.actions if a.kind == ActionKind.WARN_OWNER]
    assert warn.evidence["memory_swap_peak_bytes"] == 20 * GiB
    assert "since it started" in warn.message
    # A peak within the total plus the margin does not hold it back; nor one of a created container.
    c = c.model_copy(update={"signals": c.signals.model_copy(update={"memory_swap_peak_bytes": 6 * GiB})})
    assert params(run(c)).memory_swap_bytes == 8 * GiB


def test_pids_are_never_lowered_below_the_peak_since_it_started() -> None:
    # 5 tasks now, 1000 at its peak (an epoch's data loaders and their threads): a limit of 1024
    # would fail its workers when it starts them again. The pids limit waits for the run.
    c = box(tasks=5)
    assert c.signals is not None
    c = c.model_copy(update={"signals": c.signals.model_copy(update={"pids_peak": 1000})})
    p = run(c)
    assert params(p).pids_limit is None
    assert deferrals(p) == [("LimitsMissing", "BelowUsage")]
    (warn,) = [a for a in p.actions if a.kind == ActionKind.WARN_OWNER]
    assert warn.evidence["pids_peak"] == 1000 and "since it started" in warn.message
    # A peak with room under the limit does not hold it back; nor one of a created container.
    c = c.model_copy(update={"signals": c.signals.model_copy(update={"pids_peak": 900})})
    assert params(run(c)).pids_limit == 1024


def test_unknown_swap_use_keeps_the_memory_plus_swap_total() -> None:
    limited = ResourceLimits(
        nano_cpus=4 * 10**9, memory_bytes=16 * GiB, memory_swap_bytes=-1, pids_limit=1024
    )
    p = run(swapping(box(limits=limited, used=GiB), None))
    got = params(p)
    assert got.memory_bytes == 8 * GiB and got.memory_swap_bytes == -1
    # Unlimited swap (-1) is an unset memory+swap limit: the container lacks one, LimitsMissing.
    assert deferrals(p) == [("LimitsMissing", "UnknownSignal")]
    # A created container uses nothing.
    got = params(run(box(state=ContainerState.CREATED, limits=limited)))
    assert (got.memory_bytes, got.memory_swap_bytes) == (8 * GiB, 8 * GiB)


# --- a memory reservation above the new memory limit ------------------------------------------------

MEMORY_ONLY = {"cpus": None, "memory": 256 * MiB, "swap": 256 * MiB, "pids": None}


def test_a_reservation_above_the_new_memory_limit_comes_down_with_it() -> None:
    """On the engine, ``docker update --memory 256m --memory-swap 256m`` of a container run with
    ``--memory-reservation 512m`` succeeds, and the container then cannot start ("Minimum memory
    limit can not be less than memory reservation limit, see usage"): a created one never, a running
    one not after its next stop. The same update lowers the reservation to the new limit."""
    for state in (ContainerState.RUNNING, ContainerState.CREATED):
        reserved = ResourceLimits(memory_reservation_bytes=512 * MiB)
        # Created a minute ago: not yet due for removal as never started.
        young = {"created_at": b.ago(minutes=1)}
        p = run(box(state=state, limits=reserved, **young), res=spec(**MEMORY_ONLY))
        # (A created container is also waiting for its created-never-started limit.)
        waits = [("CreatedNeverStarted", "NotDue", "c1")] if state == ContainerState.CREATED else []
        assert b.summary(p) == [("UpdateResources", "LimitsMissing", "c1")], state
        assert b.deferred_summary(p) == waits, state
        (action,) = p.actions
        assert params(p) == ResourceUpdate(
            memory_bytes=256 * MiB, memory_swap_bytes=256 * MiB, memory_reservation_bytes=256 * MiB
        )
        assert action.message == (
            "bring c1 (owner alice) under its limits in place: memory 256.0MiB, memory+swap 256.0MiB, "
            "memory reservation 256.0MiB (from 512.0MiB: above the new memory limit) "
            "(unset: memory, memory_swap)"
        )
        assert action.evidence["observed"]["memory_reservation"] == 512 * MiB
        # Once applied, the next pass plans nothing.
        again = run(box(state=state, limits=applied(reserved, params(p)), **young), res=spec(**MEMORY_ONLY))
        assert (b.summary(again), b.deferred_summary(again)) == ([], waits), state


def test_a_reservation_at_or_below_the_new_memory_limit_is_left_alone() -> None:
    for reservation in (256 * MiB, 64 * MiB):
        p = run(box(limits=ResourceLimits(memory_reservation_bytes=reservation)), res=spec(**MEMORY_ONLY))
        assert b.summary(p) == [("UpdateResources", "LimitsMissing", "c1")]
        assert b.deferred_summary(p) == []
        assert params(p) == ResourceUpdate(memory_bytes=256 * MiB, memory_swap_bytes=256 * MiB)
        assert "reservation" not in p.actions[0].message
        assert p.actions[0].evidence["observed"]["memory_reservation"] == reservation


def test_a_reservation_is_never_lowered_on_its_own() -> None:
    """The memory waits (it uses more than the spec plus the margin): nothing is sent, the
    reservation included; the owner is warned as for any memory wait."""
    reserved = ResourceLimits(memory_reservation_bytes=512 * MiB)
    p = run(box(limits=reserved, used=300 * MiB), res=spec(**MEMORY_ONLY))
    assert b.summary(p) == [("WarnOwner", "LimitsBelowUsage", "c1")]
    assert b.deferred_summary(p) == [("LimitsMissing", "BelowUsage", "c1")]  # the memory is unset
    # Memory and swap within the spec, a reservation above the memory (Docker allows it through
    # an update): not the spec's business, no update.
    inside = ResourceLimits(memory_bytes=128 * MiB, memory_swap_bytes=128 * MiB, memory_reservation_bytes=GiB)
    p = run(box(limits=inside), res=spec(**MEMORY_ONLY))
    assert (b.summary(p), b.deferred_summary(p)) == ([], [])


def test_a_swap_update_also_lowers_a_reservation_above_the_memory_it_sends() -> None:
    """The memory is at the spec but the swap total above it: the update sends the memory with the
    swap, and a reservation above that memory comes down with them."""
    limits = ResourceLimits(memory_bytes=256 * MiB, memory_swap_bytes=GiB, memory_reservation_bytes=GiB)
    p = run(box(limits=limits), res=spec(**MEMORY_ONLY))
    assert b.summary(p) == [("UpdateResources", "LimitsAboveSpec", "c1")]
    assert b.deferred_summary(p) == []
    assert params(p) == ResourceUpdate(
        memory_bytes=256 * MiB, memory_swap_bytes=256 * MiB, memory_reservation_bytes=256 * MiB
    )


def test_a_limit_waiting_for_the_use_says_what_holds_it_back() -> None:
    """The owner's notice and the deferral name the use now and, where higher, the peak since the
    container started (then the limit waits for the run, not for less use)."""
    c = box(tasks=5)
    assert c.signals is not None
    (d,) = run(c.model_copy(update={"signals": c.signals.model_copy(update={"pids_current": 1000})})).deferred
    assert d.message.endswith(
        "runs 1000 tasks; its pids limit of 1024 (UserGroup/student) leaves less than 10 % (at least one "
        "task) of room over that (1100): not lowered until it runs fewer"
    ), d.message
    (d,) = run(c.model_copy(update={"signals": c.signals.model_copy(update={"pids_peak": 1000})})).deferred
    assert d.message.endswith(
        "runs 5 tasks and ran up to 1000 since it started; its pids limit of 1024 (UserGroup/student) "
        "leaves less than 10 % (at least one task) of room over that (1100): not lowered while it runs "
        "(at its next start its peak starts afresh)"
    ), d.message
