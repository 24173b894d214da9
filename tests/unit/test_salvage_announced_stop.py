"""The stop time a warning announced outlives a lost memory: a container is never stopped before the
time its owner was told, whatever happened to ``memory.json`` since.

The ladder keeps the stop time each delivered warning announced (``announced`` in the memory), and
a policy reloaded with a shorter limit does not bring the stop forward. A memory lost afterwards
(corrupt, deleted, restored from a backup older than the warning) started without it: the
warning was sent again with only its lead time, and a job warned that it would be stopped in
30 minutes was stopped minutes later. The salvage now rebuilds the announced time from the
warning's event line, for the start it was sent about; the warning itself is not rebuilt, so it is
sent again, naming the same time.

The real executor warns on a simulated host and writes the real event log; the memory is rebuilt
from that log by the salvage; the real planner decides the stop.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from controller.act.events import EventLog, EventType, format_line
from controller.act.executor import RealExecutor
from controller.act.salvage import memory_from_event_log, not_older_than_the_log
from controller.memory import ControllerMemory
from controller.plan.context import fmt_duration
from controller.plan.desired import EffectivePolicy
from controller.plan.planner import plan
from controller.plan.types import ActionKind, WarnParams
from tests.fixtures import builders as b
from tests.fixtures.act import RecordingNotifier
from tests.unit.fake_host import FakeHost

BEFORE = b.policy(max_runtime_s=10 * b.HOUR, warn_lead_s=30 * b.MIN)
AFTER = b.policy(max_runtime_s=9 * b.HOUR, warn_lead_s=30 * b.MIN)  # reloaded: already past


class Warned:
    """A busy GPU job warned of its 10 h max runtime, as the daemon does it: passes every 5 minutes,
    each plan carried out by the real executor, until the first warning is delivered."""

    def __init__(self, tmp_path: Path) -> None:
        self.host = FakeHost(term_ignored_s=0.0)
        self.job = self.host.add("job", started_ago_s=9 * b.HOUR, busy=True)
        self.log = tmp_path / "events.jsonl"
        self.executor = RealExecutor(
            self.host.client,
            EventLog(self.log, clock=self.host.clock),
            RecordingNotifier(),
            tmp_path / "ledger",
            clock=self.host.clock,
        )
        memory = ControllerMemory()
        for _ in range(24):
            memory = self.run_pass(memory, BEFORE)
            told = memory.containers[self.job.id].announced
            if told:
                break
        (self.announced,) = told.values()
        self.warned_at = self.host.clock()
        self.memory = memory
        assert self.announced - self.warned_at >= timedelta(minutes=25)

    def run_pass(self, memory: ControllerMemory, pol: EffectivePolicy) -> ControllerMemory:
        now = self.host.clock()
        p = plan(self.host.snapshot(), b.desired(pol), memory, now)
        memory = self.executor.execute(p, memory, now).memory
        self.host.advance(5 * 60)
        return memory

    def stopped_at(self, memory: ControllerMemory) -> datetime:
        """Passes under the reloaded policy until the job is stopped: when it was."""
        for _ in range(24):
            now = self.host.clock()
            p = plan(self.host.snapshot(), b.desired(AFTER), memory, now)
            if any(a.kind is ActionKind.STOP_CONTAINER for a in p.actions):
                return now
            memory = self.executor.execute(p, memory, now).memory
            self.host.advance(5 * 60)
        raise AssertionError("never stopped")


def test_a_reload_alone_keeps_the_announced_time(tmp_path: Path) -> None:
    s = Warned(tmp_path)
    assert s.stopped_at(s.memory) >= s.announced


def test_a_lost_memory_keeps_the_stop_time_a_warning_announced(tmp_path: Path) -> None:
    s = Warned(tmp_path)
    lost = memory_from_event_log(s.log, s.host.clock())
    stop = s.stopped_at(lost)
    assert stop >= s.announced, f"stopped {s.announced - stop} before the time its warning announced"


def test_a_memory_restored_from_a_backup_older_than_the_warning_keeps_it_too(tmp_path: Path) -> None:
    s = Warned(tmp_path)
    done = {k: at for k, at in s.memory.done.items() if s.job.id not in k}  # the warning's too
    backup = s.memory.forget_container(s.job.id).model_copy(
        update={"last_pass_at": s.warned_at, "done": done}
    )
    restored = not_older_than_the_log(backup, s.log, s.host.clock())
    assert s.stopped_at(restored) >= s.announced


def test_the_announced_time_is_not_carried_to_a_later_start(tmp_path: Path) -> None:
    s = Warned(tmp_path)
    lost = memory_from_event_log(s.log, s.host.clock())
    s.job.started_at = s.host.clock() - timedelta(hours=9, minutes=30)  # restarted: a new start
    assert s.stopped_at(lost) < s.announced


def test_a_quota_stop_after_a_lost_memory_keeps_the_time_its_warning_announced() -> None:
    """Enforced quota, warned with a 30-minute lead; the memory lost (the salvage rebuilds the time
    the warning announced, as above), then ``warnLead`` reloaded to a minute: warned again, naming
    the same time, and stopped no earlier."""
    from tests.unit.test_planner_quotas import boxes, pol, quotas, run

    containers = boxes(2)
    first = run(containers, pol(quotas(containers=1), warn_lead_s=30 * b.MIN), quota_enforce="stop")
    (warn,) = [a for a in first.actions if a.kind is ActionKind.WARN_OWNER]
    params = warn.params_as(WarnParams)
    announced = params.announced_stop()
    assert announced == b.at(minutes=30)
    assert warn.target.container_id is not None and warn.target.expected_started_at is not None
    assert params.warning_key is not None
    lost = ControllerMemory().with_announced(
        warn.target.container_id, warn.target.expected_started_at, params.warning_key, announced
    )
    memory, stopped = lost, None
    for minutes in range(5, 40, 2):
        now = b.at(minutes=minutes)
        p = run(
            containers,
            pol(quotas(containers=1), warn_lead_s=1 * b.MIN),
            memory=memory,
            now=now,
            quota_enforce="stop",
        )
        for a in p.actions:
            if a.kind is ActionKind.WARN_OWNER:
                assert a.params_as(WarnParams).announced_stop() == announced
                # and its notice says how long until then, not the lowered lead
                left = fmt_duration((announced - now).total_seconds())
                assert f"(in about {left})" in (a.params_as(WarnParams).notice or ""), left
        if any(a.kind is ActionKind.STOP_CONTAINER for a in p.actions):
            stopped = now
            break
        memory = b.record_outcomes(p, now)
    assert stopped is not None and stopped >= announced, stopped


def test_a_forward_clock_step_after_the_warning_moves_the_rebuilt_time_as_it_moves_the_kept_one(
    tmp_path: Path,
) -> None:
    """The memory moves an announced time later by each forward step seen after the warning (a step
    is not runtime: ``with_clock_step``); the salvage rebuilds it moved by the steps the event log
    shows after the warning's line, not by those before it."""
    s = Warned(tmp_path)
    ((key, told),) = s.memory.containers[s.job.id].announced.items()
    seen = s.warned_at + timedelta(hours=1, minutes=5)  # a pass after a 1 h forward step
    before = s.warned_at - timedelta(minutes=5)
    with s.log.open("a") as f:
        for at, step_s in ((before, 600), (seen, 3600)):
            f.write(
                format_line(
                    EventType.CLOCK_STEP,
                    user=None,
                    source="ds01-controller",
                    details={"seen_at": at, "step_s": step_s, "direction": "forward"},
                    at=at,
                ).decode()
            )
    lost = memory_from_event_log(s.log, seen)
    assert lost.containers[s.job.id].announced == {key: told + timedelta(hours=1)}
