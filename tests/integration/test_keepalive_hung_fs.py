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

import json
import subprocess
import sys
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


OBSERVE_UNDER_A_LOW_FD_LIMIT = """
import json, os, resource, sys
from pathlib import Path
from controller.observe import HostObserver, ObserveConfig
from controller.snapshot import Domain, DomainHealth

class NoGpus:
    def observe(self):
        return (), DomainHealth(domain=Domain.NVML, ok=True)

ids = set(sys.argv[2:])
with HostObserver(ObserveConfig(ledger_path=Path(sys.argv[1])), nvml=NoGpus()) as observer:
    observer.observe()  # the client connected, the inspect cache filled
    open_now = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 12, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    snap = observer.observe()
found = {c.id: c.signals for c in snap.containers if c.id in ids}
print(json.dumps({
    "present": sum(1 for s in found.values() if s is not None and s.keepalive.state.value == "present"),
    "cpu_known": sum(1 for s in found.values() if s is not None and s.cpu_usage_ns is not None),
    "details": sorted({(s.keepalive.detail or "") for s in found.values() if s is not None}),
}))
"""


def test_the_pass_holds_no_fd_per_running_container(make_container: ContainerFactory, tmp_path: Path) -> None:
    """The reads run after the listing; had each container's /proc/<pid> been held open until
    then, a host with about a thousand running containers (the unit's soft limit is 1024) would
    have run out: here 30 containers under a limit of 12 fds more than the observer needs."""
    containers = [
        make_container(["sh", "-c", f"touch {KEEPALIVE}; sleep 300"], network_mode="none") for _ in range(30)
    ]
    time.sleep(0.5)  # (each has written its file)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            OBSERVE_UNDER_A_LOW_FD_LIMIT,
            str(tmp_path / "ledger.json"),
            *(c.id for c in containers),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {"present": 30, "cpu_known": 30, "details": [""]}, found
