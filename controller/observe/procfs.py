"""Read processes from procfs and attribute NVML's GPU processes to containers.

Owns:

* :class:`ProcHandle`: a directory fd of ``/proc/<pid>``. Every read for one process goes through
  that fd, so a PID that is reused while we read cannot mix two processes' files (reads of a dead
  process fail with ESRCH/ENOENT, which become :class:`ProcessGone`).
* :class:`ProcReader`: per-pass reading of uid, user, command line and start time. The start time
  uses psutil's formula (``starttime / CLK_TCK + btime``) on the same files, so it equals
  ``psutil.Process(pid).create_time()`` and the executor can compare the two to guard against PID
  reuse. Everything is read below a configurable ``proc_root`` (default ``/proc``) so parsing is
  testable against a fake tree.
* :func:`attribute_gpu_processes`: one :class:`GpuProcessObs` per (PID, device) NVML listed. A PID
  that disappeared between NVML and ``/proc`` is ``VANISHED``, not an error. A process in no
  container whose program name matches ``system_process_names`` (fnmatch patterns, matched against
  the basename of argv[0] and against ``comm``) is a system process; a process inside a container is
  never a system process, whatever it calls itself. Each process carries its cgroup scope (this
  engine's, foreign, host); see :mod:`controller.observe.cgroups`. A process in this engine's cgroup
  form whose container this engine does not list, but whose ancestors include a root-owned
  containerd shim running that id, is a live container of another rootful engine on this host:
  FOREIGN, with the shim named in ``live_shim`` (:meth:`ProcReader.live_shim`).

``container_exists`` is only meaningful when the DOCKER domain is ok; the caller reports both.
Called by :mod:`controller.observe.host`. Must not kill, signal or write anything.
"""

from __future__ import annotations

import fnmatch
import os
import pwd
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from controller.observe.cgroups import DEFAULT_ENGINE_PARENTS, attribute, shim_runs
from controller.snapshot import (
    CgroupScope,
    ContainerId,
    GpuObs,
    GpuProcessObs,
    GpuUuid,
    NvmlProcess,
    ProcessState,
)

# Evidence only: long command lines are cut (a 2 MiB argv is legal).
MAX_CMDLINE_CHARS = 4096
_READ_LIMIT_BYTES = 1 << 20
_COMM_CHARS = 15  # the kernel truncates comm to 15 characters
# How far up a process's ancestry a containerd shim is looked for (a container's processes sit a few
# levels below theirs; the walk also ends at PID 1, at a PID seen twice, or at an exited ancestor).
MAX_ANCESTRY = 64

DEFAULT_SYSTEM_PROCESS_NAMES: tuple[str, ...] = (
    "nvidia-persistenced",
    "nv-hostengine",
    "nvidia-smi",
    "dcgm*",
    "nvidia-dcgm*",
    "Xorg",
    "X",
    "Xwayland",
    "gnome-shell",
)


class ProcessGone(Exception):
    """The process exited (or its PID is no longer the process we opened)."""


class ProcHandle:
    """An open ``/proc/<pid>`` directory; close it (or use ``with``) when done."""

    def __init__(self, proc_root: Path, pid: int) -> None:
        if pid <= 0:
            raise ProcessGone(f"invalid pid {pid}")
        self.pid = pid
        try:
            self.fd = os.open(proc_root / str(pid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError) as exc:
            raise ProcessGone(f"pid {pid}: {exc.strerror}") from exc

    def read_bytes(self, name: str, limit_bytes: int = _READ_LIMIT_BYTES) -> bytes:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=self.fd)
        except (FileNotFoundError, ProcessLookupError) as exc:
            raise ProcessGone(f"pid {self.pid}: {name}: {exc.strerror}") from exc
        try:
            chunks: list[bytes] = []
            remaining = limit_bytes
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 65536))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            return b"".join(chunks)
        except ProcessLookupError as exc:
            raise ProcessGone(f"pid {self.pid}: {name}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8", errors="replace")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ProcHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    uid: int | None
    cmdline: str
    comm: str
    start_time: float | None


