"""A GPU reset runs with the controller's own NVML session closed.

``nvidia-smi -r`` refuses a GPU that any other NVML client holds open ("In use by another client",
a monitoring daemon included), and the daemon keeps a session open between passes and uses it for
the re-check right before the reset: every reset failed. The stand-in NVML holds a file open while
initialised, as NVIDIA's holds the device nodes; the reset command here refuses, as nvidia-smi
does, while any other process holds that file (``tests.fixtures.nvml.reset_command``).
"""

from __future__ import annotations

import os
from pathlib import Path

import docker

from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.act.gpu_reset import ResetPrecheck
from controller.act.report import Outcome
from controller.memory import ControllerMemory
from controller.observe.nvml import NvmlObserver
from controller.plan.types import Action, ActionKind, Reason, Target
from controller.snapshot import Snapshot
from tests.fixtures import builders as b
from tests.fixtures.act import NOW, RecordingNotifier, make_plan
from tests.fixtures.nvml import NVML_STATE_ENV, FakeNvml, reset_command

GPU = "GPU-5afe0011-0000-4000-8000-00000000fa4f"


def test_the_reset_runs_with_the_controllers_nvml_session_closed(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    fake_nvml.add_gpu(uuid=GPU)
    fake_nvml.write()
    ran = tmp_path / "ran"
    nvml = NvmlObserver()

    def observe() -> Snapshot:  # the re-check's NVML half, through the real pynvml
        gpus, health = nvml.observe()
        assert health.ok, health.error
        return b.snapshot(gpus=list(gpus))

    # Never contacted: a reset uses no Docker call of the executor's own.
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/none.sock", version="1.43", timeout=5)
    executor = RealExecutor(
        client,
        EventLog(tmp_path / "events.jsonl"),
        RecordingNotifier(),
        tmp_path / "ledger.json",
        reset_command=reset_command(ran),
        reset_precheck=ResetPrecheck(observe),
        release_nvml=nvml.close,
    )
    action = Action(
        kind=ActionKind.RESET_GPU,
        target=Target(gpu=GPU),
        reason=Reason.GPU_DIRTY,
        message="reset",
        due_at=NOW,
        key=f"ResetGpu:{GPU}",
    )
    try:
        nvml.observe()  # a pass before: the daemon's session is open
        assert any(
            os.path.realpath(f"/proc/self/fd/{fd}") == os.path.realpath(f"{os.environ[NVML_STATE_ENV]}.dev")
            for fd in os.listdir("/proc/self/fd")
        ), "the stand-in holds no device file while initialised"
        (outcome,) = executor.execute(make_plan(action), ControllerMemory(), NOW).outcomes
        assert outcome.outcome is Outcome.DONE, outcome.detail
        assert ran.read_text().split() == [GPU]
        gpus, health = nvml.observe()  # the next pass opens a new session
        assert health.ok and [g.uuid for g in gpus] == [GPU]
    finally:
        nvml.close()
