"""The daemon's pass honours ``transientProcessMinAge`` from the policy: a bare host GPU process is
announced (``detection.host_gpu_process_discovered``, the inventory's ``host_processes``) only once it
has been seen for that long, not after the built-in 60 s."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.act.executor import ExecutionReport
from controller.memory import ControllerMemory
from controller.plan.types import Plan
from desired_state.load import PolicyHolder
from tests.fixtures import builders as b
from tests.fixtures.scripted import ScriptedObserver, make_controller

POLICY = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: lab
spec:
  transientProcessMinAge: 5m
"""


class NothingDone:
    """Carries out nothing: the test is about what the pass observes and announces."""

    def execute(self, plan: Plan, memory: ControllerMemory, now: datetime) -> ExecutionReport:
        return ExecutionReport(outcomes=(), memory=plan.memory)


def discovered(events_log: Path) -> list[dict[str, Any]]:
    if not events_log.exists():
        return []
    events = [json.loads(line) for line in events_log.read_text().splitlines() if line]
    return [e for e in events if e["event_type"] == "detection.host_gpu_process_discovered"]


def test_a_host_gpu_process_is_announced_only_after_the_policys_min_age(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "lab.yaml").write_text(POLICY)
    clock = [b.T0]
    bare = b.process(4242, user="bob", uid=1002, cmdline="python bench.py")
    observer = ScriptedObserver(b.snapshot(observed_at=b.T0, gpus=(b.gpu(0),), processes=(bare,)))
    controller = make_controller(tmp_path, observer, clock, NothingDone(), policy=PolicyHolder(specs, None))
    inventory = controller.settings.inventory_path
    events_log = controller.settings.events_log

    def pass_at(seconds: float) -> dict[str, Any]:
        clock[0] = b.T0 + timedelta(seconds=seconds)
        observer.current = b.snapshot(observed_at=clock[0], gpus=(b.gpu(0),), processes=(bare,))
        controller.run_pass()
        inv: dict[str, Any] = json.loads(inventory.read_text())
        return inv

    for seconds in range(0, 300, 30):  # 0 .. 4m30s: past the built-in 60 s, short of the policy's 5m
        inv = pass_at(seconds)
        assert discovered(events_log) == [], seconds
        assert inv["host_processes"] == {} and list(inv["_pending_processes"]) == ["4242"], seconds
    inv = pass_at(300)
    (event,) = discovered(events_log)
    assert event["user"] == "bob" and event["details"]["pid"] == 4242
    assert list(inv["host_processes"]) == ["4242"] and inv["_pending_processes"] == {}
    pass_at(330)
    assert len(discovered(events_log)) == 1  # announced once
