"""The keep-alive reads' deadline, budget and bookkeeping (controller.observe.keepalive_reads).

The reads here are real threads blocked on real events, standing in for a stat blocked on a hung
filesystem (``tests/integration/test_keepalive_hung_fs.py`` blocks one on a real FUSE mount inside a
container). What is checked: every fd handed in is closed exactly once, whatever happens to its read;
a blocked read is given up at its deadline and not started again while it stays blocked; a pass
spends at most its budget; and past ``max_blocked`` blocked reads no read starts at all.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from controller.observe.keepalive_reads import KeepAliveReads
from controller.snapshot import KeepAlive, KeepAliveState

PATH = "/workspace/.keep-alive"
PRESENT = KeepAlive(state=KeepAliveState.PRESENT, inode=7)


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


class Reads:
    """A stand-in read: each container id in ``hung`` blocks until released; counts its calls."""

    def __init__(self, *hung: str) -> None:
        self.hung = set(hung)
        self.release = threading.Event()
        self.calls: list[str] = []
        self.fds: dict[int, str] = {}

    def requests(self, *cids: str) -> list[tuple[str, int]]:
        out = []
        for cid in cids:
            fd = os.open("/", os.O_PATH)  # an fd the read takes over, as the /proc/<pid> one
            self.fds[fd] = cid
            out.append((cid, fd))
        return out

    def __call__(self, fd: int, path: str, use_openat2: bool | None) -> KeepAlive:
        cid = self.fds[fd]
        self.calls.append(cid)
        os.fstat(fd)  # still open while its read runs
        if cid in self.hung:
            self.release.wait(30)
            return PRESENT
        if cid.startswith("boom"):
            raise OSError(5, "Input/output error")
        return PRESENT


@pytest.fixture
def released() -> Iterator[list[Reads]]:
    """Every stand-in's blocked reads are released at the end (no thread outlives its test)."""
    made: list[Reads] = []
    yield made
    for reads in made:
        reads.release.set()


def wait_unblocked(keepalive: KeepAliveReads) -> None:
    deadline = time.monotonic() + 10
    while keepalive.blocked() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert keepalive.blocked() == []


def test_every_container_is_read_in_order_and_every_fd_closed_once() -> None:
    reads = Reads()
    keepalive = KeepAliveReads(reads)
    before = open_fds()
    results = keepalive.read_all(reads.requests("a", "boom-1", "b"), PATH)
    assert open_fds() == before
    assert reads.calls == ["a", "boom-1", "b"]
    assert [r.state for r in results] == [
        KeepAliveState.PRESENT,
        KeepAliveState.UNKNOWN,
        KeepAliveState.PRESENT,
    ]
    assert "Input/output error" in (results[1].detail or ""), "a failed read is unknown, and says why"
    assert keepalive.read_all([], PATH) == []


def test_a_blocked_read_is_given_up_at_its_deadline_and_the_others_are_read(released: list[Reads]) -> None:
    reads = Reads("hung")
    released.append(reads)
    keepalive = KeepAliveReads(reads, timeout_s=0.2, budget_s=5)
    before = open_fds()
    started = time.monotonic()
    results = keepalive.read_all(reads.requests("a", "hung", "b"), PATH)
    took_s = time.monotonic() - started
    assert 0.2 <= took_s < 2, took_s
    assert [r.state for r in results] == [
        KeepAliveState.PRESENT,
        KeepAliveState.UNKNOWN,
        KeepAliveState.PRESENT,
    ]
    assert "did not return within 0.2 s" in (results[1].detail or "")
    assert keepalive.blocked() == ["hung"]
    # The blocked read still holds its fd; every other fd is closed.
    assert len(open_fds() - before) == 1

    # While it stays blocked, its container is not read again (no second thread joins the first).
    started = time.monotonic()
    results = keepalive.read_all(reads.requests("hung", "a"), PATH)
    assert time.monotonic() - started < 0.2
    assert results[0].state == KeepAliveState.UNKNOWN and "still blocked" in (results[0].detail or "")
    assert results[1] == PRESENT
    assert reads.calls.count("hung") == 1
    assert len(open_fds() - before) == 1

    # Released, its late result is dropped (the pass has moved on), its fd closed, and it is read again.
    reads.release.set()
    wait_unblocked(keepalive)
    assert open_fds() == before
    reads.hung.clear()
    assert keepalive.read_all(reads.requests("hung"), PATH) == [PRESENT]


def test_a_pass_spends_at_most_its_budget_on_reads(released: list[Reads]) -> None:
    cids = [f"hung-{i}" for i in range(6)]
    reads = Reads(*cids)
    released.append(reads)
    keepalive = KeepAliveReads(reads, timeout_s=0.2, budget_s=0.5, max_blocked=100)
    before = open_fds()
    started = time.monotonic()
    results = keepalive.read_all(reads.requests(*cids, "a"), PATH)
    took_s = time.monotonic() - started
    assert took_s < 0.5 + 0.2 + 0.5, took_s
    assert all(r.state == KeepAliveState.UNKNOWN for r in results)
    given_up = keepalive.blocked()
    assert 2 <= len(given_up) <= 4 and given_up == reads.calls[: len(given_up)]
    not_read = [r for r in results if (r.detail or "").startswith("not read")]
    assert len(not_read) == len(results) - len(given_up)
    assert "a" not in reads.calls
    # Only the blocked reads hold an fd: the reads never begun had theirs closed.
    assert len(open_fds() - before) == len(given_up)
    reads.release.set()
    wait_unblocked(keepalive)
    assert open_fds() == before


def test_past_max_blocked_reads_no_read_starts(released: list[Reads]) -> None:
    reads = Reads("hung-1", "hung-2")
    released.append(reads)
    keepalive = KeepAliveReads(reads, timeout_s=0.1, budget_s=5, max_blocked=2)
    before = open_fds()
    results = keepalive.read_all(reads.requests("hung-1", "hung-2", "a"), PATH)
    # The second blocked read reaches the limit: the batch stops there.
    assert [r.state for r in results] == [KeepAliveState.UNKNOWN] * 3
    assert (results[2].detail or "").startswith("not read") and reads.calls == ["hung-1", "hung-2"]
    results = keepalive.read_all(reads.requests("a", "b"), PATH)
    assert all("suspended: 2 reads are blocked" in (r.detail or "") for r in results)
    assert reads.calls == ["hung-1", "hung-2"], "nothing more was started"
    reads.release.set()
    wait_unblocked(keepalive)
    assert open_fds() == before
    assert keepalive.read_all(reads.requests("a"), PATH) == [PRESENT]
