"""A stop interrupted by the daemon's death, with the memory lost, keeps the hold its notice names.

The daemon writes a stop's ``controller.action_started`` line, with the hold after the stop that
its owner's notice names (``kept_after_stop_s``), before ``docker stop``; it died after the engine
stopped the container and before the outcome line. The memory was lost with it: the salvage rebuilds
the open intent from that line, and the next pass's recovery records the stop as the controller's
and sends the notice. That record carried no hold: a policy reloaded with a shorter one since removed
the stopped container before the time named.

The real executor stops the container on a simulated host and writes the real event log; the daemon
"dies" in the engine's stop; the memory is rebuilt by the salvage, the recovery is the executor's
own, and the real planner decides the removal.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.act.events import EventLog, EventType
from controller.act.executor import RealExecutor
from controller.act.report import Outcome
from controller.act.salvage import memory_from_event_log, not_older_than_the_log
from controller.memory import ControllerMemory
from controller.plan.desired import EffectivePolicy
from controller.plan.planner import plan
from controller.plan.types import ActionKind, Plan
from tests.fixtures import builders as b
from tests.fixtures.act import RecordingNotifier, read_events
from tests.unit.fake_host import FakeContainer, FakeHost
from tests.unit.test_hold_promise import AFTER, BEFORE, DAY, KEPT_AFTER_STOP_S


class Crash(BaseException):
    """The daemon killed: nothing of the pass after this point runs."""


class Interrupted:
    """A busy GPU job at its 10 h max runtime (notice: kept for 2 d); the daemon dies in the stop,
    after the engine stopped the container."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.host = FakeHost(term_ignored_s=0.0)
        self.job: FakeContainer = self.host.add("job", started_ago_s=9.5 * b.HOUR, busy=True)
        self.log = tmp_path / "events.jsonl"
        self.notifier = RecordingNotifier()
        executor = self.executor()
        memory = ControllerMemory()

        def die(c: FakeContainer, timeout: int) -> None:
            raise Crash

        for _ in range(8):
            now = self.host.clock()
            p = plan(self.host.snapshot(), b.desired(BEFORE), memory, now)
            if any(a.kind is ActionKind.STOP_CONTAINER for a in p.actions):
                self.host.on_stopped = die
                with pytest.raises(Crash):
                    executor.execute(p, memory, now)
                break
            memory = executor.execute(p, memory, now).memory
            self.host.advance(15 * 60)
        self.host.on_stopped = None
        assert self.job.status == "exited" and self.job.finished_at is not None
        self.finished: datetime = self.job.finished_at
        self.before = memory  # the memory saved by the pass before the stop
        (started,) = [
            e
            for e in read_events(self.log, intents=True)
            if e["event_type"] == EventType.ACTION_STARTED and e["details"]["kind"] == "StopContainer"
        ]
        assert started["details"][KEPT_AFTER_STOP_S] == 2 * DAY
        assert not [e for e in read_events(self.log, intents=True) if e["details"].get("phase") == "done"]
        self.stop_lines_only()

    def stop_lines_only(self) -> None:
        """The log without the hold the warnings before the stop named (they bind it too:
        ``test_warning_hold_promise.py``), so that only the stop's own line can rebuild it."""
        lines = [json.loads(line) for line in self.log.read_text().splitlines()]
        for e in lines:
            if e["event_type"] == EventType.WARNING:
                assert e["details"].pop(KEPT_AFTER_STOP_S) == 2 * DAY
        self.log.write_text("".join(json.dumps(line) + "\n" for line in lines))

    def executor(self) -> RealExecutor:
        return RealExecutor(
            self.host.client,
            EventLog(self.log),
            self.notifier,
            self.tmp_path / "ledger",
            clock=self.host.clock,
        )

    def recovered(self, memory: ControllerMemory, after: timedelta) -> ControllerMemory:
        """The next daemon's first pass: the open intent verified and recorded."""
        self.host.now = self.finished + after
        assert memory.intents, "the interrupted stop was not rebuilt as an open intent"
        memory, outcomes = self.executor().recover(memory, self.host.now)
        (o,) = outcomes
        assert o.outcome is Outcome.DONE, o.detail
        assert memory.intents == {}
        return memory

    def hold_pass(self, memory: ControllerMemory, after: timedelta, pol: EffectivePolicy = AFTER) -> Plan:
        self.host.now = self.finished + after
        return plan(self.host.snapshot(), b.desired(pol), memory, self.host.now)


def _removed_only_after_the_hold(s: Interrupted, memory: ControllerMemory) -> None:
    waiting = s.hold_pass(memory, timedelta(hours=2))
    assert b.removed(waiting) == [], "removed 2h after its stop; the stop's notice named 2d"
    assert memory.containers[s.job.id].promised_hold_s == 2 * DAY
    (d,) = [d for d in waiting.deferred if d.target.container == "job"]
    assert d.due_at == s.finished + timedelta(days=2)
    assert b.removed(s.hold_pass(waiting.memory, timedelta(days=2, seconds=1))) == ["job"]


def test_an_interrupted_stop_rebuilt_from_the_log_keeps_the_hold_it_named(tmp_path: Path) -> None:
    s = Interrupted(tmp_path)
    lost = memory_from_event_log(s.log, s.finished + timedelta(minutes=1))
    _removed_only_after_the_hold(s, s.recovered(lost, timedelta(minutes=1)))


def test_an_interrupted_stop_added_to_an_older_memory_keeps_it_too(tmp_path: Path) -> None:
    """A memory saved before the warnings, read cleanly: the intent comes from the log."""
    s = Interrupted(tmp_path)
    backup = s.before.forget_container(s.job.id)
    restored = not_older_than_the_log(backup, s.log, s.finished + timedelta(minutes=1))
    _removed_only_after_the_hold(s, s.recovered(restored, timedelta(minutes=1)))


def test_the_recovered_stop_with_its_memory_lost_again_keeps_it(tmp_path: Path) -> None:
    """Recorded by the recovery, then lost once more: the log's lines still name the hold."""
    s = Interrupted(tmp_path)
    lost = memory_from_event_log(s.log, s.finished + timedelta(minutes=1))
    s.recovered(lost, timedelta(minutes=1))
    lost_again = memory_from_event_log(s.log, s.finished + timedelta(minutes=30))
    assert lost_again.intents == {}
    _removed_only_after_the_hold(s, lost_again)


def test_the_recovered_stop_line_names_the_hold(tmp_path: Path) -> None:
    s = Interrupted(tmp_path)
    lost = memory_from_event_log(s.log, s.finished + timedelta(minutes=1))
    s.recovered(lost, timedelta(minutes=1))
    stops: list[Any] = [e for e in read_events(s.log, intents=True) if e["details"].get("recovered")]
    (stop,) = stops
    assert stop["details"]["phase"] == "done" and stop["details"]["removed"] is False
    assert stop["details"]["evidence"][KEPT_AFTER_STOP_S] == 2 * DAY
