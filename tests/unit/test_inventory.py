"""Workload inventory and detection.* events: DS01's shape, two sightings, unavailable != empty."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.act.inventory import awareness_events, build_inventory, load_inventory, write_inventory
from controller.memory import ControllerMemory, ProcessSighting
from controller.snapshot import (
    ContainerId,
    ContainerObs,
    ContainerState,
    Domain,
    DomainHealth,
    GpuProcessObs,
    GpuRef,
    GpuRefSource,
    GpuUuid,
    Snapshot,
)
from crd_like_specs.vocabulary import ContainerType

T0 = datetime(2026, 1, 30, 14, 0, tzinfo=UTC)
GPU = GpuUuid("GPU-11111111-2222-3333-4444-555555555555")


def container(cid: str, state: ContainerState = ContainerState.RUNNING, **kw: object) -> ContainerObs:
    return ContainerObs(
        id=ContainerId(cid * 64)[:64],
        name=f"c-{cid}",
        image="img",
        state=state,
        created_at=T0,
        owner="alice",
        **kw,  # type: ignore[arg-type]
    )


def proc(pid: int, start: float = 1000.0, **kw: object) -> GpuProcessObs:
    return GpuProcessObs(
        pid=pid,
        device_uuid=GPU,
        gpu_uuid=GPU,
        used_memory_bytes=2048 * 1024 * 1024,
        start_time=start,
        user="bob",
        cmdline="python train.py\x1b[31m",
        **kw,  # type: ignore[arg-type]
    )


def snap(
    at: datetime,
    containers: tuple[ContainerObs, ...] = (),
    processes: tuple[GpuProcessObs, ...] = (),
    down: tuple[Domain, ...] = (),
) -> Snapshot:
    health = tuple(DomainHealth(domain=d, ok=d not in down) for d in Domain)
    return Snapshot(observed_at=at, health=health, containers=containers, processes=processes)


def test_inventory_has_ds01_shape_and_is_written_atomically(tmp_path: Path) -> None:
    gpu_ref = GpuRef(raw=GPU, source=GpuRefSource.DEVICE_REQUEST, uuid=GPU)
    s = snap(
        T0,
        (
            container("a", managed=True, gpu_refs=(gpu_ref,)),
            container("b", container_type=ContainerType.COMPOSE),
        ),
        (proc(42), proc(43, is_system=True), proc(44, container_id=ContainerId("f" * 64))),
    )
    path = tmp_path / "workload-inventory.json"
    inv = write_inventory(s, path)
    assert json.loads(path.read_text()) == inv
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert inv["last_scan"] == "2026-01-30T14:00:00.000000Z"
    a = inv["containers"]["a" * 64]
    assert a == {
        "id": "a" * 64,
        "name": "c-a",
        "origin": "ds01-managed",
        "user": "alice",
        "has_gpu": True,
        "gpu_devices": [GPU],
        "status": "running",
        "detected_at": "2026-01-30T14:00:00.000000Z",
    }
    assert inv["containers"]["b" * 64]["origin"] == "compose"
    assert list(inv["host_processes"]) == ["42"]  # system and container processes are not host processes
    p = inv["host_processes"]["42"]
    assert p["user"] == "bob" and p["gpu_memory_mb"] == 2048 and p["cmdline"] == "python train.py"
    assert load_inventory(path) == inv


def test_the_inventory_stays_private_in_a_world_readable_state_directory(tmp_path: Path) -> None:
    # systemd-tmpfiles (before the fix) or a DS01 host may leave /var/lib/ds01 0755: the inventory
    # names every container, owner and GPU, so its own mode must keep it private.
    state = tmp_path / "ds01"
    state.mkdir()
    state.chmod(0o755)
    path = state / "workload-inventory.json"
    path.write_text("{}")
    path.chmod(0o644)  # written by an earlier version
    write_inventory(snap(T0, (container("a"),), ()), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o755  # the shared directory is left alone


def test_container_events_and_detected_at_is_kept() -> None:
    prev = build_inventory(snap(T0, (container("a"), container("b"))), None)
    later = T0 + timedelta(minutes=1)
    s = snap(later, (container("a", ContainerState.EXITED), container("c")))
    events = awareness_events(prev, s, ControllerMemory())
    kinds = sorted((e[0], e[2]["container"]) for e in events)
    assert kinds == [
        ("detection.container_discovered", "c-c"),
        ("detection.container_exited", "c-b"),
        ("detection.container_status_changed", "c-a"),
    ]
    assert build_inventory(s, prev)["containers"]["a" * 64]["detected_at"] == "2026-01-30T14:00:00.000000Z"


def test_first_scan_is_a_baseline() -> None:
    assert awareness_events(None, snap(T0, (container("a"),), (proc(42),)), None) == []


def test_docker_unavailable_is_not_everything_exited() -> None:
    prev = build_inventory(snap(T0, (container("a"),)), None)
    s = snap(T0 + timedelta(minutes=1), (), down=(Domain.DOCKER,))
    assert awareness_events(prev, s, None) == []
    assert build_inventory(s, prev)["containers"] == prev["containers"]
    assert build_inventory(s, prev)["unavailable"] == ["docker"]


def test_host_process_announced_on_second_sighting_only_once() -> None:
    inv0 = build_inventory(snap(T0), None)
    s1 = snap(T0 + timedelta(seconds=30), processes=(proc(42),))
    assert awareness_events(inv0, s1, None) == []  # first sighting: not yet
    inv1 = build_inventory(s1, inv0)
    s2 = snap(T0 + timedelta(seconds=60), processes=(proc(42),))
    memory = ControllerMemory(
        processes={"42:1000.0": ProcessSighting(pid=42, start_time=1000.0, first_seen_at=T0, last_seen_at=T0)}
    )
    events = awareness_events(inv1, s2, memory)
    assert [(e[0], e[1]) for e in events] == [("detection.host_gpu_process_discovered", "bob")]
    assert events[0][2]["first_seen_at"] == "2026-01-30T14:00:00.000000Z"
    inv2 = build_inventory(s2, inv1)
    s3 = snap(T0 + timedelta(seconds=90), processes=(proc(42),))
    assert awareness_events(inv2, s3, None) == []  # still there: nothing new
    inv3 = build_inventory(s3, inv2)
    # NVML down: unknown, not exited.
    assert awareness_events(inv3, snap(T0 + timedelta(seconds=120), down=(Domain.NVML,)), None) == []
    gone = awareness_events(inv3, snap(T0 + timedelta(seconds=120)), None)
    assert [e[0] for e in gone] == ["detection.host_gpu_process_exited"]
    assert gone[0][2]["seen_for_s"] == 90.0


def test_short_lived_and_reused_pids() -> None:
    inv0 = build_inventory(snap(T0), None)
    inv1 = build_inventory(snap(T0, processes=(proc(42),)), inv0)
    # Seen once, then gone: never announced, so no exit either.
    assert awareness_events(inv1, snap(T0 + timedelta(seconds=30)), None) == []
    # Same pid, different start time: a new process, first sighting again.
    s2 = snap(T0 + timedelta(seconds=30), processes=(proc(42, start=2000.0),))
    assert awareness_events(inv1, s2, None) == []
    assert build_inventory(s2, inv1)["host_processes"]["42"]["sightings"] == 1


def test_unreadable_inventory_is_a_new_baseline(tmp_path: Path) -> None:
    path = tmp_path / "inv.json"
    path.write_text("{broken")
    assert load_inventory(path) is None
    assert load_inventory(tmp_path / "missing.json") is None
