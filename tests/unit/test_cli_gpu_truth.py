"""``get allocations`` and ``get gpus`` judge each device by what concerns that device.

A container's correct ledger row was called ``leaked`` because the plan released another, stale row
of the same container: the verdict took every plan item about the row's container, whatever GPU
it named. ``get gpus`` called a device ``free`` while a live container's compute process ran on it
(one the container was not given, or a MIG device of a ``--gpus all`` container).
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


# --- get gpus: a device a compute process runs on is not free ---------------------------------


def gpu_rows(view: View) -> dict[str, list[str]]:
    text = run_get("gpus", view, GetOptions())[0]
    return {line.split()[0]: line.split() for line in text.splitlines()[1:] if line.strip()}


def gpu_states(view: View) -> dict[str, str]:
    return {
        i["slot"]: i["state"]
        for i in json.loads(run_get("gpus", view, GetOptions(output="json"))[0])["items"]
    }


def test_a_gpu_a_live_container_runs_a_process_on_without_being_given_it_is_not_free() -> None:
    """train is given GPU 1 but its process runs on GPU 0 (the planner alerts; nothing is dirty):
    GPU 0 was ``free`` with a compute process on it."""
    t = b.T0
    train = b.running(
        "train", gpus=[b.GPU1], started_at=b.ago(hours=2), sig=b.signals(t, gpu_pct={b.GPU1: 90.0})
    )
    snap = b.snapshot(
        observed_at=t,
        containers=[train],
        gpus=(b.gpu(0, memory_used_bytes=2 << 30), b.gpu(1, util_pct=90.0)),
        processes=[b.process(4242, b.GPU0, container_id=train.id, container_exists=True)],
    )
    passes = b.Passes(b.desired())
    p = passes.run(snap)
    assert b.summary(p) == [("AlertAdmin", "ForeignProcessOnGpu", "train")]
    view = View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=passes.desired)
    rows = gpu_rows(view)
    assert rows["0"][-1] == "held" and rows["1"][-1] == "held", rows
    assert gpu_states(view) == {"0": "held", "1": "held"}


def test_an_all_gpus_container_holds_the_mig_devices_of_a_gpu_in_mig_mode() -> None:
    """A ``--gpus all`` container on a host whose GPU 0 is in MIG mode, a process of it on MIG
    device 0.0: GPU 0 and its devices were ``free`` (the container held only the physical GPUs)."""
    t = b.T0
    mig0 = b.mig_uuid(0, 0)
    everything = b.running(
        "everything", all_gpus=True, started_at=b.ago(hours=2), sig=b.signals(t, gpu_pct={b.GPU1: 90.0})
    )
    snap = b.snapshot(
        observed_at=t,
        containers=[everything],
        gpus=(b.gpu(0, mig_slots=2), b.gpu(1, util_pct=90.0)),
        processes=[
            b.process(4242, b.GPU0, device_uuid=mig0, container_id=everything.id, container_exists=True)
        ],
    )
    passes = b.Passes(b.desired())
    p = passes.run(snap)
    view = View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=passes.desired)
    rows = gpu_rows(view)
    assert {slot: r[-1] for slot, r in rows.items()} == {
        "0": "held",
        "0.0": "held",
        "0.1": "held",
        "1": "held",
    }, rows
    assert rows["0.0"][-3] == "everything" and rows["0.1"][-3] == "everything", rows
    items = json.loads(run_get("gpus", view, GetOptions(output="json"))[0])["items"]
    assert {i["slot"]: i["holders"] for i in items}["0.1"] == ["everything"]
