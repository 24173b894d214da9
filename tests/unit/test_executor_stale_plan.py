"""What changed between the plan and the act: the executor looks again before it destroys.

A plan is computed from a snapshot; the executor carries it out seconds (or a pass) later. A
container renamed meanwhile may now be protected by its new name; a container created meanwhile
under the name a ledger row gives may hold the row's GPU. Neither is touched: the next pass
decides on what is there then. And a grace given in fractions of a second is never shortened
to nothing when the engine is told whole seconds.
"""

from __future__ import annotations

import json
import types
from datetime import timedelta
from pathlib import Path

import docker
import pytest

from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.act.report import Outcome
from controller.memory import ControllerMemory
from controller.plan.types import Action, ActionKind, Reason, StopParams, Target
from tests.fixtures import builders as b
from tests.fixtures.act import RecordingNotifier, make_plan, read_events
from tests.unit.fake_host import FakeHost

ALLOCATED = b.T0 - timedelta(hours=1)


def executor(host: FakeHost, tmp_path: Path) -> RealExecutor:
    ledger = tmp_path / "ledger.json"
    return RealExecutor(
        host.client, EventLog(tmp_path / "events.jsonl"), RecordingNotifier(), ledger, clock=host.clock
    )


def write_ledger(tmp_path: Path, gpu: str) -> dict[str, str]:
    row = {"gpu": gpu, "container": "train", "user": "alice", "allocated_at": ALLOCATED.isoformat()}
    (tmp_path / "ledger.json").write_text(json.dumps({"version": 1, "allocations": [row]}))
    return row


def ledger_rows(tmp_path: Path) -> list[dict[str, str]]:
    return json.loads((tmp_path / "ledger.json").read_text())["allocations"]  # type: ignore[no-any-return]


def release(row: dict[str, str], container_id: str | None = None) -> Action:
    """The release the planner makes of a row whose container is absent (or no longer holds it)."""
    return Action(
        kind=ActionKind.RELEASE_ALLOCATION,
        target=Target(
            container="train", container_id=container_id, gpu=row["gpu"], user="alice", ledger_entry=row
        ),
        reason=Reason.LEAKED_ALLOCATION,
        message="release ledger row",
        due_at=ALLOCATED + timedelta(minutes=30),
        key=f"ReleaseAllocation:{row['container']}:{row['gpu']}:{row['allocated_at']}",
    )


class TestReleaseLooksAgain:
    def test_a_container_created_since_the_plan_under_the_rows_name_keeps_the_row(
        self, tmp_path: Path
    ) -> None:
        # Planned: no container 'train', the row is past its window. Then alice's `docker run
        # --name train --gpus device=...` finished: the row is hers again.
        host = FakeHost()
        c = host.add("train", started_ago_s=2)
        row = write_ledger(tmp_path, c.gpu)
        report = executor(host, tmp_path).execute(make_plan(release(row)), ControllerMemory(), b.T0)
        (o,) = report.outcomes
        assert o.outcome is Outcome.SKIPPED, o.detail
        assert "exists now" in o.detail
        assert ledger_rows(tmp_path) == [row]

    def test_the_name_now_naming_another_container_keeps_the_row(self, tmp_path: Path) -> None:
        host = FakeHost()
        c = host.add("train", started_ago_s=2)
        row = write_ledger(tmp_path, c.gpu)
        planned = release(row, container_id=b.cid("the-old-train"))
        (o,) = executor(host, tmp_path).execute(make_plan(planned), ControllerMemory(), b.T0).outcomes
        assert o.outcome is Outcome.SKIPPED, o.detail
        assert ledger_rows(tmp_path) == [row]

    def test_a_container_created_while_the_intent_is_written_keeps_the_row(self, tmp_path: Path) -> None:
        # Absent at the first look; the `docker run` finishes while the intent is fsynced. The
        # look after the intent, right before the row is removed, sees it.
        host = FakeHost()
        row = write_ledger(tmp_path, b.GPU0)
        inspect = host.api.inspect_container
        looks: list[str] = []

        def inspect_container(cid: str) -> dict[str, object]:
            looks.append(cid)
            if len(looks) == 2:
                host.add("train", started_ago_s=1)
            return inspect(cid)  # type: ignore[no-any-return]

        host.api.inspect_container = inspect_container  # type: ignore[method-assign]
        report = executor(host, tmp_path).execute(make_plan(release(row)), ControllerMemory(), b.T0)
        (o,) = report.outcomes
        assert o.outcome is Outcome.SKIPPED, o.detail
        assert looks == ["train", "train"]
        assert ledger_rows(tmp_path) == [row]
        assert report.memory.intents == {}

    def test_an_engine_that_does_not_answer_keeps_the_row(self, tmp_path: Path) -> None:
        # Whether a container took the name since the plan cannot be told: nothing is released.
        host = FakeHost()
        row = write_ledger(tmp_path, b.GPU0)

        def down(cid: str) -> dict[str, object]:
            response = types.SimpleNamespace(status_code=503, reason="Unavailable", url="", text="")
            raise docker.errors.APIError("unavailable", response=response)  # type: ignore[arg-type]

        host.api.inspect_container = down  # type: ignore[method-assign,assignment]
        (o,) = executor(host, tmp_path).execute(make_plan(release(row)), ControllerMemory(), b.T0).outcomes
        assert o.outcome is Outcome.FAILED, o.detail
        assert ledger_rows(tmp_path) == [row]

    @pytest.mark.parametrize("judged", ["absent", "the same container"])
    def test_the_row_is_released_when_nothing_changed(self, tmp_path: Path, judged: str) -> None:
        host = FakeHost()
        if judged == "absent":
            row, planned = write_ledger(tmp_path, b.GPU0), None
        else:
            c = host.add("train")  # exists, but no longer references the row's device
            row, planned = write_ledger(tmp_path, "GPU-not-its-own"), c.id
        (o,) = (
            executor(host, tmp_path)
            .execute(make_plan(release(row, planned)), ControllerMemory(), b.T0)
            .outcomes
        )
        assert o.outcome is Outcome.DONE, o.detail
        assert ledger_rows(tmp_path) == []


