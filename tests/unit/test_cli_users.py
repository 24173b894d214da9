"""``ds01ctl get users`` and the limit columns: used/allowed, what is over, the marks."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from controller.cli.describe import describe_container, describe_user
from controller.cli.errors import EXIT_ERROR, CliError
from controller.cli.get import GetOptions, canonical_kind, run_get
from controller.cli.render import PLAIN
from controller.cli.users import limit_cells, user_rows
from controller.cli.view import View, rule_of
from controller.memory import ControllerMemory
from controller.plan.desired import StaticDesired
from controller.plan.planner import plan
from controller.plan.rules.quotas import QUOTA_REASONS
from controller.snapshot import ContainerObs, Domain, OwnerRule, ResourceLimits
from desired_state.effective import EffectivePolicy, ExemptFrom, ResourceSpec, Sourced
from tests.fixtures import builders as b
from tests.unit import cli_world as w


def test_get_users_lists_each_owner_with_used_and_allowed() -> None:
    text, empty = run_get("users", w.view(), GetOptions())
    assert not empty
    lines = text.splitlines()
    assert lines[0].split() == ["USER", "GROUP", "CONTAINERS", "GPU-EQ", "MEM-IN-USE", "CPU-LIMITS", "OVER"]
    alice = next(line for line in lines if line.startswith("alice"))
    assert alice.split() == ["alice", "researcher", "1/3", "1/1", "3.0Gi", "16", "-"]
    assert canonical_kind("user") == "users"


def test_a_user_over_a_quota_is_marked_and_json_carries_the_numbers() -> None:
    view = w.view()
    extra = [b.running(f"alice-{i}", owner="alice") for i in range(3)]
    view.snapshot = view.snapshot.model_copy(update={"containers": (*view.snapshot.containers, *extra)})
    (alice,) = [r for r in user_rows(view) if r.user == "alice"]
    assert (alice.containers, alice.containers_allowed, alice.over) == (4, 3, ("containers",))
    assert alice.cpu_limits is None  # a container without a CPU limit: unlimited in sum
    data = json.loads(run_get("users", view, GetOptions(output="json", owner="alice"))[0])
    assert data["kind"] == "UserList"
    assert [(i["user"], i["over"]) for i in data["items"]] == [("alice", ["containers"])]


def test_limit_cells_mark_what_is_unset_or_above_the_spec() -> None:
    spec = ResourceSpec(
        max_cpus=Sourced(value=4.0, source="t"),
        memory_bytes=Sourced(value=8 << 30, source="t"),
        pids_limit=Sourced(value=100, source="t"),
    )
    pol = b.policy().model_copy(update={"resources": spec})
    c = b.running("x").model_copy(
        update={"limits": ResourceLimits(nano_cpus=2 * 10**9, memory_bytes=16 << 30)}
    )
    assert limit_cells(c, pol) == ["2", "16Gi*", "-*"]
    assert limit_cells(b.running("y"), pol) == ["unknown", "unknown", "unknown"]  # not observed
    opted_out = pol.model_copy(
        update={"resources": spec.model_copy(update={"exempt": Sourced(value=True, source="t")})}
    )
    assert limit_cells(c, opted_out) == ["2", "16Gi", "-"]
    assert isinstance(w.view().desired, StaticDesired)


def test_a_stopped_container_s_limits_carry_no_mark_the_rule_would_not_act_on() -> None:
    # The rule judges running and created containers only: '*' on an exited one said that
    # UpdateResources lowers limits it never touches, and describe said "the controller lowers".
    spec = ResourceSpec(
        memory_bytes=Sourced(value=8 << 30, source="t"), pids_limit=Sourced(value=100, source="t")
    )
    pol = b.policy().model_copy(update={"resources": spec})
    limits = ResourceLimits(nano_cpus=2 * 10**9, memory_bytes=16 << 30)
    assert limit_cells(b.created("c").model_copy(update={"limits": limits}), pol) == ["2", "16Gi*", "-*"]
    stopped = b.exited("x", finished_at=b.ago(minutes=5)).model_copy(update={"limits": limits})
    assert limit_cells(stopped, pol) == ["2", "16Gi", "-"]

    from controller.cli.render import Sections
    from controller.cli.users import limits_section

    s = Sections(PLAIN)
    limits_section(stopped, pol, s, Sourced(value=True, source="t"), b.T0)
    text = s.render()
    assert "neither lowers nor reports the limits of a container exited" in text
    assert "lowers a limit that is unset" not in text


def test_get_users_wide_and_describe_user_show_the_aggregate_caps_and_bypassers() -> None:
    from controller.cli.describe import describe_user

    view = w.view()
    (alice_c,) = [c for c in view.snapshot.containers if c.owner == "alice"]
    assert alice_c.limits is not None
    inside = b.running("alice-slice", owner="alice", sig=b.signals(b.T0)).model_copy(
        update={"limits": alice_c.limits.model_copy(update={"cgroup_parent": "ds01-researcher-alice.slice"})}
    )
    view.snapshot = view.snapshot.model_copy(update={"containers": (*view.snapshot.containers, inside)})
    text, _ = run_get("users", view, GetOptions(output="wide"))
    header, *rows = text.splitlines()
    assert header.split()[-1] == "AGG"
    alice = next(line for line in rows if line.startswith("alice"))
    # 16 + 16 CPUs of limits over the cap of 24; the container outside alice's slice bypasses it.
    assert alice.split()[-1] == "over(cpu),bypass(1)"
    assert "AGG" not in run_get("users", view, GetOptions())[0]  # only in -o wide
    data = json.loads(run_get("users", view, GetOptions(output="json", owner="alice"))[0])
    agg = data["items"][0]["aggregate"]
    assert agg["bypassing"] == {alice_c.name: "the engine's default"}
    assert (agg["cpus"]["used"], agg["cpus"]["cap"], agg["over"]) == (32.0, 24.0, ["cpu"])
    # The new container's memory use was not read: the sum says so (unknown is not zero).
    assert agg["memory_bytes"]["unknown"] == ["alice-slice"] and agg["tasks"]["cap"] == 12288
    described = describe_user(view, "alice")
    section = described.split("Aggregate:", 1)[1]
    assert "32 / 24 OVER   (UserGroup/researcher: aggregate)" in section
    assert "(+ unread: alice-slice)" in section and "Bypassing:" in section and alice_c.name in section
    assert "ds01-researcher-alice.slice or ds01-override-alice.slice" in section


def test_get_users_counts_owners_and_gpus_as_the_quota_rule_does() -> None:
    """``get users`` must say what the controller decides: without trusted labels, containers that
    only claim bob (a ds01.user label anyone can write) are nobody's, so bob is within his quota; a
    MIG device of a GPU a container holds whole is part of that GPU (1.0, not 1.0 plus its share)."""
    view = w.view()
    claims = [
        b.running(f"claims-bob-{i}", owner="bob").model_copy(
            update={"labels": {"ds01.user": "bob"}, "owner_rule": OwnerRule.LABEL_DS01_USER}
        )
        for i in range(4)
    ]
    bobs = b.running("bob-job", owner="bob").model_copy(update={"owner_rule": OwnerRule.PROCESS_UID})
    mig = b.gpu(3, mig_slots=1)
    (dev,) = mig.mig_devices
    mig = mig.model_copy(update={"mig_devices": (dev.model_copy(update={"gpu_equivalents": 3 / 7}),)})
    whole = b.running("carol-0", owner="carol", gpus=[mig.uuid, b.ref(dev.uuid, parent=mig.uuid)]).model_copy(
        update={"owner_rule": OwnerRule.PROCESS_UID}
    )
    view.snapshot = view.snapshot.model_copy(update={"containers": (*claims, bobs, whole), "gpus": (mig,)})
    assert view.desired is not None
    effective = view.desired.effective
    view.desired = StaticDesired(effective, b.global_policy(trust_labels=False))
    rows = {r.user: (r.containers, r.gpu_equivalents, r.gpu_unknown) for r in user_rows(view)}
    assert rows == {"bob": (1, 0.0, False), "carol": (1, 1.0, False), "unknown": (4, 0.0, False)}
    view.desired = StaticDesired(effective, b.global_policy())  # labels trusted: the label is the owner
    rows = {r.user: (r.containers, r.gpu_equivalents, r.gpu_unknown) for r in user_rows(view)}
    assert rows == {"bob": (5, 0.0, False), "carol": (1, 1.0, False)}


# --- describe tells whether the controller lowers limits and alerts on the aggregate caps ---------


def _planned_view(**glob: object) -> View:
    """The demo host with a plan the planner made under these global settings."""
    view = w.view()
    desired = StaticDesired(w._policy_for, b.global_policy(**glob))
    view.desired = desired
    view.plan = plan(view.snapshot, desired, ControllerMemory(), view.now)
    return view


def _part(text: str, heading: str, following: str) -> str:
    return text.split(f"\n{heading}:\n", 1)[1].split(f"\n{following}:\n", 1)[0]


def test_describe_container_with_update_limits_on_says_it_lowers_and_shows_the_update() -> None:
    from controller.cli.describe import describe_container

    out = describe_container(_planned_view(update_limits=True), "alice-train")
    resources = _part(out, "Resources", "Timers")
    assert "the controller lowers a limit that is unset or above the desired one in place" in resources
    assert "only reported" not in resources
    decision = _part(out, "Decision", "Events")
    acting = [line for line in decision.splitlines() if "UpdateResources" in line]
    assert acting and acting[0].split()[0] == "ACTING"
    assert "bring alice-train (owner alice) under its limits in place" in decision
    assert "NotEnforced" not in decision


def test_describe_container_with_update_limits_off_says_it_only_reports_and_shows_the_deferral() -> None:
    from controller.cli.describe import describe_container

    out = describe_container(_planned_view(update_limits=False), "alice-train")
    resources = _part(out, "Resources", "Timers")
    assert "the controller lowers" not in resources
    assert "only reported: resourceEnforcement.updateLimits is false (test)" in resources
    assert "resourceEnforcement.updateLimits: true lowers it in place" in resources
    decision = _part(out, "Decision", "Events")
    assert "UpdateResources" not in decision.split("DEFERRED", 1)[0]  # nothing acts on the limits
    deferred = [line for line in decision.splitlines() if "[NotEnforced]" in line]
    assert len(deferred) == 1 and deferred[0].split()[:2] == ["DEFERRED", "limit"]
    assert "the policy only reports it [NotEnforced]" in deferred[0]
    assert "would bring alice-train (owner alice) under its limits in place: cpus 8, memory 32GiB" in decision
    assert "only reported (updateLimits: false in test)" in decision
    # A container within its owner's limits (none set for eve) gets no such line.
    eve = describe_container(_planned_view(update_limits=False), "eve-web")
    assert "[NotEnforced]" not in eve and "the controller lowers" not in _part(eve, "Resources", "Timers")


def _aggregate(**glob: object) -> str:
    from controller.cli.describe import describe_user

    view = _planned_view(**glob)
    (alice_c,) = [c for c in view.snapshot.containers if c.owner == "alice"]
    assert alice_c.limits is not None
    return describe_user(view, "alice").split("Aggregate:", 1)[1]


def test_describe_user_with_aggregate_alerts_off_says_nobody_is_alerted() -> None:
    section = _aggregate(aggregate_alerts=False)
    assert "the controller alerts" not in section
    assert "only reported: resourceEnforcement.aggregateAlerts is false (test)" in section
    assert "true alerts the admins" in section and "never moves one" in section


def test_describe_user_with_aggregate_alerts_on_says_the_controller_alerts() -> None:
    section = _aggregate(aggregate_alerts=True)
    assert "the controller alerts the admins (resourceEnforcement.aggregateAlerts: true, test)" in section
    assert "only reported" not in section and "never moves one" in section


def test_two_containers_sharing_a_gpu_count_it_once_as_the_quota_rule_does() -> None:
    """alice runs two containers on GPU 0 with a quota of one GPU-equivalent: she holds one GPU.
    The quota rule counts the union of her units and says nothing; ``get users`` summed per
    container (2/1, over ``gpus``). With no per-container unit cap, describe said ``at most None``."""
    res = b.policy().resources.model_copy(
        update={"max_gpu_equivalents": Sourced(value=1.0, source="UserGroup/student")}
    )
    pol = b.policy().model_copy(update={"resources": res})
    t = b.T0
    shared = [
        b.running(n, gpus=[b.GPU0], started_at=b.ago(hours=h), sig=b.signals(t, gpu_pct={b.GPU0: 50.0}))
        for n, h in (("a", 2), ("b", 1))
    ]
    snap = b.snapshot(observed_at=t, containers=shared, gpus=(b.gpu(0, util_pct=50.0),))
    passes = b.Passes(b.desired(pol))
    p = passes.run(snap)
    assert not [i for i in (*p.actions, *p.deferred) if rule_of(i) in QUOTA_REASONS]
    view = View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=passes.desired)
    (row,) = run_get("users", view, GetOptions())[0].splitlines()[1:2]
    assert row.split()[2:4] == ["2/-", "1/1"] and row.split()[-1] == "-", row
    (item,) = json.loads(run_get("users", view, GetOptions(output="json"))[0])["items"]
    assert (item["gpu_equivalents"], item["over"]) == (1.0, [])
    text = describe_user(view, "alice")
    quotas = text[text.index("Quotas:") : text.index("Aggregate:")]
    assert "GPU-equivalents:      1/1" in quotas and "Over:                 -" in quotas, quotas
    assert "None" not in quotas and "GPU units/container:  no cap   (not configured)" in quotas, quotas


def test_describe_user_with_docker_down_fails_rather_than_list_no_containers() -> None:
    # bob runs a container; Docker then stops answering. The observation lists no containers, and
    # describe user said "Containers: 0", "no live containers" and "no rule is due".
    passes = b.Passes(b.desired(b.policy()))
    train = b.running("bob-train", owner="bob", gpus=[b.GPU0], started_at=b.ago(hours=2))
    process = b.process(4242, b.GPU0, container_id=train.id, container_exists=True, user="bob")
    up = b.snapshot(containers=[train], gpus=(b.gpu(0, processes=(4242,)),), processes=[process])
    passes.run(up)
    down = b.snapshot(
        observed_at=b.at(minutes=5),
        containers=[],
        gpus=(b.gpu(0, processes=(4242,)),),
        processes=[process],
        down=(Domain.DOCKER,),
    )
    p = passes.run(down)
    view = View(snapshot=down, now=p.evaluated_at, plan=p, memory=p.memory, desired=passes.desired)
    with pytest.raises(CliError) as raised:
        describe_user(view, "bob")
    assert raised.value.exit_code == EXIT_ERROR
    assert "cannot describe user 'bob'" in raised.value.message
    assert "cannot reach the Docker engine" in raised.value.message


def _quota(n: int, group: str) -> EffectivePolicy:
    res = b.policy().resources.model_copy(
        update={"max_containers_per_user": Sourced(value=n, source=f"UserGroup/{group}")}
    )
    return b.policy(group=group, idle_timeout_s=None).model_copy(update={"resources": res})


def test_describe_user_shows_the_policy_of_a_container_that_counts_for_them() -> None:
    # trustLabels: false. 'a-claimed' only claims bob (a ds01.user label anyone can write): it gets
    # the default group's policy and counts for nobody. 'b-real' is bob's by its process: his group,
    # researcher. describe user showed a-claimed's (the first by name).
    def policy(c: ContainerObs, _now: datetime) -> EffectivePolicy:
        return _quota(5, "researcher") if c.owner_rule is OwnerRule.PROCESS_UID else _quota(1, "student")

    t = b.T0
    claimed = b.running("a-claimed", owner="bob", labels={"ds01.user": "bob"}, sig=b.signals(t))
    real = b.running("b-real", owner="bob", sig=b.signals(t))
    snap = b.snapshot(
        observed_at=t,
        containers=[
            claimed.model_copy(update={"owner_rule": OwnerRule.LABEL_DS01_USER}),
            real.model_copy(update={"owner_rule": OwnerRule.PROCESS_UID}),
        ],
    )
    passes = b.Passes(b.desired(policy, b.global_policy(trust_labels=False)))
    p = passes.run(snap)
    assert not [i for i in (*p.actions, *p.deferred) if rule_of(i) in QUOTA_REASONS]
    view = View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=passes.desired)
    text = describe_user(view, "bob")
    assert text.splitlines()[1].split()[:2] == ["Group:", "researcher"], text
    assert "Containers:           1/5   (UserGroup/researcher)" in text, text
    assert "(resolved for b-real, the newest live container counted as theirs" in text, text


def test_get_users_reads_the_quota_from_the_newest_container_as_the_quota_rule_does() -> None:
    # alice's newest container (started 1h ago) resolves to a quota of 1, her older one (5h ago) to
    # 5. The quota rule reads the newest's: she is over, warned and reported. get users read the
    # last one in the snapshot's order (here the older one): 2/5, not over.
    t = b.T0
    new = b.running("new", started_at=b.ago(hours=1), sig=b.signals(t))
    old = b.running("old", started_at=b.ago(hours=5), sig=b.signals(t))
    snap = b.snapshot(observed_at=t, containers=[new, old])
    passes = b.Passes(b.desired(per_container={"new": _quota(1, "student"), "old": _quota(5, "researcher")}))
    p = passes.run(snap)
    assert ("AlertAdmin", "ContainerQuotaExceeded", "user alice") in b.summary(p)
    view = View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=passes.desired)
    (row,) = run_get("users", view, GetOptions())[0].splitlines()[1:2]
    assert row.split()[1:3] == ["student", "2/1"] and row.split()[-1] == "containers", row
    text = describe_user(view, "alice")
    assert (
        "Containers:           2/1   (UserGroup/student)" in text
        and "Over:                 containers" in text
    )


@pytest.mark.parametrize("shield", ["protected", "monitoring", "exemption"])
def test_limits_of_a_container_the_rule_leaves_alone_are_not_marked_to_be_lowered(shield: str) -> None:
    # No limits at all, updateLimits on: the rule defers (Protected, Monitoring, Exempt) and never
    # lowers them. get -o wide marked them '*' ("which the controller lowers") and describe's
    # footnote said the controller lowers them.
    spec = ResourceSpec(
        max_cpus=Sourced(value=8.0, source="test"),
        memory_bytes=Sourced(value=32 << 30, source="test"),
        pids_limit=Sourced(value=4096, source="test"),
    )
    grants = [b.exemption(ExemptFrom.RESOURCES, expires_at=b.at(days=1))] if shield == "exemption" else []
    flags = {shield: True} if shield != "exemption" else {}
    pol = b.policy(exemptions=grants, **flags).model_copy(update={"resources": spec})
    db = b.running("db", sig=b.signals(b.T0)).model_copy(update={"limits": ResourceLimits()})
    snap = b.snapshot(containers=[db])
    passes = b.Passes(b.desired(pol, b.global_policy(update_limits=True)))
    p = passes.run(snap)
    assert not p.actions and [d.rule.value for d in p.deferred] == ["LimitsMissing"], b.deferred_summary(p)
    view = View(snapshot=snap, now=b.T0, plan=p, memory=p.memory, desired=passes.desired)
    (row,) = run_get("containers", view, GetOptions(output="wide", show_all=True))[0].splitlines()[1:2]
    assert row.split()[-3:] == ["-", "-", "-"], row
    resources = _part(describe_container(view, "db"), "Resources", "Timers")
    assert "the controller never changes this container's limits" in resources, resources
    assert "the controller lowers" not in resources, resources
    # Without the shield the same container is marked, and the rule lowers its limits.
    plain = b.policy().model_copy(update={"resources": spec})
    assert limit_cells(db, plain, b.T0) == ["-*", "-*", "-*"]


@pytest.mark.parametrize(
    "spec",
    [
        # A CPU limit of at least the host's CPUs: nothing to limit (Docker refuses more than it has).
        ResourceSpec(max_cpus=Sourced(value=float(b.HOST_CPUS), source="test")),
        ResourceSpec(max_cpus=Sourced(value=2.0 * b.HOST_CPUS, source="test")),
        # A pids limit of 0 or below is no limit (Docker reads 0 and -1 as unlimited).
        ResourceSpec(pids_limit=Sourced(value=0, source="test")),
        ResourceSpec(pids_limit=Sourced(value=-1, source="test")),
    ],
)
def test_a_limit_the_rule_would_not_lower_is_not_marked(spec: ResourceSpec) -> None:
    # updateLimits on, a container with no limits, or a pids limit of its own: the rule changes
    # nothing and says nothing, while get -o wide marked the limit '*' ("which the controller lowers").
    pol = b.policy().model_copy(update={"resources": spec})
    sig = b.signals(b.T0).model_copy(update={"pids_current": 3, "pids_unknown": None})
    limits = ResourceLimits(pids_limit=4096) if spec.pids_limit.value == -1 else ResourceLimits()
    db = b.running("db", sig=sig).model_copy(update={"limits": limits})
    snap = b.snapshot(containers=[db])
    passes = b.Passes(b.desired(pol, b.global_policy(update_limits=True)))
    p = passes.run(snap)
    assert not p.actions and not p.deferred, b.deferred_summary(p)
    view = View(snapshot=snap, now=b.T0, plan=p, memory=p.memory, desired=passes.desired)
    (row,) = run_get("containers", view, GetOptions(output="wide", show_all=True))[0].splitlines()[1:2]
    assert "*" not in row, row
    if spec.pids_limit.value is not None:  # describe's desired pids limit: none, not "0" or "-1"
        resources = _part(describe_container(view, "db"), "Resources", "Timers").splitlines()
        (pids,) = [line for line in resources if line.split()[:1] == ["pids"]]
        assert pids.split()[:3] == ["pids", "4096" if spec.pids_limit.value == -1 else "-", "-"], pids


def test_describe_user_does_not_say_no_live_containers_of_one_that_only_claims_them() -> None:
    # trustLabels false, alice's one running container named hers only by its ds01.user label: the
    # quota rule counts it for nobody ("unknown"). describe user alice listed it running, then said
    # "Quotas: no live containers" and "Aggregate: no live containers".
    claimed = b.running("claimed", owner="alice", labels={"ds01.user": "alice"}, sig=b.signals(b.T0))
    claimed = claimed.model_copy(update={"owner_rule": OwnerRule.LABEL_DS01_USER})
    snap = b.snapshot(containers=[claimed])
    desired = b.desired(b.policy(), b.global_policy(trust_labels=False))
    p = b.Passes(desired).run(snap)
    view = View(snapshot=snap, now=b.T0, plan=p, memory=p.memory, desired=desired)
    assert [r.user for r in user_rows(view)] == ["unknown"]
    text = describe_user(view, "alice")
    for heading, following in (("Quotas", "Aggregate"), ("Aggregate", "GPU processes")):
        part = _part(text, heading, following)
        assert "no live containers" not in part, part
        assert "1 live container only claims them" in part and "labels are not trusted" in part, part


def test_get_users_o_name_names_each_user_as_the_table_lists_them() -> None:
    # It was refused: "-o name does not apply to users (they have no names)".
    view = w.view()
    text, _ = run_get("users", view, GetOptions(output="name"), PLAIN)
    table, _ = run_get("users", view, GetOptions(no_headers=True), PLAIN)
    assert text.splitlines() == [f"user/{line.split()[0]}" for line in table.splitlines()]
    assert text.splitlines()[0] == "user/alice"
    assert run_get("users", view, GetOptions(output="name", owner="bob"), PLAIN)[0] == "user/bob\n"
    assert run_get("users", view, GetOptions(output="name", name="eve"), PLAIN)[0] == "user/eve\n"
    with pytest.raises(CliError, match="runs no live container"):
        run_get("users", view, GetOptions(output="name", name="nobody"), PLAIN)
