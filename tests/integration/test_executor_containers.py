"""The real executor against the real Docker engine: stop, remove, preconditions, idempotence."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests.exceptions

from controller.act.dry_run import DryRunExecutor
from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.act.report import Outcome
from controller.memory import ControllerMemory
from controller.plan.types import ActionKind, Reason
from tests.fixtures.act import (
    NOW,
    RecordingNotifier,
    container_action,
    has_control,
    make_plan,
    read_events,
    strings_in,
)

pytestmark = pytest.mark.docker

GPU = "GPU-11111111-2222-3333-4444-555555555555"


def gone(client: Any, cid: str) -> bool:
    try:
        client.api.inspect_container(cid)
    except docker.errors.NotFound:
        return True
    return False


def test_idle_stop_and_remove(
    real_executor: RealExecutor, make_container: Any, docker_client: Any, event_log_path: Path
) -> None:
    c = make_container("sleep 300")
    action = container_action(
        ActionKind.STOP_CONTAINER,
        c,
        Reason.IDLE_TIMEOUT,
        params={"timeout_s": 1, "remove": True},
        evidence={"gpus": [{"raw": GPU, "uuid": GPU, "source": "HostConfig.DeviceRequests", "mig": False}]},
    )
    report = real_executor.execute(make_plan(action), ControllerMemory(), NOW)
    (outcome,) = report.outcomes
    assert outcome.outcome is Outcome.DONE, outcome.detail
    assert gone(docker_client, c.id)
    events = read_events(event_log_path)
    assert [e["event_type"] for e in events] == ["maintenance.idle_kill", "gpu.release"]
    assert events[0]["details"]["removed"] is True and events[0]["user"] == "alice"
    assert events[1]["details"]["gpu"] == GPU and events[1]["details"]["container_id"] == c.id
    assert c.id not in report.memory.containers  # removed with its stop: no removal to come
    assert report.memory.removed[c.id].name == c.name  # its ledger rows are the controller's to release
    # Run again: the container is gone, which is what the action wanted.
    again = real_executor.execute(make_plan(action), report.memory, NOW)
    assert again.outcomes[0].outcome is Outcome.ALREADY_DONE


def test_runtime_stop_keeps_the_container(
    real_executor: RealExecutor, make_container: Any, event_log_path: Path
) -> None:
    c = make_container("sleep 300")
    action = container_action(
        ActionKind.STOP_CONTAINER, c, Reason.MAX_RUNTIME_EXCEEDED, params={"timeout_s": 1, "remove": False}
    )
    report = real_executor.execute(make_plan(action), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.DONE, report.outcomes[0].detail
    c.reload()
    assert c.status == "exited"
    assert [e["event_type"] for e in read_events(event_log_path)] == ["maintenance.runtime_kill"]
    # Its own stop of this start, recorded: the removal breaker will not count the removal to come.
    mem = report.memory.containers[c.id]
    assert mem.started_at == action.target.expected_started_at
    assert mem.stopped_by_controller_at is not None


def _slow_to_remove(make_container: Any, docker_client: Any) -> Any:
    """A running ``--rm`` container with a few thousand directories in its writable layer: once
    stopped, the engine takes a while removing it (``removing``), as it does a real job's."""
    dirs = " ".join(f"/d/{i}" for i in range(3000))
    c = make_container(["sh", "-c", f"mkdir /d {dirs} && touch /ready && exec sleep 300"], auto_remove=True)
    for _ in range(200):
        probe = docker_client.api.exec_create(c.id, ["ls", "/ready"])
        docker_client.api.exec_start(probe["Id"])
        if docker_client.api.exec_inspect(probe["Id"])["ExitCode"] == 0:
            return c
        time.sleep(0.05)
    pytest.fail("the container did not get ready")


