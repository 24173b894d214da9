"""The GPU allocation ledger file: read it under a shared lock, rewrite it under an exclusive one.

Owns the on-disk format (documented in ``docs/ledger.md``)::

    {"version": 1,
     "allocations": [{"gpu": "GPU-...", "container": "name-or-id", "user": "alice",
                      "allocated_at": "2024-05-01T12:00:00+00:00"}]}

Locking: readers and writers lock a **separate** file, ``<ledger>.lock`` (``fcntl.flock``; shared for
:func:`read_ledger`, exclusive for :func:`locked_update`). The ledger itself is replaced atomically
(temporary file in the same directory, ``fsync``, ``rename``, ``fsync`` of the directory), and a
rename gives the path a new inode: a lock held on the old ledger inode would no longer exclude a
writer that opened the new one, so the lock cannot live on the ledger file itself.

Reading never raises: a missing ledger is an empty one (nothing was ever allocated through it); a
ledger that exists but cannot be parsed, has another version, or holds a bad entry is returned with
``Ledger.error`` set (naming the file, the field and the fix) and the caller reports the LEDGER
domain unavailable. Valid entries of a ledger with one bad entry are still returned, flagged by the
error. Each entry's ``gpu`` is resolved to a UUID like a container's references
(:func:`controller.observe.gpu_refs.resolve_token`).

Called by :mod:`controller.observe.host` (read) and by the executor (``locked_update``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.observe.gpu_refs import resolve_token
from controller.snapshot import GpuObs, Ledger, LedgerEntry

LEDGER_VERSION = 1
DEFAULT_LEDGER_PATH = Path("/var/lib/ds01/gpu-ledger.json")
DEFAULT_LOCK_TIMEOUT_S = 5.0
MAX_LEDGER_BYTES = 16 * 1024 * 1024
LEDGER_DIR_MODE = 0o755
_FIELDS = ("gpu", "container", "user", "allocated_at")


class LedgerError(Exception):
    """The ledger cannot be read or written; the message names the file, the field and the fix."""


class LedgerLockTimeout(LedgerError):
    """Another writer held the ledger's lock for longer than we would wait: worth a retry."""


@dataclass(frozen=True, slots=True)
class Allocation:
    """One ledger row as written to disk (``allocated_at`` is timezone-aware)."""

    gpu: str
    container: str
    user: str
    allocated_at: datetime
    # The keys its writer added that this format does not know (read, never compared): a rewrite
    # keeps them, or a release of one row would strip what a later writer recorded on the others.
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "gpu": self.gpu,
            "container": self.container,
            "user": self.user,
            "allocated_at": self.allocated_at.isoformat(),
        }


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def read_ledger(
    path: Path, gpus: Sequence[GpuObs] | None, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
) -> Ledger:
    """Read the ledger; ``gpus=None`` when NVML is unavailable (entries then resolve less)."""
    try:
        with _locked(path, fcntl.LOCK_SH, lock_timeout_s, create=False):
            text = _read_text(path)
    except LedgerError as exc:
        return Ledger(path=str(path), error=str(exc))
    if text is None:
        return Ledger(path=str(path), version=LEDGER_VERSION)
    allocations, problems, version = parse_ledger_text(text, path)
    entries = tuple(
        LedgerEntry(
            gpu=a.gpu,
            gpu_uuid=resolve_token(a.gpu, gpus).uuid,
            container=a.container,
            user=a.user,
            allocated_at=a.allocated_at,
        )
        for a in allocations
    )
    return Ledger(path=str(path), version=version, entries=entries, error="; ".join(problems) or None)


