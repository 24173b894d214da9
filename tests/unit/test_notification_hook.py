"""The notification hook against a real HTTP server on 127.0.0.1 and real scripts: the document,
the timeout, retries with back-off, recorded failures, dry-run silence, and that submitting never
waits for a delivery."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controller.act.dry_run import DryRunExecutor
from controller.act.events import EventLog
from controller.act.hook import HookConfig, NotificationHook, hook_config
from controller.act.owner_notices import action_document
from controller.memory import ControllerMemory
from controller.plan.types import Action, ActionKind, Plan, Reason, Target
from desired_state.load import builtin_policy, load_spec_text

AT = datetime(2026, 1, 30, 14, 30, tzinfo=UTC)


class Server:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses  # answers in turn; the last one repeats
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                outer.bodies.append(json.loads(self.rfile.read(length)))
                status = outer.statuses.pop(0) if len(outer.statuses) > 1 else outer.statuses[0]
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server([200])
    yield s
    s.close()


def warn_action() -> Action:
    return Action(
        kind=ActionKind.WARN_OWNER,
        target=Target(container="web", container_id="c" * 64, expected_state="running", user="alice"),
        reason=Reason.IDLE_WARNING,
        message="web: idle for 1h 30m (75% of 2h); it will be stopped in about 30m",
        evidence={"elapsed_s": 5400.0, "timeout_s": 7200.0},
        due_at=AT,
        key="WarnOwner:web:75",
        params={"stop_expected_at": "2026-01-30T15:00:00Z", "warning_key": "idle:75"},
    )


def doc() -> dict[str, Any]:
    found = action_document(warn_action(), at=AT)
    assert found is not None
    return found


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "hook.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_webhook_gets_one_json_document(server: Server) -> None:
    hook = NotificationHook(HookConfig(url=server.url, timeout_s=5))
    assert hook.submit(doc())
    assert hook.flush(10)
    (body,) = server.bodies
    assert body["kind"] == "warning" and body["owner"] == "alice" and body["container"] == "web"
    assert body["reason"] == "IdleWarning" and body["figures"] == {"elapsed_s": 5400.0, "timeout_s": 7200.0}
    assert body["stop_at"] == "2026-01-30T15:00:00Z" and body["dry_run"] is False
    assert "stopped in about 30m" in body["message"]


def test_command_gets_the_document_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    hook = NotificationHook(HookConfig(command=(script(tmp_path, f'cat > "{out}"\n'),), timeout_s=5))
    hook.submit(doc())
    assert hook.flush(10)
    got = json.loads(out.read_text())
    assert got["owner"] == "alice" and got["kind"] == "warning" and got["dry_run"] is False


def test_hanging_hook_is_killed_at_the_timeout_and_recorded(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    failures: list[str] = []
    hook = NotificationHook(
        HookConfig(command=(script(tmp_path, "sleep 60 &\nsleep 60\n"),), timeout_s=0.5),
        event_log=EventLog(log),
        on_failure=failures.append,
        max_attempts=1,
    )
    started = time.monotonic()
    assert hook.submit(doc())
    assert time.monotonic() - started < 0.2  # submitting never waits for the delivery
    assert hook.flush(10)
    assert time.monotonic() - started < 5
    assert failures == ["command"]
    (event,) = read_log(log)
    assert event["event_type"] == "controller.notification_failed"
    assert "timed out after 0.5s" in event["details"]["error"] and event["details"]["gave_up"] is True


def test_failing_webhook_is_retried_with_back_off_until_it_answers(tmp_path: Path) -> None:
    s = Server([500, 503, 200])
    try:
        log = tmp_path / "events.jsonl"
        failures: list[str] = []
        hook = NotificationHook(
            HookConfig(url=s.url, timeout_s=5),
            event_log=EventLog(log),
            on_failure=failures.append,
            retry_base_s=0.2,
        )
        started = time.monotonic()
        hook.submit(doc())
        assert hook.flush(15)
        assert len(s.bodies) == 3 and s.bodies[0] == s.bodies[2]
        # Back-off: 0.2 s, then 0.4 s, before the third attempt.
        assert time.monotonic() - started >= 0.6
        assert failures == ["url", "url"]
        events = read_log(log)
        assert [e["details"]["retry_in_s"] for e in events] == [0.2, 0.4]
        assert "HTTP 500" in events[0]["details"]["error"] and events[0]["details"]["gave_up"] is False
    finally:
        s.close()


def test_failing_command_gives_up_after_the_last_attempt(tmp_path: Path) -> None:
    count = tmp_path / "count"
    log = tmp_path / "events.jsonl"
    hook = NotificationHook(
        HookConfig(command=(script(tmp_path, f'echo x >> "{count}"\necho boom >&2\nexit 3\n'),)),
        event_log=EventLog(log),
        retry_base_s=0.05,
        max_attempts=3,
    )
    hook.submit(doc())
    assert hook.flush(10)
    assert count.read_text().count("x") == 3
    events = read_log(log)
    assert len(events) == 3 and events[-1]["details"]["gave_up"] is True
    assert "exit status 3: boom" in events[-1]["details"]["error"]


def test_unreachable_webhook_is_a_recorded_failure(tmp_path: Path) -> None:
    s = Server([200])
    url = s.url
    s.close()  # nothing listens there now
    failures: list[str] = []
    hook = NotificationHook(HookConfig(url=url, timeout_s=2), on_failure=failures.append, max_attempts=1)
    hook.submit(doc())
    assert hook.flush(10)
    assert failures == ["url"]


def test_dry_run_is_silent_unless_the_admin_asks(server: Server, tmp_path: Path) -> None:
    plan = Plan(observed_at=AT, evaluated_at=AT, actions=(warn_action(),), memory=ControllerMemory())
    silent = NotificationHook(HookConfig(url=server.url, timeout_s=5))
    DryRunExecutor(EventLog(tmp_path / "a.jsonl"), hook=silent).execute(plan, ControllerMemory(), AT)
    assert silent.flush(5) and server.bodies == []
    loud = NotificationHook(HookConfig(url=server.url, timeout_s=5, dry_run_notices=True))
    executor = DryRunExecutor(EventLog(tmp_path / "b.jsonl"), hook=loud)
    executor.execute(plan, ControllerMemory(), AT)
    executor.execute(plan, ControllerMemory(), AT + timedelta(seconds=30))  # once per action, not per pass
    assert loud.flush(5)
    (body,) = server.bodies
    assert body["dry_run"] is True and body["kind"] == "warning"


def test_off_by_default_and_bounded_queue(server: Server) -> None:
    assert not NotificationHook(HookConfig()).submit(doc())
    dropped: list[str] = []
    hook = NotificationHook(HookConfig(url="http://127.0.0.1:9/x"), queue_max=2, on_failure=dropped.append)
    with hook._cond:  # hold the worker back: three documents meet a queue of two
        for _ in range(3):
            hook.submit(doc())
        assert len(hook._heap) == 2
    assert "url" in dropped
    hook.close()


def test_policy_keys_reach_the_hook() -> None:
    text = """
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata: {name: site}
spec:
  notifications:
    hookCommand: ["/usr/local/bin/ds01-to-matrix"]
    hookUrl: "https://chat.example.org/hooks/ds01"
    hookTimeout: 5s
    dryRunNotices: true
"""
    config = hook_config(load_spec_text(text, "site.yaml"))
    assert config == HookConfig(
        command=("/usr/local/bin/ds01-to-matrix",),
        url="https://chat.example.org/hooks/ds01",
        timeout_s=5.0,
        dry_run_notices=True,
    )
    assert hook_config(builtin_policy()) == HookConfig()