@pytest.mark.parametrize(
    ("reason", "remove"), [(Reason.MAX_RUNTIME_EXCEEDED, False), (Reason.IDLE_TIMEOUT, True)]
)
def test_an_rm_container_removing_itself_after_the_stop_is_reported_removed(
    real_executor: RealExecutor,
    make_container: Any,
    docker_client: Any,
    event_log_path: Path,
    notifier: RecordingNotifier,
    reason: Reason,
    remove: bool,
) -> None:
    c = _slow_to_remove(make_container, docker_client)
    action = container_action(
        ActionKind.STOP_CONTAINER,
        c,
        reason,
        params={"grace_s": 0, "remove": remove},
        evidence={"gpus": [{"raw": GPU, "uuid": GPU, "source": "HostConfig.DeviceRequests", "mig": False}]},
    )
    report = real_executor.execute(make_plan(action), ControllerMemory(), NOW)
    (outcome,) = report.outcomes
    # The engine removes it once it has stopped: the stop took the container with it, and nothing
    # is left to remove (a `docker rm` now is refused: the removal is already under way).
    assert outcome.outcome is Outcome.DONE, outcome.detail
    assert outcome.detail.startswith("stopped and removed"), outcome.detail
    assert gone(docker_client, c.id)
    events = read_events(event_log_path)
    assert [e["event_type"] for e in events] == [
        "maintenance.runtime_kill" if reason is Reason.MAX_RUNTIME_EXCEEDED else "maintenance.idle_kill",
        "gpu.release",
    ]
    assert events[0]["details"]["removed"] is True and events[0]["details"]["exit_state"] == "removed"
    # The owner is not told the stopped container is kept, and its ledger rows are the controller's.
    ((_, text, _),) = notifier.sent
    assert "was stopped and removed" in text and "docker start" not in text
    assert report.memory.removed[c.id].name == c.name
    assert report.memory.attempts == {}


def test_an_rm_container_the_engine_is_still_removing_when_the_wait_ends_is_reported_removed(
    make_container: Any,
    docker_client: Any,
    event_log_path: Path,
    notifier: RecordingNotifier,
    ledger_path: Path,
) -> None:
    """The engine takes longer to remove it than the executor waits (a large writable layer): the
    owner was told the stopped container is kept, and to `docker start` one that was going away."""
    from controller.act.events import EventLog
    from controller.act.executor import RealExecutor

    c = _slow_to_remove(make_container, docker_client)
    impatient = RealExecutor(
        docker_client,
        EventLog(event_log_path),
        notifier,
        ledger_path,
        clock=lambda: NOW,
        verify_timeout_s=0.05,
    )
    action = container_action(
        ActionKind.STOP_CONTAINER, c, Reason.MAX_RUNTIME_EXCEEDED, params={"grace_s": 0, "remove": False}
    )
    report = impatient.execute(make_plan(action), ControllerMemory(), NOW)
    (outcome,) = report.outcomes
    assert outcome.outcome is Outcome.DONE, outcome.detail
    (event,) = [e for e in read_events(event_log_path) if e["event_type"] == "maintenance.runtime_kill"]
    if event["details"]["exit_state"] != "removing":
        pytest.skip(f"the engine had finished removing it already ({event['details']['exit_state']})")
    assert outcome.detail.startswith("stopped and removed"), outcome.detail
    assert event["details"]["removed"] is True
    ((_, text, _),) = notifier.sent
    assert "was stopped and removed" in text and "docker start" not in text
    for _ in range(600):
        if gone(docker_client, c.id):
            break
        time.sleep(0.1)
    assert gone(docker_client, c.id)


def test_an_idle_stop_whose_removal_fails_is_recorded_as_the_stop_it_was(
    real_executor: RealExecutor,
    make_container: Any,
    docker_client: Any,
    event_log_path: Path,
    notifier: RecordingNotifier,
) -> None:
    # An immutable file in the writable layer: the engine cannot remove the root filesystem and
    # leaves the container dead, as it does with a mount still busy somewhere.
    c = make_container(["sh", "-c", "touch /pinned && exec sleep 300"])
    upper = Path(c.attrs["GraphDriver"]["Data"]["UpperDir"])
    for _ in range(100):
        if (upper / "pinned").exists():
            break
        time.sleep(0.05)
    subprocess.run(["chattr", "+i", str(upper / "pinned")], check=True)
    try:
        action = container_action(
            ActionKind.STOP_CONTAINER, c, Reason.IDLE_TIMEOUT, params={"grace_s": 0, "remove": True}
        )
        report = real_executor.execute(make_plan(action), ControllerMemory(), NOW)
        (outcome,) = report.outcomes
        c.reload()
        assert c.status in ("dead", "exited")
        # The stop happened: it is recorded, the owner is told, and the container is left to its
        # holds; the removal is no failure of the stop to back off from and try again.
        assert outcome.outcome is Outcome.DONE, outcome.detail
        assert outcome.detail.startswith("stopped (") and "not removed" in outcome.detail, outcome.detail
        (event,) = read_events(event_log_path)
        assert event["event_type"] == "maintenance.idle_kill"
        assert event["details"]["removed"] is False and "remove_error" in event["details"]
        ((_, text, _),) = notifier.sent
        assert "was stopped at" in text and "docker start" in text
        assert report.memory.attempts == {}
        assert report.memory.containers[c.id].stopped_by_controller_at is not None
    finally:
        subprocess.run(["chattr", "-i", str(upper / "pinned")], check=False)


