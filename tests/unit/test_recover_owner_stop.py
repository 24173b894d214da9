"""A stop interrupted after its owner had stopped the container is not recovered as the controller's.

The owner stopped the container while the controller wrote its stop's intent (the memory and the
``controller.action_started`` line take a while); the last look before ``docker stop`` saw it
exited, and the daemon died before the skipped outcome was written. The recovery found the same
start exited and recorded the stop as the controller's own: its owner was told the controller
stopped it, the memory marked it as the controller's stop (the removal breaker no longer counts it)
with the stop notice's hold, and ``ds01ctl`` said so. The engine's FinishedAt, before the stop's
intent was even written, says otherwise: the recovery now records it as someone else's stop.

Real executor on a simulated host, the real event log, and the salvage's memory rebuilt from it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.act.report import Outcome
from controller.act.salvage import memory_from_event_log
from controller.memory import ControllerMemory
from controller.plan.types import Reason
from tests.fixtures.act import RecordingNotifier, make_plan, read_events
from tests.unit.fake_host import FakeHost
from tests.unit.test_executor_resumed_intent import interrupted_stop, stopped_after_the_first_look


class Crash(BaseException):
    """The daemon killed: nothing of the pass after this point runs."""


class DyingLog(EventLog):
    """The event log of a daemon killed right before it writes an action's skipped outcome."""

    def write_durable(self, event_type: str, **kwargs: Any) -> None:
        details = kwargs.get("details") or {}
        if details.get("phase") == "skipped":
            raise Crash
        super().write_durable(event_type, **kwargs)


def test_a_stop_its_owner_made_before_the_intent_is_not_recovered_as_the_controllers(
    tmp_path: Path,
) -> None:
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("job")
    action, _ = interrupted_stop(c, Reason.IDLE_TIMEOUT, host.now)
    # Right after the re-check: the owner's `docker stop`; writing the intent takes 2 s.
    looks = stopped_after_the_first_look(host, c, then_s=2)
    log = tmp_path / "events.jsonl"
    notifier = RecordingNotifier()
    dying = RealExecutor(host.client, DyingLog(log), notifier, tmp_path / "ledger", clock=host.clock)
    with pytest.raises(Crash):
        dying.execute(make_plan(action), ControllerMemory(), host.now)
    assert looks == ["running", "exited"], "the last look saw the owner's stop"
    assert host.stops == [], "the controller never stopped it"

    host.advance(60)
    lost = memory_from_event_log(log, host.now)
    assert action.key in lost.intents
    ex = RealExecutor(host.client, EventLog(log), notifier, tmp_path / "ledger", clock=host.clock)
    after, (o,) = ex.recover(lost, host.now)
    assert o.outcome is not Outcome.DONE, o.detail
    assert after.intents == {}
    cm = after.containers.get(c.id)
    assert cm is None or cm.stopped_by_controller_at is None, "recorded as the controller's stop"
    assert notifier.sent == [], "the owner was told the controller stopped it"
    (closing,) = [e for e in read_events(log) if e["details"].get("key") == action.key]
    assert closing["details"]["phase"] == "skipped" and closing["details"]["recovered"] is True
    assert closing["event_type"] not in ("maintenance.idle_kill", "container.stop")
    # Rebuilt from the log once more: still not the controller's stop (no hold, no mark).
    again = memory_from_event_log(log, host.now)
    assert again.intents == {} and c.id not in again.containers


def test_a_stop_found_exited_with_no_finishedat_is_still_the_controllers(tmp_path: Path) -> None:
    # An engine that shows no FinishedAt gives no evidence against the interrupted stop: the start
    # the re-check saw running is stopped, and the stop is recorded as the controller's, as before.
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("job")
    _, memory = interrupted_stop(c, Reason.IDLE_TIMEOUT, host.now)
    c.status, c.finished_at = "exited", None
    notifier = RecordingNotifier()
    ex = RealExecutor(
        host.client, EventLog(tmp_path / "events.jsonl"), notifier, tmp_path / "ledger", clock=host.clock
    )
    after, (o,) = ex.recover(memory, host.now)
    assert o.outcome is Outcome.DONE, o.detail
    assert after.containers[c.id].stopped_by_controller_at is not None
    assert [user for user, _text, _severity in notifier.sent] == ["alice"]


def test_a_start_made_before_the_intent_and_stopped_since_is_not_recovered_as_the_controllers(
    tmp_path: Path,
) -> None:
    # Its owner started the container again before the stop's intent was written (the last look,
    # after the intent, saw another start than the plan's, and the controller never stopped it),
    # then stopped that start: the engine's StartedAt, before the intent, says so.
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("job")
    _, memory = interrupted_stop(c, Reason.IDLE_TIMEOUT, host.now)  # the intent: 20 s ago
    c.started_at = host.now - timedelta(seconds=25)
    c.status, c.finished_at = "exited", host.now - timedelta(seconds=5)
    notifier = RecordingNotifier()
    log = tmp_path / "events.jsonl"
    ex = RealExecutor(host.client, EventLog(log), notifier, tmp_path / "ledger", clock=host.clock)
    after, (o,) = ex.recover(memory, host.now)
    assert o.outcome is not Outcome.DONE, o.detail
    assert after.intents == {}
    cm = after.containers.get(c.id)
    assert cm is None or cm.stopped_by_controller_at is None, "recorded as the controller's stop"
    assert notifier.sent == [], "the owner was told the controller stopped it"
