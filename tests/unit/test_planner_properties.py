"""Properties of the planner over generated hosts, simulated pass after pass.

Each example is a small host (containers in every state with different policies and activity,
GPU processes, ledger rows) run for several passes five minutes apart: every pass is planned,
checked, carried out by a perfect executor (``builders.apply_plan``) and its outcomes recorded.
Checked on every pass:

* safety: no destructive action on a protected, monitoring or exempt container, on a busy
  container or one whose activity is unknown, and no kill of a process of a live container, a
  host process or a system process; idle and runtime stops only after a delivered warning and
  its lead time;
* the budget and the breaker hold;
* determinism: shuffling every input collection gives the identical plan and memory;
* idempotence: planning again at the same instant on the world after the executor ran does not
  repeat any destructive action that was carried out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.memory import ControllerMemory
from controller.plan.desired import StaticDesired
from controller.plan.planner import plan
from controller.plan.types import ActionKind, Plan
from controller.snapshot import ContainerObs, ContainerState, GpuProcessObs, LedgerEntry, Snapshot
from desired_state.effective import EffectivePolicy, ExemptFrom, GlobalPolicy
from tests.fixtures import builders as b

STEP = timedelta(minutes=5)
PASSES = 10
FAST = {
    "idle_timeout_s": 10 * b.MIN,
    "max_runtime_s": 40 * b.MIN,
    "gpu_hold_after_stop_s": 5 * b.MIN,
    "container_hold_after_stop_s": 10 * b.MIN,
    "created_container_timeout_s": 5 * b.MIN,
    "grace_period_s": 5 * b.MIN,
    "idle_detection_window": 2,
    "warn_lead_s": 2 * b.MIN,
    "keepalive_max_age_s": 15 * b.MIN,
}
POLICIES: dict[str, EffectivePolicy] = {
    "default": b.policy(**FAST),
    "protected": b.policy(protected=True, **FAST),
    "monitoring": b.policy(monitoring=True, **FAST),
    "exempt-idle": b.policy(exemptions=[b.exemption(ExemptFrom.IDLE)], **FAST),
    "exempt-runtime": b.policy(exemptions=[b.exemption(ExemptFrom.MAX_RUNTIME)], **FAST),
    "exempt-cleanup": b.policy(exemptions=[b.exemption(ExemptFrom.CLEANUP)], **FAST),
    "devcontainer": b.policy(**{**FAST, "idle_timeout_s": None}),
    "ds01": b.policy(),
}
PROFILES = ("idle", "busy-cpu", "busy-gpu", "busy-net", "unknown-cpu", "no-reading", "keepalive", "mig-idle")
GPU_CHOICES = (None, b.GPU0, b.GPU1, b.GPU2, "all")
STATES = (
    ContainerState.RUNNING,
    ContainerState.RUNNING,
    ContainerState.RUNNING,
    ContainerState.CREATED,
    ContainerState.EXITED,
    ContainerState.DEAD,
    ContainerState.PAUSED,
)


@dataclass
class Sim:
    """The world the planner looks at, plus how each running container behaves."""

    containers: dict[str, ContainerObs]
    profile: dict[str, str]
    processes: list[GpuProcessObs]
    rows: list[LedgerEntry]
    policy_of: dict[str, str]
    glob: GlobalPolicy
    counters: dict[str, b.Counters] = field(default_factory=dict)

    def snapshot(self, t: datetime) -> Snapshot:
        # The device view shows what the containers do: a GPU is busy if a running busy-gpu
        # container uses it (every GPU for an "all GPUs" container).
        busy: set[str] = set()
        for cid_, c in self.containers.items():
            if c.state == ContainerState.RUNNING and self.profile[cid_] == "busy-gpu":
                busy.update((b.GPU0, b.GPU1) if c.all_gpus else c.gpu_uuids)
        out: list[ContainerObs] = []
        for cid_, c in sorted(self.containers.items()):
            if c.state != ContainerState.RUNNING:
                out.append(c)
                continue
            prof = self.profile[cid_]
            cnt = self.counters.setdefault(cid_, b.Counters())
            cnt.step(
                STEP.total_seconds(),
                cpu_pct=50.0 if prof == "busy-cpu" else 0.1,
                net_bytes=50_000_000 if prof == "busy-net" else 10,
            )
            gpu_pct = {u: (95.0 if prof == "busy-gpu" else 0.0) for u in c.gpu_uuids}
            if prof == "mig-idle":
                gpu_pct = dict.fromkeys(c.gpu_uuids)
            keep = b.keepalive(mtime=t) if prof == "keepalive" else b.NO_KEEPALIVE
            sig = cnt.read(t, gpu_pct=gpu_pct, keep=keep)
            if prof == "unknown-cpu":
                sig = sig.model_copy(update={"cpu_usage_ns": None, "cpu_unknown": "unreadable"})
            out.append(c.model_copy(update={"signals": None if prof == "no-reading" else sig}))
        return b.snapshot(
            observed_at=t,
            containers=out,
            gpus=[
                b.gpu(0, util_pct=95.0 if b.GPU0 in busy else 0.0),
                b.gpu(1, util_pct=95.0 if b.GPU1 in busy else 0.0),
                b.gpu(2, mig_slots=2),
            ],
            processes=self.processes,
            ledger=b.ledger(*self.rows),
        )

    def absorb(self, after: Snapshot) -> None:
        """Take the executor's result as the new world (signals are regenerated next pass)."""
        self.containers = {c.id: c.model_copy(update={"signals": None}) for c in after.containers}
        self.processes = list(after.processes)
        self.rows = list(after.ledger.entries)

    def desired(self) -> StaticDesired:
        table = {c.name: POLICIES[self.policy_of[c.id]] for c in self.containers.values()}
        return b.desired(POLICIES["default"], self.glob, per_container=table)


