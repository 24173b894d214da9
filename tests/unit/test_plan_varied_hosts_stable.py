"""Many small, varied hosts' plans (every action, deferral and memory record, in order) stay what
they were before the planner's speed work of beac7b9..8873a30.

The synthetic host of ``test_plan_deferrals_stable`` is one host; these are the inputs it lacks:
holds of 0, 1e-9 .. 1e-6 (under a microsecond), fractional, negative, -0.0, huge (1e9, and 1e12,
past the calendar: the pass raises) and NaN/inf (the pass raises) seconds, as ints and floats; the
restart's hold on a container a restart stopped, and none; containers with every GPU, unresolved
references, MIG devices (of a GPU they also hold, or not; one NVML also lists as a GPU of its own),
a UUID NVML does not list, several references, and none; a host with no GPUs listed; owners
``unknown``, empty, claimed by a label with the labels trusted and not; GPU and container quotas and
slot caps, reported and enforced; budgets of 0 to 100 over many removals, the breakers; processes of
live, paused, restarting, exited and missing containers (by full id and by a 12-character prefix),
on a device their container references, on a MIG device of it, on a device it does not reference,
host, system, foreign and vanished processes; three passes each, the memory carried over.

The digest was taken with the planner of 628814e (before those commits), which gives the same
plans byte for byte. A pass that raises is recorded by its exception's type. Changed once since, on
purpose: a StopContainer whose owner's notice names a hold carries that hold as a number too
(evidence ``kept_after_stop_s``, the promise the hold rule keeps); with that key taken out of the
stops' evidence, the plans are still 628814e's byte for byte. And once more: a WarnOwner whose
notice names a hold carries it too (the executor records it with that start); with the key taken out
of the warnings' evidence, the plans are the same as before it, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import timedelta
from typing import Any

import pytest

from controller.memory import ContainerMemory, ControllerMemory
from controller.plan.context import PassContext, span
from controller.plan.desired import StaticDesired
from controller.plan.planner import plan
from controller.plan.rules.quotas import _per_holder, _units_of, gpu_equivalents, gpu_units, mig_shares
from controller.snapshot import CgroupScope, ContainerState, MigDeviceObs, OwnerRule, ProcessState, Snapshot
from desired_state.effective import ResourceSpec, Sourced
from tests.fixtures import builders as b

SEEDS = 600
PLANS_DIGEST = "7c918ff12c5d623fac3dff223546e9aa002f77e174f1f0a54dc95be9460de108"

_NAN, _INF = float("nan"), float("inf")
_ODD = b.gpu(4).uuid
_NUMBERS: list[float] = [
    0,
    0.0,
    -0.0,
    1e-9,
    1e-7,
    4.5e-7,
    5e-7,
    1.5e-6,
    0.5,
    1.5,
    59.9999996,
    15 * 60,
    15 * 60.0,
    3600.25,
]
_NUMBERS += [-1.0, -1e9, 1e9]
_HOLDS: list[float | None] = [*_NUMBERS, None]
_EXTREME = [1e12, _NAN, _INF]
_STATES = [ContainerState.RUNNING] * 3 + [
    ContainerState.CREATED,
    ContainerState.EXITED,
    ContainerState.EXITED,
    ContainerState.DEAD,
    ContainerState.PAUSED,
    ContainerState.RESTARTING,
]
_OWNERS = ["alice", "bob", "carol", "unknown", ""]
_RULES = [
    None,
    OwnerRule.LABEL_DS01_USER,
    OwnerRule.LABEL_AIME_USER,
    OwnerRule.NAME_UID,
    OwnerRule.POLICY_SELECTOR,
]


def _host(seed: int) -> tuple[Snapshot, StaticDesired, ControllerMemory]:
    rng = random.Random(seed)
    holds = [*_HOLDS, *_EXTREME] if seed % 4 == 0 else _HOLDS
    gpus = [
        b.gpu(0),
        b.gpu(1),
        b.gpu(2, mig_slots=rng.choice([2, 3])),
        b.gpu(3, mig_slots=2, mig_profile=rng.choice([None, "1g.10gb", "3g.40gb"])),
    ]
    if seed % 3 == 0:
        # A MIG device NVML also lists as a GPU of its own: its own physical GPU.
        gpus.append(
            b.gpu(4, mig_slots=0).model_copy(
                update={"mig_devices": (MigDeviceObs(uuid=_ODD, index=0, memory_total_bytes=1),)}
            )
        )
    if rng.random() < 0.1:
        gpus = []
    mig2, mig3 = [b.mig_uuid(2, 0), b.mig_uuid(2, 1)], [b.mig_uuid(3, 0), b.mig_uuid(3, 1)]
    devices = [b.GPU0, b.GPU1, b.GPU2, *mig2, *mig3, _ODD, "GPU-not-listed"]
    containers = []
    memories = {}
    for i in range(rng.randint(0, 40)):
        refs: list[Any] = []
        for _ in range(rng.choice([0, 0, 1, 1, 1, 2, 3])):
            if rng.random() < 0.15:
                refs.append(b.unresolved_ref(str(rng.randint(0, 9))))
            else:
                d = rng.choice(devices)
                parent = b.GPU2 if d in mig2 else _ODD if d == _ODD else None
                refs.append(b.ref(d, parent=parent) if parent or d in mig3 else d)
        state = rng.choice(_STATES)
        created = b.ago(minutes=rng.randint(0, 3000))
        c = b.container(
            f"c{i}",
            state=state,
            gpus=refs,
            all_gpus=rng.random() < 0.12,
            created_at=created,
            started_at=min(created + timedelta(minutes=rng.randint(0, 30)), b.T0),
            finished_at=b.ago(minutes=rng.choice([0, 1, 10, 20, 40, 100, 2000])),
        )
        update: dict[str, Any] = {"owner": rng.choice(_OWNERS)}
        rule = rng.choice(_RULES)
        if rule is not None:
            update["owner_rule"] = rule
        if rng.random() < 0.1:
            update["name"] = ""
        if state == ContainerState.RUNNING and rng.random() < 0.3:
            update["signals"] = None
        c = c.model_copy(update=update)
        containers.append(c)
        if rng.random() < 0.5:
            memories[c.id] = ContainerMemory(
                container_id=c.id,
                name=c.name,
                stopped_by_restart_at=b.ago(minutes=rng.randint(0, 100)) if rng.random() < 0.5 else None,
                hold_discount_s=rng.choice([0.0, 0.0, 1e-7, 30.0, 1e6]),
            )
    processes = []
    for j in range(rng.randint(0, 30)):
        kind = rng.choice(["own", "own", "own", "gone", "host", "system", "foreign", "unknown-id"])
        owner = rng.choice(containers) if containers and kind == "own" else None
        gpu_uuid = rng.choice([b.GPU0, b.GPU1, b.GPU2, b.GPU2])
        on = [None, gpu_uuid, *mig2, "GPU-not-listed"] if gpu_uuid == b.GPU2 else [None, gpu_uuid]
        if owner is not None:
            container_id: str | None = owner.id[:12] if rng.random() < 0.3 else owner.id
        else:
            container_id = "e" * 64 if kind in ("gone", "unknown-id") else None
        scopes = [None, CgroupScope.ENGINE, CgroupScope.ENGINE, CgroupScope.UNKNOWN]
        processes.append(
            b.process(
                2000 + j,
                gpu_uuid,
                container_id=container_id,
                device_uuid=rng.choice(on),
                container_exists=kind == "unknown-id",
                is_system=kind == "system",
                start_time=rng.choice([None, float(j), float(j)]),
                scope={"foreign": CgroupScope.FOREIGN, "host": CgroupScope.HOST}.get(
                    kind, rng.choice(scopes)
                ),
                state=ProcessState.VANISHED if rng.random() < 0.05 else ProcessState.PRESENT,
                user=rng.choice(["alice", "bob", "root"]),
            )
        )
    resources = ResourceSpec(
        max_containers_per_user=Sourced(value=rng.choice([None, 0, 1, 2, 5]), source="t"),
        max_gpu_equivalents=Sourced(value=rng.choice([None, 0.0, 0.25, 0.5, 1.0, 1.5, 2.0]), source="t"),
        max_gpu_slots_per_container=Sourced(value=rng.choice([None, 0, 1, 2]), source="t"),
    )
    policies = {
        c.name: b.policy(
            owner=c.owner or "alice",
            gpu_hold_after_stop_s=rng.choice(holds),
            container_hold_after_stop_s=rng.choice(holds),
            created_container_timeout_s=rng.choice(holds),
            idle_timeout_s=rng.choice([None, 60.0, 1800.0]),
            max_runtime_s=rng.choice([None, 60.0, 1e9, 86400.0]),
            protected=rng.random() < 0.05,
        ).model_copy(update={"resources": resources})
        for c in containers
    }
    glob = b.global_policy(
        max_destructive_actions_per_pass=rng.choice([0, 1, 2, 3, 100]),
        breaker_max_fraction=rng.choice([0.0, 0.5, 1.0]),
        breaker_min_containers=rng.choice([1, 3, 100]),
        breaker_min_removals=rng.choice([1, 5, 100]),
        breaker_max_remove_fraction=rng.choice([0.0, 0.5, 1.0]),
        restart_stopped_hold_s=rng.choice(
            [None, 0.0, 1e-7, -5.0, 3600.0, 1e9, *(_EXTREME if seed % 4 == 0 else [])]
        ),
        trust_labels=rng.random() < 0.5,
        quota_enforce=rng.choice(["report", "stop"]),
    )
    snapshot = b.snapshot(containers=containers, gpus=gpus, processes=processes)
    return (
        snapshot,
        b.desired(b.policy(), glob, per_container=policies),
        ControllerMemory(containers=memories),
    )


def _plans_digest() -> str:
    h = hashlib.sha256()
    for seed in range(SEEDS):
        snapshot, desired, memory = _host(seed)
        now = b.T0
        for _ in range(3):
            try:
                the_plan = plan(snapshot, desired, memory, now)
            except (OverflowError, ValueError) as e:
                h.update(f"{seed}: {type(e).__name__}\n".encode())
                break
            h.update(json.dumps(the_plan.model_dump(mode="json")).encode())
            h.update(b"\n")
            memory = b.record_outcomes(the_plan)
            now += timedelta(minutes=7)
            snapshot = snapshot.model_copy(update={"observed_at": now})
    return h.hexdigest()


def test_the_varied_hosts_plans_are_the_planner_befores() -> None:
    assert _plans_digest() == PLANS_DIGEST


@pytest.mark.parametrize("first", [0, -0.0, 0.0, 900, 900.0, 1e-7, 4.5e-7, 5e-7])
def test_the_memoised_span_is_the_timedelta_whatever_came_first(first: float) -> None:
    for value in (first, *_NUMBERS, *_EXTREME, first):
        try:
            expected: object = timedelta(seconds=value)
        except (OverflowError, ValueError) as e:
            expected = type(e)
        try:
            got: object = span(value)
        except (OverflowError, ValueError) as e:
            got = type(e)
        assert got == expected, value


def test_the_quotas_written_out_units_and_equivalents_are_the_functions() -> None:
    """``_units_of`` and ``_per_holder`` (670c3eb) give what ``gpu_units`` and ``gpu_equivalents``
    give, for every container of the varied hosts (not only the holders of one owner)."""
    for seed in range(0, SEEDS, 3):
        snapshot, desired, memory = _host(seed)
        ctx = PassContext.build(snapshot, b.T0, desired.global_policy, memory)
        containers = list(ctx.containers)
        units = _units_of(ctx, containers)
        assert units == {c.id: gpu_units(ctx, c) for c in containers}, seed
        shares = mig_shares(ctx)
        per, unknown = _per_holder(ctx, containers, shares, units)
        expected_unknown: list[str] = []
        for c in containers:
            known, missing = gpu_equivalents(ctx, c, shares, units[c.id])
            assert per[c.id] == known, (seed, c.name)
            expected_unknown.extend(f"{c.name}: {u}" for u in missing)
        assert unknown == expected_unknown, seed
