"""``ds01ctl get``: one list per kind (containers, gpus, processes, allocations, policies, events).

Each kind is built once as a list of plain dicts (the ``-o json|yaml`` items, a documented and
stable shape) and the table is drawn from the same rows, so the two outputs cannot disagree.
Called by :mod:`controller.cli.main` with a :class:`~controller.cli.view.View`; pure apart from
that (the event log is read by :mod:`controller.cli.gather`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controller.cli.errors import CliError
from controller.cli.kinds import KINDS, canonical_kind
from controller.cli.render import (
    MACHINE_MAX,
    PLAIN,
    UNKNOWN,
    Cell,
    Style,
    Table,
    age,
    clean,
    clean_tree,
    fmt_age,
    fmt_bytes,
    fmt_percent,
    iso,
    known_bytes,
    machine,
    since,
    stamp,
)
from controller.cli.view import (
    STOP_AND_REMOVE,
    IdleState,
    NextStep,
    View,
    container_sort_key,
    created_at,
    gpu_devices,
    gpu_util,
    idleness,
    next_step,
    rate_unknowns,
    rates,
    release_breaker_line,
    rule_of,
    unlisted_devices,
)
from controller.plan.types import Action, DeferReason, Deferred, Reason
from controller.snapshot import (
    LIVE_STATES,
    CgroupScope,
    ContainerObs,
    ContainerState,
    GpuObs,
    GpuProcessObs,
    KeepAliveState,
    ProcessState,
)

if TYPE_CHECKING:
    from controller.plan.forecast import PredictedAction

NAME_MAX = 48
SHORT_UUID_LEN = 12  # like Docker's short container ids
CMD_MAX = 60


# --- selection -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "exists", "!exists", "in", "notin"
    value: str = ""
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "=":
            return labels.get(self.key) == self.value
        if self.op == "in":
            return self.key in labels and labels[self.key] in self.values
        if self.op == "notin":
            return labels.get(self.key) not in self.values
        return labels.get(self.key) != self.value


# kubectl's label syntax: an optional DNS-subdomain prefix and '/', then a name of at most 63
# characters; a value is empty or a name.
_LABEL_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"(?:[a-z0-9](?:[-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}")
_LABEL_VALUE = re.compile(rf"(?:{_LABEL_NAME})?")
_SET_REQUIREMENT = re.compile(r"(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)")


def _split_requirements(text: str) -> list[str]:
    """Comma-separated requirements; commas inside ``(...)`` belong to a set."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _requirement(part: str) -> Requirement:
    """One requirement in kubectl's syntax; ``ValueError`` naming what is wrong."""
    m = _SET_REQUIREMENT.fullmatch(part)
    if m:
        values = tuple(v.strip() for v in m["values"].split(","))
        if not all(values) or not m["values"].strip():
            raise ValueError(f"{m['op']} needs a non-empty list of values: {m['key']} {m['op']} (a,b)")
        req = Requirement(m["key"], m["op"], values=values)
    elif "!=" in part:
        k, v = part.split("!=", 1)
        req = Requirement(k.strip(), "!=", v.strip())
    elif "==" in part:
        k, v = part.split("==", 1)
        req = Requirement(k.strip(), "=", v.strip())
    elif "=" in part:
        k, v = part.split("=", 1)
        req = Requirement(k.strip(), "=", v.strip())
    elif part.startswith("!"):
        req = Requirement(part[1:].strip(), "!exists")
    else:
        req = Requirement(part, "exists")
    if not req.key:
        raise ValueError("empty key (use -l key=value)")
    if not _LABEL_KEY.fullmatch(req.key):
        raise ValueError(
            f"{req.key!r} is not a label key; expected key=value, key!=value, key in (a,b), "
            "key notin (a,b), key or !key"
        )
    for v in (req.value, *req.values):
        if not _LABEL_VALUE.fullmatch(v):
            raise ValueError(f"{v!r} is not a label value (letters, digits, '-', '_', '.'; at most 63)")
    return req


def parse_selector(texts: Sequence[str]) -> tuple[Requirement, ...]:
    """kubectl's label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``,
    ``k notin (a,b)``, comma-separated; anything else is refused, never read as something else."""
    out: list[Requirement] = []
    for text in texts:
        for part in _split_requirements(text):
            try:
                out.append(_requirement(part))
            except ValueError as exc:
                raise CliError(f"bad label selector {clean(part, 80)!r}: {clean(str(exc), 200)}") from None
    return tuple(out)


@dataclass(frozen=True)
class GetOptions:
    name: str | None = None
    output: str = "table"
    selector: tuple[Requirement, ...] = ()
    owner: str | None = None
    show_all: bool = False
    no_headers: bool = False
    sort_by: str | None = None

    @property
    def wide(self) -> bool:
        return self.output == "wide"


def _container_selected(c: ContainerObs, opts: GetOptions) -> bool:
    if opts.owner is not None and c.owner != opts.owner:
        return False
    return all(r.matches(c.labels) for r in opts.selector)


