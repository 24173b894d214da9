"""Reading the event log forwards, across its rotations: what ``ds01ctl report`` adds up.

logrotate (``deploy/logrotate.d/ds01-controller``) renames ``events.jsonl`` to ``events.jsonl.1``
and compresses the older ones (``events.jsonl.2.gz`` ...); with ``dateext`` the names end in
``-YYYYMMDD[.gz]`` instead. :func:`log_files` lists them oldest first, and :func:`read_events`
streams their events in order: block by block (gzip too), never a whole file in memory. A "line"
longer than any event, a line that is not a JSON object or has no timestamp, an unterminated last
fragment and a damaged gzip stream are counted in :class:`ReadStats` and skipped, never fatal.
Files that end before the wanted period are skipped after reading one line of the next. A file
that may not be read raises ``PermissionError``: that is not damage, and the caller says so.

Called by :mod:`controller.cli.report`. Must not write anything.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

from controller.act.events import MAX_READ_LINE_BYTES, EventFilter, parse_timestamp, tail_matching

BLOCK_BYTES = 64 * 1024
_NUMBERED = re.compile(r"\.(\d{1,4})(\.gz)?$")
_DATED = re.compile(r"-(\d{8,10})(\.gz)?$")


@dataclass
class ReadStats:
    """What was read, and every line that was skipped, by why."""

    files: list[str] = field(default_factory=list)
    lines: int = 0
    events: int = 0
    garbage: int = 0  # not JSON, or not an object
    no_timestamp: int = 0
    too_long: int = 0  # longer than any event line can be
    unterminated: int = 0  # a last fragment without its newline (a short write)
    damaged_files: list[str] = field(default_factory=list)  # a gzip stream that broke off

    @property
    def skipped(self) -> int:
        return self.garbage + self.no_timestamp + self.too_long + self.unterminated

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": list(self.files),
            "lines": self.lines,
            "events": self.events,
            "skipped": {
                "garbage": self.garbage,
                "no_timestamp": self.no_timestamp,
                "too_long": self.too_long,
                "unterminated": self.unterminated,
            },
            "damaged_files": list(self.damaged_files),
        }


def log_files(path: Path) -> list[Path]:
    """``path`` and its rotated copies that exist, oldest first (the live file last)."""
    path = Path(path)
    numbered: list[tuple[int, Path]] = []
    dated: list[tuple[str, Path]] = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        siblings = []
    for p in siblings:
        if not p.name.startswith(path.name) or p.name == path.name:
            continue
        rest = p.name[len(path.name) :]
        m = _NUMBERED.fullmatch(rest)
        if m:
            numbered.append((int(m[1]), p))
            continue
        m = _DATED.fullmatch(rest)
        if m:
            dated.append((m[1], p))
    out = [p for _n, p in sorted(numbered, reverse=True)] + [p for _d, p in sorted(dated)]
    if path.exists():
        out.append(path)
    return out


def _open(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def iter_lines(path: Path, stats: ReadStats, max_line_bytes: int = MAX_READ_LINE_BYTES) -> Iterator[bytes]:
    """The file's complete lines in order, read in blocks; over-long and unterminated ones are counted."""
    buf = b""
    skipping = False  # inside a line already known to be too long
    try:
        with _open(path) as f:
            while True:
                block = f.read(BLOCK_BYTES)
                if not block:
                    break
                parts = (buf + block).split(b"\n")
                buf = parts.pop()
                for line in parts:
                    if skipping:
                        skipping = False  # this piece ends the over-long line
                        continue
                    stats.lines += 1
                    if len(line) > max_line_bytes:
                        stats.too_long += 1
                        continue
                    if line:
                        yield line
                if len(buf) > max_line_bytes:
                    if not skipping:
                        stats.lines += 1
                        stats.too_long += 1
                    buf, skipping = b"", True
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            return  # rotated away while we read: its lines are in the next name
        if isinstance(exc, PermissionError):
            raise  # not damage: the caller says who may read the log
        stats.damaged_files.append(f"{path}: {exc}")
        return
    if buf and not skipping:
        stats.lines += 1
        stats.unterminated += 1


def _decode(raw: bytes, stats: ReadStats) -> tuple[datetime, dict[str, Any]] | None:
    try:
        event = json.loads(raw)
    except ValueError:
        stats.garbage += 1
        return None
    if not isinstance(event, dict):
        stats.garbage += 1
        return None
    at = parse_timestamp(event.get("timestamp"))
    if at is None:
        stats.no_timestamp += 1
        return None
    stats.events += 1
    return at, event


