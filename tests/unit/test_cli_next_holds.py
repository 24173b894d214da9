"""An exemption or keep-alive that holds an idle stop off: ``get`` and ``describe`` show when it ends,
not a stop then. The planner warns when the hold ends and stops a lead later; NEXT said
``stop in 2h`` (and ``-o json`` ``next.action: stop``) for the end of the hold, and ``describe``
contradicted its own forecast. An idle exemption's notice was also listed as an idle warning.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from controller.cli.describe import describe_container
from controller.cli.get import GetOptions, run_get
from controller.cli.view import View
from controller.snapshot import ContainerObs
from desired_state.effective import EffectivePolicy, ExemptFrom
from tests.fixtures import builders as b

IDLE_1H = b.policy(idle_timeout_s=3600.0)
EXEMPT = b.policy(idle_timeout_s=3600.0, exemptions=[b.exemption(ExemptFrom.IDLE, expires_at=b.at(hours=3))])


def policy(c: ContainerObs, now: datetime) -> EffectivePolicy:
    return EXEMPT if c.name == "exempt" else IDLE_1H


def containers(t: datetime) -> list[ContainerObs]:
    return [
        b.running(
            "exempt", gpus=[b.GPU1], started_at=b.ago(hours=2), sig=b.signals(t, gpu_pct={b.GPU1: 0.0})
        ),
        b.running(
            "keep",
            gpus=[b.GPU0],
            started_at=b.ago(hours=2),
            sig=b.signals(t, gpu_pct={b.GPU0: 0.0}, keep=b.keepalive(mtime=b.ago(hours=22))),
        ),
    ]


def world() -> tuple[View, b.Passes]:
    passes = b.Passes(b.desired(policy))
    for i in range(11):
        t = b.at(seconds=300 * i)
        snap = b.snapshot(observed_at=t, containers=containers(t), gpus=(b.gpu(0), b.gpu(1)))
        p = passes.run(snap)
    return View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=passes.desired), passes


def test_next_shows_when_the_hold_ends_and_the_planner_warns_then() -> None:
    view, passes = world()
    text = run_get("containers", view, GetOptions(show_all=True))[0]
    nxt = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert "exemption ends in 2h" in nxt["exempt"] and "keep-alive ends in 1h" in nxt["keep"], text
    items = {
        i["name"]: i["next"]
        for i in json.loads(run_get("containers", view, GetOptions(output="json", show_all=True))[0])["items"]
    }
    assert (
        items["exempt"]["action"] == "exemption ends" and items["exempt"]["due_at"] == "2026-03-02T15:00:00Z"
    )
    assert items["keep"]["action"] == "keep-alive ends" and items["keep"]["due_at"] == "2026-03-02T14:00:00Z"
    # What the planner does when the holds end: a warning then, the stop a lead later.
    firsts: dict[tuple[str, str], datetime] = {}
    t = view.now
    while t < b.at(hours=4):
        t += timedelta(seconds=60)
        p = passes.run(b.snapshot(observed_at=t, containers=containers(t), gpus=(b.gpu(0), b.gpu(1))))
        for a in p.actions:
            firsts.setdefault((a.target.container or "", a.kind.value), t)
    assert firsts[("keep", "WarnOwner")] == b.at(hours=2) and firsts[("keep", "StopContainer")] > b.at(
        hours=2
    )
    assert firsts[("exempt", "WarnOwner")] == b.at(hours=3)


def test_describe_says_the_hold_ends_and_lists_no_exemption_notice_as_a_warning() -> None:
    view, _ = world()
    text = describe_container(view, "exempt")
    timers = text[text.index("Timers:") : text.index("Decision:")]
    assert "exemption ends 15:00 UTC" in timers and "stop due 15:00" not in timers, timers
    assert "warned" not in timers.splitlines()[1], timers  # the exemption's notice is no warning
