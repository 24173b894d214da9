"""NvmlObserver through the real pynvml and the stand-in libnvidia-ml.so.1 (tests/nvml_stub)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pynvml
import pytest

from controller.observe.nvml import NvmlObserver, UtilizationUnknown
from controller.snapshot import Domain, GpuObs, NvmlProcess
from tests.fixtures.nvml import (
    GIB,
    MIB,
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNKNOWN,
    REALISTIC_MIG_GPUS,
    FakeNvml,
    gpu_uuid,
    mig_uuid,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def observer(fake_nvml: FakeNvml) -> Iterator[NvmlObserver]:
    obs = NvmlObserver(timeout_s=10.0)
    yield obs
    obs.close()


def observe_ok(observer: NvmlObserver) -> tuple[GpuObs, ...]:
    gpus, health = observer.observe()
    assert health.domain == Domain.NVML
    assert health.ok, health.error
    assert health.error is None
    return gpus


def test_full_gpus_report_identity_memory_utilisation_and_processes(
    fake_nvml: FakeNvml, observer: NvmlObserver
) -> None:
    gpus = fake_nvml.set_gpus(2, name="NVIDIA H100 80GB HBM3", mem_total_bytes=80 * GIB)
    gpus[0].mem_used_bytes = 5 * GIB
    gpus[0].util_percent = 87
    gpus[1].util_percent = 0
    fake_nvml.add_process(gpus[0].uuid, pid=4242, used_mem_bytes=3 * GIB)
    fake_nvml.add_process(gpus[0].uuid, pid=4343, used_mem_bytes=None)  # NVML "not available"
    fake_nvml.write()

    first, second = observe_ok(observer)

    assert (first.index, first.uuid, first.name) == (0, gpu_uuid(0), "NVIDIA H100 80GB HBM3")
    assert (first.memory_used_bytes, first.memory_total_bytes) == (5 * GIB, 80 * GIB)
    assert first.utilization_percent == 87.0
    assert first.utilization_unknown is None
    assert not first.mig_enabled and first.mig_devices == ()
    assert first.processes == (
        NvmlProcess(pid=4242, used_memory_bytes=3 * GIB),
        NvmlProcess(pid=4343, used_memory_bytes=None),
    )
    assert first.processes_unknown is None
    # A real 0% is reported as 0, distinct from unknown.
    assert (second.index, second.uuid) == (1, gpu_uuid(1))
    assert second.utilization_percent == 0.0
    assert second.utilization_unknown is None
    assert second.processes == ()
    assert second.processes_unknown is None


def test_mig_gpu_reports_devices_and_unknown_utilisation(fake_nvml: FakeNvml, observer: NvmlObserver) -> None:
    fake_nvml.set_gpus(2)
    big = fake_nvml.add_mig(1, profile="3g.40gb", mig_index=0, gpu_instance_id=2, compute_instance_id=0)
    # Slot 1 left empty: NVML answers NOT_FOUND there and the observer moves on.
    small = fake_nvml.add_mig(1, profile="1g.10gb", mig_index=2, gpu_instance_id=9, mem_used_bytes=700 * MIB)
    fake_nvml.gpu(1).util_percent = 55  # ignored by NVML in MIG mode
    fake_nvml.add_process(small.uuid, pid=5001, used_mem_bytes=600 * MIB)
    fake_nvml.add_process(small.uuid, pid=5002, used_mem_bytes=None)
    fake_nvml.write()

    full, mig = observe_ok(observer)

    assert not full.mig_enabled and full.utilization_percent == 0.0
    assert mig.mig_enabled
    assert mig.utilization_percent is None
    assert mig.utilization_unknown == UtilizationUnknown.MIG_MODE.value
    assert [(d.uuid, d.index) for d in mig.mig_devices] == [(big.uuid, 0), (small.uuid, 2)]
    big_obs, small_obs = mig.mig_devices
    assert (big_obs.gpu_instance_id, big_obs.compute_instance_id) == (2, 0)
    assert (big_obs.memory_total_bytes, big_obs.memory_used_bytes) == (40192 * MIB, 0)
    assert big_obs.processes == ()
    assert (small_obs.gpu_instance_id, small_obs.compute_instance_id) == (9, 0)
    assert (small_obs.memory_total_bytes, small_obs.memory_used_bytes) == (9728 * MIB, 700 * MIB)
    assert small_obs.processes == (
        NvmlProcess(pid=5001, used_memory_bytes=600 * MIB),
        NvmlProcess(pid=5002, used_memory_bytes=None),
    )
    # NVML lists MIG processes on the parent handle too; they must be reported once, on the slice.
    assert mig.processes == ()
    assert mig.processes_unknown is None


def test_mig_enabled_without_devices_is_still_reported(fake_nvml: FakeNvml, observer: NvmlObserver) -> None:
    fake_nvml.set_gpus(1, mig=True)
    fake_nvml.write()

    (gpu,) = observe_ok(observer)

    assert gpu.mig_enabled
    assert gpu.mig_devices == ()
    assert gpu.utilization_percent is None
    assert gpu.utilization_unknown == UtilizationUnknown.MIG_MODE.value


def test_gpu_without_mig_or_utilisation_support(fake_nvml: FakeNvml, observer: NvmlObserver) -> None:
    (gpu,) = fake_nvml.set_gpus(1, name="NVIDIA GeForce RTX 4090", mig=None, util_percent=None)
    fake_nvml.add_process(gpu.uuid, pid=77, used_mem_bytes=GIB)
    fake_nvml.write()

    (obs,) = observe_ok(observer)

    assert not obs.mig_enabled  # nvmlDeviceGetMigMode NOT_SUPPORTED means "no MIG", not a failure
    assert obs.utilization_percent is None
    assert obs.utilization_unknown == UtilizationUnknown.NOT_SUPPORTED.value
    assert obs.processes == (NvmlProcess(pid=77, used_memory_bytes=GIB),)


def test_a_burst_since_the_last_reading_counts_though_the_current_reading_is_zero(
    fake_nvml: FakeNvml, observer: NvmlObserver
) -> None:
    # A job that computes in bursts between data loads: the current reading (the driver's last
    # sample period) said 0 % at pass after pass, and the job looked idle.
    gpus = fake_nvml.set_gpus(2)
    gpus[0].util_percent = 0
    gpus[1].util_percent = 0
    fake_nvml.add_util_samples(gpus[0].uuid, (1_000_000, 0), (1_166_000, 93), (1_333_000, 0))
    fake_nvml.write()

    first, second = observe_ok(observer)
    assert first.utilization_percent == 93.0  # the peak of the buffer
    assert second.utilization_percent == 0.0  # no sample (an idle GPU's buffer runs dry): the reading

    # The next read takes only the samples after those already read: the burst is not counted again.
    fake_nvml.add_util_samples(gpus[0].uuid, (2_000_000, 4), (2_166_000, 2))
    fake_nvml.write()
    first, _ = observe_ok(observer)
    assert first.utilization_percent == 4.0
    # Nothing new: the current reading alone, which a sample never lowers.
    gpus[0].util_percent = 12
    fake_nvml.write()
    first, _ = observe_ok(observer)
    assert first.utilization_percent == 12.0


def test_samples_that_are_not_percentages_or_cannot_be_read_leave_the_current_reading(
    fake_nvml: FakeNvml, observer: NvmlObserver
) -> None:
    gpus = fake_nvml.set_gpus(2)
    gpus[0].util_percent = 7
    gpus[1].util_percent = 9
    fake_nvml.add_util_samples(gpus[0].uuid, (1_000_000, 4_000_000_000))  # a driver's garbage
    fake_nvml.add_util_samples(gpus[1].uuid, (1_000_000, 80))
    fake_nvml.fail_call("nvmlDeviceGetSamples", NVML_ERROR_UNKNOWN, device_uuid=gpus[1].uuid)
    fake_nvml.write()

    first, second = observe_ok(observer)  # a failed sample read is no failed observation

    assert (first.utilization_percent, second.utilization_percent) == (7.0, 9.0)
    assert first.utilization_unknown is None and second.utilization_unknown is None


def test_zero_gpus_is_ok_and_empty(fake_nvml: FakeNvml, observer: NvmlObserver) -> None:
    fake_nvml.set_gpus(0)
    fake_nvml.write()

    gpus, health = observer.observe()

    assert health.ok and health.error is None
    assert gpus == ()


@pytest.mark.parametrize(
    ("init_error", "expected"),
    [
        (NVML_ERROR_DRIVER_NOT_LOADED, "NVML_ERROR_DRIVER_NOT_LOADED"),
        (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "NVML_ERROR_LIB_RM_VERSION_MISMATCH"),
        (None, "NVML_ERROR_DRIVER_NOT_LOADED"),  # no driver state at all
    ],
    ids=["driver-not-loaded", "version-mismatch", "no-driver"],
)
def test_init_failure_is_unavailable_then_recovers(
    fake_nvml: FakeNvml, observer: NvmlObserver, init_error: int | None, expected: str
) -> None:
    fake_nvml.set_gpus(2)
    if init_error is None:
        fake_nvml.remove_state_file()
    else:
        fake_nvml.fail_init(init_error)
        fake_nvml.write()

    gpus, health = observer.observe()

    assert not health.ok
    assert health.error is not None
    assert health.error.startswith("nvmlInit failed")
    assert expected in health.error
    assert gpus == ()  # unavailable, reported as such: never "no GPUs" with ok=True

    # The driver comes back: the same observer initialises on its next pass.
    fake_nvml.clear_failures()
    fake_nvml.write()
    gpus = observe_ok(observer)
    assert [g.uuid for g in gpus] == [gpu_uuid(0), gpu_uuid(1)]


def test_failing_calls_degrade_only_their_field(fake_nvml: FakeNvml, observer: NvmlObserver) -> None:
    gpus = fake_nvml.set_gpus(3)
    gpus[0].util_percent = 40
    gpus[1].util_percent = 50
    gpus[2].util_percent = 60
    for gpu in gpus:
        fake_nvml.add_process(gpu.uuid, pid=100 + gpu.index)
    fake_nvml.fail_call("nvmlDeviceGetUtilizationRates", NVML_ERROR_UNKNOWN, device_uuid=gpus[0].uuid)
    fake_nvml.fail_call("nvmlDeviceGetMemoryInfo", NVML_ERROR_NOT_SUPPORTED, device_uuid=gpus[1].uuid)
    # A base name matches every versioned symbol (_v2, _v3).
    fake_nvml.fail_call("nvmlDeviceGetComputeRunningProcesses", NVML_ERROR_UNKNOWN, device_uuid=gpus[2].uuid)
    fake_nvml.write()

    first, second, third = observe_ok(observer)

    assert first.utilization_percent is None
    assert first.utilization_unknown is not None
    assert "NVML_ERROR_UNKNOWN" in first.utilization_unknown
    assert first.memory_total_bytes == gpus[0].mem_total_bytes

    assert (second.memory_used_bytes, second.memory_total_bytes) == (None, None)
    assert second.utilization_percent == 50.0

    # Processes unknown is not "no processes".
    assert third.processes == ()
    assert third.processes_unknown is not None
    assert "NVML_ERROR_UNKNOWN" in third.processes_unknown
    assert third.utilization_percent == 60.0
    assert first.processes == (NvmlProcess(pid=100, used_memory_bytes=512 * MIB),)


def test_failing_mig_device_fields_degrade_only_that_device(
    fake_nvml: FakeNvml, observer: NvmlObserver
) -> None:
    fake_nvml.set_gpus(1)
    bad = fake_nvml.add_mig(0)
    good = fake_nvml.add_mig(0)
    fake_nvml.add_process(good.uuid, pid=9)
    fake_nvml.fail_call("nvmlDeviceGetGpuInstanceId", NVML_ERROR_UNKNOWN, device_uuid=bad.uuid)
    fake_nvml.fail_call("nvmlDeviceGetComputeRunningProcesses_v3", NVML_ERROR_UNKNOWN, device_uuid=bad.uuid)
    fake_nvml.write()

    (gpu,) = observe_ok(observer)

    bad_obs, good_obs = gpu.mig_devices
    assert bad_obs.uuid == bad.uuid
    assert bad_obs.gpu_instance_id is None
    assert bad_obs.processes_unknown is not None
    assert good_obs.gpu_instance_id == good.gpu_instance_id
    assert good_obs.processes == (NvmlProcess(pid=9, used_memory_bytes=512 * MIB),)
    assert good_obs.processes_unknown is None


def test_processes_fall_back_to_v2_on_older_drivers(fake_nvml: FakeNvml, observer: NvmlObserver) -> None:
    (gpu,) = fake_nvml.set_gpus(1)
    fake_nvml.add_process(gpu.uuid, pid=31, used_mem_bytes=None)
    fake_nvml.fail_call("nvmlDeviceGetComputeRunningProcesses_v3", pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    fake_nvml.write()

    (obs,) = observe_ok(observer)

    assert obs.processes == (NvmlProcess(pid=31, used_memory_bytes=None),)
    assert obs.processes_unknown is None


def test_graphics_processes_are_listed_with_the_compute_ones(
    fake_nvml: FakeNvml, observer: NvmlObserver
) -> None:
    (gpu,) = fake_nvml.set_gpus(1)
    fake_nvml.add_process(gpu.uuid, pid=31, used_mem_bytes=2 * GIB)
    fake_nvml.add_process(gpu.uuid, pid=900, used_mem_bytes=300 * MIB, graphics=True)  # an X server
    # One process with both kinds of context (nvidia-smi's "C+G") is one process, at its larger figure.
    fake_nvml.add_process(gpu.uuid, pid=77, used_mem_bytes=1 * GIB)
    fake_nvml.add_process(gpu.uuid, pid=77, used_mem_bytes=3 * GIB, graphics=True)
    fake_nvml.write()

    (obs,) = observe_ok(observer)

    assert obs.processes == (
        NvmlProcess(pid=31, used_memory_bytes=2 * GIB),
        NvmlProcess(pid=77, used_memory_bytes=3 * GIB),
        NvmlProcess(pid=900, used_memory_bytes=300 * MIB),
    )
    assert obs.processes_unknown is None


def test_graphics_processes_fall_back_to_v2_on_older_drivers(
    fake_nvml: FakeNvml, observer: NvmlObserver
) -> None:
    (gpu,) = fake_nvml.set_gpus(1)
    fake_nvml.add_process(gpu.uuid, pid=900, used_mem_bytes=None, graphics=True)
    fake_nvml.fail_call("nvmlDeviceGetGraphicsRunningProcesses_v3", pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    fake_nvml.write()

    (obs,) = observe_ok(observer)

    assert obs.processes == (NvmlProcess(pid=900, used_memory_bytes=None),)
    assert obs.processes_unknown is None


def test_a_device_without_graphics_has_none_and_its_compute_list_stands(
    fake_nvml: FakeNvml, observer: NvmlObserver
) -> None:
    # MIG devices run no graphics (the stand-in answers NOT_SUPPORTED there, as for a compute-only
    # board): their process lists are the compute lists, known.
    fake_nvml.load_realistic_host()
    mig = fake_nvml.mig_devices[0]
    fake_nvml.add_process(mig.uuid, pid=4242, used_mem_bytes=1 * GIB)
    gpu = next(g for g in fake_nvml.gpus if g.mig is False)
    fake_nvml.fail_call(
        "nvmlDeviceGetGraphicsRunningProcesses", NVML_ERROR_NOT_SUPPORTED, device_uuid=gpu.uuid
    )
    fake_nvml.write()

    observed = {g.uuid: g for g in observe_ok(observer)}

    (device,) = [m for g in observed.values() for m in g.mig_devices if m.uuid == mig.uuid]
    assert [p.pid for p in device.processes] == [4242] and device.processes_unknown is None
    assert observed[gpu.uuid].processes_unknown is None


def test_an_unreadable_graphics_list_makes_the_process_list_unknown(
    fake_nvml: FakeNvml, observer: NvmlObserver
) -> None:
    (gpu,) = fake_nvml.set_gpus(1)
    fake_nvml.add_process(gpu.uuid, pid=31)
    fake_nvml.fail_call("nvmlDeviceGetGraphicsRunningProcesses", NVML_ERROR_UNKNOWN)
    fake_nvml.write()

    (obs,) = observe_ok(observer)

    # Unknown is not empty: a known compute list with an unreadable graphics list is not the whole list.
    assert obs.processes == ()
    assert (
        obs.processes_unknown is not None and "nvmlDeviceGetGraphicsRunningProcesses" in obs.processes_unknown
    )


@pytest.mark.parametrize(
    ("function", "code", "which"),
    [
        ("nvmlDeviceGetCount", NVML_ERROR_UNKNOWN, None),
        ("nvmlDeviceGetHandleByIndex", NVML_ERROR_GPU_IS_LOST, None),
        ("nvmlDeviceGetUUID", NVML_ERROR_UNKNOWN, 1),
        ("nvmlDeviceGetMigMode", NVML_ERROR_UNKNOWN, 1),
        ("nvmlDeviceGetMigDeviceHandleByIndex", NVML_ERROR_UNKNOWN, 1),
    ],
)
def test_enumeration_failure_makes_the_domain_unavailable(
    fake_nvml: FakeNvml, observer: NvmlObserver, function: str, code: int, which: int | None
) -> None:
    fake_nvml.set_gpus(2)
    fake_nvml.add_mig(1)
    fake_nvml.write()
    observe_ok(observer)  # initialised and healthy first

    fake_nvml.fail_call(function, code, device_uuid=None if which is None else gpu_uuid(which))
    fake_nvml.write()
    gpus, health = observer.observe()

    assert not health.ok
    assert health.error is not None
    assert health.error.startswith(function)
    assert pynvml.nvmlErrorString(code) in health.error
    assert gpus == ()  # a partial device list would read as "these GPUs are free"

    fake_nvml.clear_failures()
    fake_nvml.write()
    assert len(observe_ok(observer)) == 2


def test_long_lived_observer_follows_state_changes(fake_nvml: FakeNvml, observer: NvmlObserver) -> None:
    gpus = fake_nvml.set_gpus(1)
    gpus[0].util_percent = 10
    fake_nvml.write()
    (before,) = observe_ok(observer)
    assert before.utilization_percent == 10.0
    assert before.processes == ()

    gpus[0].util_percent = 95
    gpus[0].mem_used_bytes = 7 * GIB
    fake_nvml.add_process(gpus[0].uuid, pid=2024, used_mem_bytes=6 * GIB)
    fake_nvml.add_gpu()
    fake_nvml.add_mig(1, profile="2g.20gb")
    fake_nvml.write()
    first, second = observe_ok(observer)

    assert first.utilization_percent == 95.0
    assert first.memory_used_bytes == 7 * GIB
    assert first.processes == (NvmlProcess(pid=2024, used_memory_bytes=6 * GIB),)
    assert second.mig_enabled
    assert [d.uuid for d in second.mig_devices] == [mig_uuid(1, 0)]

    fake_nvml.remove_process(2024)
    fake_nvml.write()
    first, _ = observe_ok(observer)
    assert first.processes == ()


def test_realistic_host(fake_nvml: FakeNvml, observer: NvmlObserver) -> None:
    fake_nvml.load_realistic_host()
    fake_nvml.write()

    gpus = observe_ok(observer)

    assert [g.index for g in gpus] == list(range(8))
    assert len({g.uuid for g in gpus}) == 8
    mig_gpus = [g for g in gpus if g.mig_enabled]
    assert [g.index for g in mig_gpus] == list(REALISTIC_MIG_GPUS)
    assert [len(g.mig_devices) for g in mig_gpus] == [3, 7]
    assert all(g.utilization_percent is None and g.utilization_unknown for g in mig_gpus)
    assert all(g.utilization_percent is not None for g in gpus if not g.mig_enabled)
    all_uuids = [g.uuid for g in gpus] + [d.uuid for g in gpus for d in g.mig_devices]
    assert len(set(all_uuids)) == len(all_uuids) == 18


def test_a_stuck_call_times_out_and_blocks_new_observations(fake_nvml: FakeNvml) -> None:
    fake_nvml.set_gpus(1)
    fake_nvml.hang_call("nvmlDeviceGetCount", 60)
    fake_nvml.write()
    observer = NvmlObserver(timeout_s=0.2)
    try:
        gpus, health = observer.observe()
        assert not health.ok
        assert health.error == "timed out after 0.2s"
        assert gpus == ()

        # While the first worker is stuck in C, a new pass must not queue another NVML call.
        gpus, health = observer.observe()
        assert not health.ok
        assert health.error is not None
        assert "not starting another observation" in health.error
        workers = [t for t in threading.enumerate() if t.name == "nvml-observe" and t.is_alive()]
        assert len(workers) == 1

        # The driver unwedges: the stuck call returns and observation resumes.
        fake_nvml.clear_failures()
        fake_nvml.write()
        deadline = time.monotonic() + 10
        while True:
            gpus, health = observer.observe()
            if health.ok or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert health.ok, health.error
        assert [g.uuid for g in gpus] == [gpu_uuid(0)]
    finally:
        observer.close()


_CHILD = """
import json
from controller.observe.nvml import NvmlObserver
with NvmlObserver(timeout_s=10) as obs:
    gpus, health = obs.observe()
