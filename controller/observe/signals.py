"""Activity signals of one running container, read from cgroups and procfs (no docker stats/exec).

Owns the raw counters the idle evaluation compares between two snapshots:

* **CPU**: the container's cgroup, found from ``/proc/<main pid>/cgroup``: cgroup v1
  ``cpuacct.usage`` (ns) under the hierarchy that carries ``cpuacct``, else cgroup v2 ``cpu.stat``
  ``usage_usec``. If neither can be read, the sum of user+system time of the main process and its
  descendants via psutil (``SignalSource.PROCESS_TREE``; not monotonic when children exit, and
  blind to what ``docker exec`` runs: the planner takes it as activity, never as idleness).
* **network**: rx+tx bytes of every interface but ``lo`` in ``/proc/<main pid>/net/dev`` (the
  container's network namespace). A container on the host network has no counters of its own, so
  its network signal is unknown rather than the host's traffic.
* **processes**: the lines of ``cgroup.procs`` in the ``pids`` (else ``cpuacct``, else unified)
  cgroup; fallback: psutil's descendants of the main process plus one.
* **memory and tasks** (for the resource limits, not the idle verdict):
  :func:`controller.observe.resources.read_usage`.
* **GPU utilization**: per resolved device UUID, from the NVML observation of this pass (MIG
  devices have no utilization counter, so they are unknown with NVML's reason).
* **keep-alive**: :mod:`controller.observe.keepalive` (no link followed, nothing read).

Every signal can be ``None`` with a reason; nothing unknown is reported as zero. Called by
:mod:`controller.observe.host` with a :class:`~controller.observe.procfs.ProcHandle` already checked
to be the container's main process. Reads only; never writes a cgroup file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from controller.observe.cgroups import (
    CgroupLine,
    container_lines,
    controller_path,
    parse_cgroup,
    unified_path,
)
from controller.observe.keepalive import read_keepalive
from controller.observe.procfs import ProcessGone, ProcHandle
from controller.observe.resources import read_usage
from controller.snapshot import (
    ActivitySignals,
    GpuObs,
    GpuUtilReading,
    GpuUuid,
    KeepAlive,
    KeepAliveState,
    SignalSource,
)

HOST_NETWORK_MODE = "host"
REASON_MIG_UTIL = "NVML reports no utilization for a MIG device"


@dataclass(frozen=True, slots=True)
class SignalConfig:
    cgroup_root: Path
    proc_root: Path
    keepalive_path: str
    use_openat2: bool | None = None


def read_signals(
    handle: ProcHandle,
    cgroup_text: str,
    config: SignalConfig,
    *,
    network_mode: str,
    gpu_util: tuple[GpuUtilReading, ...],
    now: datetime | None = None,
    container_id: str | None = None,
    keepalive: KeepAlive | None = None,
) -> ActivitySignals:
    """Read every signal of one running container whose main process ``handle`` is open.

    With ``container_id``, the cgroup files read are the container's own cgroup's, even when the
    main process sits in a child of it (:func:`controller.observe.cgroups.container_lines`). With
    ``keepalive``, that value is taken instead of reading the file (the observer reads them all
    later, with a deadline: :mod:`controller.observe.keepalive_reads`)."""
    lines = parse_cgroup(cgroup_text)
    if container_id is not None:
        lines = container_lines(lines, container_id)
    cpu_ns, cpu_source, cpu_unknown = _cpu(lines, config, handle.pid)
    count, count_source, count_unknown = _process_count(lines, config, handle.pid)
    net_bytes, net_unknown = _network(handle, network_mode)
    usage = read_usage(lines, config.cgroup_root)
    if keepalive is None:
        try:
            keepalive = read_keepalive(handle.fd, config.keepalive_path, use_openat2=config.use_openat2)
        except ProcessGone as exc:
            keepalive = KeepAlive(state=KeepAliveState.UNKNOWN, detail=str(exc))
    return ActivitySignals(
        read_at=now or datetime.now(UTC),
        cpu_usage_ns=cpu_ns,
        cpu_unknown=cpu_unknown,
        cpu_source=cpu_source,
        net_bytes=net_bytes,
        net_unknown=net_unknown,
        process_count=count,
        process_unknown=count_unknown,
        process_source=count_source,
        gpu_util=gpu_util,
        keepalive=keepalive,
        memory_bytes=usage.memory_bytes,
        memory_peak_bytes=usage.memory_peak_bytes,
        memory_unknown=usage.memory_unknown,
        memory_swap_bytes=usage.memory_swap_bytes,
        memory_swap_unknown=usage.memory_swap_unknown,
        memory_swap_peak_bytes=usage.memory_swap_peak_bytes,
        pids_current=usage.pids_current,
        pids_peak=usage.pids_peak,
        pids_unknown=usage.pids_unknown,
    )


def unknown_signals(reason: str, now: datetime | None = None) -> ActivitySignals:
    """Signals of a running container whose main process could not be opened."""
    return ActivitySignals(
        read_at=now or datetime.now(UTC),
        cpu_unknown=reason,
        net_unknown=reason,
        process_unknown=reason,
        keepalive=KeepAlive(state=KeepAliveState.UNKNOWN, detail=reason),
        memory_unknown=reason,
        pids_unknown=reason,
    )


def gpu_util_readings(
    uuids: Sequence[GpuUuid], gpus: Sequence[GpuObs] | None, nvml_error: str | None
) -> tuple[GpuUtilReading, ...]:
    """Utilization of each device; ``gpus=None`` when NVML is unavailable."""
    out: list[GpuUtilReading] = []
    for uuid in uuids:
        if gpus is None:
            out.append(GpuUtilReading(uuid=uuid, unknown_reason=f"NVML unavailable: {nvml_error}"))
            continue
        out.append(_reading(uuid, gpus))
    return tuple(out)


def _reading(uuid: GpuUuid, gpus: Sequence[GpuObs]) -> GpuUtilReading:
    for gpu in gpus:
        if gpu.uuid == uuid:
            if gpu.utilization_percent is not None:
                return GpuUtilReading(uuid=uuid, percent=gpu.utilization_percent)
            return GpuUtilReading(uuid=uuid, unknown_reason=gpu.utilization_unknown or "not reported by NVML")
        if any(m.uuid == uuid for m in gpu.mig_devices):
            return GpuUtilReading(uuid=uuid, unknown_reason=gpu.utilization_unknown or REASON_MIG_UTIL)
    return GpuUtilReading(uuid=uuid, unknown_reason="no such device on this host")


def parse_net_dev(text: str) -> int | None:
    """rx+tx bytes over every interface but ``lo``; None when the text has no interface lines."""
    total = 0
    seen = False
    for line in text.splitlines()[2:]:
        name, sep, counters = line.partition(":")
        if not sep:
            continue
        fields = counters.split()
        if len(fields) < 9 or not (fields[0].isdigit() and fields[8].isdigit()):
            continue
        seen = True
        if name.strip() == "lo":
            continue
        total += int(fields[0]) + int(fields[8])
    return total if seen else None


def parse_cpu_stat_usage_ns(text: str) -> int | None:
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "usage_usec" and fields[1].isdigit():
            return int(fields[1]) * 1000
    return None


def _cgroup_dirs(config: SignalConfig, line: CgroupLine, controller: str) -> list[Path]:
    relative = _relative(line.path)
    if relative is None:
        return []
    # v1 hierarchies are mounted as "cpu,cpuacct" on many distributions, as "cpuacct" on others.
    names = [",".join(line.controllers), controller]
    return [config.cgroup_root / name / relative for name in dict.fromkeys(names)]


def _unified_dirs(config: SignalConfig, path: str) -> list[Path]:
    relative = _relative(path)
    if relative is None:
        return []
    # A pure v2 host mounts the unified tree at the root; a hybrid one at "unified".
    return [config.cgroup_root / relative, config.cgroup_root / "unified" / relative]


def _relative(path: str) -> Path | None:
    parts = [p for p in path.split("/") if p]
    # Paths come from the kernel, but a cgroup namespace can show "/.."; never leave the root.
    if any(p in {".", ".."} for p in parts):
        return None
    return Path(*parts) if parts else Path()


def _cpu(
    lines: Sequence[CgroupLine], config: SignalConfig, pid: int
) -> tuple[int | None, SignalSource | None, str | None]:
    tried: list[str] = []
    found = controller_path(lines, "cpuacct")
    if found is not None:
        for directory in _cgroup_dirs(config, found[0], "cpuacct"):
            value = _read_int(directory / "cpuacct.usage")
            if value is not None:
                return value, SignalSource.CGROUP, None
            tried.append(str(directory / "cpuacct.usage"))
    path = unified_path(lines)
    if path is not None:
        for directory in _unified_dirs(config, path):
            text = _read_small(directory / "cpu.stat")
            usage = parse_cpu_stat_usage_ns(text) if text is not None else None
            if usage is not None:
                return usage, SignalSource.CGROUP, None
            tried.append(str(directory / "cpu.stat"))
    tree = _process_tree_cpu_ns(config, pid)
    if tree is not None:
        return tree, SignalSource.PROCESS_TREE, None
    return None, None, "no cgroup CPU counter readable (" + ", ".join(tried or ["no cgroup"]) + ")"


def _process_count(
    lines: Sequence[CgroupLine], config: SignalConfig, pid: int
) -> tuple[int | None, SignalSource | None, str | None]:
    candidates: list[Path] = []
    for controller in ("pids", "cpuacct"):
        found = controller_path(lines, controller)
        if found is not None:
            candidates.extend(d / "cgroup.procs" for d in _cgroup_dirs(config, found[0], controller))
    path = unified_path(lines)
    if path is not None:
        candidates.extend(d / "cgroup.procs" for d in _unified_dirs(config, path))
    for candidate in candidates:
        text = _read_small(candidate)
        if text is not None:
            count = _count_pids(text)
            if count == 0:
                # cgroup.procs lists the cgroup's own members only: every process may sit in its
                # children (docker:dind's init, systemd's init.scope).
                count = _subtree_count(candidate.parent)
            if count > 0:
                return count, SignalSource.CGROUP, None
    if _is_real_proc(config):
        try:
            return len(psutil.Process(pid).children(recursive=True)) + 1, SignalSource.PROCESS_TREE, None
        except psutil.Error as exc:
            return None, None, f"no cgroup.procs readable and psutil failed: {exc}"
    return None, None, "no cgroup.procs readable"


def _count_pids(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())


_SUBTREE_MAX_DIRS = 1000


def _subtree_count(directory: Path) -> int:
    """The processes in the cgroups below ``directory`` (at most the first 1,000 of them: a nested
    engine's containers; 0 when none can be read)."""
    count, seen = 0, 0
    for parent, dirs, _files in os.walk(directory):
        if parent != str(directory):
            text = _read_small(Path(parent) / "cgroup.procs")
            count += _count_pids(text) if text is not None else 0
        seen += len(dirs)
        if seen > _SUBTREE_MAX_DIRS:
            break
    return count


def _network(handle: ProcHandle, network_mode: str) -> tuple[int | None, str | None]:
    if network_mode == HOST_NETWORK_MODE:
        return None, "the container uses the host network; its traffic cannot be told apart"
    try:
        total = parse_net_dev(handle.read_text("net/dev"))
    except ProcessGone as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot read net/dev: {exc}"
    if total is None:
        return None, "net/dev has no interface lines"
    return total, None


def _process_tree_cpu_ns(config: SignalConfig, pid: int) -> int | None:
    # psutil always reads the real /proc; against any other proc root its answer would be wrong.
    if not _is_real_proc(config):
        return None
    try:
        root = psutil.Process(pid)
        total_s = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total_s += times.user + times.system
    except psutil.Error:
        return None
    return int(total_s * 1e9)


def _is_real_proc(config: SignalConfig) -> bool:
    return config.proc_root == Path("/proc")


def _read_small(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            return f.read(1 << 20).decode("ascii", errors="replace")
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read_small(path)
    if text is None:
        return None
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() else None
