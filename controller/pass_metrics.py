"""The metrics mapping: a finished pass (snapshot, plan, execution report) -> the daemon's gauges.

Pure translation into :class:`controller.ops.metrics.Metrics` calls; counts GPUs free / held /
idle-held, orphans and containers by state and type. Unavailable is not empty: a domain that could
not be observed makes its series disappear instead of reading 0.

Called by :mod:`controller.loop` at the end of each pass (and for a failed one). Must not observe,
decide or act; it only reads the values it is given.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING

from controller.act.executor import ExecutionReport
from controller.memory import ControllerMemory
from controller.plan.types import Plan
from controller.resource_metrics import resource_figures
from controller.snapshot import CgroupScope, Domain, Snapshot

if TYPE_CHECKING:
    from controller.ops.metrics import Metrics


def gpu_states(
    snapshot: Snapshot, memory: ControllerMemory, now: datetime
) -> tuple[dict[str, int], dict[str, float]]:
    """Count GPUs free / held / idle-held, and how long each idle-held GPU has been idle."""
    held: set[str] = set()
    idle_since: dict[str, datetime] = {}
    for c in snapshot.containers:
        held.update(c.gpu_uuids)
        cm = memory.containers.get(c.id)
        if c.state == "running" and cm is not None and cm.idle_since is not None:
            for uuid in c.gpu_uuids:
                prev = idle_since.get(uuid)
                idle_since[uuid] = cm.idle_since if prev is None else min(prev, cm.idle_since)
    counts = {"free": 0, "held": 0, "idle-held": 0}
    idle_held_s: dict[str, float] = {}
    for g in snapshot.gpus:
        uuids = {g.uuid, *(m.uuid for m in g.mig_devices)}
        idle = [idle_since[u] for u in uuids if u in idle_since]
        if idle:
            counts["idle-held"] += 1
            idle_held_s[g.uuid] = max(0.0, (now - min(idle)).total_seconds())
        elif uuids & held:
            counts["held"] += 1
        else:
            counts["free"] += 1
    return counts, idle_held_s


def record_metrics(
    metrics: Metrics,
    snapshot: Snapshot,
    the_plan: Plan,
    report: ExecutionReport,
    duration_s: float,
    memory: ControllerMemory,
) -> None:
    docker_ok = snapshot.domain_ok(Domain.DOCKER)
    gpus_known = docker_ok and snapshot.domain_ok(Domain.NVML)
    procs_known = gpus_known and snapshot.domain_ok(Domain.PROCFS)
    by_state_type: dict[tuple[str, str], int] = {}
    for c in snapshot.containers:
        k = (c.state.value, c.container_type.value)
        by_state_type[k] = by_state_type.get(k, 0) + 1
    gpus_by_state, idle_held_s = gpu_states(snapshot, the_plan.memory, the_plan.evaluated_at)
    orphans = sum(
        1
        for p in snapshot.processes
        if p.container_id is not None
        and not p.container_exists
        and not p.is_system
        and p.cgroup_scope is CgroupScope.ENGINE  # another runtime's workload is not an orphan
    )
    over_spec, over_quota, brought_under = resource_figures(the_plan, report)
    metrics.observe_resources(over_spec if docker_ok else None, over_quota if docker_ok else None)
    metrics.add_memory_brought_under_limits(brought_under)
    for o in report.outcomes:
        metrics.record_action(o.kind, o.reason, o.outcome)
        if o.outcome == "done" and o.reclaimed_gpu_s is not None:
            # GPU-seconds the stopped container had been holding idle (the executor computed it
            # when the stop began; a stop completed after a restart counts too).
            metrics.add_reclaimed_gpu_seconds(o.reclaimed_gpu_s)
    # Unavailable is not empty: a series that could not be observed disappears instead of reading 0.
    metrics.observe_pass(
        duration_s=duration_s,
        snapshot_health=[(h.domain.value, h.ok, h.duration_s) for h in snapshot.health],
        containers_by_state_type=by_state_type if docker_ok else None,
        gpus_by_state=gpus_by_state if gpus_known else None,
        orphans=orphans if procs_known else None,
        breaker_tripped=memory.breaker.tripped,
        succeeded=True,
        now_epoch=time.time(),
        gpu_idle_held_s=idle_held_s if gpus_known else None,
    )


def record_failed_pass(metrics: Metrics, duration_s: float, breaker_tripped: bool) -> None:
    metrics.observe_pass(
        duration_s=duration_s,
        snapshot_health=[],
        containers_by_state_type=None,
        gpus_by_state=None,
        orphans=None,
        breaker_tripped=breaker_tripped,
        succeeded=False,
        now_epoch=time.time(),
    )
