"""A container an engine or host restart stopped keeps the restart hold after a lost memory.

Who stopped a container is decided once, at the first pass after the restart, from what the
controller had seen before it (running, in a host that was down for hours) and the engine's start
time; the mark (``stopped_by_restart_at``) then stays for that start of the container. A memory lost
after that (corrupt, deleted, restored from an older backup) decided it again from nothing: a
container the controller had seen running across a long reboot, or one a second engine restart since
put well before "the restart", got its normal hold, and was removed at once: with
``restartStoppedHold: null``, a container that was to be kept until an admin decides. The daemon now
writes each mark to the event log (``controller.restart_stop``) and the salvage rebuilds it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.act.events import EventType, format_line, tail, utc_timestamp
from controller.act.salvage import memory_from_event_log, memory_from_events, not_older_than_the_log
from controller.memory import ContainerMemory, ControllerMemory
from controller.plan.planner import plan
from controller.plan.rules.cleanup import restart_mark_details
from controller.plan.types import Plan
from controller.snapshot import ContainerObs, ContainerState
from tests.fixtures import builders as b

# The host was down three hours: the engine started 40 minutes before T0, the shutdown stopped the
# job three hours before that. The controller saw it running before the shutdown.
ENGINE_START = b.ago(minutes=40)
SHUTDOWN = ENGINE_START - timedelta(hours=3)
JOB = b.exited(
    "job", gpus=[b.GPU0], started_at=b.ago(days=2), finished_at=SHUTDOWN, exit_code=137
)  # the normal holds (15 min GPU, 30 min container) long past; the restart hold (24 h) not


class Host:
    """Passes of the real planner; between them, the ``controller.restart_stop`` lines the daemon
    writes (``restart_mark_details`` of the memories before and after a pass)."""

    def __init__(self, **glob: Any) -> None:
        self.desired = b.desired(glob=b.global_policy(**glob))
        self.memory = ControllerMemory(
            containers={
                JOB.id: ContainerMemory(
                    container_id=JOB.id,
                    name=JOB.name,
                    started_at=JOB.started_at,
                    last_state=ContainerState.RUNNING.value,
                )
            },
            last_pass_at=SHUTDOWN - timedelta(minutes=1),
        )
        self.events: list[dict[str, Any]] = []

    def run(self, now: datetime, engine_start: datetime, *containers: ContainerObs) -> Plan:
        snap = b.snapshot(observed_at=now, containers=containers).model_copy(
            update={"engine_started_at": engine_start}
        )
        p = plan(snap, self.desired, self.memory, now)
        for details in restart_mark_details(self.memory, p.memory):
            line = format_line(
                EventType.RESTART_STOP, user=None, source="ds01-controller", details=details, at=now
            )
            self.events.append(json.loads(line))
        self.memory = p.memory
        return p

    def lose_memory(self, now: datetime) -> None:
        self.memory = memory_from_events(self.events, now)


def test_a_lost_memory_keeps_the_restart_hold_of_a_container_seen_running_across_a_long_reboot() -> None:
    h = Host()
    first = h.run(b.T0, ENGINE_START, JOB)
    assert b.removed(first) == []
    assert h.memory.containers[JOB.id].stopped_by_restart_at == ENGINE_START
    h.lose_memory(b.T0 + timedelta(minutes=5))
    later = h.run(b.T0 + timedelta(minutes=10), ENGINE_START, JOB)
    assert b.removed(later) == [], "removed by its normal hold: the restart's mark was lost"
    (d,) = [d for d in later.deferred if d.target.container == "job"]
    assert d.due_at == SHUTDOWN + timedelta(hours=24)
    assert b.removed(h.run(SHUTDOWN + timedelta(hours=24, seconds=1), ENGINE_START, JOB)) == ["job"]


def test_a_second_engine_restart_after_the_loss_keeps_it_for_an_admin() -> None:
    """``restartStoppedHold: null``: kept until an admin removes it, across a lost memory and an
    engine restarted again since."""
    h = Host(restart_stopped_hold_s=None)
    assert b.removed(h.run(b.T0, ENGINE_START, JOB)) == []
    second_start = b.T0 + timedelta(days=3)
    h.lose_memory(second_start + timedelta(minutes=1))
    p = h.run(second_start + timedelta(minutes=5), second_start, JOB)
    assert b.removed(p) == [], "removed: it was to be kept until an admin removes it"
    (d,) = [d for d in p.deferred if d.target.container == "job"]
    assert d.due_at is None and "kept until an admin removes it" in d.message


def test_the_mark_is_for_that_start_only() -> None:
    h = Host()
    h.run(b.T0, ENGINE_START, JOB)
    h.lose_memory(b.T0 + timedelta(minutes=5))
    # Started again by its owner after the restart, and stopped by them: its normal hold.
    again = JOB.model_copy(update={"started_at": b.T0, "finished_at": b.T0 + timedelta(minutes=5)})
    assert b.removed(h.run(b.T0 + timedelta(hours=1), ENGINE_START, again)) == ["job"]


def test_a_memory_restored_from_an_older_backup_keeps_the_mark(tmp_path: Path) -> None:
    """A backup from before the controller first saw the job: the log adds the mark made since."""
    h = Host()
    h.run(b.T0, ENGINE_START, JOB)
    log = tmp_path / "events.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in h.events))
    backup = ControllerMemory(last_pass_at=b.ago(days=3))
    h.memory = not_older_than_the_log(backup, log, b.T0 + timedelta(minutes=5))
    assert b.removed(h.run(b.T0 + timedelta(minutes=10), ENGINE_START, JOB)) == []
    assert h.memory.containers[JOB.id].stopped_by_restart_at == ENGINE_START


def test_one_line_per_mark_when_it_is_made() -> None:
    h = Host()
    h.run(b.T0, ENGINE_START, JOB)
    h.run(b.T0 + timedelta(minutes=1), ENGINE_START, JOB)
    assert [e["details"] for e in h.events] == [
        {
            "container": "job",
            "container_id": JOB.id,
            "started_at": utc_timestamp(JOB.started_at),
            "restart_at": utc_timestamp(ENGINE_START),
        }
    ]


def test_the_daemon_writes_the_mark_to_the_event_log(tmp_path: Path) -> None:
    from tests.fixtures.scripted import FailingExecutor, ScriptedObserver, make_controller

    running = b.running("job", gpus=[b.GPU0], started_at=JOB.started_at, sig=b.signals(SHUTDOWN))

    def at(now: datetime, c: ContainerObs, engine_start: datetime | None) -> Any:
        snap = b.snapshot(observed_at=now, containers=[c])
        return snap.model_copy(update={"engine_started_at": engine_start})

    before = SHUTDOWN - timedelta(minutes=1)
    clock = [before]
    observer = ScriptedObserver(at(before, running, ENGINE_START - timedelta(days=9)))
    controller = make_controller(tmp_path, observer, clock, FailingExecutor())
    controller.run_pass()
    clock[0] = b.T0
    observer.current = at(b.T0, JOB, ENGINE_START)
    controller.run_pass()
    log = tmp_path / "events.jsonl"
    marks = [e["details"] for e in tail(log, 1000) if e["event_type"] == EventType.RESTART_STOP]
    assert [(m["container_id"], m["restart_at"]) for m in marks] == [(JOB.id, utc_timestamp(ENGINE_START))]
    rebuilt = memory_from_event_log(log, b.T0 + timedelta(minutes=5))
    assert rebuilt.containers[JOB.id].stopped_by_restart_at == ENGINE_START
