"""``get allocations`` and ``get gpus`` judge each device by what concerns that device.

A container's correct ledger row was called ``leaked`` because the plan released another, stale row
of the same container: the verdict took every plan item about the row's container, whatever GPU
it named. ``get gpus`` called a device ``free`` while a live container's compute process ran on it
(one the container was not given, or a MIG device of a ``--gpus all`` container).

With Docker unreachable the containers cannot be listed: ``get gpus`` showed no holders (``-``,
``holders: []``), ``describe gpu`` ``Holders: <none>`` and "not acted on: no rule concerns this
GPU itself", ``get allocations`` called a ledger row ``ledger-only`` (no container backs it). What
NVML says is still shown; what depends on the containers is ``unknown``.
"""

from __future__ import annotations

import json

import pytest

from controller.cli.describe import describe_gpu
from controller.cli.get import GetOptions, run_get
from controller.cli.view import View
from controller.plan.types import ActionKind
from controller.snapshot import Domain
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


# --- Docker down: the holders are unknown, not none -------------------------------------------------

ENGINE = "unix:///run/test-docker.sock"


def docker_went_down(*, nvml: bool = True) -> View:
    """bob's container holds GPU 0 (ledger row, a compute process) and MIG device 1.0; then Docker
    stops answering. As the observer does, the snapshot then lists no container at all."""
    t = b.T0
    passes = b.Passes(b.desired(b.policy()))
    mig = b.mig_uuid(1, 0)
    train = b.running("bob-train", owner="bob", gpus=[b.GPU0], started_at=b.ago(hours=2))
    notebook = b.running(
        "bob-notebook", owner="bob", gpus=[b.ref(mig, parent=b.GPU1)], started_at=b.ago(hours=1)
    )
    process = b.process(4242, b.GPU0, container_id=train.id, container_exists=True, user="bob")
    gpus = (b.gpu(0, processes=(4242,), memory_used_bytes=2 << 30), b.gpu(1, mig_slots=2))
    rows = b.ledger(b.ledger_entry("bob-train", b.GPU0, user="bob"))
    passes.run(
        b.snapshot(observed_at=t, containers=[train, notebook], gpus=gpus, processes=[process], ledger=rows)
    )
    down = (Domain.DOCKER,) if nvml else (Domain.DOCKER, Domain.NVML)
    snap = b.snapshot(observed_at=b.at(minutes=5), gpus=gpus, processes=[process], ledger=rows, down=down)
    p = passes.run(snap)
    return View(snapshot=snap, now=p.evaluated_at, plan=p, memory=p.memory, desired=passes.desired)


def section(text: str, heading: str, following: str) -> list[str]:
    return text.split(f"\n{heading}:\n")[1].split(f"\n{following}:")[0].splitlines()


HOLDS = [
    "  DEFERRED  reset (GpuDirty): an observation domain is unavailable [DomainUnavailable]; no due time",
    "      docker unavailable: no GPU process is killed and no GPU is reset",
    '      evidence: domains={"docker":"docker unavailable (test)"}',
    "  DEFERRED  release (LeakedAllocation): an observation domain is unavailable [DomainUnavailable]; "
    "no due time",
    "      Docker is unavailable: whether a ledger row's container exists cannot be told",
    "      evidence: docker_error=docker unavailable (test)",
    "  DEFERRED  kill (OrphanedProcess): an observation domain is unavailable [DomainUnavailable]; "
    "no due time",
    "      docker unavailable: no GPU process is killed and no GPU is reset",
    '      evidence: domains={"docker":"docker unavailable (test)"}',
]


def test_get_gpus_with_docker_down_has_unknown_holders_and_nvmls_facts() -> None:
    view = docker_went_down()
    rows = gpu_rows(view)  # (the model has a space: HOLDERS, PROCESSES and STATE from the right)
    assert {slot: tuple(r[-3:]) for slot, r in rows.items()} == {
        "0": ("unknown", "1", "unknown"),
        "1": ("unknown", "0", "unknown"),
        "1.0": ("unknown", "0", "unknown"),
        "1.1": ("unknown", "0", "unknown"),
    }, rows
    items = json.loads(run_get("gpus", view, GetOptions(output="json"))[0])["items"]
    assert [(i["slot"], i["holders"], i["processes"], i["state"]) for i in items] == [
        ("0", None, [4242], "unknown"),
        ("1", None, [], "unknown"),
        ("1.0", None, [], "unknown"),
        ("1.1", None, [], "unknown"),
    ]


def test_describe_gpu_with_docker_down_says_its_holders_are_unknown_and_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", ENGINE)
    view = docker_went_down()
    text = describe_gpu(view, "0")
    assert "State:        unknown (Docker is unavailable: its holders cannot be listed)" in text.splitlines()
    assert section(text, "Holders", "Processes") == [
        f"  unknown: the containers cannot be listed (cannot reach the Docker engine at {ENGINE}: "
        "docker unavailable (test))"
    ]
    # NVML's facts stand; the process's container is unknown, not gone.
    assert section(text, "Processes", "Ledger") == [
        "  PID    MEMORY   USER   CONTAINER   COMMAND           VERDICT",
        "  4242   2.0Gi    bob    unknown     python train.py   unknown",
    ]
    assert section(text, "Ledger", "Decision") == [
        "  bob-train (bob), allocated 2h ago (2026-03-02 10:00:00 UTC)"
    ]
    # The plan's own holds of the GPU rules, not "no rule concerns this GPU itself".
    assert section(text, "Decision", "Events") == HOLDS
    mig = describe_gpu(view, "1")
    (row,) = [line for line in section(mig, "MIG devices", "Holders") if "1.0" in line.split()]
    assert row.split()[3:5] == ["0B/10Gi", "unknown"], row


def test_describe_gpu_with_docker_and_nvml_down_says_what_the_ledger_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", ENGINE)
    text = describe_gpu(docker_went_down(nvml=False), b.GPU0)
    assert (
        "NVML and Docker are unavailable: below is what the ledger and the plan say about this GPU." in text
    )
    assert section(text, "Holders (containers that reference it)", "Processes") == [
        f"  unknown: the containers cannot be listed (cannot reach the Docker engine at {ENGINE}: "
        "docker unavailable (test))"
    ]
    assert section(text, "Ledger", "Decision") == [
        "  bob-train (bob), allocated 2h ago (2026-03-02 10:00:00 UTC)"
    ]
    decision = section(text, "Decision", "Events")
    assert "no rule concerns this GPU" not in "\n".join(decision)
    assert (
        decision[0].startswith("  DEFERRED  reset (GpuDirty)") and "nvml, docker unavailable" in decision[1]
    )


def test_get_allocations_with_docker_down_does_not_call_a_row_ledger_only() -> None:
    view = docker_went_down()
    text = run_get("allocations", view, GetOptions())[0]
    assert text.splitlines()[1].split()[2:] == ["bob-train/bob", "unknown", "unknown"], text
    (item,) = json.loads(run_get("allocations", view, GetOptions(output="json"))[0])["items"]
    assert (item["holders"], item["verdict"]) == (None, "unknown")
