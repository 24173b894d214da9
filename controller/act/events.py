"""The append-only event log, in DS01's ``events.jsonl`` format, and a reader for its tail.

One compact JSON object per line::

    {"timestamp":"2026-01-30T14:30:00.123456Z","event_type":"container.remove","schema_version":"1",
     "user":"alice","source":"ds01-controller","details":{"reason":"hold_expired",...}}

Guarantees of :meth:`EventLog.write`:

- every line is shorter than ``PIPE_BUF`` (4096 bytes) and written with a single ``os.write`` on
  an ``O_APPEND`` descriptor, so concurrent writers (DS01's own scripts share the file) never
  interleave and a reader never sees half a line;
- a line this writer could write only in part (a short write, on a full disk), or one left cut
  short before it started (then a restart), is ended with a newline before its next line, so the
  fragment never swallows that line (:func:`_end_fragment`);
- oversized details are shrunk (long strings cut, then the whole ``details`` replaced by
  ``{"truncated": true, ...}``): a line is never split;
- every string passes through :func:`controller.act.sanitize.clean`, so a hostile container name
  cannot forge a line, colour a terminal or make the encoder fail;
- it never raises: the log is an audit trail, and losing a line must not stop an action.

:meth:`EventLog.write_durable` is the other way to write, for the lines an action depends on (the
intent before a destructive action, its outcome after): it ``fsync``s the line and raises
:class:`controller.record.RecordUnavailable` (file and errno) when it cannot be written, so the
executor can refuse to act. Every write, either way, updates ``EventLog.health``.

Destructive actions carry ``details.phase``: ``started`` on ``controller.action_started`` (the
intent), then ``done`` on the action's own DS01 event (``maintenance.idle_kill``,
``container.remove``...; ``controller.action_done`` when it was already done), ``failed`` on
``controller.action_failed``, or ``skipped`` on ``controller.action_skipped`` when the re-check at
signal time found nothing to do. ``details.intent_at`` ties the outcome to its intent, and
``details.recovered`` marks an outcome recorded by a later pass (after a crash).

:func:`tail` reads the last lines of a multi-gigabyte file by seeking from the end.
Called by the executors, the inventory's awareness events and ``ds01ctl get events``.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import math
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

from controller.act.sanitize import ELLIPSIS, clean
from controller.record import RecordHealth

SCHEMA_VERSION = "1"
SOURCE = "ds01-controller"
PIPE_BUF_BYTES = 4096
# Strictly below PIPE_BUF, newline included.
MAX_LINE_BYTES = PIPE_BUF_BYTES - 1
LOG_FILE_MODE = 0o640
LOG_DIR_MODE = 0o755

# Reading: a "line" longer than this is not an event (every event line is < PIPE_BUF) and is skipped
# as it is read; a reader gives up this far from the end of the file.
MAX_READ_LINE_BYTES = 1024 * 1024
DEFAULT_SCAN_LIMIT_BYTES = 256 * 1024 * 1024

_MAX_STRING_CHARS = 1024  # first pass: generous, keeps error messages whole
_SHRUNK_STRING_CHARS = 128  # second pass, when the line is still too long
_MAX_DEPTH = 6
_MAX_ITEMS = 64


class EventType:
    """Event names. Lifecycle and detection names are DS01's own; ``controller.*`` are new."""

    IDLE_KILL = "maintenance.idle_kill"
    RUNTIME_KILL = "maintenance.runtime_kill"
    CONTAINER_STOP = "container.stop"
    CONTAINER_REMOVE = "container.remove"
    CONTAINER_UPDATE = "container.update"  # resource limits lowered in place (docker update)
    GPU_RELEASE = "gpu.release"
    GPU_HEALTH_CHECK = "gpu.health_check"
    PROCESS_KILL = "process.kill"
    WARNING = "controller.warning"
    ALERT = "controller.alert"
    ACTION_FAILED = "controller.action_failed"
    ACTION_SKIPPED = "controller.action_skipped"
    ACTION_STARTED = "controller.action_started"
    ACTION_DONE = "controller.action_done"
    RECORD_UNAVAILABLE = "controller.record_unavailable"
    RECORD_RECOVERED = "controller.record_recovered"
    STATE_QUARANTINED = "controller.state_quarantined"
    DRY_RUN = "controller.dry_run"
    BREAKER_TRIPPED = "controller.breaker_tripped"
    CLOCK_STEP = "controller.clock_step"  # a wall-clock step a pass saw (rebuilt by the salvage)
    RESTART_STOP = "controller.restart_stop"  # a container a restart stopped (rebuilt by the salvage)
    NOTIFICATION_FAILED = "controller.notification_failed"
    CONTAINER_DISCOVERED = "detection.container_discovered"
    CONTAINER_EXITED = "detection.container_exited"
    CONTAINER_STATUS_CHANGED = "detection.container_status_changed"
    HOST_GPU_PROCESS_DISCOVERED = "detection.host_gpu_process_discovered"
    HOST_GPU_PROCESS_EXITED = "detection.host_gpu_process_exited"
    FOREIGN_GPU_PROCESS_DISCOVERED = "detection.foreign_gpu_process_discovered"
    FOREIGN_GPU_PROCESS_EXITED = "detection.foreign_gpu_process_exited"


