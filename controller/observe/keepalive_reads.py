"""Keep-alive reads with a deadline: a hung filesystem under a container's workspace never stalls a pass.

The keep-alive file lives where the container's user keeps their work, often a network filesystem
(an NFS home, a FUSE mount). Resolving a path on a hard-mounted NFS export whose server is gone, or
on a FUSE mount whose daemon stopped answering, blocks in the kernel until the server answers. Read
inline, one such container stalled the whole pass: no pass completed, the systemd watchdog
restarted the daemon, and the restarted daemon blocked on the same file, in a loop, with nothing
reconciled on the host meanwhile.

So the pass's reads run on a worker thread, all of them in one batch after the containers are
listed (one hand-off a pass, not one a container). Each read opens the container's main process
itself and checks that its cgroup still names the container before looking at its root (no fd is
held from the listing: a host with thousands of running containers would run out of them, and a
pid reused meanwhile is caught by the check). A read that has not returned after ``timeout_s`` is
given up: its container's keep-alive is UNKNOWN (which never lets an idle stop go ahead:
:mod:`controller.plan.rules.lifecycle`), the thread is left to it, and a fresh worker goes on with
the rest. While that read stays blocked, its container is not read again (no second thread joins
the first). No new read starts for an owner with ``max_blocked_per_owner`` reads blocked (their
workspace is hung: one user's hung mount must not switch keep-alives off for everyone), nor for
anyone once ``max_blocked`` reads are blocked (the threads are bounded). A pass spends at most about
``budget_s`` on reads; what is left then is UNKNOWN too, and is read first in the next pass (a slow
filesystem never leaves the same containers unread pass after pass).

The threads are daemon threads, so a thread blocked on NFS does not keep the daemon from exiting;
one blocked on a FUSE mount whose server never answers can (the kernel waits for the server), and
a process with such a thread stays until the mount is aborted (``umount -f``, or writing to its
``abort`` file under ``/sys/fs/fuse/connections``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controller.snapshot import KeepAlive, KeepAliveState

KEEPALIVE_READ_TIMEOUT_S = 2.0  # a stat inside a container's root takes microseconds
KEEPALIVE_PASS_BUDGET_S = 10.0  # well inside the watchdog (WatchdogSec=120) and the resync interval
MAX_BLOCKED_READS = 32
MAX_BLOCKED_PER_OWNER = 2


@dataclass(frozen=True, slots=True)
class KeepAliveRequest:
    """One running container's keep-alive to read: its main process, and whose it is."""

    container_id: str
    owner: str
    pid: int


Reader = Callable[[KeepAliveRequest], KeepAlive]


@dataclass
class _Batch:
    """One pass's reads. Under ``cond``: which item is claimed next, which one the current worker is
    in and since when, and which worker is current (a given-up worker claims nothing more and its
    result is dropped)."""

    requests: list[KeepAliveRequest]
    results: dict[int, KeepAlive] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)
    next: int = 0
    current: int | None = None
    current_since: float = 0.0
    worker: int = 0  # the current worker's number
    thread: threading.Thread | None = None  # the current worker
    closed: bool = False  # given up: nothing more is claimed
    why_closed: str = ""  # what the reads never begun are told
    cut_short: int | None = None  # the read still going when the pass moved on (not a blocked one)

    def finished(self) -> bool:
        return self.current is None and self.next >= len(self.requests)


