"""Intent first: the real executor records a destructive action before it runs, refuses to run it
when the record cannot be written, and completes an interrupted action's record exactly once."""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.act.events import EventLog, parse_timestamp
from controller.act.executor import RealExecutor
from controller.act.report import ExecutionReport, Outcome
from controller.memory import ContainerMemory, ControllerMemory, Intent, RemovedContainer
from controller.plan.types import Action, ActionKind, Reason
from tests.fixtures.act import NOW, RecordingNotifier, container_action, make_plan, read_events

pytestmark = pytest.mark.docker

GPU = "GPU-11111111-2222-3333-4444-555555555555"
GPU_EVIDENCE = {"gpus": [{"raw": GPU, "uuid": GPU, "source": "HostConfig.DeviceRequests", "mig": False}]}


def executor(docker_client: Any, log: Path, ledger: Path, **kwargs: Any) -> RealExecutor:
    return RealExecutor(
        docker_client,
        EventLog(log),
        RecordingNotifier(),
        ledger,
        reset_command=["false", "{uuid}"],
        kill_grace_s=1.0,
        clock=lambda: NOW,
        kill_wait_s=3.0,
        verify_timeout_s=5.0,
        **kwargs,
    )


def idle_stop(c: Any) -> Action:
    return container_action(
        ActionKind.STOP_CONTAINER,
        c,
        Reason.IDLE_TIMEOUT,
        params={"timeout_s": 1, "remove": False},
        evidence=GPU_EVIDENCE,
    )


def idle_memory(c: Any, idle_s: float) -> ControllerMemory:
    cm = ContainerMemory(container_id=c.id, idle_since=NOW - timedelta(seconds=idle_s))
    return ControllerMemory(containers={c.id: cm})


