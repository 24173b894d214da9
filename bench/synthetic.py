"""Synthetic hosts for the planner-at-scale case: snapshot and memory values, no Docker, no NVML.

A host of ``n`` containers is 75 % running, 20 % exited and 5 % created; every third container
holds a GPU or MIG device; 64 GPUs, half of them in MIG mode; GPU processes scale with the host
(5,000 at 10,000 containers), most attributed to running containers, a few orphaned or bare host
processes. The controller memory is what a daemon that has run for a while holds at the start of
a pass: a record for every container, with the state its last pass saw, and a sample history for
each running GPU container (the only ones sampled). No warning was delivered (a dry-run daemon's
memory). Values are deterministic for a given ``n``.

With ``limits``, every container reports CPU, memory and pids limits from its inspect, in thirds
(none at all, above the built-in spec, within it), and each running one its cgroup's memory, swap
and task use (some above what the spec would allow: lowering those waits), so the resource rules
have work to do; without, no container reports limits (the resource rules pass over them).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from controller.memory import ContainerMemory, ControllerMemory, ProcessSighting, Sample
from controller.snapshot import (
    ActivitySignals,
    ContainerId,
    ContainerObs,
    ContainerState,
    Domain,
    DomainHealth,
    GpuObs,
    GpuProcessObs,
    GpuRef,
    GpuRefSource,
    GpuUtilReading,
    GpuUuid,
    KeepAlive,
    KeepAliveState,
    Ledger,
    LedgerEntry,
    MigDeviceObs,
    NvmlProcess,
    OwnerRule,
    ResourceLimits,
    Snapshot,
    TypeRule,
)
from crd_like_specs.vocabulary import ContainerType

GPU_COUNT = 64
HOST_CPUS = 256  # the observed CPU count (Snapshot.host_cpus): above every limit the specs set
GIB = 1024**3
SAMPLES_PER_CONTAINER = 12
SAMPLE_INTERVAL_S = 30.0
PROCESSES_PER_CONTAINER = 0.5  # 5,000 GPU processes at 10,000 containers
USERS = 200
TYPES = (ContainerType.DEVCONTAINER, ContainerType.COMPOSE, ContainerType.DOCKER, ContainerType.ATOMIC)
MIG_LAYOUTS = (("3g.40gb", "2g.20gb", "2g.20gb"), ("1g.10gb",) * 7)
# With ``limits``: none (LimitsMissing), above the built-in spec (32 CPUs, 32g, pids 4096), within it.
LIMIT_PATTERNS = (
    ResourceLimits(),
    ResourceLimits(nano_cpus=64 * 10**9, memory_bytes=64 * GIB, memory_swap_bytes=64 * GIB, pids_limit=8192),
    ResourceLimits(nano_cpus=8 * 10**9, memory_bytes=16 * GIB, memory_swap_bytes=16 * GIB, pids_limit=1024),
)


def _gpus() -> tuple[list[GpuObs], list[tuple[GpuUuid, GpuUuid, bool]]]:
    """64 GPUs, odd indexes in MIG mode; also every assignable device as (uuid, parent, is_mig)."""
    gpus: list[GpuObs] = []
    devices: list[tuple[GpuUuid, GpuUuid, bool]] = []
    for i in range(GPU_COUNT):
        uuid = GpuUuid(f"GPU-{i:08x}-0000-4000-8000-000000005ca1")
        if i % 2:
            layout = MIG_LAYOUTS[(i // 2) % 2]
            migs = tuple(
                MigDeviceObs(
                    uuid=GpuUuid(f"MIG-{i:08x}-{j:04x}-4000-8000-000000005ca1"),
                    index=j,
                    gpu_instance_id=j + 1,
                    compute_instance_id=0,
                    memory_used_bytes=GIB,
                    memory_total_bytes=10 * GIB,
                )
                for j, _profile in enumerate(layout)
            )
            devices.extend((m.uuid, uuid, True) for m in migs)
            gpus.append(
                GpuObs(
                    index=i,
                    uuid=uuid,
                    name="NVIDIA A100-SXM4-80GB",
                    memory_used_bytes=len(migs) * GIB,
                    memory_total_bytes=80 * GIB,
                    utilization_unknown="MIG mode: utilization not reported",
                    mig_enabled=True,
                    mig_devices=migs,
                )
            )
        else:
            devices.append((uuid, uuid, False))
            gpus.append(
                GpuObs(
                    index=i,
                    uuid=uuid,
                    name="NVIDIA A100-SXM4-80GB",
                    memory_used_bytes=(i % 7) * GIB,
                    memory_total_bytes=80 * GIB,
                    utilization_percent=float((i * 13) % 100),
                )
            )
    return gpus, devices


def build(n: int, now: datetime, *, limits: bool = False) -> tuple[Snapshot, ControllerMemory]:
    """A host of ``n`` containers observed at ``now`` and the memory a running daemon would hold."""
    rng = random.Random(n)
    gpus, devices = _gpus()
    containers: list[ContainerObs] = []
    memories: dict[str, ContainerMemory] = {}
    ledger: list[LedgerEntry] = []
    n_exited = round(n * 0.20)
    n_created = round(n * 0.05)
    n_running = n - n_exited - n_created
    for seq in range(n):
        state = (
            ContainerState.RUNNING
            if seq < n_running
            else ContainerState.EXITED
            if seq < n_running + n_exited
            else ContainerState.CREATED
        )
        cid = ContainerId(f"{seq:032x}{n:032x}")
        name = f"synth-{seq:05d}"
        owner = f"user{seq % USERS:03d}"
        created_at = now - timedelta(hours=rng.uniform(0.1, 72))
        refs: tuple[GpuRef, ...] = ()
        if seq % 3 == 0:
            dev, parent, is_mig = devices[(seq // 3) % len(devices)]
            refs = (
                GpuRef(
                    raw=dev, source=GpuRefSource.DEVICE_REQUEST, uuid=dev, parent_uuid=parent, is_mig=is_mig
                ),
            )
            ledger.append(
                LedgerEntry(gpu=dev, gpu_uuid=dev, container=name, user=owner, allocated_at=created_at)
            )
        started_at = finished_at = None
        pid = None
        signals = None
        busy = False
        if state != ContainerState.CREATED:
            started_at = created_at + timedelta(seconds=rng.uniform(1, 30))
        if state == ContainerState.EXITED:
            assert started_at is not None
            finished_at = started_at + (now - started_at) * rng.uniform(0.1, 0.9)
        if state == ContainerState.RUNNING:
            assert started_at is not None
            pid = 100_000 + seq
            busy = seq % 4 != 0
            signals = ActivitySignals(
                read_at=now,
                cpu_usage_ns=int((now - started_at).total_seconds() * (5e8 if busy else 1e6)),
                net_bytes=seq * 1000,
                process_count=3 if busy else 1,
                gpu_util=tuple(
                    GpuUtilReading(uuid=r.uuid, percent=40.0 if busy else 0.0)
                    if not r.is_mig
                    else GpuUtilReading(uuid=r.uuid, unknown_reason="MIG: no utilization")
                    for r in refs
                    if r.uuid is not None
                ),
                keepalive=KeepAlive(state=KeepAliveState.ABSENT),
            )
        samples: tuple[Sample, ...] = ()
        if signals is not None and refs:
            samples = tuple(
                Sample(
                    at=now - timedelta(seconds=SAMPLE_INTERVAL_S * (SAMPLES_PER_CONTAINER - k)),
                    cpu_usage_ns=max(
                        0, (signals.cpu_usage_ns or 0) - (SAMPLES_PER_CONTAINER - k) * 15 * 10**9
                    ),
                    net_bytes=seq * 1000,
                    idle=not busy,
                )
                for k in range(SAMPLES_PER_CONTAINER)
            )
        memories[cid] = ContainerMemory(
            container_id=cid,
            name=name,
            started_at=started_at,
            samples=samples,
            idle_since=samples[0].at if samples and not busy else None,
            last_active_at=(now if busy else started_at) if samples else None,
            first_seen_at=started_at or created_at,
            last_state=state.value,
        )
        containers.append(
            ContainerObs(
                id=cid,
                name=name,
                image="ds01/pytorch:latest",
                labels={"ds01.user": owner, "ds01.managed": "true"},
                state=state,
                created_at=created_at,
                started_at=started_at,
                finished_at=finished_at,
                pid=pid,
                exit_code=0 if state == ContainerState.EXITED else None,
                owner=owner,
                owner_rule=OwnerRule.LABEL_DS01_USER,
                container_type=TYPES[seq % len(TYPES)],
                type_rule=TypeRule.LABEL_CONTAINER_TYPE,
                managed=True,
                gpu_refs=refs,
                signals=signals,
            )
        )

    if limits:
        containers = [_with_limits(c, seq) for seq, c in enumerate(containers)]
    processes, sightings = _processes(n, now, containers, rng)
    gpus = _with_nvml_processes(gpus, processes)
    snapshot = Snapshot(
        observed_at=now,
        health=tuple(DomainHealth(domain=d, ok=True) for d in Domain),
        containers=tuple(containers),
        gpus=tuple(gpus),
        processes=tuple(processes),
        ledger=Ledger(path="synthetic", version=2, entries=tuple(ledger)),
        host_cpus=HOST_CPUS,
    )
    memory = ControllerMemory(
        containers=memories, processes=sightings, last_pass_at=now - timedelta(seconds=30)
    )
    return snapshot, memory


def _with_limits(c: ContainerObs, seq: int) -> ContainerObs:
    """The container with the limits of its third and, running, its cgroup's use (0-39 GiB: the
    built-in 32g less its 10 % margin leaves the heaviest above what may be set)."""
    update: dict[str, object] = {"limits": LIMIT_PATTERNS[(seq // 3) % len(LIMIT_PATTERNS)]}
    if c.signals is not None:
        used = (seq % 40) * GIB
        update["signals"] = c.signals.model_copy(
            update={
                "memory_bytes": used,
                "memory_unknown": None,
                "memory_swap_bytes": used,
                "memory_swap_unknown": None,
                "pids_current": 20 + seq % 50,
                "pids_unknown": None,
            }
        )
    return c.model_copy(update=update)


def _processes(
    n: int, now: datetime, containers: list[ContainerObs], rng: random.Random
) -> tuple[list[GpuProcessObs], dict[str, ProcessSighting]]:
    """GPU processes: 96 % in running GPU containers, 3 % orphaned (container gone), 1 % bare host."""
    holders = [c for c in containers if c.state == ContainerState.RUNNING and c.gpu_refs]
    count = int(n * PROCESSES_PER_CONTAINER)
    out: list[GpuProcessObs] = []
    sightings: dict[str, ProcessSighting] = {}
    for k in range(count):
        pid = 2_000_000 + k
        start_time = now.timestamp() - rng.uniform(60, 86_400)
        roll = k % 100
        c = holders[k % len(holders)] if holders else None
        if roll < 96 and c is not None:
            ref = c.gpu_refs[0]
            assert ref.uuid is not None and ref.parent_uuid is not None
            proc = GpuProcessObs(
                pid=pid,
                device_uuid=ref.uuid,
                gpu_uuid=ref.parent_uuid,
                used_memory_bytes=GIB,
                start_time=start_time,
                uid=1000 + k % USERS,
                user=c.owner,
                cmdline="python train.py",
                cgroup=f"/docker/{c.id}",
                container_id=c.id,
                container_exists=True,
            )
        else:
            gpu = f"GPU-{(k % 32) * 2:08x}-0000-4000-8000-000000005ca1"
            orphan = roll < 99
            proc = GpuProcessObs(
                pid=pid,
                device_uuid=GpuUuid(gpu),
                gpu_uuid=GpuUuid(gpu),
                used_memory_bytes=GIB,
                start_time=start_time,
                uid=1000 + k % USERS,
                user=f"user{k % USERS:03d}",
                cmdline="python leaked.py" if orphan else "python host-job.py",
                cgroup=f"/docker/{'dead' * 16}" if orphan else "/user.slice/user-1000.slice",
                container_id=ContainerId("dead" * 16) if orphan else None,
                container_exists=False,
            )
            key = f"{pid}:{start_time}"
            sightings[key] = ProcessSighting(
                pid=pid, start_time=start_time, first_seen_at=now - timedelta(minutes=5), last_seen_at=now
            )
        out.append(proc)
    return out, sightings


def _with_nvml_processes(gpus: list[GpuObs], processes: list[GpuProcessObs]) -> list[GpuObs]:
    """List each process on the full GPU or MIG device NVML would show it on."""
    by_device: dict[str, list[NvmlProcess]] = {}
    for p in processes:
        by_device.setdefault(p.device_uuid, []).append(
            NvmlProcess(pid=p.pid, used_memory_bytes=p.used_memory_bytes)
        )
    out: list[GpuObs] = []
    for g in gpus:
        migs = tuple(
            m.model_copy(update={"processes": tuple(by_device.get(m.uuid, ()))}) for m in g.mig_devices
        )
        out.append(g.model_copy(update={"processes": tuple(by_device.get(g.uuid, ())), "mig_devices": migs}))
    return out