def stop(c_id: str, name: str, started_at: object, grace_s: float) -> Action:
    return Action(
        kind=ActionKind.STOP_CONTAINER,
        target=Target(
            container=name,
            container_id=c_id,
            expected_state="running",
            expected_started_at=started_at,  # type: ignore[arg-type]
            user="alice",
        ),
        reason=Reason.MAX_RUNTIME_EXCEEDED,
        message=f"stop {name}",
        due_at=b.T0 - timedelta(minutes=5),
        key=f"StopContainer:{c_id}:MaxRuntimeExceeded",
        params=StopParams(grace_s=grace_s),
    )


def test_a_container_renamed_since_the_plan_is_not_stopped(tmp_path: Path) -> None:
    # The stop was planned for 'train'; `docker rename train keep-train` came before it ran, and
    # 'keep-*' may be protected: the plan judged another name.
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("train")
    action = stop(c.id, "train", c.started_at, 30)
    c.name = "keep-train"
    (o,) = executor(host, tmp_path).execute(make_plan(action), ControllerMemory(), b.T0).outcomes
    assert o.outcome is Outcome.SKIPPED, o.detail
    assert "renamed to keep-train" in o.detail
    assert c.status == "running"


def test_a_container_its_owner_stopped_right_before_the_stop_is_not_the_controllers_stop(
    tmp_path: Path,
) -> None:
    # The last look, after the intent, sees 'train' running; alice's own `docker stop` lands before
    # the controller's, which the engine answers 304 Not Modified. The stop is hers: she is not told
    # the controller stopped it, the controller keeps no mark of a stop of its own (nor of a hold
    # it promised), and the stopped container is not removed with a stop that did not happen.
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("train")
    inspect = host.api.inspect_container
    looks: list[str] = []

    def inspect_container(cid: str) -> dict[str, object]:
        data = inspect(cid)
        looks.append(data["State"]["Status"])  # type: ignore[index]
        if len(looks) == 2:  # the look right before the stop: then its owner stops it
            c.status, c.finished_at = "exited", host.now
        return data  # type: ignore[no-any-return]

    host.api.inspect_container = inspect_container  # type: ignore[method-assign]
    action = Action(
        kind=ActionKind.STOP_CONTAINER,
        target=Target(
            container="train",
            container_id=c.id,
            expected_state="running",
            expected_started_at=c.started_at,
            user="alice",
        ),
        reason=Reason.IDLE_TIMEOUT,
        message="stop train",
        due_at=b.T0 - timedelta(minutes=5),
        key=f"StopContainer:{c.id}:IdleTimeout",
        params=StopParams(grace_s=30, remove=True),
    )
    notifier = RecordingNotifier()
    log = tmp_path / "events.jsonl"
    ex = RealExecutor(host.client, EventLog(log), notifier, tmp_path / "ledger.json", clock=host.clock)
    report = ex.execute(make_plan(action), ControllerMemory(), b.T0)
    (o,) = report.outcomes
    assert o.outcome is Outcome.SKIPPED, o.detail
    assert "exited" in o.detail
    assert looks[:2] == ["running", "running"]
    assert notifier.sent == []
    assert host.containers["train"] is c and c.status == "exited"  # kept for its owner's hold
    assert c.id not in report.memory.containers or (
        report.memory.containers[c.id].stopped_by_controller_at is None
    )
    assert report.memory.removed == {} and report.memory.intents == {} and report.memory.attempts == {}
    events = [(e["event_type"], e["details"]["phase"]) for e in read_events(log, intents=True)]
    assert events == [("controller.action_started", "started"), ("controller.action_skipped", "skipped")]


