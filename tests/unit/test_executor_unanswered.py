"""A request the engine carried out but did not answer in time is the controller's all the same.

The executor retries a Docker request that timed out. The engine may have done what the first one
asked (a removal goes on after the client stops waiting): the retry is then answered 404 or 409
(removal already in progress), which to a first request would mean that someone else removed the
container. Here it is the controller's own removal, and it is recorded and told as one.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import requests.exceptions

from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.act.report import Outcome
from controller.memory import ControllerMemory
from controller.plan.types import Action, ActionKind, Reason, Target
from tests.fixtures import builders as b
from tests.fixtures.act import RecordingNotifier, make_plan, read_events
from tests.unit.fake_host import FakeHost


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
    action = Action(
        kind=ActionKind.REMOVE_CONTAINER,
        target=Target(
            container="train",
            container_id=c.id,
            expected_state="exited",
            expected_started_at=c.started_at,
            user="alice",
        ),
        reason=Reason.STOPPED_HOLD_EXPIRED,
        message="remove train",
        due_at=b.T0 - timedelta(minutes=5),
        key=f"RemoveContainer:{c.id}:StoppedHoldExpired",
    )
    notifier = RecordingNotifier()
    log = tmp_path / "events.jsonl"
    ex = RealExecutor(host.client, EventLog(log), notifier, tmp_path / "ledger.json", clock=host.clock)
    report = ex.execute(make_plan(action), ControllerMemory(), b.T0)
    (o,) = report.outcomes
    assert len(requests_sent) == 2
    assert o.outcome is Outcome.DONE, o.detail
    assert "train" not in host.containers
    assert report.memory.removed[c.id].name == "train"  # its ledger rows are the controller's to release
    assert [e["event_type"] for e in read_events(log)] == ["container.remove"]
    ((user, text, _),) = notifier.sent
    assert user == "alice" and "removed" in text
