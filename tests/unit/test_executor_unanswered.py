"""A request the engine carried out but did not answer in time is the controller's all the same.

The executor retries a Docker request that timed out. The engine may have done what the first one
asked (a removal goes on after the client stops waiting; a stopped ``--rm`` container is removed):
the retry is then answered 404, 409 (removal already in progress) or 304 (not running), which to a
first request would mean that someone else did it. Here it is the controller's own stop or
removal, and it is recorded and told as one.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import docker.errors
import requests.exceptions

from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.act.report import Outcome
from controller.memory import ControllerMemory
from controller.plan.types import Action, ActionKind, Reason, StopParams, Target
from tests.fixtures import builders as b
from tests.fixtures.act import RecordingNotifier, make_plan, read_events
from tests.unit.fake_host import FakeContainer, FakeHost
from tests.unit.test_executor_resumed_intent import interrupted_stop


def _removal(c: FakeContainer) -> Action:
    """The removal of the stopped container ``c`` at the end of its hold."""
    return Action(
        kind=ActionKind.REMOVE_CONTAINER,
        target=Target(
            container=c.name,
            container_id=c.id,
            expected_state="exited",
            expected_started_at=c.started_at,
            user="alice",
        ),
        reason=Reason.STOPPED_HOLD_EXPIRED,
        message=f"remove {c.name}",
        due_at=b.T0 - timedelta(minutes=5),
        key=f"RemoveContainer:{c.id}:StoppedHoldExpired",
    )


def _stop(c: FakeContainer, reason: Reason, params: StopParams) -> Action:
    return Action(
        kind=ActionKind.STOP_CONTAINER,
        target=Target(
            container=c.name,
            container_id=c.id,
            expected_state="running",
            expected_started_at=c.started_at,
            user="alice",
        ),
        reason=reason,
        message=f"stop {c.name}",
        due_at=b.T0 - timedelta(minutes=5),
        key=f"StopContainer:{c.id}:{reason.value}",
        params=params,
    )


def _executor(host: FakeHost, tmp_path: Path, **kw: Any) -> tuple[RealExecutor, RecordingNotifier, Path]:
    """The real executor on ``host``, its notifier and its event log."""
    notifier, log = RecordingNotifier(), tmp_path / "events.jsonl"
    ex = RealExecutor(host.client, EventLog(log), notifier, tmp_path / "ledger.json", clock=host.clock, **kw)
    return ex, notifier, log


def _removal_still_under_way(host: FakeHost, c: FakeContainer) -> list[str]:
    """The engine goes on deleting ``c`` after its first removal request goes unanswered; the retry
    is told the removal is already in progress. Returns the requests sent, as they are sent."""
    requests_sent: list[str] = []

    def first_request_unanswered(cid: str, **kw: Any) -> None:
        requests_sent.append(cid)
        if len(requests_sent) == 1:
            c.status = "removing"  # the engine goes on deleting; the answer never came
            raise requests.exceptions.ReadTimeout("read timed out")
        raise docker.errors.APIError(
            "conflict", explanation=f"removal of container {c.name} is already in progress"
        )

    host.api.remove_container = first_request_unanswered  # type: ignore[method-assign]
    return requests_sent


def test_a_removal_the_engine_did_without_answering_is_the_controllers_own(tmp_path: Path) -> None:
    host = FakeHost()
    c = host.add("train")
    c.status, c.finished_at = "exited", host.now - timedelta(hours=2)
    remove_container = host.api.remove_container
    requests_sent: list[str] = []

    def first_request_unanswered(cid: str, **kw: Any) -> None:
        requests_sent.append(cid)
        remove_container(cid, **kw)
        if len(requests_sent) == 1:  # removed; the answer never came
            raise requests.exceptions.ReadTimeout("read timed out")

    host.api.remove_container = first_request_unanswered  # type: ignore[method-assign]
    action = _removal(c)
    ex, notifier, log = _executor(host, tmp_path)
    report = ex.execute(make_plan(action), ControllerMemory(), b.T0)
    (o,) = report.outcomes
    assert len(requests_sent) == 2
    assert o.outcome is Outcome.DONE, o.detail
    assert "train" not in host.containers
    assert report.memory.removed[c.id].name == "train"  # its ledger rows are the controller's to release
    assert [e["event_type"] for e in read_events(log)] == ["container.remove"]
    ((user, text, _),) = notifier.sent
    assert user == "alice" and "removed" in text


def test_a_stop_the_engine_did_without_answering_is_the_controllers_own_when_the_retry_finds_it_gone(
    tmp_path: Path,
) -> None:
    # The engine stopped the `--rm` container and removed it, but the stop's answer never came: the
    # retry is answered 404. The stop (and the removal it took with it) is the controller's.
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("train")
    post = host.api._post
    requests_sent: list[str] = []

    def first_request_unanswered(url: str, params: dict[str, int], timeout: float | None = None) -> Any:
        requests_sent.append(url)
        response = post(url, params, timeout)
        if len(requests_sent) == 1:  # stopped, then removed by the engine (--rm); no answer came
            del host.containers["train"]
            raise requests.exceptions.ReadTimeout("read timed out")
        return response

    host.api._post = first_request_unanswered  # type: ignore[method-assign]
    action = _stop(c, Reason.MAX_RUNTIME_EXCEEDED, StopParams(grace_s=30))
    ex, notifier, log = _executor(host, tmp_path)
    report = ex.execute(make_plan(action), ControllerMemory(), b.T0)
    (o,) = report.outcomes
    assert len(requests_sent) == 2
    assert o.outcome is Outcome.DONE, o.detail
    assert o.detail.startswith("stopped and removed"), o.detail
    assert report.memory.removed[c.id].name == "train"
    (event,) = read_events(log)
    assert event["event_type"] == "maintenance.runtime_kill" and event["details"]["removed"] is True
    ((user, text, _),) = notifier.sent
    assert user == "alice" and "was stopped and removed" in text


def test_a_retry_after_a_connection_that_could_not_be_made_finds_someone_elses_stop(tmp_path: Path) -> None:
    # The first request never reached the engine (the connection was refused: it was restarting);
    # its owner stopped the container before the retry, which the engine answers 304. Nothing the
    # controller sent stopped it: the stop is the owner's.
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("train")
    post = host.api._post
    requests_sent: list[str] = []

    def first_connection_refused(url: str, params: dict[str, int], timeout: float | None = None) -> Any:
        requests_sent.append(url)
        if len(requests_sent) == 1:
            c.status, c.finished_at = "exited", host.now  # the owner's `docker stop`
            raise requests.exceptions.ConnectionError("connection refused")
        return post(url, params, timeout)

    host.api._post = first_connection_refused  # type: ignore[method-assign]
    action = _stop(c, Reason.MAX_RUNTIME_EXCEEDED, StopParams(grace_s=30))
    ex, notifier, _ = _executor(host, tmp_path)
    report = ex.execute(make_plan(action), ControllerMemory(), b.T0)
    (o,) = report.outcomes
    assert len(requests_sent) == 2
    assert o.outcome is Outcome.SKIPPED, o.detail
    assert notifier.sent == []
    assert c.id not in report.memory.containers or (
        report.memory.containers[c.id].stopped_by_controller_at is None
    )


def test_a_retry_after_a_connection_that_could_not_be_made_finds_someone_elses_removal(
    tmp_path: Path,
) -> None:
    host = FakeHost()
    c = host.add("train")
    c.status, c.finished_at = "exited", host.now - timedelta(hours=2)
    remove_container = host.api.remove_container
    requests_sent: list[str] = []

    def first_connection_refused(cid: str, **kw: Any) -> None:
        requests_sent.append(cid)
        if len(requests_sent) == 1:
            del host.containers["train"]  # its owner's `docker rm`
            raise requests.exceptions.ConnectionError("connection refused")
        remove_container(cid, **kw)

    host.api.remove_container = first_connection_refused  # type: ignore[method-assign]
    action = _removal(c)
    ex, notifier, _ = _executor(host, tmp_path)
    report = ex.execute(make_plan(action), ControllerMemory(), b.T0)
    (o,) = report.outcomes
    assert len(requests_sent) == 2
    assert o.outcome is Outcome.ALREADY_DONE, o.detail
    assert notifier.sent == [] and report.memory.removed == {}


def test_a_removal_the_engine_is_still_carrying_out_after_the_wait_is_recorded_once_it_is_gone(
    tmp_path: Path,
) -> None:
    # The first request went unanswered while the engine deleted a large writable layer; the retry
    # is answered 409 (already in progress) and the container is still `removing` when the wait
    # ends. That removal is the controller's, under way: not a failure, and once the engine shows
    # it gone it is recorded as the controller's removal (its owner told, its ledger rows the
    # controller's to release), not as a container that vanished by someone else's hand.
    host = FakeHost()
    c = host.add("train")
    c.status, c.finished_at = "exited", host.now - timedelta(hours=2)
    requests_sent = _removal_still_under_way(host, c)
    action = _removal(c)
    ex, notifier, log = _executor(host, tmp_path, verify_timeout_s=0.2)
    report = ex.execute(make_plan(action), ControllerMemory(), b.T0)
    (o,) = report.outcomes
    assert len(requests_sent) == 2
    assert o.outcome is Outcome.IN_PROGRESS, "reported removed, or failed, while the engine still removes it"
    assert [e["event_type"] for e in read_events(log)] == [], "recorded before its outcome is known"
    assert action.key not in report.memory.attempts, "backed off as a failure"
    assert action.key in report.memory.intents, "the removal under way is verified by the next pass"
    # The next pass, a minute later: still being deleted; still open.
    host.advance(60)
    memory, outcomes = ex.recover(report.memory, host.now)
    assert outcomes == () and action.key in memory.intents
    # The engine is done: the next pass records the controller's removal, once.
    del host.containers["train"]
    host.advance(60)
    memory, (done,) = ex.recover(memory, host.now)
    assert done.outcome is Outcome.DONE, done.detail
    assert memory.intents == {}
    assert memory.removed[c.id].name == "train"  # its ledger rows are the controller's to release
    (event,) = read_events(log)
    assert event["event_type"] == "container.remove" and event["details"]["phase"] == "done"
    ((user, text, _),) = notifier.sent
    assert user == "alice" and "removed" in text


def _stop_whose_removal_is_still_under_way(
    tmp_path: Path,
) -> tuple[FakeHost, FakeContainer, RealExecutor, RecordingNotifier, Path, ControllerMemory]:
    """An idle stop that removes (removeAfterIdleStop), carried out: the removal's first request went
    unanswered while the engine deleted a large writable layer, the retry is told it is in progress,
    and the container is still `removing` when the wait ends. Returns the pass's memory too."""
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("train")
    requests_sent = _removal_still_under_way(host, c)
    action = _stop(c, Reason.IDLE_TIMEOUT, StopParams(grace_s=30, remove=True))
    ex, notifier, log = _executor(host, tmp_path, verify_timeout_s=0.2)
    report = ex.execute(make_plan(action), ControllerMemory(), b.T0)
    (o,) = report.outcomes
    assert len(requests_sent) == 2
    assert o.outcome is Outcome.IN_PROGRESS, o.detail
    assert read_events(log) == [] and notifier.sent == [], "told removed before the engine shows it gone"
    assert action.key in report.memory.intents, "the stop under way is verified by the next pass"
    assert c.id not in report.memory.removed
    return host, c, ex, notifier, log, report.memory


