"""Rule 6: GPU compute processes -- orphans are killed, everything else is only reported;
dirty GPUs are reset when that is safe, otherwise an admin is told.

Who is who (from the process's cgroup, as attributed by the observer):

* **orphan**: the cgroup is THIS engine's (``cgroup_scope`` ENGINE: Docker's own parent or a
  configured ``engineCgroupParents`` entry) and names a container that this engine does not list
  or lists as not live (exited, dead, created). Killed (SIGTERM, then SIGKILL after
  ``kill_grace_s``) once seen in ``orphan_sightings_required`` consecutive passes. Sightings are
  keyed ``pid:start_time``, so a reused PID is a new process with no sightings; a process whose
  start time is unknown is never killed (PID reuse could not be ruled out).
* a process of a **live** container (running, paused -- frozen, not dead -- or restarting): never
  killed. On a GPU that container does not reference: ``AlertAdmin ForeignProcessOnGpu``.
* a **foreign** workload: a container-like cgroup that is not this engine's (rootless Docker,
  Kubernetes/containerd, CRI-O, Podman, a sandbox) and not a live container this engine lists.
  "Not listed by this engine" says nothing about whether it is alive: never killed; reported as
  ``ForeignGpuWorkload`` / ``Protected`` with its sightings. So is a process in this engine's
  cgroup form whose container a live containerd shim still runs (``live_shim``: a second rootful
  engine's container; the observer walks the ancestry, the kill re-checks it).
* a **host** process (no container): never killed; reported in ``plan.deferred`` as
  ``HostGpuProcess`` / ``Protected`` (``host_gpu_processes: report``), with its sightings.
* a **system** process (nvidia-persistenced, dcgm, Xorg...) and VANISHED rows: ignored.

Dirty GPUs and resets. A physical GPU is marked dirty (``memory.dirty_gpus``) when orphans to be
killed are found on it, or when its memory is in use with no process listed and no live holder.
"No process listed" counts only when NVML could list them: a GPU (or one of its MIG devices) whose
process list is unknown is never marked dirty on memory, and a GPU already marked is neither reset
nor alerted on while its list is unknown (deferred, ``UnknownSignal``). Memory is NVML's v2
``used``, which excludes the driver's reserved memory (615 MiB on an idle H200); a reading from
NVML v1 (old drivers) includes it, so it must exceed :data:`STALE_MEMORY_BYTES` plus
:func:`v1_reserved_allowance_bytes` before it counts (see docs/nvml-real-hardware.md).
The reset-or-alert decision is taken in a LATER pass than the kill, once the orphans are verified
gone -- resetting in the same pass would race the kill (a process still dying keeps its context
and makes the reset fail, or worse, a reset fires at a GPU whose orphan survived SIGTERM). A
memory-only mark also needs a second sighting, since a process may start between NVML's memory
and process reads. Then: ``ResetGpu`` when ``gpu_reset_policy`` is ``when-exclusive``, MIG is off,
no other process is on the GPU and no live container holds it; otherwise one ``AlertAdmin
GpuDirty``. The mark is cleared once the GPU is clean and the decision was carried out.

Needs NVML, procfs and Docker all available: with any of them down nothing is killed or reset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter

from controller.memory import GpuMark, GpuMarkCause, ProcessSighting
from controller.plan.context import (
    GO_ON,
    Check,
    Collector,
    PassContext,
    by_key,
    deferral,
    fmt_bytes,
    host_target,
    iso,
    sorted_by_head,
)
from controller.plan.types import ActionKind, DeferReason, KillParams, Reason, ResetParams, Target
from controller.plan.values import built
from controller.snapshot import (
    LIVE_STATES,
    CgroupScope,
    ContainerObs,
    Domain,
    GpuObs,
    GpuProcessObs,
    ProcessState,
)
from desired_state.effective import GpuResetPolicy

# Memory in use (NVML v2 "used", the driver's reserved memory excluded) on a GPU with no process
# and no live holder above this is "stale". A clean GPU reports 0 (an H200 on driver 580: used 0,
# reserved 615 MiB); a leaked CUDA context is hundreds of MiB at least.
STALE_MEMORY_BYTES = 512 * 1024 * 1024
# NVML v1 "used" includes the driver's reserved memory, which v1 cannot tell apart: 615 MiB on an
# idle H200 (0.4 % of its memory). Without v2, memory counts as stale only above the threshold plus
# this allowance, so an idle GPU is never dirty; a small leak goes unnoticed there (a leak with a
# process is still found as an orphan).
V1_RESERVED_ALLOWANCE_MIN_BYTES = 2 * 1024**3
V1_RESERVED_ALLOWANCE_FRACTION = 0.02


def v1_reserved_allowance_bytes(total_bytes: int | None) -> int:
    """How much of a v1 ``used`` reading may be the driver's reserved memory."""
    by_size = int(total_bytes * V1_RESERVED_ALLOWANCE_FRACTION) if total_bytes else 0
    return max(V1_RESERVED_ALLOWANCE_MIN_BYTES, by_size)


