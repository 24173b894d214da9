"""When the Docker engine and the host last started: what tells an engine restart from a user's stop.

The Docker API reports no start time of the engine (``/info`` has the engine's clock, not its
uptime), so it is read from procfs: the process named by the engine's pidfile (default
``/var/run/docker.pid``), field 22 of ``/proc/<pid>/stat`` (clock ticks since boot) plus the boot
time (``btime`` of ``/proc/stat``), the formula psutil uses. The pid must still be a ``dockerd``
(``comm``): a stale pidfile whose pid was reused by another process gives no time, not a wrong one.

Every failure gives ``None`` (unknown), never an exception; the planner then treats no container as
stopped by a restart. Called by :mod:`controller.observe.host`; reads only.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from controller.observe.procfs import parse_boot_time, parse_stat_start_ticks

DEFAULT_DOCKER_PIDFILE = Path("/var/run/docker.pid")
ENGINE_COMMS = frozenset({"dockerd"})
_PIDFILE_LIMIT = 64


def host_booted_at(proc_root: Path = Path("/proc")) -> datetime | None:
    """The host's boot time (``btime`` of ``/proc/stat``), or None when unreadable."""
    try:
        btime = parse_boot_time((proc_root / "stat").read_text())
    except OSError:
        return None
    return None if btime is None else datetime.fromtimestamp(btime, tz=UTC)


def engine_started_at(pidfile: Path, proc_root: Path = Path("/proc")) -> datetime | None:
    """When the engine whose pidfile this is started, or None when that cannot be known."""
    try:
        with pidfile.open("rb") as f:
            raw = f.read(_PIDFILE_LIMIT).strip()
        pid = int(raw)
        if pid <= 0:
            return None
        proc = proc_root / str(pid)
        comm = (proc / "comm").read_text().strip()
        if comm not in ENGINE_COMMS:
            return None  # a stale pidfile: the pid now belongs to another process
        ticks = parse_stat_start_ticks((proc / "stat").read_text())
        btime = parse_boot_time((proc_root / "stat").read_text())
    except (OSError, ValueError):
        return None
    if ticks is None or btime is None:
        return None
    return datetime.fromtimestamp(btime + ticks / os.sysconf("SC_CLK_TCK"), tz=UTC)
