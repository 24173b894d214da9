"""The hold a stop notice named outlives a lost memory: a container the controller stopped is never
removed before the time its owner was told, whatever happened to ``memory.json`` since.

The executor records the hold its stop notice named in the memory (``promised_hold_s``, see
``test_hold_promise.py``); a memory lost afterwards (corrupt, deleted, restored from a backup older
than the stop) started without it, and a policy reloaded with a shorter hold removed the stopped
container, and every file outside /workspace, days before the time the notice said. The salvage now
rebuilds the promise from the event log, for the start that was stopped only.

The real executor stops the container on a simulated host and writes the real event log; the memory
is rebuilt from that log by the salvage; the real planner decides the removal.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from loguru import logger

from controller.act.events import EventLog, EventType, format_line
from controller.act.executor import RealExecutor
from controller.act.salvage import memory_from_event_log, not_older_than_the_log
from controller.memory import ContainerMemory, ControllerMemory
from controller.plan.desired import EffectivePolicy
from controller.plan.planner import plan
from controller.plan.types import ActionKind, Plan
from controller.snapshot import Domain
from tests.fixtures import builders as b
from tests.fixtures.act import RecordingNotifier
from tests.unit.fake_host import FakeContainer, FakeHost
from tests.unit.test_hold_promise import AFTER, BEFORE, DAY, KEPT_2D, KEPT_AFTER_STOP_S


class Stopped:
    """A busy GPU job the controller stopped at its 10 h max runtime (notice: kept for 2 d), as the
    daemon does it: passes every 15 minutes, each plan carried out by the real executor."""

    def __init__(self, tmp_path: Path) -> None:
        self.host = FakeHost(term_ignored_s=0.0)
        self.job: FakeContainer = self.host.add("job", started_ago_s=9.5 * b.HOUR, busy=True)
        self.log = tmp_path / "events.jsonl"
        self.notifier = RecordingNotifier()
        executor = RealExecutor(
            self.host.client, EventLog(self.log), self.notifier, tmp_path / "ledger", clock=self.host.clock
        )
        memory = ControllerMemory()
        for _ in range(8):
            now = self.host.clock()
            p = plan(self.host.snapshot(), b.desired(BEFORE), memory, now)
            memory = executor.execute(p, memory, now).memory
            if any(a.kind is ActionKind.STOP_CONTAINER for a in p.actions):
                break
            self.host.advance(15 * 60)
        assert self.job.status == "exited" and self.job.finished_at is not None
        self.finished: datetime = self.job.finished_at
        self.memory = memory
        assert memory.containers[self.job.id].promised_hold_s == 2 * DAY
        assert any(KEPT_2D in text for _, text, _ in self.notifier.sent)

    def lost(self, after: timedelta) -> ControllerMemory:
        """The memory the salvage rebuilds from the event log, ``after`` the stop."""
        return memory_from_event_log(self.log, self.finished + after)

    def hold_pass(self, memory: ControllerMemory, after: timedelta, pol: EffectivePolicy = AFTER) -> Plan:
        self.host.now = self.finished + after
        return plan(self.host.snapshot(), b.desired(pol), memory, self.host.now)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def rewrite(self, lines: list[dict[str, Any]]) -> None:
        self.log.write_text("".join(json.dumps(line) + "\n" for line in lines))

    def stop_lines_only(self) -> list[dict[str, Any]]:
        """The log's lines without the hold the warnings before the stop named (they bind it too:
        ``test_warning_hold_promise.py``), so that only the stop's own lines can rebuild it."""
        lines = self.lines()
        for e in lines:
            if e["event_type"] == EventType.WARNING:
                assert e["details"].pop(KEPT_AFTER_STOP_S) == 2 * DAY
        return lines


def test_a_lost_memory_keeps_the_hold_the_stop_notice_named(tmp_path: Path) -> None:
    s = Stopped(tmp_path)
    lost = s.lost(timedelta(minutes=30))
    # Past the reloaded hold of 1 h, the memory lost: kept until the 2 d its owner was told.
    waiting = s.hold_pass(lost, timedelta(hours=2))
    assert b.removed(waiting) == [], "removed 2h after its stop; the notice said 2d"
    assert lost.containers[s.job.id].promised_hold_s == 2 * DAY
    (d,) = [d for d in waiting.deferred if d.target.container == "job"]
    assert d.due_at == s.finished + timedelta(days=2)
    assert d.evidence["promised_hold_s"] == 2 * DAY
    assert b.removed(s.hold_pass(waiting.memory, timedelta(days=2, seconds=1))) == ["job"]


