"""Quota stops under inputs that change between passes, claims of ownership, GPU shares and other rules."""

from __future__ import annotations

from typing import Any

from controller.plan.types import ActionKind, DeferReason, Plan, Reason, StopParams
from controller.snapshot import ContainerObs, ContainerState, OwnerRule, TypeRule
from crd_like_specs.vocabulary import ContainerType
from desired_state.effective import EffectivePolicy, ResourceSpec, Sourced
from tests.fixtures import builders as b
from tests.unit.test_planner_quotas import boxes, pol, quotas, run

CQ = Reason.CONTAINER_QUOTA_EXCEEDED.value
GQ = Reason.GPU_QUOTA_EXCEEDED.value


def acts(p: Plan) -> list[tuple[str, str, str]]:
    return [(a.kind.value, a.reason.value, a.target.label()) for a in p.actions]


def test_a_report_mode_notice_is_not_the_warning_before_a_quota_stop() -> None:
    # Reported for a day (the owner was asked to stop "a container"), then enforcement is turned on:
    # the container is told it will be stopped, and stopped only after its own full lead.
    containers = boxes(2)
    policy = pol(quotas(containers=1))
    reported = run(containers, policy)
    assert acts(reported) == [("AlertAdmin", CQ, "user alice"), ("WarnOwner", CQ, "alice-1")]
    memory = b.record_outcomes(reported, b.T0)

    enforced = run(containers, policy, memory=memory, now=b.at(days=1), quota_enforce="stop")
    assert acts(enforced) == [("WarnOwner", CQ, "alice-1")]
    (warn,) = enforced.actions
    assert "alice-1 will be stopped" in warn.message
    memory = b.record_outcomes(enforced, b.at(days=1))

    early = run(containers, policy, memory=memory, now=b.at(days=1, minutes=5), quota_enforce="stop")
    assert acts(early) == []
    due = run(containers, policy, memory=memory, now=b.at(days=1, minutes=11), quota_enforce="stop")
    assert acts(due) == [("StopContainer", CQ, "alice-1")]


def test_a_warning_from_an_earlier_time_beyond_the_quota_does_not_count_again() -> None:
    # Warned, then the quota is raised (no stop), then lowered again two days later: the container is
    # warned again and gets a full lead; the old warning does not make the stop due at once.
    containers = boxes(2)
    strict, lax = pol(quotas(containers=1)), pol(quotas(containers=2))
    first = run(containers, strict, quota_enforce="stop")
    assert acts(first) == [("AlertAdmin", CQ, "user alice"), ("WarnOwner", CQ, "alice-1")]
    memory = b.record_outcomes(first, b.T0)

    raised = run(containers, lax, memory=memory, now=b.at(minutes=5), quota_enforce="stop")
    assert acts(raised) == []
    memory = b.record_outcomes(raised, b.at(minutes=5))

    lowered = run(containers, strict, memory=memory, now=b.at(days=2), quota_enforce="stop")
    assert acts(lowered) == [("WarnOwner", CQ, "alice-1")]
    memory = b.record_outcomes(lowered, b.at(days=2))
    early = run(containers, strict, memory=memory, now=b.at(days=2, minutes=5), quota_enforce="stop")
    assert acts(early) == []
    due = run(containers, strict, memory=memory, now=b.at(days=2, minutes=11), quota_enforce="stop")
    assert acts(due) == [("StopContainer", CQ, "alice-1")]


def test_a_warning_before_the_owner_came_back_under_the_quota_does_not_count_again() -> None:
    # alice-1 is warned; alice stops alice-0 (within the quota), starts it again a day later: the
    # restarted alice-0 is now the newest, warned and stopped in turn; alice-1 is never stopped
    # on its old warning.
    a0, a1 = boxes(2)
    policy = pol(quotas(containers=1))
    first = run([a0, a1], policy, quota_enforce="stop")
    memory = b.record_outcomes(first, b.T0)
    alone = run([a1], policy, memory=memory, now=b.at(minutes=5), quota_enforce="stop")
    assert acts(alone) == []
    memory = b.record_outcomes(alone, b.at(minutes=5))
    # Equal start times: the tie is broken by id, whichever it is, the one warned is the one stopped.
    a0_again = a0.model_copy(update={"started_at": a1.started_at})
    again = run([a0_again, a1], policy, memory=memory, now=b.at(days=1), quota_enforce="stop")
    (warn,) = [a for a in again.actions if a.kind == ActionKind.WARN_OWNER]
    memory = b.record_outcomes(again, b.at(days=1))
    early = run([a0_again, a1], policy, memory=memory, now=b.at(days=1, minutes=5), quota_enforce="stop")
    assert acts(early) == []
    due = run([a0_again, a1], policy, memory=memory, now=b.at(days=1, minutes=11), quota_enforce="stop")
    assert acts(due) == [("StopContainer", CQ, warn.target.label())]


def after_the_lead(first: Plan, containers: list[ContainerObs], policy: EffectivePolicy, **kw: Any) -> Plan:
    """The pass 11 minutes after ``first`` (past the 10-minute warning lead), quotas enforced, on
    the memory ``first`` left with its actions carried out."""
    return run(
        containers,
        policy,
        memory=b.record_outcomes(first, b.T0),
        now=b.at(minutes=11),
        quota_enforce="stop",
        **kw,
    )


def claimed(c: ContainerObs) -> ContainerObs:
    """The container's owner comes from its ds01.user label: a claim anyone can write."""
    return c.model_copy(
        update={"labels": {**c.labels, "ds01.user": c.owner}, "owner_rule": OwnerRule.LABEL_DS01_USER}
    )


