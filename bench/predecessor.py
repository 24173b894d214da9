"""The predecessor's way of collecting the same signals, for a side-by-side figure.

DS01's shell scripts read each running container's activity with one ``docker stats --no-stream``
(CPU %, network I/O) and its configuration with one ``docker inspect``, a subprocess each, one
container after the other. This module reproduces exactly that, and nothing more (the real scripts
made more calls per container, so this is a lower bound on their cost).
"""

from __future__ import annotations

import resource
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from bench.stats import summarize

STATS_FORMAT = "{{.CPUPerc}} {{.NetIO}}"


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def collect_one(name: str) -> None:
    """One container's signals the predecessor's way; raises if either command fails."""
    subprocess.run(
        ["docker", "stats", "--no-stream", "--format", STATS_FORMAT, name],
        check=True,
        capture_output=True,
        text=True,
    )
    subprocess.run(["docker", "inspect", name], check=True, capture_output=True, text=True)


def measure(names: Sequence[str], host_running: int) -> dict[str, Any]:
    """Time ``collect_one`` for each of ``names`` sequentially and extrapolate to ``host_running``
    running containers (the method is strictly sequential, so its cost is linear in the count)."""
    per_container_s: list[float] = []
    cpu_before = _children_cpu_s()
    wall_started = time.monotonic()
    for name in names:
        t0 = time.monotonic()
        collect_one(name)
        per_container_s.append(time.monotonic() - t0)
    wall_s = time.monotonic() - wall_started
    children_cpu_s = _children_cpu_s() - cpu_before
    mean_s = wall_s / len(names)
    measured_all = len(names) >= host_running
    return {
        "method": "per running container: docker stats --no-stream + docker inspect, sequential",
        "containers_measured": len(names),
        "host_running_containers": host_running,
        "extrapolated": not measured_all,
        "per_container_s": summarize(per_container_s),
        "measured_wall_s": wall_s,
        "pass_wall_s": wall_s if measured_all else mean_s * host_running,
        "pass_cpu_s_children": children_cpu_s * (1 if measured_all else host_running / len(names)),
        "subprocesses_per_pass": 2 * host_running,
    }
