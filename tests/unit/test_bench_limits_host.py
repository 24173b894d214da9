"""The planner benchmark's host with limits gives the resource rules the work it claims to measure."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from bench import synthetic
from bench.cases import make_desired, planner_limits
from controller.plan.planner import plan
from controller.plan.types import ActionKind, DeferReason, Reason

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_with_update_limits_on_containers_above_the_spec_are_updated_or_wait_for_their_use() -> None:
    snapshot, memory = synthetic.build(300, NOW, limits=True)
    on = plan(snapshot, make_desired(update_limits=True)[0], memory, NOW)
    proposed = Counter(
        d.why for d in on.deferred if d.rule in (Reason.LIMITS_MISSING, Reason.LIMITS_ABOVE_SPEC)
    )
    updates = [a for a in on.actions if a.kind == ActionKind.UPDATE_RESOURCES]
    # Updates beyond the per-pass budget become deferrals: either way each one was planned.
    assert len(updates) + proposed[DeferReason.BUDGET_EXHAUSTED] > 100
    assert proposed[DeferReason.BELOW_USAGE] > 10  # the heaviest users: lowering waits
    assert any(a.reason == Reason.LIMITS_BELOW_USAGE for a in on.actions)


def test_with_update_limits_off_the_same_host_is_only_reported() -> None:
    snapshot, memory = synthetic.build(300, NOW, limits=True)
    off = plan(snapshot, make_desired()[0], memory, NOW)
    assert not [a for a in off.actions if a.kind == ActionKind.UPDATE_RESOURCES]
    assert [d.why for d in off.deferred if d.rule == Reason.LIMITS_ABOVE_SPEC] == [DeferReason.NOT_ENFORCED]


def test_without_limits_no_container_reports_any() -> None:
    snapshot, _ = synthetic.build(30, NOW)
    assert all(c.limits is None for c in snapshot.containers)


def test_the_limits_case_measures_both_modes() -> None:
    result = planner_limits(60, 1)
    assert set(result["cpu_s"]) == {"off", "on"} and result["cpu_s"]["on"]["n"] == 1
    assert result["plans"]["on"]["deferred"] > result["plans"]["off"]["deferred"]
