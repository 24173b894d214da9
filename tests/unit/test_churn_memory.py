"""Bounded memory under container churn: every per-container structure is pruned with the container.

A busy host creates and removes containers all day. The daemon must hold state for the containers
that exist, not for every container it ever saw: the policy resolution memo, the memory's
per-container entries, the action attempts and done keys of containers that are gone, and the
metrics registry (no series per container).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import cast

from controller.loop import Controller
from controller.memory import ControllerMemory
from controller.ops.metrics import Metrics
from controller.plan.desired import memo_size
from controller.snapshot import ContainerObs
from tests.fixtures import builders as b
from tests.fixtures.scripted import FailingExecutor, ScriptedObserver, make_controller

# Long-lived containers present throughout: the baseline the churn must come back to.
RESIDENTS = 5
CHURNED = 60


def residents() -> list[ContainerObs]:
    return [b.running(f"resident-{i}", owner=f"user{i}") for i in range(RESIDENTS)]


def churned(i: int) -> ContainerObs:
    # Exited long ago: its removal is due at once, and it fails (an attempt is recorded).
    return b.exited(f"churn-{i}", owner=f"user{i % 7}", labels={"run": str(i)})


def sizes(controller: Controller) -> dict[str, int]:
    m = controller.memory
    return {
        "policy_memo": memo_size(),
        "memory.containers": len(m.containers),
        "memory.attempts": len(m.attempts),
        "memory.done": len(m.done),
    }


def test_per_container_state_returns_to_baseline_after_churn(tmp_path: Path) -> None:
    clock = [b.T0]
    observer = ScriptedObserver(b.snapshot(observed_at=b.T0, containers=residents()))
    controller = make_controller(tmp_path, observer, clock, FailingExecutor())

    def run(containers: list[ContainerObs]) -> None:
        clock[0] += timedelta(seconds=1)
        observer.current = b.snapshot(observed_at=clock[0], containers=containers)
        controller.run_pass()

    for _ in range(3):
        run(residents())
    baseline = sizes(controller)

    for i in range(CHURNED):
        run([*residents(), churned(i)])  # it appears, its removal is tried and fails ...
        run(residents())  # ... and it is gone (its owner removed it)
    run(residents())  # the resolution memo keeps the previous pass's entries one pass longer
    executor = cast(FailingExecutor, controller.executor)
    assert any(k.startswith("RemoveContainer:") for k in executor.seen_keys), "churn never acted"

    assert sizes(controller) == baseline
    exposition = cast(Metrics, controller.metrics).render().decode()
    assert "churn-" not in exposition
    assert b.cid("churn-0")[:12] not in exposition


def test_a_failed_docker_listing_forgets_nothing(tmp_path: Path) -> None:
    """Unavailable is not empty: the attempts of containers missing from a failed pass are kept."""
    clock = [b.T0]
    observer = ScriptedObserver(b.snapshot(observed_at=b.T0, containers=[*residents(), churned(1)]))
    controller = make_controller(tmp_path, observer, clock, FailingExecutor())
    controller.run_pass()
    attempts = dict(controller.memory.attempts)
    assert any(b.cid("churn-1") in k for k in attempts)
    clock[0] += timedelta(seconds=1)
    from controller.snapshot import Domain

    observer.current = b.snapshot(observed_at=clock[0], down=[Domain.DOCKER])
    controller.run_pass()
    assert controller.memory.attempts.keys() == attempts.keys()
    assert b.cid("churn-1") in controller.memory.containers


def test_memory_without_containers_keeps_other_keys() -> None:
    gone = b.cid("gone")
    kept = b.cid("kept")
    mem = ControllerMemory(
        done={
            f"WarnOwner:{gone}:IdleTimeout:1:x": b.T0,
            f"WarnOwner:{kept}:IdleTimeout:1:x": b.T0,
            "AlertAdmin:BreakerTripped:2026-03-02T12:00:00Z": b.T0,
            "ResetGpu:GPU-1:2026:GpuDirty": b.T0,
            f"AlertAdmin:DuplicateGpuHolder:GPU-1:{kept}+{gone}": b.T0,
        },
    ).with_failure(f"RemoveContainer:{gone}:CreatedNeverStarted", "x", b.T0)
    out = mem.without_containers({gone})
    assert set(out.done) == {
        f"WarnOwner:{kept}:IdleTimeout:1:x",
        "AlertAdmin:BreakerTripped:2026-03-02T12:00:00Z",
        "ResetGpu:GPU-1:2026:GpuDirty",
    }
    assert out.attempts == {}
    assert mem.without_containers(set()) is mem
