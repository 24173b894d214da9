"""The event log: DS01's line format, atomic appends below PIPE_BUF, hostile input, tail reading."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.act.events import (
    MAX_LINE_BYTES,
    EventFilter,
    EventLog,
    format_line,
    iter_lines_reversed,
    tail,
)
from tests.fixtures.act import has_control, strings_in

AT = datetime(2026, 1, 30, 14, 30, 0, 123456, tzinfo=UTC)


def lines_of(path: Path) -> list[dict[str, object]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    out = []
    for line in raw.split(b"\n")[:-1]:
        assert len(line) + 1 <= MAX_LINE_BYTES
        out.append(json.loads(line))
    return out


def test_line_has_ds01_shape(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl", clock=lambda: AT)
    log.write("container.remove", user="alice", source="ds01-controller", details={"reason": "hold_expired"})
    raw = (tmp_path / "events.jsonl").read_bytes()
    assert raw.count(b"\n") == 1
    assert b": " not in raw and b", " not in raw  # compact
    assert json.loads(raw) == {
        "timestamp": "2026-01-30T14:30:00.123456Z",
        "event_type": "container.remove",
        "schema_version": "1",
        "user": "alice",
        "source": "ds01-controller",
        "details": {"reason": "hold_expired"},
    }


def test_file_is_created_0640_and_appended(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "events.jsonl"
    old = os.umask(0o077)  # a restrictive umask must not change the mode either
    try:
        log = EventLog(path)
        log.write("gpu.release", user=None, details={"gpu": "GPU-1"})
        log.write("gpu.release", user=None, details={"gpu": "GPU-2"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [e["details"] for e in lines_of(path)] == [{"gpu": "GPU-1"}, {"gpu": "GPU-2"}]


def test_a_log_made_after_a_rotation_keeps_the_mode_the_admins_gave_the_one_it_replaces(
    tmp_path: Path,
) -> None:
    """DS01's docker wrapper logs as the user who runs it, so DS01's hosts make the log writable
    to all (``chmod 666``, as DS01's logger asks). logrotate renames it away (``nocreate``) and the
    next event creates it again: with that mode, not one that locks DS01's writers out."""
    path = tmp_path / "events.jsonl"
    path.touch()
    os.chmod(path, 0o666)
    path.rename(tmp_path / "events.jsonl.1")
    EventLog(path).write("gpu.release", user=None, details={})
    assert stat.S_IMODE(path.stat().st_mode) == 0o666
    # Compressed copies keep their mode too; no setuid, setgid or execute bit is ever taken over.
    for rotated in tmp_path.glob("events.jsonl*"):
        rotated.unlink()
    (tmp_path / "events.jsonl.1.gz").touch()
    os.chmod(tmp_path / "events.jsonl.1.gz", 0o6775)
    EventLog(path).write("gpu.release", user=None, details={})
    assert stat.S_IMODE(path.stat().st_mode) == 0o664
    # A copy that is not root's (whoever can write the directory could have put it there), or a
    # link, decides nothing.
    for rotated in tmp_path.glob("events.jsonl*"):
        rotated.unlink()
    (tmp_path / "events.jsonl.1").touch()
    os.chmod(tmp_path / "events.jsonl.1", 0o666)
    os.chown(tmp_path / "events.jsonl.1", 65534, -1)
    EventLog(path).write("gpu.release", user=None, details={})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    path.unlink()
    (tmp_path / "events.jsonl.1").unlink()
    (tmp_path / "elsewhere").touch()
    os.chmod(tmp_path / "elsewhere", 0o666)
    (tmp_path / "events.jsonl.1").symlink_to(tmp_path / "elsewhere")
    EventLog(path).write("gpu.release", user=None, details={})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_one_megabyte_label_is_shrunk_not_split(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    big = "x" * (1024 * 1024)
    log.write("controller.warning", user="bob", details={"reason": "idle_timeout", "labels": {"note": big}})
    log.write("controller.warning", user="bob", details={"reason": "idle_timeout", "note": big})
    many = {f"k{i}": "y" * 200 for i in range(200)}
    log.write("controller.alert", user=None, details={"status": "cleaned", **many})
    events = lines_of(tmp_path / "events.jsonl")
    assert len(events) == 3
    for e in events:
        details = e["details"]
        assert isinstance(details, dict) and details["truncated"] is True
    # The small scalar fields that say what happened survive the shrinking.
    assert events[0]["details"]["reason"] == "idle_timeout"  # type: ignore[index]
    assert events[2]["details"]["status"] == "cleaned"  # type: ignore[index]


def test_hostile_strings_never_forge_a_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    invalid_utf8 = b"name-\xff\xfe".decode("utf-8", errors="surrogateescape")
    hostile = 'evil\r\n{"event_type":"auth.granted"}\x00\x1b[2J\x1b]0;t\x07' + invalid_utf8 + "\u202e"
    log.write("container.remove", user=hostile, source=hostile, details={hostile: hostile, "n": [hostile]})
    raw = path.read_bytes()
    assert raw.count(b"\n") == 1
    assert b"\x1b" not in raw and b"\x00" not in raw and b"\r" not in raw
    event = json.loads(raw)
    assert event["event_type"] == "container.remove"
    assert not any(has_control(s) for s in strings_in(event))
    assert event["user"].startswith('evil  {"event_type":"auth.granted"}')
    assert "\ufffd" in event["user"]


def test_odd_values_are_encoded(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    EventLog(path).write(
        "x.y",
        user=None,
        details={"at": AT, "nan": float("nan"), "path": Path("/a"), "set": {1}, "bytes": b"\xff"},
    )
    details = lines_of(path)[0]["details"]
    assert details == {
        "at": "2026-01-30T14:30:00.123456Z",
        "nan": "nan",
        "path": "/a",
        "set": [1],
        "bytes": "\ufffd",
    }


def test_write_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    EventLog(blocker / "events.jsonl").write("x.y", user=None, details={})  # parent is a file
    (tmp_path / "dir.jsonl").mkdir()
    EventLog(tmp_path / "dir.jsonl").write("x.y", user=None, details={})  # path is a directory
    target = tmp_path / "target"
    target.write_text("")
    (tmp_path / "link.jsonl").symlink_to(target)
    EventLog(tmp_path / "link.jsonl").write("x.y", user=None, details={})  # symlink: refused
    assert target.read_text() == ""


def _append_many(path: str, worker: int) -> None:
    log = EventLog(Path(path))
    for i in range(200):
        log.write("x.y", user=None, details={"worker": worker, "i": i, "pad": "p" * 3000})


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    events = lines_of(path)
    assert len(events) == 800
    for w in range(4):
        assert [e["details"]["i"] for e in events if e["details"]["worker"] == w] == list(range(200))  # type: ignore[index]


def test_format_line_is_bounded_even_for_huge_header_fields() -> None:
    line = format_line(
        "e" * 10_000, user="u" * 10_000, source="s" * 10_000, details={"d": "x" * 10_000}, at=AT
    )
    assert len(line) <= MAX_LINE_BYTES
    json.loads(line)


# --- tail ------------------------------------------------------------------------------------


def write_n(path: Path, n: int, start: datetime = AT) -> None:
    log = EventLog(path)
    for i in range(n):
        log.write(
            "gpu.release" if i % 2 else "container.remove",
            user=f"u{i % 3}",
            details={"i": i, "container": f"c{i}"},
            at=start + timedelta(seconds=i),
        )


def test_tail_returns_last_n_in_order_across_blocks(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_n(path, 500)
    got = tail(path, 7)
    assert [e["details"]["i"] for e in got] == list(range(493, 500))
    # Tiny blocks: every line straddles a block boundary somewhere.
    lines = list(iter_lines_reversed(path, block_bytes=7))
    assert len(lines) == 500
    assert json.loads(lines[0])["details"]["i"] == 499
    assert json.loads(lines[-1])["details"]["i"] == 0


def test_tail_filters(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_n(path, 100)
    got = tail(path, 3, EventFilter(event_types=("gpu.*",), user="u1"))
    assert [e["details"]["i"] for e in got] == [85, 91, 97]
    since = tail(path, 1000, EventFilter(since=AT + timedelta(seconds=95)))
    assert [e["details"]["i"] for e in since] == [95, 96, 97, 98, 99]
    by_container = tail(path, 10, EventFilter(container="c42"))
    assert [e["details"]["i"] for e in by_container] == [42]


def test_tail_skips_partial_and_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_n(path, 3)
    with path.open("ab") as f:
        f.write(b"not json\n")
        f.write(b'{"timestamp": "2026-01-30T15:00:00Z", "event_type": "half')  # a write in progress
    got = tail(path, 10)
    assert [e["details"]["i"] for e in got] == [0, 1, 2]


def test_tail_does_not_read_the_whole_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "events.jsonl"
    write_n(path, 3000)  # ~0.5 MB
    size = path.stat().st_size
    read_bytes = 0
    real_open = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        f = real_open(self, *args, **kwargs)  # type: ignore[call-overload]
        real_read = f.read

        def read(n: int = -1) -> bytes:
            nonlocal read_bytes
            data = real_read(n)
            read_bytes += len(data)
            return data  # type: ignore[no-any-return]

        f.read = read
        return f

    monkeypatch.setattr(Path, "open", counting_open)
    assert len(tail(path, 5)) == 5
    assert read_bytes <= 64 * 1024 < size


def test_tail_of_empty_or_newline_free_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"")
    assert tail(path, 5) == []
    path.write_bytes(b'{"event_type": "x"}')
    assert tail(path, 5) == []
    with pytest.raises(OSError):
        tail(tmp_path / "missing.jsonl", 5)


def test_rotation_between_create_and_open_loses_no_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """logrotate renames the log after our O_EXCL create failed and before the plain open."""
    log_path = tmp_path / "events.jsonl"
    log = EventLog(log_path)
    log.write("first", user=None, source="t", details={})
    real_open = os.open
    rotated: list[bool] = []

    def racing_open(path: object, flags: int, *args: object) -> int:
        if not flags & os.O_CREAT and not rotated and Path(str(path)) == log_path:
            rotated.append(True)
            log_path.rename(tmp_path / "events.jsonl.1")  # the rotation wins the race
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", racing_open)
    log.write("second", user=None, source="t", details={})
    monkeypatch.undo()
    assert rotated == [True]
    new_lines = log_path.read_text().splitlines()
    assert [json.loads(line)["event_type"] for line in new_lines] == ["second"]
    old_lines = (tmp_path / "events.jsonl.1").read_text().splitlines()
    assert [json.loads(line)["event_type"] for line in old_lines] == ["first"]
