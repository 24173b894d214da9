"""A container's resource limits (from its inspect) and its resource use (from its cgroup).

Owns two readers, both without ``docker stats`` (which costs a second per container):

* :func:`parse_limits`: ``HostConfig.NanoCpus``, ``CpuQuota``/``CpuPeriod``, ``CpusetCpus``,
  ``Memory``, ``MemorySwap``, ``MemoryReservation``, ``PidsLimit``, ``ShmSize``, ``CgroupParent``
  of the inspect the Docker adapter already caches. Docker's 0 (and -1 for pids) means *no limit*: ``None``.
* :func:`read_usage`: memory use and peak, and the task count, of the container's cgroup, found
  from ``/proc/<main pid>/cgroup``. cgroup v1: ``memory.usage_in_bytes``,
  ``memory.max_usage_in_bytes`` (memory hierarchy), ``pids.current`` (pids hierarchy); cgroup v2:
  ``memory.current``, ``memory.peak`` (kernel 5.19 and later; absent before: the peak is unknown),
  ``pids.current``. The memory figure includes the page cache and tmpfs pages, which is what the
  kernel compares with the limit: a limit set below it makes the kernel reclaim or OOM-kill.
  Memory plus swap (what ``--memory-swap`` limits): v1 ``memory.memsw.usage_in_bytes``, v2
  ``memory.current`` plus ``memory.swap.current``; unknown without swap accounting. Its peak: v1
  ``memory.memsw.max_usage_in_bytes``, v2 ``memory.peak`` plus ``memory.swap.peak`` (kernel 6.5 and
  later; the two peaks summed, at least the total's). The highest task count: ``pids.peak`` (v1 and v2,
  kernel 6.1 and later).

A value that cannot be read stays ``None`` with the reason; nothing unknown becomes zero. Called by
:mod:`controller.observe.docker_adapter` (limits) and :mod:`controller.observe.signals` (usage).
Reads only; never writes a cgroup file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.observe.cgroups import CgroupLine, controller_path, unified_path
from controller.snapshot import ResourceLimits


def _positive(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def parse_limits(host_config: Mapping[str, Any]) -> ResourceLimits:
    """The limits a ``HostConfig`` states; a field missing or of the wrong type is no limit."""
    swap = host_config.get("MemorySwap")
    swap_bytes = -1 if swap == -1 else _positive(swap)
    cpuset = host_config.get("CpusetCpus")
    return ResourceLimits(
        nano_cpus=_positive(host_config.get("NanoCpus")),
        cpu_quota_us=_positive(host_config.get("CpuQuota")),
        cpu_period_us=_positive(host_config.get("CpuPeriod")),
        cpuset_cpus=cpuset if isinstance(cpuset, str) else "",
        memory_bytes=_positive(host_config.get("Memory")),
        memory_swap_bytes=swap_bytes,
        memory_reservation_bytes=_positive(host_config.get("MemoryReservation")),
        pids_limit=_positive(host_config.get("PidsLimit")),
        shm_size_bytes=_positive(host_config.get("ShmSize")),
        cgroup_parent=str(host_config.get("CgroupParent") or ""),
    )


@dataclass(frozen=True, slots=True)
class Usage:
    """Memory and task use of one cgroup; each ``None`` with its reason when unreadable."""

    memory_bytes: int | None
    memory_peak_bytes: int | None
    memory_unknown: str | None
    pids_current: int | None
    pids_unknown: str | None
    memory_swap_bytes: int | None = None
    memory_swap_unknown: str | None = "not read"
    memory_swap_peak_bytes: int | None = None
    pids_peak: int | None = None


def read_usage(lines: Sequence[CgroupLine], cgroup_root: Path) -> Usage:
    """Read the cgroup files of the container whose ``/proc/<pid>/cgroup`` parsed to ``lines``."""
    root = str(cgroup_root)
    memory, peak, memory_unknown, swap, swap_unknown, swap_peak = _memory(lines, root)
    pids, pids_unknown, pids_peak = _pids(lines, root)
    return Usage(memory, peak, memory_unknown, pids, pids_unknown, swap, swap_unknown, swap_peak, pids_peak)


# Paths are built as strings: this runs for every running container on every pass, and pathlib's
# joins cost more than the reads themselves.


def _relative(path: str) -> str | None:
    parts = [p for p in path.split("/") if p]
    if any(p in {".", ".."} for p in parts):
        return None  # a cgroup namespace can show "/..": never leave the root
    return "/".join(parts)


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _candidates(lines: Sequence[CgroupLine], root: str, controller: str) -> list[tuple[str, bool]]:
    """(directory, is_v2) for ``controller``: the v1 hierarchy that carries it, then the unified one."""
    out: list[tuple[str, bool]] = []
    found = controller_path(lines, controller)
    if found is not None:
        relative = _relative(found[0].path)
        if relative is not None:
            names = dict.fromkeys([",".join(found[0].controllers), controller])
            out.extend((_join(root, name, relative), False) for name in names)
    path = unified_path(lines)
    if path is not None:
        relative = _relative(path)
        if relative is not None:
            # A pure v2 host mounts the unified tree at the root; a hybrid one at "unified".
            out.append((_join(root, relative), True))
            out.append((_join(root, "unified", relative), True))
    return out


def _memory(
    lines: Sequence[CgroupLine], root: str
) -> tuple[int | None, int | None, str | None, int | None, str | None, int | None]:
    """(memory use, peak, why unknown, memory plus swap use, why unknown, memory plus swap peak)."""
    tried: list[str] = []
    for directory, v2 in _candidates(lines, root, "memory"):
        current_file, peak_file, swap_file, swap_peak_file = (
            ("memory.current", "memory.peak", "memory.swap.current", "memory.swap.peak")
            if v2
            else (
                "memory.usage_in_bytes",
                "memory.max_usage_in_bytes",
                "memory.memsw.usage_in_bytes",
                "memory.memsw.max_usage_in_bytes",
            )
        )
        current = read_int(f"{directory}/{current_file}")
        if current is None:
            tried.append(f"{directory}/{current_file}")
            continue
        peak = read_int(f"{directory}/{peak_file}")
        swap = read_int(f"{directory}/{swap_file}")
        # v2 counts swap apart from memory; v1's memsw counter is memory plus swap.
        total = None if swap is None else swap + current if v2 else swap
        swap_unknown = (
            None if total is not None else f"{directory}/{swap_file} unreadable (no swap accounting?)"
        )
        total_peak = read_int(f"{directory}/{swap_peak_file}")
        if v2:
            # v2 keeps the two peaks apart (memory.swap.peak: kernel 6.5 and later); they may have
            # come at two times, so their sum is at least the peak of the total, never below it.
            total_peak = None if total_peak is None or peak is None else total_peak + peak
        return current, peak, None, total, swap_unknown, total_peak
    why = "no cgroup memory counter readable (" + ", ".join(tried or ["no cgroup"]) + ")"
    return None, None, why, None, why, None


def _pids(lines: Sequence[CgroupLine], root: str) -> tuple[int | None, str | None, int | None]:
    """(task count, why unknown, highest task count: ``pids.peak``, kernel 6.1 and later)."""
    tried: list[str] = []
    for directory, _ in _candidates(lines, root, "pids"):
        value = read_int(f"{directory}/pids.current")
        if value is not None:
            return value, None, read_int(f"{directory}/pids.peak")
        tried.append(f"{directory}/pids.current")
    return None, "no pids.current readable (" + ", ".join(tried or ["no cgroup"]) + ")", None


def read_int(path: str | Path) -> int | None:
    """A cgroup file holding one integer; None when absent, unreadable or not an integer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # a plain fd: read for every container each pass
    except OSError:
        return None
    try:
        raw = os.read(fd, 64).strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(raw) if raw.isdigit() else None
