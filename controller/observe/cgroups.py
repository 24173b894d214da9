"""Parse ``/proc/<pid>/cgroup`` text: hierarchy paths and the container ids they name (pure).

Owns the patterns by which a cgroup path names a container:

* cgroup v1 with the cgroupfs driver: ``/docker/<id>`` (also under a custom parent such as
  ``/ds01.slice/<id>``): a path component that is exactly 64 lower-case hex digits;
* the systemd driver (v1 or v2): ``/system.slice/docker-<id>.scope``, and under a custom parent
  ``/ds01.slice/ds01-student-alice.slice/docker-<id>.scope``;
* containerd's CRI plugin: ``cri-containerd-<id>.scope``.

A path can name several ids (Docker-in-Docker: ``/docker/<outer>/docker/<inner>``). They are all
returned, outermost first; :func:`attribute` prefers one that is a live container of this host's
engine, then one that exists there, and otherwise reports the outermost, which is the one the host
engine would have created. Live comes first because both may be this engine's: ``--cgroup-parent=
/docker/<outer>`` (cgroupfs driver) puts a running container in a created or exited one's cgroup,
and its processes are the running one's, never orphans of the outer one.

The lines of a v1 host can disagree (a process moved in one hierarchy only); the unified (``0::``)
line is tried first, then the v1 lines in file order, and the first line that names an id decides.

Whose cgroup it is (:class:`~controller.snapshot.CgroupScope`). Other runtimes name their
containers the same way: rootless Docker (``/user.slice/user-1001.slice/user@1001.service/app.slice/
docker-<id>.scope``), containerd and the kubelet (``/kubepods/burstable/pod<uid>/<id>``,
``cri-containerd-<id>.scope``), CRI-O, Podman, and sandboxes with ids of their own
(``/process_api/<32 hex>``). A process is in THIS engine's cgroup only when the id is in one of the
engine's own forms (a bare id for the cgroupfs driver, ``docker-<id>.scope`` for systemd) directly
under one of its parents: Docker's defaults (``/docker`` for cgroupfs, ``/system.slice`` for
systemd) or a configured ``--cgroup-parent`` (``engine_parents``, e.g. DS01's ``ds01.slice``, which
covers the per-user slices below it). Anything else that names a container is FOREIGN: it may be a
live workload this engine cannot see, so it is never an orphan. A path that names no container is
HOST.

A live container of ANOTHER rootful Docker engine on the same host (a second ``dockerd`` with its
own ``--data-root``) is in a cgroup of exactly this engine's form (``/docker/<id>``,
``system.slice/docker-<id>.scope``): the path alone cannot tell it from an orphan. Its processes
descend from a live containerd shim that names the id (``containerd-shim-runc-v2 -namespace moby
-id <id> -address ...``); :func:`shim_runs` recognises that command line, and the observer and the
kill's re-check walk a process's ancestors for one (an orphan's shim has exited with its container).

Called by :mod:`controller.observe.procfs` and :mod:`controller.act.process_ops`. Pure text
processing: no file access here; never raises on malformed text (lines that do not parse are skipped).
"""

from __future__ import annotations

import re
from collections.abc import Container, Sequence
from dataclasses import dataclass

from controller.snapshot import CgroupScope, ContainerId

_HEX64 = r"[0-9a-f]{64}"
_BARE_ID = re.compile(rf"({_HEX64})\Z")  # cgroupfs driver (Docker, containerd, the kubelet)
_DOCKER_SCOPE = re.compile(rf"docker-({_HEX64})\.scope\Z")  # systemd driver (Docker, rootless too)
_COMPONENT_PATTERNS = (
    _BARE_ID,
    _DOCKER_SCOPE,
    re.compile(rf"cri-containerd-({_HEX64})\.scope\Z"),
    re.compile(rf"crio-({_HEX64})\.scope\Z"),
    re.compile(rf"libpod-({_HEX64})\.scope\Z"),
)
# Another runtime's or sandbox's id that is not a Docker id (e.g. /process_api/<32 hex>): the path
# names a workload, so the process is not a bare host process, but there is no container id to give.
_SANDBOX_ID = re.compile(r"(?:\A|[-_.@])(?:[0-9a-f]{64}|[0-9a-f]{32})(?:\Z|[-_.@])")

# Docker's own parents when no --cgroup-parent is given: cgroupfs "/docker/<id>", systemd
# "/system.slice/docker-<id>.scope". Matched exactly (a sub-cgroup of system.slice is not Docker's).
_ENGINE_DEFAULT_CGROUPFS = ("docker",)
_ENGINE_DEFAULT_SYSTEMD = ("system.slice",)
DEFAULT_ENGINE_PARENTS: tuple[str, ...] = ("ds01.slice",)
# A user's own systemd manager: what runs below it (rootless Docker) is that user's, never this
# engine's, whichever configured parent covers the slice it sits in.
_USER_MANAGER = re.compile(r"user@[0-9]+\.service\Z")


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
    scope: CgroupScope = CgroupScope.HOST


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


