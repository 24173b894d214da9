"""A real engine restart under running containers: they come back exited, and nobody chose that.

On a private dockerd (restarting the shared engine would stop other tests' containers): the
observer and planner, built as the daemon builds them, see three containers running and one its
the engine restarts; the three come back exited, and a container its owner runs to completion
after the restart exits too. With the normal holds at zero (they would be removed at once), the
three keep the restart hold and the owner's is removed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from controller.memory import ControllerMemory
from controller.observe.host import HostObserver, ObserveConfig
from controller.plan.planner import plan
from controller.plan.types import ActionKind, DeferReason
from controller.snapshot import ContainerState, Domain, Snapshot
from tests.fixtures import builders as b
from tests.fixtures.dockerd import TEST_IMAGE, PrivateEngine, discard_private_engine, start_private_engine

pytestmark = pytest.mark.docker

LABEL = {"ds01.test": "restart-stops", "ds01.user": "alice"}


@pytest.fixture
def engine() -> Iterator[PrivateEngine]:
    e = start_private_engine()
    try:
        yield e
    finally:
        discard_private_engine(e)


def observe(observer: HostObserver) -> Snapshot:
    observer.invalidate(None)  # as the daemon's event follower does when the stream comes back
    for _ in range(50):
        snap = observer.observe()
        if snap.domain_ok(Domain.DOCKER):
            return snap
        time.sleep(0.2)
    raise AssertionError(f"Docker never observable: {snap.domain_error(Domain.DOCKER)}")


def test_containers_stopped_by_an_engine_restart_are_held_not_removed(engine: PrivateEngine) -> None:
    client: Any = engine.client()
    running = [
        client.containers.run(
            TEST_IMAGE,
            ["sleep", "1000"],
            name=f"restart-victim-{i}",
            labels=LABEL,
            detach=True,
            network_mode="none",
        )
        for i in range(3)
    ]
    observer = HostObserver(
        ObserveConfig(docker_base_url=engine.base_url, docker_pidfile=engine.pidfile, nvml_timeout_s=2)
    )
    # Normal holds of zero: without the restart rule every stopped container goes at once.
    desired = b.desired(b.policy(gpu_hold_after_stop_s=0.0, container_hold_after_stop_s=0.0))
    try:
        before = observe(observer)
        assert before.engine_started_at is not None and before.host_booted_at is not None
        states = {c.name: c.state for c in before.containers}
        assert states == {c.name: ContainerState.RUNNING for c in running}
        first = plan(before, desired, ControllerMemory(), before.observed_at)
        assert [a for a in first.actions if a.kind == ActionKind.REMOVE_CONTAINER] == []

        engine_start_before = before.engine_started_at
        engine.restart()
        client.close()
        client = engine.client()
        own_stop = client.containers.run(
            TEST_IMAGE, ["true"], name="restart-own-stop", labels=LABEL, detach=True, network_mode="none"
        )
        own_stop.wait(timeout=30)
        after = observe(observer)
        assert after.engine_started_at is not None and after.engine_started_at > engine_start_before
        victims = [c for c in after.containers if c.name.startswith("restart-victim-")]
        assert len(victims) == 3 and all(c.state == ContainerState.EXITED for c in victims)

        now = after.observed_at
        second = plan(after, desired, first.memory, now)
        removed = sorted(
            a.target.container or "" for a in second.actions if a.kind == ActionKind.REMOVE_CONTAINER
        )
        assert removed == ["restart-own-stop"]
        for c in victims:
            mem = second.memory.containers[c.id]
            assert mem.stopped_by_restart_at == after.engine_started_at
            (d,) = [d for d in second.deferred if d.target.container_id == c.id]
            assert d.why == DeferReason.NOT_DUE
            assert "stopped by the engine restart at" in d.message
            assert c.finished_at is not None and d.due_at == c.finished_at + timedelta(hours=24)
    finally:
        observer.close()
        client.close()
