"""Workload inventory and detection.* events: DS01's shape, two sightings, unavailable != empty."""

from __future__ import annotations

import ast
import fnmatch
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
    a = inv["containers"]["a" * 12]  # DS01 keys containers by the short id
    assert a == {
        "id": "a" * 12,
        "name": "c-a",
        "origin": "ds01-managed",
        "user": "alice",
        "has_gpu": True,
        "gpu_devices": [GPU],
        "status": "running",
        "image": "img",
        "detected_at": "2026-01-30T14:00:00.000000Z",
        "full_id": "a" * 64,
    }
    assert inv["containers"]["b" * 12]["origin"] == "compose"
    # system and container processes are not host processes; a first sighting is pending, as in DS01
    assert inv["host_processes"] == {} and list(inv["_pending_processes"]) == ["42"]
    p = inv["_pending_processes"]["42"]
    assert p["user"] == "bob" and p["gpu_memory_mb"] == 2048 and p["cmdline"] == "python train.py"
    assert p["gpu_uuid"] == GPU and "detected_at" not in p
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
    assert build_inventory(s, prev)["containers"]["a" * 12]["detected_at"] == "2026-01-30T14:00:00.000000Z"
    by_kind = {e[0]: e[2] for e in events}
    assert by_kind["detection.container_status_changed"]["old_status"] == "running"
    assert by_kind["detection.container_status_changed"]["new_status"] == "exited"
    assert by_kind["detection.container_discovered"]["image"] == "img"
    assert by_kind["detection.container_exited"]["container_id"] == "b" * 12


def test_an_inventory_keyed_by_full_ids_carries_over() -> None:
    """An inventory an earlier version wrote (full ids as keys) is not read as everything exited."""
    prev = build_inventory(snap(T0, (container("a"),)), None)
    prev["containers"] = {v["full_id"]: v for v in prev["containers"].values()}
    assert awareness_events(prev, snap(T0 + timedelta(minutes=1), (container("a"),)), None) == []


def test_first_scan_is_a_baseline() -> None:
    assert awareness_events(None, snap(T0, (container("a"),), (proc(42),)), None) == []


def test_docker_unavailable_is_not_everything_exited() -> None:
    prev = build_inventory(snap(T0, (container("a"),)), None)
    s = snap(T0 + timedelta(minutes=1), (), down=(Domain.DOCKER,))
    assert awareness_events(prev, s, None) == []
    assert build_inventory(s, prev)["containers"] == prev["containers"]
    assert build_inventory(s, prev)["unavailable"] == ["docker"]


def test_host_process_announced_after_a_minute_not_after_two_passes() -> None:
    """The transient filter counts time (DS01: ~60 s), not passes (which can be 0.25 s apart)."""
    inv = build_inventory(snap(T0), None)
    for i in range(1, 10):  # nine passes 0.25 s apart: seen, never announced
        s = snap(T0 + timedelta(seconds=0.25 * i), processes=(proc(42),))
        assert awareness_events(inv, s, None) == []
        inv = build_inventory(s, inv)
    assert inv["host_processes"] == {} and inv["_pending_processes"]["42"]["sightings"] == 9
    s59 = snap(T0 + timedelta(seconds=59.5), processes=(proc(42),))
    assert awareness_events(inv, s59, None) == []
    inv = build_inventory(s59, inv)
    s60 = snap(T0 + timedelta(seconds=60.25), processes=(proc(42),))
    memory = ControllerMemory(
        processes={"42:1000.0": ProcessSighting(pid=42, start_time=1000.0, first_seen_at=T0, last_seen_at=T0)}
    )
    events = awareness_events(inv, s60, memory)
    assert [(e[0], e[1]) for e in events] == [("detection.host_gpu_process_discovered", "bob")]
    assert events[0][2]["first_seen_at"] == "2026-01-30T14:00:00.000000Z"  # the planner saw it first
    assert events[0][2]["gpu_uuid"] == GPU and events[0][2]["gpu_memory_mb"] == 2048
    inv = build_inventory(s60, inv)
    assert list(inv["host_processes"]) == ["42"] and inv["_pending_processes"] == {}
    assert inv["host_processes"]["42"]["detected_at"] == "2026-01-30T14:01:00.250000Z"
    s90 = snap(T0 + timedelta(seconds=90.25), processes=(proc(42),))
    assert awareness_events(inv, s90, None) == []  # still there: nothing new
    inv = build_inventory(s90, inv)
    assert inv["host_processes"]["42"]["detected_at"] == "2026-01-30T14:01:00.250000Z"
    # NVML down: unknown, not exited.
    assert awareness_events(inv, snap(T0 + timedelta(seconds=120), down=(Domain.NVML,)), None) == []
    gone = awareness_events(inv, snap(T0 + timedelta(seconds=120.25)), None)
    assert [e[0] for e in gone] == ["detection.host_gpu_process_exited"]
    assert gone[0][2]["seen_for_s"] == 120.0