def test_restarted_container_is_skipped(
    real_executor: RealExecutor, make_container: Any, event_log_path: Path
) -> None:
    c = make_container("sleep 300")
    action = container_action(
        ActionKind.STOP_CONTAINER, c, Reason.IDLE_TIMEOUT, params={"timeout_s": 1, "remove": True}
    )
    c.restart(timeout=0)  # a new StartedAt: the plan's idle evidence belongs to the previous run
    report = real_executor.execute(make_plan(action), ControllerMemory(), NOW)
    outcome = report.outcomes[0]
    assert outcome.outcome is Outcome.SKIPPED
    assert "restarted" in outcome.detail
    c.reload()
    assert c.status == "running"
    events = read_events(event_log_path)
    assert [e["event_type"] for e in events] == ["controller.action_skipped"]
    assert "restarted" in events[0]["details"]["why"]
    assert report.memory.attempts == {}  # a skip is not a failure: no back-off
    assert c.id not in report.memory.containers  # and not the controller's stop


def test_a_container_its_owner_stopped_right_before_the_stop_is_not_the_controllers_stop(
    real_executor: RealExecutor,
    make_container: Any,
    docker_client: Any,
    event_log_path: Path,
    notifier: RecordingNotifier,
) -> None:
    # The last look, after the intent, sees it running; its owner's `docker stop` ends it before
    # the controller's stop reaches the engine, which answers 304 Not Modified. The stop is the
    # owner's: no notice says the controller stopped it, no mark or promised hold of a stop of its
    # own is kept (the removal breaker counts the container as stopped by someone else), and the
    # stopped container is not removed with a stop that did not happen.
    c = make_container("sleep 300")
    action = container_action(
        ActionKind.STOP_CONTAINER, c, Reason.IDLE_TIMEOUT, params={"grace_s": 1, "remove": True}
    )
    ops = real_executor._docker
    inspect = ops.inspect
    looks: list[str] = []

    def inspect_then_owner_stops(cid: str) -> Any:
        seen = inspect(cid)
        looks.append(seen.status if seen is not None else "gone")
        if len(looks) == 2:  # the look right before the stop
            docker_client.api.stop(c.id, timeout=0)
        return seen

    ops.inspect = inspect_then_owner_stops  # type: ignore[method-assign]
    report = real_executor.execute(make_plan(action), ControllerMemory(), NOW)
    (outcome,) = report.outcomes
    assert looks[:2] == ["running", "running"]
    assert outcome.outcome is Outcome.SKIPPED, outcome.detail
    assert "exited" in outcome.detail
    assert notifier.sent == []
    c.reload()
    assert c.status == "exited"  # still there, for its owner's hold
    assert c.id not in report.memory.containers or (
        report.memory.containers[c.id].stopped_by_controller_at is None
    )
    assert report.memory.removed == {} and report.memory.intents == {} and report.memory.attempts == {}
    events = [(e["event_type"], e["details"]["phase"]) for e in read_events(event_log_path, intents=True)]
    assert events == [("controller.action_started", "started"), ("controller.action_skipped", "skipped")]


def test_a_stop_tells_a_container_it_stopped_from_one_already_stopped(
    make_container: Any, docker_client: Any
) -> None:
    from controller.act.docker_ops import DockerOps

    ops = DockerOps(docker_client)
    c = make_container("sleep 300")
    assert ops.stop(c.id, timeout_s=0) is True
    assert ops.stop(c.id, timeout_s=0) is False  # the engine's 304: it was not running