def utc_timestamp(at: datetime) -> str:
    """DS01's timestamp form: UTC, ISO-8601, ``Z`` suffix."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Shrink:
    """Bounds for one encoding pass, and whether anything was cut."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.cut = False

    def text(self, value: str, max_chars: int | None = None) -> str:
        limit = self.max_chars if max_chars is None else max_chars
        # Pre-cut huge values so a 1 MB label is not scanned whole; escapes removed by clean()
        # can shorten text, hence the margin.
        pre = value[: limit * 4 + 64]
        out = clean(pre, limit + 1)  # one more than allowed: tells whether clean() had to cut
        if len(out) > limit or len(pre) < len(value):
            self.cut = True
            return out[: limit - 1] + ELLIPSIS
        return out

    def value(self, value: object, depth: int = 0) -> Any:
        """Reduce any value to JSON types with cleaned, bounded strings; never raises."""
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Enum):
            return self.value(value.value, depth)
        if isinstance(value, datetime):
            return utc_timestamp(value)
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, bytes):
            return self.text(value.decode("utf-8", errors="replace"))
        if isinstance(value, PurePath):
            return self.text(str(value))
        if depth >= _MAX_DEPTH:
            self.cut = True
            return self.text(repr(value))
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for i, (k, v) in enumerate(value.items()):
                if i >= _MAX_ITEMS:
                    self.cut = True
                    out["_more_keys"] = len(value) - _MAX_ITEMS
                    break
                out[self.text(str(k), 64)] = self.value(v, depth + 1)
            return out
        if isinstance(value, list | tuple | set | frozenset):
            items = list(value)
            shown = [self.value(v, depth + 1) for v in items[:_MAX_ITEMS]]
            if len(items) > _MAX_ITEMS:
                self.cut = True
                shown.append(f"... {len(items) - _MAX_ITEMS} more")
            return shown
        model_dump = getattr(value, "model_dump", None)
        if callable(model_dump):
            try:
                return self.value(model_dump(mode="json"), depth + 1)
            except Exception:  # a broken model still gets logged, as its repr
                return self.text(repr(value))
        return self.text(str(value))


def _details(details: Mapping[str, object], max_chars: int) -> dict[str, Any]:
    shrink = _Shrink(max_chars)
    out = shrink.value(dict(details))
    if shrink.cut:
        out["truncated"] = True
    return out  # type: ignore[no-any-return]


def _encode(record: Mapping[str, Any]) -> bytes:
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8") + b"\n"