def container_lines(lines: Sequence[CgroupLine], container_id: str) -> tuple[CgroupLine, ...]:
    """``lines`` of a container's main process, each path cut after the component that names the
    container: its own cgroup, where ``docker update`` sets the limits and whose files count the
    whole container. A main process may sit in a child of it (docker:dind moves every process to
    ``<scope>/init``; systemd in a container runs in ``<scope>/init.scope``), and that child's files
    count only itself: read there, a container using 20 GiB looked like one using 60 MiB (and
    its limit was lowered under its use), and its CPU time was the child's alone. A line that names
    no such component is kept as it is."""
    out: list[CgroupLine] = []
    for line in lines:
        # The id is 64 hex digits: the component holding it is the container's own cgroup (the
        # outermost, should it occur twice). Plain string search: this runs for every running
        # container on every pass, several lines each on cgroup v1.
        at = line.path.find(container_id)
        end = line.path.find("/", at) if at >= 0 else -1
        if end >= 0:
            line = CgroupLine(line.hierarchy_id, line.controllers, line.path[:end])
        out.append(line)
    return tuple(out)


def attribute(
    text: str,
    existing: Container[str] = frozenset(),
    engine_parents: Sequence[str] = DEFAULT_ENGINE_PARENTS,
    live: Container[str] = frozenset(),
) -> CgroupAttribution:
    """The container a process belongs to, from its ``/proc/<pid>/cgroup`` text, and whose cgroup
    it is (``engine_parents``: the ``--cgroup-parent`` values this engine's containers are given;
    ``existing``: the ids this engine lists, ``live`` those of them running, paused or restarting)."""
    lines = _by_priority(parse_cgroup(text))
    for line in lines:
        candidates = container_ids_in_path(line.path)
        if not candidates:
            continue
        chosen = next(
            (c for c in candidates if c in live),
            next((c for c in candidates if c in existing), candidates[0]),
        )
        scope = (
            CgroupScope.ENGINE if is_engine_cgroup(line.path, chosen, engine_parents) else CgroupScope.FOREIGN
        )
        return CgroupAttribution(container_id=chosen, cgroup=line.path, candidates=candidates, scope=scope)
    for line in lines:
        if any(_SANDBOX_ID.search(component) for component in line.path.split("/")):
            return CgroupAttribution(container_id=None, cgroup=line.path, scope=CgroupScope.FOREIGN)
    return CgroupAttribution(container_id=None, cgroup="")


def is_engine_cgroup(
    path: str, container_id: str, engine_parents: Sequence[str] = DEFAULT_ENGINE_PARENTS
) -> bool:
    """Is ``container_id``'s cgroup in ``path`` one this Docker engine creates?

    The id's component must be in one of Docker's own forms (a bare id, ``docker-<id>.scope``) and
    the components above it must be Docker's default parent for that form or lie within one of
    ``engine_parents``. Rootless Docker (under ``user@<uid>.service``, even where a parent such as
    ``user.slice`` covers the user's slice), the kubelet (``kubepods``), containerd, CRI-O and
    Podman never qualify.
    """
    components = [c for c in path.split("/") if c]
    for i, component in enumerate(components):
        bare = _BARE_ID.match(component)
        scoped = _DOCKER_SCOPE.match(component)
        match = bare or scoped
        if match is None or match.group(1) != container_id:
            continue
        above = tuple(components[:i])
        if any(_USER_MANAGER.match(c) for c in above):
            return False
        if bare is not None and above == _ENGINE_DEFAULT_CGROUPFS:
            return True
        if scoped is not None and above == _ENGINE_DEFAULT_SYSTEMD:
            return True
        return any(_within_parent(above, parent) for parent in engine_parents)
    return False


def _within_parent(above: tuple[str, ...], parent: str) -> bool:
    """Do the components ``above`` a container lie within the configured cgroup parent?

    A systemd slice name encodes its ancestry (``ds01-student-alice.slice`` is
    ``/ds01.slice/ds01-student.slice/ds01-student-alice.slice``), so a slice parent matches when
    the first component is that slice or one of its descendants: under the systemd driver the path
    is the expanded one, under cgroupfs the slice name is used as a plain directory. Any other
    parent is a cgroupfs path, matched as a path prefix.
    """
    parent = parent.strip()
    if not parent or not above:
        return False
    if parent.endswith(".slice") and "/" not in parent:
        stem = parent[: -len(".slice")]
        if not stem or stem.startswith("-") or stem.endswith("-") or "--" in stem:
            return False  # "-.slice" is the root: everything would be the engine's
        parts = stem.split("-")
        lineage = tuple("-".join(parts[: n + 1]) + ".slice" for n in range(len(parts)))
        if above[: len(lineage)] == lineage:
            return True  # systemd driver: the expanded path
        first = above[0]  # cgroupfs driver: the slice name as one directory
        return first == parent or (first.endswith(".slice") and first.startswith(stem + "-"))
    wanted = tuple(c for c in parent.split("/") if c)
    return bool(wanted) and above[: len(wanted)] == wanted


def shim_runs(argv: Sequence[str], container_id: str) -> bool:
    """Is ``argv`` a containerd shim's command line that runs ``container_id``?

    ``containerd-shim-runc-v2 -namespace moby -id <id> -address <socket>`` (Docker 20.10 and
    later) names the id as an argument; the older ``containerd-shim -namespace moby -workdir
    .../moby/<id> ...`` names it as the last component of a path. Who runs the process (a shim of
    a rootful engine runs as root) is the caller's to check: anyone can name a process so.
    """
    if not argv or not container_id or not argv[0].rsplit("/", 1)[-1].startswith("containerd-shim"):
        return False
    return any(arg == container_id or arg.endswith("/" + container_id) for arg in argv[1:])


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
