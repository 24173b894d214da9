"""Ledger rows against the real engine: a row stays while its container holds the GPU.

Case 5 of the safety review, end to end (real Docker engine, stand-in NVML, the real planner):
a container given a GPU through CDI (``--device nvidia.com/gpu=0``) and a container renamed after
its row was written must keep their rows. Other engineers' containers may share this engine, so
the assertions look only at the rows these tests write.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker.types
import pytest

from controller.memory import ControllerMemory
from controller.observe import ObserveConfig, observe_host
from controller.observe.nvml import NvmlObserver
from controller.plan.planner import plan
from controller.plan.types import Plan
from controller.snapshot import ContainerObs, GpuRefSource, Snapshot
from tests.fixtures import builders as b
from tests.fixtures.docker_host import ContainerFactory
from tests.fixtures.nvml import FakeNvml, gpu_uuid, mig_uuid

pytestmark = pytest.mark.docker


@pytest.fixture
def two_gpus_one_mig(fake_nvml: FakeNvml) -> FakeNvml:
    fake_nvml.set_gpus(2)
    fake_nvml.add_mig(1, profile="3g.40gb")  # 1:0
    fake_nvml.add_mig(1, profile="2g.20gb")  # 1:1
    fake_nvml.write()
    return fake_nvml


def cdi(*names: str) -> list[Any]:
    return [docker.types.DeviceRequest(driver="cdi", device_ids=list(names))]


def write_ledger(path: Path, *rows: tuple[str, str]) -> None:
    at = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    allocations = [{"gpu": gpu, "container": name, "user": "alice", "allocated_at": at} for name, gpu in rows]
    path.write_text(json.dumps({"version": 1, "allocations": allocations}))


def observe_and_plan(tmp_path: Path) -> tuple[Snapshot, Plan]:
    snap = observe_host(ObserveConfig(ledger_path=tmp_path / "ledger.json"), nvml=NvmlObserver(timeout_s=10))
    return snap, plan(snap, b.desired(), ControllerMemory(), snap.observed_at)


def ledger_items(p: Plan, row_container: str) -> list[tuple[str, str]]:
    """(ReleaseAllocation | deferral why, message) for the rows that name ``row_container``."""
    out = [
        (a.kind.value, a.message)
        for a in p.actions
        if a.target.ledger_entry and a.target.ledger_entry["container"] == row_container
    ]
    out += [
        (d.why.value, d.message)
        for d in p.deferred
        if d.rule.value == "LeakedAllocation"
        and d.target.ledger_entry
        and d.target.ledger_entry["container"] == row_container
    ]
    return out


def find(snap: Snapshot, container: Any) -> ContainerObs:
    found = snap.container(container.id)
    assert found is not None
    return found


def test_cdi_device_requests_hold_their_gpus_and_rows(
    make_container: ContainerFactory, two_gpus_one_mig: FakeNvml, tmp_path: Path, docker_client: Any
) -> None:
    # The engine accepts a CDI request at create time without a CDI spec (it is only resolved at
    # start), so the recorded inspect data is the real one.
    by_index = make_container(start=False, device_requests=cdi("nvidia.com/gpu=0"))
    every = make_container(start=False, device_requests=cdi("nvidia.com/gpu=all"))
    by_uuid = make_container(start=False, device_requests=cdi(f"nvidia.com/gpu={gpu_uuid(1)}"))
    mig = make_container(start=False, device_requests=cdi("nvidia.com/mig=1:1"))
    recorded = docker_client.api.inspect_container(by_index.id)["HostConfig"]["DeviceRequests"]
    assert [(r["Driver"], r["DeviceIDs"]) for r in recorded] == [("cdi", ["nvidia.com/gpu=0"])]

    write_ledger(
        tmp_path / "ledger.json",
        (by_index.name, gpu_uuid(0)),
        (every.name, "1"),
        (by_uuid.name, gpu_uuid(1)),
        (mig.name, "1.1"),
    )
    snap, p = observe_and_plan(tmp_path)
    assert [(r.raw, r.source, r.uuid) for r in find(snap, by_index).gpu_refs] == [
        ("0", GpuRefSource.CDI_DEVICE, gpu_uuid(0))
    ]
    assert find(snap, every).all_gpus
    assert [r.uuid for r in find(snap, by_uuid).gpu_refs] == [gpu_uuid(1)]
    assert [r.uuid for r in find(snap, mig).gpu_refs] == [mig_uuid(1, 1)]
    for c in (by_index, every, by_uuid, mig):
        assert ledger_items(p, c.name) == [], c.name


def test_a_renamed_container_keeps_its_row(
    make_container: ContainerFactory, two_gpus_one_mig: FakeNvml, tmp_path: Path
) -> None:
    request = [docker.types.DeviceRequest(driver="nvidia", device_ids=[gpu_uuid(0)], capabilities=[["gpu"]])]
    train = make_container(start=False, device_requests=request)
    old_name = train.name
    gone_id = "0" * 63 + "1"  # a row naming an id: that container is gone for certain
    write_ledger(tmp_path / "ledger.json", (old_name, gpu_uuid(0)), (gone_id, gpu_uuid(0)))
    train.rename(f"{old_name}-old")

    _, p = observe_and_plan(tmp_path)
    ((why, message),) = ledger_items(p, old_name)
    assert why == "UnknownSignal" and "renamed" in message and f"{old_name}-old" in message
    assert [k for k, _ in ledger_items(p, gone_id)] == ["ReleaseAllocation"]


def test_a_gpus_request_by_nvidia_capabilities_holds_its_gpu_and_row(
    make_container: ContainerFactory, two_gpus_one_mig: FakeNvml, tmp_path: Path, docker_client: Any
) -> None:
    """A device request with no driver is served by the engine's nvidia driver whenever one of its
    capability groups lies within that driver's capabilities (``gpu``, ``nvidia``, ``compute``,
    ``utility``, ...), not only when the group names ``gpu``: compose's ``capabilities: [compute,
    utility]`` with ``device_ids: ["0"]`` is given GPU 0. Such a container once looked GPU-less, and
    its ledger row was released while it held the GPU."""
    by_caps = make_container(
        start=False,
        device_requests=[docker.types.DeviceRequest(device_ids=["0"], capabilities=[["compute", "utility"]])],
    )
    by_vendor = make_container(
        start=False,
        device_requests=[docker.types.DeviceRequest(device_ids=[gpu_uuid(1)], capabilities=[["nvidia"]])],
    )
    recorded = docker_client.api.inspect_container(by_caps.id)["HostConfig"]["DeviceRequests"]
    assert [(r["Driver"], r["DeviceIDs"], r["Capabilities"]) for r in recorded] == [
        ("", ["0"], [["compute", "utility"]])
    ]
    write_ledger(tmp_path / "ledger.json", (by_caps.id, gpu_uuid(0)), (by_vendor.id, gpu_uuid(1)))

    snap, p = observe_and_plan(tmp_path)
    assert [(r.source, r.uuid) for r in find(snap, by_caps).gpu_refs] == [
        (GpuRefSource.DEVICE_REQUEST, gpu_uuid(0))
    ]
    assert [(r.source, r.uuid) for r in find(snap, by_vendor).gpu_refs] == [
        (GpuRefSource.DEVICE_REQUEST, gpu_uuid(1))
    ]
    assert ledger_items(p, by_caps.id) == [] and ledger_items(p, by_vendor.id) == []