def format_line(
    event_type: str,
    *,
    user: str | None,
    source: str,
    details: Mapping[str, object],
    at: datetime,
) -> bytes:
    """Build one log line (with its newline), shrunk until it is below ``PIPE_BUF`` bytes."""
    header: dict[str, Any] = {
        "timestamp": utc_timestamp(at),
        "event_type": clean(event_type, 128),
        "schema_version": SCHEMA_VERSION,
        "user": None if user is None else clean(user, 128),
        "source": clean(source, 128),
    }
    record = {**header, "details": _details(details, _MAX_STRING_CHARS)}
    line = _encode(record)
    if len(line) <= MAX_LINE_BYTES:
        return line
    original_bytes = len(line)
    record["details"] = {**_details(details, _SHRUNK_STRING_CHARS), "truncated": True}
    line = _encode(record)
    if len(line) <= MAX_LINE_BYTES:
        return line
    # Keep the scalar fields that say what happened (reason, status, ids), drop the rest.
    kept: dict[str, Any] = {"truncated": True, "original_bytes": original_bytes}
    for key, value in _details(details, 64).items():
        if isinstance(value, str | int | float | bool) and len(kept) < 16:
            kept[key] = value
    record["details"] = kept
    line = _encode(record)
    if len(line) <= MAX_LINE_BYTES:
        return line
    record["details"] = {"truncated": True, "original_bytes": original_bytes}
    return _encode(record)  # header fields are bounded to 128 chars each: always fits


# How often to retry an open that raced with a rotation.
ROTATION_RETRIES = 5


class EventLog:
    """Appends events to one JSONL file. Safe to share with other writers of the same file."""

    def __init__(
        self, path: Path, *, clock: Callable[[], datetime] | None = None, health: RecordHealth | None = None
    ) -> None:
        self.path = Path(path)
        self._clock = clock or (lambda: datetime.now(UTC))
        self.health = health if health is not None else RecordHealth()
        # The last append was cut short: its fragment is ended before the next line.
        self._cut_short = False

    def write(
        self,
        event_type: str,
        *,
        user: str | None,
        source: str = SOURCE,
        details: Mapping[str, object] | None = None,
        at: datetime | None = None,
    ) -> None:
        """Append one event. Never raises; a failure is logged and the event is lost."""
        try:
            line = format_line(
                event_type, user=user, source=source, details=details or {}, at=at or self._clock()
            )
            self._append(line)
        except Exception as exc:  # the audit trail must never break an action
            self.health.failed(self.path, exc)
            from loguru import logger  # only here: ds01ctl reads the log without importing loguru

            logger.warning("event log {}: could not write {}: {}", self.path, clean(event_type), exc)
        else:
            self.health.ok(self.path)

    def write_durable(
        self,
        event_type: str,
        *,
        user: str | None,
        source: str = SOURCE,
        details: Mapping[str, object] | None = None,
        at: datetime | None = None,
    ) -> None:
        """Append one event and ``fsync`` it. Raises :class:`RecordUnavailable` (file and errno)."""
        line = format_line(
            event_type, user=user, source=source, details=details or {}, at=at or self._clock()
        )
        try:
            self._append(line, sync=True)
        except OSError as exc:
            raise self.health.failed(self.path, exc) from exc
        self.health.ok(self.path)

    def end_fragment_left(self) -> None:
        """End a line a previous run left cut short (a full disk, then a restart), so that the
        first line this run appends is not glued to it. Called once, at the daemon's start (a pass
        never reads the log); a log that is missing or cannot be opened is left as it is."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                _end_fragment(self.path, fd, st)
        except OSError as exc:
            from loguru import logger

            logger.warning("event log {}: could not end a line left cut short: {}", self.path, exc)
        finally:
            os.close(fd)

    def _open(self) -> int:
        """Open the log for one append, creating it 0640 if it is missing.

        logrotate may rename the file between our "create" and "open existing" attempts; then
        the second open finds nothing, and we go round again to create the new file.
        """
        # O_NONBLOCK: a FIFO put in the log's place (by whoever can write its directory) must fail
        # the open, not block the pass; it changes nothing for a regular file.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        for _ in range(ROTATION_RETRIES):
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, LOG_FILE_MODE)
                os.fchmod(fd, self._new_file_mode())  # the umask must not widen or narrow it
                return fd
            except FileExistsError:
                pass
            try:
                return os.open(self.path, flags)
            except FileNotFoundError:
                continue  # rotated away between the two opens
        raise OSError(f"{self.path} kept disappearing while opening it (rotation loop?)")

    def _new_file_mode(self) -> int:
        """The mode of a log this writer creates: that of the rotated copy it replaces
        (``<name>.1``, or ``<name>.1.gz``) when root owns that copy, as logrotate's ``create`` keeps
        it, else ``0640``. DS01's docker wrapper logs as the user who runs it, so a DS01 host makes
        the log writable to all (DS01's logger asks for ``chmod 666``); a log created ``0640`` after
        the weekly rotation would lock those writers out for good. Read and write bits only: never
        a setuid, setgid or execute bit. A copy that is a link, or not root's, decides nothing."""
        for suffix in (".1", ".1.gz"):
            try:
                st = self.path.with_name(self.path.name + suffix).lstat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_uid == 0:
                # The daemon writes as root without CAP_DAC_OVERRIDE: the owner's bits stay.
                return (stat.S_IMODE(st.st_mode) & 0o666) | 0o600
            return LOG_FILE_MODE
        return LOG_FILE_MODE

    def _append(self, line: bytes, *, sync: bool = False) -> None:
        # Never group- or world-writable, whatever the umask (others could swap the log for a link).
        self.path.parent.mkdir(mode=LOG_DIR_MODE, parents=True, exist_ok=True)
        fd = self._open()
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(f"{self.path} is not a regular file")
            if self._cut_short:
                _end_fragment(self.path, fd, st)
                self._cut_short = False
            written = os.write(fd, line)
            if written != len(line):
                # Only on a full disk; readers skip the fragment, and the next append ends it.
                self._cut_short = True
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)", str(self.path))
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)