def first_timestamp(path: Path) -> datetime | None:
    """The time of the first event of a file (reads only as far as that line)."""
    scratch = ReadStats()
    for raw in iter_lines(path, scratch):
        found = _decode(raw, scratch)
        if found is not None:
            return found[0]
    return None


def read_events(
    path: Path,
    start: datetime,
    end: datetime,
    stats: ReadStats | None = None,
    *,
    needles: tuple[bytes, ...] = (),
) -> Iterator[tuple[datetime, dict[str, Any]]]:
    """Every event of the log and its rotations with ``start <= time < end``, in file order.

    A rotated file is skipped unread when the next one begins at or before ``start`` (it ends
    before the period), and so is every file that begins at or after ``end``. ``needles``: a
    wanted line contains one of these bytes (a line with none of them is not decoded: a filter on
    one container reads a week's rotation in a fraction of the time).
    """
    stats = stats if stats is not None else ReadStats()
    files = log_files(path)
    firsts = [first_timestamp(p) for p in files]
    for i, p in enumerate(files):
        following = next((t for t in firsts[i + 1 :] if t is not None), None)
        if following is not None and following <= start:
            continue
        if firsts[i] is not None and firsts[i] >= end:  # type: ignore[operator]
            break
        stats.files.append(str(p))
        for raw in iter_lines(p, stats):
            if needles and not any(n in raw for n in needles):
                continue
            found = _decode(raw, stats)
            if found is not None and start <= found[0] < end:
                yield found


def tail_since(
    path: Path,
    n: int,
    flt: EventFilter,
    extra: Callable[[Mapping[str, Any]], bool] | None = None,
    widen: int = 50,
) -> list[dict[str, Any]]:
    """The last ``n`` events matching ``flt`` (which has a ``since``), oldest first: from the live
    log (read from its end, as :func:`~controller.act.events.tail`) and, where the period begins
    before the live file does (it was rotated since), from the rotations that hold the rest.

    ``extra``: a predicate the filter cannot express (an event naming a container by id); the live
    log's last ``n * widen`` events matching ``flt`` are the ones it is applied to there. Raises
    FileNotFoundError when neither the log nor a rotation of it exists."""
    since = flt.since
    if since is None:
        raise ValueError("tail_since needs a filter with a since")
    try:
        live = tail_matching(path, n, flt, extra, widen)
    except FileNotFoundError:
        if not log_files(path):
            raise  # no log and no rotation: the caller says there is none yet
        live = []  # rotated and not written since: the rotations hold the period
    begins = first_timestamp(path) if path.exists() else None
    if len(live) >= n or (begins is not None and begins <= since):
        return live
    older: deque[dict[str, Any]] = deque(maxlen=n - len(live))
    # Up to where the live file begins (every file when it holds no event): nothing read twice.
    end = begins or datetime.max.replace(tzinfo=UTC)
    for _at, event in read_events(path, since, end, needles=_needles(flt)):
        if flt.matches(event) and (extra is None or extra(event)):
            older.append(event)
    return [*older, *live]


def _needles(flt: EventFilter) -> tuple[bytes, ...]:
    """Bytes one of which every line ``flt`` matches contains, where there are such (none: every
    line is decoded): the container's name or id prefix (of a longer id its first 12 characters,
    as a line recording its short id holds them), else the user, as JSON writes them (plain
    ASCII with no character JSON escapes). With ``container_id``, its short id (an id is recorded
    whole or as one) or its name: a line logged before a rename names it by the old name and the id."""
    if flt.container_id is not None:
        values: tuple[str | None, ...] = (flt.container_id[:12], flt.container)
        wanted = [v for v in values if v]
        return tuple(v.encode("ascii") for v in wanted) if all(map(_plain, wanted)) else ()
    for value in (flt.container, flt.user):
        if value and _plain(value):
            # An id longer than a short one: a line may record its short id only.
            if value is flt.container and len(value) > 12 and all(ch in "0123456789abcdef" for ch in value):
                value = value[:12]
            return (value.encode("ascii"),)
    return ()


def _plain(value: str) -> bool:
    return value.isascii() and value.isprintable() and '"' not in value and "\\" not in value