def parse_ledger_text(text: str, path: Path) -> tuple[list[Allocation], list[str], int | None]:
    """Parse ledger JSON; returns the valid allocations, the problems found and the version."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return [], [f"{path}: not valid JSON ({exc}); restore it from a backup or remove it"], None
    if not isinstance(doc, dict):
        return [], [f"{path}: the top level must be an object with 'version' and 'allocations'"], None
    version = doc.get("version")
    if version != LEDGER_VERSION or isinstance(version, bool):
        return [], [f"{path}: version: {version!r} is not supported; expected {LEDGER_VERSION}"], None
    rows = doc.get("allocations")
    if not isinstance(rows, list):
        return [], [f"{path}: allocations: must be a list (use [] for none)"], LEDGER_VERSION
    allocations: list[Allocation] = []
    problems: list[str] = []
    for i, row in enumerate(rows):
        allocation, problem = _parse_row(row, f"{path}: allocations[{i}]")
        if problem is not None:
            problems.append(problem)
        elif allocation is not None:
            allocations.append(allocation)
    return allocations, problems, LEDGER_VERSION


def _parse_row(row: object, where: str) -> tuple[Allocation | None, str | None]:
    if not isinstance(row, dict):
        return None, f"{where}: must be an object with {', '.join(_FIELDS)}"
    for key in _FIELDS:
        value = row.get(key)
        if not isinstance(value, str) or (key != "user" and not value.strip()):
            return None, f"{where}.{key}: must be a non-empty string"
    when = _parse_time(row["allocated_at"])
    if when is None:
        return None, (
            f"{where}.allocated_at: {row['allocated_at'][:64]!r} is not an ISO-8601 time with an offset; "
            "write it like 2024-05-01T12:00:00+00:00"
        )
    extra = {k: v for k, v in row.items() if k not in _FIELDS}
    allocation = Allocation(
        gpu=row["gpu"], container=row["container"], user=row["user"], allocated_at=when, extra=extra
    )
    return allocation, None


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # A time without an offset is ambiguous across hosts and DST changes.
    return parsed if parsed.tzinfo is not None else None


def locked_update(
    path: Path,
    fn: Callable[[list[Allocation]], Sequence[Allocation]],
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> list[Allocation]:
    """Read-modify-write the ledger under the exclusive lock; returns what was written.

    ``fn`` receives the current allocations (empty for a missing ledger) and returns the new list.
    Raises :class:`LedgerError` if the lock cannot be taken in time or the current ledger is
    invalid (a damaged ledger is never overwritten by a guess).
    """
    with _locked(path, fcntl.LOCK_EX, lock_timeout_s, create=True):
        text = _read_text(path)
        current: list[Allocation] = []
        around: dict[str, Any] = {}  # the document's other keys, kept as its writer left them
        if text is not None:
            current, problems, _ = parse_ledger_text(text, path)
            if problems:
                raise LedgerError("; ".join(problems))
            around = {k: v for k, v in json.loads(text).items() if k not in {"version", "allocations"}}
        new = list(fn(list(current)))
        for a in new:
            if a.allocated_at.tzinfo is None:
                raise LedgerError(f"{path}: allocated_at of {a.gpu}/{a.container} needs a timezone")
        doc = {**around, "version": LEDGER_VERSION, "allocations": [a.to_json() for a in new]}
        _write_atomically(path, doc)
        return new


def _read_text(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_LEDGER_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LedgerError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from exc
    if len(data) > MAX_LEDGER_BYTES:
        raise LedgerError(f"{path}: larger than {MAX_LEDGER_BYTES} bytes; it is not a ledger")
    return data.decode("utf-8", errors="replace")


def _write_atomically(path: Path, doc: dict[str, Any]) -> None:
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def _locked(path: Path, operation: int, timeout_s: float, *, create: bool) -> Iterator[None]:
    lock = lock_path(path)
    fd: int | None
    try:
        if create:
            # Never group- or world-writable, whatever the umask: others could swap the ledger.
            path.parent.mkdir(mode=LEDGER_DIR_MODE, parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        else:
            fd = _open_lock_for_reading(lock, path)
    except OSError as exc:
        raise LedgerError(f"{lock}: cannot open the lock file ({exc.strerror})") from exc
    if fd is None:
        # No ledger directory or no lock file and no right to create one: no writer has ever run here.
        yield
        return
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in {errno.EWOULDBLOCK, errno.EAGAIN}:
                    raise LedgerError(f"{lock}: cannot lock ({exc.strerror})") from exc
                if time.monotonic() >= deadline:
                    raise LedgerLockTimeout(
                        f"{lock}: still locked by another writer after {timeout_s:g} s"
                    ) from exc
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the fd releases the flock


def _open_lock_for_reading(lock: Path, ledger: Path) -> int | None:
    try:
        return os.open(lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        pass
    if not ledger.parent.is_dir():
        return None
    try:
        # A shared lock needs the file to exist; create it so a concurrent writer is excluded.
        return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except PermissionError:
        return None
