"""A hung filesystem under a container's workspace, on the real engine: the pass goes on.

A FUSE mount whose server never answers (``tests.fixtures.hung_fs``) is mounted over ``/workspace``
inside one running container's mount namespace: any lookup below it blocks in the kernel, as on a
hard-mounted NFS home whose server is down. Read inline, that container's keep-alive stalled every
pass (the watchdog then restarted the daemon, onto the same file). Now the read is given up after
its deadline, the container's keep-alive is UNKNOWN (which holds off its idle stop:
``tests/unit/test_safety_idle.py::TestRisks::test_unreadable_keepalive_defers_the_idle_stop``), every
other container is read as before, and the blocked read is not started again while it stays blocked.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from controller.observe import HostObserver, ObserveConfig
from controller.observe.keepalive_reads import KEEPALIVE_READ_TIMEOUT_S
from controller.snapshot import KeepAliveState
from tests.fixtures.docker_host import ContainerFactory
from tests.fixtures.hung_fs import HungFilesystem
from tests.integration.test_security_keepalive import (
    KEEPALIVE,
    NoGpus,
    host_pid,
    keepalive_of,
    observe_in_thread,
    sh,
)

pytestmark = pytest.mark.docker


def _readers() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "keepalive-read")


def test_a_hung_filesystem_under_one_workspace_does_not_stall_the_pass(
    make_container: ContainerFactory, tmp_path: Path
) -> None:
    healthy = make_container(network_mode="none")
    hung = make_container(network_mode="none")
    sh(healthy, f"touch {KEEPALIVE}")
    config = ObserveConfig(ledger_path=tmp_path / "ledger.json")
    with (
        HostObserver(config, nvml=NoGpus()) as observer,
        HungFilesystem("/workspace", pid=host_pid(hung)) as fs,
    ):
        # The mount is real: a process in that container blocks on it.
        probe = hung.exec_run(["timeout", "-s", "KILL", "1", "stat", KEEPALIVE])
        assert probe.exit_code != 0 and b"No such file" not in probe.output

        started = time.monotonic()
        snap = observe_in_thread(observer, unblock=None, timeout_s=30)
        took_s = time.monotonic() - started
        ka = keepalive_of(snap, hung)
        assert ka.state == KeepAliveState.UNKNOWN and "did not return" in (ka.detail or ""), ka
        assert keepalive_of(snap, healthy).state == KeepAliveState.PRESENT
        assert took_s < KEEPALIVE_READ_TIMEOUT_S + 5, f"the pass took {took_s:.1f} s"
        assert observer.keepalive_reads.blocked() == [hung.id]
        readers = _readers()

        # The next pass does not wait for it again, nor start a second read beside the blocked one.
        started = time.monotonic()
        snap = observe_in_thread(observer, unblock=None, timeout_s=30)
        assert time.monotonic() - started < KEEPALIVE_READ_TIMEOUT_S
        ka = keepalive_of(snap, hung)
        assert ka.state == KeepAliveState.UNKNOWN and "still blocked" in (ka.detail or ""), ka
        assert keepalive_of(snap, healthy).state == KeepAliveState.PRESENT
        assert _readers() == readers

        # Once the filesystem answers again, the blocked thread ends and the file is read again.
        fs.release()
        deadline = time.monotonic() + 10
        while observer.keepalive_reads.blocked() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert observer.keepalive_reads.blocked() == []
        snap = observe_in_thread(observer, unblock=None, timeout_s=30)
        assert keepalive_of(snap, hung).state == KeepAliveState.ABSENT
        assert keepalive_of(snap, healthy).state == KeepAliveState.PRESENT
