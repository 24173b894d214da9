"""The workload inventory file and the awareness (``detection.*``) events derived from it.

Continues DS01's workload detector (``detect-workloads.py``, notes §4.5, seed phase 2): a JSON file
listing every container and every bare host GPU process, rewritten atomically after each pass, in
the detector's format (its keys, its fields; the controller's own fields are added under new keys)::

    {"last_scan": "...Z",
     "containers": {"<id[:12]>": {"id", "name", "origin", "user", "has_gpu", "gpu_devices", "status",
                                  "image", "detected_at",  + "full_id"}},
     "host_processes": {"<pid>": {"pid", "user", "cmdline", "gpu_memory_mb", "gpu_uuid", "detected_at",
                                  + "gpu_uuids", "start_time", "first_seen_at", "sightings"}},
     "_pending_processes": {"<pid>": {... not yet past the transient filter}},
     + "foreign_processes", "_pending_foreign_processes": {"<pid>": {... as above, "cgroup", "container_id"}},
     + "unavailable": ["nvml", ...]}

The ``detection.*`` events carry the detector's detail keys (``container_id``, ``name``, ``origin``,
``has_gpu``, ``image``; ``old_status``/``new_status``; ``pid``, ``cmdline``, ``gpu_memory_mb``,
``gpu_uuid``) plus the controller's own (``container``, ``gpu_devices``, ``status``,
``last_status``, ``gpu_uuids``, ``first_seen_at``, ``seen_for_s``).

``foreign_processes`` are GPU processes in another runtime's container cgroup (rootless Docker,
Kubernetes, containerd, a sandbox: ``GpuProcessObs.cgroup_scope`` FOREIGN, not a live container of
this engine). They are never killed; they are announced like host processes, as
``detection.foreign_gpu_process_discovered`` / ``..._exited``.

Rules that keep it honest:

- **Unavailable is not empty.** When Docker could not be read, the previous containers are kept
  as they were and no container event is emitted; likewise host processes when NVML or /proc was
  unavailable. A failed scan never reads as "everything exited".
- **Transient filter, by time.** A host GPU process is announced
  (``detection.host_gpu_process_discovered``, moved to ``host_processes``) once it has been seen on
  two scans at least and for ``transientProcessMinAge`` (60 s, DS01's two scans of its 30 s timer),
  not after a count of passes, which can be a fraction of a second apart; ``..._exited`` is written
  only for processes that were announced. ``sightings`` counts consecutive scans that saw the same
  pid with the same start time (pid reuse starts again at 1).
- **System processes never** (``nvidia-persistenced``, DCGM, ``nvidia-smi``, Xorg, X...:
  ``GpuProcessObs.is_system``).
- Strings are sanitised; the file is written mode 0600 by temp file, ``fsync`` and rename.
- The first scan with no previous inventory is a baseline: it writes the file, emits nothing.

Called by the daemon loop after each pass, dry-run included (it changes nothing on the host).
Writing never raises (the inventory is a report).
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

TRANSIENT_MIN_AGE_S = 60.0  # DS01's detector: two scans of its 30 s timer (policy transientProcessMinAge)
SHORT_ID_CHARS = 12  # DS01's detector keys containers by the first 12 characters of the id
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


def short_id(container_id: str) -> str:
    """DS01's container key and ``id``: the first 12 characters."""
    return container_id[:SHORT_ID_CHARS]


