"""End to end: the record under faults (issue 18): kill -9 during destructive actions, a full file
system under the state directory and the event log, corrupt state files at start.

Each test runs the acting daemon as a process (``controller_daemon``) against the suite's private
Docker engine and the stand-in NVML, with second-scale policy durations.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller import labels as L
from tests.e2e.test_converge import exists, for_container, gpu_request, process_gone, reap
from tests.e2e.test_faults import wait_for_docker_event, wait_gone
from tests.fixtures.daemon import DaemonHandle, DaemonRunner, details, fast_policy
from tests.fixtures.docker_host import ContainerFactory, OrphanProcess
from tests.fixtures.nvml import GIB, FakeNvml

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ALICE = {L.DS01_USER: "alice"}
WAIT_S = 30.0
CLOSING_PHASES = ("done", "failed", "skipped")


def intent_ledger(events: list[dict[str, Any]]) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """(started, closed) counts per (action key, intent time)."""
    started: Counter[tuple[str, str]] = Counter()
    closed: Counter[tuple[str, str]] = Counter()
    for e in events:
        d = details(e)
        tie = (str(d.get("key")), str(d.get("intent_at")))
        if d.get("phase") == "started":
            started[tie] += 1
        elif d.get("phase") in CLOSING_PHASES:
            closed[tie] += 1
    return started, closed


def assert_every_intent_closed_once(events: list[dict[str, Any]]) -> None:
    started, closed = intent_ledger(events)
    assert started, "no destructive action was recorded as started"
    twice = {k: n for k, n in closed.items() if n > 1}
    assert not twice, f"outcomes recorded more than once: {twice}"
    open_ = [k for k in started if closed[k] != 1]
    assert not open_, f"started and never closed: {open_}"
    assert all(n == 1 for n in started.values())


def wait_for_next_intent(d: DaemonHandle, timeout: float) -> str | None:
    """Wait until this daemon records a new intent; the action's kind, or None after ``timeout``."""
    before = len(d.events("controller.action_started"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and d.alive:
        started = d.events("controller.action_started")
        if len(started) > before:
            return str(details(started[before]).get("kind"))
        time.sleep(0.01)
    return None


def done_lines(events: list[dict[str, Any]], event_type: str, pred: Any) -> list[dict[str, Any]]:
    return [
        e for e in events if e["event_type"] == event_type and details(e).get("phase") == "done" and pred(e)
    ]


# --- kill -9 during destructive actions -------------------------------------------------------


def test_kill_9_mid_stop_records_the_idle_stop_once_with_its_reason(
    controller_daemon: DaemonRunner, e2e_containers: ContainerFactory, e2e_docker: Any, fake_nvml: FakeNvml
) -> None:
    # `sleep` as PID 1 ignores SIGTERM: docker stop takes the whole 2 s grace, and the engine
    # finishes it (SIGKILL) after the daemon that asked for it is dead.
    controller_daemon.write_spec(
        fast_policy(controller_daemon.paths.reset_marker, idleTimeout="2s", sigtermGrace="2s")
    )
    uuid = [g.uuid for g in fake_nvml.set_gpus(2)]
    fake_nvml.write()
    idle = e2e_containers(labels=ALICE, **gpu_request(uuid[0]))
    started = datetime.now(UTC)

    d1 = controller_daemon.start()
    wait_for_docker_event(e2e_docker, idle.id, "kill", started, WAIT_S)  # docker stop's SIGTERM
    d1.kill9()
    intents = [e for e in d1.events("controller.action_started") if for_container(idle.id)(e)]
    assert len(intents) == 1, "the stop began without its intent on record"

    d2 = controller_daemon.start()
    wait_gone(e2e_docker, idle.id, WAIT_S)
    d2.wait_for_passes(3)
    assert d2.stop() == 0
    events = d2.events()
    stops = [e for e in events if e["event_type"] == "maintenance.idle_kill" and for_container(idle.id)(e)]
    assert len(stops) == 1, f"the idle stop must be recorded exactly once: {stops}"
    assert details(stops[0])["reason"] == "idle_timeout"
    assert details(stops[0])["intent_at"] == details(intents[0])["intent_at"]
    assert_every_intent_closed_once(events)
    # Removed afterwards (its GPU hold), with the idle stop on record before it.
    removals = [
        e
        for e in events
        if for_container(idle.id)(e)
        and (e["event_type"] == "container.remove" or details(e).get("removed") is True)
    ]
    assert len(removals) == 1
    assert events.index(stops[0]) <= events.index(removals[0])
    assert "interrupted by a restart" in d2.log() or details(stops[0]).get("removed") is True


def test_kill_9_at_random_points_records_every_action_exactly_once(
    controller_daemon: DaemonRunner,
    e2e_containers: ContainerFactory,
    e2e_docker: Any,
    fake_nvml: FakeNvml,
    orphan_cgroup_process: OrphanProcess,
) -> None:
    seed = int(os.environ.get("DS01_FAULT_SEED", time.time_ns() % 1_000_000))
    print(f"DS01_FAULT_SEED={seed}")
    rng = random.Random(seed)
    paths = controller_daemon.paths
    controller_daemon.write_spec(fast_policy(paths.reset_marker, idleTimeout="2s", sigtermGrace="2s"))
    gpus = fake_nvml.set_gpus(6)
    uuid = [g.uuid for g in gpus]
    gpus[5].mem_used_bytes = 2 * GIB  # memory in use, no process, no holder: reset
    # One of each destructive kind: stops (idle), removals (never started), a ledger release,
    # a process kill (an orphan in a gone container's cgroup), a GPU reset.
    idle = [e2e_containers(labels=ALICE, **gpu_request(uuid[i])) for i in (0, 1)]
    created = [e2e_containers(start=False, labels=ALICE, **gpu_request(uuid[i])) for i in (2, 3)]
    controller_daemon.write_ledger(
        [
            {
                "gpu": uuid[4],
                "container": "e2e-never-existed",
                "user": "bob",
                "allocated_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            }
        ]
    )
    orphan = orphan_cgroup_process
    fake_nvml.add_process(uuid[4], pid=orphan.pid)
    fake_nvml.write()

    kills = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and kills < 8:
        d = controller_daemon.start()
        kind = wait_for_next_intent(d, 8.0)
        # Inside the action: anywhere in a stop's 2 s grace, within milliseconds of the others.
        time.sleep(rng.uniform(0.0, 2.2) if kind == "StopContainer" else rng.uniform(0.0, 0.05))
        d.kill9()
        kills += 1
        print(f"kill -9 during {kind}")
        if process_gone(orphan.pid):
            reap(orphan.pid)
            fake_nvml.remove_process(orphan.pid)
            fake_nvml.write()

    final = controller_daemon.start()
    for c in (*idle, *created):
        wait_gone(e2e_docker, c.id, WAIT_S)
    final.wait_for_event("gpu.release", lambda e: details(e).get("container") == "e2e-never-existed", WAIT_S)
    deadline = time.monotonic() + WAIT_S
    while not process_gone(orphan.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process_gone(orphan.pid)
    reap(orphan.pid)
    fake_nvml.remove_process(orphan.pid)
    fake_nvml.write()
    final.wait_for_passes(4)
    assert final.stop() == 0
    events = final.events()
    for line in paths.events_log.read_bytes().split(b"\n")[:-1]:
        json.loads(line)  # no torn line

    recovered = [e for e in events if details(e).get("recovered")]
    print(f"{kills} kills; {len(events)} events; {len(recovered)} outcomes recorded after a restart")
    assert_every_intent_closed_once(events)
    for c in idle:
        stops = done_lines(events, "maintenance.idle_kill", for_container(c.id))
        assert len(stops) == 1 and details(stops[0])["reason"] == "idle_timeout", stops
    for c in created:
        removed = done_lines(events, "container.remove", for_container(c.id))
        assert len(removed) == 1 and details(removed[0])["reason"] == "created_never_started", removed
    released = done_lines(events, "gpu.release", lambda e: details(e).get("container") == "e2e-never-existed")
    assert len(released) == 1 and details(released[0])["reason"] == "leaked_allocation"
    killed = [e for e in events if details(e).get("key", "").startswith(f"KillProcess:{orphan.pid}:")]
    assert len([e for e in killed if details(e).get("phase") == "done"]) <= 1
    reset_runs = paths.reset_marker.read_text().split() if paths.reset_marker.exists() else []
    assert reset_runs.count(uuid[5]) <= 1, "a GPU reset was repeated after a restart"
    assert json.loads(paths.ledger.read_text())["allocations"] == []
    for d in controller_daemon.started:
        assert "Traceback" not in d.log()


# --- a full file system --------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, mounted for the test (needs root) and unmounted after."""
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (this test needs root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system holding ``directory`` to the last byte; returns the filler to delete."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 1):  # big writes, then the last partial page
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def test_no_destructive_action_while_the_record_cannot_be_written(
    controller_daemon: DaemonRunner,
    e2e_containers: ContainerFactory,
    e2e_docker: Any,
    fake_nvml: FakeNvml,
    small_tmpfs: Path,
) -> None:
    paths = controller_daemon.paths
    paths.state_dir = small_tmpfs / "state"
    paths.events_log = small_tmpfs / "log" / "events.jsonl"
    uuid = [g.uuid for g in fake_nvml.set_gpus(2)]
    fake_nvml.write()
    d = controller_daemon.start()
    d.wait_for_passes(2)

    filler = fill(small_tmpfs)
    with pytest.raises(OSError) as full:
        (small_tmpfs / "probe").write_bytes(b"x" * 8192)
    assert full.value.errno == errno.ENOSPC
    # Removable at once (created, never started; timeout 1 s) -- if the record could be written.
    doomed = [e2e_containers(start=False, labels=ALICE, **gpu_request(uuid[i])) for i in (0, 1)]
    mark = d.wait_for_log("degraded: the record cannot be written", WAIT_S)
    d.wait_for_passes(6)  # > 1 s past the created-container timeout
    log = d.log()
    line = log[log.rfind("\n", 0, mark) + 1 : log.find("\n", mark)]
    assert str(paths.state_dir / "memory.json") in line, line
    assert "Errno 28 ENOSPC" in line, line
    for c in doomed:
        assert exists(e2e_docker, c.id), "a container was removed while its removal could not be recorded"
    assert "pass failed" not in log, "observation must go on while the record cannot be written"
    assert log.count("degraded: the record cannot be written") == 1, "announced once"
    assert "RECORD UNWRITABLE" in log

    filler.unlink()  # space returns: it recovers by itself
    d.wait_for_log("recovered: the record can be written again", WAIT_S, after=mark)
    for c in doomed:
        removed = d.wait_for_event("container.remove", for_container(c.id), WAIT_S)
        assert details(removed)["reason"] == "created_never_started"
        assert details(removed)["phase"] == "done"
    assert d.stop() == 0
    assert_every_intent_closed_once(d.events())
    assert d.events("controller.record_recovered")


def test_a_line_cut_short_by_a_full_disk_does_not_swallow_the_next_one(small_tmpfs: Path) -> None:
    # On a full file system the kernel still fills the page the log's last line ends in: the
    # next line is written in part (a short write, reported as ENOSPC) and left without its
    # newline. Space returns, and the next line is fsynced (here the breaker tripping): it must be
    # a line of its own, readable by ds01ctl and by the start that rebuilds a lost memory from the
    # log, not glued to the fragment, where every reader drops both as one malformed line.
    from controller.act.events import EventLog, tail
    from controller.act.salvage import load_state
    from controller.store import MemoryStore

    log = EventLog(small_tmpfs / "events.jsonl")
    while not log.path.exists() or log.path.stat().st_size < 3700:  # its first page nearly full
        log.write("detection.container_discovered", user=None, details={"container": "x" * 100})
    filler = fill(small_tmpfs)
    log.write("controller.record_unavailable", user=None, details={"error": "E" * 1000})
    problem = log.health.problem()
    assert problem is not None and "short write" in problem, problem
    filler.unlink()
    log.write_durable("controller.breaker_tripped", user=None, details={"message": "would stop 9 of 10"})
    assert [e["event_type"] for e in tail(log.path, 1)] == ["controller.breaker_tripped"]
    # The memory is lost (a torn file moved aside): the breaker is rebuilt from the log, open.
    memory = load_state(MemoryStore(small_tmpfs / "state"), log, datetime.now(UTC))
    assert memory.breaker.tripped, "a line the log holds was not read back"


# --- corrupt state at start -----------------------------------------------------------------------


def breaker_tripped_run(
    controller_daemon: DaemonRunner, e2e_containers: ContainerFactory, fake_nvml: FakeNvml
) -> tuple[DaemonHandle, list[Any]]:
    """A run whose breaker trips: three idle GPU containers due in the same pass (3 of 3 > 50 %)."""
    controller_daemon.write_spec(fast_policy(controller_daemon.paths.reset_marker, idleTimeout="3s"))
    uuid = [g.uuid for g in fake_nvml.set_gpus(3)]
    fake_nvml.write()
    # No network: on the bridge a freshly started container receives a few packets (neighbour
    # discovery) that, over half-second passes, read as activity and start its streak passes later.
    idle = [e2e_containers(labels=ALICE, network_mode="none", **gpu_request(u)) for u in uuid]
    d = controller_daemon.start()
    d.wait_for_event("controller.breaker_tripped", None, WAIT_S)
    d.wait_for_passes(2)
    assert d.stop() == 0
    return d, idle


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_memory_is_moved_aside_and_the_breaker_stays_open(
    controller_daemon: DaemonRunner,
    e2e_containers: ContainerFactory,
    e2e_docker: Any,
    fake_nvml: FakeNvml,
    damage: str,
) -> None:
    _first, idle = breaker_tripped_run(controller_daemon, e2e_containers, fake_nvml)
    state_dir = controller_daemon.paths.state_dir
    memory = state_dir / "memory.json"
    raw = memory.read_bytes()
    assert json.loads(raw)["breaker"]["tripped"] is True
    memory.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"\x00\xff{garbage")
    (state_dir / "workload-inventory.json").write_bytes(b'{"containers": {"trunc')

    d = controller_daemon.start()
    d.wait_for_passes(6)
    log = d.log()
    assert log.count("STATE FILE CORRUPT") == 2, "memory and inventory, each said once"
    kept = sorted(p.name for p in state_dir.glob("*.corrupt-*"))
    assert [n.split(".corrupt-")[0] for n in kept] == ["memory.json", "workload-inventory.json"]
    assert len(d.events("controller.state_quarantined")) == 2
    assert "circuit breaker restored from the event log" in log
    # No destructive action from lost memory: the idle containers are still running.
    for c in idle:
        assert e2e_docker.api.inspect_container(c.id)["State"]["Running"]
    assert not d.events("maintenance.idle_kill")
    assert d.stop() == 0
    assert "Traceback" not in log
