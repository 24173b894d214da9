"""Signalling a host process safely: identity checks before every signal, TERM then KILL.

A PID names a process only until it exits; the kernel may hand the number to another process at
any moment. Before *every* signal the process is checked to still be the one the plan saw: same
start time (within :data:`START_TIME_TOLERANCE_S`), not exited (a zombie thread-group leader is
gone only once no other thread of it runs), and still in the same container's cgroup (or
still in none); when the plan names the cgroup path that made it an orphan (this engine's cgroup,
see :mod:`controller.observe.cgroups`), the process must still be in exactly that cgroup. The
controller never signals PID 0 or 1, itself, its parent or its process group leader, and signals
always name a single process (never a process group), through a pidfd opened before the first
check where the kernel has them: a signal then reaches the checked process or nobody, never one
the kernel gave its pid to after the check. A process in a container's cgroup is not signalled
while a root-owned containerd shim among its ancestors runs that container, or any other container
its cgroup path names (``LIVE``): the container is alive under some engine on this host, whatever
this engine lists; the walk is the observer's
own (:func:`controller.observe.procfs.find_live_shim`), and an ancestry that cannot be read is
``UNKNOWN``: not signalled either.

Called by the real executor for KillProcess actions. Must not decide *whether* to kill: that is
the planner's job; this module only makes the kill exact.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import psutil

from controller.act.errors import PermanentError
from controller.observe.cgroups import CgroupAttribution, attribute
from controller.observe.procfs import AncestryUnreadable, find_live_shim

START_TIME_TOLERANCE_S = 0.01
_POLL_S = 0.05


class Identity(StrEnum):
    SAME = "same"
    GONE = "gone"
    CHANGED = "changed"  # the pid names another process (reused)
    MOVED = "moved"  # the same process, in another cgroup than the plan's: not the planned orphan
    LIVE = "live"  # the same process, but a live containerd shim runs its container: not an orphan
    UNKNOWN = "unknown"  # its ancestry could not be read: whether a shim runs its container is unknown


@dataclass(frozen=True)
class IdentityCheck:
    identity: Identity
    detail: str = ""


@dataclass(frozen=True)
class KillResult:
    outcome: Identity  # GONE: it exited (killed or not); CHANGED, MOVED, LIVE, UNKNOWN: not ours to signal
    signals_sent: tuple[str, ...]
    detail: str


def cgroup_attribution(pid: int, proc: Path = Path("/proc")) -> CgroupAttribution:
    """The container(s) named by ``/proc/<pid>/cgroup`` (the observer's own parser).

    Raises ``FileNotFoundError``/``ProcessLookupError`` when the process is gone.
    """
    text = (proc / str(pid) / "cgroup").read_text(encoding="utf-8", errors="replace")
    return attribute(text)


def check_identity(
    pid: int,
    start_time: float,
    container_id: str | None,
    *,
    proc: Path = Path("/proc"),
    cgroup: str | None = None,
) -> IdentityCheck:
    """Is ``pid`` still the process that started at ``start_time`` in ``container_id``'s cgroup
    (and, when ``cgroup`` is given, in exactly that cgroup path)?"""
    try:
        process = psutil.Process(pid)
        created = process.create_time()
        status = process.status()
    except psutil.NoSuchProcess:
        return IdentityCheck(Identity.GONE, "no such process")
    if abs(created - start_time) > START_TIME_TOLERANCE_S:
        return IdentityCheck(
            Identity.CHANGED, f"pid {pid} now started at {created:.2f}, not {start_time:.2f} (pid reused)"
        )
    if status == psutil.STATUS_ZOMBIE and not _threads_left(proc, pid):
        return IdentityCheck(Identity.GONE, "exited (zombie awaiting its parent)")
    try:
        attribution = cgroup_attribution(pid, proc)
    except (FileNotFoundError, ProcessLookupError):
        return IdentityCheck(Identity.GONE, "no such process")
    if not _same_container(attribution, container_id):
        actual = attribution.container_id
        return IdentityCheck(
            Identity.MOVED,
            f"pid {pid} is in cgroup of container {actual[:12] if actual else 'none'}, "
            f"not {container_id[:12] if container_id else 'none'}",
        )
    if cgroup and attribution.cgroup != cgroup:
        return IdentityCheck(
            Identity.MOVED, f"pid {pid} is now in cgroup {attribution.cgroup or '/'}, not {cgroup}"
        )
    if container_id is not None:
        # Every container the path names, not only the planned one: a live container nested in
        # the planned one's cgroup (``--cgroup-parent=/docker/<planned>``) owns the process.
        for full in attribution.candidates:
            try:
                shim = find_live_shim(proc, pid, full)
            except AncestryUnreadable as exc:
                return IdentityCheck(
                    Identity.UNKNOWN,
                    f"pid {pid}: cannot tell whether a live containerd shim runs its container "
                    f"{full[:12]} ({exc}): not signalled on a guess",
                )
            if shim:
                return IdentityCheck(
                    Identity.LIVE,
                    f"pid {pid}'s container {full[:12]} is run by a live containerd shim ({shim}): "
                    "a live container, not an orphan",
                )
    return IdentityCheck(Identity.SAME)


_SETTLE_S = 1.0


def _settled(
    pid: int,
    start_time: float,
    container_id: str | None,
    proc: Path,
    cgroup: str | None,
    sleep: Callable[[float], None],
    check: IdentityCheck,
) -> IdentityCheck:
    """A MOVED reading after a signal, read again for up to ``_SETTLE_S``: a process the signal
    ended is out of its cgroup a moment before it is gone (a zombie, or no such process)."""
    deadline = time.monotonic() + _SETTLE_S
    while check.identity is Identity.MOVED and time.monotonic() < deadline:
        sleep(_POLL_S)
        check = check_identity(pid, start_time, container_id, proc=proc, cgroup=cgroup)
    return check


def _threads_left(proc: Path, pid: int) -> bool:
    """Does a thread of ``pid`` still run? The state in ``/proc/<pid>/stat`` is the thread-group
    leader's: a leader whose thread ended (``pthread_exit`` in ``main``) is a zombie while the
    process runs on, and holds its GPU context, on its other threads."""
    try:
        tasks = [t for t in (proc / str(pid) / "task").iterdir() if t.name.isdigit()]
    except (FileNotFoundError, ProcessLookupError):
        return False
    for task in tasks:
        try:
            stat = (task / "stat").read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue  # that thread has exited
        fields = stat.rpartition(")")[2].split()
        if fields and fields[0] not in ("Z", "X"):
            return True
    return False


def _same_container(attribution: CgroupAttribution, expected: str | None) -> bool:
    if expected is None:
        return attribution.container_id is None
    # Plans may carry a short id (12+ hex digits); cgroups always name the full one. With nested
    # containers a path names several ids; the planned one must be among them.
    return any(_names(cid, expected) for cid in attribution.candidates)


def _names(cid: str, expected: str) -> bool:
    return cid == expected or (len(expected) >= 12 and cid.startswith(expected))


def refuse_reason(pid: int) -> str | None:
    """Why this pid must never be signalled, or None.

    Signals always go to one pid (never ``kill(0)`` or a negative group id), and never to the
    controller, its parent (the service manager or a shell) or the leader of its process group.
    """
    if pid <= 1:
        return f"pid {pid} is never signalled"
    if pid == os.getpid():
        return "refusing to signal the controller itself"
    if pid in (os.getppid(), os.getpgrp()):
        return f"pid {pid} is the controller's parent or process group leader"
    return None


def kill_ladder(
    pid: int,
    start_time: float,
    container_id: str | None,
    *,
    grace_s: float,
    kill_wait_s: float = 5.0,
    proc: Path = Path("/proc"),
    sleep: Callable[[float], None] = time.sleep,
    cgroup: str | None = None,
) -> KillResult:
    """SIGTERM, wait up to ``grace_s``, SIGKILL, wait up to ``kill_wait_s``; verify before each.

    Returns GONE when the process has exited (``signals_sent`` may be empty: it was already
    gone), CHANGED when the pid no longer names the process the plan meant (before any signal),
    MOVED when the process is in another cgroup than the plan's, LIVE when a live shim
    runs its container, UNKNOWN when its ancestry cannot be read (nothing further is sent in
    any of these). Raises :class:`PermanentError` when
    the pid is protected or the process survives SIGKILL (uninterruptible sleep in a driver call,
    typically).
    """
    refused = refuse_reason(pid)
    if refused:
        raise PermanentError(refused)
    try:
        handle = _open_handle(pid)
    except ProcessLookupError:
        return KillResult(Identity.GONE, (), "no such process")
    try:
        return _ladder(pid, handle, start_time, container_id, grace_s, kill_wait_s, proc, sleep, cgroup)
    finally:
        if handle is not None:
            os.close(handle)


def _open_handle(pid: int) -> int | None:
    """A pidfd for the process at ``pid`` now (None where the kernel has none: before Linux 5.3,
    or a pid that is not a thread-group leader). Raises ProcessLookupError when there is none.

    Opened before the first identity check: a check that then finds the planned start time proves
    the pidfd is the planned process (a process placed at the pid after the pidfd was opened started
    later than the planned one), and a signal sent through it reaches that process or, once it has
    exited, nobody: never a newcomer the kernel gave its pid to between the check and the signal."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise
    except OSError:
        return None


def _send(pid: int, handle: int | None, sig: signal.Signals) -> None:
    """``sig`` to the process of ``handle`` (by its pid where there is no pidfd)."""
    if handle is None:
        os.kill(pid, sig)
    else:
        signal.pidfd_send_signal(handle, sig)


def _ladder(
    pid: int,
    handle: int | None,
    start_time: float,
    container_id: str | None,
    grace_s: float,
    kill_wait_s: float,
    proc: Path,
    sleep: Callable[[float], None],
    cgroup: str | None,
) -> KillResult:
    sent: list[str] = []
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_wait_s)):
        check = check_identity(pid, start_time, container_id, proc=proc, cgroup=cgroup)
        if check.identity is Identity.MOVED and sent:
            check = _settled(pid, start_time, container_id, proc, cgroup, sleep, check)
        if check.identity is not Identity.SAME:
            if sent and check.identity in (Identity.GONE, Identity.CHANGED):
                return KillResult(Identity.GONE, tuple(sent), f"exited after {sent[-1]}")
            return KillResult(check.identity, tuple(sent), check.detail)
        # Through the pidfd opened before the checks (_open_handle): a process that exits between
        # the check and the signal is not replaced by whatever the kernel puts at its pid.
        try:
            _send(pid, handle, sig)
        except ProcessLookupError:
            return KillResult(Identity.GONE, tuple(sent), "exited before the signal")
        sent.append(sig.name)
        deadline = time.monotonic() + wait_s
        while True:
            check = check_identity(pid, start_time, container_id, proc=proc, cgroup=cgroup)
            if check.identity is Identity.MOVED:
                # An exiting process leaves its cgroup before it is reaped: only one still in
                # another cgroup once it has had the time to go was moved there.
                check = _settled(pid, start_time, container_id, proc, cgroup, sleep, check)
            if check.identity is not Identity.SAME:
                # Alive, and not ours to signal further (moved to another cgroup, a live shim, an
                # ancestry that cannot be read): said as such, never as gone.
                if check.identity in (Identity.LIVE, Identity.UNKNOWN, Identity.MOVED):
                    return KillResult(check.identity, tuple(sent), check.detail)
                if check.identity is Identity.GONE:
                    return KillResult(Identity.GONE, tuple(sent), f"exited after {sig.name}")
                # The original exited and the pid was reused: it is gone, the newcomer is not ours.
                return KillResult(Identity.GONE, tuple(sent), f"exited after {sig.name}; {check.detail}")
            if time.monotonic() >= deadline:
                break
            sleep(_POLL_S)
    raise PermanentError(f"pid {pid} still present {kill_wait_s:g}s after SIGKILL (uninterruptible?)")
