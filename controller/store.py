"""Persistence of :class:`~controller.memory.ControllerMemory`, and the daemon's single-instance lock.

Layout of the state directory (mode 0700, owned by the daemon's user, normally root)::

    <state_dir>/memory.json       the last complete memory (mode 0600)
    <state_dir>/memory.json.tmp   the next one while it is being written (never read)
    <state_dir>/controller.lock   flock'd by the running daemon; holds its pid

Crash safety: :meth:`MemoryStore.save` writes the temporary file, ``fsync``s it, renames it over
``memory.json`` and ``fsync``s the directory. ``rename(2)`` is atomic, so after a ``kill -9`` or a
power cut a reader finds either the previous memory or the new one, never a mixture. A JSON file
(rather than SQLite) keeps read-only access trivial: ``ds01ctl`` opens the file and never takes a
lock the daemon could wait on.

Trust: the daemon runs as root and acts on what it reads here (warnings already sent, back-off),
so a directory or file that another user could have written is refused with
:class:`StoreUntrusted` rather than read.

Called by the daemon loop (:class:`MemoryStore`, :func:`acquire_run_lock`) and ``ds01ctl``
(:func:`open_readonly`). Must not import the act, observe or plan layers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from controller.memory import SCHEMA_VERSION, ControllerMemory
from controller.record import RecordHealth

MEMORY_FILE = "memory.json"
POLICY_STATUS_FILE = "policy-status.json"
INSPECT_CACHE_FILE = "inspect-cache.bin"
TMP_SUFFIX = ".tmp"
LOCK_FILE = "controller.lock"
# Written by `ds01ctl breaker reset` while the daemon holds the lock; the daemon's next pass closes
# the breakers and removes it (controller.loop).
BREAKER_RESET_REQUEST = "breaker-reset"
DIR_MODE = 0o700
FILE_MODE = 0o600


class StoreError(Exception):
    """Base of the store's errors; the message names the path and what to do."""


class StoreUnavailable(StoreError):
    """The state cannot be read (permission, missing directory or file). ``ds01ctl`` shows
    "timers unavailable"; the daemon treats it as fatal at start."""


class StoreMissing(StoreUnavailable):
    """No memory has been saved yet (the daemon has not completed a pass)."""


class StoreUntrusted(StoreError):
    """The directory or a file in it could have been written by another user."""


class StoreCorrupt(StoreError):
    """The memory file exists but is not a memory this controller can read."""


class StoreLocked(StoreError):
    """Another daemon holds the run lock."""

    def __init__(self, path: Path, holder_pid: int | None) -> None:
        who = f"pid {holder_pid}" if holder_pid is not None else "pid unknown"
        super().__init__(
            f"another ds01-controller ({who}) holds {path}; stop it first, or use a different state directory"
        )
        self.path = path
        self.holder_pid = holder_pid


def _check_trusted(path: Path, st: os.stat_result, *, allowed_uids: frozenset[int], kind: str) -> None:
    if st.st_uid not in allowed_uids:
        raise StoreUntrusted(
            f"{kind} {path} is owned by uid {st.st_uid}, not by uid {os.geteuid()} that runs the "
            f"controller; refusing to trust it (chown it, or remove it and let the controller recreate it)"
        )
    if st.st_mode & 0o022:
        raise StoreUntrusted(
            f"{kind} {path} is group- or world-writable (mode {stat.S_IMODE(st.st_mode):04o}); refusing "
            f"to trust it (chmod go-w {path})"
        )


def _lstat(path: Path, kind: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise StoreUnavailable(f"{kind} {path}: permission denied ({exc.strerror})") from exc


def _check_dir(state_dir: Path, allowed_uids: frozenset[int]) -> None:
    st = _lstat(state_dir, "state directory")
    if st is None:
        raise StoreUnavailable(f"state directory {state_dir} does not exist")
    if not stat.S_ISDIR(st.st_mode):
        raise StoreUntrusted(f"state directory {state_dir} is not a directory (a symlink or file?)")
    _check_trusted(state_dir, st, allowed_uids=allowed_uids, kind="state directory")


def _check_file(path: Path, allowed_uids: frozenset[int]) -> os.stat_result | None:
    st = _lstat(path, "state file")
    if st is None:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise StoreUntrusted(f"state file {path} is not a regular file (a symlink?); remove it")
    _check_trusted(path, st, allowed_uids=allowed_uids, kind="state file")
    return st


def _parse(path: Path, data: bytes) -> ControllerMemory:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise StoreCorrupt(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise StoreCorrupt(f"{path} does not hold a JSON object")
    version = raw.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise StoreCorrupt(
            f"{path} was written by a newer controller (schema_version {version}, this one reads "
            f"{SCHEMA_VERSION}); upgrade, or move the file aside to start with empty memory"
        )
    try:
        return ControllerMemory.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()))
        raise StoreCorrupt(f"{path}: field {field or '(root)'}: {first.get('msg')}") from exc