def test_containers_that_claim_an_owner_do_not_count_in_that_owners_quota_without_trusted_labels() -> None:
    # Somebody runs two containers labelled ds01.user=bob; bob then starts his own job (owner from
    # its main process uid). Without trusted labels the claims are not bob's: bob is within his quota.
    fakes = [claimed(c) for c in boxes(2, owner="bob")]
    job = b.running("bob-job", owner="bob", started_at=b.ago(minutes=10)).model_copy(
        update={"owner_rule": OwnerRule.PROCESS_UID}
    )
    policy = pol(quotas(containers=1, gpus=0))
    first = run([*fakes, job], policy, quota_enforce="stop", trust_labels=False)
    assert acts(first) == []
    later = run(
        [*fakes, job],
        policy,
        memory=b.record_outcomes(first, b.T0),
        now=b.at(hours=1),
        quota_enforce="stop",
        trust_labels=False,
    )
    assert acts(later) == []
    # With trusted labels the label is the owner: bob's newest is beyond the quota.
    trusted = run([*fakes, job], policy, quota_enforce="stop")
    assert ("WarnOwner", CQ, "bob-job") in acts(trusted)


def test_a_gpu_quota_stop_stops_only_what_brings_the_owner_within_when_the_newest_is_kept() -> None:
    # alice-0 and alice-1 hold two GPUs each, the newest (protected) one; the quota is 3:
    # stopping alice-1 leaves 2 + 1 = 3. alice-0 must not be stopped too.
    gpus = [b.gpu(i) for i in range(5)]
    a0 = b.running("alice-0", owner="alice", gpus=[gpus[0].uuid, gpus[1].uuid], started_at=b.ago(hours=3))
    a1 = b.running("alice-1", owner="alice", gpus=[gpus[2].uuid, gpus[3].uuid], started_at=b.ago(hours=2))
    a2 = b.running("alice-2", owner="alice", gpus=[gpus[4].uuid], started_at=b.ago(hours=1))
    policy = pol(quotas(gpus=3))
    per = {"alice-2": pol(quotas(gpus=3), protected=True)}
    first = run([a0, a1, a2], policy, gpus=gpus, per_container=per, quota_enforce="stop")
    (alert,) = [a for a in first.actions if a.kind == ActionKind.ALERT_ADMIN]
    assert alert.evidence["beyond"] == ["alice-1"]
    assert [a.target.label() for a in first.actions if a.kind == ActionKind.WARN_OWNER] == ["alice-1"]
    due = run(
        [a0, a1, a2],
        policy,
        gpus=gpus,
        per_container=per,
        memory=b.record_outcomes(first, b.T0),
        now=b.at(minutes=11),
        quota_enforce="stop",
    )
    assert acts(due) == [("StopContainer", GQ, "alice-1")]


def test_a_gpu_quota_stop_goes_on_to_the_next_newest_when_the_first_stoppable_does_not_suffice() -> None:
    # The newest (protected) holds two GPUs, alice-1 and alice-0 one each; quota 2: both alice-1 and
    # alice-0 must go (2 kept + 1 + 1 = 4), and in one warning, not one lead after the other.
    gpus = [b.gpu(i) for i in range(4)]
    a0 = b.running("alice-0", owner="alice", gpus=[gpus[0].uuid], started_at=b.ago(hours=3))
    a1 = b.running("alice-1", owner="alice", gpus=[gpus[1].uuid], started_at=b.ago(hours=2))
    a2 = b.running("alice-2", owner="alice", gpus=[gpus[2].uuid, gpus[3].uuid], started_at=b.ago(hours=1))
    policy = pol(quotas(gpus=2))
    per = {"alice-2": pol(quotas(gpus=2), protected=True)}
    first = run([a0, a1, a2], policy, gpus=gpus, per_container=per, quota_enforce="stop")
    (alert,) = [a for a in first.actions if a.kind == ActionKind.ALERT_ADMIN]
    assert alert.evidence["beyond"] == ["alice-1", "alice-0"]


def test_a_gpu_and_one_of_its_own_mig_devices_count_once() -> None:
    # Every GPU (an image's NVIDIA_VISIBLE_DEVICES=all) and a MIG device of one of them: the GPU is
    # held whole, 1.0, not 1.0 plus the device's share.
    mig = b.gpu(0, mig_slots=1)
    (dev,) = mig.mig_devices
    mig = mig.model_copy(update={"mig_devices": (dev.model_copy(update={"gpu_equivalents": 3 / 7}),)})
    c = b.running(
        "alice-0",
        owner="alice",
        gpus=[b.ref(dev.uuid, parent=mig.uuid)],
        all_gpus=True,
        started_at=b.ago(hours=1),
    )
    p = run([c], pol(quotas(gpus=1.0)), gpus=[mig], quota_enforce="stop")
    assert acts(p) == []


def test_a_gpu_and_one_of_its_own_mig_devices_are_one_unit_for_the_slot_cap() -> None:
    # One slot allowed: a container given GPU 0 and a MIG device of GPU 0 holds one GPU.
    mig = b.gpu(0, mig_slots=1)
    (dev,) = mig.mig_devices
    c = b.running(
        "alice-0", owner="alice", gpus=[mig.uuid, b.ref(dev.uuid, parent=mig.uuid)], started_at=b.ago(hours=1)
    )
    slots = ResourceSpec(max_gpu_slots_per_container=Sourced(value=1, source="UserGroup/student"))
    assert acts(run([c], pol(slots), gpus=[mig], quota_enforce="stop")) == []