@st.composite
def sims(draw: st.DrawFn) -> Sim:
    n = draw(st.integers(min_value=0, max_value=10))
    containers: dict[str, ContainerObs] = {}
    profile: dict[str, str] = {}
    policy_of: dict[str, str] = {}
    for i in range(n):
        name = f"c{i}"
        state = draw(st.sampled_from(STATES))
        g = draw(st.sampled_from(GPU_CHOICES))
        prof = draw(st.sampled_from(PROFILES))
        gpus: list[object] = []
        if prof == "mig-idle":
            gpus = [b.ref(b.mig_uuid(2, i % 2), parent=b.GPU2)]
        elif g not in (None, "all"):
            gpus = [g]
        created_at = b.ago(minutes=draw(st.integers(min_value=0, max_value=600)))
        started_at = created_at + timedelta(minutes=draw(st.integers(min_value=0, max_value=30)))
        finished_at = b.ago(minutes=draw(st.integers(min_value=0, max_value=60)))
        c = b.container(
            name,
            state=state,
            gpus=gpus,  # type: ignore[arg-type]
            all_gpus=g == "all",
            created_at=created_at,
            started_at=min(started_at, b.T0),
            finished_at=finished_at,
        )
        if state in (ContainerState.EXITED, ContainerState.DEAD) and draw(st.integers(0, 9)) == 0:
            c = c.model_copy(update={"finished_at": None})
        containers[c.id] = c
        profile[c.id] = prof
        policy_of[c.id] = draw(st.sampled_from(sorted(POLICIES)))
    ids = sorted(containers)
    processes: list[GpuProcessObs] = []
    for j in range(draw(st.integers(min_value=0, max_value=6))):
        kind = draw(st.sampled_from(["gone", "container", "host", "system", "no-start"]))
        owner = draw(st.sampled_from(ids)) if ids and kind == "container" else None
        processes.append(
            b.process(
                1000 + j,
                draw(st.sampled_from([b.GPU0, b.GPU1])),
                container_id=("e" * 64 if kind in ("gone", "no-start") else owner),
                container_exists=owner is not None,
                is_system=kind == "system",
                start_time=None if kind == "no-start" else float(j),
            )
        )
    rows = [
        b.ledger_entry(
            draw(st.sampled_from([*[containers[i].name for i in ids], "ghost"])),
            draw(st.sampled_from([b.GPU0, b.GPU1])),
            allocated_at=b.ago(minutes=draw(st.integers(min_value=0, max_value=30))),
        )
        for _ in range(draw(st.integers(min_value=0, max_value=3)))
    ]
    glob = b.global_policy(
        max_destructive_actions_per_pass=draw(st.sampled_from([0, 1, 3, 100])),
        breaker_max_fraction=draw(st.sampled_from([0.0, 0.5, 1.0])),
        breaker_min_containers=draw(st.sampled_from([1, 3, 100])),
    )
    return Sim(containers, profile, processes, rows, policy_of, glob)


