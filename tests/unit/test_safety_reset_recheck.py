"""Issue 11, cases 4 and 6 (the reset): right before a GPU reset the executor observes the host
again and re-checks the planner's preconditions on the fresh snapshot. NVML unreadable, a process
or a live holder that appeared since the plan: the reset is skipped and the command never runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.act.gpu_reset import ResetPrecheck, reset_blockers
from controller.act.report import Outcome
from controller.memory import ControllerMemory
from controller.plan.types import Action, ActionKind, Reason, Target
from controller.snapshot import ContainerState, Domain, GpuRef, GpuRefSource, Snapshot
from tests.fixtures import builders as b
from tests.fixtures.act import NOW, RecordingNotifier, make_plan, read_events


def clean_host(**kw: object) -> Snapshot:
    return b.snapshot(gpus=[b.gpu(0), b.gpu(1)], **kw)  # type: ignore[arg-type]


def test_a_clean_gpu_may_be_reset() -> None:
    assert reset_blockers(clean_host(), b.GPU0) == []


def test_nvml_unreadable_blocks() -> None:
    (blocker,) = reset_blockers(b.snapshot(down=(Domain.NVML,)), b.GPU0)
    assert blocker.startswith("NVML cannot be read now")


def test_a_gpu_no_longer_listed_blocks() -> None:
    assert reset_blockers(b.snapshot(gpus=[b.gpu(1)]), b.GPU0) == ["NVML no longer lists this GPU"]


def test_an_unknown_process_list_blocks() -> None:
    gpu = b.gpu(0).model_copy(update={"processes_unknown": "nvmlDeviceGetComputeRunningProcesses failed"})
    (blocker,) = reset_blockers(b.snapshot(gpus=[gpu]), b.GPU0)
    assert blocker.startswith("its process list cannot be read now")


def test_a_process_that_appeared_blocks() -> None:
    snap = b.snapshot(gpus=[b.gpu(0, processes=(4242,))])
    assert reset_blockers(snap, b.GPU0) == ["processes on it now: 4242"]


def test_mig_mode_blocks() -> None:
    assert any("MIG" in x for x in reset_blockers(b.snapshot(gpus=[b.gpu(0, mig_slots=1)]), b.GPU0))


@pytest.mark.parametrize("state", [ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING])
def test_a_live_container_that_appeared_blocks(state: ContainerState) -> None:
    c = b.container("newjob", state=state, gpus=[b.GPU0])
    (blocker,) = reset_blockers(clean_host(containers=[c]), b.GPU0)
    assert blocker == f"live containers that hold or may use it now: newjob ({state.value})"


def test_containers_on_a_mig_slice_all_gpus_or_unresolved_refs_block() -> None:
    gpu = b.gpu(0, mig_slots=1).model_copy(update={"mig_enabled": False})  # a slice reference, MIG off now
    mig = b.container("slice", gpus=[b.ref(b.mig_uuid(0, 0), parent=b.GPU0)])
    every = b.container("every", all_gpus=True)
    legacy = GpuRef(raw="MIG-GPU-x/1/0", source=GpuRefSource.LABEL_GPU_UUID, unresolved_reason="?")
    unknown = b.container("legacy", gpus=[legacy])
    other = b.container("other", gpus=[b.GPU1])
    stopped = b.exited("stopped", gpus=[b.GPU0])
    snap = b.snapshot(gpus=[gpu, b.gpu(1)], containers=[mig, every, unknown, other, stopped])
    assert reset_blockers(snap, b.GPU0) == [
        "live containers that hold or may use it now: every (running), legacy (running), slice (running)"
    ]


def test_docker_unreadable_blocks() -> None:
    (blocker,) = reset_blockers(b.snapshot(gpus=[b.gpu(0)], down=(Domain.DOCKER,)), b.GPU0)
    assert blocker.startswith("Docker cannot be read now")


def test_an_observation_that_raises_blocks() -> None:
    def broken() -> Snapshot:
        raise RuntimeError("boom")

    assert ResetPrecheck(broken)(b.GPU0) == ["the host could not be observed again: RuntimeError: boom"]


# --- the executor ------------------------------------------------------------------------------


def reset_action() -> Action:
    return Action(
        kind=ActionKind.RESET_GPU,
        target=Target(gpu=b.GPU0),
        reason=Reason.GPU_DIRTY,
        message="reset",
        due_at=NOW,
        key=f"ResetGpu:{b.GPU0}",
    )


def executor(
    tmp_path: Path,
    precheck: ResetPrecheck | None,
    save_memory: Callable[[ControllerMemory], None] | None = None,
) -> tuple[RealExecutor, Path]:
    ran = tmp_path / "ran"
    script = tmp_path / "reset"
    script.write_text(f'#!/bin/sh\necho "$@" >> {ran}\n')
    script.chmod(0o755)
    # Never contacted: a reset uses no Docker call of the executor's own.
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/none.sock", version="1.43", timeout=5)
    ex = RealExecutor(
        client,
        EventLog(tmp_path / "events.jsonl"),
        RecordingNotifier(),
        tmp_path / "ledger.json",
        reset_command=[str(script), "{uuid}"],
        reset_precheck=precheck,
        save_memory=save_memory,
    )
    return ex, ran


@pytest.mark.parametrize(
    "fresh",
    [
        b.snapshot(down=(Domain.NVML,)),
        b.snapshot(gpus=[b.gpu(0, processes=(4242,))]),
        b.snapshot(gpus=[b.gpu(0)], containers=[b.container("newjob", gpus=[b.GPU0])]),
    ],
    ids=["nvml-unreadable", "process-appeared", "container-appeared"],
)
def test_the_executor_skips_a_reset_the_fresh_observation_forbids(tmp_path: Path, fresh: Snapshot) -> None:
    ex, ran = executor(tmp_path, ResetPrecheck(lambda: fresh))
    report = ex.execute(make_plan(reset_action()), ControllerMemory(), NOW)
    (outcome,) = report.outcomes
    assert outcome.outcome is Outcome.SKIPPED and outcome.detail.startswith("not safe to reset now")
    assert not ran.exists()
    assert report.memory.done == {}  # not recorded as done: the planner decides again next pass
    (event,) = read_events(tmp_path / "events.jsonl")
    assert event["event_type"] == "controller.action_skipped"


def test_the_executor_resets_when_the_fresh_observation_is_clean(tmp_path: Path) -> None:
    ex, ran = executor(tmp_path, ResetPrecheck(lambda: b.snapshot(gpus=[b.gpu(0)])))
    (outcome,) = ex.execute(make_plan(reset_action()), ControllerMemory(), NOW).outcomes
    assert outcome.outcome is Outcome.DONE, outcome.detail
    assert ran.read_text().split() == [b.GPU0]


def test_without_a_re_check_no_gpu_is_reset(tmp_path: Path) -> None:
    ex, ran = executor(tmp_path, None)
    (outcome,) = ex.execute(make_plan(reset_action()), ControllerMemory(), NOW).outcomes
    assert outcome.outcome is Outcome.SKIPPED and not ran.exists()


def test_a_process_that_takes_the_gpu_while_the_intent_is_written_is_seen_before_the_reset(
    tmp_path: Path,
) -> None:
    """The intent's write is fsynced and may wait for other actions' saves: a CUDA process started
    meanwhile must still stop the reset (the check before the intent saw a clean GPU)."""
    host = {"fresh": b.snapshot(gpus=[b.gpu(0)])}
    saved: list[ControllerMemory] = []

    def save(memory: ControllerMemory) -> None:
        saved.append(memory)
        host["fresh"] = b.snapshot(gpus=[b.gpu(0, processes=(4242,))])  # a job starts on the GPU

    ex, ran = executor(tmp_path, ResetPrecheck(lambda: host["fresh"]), save_memory=save)
    action = reset_action()
    report = ex.execute(make_plan(action), ControllerMemory(), NOW)
    (outcome,) = report.outcomes
    assert outcome.outcome is Outcome.SKIPPED, outcome.detail
    assert outcome.detail == "not safe to reset now: processes on it now: 4242"
    assert not ran.exists(), "the reset command ran on a GPU a process had just taken"
    assert action.key in saved[0].intents, "the intent was written before the last look"
    assert report.memory.intents == {} and report.memory.done == {}
    started, closed = read_events(tmp_path / "events.jsonl", intents=True)
    assert started["event_type"] == "controller.action_started"
    assert closed["details"]["phase"] == "skipped" and closed["details"]["key"] == action.key