def test_a_container_due_for_a_runtime_stop_and_a_quota_stop_is_stopped_once() -> None:
    # alice-1 (a GPU container) has run past its max runtime and is beyond the container quota, warned
    # for both: one StopContainer, one destructive action of the budget, one stop for the breaker.
    a0 = b.running("alice-0", owner="alice", started_at=b.ago(hours=3))
    a1 = b.running("alice-1", owner="alice", gpus=[b.GPU0], started_at=b.ago(hours=2))
    policy = pol(quotas(containers=1), max_runtime_s=2 * b.HOUR)
    first = run([a0, a1], policy, gpus=[b.gpu(0)], now=b.ago(minutes=15), quota_enforce="stop")
    assert sorted(a.key.split(":")[0] + ":" + a.reason.value for a in first.actions) == [
        "AlertAdmin:" + CQ,
        "WarnOwner:" + CQ,
        "WarnOwner:MaxRuntimeWarning",
    ]
    due = run(
        [a0, a1],
        policy,
        gpus=[b.gpu(0)],
        memory=b.record_outcomes(first, b.ago(minutes=15)),
        now=b.at(minutes=1),
        quota_enforce="stop",
    )
    stops = [a for a in due.actions if a.kind == ActionKind.STOP_CONTAINER]
    assert [a.target.label() for a in stops] == ["alice-1"]
    assert not [d for d in due.deferred if d.evidence.get("action") == ActionKind.STOP_CONTAINER.value]


def test_a_container_beyond_two_quotas_is_stopped_once() -> None:
    # alice-1 is beyond the container quota and the GPU quota: warned once (the GPU quota's stop
    # brings alice within the container quota too), stopped once.
    a0 = b.running("alice-0", owner="alice", started_at=b.ago(hours=3))
    a1 = b.running("alice-1", owner="alice", gpus=[b.GPU0, b.GPU1], started_at=b.ago(hours=2))
    policy = pol(quotas(containers=1, gpus=1))
    gpus = [b.gpu(0), b.gpu(1)]
    first = run([a0, a1], policy, gpus=gpus, quota_enforce="stop")
    assert [(k, r, t) for k, r, t in acts(first) if k == "WarnOwner"] == [("WarnOwner", GQ, "alice-1")]
    due = after_the_lead(first, [a0, a1], policy, gpus=gpus)
    # The GPU quota is judged first: its stop counts against the container quota too.
    assert acts(due) == [("StopContainer", GQ, "alice-1")]
    assert not [d for d in due.deferred if d.evidence.get("action") == ActionKind.STOP_CONTAINER.value]


def test_a_container_another_rule_stops_does_not_count_towards_the_quota() -> None:
    """alice-0 reaches its max runtime in the pass alice-1's GPU-quota stop falls due: stopping
    alice-0 brings alice within the quota, so alice-1 is kept (both were stopped)."""
    a0 = b.running(
        "alice-0", owner="alice", gpus=[b.GPU0], started_at=b.ago(hours=23, minutes=50), sig=b.signals(b.T0)
    )
    a1 = b.running("alice-1", owner="alice", gpus=[b.GPU1], started_at=b.ago(hours=1), sig=b.signals(b.T0))
    policy = pol(quotas(gpus=1))
    gpus = [b.gpu(0), b.gpu(1)]
    first = run([a0, a1], policy, gpus=gpus, quota_enforce="stop")
    assert ("WarnOwner", GQ, "alice-1") in acts(first)
    due = run(
        [a0, a1],
        policy,
        gpus=gpus,
        memory=b.record_outcomes(first, b.T0),
        now=b.at(minutes=10),
        quota_enforce="stop",
    )
    assert [(k, r, t) for k, r, t in acts(due) if k == "StopContainer"] == [
        ("StopContainer", "MaxRuntimeExceeded", "alice-0")
    ]


def test_one_stop_for_the_gpu_quota_satisfies_the_container_quota_too() -> None:
    """Beyond both quotas with different newest containers: the GPU holder's stop also brings the
    container count within its quota, so the other container is kept."""
    gpu = b.running("alice-gpu", owner="alice", gpus=[b.GPU0], started_at=b.ago(hours=3))
    cpu = b.running("alice-cpu", owner="alice", started_at=b.ago(hours=2))
    policy = pol(quotas(containers=1, gpus=0.5))
    first = run([gpu, cpu], policy, gpus=[b.gpu(0)], quota_enforce="stop")
    due = after_the_lead(first, [gpu, cpu], policy, gpus=[b.gpu(0)])
    assert [(k, r, t) for k, r, t in acts(due) if k == "StopContainer"] == [
        ("StopContainer", GQ, "alice-gpu")
    ]