@pytest.mark.parametrize(("grace_s", "told_s"), [(0.5, 1), (1.9, 2), (30, 30), (0, 0)])
def test_a_fractional_grace_is_rounded_up_never_down(tmp_path: Path, grace_s: float, told_s: int) -> None:
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("train")
    told: list[int] = []
    api_post = host.api._post

    def recording_post(url: str, params: dict[str, int], timeout: float | None = None) -> object:
        told.append(params["t"])  # the stop's ``t``, as the engine is told it
        return api_post(url, params, timeout)

    host.api._post = recording_post  # type: ignore[method-assign]
    (o,) = (
        executor(host, tmp_path)
        .execute(make_plan(stop(c.id, "train", c.started_at, grace_s)), ControllerMemory(), b.T0)
        .outcomes
    )
    assert o.outcome is Outcome.DONE, o.detail
    assert told == [told_s]


def test_an_open_release_breaker_holds_a_release_at_the_executor_too(tmp_path: Path) -> None:
    # The planner defers releases while the release breaker is open; a plan made before it tripped
    # (or handed over by anything else) is held back by the executor as well.
    host = FakeHost()
    row = write_ledger(tmp_path, b.GPU0)
    memory = ControllerMemory().model_copy(
        update={
            "release_breaker": ControllerMemory().release_breaker.model_copy(
                update={"tripped": True, "reason": "x"}
            )
        }
    )
    (o,) = executor(host, tmp_path).execute(make_plan(release(row), memory=memory), memory, b.T0).outcomes
    assert o.outcome is Outcome.SKIPPED, o.detail
    assert "release breaker open" in o.detail
    assert ledger_rows(tmp_path) == [row]


@pytest.mark.parametrize("answer", ["another container's id prefix", "several containers' id prefix"])
def test_a_short_hex_name_is_not_taken_for_an_id_prefix(tmp_path: Path, answer: str) -> None:
    # The row names 'ace', gone. The engine resolves an id prefix of any length, so inspecting
    # 'ace' finds a container whose id starts with it (or answers that several do); the planner
    # takes only a key long enough to be an id prefix. No container is named 'ace': released.
    host = FakeHost()
    other = host.add("w1")
    row = write_ledger(tmp_path, b.GPU0)
    row["container"] = other.id[:3]
    (tmp_path / "ledger.json").write_text(json.dumps({"version": 1, "allocations": [row]}))
    if answer == "several containers' id prefix":

        def ambiguous(cid: str) -> dict[str, object]:
            response = types.SimpleNamespace(status_code=400, reason="Bad Request", url="", text="")
            raise docker.errors.APIError(
                "bad request",
                response=response,  # type: ignore[arg-type]
                explanation=f"Multiple IDs found with provided prefix: {cid}",
            )

        host.api.inspect_container = ambiguous  # type: ignore[method-assign,assignment]
    (o,) = executor(host, tmp_path).execute(make_plan(release(row)), ControllerMemory(), b.T0).outcomes
    assert o.outcome is Outcome.DONE, o.detail
    assert ledger_rows(tmp_path) == []


def quota_stop(c_id: str, name: str, started_at: object, counted: tuple[str, ...] | None) -> Action:
    """The container quota's stop of ``name``, naming the containers the quota counted and keeps."""
    planned = stop(c_id, name, started_at, 30)
    return planned.model_copy(
        update={
            "reason": Reason.CONTAINER_QUOTA_EXCEEDED,
            "key": f"StopContainer:{c_id}:ContainerQuotaExceeded",
            "params": StopParams(grace_s=30, quota_counted_ids=counted),  # type: ignore[arg-type]
        }
    )


