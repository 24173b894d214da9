"""The real executor on real processes, a real reset script and a real ledger file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from controller.act.executor import RealExecutor
from controller.act.report import Outcome
from controller.memory import ControllerMemory
from controller.observe.ledger import Allocation, locked_update
from controller.plan.types import Action, ActionKind, Reason, Target
from tests.fixtures.act import NOW, make_plan, read_events

pytestmark = pytest.mark.docker  # the executor is built on the engine's client

GPU = "GPU-11111111-2222-3333-4444-555555555555"


def kill_action(pid: int, start_time: float | None, container_id: str | None, *, key: str = "kill") -> Action:
    return Action(
        kind=ActionKind.KILL_PROCESS,
        target=Target(pid=pid, pid_start_time=start_time, gpu=GPU, user="bob"),
        reason=Reason.ORPHANED_PROCESS,
        message=f"kill orphan {pid}",
        evidence={"container_id": container_id, "cmdline": "sleep"},
        due_at=NOW,
        key=key,
    )


@pytest.fixture
def spawn() -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(list(argv))
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def wait_for_exec(pid: int, name: str) -> None:
    for _ in range(200):
        if psutil.Process(pid).name() == name:
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never became {name}")


def alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def test_kill_host_process_with_term(real_executor: RealExecutor, spawn: Any, event_log_path: Path) -> None:
    proc = spawn("sleep", "300")
    start = psutil.Process(proc.pid).create_time()
    report = real_executor.execute(make_plan(kill_action(proc.pid, start, None)), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.DONE, report.outcomes[0].detail
    assert report.outcomes[0].detail.startswith("SIGTERM:")
    assert proc.wait(timeout=5) == -15
    (event,) = read_events(event_log_path)
    assert event["event_type"] == "process.kill" and event["details"]["signals"] == ["SIGTERM"]


def test_term_ignored_escalates_to_kill(real_executor: RealExecutor, spawn: Any) -> None:
    proc = spawn("sh", "-c", 'trap "" TERM; exec sleep 300')
    wait_for_exec(proc.pid, "sleep")  # the trap is set before the exec
    start = psutil.Process(proc.pid).create_time()
    report = real_executor.execute(make_plan(kill_action(proc.pid, start, None)), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.DONE, report.outcomes[0].detail
    assert report.outcomes[0].detail.startswith("SIGTERM+SIGKILL:")
    assert proc.wait(timeout=5) == -9


def test_pid_reuse_guard_sends_nothing(real_executor: RealExecutor, spawn: Any, event_log_path: Path) -> None:
    proc = spawn("sleep", "300")
    start = psutil.Process(proc.pid).create_time()
    plan = make_plan(kill_action(proc.pid, start - 5.0, None))  # the plan saw an earlier process
    report = real_executor.execute(plan, ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.SKIPPED
    assert "pid reused" in report.outcomes[0].detail
    assert alive(proc)
    assert [e["event_type"] for e in read_events(event_log_path)] == ["controller.action_skipped"]


def test_missing_start_time_sends_nothing(real_executor: RealExecutor, spawn: Any) -> None:
    proc = spawn("sleep", "300")
    report = real_executor.execute(make_plan(kill_action(proc.pid, None, None)), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.SKIPPED
    assert alive(proc)


def test_process_not_in_the_planned_container_is_left_alone(real_executor: RealExecutor, spawn: Any) -> None:
    proc = spawn("sleep", "300")
    start = psutil.Process(proc.pid).create_time()
    report = real_executor.execute(
        make_plan(kill_action(proc.pid, start, "ab" * 32)), ControllerMemory(), NOW
    )
    assert report.outcomes[0].outcome is Outcome.SKIPPED
    assert "cgroup" in report.outcomes[0].detail
    assert alive(proc)


def test_orphan_in_a_dead_containers_cgroup_is_killed(
    real_executor: RealExecutor, orphan_cgroup_process: Any
) -> None:
    orphan = orphan_cgroup_process
    start = psutil.Process(orphan.pid).create_time()
    # Same start time but the plan names another container: not ours.
    wrong = real_executor.execute(
        make_plan(kill_action(orphan.pid, start, "cd" * 32)), ControllerMemory(), NOW
    )
    assert wrong.outcomes[0].outcome is Outcome.SKIPPED
    assert psutil.pid_exists(orphan.pid)
    report = real_executor.execute(
        make_plan(kill_action(orphan.pid, start, orphan.container_id)), ControllerMemory(), NOW
    )
    assert report.outcomes[0].outcome is Outcome.DONE, report.outcomes[0].detail
    proc = psutil.Process(orphan.pid) if psutil.pid_exists(orphan.pid) else None
    assert proc is None or proc.status() == psutil.STATUS_ZOMBIE


def test_an_orphan_whose_ancestry_cannot_be_read_is_not_signalled(
    real_executor: RealExecutor,
    orphan_cgroup_process: Any,
    event_log_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whether a live shim (another engine) runs its container is unknown: skipped before any
    intent, and a later pass decides. With the walk answering, the same kill goes ahead."""
    import controller.act.process_ops as ops
    from controller.observe.procfs import AncestryUnreadable

    orphan = orphan_cgroup_process
    start = psutil.Process(orphan.pid).create_time()

    def unreadable(proc_root: Path, pid: int, container_id: str) -> str:
        raise AncestryUnreadable(f"reading its ancestor {pid}'s parent: [Errno 13] Permission denied")

    with monkeypatch.context() as patched:
        patched.setattr(ops, "find_live_shim", unreadable)
        report = real_executor.execute(
            make_plan(kill_action(orphan.pid, start, orphan.container_id)), ControllerMemory(), NOW
        )
    assert (
        report.outcomes[0].outcome is Outcome.SKIPPED
        and "not signalled on a guess" in report.outcomes[0].detail
    )
    assert psutil.Process(orphan.pid).status() != psutil.STATUS_ZOMBIE
    assert [e["event_type"] for e in read_events(event_log_path)] == ["controller.action_skipped"]
    report = real_executor.execute(
        make_plan(kill_action(orphan.pid, start, orphan.container_id)), ControllerMemory(), NOW
    )
    assert report.outcomes[0].outcome is Outcome.DONE, report.outcomes[0].detail