def test_a_reference_that_did_not_resolve_never_puts_a_container_beyond_the_slot_cap() -> None:
    # GPU 0 by its UUID, and NVIDIA_VISIBLE_DEVICES=0 that did not resolve (NVML down at the time):
    # perhaps the same GPU. Unknown is not "beyond": nothing is warned or stopped, the rule says why.
    c = b.running("alice-0", owner="alice", gpus=[b.GPU0, b.unresolved_ref("0")], started_at=b.ago(hours=1))
    slots = ResourceSpec(max_gpu_slots_per_container=Sourced(value=1, source="UserGroup/student"))
    first = run([c], pol(slots), gpus=[b.gpu(0)], quota_enforce="stop")
    later = run(
        [c],
        pol(slots),
        gpus=[b.gpu(0)],
        memory=b.record_outcomes(first, b.T0),
        now=b.at(hours=1),
        quota_enforce="stop",
    )
    for p in (first, later):
        assert acts(p) == []
        assert [(d.rule, d.why) for d in p.deferred if d.rule == Reason.GPU_SLOTS_ABOVE_SPEC] == [
            (Reason.GPU_SLOTS_ABOVE_SPEC, DeferReason.UNKNOWN_SIGNAL)
        ]
    # Two units known apart from it are beyond the cap of one.
    two = b.running(
        "alice-0", owner="alice", gpus=[b.GPU0, b.GPU1, b.unresolved_ref("0")], started_at=b.ago(hours=1)
    )
    assert acts(run([two], pol(slots), gpus=[b.gpu(0), b.gpu(1)])) == [
        ("AlertAdmin", Reason.GPU_SLOTS_ABOVE_SPEC.value, "user alice"),
        ("WarnOwner", Reason.GPU_SLOTS_ABOVE_SPEC.value, "alice-0"),
    ]


def test_a_paused_container_beyond_an_enforced_quota_shows_its_waiting_stop_every_pass() -> None:
    # The newest container is paused: its owner is told it will be stopped once it runs again, and
    # every pass says so (describe and plan show the stop that waits), until it runs and is stopped.
    containers = boxes(2)
    paused = b.container("alice-1", state=ContainerState.PAUSED, started_at=b.ago(hours=1))
    policy = pol(quotas(containers=1))
    first = run([containers[0], paused], policy, quota_enforce="stop")
    assert acts(first) == [("AlertAdmin", CQ, "user alice"), ("WarnOwner", CQ, "alice-1")]
    assert "will be stopped once it runs again" in first.actions[1].params.notice  # type: ignore[union-attr]
    waiting = [(d.rule.value, d.why, d.target.label()) for d in first.deferred]
    assert waiting == [(CQ, DeferReason.NOT_DUE, "alice-1")]
    assert (
        "paused: stopped for the quota once it runs again (its owner is warned now)"
        in first.deferred[0].message
    )
    memory = b.record_outcomes(first, b.T0)

    later = run([containers[0], paused], policy, memory=memory, now=b.at(hours=2), quota_enforce="stop")
    assert acts(later) == []
    (still,) = later.deferred
    assert still.why == DeferReason.NOT_DUE and still.evidence["warned_at"] == b.T0.isoformat()
    assert f"its owner was warned at {b.T0.isoformat()}" in still.message

    resumed = run(containers, policy, memory=memory, now=b.at(hours=3), quota_enforce="stop")
    assert acts(resumed) == [("StopContainer", CQ, "alice-1")]
    assert not [d for d in resumed.deferred if d.rule == Reason.CONTAINER_QUOTA_EXCEEDED]


def test_a_paused_container_beyond_a_reported_quota_is_not_said_to_wait_for_a_stop() -> None:
    paused = b.container("alice-1", state=ContainerState.PAUSED, started_at=b.ago(hours=1))
    reported = run([boxes(2)[0], paused], pol(quotas(containers=1)))
    assert [d.why for d in reported.deferred] == [DeferReason.NOT_ENFORCED]


class TestStopBreakerPopulations:
    """The stop breaker weighs each population alone: quota stops of containers without a GPU
    against the running containers without one, not against the (few) running GPU containers."""

    def stops_due(self, n: int, quota: int, *, gpu_jobs: int) -> Plan:
        cpu_only = boxes(n)
        busy = [
            b.running(
                f"bob-gpu{i}",
                owner="bob",
                gpus=[b.GPUS[i]],
                started_at=b.ago(hours=1),
                sig=b.signals(b.T0, gpu_pct={b.GPUS[i]: 99.0}),
            )
            for i in range(gpu_jobs)
        ]
        containers, policy, gpus = (
            [*cpu_only, *busy],
            pol(quotas(containers=quota)),
            [b.gpu(i) for i in range(4)],
        )
        warned = run(containers, policy, gpus=gpus, quota_enforce="stop")
        memory = b.record_outcomes(warned, b.T0)
        return run(containers, policy, gpus=gpus, memory=memory, now=b.at(minutes=11), quota_enforce="stop")

    def test_a_few_quota_stops_on_a_host_with_few_gpu_containers_go_ahead(self) -> None:
        # 3 of alice's 12 CPU-only containers are beyond her quota of 9; the host runs 2 GPU
        # containers. 3 stops against 2 running GPU containers read as a mass stop before.
        p = self.stops_due(12, 9, gpu_jobs=2)
        assert sorted(acts(p)) == [("StopContainer", CQ, f"alice-{i}") for i in (10, 11, 9)]
        assert not p.memory.breaker.tripped

    def test_a_mass_stop_of_containers_without_a_gpu_still_trips_it(self) -> None:
        p = self.stops_due(12, 3, gpu_jobs=2)  # 9 of 12 beyond the quota
        assert p.memory.breaker.tripped
        assert "would stop 9 of 12 running containers without a GPU" in p.memory.breaker.reason
        (alert,) = [a for a in p.actions if a.reason == Reason.BREAKER_TRIPPED]
        assert (alert.evidence["would_stop"], alert.evidence["would_stop_gpu"]) == (9, 0)
        assert not [a for a in p.actions if a.kind == ActionKind.STOP_CONTAINER]


