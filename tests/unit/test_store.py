"""MemoryStore: round trip, crash safety under kill -9, trust checks, read-only access, run lock."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.memory import Attempt, Breaker, ContainerMemory, ControllerMemory, Sample
from controller.plan.planner import plan
from controller.store import (
    MemoryStore,
    StoreCorrupt,
    StoreLocked,
    StoreMissing,
    StoreUnavailable,
    StoreUntrusted,
    acquire_run_lock,
    open_readonly,
)
from tests.fixtures import builders as b

AT = datetime(2026, 1, 30, 14, 30, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]
NOBODY_UID = 65534


def sample_memory() -> ControllerMemory:
    cm = ContainerMemory(
        container_id="a" * 64,
        name="web",
        started_at=AT,
        samples=(Sample(at=AT, cpu_usage_ns=5, idle=True, detail="gpu 0%"),),
        idle_since=AT,
        warnings={"idle:80": AT},
    )
    return ControllerMemory(
        containers={cm.container_id: cm},
        attempts={"StopContainer:x": Attempt(failures=2, last_error="boom", next_attempt_at=AT)},
        done={"WarnOwner:x": AT},
        breaker=Breaker(tripped=True, tripped_at=AT, reason="too many stops"),
        last_pass_at=AT,
    )


def test_a_time_without_an_offset_is_read_as_utc_and_every_pass_goes_on(tmp_path: Path) -> None:
    """The controller writes every time with its offset; one without (a hand edit, another tool)
    loaded cleanly, then failed every pass (naive against aware), and the watchdog restarted the
    daemon onto the same file, again and again."""
    state = tmp_path / "state"
    store = MemoryStore(state)
    store.save(sample_memory())
    raw = store.path.read_text()
    store.path.write_text(raw.replace("2026-01-30T14:30:00Z", "2026-01-30T14:30:00"))
    assert raw.count("2026-01-30T14:30:00Z") >= 5 and "2026-01-30T14:30:00Z" not in store.path.read_text()
    memory = MemoryStore(state).load()
    assert memory == sample_memory()
    (cm,) = memory.containers.values()
    assert cm.samples[0].at.tzinfo is not None and memory.done["WarnOwner:x"].tzinfo is not None
    later = datetime(2026, 6, 1, tzinfo=UTC)
    assert memory.pruned(later).done == {}  # compared with an aware time without error
    plan(b.snapshot(observed_at=later), b.desired(), memory, later)


def test_round_trip_and_modes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = MemoryStore(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert store.load() == ControllerMemory()  # first start: empty memory
    memory = sample_memory()
    store.save(memory)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert MemoryStore(state).load() == memory
    assert open_readonly(state).load() == memory
    assert not (state / "memory.json.tmp").exists()


def test_corrupt_and_newer_files_are_reported_and_can_be_quarantined(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "state")
    store.path.write_text("{not json")
    store.path.chmod(0o600)
    with pytest.raises(StoreCorrupt, match="not valid JSON"):
        store.load()
    moved = store.quarantine(AT)
    assert moved is not None and moved.name == "memory.json.corrupt-20260130T143000Z"
    assert store.load() == ControllerMemory()
    store.path.write_text('{"schema_version": 99}')
    with pytest.raises(StoreCorrupt, match="newer controller"):
        store.load()
    store.path.write_text('{"schema_version": 1, "done": {"k": "yesterday"}}')
    with pytest.raises(StoreCorrupt, match=r"field done\.k"):
        store.load()


def test_a_file_no_longer_trusted_fails_the_record_like_a_full_disk(tmp_path: Path) -> None:
    # chmod g+w (an admin's tool, a restore with other modes) while the daemon runs: the save is
    # refused. It was only logged at debug level: the record's health stayed good, no "RECORD
    # UNWRITABLE" was announced, and the warnings sent meanwhile were not kept.
    store = MemoryStore(tmp_path / "state")
    store.save(sample_memory())
    store.path.chmod(0o664)
    with pytest.raises(StoreUntrusted):
        store.save(ControllerMemory())
    problem = store.health.problem()
    assert problem is not None and str(store.path) in problem and "chmod go-w" in problem
    store.path.chmod(0o600)
    store.save(ControllerMemory())
    assert store.health.problem() is None


def test_untrusted_directory_and_files_are_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    MemoryStore(state).save(sample_memory())
    state.chmod(0o777)
    with pytest.raises(StoreUntrusted, match="group- or world-writable"):
        MemoryStore(state).load()
    state.chmod(0o700)
    os.chown(state / "memory.json", NOBODY_UID, -1)
    with pytest.raises(StoreUntrusted, match=f"owned by uid {NOBODY_UID}"):
        MemoryStore(state).load()
    with pytest.raises(StoreUntrusted):
        open_readonly(state).load()
    os.chown(state / "memory.json", 0, -1)
    (state / "memory.json").chmod(0o666)
    with pytest.raises(StoreUntrusted, match="chmod go-w"):
        MemoryStore(state).save(ControllerMemory())


def test_symlinked_memory_file_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    MemoryStore(state)
    target = tmp_path / "elsewhere.json"
    target.write_text(ControllerMemory().model_dump_json())
    (state / "memory.json").symlink_to(target)
    with pytest.raises(StoreUntrusted, match="not a regular file"):
        MemoryStore(state).load()
    with pytest.raises(StoreUntrusted):
        MemoryStore(state).save(ControllerMemory())
    assert target.read_text() == ControllerMemory().model_dump_json()


def test_readonly_reports_missing_state() -> None:
    with pytest.raises(StoreUnavailable, match="does not exist"):
        open_readonly(Path("/nonexistent-ds01-state")).load()


def test_readonly_before_first_save(tmp_path: Path) -> None:
    MemoryStore(tmp_path / "state")
    with pytest.raises(StoreMissing):
        open_readonly(tmp_path / "state").load()


def test_readonly_as_unprivileged_user_says_unavailable(tmp_path: Path) -> None:
    """An ordinary user's ds01ctl cannot read root's 0700 state: a clear StoreUnavailable."""
    tmp_path.chmod(0o755)
    state = tmp_path / "state"
    MemoryStore(state).save(sample_memory())
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from controller.store import StoreUnavailable, open_readonly
        os.setgid({NOBODY_UID}); os.setuid({NOBODY_UID})
        try:
            open_readonly(Path({str(state)!r})).load()
        except StoreUnavailable as exc:
            print("UNAVAILABLE", exc)
            sys.exit(0)
        sys.exit(3)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "UNAVAILABLE" in out.stdout and "permission denied" in out.stdout


SAVER = """
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from controller.memory import ControllerMemory
from controller.store import MemoryStore

