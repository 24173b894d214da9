"""What ``get``, ``describe`` and ``plan`` call a container's next step, against what the planner does.

Each host here runs through the real planner pass by pass (memory carried, warnings delivered), and
the words the CLI prints for a step are held against the action the planner then takes: a quota
stop is a stop (not a warning), an idle stop that removes the container says so, the end of a grace
period or of an exemption is not the time of the stop or the removal.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import pytest

from controller.cli.describe import describe_container
from controller.cli.forecastview import forecast_for_view
from controller.cli.get import GetOptions, run_get
from controller.cli.planview import plan_text
from controller.cli.view import View
from controller.plan.desired import StaticDesired
from controller.plan.types import Plan, StopParams
from controller.snapshot import ContainerObs, Snapshot
from desired_state.effective import ExemptFrom, ResourceSpec, Sourced
from tests.fixtures import builders as b
from tests.fixtures.local_zone import utc_clock  # noqa: F401 (the fixture)

pytestmark = pytest.mark.usefixtures("utc_clock")  # clock times in the output are local


def run(
    desired: StaticDesired,
    make: Callable[[datetime], list[ContainerObs]],
    times: list[datetime],
) -> tuple[View, b.Passes, Plan]:
    """The view after one pass at each of ``times`` (the last one's plan), and the passes to go on."""
    passes = b.Passes(desired)
    for t in times:
        p = passes.run(host(make, t))
    view = View(snapshot=host(make, t), now=p.evaluated_at, plan=p, memory=p.memory, desired=passes.desired)
    return view, passes, p


def host(make: Callable[[datetime], list[ContainerObs]], t: datetime) -> Snapshot:
    return b.snapshot(observed_at=t, containers=make(t), gpus=(b.gpu(0),))


def section(text: str, head: str, end: str) -> str:
    return text[text.index(head) : text.index(end, text.index(head))]


def next_json(view: View, name: str) -> dict[str, object]:
    items = json.loads(run_get("containers", view, GetOptions(output="json", name=name))[0])["items"]
    nxt: dict[str, object] = items[0]["next"]
    return nxt


# --- an enforced quota ------------------------------------------------------------------------

QUOTA_1 = b.policy(idle_timeout_s=None).model_copy(
    update={"resources": ResourceSpec(max_containers_per_user=Sourced(value=1, source="UserGroup/student"))}
)


def two_notebooks(t: datetime) -> list[ContainerObs]:
    return [
        b.running("old-nb", started_at=b.ago(hours=5), sig=b.signals(t)),
        b.running("new-nb", started_at=b.ago(minutes=1), sig=b.signals(t)),
    ]


def test_an_enforced_quota_stop_is_shown_as_a_stop_not_a_warning() -> None:
    # enforce: stop. The newest container beyond the quota is warned in the first pass and stopped
    # a warning lead (10m) later; the warning is delivered, so what waits now is the stop.
    desired = b.desired(QUOTA_1, b.global_policy(quota_enforce="stop"))
    view, passes, p = run(desired, two_notebooks, [b.T0, b.at(seconds=30)])
    text = describe_container(view, "new-nb")
    decision = section(text, "Decision:", "Events:")
    assert "DEFERRED  stop (ContainerQuotaExceeded)" in decision and "stop 12:10 UTC" in decision, decision
    assert "warn 12:10" not in decision
    line = next(x for x in plan_text(p).splitlines() if "ContainerQuotaExceeded new-nb" in x)
    assert "[WaitingForWarning; stop 12:10 UTC" in line, line
    nxt = next_json(view, "new-nb")
    assert (nxt["action"], nxt["due_at"]) == ("stop", "2026-03-02T12:10:00Z")
    # What the planner does then: the stop, for the quota.
    at = passes.run(host(two_notebooks, b.at(minutes=10)))
    assert ("StopContainer", "ContainerQuotaExceeded", "new-nb") in b.summary(at)


def test_a_quota_stop_the_action_budget_holds_is_shown_as_a_stop() -> None:
    # The safety gate's deferral names the action it holds (a StopContainer), not the warning.
    desired = b.desired(QUOTA_1, b.global_policy(quota_enforce="stop", max_destructive_actions_per_pass=0))
    view, _, p = run(desired, two_notebooks, [b.T0, b.at(minutes=10)])
    assert [(d.rule.value, d.why.value) for d in p.deferred if d.target.container == "new-nb"] == [
        ("ContainerQuotaExceeded", "BudgetExhausted")
    ]
    assert next_json(view, "new-nb")["action"] == "stop"
    decision = section(describe_container(view, "new-nb"), "Decision:", "Events:")
    assert "DEFERRED  stop (ContainerQuotaExceeded)" in decision, decision


# --- the grace period -------------------------------------------------------------------------

IDLE_30M = b.policy(idle_timeout_s=1800.0, high_demand_threshold=2.0)  # no high demand: 30m


def idle_notebook(t: datetime) -> list[ContainerObs]:
    return [b.running("nb", gpus=[b.GPU0], started_at=b.T0, sig=b.signals(t, gpu_pct={b.GPU0: 0.0}))]


def test_the_end_of_the_grace_period_is_not_shown_as_the_stop_time() -> None:
    # Started at 12:00 with a grace period of 30m: idle checks begin at 12:30, and an idle container
    # is warned at 12:54 and stopped at 13:00. Nothing is stopped at 12:30.
    times = [b.at(minutes=m) for m in range(0, 11)]
    view, passes, p = run(b.desired(IDLE_30M), idle_notebook, times)
    text = describe_container(view, "nb")
    timers, decision = section(text, "Timers:", "Decision:"), section(text, "Decision:", "Events:")
    assert "grace ends 12:30 UTC (in 20m)" in timers and "stop due 12:30" not in timers, timers
    assert "grace ends 12:30 UTC (in 20m)" in decision and "stop 12:30" not in decision, decision
    line = next(x for x in plan_text(p, wide=True).splitlines() if "IdleTimeout nb" in x)
    assert "[GracePeriod; grace ends 12:30 UTC (in 20m)]" in line, line
    stops = []
    for m in range(11, 61):
        stops += [
            a
            for a in passes.run(host(idle_notebook, b.at(minutes=m))).actions
            if a.kind.value == "StopContainer"
        ]
    assert [a.due_at for a in stops] == [b.at(hours=1)]


# --- a cleanup exemption ----------------------------------------------------------------------


def test_a_cleanup_exemption_ending_is_not_shown_as_the_removal_time() -> None:
    # Stopped at 11:59 with a GPU hold of 15m; its owner's cleanup exemption ends at 12:02. The
    # removal comes when the hold ends (12:14), not when the exemption does.
    pol = b.policy(exemptions=[b.exemption(ExemptFrom.CLEANUP, expires_at=b.at(minutes=2))])

    def done(t: datetime) -> list[ContainerObs]:
        return [b.exited("done", gpus=[b.GPU0], started_at=b.ago(hours=2), finished_at=b.ago(minutes=1))]

    view, passes, p = run(b.desired(pol), done, [b.T0])
    text = describe_container(view, "done")
    timers, decision = section(text, "Timers:", "Decision:"), section(text, "Decision:", "Events:")
    assert "exemption ends 12:02 UTC (in 2m" in timers and "remove due 12:02" not in timers, timers
    assert "exemption ends 12:02 UTC (in 2m)" in decision and "remove 12:02" not in decision, decision
    line = next(x for x in plan_text(p).splitlines() if "GpuHoldExpired done" in x)
    assert "[Exempt; exemption ends 12:02 UTC (in 2m)]" in line, line
    assert next_json(view, "done")["action"] == "exemption ends"
    removed = [m for m in range(1, 20) if passes.run(host(done, b.at(minutes=m))).actions]
    assert removed[0] == 14


# --- an idle stop that removes the container --------------------------------------------------


@pytest.mark.parametrize("remove", [True, False])
def test_an_idle_stop_that_removes_the_container_says_so(remove: bool) -> None:
    # removeAfterIdleStop (the shipped default): the idle stop removes the container in the same
    # action. Idle from 12:30, warned at 12:54, stopped at 13:00.
    pol = b.policy(idle_timeout_s=1800.0, high_demand_threshold=2.0, remove_after_idle_stop=remove)
    times = [*(b.at(minutes=m) for m in range(0, 60)), b.at(minutes=59, seconds=30)]
    view, passes, p = run(b.desired(pol), idle_notebook, times)
    word = "stop and remove" if remove else "stop"
    decision = section(describe_container(view, "nb"), "Decision:", "Events:")
    assert f"DEFERRED  {word} (IdleTimeout)" in decision and f"{word} 13:00 UTC" in decision, decision
    assert next_json(view, "nb")["action"] == word
    text = plan_text(p, idle_removes=lambda d: view.idle_stop_removes(d.target.container_id))
    line = next(x for x in text.splitlines() if "IdleTimeout nb" in x)
    assert f"; {word} 13:00 UTC" in line, line
    view.forecast = forecast_for_view(view, 30.0, small_hosts_only=False)
    row = run_get("containers", view, GetOptions())[0].splitlines()[1]
    assert f" {word} 13:00 UTC if it stays idle" in row, row
    # The pass of the stop: the action, as plan and describe print it.
    snap = host(idle_notebook, b.at(hours=1))
    p = passes.run(snap)
    (stop,) = [a for a in p.actions if a.kind.value == "StopContainer"]
    assert isinstance(stop.params, StopParams) and stop.params.remove is remove
    now = View(snapshot=snap, now=p.evaluated_at, plan=p, memory=p.memory, desired=passes.desired)
    kind = "StopContainer and remove" if remove else "StopContainer"
    assert f"! {kind} nb  [IdleTimeout]" in plan_text(p), plan_text(p)
    assert f"ACTING    {kind} (IdleTimeout) now" in describe_container(now, "nb")
    assert next_json(now, "nb")["action"] == word
