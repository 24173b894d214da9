"""``ds01ctl`` plans with the daemon's memory as its next pass will: an interrupted GPU reset.

The daemon killed during a GPU reset leaves an open intent. Its next pass records that reset as
not carried out and marks it done before planning (its outcome cannot be verified, so it is never
repeated; the planner alerts an admin instead). ``ds01ctl plan`` planned with the memory as stored
and showed the reset again, which the daemon would never run.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import docker

from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.cli.gather import as_next_pass, next_pass_notes
from controller.memory import ControllerMemory, Intent
from controller.plan.planner import plan
from controller.plan.types import Action, ActionKind, Reason, Target
from controller.settings import Settings
from tests.fixtures import builders as b
from tests.fixtures.act import RecordingNotifier

DIRTY = (b.gpu(0, memory_used_bytes=4 * 1024**3),)


def interrupted_reset() -> tuple[ControllerMemory, Action]:
    """The memory as the daemon left it, killed during the reset it planned in its second pass."""
    passes = b.Passes(b.desired(b.policy()))
    passes.run(b.snapshot(observed_at=b.at(), gpus=DIRTY))
    p = plan(
        b.snapshot(observed_at=b.at(seconds=30), gpus=DIRTY), passes.desired, passes.memory, b.at(seconds=30)
    )
    (reset,) = p.actions
    assert reset.kind is ActionKind.RESET_GPU
    intent = Intent(action=reset.model_dump(mode="json"), started_at=b.at(seconds=31))
    return p.memory.with_intent(reset.key, intent), reset


def next_plan(memory: ControllerMemory) -> list[tuple[str, str, str]]:
    snap = b.snapshot(observed_at=b.at(seconds=60), gpus=DIRTY)
    return b.summary(plan(snap, b.desired(b.policy()), memory, b.at(seconds=60)))


def test_plan_does_not_show_an_interrupted_reset_again(tmp_path: Path) -> None:
    memory, reset = interrupted_reset()
    settings = Settings(state_dir=tmp_path)
    # As stored, the planner would reset again: what ds01ctl plan showed.
    assert next_plan(memory) == [("ResetGpu", "GpuDirty", b.GPU0)]
    shown = as_next_pass(settings, memory)
    assert reset.key in shown.done
    assert next_plan(shown) == [("AlertAdmin", "GpuDirty", b.GPU0)]
    (note,) = next_pass_notes(memory, shown)
    assert note.startswith(f"ResetGpu {b.GPU0} was interrupted") and "never repeats it" in note

    # What the daemon's own recovery does before it plans: the same plan.
    # Never contacted: recovering a reset makes no Docker call.
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/none.sock", version="1.43", timeout=5)
    executor = RealExecutor(
        client,
        EventLog(tmp_path / "events.jsonl"),
        RecordingNotifier(),
        tmp_path / "ledger.json",
        clock=lambda: b.at(seconds=60),
    )
    recovered, outcomes = executor.recover(memory, b.at(seconds=60))
    assert [o.outcome.value for o in outcomes] == ["failed"]
    assert next_plan(recovered) == next_plan(shown)


def test_open_intents_the_daemon_resumes_are_left_as_they_are(tmp_path: Path) -> None:
    """A stop interrupted mid-way is verified and resumed by the daemon: planned again, truly."""
    stop = Action(
        kind=ActionKind.STOP_CONTAINER,
        target=Target(container="train", container_id="c" * 64, expected_state="running"),
        reason=Reason.MAX_RUNTIME_EXCEEDED,
        message="stop",
        due_at=b.T0 - timedelta(minutes=1),
        key="StopContainer:x",
    )
    memory = ControllerMemory().with_intent(
        stop.key, Intent(action=stop.model_dump(mode="json"), started_at=b.T0)
    )
    assert as_next_pass(Settings(state_dir=tmp_path), memory) is memory
