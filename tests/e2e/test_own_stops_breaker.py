"""End to end: the removals that follow the controller's own stops trip neither breaker.

Six idle GPU containers are stopped (not removed: ``removeAfterIdleStop: false``, as a max-runtime
or a quota stop leaves them) by the acting daemon in one pass; their GPU hold then expires in one
pass too, so that pass would remove six of the host's six stopped containers. Were the six
stopped by someone else (a restart, a broken signal) that share would trip the breaker and halt
every destructive action until an admin's reset (tests/unit/test_restart_stops.py); the
controller's own stops were weighed by the stop breaker when it made them, and their removals go
ahead; so do the releases of their ledger rows, six of six. Real engine (a private dockerd), the
stand-in NVML, the daemon as a process.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller import labels as L
from tests.e2e.test_converge import exists, for_container, gpu_request
from tests.e2e.test_forecast_truth import QUICK_STOP
from tests.fixtures.daemon import DaemonRunner, details, fast_policy
from tests.fixtures.docker_host import ContainerFactory
from tests.fixtures.nvml import FakeNvml

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IDLE = 6  # above breakerMinRemovals (5): the removal share is weighed


def test_removals_after_the_controllers_own_stops_go_ahead(
    controller_daemon: DaemonRunner,
    e2e_containers: ContainerFactory,
    e2e_docker: Any,
    fake_nvml: FakeNvml,
) -> None:
    # The stop breaker is lifted above six (six of six running GPU containers idle at once would
    # trip it, as it should); the removal breaker keeps its built-in share and minimum.
    safety = "  safety:\n    breakerMinContainers: 10\n    maxConcurrentActions: 6\n"
    controller_daemon.write_spec(
        fast_policy(
            controller_daemon.paths.reset_marker,
            idleTimeout="3s",
            removeAfterIdleStop="false",
            gpuHoldAfterStop="4s",
        )
        + safety
    )
    uuids = [g.uuid for g in fake_nvml.set_gpus(IDLE)]
    fake_nvml.write()
    # All six exist before the daemon starts: first seen, warned and stopped in the same pass. Each
    # exits at once on SIGTERM, so the six stops end milliseconds apart and their GPU holds expire
    # within the loop's grouping of due times (controller.plan.wake.DUE_GROUP_S): in one pass.
    idle = [
        e2e_containers(QUICK_STOP, labels={L.DS01_USER: "alice"}, network_mode="none", **gpu_request(uuid))
        for uuid in uuids
    ]
    # Each has a ledger row, as an allocator writes it: once removed, six of six rows are leaked at
    # once, which the release breaker would read as a broken listing were they not its own removals.
    controller_daemon.write_ledger(
        [
            {"gpu": uuid, "container": c.name, "user": "alice", "allocated_at": "2026-01-01T00:00:00+00:00"}
            for uuid, c in zip(uuids, idle, strict=True)
        ]
    )
    d = controller_daemon.start()
    for c in idle:
        d.wait_for_event("container.remove", for_container(c.id), timeout=60)
    for c in idle:
        d.wait_for_event(
            "gpu.release", lambda e, name=c.name: details(e).get("ledger_row", {}).get("container") == name
        )
    d.wait_for_passes(2)
    assert d.alive
    assert d.events("controller.breaker_tripped") == []
    assert not any(exists(e2e_docker, c.id) for c in idle)
    assert json.loads(controller_daemon.paths.ledger.read_text())["allocations"] == []
    assert d.stop() == 0
