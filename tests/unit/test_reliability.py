"""Reliability under faults: the pass summary for a domain that is down, durable intent records,
failing closed when the record cannot be written, and starting from corrupt state (issue 18)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from controller.act.events import EventLog, tail, utc_timestamp
from controller.act.report import ExecutionReport
from controller.act.salvage import load_state, memory_from_event_log, memory_from_events
from controller.loop import summarize
from controller.memory import Breaker, ContainerMemory, ControllerMemory
from controller.plan.planner import plan
from controller.plan.types import Plan
from controller.record import RecordUnavailable, describe_os_error
from controller.snapshot import ContainerState, Domain
from controller.store import MemoryStore, StoreUntrusted
from tests.fixtures import builders as b


def test_summary_says_unknown_for_a_domain_that_is_down() -> None:
    snap = b.snapshot(down=[Domain.DOCKER, Domain.NVML])
    plan = Plan(observed_at=snap.observed_at, evaluated_at=snap.observed_at)
    line = summarize(snap, plan, ExecutionReport(), 0.1)
    assert "containers=unknown running=unknown" in line
    assert "gpus=unknown" in line
    assert "containers=0" not in line
    assert "unavailable=docker,nvml" in line


def test_summary_counts_when_the_domains_answer() -> None:
    c = b.container()
    snap = b.snapshot(containers=[c], gpus=[b.gpu(0)])
    plan = Plan(observed_at=snap.observed_at, evaluated_at=snap.observed_at)
    line = summarize(snap, plan, ExecutionReport(), 0.1)
    assert "containers=1 running=1" in line
    assert "gpus=1" in line


# --- corrupt state: moved aside, fresh memory that is never bolder -------------------------------

AT = datetime(2026, 1, 30, 14, 30, tzinfo=UTC)
DIRTY = (b.gpu(0, memory_used_bytes=4 * 1024**3), b.gpu(1))


def good_memory() -> ControllerMemory:
    return ControllerMemory(containers={"a" * 64: ContainerMemory(container_id="a" * 64, idle_since=AT)})


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: b"{\x00\x17garbage", id="corrupt"),
        pytest.param(lambda raw: raw[: len(raw) // 2], id="truncated"),
        pytest.param(lambda raw: b"", id="empty"),
        pytest.param(lambda raw: b'{"containers": 7}', id="wrong-shape"),
    ],
)
def test_a_corrupt_memory_is_moved_aside_and_the_daemon_starts_fresh(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    store = MemoryStore(tmp_path / "state")
    store.save(good_memory())
    store.path.write_bytes(damage(store.path.read_bytes()))
    log = EventLog(tmp_path / "events.jsonl")
    seen: list[str] = []
    memory = load_state(store, log, AT, on_quarantine=lambda name, at: seen.append(name))
    assert memory.containers == {} and not memory.breaker.tripped
    kept = tmp_path / "state" / "memory.json.corrupt-20260130T143000Z"
    assert kept.exists() and not store.path.exists()
    assert seen == ["memory.json"]
    (event,) = tail(log.path, 10)
    assert event["event_type"] == "controller.state_quarantined"
    assert event["details"]["moved_to"] == str(kept)
    # The next start reads what the fresh daemon saved: it does not quarantine again.
    store.save(memory)
    assert load_state(store, log, AT) == memory
    assert len(tail(log.path, 10)) == 1


def test_a_memory_from_a_foreign_user_is_still_refused_not_moved(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "state")
    store.save(good_memory())
    store.path.chmod(0o666)
    with pytest.raises(StoreUntrusted):
        load_state(store, EventLog(tmp_path / "events.jsonl"), AT)
    assert store.path.exists()


def test_every_other_state_file_is_checked_and_moved_aside(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "state")
    for name in ("policy-status.json", "workload-inventory.json", "inspect-cache.bin"):
        (store.state_dir / name).write_bytes(b"\x80\x04 truncated")
        (store.state_dir / name).chmod(0o600)
    seen: list[str] = []
    memory = load_state(
        store, EventLog(tmp_path / "events.jsonl"), AT, on_quarantine=lambda n, at: seen.append(n)
    )
    assert memory == ControllerMemory()
    assert sorted(seen) == ["inspect-cache.bin", "policy-status.json", "workload-inventory.json"]
    left = sorted(p.name for p in store.state_dir.iterdir())
    assert left == [
        "inspect-cache.bin.corrupt-20260130T143000Z",
        "policy-status.json.corrupt-20260130T143000Z",
        "workload-inventory.json.corrupt-20260130T143000Z",
    ]


def event(kind: str, at: datetime, **details: object) -> dict[str, object]:
    return {"timestamp": utc_timestamp(at), "event_type": kind, "details": details}


def test_a_lost_memory_keeps_an_open_breaker(tmp_path: Path) -> None:
    tripped = event(
        "controller.breaker_tripped", AT, key="AlertAdmin:BreakerTripped:x", message="too many stops"
    )
    assert memory_from_events([tripped], AT).breaker.tripped
    reset = event("controller.breaker_reset", AT + timedelta(minutes=1), was="too many stops")
    assert not memory_from_events([tripped, reset], AT).breaker.tripped
    # The planner then defers every destructive action, as it would have with the lost memory.
    created = b.container("old", state=ContainerState.CREATED, gpus=[b.GPU0])
    snap = b.snapshot(containers=[created])
    assert b.summary(plan(snap, b.desired(b.policy()), ControllerMemory(), b.T0)), "removable when closed"
    p = plan(snap, b.desired(b.policy()), memory_from_events([tripped], AT), b.T0)
    assert p.actions == ()
    assert ("CreatedNeverStarted", "BreakerOpen", "old") in b.deferred_summary(p)


def test_a_lost_memory_keeps_an_open_release_breaker_as_the_release_breaker(tmp_path: Path) -> None:
    # The release breaker trips on a mass release and holds back ledger releases alone. Its alert is
    # a controller.breaker_tripped line too: rebuilt as the stop breaker, it would hold back every
    # destructive action (idle stops, removals) until an admin's reset.
    from controller.act.executor import RealExecutor
    from controller.plan.safety import breaker_alert
    from tests.fixtures.act import RecordingNotifier, make_plan

    log = tmp_path / "events.jsonl"
    alert = breaker_alert(
        AT,
        "release breaker tripped: this pass would release 9 of 10 ledger rows",
        {"breaker": "release", "would_release": 9, "ledger_rows": 10},
        key_name="ReleaseBreakerTripped",
    )
    no_engine = SimpleNamespace(api=SimpleNamespace(timeout=5))  # an alert touches no container
    executor = RealExecutor(no_engine, EventLog(log), RecordingNotifier(), tmp_path / "ledger.json")
    executor.execute(make_plan(alert), ControllerMemory(), AT)
    rebuilt = memory_from_event_log(log, AT)
    assert rebuilt.release_breaker.tripped and "9 of 10 ledger rows" in rebuilt.release_breaker.reason
    assert not rebuilt.breaker.tripped, "the stop breaker was never tripped"
    created = b.container("old", state=ContainerState.CREATED, gpus=[b.GPU0])
    p = plan(b.snapshot(containers=[created]), b.desired(b.policy()), rebuilt, b.T0)
    assert [a.reason.value for a in p.actions] == ["CreatedNeverStarted"]
    EventLog(log).write("controller.breaker_reset", user=None, details={"release_was": "9 of 10"})
    assert memory_from_event_log(log, AT).release_breaker == Breaker()


def test_a_breaker_tripped_before_the_log_was_rotated_stays_open_after_memory_loss(tmp_path: Path) -> None:
    # The breaker tripped; the weekly rotation renamed the log to events.jsonl.1 (uncompressed:
    # delaycompress) and, with nocreate, there is no events.jsonl until the next event. Then the
    # memory was lost: rebuilt from the missing log alone, the breaker closed.
    log = tmp_path / "events.jsonl"
    EventLog(log).write("controller.breaker_tripped", user=None, details={"message": "would stop 9 of 10"})
    log.rename(tmp_path / "events.jsonl.1")
    memory = memory_from_event_log(log, AT)
    assert memory.breaker.tripped and "would stop 9 of 10" in memory.breaker.reason
    # Events written since the rotation come after it: a reset there closes it.
    EventLog(log).write("controller.breaker_reset", user=None, details={"was": "would stop 9 of 10"})
    assert not memory_from_event_log(log, AT).breaker.tripped


def test_a_memory_file_gone_since_is_rebuilt_from_the_event_log_too(tmp_path: Path) -> None:
    # A corrupt memory is moved aside and the open breaker rebuilt from the event log; the daemon
    # is killed before its first pass saves a memory (a hung observation, the watchdog, a power
    # cut). The next start finds no memory file at all: it is not a first start.
    log = EventLog(tmp_path / "events.jsonl")
    log.write("controller.breaker_tripped", user=None, details={"message": "would stop 9 of 10"})
    store = MemoryStore(tmp_path / "state")
    store.save(good_memory().with_breaker(Breaker(tripped=True, tripped_at=AT, reason="would stop 9 of 10")))
    store.path.write_bytes(b"")  # torn by the power cut
    assert load_state(store, log, AT).breaker.tripped
    assert not store.path.exists(), "moved aside; nothing saved since"
    again = load_state(store, log, AT)
    assert again.breaker.tripped and "would stop 9 of 10" in again.breaker.reason
    # The same when the file was lost any other way (a state directory restored without it).
    (tmp_path / "state").rename(tmp_path / "old-state")
    assert load_state(MemoryStore(tmp_path / "state"), log, AT).breaker.tripped
    # A first start (a log without the controller's lines) is a first start.
    fresh = load_state(MemoryStore(tmp_path / "new"), EventLog(tmp_path / "none.jsonl"), AT)
    assert fresh == ControllerMemory()


def test_a_memory_restored_from_an_old_backup_keeps_what_the_log_says_happened_since(
    tmp_path: Path,
) -> None:
    # The admin restores the state directory from last week's backup: a valid memory, older than
    # the event log. Since it was taken the breaker tripped, a dirty GPU was reset, and the daemon
    # died during a removal. Read as it is, the memory would close the breaker, reset the GPU
    # again blind and never record the removal.
    log = EventLog(tmp_path / "events.jsonl")
    store = MemoryStore(tmp_path / "state")
    backup = good_memory()
    store.save(backup)
    log.write(
        "controller.breaker_tripped",
        user=None,
        details={"key": "AlertAdmin:BreakerTripped:t", "message": "would stop 9 of 10"},
    )
    reset_key = f"ResetGpu:{b.GPU0}:2026-01-30T14:00:00+00:00:GpuDirty"
    log.write("gpu.health_check", user=None, details={"key": reset_key, "phase": "done", "intent_at": "x"})
    removal_key = "RemoveContainer:" + "c" * 64 + ":CreatedNeverStarted"
    log.write(
        "controller.action_started",
        user="alice",
        details={
            "key": removal_key,
            "kind": "RemoveContainer",
            "reason": "created_never_started",
            "phase": "started",
            "intent_at": utc_timestamp(AT),
            "container": "job",
            "container_id": "c" * 64,
            "expected_state": "created",
        },
    )
    memory = load_state(store, log, AT + timedelta(minutes=5))
    assert memory.containers == backup.containers, "the memory itself is kept"
    assert memory.breaker.tripped and "would stop 9 of 10" in memory.breaker.reason
    assert reset_key in memory.done
    assert list(memory.intents) == [removal_key]
    # A memory as new as the log (the breaker reset since, in both) is left as it is.
    log.write("controller.breaker_reset", user=None, details={"was": "would stop 9 of 10"})
    current = backup.model_copy(update={"done": {reset_key: AT}, "intents": memory.intents})
    store.save(current)
    assert load_state(store, log, AT + timedelta(minutes=5)) == current


def test_a_fragment_left_before_a_restart_does_not_swallow_the_next_line(tmp_path: Path) -> None:
    """A line cut short (a full disk, a crash mid-write) and a restart: the new daemon's first line,
    here the breaker tripping, is a line of its own, not glued to the fragment where every reader
    drops both; a lost memory rebuilt from the log then keeps the breaker open."""
    path = tmp_path / "events.jsonl"
    before = EventLog(path)
    before.write("detection.container_discovered", user=None, details={"container": "x"})
    with path.open("ab") as f:
        f.write(b'{"timestamp":"2026-01-30T14:00:00Z","event_type":"contr')  # the cut line
    after = EventLog(path)  # the next start
    after.end_fragment_left()  # as the daemon's start does (controller.wiring.build_controller)
    after.write_durable("controller.breaker_tripped", user=None, details={"message": "would stop 9 of 10"})
    assert [e["event_type"] for e in tail(path, 2)] == [
        "detection.container_discovered",
        "controller.breaker_tripped",
    ]
    memory = load_state(MemoryStore(tmp_path / "state"), after, datetime.now(UTC))
    assert memory.breaker.tripped, "a line the log holds was not read back"
    assert path.read_bytes().count(b"\n") == 3  # the fragment ended, nothing else added


def test_the_daemons_start_ends_a_fragment_left_in_the_event_log(tmp_path: Path) -> None:
    from controller.settings import Settings
    from controller.wiring import build_controller
    from desired_state.load import PolicyHolder

    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"event_type":"detection.container_discovered"}\n{"timestamp":"2026-01-30T14:0')
    settings = Settings(
        state_dir=tmp_path / "state", ledger=tmp_path / "ledger.json", events_log=path, dry_run=True
    )
    build_controller(settings, PolicyHolder(None)).observer.close()
    assert path.read_bytes().endswith(b'"2026-01-30T14:0\n')


def test_an_unreadable_event_log_opens_the_breaker_after_memory_loss(tmp_path: Path) -> None:
    log_dir = tmp_path / "events.jsonl"
    log_dir.mkdir()  # a directory where the log should be: it cannot be read
    assert memory_from_event_log(log_dir, AT).breaker.tripped
    assert not memory_from_event_log(tmp_path / "missing.jsonl", AT).breaker.tripped


def test_a_lost_memory_does_not_reset_a_still_dirty_gpu_again() -> None:
    passes = b.Passes(b.desired(b.policy()))
    passes.run(b.snapshot(observed_at=b.at(seconds=0), gpus=DIRTY))
    p = passes.run(b.snapshot(observed_at=b.at(seconds=30), gpus=DIRTY))
    (reset,) = p.actions
    assert reset.kind.value == "ResetGpu"
    # What the executor wrote for it; then the memory is lost.
    log = [
        event("gpu.health_check", b.at(seconds=31), gpu=b.GPU0, status="cleaned", key=reset.key, phase="done")
    ]
    now = b.at(seconds=60)

    def two_passes(memory: ControllerMemory) -> list[str]:
        kinds = []
        for s in (60, 90):
            p = plan(
                b.snapshot(observed_at=b.at(seconds=s), gpus=DIRTY),
                b.desired(b.policy()),
                memory,
                b.at(seconds=s),
            )
            memory = b.record_outcomes(p)
            kinds += [a.kind.value for a in p.actions]
        return kinds

    assert "ResetGpu" in two_passes(ControllerMemory()), "a bare fresh memory would reset it again"
    assert two_passes(memory_from_events(log, now)) == ["AlertAdmin"]


@pytest.mark.parametrize("named", [b.GPU0, "ResetGpu", "GpuDirty"])
def test_a_line_naming_no_container_does_not_make_a_lost_memory_reset_a_gpu_again(named: str) -> None:
    """The event log is shared with scripts that run as the user: a restart's mark or the hold a stop
    notice or a warning named, naming as its container what is no container (a GPU, a word of an
    action's key), rebuilds no record. Rebuilt, it was a container gone at the first pass, which
    took with it every record of an action whose key names it: the GPU reset already performed,
    which then ran again."""
    passes = b.Passes(b.desired(b.policy()))
    passes.run(b.snapshot(observed_at=b.at(seconds=0), gpus=DIRTY))
    (reset,) = passes.run(b.snapshot(observed_at=b.at(seconds=30), gpus=DIRTY)).actions
    done = event(
        "gpu.health_check", b.at(seconds=31), gpu=b.GPU0, status="cleaned", key=reset.key, phase="done"
    )
    forged = [
        event(
            "controller.restart_stop",
            b.at(seconds=32),
            container="x",
            container_id=named,
            started_at=utc_timestamp(b.at(seconds=-3600)),
            restart_at=utc_timestamp(b.at(seconds=-60)),
        ),
        {
            "timestamp": utc_timestamp(b.at(seconds=33)),
            "event_type": "controller.action_started",
            "details": {
                "key": "StopContainer:y",
                "intent_at": "t",
                "phase": "started",
                "kind": "StopContainer",
                "container_id": named,
                "expected_started_at": utc_timestamp(b.at(seconds=-3600)),
                "kept_after_stop_s": 3600,
            },
        },
        event(
            "maintenance.idle_kill",
            b.at(seconds=34),
            key="StopContainer:y",
            intent_at="t",
            phase="done",
            removed=False,
        ),
        event(
            "controller.warning",
            b.at(seconds=35),
            container="y",
            container_id=named,
            expected_started_at=utc_timestamp(b.at(seconds=-3600)),
            kept_after_stop_s=3600,
        ),
    ]
    memory = memory_from_events([done, *forged], b.at(seconds=60))
    assert named not in memory.containers
    kinds = []
    for s in (60, 90):
        p = plan(
            b.snapshot(observed_at=b.at(seconds=s), gpus=DIRTY),
            b.desired(b.policy()),
            memory,
            b.at(seconds=s),
        )
        memory = b.record_outcomes(p)
        kinds += [a.kind.value for a in p.actions]
    assert kinds == ["AlertAdmin"], "the GPU was reset again"


def test_a_lost_memory_keeps_back_off() -> None:
    failed = event(
        "controller.action_failed",
        AT,
        key="StopContainer:x:IdleTimeout",
        error="boom",
        failures=3,
        next_attempt_at=utc_timestamp(AT + timedelta(seconds=40)),
    )
    memory = memory_from_events([failed], AT + timedelta(seconds=1))
    assert memory.attempts["StopContainer:x:IdleTimeout"].failures == 3
    assert memory_from_events([failed], AT + timedelta(minutes=5)).attempts == {}


# --- fail closed: the record cannot be written ---------------------------------------------------


def test_a_failed_memory_save_names_the_file_and_errno(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "state")
    (store.state_dir / "memory.json.tmp").mkdir()  # in the way of the next save
    with pytest.raises(OSError) as caught:
        store.save(ControllerMemory())
    assert caught.value.filename is not None
    problem = store.health.problem()
    assert problem is not None and "memory.json" in problem and "[Errno" in problem
    (store.state_dir / "memory.json.tmp").rmdir()
    store.save(ControllerMemory())
    assert store.health.problem() is None, "it recovers by itself once the write succeeds"


def test_the_event_log_reports_its_health(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = EventLog(blocker / "events.jsonl")
    log.write("controller.warning", user=None)  # never raises
    assert log.health.problem() is not None and str(log.path) in (log.health.problem() or "")
    with pytest.raises(RecordUnavailable):
        log.write_durable("controller.action_started", user=None)


def test_describe_os_error_names_file_and_errno() -> None:
    text = describe_os_error("/var/lib/ds01/memory.json", OSError(errno.ENOSPC, "No space left on device"))
    assert text == "/var/lib/ds01/memory.json: [Errno 28 ENOSPC] No space left on device"


def test_get_policies_shows_an_unwritable_record(tmp_path: Path) -> None:
    from controller.cli.gather import with_daemon_status
    from controller.cli.get import policy_status_line
    from controller.cli.view import PolicyInfo, View
    from controller.settings import Settings
    from controller.store import write_policy_status

    state_dir = tmp_path / "state"
    MemoryStore(state_dir)
    problem = f"{state_dir / 'memory.json'}: [Errno 28 ENOSPC] No space left on device"
    write_policy_status(state_dir, AT, [], AT, record_error=problem)
    settings = Settings(state_dir=state_dir)
    info = with_daemon_status(PolicyInfo(), settings)
    assert info.record_error == problem
    line = policy_status_line(View(snapshot=b.snapshot(), now=AT, policy=info))
    assert "CANNOT WRITE ITS RECORD" in line and "ENOSPC" in line and "memory.json" in line
    write_policy_status(state_dir, AT, [], AT)  # recovered
    assert with_daemon_status(PolicyInfo(), settings).record_error is None


def test_the_loop_announces_an_unwritable_record_once_and_notices_recovery_on_a_quiet_host(
    tmp_path: Path,
) -> None:
    from typing import Any, cast

    from controller.loop import Controller
    from controller.record import RecordHealth
    from controller.settings import Settings
    from desired_state.load import PolicyHolder

    health = RecordHealth()
    blocked = tmp_path / "log"
    blocked.write_text("")  # the log's directory is a file: every write fails
    event_log = EventLog(blocked / "events.jsonl", health=health)
    store = MemoryStore(tmp_path / "state", health=health)
    controller = Controller(
        settings=Settings(state_dir=store.state_dir, events_log=event_log.path),
        observer=cast(Any, None),
        policy=PolicyHolder(),
        executor=cast(Any, None),
        store=store,
        event_log=event_log,
        memory=ControllerMemory(),
    )
    event_log.write("detection.container_discovered", user=None)
    problem = controller._announce_record()
    assert problem is not None and str(event_log.path) in problem and "[Errno" in problem
    assert controller._announce_record() == problem  # still broken: no new announcement
    blocked.unlink()
    blocked.mkdir()  # space is back; nothing else writes to the log on a quiet host
    assert controller._announce_record() is None
    assert [e["event_type"] for e in tail(event_log.path, 10)] == ["controller.record_recovered"]
    assert controller._announce_record() is None
    assert len(tail(event_log.path, 10)) == 1


def _log_controller(tmp_path: Path) -> tuple[Any, EventLog]:
    from typing import Any, cast

    from controller.loop import Controller
    from controller.settings import Settings
    from desired_state.load import PolicyHolder

    logs = tmp_path / "log"
    logs.mkdir(mode=0o755)
    logs.chmod(0o755)
    event_log = EventLog(logs / "events.jsonl")
    store = MemoryStore(tmp_path / "state")
    controller = Controller(
        settings=Settings(state_dir=store.state_dir, events_log=event_log.path),
        observer=cast(Any, None),
        policy=PolicyHolder(),
        executor=cast(Any, None),
        store=store,
        event_log=event_log,
        memory=ControllerMemory(),
    )
    return controller, event_log


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_the_loop_names_an_event_log_directory_others_can_write_and_its_fix(tmp_path: Path) -> None:
    # Any user who can write /var/log/ds01 can create events.jsonl after a rotation: the daemon
    # (root without CAP_DAC_OVERRIDE) can then not append to it, and destructive actions pause.
    controller, event_log = _log_controller(tmp_path)
    logs = event_log.path.parent
    assert controller._announce_log_trust() is None
    logs.chmod(0o1777)
    problem = controller._announce_log_trust()
    assert problem is not None
    assert str(logs) in problem and "mode 1777" in problem
    assert f"chown root:root {logs} && chmod 0755 {logs}" in problem
    assert controller._announce_log_trust() == problem  # said once, still the problem
    logs.chmod(0o755)
    os.chown(logs, 1000, 1000)
    problem = controller._announce_log_trust()
    assert problem is not None and "owned by uid 1000" in problem and str(logs) in problem
    os.chown(logs, 0, 0)
    event_log.path.write_text("")
    os.chown(event_log.path, 1000, 1000)
    problem = controller._announce_log_trust()
    assert problem is not None and str(event_log.path) in problem and "owned by uid 1000" in problem
    assert f"chown root:root {event_log.path}" in problem
    os.chown(event_log.path, 0, 0)
    assert controller._announce_log_trust() is None


def test_a_lost_memory_never_stops_an_idle_container_sooner() -> None:
    from tests.unit.test_planner_idle import IdleHost, kinds

    h = IdleHost()
    for minute in range(0, 40, 5):
        h.at(minute)
    assert b.summary(h.at(40)) == [("StopContainer", "IdleTimeout", "train")]
    # The memory is lost here: the same container, still idle, is observed by a fresh memory.
    h.passes.memory = memory_from_events([], b.at(minutes=40))
    seen = [kinds(h.at(minute)) for minute in (45, 50, 55)]
    assert all(("StopContainer", "IdleTimeout") not in k for k in seen), seen
    assert seen[0] == [], "a new idle streak starts: no stop, not even a warning yet"
