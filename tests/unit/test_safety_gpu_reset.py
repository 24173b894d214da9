"""Issue 11, case 4 (planner side): a GPU whose process list is unknown is never marked dirty and
never reset; memory is NVML v2 ``used`` (the driver's reserved memory excluded), and a v1 reading,
which includes it, must clear the reserved allowance before it counts.

The numbers are an NVIDIA H200 on driver 580.159.04 with no process (docs/nvml-real-hardware.md):
v1 used 644,939,776 bytes; v2 reserved 644,939,776, used 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from controller.memory import GpuMarkCause
from controller.plan.types import Plan
from controller.snapshot import GpuObs, GpuProcessObs, GpuRef, GpuRefSource
from tests.fixtures import builders as b

GONE = "d" * 64
H200_TOTAL_BYTES = 150_754_820_096  # 143,771 MiB
H200_RESERVED_BYTES = 644_939_776  # 615 MiB, idle, MIG off
UNKNOWN = "nvmlDeviceGetComputeRunningProcesses(GPU 0) failed: Unknown Error (NVML_ERROR_UNKNOWN)"


def h200(**update: object) -> GpuObs:
    base = b.gpu(0, name="NVIDIA H200", memory_total_bytes=H200_TOTAL_BYTES)
    return base.model_copy(
        update={"memory_used_bytes": 0, "memory_reserved_bytes": H200_RESERVED_BYTES, **update}
    )


def run(
    gpus_per_pass: Sequence[Sequence[GpuObs]], processes: Sequence[Sequence[GpuProcessObs]] = ()
) -> list[Plan]:
    runner = b.Passes(b.desired(b.policy()))
    out = []
    for i, gpus in enumerate(gpus_per_pass):
        procs = processes[i] if i < len(processes) else ()
        out.append(runner.run(b.snapshot(observed_at=b.at(seconds=30 * i), gpus=gpus, processes=procs)))
    return out


def kinds(plans: list[Plan]) -> list[str]:
    return [a.kind.value for p in plans for a in p.actions]


# --- an unknown process list ------------------------------------------------------------------


def test_memory_in_use_with_an_unknown_process_list_is_never_dirty() -> None:
    busy_unlisted = h200(memory_used_bytes=40 * 1024**3, processes_unknown=UNKNOWN)
    plans = run([[busy_unlisted]] * 4)
    assert kinds(plans) == []
    assert all(p.memory.dirty_gpus == {} for p in plans)
    deferred = [d for d in plans[-1].deferred if d.rule.value == "GpuDirty"]
    assert [(d.why.value, d.target.gpu) for d in deferred] == [("UnknownSignal", b.GPU0)]
    assert "process list could not be read" in deferred[0].message
    assert deferred[0].evidence["processes_unknown"] == UNKNOWN


def test_an_unknown_mig_device_process_list_also_counts() -> None:
    gpu = b.gpu(1, mig_slots=2, memory_used_bytes=20 * 1024**3)
    mig = gpu.mig_devices[1].model_copy(update={"processes_unknown": "failed"})
    gpu = gpu.model_copy(update={"mig_devices": (gpu.mig_devices[0], mig)})
    plans = run([[b.gpu(0), gpu]] * 3)
    assert kinds(plans) == [] and plans[-1].memory.dirty_gpus == {}


def test_a_gpu_marked_after_its_orphans_were_killed_is_not_reset_while_its_list_is_unknown() -> None:
    orphan = b.process(777, b.GPU0, container_id=GONE)
    unlisted = h200(processes_unknown=UNKNOWN, memory_used_bytes=8 * 1024**3)
    plans = run([[h200()], [h200()], [unlisted], [unlisted], [h200()]], [[orphan], [orphan]])
    assert kinds(plans[:2]) == ["KillProcess"]
    # The orphan is gone from a list that could not be read: that is not "gone". No reset, no
    # alert, the mark kept.
    assert kinds(plans[2:4]) == []
    assert plans[3].memory.dirty_gpus[b.GPU0].cause == GpuMarkCause.ORPHANS
    assert ("GpuDirty", "UnknownSignal", b.GPU0) in b.deferred_summary(plans[3])
    # Listed again, and empty: now the reset is decided.
    assert b.summary(plans[4]) == [("ResetGpu", "GpuDirty", b.GPU0)]


def test_a_live_container_with_an_unresolved_gpu_reference_blocks_the_reset() -> None:
    orphan = b.process(777, b.GPU0, container_id=GONE)
    legacy = GpuRef(
        raw="MIG-GPU-deadbeef/1/0", source=GpuRefSource.LABEL_GPU_UUID, unresolved_reason="unknown"
    )
    c = b.container("train", gpus=[legacy], started_at=b.ago(minutes=5))
    runner = b.Passes(b.desired(b.policy()))
    for i, procs in enumerate([[orphan], [orphan], []]):
        p = runner.run(
            b.snapshot(observed_at=b.at(seconds=30 * i), containers=[c], gpus=[b.gpu(0)], processes=procs)
        )
    assert b.summary(p) == [("AlertAdmin", "GpuDirty", b.GPU0)]
    assert any("cannot be resolved: train" in x for x in p.actions[0].evidence["blockers"])


# --- memory: v2 used, the driver's reserved memory --------------------------------------------


def test_an_idle_h200_is_not_dirty() -> None:
    """v2: used 0, reserved 615 MiB. Before the fix the planner read v1 used (615 MiB > 512 MiB)."""
    plans = run([[h200()]] * 3)
    assert kinds(plans) == [] and plans[-1].deferred == ()


def test_an_idle_h200_read_with_v1_is_not_dirty() -> None:
    """A driver without v2: used includes the reserved 615 MiB, and is not taken for a leak."""
    v1 = h200(
        memory_used_bytes=H200_RESERVED_BYTES, memory_reserved_bytes=None, memory_used_includes_reserved=True
    )
    plans = run([[v1]] * 3)
    assert kinds(plans) == [] and plans[-1].memory.dirty_gpus == {}


def test_a_leak_is_still_found_with_v2_and_with_v1() -> None:
    leak_v2 = h200(memory_used_bytes=1024**3)
    assert kinds(run([[leak_v2]] * 2)) == ["ResetGpu"]
    small_v1 = h200(
        memory_used_bytes=2 * 1024**3, memory_reserved_bytes=None, memory_used_includes_reserved=True
    )
    assert kinds(run([[small_v1]] * 3)) == []  # under the v1 allowance: not taken for a leak
    big_v1 = h200(
        memory_used_bytes=8 * 1024**3, memory_reserved_bytes=None, memory_used_includes_reserved=True
    )
    assert kinds(run([[big_v1]] * 2)) == ["ResetGpu"]


def test_get_gpus_says_unknown_not_dirty_for_an_unlisted_gpu() -> None:
    from controller.cli.get import gpu_state
    from controller.cli.view import View

    busy_unlisted = h200(memory_used_bytes=40 * 1024**3, processes_unknown=UNKNOWN)
    snap = b.snapshot(observed_at=b.at(), gpus=[busy_unlisted])
    p = b.Passes(b.desired(b.policy())).run(snap)
    view = View(snapshot=snap, now=b.at(), plan=p, memory=p.memory)
    assert gpu_state(view, busy_unlisted, None) == "unknown"
