"""A fixed host for the ``ds01ctl`` output tests: snapshot, plan, memory, policy and event log.

Everything is built from values around ``builders.T0`` so the golden files never change unless the
output does. The plan is written by hand (the CLI renders plans; the planner has its own tests), and
tells a small story:

- alice-train   running, GPU 0, idle for 52 min of 1 h, warned at 80 %, next warning in 5 min,
                stop in 8 min;
- bob-notebook  running devcontainer on MIG 1.0, active, keep-alive fresh, idle stop held by it;
- carol-old     exited 3 h ago on MIG 1.1, removal deferred by its hold (due in 3 h);
- dave-new      created and never started, no GPU: removed now;
- eve-web       running, no GPU, nothing planned (hidden unless --all); a hostile label;
- GPU 2         free of containers, but an orphaned process (killed now), a host process with a
                hostile command line, and a stale ledger row (released now).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from controller.act.events import EventLog
from controller.cli.view import LogEventSource, PolicyInfo, PolicySource, View
from controller.memory import ContainerMemory, ControllerMemory, Sample
from controller.plan.desired import StaticDesired
from controller.plan.types import Action, ActionKind, DeferReason, Deferred, Plan, Reason, Target
from controller.snapshot import (
    ContainerObs,
    GpuRefSource,
    KeepAliveState,
    OwnerRule,
    ResourceLimits,
    Snapshot,
    TypeRule,
)
from crd_like_specs.vocabulary import ContainerType
from desired_state.effective import EffectivePolicy, ExemptFrom, ResourceSpec, Sourced
from tests.fixtures import builders as b

T0 = b.T0
HOSTILE = "evil\x1b[2J\x1b]0;owned\x07\r\nFAKE ROW\u202e"

MIG_1_0 = b.mig_uuid(1, 0)
MIG_1_1 = b.mig_uuid(1, 1)


def containers() -> list[ContainerObs]:
    alice = b.running(
        "alice-train",
        owner="alice",
        container_type=ContainerType.ATOMIC,
        gpus=[b.GPU0],
        started_at=b.ago(hours=5),
        created_at=b.ago(hours=6),
        labels={"ds01.user": "alice", "ds01.managed": "true", "ds01.container_type": "atomic"},
        sig=b.signals(T0, cpu_usage_ns=12_000_000_000, net_bytes=5000, gpu_pct={b.GPU0: 0.0}),
        image="ds01/pytorch:2.3",
    ).model_copy(update={"owner_rule": OwnerRule.LABEL_DS01_USER, "type_rule": TypeRule.LABEL_CONTAINER_TYPE})
    bob = b.running(
        "bob-notebook",
        owner="bob",
        container_type=ContainerType.DEVCONTAINER,
        gpus=[b.ref(MIG_1_0, parent=b.GPU1, source=GpuRefSource.LABEL_GPU_UUIDS)],
        started_at=b.ago(hours=2),
        created_at=b.ago(days=3),
        labels={"devcontainer.local_folder": "/home/bob/thesis"},
        sig=b.signals(
            T0,
            cpu_usage_ns=900_000_000_000,
            net_bytes=10_000_000,
            gpu_pct={MIG_1_0: None},
            keep=b.keepalive(KeepAliveState.PRESENT, mtime=b.ago(minutes=5)),
        ),
        image="mcr.microsoft.com/devcontainers/python:3.11",
    ).model_copy(
        update={"owner_rule": OwnerRule.DEVCONTAINER_LOCAL_FOLDER, "type_rule": TypeRule.DEVCONTAINER_LABEL}
    )
    carol = b.exited(
        "carol-old",
        owner="carol",
        container_type=ContainerType.DOCKER,
        gpus=[b.ref(MIG_1_1, parent=b.GPU1)],
        created_at=b.ago(days=2),
        finished_at=b.ago(hours=3),
        exit_code=137,
    ).model_copy(update={"owner_rule": OwnerRule.NAME_UID})
    dave = b.created(
        "dave-new", owner="dave", container_type=ContainerType.DOCKER, created_at=b.ago(hours=1)
    ).model_copy(update={"owner_rule": OwnerRule.PROCESS_UID})
    eve = b.running(
        "eve-web",
        owner="eve",
        labels={"web.note": HOSTILE},
        started_at=b.ago(days=10),
        created_at=b.ago(days=10),
        sig=b.signals(T0, cpu_usage_ns=50_000_000_000, net_bytes=0),
    )
    # Limits as docker inspect states them: alice's are above her spec, eve's are unset.
    alice = alice.model_copy(
        update={
            "limits": ResourceLimits(nano_cpus=16 * 10**9, memory_bytes=64 << 30, memory_swap_bytes=-1),
            "signals": alice.signals.model_copy(
                update={
                    "memory_bytes": 3 << 30,
                    "memory_unknown": None,
                    "pids_current": 12,
                    "pids_unknown": None,
                }
            )
            if alice.signals is not None
            else None,
        }
    )
    eve = eve.model_copy(update={"limits": ResourceLimits()})
    return [alice, bob, carol, dave, eve]


def processes() -> list:  # type: ignore[type-arg]
    alice_id = b.cid("alice-train")
    return [
        b.process(
            1001, b.GPU0, container_id=alice_id, container_exists=True, cmdline="python train.py --epochs 90"
        ),
        b.process(
            1002,
            b.GPU0,
            is_system=True,
            user="root",
            uid=0,
            cmdline="nvidia-persistenced",
            used_memory_bytes=None,
        ),
        b.process(2002, b.GPU2, container_id="f" * 64, user="frank", uid=1006, cmdline="python leak.py"),
        b.process(3003, b.GPU2, user="mallory", uid=1007, cmdline=HOSTILE),
    ]


def snapshot(order: Sequence[int] | None = None) -> Snapshot:
    cs = containers()
    if order is not None:
        cs = [cs[i] for i in order]
    procs = processes()
    if order is not None:
        procs = list(reversed(procs))
    return b.snapshot(
        containers=cs,
        gpus=[
            b.gpu(0, util_pct=0.0, memory_used_bytes=3 * 1024**3, processes=(1001, 1002)),
            b.gpu(1, mig_slots=2, memory_used_bytes=1024**3, mig_profile="1g.10gb"),
            b.gpu(2, util_pct=37.0, memory_used_bytes=6 * 1024**3, processes=(2002, 3003)),
        ],
        processes=procs,
        ledger=b.ledger(
            b.ledger_entry("alice-train", b.GPU0, user="alice", allocated_at=b.ago(hours=6)),
            b.ledger_entry("carol-old", MIG_1_1, user="carol", allocated_at=b.ago(days=2)),
            b.ledger_entry("zombie", b.GPU2, user="frank", allocated_at=b.ago(days=4)),
        ),
    )


def _target(c: ContainerObs, gpu: str | None = None) -> Target:
    return Target(
        container=c.name,
        container_id=c.id,
        expected_state=c.state.value,
        expected_started_at=c.started_at,
        gpu=gpu,
        user=c.owner,
    )


def plan(snap: Snapshot | None = None) -> Plan:
    snap = snap or snapshot()
    by = {c.name: c for c in snap.containers}
    actions = (
        Action(
            kind=ActionKind.REMOVE_CONTAINER,
            target=_target(by["dave-new"]),
            reason=Reason.CREATED_NEVER_STARTED,
            message="created 1h ago and never started (limit 30m)",
            evidence={"created_at": b.ago(hours=1).isoformat(), "limit_s": 1800.0},
            due_at=b.ago(minutes=30),
            key="remove:dave-new:created",
        ),
        Action(
            kind=ActionKind.KILL_PROCESS,
            target=Target(pid=2002, pid_start_time=1_700_000_000.0, gpu=b.GPU2, user="frank"),
            reason=Reason.ORPHANED_PROCESS,
            message="pid 2002 holds GPU 2 but its container ffffffffffff is gone",
            evidence={"sightings": 2, "container_id": "f" * 12},
            due_at=T0,
            key="kill:2002:1700000000.0",
        ),
        Action(
            kind=ActionKind.RELEASE_ALLOCATION,
            target=Target(
                container="zombie",
                gpu=b.GPU2,
                user="frank",
                ledger_entry={
                    "gpu": b.GPU2,
                    "container": "zombie",
                    "allocated_at": b.ago(days=4).isoformat(),
                },
            ),
            reason=Reason.LEAKED_ALLOCATION,
            message="ledger row for zombie on GPU 2: no such container",
            evidence={"age_s": 345600.0},
            due_at=T0,
            key="release:zombie:GPU2",
        ),
    )
    deferred = (
        Deferred(
            target=_target(by["alice-train"], gpu=b.GPU0),
            rule=Reason.IDLE_TIMEOUT,
            why=DeferReason.NOT_DUE,
            message="alice-train: idle for 52m of 1h",
            due_at=T0 + timedelta(minutes=5),
            evidence={
                "clock_start": b.ago(minutes=52).isoformat(),
                "elapsed_s": 3120.0,
                "timeout_s": 3600.0,
                "warnings_sent": {"80": b.ago(minutes=4).isoformat()},
                "stop_due_at": (T0 + timedelta(minutes=8)).isoformat(),
            },
        ),
        Deferred(
            target=_target(by["bob-notebook"]),
            rule=Reason.IDLE_TIMEOUT,
            why=DeferReason.KEEP_ALIVE,
            message="keep-alive file touched 5m ago",
            due_at=None,
        ),
        Deferred(
            target=_target(by["carol-old"], gpu=MIG_1_1),
            rule=Reason.STOPPED_HOLD_EXPIRED,
            why=DeferReason.NOT_DUE,
            message="stopped 3h ago; hold 6h",
            due_at=T0 + timedelta(hours=3),
        ),
    )
    return Plan(
        observed_at=snap.observed_at, evaluated_at=snap.observed_at, actions=actions, deferred=deferred
    )


def memory() -> ControllerMemory:
    alice_id = b.cid("alice-train")
    bob_id = b.cid("bob-notebook")
    return ControllerMemory(
        containers={
            alice_id: ContainerMemory(
                container_id=alice_id,
                name="alice-train",
                started_at=b.ago(hours=5),
                samples=(
                    Sample(at=b.ago(seconds=30), cpu_usage_ns=11_985_000_000, net_bytes=4000, idle=True),
                    Sample(
                        at=T0,
                        cpu_usage_ns=12_000_000_000,
                        net_bytes=5000,
                        idle=True,
                        detail="cpu 0.1% < 2%, net 1000B < 1MiB, gpu 0% < 5%",
                    ),
                ),
                idle_since=b.ago(minutes=52),
                warnings={"idle:80:" + b.ago(minutes=52).isoformat(): b.ago(minutes=4)},
            ),
            bob_id: ContainerMemory(
                container_id=bob_id,
                name="bob-notebook",
                started_at=b.ago(hours=2),
                samples=(
                    Sample(
                        at=b.ago(seconds=30), cpu_usage_ns=885_000_000_000, net_bytes=9_000_000, idle=False
                    ),
                    Sample(
                        at=T0,
                        cpu_usage_ns=900_000_000_000,
                        net_bytes=10_000_000,
                        idle=False,
                        detail="cpu 50%",
                    ),
                ),
            ),
        }
    )


def _policy_for(c: ContainerObs, _now: object) -> EffectivePolicy:
    if c.owner == "alice":
        return b.policy(
            owner="alice",
            container_type=c.container_type.value,
            idle_timeout_s=Sourced(value=3600.0, source="UserGroup/researcher"),
            max_runtime_s=Sourced(value=48 * 3600.0, source="LifecyclePolicy/default"),
            cpu_idle_threshold_pct=Sourced(value=2.0, source="LifecyclePolicy/default"),
            exemptions=[b.exemption(ExemptFrom.MAX_RUNTIME, expires_at=T0 + timedelta(days=7))],
        ).model_copy(
            update={
                "group": Sourced(value="researcher", source="UserGroup/researcher"),
                "resources": ResourceSpec(
                    max_cpus=Sourced(value=8.0, source="UserGroup/researcher"),
                    memory_bytes=Sourced(value=32 << 30, source="UserGroup/researcher"),
                    memory_swap_bytes=Sourced(value=32 << 30, source="UserGroup/researcher"),
                    pids_limit=Sourced(value=4096, source="built-in default"),
                    max_containers_per_user=Sourced(value=3, source="built-in default"),
                    max_gpu_equivalents=Sourced(value=1.0, source="built-in default"),
                    max_gpu_slots_per_container=Sourced(value=1, source="built-in default"),
                    aggregate_cpus=Sourced(value=24.0, source="UserGroup/researcher: aggregate"),
                    aggregate_memory_bytes=Sourced(value=96 << 30, source="UserGroup/researcher: aggregate"),
                    aggregate_tasks=Sourced(value=12288, source="UserGroup/researcher: aggregate"),
                ),
            }
        )
    if c.owner == "carol":
        return b.policy(
            owner="carol",
            container_hold_after_stop_s=Sourced(value=6 * 3600.0, source="LifecyclePolicy/default"),
        )
    if c.owner == "eve":
        return b.policy(owner="eve", max_runtime_s=Sourced(value=None, source="UserOverride/eve"))
    return b.policy(owner=c.owner, container_type=c.container_type.value)


def policy_info() -> PolicyInfo:
    return PolicyInfo(
        origin="specs etc/ds01/specs",
        sources=(
            PolicySource("LifecyclePolicy", "default", "etc/ds01/specs/lifecycle.yaml"),
            PolicySource("UserGroup", "researcher", "etc/ds01/specs/groups.yaml", "members: alice"),
            PolicySource("Exemption", "grant-1", "etc/ds01/specs/exemptions.yaml"),
        ),
    )


def write_events(path: Path) -> None:
    log = EventLog(path)
    log.write(
        "detection.container_discovered",
        user="alice",
        details={"container": "alice-train", "container_id": b.cid("alice-train")[:12]},
        at=b.ago(hours=6),
    )
    log.write(
        "detection.container_exited", user="carol", details={"container": "carol-old"}, at=b.ago(hours=3)
    )
    log.write(
        "controller.warning",
        user="alice",
        details={"container": "alice-train", "reason": "idle", "stop_at": "12:08"},
        at=b.ago(minutes=4),
    )
    log.write(
        "gpu.release", user="frank", details={"gpu": b.GPU2, "container": "zombie"}, at=b.ago(minutes=3)
    )


def view(
    events_log: Path | None = None, *, order: Sequence[int] | None = None, with_memory: bool = True
) -> View:
    snap = snapshot(order)
    return View(
        snapshot=snap,
        now=snap.observed_at,
        plan=plan(snap),
        memory=memory() if with_memory else None,
        desired=StaticDesired(_policy_for, b.global_policy()),
        policy=policy_info(),
        timers_note=None
        if with_memory
        else "timers unavailable: state directory var/lib/ds01: permission denied",
        event_source=LogEventSource(events_log) if events_log is not None else None,
    )