class KeepAliveReads:
    """The observer's keep-alive reads, one batch a pass (see the module docstring)."""

    def __init__(
        self,
        read: Reader,
        *,
        timeout_s: float = KEEPALIVE_READ_TIMEOUT_S,
        budget_s: float = KEEPALIVE_PASS_BUDGET_S,
        max_blocked: int = MAX_BLOCKED_READS,
        max_blocked_per_owner: int = MAX_BLOCKED_PER_OWNER,
    ) -> None:
        self._read = read
        self.timeout_s = timeout_s
        self.budget_s = budget_s
        self.max_blocked = max_blocked
        self.max_blocked_per_owner = max_blocked_per_owner
        # Container id -> (the thread still blocked in its read, its owner, when that read began).
        self._blocked: dict[str, tuple[threading.Thread, str, float]] = {}
        self._unread: set[str] = set()  # left unread by the last pass: read first in the next

    def blocked(self) -> list[str]:
        """The containers whose read is still blocked (their threads not returned)."""
        self._blocked = {k: v for k, v in self._blocked.items() if v[0].is_alive()}
        return sorted(self._blocked)

    def read_all(self, requests: Sequence[KeepAliveRequest]) -> list[KeepAlive]:
        """The keep-alive of each request, in order."""
        blocked = set(self.blocked())
        by_owner = Counter(owner for _, owner, _ in self._blocked.values())
        results: dict[int, KeepAlive] = {}
        places: list[int] = []
        now = time.monotonic()
        for i, req in enumerate(requests):
            why = self._skip(req, blocked, by_owner, now)
            if why is None:
                places.append(i)
            else:
                results[i] = _unknown(why)
        # Those the last pass left unread first, in their listing order otherwise (a stable sort).
        places.sort(key=lambda i: requests[i].container_id not in self._unread)
        self._unread = set()
        if places:
            batch = _Batch([requests[i] for i in places])
            self._run(batch)
            for j, i in enumerate(places):
                found = batch.results.get(j)
                if found is None or j == batch.cut_short:
                    self._unread.add(requests[i].container_id)
                results[i] = found or _unknown(f"not read: {batch.why_closed}")
        return [results[i] for i in range(len(requests))]

    def _skip(
        self, req: KeepAliveRequest, blocked: set[str], by_owner: Counter[str], now: float
    ) -> str | None:
        if req.container_id in blocked:
            since = now - self._blocked[req.container_id][2]
            return f"an earlier read is still blocked ({since:.0f} s): a hung filesystem on the path?"
        if by_owner[req.owner] >= self.max_blocked_per_owner:
            return (
                f"not read: {by_owner[req.owner]} reads of {req.owner}'s containers are blocked "
                "(a hung filesystem in their workspace?)"
            )
        if len(blocked) >= self.max_blocked:
            return f"keep-alive reads suspended: {len(blocked)} reads are blocked (a hung filesystem?)"
        return None

    def _run(self, batch: _Batch) -> None:
        """Wait for the batch: woken when it is finished, else at the latest when the read under way
        may be past its deadline (the worker does not wake this thread for each read)."""
        start = time.monotonic()
        with batch.cond:
            try:
                self._start_worker(batch)
                while not batch.finished() and not batch.closed:
                    now = time.monotonic()
                    if batch.current is not None and now - batch.current_since >= self.timeout_s:
                        why = f"the read did not return within {self.timeout_s:g} s (a hung filesystem?)"
                        self._give_up_current(batch, why)
                        if len(self.blocked()) >= self.max_blocked:
                            self._close(
                                batch, f"keep-alive reads suspended: {self.max_blocked} reads are blocked"
                            )
                        elif now - start >= self.budget_s:
                            self._close(batch, self._spent())
                        else:
                            self._start_worker(batch)
                        continue
                    if now - start >= self.budget_s:
                        self._close(batch, self._spent())
                        break
                    # A read claimed from now on cannot pass its deadline before timeout_s from now.
                    until_due = self.timeout_s
                    if batch.current is not None:
                        until_due -= now - batch.current_since
                    batch.cond.wait(max(min(until_due, self.budget_s - (now - start)), 0.001))
            finally:
                self._close(batch, self._spent())

    def _spent(self) -> str:
        return f"the pass's {self.budget_s:g} s for keep-alive reads was spent (read first next pass)"

    def _give_up_current(self, batch: _Batch, why: str) -> None:
        """The current read has not returned: UNKNOWN for its container, its thread left to it (and
        that container not read again while the thread is blocked)."""
        if batch.current is None or batch.thread is None:
            return
        req = batch.requests[batch.current]
        batch.results[batch.current] = _unknown(why)
        self._blocked[req.container_id] = (batch.thread, req.owner, batch.current_since)
        batch.current = None
        batch.worker += 1  # the blocked worker claims nothing more, and its result is dropped

    def _close(self, batch: _Batch, why: str) -> None:
        """No more reads in this pass: a read still going is given up, nothing more is claimed, and
        the reads never begun are told ``why`` (the first reason given stands)."""
        if batch.closed:
            return
        batch.cut_short = batch.current
        self._give_up_current(batch, f"still reading when the pass moved on: {why}")
        batch.closed = True
        batch.why_closed = why
        batch.next = len(batch.requests)

    def _start_worker(self, batch: _Batch) -> None:
        thread = threading.Thread(
            target=_work, args=(batch, batch.worker, self._read), name="keepalive-read", daemon=True
        )
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to be had (TasksMax, memory): nothing more is read
            self._close(batch, f"no reader thread could be started ({exc})")
            return
        batch.thread = thread


def _work(batch: _Batch, number: int, read: Reader) -> None:
    while True:
        with batch.cond:
            if batch.closed or batch.worker != number:
                return
            if batch.next >= len(batch.requests):
                batch.cond.notify_all()  # finished: the waiting pass goes on
                return
            i = batch.next
            batch.next += 1
            batch.current, batch.current_since = i, time.monotonic()
        try:
            result = read(batch.requests[i])
        except Exception as exc:  # a read must never end the batch; said as unknown
            result = _unknown(f"{type(exc).__name__}: {exc}")
        with batch.cond:
            if batch.worker != number:
                return  # given up while blocked: the pass has moved on
            batch.results[i] = result
            batch.current = None


def _unknown(detail: str) -> KeepAlive:
    return KeepAlive(state=KeepAliveState.UNKNOWN, detail=detail)
