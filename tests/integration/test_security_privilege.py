"""Local privilege: file modes, what an ordinary user's ``ds01ctl`` can do, and untrusted paths.

- Everything the controller creates (state directory, memory, run lock, event log and its
  directory, ledger, its lock and directory) is created with restrictive modes even under
  ``umask 000``; the daemon's own start (``ds01-controller run --once --dry-run``) included.
- ``ds01ctl`` run as an ordinary user (``ds01-test-user``, created if absent, run through
  ``setpriv`` with no capabilities) reads only what the admins opened to it, and changes nothing:
  ``breaker reset`` and ``reconcile`` are refused with one clear line, and the memory (a tripped
  breaker) is unchanged, with or without a daemon holding the run lock.
- A state directory another user owns, or one anyone may write, is refused by the daemon and by
  ``ds01ctl`` with one line naming the problem; a run lock or memory file that is a symlink is
  refused and its target untouched; a memory file planted by another user is not shown as the
  controller's; an event log that another user replaced by a FIFO does not hang a writer.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.act.events import EventLog
from controller.memory import Breaker, ControllerMemory
from controller.observe.ledger import Allocation, locked_update
from controller.store import MemoryStore, acquire_run_lock

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
TEST_USER = "ds01-test-user"
SETPRIV = ["setpriv", f"--reuid={TEST_USER}", f"--regid={TEST_USER}", "--clear-groups"]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(scope="module")
def test_user() -> int:
    if subprocess.run(["id", "-u", TEST_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-M", TEST_USER], check=True, capture_output=True)
    return int(subprocess.run(["id", "-u", TEST_USER], capture_output=True, text=True, check=True).stdout)


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


def not_writable_by_others(path: Path) -> bool:
    return mode(path) & 0o022 == 0


# --- modes -------------------------------------------------------------------------------------------


def test_everything_is_created_with_restrictive_modes_even_under_umask_000(
    open_umask: None, tmp_path: Path
) -> None:
    state = tmp_path / "var" / "lib" / "ds01"
    store = MemoryStore(state)
    store.save(ControllerMemory())
    with acquire_run_lock(state):
        pass
    log = tmp_path / "var" / "log" / "ds01" / "events.jsonl"
    EventLog(log).write("test.mode", user=None, details={})
    ledger = tmp_path / "ledger-dir" / "gpu-ledger.json"
    row = Allocation(gpu="GPU-0", container="c", user="alice", allocated_at=datetime.now(UTC))
    locked_update(ledger, lambda _rows: [row])

    assert (mode(state), mode(state / "memory.json"), mode(state / "controller.lock")) == (
        0o700,
        0o600,
        0o600,
    )
    assert mode(log) == 0o640 and not_writable_by_others(log.parent)
    # The ledger is DS01's shared file: readable by DS01's user-facing tools, writable only by root.
    assert mode(ledger) == 0o644 and not_writable_by_others(ledger.parent)
    assert not_writable_by_others(ledger.with_name(ledger.name + ".lock"))


def test_the_daemon_creates_its_state_and_log_directories_private(tmp_path: Path) -> None:
    state, logs = tmp_path / "state", tmp_path / "log"
    result = subprocess.run(
        [sys.executable, "-m", "controller.main", "run", "--once", "--dry-run"],
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("DS01_")},
            "DS01_STATE_DIR": str(state),
            "DS01_EVENTS_LOG": str(logs / "events.jsonl"),
            "DS01_LEDGER": str(tmp_path / "ledger.json"),
        },
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=lambda: os.umask(0),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert mode(state) == 0o700 and mode(state / "memory.json") == 0o600
    assert not_writable_by_others(logs)


# --- an ordinary user's ds01ctl ------------------------------------------------------------------------


def python_for_user() -> list[str]:
    """An interpreter the test user can run, with this checkout and its dependencies on the path."""
    for candidate in (sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"):
        probe = subprocess.run([*SETPRIV, candidate, "-c", "import sys"], capture_output=True)
        if Path(candidate).exists() and probe.returncode == 0:
            return [candidate]
    pytest.fail(
        f"no Python {sys.version_info[0]}.{sys.version_info[1]} that {TEST_USER} may run "
        f"({sys.executable} is not reachable for other users)"
    )


@pytest.fixture
def root_state() -> Iterator[dict[str, Path]]:
    """A daemon's state (breaker tripped) and event log, as root leaves them, in a directory every
    user may traverse (pytest's own temporary directories are private to root): only the files'
    own modes decide what the user sees."""
    base = Path(tempfile.mkdtemp(prefix="ds01-security-"))
    base.chmod(0o755)
    state = base / "state"
    store = MemoryStore(state)
    tripped = Breaker(tripped=True, tripped_at=datetime.now(UTC), reason="7 of 8 GPU containers at once")
    store.save(ControllerMemory().with_breaker(tripped))
    log = base / "events.jsonl"
    EventLog(log).write("controller.breaker_tripped", user=None, details={"reason": "test"})
    yield {"state": state, "events": log, "memory": state / "memory.json", "tmp": base}
    shutil.rmtree(base)


def ds01ctl_as_user(paths: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    site = sysconfig.get_paths()["purelib"]
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{REPO}:{site}",
        "DS01_STATE_DIR": str(paths["state"]),
        "DS01_EVENTS_LOG": str(paths["events"]),
        "DS01_LEDGER": str(paths["tmp"] / "ledger.json"),
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [*SETPRIV, *python_for_user(), "-m", "controller.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("ds01ctl: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def breaker_still_tripped(paths: dict[str, Path]) -> bool:
    return MemoryStore(paths["state"]).load().breaker.tripped


def test_an_ordinary_user_can_change_nothing(test_user: int, root_state: dict[str, Path]) -> None:
    before = root_state["memory"].read_bytes()
    one_line_error(ds01ctl_as_user(root_state, "breaker", "reset"), "run it as root")
    one_line_error(ds01ctl_as_user(root_state, "reconcile"), "run it as root")
    one_line_error(ds01ctl_as_user(root_state, "reconcile", "--dry-run"), "run it as root")
    assert root_state["memory"].read_bytes() == before and breaker_still_tripped(root_state)
    assert sorted(p.name for p in root_state["state"].iterdir()) == ["memory.json"]


def test_an_ordinary_user_cannot_leave_a_reset_request_while_the_daemon_runs(
    test_user: int, root_state: dict[str, Path]
) -> None:
    root_state["state"].chmod(0o755)  # even with the state directory opened for reading
    with acquire_run_lock(root_state["state"]):
        one_line_error(ds01ctl_as_user(root_state, "breaker", "reset"), "refusing")
    assert not (root_state["state"] / "breaker-reset").exists() and breaker_still_tripped(root_state)


def test_an_ordinary_user_reads_only_what_the_admins_opened(
    test_user: int, root_state: dict[str, Path]
) -> None:
    one_line_error(ds01ctl_as_user(root_state, "get", "events"), "permission denied")
    one_line_error(ds01ctl_as_user(root_state, "breaker", "status"), "permission denied")
    # The admin opens the event log and the state to the user (group/ACL, or modes as here).
    root_state["events"].chmod(0o644)
    root_state["state"].chmod(0o755)
    root_state["memory"].chmod(0o644)
    events = ds01ctl_as_user(root_state, "get", "events")
    assert events.returncode == 0 and "controller.breaker_tripped" in events.stdout, events.stderr
    status = ds01ctl_as_user(root_state, "breaker", "status")
    assert status.returncode == 0 and "TRIPPED" in status.stdout, status.stderr


# --- untrusted paths ---------------------------------------------------------------------------------


def daemon_once(state: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.main", "run", "--once", "--dry-run"],
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("DS01_")},
            "DS01_STATE_DIR": str(state),
            "DS01_EVENTS_LOG": str(tmp_path / "log" / "events.jsonl"),
            "DS01_LEDGER": str(tmp_path / "ledger.json"),
        },
        capture_output=True,
        text=True,
        timeout=180,
    )


def ds01ctl_root(state: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DS01_")}
    env.update(
        {"DS01_STATE_DIR": str(state), "DS01_EVENTS_LOG": str(tmp_path / "events.jsonl"), "NO_COLOR": "1"}
    )
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def planted_memory(state: Path) -> None:
    """A memory file as an attacker would write it: the breaker 'tripped' to stall the controller."""
    forged = ControllerMemory().with_breaker(Breaker(tripped=True, reason="FORGED by another user"))
    (state / "memory.json").write_text(forged.model_dump_json())


@pytest.mark.parametrize("how", ["owned-by-another-user", "world-writable"])
def test_an_untrusted_state_directory_is_refused(test_user: int, tmp_path: Path, how: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    planted_memory(state)
    if how == "owned-by-another-user":
        os.chown(state, test_user, test_user)
        os.chown(state / "memory.json", test_user, test_user)
        expected = f"owned by uid {test_user}"
    else:
        state.chmod(0o777)
        expected = "world-writable"
    daemon = daemon_once(state, tmp_path)
    assert daemon.returncode == 1 and "Traceback" not in daemon.stderr
    refusal = [line for line in daemon.stderr.splitlines() if "refusing to trust" in line]
    assert len(refusal) == 1 and expected in refusal[0], daemon.stderr
    one_line_error(ds01ctl_root(state, tmp_path, "breaker", "reset"), expected)
    # Read-only commands do not present the planted memory as the controller's.
    status = ds01ctl_root(state, tmp_path, "breaker", "status")
    assert "FORGED" not in status.stdout and status.returncode == 1 and expected in status.stderr


@pytest.mark.parametrize("name", ["controller.lock", "memory.json"])
def test_a_symlinked_lock_or_memory_file_is_refused_and_its_target_untouched(
    tmp_path: Path, name: str
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    target = tmp_path / "precious"
    target.write_text("not the controller's\n")
    target.chmod(0o644)
    (state / name).symlink_to(target)
    daemon = daemon_once(state, tmp_path)
    assert daemon.returncode == 1 and "Traceback" not in daemon.stderr
    assert any("not a regular file" in line and name in line for line in daemon.stderr.splitlines()), (
        daemon.stderr
    )
    assert target.read_text() == "not the controller's\n" and mode(target) == 0o644
    assert (state / name).is_symlink()


def test_an_event_log_replaced_by_a_fifo_does_not_hang_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "events.jsonl"
    os.mkfifo(fifo, 0o666)
    log = EventLog(fifo)
    box: dict[str, Any] = {}
    writer = threading.Thread(
        target=lambda: box.setdefault("done", log.write("test.fifo", user=None)), daemon=True
    )
    writer.start()
    writer.join(30)
    if writer.is_alive():
        # Release the blocked writer (a reader arriving), then report.
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        writer.join(5)
        os.close(fd)
        pytest.fail("EventLog.write blocked opening a FIFO in place of the log")
    assert "done" in box