def parse_status_uid(text: str) -> int | None:
    """The real uid from ``/proc/<pid>/status``."""
    for line in text.splitlines():
        if line.startswith("Uid:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1])
    return None


def parse_argv(raw: bytes) -> list[str]:
    """NUL-separated argv -> its arguments; undecodable bytes replaced."""
    return [a.decode("utf-8", errors="replace") for a in raw.rstrip(b"\0").split(b"\0")] if raw else []


def parse_cmdline(raw: bytes) -> str:
    """NUL-separated argv -> one line; undecodable bytes replaced, length capped."""
    text = " ".join(parse_argv(raw))
    return text if len(text) <= MAX_CMDLINE_CHARS else text[:MAX_CMDLINE_CHARS] + "…"


def parse_stat_start_ticks(text: str) -> int | None:
    """Field 22 (``starttime``, clock ticks since boot) of ``/proc/<pid>/stat``."""
    # comm (field 2) can contain spaces and parentheses; everything after the last ')' is fixed.
    _, sep, rest = text.rpartition(")")
    if not sep:
        return None
    fields = rest.split()
    # rest starts at field 3 (state), so field 22 is index 19.
    if len(fields) < 20 or not fields[19].isdigit():
        return None
    return int(fields[19])


def parse_stat_ppid(text: str) -> int | None:
    """Field 4 (``ppid``) of ``/proc/<pid>/stat``."""
    _, sep, rest = text.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 2 or not fields[1].isdigit():
        return None
    return int(fields[1])


def parse_boot_time(text: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("btime"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return float(fields[1])
    return None


def parse_uptime(text: str) -> float | None:
    """First field of ``/proc/uptime``: seconds since boot (CLOCK_BOOTTIME, immune to wall-clock steps)."""
    fields = text.split()
    try:
        value = float(fields[0]) if fields else None
    except ValueError:
        return None
    return value if value is not None and value >= 0 else None


def uid_to_name_cached() -> Callable[[int], str | None]:
    """A password-database lookup, cached for one pass (the database can change between passes)."""
    cache: dict[int, str | None] = {}

    def lookup(uid: int) -> str | None:
        if uid not in cache:
            try:
                cache[uid] = pwd.getpwuid(uid).pw_name
            except (KeyError, OverflowError, ValueError):
                cache[uid] = None
        return cache[uid]

    return lookup


class AncestryUnreadable(OSError):
    """An ancestor of a process could not be read for a reason other than having exited."""


def find_live_shim(proc_root: Path, pid: int, container_id: str) -> str:
    """The root-owned containerd shim among ``pid``'s ancestors that runs ``container_id``, as
    ``"pid N: <command line>"``; "" when there is none.

    A shim runs as long as its container does (it exits once the engine deletes the task), so
    one found means the container is live under some engine, whichever one lists it. Only a
    shim run by root, outside every container's cgroup, counts: a user can name a process
    ``containerd-shim`` (and is root inside a container of a rootful engine), and would
    otherwise shield an orphan from its kill. An ancestor that exits meanwhile ends the walk (its
    children are re-parented away from any shim). The observer and the kill's re-check both walk
    here, so they cannot disagree.

    Raises :class:`AncestryUnreadable` when an ancestor cannot be read for another reason: the
    answer is unknown, and no caller kills on a guess.
    """
    seen = {pid}
    current = pid
    for _ in range(MAX_ANCESTRY):
        try:
            with ProcHandle(proc_root, current) as handle:
                ppid = parse_stat_ppid(handle.read_text("stat"))
            if ppid is None or ppid <= 1 or ppid in seen:
                return ""
            seen.add(ppid)
            with ProcHandle(proc_root, ppid) as handle:
                raw = handle.read_bytes("cmdline")
                uid = parse_status_uid(handle.read_text("status"))
                cgroup_text = handle.read_text("cgroup")
        except ProcessGone:
            return ""
        except OSError as exc:
            raise AncestryUnreadable(f"reading its ancestor {current}'s parent: {exc}") from exc
        argv = parse_argv(raw)
        # A container's own root is uid 0 too (no user namespace remapping): a shim counts only
        # outside every container's cgroup, where the engine runs its shims.
        if uid == 0 and shim_runs(argv, container_id) and attribute(cgroup_text).container_id is None:
            return f"pid {ppid}: {parse_cmdline(raw)[:300]}"
        current = ppid
    return ""


class ProcReader:
    """Reads processes below ``proc_root`` for one observation pass."""

    def __init__(
        self,
        proc_root: Path,
        uid_to_name: Callable[[int], str | None],
        system_process_names: Sequence[str] = DEFAULT_SYSTEM_PROCESS_NAMES,
    ) -> None:
        self.proc_root = proc_root
        self.uid_to_name = uid_to_name
        self.system_process_names = tuple(system_process_names)
        self.clock_ticks = os.sysconf("SC_CLK_TCK")
        self.boot_time = self._read_boot_time()

    def _read_boot_time(self) -> float | None:
        try:
            return parse_boot_time((self.proc_root / "stat").read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return None

    def running_for_s(self, handle: ProcHandle) -> float | None:
        """Seconds since the process started, on the boot clock; None when unreadable."""
        ticks = parse_stat_start_ticks(handle.read_text("stat"))
        try:
            uptime = parse_uptime((self.proc_root / "uptime").read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return None
        if ticks is None or uptime is None:
            return None
        return max(0.0, uptime - ticks / self.clock_ticks)

    def health_error(self) -> str | None:
        if self.boot_time is None:
            return f"cannot read the boot time from {self.proc_root / 'stat'}"
        return None

    def info(self, handle: ProcHandle) -> ProcessInfo:
        """uid, command line, comm and start time; raises ProcessGone if the process exited."""
        uid = parse_status_uid(handle.read_text("status"))
        cmdline = parse_cmdline(handle.read_bytes("cmdline"))
        comm = handle.read_text("comm").strip()
        ticks = parse_stat_start_ticks(handle.read_text("stat"))
        start = None
        if ticks is not None and self.boot_time is not None:
            start = ticks / self.clock_ticks + self.boot_time
        return ProcessInfo(uid=uid, cmdline=cmdline, comm=comm, start_time=start)

    def live_shim(self, pid: int, container_id: str, errors: list[str]) -> str:
        """:func:`find_live_shim` below this reader's ``/proc``; an ancestor that cannot be read is
        added to ``errors`` (the caller then marks /proc unavailable: no kill on a guess)."""
        try:
            return find_live_shim(self.proc_root, pid, container_id)
        except AncestryUnreadable as exc:
            errors.append(f"pid {pid}: {exc}")
            return ""

    def is_system(self, info: ProcessInfo) -> bool:
        argv0 = info.cmdline.split(" ", 1)[0] if info.cmdline else ""
        names = {argv0.rsplit("/", 1)[-1]} if argv0 else set()
        for pattern in self.system_process_names:
            if any(fnmatch.fnmatchcase(n, pattern) for n in names):
                return True
            # comm is cut to 15 characters: "nvidia-persistenced" shows as "nvidia-persiste".
            if info.comm and fnmatch.fnmatchcase(info.comm, pattern[:_COMM_CHARS]):
                return True
        return False


@dataclass(frozen=True, slots=True)
class _Listed:
    pid: int
    device_uuid: GpuUuid
    gpu_uuid: GpuUuid
    used_memory_bytes: int | None


def listed_gpu_processes(gpus: Iterable[GpuObs]) -> list[_Listed]:
    out: list[_Listed] = []
    for gpu in gpus:
        out.extend(_listed(gpu.processes, gpu.uuid, gpu.uuid))
        for mig in gpu.mig_devices:
            out.extend(_listed(mig.processes, mig.uuid, gpu.uuid))
    return out


def _listed(procs: Iterable[NvmlProcess], device: GpuUuid, gpu: GpuUuid) -> Iterable[_Listed]:
    return (_Listed(p.pid, device, gpu, p.used_memory_bytes) for p in procs)


@dataclass(frozen=True, slots=True)
class _Read:
    state: ProcessState
    info: ProcessInfo | None
    cgroup_text: str


def attribute_gpu_processes(
    gpus: Sequence[GpuObs],
    existing_containers: Container[str],
    reader: ProcReader,
    engine_parents: Sequence[str] = DEFAULT_ENGINE_PARENTS,
    live_containers: Container[str] = frozenset(),
) -> tuple[tuple[GpuProcessObs, ...], tuple[str, ...]]:
    """Attribute every compute process NVML listed; returns the observations and read errors.

    ``existing_containers`` are the ids this engine lists, ``live_containers`` those of them that
    are live: a cgroup path naming several of them is the live one's (see
    :func:`~controller.observe.cgroups.attribute`).

    Errors are reads that failed for a reason other than the process having exited; the caller
    marks the PROCFS domain unavailable with them, because an unreadable cgroup must not turn a
    container's process into an apparent host process.
    """
    cache: dict[int, _Read] = {}
    shims: dict[int, str] = {}
    errors: list[str] = []
    out: list[GpuProcessObs] = []
    for listed in listed_gpu_processes(gpus):
        read = cache.get(listed.pid)
        if read is None:
            read = _read_process(reader, listed.pid, errors)
            cache[listed.pid] = read
        base = GpuProcessObs(
            pid=listed.pid,
            device_uuid=listed.device_uuid,
            gpu_uuid=listed.gpu_uuid,
            used_memory_bytes=listed.used_memory_bytes,
            state=read.state,
        )
        if read.info is None:
            out.append(base)
            continue
        attribution = attribute(read.cgroup_text, existing_containers, engine_parents, live_containers)
        container_id: ContainerId | None = attribution.container_id
        exists = container_id is not None and container_id in existing_containers
        scope, shim = attribution.scope, ""
        if container_id is not None and scope is CgroupScope.ENGINE and not exists:
            # An orphan candidate: unless a live shim runs its container (another engine's).
            if listed.pid not in shims:
                shims[listed.pid] = reader.live_shim(listed.pid, container_id, errors)
            shim = shims[listed.pid]
            if shim:
                scope = CgroupScope.FOREIGN
        uid = read.info.uid
        out.append(
            base.model_copy(
                update={
                    "start_time": read.info.start_time,
                    "uid": uid,
                    "user": reader.uid_to_name(uid) if uid is not None else None,
                    "cmdline": read.info.cmdline,
                    "cgroup": attribution.cgroup,
                    "container_id": container_id,
                    "container_exists": exists,
                    "cgroup_scope": scope,
                    "live_shim": shim,
                    "is_system": container_id is None and reader.is_system(read.info),
                }
            )
        )
    return tuple(out), tuple(errors)


def _read_process(reader: ProcReader, pid: int, errors: list[str]) -> _Read:
    try:
        with ProcHandle(reader.proc_root, pid) as handle:
            cgroup_text = handle.read_text("cgroup")
            info = reader.info(handle)
    except ProcessGone:
        return _Read(ProcessState.VANISHED, None, "")
    except OSError as exc:
        errors.append(f"pid {pid}: {exc}")
        return _Read(ProcessState.PRESENT, None, "")
    return _Read(ProcessState.PRESENT, info, cgroup_text)