def stale_memory_threshold_bytes(g: GpuObs) -> int:
    if g.memory_used_includes_reserved:
        return STALE_MEMORY_BYTES + v1_reserved_allowance_bytes(g.memory_total_bytes)
    return STALE_MEMORY_BYTES


def processes_unknown(g: GpuObs) -> str | None:
    """Why the GPU's process list (or one of its MIG devices') could not be read, or None."""
    if g.processes_unknown:
        return g.processes_unknown
    for m in g.mig_devices:
        if m.processes_unknown:
            return f"MIG device {m.index} ({m.uuid}): {m.processes_unknown}"
    return None


@dataclass
class ProcessOutcome:
    processes: dict[str, ProcessSighting]
    dirty_gpus: dict[str, GpuMark]


@dataclass
class _GpuView:
    orphans: list[GpuProcessObs] = field(default_factory=list)
    killable: list[GpuProcessObs] = field(default_factory=list)
    others: list[GpuProcessObs] = field(default_factory=list)


def sighting_key(p: GpuProcessObs) -> str:
    return f"{p.pid}:{p.start_time if p.start_time is not None else '?'}"


def _process_target(p: GpuProcessObs, c: ContainerObs | None) -> Target:
    """A process's target. Its user is the owner of the container it is attributed to (so the
    owner finds it in ``get events --user``); the process's own uid and user stay in the evidence."""
    return built(
        Target,
        {
            "container": c.name if c is not None else None,
            "container_id": p.container_id,
            "expected_state": None,
            "expected_started_at": None,
            "pid": p.pid,
            "pid_start_time": p.start_time,
            "gpu": p.device_uuid,
            "user": c.owner if c is not None else p.user,
            "ledger_entry": None,
        },
    )


def _process_evidence(p: GpuProcessObs, s: ProcessSighting | None) -> dict[str, object]:
    return {
        "pid": p.pid,
        "start_time": p.start_time,
        "device_uuid": p.device_uuid,
        "gpu_uuid": p.gpu_uuid,
        "used_memory_bytes": p.used_memory_bytes,
        "uid": p.uid,
        "user": p.user,
        "cmdline": p.cmdline[:200],
        "cgroup": p.cgroup,
        "cgroup_scope": p.cgroup_scope.value,
        "container_id": p.container_id,
        "sightings": s.sightings if s is not None else 0,
        "first_seen_at": iso(s.first_seen_at) if s is not None else None,
    }


def gpu_processes(ctx: PassContext, out: Collector) -> ProcessOutcome:
    """Rule 6 over every GPU process of the snapshot, then the dirty GPUs."""
    prev_sightings, prev_marks = ctx.memory.processes, ctx.memory.dirty_gpus
    if _domains_down(ctx, out):
        # Unavailable is not empty: sightings and marks are kept as they were, not counted, not reset.
        return ProcessOutcome(dict(prev_sightings), dict(prev_marks))
    sightings = _Sightings(prev_sightings, ctx.snapshot.observed_at)
    views: dict[str, _GpuView] = {}
    by_id = ctx.by_id
    for p in _in_order(ctx.snapshot.processes):
        if p.state == _VANISHED:
            continue  # exited between NVML's list and /proc: nothing to do
        view = views.get(p.gpu_uuid)
        if view is None:
            view = views[p.gpu_uuid] = _GpuView()
        # Most processes are a live container's, on a device its references allow: _one_process's
        # path for them (not a system process, a container id listed by id, a live state), then
        # _check_foreign's first test (c.may_use_device), without the two calls. Every other process
        # takes that path.
        cid = p.container_id
        if not p.is_system and cid is not None:
            c = by_id.get(cid)
            if c is not None and c.state in LIVE_STATES and c.may_use_device(p.device_uuid):
                view.others.append(p)
                continue
        _one_process(ctx, out, p, view, sightings)
    marks = _dirty_gpus(ctx, out, views, prev_marks)
    return ProcessOutcome(by_key(sightings.seen), marks)


