"""Whether the controller's durable record (its event log and its memory file) can be written.

The controller acts only when it can record what it does: before a destructive action the
executor writes an intent (a memory entry and an event-log line, both ``fsync``ed), and when
either write fails the action does not run (:class:`RecordUnavailable`). :class:`RecordHealth`
keeps the last write result per file, so the loop can report the condition (log line, event,
metric, ``ds01ctl get policies``) and notice by itself when writes succeed again.

Shared by :mod:`controller.store` (the memory file), :mod:`controller.act.events` (the event log),
the executor and the loop. Values and a lock only; no I/O here.
"""

from __future__ import annotations

import errno as errno_names
import os
import threading
from datetime import UTC, datetime
from pathlib import Path


def describe_os_error(path: Path | str, exc: BaseException) -> str:
    """``<path>: [Errno 28 ENOSPC] No space left on device``: the file and the errno, always."""
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno_names.errorcode.get(exc.errno, "?")
        text = exc.strerror or os.strerror(exc.errno)
        return f"{path}: [Errno {exc.errno} {name}] {text}"
    return f"{path}: {exc}"


class RecordUnavailable(Exception):
    """The durable record could not be written; the action that needed it was not carried out."""

    def __init__(self, path: Path | str, exc: BaseException) -> None:
        self.path = Path(path)
        self.errno = exc.errno if isinstance(exc, OSError) else None
        super().__init__(f"cannot write the record {describe_os_error(path, exc)}")


class RecordHealth:
    """The last write result of each record file; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: dict[str, tuple[str, datetime]] = {}

    def failed(self, path: Path | str, exc: BaseException) -> RecordUnavailable:
        err = RecordUnavailable(path, exc)
        with self._lock:
            previous = self._errors.get(str(path))
            since = previous[1] if previous is not None else datetime.now(UTC)
            self._errors[str(path)] = (str(err), since)
        return err

    def ok(self, path: Path | str) -> None:
        with self._lock:
            self._errors.pop(str(path), None)

    def problem(self) -> str | None:
        """The first failing file's error (file and errno), or None when every write succeeded."""
        with self._lock:
            if not self._errors:
                return None
            return "; ".join(message for _, (message, _since) in sorted(self._errors.items()))

    def failing(self) -> frozenset[str]:
        """The files whose last write failed."""
        with self._lock:
            return frozenset(self._errors)

    def since(self) -> datetime | None:
        with self._lock:
            return min((since for _, since in self._errors.values()), default=None)