IGNORES_SIGTERM = """\
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(300)
"""


@dataclass
class StubbornOrphan:
    """A process that ignores SIGTERM, in a dead container's cgroup; the signals the kill ladder
    sends it, in ``sent``; ``after_signal`` runs right after each."""

    proc: subprocess.Popen[str]
    start: float
    container_id: str
    hierarchy: Path
    sent: list[int] = field(default_factory=list)
    after_signal: Callable[[], None] | None = None


@pytest.fixture
def stubborn_orphan(orphan_cgroup_process: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[StubbornOrphan]:
    import controller.act.process_ops as ops

    orphan = orphan_cgroup_process
    proc = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True)
    try:
        (orphan.cgroup_dir / "cgroup.procs").write_text(f"{proc.pid}\n")
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        stubborn = StubbornOrphan(
            proc, psutil.Process(proc.pid).create_time(), orphan.container_id, orphan.cgroup_dir.parent.parent
        )
        real_send = ops._send

        def send(pid: int, handle: int | None, sig: signal.Signals) -> None:
            real_send(pid, handle, sig)
            if pid == proc.pid:
                stubborn.sent.append(sig)
                if stubborn.after_signal is not None:
                    stubborn.after_signal()

        monkeypatch.setattr(ops, "_send", send)
        yield stubborn
    finally:
        monkeypatch.undo()
        proc.kill()
        proc.wait(timeout=10)