def item_list(kind: str, view: View, items: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``-o json|yaml`` envelope of every ``get``."""
    return {
        "kind": kind,
        "observed_at": iso(view.snapshot.observed_at),
        "evaluated_at": iso(view.now),
        "notes": [clean(n, MACHINE_MAX) for n in view.notes],
        "items": clean_tree(items),
    }


# --- containers ------------------------------------------------------------------------------


def select_containers(view: View, opts: GetOptions) -> list[ContainerObs]:
    """The containers ``get containers`` lists.

    With a NAME: that container (name, id or unique id prefix), or an error. Otherwise, by
    default, every container that references a GPU or that the plan acts on or defers; with
    ``--all``, every container. ``--owner`` and ``-l`` narrow either set.
    """
    if opts.name is not None:
        return [container_named(view, opts.name)]
    chosen = [
        c
        for c in view.snapshot.containers
        if (opts.show_all or c.has_gpu or view.container_items(c)) and _container_selected(c, opts)
    ]
    ordered = sorted(chosen, key=container_sort_key)
    return sort_containers(view, ordered, opts.sort_by) if opts.sort_by else ordered


def container_named(view: View, key: str) -> ContainerObs:
    """The container ``key`` names (its name, id or an id prefix of at least 4 characters), or a
    one-line error: not found, or a prefix several containers' ids share (never "not found")."""
    c = view.snapshot.container(key)
    if c is not None:
        return c
    shared = sum(1 for x in view.snapshot.containers if len(key) >= 4 and x.id.startswith(key))
    if shared > 1:
        raise CliError(
            f"container id prefix {clean(key, NAME_MAX)!r} matches {shared} containers "
            "(give more of the id, or the name)"
        )
    raise CliError(
        f"container {clean(key, NAME_MAX)!r} not found (ds01ctl get containers --all lists every container)"
    )


SORT_KEYS = ("name", "owner", "type", "state", "idle", "next", "age")


def sort_containers(view: View, containers: list[ContainerObs], key: str) -> list[ContainerObs]:
    """``--sort-by COLUMN`` (stable; ties keep name order). ``idle``: longest idle first; ``next``:
    the soonest step first; ``age``: oldest first; rows without a value last."""
    from datetime import datetime

    far = datetime.max.replace(tzinfo=view.now.tzinfo)

    def idle_key(c: ContainerObs) -> tuple[bool, datetime]:
        idle = idleness(view, c)
        return idle.since is None, idle.since or far

    def next_key(c: ContainerObs) -> tuple[int, int, datetime]:
        step = next_step(
            view.container_items(c), nvml_ok=view.nvml_ok, idle_removes=view.idle_stop_removes(c.id)
        )
        if step is not None and step.in_passes:
            # After this pass's actions, before any timed step; the nearer turn first.
            return 1, step.in_passes, far
        predicted = _predicted(view, c, step)
        if predicted:
            return 2, 0, predicted[0].pass_at  # the time the NEXT column shows
        if step is None or step.due_at is None:
            return 3, 0, far  # (a budget of 0 runs nothing: held, with the steps that never come)
        return (0 if step.pending else 2), 0, step.due_at

    keys: dict[str, Any] = {
        "name": lambda c: c.name,
        "owner": lambda c: c.owner,
        "type": lambda c: c.container_type.value,
        "state": lambda c: c.state.value,
        "idle": idle_key,
        "next": next_key,
        "age": lambda c: created_at(c) or far,
    }
    return sorted(containers, key=keys[key])


def gpu_column(view: View, c: ContainerObs) -> str:
    if c.all_gpus:
        return "all"
    if not c.gpu_refs:
        return "-"
    parts: list[str] = []
    seen: set[str] = set()
    for ref in c.gpu_refs:
        key = ref.uuid or ref.raw
        if key in seen:
            continue  # the same device named twice; two different ones always print differently
        seen.add(key)
        if ref.uuid is None:
            text = clean(view.short_refs.get(ref.raw, ref.raw), 200) + " (unresolved)"
        else:
            # Without NVML the slot is unknown; the UUID's prefix still tells GPUs apart.
            text = view.slots.get(ref.uuid) or view.short_refs.get(ref.uuid, ref.uuid)
        parts.append(text)
    return ",".join(parts)


def _keepalive(c: ContainerObs) -> dict[str, Any]:
    if c.signals is None:
        # Not running: its keep-alive file is not read, and would not count (the table's "-").
        return {"state": "not-running", "mtime": None, "detail": None}
    ka = c.signals.keepalive
    return {"state": ka.state.value, "mtime": iso(ka.mtime), "detail": ka.detail}


def _keepalive_text(view: View, c: ContainerObs) -> str:
    if c.signals is None:
        return "-"
    ka = c.signals.keepalive
    if ka.state == KeepAliveState.PRESENT:
        return age(ka.mtime, view.now)
    if ka.state == KeepAliveState.ABSENT:
        return "-"
    if ka.state == KeepAliveState.UNKNOWN:
        return UNKNOWN
    return "ignored"  # a link or not a regular file: never honoured


def container_item(view: View, c: ContainerObs) -> dict[str, Any]:
    idle = idleness(view, c)
    step = next_step(view.container_items(c), nvml_ok=view.nvml_ok, idle_removes=view.idle_stop_removes(c.id))
    r = rates(view, c)
    cpu_unknown, net_unknown = rate_unknowns(view, c, r)
    util, util_unknown = gpu_util(view, c)
    return {
        "name": c.name,
        "id": c.id,
        "image": c.image,
        "state": c.state.value,
        "owner": c.owner,
        "owner_rule": c.owner_rule.value,
        "type": c.container_type.value,
        "type_rule": c.type_rule.value,
        "managed": c.managed,
        "labels": dict(sorted(c.labels.items())),
        "gpus": [
            {
                "ref": ref.raw,
                "source": ref.source.value,
                "uuid": ref.uuid,
                "slot": view.slots.get(ref.uuid) if ref.uuid else None,
                "mig": ref.is_mig,
                "unresolved_reason": ref.unresolved_reason,
            }
            for ref in c.gpu_refs
        ],
        "all_gpus": c.all_gpus,
        "created_at": iso(created_at(c)),
        "started_at": iso(c.started_at),
        "finished_at": iso(c.finished_at),
        "idle": {"state": idle.state.value, "since": iso(idle.since)},
        "next": None if step is None else step.as_dict(),
        # null ``next`` is "no next step" only where something was planned (the table's "unknown").
        "next_unknown": None
        if view.plan is not None
        else f"no plan: {view.policy.error or 'no policy loaded'}",
        "signals": {
            "cpu_percent": r.cpu_percent,
            "cpu_unknown": cpu_unknown,
            "net_bytes_per_s": r.net_bytes_per_s,
            "net_unknown": net_unknown,
            "gpu_util_percent": util,
            "gpu_util_unknown": util_unknown,
            "keepalive": _keepalive(c),
        },
    }


_STATE_COLOUR = {
    ContainerState.RUNNING: "green",
    ContainerState.EXITED: "yellow",
    ContainerState.DEAD: "red",
    ContainerState.CREATED: "yellow",
}


def _predicted(view: View, c: ContainerObs, step: NextStep | None) -> list[PredictedAction]:
    """The forecast's steps for ``c`` where NEXT shows them (nothing is to be done now, nothing due
    is held until an admin acts, which the forecast never predicts, and the plan has an item for
    it), else none: the cell and ``--sort-by next`` read the same."""
    if view.forecast is None or not view.container_items(c):
        return []
    if step is not None and (step.pending or step.held_by_admin):
        return []
    return view.forecast.for_container(c.id)


def _next_cell(view: View, c: ContainerObs) -> Cell:
    items = view.container_items(c)
    if view.plan is None:
        return Cell("unknown")  # no plan: unknown, not "nothing"
    step = next_step(items, nvml_ok=view.nvml_ok, idle_removes=view.idle_stop_removes(c.id))
    if _predicted(view, c, step):
        from controller.cli.forecastview import next_text

        predicted = next_text(view.forecast, c.id, view.now)
        if predicted:
            return Cell(predicted)
    if step is None and c.state == ContainerState.REMOVING:
        from controller.cli.view import removal_under_way

        under_way = removal_under_way(view, c)
        if under_way is None:
            return Cell("being removed")
        return Cell(f"being removed ({since(under_way[2], view.now)})", "yellow")
    if step is None:
        return Cell("-")
    colour = (
        "red" if step.pending and step.verb in {"stop", STOP_AND_REMOVE, "remove", "kill", "reset"} else None
    )
    if (step.pending or step.next_pass) and colour is None:
        colour = "yellow"
    return Cell(step.text(view.now), colour)


def containers_table(view: View, containers: Sequence[ContainerObs], wide: bool) -> Table:
    headers = ["NAME", "OWNER", "TYPE", "STATE", "GPUS", "IDLE", "NEXT", "AGE"]
    if wide:
        headers += [
            "IMAGE",
            "ID",
            "CPU",
            "NET",
            "GPU-UTIL",
            "KEEPALIVE",
            "OWNER-RULE",
            "CPU-LIM",
            "MEM-LIM",
            "PIDS-LIM",
        ]
        from controller.cli.users import limit_cells
    t = Table(headers)
    for c in containers:
        row: list[str | Cell] = [
            clean(c.name, NAME_MAX),
            clean(c.owner, 32),
            c.container_type.value,
            Cell(c.state.value, _STATE_COLOUR.get(c.state)),
            gpu_column(view, c),
            idleness(view, c).text(view.now),
            _next_cell(view, c),
            age(created_at(c), view.now),
        ]
        if wide:
            r = rates(view, c)
            running = c.state == ContainerState.RUNNING
            util, util_unknown = gpu_util(view, c)
            row += [
                clean(c.image, 40),
                c.short_id,
                # Running with no rate yet: unknown; not running: does not apply.
                fmt_percent(r.cpu_percent) if r.cpu_percent is not None or not running else UNKNOWN,
                fmt_bytes(r.net_bytes_per_s) + "/s"
                if r.net_bytes_per_s is not None
                else (UNKNOWN if running else "-"),
                UNKNOWN if util_unknown else fmt_percent(util),
                _keepalive_text(view, c),
                c.owner_rule.value,
                *limit_cells(c, view.effective(c), view.now, view.snapshot.host_cpus),
            ]
        t.add(row)
    return t


# --- gpus ------------------------------------------------------------------------------------


def _device_processes(view: View, device_uuid: str) -> list[GpuProcessObs]:
    return [p for p in view.snapshot.processes if p.device_uuid == device_uuid]


def gpu_state(view: View, gpu: GpuObs, device_uuid: str | None) -> str:
    """free / held / paused-held / restarting-held / idle-held / dirty / unavailable / unknown for one
    GPU or MIG device.

    ``dirty``: the plan or the memory marks it (orphans, stale memory), or it runs a process no
    live container accounts for. A live container whose process runs on the device counts as a
    holder (a device a compute process runs on is never free, even one its container was not
    given). ``paused-held``: no holder runs and is active, and one is paused (it accrues no idle
    time: the idle timeout never gives the device back while it is paused). ``restarting-held``: none
    runs and is active or is paused, and one is restarting (no timer runs: each start begins its
    clocks again). ``idle-held``: every holder is stopped or idle. A MIG-enabled
    GPU without MIG devices cannot be used at all, hence ``unavailable``.
    """
    uuid = device_uuid or gpu.uuid
    if device_uuid is None and gpu.mig_enabled and not gpu.mig_devices:
        return "unavailable"
    if not view.docker_ok:
        return "unknown"  # the holders cannot be listed: neither free nor held is known
    if device_uuid is None and gpu.mig_enabled:
        states = [gpu_state(view, gpu, m.uuid) for m in gpu.mig_devices]
        # One device it cannot tell about ("unknown") makes the GPU unknown unless another is
        # in use: a GPU is free only if every one of its devices is.
        for s in ("dirty", "held", "paused-held", "restarting-held", "idle-held", "unknown"):
            if s in states:
                return s
        return "free"
    marked = view.memory is not None and gpu.uuid in view.memory.dirty_gpus
    # A GpuDirty deferral for an unknown process list is not a dirty verdict: it says "cannot tell".
    planned = any(
        i
        for i in view.items_by_gpu.get(uuid, [])
        if rule_of(i) == Reason.GPU_DIRTY
        and not (isinstance(i, Deferred) and i.why == DeferReason.UNKNOWN_SIGNAL)
    )
    holders = view.holders.get(uuid, [])
    # A live container's process (running, paused, restarting: as the planner, never an orphan) is
    # not stray, whichever device it is on (one it was not given is an alert, not a dirty GPU).
    # A process whose /proc entry was never read is not known to be stray (nor to run at all): the
    # planner kills or marks nothing for it.
    listed = [p for p in _device_processes(view, uuid) if not p.is_system]
    runs_in = [_live_container(view, p) for p in listed if not attribution_unread(p)]
    if marked or planned or None in runs_in:
        return "dirty"
    # The device is in use by the container whose process runs on it, given to it or not: never free.
    users = list(holders)
    for c in runs_in:
        if c is not None and c not in users:
            users.append(c)
    if not users:
        mig = next((m for m in gpu.mig_devices if m.uuid == device_uuid), None)
        if (mig.processes_unknown if mig is not None else gpu.processes_unknown) is not None:
            return "unknown"  # no holder, but NVML could not list its processes: not "free"
        if len(runs_in) < len(listed):
            return "unknown"  # no holder, but a process on it whose container could not be read
        return "free"
    for c in users:
        if c.state == ContainerState.RUNNING and idleness(view, c).state != IdleState.IDLE:
            return "held"
    if any(c.state == ContainerState.PAUSED for c in users):
        return "paused-held"
    if any(c.state == ContainerState.RESTARTING for c in users):
        return "restarting-held"
    return "idle-held"


def gpu_item(view: View, gpu: GpuObs, device_uuid: str | None) -> dict[str, Any]:
    uuid = device_uuid or gpu.uuid
    mig = next((m for m in gpu.mig_devices if m.uuid == device_uuid), None)
    used = mig.memory_used_bytes if mig is not None else gpu.memory_used_bytes
    total = mig.memory_total_bytes if mig is not None else gpu.memory_total_bytes
    util = None if (mig is not None or gpu.mig_enabled) else gpu.utilization_percent
    # Why NVML could not list the device's processes: they are unknown (None), not none. A GPU in
    # MIG mode has its processes on its MIG devices (listed there, each with its own reason).
    unlisted = (
        mig.processes_unknown if mig is not None else (None if gpu.mig_enabled else gpu.processes_unknown)
    )
    return {
        "slot": view.slot(uuid),
        "uuid": uuid,
        "parent_uuid": gpu.uuid,
        "model": gpu.name,
        "mig": "device" if mig is not None else ("on" if gpu.mig_enabled else "off"),
        "mig_profile": None if mig is None else mig.profile,
        "memory_used_bytes": used,
        # Why it is None (the NVML call's error), as utilization_unknown and processes_unknown say theirs.
        "memory_used_unknown": None
        if used is not None
        else (
            (mig.memory_used_unknown if mig is not None else gpu.memory_used_unknown)
            or "not reported by NVML"
        ),
        "memory_total_bytes": total,
        "utilization_percent": util,
        "utilization_unknown": (
            "per-MIG utilization is not reported by NVML"
            if (mig is not None or gpu.mig_enabled)
            else gpu.utilization_unknown
        ),
        # None: not known (Docker down, the containers could not be listed), never "no holder".
        "holders": [c.name for c in view.holders.get(uuid, [])] if view.docker_ok else None,
        "processes": None if unlisted else [p.pid for p in _device_processes(view, uuid)],
        "processes_unknown": unlisted or None,
        "state": gpu_state(view, gpu, device_uuid),
    }


def unavailable_gpu_items(view: View) -> list[dict[str, Any]]:
    """NVML down: the GPUs we only know from containers' references, all ``unavailable``, with
    what NVML gives (memory, utilization, processes) unknown: ``None`` and why, never empty."""
    (down,) = unlisted_devices(view.snapshot)
    seen: dict[str, list[str]] = {}
    for c in sorted(view.snapshot.containers, key=container_sort_key):
        for ref in c.gpu_refs:
            key = ref.uuid or ref.raw
            seen.setdefault(key, []).append(c.name)
    return [
        {
            "slot": None,  # NVML down: the index is not known (JSON null, as a container's GPU slot)
            "uuid": uuid,
            "parent_uuid": None,
            "model": None,
            "mig": None,
            "mig_profile": None,
            "memory_used_bytes": None,
            "memory_used_unknown": down.reason,
            "memory_total_bytes": None,
            "utilization_percent": None,
            "utilization_unknown": down.reason,
            "holders": holders,
            "processes": None,
            "processes_unknown": down.reason,
            "state": "unavailable",
        }
        for uuid, holders in sorted(seen.items())
    ]


def gpu_items(view: View, opts: GetOptions) -> list[dict[str, Any]]:
    if not view.nvml_ok and not view.snapshot.gpus:
        items = unavailable_gpu_items(view)
    else:
        items = [gpu_item(view, g, dev) for g, dev in gpu_devices(view.snapshot.gpus)]
    from controller.cli.hoarding import hoarding_marks

    marks = hoarding_marks(view) if items else {}
    for i in items:
        i["hoarding"] = marks.get(i["uuid"])  # memory held at near-zero use for the window; None: not known
    if opts.name is not None:
        items = [
            i for i in items if opts.name in (i["slot"], i["uuid"]) or str(i["uuid"]).startswith(opts.name)
        ]
        if not items:
            raise CliError(f"GPU {clean(opts.name, 64)!r} not found (ds01ctl get gpus lists every GPU)")
    if opts.owner is not None or opts.selector:
        items = _owned_gpu_items(view, items, opts)
    return items


def _owned_gpu_items(view: View, items: list[dict[str, Any]], opts: GetOptions) -> list[dict[str, Any]]:
    """``--owner``/``-l``: the devices a selected container references or runs a process on (with
    ``--owner`` alone, a process of that user too), and the GPU a selected MIG device is part of."""
    if not view.docker_ok:
        raise CliError(
            "get gpus --owner/-l needs the containers, and they cannot be listed (Docker is unavailable); "
            "get processes --owner lists the user's GPU processes"
        )

    def mine(uuid: str) -> bool:
        if any(_container_selected(c, opts) for c in view.holders.get(uuid, [])):
            return True
        for p in _device_processes(view, uuid):
            if not opts.selector and p.user == opts.owner:
                return True  # as get processes --owner: run as them, or in a container of theirs
            c = view.snapshot.container(p.container_id) if p.container_id else None
            if c is not None and _container_selected(c, opts):
                return True
        return False

    chosen = {str(i["uuid"]) for i in items if mine(str(i["uuid"]))}
    chosen |= {str(i["parent_uuid"]) for i in items if str(i["uuid"]) in chosen}
    return [i for i in items if str(i["uuid"]) in chosen]


def short_uuids(uuids: Sequence[str | None]) -> dict[str, str]:
    """The shortest prefixes (at least 12 characters, like short container ids) that stay unique."""
    distinct = sorted({u for u in uuids if u})
    length = SHORT_UUID_LEN
    while length < max((len(u) for u in distinct), default=0):
        if len({u[:length] for u in distinct}) == len(distinct):
            break
        length += 4
    return {u: u[:length] for u in distinct}


def _names(names: Sequence[str], limit: int = 3) -> str:
    if not names:
        return "-"
    shown = ",".join(clean(n, 32) for n in names[:limit])
    return shown + (f"+{len(names) - limit}" if len(names) > limit else "")


_GPU_STATE_COLOUR = {
    "free": "green",
    "paused-held": "yellow",
    "restarting-held": "yellow",
    "idle-held": "yellow",
    "dirty": "red",
    "unavailable": "red",
    "unknown": "red",
}


def mig_text(item: Mapping[str, Any]) -> str:
    """The MIG column: ``off``, ``on`` (a GPU in MIG mode), a MIG device's profile (``3g.40gb``),
    or ``device`` when NVML did not name its profile."""
    if item["mig"] == "device" and item.get("mig_profile"):
        return clean(item["mig_profile"], 24)
    return str(item["mig"] or UNKNOWN)


def gpus_table(items: Sequence[dict[str, Any]], wide: bool) -> Table:
    headers = ["INDEX", "UUID", "MODEL", "MIG", "MEMORY", "UTIL", "HOLDERS", "PROCESSES", "STATE"]
    t = Table(headers)
    short = short_uuids([i["uuid"] for i in items])
    for i in items:
        used, total = i["memory_used_bytes"], i["memory_total_bytes"]
        memory = UNKNOWN if used is None and total is None else f"{known_bytes(used)}/{known_bytes(total)}"
        util = fmt_percent(i["utilization_percent"])
        if i["utilization_percent"] is None and i["utilization_unknown"]:
            util = UNKNOWN
        # NVML down, or it could not list this device's: the processes are unknown, not none.
        processes = UNKNOWN if i["processes"] is None else str(len(i["processes"]))
        t.add(
            [
                UNKNOWN if i["slot"] is None else i["slot"],
                clean(i["uuid"] if wide else short.get(i["uuid"], "-"), 64),
                clean(i["model"] or UNKNOWN, 32),
                mig_text(i),
                memory,
                util,
                UNKNOWN if i["holders"] is None else _names(i["holders"], 99 if wide else 3),
                processes,
                Cell(
                    i["state"] + (",hoarding" if i.get("hoarding") else ""),
                    "yellow" if i.get("hoarding") else _GPU_STATE_COLOUR.get(i["state"]),
                ),
            ]
        )
    return t


# --- processes -------------------------------------------------------------------------------


def process_verdict(view: View, p: GpuProcessObs) -> str:
    """ok / orphan / foreign / suspect / system (unknown while Docker is down, or when its /proc
    entry was never read): the plan's reading of the process first, then the facts."""
    if p.is_system:
        return "system"
    if p.container_id is not None and not view.docker_ok:
        return "unknown"  # its container cannot be checked: not an orphan until Docker says so
    if attribution_unread(p):
        return "unknown"  # no cgroup read: not a host process, nor known to be anyone's
    for item in view.items_by_pid.get(p.pid, []):
        rule = rule_of(item)
        if rule in (Reason.ORPHANED_PROCESS, Reason.KILL_FAILED):
            return "orphan"
        if rule is Reason.FOREIGN_GPU_WORKLOAD:
            return "foreign"
        if rule in (Reason.FOREIGN_PROCESS_ON_GPU, Reason.HOST_GPU_PROCESS):
            return "suspect"
    if p.container_id is None:
        # a sandbox of another runtime, or a bare host process on a shared GPU: reported, never killed
        return "foreign" if p.cgroup_scope is CgroupScope.FOREIGN else "suspect"
    c = _live_container(view, p)
    live = c is not None
    if not live and p.cgroup_scope is not CgroupScope.ENGINE:
        return "foreign"  # another runtime's container: not this engine's to call an orphan
    if c is None:
        return "orphan"
    if not may_use(c, p):
        return "suspect"  # it uses a GPU its container was not given
    return "ok"


def may_use(c: ContainerObs, p: GpuProcessObs) -> bool:
    """May ``c``'s process use the device it is on? As the planner judges (ForeignProcessOnGpu):
    by its references (:meth:`ContainerObs.may_use_device`), or on a GPU it references (the GPU
    of a MIG device it references)."""
    return c.may_use_device(p.device_uuid) or any((r.parent_uuid or r.uuid) == p.gpu_uuid for r in c.gpu_refs)


def _live_container(view: View, p: GpuProcessObs) -> ContainerObs | None:
    """The live container (running, paused, restarting) the process runs in, if any."""
    if p.container_id is None or not p.container_exists:
        return None
    c = view.snapshot.container(p.container_id)
    return c if c is not None and c.state in LIVE_STATES else None


def attribution_unread(p: GpuProcessObs) -> bool:
    """Whether the process's ``/proc`` entry was never read: gone when read (it exited after NVML
    listed it, or ``/proc`` hides other users' processes from this reader), or the read failed
    (``/proc`` is then unavailable). Its cgroup, and so its container, is unknown: the observer
    leaves no container id, which must not read as a host process."""
    return p.state == ProcessState.VANISHED or (p.cgroup_scope is CgroupScope.UNKNOWN and not p.cgroup)


def process_container(view: View, p: GpuProcessObs) -> str:
    if attribution_unread(p):
        return UNKNOWN
    if p.container_id is None:
        return "foreign" if p.cgroup_scope is CgroupScope.FOREIGN else "host"
    if not view.docker_ok:
        return UNKNOWN
    if not p.container_exists:
        return "foreign" if p.cgroup_scope is not CgroupScope.ENGINE else "gone"
    c = view.snapshot.container(p.container_id)
    return c.name if c is not None else "gone"


def process_items(view: View, opts: GetOptions) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in sorted(view.snapshot.processes, key=lambda x: (view.slot(x.device_uuid), x.pid)):
        c = view.snapshot.container(p.container_id) if p.container_id else None
        if opts.owner is not None and (p.user != opts.owner and (c is None or c.owner != opts.owner)):
            continue
        if opts.selector and (c is None or not all(r.matches(c.labels) for r in opts.selector)):
            continue
        if opts.name is not None and str(p.pid) != opts.name:
            continue
        out.append(
            {
                "pid": p.pid,
                "gpu": view.slot(p.device_uuid),
                "device_uuid": p.device_uuid,
                "gpu_uuid": p.gpu_uuid,
                "used_memory_bytes": p.used_memory_bytes,
                "user": p.user,
                "uid": p.uid,
                "container": process_container(view, p),
                "container_id": p.container_id,
                "command": p.cmdline,
                "state": p.state.value,
                "verdict": process_verdict(view, p),
            }
        )
    if opts.name is not None and not out:
        unlisted = unlisted_devices(view.snapshot)
        if unlisted:
            # Not among those NVML listed is not "no such GPU process": it may run where it could not list.
            where = (
                unlisted[0].text()
                if unlisted[0].slot is None
                else "NVML could not list the processes of " + "; ".join(u.text() for u in unlisted)
            )
            raise CliError(f"whether pid {clean(opts.name, 20)} is a GPU process is unknown: {where}")
        raise CliError(
            f"no GPU process with pid {clean(opts.name, 20)} (ds01ctl get processes lists them all)"
        )
    return out


def processes_unknown_items(view: View) -> list[dict[str, Any]]:
    """``get processes -o json``'s ``processes_unknown``: the devices whose processes NVML could not
    list (``gpu`` and ``uuid`` null: every device, NVML being unavailable), each with why."""
    return [{"gpu": u.slot, "uuid": u.uuid, "reason": u.reason} for u in unlisted_devices(view.snapshot)]


_VERDICT_COLOUR = {"orphan": "red", "suspect": "yellow", "system": "dim", "unknown": "red"}


def processes_table(items: Sequence[dict[str, Any]], wide: bool) -> Table:
    headers = ["PID", "GPU", "MEMORY", "USER", "CONTAINER", "COMMAND", "VERDICT"]
    t = Table(headers)
    for i in items:
        container = i["container"]
        if container == "gone" and i["container_id"]:
            container = f"gone ({i['container_id'][:12]})"
        cmd = i["command"] or ("(vanished)" if i["state"] == "vanished" else UNKNOWN)
        t.add(
            [
                str(i["pid"]),
                i["gpu"],
                known_bytes(i["used_memory_bytes"]),
                clean(i["user"] or (str(i["uid"]) if i["uid"] is not None else UNKNOWN), 32),
                clean(container, NAME_MAX),
                clean(cmd, 400 if wide else CMD_MAX),
                Cell(i["verdict"], _VERDICT_COLOUR.get(i["verdict"])),
            ]
        )
    return t


# --- allocations -----------------------------------------------------------------------------


def allocation_items(view: View, opts: GetOptions) -> list[dict[str, Any]]:
    """The ledger next to the allocations the containers imply, one row per device.

    Verdicts: the plan's first (``leaked`` for a release it performs or defers, ``duplicate``);
    otherwise ``ok`` when both sides agree, ``unrecorded`` (a holder the ledger lacks),
    ``ledger-only`` (a ledger row no container backs), ``mismatch`` (they name different
    containers) or ``unknown`` when the ledger could not be read, or Docker could not (the
    holders are then ``None``: not known, rather than none).
    """
    ledger = view.snapshot.ledger
    by_gpu: dict[str, dict[str, Any]] = {}

    def row(key: str) -> dict[str, Any]:
        return by_gpu.setdefault(key, {"gpu": key, "ledger": [], "holders": []})

    for e in ledger.entries:
        row(e.gpu_uuid or e.gpu)["ledger"].append(
            {"container": e.container, "user": e.user, "allocated_at": iso(e.allocated_at), "raw_gpu": e.gpu}
        )
    for a in view.snapshot.implied_allocations:
        row(a.gpu_uuid)["holders"].append(
            {
                "container": a.container_name,
                "container_id": a.container_id,
                "user": a.user,
                "state": a.state.value,
            }
        )
    out: list[dict[str, Any]] = []
    for key in sorted(by_gpu, key=lambda k: (view.slot(k), k)):
        r = by_gpu[key]
        users = {x["user"] for x in r["ledger"]} | {x["user"] for x in r["holders"]}
        if opts.owner is not None and opts.owner not in users:
            continue
        if opts.name is not None and not (opts.name in (key, view.slot(key)) or key.startswith(opts.name)):
            continue  # NAME: one device, by its slot, UUID or a UUID prefix
        r["slot"] = view.slot(key) if key in view.slots else None  # not known: NVML lists no such device
        r["verdict"] = _allocation_verdict(view, key, r)
        if not view.docker_ok:
            r["holders"] = None  # the containers could not be listed: not known, not none
        out.append(r)
    if opts.name is not None and not out:
        raise CliError(
            f"no allocation on GPU {clean(opts.name, 64)!r} (ds01ctl get allocations lists every device's)"
        )
    return out


def _releases_a_row_of(item: Action | Deferred, key: str) -> bool:
    """Whether a plan item is about a ledger row written for this device."""
    row = item.target.ledger_entry
    return row is not None and (row.get("gpu_uuid") or row.get("gpu")) == key


def _allocation_verdict(view: View, key: str, r: dict[str, Any]) -> str:
    items = list(view.items_by_gpu.get(key, []))
    for e in r["ledger"]:
        c = view.snapshot.container(e["container"])
        if c is not None:
            # Only what concerns this device (items naming the GPU are in items_by_gpu already): a
            # stale row of the same container on another GPU does not make this row leaked.
            items += [
                i for i in view.container_items(c) if i.target.gpu != key and _releases_a_row_of(i, key)
            ]
    rules = {rule_of(i) for i in items}
    leak = [i for i in items if rule_of(i) == Reason.LEAKED_ALLOCATION]
    if leak and all(isinstance(i, Deferred) and i.why == DeferReason.UNKNOWN_SIGNAL for i in leak):
        return "unknown"  # the plan cannot tell whether the row is still in use (describe says why)
    if Reason.LEAKED_ALLOCATION in rules:
        return "leaked"
    if Reason.DUPLICATE_GPU_HOLDER in rules:
        return "duplicate"
    if view.snapshot.ledger.error is not None or not view.docker_ok:
        return "unknown"  # one side could not be read: neither agreement nor a gap is known
    # A duplicate is what the planner alerts on (DuplicateGpuHolder): two running containers naming
    # one full GPU, whatever the ledger says (its alert, once delivered, is no longer in the plan). A
    # MIG device is shared by design; a stopped holder uses nothing (its hold runs).
    running = {h["container_id"] for h in r["holders"] if h["state"] == ContainerState.RUNNING.value}
    if len(running) > 1 and not _is_mig_device(view, key):
        return "duplicate"
    ledger_names = {e["container"] for e in r["ledger"]}
    if r["ledger"] and not r["holders"]:
        return "ledger-only"
    if r["holders"] and not r["ledger"]:
        return "unrecorded"

    def recorded(h: Mapping[str, Any]) -> bool:
        """A row names the holder: by its name or id, or a prefix of its id (12 or more)."""
        keys = (h["container"], h["container_id"])
        return any(n in keys or (len(n) >= 12 and any(k.startswith(n) for k in keys)) for n in ledger_names)

    if not any(recorded(h) for h in r["holders"]):
        return "mismatch"
    if not all(recorded(h) for h in r["holders"]):
        return "unrecorded"
    return "ok"


def _is_mig_device(view: View, uuid: str) -> bool:
    return any(m.uuid == uuid for g in view.snapshot.gpus for m in g.mig_devices) or uuid.startswith("MIG-")


_ALLOC_COLOUR = {"leaked": "red", "duplicate": "red", "mismatch": "yellow", "ledger-only": "yellow"}


def allocations_table(items: Sequence[dict[str, Any]], wide: bool) -> Table:
    t = Table(["GPU", "UUID", "LEDGER", "CONTAINERS", "VERDICT"])
    short = short_uuids([r["gpu"] for r in items])
    for r in items:
        ledger = ",".join(f"{clean(e['container'], 32)}/{clean(e['user'], 24)}" for e in r["ledger"]) or "-"
        holders = (
            UNKNOWN
            if r["holders"] is None
            else ",".join(
                f"{clean(h['container'], 32)}/{clean(h['user'], 24)}({h['state']})" for h in r["holders"]
            )
            or "-"
        )
        t.add(
            [
                UNKNOWN if r["slot"] is None else r["slot"],
                clean(r["gpu"] if wide else short[r["gpu"]], 64),
                ledger,
                holders,
                Cell(r["verdict"], _ALLOC_COLOUR.get(r["verdict"])),
            ]
        )
    return t


# --- policies --------------------------------------------------------------------------------


def policy_items(view: View, opts: GetOptions) -> list[dict[str, Any]]:
    items = [
        {"kind": s.kind, "name": s.name, "source": s.source, "detail": s.detail}
        for s in sorted(view.policy.sources, key=lambda s: (s.kind, s.name))
        if opts.name is None or s.name == opts.name
    ]
    if opts.name is not None and not items:
        raise CliError(f"policy {clean(opts.name, 64)!r} not found (ds01ctl get policies lists them all)")
    return items


def policies_table(items: Sequence[dict[str, Any]], wide: bool) -> Table:
    headers = ["KIND", "NAME", "SOURCE"] + (["DETAIL"] if wide else [])
    t = Table(headers)
    for i in items:
        row = [clean(i["kind"], 32), clean(i["name"], NAME_MAX), clean(i["source"], 120)]
        if wide:
            row.append(clean(i["detail"], 120) or "-")
        t.add(row)
    return t


def policy_status_line(view: View) -> str:
    p = view.policy
    head = f"policy: {clean(p.origin, 200)}"
    if p.candidate:
        head += " (candidate, not installed)"
    if p.error:
        head += f"; last load FAILED: {clean(p.error, 300)}"
    if p.daemon_error:
        head += (
            f"; the running controller's last reload FAILED at {clean(p.daemon_error_at or UNKNOWN, 40)}"
            f" (it keeps its last good policy): {clean(p.daemon_error, 300)}"
        )
    if p.record_error:
        head += (
            f"; the running controller CANNOT WRITE ITS RECORD ({clean(p.record_error, 300)}): "
            "no destructive action runs until it can"
        )
    if p.daemon_mismatch:
        head += f"\nWARNING: {clean(p.daemon_mismatch, 600)}"
    return head


# --- events ----------------------------------------------------------------------------------


# Said by the columns (container) or internal (the action's idempotency key): not in DETAILS.
_DETAILS_HIDDEN = frozenset({"container", "container_id", "key"})
# What a person reads first: what happened and why; the rest follows in the log's order.
_DETAILS_FIRST = ("message", "would", "reason", "kind", "outcome", "error")


def _details_text(details: Any, wide: bool = False) -> str:
    if not isinstance(details, Mapping):
        return "" if details is None else clean(details, 200)
    value_max = MACHINE_MAX if wide else 60  # -o wide shows every value whole
    keys = [k for k in _DETAILS_FIRST if k in details]
    keys += [k for k in details if k not in keys]
    parts = []
    for k in keys:
        v = details[k]
        if k in _DETAILS_HIDDEN or v is None:
            continue
        text = clean(v if not isinstance(v, dict | list) else _flat(v), value_max)
        parts.append(text if k in ("message", "would") else f"{clean(k, 32)}={text}")
    return " ".join(parts)


def _flat(v: Any) -> str:
    import json

    return json.dumps(v, separators=(",", ":"), ensure_ascii=True)


def event_items(view: View) -> list[dict[str, Any]]:
    return [dict(e) for e in view.events]


def events_table(view: View, items: Sequence[dict[str, Any]], wide: bool) -> Table:
    from controller.act.events import container_name, parse_timestamp

    t = Table(["AGE", "TIME", "TYPE", "USER", "CONTAINER", "DETAILS"])
    for e in items:
        at = parse_timestamp(e.get("timestamp"))
        details = e.get("details")
        container = container_name(details) if isinstance(details, Mapping) else None
        cid = details.get("container_id") if isinstance(details, Mapping) else None
        if not container and isinstance(cid, str) and cid:
            # Named by its id alone (a process in another runtime's container): DETAILS leaves the
            # id out as the column's, so the column shows it, as --container ID-PREFIX finds it.
            container = cid[:12]
        t.add(
            [
                age(at, view.now),
                stamp(at),
                clean(e.get("event_type", UNKNOWN), 48),
                clean(e.get("user") or "-", 32),
                clean(container or "-", NAME_MAX),
                clean(_details_text(details, wide), 8 * MACHINE_MAX if wide else 100),
            ]
        )
    return t


# --- dispatch --------------------------------------------------------------------------------


def run_get(kind: str, view: View, opts: GetOptions, style: Style = PLAIN) -> tuple[str, bool]:
    """Render one ``get``: the table (or the JSON/YAML envelope) and whether it listed nothing."""

    if opts.output == "name":
        return _name_lines(kind, view, opts), False
    machine_output = opts.output in ("json", "yaml")
    items: list[dict[str, Any]]
    if kind == "containers":
        containers = select_containers(view, opts)
        # The table does not need the full items; 500 containers should not pay for them.
        items = [container_item(view, c) for c in containers] if machine_output else []
        table = containers_table(view, containers, opts.wide)
    elif kind == "gpus":
        items = gpu_items(view, opts)
        table = gpus_table(items, opts.wide)
    elif kind == "processes":
        items = process_items(view, opts)
        table = processes_table(items, opts.wide)
    elif kind == "allocations":
        items = allocation_items(view, opts)
        table = allocations_table(items, opts.wide)
    elif kind == "policies":
        items = policy_items(view, opts)
        table = policies_table(items, opts.wide)
    elif kind == "users":
        from controller.cli.users import user_item, users_table

        rows = _user_rows(view, opts)
        items = [user_item(r) for r in rows]
        table = users_table(rows, opts.wide)
    else:
        items = event_items(view)
        table = events_table(view, items, opts.wide)
    if machine_output:
        data = item_list(LIST_KINDS[kind], view, items)
        if kind == "processes":
            unlisted = processes_unknown_items(view)
            if unlisted and unlisted[0]["uuid"] is None:
                data["items"] = None  # NVML unavailable: the processes are unknown, not none
            data["processes_unknown"] = clean_tree(unlisted)
        if kind == "allocations" and view.memory is not None:
            rb = view.memory.release_breaker
            data["release_breaker"] = clean_tree(
                {"tripped": rb.tripped, "tripped_at": iso(rb.tripped_at), "reason": rb.reason}
            )
        if kind == "policies":
            data["policy"] = clean_tree(
                {
                    "origin": view.policy.origin,
                    "candidate": view.policy.candidate,
                    "error": view.policy.error,
                    "daemon_reload_error": view.policy.daemon_error,
                    "daemon_reload_error_at": view.policy.daemon_error_at,
                    "record_error": view.policy.record_error,
                    "daemon_mismatch": view.policy.daemon_mismatch,
                }
            )
        return machine(data, opts.output), False
    text = table.render(style) if table.rows else ""
    if text and opts.no_headers:
        text = text.split("\n", 1)[1]
    if kind == "policies":
        text = policy_status_line(view) + "\n" + text
    if kind == "allocations" and view.memory is not None and view.memory.release_breaker.tripped:
        text = style(release_breaker_line(view.memory), "red") + "\n" + text
    return text, not table.rows


def _user_rows(view: View, opts: GetOptions) -> list[Any]:
    """``get users``' rows: every owner of a live container, or the one ``--owner`` or NAME names."""
    from controller.cli.users import user_rows

    rows = [r for r in user_rows(view) if opts.owner is None or r.user == opts.owner]
    if opts.name is not None:
        rows = [r for r in rows if r.user == opts.name]
        if not rows:
            raise CliError(
                f"user {clean(opts.name, 64)!r} runs no live container (ds01ctl get users lists those "
                "who do; ds01ctl describe user NAME shows anyone's)"
            )
    return rows


def _name_lines(kind: str, view: View, opts: GetOptions) -> str:
    """``-o name``: one ``kind/name`` per line, as kubectl prints them (for scripts and xargs)."""
    if kind == "containers":
        names = [f"container/{clean(c.name, NAME_MAX)}" for c in select_containers(view, opts)]
    elif kind == "gpus":
        # With NVML down the index is unknown (None): the UUID (or the reference as written) names it.
        items = gpu_items(view, opts)
        names = [f"gpu/{i['slot'] if i['slot'] is not None else clean(i['uuid'], 200)}" for i in items]
    elif kind == "processes":
        if not view.nvml_ok:
            # No line would read as "no GPU process": say it cannot be told.
            (down,) = unlisted_devices(view.snapshot)
            raise CliError(f"the GPU processes cannot be listed: {clean(down.reason, 300)}")
        names = [f"process/{i['pid']}" for i in process_items(view, opts)]
    elif kind == "policies":
        names = [f"{i['kind'].lower()}/{clean(i['name'], NAME_MAX)}" for i in policy_items(view, opts)]
    elif kind == "users":
        names = [f"user/{clean(r.user, NAME_MAX)}" for r in _user_rows(view, opts)]
    else:
        raise CliError(f"-o name does not apply to {kind} (they have no names); use -o json")
    return "".join(n + "\n" for n in names)


LIST_KINDS = {
    "containers": "ContainerList",
    "gpus": "GpuList",
    "processes": "GpuProcessList",
    "allocations": "AllocationList",
    "policies": "PolicyList",
    "events": "EventList",
    "users": "UserList",
}


def empty_message(kind: str, view: View, opts: GetOptions | None = None) -> str:
    if kind in ("gpus", "processes") and not view.nvml_ok:
        return "No GPU information: NVML is unavailable (see the warning above)."
    if kind == "processes" and unlisted_devices(view.snapshot):
        return (
            "No GPU compute processes on the devices NVML listed; the processes of the others are "
            "unknown (see the warnings above)."
        )
    if opts is not None and (opts.selector or opts.owner or opts.name):
        return f"No {kind} match the given name, owner or selector."
    if kind == "containers" and opts is not None and opts.show_all:
        return "No containers."
    return {
        "containers": "No containers hold a GPU or are due for action (--all lists every container).",
        "gpus": "No GPUs found.",
        "processes": "No GPU compute processes.",
        "allocations": "No allocations: the ledger is empty and no container holds a GPU.",
        "policies": "No specs loaded: the built-in default policy applies.",
        "events": "No events.",
        "users": "No user runs a container.",
    }[kind]


__all__ = ["KINDS", "GetOptions", "canonical_kind", "fmt_age", "parse_selector", "run_get"]