result = {"health": health.model_dump(mode="json"), "gpus": [g.model_dump(mode="json") for g in gpus]}
print(json.dumps(result))
"""


def run_child(fake_nvml: FakeNvml) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "DS01_FAKE_NVML_STATE"}
    env.update(fake_nvml.env())
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_a_subprocess_loads_the_stand_in_through_ld_library_path(fake_nvml: FakeNvml) -> None:
    fake_nvml.load_realistic_host()
    fake_nvml.add_process(mig_uuid(7, 3), pid=777, used_mem_bytes=GIB)
    fake_nvml.write()

    result = run_child(fake_nvml)

    health = result["health"]
    assert isinstance(health, dict) and health["ok"] is True
    gpus = result["gpus"]
    assert isinstance(gpus, list) and len(gpus) == 8
    slice_procs = [d["processes"] for d in gpus[7]["mig_devices"] if d["uuid"] == mig_uuid(7, 3)]
    assert slice_procs == [[{"pid": 777, "used_memory_bytes": GIB}]]

    fake_nvml.remove_state_file()
    result = run_child(fake_nvml)
    health = result["health"]
    assert isinstance(health, dict) and health["ok"] is False
    assert "NVML_ERROR_DRIVER_NOT_LOADED" in str(health["error"])
    assert result["gpus"] == []


def test_stand_in_follows_nvml_calling_conventions(fake_nvml: FakeNvml) -> None:
    """The protocol details pynvml relies on, checked directly against the stand-in."""
    (gpu,) = fake_nvml.set_gpus(1)
    mig = fake_nvml.add_mig(0)
    fake_nvml.add_process(mig.uuid, pid=1)
    fake_nvml.write()

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(mig.uuid)
        assert pynvml.nvmlDeviceIsMigDeviceHandle(handle).value == 1
        parent = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
        assert pynvml.nvmlDeviceGetUUID(parent) == gpu.uuid
        assert pynvml.nvmlDeviceGetName(handle) == f"{gpu.name} MIG 1g.10gb"
        memory = pynvml.nvmlDeviceGetMemoryInfo(parent, version=pynvml.nvmlMemory_v2)
        assert memory.total == gpu.mem_total_bytes
        # The parent in MIG mode lists its slices' processes with their instance ids.
        (proc,) = pynvml.nvmlDeviceGetComputeRunningProcesses(parent)
        assert (proc.pid, proc.gpuInstanceId) == (1, mig.gpu_instance_id)
        with pytest.raises(pynvml.NVMLError_NotFound):
            pynvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, 1)
        with pytest.raises(pynvml.NVMLError_NotFound):
            pynvml.nvmlDeviceGetHandleByUUID("GPU-not-there")
    finally:
        pynvml.nvmlShutdown()


def test_mig_devices_report_their_gpu_equivalents_from_nvml_attributes(
    fake_nvml: FakeNvml, observer: NvmlObserver
) -> None:
    # DS01's GPU-equivalents: a MIG slice counts as its share of the GPU's compute slices.
    fake_nvml.set_gpus(1)
    three = fake_nvml.add_mig(0, profile="3g.40gb")
    one = fake_nvml.add_mig(0, profile="1g.10gb")
    shared = fake_nvml.add_mig(0, profile="1c.3g.40gb")  # one compute slice of a 3-slice instance
    fake_nvml.write()
    (gpu,) = observe_ok(observer)
    by_uuid = {d.uuid: d for d in gpu.mig_devices}
    assert (by_uuid[three.uuid].compute_slices, by_uuid[three.uuid].gpu_equivalents) == (3, round(3 / 7, 6))
    assert by_uuid[one.uuid].gpu_equivalents == round(1 / 7, 6)
    assert by_uuid[shared.uuid].compute_slices == 1
    assert all(d.gpu_equivalents_unknown is None for d in gpu.mig_devices)


def test_unreadable_mig_attributes_leave_the_gpu_equivalents_unknown(
    fake_nvml: FakeNvml, observer: NvmlObserver
) -> None:
    fake_nvml.set_gpus(1)
    fake_nvml.add_mig(0, profile="2g.20gb")
    fake_nvml.fail_call("nvmlDeviceGetAttributes", 3)
    fake_nvml.write()
    (gpu,) = observe_ok(observer)
    (device,) = gpu.mig_devices
    assert device.gpu_equivalents is None and device.compute_slices is None
    assert (
        device.gpu_equivalents_unknown is not None
        and "nvmlDeviceGetAttributes" in device.gpu_equivalents_unknown
    )


def test_mig_devices_carry_their_profile_to_get_gpus_and_describe_gpu(
    fake_nvml: FakeNvml, observer: NvmlObserver
) -> None:
    """The profile comes from the MIG device's NVML name (``<GPU name> MIG 3g.40gb``) and shows in
    ``get gpus`` (the MIG column) and ``describe gpu`` (the device's MIG field, the GPU's table)."""
    from controller.cli.describe import describe_gpu
    from controller.cli.get import GetOptions, run_get
    from controller.cli.view import View
    from tests.fixtures import builders as b

    fake_nvml.set_gpus(2)
    big = fake_nvml.add_mig(1, profile="3g.40gb", mig_index=0)
    small = fake_nvml.add_mig(1, profile="1g.10gb", mig_index=2)
    fake_nvml.write()

    _full, mig = observe_ok(observer)
    assert [(d.uuid, d.profile) for d in mig.mig_devices] == [(big.uuid, "3g.40gb"), (small.uuid, "1g.10gb")]

    view = View(snapshot=b.snapshot(observed_at=b.T0, gpus=list(observe_ok(observer))), now=b.T0)
    text, _ = run_get("gpus", view, GetOptions())
    header, *lines = text.splitlines()
    start, end = header.index(" MIG ") + 1, header.index(" MEMORY")  # the model name has spaces
    mig_of = {line.split()[0]: line[start:end].strip() for line in lines}
    assert mig_of == {"0": "off", "1": "on", "1.0": "3g.40gb", "1.2": "1g.10gb"}
    assert "MIG:          device, profile 3g.40gb" in describe_gpu(view, "1.0")
    parent = describe_gpu(view, "1")
    assert "PROFILE" in parent and "3g.40gb" in parent and "1g.10gb" in parent


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("NVIDIA A100-SXM4-80GB MIG 3g.40gb", "3g.40gb"),
        (b"NVIDIA H100 80GB HBM3 MIG 1g.10gb", "1g.10gb"),
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb+me", "1g.5gb+me"),
        ("NVIDIA A100-SXM4-80GB", None),  # no profile in the name: unknown, never guessed
        (None, None),
    ],
)
def test_mig_profile_is_read_from_the_device_name(name: object, profile: str | None) -> None:
    from controller.observe.nvml import mig_profile

    assert mig_profile(name) == profile
