"""After a real stop or removal on the real engine, the owner is told: on a real pseudo-terminal, or
(not logged in) in the container's workspace as ``/workspace/.ds01-alerts``; the notification hook
gets the document from a real HTTP server's point of view. A container's user who plants a symlink
at ``/workspace/.ds01-alerts`` cannot make the daemon write into a host file."""

from __future__ import annotations

import os
import pwd
import threading
from pathlib import Path
from typing import Any

import pytest

from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.act.hook import HookConfig, NotificationHook
from controller.act.notify import ALERT_FILE_NAME, Session, TerminalNotifier
from controller.act.report import Outcome
from controller.memory import ControllerMemory
from controller.plan.types import ActionKind, Reason
from tests.fixtures.act import NOW, container_action, make_plan, read_events
from tests.fixtures.notices import read_all

pytestmark = pytest.mark.docker

ME = pwd.getpwuid(os.geteuid()).pw_name


def executor(
    docker_client: Any,
    log: Path,
    tmp_path: Path,
    sessions: list[Session],
    hook: NotificationHook | None = None,
) -> RealExecutor:
    return RealExecutor(
        docker_client,
        EventLog(log),
        TerminalNotifier(sessions=lambda: sessions),
        tmp_path / "ledger.json",
        clock=lambda: NOW,
        verify_timeout_s=5.0,
        hook=hook,
    )


def workspace_container(make_container: Any, ws: Path, command: str = "sleep 300") -> Any:
    ws.mkdir(exist_ok=True)
    return make_container(command, volumes={str(ws): {"bind": "/workspace", "mode": "rw"}})


def test_stop_notice_on_the_owners_terminal_and_to_the_hook(
    make_container: Any,
    docker_client: Any,
    tmp_path: Path,
    pty: tuple[int, str],
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    master, tty = pty
    url, bodies = webhook
    log = tmp_path / "events.jsonl"
    c = workspace_container(make_container, tmp_path / "ws")
    hook = NotificationHook(HookConfig(url=url, timeout_s=5))
    action = container_action(
        ActionKind.STOP_CONTAINER, c, Reason.IDLE_TIMEOUT, params={"timeout_s": 1}, user=ME
    )
    report = executor(docker_client, log, tmp_path, [Session(ME, tty)], hook).execute(
        make_plan(action), ControllerMemory(), NOW
    )
    assert report.outcomes[0].outcome is Outcome.DONE, report.outcomes[0].detail
    text = read_all(master, 0.3).decode()
    assert f"Your container {c.name} was stopped" in text and "docker start" in text
    (stop,) = [e for e in read_events(log) if e["event_type"] == "maintenance.idle_kill"]
    assert stop["details"]["notice"] == {"terminals": 1}
    assert not (tmp_path / "ws" / ALERT_FILE_NAME).exists()  # a terminal took it
    assert hook.flush(10)
    (body,) = bodies
    assert body["kind"] == "stop" and body["owner"] == ME and body["container"] == c.name
    assert body["reason"] == "IdleTimeout" and body["dry_run"] is False and body["stop_at"]


def test_owner_not_logged_in_finds_the_removal_notice_in_workspace(
    make_container: Any, docker_client: Any, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    ws = tmp_path / "ws"
    c = workspace_container(make_container, ws, "true")
    c.wait(timeout=30)
    action = container_action(ActionKind.REMOVE_CONTAINER, c, Reason.STOPPED_HOLD_EXPIRED, user=ME)
    report = executor(docker_client, log, tmp_path, []).execute(make_plan(action), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.DONE, report.outcomes[0].detail
    content = (ws / ALERT_FILE_NAME).read_text()
    assert f"Your stopped container {c.name} was removed" in content and "create it again" in content
    (removal,) = [e for e in read_events(log) if e["event_type"] == "container.remove"]
    assert removal["details"]["notice"] == {"terminals": 0, "alerts_file": "written"}


def test_a_symlink_planted_in_the_workspace_is_not_followed(
    make_container: Any, docker_client: Any, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("host file\n")
    log = tmp_path / "events.jsonl"
    ws = tmp_path / "ws"
    # From inside the container, the user points the alerts file at a host path.
    c = workspace_container(
        make_container, ws, f"sh -c 'ln -s {victim} /workspace/{ALERT_FILE_NAME}; sleep 300'"
    )
    for _ in range(50):
        if os.path.islink(ws / ALERT_FILE_NAME):
            break
        threading.Event().wait(0.1)
    action = container_action(
        ActionKind.STOP_CONTAINER, c, Reason.IDLE_TIMEOUT, params={"timeout_s": 1}, user=ME
    )
    report = executor(docker_client, log, tmp_path, []).execute(make_plan(action), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.DONE  # the stop stands; only the notice is refused
    assert victim.read_text() == "host file\n"
    (stop,) = [e for e in read_events(log) if e["event_type"] == "maintenance.idle_kill"]
    assert "symbolic link" in stop["details"]["notice"]["alerts_file"]


def test_a_warning_for_an_owner_not_logged_in_lands_in_the_workspace(
    make_container: Any, docker_client: Any, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    ws = tmp_path / "ws"
    c = workspace_container(make_container, ws)
    warn = container_action(
        ActionKind.WARN_OWNER,
        c,
        Reason.IDLE_WARNING,
        params={
            "notice": "Your container is idle. It will be stopped at {stop_at}.",
            "stop_expected_at": "2026-01-30T15:00:00Z",
        },
        user=ME,
    )
    report = executor(docker_client, log, tmp_path, []).execute(make_plan(warn), ControllerMemory(), NOW)
    assert report.outcomes[0].outcome is Outcome.DONE, report.outcomes[0].detail
    content = (ws / ALERT_FILE_NAME).read_text()
    assert "[WARNING] ds01-controller" in content and "It will be stopped at 2026-01-30" in content
    (event,) = [e for e in read_events(log) if e["event_type"] == "controller.warning"]
    assert event["details"]["terminals"] == 0 and event["details"]["alerts_file"] == "written"


def test_an_admin_alert_reaches_the_hook(
    docker_client: Any, tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    from controller.plan.types import Action, Target

    url, bodies = webhook
    hook = NotificationHook(HookConfig(url=url, timeout_s=5))
    alert = Action(
        kind=ActionKind.ALERT_ADMIN,
        target=Target(gpu="GPU-1"),
        reason=Reason.DUPLICATE_GPU_HOLDER,
        message="GPU-1 is held by two running containers: a, b",
        evidence={"holders": ["a", "b"]},
        due_at=NOW,
        key="AlertAdmin:DuplicateGpuHolder:GPU-1:a+b",
        params={},
    )
    log = tmp_path / "events.jsonl"
    report = executor(docker_client, log, tmp_path, [], hook).execute(
        make_plan(alert), ControllerMemory(), NOW
    )
    assert report.outcomes[0].outcome is Outcome.DONE
    assert hook.flush(10)
    (body,) = bodies
    assert body["kind"] == "admin_alert" and body["reason"] == "DuplicateGpuHolder"
    assert body["figures"] == {"holders": ["a", "b"]} and body["owner"] is None