def test_a_stop_whose_removal_the_engine_is_still_carrying_out_is_told_removed_once_it_is_gone(
    tmp_path: Path,
) -> None:
    # The stop stays open while the engine deletes the container; once it shows it gone, the next
    # pass records the controller's stop that removed it, and its owner is told so (its ledger rows
    # the controller's to release).
    host, c, ex, notifier, log, memory = _stop_whose_removal_is_still_under_way(tmp_path)
    del host.containers["train"]
    host.advance(60)
    memory, (done,) = ex.recover(memory, host.now)
    assert done.outcome is Outcome.DONE, done.detail
    assert memory.intents == {} and memory.removed[c.id].name == "train"
    (event,) = read_events(log)
    assert event["event_type"] == "maintenance.idle_kill" and event["details"]["removed"] is True
    ((user, text, _),) = notifier.sent
    assert user == "alice" and "was stopped and removed" in text


def test_a_stop_whose_removal_the_engine_then_fails_is_told_stopped_not_removed(tmp_path: Path) -> None:
    # The engine's removal fails after the wait (the container is left `dead`): the container still
    # exists, so its owner is told it was stopped, not that it was removed, and it is not recorded
    # as removed (the holds remove it later).
    host, c, ex, notifier, log, memory = _stop_whose_removal_is_still_under_way(tmp_path)
    c.status = "dead"
    host.advance(60)
    memory, (done,) = ex.recover(memory, host.now)
    assert done.outcome is Outcome.DONE, done.detail
    assert memory.intents == {} and c.id not in memory.removed
    (event,) = read_events(log)
    assert event["event_type"] == "maintenance.idle_kill" and event["details"]["removed"] is False
    ((user, text, _),) = notifier.sent
    assert user == "alice" and "stopped and removed" not in text, text
    assert "the container and its files are still there" in text