def test_a_claimed_devcontainer_type_buys_no_protection_from_a_quota_stop_without_trusted_labels() -> None:
    # A vsc-* name makes a container a devcontainer, and devcontainers are never quota-stopped. The
    # name is a claim anyone can make: without trusted labels it buys nothing (docs/security.md).
    # Shielded, the newest container beyond bob's quota, "vsc-pad", was passed over and bob's older
    # job was stopped in its place.
    pad = b.running(
        "vsc-pad", owner="bob", started_at=b.ago(minutes=1), container_type=ContainerType.DEVCONTAINER
    ).model_copy(update={"owner_rule": OwnerRule.PROCESS_UID, "type_rule": TypeRule.VSC_NAME})
    job = b.running("bob-job", owner="bob", started_at=b.ago(minutes=10)).model_copy(
        update={"owner_rule": OwnerRule.PROCESS_UID}
    )
    policy = pol(quotas(containers=1))
    first = run([pad, job], policy, quota_enforce="stop", trust_labels=False)
    assert [a.target.label() for a in first.actions if a.kind == ActionKind.WARN_OWNER] == ["vsc-pad"]
    due = run(
        [pad, job],
        policy,
        memory=b.record_outcomes(first, b.T0),
        now=b.at(hours=1),
        quota_enforce="stop",
        trust_labels=False,
    )
    assert acts(due) == [("StopContainer", CQ, "vsc-pad")]
    # With trusted labels the name is the type: the devcontainer is kept, and bob's job goes.
    trusted = run([pad, job], policy, quota_enforce="stop")
    assert [a.target.label() for a in trusted.actions if a.kind == ActionKind.WARN_OWNER] == ["bob-job"]


def test_a_container_whose_gpu_share_is_unknown_is_not_stopped_beside_the_one_that_covers_the_excess() -> (
    None
):
    # Quota 1; alice-0 holds two GPUs, the newer alice-1 one reference that did not resolve (its
    # share unknown, counted 0). Stopping alice-0 brings the known total within: alice-1 was stopped
    # too, though stopping it frees nothing known.
    gpus = [b.gpu(i) for i in range(2)]
    a0 = b.running("alice-0", owner="alice", gpus=[gpus[0].uuid, gpus[1].uuid], started_at=b.ago(hours=3))
    a1 = b.running("alice-1", owner="alice", gpus=[b.unresolved_ref("GPU-0bad")], started_at=b.ago(hours=1))
    policy = pol(quotas(gpus=1))
    first = run([a0, a1], policy, gpus=gpus, quota_enforce="stop")
    (alert,) = [a for a in first.actions if a.kind == ActionKind.ALERT_ADMIN]
    assert alert.evidence["beyond"] == ["alice-0"]
    assert "alice-1" in alert.evidence["never_stopped"]
    due = after_the_lead(first, [a0, a1], policy, gpus=gpus)
    assert acts(due) == [("StopContainer", GQ, "alice-0")]


def test_a_gpu_and_its_own_mig_device_unverified_while_nvml_is_down_are_not_two_units() -> None:
    """NVML down: the observer keeps the UUIDs it cannot verify, and a MIG device has no known GPU.
    GPU 0 and a MIG device of GPU 0 are one unit (NVML up says so); with NVML down they were
    counted as two against a cap of one, and the container was warned and stopped."""
    from controller.memory import ControllerMemory
    from controller.observe.gpu_refs import RawGpuRef, RawGpuRefs, resolve_gpu_refs
    from controller.plan.planner import plan
    from controller.snapshot import Domain, GpuRefSource

    gpu = b.gpu(0, mig_slots=1)
    (dev,) = gpu.mig_devices
    raw = RawGpuRefs(
        refs=(
            RawGpuRef(gpu.uuid, GpuRefSource.DEVICE_REQUEST),
            RawGpuRef(dev.uuid, GpuRefSource.DEVICE_REQUEST),
        )
    )
    policy = pol(quotas(slots=1))
    up = b.running("alice-0", owner="alice", gpus=resolve_gpu_refs(raw, [gpu]), started_at=b.ago(hours=1))
    assert run([up], policy, gpus=[gpu], quota_enforce="stop").actions == ()
    down = b.running("alice-0", owner="alice", gpus=resolve_gpu_refs(raw, None), started_at=b.ago(hours=1))
    desired = b.desired(policy, b.global_policy(quota_enforce="stop"))
    memory = ControllerMemory()
    for minutes in (0, 11):  # the warning's lead is over by the second pass
        now = b.at(minutes=minutes)
        p = plan(b.snapshot(containers=[down], observed_at=now, down=[Domain.NVML]), desired, memory, now)
        assert p.actions == (), p.actions
        (d,) = [d for d in p.deferred if d.rule is Reason.GPU_SLOTS_ABOVE_SPEC]
        assert d.why is DeferReason.UNKNOWN_SIGNAL and "cannot be judged" in d.message
        memory = b.record_outcomes(p, now)


