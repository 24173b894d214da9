"""A stop or removal the tripped circuit breaker holds is shown as held, not as nothing to do.

With the breaker tripped the planner defers every destructive action that is due (``BreakerOpen``,
no due time) until an admin resets it; the pass after the reset carries them out. NEXT showed
``-`` for such a removal and, for an idle stop, the forecast's max-runtime warning the next
morning (``-o json``: that warning, or ``null``), and ``plan`` said ``no due time``.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from controller.cli.describe import describe_container
from controller.cli.forecastview import forecast_for_view
from controller.cli.get import GetOptions, run_get
from controller.cli.planview import plan_text
from controller.cli.view import View
from controller.memory import Breaker
from controller.plan.types import DeferReason
from controller.snapshot import ContainerObs, Snapshot
from tests.fixtures import builders as b
from tests.fixtures.local_zone import utc_clock  # noqa: F401 (the fixture)

pytestmark = pytest.mark.usefixtures("utc_clock")  # clock times in the output are local

POLICY = b.policy(idle_timeout_s=1800.0, grace_period_s=600.0)
TRIPPED_AT = b.at(minutes=20)


def containers(t: datetime) -> list[ContainerObs]:
    return [
        b.running("idle", gpus=[b.GPU0], started_at=b.ago(hours=3), sig=b.signals(t, gpu_pct={b.GPU0: 0.0})),
        b.exited("stopped", gpus=[b.GPU1], finished_at=b.ago(hours=5)),
    ]


def host(t: datetime) -> Snapshot:
    return b.snapshot(observed_at=t, containers=containers(t), gpus=(b.gpu(0), b.gpu(1)))


def tripped() -> tuple[View, b.Passes]:
    """The idle stop and the GPU hold's removal fall due while the breaker is tripped."""
    passes = b.Passes(b.desired(POLICY))
    for i in range(50):
        t = b.at(minutes=i)
        if t == TRIPPED_AT:
            breaker = Breaker(tripped=True, tripped_at=t, reason="this pass would stop 3 of 4")
            passes.memory = passes.memory.model_copy(update={"breaker": breaker})
        p = passes.run(host(t))
    held = {d.target.container: d.rule.value for d in p.deferred if d.why is DeferReason.BREAKER_OPEN}
    assert held == {"idle": "IdleTimeout", "stopped": "GpuHoldExpired"}, b.deferred_summary(p)
    assert not p.actions
    view = View(snapshot=host(t), now=t, plan=p, memory=p.memory, desired=passes.desired)
    view.forecast = forecast_for_view(view, 30.0, small_hosts_only=True)
    return view, passes


def test_next_shows_a_step_the_breaker_holds_not_nothing_nor_a_later_step() -> None:
    view, passes = tripped()
    text = run_get("containers", view, GetOptions())[0]
    rows = {line.split()[0]: line for line in text.splitlines()[1:] if line.strip()}
    assert "stop and remove held" in rows["idle"] and "warning" not in rows["idle"], text
    assert "remove held" in rows["stopped"], text
    items = {
        i["name"]: i["next"]
        for i in json.loads(run_get("containers", view, GetOptions(output="json"))[0])["items"]
    }
    assert items["idle"] == {
        "action": "stop and remove",
        "rule": "IdleTimeout",
        "pending": False,
        "due_at": None,
        "deferred_because": "BreakerOpen",
    }
    assert items["stopped"] == {
        "action": "remove",
        "rule": "GpuHoldExpired",
        "pending": False,
        "due_at": None,
        "deferred_because": "BreakerOpen",
    }
    # And it is true: nothing runs them while the breaker is tripped, the pass after the reset does.
    t = view.now
    assert not passes.run(host(t.replace(second=30))).actions
    passes.memory = passes.memory.with_breakers_reset()
    after = b.summary(passes.run(host(t.replace(minute=t.minute + 1))))
    assert ("StopContainer", "IdleTimeout", "idle") in after
    assert ("RemoveContainer", "GpuHoldExpired", "stopped") in after


def test_plan_and_describe_say_the_breaker_holds_it_until_an_admin_resets_it() -> None:
    view, _ = tripped()
    assert view.plan is not None
    text = plan_text(view.plan)
    line = next(x for x in text.splitlines() if "IdleTimeout idle" in x)
    assert "no due time" not in line and "until an admin resets the breaker" in line, text
    decision = describe_container(view, "idle").split("Decision:")[1]
    assert "until an admin resets the breaker" in decision, decision


def timers(view: View, name: str) -> str:
    """The Timers section alone (the Decision section after it says when, too)."""
    return describe_container(view, name).split("Timers")[1].split("Decision:")[0]