def test_the_transient_filter_is_configurable() -> None:
    inv = build_inventory(snap(T0, processes=(proc(42),)), None, min_age_s=5)
    s = snap(T0 + timedelta(seconds=5), processes=(proc(42),))
    assert [e[0] for e in awareness_events(inv, s, None, min_age_s=5)] == [
        "detection.host_gpu_process_discovered"
    ]
    assert awareness_events(inv, s, None, min_age_s=60) == []
    # 0: on the second scan, whatever the time between
    inv0 = build_inventory(snap(T0, processes=(proc(42),)), None, min_age_s=0)
    s0 = snap(T0 + timedelta(seconds=0.25), processes=(proc(42),))
    assert len(awareness_events(inv0, s0, None, min_age_s=0)) == 1


def test_short_lived_and_reused_pids() -> None:
    inv0 = build_inventory(snap(T0), None)
    inv1 = build_inventory(snap(T0, processes=(proc(42),)), inv0)
    assert inv1["_pending_processes"]["42"]["sightings"] == 1
    # Seen once, then gone: never announced, so no exit either.
    assert awareness_events(inv1, snap(T0 + timedelta(seconds=30)), None) == []
    # Same pid, different start time: a new process, first sighting again.
    s2 = snap(T0 + timedelta(seconds=30), processes=(proc(42, start=2000.0),))
    assert awareness_events(inv1, s2, None) == []
    assert build_inventory(s2, inv1)["_pending_processes"]["42"]["sightings"] == 1


def test_unreadable_inventory_is_a_new_baseline(tmp_path: Path) -> None:
    path = tmp_path / "inv.json"
    path.write_text("{broken")
    assert load_inventory(path) is None
    assert load_inventory(tmp_path / "missing.json") is None


# --- golden: DS01's detector's own formats --------------------------------------------------------

DETECTOR = Path(__file__).parent.parent / "data" / "ds01" / "detector" / "detect-workloads.py.txt"


def _detector() -> ast.Module:
    return ast.parse(DETECTOR.read_text(encoding="utf-8"))


def _ds01_event_keys() -> dict[str, set[str]]:
    """Each ``log_event("detection.*", ...)`` call of DS01's detector: its detail keys."""
    keys: dict[str, set[str]] = {}
    for node in ast.walk(_detector()):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "log_event"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            keys[str(node.args[0].value)] = {k.arg for k in node.keywords if k.arg not in ("user", "source")}
    return keys


def _ds01_dict_keys(target: str) -> set[str]:
    """Keys of the dict literal DS01 assigns to ``target[...]`` (``inventory`` or ``processes``)."""
    for node in ast.walk(_detector()):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Subscript)
            and isinstance(node.targets[0].value, ast.Name)
            and node.targets[0].value.id == target
            and isinstance(node.value, ast.Dict)
        ):
            return {str(k.value) for k in node.value.keys if isinstance(k, ast.Constant)}
    raise AssertionError(f"no {target}[...] = {{...}} in DS01's detector")


def _ds01_system_processes() -> set[str]:
    for node in ast.walk(_detector()):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "SYSTEM_GPU_PROCESSES"
        ):
            assert isinstance(node.value, ast.Set)
            return {str(e.value) for e in node.value.elts if isinstance(e, ast.Constant)}
    raise AssertionError("no SYSTEM_GPU_PROCESSES in DS01's detector")


