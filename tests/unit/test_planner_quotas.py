"""Per-user quotas: containers, GPU-equivalents (MIG shares), GPU units per container; report or stop."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.memory import ControllerMemory
from controller.plan.planner import plan
from controller.plan.types import ActionKind, DeferReason, Plan, Reason, StopParams
from controller.snapshot import ContainerObs, GpuObs
from crd_like_specs.vocabulary import ContainerType
from desired_state.effective import EffectivePolicy, ExemptFrom, ResourceSpec, Sourced
from tests.fixtures import builders as b


def quotas(
    *,
    containers: int | None = None,
    gpus: float | None = None,
    slots: int | None = None,
    exempt: bool = False,
) -> ResourceSpec:
    return ResourceSpec(
        max_containers_per_user=Sourced(value=containers, source="UserGroup/student"),
        max_gpu_equivalents=Sourced(value=gpus, source="UserGroup/student"),
        max_gpu_slots_per_container=Sourced(value=slots, source="UserGroup/student"),
        exempt=Sourced(value=exempt, source="container type api (test): resourcesExempt"),
    )


def pol(res: ResourceSpec, **kw: Any) -> EffectivePolicy:
    return b.policy(**kw).model_copy(update={"resources": res})


def boxes(n: int, owner: str = "alice", **kw: Any) -> list[ContainerObs]:
    # c0 oldest ... c{n-1} newest
    return [b.running(f"{owner}-{i}", owner=owner, started_at=b.ago(hours=n - i), **kw) for i in range(n)]


def run(
    containers: list[ContainerObs],
    policy: EffectivePolicy,
    *,
    gpus: list[GpuObs] | None = None,
    memory: ControllerMemory | None = None,
    now: datetime = b.T0,
    per_container: dict[str, EffectivePolicy] | None = None,
    **glob: Any,
) -> Plan:
    snap = b.snapshot(containers=containers, gpus=gpus or [], observed_at=now)
    desired = b.desired(policy, b.global_policy(**glob), per_container=per_container)
    return plan(snap, desired, memory or ControllerMemory(), now)


def of(p: Plan, kind: ActionKind, reason: Reason) -> list[Any]:
    return [a for a in p.actions if a.kind == kind and a.reason == reason]


def test_a_user_over_the_container_quota_is_warned_and_the_admin_alerted() -> None:
    p = run(boxes(4), pol(quotas(containers=3)))
    (alert,) = of(p, ActionKind.ALERT_ADMIN, Reason.CONTAINER_QUOTA_EXCEEDED)
    assert alert.evidence["containers"] == 4 and alert.evidence["beyond"] == ["alice-3"]
    (warn,) = of(p, ActionKind.WARN_OWNER, Reason.CONTAINER_QUOTA_EXCEEDED)
    assert warn.target.container == "alice-3" and "UserGroup/student" in warn.message
    assert of(p, ActionKind.STOP_CONTAINER, Reason.CONTAINER_QUOTA_EXCEEDED) == []  # report by default


def test_within_the_quota_and_unknown_owners_are_left_alone() -> None:
    assert (
        of(run(boxes(3), pol(quotas(containers=3))), ActionKind.ALERT_ADMIN, Reason.CONTAINER_QUOTA_EXCEEDED)
        == []
    )
    p = run(boxes(5, owner="unknown"), pol(quotas(containers=1)))
    assert of(p, ActionKind.ALERT_ADMIN, Reason.CONTAINER_QUOTA_EXCEEDED) == []


def test_enforce_stop_stops_the_newest_after_the_warning_lead() -> None:
    containers = boxes(4)
    policy = pol(quotas(containers=3))
    first = run(containers, policy, quota_enforce="stop")
    (warn,) = of(first, ActionKind.WARN_OWNER, Reason.CONTAINER_QUOTA_EXCEEDED)
    assert of(first, ActionKind.STOP_CONTAINER, Reason.CONTAINER_QUOTA_EXCEEDED) == []
    waiting = [d for d in first.deferred if d.rule == Reason.CONTAINER_QUOTA_EXCEEDED]
    assert [d.why for d in waiting] == [DeferReason.WAITING_FOR_WARNING]

    warned = b.record_outcomes(first, b.T0)
    early = run(containers, policy, memory=warned, now=b.at(minutes=5), quota_enforce="stop")
    assert of(early, ActionKind.STOP_CONTAINER, Reason.CONTAINER_QUOTA_EXCEEDED) == []
    later = run(containers, policy, memory=warned, now=b.at(minutes=11), quota_enforce="stop")
    (stop,) = of(later, ActionKind.STOP_CONTAINER, Reason.CONTAINER_QUOTA_EXCEEDED)
    assert stop.target.container == warn.target.container == "alice-3"
    # The executor stops it only while the three the quota counted and keeps are still live.
    kept = tuple(c.id for c in containers[:3])
    assert stop.params == StopParams(grace_s=60.0, remove=False, quota_counted_ids=kept)


def test_enforce_stop_never_stops_a_devcontainer_or_protected_one_it_picks_the_next_newest() -> None:
    containers = boxes(3)
    containers.append(
        b.running(
            "alice-dev", owner="alice", container_type=ContainerType.DEVCONTAINER, started_at=b.ago(minutes=1)
        )
    )
    policy = pol(quotas(containers=2))
    protected = pol(quotas(containers=2), protected=True)
    per = {"alice-2": protected}
    first = run(containers, policy, per_container=per, quota_enforce="stop")
    (alert,) = of(first, ActionKind.ALERT_ADMIN, Reason.CONTAINER_QUOTA_EXCEEDED)
    assert alert.evidence["beyond"] == ["alice-1", "alice-0"]
    assert set(alert.evidence["never_stopped"]) == {"alice-dev", "alice-2"}
    later = run(
        containers,
        policy,
        per_container=per,
        memory=b.record_outcomes(first, b.T0),
        now=b.at(minutes=11),
        quota_enforce="stop",
    )
    stopped = {
        a.target.container for a in of(later, ActionKind.STOP_CONTAINER, Reason.CONTAINER_QUOTA_EXCEEDED)
    }
    assert stopped == {"alice-1", "alice-0"}


def test_gpu_equivalents_count_mig_slices_by_their_share() -> None:
    gpu0 = b.gpu(0)
    mig = b.gpu(1, mig_slots=2)
    three, one = mig.mig_devices
    mig = mig.model_copy(
        update={
            "mig_devices": (
                three.model_copy(update={"gpu_equivalents": 3 / 7, "compute_slices": 3}),
                one.model_copy(update={"gpu_equivalents": 1 / 7, "compute_slices": 1}),
            )
        }
    )
    c_three = b.running(
        "a-three", owner="alice", gpus=[b.ref(three.uuid, parent=mig.uuid)], started_at=b.ago(hours=3)
    )
    c_one = b.running(
        "a-one", owner="alice", gpus=[b.ref(one.uuid, parent=mig.uuid)], started_at=b.ago(hours=2)
    )
    c_full = b.running("a-full", owner="alice", gpus=[b.GPU0], started_at=b.ago(hours=1))
    p = run([c_three, c_one, c_full], pol(quotas(gpus=1.0)), gpus=[gpu0, mig])
    (alert,) = of(p, ActionKind.ALERT_ADMIN, Reason.GPU_QUOTA_EXCEEDED)
    assert alert.evidence["gpu_equivalents"] == round(1 + 4 / 7, 6)
    assert alert.evidence["beyond"] == ["a-full"]  # dropping the newest (1.0) brings 4/7 under 1.0
    # 4/7 alone is within the quota
    assert (
        of(
            run([c_three, c_one], pol(quotas(gpus=1.0)), gpus=[gpu0, mig]),
            ActionKind.ALERT_ADMIN,
            Reason.GPU_QUOTA_EXCEEDED,
        )
        == []
    )


def test_an_unknown_share_within_the_known_quota_defers() -> None:
    mig = b.gpu(1, mig_slots=1)  # gpu_equivalents unknown
    (dev,) = mig.mig_devices
    c = b.running("a-mig", owner="alice", gpus=[b.ref(dev.uuid, parent=mig.uuid)])
    p = run([c], pol(quotas(gpus=0.5)), gpus=[mig])
    assert of(p, ActionKind.ALERT_ADMIN, Reason.GPU_QUOTA_EXCEEDED) == []
    (d,) = [d for d in p.deferred if d.rule == Reason.GPU_QUOTA_EXCEEDED]
    assert d.why == DeferReason.UNKNOWN_SIGNAL and "cannot be judged" in d.message


def test_a_container_with_more_gpu_units_than_allowed_is_reported() -> None:
    c = b.running("two-gpus", owner="alice", gpus=[b.GPU0, b.GPU1])
    p = run([c], pol(quotas(slots=1)), gpus=[b.gpu(0), b.gpu(1)])
    (alert,) = of(p, ActionKind.ALERT_ADMIN, Reason.GPU_SLOTS_ABOVE_SPEC)
    assert alert.evidence["gpu_units"] == [b.GPU0, b.GPU1]
    assert [a.target.container for a in of(p, ActionKind.WARN_OWNER, Reason.GPU_SLOTS_ABOVE_SPEC)] == [
        "two-gpus"
    ]


@settings(max_examples=150, deadline=None)
@given(
    kinds=st.lists(
        st.sampled_from(["plain", "dev", "protected", "monitoring", "exempt", "opted-out"]),
        min_size=1,
        max_size=8,
    ),
    quota=st.integers(min_value=0, max_value=6),
)
def test_property_a_quota_never_stops_a_protected_exempt_or_devcontainer_container(
    kinds: list[str], quota: int
) -> None:
    containers: list[ContainerObs] = []
    per: dict[str, EffectivePolicy] = {}
    res = quotas(containers=quota)
    for i, kind in enumerate(kinds):
        name = f"alice-{i}"
        ctype = ContainerType.DEVCONTAINER if kind == "dev" else ContainerType.DOCKER
        containers.append(
            b.running(name, owner="alice", container_type=ctype, started_at=b.ago(hours=10 - i))
        )
        per[name] = pol(
            quotas(containers=quota, exempt=kind == "opted-out"),
            protected=kind == "protected",
            monitoring=kind == "monitoring",
            exemptions=[b.exemption(ExemptFrom.RESOURCES)] if kind == "exempt" else [],
        )
    first = run(containers, pol(res), per_container=per, quota_enforce="stop")
    later = run(
        containers,
        pol(res),
        per_container=per,
        memory=b.record_outcomes(first, b.T0),
        now=b.at(hours=1),
        quota_enforce="stop",
    )
    # Proposed stops: those that run, and those the breaker or the budget holds back.
    stopped = {a.target.container for a in later.actions if a.kind == ActionKind.STOP_CONTAINER} | {
        d.target.container
        for d in later.deferred
        if d.evidence.get("action") == ActionKind.STOP_CONTAINER.value
    }
    for i, kind in enumerate(kinds):
        if kind != "plain":
            assert f"alice-{i}" not in stopped
    plain = sum(1 for k in kinds if k == "plain")
    assert len(stopped) == min(plain, max(0, len(kinds) - quota))


def test_metrics_count_containers_over_spec_users_over_quota_and_memory_brought_under() -> None:
    from controller.act.report import ActionOutcome, ExecutionReport, Outcome
    from controller.ops.metrics import Metrics
    from controller.resource_metrics import resource_figures
    from controller.snapshot import ResourceLimits

    unlimited = [
        c.model_copy(
            update={
                "limits": ResourceLimits(),
                "signals": b.signals(b.T0).model_copy(
                    update={
                        "memory_bytes": 300,
                        "memory_unknown": None,
                        "pids_current": 2,
                        "pids_unknown": None,
                    }
                ),
            }
        )
        for c in boxes(4)
    ]
    res = quotas(containers=3).model_copy(update={"memory_bytes": Sourced(value=1 << 30, source="t")})
    p = run(unlimited, pol(res))
    update = next(a for a in p.actions if a.kind == ActionKind.UPDATE_RESOURCES)
    report = ExecutionReport(
        outcomes=(
            ActionOutcome(
                key=update.key,
                kind=update.kind,
                reason=update.reason,
                target=update.target,
                outcome=Outcome.DONE,
            ),
        ),
        memory=p.memory,
    )
    assert resource_figures(p, report) == (4, 1, 300)
    m = Metrics(version="test")
    m.observe_resources(4, 1)
    m.add_memory_brought_under_limits(300)
    text = m.render().decode()
    assert "ds01_containers_over_spec 4.0" in text and "ds01_users_over_quota 1.0" in text
    assert "ds01_memory_brought_under_limits_bytes_total 300.0" in text


def test_a_slot_cap_of_zero_is_exceeded_by_one_unit() -> None:
    # The rule tests each cap before saying more; a cap of 0 must not pass for "one unit, fine",
    # and each container is judged by its own policy's cap.
    one = b.running("one-gpu", gpus=[b.GPU0])
    uncapped = b.running("uncapped", gpus=[b.GPU1])
    p = run(
        [one, uncapped],
        pol(quotas(slots=0)),
        gpus=[b.gpu(0), b.gpu(1)],
        per_container={"uncapped": pol(quotas(slots=None))},
    )
    (alert,) = of(p, ActionKind.ALERT_ADMIN, Reason.GPU_SLOTS_ABOVE_SPEC)
    assert alert.evidence["gpu_units"] == [b.GPU0] and alert.evidence["quota"] == 0
    assert [a.target.container for a in of(p, ActionKind.WARN_OWNER, Reason.GPU_SLOTS_ABOVE_SPEC)] == [
        "one-gpu"
    ]