class TestSharedGpus:
    """What an owner holds is the union of their containers' units: a GPU two of them share counts
    once. Counted per container, one GPU shared by two containers was 2.0 against a quota of 1.0,
    and the newer container was warned and stopped (which freed no GPU)."""

    def stops_after_the_lead(
        self, containers: list[ContainerObs], quota: float, gpus: list[Any]
    ) -> list[str]:
        policy = pol(quotas(gpus=quota))
        first = run(containers, policy, gpus=gpus, quota_enforce="stop")
        due = after_the_lead(first, containers, policy, gpus=gpus)
        return [t for k, _, t in acts(first) + acts(due) if k == "StopContainer"] + [
            t for k, r, t in acts(first) if k == "WarnOwner" and r == GQ
        ]

    def test_one_gpu_shared_by_two_containers_is_one(self) -> None:
        shared = [
            b.running(f"alice-{i}", owner="alice", gpus=[b.GPU0], started_at=b.ago(hours=2 - i))
            for i in range(2)
        ]
        assert self.stops_after_the_lead(shared, 1.0, [b.gpu(0)]) == []

    def test_a_mig_device_of_a_gpu_another_container_holds_whole_adds_nothing(self) -> None:
        gpu = b.gpu(0, mig_slots=2)
        whole = b.running("alice-0", owner="alice", gpus=[gpu.uuid], started_at=b.ago(hours=2))
        part = b.running("alice-1", owner="alice", gpus=[gpu.mig_devices[0].uuid], started_at=b.ago(hours=1))
        assert self.stops_after_the_lead([whole, part], 1.0, [gpu]) == []

    def test_a_mig_device_of_a_gpu_held_whole_frees_nothing_when_its_holder_is_stopped(self) -> None:
        """alice-0 holds GPU 0 whole; alice-1 holds a MIG device of GPU 0 and GPU 1: 2.0 against a
        quota of 1.0. Stopping alice-1 frees GPU 1 (its MIG device stays covered by alice-0's GPU):
        one stop, the newest, and not alice-0 as well."""
        gpu0 = b.gpu(0, mig_slots=2)
        whole = b.running("alice-0", owner="alice", gpus=[gpu0.uuid], started_at=b.ago(hours=2))
        part = b.running(
            "alice-1", owner="alice", gpus=[gpu0.mig_devices[0].uuid, b.GPU1], started_at=b.ago(hours=1)
        )
        assert self.stops_after_the_lead([whole, part], 1.0, [gpu0, b.gpu(1)]) == ["alice-1", "alice-1"]

    def test_what_a_stop_frees_is_not_overcounted_where_a_mig_device_and_its_gpu_are_both_held(self) -> None:
        """alice-1 holds a MIG device of GPU 0 (which alice-0 holds whole) and one of GPU 1: the
        union is 1.0 + m. Over the quota by 1.5 m, stopping alice-1 frees only m (its GPU 0 device
        stays covered): alice-0 must go too. Counted as 2 m, alice-1 alone would seem enough, and
        the owner would stay over the quota."""
        m = 3 / 7  # a 3g.40gb slice of an A100

        def sliced(index: int) -> Any:
            g = b.gpu(index, mig_slots=2)
            migs = tuple(d.model_copy(update={"gpu_equivalents": m}) for d in g.mig_devices)
            return g.model_copy(update={"mig_devices": migs})

        gpu0, gpu1 = sliced(0), sliced(1)
        whole = b.running("alice-0", owner="alice", gpus=[gpu0.uuid], started_at=b.ago(hours=2))
        part = b.running(
            "alice-1",
            owner="alice",
            gpus=[gpu0.mig_devices[0].uuid, gpu1.mig_devices[0].uuid],
            started_at=b.ago(hours=1),
        )
        stopped = self.stops_after_the_lead([whole, part], 1.0 - m / 2, [gpu0, gpu1])
        assert sorted(stopped) == ["alice-0", "alice-0", "alice-1", "alice-1"]

    def test_the_container_whose_stop_frees_a_gpu_is_chosen(self) -> None:
        """alice-1 and alice-2 share GPU 1, alice-0 holds GPU 0: two GPUs against a quota of one.
        Stopping the newest (alice-2) alone frees nothing; it is passed over, and the next one whose
        stop does free a GPU is chosen: one stop, not two or three."""
        a0 = b.running("alice-0", owner="alice", gpus=[b.GPU0], started_at=b.ago(hours=3))
        a1 = b.running("alice-1", owner="alice", gpus=[b.GPU1], started_at=b.ago(hours=2))
        a2 = b.running("alice-2", owner="alice", gpus=[b.GPU1], started_at=b.ago(hours=1))
        stopped = self.stops_after_the_lead([a0, a1, a2], 1.0, [b.gpu(0), b.gpu(1)])
        assert stopped == ["alice-0", "alice-0"]  # stopped, and the one warned

    def test_two_gpus_in_two_containers_are_still_two(self) -> None:
        a0 = b.running("alice-0", owner="alice", gpus=[b.GPU0], started_at=b.ago(hours=2))
        a1 = b.running("alice-1", owner="alice", gpus=[b.GPU1], started_at=b.ago(hours=1))
        assert self.stops_after_the_lead([a0, a1], 1.0, [b.gpu(0), b.gpu(1)]) == ["alice-1", "alice-1"]

    def test_containers_that_share_all_their_gpus_are_stopped_together(self) -> None:
        """Each of two containers holds both GPUs: neither stop alone frees anything, both together
        do. Passing both over left the owner at twice the quota for good (a second identical
        container shielded the first)."""
        both = [
            b.running(f"alice-{i}", owner="alice", gpus=[b.GPU0, b.GPU1], started_at=b.ago(hours=2 - i))
            for i in range(2)
        ]
        stopped = self.stops_after_the_lead(both, 1.0, [b.gpu(0), b.gpu(1)])
        assert sorted(stopped) == ["alice-0", "alice-0", "alice-1", "alice-1"]

    def test_a_container_sharing_its_gpu_with_a_protected_one_is_not_stopped_for_nothing(self) -> None:
        kept = b.running("alice-0", owner="alice", gpus=[b.GPU0, b.GPU1], started_at=b.ago(hours=2))
        sharing = b.running("alice-1", owner="alice", gpus=[b.GPU1], started_at=b.ago(hours=1))
        policy = pol(quotas(gpus=1.0))
        protected = policy.model_copy(update={"protected": Sourced(value=True, source="test")})
        gpus = [b.gpu(0), b.gpu(1)]
        first = run(
            [kept, sharing], policy, gpus=gpus, quota_enforce="stop", per_container={"alice-0": protected}
        )
        assert [t for k, _, t in acts(first) if k == "WarnOwner"] == []
        (alert,) = [a for a in first.actions if a.reason is Reason.GPU_QUOTA_EXCEEDED]
        assert "alice-1 (stopping it frees nothing" in alert.message and "alice-0 (protected" in alert.message