_VANISHED = ProcessState.VANISHED  # (read once: an enum member read from its class costs a lookup)
_GPU_PID = attrgetter("gpu_uuid", "pid")


def _in_order(processes: tuple[GpuProcessObs, ...]) -> list[GpuProcessObs]:
    """The processes by GPU, pid, start time, device and container id (two processes rarely share
    their GPU and pid: a pid listed on two devices of one GPU, or reused within one observation)."""
    return sorted_by_head(processes, _GPU_PID, _full_order)[0]


def _full_order(p: GpuProcessObs) -> tuple[str, int, float, str, str]:
    return (p.gpu_uuid, p.pid, p.start_time or -1.0, p.device_uuid, p.container_id or "")


def _domains_down(ctx: PassContext, out: Collector) -> bool:
    """NVML, procfs and Docker are all needed: with any of them down nothing is killed or reset."""
    down = [
        d
        for d, ok in (
            (Domain.NVML, ctx.nvml_ok),
            (Domain.PROCFS, ctx.procfs_ok),
            (Domain.DOCKER, ctx.docker_ok),
        )
        if not ok
    ]
    if not down:
        return False
    names = ", ".join(d.value for d in down)
    errors = {d.value: ctx.snapshot.domain_error(d) for d in down}
    for rule in (Reason.ORPHANED_PROCESS, Reason.GPU_DIRTY):
        out.defer(
            host_target(),
            rule,
            DeferReason.DOMAIN_UNAVAILABLE,
            f"{names} unavailable: no GPU process is killed and no GPU is reset",
            evidence={"domains": errors},
        )
    return True


class _Sightings:
    """This pass's sightings, counted from the previous pass's (one per process per pass)."""

    def __init__(self, prev: Mapping[str, ProcessSighting], seen_at: datetime) -> None:
        self.prev = prev
        self.seen_at = seen_at
        self.seen: dict[str, ProcessSighting] = {}

    def sight(self, p: GpuProcessObs) -> ProcessSighting:
        key = sighting_key(p)
        current = self.seen.get(key)
        if current is not None:
            return current  # listed on several GPUs: one sighting per pass
        old = self.prev.get(key)
        seen_at = self.seen_at
        if old is None:
            new = ProcessSighting(
                pid=p.pid,
                start_time=p.start_time,
                first_seen_at=seen_at,
                last_seen_at=seen_at,
                sightings=1,
                reported=False,
            )
        elif seen_at > old.last_seen_at:
            new = old.model_copy(update={"sightings": old.sightings + 1, "last_seen_at": seen_at})
        else:
            new = old  # the same observation planned again
        self.seen[key] = new
        return new


def _one_process(
    ctx: PassContext, out: Collector, p: GpuProcessObs, view: _GpuView, sightings: _Sightings
) -> None:
    """Who the process is (see the module docstring); only an orphan goes on to the kill checks."""
    if p.is_system:
        view.others.append(p)
        return
    if p.container_id is None:
        view.others.append(p)
        if p.cgroup_scope is CgroupScope.FOREIGN:
            _report_foreign(ctx, out, p, sightings.sight(p))
        else:
            out.defer(
                _process_target(p, None),
                Reason.HOST_GPU_PROCESS,
                DeferReason.PROTECTED,
                f"host GPU process {p.pid} ({p.user or p.uid}) on {p.device_uuid}: reported, never killed "
                f"(host_gpu_processes: {ctx.glob.host_gpu_processes.value.value})",
                evidence=_process_evidence(p, sightings.sight(p)),
            )
        return
    c = ctx.by_id.get(p.container_id) or ctx.find_container(p.container_id)
    if c is None and (p.container_exists or ctx.prefix_ambiguous(p.container_id)):
        view.others.append(p)
        out.defer(
            _process_target(p, None),
            Reason.ORPHANED_PROCESS,
            DeferReason.UNKNOWN_SIGNAL,
            f"pid {p.pid}: its container {p.container_id[:12]} exists according to /proc but is not "
            "in this snapshot",
            evidence=_process_evidence(p, None),
        )
        return
    if c is not None and c.state in LIVE_STATES:
        view.others.append(p)
        _check_foreign(ctx, out, p, c)
        return
    if p.cgroup_scope is not CgroupScope.ENGINE:
        # Not this engine's cgroup: that this engine does not list the id (or lists it as not
        # live) says nothing about the workload. Rootless Docker, the kubelet, containerd...
        view.others.append(p)
        _report_foreign(ctx, out, p, sightings.sight(p))
        return
    # The cgroup names a container that is gone or not live: an orphan candidate.
    view.orphans.append(p)
    _orphan(ctx, out, p, c, sightings.sight(p), view)


