"""Open admin alerts: raised by the current observation and not cleared, delivered or not; the
``ds01_admin_alerts_open`` gauge after a scrape; ``ds01ctl get alerts`` rendering."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from controller.act.executor import ExecutionReport
from controller.act.report import ActionOutcome
from controller.cli.alerts import alert_item, render
from controller.cli.render import PLAIN
from controller.cli.view import View
from controller.memory import Breaker, ControllerMemory
from controller.ops.metrics import Metrics
from controller.plan.open_alerts import count_by_reason, open_alerts
from controller.plan.planner import plan
from controller.plan.types import ActionKind, Plan
from controller.snapshot import ContainerObs, ContainerState, Domain
from tests.fixtures import builders as b
from tests.fixtures.scripted import ScriptedObserver, make_controller

GPUS = (b.gpu(0), b.gpu(1, mig_slots=2))


def running_on(name: str, gpu: str) -> ContainerObs:
    sig = b.signals(b.T0, gpu_pct={gpu: 99.0})
    return b.container(name, state=ContainerState.RUNNING, gpus=(gpu,), started_at=b.ago(minutes=5), sig=sig)


def test_a_delivered_alert_stays_open_while_its_condition_holds_and_clears_after() -> None:
    a, c = running_on("a", b.GPU0), running_on("c", b.GPU0)
    snap = b.snapshot(containers=(a, c), gpus=GPUS)
    first = plan(snap, b.desired(), ControllerMemory(), b.T0)
    (raised,) = open_alerts(ControllerMemory(), first)
    assert raised.reason == "DuplicateGpuHolder" and raised.since is None and raised.target == b.GPU0
    # Delivered: the plan no longer carries it (one-shot), but it is still open.
    delivered = b.record_outcomes(first)
    later = b.T0 + timedelta(minutes=5)
    again = plan(snap, b.desired(), delivered, later)
    assert again.actions == ()
    (still,) = open_alerts(delivered, again)
    assert still.key == raised.key and still.since is not None
    # One holder stopped: the condition is gone, so is the alert.
    cleared_snap = b.snapshot(containers=(a,), gpus=GPUS)
    cleared = plan(cleared_snap, b.desired(), delivered, later)
    assert open_alerts(delivered, cleared) == ()


def test_a_dirty_gpu_alert_stays_open_while_dirty_and_clears_when_clean() -> None:
    """The alert is delivered once; the GPU stays dirty (open, since the delivery), then reads clean
    (cleared: the mark is forgotten, nothing raises it)."""
    passes = b.Passes(b.desired())
    dirty, clean = (b.gpu(0, memory_used_bytes=4 * 1024**3),), (b.gpu(0),)
    for tick in range(2):  # second sighting, then the reset
        passes.run(b.snapshot(observed_at=b.at(seconds=30 * tick), gpus=dirty))
    before = passes.memory
    alerted = passes.run(b.snapshot(observed_at=b.at(seconds=60), gpus=dirty))  # the reset did not help
    (raised,) = open_alerts(before, alerted)
    assert (raised.reason, raised.target, raised.since) == ("GpuDirty", b.GPU0, None)
    for tick in (3, 4):
        before = passes.memory
        still = passes.run(b.snapshot(observed_at=b.at(seconds=30 * tick), gpus=dirty))
        assert still.actions == () and [a.key for a in still.delivered_alerts] == [raised.key]
        (held,) = open_alerts(before, still)
        assert held.key == raised.key and held.since == before.done[raised.key]
    before = passes.memory
    cleaned = passes.run(b.snapshot(observed_at=b.at(seconds=150), gpus=clean))
    assert open_alerts(before, cleaned) == () and cleaned.delivered_alerts == ()


def test_a_tripped_breaker_is_open_until_reset() -> None:
    snap = b.snapshot(gpus=GPUS)
    memory = ControllerMemory(breaker=Breaker(tripped=True, tripped_at=b.T0, reason="6 of 8 stops"))
    p = plan(snap, b.desired(), memory, b.T0)
    (alert,) = open_alerts(memory, p)
    assert alert.reason == "BreakerTripped" and alert.message == "6 of 8 stops"
    reset = memory.with_breakers_reset()
    assert open_alerts(reset, plan(snap, b.desired(), reset, b.T0)) == ()


def test_open_alerts_gauge_in_a_scrape() -> None:
    snap = b.snapshot(gpus=GPUS, down=(Domain.LEDGER,), ledger=b.ledger(b.ledger_entry("gone", b.GPU0)))
    p = plan(snap, b.desired(), ControllerMemory(), b.T0)
    metrics = Metrics(version="test")
    metrics.set_open_alerts(count_by_reason(open_alerts(ControllerMemory(), p)))
    text = metrics.render().decode()
    assert 'ds01_admin_alerts_open{reason="LedgerUnreadable"} 1.0' in text
    assert 'ds01_admin_alerts_open{reason="GpuDirty"} 0.0' in text
    metrics.set_open_alerts({})
    assert 'ds01_admin_alerts_open{reason="LedgerUnreadable"} 0.0' in metrics.render().decode()


def test_get_alerts_output_forms() -> None:
    a, c = running_on("a", b.GPU0), running_on("c", b.GPU0)
    snap = b.snapshot(containers=(a, c), gpus=GPUS)
    p = plan(snap, b.desired(), ControllerMemory(), b.T0)
    items = [alert_item(x, b.T0) for x in open_alerts(ControllerMemory(), p)]
    view = View(snapshot=snap, now=b.T0)
    table = render(items, view, "table", False, PLAIN)
    assert table.splitlines()[0].split() == ["REASON", "TARGET", "AGE", "MESSAGE"]
    assert "DuplicateGpuHolder" in table and "new" in table
    assert render(items, view, "table", True, PLAIN).startswith("DuplicateGpuHolder")
    data = json.loads(render(items, view, "json", False, PLAIN))
    assert data["kind"] == "AlertList" and data["items"][0]["reason"] == "DuplicateGpuHolder"
    assert data["items"][0]["evidence"]  # the planner's evidence travels with it
    assert render(items, view, "name", False, PLAIN) == f"alert/{items[0]['key']}\n"
    assert render([], view, "table", False, PLAIN) == ""


def test_daemon_pass_keeps_the_gauge_open_after_delivery_and_clears_it(tmp_path: Path) -> None:
    """Through the daemon's pass: raised (delivered once), still open on the next pass, then cleared."""
    a, c = running_on("a", b.GPU0), running_on("c", b.GPU0)
    clock = [b.T0]
    observer = ScriptedObserver(b.snapshot(observed_at=b.T0, containers=(a, c), gpus=GPUS))
    controller = make_controller(tmp_path, observer, clock, DeliveringExecutor())

    def open_now(containers: tuple[ContainerObs, ...]) -> float:
        clock[0] += timedelta(seconds=30)
        observer.current = b.snapshot(observed_at=clock[0], containers=containers, gpus=GPUS)
        controller.run_pass()
        text = cast(Metrics, controller.metrics).render().decode()
        (line,) = [
            x
            for x in text.splitlines()
            if x.startswith('ds01_admin_alerts_open{reason="DuplicateGpuHolder"}')
        ]
        return float(line.rsplit(" ", 1)[1])

    assert open_now((a, c)) == 1.0
    assert any(k.startswith("AlertAdmin:DuplicateGpuHolder") for k in controller.memory.done)
    assert open_now((a, c)) == 1.0  # delivered, not planned again, still open
    assert open_now((a,)) == 0.0


