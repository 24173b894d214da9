"""The systemd notify client against a datagram socket the test owns (path and abstract namespace)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from loguru import logger

from controller.ops.sdnotify import MAX_STATUS_CHARS, Notifier
from tests.fixtures.notify_socket import NotifySocket


@pytest.fixture
def abstract_socket() -> Iterator[NotifySocket]:
    ns = NotifySocket(abstract=True)
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def warnings_logged() -> Iterator[list[str]]:
    lines: list[str] = []
    sink_id = logger.add(lines.append, level="WARNING", format="{message}")
    try:
        yield lines
    finally:
        logger.remove(sink_id)


def test_each_state_is_sent_as_its_exact_datagram(notify_socket: NotifySocket) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": notify_socket.path})
    assert n.enabled
    assert n.ready()
    assert n.status("pass 3: 2 actions, 1 deferred")
    assert n.watchdog()
    assert n.stopping()
    got = notify_socket.messages(timeout_s=5, until="STOPPING=1")
    assert got == ["READY=1", "STATUS=pass 3: 2 actions, 1 deferred", "WATCHDOG=1", "STOPPING=1"]
    n.close()


def test_ready_with_status_is_one_datagram(notify_socket: NotifySocket) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": notify_socket.path})
    n.ready(status="watching 12 containers")
    assert notify_socket.messages(timeout_s=5) == ["READY=1\nSTATUS=watching 12 containers"]


def test_abstract_namespace_socket(abstract_socket: NotifySocket) -> None:
    assert abstract_socket.path.startswith("@")
    n = Notifier(env={"NOTIFY_SOCKET": abstract_socket.path})
    assert n.ready()
    assert n.watchdog()
    assert abstract_socket.messages(timeout_s=5, until="WATCHDOG=1") == ["READY=1", "WATCHDOG=1"]


def test_reloading_carries_a_monotonic_timestamp(notify_socket: NotifySocket) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": notify_socket.path})
    before_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    after_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    (msg,) = notify_socket.messages(timeout_s=5)
    first, second = msg.split("\n")
    assert first == "RELOADING=1"
    key, _, value = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before_usec <= int(value) <= after_usec


def test_status_cannot_inject_other_fields(notify_socket: NotifySocket) -> None:
    # A container name in a status line must not be able to forge READY=1 or MAINPID=.
    n = Notifier(env={"NOTIFY_SOCKET": notify_socket.path})
    n.status("stopping evil\nREADY=1\nMAINPID=1\x1b[31m")
    (msg,) = notify_socket.messages(timeout_s=5)
    assert "\n" not in msg
    assert msg.startswith("STATUS=stopping evil READY=1 MAINPID=1")
    assert "\x1b" not in msg


def test_long_status_is_bounded(notify_socket: NotifySocket) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": notify_socket.path})
    n.status("x" * 10_000)
    (msg,) = notify_socket.messages(timeout_s=5)
    assert len(msg) == len("STATUS=") + MAX_STATUS_CHARS
    assert msg.endswith("…")


def test_without_systemd_everything_is_a_quiet_no_op(warnings_logged: list[str]) -> None:
    n = Notifier(env={})
    assert not n.enabled
    assert [n.ready(), n.status("x"), n.watchdog(), n.stopping(), n.reloading()] == [False] * 5
    assert n.watchdog_interval_s() is None
    assert warnings_logged == []


def test_a_missing_socket_never_raises_and_is_logged_once(warnings_logged: list[str]) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": "/nonexistent-dir/notify.sock"})
    assert n.enabled
    for _ in range(3):
        assert n.ready() is False
        assert n.watchdog() is False
    assert len(warnings_logged) == 1
    assert "/nonexistent-dir/notify.sock" in warnings_logged[0]


def test_a_socket_that_goes_away_is_survived(warnings_logged: list[str]) -> None:
    ns = NotifySocket()
    n = Notifier(env={"NOTIFY_SOCKET": ns.path})
    assert n.ready()
    assert ns.messages(timeout_s=5) == ["READY=1"]
    ns.close()
    assert n.watchdog() is False
    assert n.watchdog() is False
    assert len(warnings_logged) == 1


def test_an_unsupported_address_is_treated_as_absent(warnings_logged: list[str]) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not n.enabled
    assert n.ready() is False
    assert len(warnings_logged) == 1
    assert "vsock:2:1234" in warnings_logged[0]


@pytest.mark.parametrize(
    ("env", "expected_s"),
    [
        ({"WATCHDOG_USEC": "120000000"}, 120.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "4242"}, 120.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "4243"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "not-a-pid"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected_s: float | None) -> None:
    assert Notifier(env=env, pid=4242).watchdog_interval_s() == expected_s


def test_reads_the_process_environment_by_default(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier()
    assert n.watchdog_interval_s() == 2.0
    assert n.watchdog()
    assert notify_socket.messages(timeout_s=5) == ["WATCHDOG=1"]