def log_trust_problem(path: Path) -> str | None:
    """Why another user could write the event log or create it, or None when only root (or the
    user running this) can; a log or directory that does not exist yet is no problem.

    A directory others can write (a ``chmod 777``, or ``1777``) lets any user create
    ``events.jsonl`` after a rotation: the daemon, root without ``CAP_DAC_OVERRIDE``, then cannot
    append to that user's file, and destructive actions pause until the file is fixed. A log another
    user owns holds whatever its owner wrote. The log's own mode is not judged: DS01's docker
    wrapper appends as the user who runs it, so a DS01 host makes it ``0666`` on purpose."""
    trusted = {0, os.geteuid()}
    directory = path.parent
    try:
        st = directory.stat()
    except OSError:
        st = None
    if st is not None and (st.st_uid not in trusted or st.st_mode & 0o022):
        return (
            f"event log directory {directory} is owned by uid {st.st_uid} with mode "
            f"{stat.S_IMODE(st.st_mode):04o}: another user can create or replace {path.name} (after a "
            f"rotation) and lock the controller out of its record (destructive actions then pause); fix: "
            f"chown root:root {directory} && chmod 0755 {directory}"
        )
    try:
        st = path.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return f"event log {path} is not a regular file (a link?); fix: remove it, the controller creates it"
    if st.st_uid not in trusted:
        return (
            f"event log {path} is owned by uid {st.st_uid} (mode {stat.S_IMODE(st.st_mode):04o}), not root: "
            f"its lines are its owner's to write, and the controller cannot append to it unless its owner "
            f"allows it (destructive actions pause); fix: chown root:root {path} (read its lines first)"
        )
    return None