def test_a_kill_stopped_after_its_sigterm_says_the_sigterm_was_sent(
    real_executor: RealExecutor,
    stubborn_orphan: StubbornOrphan,
    event_log_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ancestry could be read before the SIGTERM and not after it: no SIGKILL on a guess, and
    the record says the SIGTERM went out (it said "skipped" as if nothing had been sent)."""
    import controller.act.process_ops as ops
    from controller.observe.procfs import AncestryUnreadable

    s = stubborn_orphan
    real_walk = ops.find_live_shim

    def unreadable_after_a_signal(proc_root: Path, pid: int, container_id: str) -> str | None:
        if s.sent:
            raise AncestryUnreadable("reading its ancestor's parent: [Errno 13] Permission denied")
        return real_walk(proc_root, pid, container_id)

    monkeypatch.setattr(ops, "find_live_shim", unreadable_after_a_signal)
    report = real_executor.execute(
        make_plan(kill_action(s.proc.pid, s.start, s.container_id)), ControllerMemory(), NOW
    )
    (outcome,) = report.outcomes
    assert outcome.outcome is Outcome.SKIPPED
    assert outcome.detail.startswith("SIGTERM sent, then stopped: "), outcome.detail
    assert s.sent == [15] and s.proc.poll() is None  # no SIGKILL on a guess: it runs on
    (event,) = read_events(event_log_path)
    assert event["event_type"] == "controller.action_skipped"
    assert event["details"]["signals"] == ["SIGTERM"]
    assert event["details"]["why"].startswith("SIGTERM sent, then stopped: ")


def test_a_process_moved_to_another_cgroup_after_its_sigterm_is_not_reported_killed(
    real_executor: RealExecutor, stubborn_orphan: StubbornOrphan, event_log_path: Path
) -> None:
    """Moved out of the dead container's cgroup between the signals, it runs on: it was recorded
    as killed ("exited after SIGTERM"), read as a reused pid, and left alone without a word."""
    s = stubborn_orphan
    # Someone moves it out of the dead container's cgroup right after the SIGTERM.
    s.after_signal = lambda: (s.hierarchy / "cgroup.procs").write_text(f"{s.proc.pid}\n")
    report = real_executor.execute(
        make_plan(kill_action(s.proc.pid, s.start, s.container_id)), ControllerMemory(), NOW
    )
    (outcome,) = report.outcomes
    assert outcome.outcome is Outcome.SKIPPED, outcome.detail
    assert outcome.detail.startswith("SIGTERM sent, then stopped: "), outcome.detail
    assert "cgroup" in outcome.detail
    assert s.sent == [15] and s.proc.poll() is None  # not SIGKILLed in its new cgroup
    assert [e["event_type"] for e in read_events(event_log_path)] == ["controller.action_skipped"]


# The main thread ends (pthread_exit) and a worker thread goes on: the thread-group leader shows as a
# zombie in /proc/<pid>/stat while the process runs, and holds its GPU context, on the other thread.
MAIN_THREAD_EXITS = """\
import ctypes, threading, time
threading.Thread(target=time.sleep, args=(300,)).start()
ctypes.CDLL(None).pthread_exit(None)
"""


def test_a_process_whose_main_thread_exited_is_not_taken_for_gone(
    real_executor: RealExecutor, spawn: Any, event_log_path: Path
) -> None:
    proc = spawn(sys.executable, "-c", MAIN_THREAD_EXITS)
    for _ in range(500):
        status = Path(f"/proc/{proc.pid}/status").read_text()
        if "State:\tZ" in status and "Threads:\t2" in status:
            break
        time.sleep(0.01)
    else:
        raise AssertionError(f"pid {proc.pid}'s main thread never exited alone")
    start = psutil.Process(proc.pid).create_time()
    report = real_executor.execute(make_plan(kill_action(proc.pid, start, None)), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.DONE, report.outcomes[0].detail
    assert proc.wait(timeout=5) == -15
    (event,) = read_events(event_log_path)
    assert event["event_type"] == "process.kill" and event["details"]["signals"] == ["SIGTERM"]


def test_already_exited_process_is_success(real_executor: RealExecutor, spawn: Any) -> None:
    proc = spawn("sleep", "300")
    start = psutil.Process(proc.pid).create_time()
    proc.kill()
    proc.wait(timeout=5)
    report = real_executor.execute(make_plan(kill_action(proc.pid, start, None)), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.ALREADY_DONE


def test_protected_pids_are_never_signalled(real_executor: RealExecutor) -> None:
    actions = [
        kill_action(1, psutil.Process(1).create_time(), None, key="init"),
        kill_action(os.getpid(), psutil.Process().create_time(), None, key="self"),
        kill_action(os.getppid(), psutil.Process(os.getppid()).create_time(), None, key="parent"),
    ]
    report = real_executor.execute(make_plan(*actions), ControllerMemory(), NOW)
    assert [o.outcome for o in report.outcomes] == [Outcome.FAILED] * 3
    assert all(
        "never signalled" in o.detail or "refusing" in o.detail or "parent" in o.detail
        for o in report.outcomes
    )


# --- GPU reset --------------------------------------------------------------------------------


def reset_action(gpu: str) -> Action:
    return Action(
        kind=ActionKind.RESET_GPU,
        target=Target(gpu=gpu),
        reason=Reason.GPU_DIRTY,
        message=f"reset {gpu}",
        due_at=NOW,
        key=f"reset:{gpu}",
    )


def executor_with_reset(
    real_executor: RealExecutor, command: list[str], timeout_s: float = 5.0
) -> RealExecutor:
    real_executor._reset_command = tuple(command)
    real_executor._reset_timeout_s = timeout_s
    return real_executor


def write_script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "reset.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def test_reset_runs_argv_without_shell(
    real_executor: RealExecutor, tmp_path: Path, event_log_path: Path
) -> None:
    record = tmp_path / "argv"
    script = write_script(tmp_path, f'for a in "$@"; do echo "[$a]"; done > {record}\necho reset done\n')
    executor = executor_with_reset(real_executor, [str(script), "-r", "-i", "{uuid}"])
    report = executor.execute(make_plan(reset_action(GPU)), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.DONE, report.outcomes[0].detail
    assert record.read_text().splitlines() == ["[-r]", "[-i]", f"[{GPU}]"]
    (event,) = read_events(event_log_path)
    assert event["event_type"] == "gpu.health_check"
    assert event["details"]["status"] == "cleaned" and event["details"]["output"] == "reset done"
    # Recorded as done: the same reset is not run twice (the planner alerts instead).
    assert report.memory.done[f"reset:{GPU}"] == NOW
    record.unlink()
    again = executor.execute(make_plan(reset_action(GPU), memory=report.memory), report.memory, NOW)
    assert again.outcomes[0].outcome is Outcome.ALREADY_DONE and not record.exists()


def test_reset_failure_and_timeout_are_recorded(
    real_executor: RealExecutor, tmp_path: Path, event_log_path: Path
) -> None:
    script = write_script(tmp_path, 'echo "GPU busy" >&2\n[ "$2" = slow ] && exec sleep 30\nexit 3\n')
    executor = executor_with_reset(real_executor, [str(script), "{uuid}"], timeout_s=1.0)
    report = executor.execute(make_plan(reset_action(GPU)), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.FAILED
    assert "exit status 3" in report.outcomes[0].detail
    executor = executor_with_reset(real_executor, [str(script), "{uuid}", "slow"], timeout_s=1.0)
    slow = executor.execute(make_plan(reset_action(GPU)), ControllerMemory(), NOW)
    assert slow.outcomes[0].outcome is Outcome.FAILED and "timed out" in slow.outcomes[0].detail
    statuses = [(e["event_type"], e["details"].get("status")) for e in read_events(event_log_path)]
    assert statuses.count(("gpu.health_check", "reset_failed")) == 2


def test_reset_refuses_a_hostile_uuid(real_executor: RealExecutor, tmp_path: Path) -> None:
    record = tmp_path / "ran"
    script = write_script(tmp_path, f"touch {record}\n")
    executor = executor_with_reset(real_executor, [str(script), "{uuid}"])
    report = executor.execute(make_plan(reset_action("GPU-1234abcd; rm -rf /")), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.FAILED
    assert not record.exists()


# --- ledger -----------------------------------------------------------------------------------


def allocation(container: str, user: str = "alice") -> Allocation:
    return Allocation(
        gpu=GPU, container=container, user=user, allocated_at=datetime(2026, 1, 30, 9, tzinfo=UTC)
    )


def release_action(entry: dict[str, str], key: str = "release") -> Action:
    return Action(
        kind=ActionKind.RELEASE_ALLOCATION,
        target=Target(container=entry["container"], gpu=entry["gpu"], user=entry["user"], ledger_entry=entry),
        reason=Reason.LEAKED_ALLOCATION,
        message="release leaked row",
        due_at=NOW,
        key=key,
    )


def test_ledger_release_removes_exactly_that_row(
    real_executor: RealExecutor, ledger_path: Path, event_log_path: Path
) -> None:
    ledger_path.parent.mkdir(parents=True)
    keep, leak = allocation("web"), allocation("gone-job")
    locked_update(ledger_path, lambda _rows: [keep, leak])
    entry = leak.to_json()
    # Same row in another offset notation: still the same instant, still that row.
    entry["allocated_at"] = (leak.allocated_at + timedelta(0)).astimezone().isoformat()
    report = real_executor.execute(make_plan(release_action(entry)), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.DONE, report.outcomes[0].detail
    assert locked_update(ledger_path, lambda rows: rows) == [keep]
    (event,) = read_events(event_log_path)
    assert event["event_type"] == "gpu.release" and event["details"]["reason"] == "leaked_allocation"
    again = real_executor.execute(make_plan(release_action(entry)), ControllerMemory(), NOW)
    assert again.outcomes[0].outcome is Outcome.ALREADY_DONE


def test_ledger_row_changed_since_the_plan_is_kept(real_executor: RealExecutor, ledger_path: Path) -> None:
    ledger_path.parent.mkdir(parents=True)
    row = allocation("job", user="bob")  # re-allocated to bob after the plan saw alice's row
    locked_update(ledger_path, lambda _rows: [row])
    before = ledger_path.stat().st_mtime_ns
    planned = {**row.to_json(), "user": "alice"}
    report = real_executor.execute(make_plan(release_action(planned)), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.ALREADY_DONE
    assert locked_update(ledger_path, lambda rows: rows) == [row]
    assert before <= ledger_path.stat().st_mtime_ns
    incomplete = real_executor.execute(
        make_plan(release_action({"gpu": GPU, "container": "job", "user": "bob"})), ControllerMemory(), NOW
    )
    assert incomplete.outcomes[0].outcome is Outcome.FAILED
