"""The workload inventory file and the awareness (``detection.*``) events derived from it.

Continues DS01's workload detector (notes §4.5, seed phase 2): a JSON file listing every
container and every bare host GPU process, rewritten atomically after each pass::

    {"last_scan": "...Z",
     "containers": {"<id>": {"id", "name", "origin", "user", "has_gpu", "gpu_devices", "status",
                             "detected_at"}},
     "host_processes": {"<pid>": {"pid", "user", "cmdline", "gpu_memory_mb", "gpu_uuids",
                                  "start_time", "first_seen_at", "sightings"}},
     "foreign_processes": {"<pid>": {... as above, "cgroup", "container_id"}},
     "unavailable": ["nvml", ...]}

``foreign_processes`` are GPU processes in another runtime's container cgroup (rootless Docker,
Kubernetes, containerd, a sandbox: ``GpuProcessObs.cgroup_scope`` FOREIGN, not a live container of
this engine). They are never killed; they are announced like host processes, as
``detection.foreign_gpu_process_discovered`` / ``..._exited``.

Rules that keep it honest:

- **Unavailable is not empty.** When Docker could not be read, the previous containers are kept
  as they were and no container event is emitted; likewise host processes when NVML or /proc was
  unavailable. A failed scan never reads as "everything exited".
- **Two sightings.** A host GPU process is announced (``detection.host_gpu_process_discovered``)
  on its second consecutive sighting, as DS01 did, so a short-lived process is not reported;
  ``..._exited`` is written only for processes that were announced. ``sightings`` counts
  consecutive scans that saw the same pid with the same start time (pid reuse starts again at 1).
- **System processes never** (``nvidia-persistenced``, DCGM, Xorg...: ``GpuProcessObs.is_system``).
- Strings are sanitised; the file is written mode 0644 by temp file, ``fsync`` and rename.
- The first scan with no previous inventory is a baseline: it writes the file, emits nothing.

Called by the daemon loop after each real pass. Writing never raises (the inventory is a report).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from loguru import logger

from controller.act.events import EventType, parse_timestamp, utc_timestamp
from controller.act.sanitize import clean
from controller.memory import ControllerMemory
from controller.snapshot import (
    CgroupScope,
    ContainerObs,
    ContainerState,
    Domain,
    GpuProcessObs,
    ProcessState,
    Snapshot,
)
from crd_like_specs.vocabulary import ContainerType

INVENTORY_MODE = 0o600  # private even where the state directory is not (recreated 0755, shared)
START_TIME_TOLERANCE_S = 0.01
MIB = 1024 * 1024
_LIVE = frozenset({ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING})

Inventory = dict[str, Any]
AwarenessEvent = tuple[str, str | None, dict[str, Any]]


def origin_of(c: ContainerObs) -> str:
    """DS01's detector origins: ds01-managed, devcontainer, compose or raw-docker."""
    if c.managed:
        return "ds01-managed"
    if c.container_type is ContainerType.DEVCONTAINER or c.name.startswith("vsc-"):
        return "devcontainer"
    if c.container_type is ContainerType.COMPOSE:
        return "compose"
    return "raw-docker"


def _container_entry(
    c: ContainerObs, previous: Mapping[str, Any] | None, observed_at: datetime
) -> dict[str, Any]:
    detected_at = previous.get("detected_at") if isinstance(previous, Mapping) else None
    return {
        "id": c.id,
        "name": clean(c.name, 128),
        "origin": origin_of(c),
        "user": clean(c.owner, 64),
        "has_gpu": c.has_gpu,
        "gpu_devices": [clean(r.uuid or r.raw, 80) for r in c.gpu_refs] + (["all"] if c.all_gpus else []),
        "status": c.state.value,
        "detected_at": detected_at if isinstance(detected_at, str) else utc_timestamp(observed_at),
    }


def _host_processes(snapshot: Snapshot) -> dict[int, list[GpuProcessObs]]:
    """Bare host GPU processes (no container cgroup, not system), grouped by pid."""
    by_pid: dict[int, list[GpuProcessObs]] = {}
    for p in snapshot.processes:
        if (
            p.container_id is None
            and p.cgroup_scope is not CgroupScope.FOREIGN
            and not p.is_system
            and p.state is ProcessState.PRESENT
        ):
            by_pid.setdefault(p.pid, []).append(p)
    return by_pid