def _orphan(
    ctx: PassContext,
    out: Collector,
    p: GpuProcessObs,
    c: ContainerObs | None,
    s: ProcessSighting,
    view: _GpuView,
) -> None:
    """An orphan is killed once its identity is certain and it was seen often enough."""
    evidence = _process_evidence(p, s)
    evidence["container_state"] = c.state.value if c is not None else "missing"
    target = _process_target(p, c)
    owner = (
        f"container {c.name} ({c.state.value})"
        if c is not None
        else f"removed container {(p.container_id or '')[:12]}"
    )
    check = _start_time_unknown(p, target, evidence) or _too_few_sightings(ctx, p, s, owner, target, evidence)
    if out.stopped(check):
        return
    view.killable.append(p)
    out.act(
        ActionKind.KILL_PROCESS,
        target,
        Reason.ORPHANED_PROCESS,
        f"kill orphaned GPU process {p.pid} ({p.cmdline[:60] or '?'}) of {owner} on {p.device_uuid}, "
        f"using {fmt_bytes(p.used_memory_bytes)}",
        due_at=s.first_seen_at,
        key=f"KillProcess:{p.pid}:{p.start_time}:OrphanedProcess",
        evidence=evidence,
        params=KillParams(grace_s=ctx.glob.kill_grace_s.value),
    )


def _start_time_unknown(p: GpuProcessObs, target: Target, evidence: dict[str, object]) -> Check:
    if p.start_time is not None:
        return GO_ON
    return deferral(
        target,
        Reason.ORPHANED_PROCESS,
        DeferReason.UNKNOWN_SIGNAL,
        f"pid {p.pid} looks orphaned but its start time is unknown (PID reuse cannot be ruled out)",
        evidence=evidence,
    )


def _too_few_sightings(
    ctx: PassContext,
    p: GpuProcessObs,
    s: ProcessSighting,
    owner: str,
    target: Target,
    evidence: dict[str, object],
) -> Check:
    required = ctx.glob.orphan_sightings_required.value
    if s.sightings >= required:
        return GO_ON
    return deferral(
        target,
        Reason.ORPHANED_PROCESS,
        DeferReason.NEEDS_SECOND_SIGHTING,
        f"pid {p.pid} of {owner} on {p.device_uuid}: seen {s.sightings}/{required} passes",
        evidence=evidence,
    )


def _report_foreign(ctx: PassContext, out: Collector, p: GpuProcessObs, s: ProcessSighting) -> None:
    evidence = _process_evidence(p, s)
    named = f" (id {p.container_id[:12]}, not running in this engine)" if p.container_id else ""
    if p.live_shim:
        # This engine's cgroup form, but a live shim runs the container: another engine's.
        why, defer = (
            "is in a container this engine does not list, run by a live containerd shim",
            DeferReason.PROTECTED,
        )
        named = f" (id {(p.container_id or '')[:12]}; shim {p.live_shim[:120]}: another Docker engine's?)"
        evidence["live_shim"] = p.live_shim
    elif p.cgroup_scope is CgroupScope.FOREIGN:
        why, defer = "is in another runtime's cgroup, not this engine's", DeferReason.PROTECTED
    else:
        why, defer = "is in a cgroup that could not be attributed", DeferReason.UNKNOWN_SIGNAL
    out.defer(
        _process_target(p, None),
        Reason.FOREIGN_GPU_WORKLOAD,
        defer,
        f"GPU process {p.pid} ({p.user or p.uid}) on {p.device_uuid} {why}: {p.cgroup or '?'}{named}; "
        "reported, never killed",
        evidence=evidence,
    )


def _check_foreign(ctx: PassContext, out: Collector, p: GpuProcessObs, c: ContainerObs) -> None:
    # Every GPU, a reference that did not resolve (not provably foreign), the very device the
    # process is on, or a device of a GPU the container references.
    if c.may_use_device(p.device_uuid) or p.gpu_uuid in ctx.physical_gpus(c):
        return
    out.act(
        ActionKind.ALERT_ADMIN,
        _process_target(p, c),
        Reason.FOREIGN_PROCESS_ON_GPU,
        f"pid {p.pid} of running container {c.name} (owner {c.owner}) uses GPU {p.device_uuid}, "
        f"which the container does not hold",
        due_at=ctx.now,
        key=f"AlertAdmin:ForeignProcessOnGpu:{p.pid}:{p.start_time}:{p.device_uuid}",
        evidence={**_process_evidence(p, None), "container_gpus": list(c.gpu_uuids)},
    )