def test_describe_timers_say_when_a_held_step_comes_as_the_decision_does() -> None:
    """The Timers section named the gate's reason and not when it ends, while the Decision
    section said it: "held: the circuit breaker is tripped" against "until an admin resets it"."""
    view, _ = tripped()
    assert "remove held: the circuit breaker is tripped; until an admin resets the breaker" in timers(
        view, "stopped"
    )


def test_describe_timers_say_the_next_pass_for_a_removal_the_budget_holds() -> None:
    passes = b.Passes(b.desired(POLICY, b.global_policy(max_destructive_actions_per_pass=1)))
    t = b.at(minutes=1)
    snap = b.snapshot(
        observed_at=t,
        containers=[b.exited(f"old{i}", gpus=[b.GPU1], finished_at=b.ago(hours=5 + i)) for i in range(2)],
        gpus=(b.gpu(0), b.gpu(1)),
    )
    p = passes.run(snap)
    held = [d.target.container for d in p.deferred if d.why is DeferReason.BUDGET_EXHAUSTED]
    assert len(held) == 1 and len(p.actions) == 1, b.deferred_summary(p)
    view = View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=passes.desired)
    assert "remove held: this pass's action budget is spent; at the next pass" in timers(view, held[0])
    # And it is true: the next pass removes it (the first one gone).
    rest = [c for c in snap.containers if c.name == held[0]]
    after = b.summary(passes.run(b.snapshot(observed_at=b.at(minutes=2), containers=rest, gpus=snap.gpus)))
    assert ("RemoveContainer", "GpuHoldExpired", held[0]) in after


def test_a_step_not_due_yet_while_the_breaker_is_tripped_is_said_to_be_held_then(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The breaker is tripped; the idle container's stop is not due yet. describe and plan gave its
    time ("stop and remove due 12:25 (in 5m)") and nothing said that the stop is held then: the
    daemon defers it (BreakerOpen) until an admin resets the breaker."""
    from pathlib import Path

    from controller.cli import gather as gather_mod
    from controller.settings import Settings

    passes = b.Passes(b.desired(POLICY))
    for i in range(21):  # tripped at 12:20, the container idle since 12:00, its stop due 12:30
        t = b.at(minutes=i)
        if t == TRIPPED_AT:
            breaker = Breaker(tripped=True, tripped_at=t, reason="this pass would stop 3 of 4")
            passes.memory = passes.memory.model_copy(update={"breaker": breaker})
        p = passes.run(b.snapshot(observed_at=t, containers=containers(t)[:1], gpus=(b.gpu(0), b.gpu(1))))
    (stop,) = [d for d in p.deferred if d.rule.value == "IdleTimeout"]
    assert stop.why is DeferReason.NOT_DUE and stop.due_at is not None and stop.due_at > t
    view = View(snapshot=host(t), now=t, plan=p, memory=p.memory, desired=passes.desired)
    timers = describe_container(view, "idle")
    assert "stop and remove due" in timers  # a time, as the plan gives it
    # What the daemon does at that time: holds it.
    kinds = set()
    for i in range(21, 41):
        later = b.at(minutes=i)
        held = passes.run(b.snapshot(observed_at=later, containers=containers(later)[:1], gpus=(b.gpu(0),)))
        kinds |= {a.kind.value for a in held.actions}
    assert later > stop.due_at and "StopContainer" not in kinds
    assert [d.why for d in held.deferred if d.rule.value == "IdleTimeout"] == [DeferReason.BREAKER_OPEN]
    # Every view that plans says so (plan, get, describe: the gathering's notes).
    state = Path(str(tmp_path)) / "state"
    state.mkdir(mode=0o700)
    monkeypatch.setattr(gather_mod, "observe", lambda _s, _d: host(later))
    monkeypatch.setattr(gather_mod, "read_memory", lambda _d: (passes.memory, None))
    gathered = gather_mod.gather(Settings(state_dir=state), gather_mod.GatherOptions())
    (note,) = [n for n in gathered.notes if "breaker is tripped" in n]
    assert (
        "no stop, removal, process kill or GPU reset runs until an admin runs 'ds01ctl breaker reset'" in note
    )
    assert "this pass would stop 3 of 4" in note
    # Closed, or with a reset waiting (the next pass closes it): no such note.
    monkeypatch.setattr(gather_mod, "read_memory", lambda _d: (passes.memory.with_breakers_reset(), None))
    closed = gather_mod.gather(Settings(state_dir=state), gather_mod.GatherOptions())
    assert not [n for n in closed.notes if "breaker is tripped" in n]
    monkeypatch.setattr(gather_mod, "read_memory", lambda _d: (passes.memory, None))
    (state / "breaker-reset").write_text("")
    pending = gather_mod.gather(Settings(state_dir=state), gather_mod.GatherOptions())
    assert not [n for n in pending.notes if "breaker is tripped" in n]