def test_a_daemon_pass_plans_once_while_alerts_are_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delivered alerts do not make the pass plan the observation a second time (at 10,000 containers
    a plan is the largest cost of a pass)."""
    import controller.plan.planner as planner

    calls: list[datetime] = []
    real = planner._plan

    def counting(*args: object, **kwargs: object) -> Plan:
        calls.append(datetime.now())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    # Every planning goes through the planner's one implementation, whoever calls it.
    monkeypatch.setattr(planner, "_plan", counting)
    a, c = running_on("a", b.GPU0), running_on("c", b.GPU0)
    clock = [b.T0]
    observer = ScriptedObserver(b.snapshot(observed_at=b.T0, containers=(a, c), gpus=GPUS))
    controller_ = make_controller(tmp_path, observer, clock, DeliveringExecutor())
    for _ in range(3):
        clock[0] += timedelta(seconds=30)
        observer.current = b.snapshot(observed_at=clock[0], containers=(a, c), gpus=GPUS)
        controller_.run_pass()
    assert any(k.startswith("AlertAdmin:DuplicateGpuHolder") for k in controller_.memory.done)
    assert len(calls) == 3
    assert count_by_reason(controller_._open_alerts) == {"DuplicateGpuHolder": 1}


class DeliveringExecutor:
    """Records every one-shot as delivered; nothing else is done."""

    def execute(self, plan: Plan, memory: ControllerMemory, now: datetime) -> ExecutionReport:
        mem = plan.memory
        outcomes = []
        for a in plan.actions:
            if a.kind is ActionKind.ALERT_ADMIN:
                mem = mem.with_done(a.key, now)
            outcomes.append(
                ActionOutcome(
                    key=a.key, kind=a.kind, reason=a.reason, target=a.target, outcome="done", detail=""
                )
            )
        return ExecutionReport(outcomes=tuple(outcomes), memory=mem)


def test_get_alerts_owner_keeps_the_alerts_about_that_users_containers() -> None:
    # alice's container runs a process on GPU 1, which it was not given: ForeignProcessOnGpu, its
    # target alice's process. get alerts --owner alice read only the quota rules' "owner" evidence
    # and listed nothing.
    from controller.cli.alerts import _owner
    from controller.memory import ControllerMemory
    from controller.plan.open_alerts import open_alerts
    from controller.plan.planner import plan
    from tests.fixtures import builders as b

    job = b.running("job", owner="alice", gpus=[b.GPU0], sig=b.signals(b.T0, gpu_pct={b.GPU0: 90.0}))
    stray = b.process(4242, b.GPU1, container_id=job.id, container_exists=True, user="alice")
    snap = b.snapshot(containers=[job], gpus=[b.gpu(0, util_pct=90.0), b.gpu(1)], processes=[stray])
    p = plan(snap, b.desired(b.policy()), ControllerMemory(), b.T0)
    (alert,) = [a for a in open_alerts(ControllerMemory(), p) if a.reason == "ForeignProcessOnGpu"]
    assert _owner(alert) == "alice"


@pytest.mark.parametrize("down", [Domain.DOCKER, Domain.NVML])
def test_get_alerts_with_a_domain_down_does_not_say_no_alert_is_open(
    down: Domain, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Two running holders of one GPU, alerted and delivered: with Docker (or NVML) unreadable the
    planner cannot raise the alert, and `get alerts` said "No open admin alerts." of it."""
    from controller.cli import gather as gather_mod
    from controller.cli.main import main

    a, c = running_on("a", b.GPU0), running_on("c", b.GPU0)
    first = plan(b.snapshot(containers=(a, c), gpus=GPUS), b.desired(), ControllerMemory(), b.T0)
    delivered = b.record_outcomes(first)
    snap = b.snapshot(containers=(a, c), gpus=GPUS, down=[down])
    view = View(snapshot=snap, now=b.T0, desired=b.desired(), notes=[])
    monkeypatch.setattr(gather_mod, "gather", lambda _s, _o: view)
    monkeypatch.setattr(gather_mod, "read_memory", lambda _d: (delivered, None))
    assert main(["get", "alerts", "--env-file", "", "--state-dir", str(tmp_path)]) == 0
    _out, err = capsys.readouterr()
    assert "No open admin alerts." not in err
    assert "open alerts unknown" in err and down.value in err, err