def test_a_failing_stop_does_not_take_its_container_out_of_the_quota() -> None:
    """alice-0's max-runtime stop fails, pass after pass: alice-0 still counts, and alice-1, beyond
    the container quota, is warned once and stopped after its lead (it was never judged: each retry
    took alice-0 out of the count and voided alice-1's warning)."""
    from controller.memory import ControllerMemory

    a0 = b.running("alice-0", owner="alice", gpus=[b.GPU0], started_at=b.ago(hours=30))
    a1 = b.running("alice-1", owner="alice", gpus=[b.GPU1], started_at=b.ago(hours=1))
    policy = pol(quotas(containers=1), max_runtime_s=24 * b.HOUR, idle_timeout_s=None)
    gpus = [b.gpu(0), b.gpu(1)]
    memory, seen = ControllerMemory(), []
    for m in range(0, 61, 5):
        now = b.at(minutes=m)
        p = run([a0, a1], policy, gpus=gpus, memory=memory, now=now, quota_enforce="stop")
        seen += [(k, r, t) for k, r, t in acts(p) if t == "alice-1"]
        failing = [
            a for a in p.actions if a.kind is ActionKind.STOP_CONTAINER and a.target.container == "alice-0"
        ]
        memory = b.record_outcomes(
            p.model_copy(update={"actions": tuple(a for a in p.actions if a not in failing)}), now
        )
        for a in failing:
            memory = memory.with_failure(a.key, "engine said no", now)
    assert ("StopContainer", CQ, "alice-1") in seen, seen
    assert len([w for w in seen if w[0] == "WarnOwner"]) <= 2, seen  # not re-warned at every retry


class TestFewestStops:
    """The newest containers beyond a GPU quota, each weighed by what stopping it frees: a newer
    container freed by another's stop goes before an older one, and no stop is made that the others
    already cover."""

    def stopped(self, holds: list[list[int]], quota: float, *, then_stop: bool = True) -> list[str]:
        """Containers alice-0 (oldest) .. alice-N holding the given GPU indices; the ones warned,
        and (``then_stop``) checked to be the ones stopped once the lead has passed."""
        gpus = [b.gpu(i) for i in range(1 + max(i for held in holds for i in held))]
        containers = [
            b.running(
                f"alice-{n}", owner="alice", gpus=[gpus[i].uuid for i in held], started_at=b.ago(hours=9 - n)
            )
            for n, held in enumerate(holds)
        ]
        policy = pol(quotas(gpus=quota))
        first = run(containers, policy, gpus=gpus, quota_enforce="stop")
        warned = sorted(t for k, r, t in acts(first) if k == "WarnOwner" and r == GQ)
        if then_stop:
            due = after_the_lead(first, containers, policy, gpus=gpus)
            stops = sorted(t for k, r, t in acts(due) if k == "StopContainer" and r == GQ)
            assert stops == warned, (warned, stops)  # warned is what is stopped, no more
        return warned

    def test_a_newest_stop_an_older_one_covers_is_not_made(self) -> None:
        # alice-0 holds GPUs 0 and 1, the newer alice-1 GPU 2; quota 1 (3 held). The newest first
        # frees 1, not enough; alice-0 must go, and then alice-1 alone is within: it was stopped too.
        assert self.stopped([[0, 1], [2]], 1.0) == ["alice-0"]

    def test_a_newer_container_freed_by_a_stop_goes_before_an_older_one(self) -> None:
        # alice-0 GPU 0; alice-1 GPUs 1 and 2; alice-2 (newest) GPU 1, shared with alice-1; quota 1.
        # alice-2 frees nothing alone, alice-1 frees GPU 2; after that stop alice-2 frees GPU 1.
        # The oldest, alice-0, was stopped instead of it.
        assert self.stopped([[0], [1, 2], [1]], 1.0) == ["alice-1", "alice-2"]

    def test_within_the_quota_after_the_fewest_stops_whatever_the_layout(self) -> None:
        """Every layout of three containers over three GPUs and each quota: the containers left hold
        at most the quota, and letting any stopped one run again would break it."""
        import itertools

        layouts = [list(c) for r in (1, 2) for c in itertools.combinations(range(3), r)]
        for holds in itertools.product(layouts, repeat=3):
            for quota in (0.0, 1.0, 2.0):
                # (Warned only: three stops in one pass would trip the breaker.)
                stops = self.stopped([list(h) for h in holds], quota, then_stop=False)
                kept = [set(h) for n, h in enumerate(holds) if f"alice-{n}" not in stops]
                assert len(set().union(*kept)) <= quota, (holds, quota, stops)
                for s in stops:
                    again = [*kept, set(holds[int(s.split("-")[1])])]
                    assert len(set().union(*again)) > quota, (holds, quota, stops, s)