class TestQuotaStopLooksAtWhatTheQuotaCounted:
    """The engine-side cases (a counted container stopped or removed, paused, a new one) are in
    ``tests/integration/test_executor_quota_recheck.py``; these are what the engine will not do on
    request: fail, or be handed a plan that names nothing."""

    def test_an_engine_that_does_not_answer_the_re_check_stops_nothing(self, tmp_path: Path) -> None:
        host = FakeHost(term_ignored_s=0.0)
        kept, newest = host.add("alice-0"), host.add("alice-1", started_ago_s=60)

        def down(all: bool = False, filters: object = None) -> list[dict[str, object]]:
            response = types.SimpleNamespace(status_code=503, reason="Unavailable", url="", text="")
            raise docker.errors.APIError("unavailable", response=response)  # type: ignore[arg-type]

        host.api.containers = down  # type: ignore[method-assign]
        action = quota_stop(newest.id, "alice-1", newest.started_at, (kept.id,))
        report = executor(host, tmp_path).execute(make_plan(action), ControllerMemory(), b.T0)
        (o,) = report.outcomes
        assert o.outcome is Outcome.SKIPPED, o.detail
        assert "could not be re-checked" in o.detail and "503" in o.detail
        assert newest.status == "running" and host.stopped() == []
        assert report.memory.attempts == {} and report.memory.intents == {}

    def test_a_quota_stop_that_names_nothing_counted_is_not_made(self, tmp_path: Path) -> None:
        # Only a hand-made or foreign plan lacks the field: the quota cannot be re-checked without it.
        host = FakeHost(term_ignored_s=0.0)
        c = host.add("alice-1")
        action = quota_stop(c.id, "alice-1", c.started_at, None)
        (o,) = executor(host, tmp_path).execute(make_plan(action), ControllerMemory(), b.T0).outcomes
        assert o.outcome is Outcome.SKIPPED, o.detail
        assert "does not name the containers the quota counted" in o.detail
        assert c.status == "running"

    def test_a_counted_container_stopped_while_the_intent_is_written_keeps_the_stop_from_running(
        self, tmp_path: Path
    ) -> None:
        # Live at the first look; its owner stops it while the intent is fsynced. The look after the
        # intent, right before the stop, sees it.
        host = FakeHost(term_ignored_s=0.0)
        kept, newest = host.add("alice-0"), host.add("alice-1", started_ago_s=60)
        listing = host.api.containers
        looks: list[int] = []

        def containers(
            all: bool = False, filters: dict[str, object] | None = None
        ) -> list[dict[str, object]]:
            looks.append(1)
            if len(looks) == 2:
                kept.status = "exited"
            return listing(all=all, filters=filters)  # type: ignore[arg-type]

        host.api.containers = containers  # type: ignore[method-assign]
        action = quota_stop(newest.id, "alice-1", newest.started_at, (kept.id,))
        report = executor(host, tmp_path).execute(make_plan(action), ControllerMemory(), b.T0)
        (o,) = report.outcomes
        assert o.outcome is Outcome.SKIPPED, o.detail
        assert len(looks) == 2 and "alice-0 exited" in o.detail
        assert newest.status == "running" and host.stopped() == []
        assert report.memory.intents == {}  # the intent is closed, as skipped

    def test_the_stop_is_made_while_every_counted_container_is_live(self, tmp_path: Path) -> None:
        host = FakeHost(term_ignored_s=0.0)
        kept, newest = host.add("alice-0"), host.add("alice-1", started_ago_s=60)
        action = quota_stop(newest.id, "alice-1", newest.started_at, (kept.id,))
        (o,) = executor(host, tmp_path).execute(make_plan(action), ControllerMemory(), b.T0).outcomes
        assert o.outcome is Outcome.DONE, o.detail
        assert host.stopped() == ["alice-1"] and kept.status == "running"


def test_the_removal_notice_of_a_container_without_workspace_mount_keeps_nothing(tmp_path: Path) -> None:
    # An idle stop that removes the container; its inspect shows no mount at /workspace (a plain
    # `docker run --gpus ...`): the /workspace inside went with the container, and the owner is
    # not told that it was kept.
    host = FakeHost(term_ignored_s=0.0)
    c = host.add("train")
    action = stop(c.id, "train", c.started_at, 1).model_copy(
        update={"params": StopParams(grace_s=1, remove=True), "reason": Reason.IDLE_TIMEOUT}
    )
    notifier = RecordingNotifier()
    ex = RealExecutor(
        host.client, EventLog(tmp_path / "events.jsonl"), notifier, tmp_path / "ledger.json", clock=host.clock
    )
    (o,) = ex.execute(make_plan(action), ControllerMemory(), b.T0).outcomes
    assert o.outcome is Outcome.DONE, o.detail
    assert "train" not in host.containers  # removed
    ((user, text, severity),) = notifier.sent
    assert (user, severity) == ("alice", "STOPPED")
    assert "What is kept: nothing: the container had no /workspace mount" in text, text
    assert "your files under /workspace" not in text