def _listed_anything(g: GpuObs, view: _GpuView | None) -> bool:
    if view is not None and (view.orphans or view.others):
        return True
    return bool(g.processes) or any(m.processes for m in g.mig_devices)


def _dirty_gpus(
    ctx: PassContext, out: Collector, views: dict[str, _GpuView], prev: dict[str, GpuMark]
) -> dict[str, GpuMark]:
    """Each GPU's dirty mark after this pass; resets and alerts for the marks that are due."""
    marks: dict[str, GpuMark] = {}
    for g in ctx.gpus:
        mark = _gpu_mark(ctx, out, _GpuFacts.of(ctx, g, views.get(g.uuid)), prev.get(g.uuid))
        if mark is not None:
            marks[g.uuid] = mark
    return by_key(marks)


@dataclass(slots=True)
class _GpuFacts:
    """What one pass knows about a physical GPU's cleanliness."""

    gpu: GpuObs
    view: _GpuView | None
    unlisted: str | None  # why its process list is unknown
    threshold: int
    stale: bool  # memory in use with no process listed and no live holder
    target: Target
    evidence: dict[str, object]

    @classmethod
    def of(cls, ctx: PassContext, g: GpuObs, view: _GpuView | None) -> _GpuFacts:
        unlisted = processes_unknown(g)
        threshold = stale_memory_threshold_bytes(g)
        stale = (
            unlisted is None
            and not _listed_anything(g, view)
            and not _live_holders(ctx, g)
            and g.memory_used_bytes is not None
            and g.memory_used_bytes >= threshold
        )
        evidence: dict[str, object] = {
            "gpu_index": g.index,
            "memory_used_bytes": g.memory_used_bytes,
            "memory_reserved_bytes": g.memory_reserved_bytes,
            "memory_used_includes_reserved": g.memory_used_includes_reserved,
            "mig_enabled": g.mig_enabled,
            "stale_memory_threshold_bytes": threshold,
        }
        return cls(g, view, unlisted, threshold, stale, host_target(gpu=g.uuid), evidence)


def _live_holders(ctx: PassContext, g: GpuObs) -> list[ContainerObs]:
    # Asked only of a GPU with no process listed, or one to be reset: most GPUs never need it.
    return [c for c in ctx.holders.get(g.uuid, []) if c.state in LIVE_STATES]


def _gpu_mark(ctx: PassContext, out: Collector, f: _GpuFacts, mark: GpuMark | None) -> GpuMark | None:
    """The GPU's mark after this pass (None: clean, or the mark is dropped)."""
    if f.view is not None and f.view.orphans:
        return _orphans_on_gpu(ctx, out, f, f.view, mark)
    if f.unlisted is not None:
        return _processes_unlisted(out, f, mark)
    if mark is None:
        return _first_mark(ctx, out, f)
    if mark.cause == GpuMarkCause.STALE_MEMORY and not f.stale:
        return None  # transient reading: the mark is dropped
    if mark.since >= ctx.snapshot.observed_at:
        return mark  # marked by this very observation (planned again): wait
    since = iso(mark.since)
    reset_done = f"ResetGpu:{f.gpu.uuid}:{since}:GpuDirty" in ctx.memory.done
    alert_done = f"AlertAdmin:GpuDirty:{f.gpu.uuid}:{since}" in ctx.memory.done
    if not f.stale and (reset_done or alert_done):
        return None  # clean again and the decision was carried out: forget the mark
    _reset_or_alert(ctx, out, f, mark, reset_done=reset_done, alert_done=alert_done)
    return mark


def _orphans_on_gpu(
    ctx: PassContext, out: Collector, f: _GpuFacts, view: _GpuView, mark: GpuMark | None
) -> GpuMark | None:
    """Orphans are being killed: reset or alert is decided in a later pass, once they have exited."""
    if mark is None and view.killable:
        mark = GpuMark(since=ctx.snapshot.observed_at, cause=GpuMarkCause.ORPHANS)
    if mark is not None:
        g = f.gpu
        out.defer(
            f.target,
            Reason.GPU_DIRTY,
            DeferReason.NOT_DUE,
            f"GPU {g.index} ({g.uuid}) has orphaned processes; reset or alert is decided after "
            "they have exited",
            evidence={**f.evidence, "orphan_pids": sorted({p.pid for p in view.orphans})},
        )
    return mark