def test_a_container_the_gpu_quota_stops_is_not_counted_again_by_the_container_quota() -> None:
    """alice-gpu (older, a GPU) and alice-cpu; one container and half a GPU allowed. The GPU quota
    warns alice-gpu; its stop brings alice within the container quota too. alice-cpu was told it
    would be stopped, and was not."""
    g = b.gpu(0)
    gpu_c = b.running("alice-gpu", owner="alice", gpus=[g.uuid], started_at=b.ago(hours=2))
    cpu_c = b.running("alice-cpu", owner="alice", started_at=b.ago(hours=1))
    policy = pol(quotas(containers=1, gpus=0.5))
    first = run([gpu_c, cpu_c], policy, gpus=[g], quota_enforce="stop")
    assert [t for k, _, t in acts(first) if k == "WarnOwner"] == ["alice-gpu"]
    due = after_the_lead(first, [gpu_c, cpu_c], policy, gpus=[g])
    assert [(k, t) for k, _, t in acts(due) if k == "StopContainer"] == [("StopContainer", "alice-gpu")]
    # Three containers: the GPU stop leaves two, one beyond the container quota: that one is warned.
    extra = b.running("alice-new", owner="alice", started_at=b.ago(minutes=30))
    three = run([gpu_c, cpu_c, extra], policy, gpus=[g], quota_enforce="stop")
    assert sorted(t for k, _, t in acts(three) if k == "WarnOwner") == ["alice-gpu", "alice-new"]


def test_a_container_quota_stop_names_the_containers_the_quota_counted_and_keeps() -> None:
    """Quota 2, five live containers, alice-3 protected: alice-4, alice-2 and alice-1 are stopped,
    each naming the two kept (alice-0 and the protected alice-3), never another victim (stopped in the
    same pass, it does not justify the others), a container not counted (exited, another owner's)."""
    containers = boxes(5)
    others = [
        b.exited("alice-old", owner="alice"),
        b.running("bob-0", owner="bob", started_at=b.ago(hours=9)),
    ]
    policy = pol(quotas(containers=2))
    per = {"alice-3": pol(quotas(containers=2), protected=True)}
    first = run([*containers, *others], policy, per_container=per, quota_enforce="stop")
    due = after_the_lead(first, [*containers, *others], policy, per_container=per)
    stops = [a for a in due.actions if a.kind == ActionKind.STOP_CONTAINER]
    assert sorted(a.target.label() for a in stops) == ["alice-1", "alice-2", "alice-4"]
    kept = (containers[0].id, containers[3].id)
    assert [a.params for a in stops] == [StopParams(grace_s=60.0, remove=False, quota_counted_ids=kept)] * 3


def test_a_gpu_quota_stop_names_the_kept_holders_of_the_gpus_it_counted() -> None:
    """Quota 1 GPU; alice holds GPU 0, 1 and 2 in alice-0, alice-3 and alice-4, and runs alice-1
    (no GPU) and alice-2 (a reference that did not resolve: its share is unknown). The two newest
    holders are stopped; each names alice-0 alone, the kept holder of a counted GPU: neither a
    container without a GPU nor one whose share the total did not count justifies the stop."""
    gpus = [b.gpu(i) for i in range(3)]
    a0 = b.running("alice-0", owner="alice", gpus=[gpus[0].uuid], started_at=b.ago(hours=5))
    a1 = b.running("alice-1", owner="alice", started_at=b.ago(hours=4))
    a2 = b.running("alice-2", owner="alice", gpus=[b.unresolved_ref("7")], started_at=b.ago(hours=3))
    a3 = b.running("alice-3", owner="alice", gpus=[gpus[1].uuid], started_at=b.ago(hours=2))
    a4 = b.running("alice-4", owner="alice", gpus=[gpus[2].uuid], started_at=b.ago(hours=1))
    containers = [a0, a1, a2, a3, a4]
    policy = pol(quotas(gpus=1))
    first = run(containers, policy, gpus=gpus, quota_enforce="stop")
    due = after_the_lead(first, containers, policy, gpus=gpus)
    stops = [a for a in due.actions if a.kind == ActionKind.STOP_CONTAINER]
    assert sorted((a.reason, a.target.label()) for a in stops) == [
        (Reason.GPU_QUOTA_EXCEEDED, "alice-3"),
        (Reason.GPU_QUOTA_EXCEEDED, "alice-4"),
    ]
    assert [a.params for a in stops] == [
        StopParams(grace_s=60.0, remove=False, quota_counted_ids=(a0.id,))
    ] * 2


def test_the_gpu_unit_cap_is_one_containers_own_its_stop_names_no_other() -> None:
    c = b.running("alice-0", owner="alice", gpus=[b.GPU0, b.GPU1], started_at=b.ago(hours=1))
    other = b.running("alice-1", owner="alice", gpus=[b.GPU0], started_at=b.ago(hours=2))
    slots = ResourceSpec(max_gpu_slots_per_container=Sourced(value=1, source="UserGroup/student"))
    gpus = [b.gpu(0), b.gpu(1)]
    first = run([c, other], pol(slots), gpus=gpus, quota_enforce="stop")
    due = after_the_lead(first, [c, other], pol(slots), gpus=gpus)
    (stop,) = [a for a in due.actions if a.kind == ActionKind.STOP_CONTAINER]
    assert (stop.reason, stop.target.label()) == (Reason.GPU_SLOTS_ABOVE_SPEC, "alice-0")
    assert stop.params == StopParams(grace_s=60.0, remove=False, quota_counted_ids=None)