def test_state_change_is_skipped(real_executor: RealExecutor, make_container: Any) -> None:
    c = make_container("sleep 300", start=False)
    action = container_action(ActionKind.REMOVE_CONTAINER, c, Reason.CREATED_NEVER_STARTED)
    c.start()
    report = real_executor.execute(make_plan(action), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.SKIPPED
    assert "state is now running" in report.outcomes[0].detail
    c.reload()
    assert c.status == "running"


def test_remove_created_and_exited(
    real_executor: RealExecutor, make_container: Any, docker_client: Any, event_log_path: Path
) -> None:
    created = make_container("sleep 300", start=False)
    exited = make_container("true")
    exited.wait(timeout=30)
    actions = [
        container_action(ActionKind.REMOVE_CONTAINER, created, Reason.CREATED_NEVER_STARTED),
        container_action(
            ActionKind.REMOVE_CONTAINER, exited, Reason.GPU_HOLD_EXPIRED, evidence={"physical_gpus": [GPU]}
        ),
    ]
    assert actions[1].target.expected_state == "exited"
    report = real_executor.execute(make_plan(*actions), ControllerMemory(), NOW)
    assert [o.outcome for o in report.outcomes] == [Outcome.DONE, Outcome.DONE], [
        o.detail for o in report.outcomes
    ]
    assert gone(docker_client, created.id) and gone(docker_client, exited.id)
    events = read_events(event_log_path)
    assert [(e["event_type"], e["details"].get("reason")) for e in events] == [
        ("container.remove", "created_never_started"),
        ("container.remove", "gpu_hold_expired"),
        ("gpu.release", "gpu_hold_expired"),
    ]
    # Both the controller's own removals: the ledger rows still naming them weigh on no breaker.
    assert {cid: r.name for cid, r in report.memory.removed.items()} == {
        created.id: created.name,
        exited.id: exited.name,
    }


def test_already_removed_is_success(
    real_executor: RealExecutor, make_container: Any, docker_client: Any
) -> None:
    c = make_container("true")
    c.wait(timeout=30)
    action = container_action(ActionKind.REMOVE_CONTAINER, c, Reason.STOPPED_HOLD_EXPIRED)
    docker_client.api.remove_container(c.id)
    report = real_executor.execute(make_plan(action), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.ALREADY_DONE
    assert report.memory.removed == {}  # someone else's removal, not the controller's


def test_a_removal_whose_first_request_went_unanswered_is_the_controllers_own(
    real_executor: RealExecutor,
    make_container: Any,
    docker_client: Any,
    event_log_path: Path,
    notifier: RecordingNotifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Deleting a large writable layer takes longer than the request waits: the engine goes on with
    # the removal, and the retry is answered 409 (already in progress) or 404 (done). That removal
    # is the controller's: its owner is told, and its ledger rows are the controller's to release.
    dirs = " ".join(f"/d/{i}" for i in range(3000))
    c = make_container(["sh", "-c", f"mkdir /d {dirs}"])
    c.wait(timeout=30)
    action = container_action(ActionKind.REMOVE_CONTAINER, c, Reason.STOPPED_HOLD_EXPIRED)
    api = docker_client.api
    remove_container = api.remove_container
    requests_sent: list[str] = []

    def first_request_unanswered(cid: str, **kw: Any) -> Any:
        requests_sent.append(cid)
        if len(requests_sent) > 1:
            return remove_container(cid, **kw)
        waits = api.timeout
        api.timeout = 0.01  # the engine goes on removing; the client stops waiting
        try:
            return remove_container(cid, **kw)
        finally:
            api.timeout = waits

    monkeypatch.setattr(api, "remove_container", first_request_unanswered)
    report = real_executor.execute(make_plan(action), ControllerMemory(), NOW)
    (outcome,) = report.outcomes
    assert len(requests_sent) == 2, "the first request is answered late, and retried"
    assert outcome.outcome is Outcome.DONE, outcome.detail
    assert gone(docker_client, c.id)
    assert report.memory.removed[c.id].name == c.name
    assert [e["event_type"] for e in read_events(event_log_path)] == ["container.remove"]
    ((user, text, _),) = notifier.sent
    assert user == "alice" and "removed" in text


def test_a_stop_whose_first_request_went_unanswered_is_the_controllers_own_when_the_retry_finds_it_gone(
    real_executor: RealExecutor,
    make_container: Any,
    docker_client: Any,
    event_log_path: Path,
    notifier: RecordingNotifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The engine stopped the `--rm` container and removed it, but the answer was lost: the retry is
    # answered 404. The stop, and the removal it took with it, are the controller's.
    c = make_container("sleep 300", auto_remove=True)
    action = container_action(
        ActionKind.STOP_CONTAINER, c, Reason.MAX_RUNTIME_EXCEEDED, params={"grace_s": 0, "remove": False}
    )
    api = docker_client.api
    post = api._post
    stops: list[str] = []

    def first_stop_unanswered(url: str, *args: Any, **kw: Any) -> Any:
        if not url.endswith(f"/containers/{c.id}/stop"):
            return post(url, *args, **kw)
        stops.append(url)
        response = post(url, *args, **kw)
        if len(stops) > 1:
            return response
        for _ in range(200):  # the engine removes it once it has stopped
            if gone(docker_client, c.id):
                break
            time.sleep(0.05)
        raise requests.exceptions.ReadTimeout("read timed out")

    monkeypatch.setattr(api, "_post", first_stop_unanswered)
    report = real_executor.execute(make_plan(action), ControllerMemory(), NOW)
    (outcome,) = report.outcomes
    assert len(stops) == 2, "the first request is answered late, and retried"
    assert outcome.outcome is Outcome.DONE, outcome.detail
    assert outcome.detail.startswith("stopped and removed"), outcome.detail
    assert report.memory.removed[c.id].name == c.name
    (event,) = read_events(event_log_path)
    assert event["event_type"] == "maintenance.runtime_kill" and event["details"]["removed"] is True
    ((user, text, _),) = notifier.sent
    assert user == "alice" and "was stopped and removed" in text


def test_one_failure_does_not_block_the_others(
    real_executor: RealExecutor, make_container: Any, docker_client: Any, event_log_path: Path
) -> None:
    exited = make_container("true")
    exited.wait(timeout=30)
    good = container_action(ActionKind.REMOVE_CONTAINER, exited, Reason.STOPPED_HOLD_EXPIRED)
    reset = good.model_copy(
        update={
            "kind": ActionKind.RESET_GPU,
            "target": good.target.model_copy(update={"gpu": GPU}),
            "key": "reset",
        }
    )
    report = real_executor.execute(make_plan(reset, good), ControllerMemory(), NOW)
    outcomes = {o.key: o.outcome for o in report.outcomes}
    assert outcomes == {
        "reset": Outcome.FAILED,
        good.key: Outcome.DONE,
    }  # the fixture's reset command is `false`
    assert gone(docker_client, exited.id)
    attempt = report.memory.attempts["reset"]
    assert attempt.failures == 1 and attempt.next_attempt_at is not None and attempt.next_attempt_at > NOW
    # Back-off: the same failing action is not attempted again before its time.
    again = real_executor.execute(make_plan(reset, memory=report.memory), report.memory, NOW)
    assert again.outcomes[0].outcome is Outcome.SKIPPED and "backing off" in again.outcomes[0].detail
    types = [e["event_type"] for e in read_events(event_log_path)]
    assert types == ["gpu.health_check", "controller.action_failed", "container.remove"]


def test_unreachable_engine_is_a_transient_failure(make_container: Any, tmp_path: Path) -> None:
    c = make_container("sleep 300")
    action = container_action(ActionKind.STOP_CONTAINER, c, Reason.IDLE_TIMEOUT, params={"timeout_s": 1})
    nowhere = docker.DockerClient(base_url=f"unix://{tmp_path}/no-engine.sock", version="1.41", timeout=2)
    log = tmp_path / "events.jsonl"
    executor = RealExecutor(nowhere, EventLog(log), RecordingNotifier(), tmp_path / "ledger.json")
    report = executor.execute(make_plan(action), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.FAILED
    assert "unreachable" in report.outcomes[0].detail
    (event,) = read_events(log)
    assert event["event_type"] == "controller.action_failed" and event["details"]["transient"] is True
    assert report.memory.attempts[action.key].failures == 1
    c.reload()
    assert c.status == "running"


def test_breaker_blocks_destructive_actions(real_executor: RealExecutor, make_container: Any) -> None:
    c = make_container("sleep 300")
    action = container_action(ActionKind.STOP_CONTAINER, c, Reason.IDLE_TIMEOUT, params={"timeout_s": 1})
    memory = ControllerMemory().with_breaker(
        ControllerMemory().breaker.model_copy(update={"tripped": True, "reason": "x"})
    )
    report = real_executor.execute(make_plan(action, memory=memory), memory, NOW)
    assert report.outcomes[0].outcome is Outcome.SKIPPED
    assert report.memory.breaker.tripped
    c.reload()
    assert c.status == "running"


def test_warning_is_recorded_once(
    real_executor: RealExecutor, make_container: Any, notifier: RecordingNotifier
) -> None:
    c = make_container("sleep 300")
    warn = container_action(
        ActionKind.WARN_OWNER,
        c,
        Reason.IDLE_WARNING,
        params={"warning_key": "idle:80:streak"},
        key="WarnOwner:k",
    )
    report = real_executor.execute(make_plan(warn), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.DONE
    assert notifier.sent == [("alice", warn.message, "WARNING")]
    assert report.memory.containers[c.id].warnings == {"idle:80:streak": NOW}
    assert report.memory.done["WarnOwner:k"] == NOW
    again = real_executor.execute(make_plan(warn, memory=report.memory), report.memory, NOW)
    assert again.outcomes[0].outcome is Outcome.ALREADY_DONE
    assert len(notifier.sent) == 1


def test_hostile_labels_never_forge_an_event_line(
    real_executor: RealExecutor, make_container: Any, event_log_path: Path
) -> None:
    hostile = {
        "ds01.user": 'mallory\r\n{"event_type":"auth.granted","user":"root"}',
        "note": "\x1b[2J\x1b]0;owned\x07" + "\u202e" + "z" * (1024 * 1024),
        # NUL and bytes that are not UTF-8 (the engine stores U+FFFD for them).
        "raw": "a\x00b" + b"\xff\xfe".decode("utf-8", errors="replace"),
    }
    c = make_container("sleep 300", labels=hostile)
    c.reload()
    labels = c.attrs["Config"]["Labels"]
    warn = container_action(
        ActionKind.WARN_OWNER,
        c,
        Reason.IDLE_WARNING,
        params={"warning_key": "w"},
        evidence={"labels": labels, "name": c.name},
        user=labels["ds01.user"],
    )
    real_executor.execute(make_plan(warn), ControllerMemory(), NOW)
    raw = event_log_path.read_bytes()
    assert raw.count(b"\n") == 1 and len(raw) < 4096
    event = json.loads(raw)
    # JSON escapes controls anyway; what matters is that none survives decoding to reach a terminal.
    assert not any(has_control(s) for s in strings_in(event))
    assert event["event_type"] == "controller.warning"
    assert event["user"].startswith("mallory  ")
    assert event["details"]["truncated"] is True


def test_dry_run_changes_nothing(make_container: Any, event_log_path: Path, docker_client: Any) -> None:
    running = make_container("sleep 300")
    exited = make_container("true")
    exited.wait(timeout=30)
    actions = [
        container_action(
            ActionKind.STOP_CONTAINER, running, Reason.IDLE_TIMEOUT, params={"timeout_s": 1, "remove": True}
        ),
        container_action(ActionKind.REMOVE_CONTAINER, exited, Reason.STOPPED_HOLD_EXPIRED),
        container_action(ActionKind.WARN_OWNER, running, Reason.IDLE_WARNING, params={"warning_key": "w"}),
    ]
    memory = ControllerMemory()
    executor = DryRunExecutor(EventLog(event_log_path))
    report = executor.execute(make_plan(*actions, memory=memory), memory, NOW)
    assert all(o.outcome is Outcome.DRY_RUN for o in report.outcomes)
    assert report.dry_run
    running.reload()
    exited.reload()
    assert running.status == "running" and exited.status == "exited"
    assert report.memory.done == {} and report.memory.containers == {}  # a later real run still warns
    events = read_events(event_log_path)
    assert [e["event_type"] for e in events] == ["controller.dry_run"] * 3
    # Each action is written once per daemon run, not once per pass.
    executor.execute(make_plan(*actions, memory=memory), memory, NOW)
    assert len(read_events(event_log_path)) == 3


def test_the_owner_gets_the_planned_notice_with_the_stop_in_local_time(
    real_executor: RealExecutor, make_container: Any, notifier: RecordingNotifier
) -> None:
    c = make_container("sleep 300")
    warn = container_action(
        ActionKind.WARN_OWNER,
        c,
        Reason.IDLE_WARNING,
        params={
            "warning_key": "idle:80:notice",
            "stop_expected_at": "2026-01-30T15:00:00.000000Z",
            "notice": "Your container x will be stopped at {stop_at}.\n"
            "To keep it: touch /workspace/.keep-alive",
        },
        key="WarnOwner:notice",
    )
    real_executor.execute(make_plan(warn), ControllerMemory(), NOW)
    ((user, text, _severity),) = notifier.sent
    from datetime import UTC, datetime

    local = datetime(2026, 1, 30, 15, 0, tzinfo=UTC).astimezone().strftime("%Y-%m-%d %H:%M")
    assert user == "alice" and f"stopped at {local}" in text and "{stop_at}" not in text
    assert text.endswith("To keep it: touch /workspace/.keep-alive")
