"""End to end under faults: a crash mid-pass, Docker restarting, NVML failing, a broken spec.

Each test runs the acting daemon as a process (``controller_daemon``) against the suite's private
Docker engine and the stand-in NVML, with second-scale policy durations.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from controller import labels as L
from controller.store import MemoryStore
from tests.e2e.test_converge import for_container, gpu_request
from tests.fixtures.daemon import DaemonHandle, DaemonPaths, DaemonRunner, details, fast_policy
from tests.fixtures.docker_host import ContainerFactory
from tests.fixtures.dockerd import PrivateEngine
from tests.fixtures.nvml import NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_GPU_IS_LOST, FakeNvml

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ALICE = {L.DS01_USER: "alice"}
WAIT_S = 30.0


def wait_for_docker_event(
    client: Any, cid: str, action: str, since: datetime, timeout: float
) -> dict[str, Any]:
    """The engine's own record of ``action`` (e.g. "kill") on container ``cid`` since ``since``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = datetime.now(UTC)
        for event in client.api.events(
            since=since, until=now, decode=True, filters={"container": cid, "event": action}
        ):
            return dict(event)
        time.sleep(0.02)
    pytest.fail(f"the engine recorded no {action} of {cid[:12]} within {timeout:g}s")


def removal_events(d: DaemonHandle, cid: str) -> list[dict[str, Any]]:
    """Events that say the container was removed (by a removal, or by a stop that removed it)."""
    return [
        e
        for e in d.events()
        if for_container(cid)(e)
        and (
            e["event_type"] == "container.remove"
            or (e["event_type"] in ("maintenance.idle_kill", "container.stop") and details(e).get("removed"))
        )
    ]


