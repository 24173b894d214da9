"""``get allocations`` and ``get gpus`` judge each device by what concerns that device.

A container's correct ledger row was called ``leaked`` because the plan released another, stale row
of the same container: the verdict took every plan item about the row's container, whatever GPU
it named. ``get gpus`` called a device ``free`` while a live container's compute process ran on it
(one the container was not given, or a MIG device of a ``--gpus all`` container).

NVML failing to list a device's processes (or NVML down altogether) made the JSON say there were
none: ``get gpus -o json`` ``processes: []`` where the table said ``unknown`` (and, for one device,
the table ``0``), ``get processes -o json`` ``items: []``, ``describe gpu`` of a MIG device and
``describe user`` ``<none>``, ``get processes PID`` "no GPU process with pid", and a GPU in MIG mode
``free`` while one of its devices could not be listed.

With Docker unreachable the containers cannot be listed: ``get gpus`` showed no holders (``-``,
``holders: []``), ``describe gpu`` ``Holders: <none>`` and "not acted on: no rule concerns this
GPU itself", ``get allocations`` called a ledger row ``ledger-only`` (no container backs it). What
NVML says is still shown; what depends on the containers is ``unknown``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
import yaml

from controller.cli.describe import describe_gpu, describe_user
from controller.cli.errors import CliError
from controller.cli.gather import domain_notes
from controller.cli.get import GetOptions, empty_message, run_get
from controller.cli.view import View
from controller.plan.types import ActionKind
from controller.snapshot import ContainerObs, Domain, GpuUtilReading, GpuUuid
from tests.fixtures import builders as b
from tests.fixtures.nvml import NVML_ERROR_UNKNOWN, FakeNvml


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


# --- NVML down: the processes are unknown, not none -------------------------------------------------

UNLISTED_0 = "nvmlDeviceGetComputeRunningProcesses(GPU 0) failed: Unknown Error (NVML_ERROR_UNKNOWN)"
UNLISTED_3_1 = "nvmlDeviceGetComputeRunningProcesses(MIG 3:1) failed: Unknown Error (NVML_ERROR_UNKNOWN)"
NVML_DOWN = "NVML unavailable: nvml unavailable (test)"


def nvml_failed(*, whole: bool) -> View:
    """bob's container runs pid 4242 on GPU 0, carol runs pid 5151 on GPU 2 outside any container,
    and GPU 3 is in MIG mode, no device held. Then NVML fails: altogether (the observer lists no GPU
    and no process, and reads every GPU container's utilization as unknown), or only in listing the
    processes of GPU 0 and of MIG device 3.1 (their lists are then empty, with why)."""
    t, later = b.T0, b.at(minutes=5)
    passes = b.Passes(b.desired(b.policy()))

    def train(at: datetime, util: GpuUtilReading) -> ContainerObs:
        sig = b.signals(at).model_copy(update={"gpu_util": (util,)})
        return b.running("bob-train", owner="bob", gpus=[b.GPU0], started_at=b.ago(hours=2), sig=sig)

    read = GpuUtilReading(uuid=GpuUuid(b.GPU0), percent=0.0)
    held = b.process(4242, b.GPU0, container_id=b.cid("bob-train"), container_exists=True, user="bob")
    carols = b.process(5151, b.GPU2, user="carol", uid=1003, cmdline="python eval.py")
    gpus = [b.gpu(0, processes=(4242,)), b.gpu(1), b.gpu(2, processes=(5151,)), b.gpu(3, mig_slots=2)]
    passes.run(b.snapshot(observed_at=t, containers=[train(t, read)], gpus=gpus, processes=[held, carols]))
    if whole:
        unread = GpuUtilReading(uuid=GpuUuid(b.GPU0), unknown_reason=NVML_DOWN)
        snap = b.snapshot(observed_at=later, containers=[train(later, unread)], down=(Domain.NVML,))
    else:
        g3 = gpus[3]
        migs = (g3.mig_devices[0], g3.mig_devices[1].model_copy(update={"processes_unknown": UNLISTED_3_1}))
        gpus[0] = gpus[0].model_copy(update={"processes": (), "processes_unknown": UNLISTED_0})
        gpus[3] = g3.model_copy(update={"mig_devices": migs})
        snap = b.snapshot(observed_at=later, containers=[train(later, read)], gpus=gpus, processes=[carols])
    p = passes.run(snap)
    return View(snapshot=snap, now=p.evaluated_at, plan=p, memory=p.memory, desired=passes.desired)


def test_get_gpus_with_nvml_down_has_null_processes_and_why_in_every_output() -> None:
    view = nvml_failed(whole=True)
    (row,) = gpu_rows(view).values()
    assert row[-2:] == ["unknown", "unavailable"], row  # PROCESSES, STATE: as before
    for output in ("json", "yaml"):
        text = run_get("gpus", view, GetOptions(output=output))[0]
        (item,) = (json.loads(text) if output == "json" else yaml.safe_load(text))["items"]
        assert (item["uuid"], item["holders"], item["state"]) == (b.GPU0, ["bob-train"], "unavailable")
        assert (item["processes"], item["processes_unknown"]) == (None, NVML_DOWN), output
        assert (item["utilization_percent"], item["utilization_unknown"]) == (None, NVML_DOWN)
        assert (item["memory_used_bytes"], item["memory_total_bytes"]) == (None, None)


def test_get_gpus_with_one_device_unlisted_says_its_processes_are_unknown() -> None:
    view = nvml_failed(whole=False)
    rows = gpu_rows(view)  # PROCESSES, STATE from the right
    assert {slot: tuple(r[-2:]) for slot, r in rows.items()} == {
        "0": ("unknown", "idle-held"),
        "1": ("0", "free"),
        "2": ("1", "dirty"),
        "3": ("0", "unknown"),  # one device it cannot tell about, none in use: not free
        "3.0": ("0", "free"),
        "3.1": ("unknown", "unknown"),
    }, rows
    items = json.loads(run_get("gpus", view, GetOptions(output="json"))[0])["items"]
    assert [(i["slot"], i["processes"], i["processes_unknown"]) for i in items] == [
        ("0", None, UNLISTED_0),
        ("1", [], None),
        ("2", [5151], None),
        ("3", [], None),  # in MIG mode its processes are on its devices
        ("3.0", [], None),
        ("3.1", None, UNLISTED_3_1),
    ]


def test_get_processes_with_nvml_down_is_null_not_an_empty_list() -> None:
    view = nvml_failed(whole=True)
    for output in ("json", "yaml"):
        text = run_get("processes", view, GetOptions(output=output))[0]
        data = json.loads(text) if output == "json" else yaml.safe_load(text)
        assert data["items"] is None, output
        assert data["processes_unknown"] == [{"gpu": None, "uuid": None, "reason": NVML_DOWN}]
    text, empty = run_get("processes", view, GetOptions())
    assert (text, empty) == ("", True)
    assert empty_message("processes", view, GetOptions()).startswith(
        "No GPU information: NVML is unavailable"
    )
    with pytest.raises(
        CliError, match=f"^whether pid 4242 is a GPU process is unknown: {re.escape(NVML_DOWN)}$"
    ):
        run_get("processes", view, GetOptions(name="4242"))
    with pytest.raises(CliError, match=f"^the GPU processes cannot be listed: {re.escape(NVML_DOWN)}$"):
        run_get("processes", view, GetOptions(output="name"))


def test_get_processes_with_one_device_unlisted_names_it_and_why() -> None:
    view = nvml_failed(whole=False)
    data = json.loads(run_get("processes", view, GetOptions(output="json"))[0])
    assert [i["pid"] for i in data["items"]] == [5151]
    assert data["processes_unknown"] == [
        {"gpu": "0", "uuid": b.GPU0, "reason": UNLISTED_0},
        {"gpu": "3.1", "uuid": b.mig_uuid(3, 1), "reason": UNLISTED_3_1},
    ]
    # The table has no row for what could not be listed: a warning says so (stderr, and JSON notes).
    assert [n for n in domain_notes(view.snapshot) if "processes" in n] == [
        f"GPU processes unknown on GPU 0: {UNLISTED_0}",
        f"GPU processes unknown on MIG device 3.1: {UNLISTED_3_1}",
    ]
    text, empty = run_get("processes", view, GetOptions(owner="bob"))
    assert (text, empty) == ("", True)
    assert empty_message("processes", view, GetOptions()) == (
        "No GPU compute processes on the devices NVML listed; the processes of the others are unknown "
        "(see the warnings above)."
    )
    with pytest.raises(CliError, match=r"^whether pid 4242 is a GPU process is unknown: NVML could not list"):
        run_get("processes", view, GetOptions(name="4242"))
    assert run_get("processes", view, GetOptions(name="5151"))[0].splitlines()[1].split()[0] == "5151"


def test_describe_gpu_with_a_device_unlisted_says_its_processes_are_unknown() -> None:
    view = nvml_failed(whole=False)
    assert section(describe_gpu(view, "0"), "Processes", "Ledger") == [f"  unknown ({UNLISTED_0})"]
    assert section(describe_gpu(view, "3.1"), "Processes", "Ledger") == [f"  unknown ({UNLISTED_3_1})"]
    # A GPU in MIG mode: its processes are those of its MIG devices, one of which is unlisted.
    assert section(describe_gpu(view, "3"), "Processes", "Ledger") == [
        "  <none> on the devices NVML listed",
        f"  unknown on MIG device 3.1: {UNLISTED_3_1}",
    ]
    assert section(describe_gpu(view, "2"), "Processes", "Ledger")[1].split()[:3] == [
        "5151",
        "2.0Gi",
        "carol",
    ]


def test_describe_user_with_nvml_down_says_their_gpu_processes_are_unknown() -> None:
    down = describe_user(nvml_failed(whole=True), "bob")
    assert section(down, "GPU processes", "Ledger") == [f"  unknown ({NVML_DOWN})"]
    partial = describe_user(nvml_failed(whole=False), "bob")
    assert section(partial, "GPU processes", "Ledger") == [
        "  <none> on the devices NVML listed",
        f"  unknown on GPU 0: {UNLISTED_0}",
        f"  unknown on MIG device 3.1: {UNLISTED_3_1}",
    ]
    carol = describe_user(nvml_failed(whole=False), "carol")
    lines = section(carol, "GPU processes", "Ledger")
    assert lines[1].split()[:2] == ["5151", "2"] and lines[2:] == [
        f"  unknown on GPU 0: {UNLISTED_0}",
        f"  unknown on MIG device 3.1: {UNLISTED_3_1}",
    ], lines


def test_get_containers_with_nvml_down_has_unknown_gpu_utilization_and_idleness() -> None:
    """The container views read NVML through the container's readings: unknown, never 0 or idle."""
    view = nvml_failed(whole=True)
    text = run_get("containers", view, GetOptions(output="wide"))[0]
    header, row = text.splitlines()

    def cell(column: str) -> str:  # cells may hold spaces ("warn in 15h"): cut at the header's offsets
        return row[header.index(column) :].split("   ")[0].strip()

    assert (cell("IDLE"), cell("GPU-UTIL")) == ("unknown", "unknown"), text
    (item,) = json.loads(run_get("containers", view, GetOptions(output="json"))[0])["items"]
    assert item["idle"] == {"state": "unknown", "since": None}
    assert (item["signals"]["gpu_util_percent"], item["signals"]["gpu_util_unknown"]) == (None, NVML_DOWN)


# --- duplicate holders ------------------------------------------------------------------------

MIG10 = b.mig_uuid(1, 0)


def allocation_verdict(containers: list[ContainerObs], rows: list, gpus: tuple, passes: int = 1) -> str:  # type: ignore[type-arg]
    snap = b.snapshot(containers=containers, gpus=gpus, ledger=b.ledger(*rows))
    runs = b.Passes(b.desired(b.policy()))
    for _ in range(passes):  # a second pass: the duplicate alert was delivered (no longer an action)
        p = runs.run(snap)
    view = View(snapshot=snap, now=b.T0, plan=p, memory=p.memory, desired=runs.desired)
    (item,) = json.loads(run_get("allocations", view, GetOptions(output="json"))[0])["items"]
    duplicate = any(a.reason.value == "DuplicateGpuHolder" for r in runs.history for a in r.actions)
    assert (item["verdict"] == "duplicate") == duplicate, (item, b.summary(p))
    return str(item["verdict"])


def test_duplicate_is_what_the_planner_alerts_on_two_running_holders_of_one_full_gpu() -> None:
    # The planner's DuplicateGpuHolder: two running containers naming one full GPU (MIG devices are
    # shared by design). get allocations called any device with two holders of any state a duplicate.
    busy = b.signals(b.T0, gpu_pct={b.GPU0: 90.0})
    mig = b.signals(b.T0, gpu_pct={MIG10: None})
    shared = [b.running(n, gpus=[b.ref(MIG10, parent=b.GPU1)], sig=mig) for n in ("m1", "m2")]
    rows = [b.ledger_entry("m1", MIG10), b.ledger_entry("m2", MIG10)]
    assert allocation_verdict(shared, rows, (b.gpu(1, mig_slots=1),)) == "ok"
    # A container stopped 5 minutes ago (in its GPU hold) and the new one given its GPU: the old one
    # is a holder the ledger lacks, not a second user of the GPU.
    old = b.exited("old", gpus=[b.GPU0], finished_at=b.ago(minutes=5))
    new = b.running("new", gpus=[b.GPU0], sig=busy)
    row = b.ledger_entry("new", b.GPU0, allocated_at=b.ago(minutes=3))
    assert allocation_verdict([old, new], [row], (b.gpu(0),)) == "unrecorded"
    # Two running holders of GPU 0: the planner alerts, and so it stays once the alert is delivered.
    both = [b.running(n, gpus=[b.GPU0], sig=busy) for n in ("r1", "r2")]
    for passes in (1, 2):
        assert allocation_verdict(both, [b.ledger_entry("r1", b.GPU0)], (b.gpu(0),), passes) == "duplicate"


def test_describe_gpu_with_a_uuid_prefix_two_devices_share_says_so_not_not_found() -> None:
    gpus = (
        b.gpu(0, "GPU-0000aaaa-0000-0000-0000-000000000000"),
        b.gpu(1, "GPU-0000bbbb-0000-0000-0000-000000000000"),
    )
    snap = b.snapshot(gpus=gpus)
    view = View(snapshot=snap, now=b.T0)
    with pytest.raises(CliError) as err:
        describe_gpu(view, "GPU-0000")
    assert "not found" not in str(err.value) and "2 devices" in str(err.value), err.value
    assert describe_gpu(view, "GPU-0000b").startswith("Index:")  # a unique prefix still finds it


def test_describe_gpu_in_mig_mode_does_not_say_none_of_what_its_devices_hold() -> None:
    # GPU 1 is in MIG mode: bob-notebook holds 1.0, carol-old 1.1, and the ledger has carol's row on
    # 1.1. Its Processes and Decision cover its devices; its Holders and Ledger said "<none>" and
    # "<no entry>" on a GPU the same page calls held.
    from tests.unit import cli_world as w

    text = describe_gpu(w.view(), "1")
    holders = text.split("Holders:")[1].split("Processes:")[0]
    ledger = text.split("Ledger:")[1].split("Decision:")[0]
    assert "<none>\n" not in holders.replace(" ", ""), holders
    assert "MIG devices" in holders, holders
    assert "<no entry>" not in ledger and "carol-old (carol)" in ledger and "1.1" in ledger, ledger
    # A MIG device itself: its own rows and holders only.
    assert "carol-old (carol)" not in describe_gpu(w.view(), "1.0").split("Ledger:")[1]


def test_describe_gpu_still_names_an_open_alert_once_it_was_delivered() -> None:
    # Two running holders of GPU 0: the first pass alerts DuplicateGpuHolder; the next passes raise
    # it again as delivered (plan.delivered_alerts, open: get alerts lists it) without proposing it.
    # describe gpu then said "not acted on: no rule concerns this GPU itself".
    runs = b.Passes(b.desired(b.policy(max_runtime_s=None)))
    for i in range(2):
        t = b.at(seconds=30 * i)
        both = [
            b.running(n, gpus=[b.GPU0], sig=b.signals(t, cpu_usage_ns=int(30e9 * i), gpu_pct={b.GPU0: 90.0}))
            for n in ("r1", "r2")
        ]
        snap = b.snapshot(observed_at=t, containers=both, gpus=[b.gpu(0, util_pct=90.0)])
        p = runs.run(snap)
    assert not p.actions and [a.reason.value for a in p.delivered_alerts] == ["DuplicateGpuHolder"]
    view = View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=runs.desired)
    decision = describe_gpu(view, "0").split("Decision:")[1].split("Events:")[0]
    assert "no rule concerns" not in decision, decision
    assert "OPEN" in decision and "AlertAdmin (DuplicateGpuHolder)" in decision and "delivered" in decision, (
        decision
    )


