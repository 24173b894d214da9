"""Releasing a ledger row: a held lock is worth a retry, a broken ledger is not."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest

from controller.act.errors import PermanentError, TransientError
from controller.act.ledger_writer import release_row

ROW = {"gpu": "GPU-1", "container": "gone", "user": "alice", "allocated_at": "2026-11-25T10:00:00+00:00"}


def ledger(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    path = tmp_path / "gpu-ledger.json"
    path.write_text(json.dumps({"version": 1, "allocations": rows}))
    return path


def test_a_row_is_released_once(tmp_path: Path) -> None:
    other = {**ROW, "container": "kept"}
    path = ledger(tmp_path, [ROW, other])
    assert release_row(path, ROW) is True
    assert json.loads(path.read_text())["allocations"] == [other]
    assert release_row(path, ROW) is False  # already gone: nothing to do


def test_a_held_lock_is_transient(tmp_path: Path) -> None:
    path = ledger(tmp_path, [ROW])
    with (tmp_path / "gpu-ledger.json.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another writer (a separate open file description)
        with pytest.raises(TransientError, match="still locked"):
            release_row(path, ROW, timeout_s=0.2)
    assert json.loads(path.read_text())["allocations"] == [ROW]


def test_a_corrupt_ledger_is_permanent(tmp_path: Path) -> None:
    path = tmp_path / "gpu-ledger.json"
    path.write_text("{not json")
    with pytest.raises(PermanentError):
        release_row(path, ROW)
    assert path.read_text() == "{not json"


def test_a_release_keeps_what_a_later_writer_added_to_the_other_rows(tmp_path: Path) -> None:
    # Unknown keys are the format's room to grow (docs/ledger.md): a release rewrites the file, and
    # the rows it keeps, and the document around them, keep every key their writer gave them.
    other = {**ROW, "container": "kept", "slot": "1.2", "container_id": "0123456789ab"}
    path = tmp_path / "gpu-ledger.json"
    path.write_text(
        json.dumps({"version": 1, "allocator": "ds01-gpu-allocator", "allocations": [ROW, other]})
    )
    assert release_row(path, ROW) is True
    assert json.loads(path.read_text()) == {
        "version": 1,
        "allocator": "ds01-gpu-allocator",
        "allocations": [other],
    }