def wait_gone(client: Any, cid: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [c for c in client.api.containers(all=True, filters={"id": cid})]:
            return
        time.sleep(0.05)
    pytest.fail(f"container {cid[:12]} still exists after {timeout:g}s")


def test_kill_9_in_the_middle_of_a_stop_loses_and_repeats_nothing(
    controller_daemon: DaemonRunner, e2e_containers: ContainerFactory, e2e_docker: Any, fake_nvml: FakeNvml
) -> None:
    # A 2 s stop timeout (sleep ignores SIGTERM) leaves the daemon inside `docker stop` long enough.
    controller_daemon.write_spec(
        fast_policy(controller_daemon.paths.reset_marker, idleTimeout="2s", sigtermGrace="2s")
    )
    uuid = [g.uuid for g in fake_nvml.set_gpus(2)]
    fake_nvml.write()
    idle = e2e_containers(labels=ALICE, **gpu_request(uuid[0]))
    started = datetime.now(UTC)

    d1 = controller_daemon.start()
    wait_for_docker_event(e2e_docker, idle.id, "kill", started, WAIT_S)  # docker stop's SIGTERM
    d1.kill9()
    warned_before = d1.events("controller.warning")
    assert warned_before, "the stop began without a warning"

    d2 = controller_daemon.start()
    wait_gone(e2e_docker, idle.id, WAIT_S)
    d2.wait_for_event("gpu.release", lambda e: details(e).get("gpu") == uuid[0], WAIT_S)
    d2.wait_for_passes(3)
    assert d2.stop() == 0

    warnings = [e for e in d2.events("controller.warning") if for_container(idle.id)(e)]
    assert warnings == warned_before, "a warning was sent again after the restart"
    assert len(removal_events(d2, idle.id)) == 1, "the container was removed twice, or never reported"
    assert not d2.events("controller.action_failed")
    # The state the killed daemon left is intact: the store loads, and the restart took the lock.
    memory = MemoryStore(controller_daemon.paths.state_dir).load()
    assert memory.last_pass_at is not None
    assert "Traceback" not in d2.log()
    assert "holds" not in d2.log()  # no "another ds01-controller holds the lock"


def test_docker_restart_under_the_daemon(
    controller_daemon: DaemonRunner,
    e2e_engine: PrivateEngine,
    e2e_containers: ContainerFactory,
    e2e_docker: Any,
    fake_nvml: FakeNvml,
) -> None:
    uuid = [g.uuid for g in fake_nvml.set_gpus(2)]
    fake_nvml.write()
    # A resync every 60 s only: anything faster than that was woken by a Docker event.
    d = controller_daemon.start(interval_s=60)
    d.wait_for_passes(1)
    before = e2e_containers(start=False, labels=ALICE, **gpu_request(uuid[0]))
    d.wait_for_event("container.remove", for_container(before.id), WAIT_S)

    downtime_s = e2e_engine.restart()
    assert downtime_s < 15, f"the engine took {downtime_s:.1f}s to restart"
    following = d.wait_for_log("following Docker events again", WAIT_S)
    assert d.alive
    # Let the resync pass that re-following triggers finish first, so that only the create event
    # itself can wake the daemon for the next container.
    time.sleep(1.0)

    created_at = time.monotonic()
    after = e2e_containers(start=False, labels=ALICE, **gpu_request(uuid[1]))
    removed = d.wait_for_event("container.remove", for_container(after.id), WAIT_S)
    assert details(removed)["reason"] == "created_never_started"
    assert time.monotonic() - created_at < 15, "the removal waited for the periodic resync, not the event"
    assert d.stop() == 0
    log = d.log()
    assert "Traceback" not in log
    assert log.count("following Docker events again") >= 1
    assert following > 0


def test_nvml_failing_stops_no_gpu_container_for_idleness(
    controller_daemon: DaemonRunner, e2e_containers: ContainerFactory, e2e_docker: Any, fake_nvml: FakeNvml
) -> None:
    controller_daemon.write_spec(fast_policy(controller_daemon.paths.reset_marker, idleTimeout="2s"))
    uuid = [g.uuid for g in fake_nvml.set_gpus(2)]
    fake_nvml.write()
    idle = e2e_containers(labels=ALICE, **gpu_request(uuid[0]))
    d = controller_daemon.start()
    d.wait_for_passes(1)  # observed once with NVML healthy: a baseline sample, nothing idle yet

    fake_nvml.fail_call("nvmlDeviceGetCount", NVML_ERROR_GPU_IS_LOST)
    fake_nvml.fail_init(NVML_ERROR_DRIVER_NOT_LOADED)
    fake_nvml.write()
    mark = d.wait_for_log("degraded: NVML unavailable", WAIT_S)
    failing_from = len(d.events())
    d.wait_for_passes(7)  # > 3 s: past the 2 s idle timeout and its 0.4 s warning lead
    assert d.log().count("degraded: NVML unavailable") == 1, "degraded mode announced more than once"
    during = d.events()[failing_from:]
    assert not [e for e in during if e["event_type"] in ("maintenance.idle_kill", "controller.warning")]
    assert e2e_docker.api.inspect_container(idle.id)["State"]["Running"]
    assert "unavailable=nvml" in d.log()[mark:]

    # NVML back: the same container is now stopped for idleness (so it was stoppable all along).
    fake_nvml.clear_failures()
    fake_nvml.write()
    d.wait_for_log("recovered: NVML", WAIT_S)
    d.wait_for_event("maintenance.idle_kill", for_container(idle.id), WAIT_S)
    assert d.stop() == 0


def test_a_broken_spec_keeps_the_last_good_policy(
    controller_daemon: DaemonRunner, e2e_containers: ContainerFactory, fake_nvml: FakeNvml
) -> None:
    uuid = [g.uuid for g in fake_nvml.set_gpus(2)]
    fake_nvml.write()
    d = controller_daemon.start()
    d.wait_for_passes(1)

    broken = controller_daemon.write_spec(
        "apiVersion: ds01.io/v1alpha1\nkind: LifecyclePolicy\nspec: [unclosed\n"
    )
    mark = d.wait_for_log("policy reload failed", WAIT_S)
    d.wait_for_passes(3)
    log = d.log()
    assert log.count("policy reload failed") == 1, "the same broken file was reported every pass"
    assert str(broken) in log[mark:], "the error does not name the broken file"
    assert len(d.events("controller.policy_error")) == 1
    # ds01ctl tells the admin that the running controller kept its last good policy.
    policies = ds01ctl_get_policies(controller_daemon.paths)
    assert "the running controller's last reload FAILED" in policies, policies
    assert str(broken) in policies, policies
    # Still the e2e policy (created containers removed after 1 s), not the built-in 30 min.
    created = e2e_containers(start=False, labels=ALICE, **gpu_request(uuid[0]))
    removed = d.wait_for_event("container.remove", for_container(created.id), WAIT_S)
    assert details(removed)["reason"] == "created_never_started"
    assert d.alive

    # A good spec again: loaded, and the daemon carries on with it.
    controller_daemon.write_spec(fast_policy(controller_daemon.paths.reset_marker))
    d.wait_for_log("policy reloaded", WAIT_S, after=mark)
    d.wait_for_passes(1)
    assert "FAILED" not in ds01ctl_get_policies(controller_daemon.paths)
    created = e2e_containers(start=False, labels=ALICE, **gpu_request(uuid[1]))
    d.wait_for_event("container.remove", for_container(created.id), WAIT_S)
    assert d.stop() == 0
    assert "Traceback" not in d.log()


def ds01ctl_get_policies(paths: DaemonPaths) -> str:
    argv = [sys.executable, "-m", "controller.cli", "get", "policies"]
    argv += ["--specs", str(paths.specs_dir), "--state-dir", str(paths.state_dir)]
    argv += ["--events-log", str(paths.events_log), "--ledger", str(paths.ledger)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout + done.stderr


def test_an_engine_restart_stops_are_held_and_an_owners_stop_is_not(
    controller_daemon: DaemonRunner,
    e2e_engine: PrivateEngine,
    e2e_containers: ContainerFactory,
    e2e_docker: Any,
) -> None:
    """Docker restarted under the daemon with containers running: they come back exited, and with a
    2 s stopped hold they would be removed at once; they keep the restart hold instead. A container
    its owner stops afterwards is removed after the normal 2 s."""
    controller_daemon.write_spec(
        fast_policy(controller_daemon.paths.reset_marker, containerHoldAfterStop="2s")
    )
    victims = [e2e_containers(labels=ALICE, network_mode="none") for _ in range(3)]
    d = controller_daemon.start(interval_s=2)
    d.wait_for_passes(2)

    e2e_engine.restart()
    d.wait_for_log("following Docker events again", WAIT_S)
    for c in victims:
        c.reload()
        assert c.status == "exited"
    # Several passes after the restart, well past the 2 s hold.
    d.wait_for_passes(4)
    time.sleep(3)
    for c in victims:
        assert removal_events(d, c.id) == []
        c.reload()  # raises NotFound if it was removed
    mem = MemoryStore(controller_daemon.paths.state_dir).load()
    assert all(mem.containers[c.id].stopped_by_restart_at is not None for c in victims)

    # The daemon still acts: a container its owner stops now goes after its 2 s hold.
    own = e2e_containers(labels=ALICE, network_mode="none")
    d.wait_for_passes(1)
    own.stop(timeout=0)
    d.wait_for_event("container.remove", for_container(own.id), WAIT_S)
    assert d.stop() == 0
    assert "Traceback" not in d.log()


def test_a_killed_engines_containers_stopped_by_its_restart_are_held(
    controller_daemon: DaemonRunner,
    e2e_engine: PrivateEngine,
    e2e_containers: ContainerFactory,
    e2e_docker: Any,
) -> None:
    """dockerd killed (the OOM killer, a crash) with containers running: they run on under their
    shims, and the engine started again stops them as it starts, after its own start time, with
    their own exit code (`sleep` ignores SIGTERM: 137 after the stop timeout). Nobody but the restart
    stopped them: they keep the restart hold, not the 2 s stopped hold."""
    controller_daemon.write_spec(
        fast_policy(controller_daemon.paths.reset_marker, containerHoldAfterStop="2s")
    )
    victims = [e2e_containers(labels=ALICE, network_mode="none") for _ in range(2)]
    d = controller_daemon.start(interval_s=2)
    d.wait_for_passes(2)

    e2e_engine.kill()
    e2e_engine.start()
    d.wait_for_log("following Docker events again", WAIT_S)
    for c in victims:
        c.reload()
        assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 137
    d.wait_for_passes(4)
    time.sleep(3)
    for c in victims:
        assert removal_events(d, c.id) == []
        c.reload()  # raises NotFound if it was removed
    mem = MemoryStore(controller_daemon.paths.state_dir).load()
    assert all(mem.containers[c.id].stopped_by_restart_at is not None for c in victims)
    assert d.stop() == 0
    assert "Traceback" not in d.log()
