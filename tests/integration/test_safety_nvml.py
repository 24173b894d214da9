"""Issue 11, case 4 and the H200 finding, through the real pynvml and the stand-in NVML.

Real hardware (docs/nvml-real-hardware.md): an idle H200 on driver 580.159.04 reports, with no
process, v1 ``used`` = 644,939,776 bytes (the driver's reservation) and v2 ``reserved`` =
644,939,776, ``used`` = 0. The observer reads v2; the planner must never take an idle GPU for a
leak, nor a GPU whose process list failed for one without processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pynvml
import pytest

from controller.observe.nvml import NvmlObserver
from controller.plan.types import Plan
from controller.snapshot import GpuObs
from tests.fixtures import builders as b
from tests.fixtures.nvml import (
    GIB,
    H200_MEM_BYTES,
    H200_NAME,
    H200_RESERVED_BYTES,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNKNOWN,
    FakeNvml,
)


@pytest.fixture
def observer(fake_nvml: FakeNvml) -> Iterator[NvmlObserver]:
    obs = NvmlObserver(timeout_s=10.0)
    yield obs
    obs.close()


def idle_h200(fake_nvml: FakeNvml) -> str:
    (gpu,) = fake_nvml.set_gpus(1, name=H200_NAME, mem_total_bytes=H200_MEM_BYTES)
    gpu.mem_reserved_bytes = H200_RESERVED_BYTES
    fake_nvml.write()
    return gpu.uuid


def observe(observer: NvmlObserver) -> tuple[GpuObs, ...]:
    gpus, health = observer.observe()
    assert health.ok, health.error
    return gpus


def plan_passes(observer: NvmlObserver, passes: int = 3) -> list[Plan]:
    runner = b.Passes(b.desired(b.policy()))
    return [
        runner.run(b.snapshot(observed_at=b.at(seconds=30 * i), gpus=observe(observer)))
        for i in range(passes)
    ]


def test_the_stand_in_reports_the_h200_reservation_as_the_real_driver_does(fake_nvml: FakeNvml) -> None:
    uuid = idle_h200(fake_nvml)
    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        v1 = pynvml.nvmlDeviceGetMemoryInfo(handle)
        v2 = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
    finally:
        pynvml.nvmlShutdown()
    assert (v1.used, v1.total) == (644_939_776, H200_MEM_BYTES)
    assert (v2.used, v2.reserved, v2.total) == (0, 644_939_776, H200_MEM_BYTES)
    assert v2.free == v1.free == H200_MEM_BYTES - 644_939_776


def test_the_observer_reads_memory_v2(fake_nvml: FakeNvml, observer: NvmlObserver) -> None:
    idle_h200(fake_nvml)
    (gpu,) = observe(observer)
    assert (gpu.memory_used_bytes, gpu.memory_reserved_bytes, gpu.memory_total_bytes) == (
        0,
        644_939_776,
        H200_MEM_BYTES,
    )
    assert gpu.memory_used_includes_reserved is False


def test_an_idle_h200_is_never_marked_dirty_nor_reset(fake_nvml: FakeNvml, observer: NvmlObserver) -> None:
    idle_h200(fake_nvml)
    plans = plan_passes(observer)
    assert [a.kind.value for p in plans for a in p.actions] == []
    assert plans[-1].memory.dirty_gpus == {}
    assert plans[-1].deferred == ()


def test_without_v2_the_observer_reads_v1_and_says_so(fake_nvml: FakeNvml, observer: NvmlObserver) -> None:
    uuid = idle_h200(fake_nvml)
    fake_nvml.fail_call("nvmlDeviceGetMemoryInfo_v2", NVML_ERROR_NOT_SUPPORTED, device_uuid=uuid)
    fake_nvml.write()
    (gpu,) = observe(observer)
    assert (gpu.memory_used_bytes, gpu.memory_reserved_bytes) == (644_939_776, None)
    assert gpu.memory_used_includes_reserved is True
    # v1 alone: the reservation is not taken for a leak ...
    plans = plan_passes(observer)
    assert [a.kind.value for p in plans for a in p.actions] == []
    # ... but a leak well above it still is.
    fake_nvml.gpu(0).mem_used_bytes = 8 * GIB
    fake_nvml.write()
    assert [a.kind.value for p in plan_passes(observer, 2) for a in p.actions] == ["ResetGpu"]


def test_memory_in_use_and_a_failed_process_list_is_not_reset(
    fake_nvml: FakeNvml, observer: NvmlObserver
) -> None:
    """A training job holds 40 GiB; listing its processes fails. Before the fix: ResetGpu."""
    uuid = idle_h200(fake_nvml)
    fake_nvml.gpu(0).mem_used_bytes = 40 * GIB
    fake_nvml.add_process(uuid, pid=4242, used_mem_bytes=40 * GIB)
    fake_nvml.fail_call("nvmlDeviceGetComputeRunningProcesses", NVML_ERROR_UNKNOWN, device_uuid=uuid)
    fake_nvml.write()
    (gpu,) = observe(observer)
    assert gpu.processes == () and gpu.processes_unknown
    plans = plan_passes(observer, 4)
    assert [a.kind.value for p in plans for a in p.actions] == []
    assert all(p.memory.dirty_gpus == {} for p in plans)
    assert ("GpuDirty", "UnknownSignal", uuid) in b.deferred_summary(plans[-1])


def test_a_gpu_only_a_graphics_process_uses_is_not_dirty_nor_reset(
    fake_nvml: FakeNvml, observer: NvmlObserver
) -> None:
    """An X server or an EGL/Vulkan renderer holds 6 GiB; it is on the graphics list only. Read
    from the compute list alone, the GPU had memory in use and no process: dirty, then ResetGpu."""
    uuid = idle_h200(fake_nvml)
    fake_nvml.gpu(0).mem_used_bytes = 6 * GIB
    fake_nvml.add_process(uuid, pid=1717, used_mem_bytes=6 * GIB, graphics=True)
    fake_nvml.write()
    (gpu,) = observe(observer)
    assert [p.pid for p in gpu.processes] == [1717] and gpu.processes_unknown is None
    plans = plan_passes(observer, 4)
    assert [a.kind.value for p in plans for a in p.actions] == []
    assert all(p.memory.dirty_gpus == {} for p in plans)


def test_memory_in_use_and_a_failed_graphics_process_list_is_not_reset(
    fake_nvml: FakeNvml, observer: NvmlObserver
) -> None:
    uuid = idle_h200(fake_nvml)
    fake_nvml.gpu(0).mem_used_bytes = 6 * GIB
    fake_nvml.add_process(uuid, pid=1717, used_mem_bytes=6 * GIB, graphics=True)
    fake_nvml.fail_call("nvmlDeviceGetGraphicsRunningProcesses", NVML_ERROR_UNKNOWN, device_uuid=uuid)
    fake_nvml.write()
    (gpu,) = observe(observer)
    assert gpu.processes == ()
    assert gpu.processes_unknown is not None
    assert gpu.processes_unknown.startswith("nvmlDeviceGetGraphicsRunningProcesses(")
    plans = plan_passes(observer, 4)
    assert [a.kind.value for p in plans for a in p.actions] == []
    assert ("GpuDirty", "UnknownSignal", uuid) in b.deferred_summary(plans[-1])