def test_intent_is_saved_before_the_stop_and_closed_after(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    c = make_container("sleep 300")
    seen: list[tuple[ControllerMemory, str]] = []

    def save(memory: ControllerMemory) -> None:
        # What is durably saved, and the container's state at that moment.
        seen.append((memory, docker_client.api.inspect_container(c.id)["State"]["Status"]))

    ex = executor(docker_client, log, tmp_path / "ledger.json", save_memory=save)
    action = idle_stop(c)
    memory = idle_memory(c, 600)
    report = ex.execute(make_plan(action, memory=memory), memory, NOW)
    assert report.outcomes[0].outcome is Outcome.DONE, report.outcomes[0].detail
    ((saved, status_then),) = seen
    assert status_then == "running", "the intent must be saved before the container is touched"
    intent = saved.intents[action.key]
    assert intent.action["reason"] == "IdleTimeout"
    assert intent.reclaimed_gpu_s == 600.0
    assert action.key not in report.memory.intents, "the outcome closes the intent"
    assert report.outcomes[0].reclaimed_gpu_s == 600.0
    events = read_events(log, intents=True)
    assert [e["event_type"] for e in events] == ["controller.action_started", "maintenance.idle_kill"]
    started, done = (e["details"] for e in events)
    assert started["phase"] == "started" and done["phase"] == "done"
    assert started["reason"] == done["reason"] == "idle_timeout"
    assert started["intent_at"] == done["intent_at"] and done["key"] == action.key


def test_no_destructive_action_when_the_memory_cannot_be_written(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    c = make_container("sleep 300")
    memory_file = tmp_path / "state" / "memory.json"

    def full_disk(memory: ControllerMemory) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(memory_file))

    ex = executor(docker_client, log, tmp_path / "ledger.json", save_memory=full_disk)
    remove = container_action(
        ActionKind.REMOVE_CONTAINER, make_container(start=False), Reason.CREATED_NEVER_STARTED
    )
    report = ex.execute(make_plan(idle_stop(c), remove), ControllerMemory(), NOW)
    assert [o.outcome for o in report.outcomes] == [Outcome.SKIPPED, Outcome.SKIPPED]
    for o in report.outcomes:
        assert str(memory_file) in o.detail and "Errno 28 ENOSPC" in o.detail, o.detail
    assert docker_client.api.inspect_container(c.id)["State"]["Status"] == "running"
    assert docker_client.api.inspect_container(remove.target.container_id)["State"]["Status"] == "created"
    assert read_events(log, intents=True) == []
    assert report.memory.intents == {}


def test_no_destructive_action_when_the_event_log_cannot_be_written(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log = blocker / "events.jsonl"  # its "directory" is a file: every write fails (ENOTDIR/EEXIST)
    saved: list[ControllerMemory] = []
    c = make_container("sleep 300")
    ex = executor(docker_client, log, tmp_path / "ledger.json", save_memory=saved.append)
    report = ex.execute(make_plan(idle_stop(c)), ControllerMemory(), NOW)
    (o,) = report.outcomes
    assert o.outcome is Outcome.SKIPPED
    assert str(log) in o.detail and "[Errno" in o.detail, o.detail
    assert docker_client.api.inspect_container(c.id)["State"]["Status"] == "running"
    assert report.memory.intents == {}, "the intent of an action that never ran is not kept"


def interrupted(
    action: Action, memory: ControllerMemory, started_s_ago: float, reclaim: float | None
) -> ControllerMemory:
    intent = Intent(
        action=action.model_dump(mode="json"),
        started_at=NOW - timedelta(seconds=started_s_ago),
        reclaimed_gpu_s=reclaim,
    )
    return memory.with_intent(action.key, intent)


def test_an_idle_stop_interrupted_by_a_crash_is_recorded_once_as_the_idle_stop(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    c = make_container("sleep 300")
    action = idle_stop(c)
    memory = interrupted(action, ControllerMemory(), 5, 600.0)
    # The daemon died in `docker stop`; the engine finished the stop without it.
    docker_client.api.stop(c.id, timeout=1)
    ex = executor(docker_client, log, tmp_path / "ledger.json")
    after, outcomes = ex.recover(memory, NOW)
    (o,) = outcomes
    assert (o.kind, o.reason, o.outcome) == (ActionKind.STOP_CONTAINER, Reason.IDLE_TIMEOUT, Outcome.DONE)
    assert o.reclaimed_gpu_s == 600.0, "the reclaimed-idle metric counts it"
    assert after.intents == {}
    (event,) = read_events(log, intents=True)
    assert event["event_type"] == "maintenance.idle_kill"
    d = event["details"]
    assert d["reason"] == "idle_timeout" and d["recovered"] is True and d["phase"] == "done"
    assert d["exit_state"] == "exited" and d["key"] == action.key
    # The controller's own stop of this start, as an uninterrupted stop records it.
    assert after.containers[c.id].stopped_by_controller_at == NOW
    assert after.containers[c.id].started_at == action.target.expected_started_at
    # Recovery is idempotent: the same open intent again (its memory not saved before a second
    # crash) is found already recorded in the event log.
    again, outcomes = ex.recover(memory, NOW)
    assert outcomes == () and again.intents == {}
    assert len(read_events(log, intents=True)) == 1


def test_the_owner_of_a_container_stopped_or_removed_during_a_crash_is_told(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    # The daemon died in `docker stop` (the longest step of a stop, where a crash most likely
    # lands), before the owner's notice; the engine finished the stop. Recovery records the stop:
    # the owner is told, as after a stop that was not interrupted.
    log = tmp_path / "events.jsonl"
    c, created = make_container("sleep 300"), make_container(start=False)
    stop = idle_stop(c)
    remove = container_action(
        ActionKind.REMOVE_CONTAINER, created, Reason.GPU_HOLD_EXPIRED, evidence=GPU_EVIDENCE
    )
    memory = interrupted(remove, interrupted(stop, ControllerMemory(), 5, 600.0), 4, None)
    docker_client.api.stop(c.id, timeout=1)
    docker_client.api.remove_container(created.id)
    notifier = RecordingNotifier()
    ex = RealExecutor(docker_client, EventLog(log), notifier, tmp_path / "ledger.json", clock=lambda: NOW)
    after, outcomes = ex.recover(memory, NOW)
    assert [o.outcome for o in outcomes] == [Outcome.DONE, Outcome.DONE] and after.intents == {}
    assert [(user, severity) for user, _text, severity in notifier.sent] == [("alice", "STOPPED")] * 2
    assert c.name in notifier.sent[0][1] and created.name in notifier.sent[1][1]
    assert f"Your container {c.name} was stopped at" in notifier.sent[0][1]
    assert f"docker start {c.name}" in notifier.sent[0][1]
    by_type = {e["event_type"]: e["details"] for e in read_events(log)}
    assert by_type["maintenance.idle_kill"]["notice"] == {"terminals": 1}
    assert by_type["container.remove"]["notice"] == {"terminals": 1}
    # Recorded once: a second recovery of the same intents finds the lines and tells no one again.
    ex.recover(memory, NOW)
    assert len(notifier.sent) == 2


def test_a_recovered_stop_whose_record_cannot_be_written_yet_tells_its_owner_once(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    full = blocker / "events.jsonl"  # every write fails, as on a full disk
    c = make_container("sleep 300")
    stop = idle_stop(c)
    docker_client.api.stop(c.id, timeout=1)
    notifier = RecordingNotifier()
    ex = RealExecutor(docker_client, EventLog(full), notifier, tmp_path / "ledger.json", clock=lambda: NOW)
    memory = interrupted(stop, ControllerMemory(), 5, 600.0)
    for _ in range(3):  # a pass after pass while the log cannot be written
        memory, _outcomes = ex.recover(memory, NOW)
    assert len(notifier.sent) == 1, "the owner is told once, not once a pass"
    (intent,) = memory.intents.values()
    assert [line["event_type"] for line in intent.closing] == ["maintenance.idle_kill"]
    log = tmp_path / "events.jsonl"  # writable again: the lines kept are written, nothing else
    after, _outcomes = RealExecutor(
        docker_client, EventLog(log), notifier, tmp_path / "ledger.json", clock=lambda: NOW
    ).recover(memory, NOW)
    assert after.intents == {} and len(notifier.sent) == 1
    ((event),) = read_events(log)
    assert event["details"]["notice"] == {"terminals": 1} and event["details"]["recovered"] is True


def test_a_stop_still_under_way_waits_then_is_recorded_as_not_carried_out(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    c = make_container("sleep 300")
    action = idle_stop(c)
    ex = executor(docker_client, log, tmp_path / "ledger.json")
    recent = interrupted(action, ControllerMemory(), 2, 600.0)
    after, outcomes = ex.recover(recent, NOW)
    assert outcomes == () and action.key in after.intents, "the engine may still be stopping it"
    assert read_events(log, intents=True) == []
    old = interrupted(action, ControllerMemory(), 3600, 600.0)
    after, outcomes = ex.recover(old, NOW)
    (o,) = outcomes
    assert o.outcome is Outcome.FAILED and "not carried out" in o.detail
    assert after.intents == {}
    assert c.id not in after.containers  # not stopped: nothing of the controller's to record
    (event,) = read_events(log, intents=True)
    assert event["event_type"] == "controller.action_failed"
    assert event["details"]["phase"] == "failed" and event["details"]["reason"] == "idle_timeout"


def test_an_interrupted_removal_is_recorded_with_its_reason(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    created = make_container(start=False)
    action = container_action(
        ActionKind.REMOVE_CONTAINER, created, Reason.GPU_HOLD_EXPIRED, evidence=GPU_EVIDENCE
    )
    docker_client.api.remove_container(created.id)
    ex = executor(docker_client, log, tmp_path / "ledger.json")
    after, (o,) = ex.recover(interrupted(action, ControllerMemory(), 1, None), NOW)
    assert o.outcome is Outcome.DONE and after.intents == {}
    assert after.removed[created.id].removed_at == NOW  # recorded as an uninterrupted removal is
    types = [(e["event_type"], e["details"]["reason"]) for e in read_events(log, intents=True)]
    assert types == [("container.remove", "gpu_hold_expired"), ("gpu.release", "gpu_hold_expired")]


def test_an_interrupted_gpu_reset_is_never_repeated(docker_client: Any, tmp_path: Path) -> None:
    from controller.plan.types import Target

    log = tmp_path / "events.jsonl"
    action = Action(
        kind=ActionKind.RESET_GPU,
        target=Target(gpu=GPU),
        reason=Reason.GPU_DIRTY,
        message="reset",
        due_at=NOW,
        key=f"ResetGpu:{GPU}:2026-01-30T14:00:00+00:00:GpuDirty",
    )
    ex = executor(docker_client, log, tmp_path / "ledger.json")
    after, (o,) = ex.recover(interrupted(action, ControllerMemory(), 1, None), NOW)
    assert o.outcome is Outcome.FAILED
    assert action.key in after.done, "an unverifiable reset is marked done: the planner alerts instead"
    (event,) = read_events(log, intents=True)
    assert event["details"]["phase"] == "failed" and event["details"]["recovered"] is True


@dataclass
class _OutcomeKept:
    """A stop done while the log broke after its intent line: its outcome lines wait in the intent."""

    ex: RealExecutor
    action: Action
    report: ExecutionReport
    good_log: Path
    mend: Callable[[], None]  # the log writes again


def _outcome_kept_in_the_intent(docker_client: Any, make_container: Any, tmp_path: Path) -> _OutcomeKept:
    good_log = tmp_path / "events.jsonl"
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    c = make_container("sleep 300")
    action = idle_stop(c)
    ex = executor(docker_client, good_log, tmp_path / "ledger.json")
    # The intent line goes out, then the log breaks before the outcome is written.
    broken = EventLog(blocker / "events.jsonl")
    real_write_durable = ex._events.write_durable

    def write_then_break(event_type: str, **kw: Any) -> None:
        if event_type == "controller.action_started":
            real_write_durable(event_type, **kw)
        else:
            broken.write_durable(event_type, **kw)

    def mend() -> None:
        ex._events.write_durable = real_write_durable  # type: ignore[method-assign]

    ex._events.write_durable = write_then_break  # type: ignore[method-assign]
    report = ex.execute(make_plan(action), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.DONE
    return _OutcomeKept(ex, action, report, good_log, mend)


def test_outcome_lines_that_could_not_be_written_are_written_next_pass(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    k = _outcome_kept_in_the_intent(docker_client, make_container, tmp_path)
    kept = k.report.memory.intents[k.action.key]
    assert kept.closing and kept.closing[0]["event_type"] == "maintenance.idle_kill"
    k.mend()
    after, outcomes = k.ex.recover(k.report.memory, NOW)
    assert outcomes == (), "already counted when it was done"
    assert after.intents == {}
    types = [e["event_type"] for e in read_events(k.good_log, intents=True)]
    assert types == ["controller.action_started", "maintenance.idle_kill"]


def test_outcome_lines_written_late_are_not_written_again_after_a_kill_before_the_save(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    # The outcome of a stop could not be written (a full disk): its lines wait in the intent. The
    # next pass writes them, and the daemon is killed before the memory saying so is saved. The
    # start after finds the intent still holding them: they are in the log already, once.
    k = _outcome_kept_in_the_intent(docker_client, make_container, tmp_path)
    saved = ControllerMemory.model_validate_json(k.report.memory.model_dump_json())  # as on disk
    assert saved.intents[k.action.key].closing
    k.mend()
    k.ex.recover(saved, NOW)  # written; the memory without the intent is never saved
    after, outcomes = k.ex.recover(saved, NOW)
    assert outcomes == () and after.intents == {}
    types = [e["event_type"] for e in read_events(k.good_log, intents=True)]
    assert types == ["controller.action_started", "maintenance.idle_kill"], "the outcome recorded twice"


def test_an_interrupted_stop_is_still_recorded_when_the_memory_is_lost_too(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    from controller.act.events import tail
    from controller.act.salvage import memory_from_events

    log = tmp_path / "events.jsonl"
    c = make_container("sleep 300")
    action = idle_stop(c)
    memory = idle_memory(c, 600)

    class Killed(Exception):
        pass

    ex = executor(docker_client, log, tmp_path / "ledger.json")
    real_stop = ex._docker.stop

    def die_in_stop(cid: str, *, timeout_s: int) -> None:
        raise Killed  # the daemon dies here: the intent line is written, nothing else

    ex._docker.stop = die_in_stop  # type: ignore[method-assign]
    with pytest.raises(Killed):
        ex._one(action, memory, NOW)
    ex._docker.stop = real_stop  # type: ignore[method-assign]
    docker_client.api.stop(c.id, timeout=1)  # the engine finished the stop
    # The memory file is corrupt: what is left is the event log.
    rebuilt = memory_from_events(tail(log, 1000), NOW + timedelta(seconds=5))
    assert list(rebuilt.intents) == [action.key]
    after, (o,) = executor(docker_client, log, tmp_path / "ledger.json").recover(
        rebuilt, NOW + timedelta(seconds=5)
    )
    assert (o.reason, o.outcome, o.reclaimed_gpu_s) == (Reason.IDLE_TIMEOUT, Outcome.DONE, 600.0)
    assert after.intents == {}
    types = [(e["event_type"], e["details"]["phase"]) for e in read_events(log, intents=True)]
    assert types == [("controller.action_started", "started"), ("maintenance.idle_kill", "done")]
    assert memory_from_events(tail(log, 1000), NOW).intents == {}, "closed: not rebuilt again"


def test_a_gpu_reset_killed_before_its_memory_was_saved_is_not_repeated(
    docker_client: Any, tmp_path: Path
) -> None:
    from controller.plan.types import Target

    log = tmp_path / "events.jsonl"
    marker = tmp_path / "resets"
    action = Action(
        kind=ActionKind.RESET_GPU,
        target=Target(gpu=GPU),
        reason=Reason.GPU_DIRTY,
        message="reset",
        due_at=NOW,
        key=f"ResetGpu:{GPU}:2026-01-30T14:00:00+00:00:GpuDirty",
    )
    saved: list[ControllerMemory] = []
    ex = RealExecutor(
        docker_client,
        EventLog(log),
        RecordingNotifier(),
        tmp_path / "ledger.json",
        reset_command=["sh", "-c", f'echo "$1" >> {marker}', "reset", "{uuid}"],
        clock=lambda: NOW,
        save_memory=saved.append,
        reset_precheck=lambda gpu: [],  # the fresh re-check is tested in test_safety_reset.py
    )
    report = ex.execute(make_plan(action), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.DONE and action.key in report.memory.done
    # Killed now: the outcome line is written, the memory on disk is the one saved with the intent.
    on_disk = saved[-1]
    assert action.key in on_disk.intents and action.key not in on_disk.done
    after, outcomes = ex.recover(on_disk, NOW)
    assert outcomes == () and after.intents == {}
    assert action.key in after.done, "the planner must see the reset as done, or it resets again"
    assert marker.read_text().split() == [GPU]


def test_a_stop_and_a_removal_killed_before_their_memory_was_saved_keep_the_controllers_record(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    # What the controller's own stop and removal leave in its memory (the stop of this start, the
    # removed container) keeps them off the removal and release breakers. Killed after their
    # outcome lines, before the memory saying so, recovery finds the lines and closes the intents:
    # the record must be what an uninterrupted run would have saved.
    log = tmp_path / "events.jsonl"
    running, stopped = make_container("sleep 300"), make_container(start=False)
    stop = idle_stop(running)
    remove = container_action(
        ActionKind.REMOVE_CONTAINER, stopped, Reason.GPU_HOLD_EXPIRED, evidence=GPU_EVIDENCE
    )
    saved: list[ControllerMemory] = []
    ex = executor(docker_client, log, tmp_path / "ledger.json", save_memory=saved.append)
    cm = idle_memory(running, 600).containers[running.id]
    started = cm.model_copy(update={"started_at": stop.target.expected_started_at})
    memory = ControllerMemory(containers={running.id: started})  # as the planner keeps it
    # Side by side, as the daemon runs them: each saves its intent, then records its outcome.
    stopping = ex.execute(make_plan(stop, memory=memory), memory, NOW)
    removing = ex.execute(make_plan(remove), ControllerMemory(), NOW)
    assert [o.outcome for o in (*stopping.outcomes, *removing.outcomes)] == [Outcome.DONE, Outcome.DONE]
    assert stopping.memory.containers[running.id].stopped_by_controller_at == NOW
    assert stopped.id in removing.memory.removed
    # Killed now: the memory on disk holds both intents, and nothing either action did.
    on_disk = saved[0].with_intent(remove.key, saved[1].intents[remove.key])
    assert on_disk.containers[running.id].stopped_by_controller_at is None and on_disk.removed == {}
    after, outcomes = ex.recover(on_disk, NOW + timedelta(seconds=5))
    assert outcomes == () and after.intents == {}, "the outcome lines stand: nothing is written again"
    lines = {e["event_type"]: e for e in read_events(log) if e["details"].get("phase")}
    assert set(lines) == {"maintenance.idle_kill", "container.remove"}
    # Marked when the outcome was recorded (the line's time), as the lost save had it.
    stopped_at = parse_timestamp(lines["maintenance.idle_kill"]["timestamp"])
    assert after.containers[running.id].stopped_by_controller_at == stopped_at
    assert after.containers[running.id].started_at == stop.target.expected_started_at
    assert after.removed[stopped.id] == RemovedContainer(
        name=remove.target.container or "", removed_at=parse_timestamp(lines["container.remove"]["timestamp"])
    )


def test_the_hold_a_stop_notice_named_is_recorded_with_the_stop_and_by_its_recovery(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    # The stop's notice told the owner how long the stopped container is kept; the hold rule keeps
    # it that long whatever the policy says later, from what the stop left in the memory. Killed
    # after the outcome line, before the memory saying so: recovery records the same promise.
    log = tmp_path / "events.jsonl"
    running = make_container("sleep 300")
    kept = {"kept_after_stop": "the stopped container for 2d after the stop", "kept_after_stop_s": 172800.0}
    stop = container_action(
        ActionKind.STOP_CONTAINER,
        running,
        Reason.MAX_RUNTIME_EXCEEDED,
        params={"timeout_s": 1, "remove": False},
        evidence={**GPU_EVIDENCE, **kept},
    )
    saved: list[ControllerMemory] = []
    ex = executor(docker_client, log, tmp_path / "ledger.json", save_memory=saved.append)
    memory = ControllerMemory(
        containers={
            running.id: ContainerMemory(container_id=running.id, started_at=stop.target.expected_started_at)
        }
    )
    report = ex.execute(make_plan(stop, memory=memory), memory, NOW)
    assert report.outcomes[0].outcome is Outcome.DONE, report.outcomes[0].detail
    cm = report.memory.containers[running.id]
    assert (cm.stopped_by_controller_at, cm.promised_hold_s) == (NOW, 172800.0)
    (on_disk,) = saved
    assert on_disk.containers[running.id].promised_hold_s is None
    after, outcomes = ex.recover(on_disk, NOW + timedelta(seconds=5))
    assert outcomes == () and after.intents == {}
    assert after.containers[running.id].promised_hold_s == 172800.0


# --- the last look: the container is checked again after its intent is written -----------------
# Writing the intent fsyncs the memory and an event line, and the memory's save may wait for other
# actions' saves: a container restarted meanwhile is a new, live start that no rule judged.


def test_a_container_restarted_while_its_stop_intent_is_written_is_not_stopped(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    c = make_container("sleep 300")
    planned = docker_client.api.inspect_container(c.id)["State"]["StartedAt"]

    def save(memory: ControllerMemory) -> None:
        docker_client.api.restart(c.id, timeout=0)  # the owner restarts it: a fresh start

    ex = executor(docker_client, log, tmp_path / "ledger.json", save_memory=save)
    action = idle_stop(c)
    report = ex.execute(make_plan(action, memory=idle_memory(c, 600)), idle_memory(c, 600), NOW)
    (o,) = report.outcomes
    assert o.outcome is Outcome.SKIPPED and o.detail.startswith("restarted since the plan"), o.detail
    state = docker_client.api.inspect_container(c.id)["State"]
    assert state["Status"] == "running" and state["StartedAt"] != planned
    assert report.memory.intents == {}
    started, closed = read_events(log, intents=True)
    assert started["event_type"] == "controller.action_started"
    assert closed["details"]["phase"] == "skipped" and closed["details"]["key"] == action.key


def test_a_container_started_and_stopped_again_while_its_removal_intent_is_written_is_kept(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    c = make_container("sleep 300")
    docker_client.api.stop(c.id, timeout=0)
    planned = docker_client.api.inspect_container(c.id)["State"]["StartedAt"]
    action = container_action(ActionKind.REMOVE_CONTAINER, c, Reason.STOPPED_HOLD_EXPIRED)
    assert action.target.expected_state == "exited"

    def save(memory: ControllerMemory) -> None:
        # Its owner used it again (a new start, work written to its layer) and stopped it.
        docker_client.api.start(c.id)
        docker_client.api.stop(c.id, timeout=0)

    ex = executor(docker_client, log, tmp_path / "ledger.json", save_memory=save)
    report = ex.execute(make_plan(action), ControllerMemory(), NOW)
    (o,) = report.outcomes
    assert o.outcome is Outcome.SKIPPED and o.detail.startswith("restarted since the plan"), o.detail
    state = docker_client.api.inspect_container(c.id)["State"]
    assert state["Status"] == "exited" and state["StartedAt"] != planned
    started, closed = read_events(log, intents=True)
    assert started["event_type"] == "controller.action_started"
    assert closed["details"]["phase"] == "skipped" and closed["details"]["key"] == action.key


def test_a_container_removed_while_its_stop_intent_is_written_is_already_done(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    c = make_container("sleep 300")

    def save(memory: ControllerMemory) -> None:
        docker_client.api.remove_container(c.id, force=True)

    ex = executor(docker_client, log, tmp_path / "ledger.json", save_memory=save)
    report = ex.execute(make_plan(idle_stop(c)), ControllerMemory(), NOW)
    (o,) = report.outcomes
    assert o.outcome is Outcome.ALREADY_DONE, o.detail
    assert report.memory.intents == {}
    started, closed = read_events(log, intents=True)
    assert started["event_type"] == "controller.action_started"
    assert closed["details"]["phase"] == "done"


def test_an_outcome_recorded_before_the_clock_was_stepped_back_is_found(
    docker_client: Any, tmp_path: Path
) -> None:
    # Killed after a release's outcome line, before the memory saying so; the host comes back
    # with its clock an hour behind (a dead RTC battery, NTP not synced yet), and lines are
    # written before the intent is looked at (the engine is slow to start, DS01's scripts log).
    # The log is no longer in time order: the outcome is still found, and not recorded twice.
    from controller.plan.types import Target

    log, ledger = tmp_path / "events.jsonl", tmp_path / "ledger.json"
    entry = {
        "gpu": GPU,
        "container": "gone-job",
        "user": "alice",
        "allocated_at": "2026-01-30T09:00:00+00:00",
    }
    ledger.write_text(
        '{"version": 1, "allocations": [{' + ", ".join(f'"{k}": "{v}"' for k, v in entry.items()) + "}]}"
    )
    action = Action(
        kind=ActionKind.RELEASE_ALLOCATION,
        target=Target(container="gone-job", gpu=GPU, user="alice", ledger_entry=entry),
        reason=Reason.LEAKED_ALLOCATION,
        message="release leaked row",
        due_at=NOW,
        key="ReleaseAllocation:gone-job",
    )
    saved: list[ControllerMemory] = []
    ex = RealExecutor(
        docker_client,
        EventLog(log, clock=lambda: NOW),
        RecordingNotifier(),
        ledger,
        clock=lambda: NOW,
        save_memory=saved.append,
    )
    report = ex.execute(make_plan(action), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.DONE, report.outcomes[0].detail
    (on_disk,) = saved
    behind = EventLog(log, clock=lambda: NOW - timedelta(hours=1))
    behind.write("detection.container_discovered", user=None, details={"container": "other"})
    after, outcomes = ex.recover(on_disk, NOW - timedelta(hours=1) + timedelta(minutes=1))
    assert outcomes == () and after.intents == {}
    releases = [e for e in read_events(log) if e["event_type"] == "gpu.release"]
    assert len(releases) == 1, "the release was recorded twice"


def test_a_stop_interrupted_across_a_clock_stepped_back_is_recorded_as_done(
    docker_client: Any, make_container: Any, tmp_path: Path
) -> None:
    # The host's clock ran an hour ahead (a bad RTC) when the stop's intent was written; NTP
    # stepped it back while the engine carried the stop out, and the daemon was killed during the
    # stop. The engine's FinishedAt is an hour "before" the intent. Recovered right after the
    # restart, the clock still behind the intent says it was stepped back: the container has the
    # start the intent's re-check saw running and is stopped, the stop was carried out, and it is
    # recorded as done (the owner told, the controller's stop kept), neither left open for an hour
    # nor then recorded as "not carried out".
    c = make_container("sleep 300")
    stop = idle_stop(c)
    real_now = datetime.now(UTC)
    ahead = Intent(action=stop.model_dump(mode="json"), started_at=real_now + timedelta(hours=1))
    memory = ControllerMemory().with_intent(stop.key, ahead)
    docker_client.api.stop(c.id, timeout=1)
    log, notifier = tmp_path / "events.jsonl", RecordingNotifier()
    ex = RealExecutor(
        docker_client, EventLog(log), notifier, tmp_path / "ledger.json", clock=lambda: real_now
    )
    after, outcomes = ex.recover(memory, real_now)
    assert [(o.outcome, o.detail) for o in outcomes] == [
        (Outcome.DONE, "recovered after a restart: found exited after the stop began")
    ]
    assert after.intents == {}
    assert after.containers[c.id].stopped_by_controller_at == real_now
    assert [user for user, _text, severity in notifier.sent] == ["alice"], "the owner is told"
    (event,) = read_events(log, intents=True)
    assert event["event_type"] == "maintenance.idle_kill" and event["details"]["phase"] == "done"
    # Recovered once the clock has caught up with the intent, nothing tells that step from a stop
    # its owner made before the intent was written: it is recorded as someone else's (no notice,
    # no mark: the removal breaker counts it, and its hold is the policy's), not left open either.
    later = real_now + timedelta(hours=1, minutes=5)
    log, notifier = tmp_path / "events-later.jsonl", RecordingNotifier()
    ex = RealExecutor(docker_client, EventLog(log), notifier, tmp_path / "ledger.json", clock=lambda: later)
    after, (o,) = ex.recover(memory, later)
    assert o.outcome is Outcome.SKIPPED and "stopped by someone else" in o.detail, o.detail
    assert after.intents == {} and c.id not in after.containers
    assert notifier.sent == []
    (event,) = read_events(log, intents=True)
    assert event["event_type"] == "controller.action_skipped" and event["details"]["phase"] == "skipped"


def test_an_interrupted_release_is_not_recorded_done_while_the_ledger_cannot_be_read(
    docker_client: Any, tmp_path: Path
) -> None:
    from controller.plan.types import Target

    log, ledger = tmp_path / "events.jsonl", tmp_path / "ledger.json"
    entry = {
        "gpu": GPU,
        "container": "gone-job",
        "user": "alice",
        "allocated_at": "2026-01-30T09:00:00+00:00",
    }
    action = Action(
        kind=ActionKind.RELEASE_ALLOCATION,
        target=Target(container="gone-job", gpu=GPU, user="alice", ledger_entry=entry),
        reason=Reason.LEAKED_ALLOCATION,
        message="release leaked row",
        due_at=NOW,
        key="ReleaseAllocation:gone-job",
    )
    # The row is still there, in a ledger another writer left damaged (or mid-write in place).
    ledger.write_text('{"version": 1, "allocations": [{"gpu": "' + GPU + '", "container": "gone-job", "us')
    ex = executor(docker_client, log, ledger)
    memory = interrupted(action, ControllerMemory(), 5, None)
    after, outcomes = ex.recover(memory, NOW)
    assert outcomes == () and action.key in after.intents, "unreadable is not empty: the intent stays open"
    assert read_events(log, intents=True) == []
    ledger.write_text(
        '{"version": 1, "allocations": [{' + ", ".join(f'"{k}": "{v}"' for k, v in entry.items()) + "}]}"
    )
    after, (o,) = ex.recover(after, NOW)
    assert o.outcome is Outcome.FAILED and after.intents == {}, "readable again: the row is still there"
    (event,) = read_events(log, intents=True)
    assert event["event_type"] != "gpu.release" and event["details"]["phase"] == "failed", event