def test_golden_events_and_inventory_carry_every_field_ds01s_detector_writes(tmp_path: Path) -> None:
    ds01_events = _ds01_event_keys()
    assert set(ds01_events) == {
        "detection.container_discovered",
        "detection.container_status_changed",
        "detection.container_exited",
        "detection.host_gpu_process_discovered",
        "detection.host_gpu_process_exited",
    }
    # one of each, through a full life: baseline, discovery, status change, host process, exits
    t = T0
    inv = build_inventory(snap(t, (container("a"),)), None)
    seen: dict[str, dict[str, object]] = {}
    timeline = [
        ((container("a"), container("b")), (proc(42),)),
        ((container("a", ContainerState.EXITED), container("b")), (proc(42),)),
        ((container("b"),), (proc(42),)),
        ((container("b"),), ()),
    ]
    for containers, processes in timeline:
        t += timedelta(seconds=61)
        s = snap(t, containers, processes)
        for kind, _user, details in awareness_events(inv, s, None):
            seen.setdefault(kind, details)
        inv = build_inventory(s, inv)
    for kind, keys in ds01_events.items():
        assert kind in seen, kind
        assert keys <= set(seen[kind]), (kind, keys - set(seen[kind]))
    assert seen["detection.container_status_changed"]["name"] == "c-a"
    assert (
        seen["detection.container_status_changed"]["old_status"],
        seen["detection.container_status_changed"]["new_status"],
    ) == ("running", "exited")
    # the inventory: DS01's top-level sections and every field of its entries
    path = tmp_path / "inv.json"
    write_inventory(snap(t, (container("b"),), (proc(43),)), path, inv)
    first = json.loads(path.read_text())
    write_inventory(snap(t + timedelta(seconds=61), (container("b"),), (proc(43),)), path, first)
    written = json.loads(path.read_text())
    assert {"last_scan", "containers", "host_processes", "_pending_processes"} <= set(written)
    ((key, entry),) = written["containers"].items()
    assert key == entry["id"] == "b" * 12
    assert _ds01_dict_keys("inventory") | {"detected_at"} <= set(entry)
    assert _ds01_dict_keys("processes") | {"detected_at"} <= set(written["host_processes"]["43"])


def test_golden_system_process_list_covers_ds01s() -> None:
    from controller.observe.procfs import DEFAULT_SYSTEM_PROCESS_NAMES
    from desired_state.load import builtin_policy
    from desired_state.resolve import global_policy

    ds01 = _ds01_system_processes()
    assert {"nvidia-smi", "X"} <= ds01
    for names in (global_policy(builtin_policy()).system_process_names.value, DEFAULT_SYSTEM_PROCESS_NAMES):
        for name in ds01:
            assert any(fnmatch.fnmatchcase(name, pattern) for pattern in names), name


def test_dry_run_writes_the_inventory_and_detection_events(tmp_path: Path) -> None:
    """Awareness output changes nothing on the host: dry-run writes it too (the side-by-side period)."""
    from typing import Any

    from controller.act.dry_run import DryRunExecutor
    from controller.act.events import EventLog
    from controller.loop import Controller
    from controller.settings import Settings
    from controller.store import MemoryStore
    from desired_state.load import PolicyHolder
    from desired_state.resolve import global_policy

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    log = EventLog(tmp_path / "events.jsonl")
    unused: Any = None  # awareness reads neither the observer nor the executor
    controller = Controller(
        settings=Settings(state_dir=state, events_log=tmp_path / "events.jsonl", dry_run=True),
        observer=unused,
        policy=PolicyHolder(),
        executor=DryRunExecutor(log),
        store=MemoryStore(state),
        event_log=log,
        memory=ControllerMemory(),
    )
    gp = global_policy(controller.policy.current)  # the pass hands awareness its one resolution
    controller._awareness(snap(T0, (container("a"),)), gp)
    inventory = json.loads((state / "workload-inventory.json").read_text())
    assert list(inventory["containers"]) == ["a" * 12]
    controller._awareness(snap(T0 + timedelta(seconds=30), (container("a", ContainerState.EXITED),)), gp)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["event_type"], e["details"]["name"], e["details"]["new_status"]) for e in events] == [
        ("detection.container_status_changed", "c-a", "exited")
    ]