store = MemoryStore(Path(sys.argv[1]))
base = datetime(2026, 1, 1, tzinfo=UTC)
n = 0
while True:
    n += 1
    # Every version is self-consistent: n done keys and last_pass_at = base + n seconds.
    done = {f"key-{i:05d}-" + "x" * 200: base for i in range(n % 400)}
    store.save(ControllerMemory(done=done, last_pass_at=base + timedelta(seconds=n % 400)))
    if n == 5:
        print("ready", flush=True)
"""


def test_kill_9_mid_save_never_leaves_half_written_state(tmp_path: Path) -> None:
    state = tmp_path / "state"
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for delay_s in (0.05, 0.13, 0.31):
        proc = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(state)], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay_s)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        memory = MemoryStore(state).load()
        assert memory.last_pass_at is not None
        n = int((memory.last_pass_at - base).total_seconds())
        assert len(memory.done) == n, "a memory from two different saves"


def test_run_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    MemoryStore(state)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from controller.store import acquire_run_lock\n"
            "with acquire_run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
            str(state),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreLocked) as info, acquire_run_lock(state):
            pass
        assert info.value.holder_pid == holder.pid
        assert f"another ds01-controller (pid {holder.pid}) holds {state / 'controller.lock'}" in str(
            info.value
        )
    finally:
        holder.kill()
        holder.wait(timeout=10)
    # The kernel released the dead holder's lock: no stale lock after a crash.
    with acquire_run_lock(state) as path:
        assert path.read_text().strip() == str(os.getpid())
        with pytest.raises(StoreLocked), acquire_run_lock(state):
            pass
