"""A memory restored from a backup holds an intent that the log shows closed since.

The backup was saved during a stop (its intent open). The daemon went on: its recovery recorded that
stop, and its owner was told. Then the memory was restored from the backup. The log holds that
stop's outcome line, and perhaps a later stop of the same key (the container started again and
stopped again by the same rule) that a crash left open. The backup's intent is recorded once, its
owner told once, however far back its outcome line is; the later stop is recorded and told too.

The real executor on a simulated host writes the real event log; the salvage is the daemon's own.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from controller.act.events import EventLog, parse_timestamp
from controller.act.executor import RealExecutor
from controller.act.report import Outcome
from controller.act.salvage import memory_from_event_log, not_older_than_the_log
from controller.memory import ControllerMemory
from controller.plan.types import Reason
from tests.fixtures.act import RecordingNotifier, make_plan, read_events
from tests.unit.fake_host import FakeContainer, FakeHost
from tests.unit.test_executor_resumed_intent import interrupted_stop


class Crash(BaseException):
    """The daemon killed: nothing of the pass after this point runs."""


def _recorded_after_the_backup(
    tmp_path: Path,
) -> tuple[FakeHost, FakeContainer, RealExecutor, RecordingNotifier, Path, ControllerMemory]:
    """The backup (an idle stop of ``job`` open in it), and the log after the daemon recorded that
    stop: its owner told once."""
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("job")
    _, backup = interrupted_stop(c, Reason.IDLE_TIMEOUT, host.now)
    c.status, c.finished_at = "exited", host.now - timedelta(seconds=15)
    notifier, log = RecordingNotifier(), tmp_path / "events.jsonl"
    ex = RealExecutor(host.client, EventLog(log), notifier, tmp_path / "ledger", clock=host.clock)
    host.advance(60)
    memory, (first,) = ex.recover(backup, host.now)
    assert first.outcome is Outcome.DONE and memory.intents == {}
    assert len(notifier.sent) == 1
    return host, c, ex, notifier, log, backup


def test_a_backups_intent_closed_further_back_than_the_recovery_looks_is_not_recorded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("controller.act.executor.RECOVERY_SCAN_LINES", 50)
    host, c, ex, notifier, log, backup = _recorded_after_the_backup(tmp_path)
    events = EventLog(log)
    for n in range(100):  # the log goes on: the outcome line is further back than the recovery reads
        events.write("controller.pass", user=None, details={"n": n})
    lines = len(read_events(log, intents=True))
    host.advance(3600)
    restored = not_older_than_the_log(backup, log, host.now)
    memory, outcomes = ex.recover(restored, host.now)
    assert outcomes == () and memory.intents == {}
    assert len(read_events(log, intents=True)) == lines, "the stop recorded twice"
    assert len(notifier.sent) == 1, "its owner told twice"
    assert memory.containers[c.id].stopped_by_controller_at is not None


def test_a_later_stop_of_the_same_key_left_open_in_the_log_is_recorded(tmp_path: Path) -> None:
    host, c, ex, notifier, log, backup = _recorded_after_the_backup(tmp_path)
    # Its owner starts it again; idle again, the same rule stops it (the same key), and the daemon
    # dies in the engine's stop, after the engine stopped it.
    host.advance(3600)
    c.status, c.started_at, c.finished_at = "running", host.now - timedelta(hours=1), None
    action, _ = interrupted_stop(c, Reason.IDLE_TIMEOUT, host.now)
    assert action.key in backup.intents

    def die(container: FakeContainer, timeout: int) -> None:
        raise Crash

    host.on_stopped = die
    with pytest.raises(Crash):
        ex.execute(make_plan(action), ControllerMemory(), host.now)
    host.on_stopped = None
    assert c.status == "exited"
    host.advance(60)
    restored = not_older_than_the_log(backup, log, host.now)
    memory, outcomes = ex.recover(restored, host.now)
    assert [o.outcome for o in outcomes] == [Outcome.DONE], "the later stop never recorded"
    assert memory.intents == {}
    assert len(notifier.sent) == 2, "its owner not told of the later stop"
    (later,) = [e for e in read_events(log) if e["details"].get("recovered")][1:]
    assert parse_timestamp(later["details"]["intent_at"]) > backup.intents[action.key].started_at


def test_a_later_intent_line_does_not_displace_an_intent_the_log_does_not_show_closed(tmp_path: Path) -> None:
    # The log's lines are not authenticated: an intent line of the same key, later, with nothing
    # closing the memory's own intent, does not take its place (the memory's is verified).
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("job")
    action, backup = interrupted_stop(c, Reason.IDLE_TIMEOUT, host.now)
    log = tmp_path / "events.jsonl"
    ex = RealExecutor(host.client, EventLog(log), RecordingNotifier(), tmp_path / "ledger", clock=host.clock)

    def die(container: FakeContainer, timeout: int) -> None:
        raise Crash

    host.on_stopped = die
    host.advance(60)
    with pytest.raises(Crash):
        ex.execute(make_plan(action), ControllerMemory(), host.now)
    later = memory_from_event_log(log, host.now).intents[action.key]
    assert later.started_at > backup.intents[action.key].started_at
    restored = not_older_than_the_log(backup, log, host.now)
    assert restored.intents == backup.intents