def _container_entry(
    c: ContainerObs, previous: Mapping[str, Any] | None, observed_at: datetime
) -> dict[str, Any]:
    detected_at = previous.get("detected_at") if isinstance(previous, Mapping) else None
    return {
        # DS01's detector's fields, in its order
        "id": short_id(c.id),
        "name": clean(c.name, 128),
        "origin": origin_of(c),
        "user": clean(c.owner, 64),
        "has_gpu": c.has_gpu,
        "gpu_devices": [clean(r.uuid or r.raw, 80) for r in c.gpu_refs] + (["all"] if c.all_gpus else []),
        "status": c.state.value,
        "image": clean(c.image, 256) or "unknown",
        "detected_at": detected_at if isinstance(detected_at, str) else utc_timestamp(observed_at),
        # the controller's own
        "full_id": c.id,
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
    detected_at = previous.get("detected_at") if same and isinstance(previous, Mapping) else None
    uuids = sorted({p.device_uuid for p in seen})
    entry: dict[str, Any] = {
        # DS01's detector's fields
        "pid": pid,
        "user": clean(first.user or (str(first.uid) if first.uid is not None else "unknown"), 64),
        "cmdline": clean(first.cmdline, 512),
        "gpu_memory_mb": sum(known) // MIB if known else None,
        "gpu_uuid": uuids[0] if uuids else None,
        # the controller's own
        "gpu_uuids": uuids,
        "start_time": first.start_time,
        "first_seen_at": first_seen if isinstance(first_seen, str) else utc_timestamp(observed_at),
        "sightings": (prev_sightings + 1) if isinstance(prev_sightings, int) else 1,
    }
    if isinstance(detected_at, str):
        entry["detected_at"] = detected_at
    return entry


def _confirmed(entry: Mapping[str, Any], observed_at: datetime, min_age_s: float) -> bool:
    """Past the transient filter: seen on two scans at least, and for ``min_age_s`` (DS01: ~60 s)."""
    first_seen = parse_timestamp(entry.get("first_seen_at"))
    sightings = entry.get("sightings")
    if first_seen is None or not isinstance(sightings, int) or sightings < 2:
        return False
    return (observed_at - first_seen).total_seconds() >= min_age_s


def _split(
    entries: Mapping[str, dict[str, Any]], observed_at: datetime, min_age_s: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(confirmed, pending); a confirmed entry gets DS01's ``detected_at`` (when it was confirmed)."""
    confirmed: dict[str, Any] = {}
    pending: dict[str, Any] = {}
    for key, entry in entries.items():
        if _confirmed(entry, observed_at, min_age_s):
            entry.setdefault("detected_at", utc_timestamp(observed_at))
            confirmed[key] = entry
        else:
            entry.pop("detected_at", None)
            pending[key] = entry
    return confirmed, pending


def _section(previous: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    value = previous.get(name) if isinstance(previous, Mapping) else None
    return dict(value) if isinstance(value, Mapping) else {}


def _previous_containers(previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The previous containers keyed by DS01's short id (an older inventory keyed them by the full id)."""
    return {short_id(str(k)): v for k, v in _section(previous, "containers").items()}


def build_inventory(
    snapshot: Snapshot, previous: Mapping[str, Any] | None, min_age_s: float = TRANSIENT_MIN_AGE_S
) -> Inventory:
    """The inventory for ``snapshot``, carrying over what could not be observed this time.

    ``min_age_s`` is the transient filter (policy ``transientProcessMinAge``): a host GPU process
    seen for less time (or on one scan only) is listed under ``_pending_processes``, as DS01 does.
    """
    prev_containers = _previous_containers(previous)
    prev_processes = {**_section(previous, "_pending_processes"), **_section(previous, "host_processes")}
    prev_foreign = {
        **_section(previous, "_pending_foreign_processes"),
        **_section(previous, "foreign_processes"),
    }
    unavailable = [h.domain.value for h in snapshot.health if not h.ok]
    if snapshot.domain_ok(Domain.DOCKER):
        containers: dict[str, Any] = {
            short_id(c.id): _container_entry(c, prev_containers.get(short_id(c.id)), snapshot.observed_at)
            for c in sorted(snapshot.containers, key=lambda c: c.id)
        }
    else:
        containers = prev_containers
    if snapshot.domain_ok(Domain.NVML) and snapshot.domain_ok(Domain.PROCFS):
        at = snapshot.observed_at
        processes, pending = _split(
            {
                str(pid): _process_entry(pid, seen, prev_processes.get(str(pid)), at)
                for pid, seen in sorted(_host_processes(snapshot).items())
            },
            at,
            min_age_s,
        )
        foreign, pending_foreign = _split(
            {
                str(pid): _foreign_entry(pid, seen, prev_foreign.get(str(pid)), at)
                for pid, seen in sorted(_foreign_processes(snapshot).items())
            },
            at,
            min_age_s,
        )
    else:
        processes = _section(previous, "host_processes")
        pending = _section(previous, "_pending_processes")
        foreign = _section(previous, "foreign_processes")
        pending_foreign = _section(previous, "_pending_foreign_processes")
    return {
        "last_scan": utc_timestamp(snapshot.observed_at),
        "containers": containers,
        "host_processes": processes,
        "_pending_processes": pending,
        "foreign_processes": foreign,
        "_pending_foreign_processes": pending_foreign,
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


def write_inventory(
    snapshot: Snapshot,
    path: Path,
    previous: Mapping[str, Any] | None = None,
    min_age_s: float = TRANSIENT_MIN_AGE_S,
) -> Inventory:
    """Build the inventory (``previous`` defaults to the file's content) and write it atomically.

    Returns the new inventory, which the caller passes as ``previous`` next time. Never raises.
    """
    path = Path(path)
    if previous is None:
        previous = load_inventory(path)
    inventory = build_inventory(snapshot, previous, min_age_s)
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
    previous: Mapping[str, Any] | None,
    snapshot: Snapshot,
    memory: ControllerMemory | None = None,
    min_age_s: float = TRANSIENT_MIN_AGE_S,
) -> list[AwarenessEvent]:
    """``detection.*`` events between the previous inventory and this snapshot.

    The event names and detail keys are DS01's detector's (``detect-workloads.py``); the
    controller's own details are added under keys of their own. ``memory`` (optional) only
    enriches a process discovery with the planner's first sighting.
    """
    if previous is None:
        return []  # baseline: everything present now was there before the controller looked
    current = build_inventory(snapshot, previous, min_age_s)
    events: list[AwarenessEvent] = []
    if snapshot.domain_ok(Domain.DOCKER):
        events += _container_events(_previous_containers(previous), current["containers"])
    if snapshot.domain_ok(Domain.NVML) and snapshot.domain_ok(Domain.PROCFS):
        events += _process_events(
            _announced(previous, "host_processes"), current["host_processes"], snapshot, memory
        )
        events += _process_events(
            _announced(previous, "foreign_processes"),
            current["foreign_processes"],
            snapshot,
            memory,
            foreign=True,
        )
    return events


def _announced(previous: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    """Processes the previous inventory had announced (an older one also listed first sightings)."""
    return {
        k: v
        for k, v in _section(previous, name).items()
        if isinstance(v, Mapping) and isinstance(v.get("sightings"), int) and v["sightings"] >= 2
    }


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
                        # DS01's keys
                        "container_id": cid,
                        "name": entry["name"],
                        "origin": entry["origin"],
                        "has_gpu": entry["has_gpu"],
                        "image": entry["image"],
                        # the controller's own
                        "container": entry["name"],
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
                        "container_id": cid,
                        "name": entry["name"],
                        "old_status": old.get("status"),
                        "new_status": entry["status"],
                        "container": entry["name"],
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
                    {
                        "container_id": cid,
                        "name": old.get("name"),
                        "origin": old.get("origin"),
                        "container": old.get("name"),
                        "last_status": old.get("status"),
                    },
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
    """``prev`` and ``cur`` hold confirmed processes only (past the transient filter)."""
    discovered, exited = (
        (EventType.FOREIGN_GPU_PROCESS_DISCOVERED, EventType.FOREIGN_GPU_PROCESS_EXITED)
        if foreign
        else (EventType.HOST_GPU_PROCESS_DISCOVERED, EventType.HOST_GPU_PROCESS_EXITED)
    )

    def same(old: object, new: object) -> bool:
        return (
            isinstance(old, Mapping)
            and isinstance(new, Mapping)
            and _same_start(old.get("start_time"), new.get("start_time"))
        )

    events: list[AwarenessEvent] = []
    for key, entry in cur.items():
        if same(prev.get(key), entry):
            continue
        details = {
            # DS01's keys
            "pid": entry["pid"],
            "cmdline": entry["cmdline"],
            "gpu_memory_mb": entry["gpu_memory_mb"],
            "gpu_uuid": entry["gpu_uuid"],
            # the controller's own
            "gpu_uuids": entry["gpu_uuids"],
            "first_seen_at": _memory_first_seen(memory, entry["pid"], entry["start_time"])
            or entry["first_seen_at"],
        }
        if foreign:
            details["cgroup"] = entry.get("cgroup")
            details["container_id"] = entry.get("container_id")
        events.append((discovered, entry["user"], details))
    for key, old in prev.items():
        if not isinstance(old, Mapping) or same(old, cur.get(key)):
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