def _end_fragment(path: Path, fd: int, st: os.stat_result) -> None:
    """End the log's last line with a newline when it has none: the fragment of a short write.

    A full disk fills the page the last line ends in with the start of the next one and reports
    the rest unwritten. A line appended right after the fragment would be glued to it, and every
    reader would drop both as one malformed line: a line fsynced as the record of an action,
    lost. Ended, the fragment is a malformed line of its own. The last byte is read through a
    descriptor of its own (the log is appended to write-only), of the same file; a line another
    writer appends in between leaves an empty line, which readers skip.
    """
    if st.st_size == 0:
        return
    try:
        rfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return  # cannot be read: appended as before
    try:
        same = os.fstat(rfd)
        if (same.st_dev, same.st_ino) != (st.st_dev, st.st_ino):
            return  # rotated meanwhile: the new file has no fragment of ours
        last = os.pread(rfd, 1, st.st_size - 1)
    finally:
        os.close(rfd)
    if last not in (b"\n", b""):
        os.write(fd, b"\n")


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    """Which events :func:`tail` returns. ``event_types`` are glob patterns (``gpu.*``)."""

    event_types: tuple[str, ...] = ()
    user: str | None = None
    since: datetime | None = None
    container: str | None = None
    # ``container`` as a name only (no id prefix): a name wins over an id prefix, as in Docker.
    container_name_only: bool = False
    # The events of the container of this id (``describe``): those recording its id (a short one
    # too), under whichever name it had then (docker rename keeps the id), and those recording no id
    # that name it ``container`` (its current name). With ``container_name_only`` (``get events
    # --container NAME`` of a known container), every event naming ``container`` too.
    container_id: str | None = None
    # Events about one of these devices (UUIDs): their ``gpu``, ``gpu_uuid`` or ``device_uuid``.
    gpus: frozenset[str] = frozenset()

    def matches(self, event: Mapping[str, Any]) -> bool:
        if self.event_types and not any(
            fnmatch.fnmatchcase(str(event.get("event_type", "")), p) for p in self.event_types
        ):
            return False
        if self.user is not None and event.get("user") != self.user:
            return False
        if self.since is not None:
            at = parse_timestamp(event.get("timestamp"))
            if at is None or at < self.since:
                return False
        if self.gpus and not _names_gpu(event.get("details"), self.gpus):
            return False
        if self.container_id is not None:
            details = event.get("details")
            if not isinstance(details, Mapping):
                return False
            if self.container_name_only and container_name(details) == self.container:
                return True
            return _about_container(details, self.container_id, self.container)
        if self.container is not None:
            details = event.get("details")
            if not isinstance(details, Mapping):
                return False
            wanted = self.container
            # The name as it is (a name that begins with it is another container's), or the id by a
            # prefix of it.
            name, cid = container_name(details), details.get("container_id")
            if self.container_name_only:
                return bool(name == wanted)
            if not (
                (isinstance(name, str) and (name == wanted or (cid is None and _id_like(name, wanted))))
                or (isinstance(cid, str) and (cid.startswith(wanted) or _short_of(cid, wanted)))
            ):
                return False
        return True


def _about_container(details: Mapping[str, Any], container_id: str, name: str | None) -> bool:
    """An event about the container of ``container_id``: by the id it records, else by ``name`` (or
    the container's id written as its name). Ids outlive reused names and survive a rename."""
    cid = details.get("container_id")
    if isinstance(cid, str) and cid:
        return container_id.startswith(cid) or cid.startswith(container_id)
    recorded = container_name(details)
    return isinstance(recorded, str) and (
        recorded == name or (len(recorded) >= 12 and container_id.startswith(recorded))
    )


def _names_gpu(details: object, uuids: frozenset[str]) -> bool:
    if not isinstance(details, Mapping):
        return False
    return any(
        isinstance(v, str) and v in uuids for v in map(details.get, ("gpu", "gpu_uuid", "device_uuid"))
    )


def container_name(details: Mapping[str, Any]) -> Any:
    """The container an event's details name: ``container``, or DS01's ``name`` beside a
    ``container_id`` (its detection events write no ``container``)."""
    name = details.get("container")
    if name is None and details.get("container_id") is not None:
        return details.get("name")
    return name