def test_get_gpus_o_name_with_nvml_down_names_each_gpu_by_what_is_known_of_it() -> None:
    # With NVML down a GPU's index is unknown: -o name printed "gpu/?" for each, which names none
    # (and every one alike). Its UUID, from the containers' references, is what describe gpu takes.
    view = nvml_failed(whole=True)
    names = run_get("gpus", view, GetOptions(output="name"))[0].splitlines()
    assert names == [f"gpu/{b.GPU0}"], names
    assert describe_gpu(view, names[0].removeprefix("gpu/")).startswith("GPU:")


# --- get gpus: a GPU a paused container holds is not idle-held --------------------------------


def paused_holders() -> View:
    """GPU 0: paused-job alone; GPU 1: paused-job's MIG device 1.0 and stopped's 1.1; GPU 2:
    paused-job beside a running holder idle for long; GPU 3: that running holder alone."""
    from controller.snapshot import ContainerState

    desired = b.desired(b.policy())
    passes = b.Passes(desired)
    mig10, mig11 = b.mig_uuid(1, 0), b.mig_uuid(1, 1)
    for i in range(4):
        t = b.at(seconds=30 * i)
        idle = b.signals(t, cpu_usage_ns=0, gpu_pct={b.GPU2: 0.0, b.GPU3: 0.0})
        containers = [
            b.container(
                "paused-job", state=ContainerState.PAUSED, gpus=[b.GPU0, b.ref(mig10, parent=b.GPU1)]
            ),
            b.exited("stopped", gpus=[b.ref(mig11, parent=b.GPU1)], finished_at=b.ago(minutes=5)),
            b.container("paused-too", state=ContainerState.PAUSED, gpus=[b.GPU2]),
            b.running("idler", gpus=[b.GPU2, b.GPU3], started_at=b.ago(hours=3), sig=idle),
        ]
        gpus = (b.gpu(0), b.gpu(1, mig_slots=2), b.gpu(2, util_pct=0.0), b.gpu(3, util_pct=0.0))
        snap = b.snapshot(observed_at=t, containers=containers, gpus=gpus)
        p = passes.run(snap)
    return View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=desired)


