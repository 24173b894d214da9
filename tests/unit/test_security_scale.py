"""5,000 containers (synthetic: never created on the shared engine), planned and rendered, bounded.

A host of 5,000 containers -- running GPU containers with activity counters, exited and created
ones, every seventh with hostile labels -- on 64 GPUs, planned with the real policy resolution
(the built-in DS01 policy) for two passes, then rendered by ``ds01ctl``'s own functions. Checked:

- the memory of a pass (tracemalloc peak) and of the rendering stay under loose bounds;
- the per-pass action budget holds at this size (the rest is deferred with a reason, not lost),
  and the containers past the budget are still judged (they are deferred, not forgotten);
- the table has exactly one line per container and no control character reaches it.

The real-engine scale benchmark (500 containers) lives in bench/.
"""

from __future__ import annotations

import json
import re
import tracemalloc
from datetime import timedelta

from controller.cli.get import GetOptions, run_get
from controller.cli.view import View
from controller.memory import ControllerMemory
from controller.plan.desired import PolicySetDesired
from controller.plan.planner import plan
from controller.plan.types import DeferReason
from controller.snapshot import ContainerObs, ContainerState
from crd_like_specs.vocabulary import ContainerType
from desired_state.load import builtin_policy
from tests.fixtures import builders as b

N = 5_000
GPU_COUNT = 64
MIB = 1024 * 1024
HOSTILE = "\x1b[2J\x1b]0;title\x07\rFAKE ROW\n\u202eevil\x9b31m\x00"
FORBIDDEN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def gpu_uuid(i: int) -> str:
    return f"GPU-{i:08x}-5ca1-4000-8000-000000000000"


def host(at_s: float) -> tuple[list[ContainerObs], list]:  # type: ignore[type-arg]
    now = b.at(seconds=at_s)
    containers: list[ContainerObs] = []
    for i in range(N):
        name = f"c{i:05d}"
        labels = {"ds01.user": f"user{i % 97}", "ds01.managed": "true"}
        if i % 7 == 0:
            labels |= {"note": HOSTILE * 3, f"k{HOSTILE}": HOSTILE}
        kind = i % 20
        if kind < 15:  # running; every third holds a GPU, idle on CPU
            gpus = [gpu_uuid(i % GPU_COUNT)] if i % 3 == 0 else []
            sig = b.signals(now, cpu_usage_ns=int(at_s * 1e6), net_bytes=0, gpu_pct={g: 0.0 for g in gpus})
            c = b.running(
                name, owner=f"user{i % 97}", gpus=gpus, labels=labels, sig=sig, started_at=b.ago(hours=30)
            )
        elif kind < 19:
            c = b.exited(name, owner=f"user{i % 97}", labels=labels, finished_at=b.ago(hours=2))
        else:
            c = b.created(name, owner=f"user{i % 97}", labels=labels, created_at=b.ago(hours=2))
        containers.append(c.model_copy(update={"container_type": ContainerType.DOCKER}))
    gpus = [b.gpu(i, gpu_uuid(i)) for i in range(GPU_COUNT)]
    return containers, gpus


def test_five_thousand_containers_plan_and_render_within_bounds() -> None:
    desired = PolicySetDesired(builtin_policy())
    # A daemon that ran before: the stopped containers' holds expired long ago, one by one (a first
    # pass with a fresh memory would count them all and trip the removal breaker).
    memory = ControllerMemory(last_pass_at=b.ago(minutes=1))
    peaks: list[float] = []
    for at_s in (0.0, 60.0):
        containers, gpus = host(at_s)
        snap = b.snapshot(observed_at=b.at(seconds=at_s), containers=containers, gpus=gpus)
        tracemalloc.start()
        try:
            p = plan(snap, desired, memory, snap.observed_at)
            peaks.append(tracemalloc.get_traced_memory()[1] / MIB)
        finally:
            tracemalloc.stop()
        memory = p.memory
    assert max(peaks) < 256, peaks

    destructive = [a for a in p.actions if a.destructive]
    budget = desired.global_policy.max_destructive_actions_per_pass.value
    assert 0 < len(destructive) <= budget
    waiting = [d for d in p.deferred if d.why == DeferReason.BUDGET_EXHAUSTED]
    assert waiting, "the rest of the due work must be deferred with a reason, not dropped"
    # Every running GPU container is judged in this pass (sampled into memory).
    running_gpu = [c for c in snap.containers if c.state == ContainerState.RUNNING and c.has_gpu]
    assert all(len(memory.containers[c.id].samples) == 2 for c in running_gpu)

    view = View(
        snapshot=snap, now=snap.observed_at + timedelta(seconds=1), plan=p, memory=memory, desired=desired
    )
    tracemalloc.start()
    try:
        table, empty = run_get("containers", view, GetOptions(show_all=True, output="wide"))
        render_peak = tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()
    assert not empty and render_peak < 128, render_peak
    lines = table.splitlines()
    assert len(lines) == N + 1  # a header and exactly one row per container: no forged row
    assert FORBIDDEN.search(table) is None
    data = json.loads(run_get("containers", view, GetOptions(name="c00007", output="json"))[0])
    assert FORBIDDEN.search(json.dumps(data, ensure_ascii=False)) is None