def test_a_memory_restored_from_a_backup_older_than_the_stop_keeps_it_too(tmp_path: Path) -> None:
    s = Stopped(tmp_path)
    backup = s.memory.forget_container(s.job.id).model_copy(update={"last_pass_at": s.finished})
    restored = not_older_than_the_log(backup, s.log, s.finished + timedelta(hours=1))
    assert b.removed(s.hold_pass(restored, timedelta(hours=2))) == []
    assert b.removed(s.hold_pass(restored, timedelta(days=2, seconds=1))) == ["job"]


def test_a_backup_given_the_logged_hold_of_its_own_start_says_so_in_the_journal(tmp_path: Path) -> None:
    s = Stopped(tmp_path)
    backup = s.memory.forget_container(s.job.id).model_copy(update={"last_pass_at": s.finished})
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    try:
        restored = not_older_than_the_log(backup, s.log, s.finished + timedelta(hours=1))
    finally:
        logger.remove(sink)
    assert restored.containers[s.job.id].promised_hold_s == 2 * DAY
    assert not restored.rebuilt
    assert any("holds named by stop notices" in line for line in lines), lines


def test_either_line_of_the_stop_is_enough(tmp_path: Path) -> None:
    """The ``controller.action_started`` line names the hold (a stop event shrunk to fit a line
    loses its evidence); a log written before it did keeps it in the stop event's evidence."""
    s = Stopped(tmp_path)
    lines = s.stop_lines_only()
    (started,) = [
        e
        for e in lines
        if e["event_type"] == EventType.ACTION_STARTED and e["details"]["kind"] == "StopContainer"
    ]
    (stop,) = [e for e in lines if e["details"].get("phase") == "done" and "removed" in e["details"]]
    evidence = stop["details"].pop("evidence")
    s.rewrite(lines)
    assert b.removed(s.hold_pass(s.lost(timedelta(minutes=30)), timedelta(hours=2))) == []
    assert started["details"].pop(KEPT_AFTER_STOP_S) == 2 * DAY
    stop["details"]["evidence"] = evidence
    s.rewrite(lines)
    assert b.removed(s.hold_pass(s.lost(timedelta(minutes=30)), timedelta(hours=2))) == []


def test_the_promise_is_not_carried_to_a_later_start(tmp_path: Path) -> None:
    """Started again by its owner and stopped by them after the memory was lost: today's hold."""
    s = Stopped(tmp_path)
    lost = s.lost(timedelta(minutes=30))
    s.job.started_at = s.finished + timedelta(hours=1)
    s.job.finished_at = s.finished + timedelta(hours=2)
    due = s.hold_pass(lost, timedelta(hours=3, seconds=1))
    assert b.removed(due) == ["job"]


def test_a_stop_that_removed_the_container_promises_nothing(tmp_path: Path) -> None:
    s = Stopped(tmp_path)
    lines = s.stop_lines_only()
    (stop,) = [e for e in lines if e["details"].get("phase") == "done" and "removed" in e["details"]]
    stop["details"]["removed"] = True
    s.rewrite(lines)
    assert s.lost(timedelta(minutes=30)).containers == {}


def test_a_clock_step_after_the_stop_is_still_not_hold_time_for_the_rebuilt_record(tmp_path: Path) -> None:
    """The salvage rebuilds the promise and the forward step: the record it starts from gathered no
    step, and the planner gives it the steps seen since the stop, as it does a container with no
    record."""
    s = Stopped(tmp_path)
    step_s = 3 * b.HOUR
    seen_at = s.finished + timedelta(hours=4)  # a real hour after the stop, on the wall clock 4 h
    details = {"seen_at": seen_at, "step_s": step_s, "direction": "forward"}
    line = format_line(EventType.CLOCK_STEP, user=None, source="ds01-controller", details=details, at=seen_at)
    with s.log.open("ab") as f:
        f.write(line)
    lost = s.lost(timedelta(hours=6))
    # On the wall clock, 2 d 1 h after the stop: a real 1 h 58 min before the 2 d it was told.
    waiting = s.hold_pass(lost, timedelta(days=2, hours=1))
    assert b.removed(waiting) == [], "the step counted as hold time"
    (d,) = [d for d in waiting.deferred if d.target.container == "job"]
    assert d.due_at == s.finished + timedelta(days=2, seconds=step_s)
    assert d.evidence["clock_step_discount_s"] == step_s
    assert b.removed(s.hold_pass(waiting.memory, timedelta(days=2, hours=3, seconds=1))) == ["job"]


