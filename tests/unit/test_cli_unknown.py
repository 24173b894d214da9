"""Issue 14's leftovers in the human views: one spelling of unknown, ``describe gpu`` without NVML,
and GPU references that never print alike.

The host is :mod:`tests.unit.cli_world`, degraded the ways a real host degrades: NVML down, Docker
down, the state directory unreadable.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from controller.cli.describe import describe_container, describe_gpu, describe_user
from controller.cli.get import GetOptions, gpu_column, run_get
from controller.cli.view import View
from controller.snapshot import Domain, DomainHealth, GpuRef, GpuRefSource, Snapshot
from tests.fixtures import builders as b
from tests.unit import cli_world as w

# What "unknown" must never be spelt as in a cell or a value: "?", "n/a", or a value with "?".
_OTHER_SPELLINGS = re.compile(r"(?:(?<=\s)|^)(?:\?|n/a|[\w./:-]+\?)(?=\s|$|,)", re.MULTILINE)


def _down(snap: Snapshot, *domains: Domain) -> Snapshot:
    health = tuple(
        DomainHealth(domain=h.domain, ok=False, error=f"{h.domain.value} failed (test)")
        if h.domain in domains
        else h
        for h in snap.health
    )
    update: dict[str, object] = {"health": health}
    if Domain.NVML in domains:
        update["gpus"] = ()
    return snap.model_copy(update=update)


def _views() -> dict[str, View]:
    base = w.view()
    return {
        "healthy": base,
        "nvml-down": dataclasses.replace(w.view(), snapshot=_down(base.snapshot, Domain.NVML)),
        "docker-down": dataclasses.replace(w.view(), snapshot=_down(base.snapshot, Domain.DOCKER)),
        "no-memory": w.view(with_memory=False),
    }


def _screens(view: View) -> dict[str, str]:
    out: dict[str, str] = {}
    for kind in ("containers", "gpus", "processes", "allocations"):
        for output in ("table", "wide"):
            out[f"get {kind} -o {output}"] = run_get(kind, view, GetOptions(output=output, show_all=True))[0]
    for c in view.snapshot.containers:
        out[f"describe container {c.name}"] = describe_container(view, c.name)
    for key in ("0", "1", "1.0", "2"):
        out[f"describe gpu {key}"] = describe_gpu(view, key)
    return out


@pytest.mark.parametrize("situation", ["healthy", "nvml-down", "docker-down", "no-memory"])
def test_unknown_is_spelt_unknown_in_every_view(situation: str) -> None:
    view = _views()[situation]
    for screen, text in _screens(view).items():
        found = _OTHER_SPELLINGS.findall(text)
        assert not found, f"{situation}: {screen} spells unknown as {found}:\n{text}"


def test_with_nvml_down_a_gpu_has_unknown_processes_not_zero() -> None:
    view = _views()["nvml-down"]
    text, _ = run_get("gpus", view, GetOptions())
    header, *rows = text.splitlines()
    col = header.split().index("PROCESSES")
    assert rows
    for row in rows:
        assert row.split()[col] == "unknown", row


def test_describe_gpu_with_nvml_down_says_what_it_can() -> None:
    """No error: the containers that reference the GPU, its ledger row, the plan, and that NVML is
    unavailable (so its model, memory, utilization and processes are unknown)."""
    view = _views()["nvml-down"]
    text = describe_gpu(view, b.GPU0)
    assert "unavailable (NVML: nvml failed (test))" in text
    assert "alice-train" in text.split("Holders")[1].split("Processes")[0]
    ledger = text.split("Ledger:")[1].split("Decision:")[0]
    assert "alice-train (alice), allocated" in ledger
    for field in ("Model", "Memory", "Utilization"):
        assert re.search(rf"^{field}:\s+unknown$", text, re.MULTILINE), field
    # A GPU nothing references: still an answer, not an error.
    other = describe_gpu(view, "7")
    assert "<none>" in other and "<no entry>" in other and "NVML is unavailable" in other


def test_gpu_references_never_print_alike() -> None:
    """Two unresolved references that share a long prefix print as two different strings."""
    raw_a = "GPU-abcdefab-1111-2222-3333-444444444444"
    raw_b = "GPU-abcdefab-1111-2222-3333-555555555555"
    refs = tuple(
        GpuRef(raw=r, source=GpuRefSource.DEVICE_REQUEST, unresolved_reason="not on this host")
        for r in (raw_a, raw_b)
    )
    c = b.running("two-refs", owner="alice").model_copy(update={"gpu_refs": refs})
    snap = b.snapshot(observed_at=w.T0, containers=[c])
    view = View(snapshot=_down(snap, Domain.NVML), now=w.T0)
    parts = gpu_column(view, c).split(",")
    assert len(parts) == 2 and parts[0] != parts[1], parts
    text, _ = run_get("containers", view, GetOptions(show_all=True))
    assert text.count("(unresolved)") == 2


def test_the_golden_host_has_no_question_mark_left(tmp_path: Path) -> None:
    """The golden files themselves (what the docs quote) spell unknown one way."""
    golden = Path(__file__).resolve().parents[1] / "data" / "cli" / "golden"
    if not golden.is_dir():
        pytest.fail(f"golden directory {golden} missing")
    for path in sorted(golden.iterdir()):
        found = _OTHER_SPELLINGS.findall(path.read_text())
        assert not found, f"{path.name}: {found}"


def test_event_details_start_with_what_happened_and_wide_shows_it_whole(tmp_path: Path) -> None:
    """DETAILS begins with the message (never the internal action key), and ``-o wide`` prints
    every value whole, however long."""
    from controller.act.events import EventFilter, EventLog
    from controller.cli.view import LogEventSource

    long_message = "stopped: idle for 2h05m (cpu 0.1% < 2%, network 3B/s, gpu 0%) " + "x" * 600 + " END"
    log = EventLog(tmp_path / "events.jsonl")
    log.write(
        "container.stop",
        user="alice",
        details={
            "key": "stop_container:" + "a" * 64 + ":idle_timeout",
            "kind": "stop_container",
            "reason": "idle_timeout",
            "container": "alice-train",
            "message": long_message,
            "evidence": {"elapsed_s": 7500.0, "timeout_s": 7200.0, "note": "y" * 500 + " EVIDENCE-END"},
        },
        at=w.T0,
    )
    view = View(
        snapshot=w.snapshot(),
        now=w.T0,
        events=LogEventSource(tmp_path / "events.jsonl").tail(10, EventFilter()),
    )
    narrow, _ = run_get("events", view, GetOptions())
    details = narrow.splitlines()[1].split("alice-train", 1)[1].strip()
    assert details.startswith("stopped: idle for 2h05m"), details
    assert "stop_container:" not in narrow
    wide, _ = run_get("events", view, GetOptions(output="wide"))
    assert long_message in wide
    assert "EVIDENCE-END" in wide


def test_a_memory_reading_nvml_could_not_give_is_unknown_not_a_dash() -> None:
    """NVML up, but one GPU's memory and one process's memory are "not available"."""
    gpu0 = b.gpu(0, memory_used_bytes=None, processes=(77,))
    snap = b.snapshot(
        observed_at=w.T0,
        gpus=[gpu0],
        processes=[b.process(77, b.GPU0).model_copy(update={"used_memory_bytes": None})],
    )
    view = View(snapshot=snap, now=w.T0)
    gpus, _ = run_get("gpus", view, GetOptions())
    assert "unknown/80Gi" in gpus, gpus
    procs, _ = run_get("processes", view, GetOptions())
    header, row = procs.splitlines()
    assert row.split()[header.split().index("MEMORY")] == "unknown", procs
    text = describe_gpu(view, "0")
    assert re.search(r"^Memory:\s+unknown used of 80Gi$", text, re.MULTILINE), text


def test_describe_user_with_the_ledger_unreadable_says_so_not_that_they_have_no_row() -> None:
    # The ledger exists but cannot be read: the user's rows are unknown. describe gpu said
    # "unreadable: ..."; describe user said "<no entry>", as if the ledger held none of theirs.
    from controller.snapshot import Ledger

    desired = b.desired(b.policy())
    busy = b.signals(b.T0, cpu_usage_ns=0, gpu_pct={b.GPU0: 90.0})
    snap = b.snapshot(
        containers=[b.running("alice-train", owner="alice", gpus=[b.GPU0], sig=busy)], gpus=[b.gpu(0)]
    )
    snap = _down(snap, Domain.LEDGER).model_copy(
        update={"ledger": Ledger(path=b.LEDGER_PATH, error="[Errno 13] Permission denied")}
    )
    p = b.Passes(desired).run(snap)
    view = View(snapshot=snap, now=b.T0, plan=p, memory=p.memory, desired=desired)
    ledger = describe_user(view, "alice").split("Ledger:")[1].split("\n\n")[0]
    assert "<no entry>" not in ledger, ledger
    assert "unreadable: [Errno 13] Permission denied" in ledger, ledger
    # A user with nothing else: not "no ledger rows" either.
    note = describe_user(view, "zed").splitlines()[0]
    assert "ledger rows," not in note and "ledger rows unknown: the ledger is unreadable" in note, note


def test_get_policies_says_unknown_for_a_failed_reload_of_unknown_time() -> None:
    # The daemon's status recorded a failed reload without its time: "FAILED at ?".
    from controller.cli.get import policy_status_line
    from controller.cli.view import PolicyInfo

    view = View(
        snapshot=b.snapshot(), now=b.T0, policy=PolicyInfo(daemon_error="bad YAML", daemon_error_at="")
    )
    line = policy_status_line(view)
    assert "FAILED at unknown" in line and not _OTHER_SPELLINGS.search(line), line


def test_a_start_or_finish_time_docker_did_not_give_is_unknown_not_none() -> None:
    # An exited container whose FinishedAt Docker left at its zero time, a running one without a
    # StartedAt: the planner holds their rules ("FinishedAt is unknown", "StartedAt is unknown").
    # describe said "stopped - of hold 30m", "started -", "running - of 1d": "-" is "none".
    nofinish = b.exited("nofinish", gpus=[b.GPU1]).model_copy(update={"finished_at": None})
    sig = b.signals(b.T0, gpu_pct={b.GPU0: 0.0})
    nostart = b.running("nostart", gpus=[b.GPU0], sig=sig).model_copy(update={"started_at": None})
    snap = b.snapshot(containers=[nofinish, nostart], gpus=[b.gpu(0), b.gpu(1)])
    desired = b.desired(b.policy())
    p = b.Passes(desired).run(snap)
    assert {d.why.value for d in p.deferred} == {"UnknownSignal"}, b.deferred_summary(p)
    view = View(snapshot=snap, now=b.T0, plan=p, memory=p.memory, desired=desired)
    stopped = describe_container(view, "nofinish")
    assert "stopped unknown of hold 30m" in stopped and "stopped - " not in stopped, stopped
    running = describe_container(view, "nostart")
    assert "started unknown" in running and "started -" not in running, running
    assert "running unknown of 1d" in running and "running - " not in running, running
    # An event line whose timestamp cannot be read: its age and time are unknown too.
    from controller.cli.get import events_table

    (row,) = events_table(view, [{"timestamp": 12345, "event_type": "x"}], wide=False).rows
    assert [cell.text for cell in row[:2]] == ["unknown", "unknown"], row


def test_a_created_time_docker_did_not_give_is_unknown_not_two_thousand_years_ago() -> None:
    # The observer gives a Created it could not read as the oldest time there is (CREATED_UNKNOWN),
    # never to be taken as an age: the planner ages such a container from its first sighting. get
    # showed AGE "739000d" (sorted it oldest), -o json "0001-01-01T00:00:00Z", describe "Created:
    # 739000d ago" and "created 739000d ago, never started".
    import json

    from controller.snapshot import CREATED_UNKNOWN

    odd = b.created("odd", created_at=b.ago(minutes=5)).model_copy(update={"created_at": CREATED_UNKNOWN})
    old = b.created("old", created_at=b.ago(minutes=20))
    snap = b.snapshot(containers=[odd, old])
    desired = b.desired(b.policy())
    p = b.Passes(desired).run(snap)
    assert not p.actions, b.summary(p)  # aged from this first sighting, not from year 1
    view = View(snapshot=snap, now=b.T0, plan=p, memory=p.memory, desired=desired)
    rows = [
        line.split() for line in run_get("containers", view, GetOptions(sort_by="age"))[0].splitlines()[1:]
    ]
    assert [(r[0], r[-1]) for r in rows] == [("old", "20m"), ("odd", "unknown")], rows
    (item,) = json.loads(run_get("containers", view, GetOptions(name="odd", output="json"))[0])["items"]
    assert item["created_at"] is None, item
    text = describe_container(view, "odd")
    assert "Created:" in text and "Created:     unknown" in text, text
    assert "created at an unknown time, never started" in text and "d ago" not in text, text