def test_get_alerts_owner_with_none_of_theirs_does_not_say_no_alert_is_open(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Two of alice's containers hold one GPU (an open alert about alice): `get alerts --owner bob`
    said "No open admin alerts." while one is open."""
    from controller.cli import gather as gather_mod
    from controller.cli.main import main

    a = b.running("a", owner="alice", gpus=[b.GPU0], sig=b.signals(b.T0, gpu_pct={b.GPU0: 99.0}))
    c = b.running("c", owner="alice", gpus=[b.GPU0], sig=b.signals(b.T0, gpu_pct={b.GPU0: 99.0}))
    snap = b.snapshot(containers=(a, c), gpus=GPUS)
    view = View(snapshot=snap, now=b.T0, desired=b.desired(), notes=[])
    monkeypatch.setattr(gather_mod, "gather", lambda _s, _o: view)
    monkeypatch.setattr(gather_mod, "read_memory", lambda _d: (ControllerMemory(), None))
    argv = ["get", "alerts", "--env-file", "", "--state-dir", str(tmp_path)]
    assert main(argv) == 0
    out, _err = capsys.readouterr()
    assert "DuplicateGpuHolder" in out
    assert main([*argv, "--owner", "bob"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "No open admin alerts." not in err
    assert "No open admin alerts about bob (1 open about others)." in err, err


def test_get_alerts_age_of_an_alert_delivered_after_now_is_ahead_not_0s() -> None:
    # Delivered while the wall clock was ahead, an alert's first delivery is after now once it is
    # stepped back: AGE said "0s", as if it had just been delivered.
    from controller.plan.open_alerts import OpenAlert

    def row(since: datetime) -> list[str]:
        alert = OpenAlert(reason="DuplicateGpuHolder", key="k", target=b.GPU0, message="m", since=since)
        view = View(snapshot=b.snapshot(), now=b.T0)
        text = render([alert_item(alert, b.T0)], view, "table", True, PLAIN)
        return text.split()

    assert row(b.T0 + timedelta(hours=2, minutes=5))[2:4] == ["in", "2h"]
    assert row(b.ago(minutes=5))[2] == "5m"
