"""Aggregate caps on the real engine: a container outside its owner's slice is reported as bypassing.

Two containers of one owner (unique to this test: the engine is shared) in a group with an
``aggregate`` block: one created with ``--cgroup-parent`` set to the owner's DS01 slice
(``ds01-student-<user>.slice``), one without
(as a devcontainer or ``docker compose`` creates it). With ``aggregateAlerts: true`` the plan
holds one AlertAdmin for the owner naming only the second; nothing is done to either container.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.memory import ControllerMemory
from controller.observe import HostObserver, ObserveConfig
from controller.plan.desired import PolicySetDesired
from controller.plan.planner import plan
from controller.plan.types import ActionKind, Reason
from desired_state.load import load_spec_text
from tests.fixtures.docker_host import ContainerFactory
from tests.fixtures.nvml import NoGpus

pytestmark = pytest.mark.docker

SPEC = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata: {name: site}
spec:
  resourceEnforcement: {updateLimits: false, aggregateAlerts: true}
---
apiVersion: ds01.io/v1alpha1
kind: UserGroup
metadata: {name: student}
spec:
  members: [OWNER]
  resources:
    aggregate: {cpuQuota: "9600%", memoryMax: 96G, tasksMax: 12288}
"""


def test_a_container_outside_its_owners_slice_is_reported_as_bypassing(
    make_container: ContainerFactory, tmp_path: Path
) -> None:
    owner = f"agg{make_container.test_id[-8:]}"
    slice_name = f"ds01-student-{owner}.slice"
    labels = {"ds01.user": owner}
    inside = make_container(network_mode="none", labels=labels, cgroup_parent=slice_name)
    outside = make_container(network_mode="none", labels=labels)

    with HostObserver(ObserveConfig(ledger_path=tmp_path / "ledger.json"), nvml=NoGpus()) as observer:
        snap = observer.observe()
    seen = {c.id: c for c in snap.containers}
    inside_limits, outside_limits = seen[inside.id].limits, seen[outside.id].limits
    assert inside_limits is not None and inside_limits.cgroup_parent == slice_name
    assert outside_limits is not None and outside_limits.cgroup_parent == ""

    p = plan(
        snap,
        PolicySetDesired(load_spec_text(SPEC.replace("OWNER", owner))),
        ControllerMemory(),
        datetime.now(UTC),
    )
    mine: list[Any] = [a for a in p.actions if a.target.user == owner]
    (alert,) = [a for a in mine if a.reason == Reason.AGGREGATE_CAP_BYPASSED]
    assert alert.kind == ActionKind.ALERT_ADMIN
    assert alert.evidence["bypassing"] == {outside.name: "the engine's default"}
    assert alert.evidence["expected_slices"][0] == slice_name
    assert alert.evidence["cpus"]["cap"] == 96.0  # the group's 9600 %
    # The report only: no action on either container.
    ids = {inside.id, outside.id}
    assert [a for a in p.actions if a.target.container_id in ids] == []
