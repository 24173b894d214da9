"""The keep-alive reads' deadline, budget and bookkeeping (controller.observe.keepalive_reads).

The reads here are real threads blocked on real events, standing in for a stat blocked on a hung
filesystem (``tests/integration/test_keepalive_hung_fs.py`` blocks one on a real FUSE mount inside a
container). What is checked: a blocked read is given up at its deadline and not started again while
it stays blocked; a pass spends at most its budget, and what it left unread is read first next
time; one owner's hung workspace stops reads of their containers only; past ``max_blocked`` blocked
reads no read starts; a worker thread that cannot start fails no pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.observe.keepalive_reads import KeepAliveReads, KeepAliveRequest
from controller.snapshot import KeepAlive, KeepAliveState

PRESENT = KeepAlive(state=KeepAliveState.PRESENT, inode=7)
UNKNOWN = KeepAliveState.UNKNOWN


class Reads:
    """A stand-in read: each container id in ``hung`` blocks until released; counts its calls."""

    def __init__(self, *hung: str, each_s: float = 0.0) -> None:
        self.hung = set(hung)
        self.each_s = each_s
        self.release = threading.Event()
        self.calls: list[str] = []

    def __call__(self, req: KeepAliveRequest) -> KeepAlive:
        self.calls.append(req.container_id)
        if req.container_id in self.hung:
            self.release.wait(30)
        elif req.container_id.startswith("boom"):
            raise OSError(5, "Input/output error")
        time.sleep(self.each_s)
        return PRESENT


def requests(*cids: str, owner: str = "alice") -> list[KeepAliveRequest]:
    return [KeepAliveRequest(cid, owner, 100 + i) for i, cid in enumerate(cids)]


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


def states(results: list[KeepAlive]) -> list[KeepAliveState]:
    return [r.state for r in results]


def test_every_container_is_read_in_order_and_a_failed_read_is_unknown() -> None:
    reads = Reads()
    keepalive = KeepAliveReads(reads)
    results = keepalive.read_all(requests("a", "boom-1", "b"))
    assert reads.calls == ["a", "boom-1", "b"]
    assert states(results) == [PRESENT.state, UNKNOWN, PRESENT.state]
    assert "Input/output error" in (results[1].detail or ""), "a failed read is unknown, and says why"
    assert keepalive.read_all([]) == []


def test_a_blocked_read_is_given_up_at_its_deadline_and_the_others_are_read(released: list[Reads]) -> None:
    reads = Reads("hung")
    released.append(reads)
    keepalive = KeepAliveReads(reads, timeout_s=0.2, budget_s=5)
    started = time.monotonic()
    results = keepalive.read_all(requests("a", "hung", "b"))
    took_s = time.monotonic() - started
    assert 0.2 <= took_s < 2, took_s
    assert states(results) == [PRESENT.state, UNKNOWN, PRESENT.state]
    assert "did not return within 0.2 s" in (results[1].detail or "")
    assert keepalive.blocked() == ["hung"]

    # While it stays blocked, its container is not read again (no second thread joins the first).
    started = time.monotonic()
    results = keepalive.read_all(requests("hung", "a"))
    assert time.monotonic() - started < 0.2
    assert results[0].state == UNKNOWN and "still blocked" in (results[0].detail or "")
    assert results[1] == PRESENT
    assert reads.calls.count("hung") == 1

    # Released, its late result is dropped (the pass has moved on), and it is read again.
    reads.release.set()
    wait_unblocked(keepalive)
    reads.hung.clear()
    assert keepalive.read_all(requests("hung")) == [PRESENT]


def test_a_pass_spends_at_most_its_budget_and_what_it_left_unread_is_read_first_next() -> None:
    """On a slow (not hung) filesystem the budget ran out at the same place each pass, and the
    same containers at the end of the listing were never read, so never idle-stopped."""
    cids = [f"c{i}" for i in range(8)]
    reads = Reads(each_s=0.1)
    keepalive = KeepAliveReads(reads, timeout_s=1, budget_s=0.35)
    started = time.monotonic()
    results = keepalive.read_all(requests(*cids))
    assert time.monotonic() - started < 0.35 + 0.3
    read = [cid for cid, r in zip(cids, results, strict=True) if r == PRESENT]
    left = [cid for cid, r in zip(cids, results, strict=True) if r != PRESENT]
    assert 2 <= len(read) <= 5 and read == cids[: len(read)], read
    assert all("was spent (read first next pass)" in (r.detail or "") for r in results if r != PRESENT)
    wait_unblocked(keepalive)  # (the read going when the pass moved on is left to end)
    reads.calls.clear()
    keepalive.read_all(requests(*cids))
    first = min(len(left), len(reads.calls))
    assert first >= 2 and reads.calls[:first] == left[:first], (reads.calls, left)


def test_one_owners_hung_workspace_stops_reads_of_their_containers_only(released: list[Reads]) -> None:
    reads = Reads("mallory-1", "mallory-2")
    released.append(reads)
    keepalive = KeepAliveReads(reads, timeout_s=0.1, budget_s=5, max_blocked_per_owner=2)
    mallory = requests("mallory-1", "mallory-2", "mallory-3", owner="mallory")
    results = keepalive.read_all([*mallory, *requests("alice-1")])
    assert states(results) == [UNKNOWN, UNKNOWN, PRESENT.state, PRESENT.state]
    assert keepalive.blocked() == ["mallory-1", "mallory-2"]
    # Two of mallory's reads are blocked: no more reads of hers; everybody else's go on.
    results = keepalive.read_all([*requests("mallory-3", "mallory-4", owner="mallory"), *requests("alice-1")])
    assert states(results) == [UNKNOWN, UNKNOWN, PRESENT.state]
    assert "2 reads of mallory's containers are blocked" in (results[0].detail or "")
    assert reads.calls.count("mallory-3") == 1 and "mallory-4" not in reads.calls


def test_past_max_blocked_reads_no_read_starts(released: list[Reads]) -> None:
    reads = Reads("hung-1", "hung-2")
    released.append(reads)
    keepalive = KeepAliveReads(reads, timeout_s=0.1, budget_s=5, max_blocked=2, max_blocked_per_owner=10)
    results = keepalive.read_all(requests("hung-1", "hung-2", "a"))
    # The second blocked read reaches the limit: the batch stops there, and says why.
    assert states(results) == [UNKNOWN] * 3
    assert "reads suspended: 2 reads are blocked" in (results[2].detail or "")
    assert reads.calls == ["hung-1", "hung-2"]
    results = keepalive.read_all(requests("a", "b"))
    assert all("suspended: 2 reads are blocked" in (r.detail or "") for r in results)
    assert reads.calls == ["hung-1", "hung-2"], "nothing more was started"
    reads.release.set()
    wait_unblocked(keepalive)
    assert keepalive.read_all(requests("a")) == [PRESENT]


def test_a_worker_that_cannot_start_fails_no_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = Reads()
    keepalive = KeepAliveReads(reads)

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    results = keepalive.read_all(requests("a", "b"))
    assert states(results) == [UNKNOWN, UNKNOWN] and reads.calls == []
    assert "no reader thread could be started (can't start new thread)" in (results[0].detail or "")
    assert keepalive.blocked() == []
    monkeypatch.undo()
    assert keepalive.read_all(requests("a")) == [PRESENT]


def test_a_read_looks_only_through_a_process_whose_cgroup_still_names_the_container(tmp_path: Path) -> None:
    """No fd is held from the listing: the read opens the pid again, and a pid reused meanwhile by
    another container's process (or the host's) must not lend its root to this container."""
    from controller.observe.host import read_keepalive_of

    mine, other = "a" * 64, "b" * 64
    pid = tmp_path / "4242"
    (pid / "root" / "workspace").mkdir(parents=True)
    (pid / "root" / "workspace" / ".keep-alive").write_text("")

    def read(cid: str, cgroup: str) -> KeepAlive:
        (pid / "cgroup").write_text(cgroup)
        return read_keepalive_of(
            tmp_path, "/workspace/.keep-alive", False, KeepAliveRequest(cid, "alice", 4242)
        )

    assert read(mine, f"0::/system.slice/docker-{mine}.scope\n").state == KeepAliveState.PRESENT
    assert read(mine, f"12:pids:/docker/{mine}/init\n").state == KeepAliveState.PRESENT  # a child cgroup
    reused = read(mine, f"0::/system.slice/docker-{other}.scope\n")
    assert reused.state == UNKNOWN and reused.detail == "pid 4242 no longer belongs to the container"
    assert read(mine, "0::/user.slice/session-3.scope\n").state == UNKNOWN
    # A short id is no full-id substring match: only a parsed container id counts.
    assert read(other[:12], f"0::/system.slice/docker-{other}bb.scope\n").state == UNKNOWN
    gone = read_keepalive_of(tmp_path, "/workspace/.keep-alive", False, KeepAliveRequest(mine, "alice", 4243))
    assert gone.state == UNKNOWN and "main process gone" in (gone.detail or "")