def test_a_line_for_a_later_start_does_not_replace_the_memorys_own_record(tmp_path: Path) -> None:
    """The event log is shared with scripts that run as the user, and its lines are not
    authenticated. A line claiming a later start of the container (a restart's mark, here) at the
    daemon's next start does not replace the record the memory holds: read cleanly, the memory is the
    controller's own, and it keeps the hold the stop notice named."""
    s = Stopped(tmp_path)
    forged = format_line(
        EventType.RESTART_STOP,
        user=None,
        source="ds01-controller",
        details={
            "container": "job",
            "container_id": s.job.id,
            "started_at": s.finished + timedelta(minutes=1),
            "restart_at": s.finished + timedelta(minutes=2),
        },
        at=s.finished + timedelta(minutes=3),
    )
    with s.log.open("ab") as f:
        f.write(forged)
    restarted = not_older_than_the_log(s.memory, s.log, s.finished + timedelta(minutes=30))
    assert restarted.containers[s.job.id] == s.memory.containers[s.job.id]
    waiting = s.hold_pass(restarted, timedelta(hours=2))
    assert b.removed(waiting) == [], "removed 2h after its stop; the notice said 2d"
    assert b.removed(s.hold_pass(waiting.memory, timedelta(days=2, seconds=1))) == ["job"]


def _backup_of_an_earlier_start(s: Stopped) -> ControllerMemory:
    """The memory saved before the owner last started the job: its record is of the start before."""
    record = s.memory.containers[s.job.id]
    earlier = ContainerMemory(
        container_id=s.job.id,
        name="job",
        started_at=record.started_at - timedelta(days=1),
        last_state="exited",
    )
    containers = {**s.memory.containers, s.job.id: earlier}
    return s.memory.model_copy(
        update={"containers": containers, "last_pass_at": s.finished - timedelta(hours=10)}
    )


def test_a_backup_that_saw_an_earlier_start_keeps_the_hold_named_for_the_later_one(tmp_path: Path) -> None:
    """A memory restored from a backup saved before the job's last start holds a record of the start
    before. Its own record is kept (the log's lines are not authenticated), but the planner, listing
    the start the log's stop notice names, starts from the log's record of it: the 2 d still bind."""
    s = Stopped(tmp_path)
    restored = not_older_than_the_log(
        _backup_of_an_earlier_start(s), s.log, s.finished + timedelta(minutes=30)
    )
    waiting = s.hold_pass(restored, timedelta(hours=2))
    assert b.removed(waiting) == [], "removed 2h after its stop; the notice said 2d"
    (d,) = [d for d in waiting.deferred if d.target.container == "job"]
    assert d.due_at == s.finished + timedelta(days=2)
    assert waiting.memory.rebuilt == {}, "taken by the first pass that listed the container"
    assert b.removed(s.hold_pass(waiting.memory, timedelta(days=2, seconds=1))) == ["job"]


def test_the_later_starts_record_waits_for_a_pass_that_lists_containers(tmp_path: Path) -> None:
    s = Stopped(tmp_path)
    restored = not_older_than_the_log(
        _backup_of_an_earlier_start(s), s.log, s.finished + timedelta(minutes=30)
    )
    s.host.now = s.finished + timedelta(hours=1)
    docker_down = b.snapshot(observed_at=s.host.now, down=[Domain.DOCKER])
    kept = plan(docker_down, b.desired(AFTER), restored, s.host.now).memory
    assert kept.rebuilt == restored.rebuilt != {}
    assert b.removed(s.hold_pass(kept, timedelta(hours=2))) == []


def test_a_record_of_a_start_not_listed_is_never_taken(tmp_path: Path) -> None:
    """A line naming a later start than the memory's record, where the container listed still runs
    the start the memory saw (a forged line, or one of a start that never was): the memory's record
    decides, and the log's is dropped at that pass."""
    s = Stopped(tmp_path)
    backup = _backup_of_an_earlier_start(s)
    restored = not_older_than_the_log(backup, s.log, s.finished + timedelta(minutes=30))
    s.job.started_at = backup.containers[s.job.id].started_at
    s.job.finished_at = s.finished
    due = s.hold_pass(restored, timedelta(hours=1, seconds=1))
    assert b.removed(due) == ["job"], "the record of a start not listed bound it"
    assert due.memory.rebuilt == {}