def _short_of(recorded: str, wanted: str) -> bool:
    """A short id (DS01's 12 characters, as the detection events record it) of the longer id
    ``wanted``."""
    return len(recorded) >= 12 and len(wanted) > len(recorded) and wanted.startswith(recorded)


def _id_like(recorded: str, wanted: str) -> bool:
    """An event that records no container id may name its container by id (or a short id) in
    ``container``: an id prefix of it matches."""
    return (
        len(recorded) >= 12
        and all(ch in "0123456789abcdef" for ch in recorded)
        and recorded.startswith(wanted)
    )


def parse_timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def iter_lines_reversed(
    path: Path,
    block_bytes: int = 64 * 1024,
    *,
    max_line_bytes: int = MAX_READ_LINE_BYTES,
    max_scan_bytes: int | None = None,
) -> Iterator[bytes]:
    """Yield the file's complete lines, last first, reading fixed-size blocks from the end.

    A final fragment without a newline (a write in progress, or a short write) is skipped. So is
    any "line" longer than ``max_line_bytes`` (no event is; a run of garbage or a sparse hole
    would otherwise be held in memory whole and copied once per block): it is dropped as it is
    read, never accumulated. With ``max_scan_bytes``, reading stops that many bytes from the end.
    """
    with Path(path).open("rb") as f:
        end = pos = f.seek(0, os.SEEK_END)
        buf = b""  # the start of a line whose beginning lies in an earlier block
        skipping = True  # the text after the last newline seen is dropped (unterminated / too long)
        while pos > 0:
            if max_scan_bytes is not None and end - pos >= max_scan_bytes:
                return
            size = min(block_bytes, pos)
            pos -= size
            f.seek(pos)
            parts = (f.read(size) + buf).split(b"\n")
            if skipping:
                if len(parts) == 1:
                    buf = b""  # still inside the dropped text
                    continue
                skipping = False
                complete = parts[1:-1]
            else:
                complete = parts[1:]
            buf = parts[0]  # may continue in the block before this one
            for line in reversed(complete):
                if line and len(line) <= max_line_bytes:
                    yield line
            if len(buf) > max_line_bytes:
                buf, skipping = b"", True  # the line it ends is too long whatever precedes it
        if buf and not skipping:
            yield buf


def tail(
    path: Path,
    n: int,
    flt: EventFilter | None = None,
    *,
    scan_limit_lines: int = 1_000_000,
    scan_limit_bytes: int = DEFAULT_SCAN_LIMIT_BYTES,
) -> list[dict[str, Any]]:
    """The last ``n`` events matching ``flt``, oldest first. Malformed lines are skipped.

    Stops early once an event older than ``flt.since`` is read (the log is appended in time
    order), and after ``scan_limit_lines`` lines or ``scan_limit_bytes`` bytes from the end, so a
    rare filter cannot read a huge file whole (nor a multi-gigabyte run without newlines).
    Raises ``OSError`` when the file cannot be read (the CLI says why).
    """
    flt = flt or EventFilter()
    found: list[dict[str, Any]] = []
    if n <= 0:
        return found
    for scanned, raw in enumerate(iter_lines_reversed(path, max_scan_bytes=scan_limit_bytes)):
        if scanned >= scan_limit_lines:
            break
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if flt.since is not None:
            at = parse_timestamp(event.get("timestamp"))
            if at is not None and at < flt.since:
                break
        if flt.matches(event):
            found.append(event)
            if len(found) >= n:
                break
    found.reverse()
    return found


def tail_matching(
    path: Path,
    n: int,
    flt: EventFilter,
    extra: Callable[[Mapping[str, Any]], bool] | None = None,
    widen: int = 50,
) -> list[dict[str, Any]]:
    """The live log's last ``n`` events matching ``flt`` and ``extra`` (a predicate the filter cannot
    express, applied to the last ``n * widen`` events matching ``flt``), oldest first."""
    if extra is None:
        return tail(path, n, flt)
    return [e for e in tail(path, n * widen, flt) if extra(e)][-n:]