def _read_nofollow(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return f.read()


class MemoryStore:
    """Loads and saves the controller's memory in ``state_dir`` (created 0700 if missing)."""

    def __init__(self, state_dir: Path, health: RecordHealth | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / MEMORY_FILE
        self._tmp_path = self.state_dir / (MEMORY_FILE + TMP_SUFFIX)
        self._uids = frozenset({os.geteuid()})
        # The result of every save (file and errno on failure): the loop reports it, the executor
        # refuses destructive actions while the memory cannot be written.
        self.health = health if health is not None else RecordHealth()
        self._ensure_dir()

    def _ensure_dir(self) -> None:
        if _lstat(self.state_dir, "state directory") is None:
            try:
                self.state_dir.mkdir(mode=DIR_MODE, parents=True)
            except FileExistsError:
                pass  # created concurrently; checked below like any existing directory
            except PermissionError as exc:
                raise StoreUnavailable(
                    f"cannot create state directory {self.state_dir}: {exc.strerror}"
                ) from exc
            else:
                self.state_dir.chmod(DIR_MODE)  # mkdir's mode is reduced by the umask
        _check_dir(self.state_dir, self._uids)

    def load(self) -> ControllerMemory:
        """The saved memory; an empty one on first start. Raises :class:`StoreError` subclasses."""
        _check_dir(self.state_dir, self._uids)
        if _check_file(self.path, self._uids) is None:
            return ControllerMemory()
        try:
            data = _read_nofollow(self.path)
        except PermissionError as exc:
            raise StoreUnavailable(f"state file {self.path}: permission denied") from exc
        return _parse(self.path, data)

    def quarantine(self, at: datetime | None = None) -> Path | None:
        """Move an unreadable memory file aside (kept for the admin) so the daemon can start."""
        return quarantine_file(self.path, at)

    def load_or_quarantine(self, at: datetime | None = None) -> tuple[ControllerMemory, Path | None, str]:
        """The saved memory; a corrupt or unreadable one is moved aside and an empty memory returned.

        Returns ``(memory, quarantined_to, why)``: ``quarantined_to`` is None (and ``why`` empty)
        when the file was read. An untrusted directory or file still raises (it is refused, never
        moved or read), and so does a quarantine that cannot be done.
        """
        try:
            return self.load(), None, ""
        except StoreCorrupt as exc:
            why = str(exc)
        except StoreUnavailable as exc:
            if _lstat(self.path, "state file") is None or isinstance(exc.__cause__, PermissionError):
                raise  # no file, or a permission problem to fix: moving the file would not help
            why = str(exc)
        except OSError as exc:  # EIO and the like: the file is there but cannot be read
            why = f"{self.path} cannot be read ({exc.strerror or exc})"
        target = self.quarantine(at)
        return ControllerMemory(), target, why

    def save(self, memory: ControllerMemory) -> None:
        """Replace the saved memory atomically. Raises ``OSError`` naming the file, or :class:`StoreError`."""
        try:
            _check_dir(self.state_dir, self._uids)
            _check_file(self.path, self._uids)
            _atomic_write(self.state_dir, self.path, memory.model_dump_json().encode("utf-8"))
        except (OSError, StoreError) as exc:
            # A file or directory no longer trusted (a chmod, a restore with other modes) fails the
            # record like a full disk: announced, and no destructive action runs meanwhile.
            self.health.failed(self.path, exc)
            raise
        self.health.ok(self.path)


def quarantine_file(path: Path, at: datetime | None = None) -> Path | None:
    """Move ``path`` aside as ``<name>.corrupt-<UTC time>`` (kept for the admin); None if missing."""
    at = at or datetime.now(UTC)
    if _lstat(path, "state file") is None:
        return None
    stamp = at.strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():  # two quarantines in one second: keep both
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    path.replace(target)
    return target


def _atomic_write(state_dir: Path, path: Path, data: bytes) -> None:
    """Write, fsync, rename into place, fsync the directory: readers see old or new, never half.

    Raises ``OSError`` whose ``filename`` is ``path`` (a bare ``[Errno 28]`` names no file).
    """
    try:
        _atomic_write_unnamed(state_dir, path, data)
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc


def _atomic_write_unnamed(state_dir: Path, path: Path, data: bytes) -> None:
    tmp_path = path.with_name(path.name + TMP_SUFFIX)
    with contextlib.suppress(FileNotFoundError):
        tmp_path.unlink()  # left by a crash mid-save; never trusted, never read
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    os.close(fd)
    tmp_path.replace(path)
    dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)  # makes the rename itself durable
    finally:
        os.close(dir_fd)


def write_policy_status(
    state_dir: Path,
    loaded_at: datetime,
    errors: list[str],
    now: datetime,
    *,
    record_error: str | None = None,
    policy: dict[str, object] | None = None,
) -> None:
    """Record the daemon's last policy reload for ``ds01ctl get policies`` (never raises).

    ``record_error``: the event log or the memory cannot be written (file and errno), so the
    daemon runs no destructive action; best effort, as the status file may share the full disk.
    ``policy`` names the policy the daemon runs (sources and content digest, see
    :mod:`controller.policy_identity`), so ``ds01ctl`` can tell when its own policy differs.
    """
    status: dict[str, object] = {
        "checked_at": now.isoformat(),
        "policy_loaded_at": loaded_at.isoformat(),
        "reload_failed": bool(errors),
        "errors": errors[:20],
        "error_count": len(errors),  # all of them: the file keeps the first 20
    }
    if record_error is not None:
        status["record_error"] = record_error
    if policy is not None:
        status["policy"] = policy
    from controller import __version__

    status["controller_version"] = __version__
    try:
        _atomic_write(state_dir, state_dir / POLICY_STATUS_FILE, json.dumps(status).encode("utf-8"))
    except OSError as exc:
        from loguru import logger  # only here: ds01ctl reads this module without importing loguru

        logger.warning("cannot write {}: {}", state_dir / POLICY_STATUS_FILE, exc)


def read_policy_status(state_dir: Path) -> dict[str, object] | None:
    """The daemon's last policy reload, or None when unknown (no daemon, unreadable, untrusted)."""
    path = Path(state_dir) / POLICY_STATUS_FILE
    try:
        _check_dir(Path(state_dir), frozenset({0, os.geteuid()}))
        if _check_file(path, frozenset({0, os.geteuid()})) is None:
            return None
        value = json.loads(_read_nofollow(path))
    except (OSError, StoreError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class ReadOnlyStore:
    """Read access for ``ds01ctl``: reads the file the daemon renamed into place; takes no lock.

    Trusts files owned by root or by the caller, so an unprivileged ``ds01ctl`` may read a state
    directory the admin opened to it (chmod/ACL), but never one another user could write.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / MEMORY_FILE
        self._uids = frozenset({0, os.geteuid()})

    def load(self) -> ControllerMemory:
        _check_dir(self.state_dir, self._uids)
        if _check_file(self.path, self._uids) is None:
            if not os.access(self.state_dir, os.R_OK | os.X_OK):
                raise StoreUnavailable(f"state directory {self.state_dir}: permission denied")
            raise StoreMissing(f"no controller memory in {self.state_dir} yet (has the daemon run a pass?)")
        try:
            data = _read_nofollow(self.path)
        except PermissionError as exc:
            raise StoreUnavailable(
                f"state file {self.path}: permission denied (run ds01ctl as root for timers)"
            ) from exc
        except FileNotFoundError as exc:
            raise StoreMissing(f"no controller memory in {self.state_dir} yet") from exc
        return _parse(self.path, data)


def open_readonly(state_dir: Path) -> ReadOnlyStore:
    """A reader that never blocks or changes the running daemon's state."""
    return ReadOnlyStore(state_dir)


def _read_holder_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 64).decode("ascii", errors="replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def acquire_run_lock(state_dir: Path) -> Iterator[Path]:
    """Hold ``<state_dir>/controller.lock`` for the life of the daemon; one controller per host.

    The lock is ``flock(LOCK_EX | LOCK_NB)``: the kernel drops it when the process dies, so a
    crash never leaves a stale lock. The file is never deleted (deleting a lock file lets two
    processes each lock a different inode). Raises :class:`StoreLocked` naming the holder's pid.
    """
    state_dir = Path(state_dir)
    _check_dir(state_dir, frozenset({os.geteuid()}))
    path = state_dir / LOCK_FILE
    _check_file(path, frozenset({os.geteuid()}))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except PermissionError as exc:
        raise StoreUnavailable(f"lock file {path}: permission denied") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLocked(path, _read_holder_pid(fd)) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        os.fsync(fd)
        yield path
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def run_lock_held(state_dir: Path, locks: Path = Path("/proc/locks")) -> bool | None:
    """Whether a process holds the run lock (:func:`acquire_run_lock`): the controller runs.

    Read from the kernel's table of locks, never by trying the lock: a reader holding it for an
    instant could make a daemon starting in that instant refuse to start. None when it cannot be
    told (the state directory or the lock table unreadable); False when there is no lock file (the
    daemon writes it when it starts) or nothing holds it.
    """
    try:
        fd = os.open(Path(state_dir) / LOCK_FILE, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False if Path(state_dir).is_dir() else None
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        devs = {st.st_dev, *_mount_dev(fd)}
    except OSError:
        return None
    finally:
        os.close(fd)
    # A line: "1: FLOCK  ADVISORY  WRITE 6344 fe:00:2146705 0 EOF" (major:minor in hex, inode): the
    # device of the file system's superblock, which is not stat's st_dev on a btrfs subvolume.
    wanted = {f"{os.major(d):02x}:{os.minor(d):02x}:{st.st_ino}" for d in devs}
    try:
        table = locks.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in table.splitlines():
        fields = line.split()
        # "1: -> FLOCK ..." lines are processes waiting for a lock, not holding it. On NFS the
        # client takes a flock as a POSIX lock (and an OFD lock is one too): any lock on the file
        # counts, for the note errs towards silence, never "not running" while it runs.
        if len(fields) >= 6 and fields[1] in _HELD_LOCK_KINDS and fields[5] in wanted:
            return True
    return False


_HELD_LOCK_KINDS = frozenset({"FLOCK", "POSIX", "OFDLCK"})


def _mount_dev(fd: int) -> list[int]:
    """The device of the superblock ``fd`` lies on, as the lock table names it: its mount's
    major:minor in ``/proc/self/mountinfo`` (found by the mount id in the fd's fdinfo); none when
    it cannot be read."""
    try:
        info = Path(f"/proc/self/fdinfo/{fd}").read_text(encoding="ascii", errors="replace")
        mnt_id = next(line.split()[1] for line in info.splitlines() if line.startswith("mnt_id:"))
        for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[0] == mnt_id:
                major, minor = fields[2].split(":")
                return [os.makedev(int(major), int(minor))]
    except (OSError, StopIteration, IndexError, ValueError):
        pass
    return []


def save_inspect_cache(state_dir: Path, data: bytes) -> None:
    """Save the observer's inspect cache so a cold ``ds01ctl`` starts warm (never raises)."""
    try:
        _atomic_write(state_dir, state_dir / INSPECT_CACHE_FILE, data)
    except OSError as exc:
        from loguru import logger

        logger.debug("cannot write {}: {}", state_dir / INSPECT_CACHE_FILE, exc)


def load_inspect_cache(state_dir: Path) -> bytes | None:
    """The saved inspect cache, or None: missing, unreadable, or in a directory we do not trust."""
    return read_trusted_state_file(state_dir, INSPECT_CACHE_FILE)


def read_trusted_state_file(state_dir: Path, name: str) -> bytes | None:
    """A file the daemon (root or this user) wrote in the state directory, or None: missing,
    unreadable, or in a directory or file another user could have written."""
    path = Path(state_dir) / name
    uids = frozenset({0, os.geteuid()})
    try:
        _check_dir(Path(state_dir), uids)
        if _check_file(path, uids) is None:
            return None
        return _read_nofollow(path)
    except (OSError, StoreError):
        return None


def check_state_file(path: Path, check: Callable[[bytes], str | None]) -> str | None:
    """Why the state file ``path`` cannot be used (``check`` reads its bytes), or None: fine or missing.

    Raises :class:`StoreUntrusted` for a file another user could have written (never read, never moved).
    """
    if _check_file(path, frozenset({os.geteuid()})) is None:
        return None
    try:
        data = _read_nofollow(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return check(data)
