"""Parse ``/proc/<pid>/cgroup`` text: hierarchy paths and the container ids they name (pure).

Owns the patterns by which a cgroup path names a container:

* cgroup v1 with the cgroupfs driver: ``/docker/<id>`` (also under a custom parent such as
  ``/ds01.slice/<id>``): a path component that is exactly 64 lower-case hex digits;
* the systemd driver (v1 or v2): ``/system.slice/docker-<id>.scope``, and under a custom parent
  ``/ds01.slice/ds01-student-alice.slice/docker-<id>.scope``;
* containerd's CRI plugin: ``cri-containerd-<id>.scope``.

A path can name several ids (Docker-in-Docker: ``/docker/<outer>/docker/<inner>``). They are all
returned, outermost first; :func:`attribute` prefers one that exists on this host's engine and
otherwise reports the outermost, which is the one the host engine would have created.

The lines of a v1 host can disagree (a process moved in one hierarchy only); the unified (``0::``)
line is tried first, then the v1 lines in file order, and the first line that names an id decides.

Called by :mod:`controller.observe.procfs`. Pure text processing: no file access here; never raises
on malformed text (lines that do not parse are skipped).
"""

from __future__ import annotations

import re
from collections.abc import Container, Sequence
from dataclasses import dataclass

from controller.snapshot import ContainerId

_HEX64 = r"[0-9a-f]{64}"
_COMPONENT_PATTERNS = (
    re.compile(rf"({_HEX64})\Z"),
    re.compile(rf"docker-({_HEX64})\.scope\Z"),
    re.compile(rf"cri-containerd-({_HEX64})\.scope\Z"),
)


@dataclass(frozen=True, slots=True)
class CgroupLine:
    hierarchy_id: int
    controllers: tuple[str, ...]  # empty for the unified (v2) hierarchy; "name=systemd" for named ones
    path: str

    @property
    def is_unified(self) -> bool:
        return self.hierarchy_id == 0 and not self.controllers


@dataclass(frozen=True, slots=True)
class CgroupAttribution:
    container_id: ContainerId | None
    cgroup: str  # the path that decided; "" when no line named a container
    candidates: tuple[ContainerId, ...] = ()


def parse_cgroup(text: str) -> tuple[CgroupLine, ...]:
    """Parse the ``hierarchy-ID:controller-list:path`` lines; malformed lines are skipped."""
    out: list[CgroupLine] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].startswith("/"):
            continue
        controllers = tuple(c for c in parts[1].split(",") if c)
        out.append(CgroupLine(hierarchy_id=int(parts[0]), controllers=controllers, path=parts[2]))
    return tuple(out)


def container_ids_in_path(path: str) -> tuple[ContainerId, ...]:
    """Every container id named by a component of ``path``, outermost first."""
    ids: list[ContainerId] = []
    for component in path.split("/"):
        for pattern in _COMPONENT_PATTERNS:
            match = pattern.match(component)
            if match is not None:
                ids.append(ContainerId(match.group(1)))
                break
    return tuple(ids)


def attribute(text: str, existing: Container[str] = frozenset()) -> CgroupAttribution:
    """The container a process belongs to, from its ``/proc/<pid>/cgroup`` text."""
    for line in _by_priority(parse_cgroup(text)):
        candidates = container_ids_in_path(line.path)
        if not candidates:
            continue
        chosen = next((c for c in candidates if c in existing), candidates[0])
        return CgroupAttribution(container_id=chosen, cgroup=line.path, candidates=candidates)
    return CgroupAttribution(container_id=None, cgroup="")


def controller_path(lines: Sequence[CgroupLine], controller: str) -> tuple[CgroupLine, str] | None:
    """The v1 line that carries ``controller`` (e.g. ``cpuacct``, ``pids``) and its path."""
    for line in lines:
        if controller in line.controllers:
            return line, line.path
    return None


def unified_path(lines: Sequence[CgroupLine]) -> str | None:
    for line in lines:
        if line.is_unified:
            return line.path
    return None


def _by_priority(lines: Sequence[CgroupLine]) -> list[CgroupLine]:
    return [line for line in lines if line.is_unified] + [line for line in lines if not line.is_unified]
