"""Keep-alive reads with a deadline: a hung filesystem under a container's workspace never stalls a pass.

The keep-alive file lives where the container's user keeps their work, often a network filesystem
(an NFS home, a FUSE mount). Resolving a path on a hard-mounted NFS export whose server is gone, or
on a FUSE mount whose daemon stopped answering, blocks in the kernel, and no signal but SIGKILL ends
the wait. Read inline, one such container stalled the whole pass: no pass completed, the systemd
watchdog restarted the daemon, and the restarted daemon blocked on the same file, in a loop, with
nothing reconciled on the host meanwhile.

So the pass's reads run on a worker thread, all of them in one batch after the containers are
listed (one hand-off a pass, not one a container). A read that has not returned after
``timeout_s`` is given up: its container's keep-alive is UNKNOWN (which never lets an idle stop go
ahead: :mod:`controller.plan.rules.lifecycle`), the thread is left to it, and a fresh worker goes on
with the rest. While that read stays blocked, its container is not read again (no second thread
joins the first), and once ``max_blocked`` reads are blocked no new read starts at all. A pass
spends at most about ``budget_s`` on reads; what is left then is UNKNOWN too.

The threads are daemon threads: one blocked in the kernel must not keep the daemon from exiting.
Each read owns a duplicate of the ``/proc/<pid>`` directory fd and closes it when it returns, so a
pid reused meanwhile can never be read through a stale fd; a read given up before it started has
its fd closed here.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controller.observe.keepalive import read_keepalive
from controller.snapshot import KeepAlive, KeepAliveState

KEEPALIVE_READ_TIMEOUT_S = 2.0  # a stat inside a container's root takes microseconds
KEEPALIVE_PASS_BUDGET_S = 10.0  # well inside the watchdog (WatchdogSec=120) and the resync interval
MAX_BLOCKED_READS = 8

Reader = Callable[[int, str, bool | None], KeepAlive]


def _read(fd: int, path: str, use_openat2: bool | None) -> KeepAlive:
    return read_keepalive(fd, path, use_openat2=use_openat2)


@dataclass
class _Batch:
    """One pass's reads. Under ``cond``: which item is claimed next, which one the current worker is
    in and since when, and which worker is current (a given-up worker claims nothing more and its
    result is dropped)."""

    requests: list[tuple[str, int]]  # (container id, an fd of /proc/<pid> owned by the read)
    path: str
    use_openat2: bool | None
    results: dict[int, KeepAlive] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)
    next: int = 0
    current: int | None = None
    current_since: float = 0.0
    worker: int = 0  # the current worker's number
    thread: threading.Thread | None = None  # the current worker
    closed: bool = False  # given up: nothing more is claimed

    def finished(self) -> bool:
        return self.current is None and self.next >= len(self.requests)


class KeepAliveReads:
    """The observer's keep-alive reads, one batch a pass (see the module docstring)."""

    def __init__(
        self,
        read: Reader = _read,
        *,
        timeout_s: float = KEEPALIVE_READ_TIMEOUT_S,
        budget_s: float = KEEPALIVE_PASS_BUDGET_S,
        max_blocked: int = MAX_BLOCKED_READS,
    ) -> None:
        self._read = read
        self.timeout_s = timeout_s
        self.budget_s = budget_s
        self.max_blocked = max_blocked
        # Container id -> (the thread still blocked in its read, when that read began).
        self._blocked: dict[str, tuple[threading.Thread, float]] = {}

    def blocked(self) -> list[str]:
        """The containers whose read is still blocked (their threads not returned)."""
        self._blocked = {k: v for k, v in self._blocked.items() if v[0].is_alive()}
        return sorted(self._blocked)

    def read_all(
        self, requests: Sequence[tuple[str, int]], path: str, use_openat2: bool | None = None
    ) -> list[KeepAlive]:
        """The keep-alive of each (container id, ``/proc/<pid>`` fd) in ``requests``, in order.

        Every fd in ``requests`` is taken over (closed here or by its read)."""
        blocked = set(self.blocked())
        results: dict[int, KeepAlive] = {}
        todo: list[tuple[str, int]] = []
        places: list[int] = []
        now = time.monotonic()
        for i, (cid, fd) in enumerate(requests):
            why = self._skip(cid, blocked, now)
            if why is None:
                todo.append((cid, fd))
                places.append(i)
            else:
                os.close(fd)
                results[i] = _unknown(why)
        if todo:
            batch = _Batch(list(todo), path, use_openat2)
            self._run(batch)
            for j, i in enumerate(places):
                results[i] = batch.results.get(j) or _unknown(
                    f"not read: the pass's {self.budget_s:g} s for keep-alive reads was spent "
                    "(another read was blocked)"
                )
        return [results[i] for i in range(len(requests))]

    def _skip(self, cid: str, blocked: set[str], now: float) -> str | None:
        if cid in blocked:
            since = now - self._blocked[cid][1]
            return f"an earlier read is still blocked ({since:.0f} s): a hung filesystem on the path?"
        if len(blocked) >= self.max_blocked:
            return f"keep-alive reads suspended: {len(blocked)} reads are blocked (a hung filesystem?)"
        return None

    def _run(self, batch: _Batch) -> None:
        """Wait for the batch: woken when it is finished, else at the latest when the read under way
        may be past its deadline (the worker does not wake this thread for each read)."""
        start = time.monotonic()
        self._start_worker(batch)
        with batch.cond:
            while not batch.finished():
                now = time.monotonic()
                if batch.current is not None and now - batch.current_since >= self.timeout_s:
                    why = f"the read did not return within {self.timeout_s:g} s (a hung filesystem?)"
                    self._give_up_current(batch, why)
                    if len(self._blocked) >= self.max_blocked or now - start >= self.budget_s:
                        break
                    self._start_worker(batch)
                    continue
                if now - start >= self.budget_s:
                    break
                # A read claimed from now on cannot pass its deadline before timeout_s from now.
                until_due = self.timeout_s
                if batch.current is not None:
                    until_due -= now - batch.current_since
                batch.cond.wait(max(min(until_due, self.budget_s - (now - start)), 0.001))
            self._close(batch)

    def _give_up_current(self, batch: _Batch, why: str) -> None:
        """The current read has not returned: UNKNOWN for its container, its thread left to it (and
        that container not read again while the thread is blocked)."""
        if batch.current is None or batch.thread is None:
            return
        i = batch.current
        batch.results[i] = _unknown(why)
        self._blocked[batch.requests[i][0]] = (batch.thread, batch.current_since)
        batch.current = None
        batch.worker += 1  # the blocked worker claims nothing more, and its result is dropped

    def _close(self, batch: _Batch) -> None:
        """The pass's time for reads is spent: a read still going is given up, nothing more is
        claimed, and the fds of the reads never begun are closed here."""
        self._give_up_current(
            batch, f"still reading after the pass's {self.budget_s:g} s for keep-alive reads"
        )
        batch.closed = True
        for _, fd in batch.requests[batch.next :]:
            os.close(fd)
        batch.next = len(batch.requests)

    def _start_worker(self, batch: _Batch) -> None:
        batch.thread = threading.Thread(
            target=_work, args=(batch, batch.worker, self._read), name="keepalive-read", daemon=True
        )
        batch.thread.start()


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
        _, fd = batch.requests[i]
        try:
            result = read(fd, batch.path, batch.use_openat2)
        except Exception as exc:  # a read must never end the batch; said as unknown
            result = _unknown(f"{type(exc).__name__}: {exc}")
        finally:
            os.close(fd)
        with batch.cond:
            if batch.worker != number:
                return  # given up while blocked: the pass has moved on
            batch.results[i] = result
            batch.current = None


def _unknown(detail: str) -> KeepAlive:
    return KeepAlive(state=KeepAliveState.UNKNOWN, detail=detail)
