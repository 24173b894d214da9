"""Reading the event log backwards stays bounded whatever the file holds (pure file I/O, no host).

``ds01ctl get events`` reads the tail of a log that may be gigabytes long. A run without newlines
(garbage, or a sparse hole left by a crash or a truncation) used to be accumulated whole and
re-copied once per block; it is now dropped as it is read, and a filter that matches nothing stops
after a bounded number of bytes. The reader still returns exactly the complete lines, last first.
"""

from __future__ import annotations

import json
import tempfile
import tracemalloc
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.act.events import EventFilter, EventLog, iter_lines_reversed, tail

MIB = 1024 * 1024


def reference(data: bytes, max_line_bytes: int) -> list[bytes]:
    """Complete lines (the unterminated last fragment dropped), last first, long ones skipped."""
    parts = data.split(b"\n")[:-1]
    return [p for p in reversed(parts) if p and len(p) <= max_line_bytes]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
    trailing=st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")),
    block=st.integers(min_value=1, max_value=64),
    max_line=st.integers(min_value=1, max_value=50),
)
def test_the_reversed_reader_returns_exactly_the_complete_lines(
    lines: list[bytes], trailing: bytes, block: int, max_line: int
) -> None:
    data = b"".join(line + b"\n" for line in lines) + trailing
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log"
        path.write_bytes(data)
        got = list(iter_lines_reversed(path, block_bytes=block, max_line_bytes=max_line))
    assert got == reference(data, max_line)


def test_a_long_run_without_newlines_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.write("before", user=None, details={})
    with path.open("ab") as f:
        f.write(b"\0" * (64 * MIB))  # a hole's worth of NUL bytes, no newline
        f.write(b"\n")
    log.write("after", user=None, details={})
    tracemalloc.start()
    try:
        got = [json.loads(line)["event_type"] for line in iter_lines_reversed(path)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == ["after", "before"]
    assert peak < 8 * MIB, peak


def test_a_filter_that_matches_nothing_stops_after_the_byte_limit(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.write("old.match", user=None, details={})
    with path.open("ab") as f:
        f.write(b"\0" * (4 * MIB) + b"\n")
    for i in range(100):
        log.write("recent.other", user=None, details={"i": i})
    flt = EventFilter(event_types=("old.*",))
    assert [e["event_type"] for e in tail(path, 5, flt)] == ["old.match"]
    assert tail(path, 5, flt, scan_limit_bytes=MIB) == []  # gave up before reaching it