def _foreign_processes(snapshot: Snapshot) -> dict[int, list[GpuProcessObs]]:
    """GPU processes of other runtimes' workloads (not live containers of this engine), by pid."""
    live = {c.id for c in snapshot.containers if c.state in _LIVE}
    by_pid: dict[int, list[GpuProcessObs]] = {}
    for p in snapshot.processes:
        if (
            p.cgroup_scope is CgroupScope.FOREIGN
            and p.container_id not in live
            and p.state is ProcessState.PRESENT
        ):
            by_pid.setdefault(p.pid, []).append(p)
    return by_pid


def _same_start(a: object, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return isinstance(a, int | float) and abs(float(a) - b) <= START_TIME_TOLERANCE_S


def _process_entry(
    pid: int, seen: list[GpuProcessObs], previous: Mapping[str, Any] | None, observed_at: datetime
) -> dict[str, Any]:
    first = seen[0]
    known = [p.used_memory_bytes for p in seen if p.used_memory_bytes is not None]
    same = isinstance(previous, Mapping) and _same_start(previous.get("start_time"), first.start_time)
    prev_sightings = previous.get("sightings") if same and isinstance(previous, Mapping) else None
    first_seen = previous.get("first_seen_at") if same and isinstance(previous, Mapping) else None
    return {
        "pid": pid,
        "user": clean(first.user or (str(first.uid) if first.uid is not None else "unknown"), 64),
        "cmdline": clean(first.cmdline, 512),
        "gpu_memory_mb": sum(known) // MIB if known else None,
        "gpu_uuids": sorted({p.device_uuid for p in seen}),
        "start_time": first.start_time,
        "first_seen_at": first_seen if isinstance(first_seen, str) else utc_timestamp(observed_at),
        "sightings": (prev_sightings + 1) if isinstance(prev_sightings, int) else 1,
    }


def _section(previous: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    value = previous.get(name) if isinstance(previous, Mapping) else None
    return dict(value) if isinstance(value, Mapping) else {}


def build_inventory(snapshot: Snapshot, previous: Mapping[str, Any] | None) -> Inventory:
    """The inventory for ``snapshot``, carrying over what could not be observed this time."""
    prev_containers = _section(previous, "containers")
    prev_processes = _section(previous, "host_processes")
    prev_foreign = _section(previous, "foreign_processes")
    unavailable = [h.domain.value for h in snapshot.health if not h.ok]
    if snapshot.domain_ok(Domain.DOCKER):
        containers: dict[str, Any] = {
            c.id: _container_entry(c, prev_containers.get(c.id), snapshot.observed_at)
            for c in sorted(snapshot.containers, key=lambda c: c.id)
        }
    else:
        containers = prev_containers
    if snapshot.domain_ok(Domain.NVML) and snapshot.domain_ok(Domain.PROCFS):
        processes = {
            str(pid): _process_entry(pid, seen, prev_processes.get(str(pid)), snapshot.observed_at)
            for pid, seen in sorted(_host_processes(snapshot).items())
        }
        foreign = {
            str(pid): _foreign_entry(pid, seen, prev_foreign.get(str(pid)), snapshot.observed_at)
            for pid, seen in sorted(_foreign_processes(snapshot).items())
        }
    else:
        processes = prev_processes
        foreign = prev_foreign
    return {
        "last_scan": utc_timestamp(snapshot.observed_at),
        "containers": containers,
        "host_processes": processes,
        "foreign_processes": foreign,
        "unavailable": sorted(unavailable),
    }


def _foreign_entry(
    pid: int, seen: list[GpuProcessObs], previous: Mapping[str, Any] | None, observed_at: datetime
) -> dict[str, Any]:
    entry = _process_entry(pid, seen, previous, observed_at)
    entry["cgroup"] = clean(seen[0].cgroup, 256)
    entry["container_id"] = seen[0].container_id
    return entry


def load_inventory(path: Path) -> Inventory | None:
    """The inventory last written, or None (missing or unreadable: the next scan is a baseline)."""
    try:
        data = json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("inventory {} unreadable, starting a new baseline: {}", path, exc)
        return None
    return data if isinstance(data, dict) else None


def write_inventory(snapshot: Snapshot, path: Path, previous: Mapping[str, Any] | None = None) -> Inventory:
    """Build the inventory (``previous`` defaults to the file's content) and write it atomically.

    Returns the new inventory, which the caller passes as ``previous`` next time. Never raises.
    """
    path = Path(path)
    if previous is None:
        previous = load_inventory(path)
    inventory = build_inventory(snapshot, previous)
    try:
        _write_atomically(path, inventory)
    except OSError as exc:
        logger.warning("inventory {} not written: {}", path, exc)
    return inventory


def _write_atomically(path: Path, doc: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fchmod(f.fileno(), INVENTORY_MODE)
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _memory_first_seen(memory: ControllerMemory | None, pid: int, start_time: float | None) -> str | None:
    if memory is None:
        return None
    for sighting in memory.processes.values():
        if sighting.pid == pid and _same_start(sighting.start_time, start_time):
            return utc_timestamp(sighting.first_seen_at)
    return None


def awareness_events(
    previous: Mapping[str, Any] | None, snapshot: Snapshot, memory: ControllerMemory | None = None
) -> list[AwarenessEvent]:
    """``detection.*`` events between the previous inventory and this snapshot.

    ``memory`` (optional) only enriches a process discovery with the planner's first sighting.
    """
    if previous is None:
        return []  # baseline: everything present now was there before the controller looked
    current = build_inventory(snapshot, previous)
    events: list[AwarenessEvent] = []
    if snapshot.domain_ok(Domain.DOCKER):
        events += _container_events(_section(previous, "containers"), current["containers"])
    if snapshot.domain_ok(Domain.NVML) and snapshot.domain_ok(Domain.PROCFS):
        events += _process_events(
            _section(previous, "host_processes"), current["host_processes"], snapshot, memory
        )
        events += _process_events(
            _section(previous, "foreign_processes"),
            current["foreign_processes"],
            snapshot,
            memory,
            foreign=True,
        )
    return events


def _container_events(prev: Mapping[str, Any], cur: Mapping[str, Any]) -> list[AwarenessEvent]:
    events: list[AwarenessEvent] = []
    for cid, entry in cur.items():
        old = prev.get(cid)
        if not isinstance(old, Mapping):
            events.append(
                (
                    EventType.CONTAINER_DISCOVERED,
                    entry["user"],
                    {
                        "container": entry["name"],
                        "container_id": cid,
                        "origin": entry["origin"],
                        "has_gpu": entry["has_gpu"],
                        "gpu_devices": entry["gpu_devices"],
                        "status": entry["status"],
                    },
                )
            )
        elif old.get("status") != entry["status"]:
            events.append(
                (
                    EventType.CONTAINER_STATUS_CHANGED,
                    entry["user"],
                    {
                        "container": entry["name"],
                        "container_id": cid,
                        "from": old.get("status"),
                        "to": entry["status"],
                    },
                )
            )
    for cid, old in prev.items():
        if cid not in cur and isinstance(old, Mapping):
            user = old.get("user")
            events.append(
                (
                    EventType.CONTAINER_EXITED,
                    user if isinstance(user, str) else None,
                    {"container": old.get("name"), "container_id": cid, "last_status": old.get("status")},
                )
            )
    return events


def _process_events(
    prev: Mapping[str, Any],
    cur: Mapping[str, Any],
    snapshot: Snapshot,
    memory: ControllerMemory | None,
    *,
    foreign: bool = False,
) -> list[AwarenessEvent]:
    discovered, exited = (
        (EventType.FOREIGN_GPU_PROCESS_DISCOVERED, EventType.FOREIGN_GPU_PROCESS_EXITED)
        if foreign
        else (EventType.HOST_GPU_PROCESS_DISCOVERED, EventType.HOST_GPU_PROCESS_EXITED)
    )
    events: list[AwarenessEvent] = []
    for entry in cur.values():
        if entry["sightings"] == 2:  # the second consecutive sighting confirms it
            details = {
                "pid": entry["pid"],
                "cmdline": entry["cmdline"],
                "gpu_memory_mb": entry["gpu_memory_mb"],
                "gpu_uuids": entry["gpu_uuids"],
                "first_seen_at": _memory_first_seen(memory, entry["pid"], entry["start_time"])
                or entry["first_seen_at"],
            }
            if foreign:
                details["cgroup"] = entry.get("cgroup")
                details["container_id"] = entry.get("container_id")
            events.append((discovered, entry["user"], details))
    for key, old in prev.items():
        if not isinstance(old, Mapping) or not isinstance(old.get("sightings"), int) or old["sightings"] < 2:
            continue
        new = cur.get(key)
        if isinstance(new, Mapping) and new["sightings"] > 1:
            continue  # the same process, still there
        first_seen = parse_timestamp(old.get("first_seen_at"))
        user = old.get("user")
        events.append(
            (
                exited,
                user if isinstance(user, str) else None,
                {
                    "pid": old.get("pid"),
                    "cmdline": old.get("cmdline"),
                    "gpu_uuids": old.get("gpu_uuids"),
                    "seen_for_s": round((snapshot.observed_at - first_seen).total_seconds(), 1)
                    if first_seen is not None
                    else None,
                },
            )
        )
    return events
