"""The planner's per-pass fast paths give what the plain definitions give.

* the container rules skip ``update_resources`` for a container that reported no limits: the rule
  proposes, defers and warns nothing for one, in every state, whatever its use;
* the GPU processes' order is the sort by the whole key, with and without two processes that share
  their GPU and pid (only then do the later fields decide);
* the ledger rows' order, and the first row of each container, device and allocation time, are
  the definition's, with and without rows that share their container and device;
* a container's physical GPUs with one reference are the general rule's (a MIG device with or
  without its parent, a UUID NVML does not list, an unresolved reference, every GPU), and the
  pass's GPU referrers are the containers with a reference, in id order;
* a timestamp's ISO form, memoised, is its own ``isoformat()`` at any offset and in any zone,
  whichever of two equal instants was formatted first;
* whether a container's limits are out of its spec (``out_of_spec``: no use read, no message
  written) is whether the resource decision changes or holds back anything.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.memory import ControllerMemory
from controller.plan.context import Collector, PassContext, iso
from controller.plan.rules import allocations, processes
from controller.plan.rules.resources import _decide, out_of_spec, update_resources
from controller.snapshot import (
    ContainerObs,
    ContainerState,
    GpuProcessObs,
    GpuRef,
    GpuRefSource,
    GpuUuid,
    LedgerEntry,
    ResourceLimits,
)
from desired_state.effective import ResourceSpec, Sourced
from tests.fixtures import builders as b

GiB = 1 << 30


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.sampled_from([UTC, timezone(timedelta(0)), timezone(timedelta(hours=2)), ZoneInfo("UTC")]),
    st.sampled_from([UTC, timezone(timedelta(hours=-5)), ZoneInfo("Europe/Amsterdam")]),
)
@settings(max_examples=200, deadline=None)
def test_the_memoised_iso_form_is_the_timestamps_own(naive: datetime, zone: tzinfo, other: tzinfo) -> None:
    at = naive.replace(tzinfo=zone)
    same_instant = at.astimezone(other)
    for value in (at, same_instant, at, naive):
        assert iso(value) == value.isoformat()


@pytest.mark.parametrize("state", list(ContainerState))
def test_a_container_that_reported_no_limits_gets_nothing_from_the_resource_rule(
    state: ContainerState,
) -> None:
    c = b.container("c1", state=state, sig=b.signals(b.T0))
    if c.signals is not None:  # far above any spec: a container with limits would be brought down
        c = c.model_copy(update={"signals": c.signals.model_copy(update={"memory_bytes": 64 * GiB})})
    assert c.limits is None
    tight = ResourceSpec(
        max_cpus=Sourced(value=1.0, source="test"),
        memory_bytes=Sourced(value=GiB, source="test"),
        memory_swap_bytes=Sourced(value=GiB, source="test"),
        pids_limit=Sourced(value=64, source="test"),
        exempt=Sourced(value=False, source="test"),
    )
    policy = b.policy().model_copy(update={"resources": tight})
    ctx = PassContext.build(
        b.snapshot(containers=[c]), b.T0, b.global_policy(update_limits=True), ControllerMemory()
    )
    out = Collector()
    update_resources(ctx, out, c, policy)
    assert (out.actions, out.deferred, out.proposals) == ([], [], [])


def _processes(*, shared: bool) -> tuple[GpuProcessObs, ...]:
    rng = random.Random(5)
    out = [
        b.process(
            rng.randrange(50) if shared else 1000 + k,
            rng.choice([b.GPU0, b.GPU1]),
            start_time=rng.choice([None, 1.0, 2.0]),
            device_uuid=rng.choice([None, b.mig_uuid(0, 1)]),
            container_id=rng.choice([None, b.cid("a"), b.cid("b")]),
        )
        for k in range(200)
    ]
    return tuple(out)


@pytest.mark.parametrize("shared", [False, True])
def test_the_processes_are_in_the_order_of_the_whole_key(shared: bool) -> None:
    procs = _processes(shared=shared)
    whole = sorted(
        procs, key=lambda p: (p.gpu_uuid, p.pid, p.start_time or -1.0, p.device_uuid, p.container_id or "")
    )
    assert [id(p) for p in processes._in_order(procs)] == [id(p) for p in whole]


def _rows(*, shared: bool) -> tuple[LedgerEntry, ...]:
    rng = random.Random(3)
    naive = b.at(hours=-2).replace(tzinfo=None)  # a hand-edited ledger may mix naive and aware times
    return tuple(
        b.ledger_entry(
            f"c{rng.randrange(20)}" if shared else f"c{k}",
            rng.choice([b.GPU0, b.GPU1, "0", "1.2"]),
            user=rng.choice(["alice", "bob"]),
            allocated_at=rng.choice([b.at(hours=-2), b.at(hours=-1), naive]),
            uuid=rng.choice([True, False]),
        )
        for k in range(150)
    )


@pytest.mark.parametrize("shared", [False, True])
def test_the_ledger_rows_are_in_order_and_distinct_as_defined(shared: bool) -> None:
    entries = _rows(shared=shared)
    key = lambda e: (e.container, e.gpu, iso(e.allocated_at) or "", e.user, e.gpu_uuid or "")  # noqa: E731
    expected = sorted(entries, key=key)
    firsts = {}
    for e in expected:
        firsts.setdefault(key(e)[:3], e)
    ordered, distinct = allocations._in_order(entries)
    assert [id(e) for e in ordered] == [id(e) for e in expected]
    assert [id(e) for e in distinct] == [id(e) for e in firsts.values()]
    assert shared == (len(distinct) < len(ordered))


def _physical_by_definition(ctx: PassContext, c: ContainerObs, *, include_all: bool) -> list[str]:
    out: set[str] = set()
    for ref in c.gpu_refs:
        if ref.parent_uuid is not None:
            out.add(ref.parent_uuid)
        elif ref.uuid is not None:
            out.add(ctx.physical_of.get(ref.uuid, ref.uuid))
    if include_all and c.all_gpus:
        out.update(g.uuid for g in ctx.gpus)
    return sorted(out)


def test_one_reference_gives_the_general_rules_physical_gpus() -> None:
    mig = b.mig_uuid(1, 0)
    orphan_mig = GpuRef(raw=mig, source=GpuRefSource.DEVICE_REQUEST, uuid=GpuUuid(mig), is_mig=True)
    unknown = GpuRef(raw="GPU-x", source=GpuRefSource.DEVICE_REQUEST, uuid=GpuUuid("GPU-x"))
    refs: list[list[GpuRef]] = [
        [],
        [b.ref(b.GPU0)],
        [b.ref(mig, parent=b.GPU1)],
        [orphan_mig],
        [unknown],
        [b.unresolved_ref()],
        [b.ref(b.GPU1), b.ref(b.GPU0)],
    ]
    containers = [
        b.running(f"c{i}-{every}", gpus=r, all_gpus=every)
        for i, r in enumerate(refs)
        for every in (False, True)
    ]
    ctx = PassContext.build(
        b.snapshot(containers=containers, gpus=[b.gpu(0), b.gpu(1, mig_slots=2)]),
        b.T0,
        b.global_policy(),
        ControllerMemory(),
    )
    for c in containers:
        for include_all in (False, True):
            expected = _physical_by_definition(ctx, c, include_all=include_all)
            assert ctx.physical_gpus(c, include_all=include_all) == expected, (c.name, include_all)
    assert ctx.referrers == [c for c in ctx.containers if c.gpu_refs]


_sizes = st.one_of(st.none(), st.integers(min_value=0, max_value=64 * GiB))
_limits = st.builds(
    ResourceLimits,
    nano_cpus=st.one_of(st.none(), st.integers(min_value=10**8, max_value=128 * 10**9)),
    cpu_quota_us=st.one_of(st.none(), st.integers(min_value=-1, max_value=400_000)),
    cpu_period_us=st.one_of(st.none(), st.integers(min_value=1000, max_value=200_000)),
    memory_bytes=_sizes,
    memory_swap_bytes=st.one_of(st.none(), st.just(-1), _sizes),
    memory_reservation_bytes=_sizes,
    pids_limit=st.one_of(st.none(), st.integers(min_value=1, max_value=10_000)),
)
_specs = st.builds(
    ResourceSpec,
    max_cpus=st.builds(
        Sourced, value=st.one_of(st.none(), st.floats(min_value=0.01, max_value=64)), source=st.just("t")
    ),
    memory_bytes=st.builds(Sourced, value=_sizes, source=st.just("t")),
    memory_swap_bytes=st.builds(Sourced, value=_sizes, source=st.just("t")),
    pids_limit=st.builds(Sourced, value=st.one_of(st.none(), st.integers(-1, 10_000)), source=st.just("t")),
    exempt=st.builds(Sourced, value=st.just(False), source=st.just("t")),
)


@settings(max_examples=500, deadline=None)
@given(
    limits=_limits,
    spec=_specs,
    created=st.booleans(),
    used=st.one_of(st.none(), st.integers(min_value=0, max_value=64 * GiB)),
    swapped=st.one_of(st.none(), st.integers(min_value=0, max_value=64 * GiB)),
    tasks=st.one_of(st.none(), st.integers(min_value=0, max_value=12_000)),
    margin=st.floats(min_value=0, max_value=50),
    host_cpus=st.one_of(st.none(), st.integers(min_value=1, max_value=128)),
)
def test_out_of_spec_is_whether_the_decision_changes_or_waits(
    limits: ResourceLimits,
    spec: ResourceSpec,
    created: bool,
    used: int | None,
    swapped: int | None,
    tasks: int | None,
    margin: float,
    host_cpus: int | None,
) -> None:
    c = b.container(
        "c1", state=ContainerState.CREATED if created else ContainerState.RUNNING, sig=b.signals(b.T0)
    )
    if c.signals is not None:
        use = {"memory_bytes": used, "memory_swap_bytes": swapped, "pids_current": tasks}
        c = c.model_copy(update={"signals": c.signals.model_copy(update=use)})
    d = _decide(c, limits, spec, margin, host_cpus)
    assert out_of_spec(limits, spec, host_cpus) == bool(d.update or d.waits)