def shuffled(snap: Snapshot, memory: ControllerMemory, seed: int) -> tuple[Snapshot, ControllerMemory]:
    rng = random.Random(seed)

    def mix(items: tuple[object, ...] | list[object]) -> tuple[object, ...]:
        out = list(items)
        rng.shuffle(out)
        return tuple(out)

    snap = snap.model_copy(
        update={
            "containers": mix(snap.containers),
            "processes": mix(snap.processes),
            "gpus": mix(snap.gpus),
            "health": mix(snap.health),
            "ledger": snap.ledger.model_copy(update={"entries": mix(snap.ledger.entries)}),
        }
    )
    mem_containers = list(memory.containers.items())
    rng.shuffle(mem_containers)
    mem_procs = list(memory.processes.items())
    rng.shuffle(mem_procs)
    memory = memory.model_copy(update={"containers": dict(mem_containers), "processes": dict(mem_procs)})
    return snap, memory


def check_safety(sim: Sim, snap: Snapshot, before: ControllerMemory, p: Plan) -> None:
    now = p.evaluated_at
    containers = {c.id: c for c in snap.containers}
    destructive = [a for a in p.actions if a.destructive]
    budget = sim.glob.max_destructive_actions_per_pass.value
    assert len(destructive) <= budget
    if before.breaker.tripped or p.memory.breaker.tripped:
        assert destructive == []
    for a in destructive:
        cid_ = a.target.container_id
        if a.kind in (ActionKind.STOP_CONTAINER, ActionKind.REMOVE_CONTAINER):
            assert cid_ in containers
            c = containers[cid_]
            pol = POLICIES[sim.policy_of[cid_]]
            assert not pol.protected.value and not pol.monitoring.value, a
            if a.kind == ActionKind.REMOVE_CONTAINER:
                assert pol.exemption(ExemptFrom.CLEANUP) is None, a
                assert c.state in (ContainerState.CREATED, ContainerState.EXITED, ContainerState.DEAD), a
            else:
                assert c.state == ContainerState.RUNNING and c.has_gpu, a
                lead = timedelta(seconds=a.evidence["lead_s"])
                first = datetime.fromisoformat(a.evidence["first_warning_at"])
                assert first + lead <= now, a
                assert a.due_at <= now
                if a.reason.value == "IdleTimeout":
                    assert pol.exemption(ExemptFrom.IDLE) is None, a
                    assert sim.profile[cid_] in ("idle", "mig-idle", "keepalive"), a
                    assert p.memory.containers[cid_].samples[-1].idle is True, a
                    assert pol.idle_timeout_s.value is not None
                else:
                    assert pol.exemption(ExemptFrom.MAX_RUNTIME) is None, a
        elif a.kind == ActionKind.KILL_PROCESS:
            proc = next(
                q for q in snap.processes if q.pid == a.target.pid and q.start_time == a.target.pid_start_time
            )
            assert proc.container_id is not None and not proc.is_system, a
            owner = containers.get(proc.container_id)
            assert owner is None or owner.state not in (
                ContainerState.RUNNING,
                ContainerState.PAUSED,
                ContainerState.RESTARTING,
            ), a
            assert proc.start_time is not None
        elif a.kind == ActionKind.RESET_GPU:
            live = [
                c
                for c in snap.containers
                if c.state in (ContainerState.RUNNING, ContainerState.PAUSED)
                and (c.all_gpus or a.target.gpu in c.gpu_uuids)
            ]
            assert live == [], a
            assert not any(q.gpu_uuid == a.target.gpu for q in snap.processes), a


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sim=sims(), seed=st.integers(min_value=0, max_value=2**16))
def test_simulated_passes_are_safe_deterministic_and_idempotent(sim: Sim, seed: int) -> None:
    memory = ControllerMemory()
    for i in range(PASSES):
        now = b.T0 + i * STEP
        snap = sim.snapshot(now)
        desired = sim.desired()
        p = plan(snap, desired, memory, now)

        check_safety(sim, snap, memory, p)

        s2, m2 = shuffled(snap, memory, seed + i)
        q = plan(s2, desired, m2, now)
        assert q.model_dump(mode="json") == p.model_dump(mode="json")
        assert q.memory.model_dump(mode="json") == p.memory.model_dump(mode="json")

        after = b.apply_plan(snap, p)
        memory = b.record_outcomes(p)
        again = plan(after, desired, memory, now)
        performed = {a.key for a in p.actions if a.destructive}
        assert performed.isdisjoint(a.key for a in again.actions), performed
        sim.absorb(after)


@settings(max_examples=40, deadline=None)
@given(sim=sims())
def test_memory_never_inherits_across_container_ids(sim: Sim) -> None:
    """Memory is keyed by id: after a pass, memory holds exactly the containers of the snapshot."""
    snap = sim.snapshot(b.T0)
    p = plan(snap, sim.desired(), ControllerMemory(), b.T0)
    assert set(p.memory.containers) == {c.id for c in snap.containers}
    for cid_, cm in p.memory.containers.items():
        assert cm.container_id == cid_