def test_a_gpu_a_paused_container_holds_is_paused_held_not_idle_held() -> None:
    # A paused holder accrues no idle time: "idle-held" (every holder stopped or idle) told an admin
    # the idle timeout would give the GPU back, which it never does while the container is paused.
    view = paused_holders()
    items = json.loads(run_get("containers", view, GetOptions(output="json", show_all=True))[0])["items"]
    assert [i["idle"]["state"] for i in items if i["name"] == "idler"] == ["idle"], items
    states = gpu_states(view)
    assert states["0"] == "paused-held", states
    assert states["1.0"] == "paused-held" and states["1.1"] == "idle-held" and states["1"] == "paused-held"
    assert states["2"] == "paused-held", states
    assert states["3"] == "idle-held", states
    rows = gpu_rows(view)
    assert rows["0"][-1] == "paused-held" and rows["3"][-1] == "idle-held", rows


def test_a_gpu_a_restarting_container_holds_is_restarting_held_not_idle_held() -> None:
    # A container in a restart loop runs no timer (each start begins its clocks again, no stop hold
    # counts while it restarts): "idle-held" told an admin a timer would give the GPU back.
    from controller.snapshot import ContainerState

    desired = b.desired(b.policy())
    passes = b.Passes(desired)
    for i in range(4):
        t = b.at(seconds=30 * i)
        idle = b.signals(t, cpu_usage_ns=0, gpu_pct={b.GPU1: 0.0})
        containers = [
            b.container("looping", state=ContainerState.RESTARTING, gpus=[b.GPU0, b.GPU1]),
            b.container("paused-job", state=ContainerState.PAUSED, gpus=[b.GPU1]),
            b.running("idler", gpus=[b.GPU1, b.GPU2], started_at=b.ago(hours=3), sig=idle),
        ]
        gpus = (b.gpu(0), b.gpu(1, util_pct=0.0), b.gpu(2, util_pct=0.0))
        snap = b.snapshot(observed_at=t, containers=containers, gpus=gpus)
        p = passes.run(snap)
    view = View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=desired)
    assert gpu_states(view) == {"0": "restarting-held", "1": "paused-held", "2": "idle-held"}
    assert gpu_rows(view)["0"][-1] == "restarting-held"


