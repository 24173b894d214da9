"""``ds01ctl get users`` and the limit columns: used/allowed, what is over, the marks."""

from __future__ import annotations

import json

from controller.cli.get import GetOptions, canonical_kind, run_get
from controller.cli.users import limit_cells, user_rows
from controller.plan.desired import StaticDesired
from controller.snapshot import ResourceLimits
from desired_state.effective import ResourceSpec, Sourced
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