def test_an_interrupted_stop_whose_container_the_engine_is_still_removing_stays_open_until_it_is_gone(
    tmp_path: Path,
) -> None:
    # The daemon was killed during the stop of an `--rm` container (or one its stop removes); the
    # engine stopped it and is still deleting a large writable layer when the recovery looks, past
    # the stop's timeout. The stop was carried out: it is not "not carried out", and once the engine
    # shows the container gone it is recorded as the controller's stop that removed it, its owner told.
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("job")
    _, memory = interrupted_stop(c, Reason.IDLE_TIMEOUT, host.now)  # intent 20 s ago, grace 30 s
    c.status, c.finished_at = "removing", host.now - timedelta(seconds=15)
    host.advance(120)
    ex, notifier, log = _executor(host, tmp_path)
    memory, outcomes = ex.recover(memory, host.now)
    assert [o.detail for o in outcomes] == [], "recorded while the engine still removes it"
    assert len(memory.intents) == 1
    del host.containers["job"]
    host.advance(60)
    memory, (done,) = ex.recover(memory, host.now)
    assert done.outcome is Outcome.DONE, done.detail
    assert memory.intents == {} and memory.removed[c.id].name == "job"
    (event,) = read_events(log)
    assert event["event_type"] == "maintenance.idle_kill" and event["details"]["removed"] is True
    ((user, text, _),) = notifier.sent
    assert user == "alice" and "removed" in text