def test_two_running_holders_the_ledger_lacks_are_a_duplicate_after_the_alert_is_delivered_too() -> None:
    # With no ledger row, the duplicate alert's first pass said "duplicate" and every pass after its
    # delivery "unrecorded": the check for two running holders came after the ledger's side.
    busy = b.signals(b.T0, gpu_pct={b.GPU0: 90.0})
    both = [b.running(n, gpus=[b.GPU0], sig=busy) for n in ("r1", "r2")]
    for passes in (1, 2, 3):
        assert allocation_verdict(both, [], (b.gpu(0),), passes) == "duplicate", passes


def _observed_view() -> View:
    """What the real NVML observer reads from the stand-in now, as a view at T0."""
    from controller.observe.nvml import NvmlObserver

    observer = NvmlObserver(timeout_s=10.0)
    try:
        observed, health = observer.observe()
    finally:
        observer.close()
    assert health.ok, health.error
    return View(snapshot=b.snapshot(observed_at=b.T0, gpus=list(observed)), now=b.T0)


def test_get_gpus_json_says_why_a_gpu_s_memory_in_use_is_unknown(fake_nvml: FakeNvml) -> None:
    # NVML answers, but the memory query fails for GPU 1 and for MIG device 2.0: their
    # memory_used_bytes is null, and says why, as utilization_unknown and processes_unknown do.
    gpus = fake_nvml.set_gpus(3)
    mig = fake_nvml.add_mig(2, profile="3g.40gb")
    fake_nvml.fail_call("nvmlDeviceGetMemoryInfo", NVML_ERROR_UNKNOWN, device_uuid=gpus[1].uuid)
    fake_nvml.fail_call("nvmlDeviceGetMemoryInfo", NVML_ERROR_UNKNOWN, device_uuid=mig.uuid)
    fake_nvml.write()
    view = _observed_view()
    items = {i["slot"]: i for i in json.loads(run_get("gpus", view, GetOptions(output="json"))[0])["items"]}
    assert (items["0"]["memory_used_bytes"], items["0"]["memory_used_unknown"]) == (0, None)
    for slot in ("1", "2.0"):
        assert items[slot]["memory_used_bytes"] is None, items[slot]
        why = items[slot]["memory_used_unknown"]
        assert why is not None and "nvmlDeviceGetMemoryInfo" in why and "NVML_ERROR_UNKNOWN" in why, why
    # NVML down: every GPU's memory is unknown for that reason.
    down = nvml_failed(whole=True)
    (item,) = json.loads(run_get("gpus", down, GetOptions(output="json"))[0])["items"]
    assert (item["memory_used_bytes"], item["memory_used_unknown"]) == (None, NVML_DOWN)


def test_describe_gpu_says_why_a_mig_device_s_memory_is_unknown(fake_nvml: FakeNvml) -> None:
    fake_nvml.set_gpus(1)
    mig = fake_nvml.add_mig(0, profile="3g.40gb")
    fake_nvml.fail_call("nvmlDeviceGetMemoryInfo", NVML_ERROR_UNKNOWN, device_uuid=mig.uuid)
    fake_nvml.write()
    view = _observed_view()
    text = describe_gpu(view, "0.0")
    line = next(x for x in text.splitlines() if x.startswith("Memory:"))
    assert line.split(None, 1)[1].startswith("unknown used of unknown (nvmlDeviceGetMemoryInfo"), line
    assert "NVML_ERROR_UNKNOWN" in line, line
