"""Issue 11, cases 4 and 6: the executor re-observes the host right before a GPU reset.

The re-check is the daemon's own (``ResetPrecheck(HostObserver.observe)``, as ``make_real_executor``
builds it), against the real Docker engine and the stand-in NVML through the real pynvml. The plan
said the GPU was clean; since then NVML became unreadable, a process appeared on it, or a container
that holds it started: the reset is skipped and the command never runs.

Only refusals are asserted here: the engine is shared, so whether some other container on it holds
or may use a GPU is not this test's to decide (the clean case is in tests/unit).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.act.gpu_reset import ResetPrecheck
from controller.act.report import Outcome
from controller.memory import ControllerMemory
from controller.observe import HostObserver, ObserveConfig
from controller.observe.nvml import NvmlObserver
from controller.plan.types import Action, ActionKind, Reason, Target
from tests.fixtures.act import NOW, RecordingNotifier, make_plan
from tests.fixtures.docker_host import ContainerFactory
from tests.fixtures.nvml import NVML_ERROR_UNKNOWN, FakeNvml

pytestmark = pytest.mark.docker

GPU = "GPU-5afe0011-0000-4000-8000-00000000fa4e"


@pytest.fixture
def observer(fake_nvml: FakeNvml, tmp_path: Path) -> Iterator[HostObserver]:
    fake_nvml.add_gpu(uuid=GPU)
    fake_nvml.write()
    with HostObserver(ObserveConfig(ledger_path=tmp_path / "ledger.json"), nvml=NvmlObserver()) as obs:
        yield obs


def run_reset(observer: HostObserver, docker_client: Any, tmp_path: Path) -> tuple[str, bool]:
    ran = tmp_path / "ran"
    script = tmp_path / "reset"
    script.write_text(f"#!/bin/sh\ntouch {ran}\n")
    script.chmod(0o755)
    executor = RealExecutor(
        docker_client,
        EventLog(tmp_path / "events.jsonl"),
        RecordingNotifier(),
        tmp_path / "ledger.json",
        reset_command=[str(script), "{uuid}"],
        reset_precheck=ResetPrecheck(observer.observe),
    )
    action = Action(
        kind=ActionKind.RESET_GPU,
        target=Target(gpu=GPU),
        reason=Reason.GPU_DIRTY,
        message="reset",
        due_at=NOW,
        key=f"ResetGpu:{GPU}",
    )
    (outcome,) = executor.execute(make_plan(action), ControllerMemory(), NOW).outcomes
    assert outcome.outcome is Outcome.SKIPPED, outcome.detail
    return outcome.detail, ran.exists()


def test_nvml_unreadable_at_reset_time(
    observer: HostObserver, fake_nvml: FakeNvml, docker_client: Any, tmp_path: Path
) -> None:
    fake_nvml.fail_call("nvmlDeviceGetCount", NVML_ERROR_UNKNOWN)
    fake_nvml.write()
    detail, ran = run_reset(observer, docker_client, tmp_path)
    assert "NVML cannot be read now" in detail and not ran


def test_process_list_unreadable_at_reset_time(
    observer: HostObserver, fake_nvml: FakeNvml, docker_client: Any, tmp_path: Path
) -> None:
    fake_nvml.fail_call("nvmlDeviceGetComputeRunningProcesses", NVML_ERROR_UNKNOWN, device_uuid=GPU)
    fake_nvml.write()
    detail, ran = run_reset(observer, docker_client, tmp_path)
    assert "its process list cannot be read now" in detail and not ran


def test_a_process_appeared_since_the_plan(
    observer: HostObserver, fake_nvml: FakeNvml, docker_client: Any, tmp_path: Path
) -> None:
    fake_nvml.add_process(GPU, pid=4242)
    fake_nvml.write()
    detail, ran = run_reset(observer, docker_client, tmp_path)
    assert "processes on it now: 4242" in detail and not ran


def test_a_container_holding_it_started_since_the_plan(
    observer: HostObserver, make_container: ContainerFactory, docker_client: Any, tmp_path: Path
) -> None:
    holder = make_container(labels={"ds01.gpu.uuid": GPU})
    detail, ran = run_reset(observer, docker_client, tmp_path)
    assert f"{holder.name} (running)" in detail and not ran
