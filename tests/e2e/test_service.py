"""End to end: ``ds01-controller run`` as a service -- it starts, reports ready, runs passes, is
scraped, stops cleanly on SIGTERM, and refuses bad input at start with one clear line.
"""

from __future__ import annotations

import re
import signal
import socket
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.fixtures.daemon import DaemonRunner
from tests.fixtures.notify_socket import NotifySocket

pytestmark = [pytest.mark.docker, pytest.mark.slow]

WAIT_S = 30.0
MISSING_DOCKER = {"DOCKER_HOST": "unix:///nonexistent.sock"}


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ERROR")]


def assert_one_clear_line(text: str, *fragments: str) -> str:
    """Exactly one ERROR line, containing every fragment; no traceback anywhere."""
    assert "Traceback" not in text, text
    errors = error_lines(text)
    assert len(errors) == 1, f"expected one error line, got {errors}\n{text}"
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def passes_total(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(r'^ds01_passes_total\{outcome="succeeded"\} (\S+)$', text, re.MULTILINE)
    assert match, "ds01_passes_total{outcome=succeeded} is not exported"
    return float(match.group(1))


def test_notify_ready_status_watchdog_and_stopping(
    controller_daemon: DaemonRunner, notify_socket: NotifySocket
) -> None:
    # A 2 s watchdog with a 60 s interval: only the watchdog makes the daemon pass every second.
    d = controller_daemon.start(
        interval_s=60, env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "2000000"}
    )
    assert notify_socket.wait_for("READY=1", WAIT_S), d.log()
    assert notify_socket.wait_for("WATCHDOG=1", WAIT_S), d.log()
    d.wait_for_passes(3, timeout=WAIT_S)
    assert d.stop() == 0
    assert notify_socket.wait_for("STOPPING=1", 5)
    fields = notify_socket.fields()
    assert fields.index("READY=1") < fields.index("WATCHDOG=1") < fields.index("STOPPING=1")
    assert fields[-1] == "STOPPING=1"
    assert fields.count("WATCHDOG=1") >= 3
    statuses = [f for f in fields if f.startswith("STATUS=pass ")]
    assert statuses, fields
    assert "containers=" in statuses[-1] and "gpus=" in statuses[-1]
    assert "Traceback" not in d.log()


def test_metrics_endpoint_counts_passes(controller_daemon: DaemonRunner) -> None:
    port = free_port()
    d = controller_daemon.start("--metrics-port", str(port))
    d.wait_for_passes(1)
    first = passes_total(port)
    d.wait_for_passes(2)
    assert passes_total(port) >= first + 2
    assert d.stop() == 0


def test_missing_docker_socket_is_announced_once_and_the_daemon_keeps_running(
    controller_daemon: DaemonRunner,
) -> None:
    d = controller_daemon.start(env=MISSING_DOCKER)
    d.wait_for_passes(4)
    degraded = [line for line in d.log().splitlines() if "degraded:" in line]
    assert len(degraded) == 1, degraded
    assert "unix:///nonexistent.sock" in degraded[0] and "no such socket" in degraded[0]
    assert "no container is acted on" in degraded[0]
    assert d.alive
    assert d.stop() == 0
    assert "Traceback" not in d.log()


def test_missing_docker_socket_fails_a_single_pass(controller_daemon: DaemonRunner) -> None:
    once = controller_daemon.run_once(env=MISSING_DOCKER)
    assert once.returncode == 1
    assert_one_clear_line(once.stderr, "unix:///nonexistent.sock", "no such socket")


def test_unwritable_state_directory(controller_daemon: DaemonRunner) -> None:
    blocker = controller_daemon.paths.base / "not-a-directory"
    blocker.write_text("")
    once = controller_daemon.run_once("--state-dir", str(blocker / "state"))
    assert once.returncode == 1
    assert_one_clear_line(once.stderr, str(blocker / "state"), "--state-dir")


def test_state_directory_on_a_read_only_file_system(controller_daemon: DaemonRunner) -> None:
    ro = controller_daemon.paths.base / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
    try:
        once = controller_daemon.run_once("--state-dir", str(ro / "state"))
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert once.returncode == 1
    assert_one_clear_line(once.stderr, str(ro / "state"), "Read-only file system", "--state-dir")


def test_state_directory_others_could_write(controller_daemon: DaemonRunner) -> None:
    state = controller_daemon.paths.state_dir
    state.mkdir()
    state.chmod(0o777)
    d = controller_daemon.start()
    assert d.proc.wait(timeout=WAIT_S) == 1
    assert_one_clear_line(d.log(), str(state), "chmod go-w")
    assert stat.S_IMODE(state.stat().st_mode) == 0o777  # reported, not silently "fixed"


def test_metrics_port_in_use(controller_daemon: DaemonRunner, busy_port: int) -> None:
    d = controller_daemon.start("--metrics-port", str(busy_port))
    assert d.proc.wait(timeout=WAIT_S) == 1
    assert_one_clear_line(d.log(), f"port {busy_port}", "already in use", "--metrics-port")


def test_invalid_spec_at_start(controller_daemon: DaemonRunner) -> None:
    spec = controller_daemon.write_spec(
        "apiVersion: ds01.io/v1alpha1\nkind: LifecyclePolicy\nmetadata:\n  name: lab\n"
        "spec:\n  settings:\n    idleTimeout: 48\n"
    )
    d = controller_daemon.start()
    assert d.proc.wait(timeout=WAIT_S) == 1
    line = assert_one_clear_line(d.log(), f"{spec}:7", "idleTimeout", "48h")
    assert "invalid policy" in line
    assert not controller_daemon.paths.events_log.exists()  # it never ran a pass


def test_a_second_daemon_on_the_same_state_refuses_to_start(controller_daemon: DaemonRunner) -> None:
    first = controller_daemon.start()
    first.wait_for_passes(1)
    second = controller_daemon.start()
    assert second.proc.wait(timeout=WAIT_S) == 1
    assert_one_clear_line(second.log(), f"pid {first.pid}", "holds")
    assert first.alive
    assert first.stop() == 0


def test_sigterm_during_a_long_wait_exits_promptly(controller_daemon: DaemonRunner) -> None:
    d = controller_daemon.start(interval_s=600)
    d.wait_for_passes(1)
    asked = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - asked < 5
    assert d.log().rstrip().endswith("ds01-controller stopped")


def test_sighup_rereads_the_policy_and_the_daemon_carries_on(controller_daemon: DaemonRunner) -> None:
    d = controller_daemon.start()
    d.wait_for_passes(1)
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for_log("SIGHUP: re-reading the policy")
    d.wait_for_passes(2)
    assert d.alive
    assert d.stop() == 0
