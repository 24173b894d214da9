"""NEXT names the step that matters most among those the plan carries out: a stop in this pass
is shown over a warning in the same pass.

An idle container whose idle stop falls due in the same pass as its first max-runtime warning
(an earlier due time: the warning's level was reached a little before) showed ``warn now``,
hiding the stop the pass carries out.
"""

from __future__ import annotations

import json

from controller.cli.get import GetOptions, run_get
from controller.cli.view import View
from controller.plan.types import ActionKind
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
    assert "stop now" in row and "warn now" not in row, text
    (item,) = json.loads(run_get("containers", view, GetOptions(output="json"))[0])["items"]
    assert item["next"]["action"] == "stop" and item["next"]["rule"] == "IdleTimeout", item["next"]
    assert item["next"]["pending"] is True
    assert set(item["next"]) == {"action", "rule", "pending", "due_at", "deferred_because"}
