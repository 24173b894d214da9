"""Usage samples (the daemon's periodic record), the reclaim rule and its live counter, and hoarding."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.act.events import MAX_LINE_BYTES, EventLog, format_line
from controller.act.report import ActionOutcome, Outcome
from controller.act.usage_recorder import UsageRecorder
from controller.cli.get import GetOptions, gpus_table
from controller.memory import ContainerMemory, ControllerMemory, Sample
from controller.ops.metrics import Metrics
from controller.plan.types import ActionKind, Reason, Target
from controller.snapshot import ContainerState, Domain
from controller.usage import (
    MIB,
    BadSample,
    DeviceSample,
    HoardingPolicy,
    HolderSample,
    ReclaimTracker,
    UsageRound,
    build_round,
    decode_round,
    encode_round,
    hoarding_now,
)
from desired_state.load import load_policy
from tests.fixtures.builders import GPU0, GPU1, T0, at, cid, exited, gpu, mig_uuid, running, snapshot

GIB = 1024**3


def memory_with(**idle: bool | None) -> ControllerMemory:
    """Container name -> idle (True: idle streak running; False: last sample active; None: no verdict)."""
    containers = {}
    for name, state in idle.items():
        cm = ContainerMemory(container_id=cid(name), name=name)
        if state is True:
            cm = cm.model_copy(update={"idle_since": T0 - timedelta(hours=1)})
        elif state is False:
            cm = cm.model_copy(update={"samples": (Sample(at=T0, idle=False),)})
        else:
            cm = cm.model_copy(update={"samples": (Sample(at=T0, idle=None),)})
        containers[cid(name)] = cm
    return ControllerMemory(containers=containers)


# --- building and writing a round -------------------------------------------------------------------


def test_a_round_records_holders_idleness_memory_and_mig_weights() -> None:
    snap = snapshot(
        gpus=[
            gpu(0, util_pct=0.0, memory_used_bytes=3 * GIB),
            gpu(1, mig_slots=2),
            gpu(2),
            gpu(3, util_pct=70.0),
        ],
        containers=[
            running("idler", gpus=[GPU0], owner="alice"),
            running("busy", gpus=["GPU-33333333-3333-3333-3333-333333333333"], owner="bob"),
            exited("parked", gpus=[mig_uuid(1, 0)], owner="carol"),
            running("fresh", gpus=[mig_uuid(1, 1)], owner="dave"),
        ],
    )
    memory = memory_with(idler=True, busy=False, fresh=None)
    r = build_round(snap, memory, {"alice": "researcher"}, 300.0)
    assert r is not None and r.at == T0
    by_slot = {d.slot: d for d in r.devices}
    assert sorted(by_slot) == ["0", "1.0", "1.1", "2", "3"]  # a MIG GPU is its devices
    assert by_slot["0"].state == "idle" and by_slot["0"].memory_used_bytes == 3 * GIB
    assert by_slot["0"].holders[0] == HolderSample(
        cid("idler")[:12], "idler", "alice", "researcher", "running", True
    )
    assert by_slot["3"].state == "busy"
    assert by_slot["1.0"].state == "idle"  # a stopped holder holds its GPU idle
    assert by_slot["1.1"].state == "unknown"  # no verdict yet is not idle
    assert by_slot["2"].state == "free"
    assert by_slot["1.0"].weight == pytest.approx(10 / 80) and by_slot["1.0"].utilization_pct is None
    assert by_slot["1.0"].holders[0].group == "-"


@pytest.mark.parametrize("down", [Domain.DOCKER, Domain.NVML])
def test_no_round_while_docker_or_nvml_is_unreadable(down: Domain) -> None:
    snap = snapshot(gpus=[gpu(0)], containers=[running("c", gpus=[GPU0])], down=[down])
    assert build_round(snap, None, {}, 300.0) is None


def test_a_large_hostile_round_splits_into_whole_lines_below_pipe_buf() -> None:
    long = "\x1b[2J" + "n" * 300
    holders = tuple(HolderSample(f"{i:012d}", long, long, long, "running", None) for i in range(4))
    devices = tuple(
        DeviceSample(f"MIG-{i:08d}-0000-0000-0000-000000000000", f"{i}.0", 0.125, 5 * GIB, None, holders, 3)
        for i in range(64)
    )
    r = UsageRound(T0, 300.0, devices)
    parts = encode_round(r)
    assert len(parts) > 1 and {p["parts"] for p in parts} == {len(parts)}
    back: list[DeviceSample] = []
    for p in parts:
        raw = format_line("controller.usage_sample", user=None, source="ds01-controller", details=p, at=T0)
        assert len(raw) <= MAX_LINE_BYTES
        event = json.loads(raw)
        assert "truncated" not in event["details"]  # never shrunk by the writer: every device whole
        back.extend(decode_round(event["details"], T0).devices)
    assert [d.uuid for d in back] == [d.uuid for d in devices]
    assert all(len(h.name) <= 128 and "\x1b" not in h.name for d in back for h in d.holders)


@pytest.mark.parametrize(
    "details",
    [
        None,
        [],
        {"v": 2, "every_s": 300, "devices": []},
        {"v": 1, "every_s": 0, "devices": []},
        {"v": 1, "every_s": 300, "devices": {}},
        {"v": 1, "every_s": 300, "at": "yesterday", "devices": []},
        {"v": 1, "every_s": 300, "at": "2026-03-02T00:00:00", "devices": []},  # no zone
        {"v": 1, "every_s": 300, "devices": [{"gpu": "GPU-1", "mem_mib": -1}]},
        {"v": 1, "every_s": 300, "devices": [{"gpu": "GPU-1", "util": float("nan")}]},
        {"v": 1, "every_s": 300, "devices": [{"gpu": "GPU-1", "w": 7}]},
        {"v": 1, "every_s": 300, "devices": [{"gpu": "x" * 500}]},
        {"v": 1, "every_s": 300, "devices": [{"gpu": "GPU-1", "holders": [{"id": "a", "idle": "yes"}]}]},
        {"v": 1, "every_s": 300, "devices": [{"gpu": "GPU-1", "holders": [{"id": "a"}] * 5}]},
        {"v": 1, "every_s": 300, "devices": [{"gpu": "GPU-1"}] * 65},
    ],
)
def test_a_sample_that_does_not_fit_the_format_is_rejected_whole(details: Any) -> None:
    with pytest.raises(BadSample):
        decode_round(details, T0)


# --- the reclaim rule ------------------------------------------------------------------------------


def test_reclaim_counts_from_the_action_while_seen_free_until_taken() -> None:
    t = ReclaimTracker(max_gap_s=600)
    t.freed([("G", 1.0)], at(minutes=1), user="alice", group="g", reason="idle_timeout", container="c")
    assert t.observe(at(), set(), {"G"}) == []  # the pass's own snapshot, before the stop: says nothing
    c1 = t.observe(at(minutes=5), {"G"}, {"G"})
    c2 = t.observe(at(minutes=10), {"G"}, {"G"})
    assert [(c.start, c.end) for c in c1 + c2] == [
        (at(minutes=1), at(minutes=5)),
        (at(minutes=5), at(minutes=10)),
    ]
    assert t.observe(at(minutes=15), set(), {"G"}) == []  # taken: the 10..15 stretch is not counted
    assert t.observe(at(minutes=20), {"G"}, {"G"}) == [] and not t.tags


def test_reclaim_stops_at_a_gap_or_when_the_device_is_not_seen() -> None:
    t = ReclaimTracker(max_gap_s=600)
    t.freed([("G", 0.5), ("H", 1.0)], at(), user="a", group="g", reason="r", container="c")
    credits = t.observe(at(minutes=5), {"G", "H"}, {"G"})  # H not listed: unknown is not free
    assert [(c.tag.uuid, c.gpu_seconds) for c in credits] == [("G", 150.0)]
    assert t.observe(at(hours=2), {"G"}, {"G"}) == []  # nobody watched for two hours
    assert not t.tags


def _outcome(
    name: str, kind: ActionKind = ActionKind.STOP_CONTAINER, outcome: Outcome = Outcome.DONE
) -> ActionOutcome:
    return ActionOutcome(
        key=f"k-{name}",
        kind=kind,
        reason=Reason.IDLE_TIMEOUT,
        target=Target(container=name, container_id=cid(name), user="alice"),
        outcome=outcome,
    )


def test_the_daemon_counts_reclaimed_gpu_seconds_live(tmp_path: Path) -> None:
    """A done idle stop frees GPU0; the next pass sees it free: 30 GPU-seconds, by reason."""
    policy = load_policy(None, None)
    log = EventLog(tmp_path / "events.jsonl")
    metrics = Metrics(version="test", now_epoch=0)
    rec = UsageRecorder()
    held = snapshot(gpus=[gpu(0), gpu(1)], containers=[running("alice-train", gpus=[GPU0])])
    rec.record(log, policy, held, ControllerMemory(), [_outcome("alice-train")], T0, metrics)
    free = snapshot(observed_at=at(seconds=30), gpus=[gpu(0), gpu(1)])
    rec.record(log, policy, free, ControllerMemory(), [], at(seconds=30), metrics)
    text = metrics.render().decode()
    assert 'ds01_gpu_seconds_reclaimed_total{reason="idle_timeout"} 30.0' in text
    taken = snapshot(
        observed_at=at(seconds=60), gpus=[gpu(0), gpu(1)], containers=[running("bob", gpus=[GPU0])]
    )
    rec.record(log, policy, taken, ControllerMemory(), [], at(seconds=60), metrics)
    assert 'ds01_gpu_seconds_reclaimed_total{reason="idle_timeout"} 30.0' in metrics.render().decode()


@pytest.mark.parametrize(
    ("outcome", "dry_run"),
    [(Outcome.DONE, True), (Outcome.FAILED, False), (Outcome.ALREADY_DONE, False), (Outcome.DRY_RUN, False)],
)
def test_nothing_is_reclaimed_by_an_action_the_controller_did_not_do(
    tmp_path: Path, outcome: Outcome, dry_run: bool
) -> None:
    policy = load_policy(None, None)
    log = EventLog(tmp_path / "events.jsonl")
    metrics = Metrics(version="test", now_epoch=0)
    rec = UsageRecorder()
    held = snapshot(gpus=[gpu(0)], containers=[running("alice-train", gpus=[GPU0])])
    rec.record(
        log,
        policy,
        held,
        ControllerMemory(),
        [_outcome("alice-train", outcome=outcome)],
        T0,
        metrics,
        dry_run=dry_run,
    )
    rec.record(
        log,
        policy,
        snapshot(observed_at=at(seconds=30), gpus=[gpu(0)]),
        ControllerMemory(),
        [],
        at(seconds=30),
        metrics,
    )
    assert "ds01_gpu_seconds_reclaimed_total{" not in metrics.render().decode()


def test_a_round_is_written_every_sample_interval(tmp_path: Path) -> None:
    policy = load_policy(None, None)  # built-in: reporting.sampleInterval 5m
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    rec = UsageRecorder()
    for seconds in (0, 30, 270, 299.5, 330, 600):
        snap = snapshot(
            observed_at=at(seconds=seconds), gpus=[gpu(0)], containers=[running("c", gpus=[GPU0])]
        )
        rec.record(log, policy, snap, ControllerMemory(), [], at(seconds=seconds))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["event_type"] for x in lines] == ["controller.usage_sample"] * 3
    assert [x["details"]["at"] for x in lines] == [
        "2026-03-02T12:00:00.000000Z",
        "2026-03-02T12:04:59.500000Z",
        "2026-03-02T12:10:00.000000Z",
    ]


def test_a_sample_that_cannot_be_written_does_not_fail_the_pass() -> None:
    class Exploding:
        def write(self, *_a: object, **_k: object) -> None:
            raise RuntimeError("disk on fire")

    class Controller:
        event_log = Exploding()
        metrics = None
        settings = type("S", (), {"dry_run": False})()
        policy = type("P", (), {"current": load_policy(None, None)})()

    snap = snapshot(gpus=[gpu(0)], containers=[running("c", gpus=[GPU0])])
    assert UsageRecorder().after_pass(Controller(), snap, ControllerMemory(), [], T0) == 0


# --- hoarding ---------------------------------------------------------------------------------------

POLICY = HoardingPolicy(memory_threshold_bytes=1024 * MIB, max_utilization_pct=1.0, window_s=1800.0)


def _dev(
    mem_gib: float, util: float | None, holder: str = "alice-train", state: str = "running"
) -> DeviceSample:
    h = HolderSample(cid(holder)[:12], holder, "alice", "g", state, False)
    return DeviceSample(GPU0, "0", 1.0, int(mem_gib * GIB), util, (h,))


def _rounds(*devs: DeviceSample, start_min: int = 0) -> list[UsageRound]:
    return [UsageRound(at(minutes=start_min + 5 * i), 300.0, (d,)) for i, d in enumerate(devs)]


def test_memory_held_at_zero_use_for_the_window_is_hoarding_even_when_busy_elsewhere() -> None:
    history = _rounds(*[_dev(4, 0.0)] * 7)  # 0..30 min; the holder is not idle (CPU busy)
    now = UsageRound(at(minutes=35), 300.0, (_dev(4, 0.0),))
    assert hoarding_now(history, now, POLICY) == {GPU0: True}


@pytest.mark.parametrize(
    ("history", "current", "expected"),
    [
        (_rounds(*[_dev(4, 0.0)] * 2), _dev(4, 0.0), None),  # 10 minutes of samples: not known yet
        (
            _rounds(_dev(4, 0.0), _dev(4, 60.0), *[_dev(4, 0.0)] * 5),
            _dev(4, 0.0),
            False,
        ),  # used in the window
        (_rounds(*[_dev(4, 0.0, holder="bob")] * 7), _dev(4, 0.0), False),  # changed hands
        ([], _dev(0.5, 0.0), False),  # below the memory threshold
        ([], _dev(4, 30.0), False),  # in use
        ([], _dev(4, None), None),  # MIG: utilisation not reported, never called a hoarder
        ([], _dev(4, 0.0, state="exited"), False),  # a stopped holder holds no memory
        (_rounds(*[_dev(4, 0.0)] * 3, start_min=-60), _dev(4, 0.0), None),  # a gap: not watched
    ],
)
def test_hoarding_needs_the_whole_window(
    history: list[UsageRound], current: DeviceSample, expected: bool | None
) -> None:
    assert hoarding_now(history, UsageRound(at(minutes=35), 300.0, (current,)), POLICY) == {GPU0: expected}


def test_get_gpus_marks_a_hoarding_gpu(tmp_path: Path) -> None:
    from controller.cli.get import gpu_items
    from controller.cli.view import LogEventSource, View
    from controller.plan.desired import PolicySetDesired

    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    for r in _rounds(*[_dev(4, 0.0)] * 7, start_min=-35):
        for details in encode_round(r):
            log.write("controller.usage_sample", user=None, details=details, at=r.at)
    log.write("controller.usage_sample", user=None, details={"v": 1, "devices": "hostile"}, at=T0)
    snap = snapshot(
        gpus=[
            gpu(0, util_pct=0.0, memory_used_bytes=4 * GIB),
            gpu(1, util_pct=0.0, memory_used_bytes=4 * GIB),
        ],
        containers=[running("alice-train", id=cid("alice-train"), gpus=[GPU0]), running("new", gpus=[GPU1])],
    )
    view = View(
        snapshot=snap,
        now=T0,
        memory=memory_with(**{"alice-train": False, "new": False}),
        desired=PolicySetDesired(load_policy(None, None)),
        event_source=LogEventSource(path),
    )

    items = gpu_items(view, GetOptions())
    marks = {i["uuid"]: i["hoarding"] for i in items}
    assert marks == {GPU0: True, GPU1: None}  # GPU1: no samples yet, not known
    table = gpus_table(items, wide=False).render()
    assert "held,hoarding" in table.splitlines()[1]
    assert "hoarding" not in table.splitlines()[2]
    assert ContainerState.RUNNING.value == "running"


def test_hoarding_is_judged_across_a_rotation_of_the_event_log(tmp_path: Path) -> None:
    # The window's first samples went into events.jsonl.1 at a rotation, the rest into the new log:
    # read from the live log alone the window had a gap, and the hoarder was "not known".
    from controller.cli.get import gpu_items
    from controller.cli.view import LogEventSource, View
    from controller.plan.desired import PolicySetDesired

    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    for i, r in enumerate(_rounds(*[_dev(4, 0.0)] * 7, start_min=-35)):
        if i == 4:
            path.rename(tmp_path / "events.jsonl.1")
        for details in encode_round(r):
            log.write("controller.usage_sample", user=None, details=details, at=r.at)
    snap = snapshot(
        gpus=[gpu(0, util_pct=0.0, memory_used_bytes=4 * GIB)],
        containers=[running("alice-train", id=cid("alice-train"), gpus=[GPU0])],
    )
    view = View(
        snapshot=snap,
        now=T0,
        memory=memory_with(**{"alice-train": False}),
        desired=PolicySetDesired(load_policy(None, None)),
        event_source=LogEventSource(path),
    )

    assert {i["uuid"]: i["hoarding"] for i in gpu_items(view, GetOptions())} == {GPU0: True}
