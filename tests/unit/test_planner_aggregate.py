"""Aggregate caps: a user's summed CPU limits, memory and tasks against the slice caps, and bypassers."""

from __future__ import annotations

from typing import Any

from controller.memory import ControllerMemory
from controller.plan.planner import plan
from controller.plan.rules.aggregate import aggregate_figures, expected_slices
from controller.plan.types import ActionKind, DeferReason, Plan, Reason
from controller.snapshot import ContainerObs, OwnerRule, ResourceLimits
from desired_state.effective import EffectivePolicy, ResourceSpec, Sourced
from tests.fixtures import builders as b

GiB = 1 << 30
SRC = "UserGroup/student: aggregate"
SLICE = "ds01-student-alice.slice"


def caps(cpus: float | None = 8.0, memory: int | None = 4 * GiB, tasks: int | None = 100) -> ResourceSpec:
    return ResourceSpec(
        aggregate_cpus=Sourced(value=cpus, source=SRC),
        aggregate_memory_bytes=Sourced(value=memory, source=SRC),
        aggregate_tasks=Sourced(value=tasks, source=SRC),
    )


def pol(res: ResourceSpec | None = None, **kw: Any) -> EffectivePolicy:
    return b.policy(**kw).model_copy(update={"resources": res if res is not None else caps()})


def box(
    name: str,
    *,
    parent: str = SLICE,
    cpus: float | None = 2.0,
    used: int | None = GiB,
    tasks: int | None = 10,
    inspected: bool = True,
    owner: str = "alice",
) -> ContainerObs:
    c = b.running(name, owner=owner, sig=b.signals(b.T0))
    limits = ResourceLimits(nano_cpus=None if cpus is None else int(cpus * 1e9), cgroup_parent=parent)
    assert c.signals is not None
    sig = c.signals.model_copy(
        update={
            "memory_bytes": used,
            "memory_unknown": None if used is not None else "memory.current unreadable",
            "pids_current": tasks,
            "pids_unknown": None if tasks is not None else "pids.current unreadable",
        }
    )
    return c.model_copy(update={"limits": limits if inspected else None, "signals": sig})


def run(
    containers: list[ContainerObs], policy: EffectivePolicy | None = None, *, alerts: bool = True
) -> Plan:
    snap = b.snapshot(containers=containers, observed_at=b.T0)
    desired = b.desired(policy or pol(), b.global_policy(aggregate_alerts=alerts))
    return plan(snap, desired, ControllerMemory(), b.T0)


def alerts(p: Plan) -> list[Any]:
    reasons = {Reason.AGGREGATE_CAP_BYPASSED, Reason.AGGREGATE_CAP_EXCEEDED}
    return [a for a in p.actions if a.reason in reasons]


def test_containers_under_the_owners_slice_and_within_the_caps_raise_nothing() -> None:
    p = run([box("a1"), box("a2")])
    assert alerts(p) == [] and not [d for d in p.deferred if d.rule == Reason.AGGREGATE_CAP_EXCEEDED]


def test_a_container_outside_the_owners_slice_is_alerted_as_bypassing_and_left_alone() -> None:
    p = run([box("a1"), box("devc", parent=""), box("other", parent="ds01-student-bob.slice")])
    (alert,) = alerts(p)
    assert (alert.kind, alert.reason, alert.target.user) == (
        ActionKind.ALERT_ADMIN,
        Reason.AGGREGATE_CAP_BYPASSED,
        "alice",
    )
    assert alert.evidence["bypassing"] == {"devc": "the engine's default", "other": "ds01-student-bob.slice"}
    assert alert.evidence["expected_slices"][0] == SLICE
    assert alert.key == "AlertAdmin:AggregateCapBypassed:alice:devc,other"  # stable while the set is
    assert alert.key == alerts(run([box("a1"), box("devc", parent=""), box("other", parent="x")]))[0].key
    # Never an action on a container.
    assert [a for a in p.actions if a.target.container in {"devc", "other"}] == []


def test_a_user_summing_over_the_caps_is_alerted_once_with_the_figures() -> None:
    p = run([box("a1", cpus=6, used=3 * GiB, tasks=60), box("a2", cpus=4, used=2 * GiB, tasks=50)])
    (alert,) = alerts(p)
    assert alert.reason == Reason.AGGREGATE_CAP_EXCEEDED
    assert alert.evidence["over"] == ["cpu", "memory", "tasks"]
    assert alert.evidence["cpus"] == {"used": 10.0, "cap": 8.0, "cap_source": SRC, "unknown": []}
    assert alert.evidence["memory_bytes"]["used"] == 5 * GiB and alert.evidence["tasks"]["used"] == 110


def test_unknown_usage_and_an_uninspected_parent_raise_no_alert() -> None:
    p = run([box("a1", used=None, tasks=None), box("a2", inspected=False)])
    assert alerts(p) == []
    (deferred,) = [d for d in p.deferred if d.rule == Reason.AGGREGATE_CAP_EXCEEDED]
    assert deferred.why == DeferReason.UNKNOWN_SIGNAL and "a1" in deferred.message
    # The known part alone over a cap is over, unknown rest or not.
    (over,) = alerts(run([box("a1", used=5 * GiB), box("a2", used=None)]))
    assert over.evidence["over"] == ["memory"] and over.evidence["memory_bytes"]["unknown"] == ["a2"]


def test_alerts_are_opt_in_and_the_figures_are_computed_regardless() -> None:
    containers = [box("a1", parent=""), box("a2", cpus=20)]
    assert alerts(run(containers, alerts=False)) == []
    f = aggregate_figures("alice", containers, pol(), {})
    assert f.bypassing == {"a1": "the engine's default"} and f.over == ("cpu",)


def test_no_caps_no_bypass_and_protected_or_exempt_containers_are_not_bypassing() -> None:
    capless = pol(caps(None, None, None))
    assert alerts(run([box("a1", parent="")], capless)) == []
    f = aggregate_figures("alice", [box("a1", parent="")], capless, {})
    assert f.bypassing == {} and not f.has_caps
    protected = pol(protected=True)
    c = box("mon", parent="")
    assert aggregate_figures("alice", [c], pol(), {c.id: protected}).bypassing == {}


def test_the_expected_slice_uses_the_sanitised_name_and_accepts_the_override_slice() -> None:
    assert expected_slices("h.baker@school.lan", "researcher") == (
        "ds01-researcher-h_baker.slice",
        "ds01-override-h_baker.slice",
    )
    c = box("o1", parent="/ds01.slice/ds01-override.slice/ds01-override-alice.slice")
    assert aggregate_figures("alice", [c], pol(), {}).bypassing == {}


def test_containers_that_claim_an_owner_are_not_that_owners_without_trusted_labels() -> None:
    # A container labelled ds01.user=alice outside alice's slice: without trusted labels it is not
    # alice's (anyone can write the label), so no admin is told that alice bypasses her caps.
    fake = box("fake", parent="").model_copy(
        update={"labels": {"ds01.user": "alice"}, "owner_rule": OwnerRule.LABEL_DS01_USER}
    )
    mine = box("a1").model_copy(update={"owner_rule": OwnerRule.PROCESS_UID})
    snap = b.snapshot(containers=[mine, fake], observed_at=b.T0)
    untrusted = b.desired(pol(), b.global_policy(aggregate_alerts=True, trust_labels=False))
    assert alerts(plan(snap, untrusted, ControllerMemory(), b.T0)) == []
    (alert,) = alerts(run([mine, fake]))  # trusted: the label says whose it is
    assert (alert.reason, alert.target.user) == (Reason.AGGREGATE_CAP_BYPASSED, "alice")
