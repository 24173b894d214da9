"""What the views say of the controller itself: whether it runs (the note "nothing listed here is
carried out"), and its last reload's errors.

``ds01ctl plan`` lists what the controller will do; with the daemon stopped it listed the same
actions, as if they were about to run. Whether it runs is read from the kernel's lock table (the
daemon holds ``controller.lock`` for its life), never by taking the lock: a view taking it for an
instant could make a daemon starting in that instant refuse to start.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli.gather import carried_out_notes
from controller.cli.view import PolicyInfo
from controller.settings import Settings
from controller.store import LOCK_FILE, acquire_run_lock, run_lock_held

HOLD = """
import sys, time
from pathlib import Path
from controller.store import acquire_run_lock
with acquire_run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def daemon(state: Path) -> Iterator[subprocess.Popen[str]]:
    """A real process holding the run lock, as the daemon does for its life."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(state)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _not_running(notes: list[str]) -> list[str]:
    return [n for n in notes if "controller is not running" in n]


def test_a_lock_held_by_a_live_process_means_running(state: Path, daemon: subprocess.Popen[str]) -> None:
    assert run_lock_held(state) is True
    assert _not_running(carried_out_notes(Settings(state_dir=state), PolicyInfo())) == []


def test_the_lock_of_a_process_that_died_is_not_held(state: Path, daemon: subprocess.Popen[str]) -> None:
    daemon.kill()
    daemon.wait()
    deadline = time.monotonic() + 5
    while run_lock_held(state) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (state / LOCK_FILE).exists()  # the daemon never deletes it
    assert run_lock_held(state) is False
    notes = _not_running(carried_out_notes(Settings(state_dir=state), PolicyInfo()))
    assert len(notes) == 1
    assert str(state / LOCK_FILE) in notes[0] and "nothing listed here is carried out" in notes[0]


def test_a_state_directory_the_daemon_never_started_in(state: Path) -> None:
    assert run_lock_held(state) is False
    assert run_lock_held(state / "missing") is None  # not told: the views say why they cannot read it


def test_reading_does_not_take_the_lock(
    state: Path, daemon: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon.kill()
    daemon.wait()
    import fcntl

    taken: list[int] = []
    real_flock, real_lockf = fcntl.flock, fcntl.lockf
    monkeypatch.setattr(fcntl, "flock", lambda fd, op: taken.append(op) or real_flock(fd, op))
    monkeypatch.setattr(fcntl, "lockf", lambda fd, op, *a: taken.append(op) or real_lockf(fd, op, *a))
    assert run_lock_held(state) is False
    assert taken == []  # read from the kernel's table: no lock taken, not even for an instant
    monkeypatch.undo()
    with acquire_run_lock(state):  # a daemon starting just then gets it
        assert run_lock_held(state) is True


def test_a_process_waiting_for_the_lock_does_not_hold_it(state: Path, tmp_path: Path) -> None:
    with acquire_run_lock(state):
        held = (state / LOCK_FILE).stat()
    import os

    dev = f"{os.major(held.st_dev):02x}:{os.minor(held.st_dev):02x}:{held.st_ino}"
    table = tmp_path / "locks"
    table.write_text(
        f"1: FLOCK  ADVISORY  WRITE 99 00:11:22 0 EOF\n1: -> FLOCK  ADVISORY  WRITE 4242 {dev} 0 EOF\n"
    )
    assert run_lock_held(state, table) is False
    table.write_text(f"7: FLOCK  ADVISORY  WRITE 4242 {dev} 0 EOF\n")
    assert run_lock_held(state, table) is True
    # On NFS the client holds the daemon's flock as a POSIX lock: still held.
    table.write_text(f"7: POSIX  ADVISORY  WRITE 4242 {dev} 0 EOF\n")
    assert run_lock_held(state, table) is True
    assert run_lock_held(state, tmp_path / "no-such-table") is None


def test_a_failed_reload_s_error_count_is_all_of_them_not_the_twenty_kept(state: Path) -> None:
    # The status file keeps the first 20 errors: 25 were said as "(+19 more)".
    from datetime import UTC, datetime

    from controller.cli.gather import with_daemon_status
    from controller.store import write_policy_status

    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    write_policy_status(state, now, [f"specs/lab.yaml: error {i}" for i in range(25)], now)
    info = with_daemon_status(PolicyInfo(), Settings(state_dir=state), compare=False)
    assert info.daemon_error == "specs/lab.yaml: error 0 (+24 more)"
    write_policy_status(state, now, ["specs/lab.yaml: one"], now)
    assert with_daemon_status(PolicyInfo(), Settings(state_dir=state), compare=False).daemon_error == (
        "specs/lab.yaml: one"
    )


def _can_mount_btrfs() -> bool:
    import os
    import shutil

    return os.geteuid() == 0 and shutil.which("mkfs.btrfs") is not None and shutil.which("btrfs") is not None


@pytest.mark.skipif(not _can_mount_btrfs(), reason="mounts a btrfs image: needs root and btrfs-progs")
def test_a_lock_held_on_a_btrfs_subvolume_means_running(tmp_path: Path) -> None:
    # On a btrfs subvolume stat's st_dev is the subvolume's own device; the lock table names the
    # file system's: the daemon holding its lock there read as "not running".
    image, mnt = tmp_path / "fs.img", tmp_path / "mnt"
    mnt.mkdir()
    with image.open("wb") as f:
        f.truncate(200 * 1024 * 1024)
    subprocess.run(["mkfs.btrfs", "-q", str(image)], check=True, capture_output=True)
    if subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a loop device here")
    try:
        subprocess.run(["btrfs", "subvolume", "create", str(mnt / "var")], check=True, capture_output=True)
        state = mnt / "var" / "state"
        state.mkdir(mode=0o700)
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(state)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
            assert run_lock_held(state) is True
            assert _not_running(carried_out_notes(Settings(state_dir=state), PolicyInfo())) == []
        finally:
            proc.kill()
            proc.wait()
        deadline = time.monotonic() + 5
        while run_lock_held(state) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert run_lock_held(state) is False
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