def _processes_unlisted(out: Collector, f: _GpuFacts, mark: GpuMark | None) -> GpuMark | None:
    """Unknown is not clean, and not "no process": the mark is kept as it was, nothing is decided."""
    g = f.gpu
    f.evidence["processes_unknown"] = f.unlisted
    if mark is not None or (g.memory_used_bytes or 0) >= f.threshold:
        out.defer(
            f.target,
            Reason.GPU_DIRTY,
            DeferReason.UNKNOWN_SIGNAL,
            f"GPU {g.index} ({g.uuid}): its process list could not be read ({f.unlisted}); "
            "it is not marked dirty, reset or alerted on until NVML lists its processes",
            evidence=f.evidence,
        )
    return mark


def _first_mark(ctx: PassContext, out: Collector, f: _GpuFacts) -> GpuMark | None:
    """Stale memory is marked, and confirmed in the next pass (a process may start between reads)."""
    if not f.stale:
        return None
    g = f.gpu
    out.defer(
        f.target,
        Reason.GPU_DIRTY,
        DeferReason.NEEDS_SECOND_SIGHTING,
        f"GPU {g.index} ({g.uuid}) has {fmt_bytes(g.memory_used_bytes)} in use and no process; "
        "confirmed next pass",
        evidence=f.evidence,
    )
    return GpuMark(since=ctx.snapshot.observed_at, cause=GpuMarkCause.STALE_MEMORY)


def _reset_blockers(ctx: PassContext, f: _GpuFacts, *, reset_done: bool) -> list[str]:
    """Why a reset is not safe now (empty: it is)."""
    policy = ctx.glob.gpu_reset_policy.value
    blockers: list[str] = []
    if policy != GpuResetPolicy.WHEN_EXCLUSIVE:
        blockers.append(f"gpu_reset_policy is {policy.value}")
    if f.gpu.mig_enabled:
        blockers.append("MIG is enabled (a reset would destroy every instance)")
    others = f.view.others if f.view is not None else []
    if others:
        blockers.append("other processes on it: " + ", ".join(str(p.pid) for p in others))
    live_holders = _live_holders(ctx, f.gpu)
    if live_holders:
        blockers.append("held by live containers: " + ", ".join(sorted(c.name for c in live_holders)))
    unresolved = ctx.unresolved_live_names()
    if unresolved:
        blockers.append("live containers whose GPU references cannot be resolved: " + ", ".join(unresolved))
    if reset_done:
        blockers.append("a reset was already performed and it is still dirty")
    return blockers


def _reset_or_alert(
    ctx: PassContext, out: Collector, f: _GpuFacts, mark: GpuMark, *, reset_done: bool, alert_done: bool
) -> None:
    """A due mark: reset when that is safe, else tell an admin once, else say it is still dirty."""
    g, since = f.gpu, iso(mark.since)
    blockers = _reset_blockers(ctx, f, reset_done=reset_done)
    evidence = {**f.evidence, "dirty_since": since, "cause": mark.cause.value, "blockers": blockers}
    if not blockers:
        out.act(
            ActionKind.RESET_GPU,
            f.target,
            Reason.GPU_DIRTY,
            f"reset GPU {g.index} ({g.uuid}): dirty since {since} ({mark.cause.value}), no process, no "
            f"live holder, MIG off",
            due_at=mark.since,
            key=f"ResetGpu:{g.uuid}:{since}:GpuDirty",
            evidence=evidence,
            params=ResetParams(command=tuple(ctx.glob.gpu_reset_command.value)),
        )
        return
    # Proposed while the GPU stays dirty: the gates send it once (memory.done) and list it as
    # delivered after that, so it stays an open alert until the GPU is clean.
    out.act(
        ActionKind.ALERT_ADMIN,
        f.target,
        Reason.GPU_DIRTY,
        f"GPU {g.index} ({g.uuid}) is dirty ({mark.cause.value}) but is not reset: {'; '.join(blockers)}",
        due_at=mark.since,
        key=f"AlertAdmin:GpuDirty:{g.uuid}:{since}",
        evidence=evidence,
    )
    if alert_done:
        out.defer(
            f.target,
            Reason.GPU_DIRTY,
            DeferReason.RESET_NOT_ALLOWED,
            f"GPU {g.index} ({g.uuid}) is still dirty; an admin was told ({'; '.join(blockers)})",
            evidence=evidence,
        )
