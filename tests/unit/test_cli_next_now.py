"""NEXT names the step that comes first and matters most.

An idle container whose idle stop falls due in the same pass as its first max-runtime warning
(an earlier due time: the warning's level was reached a little before) showed ``warn now``,
hiding the stop the pass carries out. A stop the per-pass action budget holds to the next pass
(no due time) was not shown at all: NEXT showed the max-runtime warning hours away.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from controller.cli.describe import describe_container
from controller.cli.get import GetOptions, run_get
from controller.cli.view import View
from controller.plan.types import ActionKind, DeferReason, Reason
from controller.snapshot import Snapshot
from tests.fixtures import builders as b

START = b.ago(hours=2)
# The first max-runtime warning (75 %) falls due 21 minutes after T0, just before the idle stop.
STOP_AND_WARN = b.policy(idle_timeout_s=1800.0, max_runtime_s=(2 * 3600 + 21 * 60) / 0.75)


def stop_and_warning_in_one_pass() -> View:
    passes = b.Passes(b.desired(STOP_AND_WARN))
    for i in range(20):
        t = b.at(minutes=5 * i)
        snap = b.snapshot(
            observed_at=t,
            gpus=(b.gpu(0),),
            containers=[
                b.running("nb", gpus=[b.GPU0], started_at=START, sig=b.signals(t, gpu_pct={b.GPU0: 0.0}))
            ],
        )
        p = passes.run(snap)
        if b.actions_of(p, ActionKind.STOP_CONTAINER):
            break
    kinds = {a.kind for a in p.actions}
    assert kinds == {ActionKind.STOP_CONTAINER, ActionKind.WARN_OWNER}, b.summary(p)
    (warn,) = b.actions_of(p, ActionKind.WARN_OWNER)
    (stop,) = b.actions_of(p, ActionKind.STOP_CONTAINER)
    assert warn.due_at < stop.due_at  # the ordering by due time alone picked the warning
    return View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=passes.desired)


def test_next_shows_the_stop_of_this_pass_over_its_warning() -> None:
    view = stop_and_warning_in_one_pass()
    text = run_get("containers", view, GetOptions())[0]
    (row,) = [line for line in text.splitlines()[1:] if line.startswith("nb ")]
    assert "stop and remove now" in row and "warn now" not in row, text
    (item,) = json.loads(run_get("containers", view, GetOptions(output="json"))[0])["items"]
    assert item["next"]["action"] == "stop and remove" and item["next"]["rule"] == "IdleTimeout", item["next"]
    assert item["next"]["pending"] is True
    assert set(item["next"]) == {"action", "rule", "pending", "due_at", "deferred_because"}


# --- a stop the per-pass action budget holds to the next pass ---------------------------------

BUDGET_2 = b.global_policy(max_destructive_actions_per_pass=2)
EIGHT_GPUS = tuple(b.gpu(i, uuid=f"GPU-{i:08d}-aaaa-aaaa-aaaa-aaaaaaaaaaaa") for i in range(8))


def three_idle_of_eight(t: datetime) -> Snapshot:
    containers = [
        b.running(
            f"c{i}",
            gpus=[g.uuid],
            started_at=b.ago(hours=2),
            sig=b.signals(t, gpu_pct={g.uuid: 0.0 if i < 3 else 90.0}),
        )
        for i, g in enumerate(EIGHT_GPUS)
    ]
    return b.snapshot(observed_at=t, containers=containers, gpus=EIGHT_GPUS)


def budget_spent() -> tuple[View, str]:
    """Three idle stops due in one pass with a budget of two: one waits for the next pass."""
    passes = b.Passes(b.desired(b.policy(), BUDGET_2))
    for i in range(30):
        t = b.at(minutes=5 * i)
        snap = three_idle_of_eight(t)
        p = passes.run(snap)
        held = [d for d in p.deferred if d.why is DeferReason.BUDGET_EXHAUSTED]
        if held:
            break
    (d,) = held
    assert d.rule is Reason.IDLE_TIMEOUT and d.due_at is None and d.target.container
    return View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=passes.desired), d.target.container


def test_next_shows_a_stop_the_action_budget_holds_to_the_next_pass() -> None:
    view, held = budget_spent()
    text = run_get("containers", view, GetOptions())[0]
    rows = {line.split()[0]: line for line in text.splitlines()[1:] if line.strip()}
    assert "stop and remove next pass" in rows[held], text
    items = {
        i["name"]: i["next"]
        for i in json.loads(run_get("containers", view, GetOptions(output="json"))[0])["items"]
    }
    assert items[held] == {
        "action": "stop and remove",
        "rule": "IdleTimeout",
        "pending": False,
        "due_at": None,
        "deferred_because": "BudgetExhausted",
    }
    # --sort-by next puts it after the stops of this pass and before every timed step.
    order = [
        line.split()[0]
        for line in run_get("containers", view, GetOptions(sort_by="next"))[0].splitlines()[1:]
        if line.strip()
    ]
    assert order.index(held) == 2, order
    # describe says when, as NEXT does.
    text = describe_container(view, held)
    assert "DEFERRED  stop and remove (IdleTimeout)" in text and "at the next pass" in text, text


def test_a_backlog_longer_than_the_budget_says_which_pass_each_stop_waits_for() -> None:
    # Budget 1, three idle stops due together: one runs now, one at the next pass, one at the
    # pass after. What NEXT, describe and the planner's message say is the pass it comes at.
    # (No high-demand shortening here: the stops lower the demand, which would lengthen the idle
    # timeout of the ones still waiting; then they are no longer due, and say so.)
    pol = b.policy(high_demand_idle_reduction=1.0)
    passes = b.Passes(b.desired(pol, b.global_policy(max_destructive_actions_per_pass=1)))
    for i in range(30):
        t = b.at(minutes=5 * i)
        snap = three_idle_of_eight(t)
        p = passes.run(snap)
        held = sorted(
            (d for d in p.deferred if d.why is DeferReason.BUDGET_EXHAUSTED),
            key=lambda d: d.evidence["in_passes"],
        )
        if held:
            break
    assert [d.evidence["in_passes"] for d in held] == [1, 2]
    first, second = (d.target.container or "" for d in held)
    assert held[0].message.endswith("; next pass") and held[1].message.endswith("; in 2 passes")
    view = View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=passes.desired)
    text = run_get("containers", view, GetOptions())[0]
    rows = {line.split()[0]: line for line in text.splitlines()[1:] if line.strip()}
    assert "stop and remove next pass" in rows[first] and "stop and remove in 2 passes" in rows[second], text
    order = [
        line.split()[0]
        for line in run_get("containers", view, GetOptions(sort_by="next"))[0].splitlines()[1:]
        if line.strip()
    ]
    assert order.index(first) == 1 and order.index(second) == 2, order
    assert "in 2 passes" in describe_container(view, second)
    # And it is true: the next pass stops the first, the one after the second.
    stopped = [a.target.container or "" for a in p.actions if a.kind is ActionKind.STOP_CONTAINER]
    for k in (1, 2):
        later = three_idle_of_eight(b.at(minutes=5 * i) + timedelta(seconds=30 * k))
        listed = [c for c in later.containers if c.name not in stopped]  # a stopped one is gone
        p = passes.run(later.model_copy(update={"containers": listed}))
        stopped += [a.target.container or "" for a in p.actions if a.kind is ActionKind.STOP_CONTAINER]
    assert stopped[1:] == [first, second]


def test_plan_says_when_an_action_the_budget_holds_comes_as_get_and_describe_do() -> None:
    # Three containers past their created-never-started limit, a budget of one: the plan removes
    # one now and holds the others to the next two passes. get said "remove next pass" / "remove in
    # 2 passes", describe "at the next pass"; plan said "[BudgetExhausted; no due time]".
    from controller.cli.forecastview import forecast_text
    from controller.cli.planview import plan_text
    from controller.plan.forecast import forecast

    snap = b.snapshot(containers=[b.created(f"c{i}", created_at=b.ago(hours=2)) for i in range(3)])
    desired = b.desired(b.policy(), b.global_policy(max_destructive_actions_per_pass=1))
    p = b.Passes(desired).run(snap)
    held = {d.target.container: d for d in p.deferred if d.why == DeferReason.BUDGET_EXHAUSTED}
    assert sorted(held) == ["c1", "c2"], b.deferred_summary(p)
    text = plan_text(p)
    assert "no due time" not in text, text
    assert "[BudgetExhausted; at the next pass]" in text and "[BudgetExhausted; in 2 passes]" in text, text
    # The forecast's deferrals left at its end read the same way (a budget of 0 holds them all).
    none = b.desired(b.policy(), b.global_policy(max_destructive_actions_per_pass=0))
    f = forecast(snap, none, p.memory, until=b.at(minutes=5), interval_s=30.0)
    tail = forecast_text(f)
    assert "[BudgetExhausted; not while the per-pass action budget is 0]" in tail, tail
