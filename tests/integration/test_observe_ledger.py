"""The GPU allocation ledger: reading (missing, valid, damaged), locking, atomic rewrites, and the
LEDGER domain of a whole snapshot (with the stand-in NVML resolving entries to UUIDs)."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.observe import HostObserver, ObserveConfig
from controller.observe.ledger import Allocation, LedgerError, lock_path, locked_update, read_ledger
from controller.observe.nvml import NvmlObserver
from controller.snapshot import Domain, GpuObs, GpuUuid
from tests.fixtures.nvml import FakeNvml, gpu_uuid, mig_uuid

WHEN = "2024-05-01T12:00:00+00:00"
GPUS = (GpuObs(index=0, uuid=GpuUuid(gpu_uuid(0)), name="g"),)


def write(path: Path, doc: object) -> None:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)


def row(gpu: str = gpu_uuid(0), container: str = "c1", user: str = "alice", at: str = WHEN) -> dict[str, str]:
    return {"gpu": gpu, "container": container, "user": user, "allocated_at": at}


def test_missing_ledger_is_empty_and_ok(tmp_path: Path) -> None:
    ledger = read_ledger(tmp_path / "none" / "gpu-ledger.json", GPUS)
    assert (ledger.entries, ledger.error) == ((), None)
    assert not (tmp_path / "none").exists()  # reading creates nothing where no writer ever ran


def test_valid_ledger_resolves_entries(tmp_path: Path) -> None:
    path = tmp_path / "gpu-ledger.json"
    write(path, {"version": 1, "allocations": [row(), row(gpu="0", container="c2"), row(gpu="GPU-gone")]})
    ledger = read_ledger(path, GPUS)
    assert ledger.error is None and ledger.version == 1
    assert [(e.gpu, e.gpu_uuid, e.container, e.user) for e in ledger.entries] == [
        (gpu_uuid(0), gpu_uuid(0), "c1", "alice"),
        ("0", gpu_uuid(0), "c2", "alice"),
        ("GPU-gone", None, "c1", "alice"),
    ]
    assert ledger.entries[0].allocated_at == datetime(2024, 5, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "top level"),
        ({"version": 2, "allocations": []}, "version: 2 is not supported"),
        ({"allocations": []}, "version: None"),
        ({"version": 1, "allocations": {}}, "allocations: must be a list"),
        ({"version": 1, "allocations": [row(), {"gpu": "0"}]}, "allocations[1].container"),
        ({"version": 1, "allocations": [row(at="2024-05-01 12:00")]}, "allocations[0].allocated_at"),
        ({"version": 1, "allocations": [row(at="yesterday")]}, "allocations[0].allocated_at"),
        ({"version": 1, "allocations": ["x"]}, "allocations[0]: must be an object"),
    ],
)
def test_damaged_ledger_is_an_error_naming_the_field(tmp_path: Path, content: object, fragment: str) -> None:
    path = tmp_path / "gpu-ledger.json"
    write(path, content)
    ledger = read_ledger(path, GPUS)
    assert ledger.error is not None and fragment in ledger.error and str(path) in ledger.error


def test_one_bad_entry_keeps_the_good_ones_but_flags_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "gpu-ledger.json"
    write(path, {"version": 1, "allocations": [row(), {"gpu": 5}]})
    ledger = read_ledger(path, GPUS)
    assert ledger.error is not None and len(ledger.entries) == 1


def test_locked_update_rewrites_atomically_and_refuses_a_damaged_ledger(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "gpu-ledger.json"
    alloc = Allocation(gpu="0", container="c", user="u", allocated_at=datetime(2024, 1, 1, tzinfo=UTC))
    written = locked_update(path, lambda current: [*current, alloc])
    assert written == [alloc]
    inode_before = path.stat().st_ino
    locked_update(path, lambda current: [*current, alloc])
    assert json.loads(path.read_text())["allocations"] == [alloc.to_json(), alloc.to_json()]
    assert path.stat().st_ino != inode_before  # replaced by rename, never rewritten in place
    assert lock_path(path).exists()
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []

    path.write_text("{broken")
    with pytest.raises(LedgerError, match="not valid JSON"):
        locked_update(path, lambda current: [])
    assert path.read_text() == "{broken"


def _add_many(path: str, n: int) -> None:
    for i in range(n):
        alloc = Allocation(gpu=str(i), container=f"p{os.getpid()}", user="u", allocated_at=datetime.now(UTC))
        locked_update(Path(path), lambda current, a=alloc: [*current, a], lock_timeout_s=30)


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "gpu-ledger.json"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_add_many, args=(str(path), 15)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    ledger = read_ledger(path, None)
    assert ledger.error is None and len(ledger.entries) == 45


def test_reader_waits_for_a_writer_and_times_out(tmp_path: Path) -> None:
    path = tmp_path / "gpu-ledger.json"
    write(path, {"version": 1, "allocations": []})
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        ledger = read_ledger(path, GPUS, lock_timeout_s=0.3)
        assert ledger.error is not None and "locked" in ledger.error
        # Released while the reader waits: the read succeeds.
        threading.Timer(0.2, lambda: fcntl.flock(fd, fcntl.LOCK_UN)).start()
        started = time.monotonic()
        assert read_ledger(path, GPUS, lock_timeout_s=5).error is None
        assert time.monotonic() - started >= 0.1
    finally:
        os.close(fd)


def test_snapshot_reports_the_ledger_domain(tmp_path: Path, fake_nvml: FakeNvml) -> None:
    fake_nvml.set_gpus(2)
    fake_nvml.add_mig(1)
    fake_nvml.write()
    path = tmp_path / "gpu-ledger.json"
    write(path, {"version": 1, "allocations": [row(gpu="1:0"), row(gpu=gpu_uuid(1), container="c2")]})
    # Docker is beside the point here (and unreachable on purpose): the ledger domain stands alone.
    config = ObserveConfig(ledger_path=path, docker_base_url=f"unix://{tmp_path}/no-docker.sock")
    with HostObserver(config, nvml=NvmlObserver(timeout_s=10)) as observer:
        snap = observer.observe()
        assert snap.domain_ok(Domain.LEDGER)
        assert [e.gpu_uuid for e in snap.ledger.entries] == [mig_uuid(1, 0), gpu_uuid(1)]
        path.write_text('{"version": 7}')
        damaged = observer.observe()
    assert not damaged.domain_ok(Domain.LEDGER)
    assert "version: 7" in (damaged.domain_error(Domain.LEDGER) or "")
    assert damaged.ledger.error is not None and damaged.ledger.path == str(path)
