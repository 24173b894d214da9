"""The quota rule's and the planner tail's fast paths give what the plain definitions give.

* the deferrals' order (``_in_order``) is one stable sort by the whole key, with many ties and
  with mostly one deferral per container;
* a container's GPU units (``gpu_units``) with one reference are the general rule's, even for a
  MIG device listed as its own GPU (the one case the general rule drops);
* the owners' grouping is made once a pass and is the grouping of the live containers, sorted
  by start (ties by id), with each owner's GPU holders found in the same walk;
* the reported victims of a count quota are the newest ones, as the general walk picks them;
* a GPU slot cap of 0 is exceeded by one unit (the rule's cheap in-cap test must not skip it).
"""

from __future__ import annotations

import random

import pytest

from controller.memory import ControllerMemory
from controller.plan.context import PassContext, container_target, deferral, host_target
from controller.plan.planner import _deferred_order, _in_order
from controller.plan.rules.aggregate import _owners, gpu_holders, owners
from controller.plan.rules.quotas import UNRESOLVED, _victims, gpu_units
from controller.plan.types import DeferReason, Deferred, Reason
from controller.snapshot import ContainerObs, GpuObs, MigDeviceObs
from tests.fixtures import builders as b


def _deferrals(n_containers: int, count: int, seed: int) -> list[Deferred]:
    rng = random.Random(seed)
    containers = [b.running(f"c{i}", started_at=b.ago(hours=i)) for i in range(n_containers)]
    out: list[Deferred] = []
    for _ in range(count):
        pick = rng.randrange(n_containers + max(2, n_containers // 15))
        target = (
            container_target(containers[pick])
            if pick < len(containers)
            else host_target(user=rng.choice(["alice", "bob", None]), gpu=rng.choice([b.GPU0, None]))
        )
        out.append(
            deferral(
                target,
                rng.choice([Reason.IDLE_TIMEOUT, Reason.GPU_QUOTA_EXCEEDED]),
                rng.choice([DeferReason.NOT_DUE, DeferReason.UNKNOWN_SIGNAL]),
                rng.choice(["a", "b"]),  # equal whole keys: their input order must be kept
                due_at=rng.choice([None, b.at(minutes=rng.randrange(3))]),
            )
        )
    return out


@pytest.mark.parametrize(
    ("n_containers", "count", "seed"),
    [(6, 400, 7), (300, 600, 11)],
    ids=["many-ties", "mostly-runs-of-one"],
)
def test_the_deferrals_order_is_one_stable_sort_by_the_whole_key(
    n_containers: int, count: int, seed: int
) -> None:
    deferred = _deferrals(n_containers, count, seed)
    expected = sorted(deferred, key=_deferred_order)
    got = _in_order(deferred)
    assert [id(d) for d in got] == [id(d) for d in expected]  # the same objects, ties in input order
    assert _in_order([]) == ()
    assert _in_order(deferred[:1]) == (deferred[0],)


def _ctx(containers: list[ContainerObs], gpus: list[GpuObs]) -> PassContext:
    snap = b.snapshot(containers=containers, gpus=gpus)
    return PassContext.build(snap, b.T0, b.global_policy(), ControllerMemory())


def _plain_units(ctx: PassContext, c: ContainerObs) -> list[str]:
    """The definition: distinct units, a MIG device of a GPU counted whole dropped."""
    units = dict.fromkeys(ref.uuid or f"{UNRESOLVED}{ref.raw}" for ref in c.gpu_refs)
    if c.all_gpus:
        units.update(dict.fromkeys(g.uuid for g in ctx.gpus))
    return [u for u in units if u not in ctx.mig_uuids or ctx.physical_of.get(u) not in units]


def test_one_reference_gives_the_general_rules_units() -> None:
    mig = b.gpu(1, mig_slots=2)
    dev = mig.mig_devices[0]
    # A MIG device that NVML also lists as a GPU of its own: it is its own physical GPU, which the
    # general rule drops (a GPU counted whole); a one-reference shortcut must drop it too.
    odd_uuid = b.GPU3
    odd = b.gpu(3, mig_slots=0).model_copy(
        update={"mig_devices": (MigDeviceObs(uuid=odd_uuid, index=0, memory_total_bytes=1),)}
    )
    refs = [
        b.ref(b.GPU0),
        b.ref(dev.uuid, parent=mig.uuid),
        b.unresolved_ref("7"),
        b.ref(odd_uuid, parent=odd_uuid),
    ]
    containers = [b.running(f"c{i}", gpus=[r]) for i, r in enumerate(refs)]
    containers.append(b.running("all", gpus=[b.ref(dev.uuid, parent=mig.uuid)], all_gpus=True))
    ctx = _ctx(containers, [b.gpu(0), mig, odd])
    assert ctx.physical_of[odd_uuid] == odd_uuid and odd_uuid in ctx.mig_uuids
    for c in ctx.containers:
        assert gpu_units(ctx, c) == _plain_units(ctx, c), c.name
    assert gpu_units(ctx, ctx.by_name["c3"]) == []


def test_the_owners_grouping_is_made_once_a_pass() -> None:
    containers = [
        b.running("a-new", owner="alice", started_at=b.ago(hours=1)),
        b.running("a-old", owner="alice", started_at=b.ago(hours=5)),
        b.exited("a-gone", owner="alice"),
        b.running("bob-1", owner="bob", started_at=b.ago(hours=2)),
        b.running("anon", owner="unknown", started_at=b.ago(hours=2)),
    ]
    ctx = _ctx(containers, [])
    policy = b.policy()
    for c in ctx.containers:
        ctx.policies[c.id] = policy
    grouped = owners(ctx)
    assert owners(ctx) is grouped
    assert grouped == _owners(ctx)[0]
    assert {o: [c.name for c in cs] for o, cs in grouped.items()} == {
        "alice": ["a-old", "a-new"],
        "bob": ["bob-1"],
    }


def test_the_owners_sort_and_gpu_holders_are_the_definitions() -> None:
    t = b.ago(hours=3)
    containers = [
        b.running(
            f"a{i}", owner="alice", started_at=t if i % 2 else b.ago(hours=i), gpus=[b.GPU0] if i % 3 else []
        )
        for i in range(9)
    ]
    containers.append(b.running("every", owner="alice", started_at=t, all_gpus=True))  # no reference
    never = b.running("no-start", owner="alice").model_copy(update={"started_at": None})
    containers.append(never)  # a start not read: its creation counts
    ctx = _ctx(containers, [b.gpu(0)])
    policy = b.policy()
    for c in ctx.containers:
        ctx.policies[c.id] = policy
    live = list(ctx.containers)  # in id order, as the grouping walks them
    # The definition: by start (creation when no start was read), stable: equal starts in id order.
    assert owners(ctx)["alice"] == sorted(live, key=lambda c: c.started_at or c.created_at)
    assert gpu_holders(ctx)["alice"] == [c for c in owners(ctx)["alice"] if c.has_gpu]
    assert ctx.by_name["every"] in gpu_holders(ctx)["alice"]


def test_reported_count_victims_are_the_general_walks() -> None:
    containers = [b.running(f"a{i}", started_at=b.ago(hours=9 - i)) for i in range(5)]
    ctx = _ctx(containers, [])
    for c in ctx.containers:
        ctx.policies[c.id] = b.policy()
    owned = owners(ctx)["alice"]
    for k in range(-1, len(owned) + 2):
        # A float excess takes the general walk; the integer one the newest-k slice.
        assert _victims(ctx, owned, k, None, False) == _victims(ctx, owned, float(k), None, False)
    # Enforced, a container never stopped is passed over: the slice must not be taken then.
    ctx.policies[owned[-1].id] = b.policy(protected=True)
    victims, kept = _victims(ctx, owned, 1, None, True)
    assert victims == [owned[-2]] and list(kept) == [owned[-1].name]
