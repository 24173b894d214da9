"""End to end: idle stops whose processes ignore SIGTERM run side by side, and the watchdog is fed
while they wait out their grace (issue 18 item 5).

The acting daemon runs as a process against the suite's private engine, under a test-owned notify
socket with a 4 s watchdog; the four containers' main process ignores SIGTERM, so each stop lasts its
whole 5 s grace before the engine's SIGKILL.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from controller import labels as L
from tests.e2e.test_converge import for_container, gpu_request
from tests.fixtures.daemon import DaemonRunner, details, fast_policy
from tests.fixtures.docker_host import TEST_LABEL, ContainerFactory
from tests.fixtures.notify_socket import NotifySocket
from tests.fixtures.nvml import FakeNvml

pytestmark = [pytest.mark.docker, pytest.mark.slow]

GRACE_S = 5
WATCHDOG_S = 4.0
# A long sleep: a fork every second costs ~1.5 ms of CPU, which a sample spanning a few tens of
# milliseconds (passes woken by due times come that close) reads as several % of a core: activity.
IGNORES_TERM = ["sh", "-c", 'trap "" TERM; while :; do sleep 3600; done']


class WatchdogTimes:
    """When each WATCHDOG=1 arrived (sampled every 20 ms from the notify socket)."""

    def __init__(self, sock: NotifySocket) -> None:
        self._sock = sock
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        seen = 0
        while not self._stop.is_set():
            count = self._sock.fields(0).count("WATCHDOG=1")
            now = time.monotonic()
            self.times.extend([now] * (count - seen))
            seen = count
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def longest_gap_s(self, start: float, end: float) -> float:
        inside = [start, *(t for t in self.times if start < t < end), end]
        return max(b - a for a, b in itertools.pairwise(inside))


class EngineEvents:
    """The engine's own record of each SIGTERM ("kill", signal 15) and "die", followed live."""

    def __init__(self, client: Any, test_id: str) -> None:
        self.sigterm: dict[str, float] = {}
        self.died: dict[str, float] = {}
        self._stream = client.api.events(
            decode=True, filters={"event": ["kill", "die"], "label": f"{TEST_LABEL}={test_id}"}
        )
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            for event in self._stream:
                at = event["timeNano"] / 1e9
                if event.get("Action") == "die":
                    self.died.setdefault(event["id"], at)
                elif event.get("Actor", {}).get("Attributes", {}).get("signal") == "15":
                    self.sigterm.setdefault(event["id"], at)
        except Exception:  # the stream is closed at the end of the test
            return

    def wait_died(self, ids: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ids <= set(self.died) and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self._stream.close()
        self._thread.join(timeout=2)


def test_four_stops_ignoring_sigterm_take_one_grace_and_the_watchdog_is_fed(
    controller_daemon: DaemonRunner,
    e2e_containers: ContainerFactory,
    e2e_docker: Any,
    fake_nvml: FakeNvml,
    notify_socket: NotifySocket,
) -> None:
    safety = "  safety:\n    breakerMinContainers: 10\n    maxConcurrentActions: 4\n"
    controller_daemon.write_spec(
        fast_policy(controller_daemon.paths.reset_marker, idleTimeout="3s", sigtermGrace=f"{GRACE_S}s")
        + safety
    )
    uuids = [g.uuid for g in fake_nvml.set_gpus(4)]
    fake_nvml.write()
    # All four exist before the daemon starts: first seen, warned and due in the same pass. No
    # network: on the bridge a freshly started container receives a few packets (neighbour
    # discovery) that, over half-second passes, read as activity and start its streak passes later.
    idle = [
        e2e_containers(IGNORES_TERM, labels={L.DS01_USER: "alice"}, network_mode="none", **gpu_request(uuid))
        for uuid in uuids
    ]
    engine = EngineEvents(e2e_docker, e2e_containers.test_id)
    watchdog = WatchdogTimes(notify_socket)
    try:
        d = controller_daemon.start(env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "4000000"})
        for c in idle:
            d.wait_for_event("maintenance.idle_kill", for_container(c.id), timeout=60)
        d.wait_for_passes(2)
        assert d.alive
        assert d.stop() == 0
        engine.wait_died({c.id for c in idle}, 10)
    finally:
        watchdog.close()
        engine.close()

    kills, dies = engine.sigterm, engine.died
    assert set(kills) == set(dies) == {c.id for c in idle}
    for c in idle:
        assert dies[c.id] - kills[c.id] >= GRACE_S - 0.5, "the process did not ignore SIGTERM"
    first_term, last_die = min(kills.values()), max(dies.values())
    span_s = last_die - first_term
    assert span_s < 2 * GRACE_S, f"the four stops took {span_s:.1f} s: one after another, not side by side"

    # The watchdog kept being fed while the stops waited out their grace (WatchdogSec would be 4 s).
    offset = time.monotonic() - time.time()  # engine times are epoch seconds; the samples monotonic
    gap_s = watchdog.longest_gap_s(first_term + offset, last_die + offset)
    assert gap_s < WATCHDOG_S, f"no WATCHDOG=1 for {gap_s:.1f} s while the stops ran"

    log = d.log()
    for c in idle:
        assert f"stopping and removing {c.name}, SIGTERM grace {GRACE_S} s" in log
    events = [e for e in d.events("maintenance.idle_kill")]
    assert len(events) == 4 and all(details(e)["removed"] for e in events)
    assert "Traceback" not in log
