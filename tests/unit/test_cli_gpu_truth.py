"""``get allocations`` and ``get gpus`` judge each device by what concerns that device.

A container's correct ledger row was called ``leaked`` because the plan released another, stale row
of the same container: the verdict took every plan item about the row's container, whatever GPU
it named.
"""

from __future__ import annotations

import json

from controller.cli.get import GetOptions, run_get
from controller.cli.view import View
from controller.plan.types import ActionKind
from tests.fixtures import builders as b


def stale_row_beside_a_correct_one() -> View:
    """Container x holds GPU 1 (its row says so) and has a stale row for GPU 0, which the plan releases."""
    t = b.T0
    x = b.running("x", gpus=[b.GPU1], started_at=b.ago(hours=2), sig=b.signals(t, gpu_pct={b.GPU1: 90.0}))
    snap = b.snapshot(
        observed_at=t,
        containers=[x],
        gpus=(b.gpu(0), b.gpu(1, util_pct=90.0)),
        ledger=b.ledger(b.ledger_entry("x", b.GPU1), b.ledger_entry("x", b.GPU0)),
    )
    passes = b.Passes(b.desired())
    p = passes.run(snap)
    assert [a.target.gpu for a in b.actions_of(p, ActionKind.RELEASE_ALLOCATION)] == [b.GPU0]
    return View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=passes.desired)


def test_a_correct_row_is_not_leaked_because_its_container_has_a_stale_one() -> None:
    view = stale_row_beside_a_correct_one()
    verdicts = {
        i["gpu"]: i["verdict"]
        for i in json.loads(run_get("allocations", view, GetOptions(output="json"))[0])["items"]
    }
    assert verdicts == {b.GPU0: "leaked", b.GPU1: "ok"}
    text = run_get("allocations", view, GetOptions())[0]
    rows = {line.split()[0]: line for line in text.splitlines()[1:] if line.strip()}
    assert rows["0"].split()[-1] == "leaked" and rows["1"].split()[-1] == "ok", text
