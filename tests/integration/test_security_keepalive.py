"""Hostile keep-alive files, on the real engine: links never count, and no keep-alive lasts for ever.

Threats covered (docs/security.md, "Keep-alive"):

1. ``/workspace/.keep-alive`` as a link. The controller runs as root on the host; a naive
   ``stat``/``open`` of ``/proc/<pid>/root/workspace/.keep-alive`` resolves an *absolute* symlink
   (or a ``/proc/self/...`` magic link, or a ``/workspace`` that is itself a link) against the
   **host's** root. Each case below first proves that the naive resolution really reaches a host
   file we control (so the test would fail on a naive observer), then checks that the observer
   reports ``LINK`` with no mtime, that it never opened the host file (an inotify watch on it sees
   nothing, while a control open of ours is seen), and that a host FIFO never blocks a pass.
   Through the planner a link holds off nothing, and ``ds01ctl describe`` shows it as a link.
2. A keep-alive touched every half second: the cap (``keepaliveMaxAge``) runs from when the
   controller first saw the file, so an idle GPU container is stopped, for real, once the cap has
   passed, although its keep-alive is never older than a second.
7. (part) A keep-alive that is a FIFO or a directory with thousands of entries: ``NOT_REGULAR`` at
   once, never read or walked.
"""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker.types
import pytest

from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.memory import ControllerMemory
from controller.observe import HostObserver, ObserveConfig
from controller.observe.nvml import NvmlObserver
from controller.plan.desired import PolicySetDesired
from controller.plan.planner import plan as make_plan
from controller.plan.types import ActionKind, Plan
from controller.snapshot import (
    ContainerObs,
    KeepAlive,
    KeepAliveState,
    Snapshot,
)
from controller.store import MemoryStore
from desired_state.load import load_spec_text
from tests.fixtures.act import RecordingNotifier
from tests.fixtures.builders import record_outcomes
from tests.fixtures.docker_host import ContainerFactory
from tests.fixtures.nvml import FakeNvml, NoGpus, gpu_uuid

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
KEEPALIVE = "/workspace/.keep-alive"

# Idle detection that decides within a second: no grace, one-sample window, no minimum span. The
# test containers are of type docker, whose built-in type settings pin the idle timeout: pinned here
# too. One GPU held is "high demand"; no reduction, so the timeout is exactly the one written.
FAST_POLICY = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: security-keepalive
spec:
  settings:
    keepaliveMaxAge: {cap}
    gracePeriod: 0s
    idleDetectionWindow: 1
    idleMinDuration: 0s
    warnLead: 1s
    sigtermGrace: 1s
    removeAfterIdleStop: false
    highDemandIdleReduction: 1.0
  containerTypes:
    docker:
      idleTimeout: {idle}
      maxRuntime: 24h
"""


# --- inotify: did anything open or read a host file? ----------------------------------------------

IN_ACCESS, IN_MODIFY, IN_OPEN, IN_CLOSE_NOWRITE = 0x1, 0x2, 0x20, 0x10
_LIBC = ctypes.CDLL(None, use_errno=True)


class Watch:
    """An inotify watch on one host path: ``events()`` drains and returns the event masks seen."""

    def __init__(self, path: Path) -> None:
        self.fd = _LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        mask = IN_ACCESS | IN_MODIFY | IN_OPEN | IN_CLOSE_NOWRITE
        wd = _LIBC.inotify_add_watch(self.fd, os.fsencode(path), mask)
        assert wd >= 0, os.strerror(ctypes.get_errno())

    def events(self) -> list[int]:
        masks: list[int] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return masks
            offset = 0
            while offset < len(data):
                _wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                masks.append(mask)
                offset += 16 + length

    def close(self) -> None:
        os.close(self.fd)


# --- shared pieces ------------------------------------------------------------------------------------


def gpu_request(uuid: str) -> list[Any]:
    return [docker.types.DeviceRequest(driver="nvidia", device_ids=[uuid], capabilities=[["gpu"]])]


def host_pid(container: Any) -> int:
    container.reload()
    return int(container.attrs["State"]["Pid"])


def sh(container: Any, script: str) -> None:
    result = container.exec_run(["sh", "-c", script])
    assert result.exit_code == 0, (script, result.output)


def observe_in_thread(observer: HostObserver, unblock: Path | None, timeout_s: float = 60.0) -> Snapshot:
    """One observation that must finish: a pass blocked on a FIFO is unblocked, then reported."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["snap"] = observer.observe()
        except BaseException as exc:  # reported below
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        if unblock is not None:
            # A reader blocked in open() on the FIFO is released by a writer arriving.
            fd = os.open(unblock, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        thread.join(10)
        pytest.fail(f"the observation blocked for {timeout_s:g}s (on a file on the keep-alive path)")
    if "error" in box:
        raise box["error"]
    snap: Snapshot = box["snap"]
    return snap


def keepalive_of(snap: Snapshot, container: Any) -> KeepAlive:
    found = snap.container(container.id)
    assert found is not None and found.signals is not None, f"{container.name} not observed"
    return found.signals.keepalive


@dataclass
class Bait:
    """Host files a hostile container points its keep-alive at."""

    root: Path
    fifo: Path
    log: Path  # a host file that "changes often", like something under /var/log
    dir: Path  # a host directory holding its own .keep-alive

    @property
    def dir_keepalive(self) -> Path:
        return self.dir / ".keep-alive"


@pytest.fixture
def bait(tmp_path: Path) -> Bait:
    root = tmp_path / "host-bait"
    root.mkdir()
    fifo = root / "bait.fifo"
    os.mkfifo(fifo, 0o600)
    log = root / "bait.log"
    log.write_text("a host file only root can read\n")
    log.chmod(0o600)
    d = root / "dir"
    d.mkdir()
    (d / ".keep-alive").write_text("")
    return Bait(root=root, fifo=fifo, log=log, dir=d)


def link_cases(bait: Bait) -> dict[str, tuple[str, Path | None]]:
    """case -> (shell setup inside the container, host file a naive resolver would reach)."""
    return {
        "absolute-to-host-fifo": (f"ln -s {bait.fifo} {KEEPALIVE}", bait.fifo),
        "absolute-to-host-log": (f"ln -s {bait.log} {KEEPALIVE}", bait.log),
        "proc-self-root": (f"ln -s /proc/self/root{bait.log} {KEEPALIVE}", bait.log),
        "workspace-is-a-link": (
            f"mv /workspace /workspace.orig && ln -s {bait.dir} /workspace",
            bait.dir_keepalive,
        ),
        # Relative links stay inside the container, but still never count.
        "relative": ("touch /workspace/real && ln -s real " + KEEPALIVE, None),
        "relative-escape": (f"ln -s ../../../../../..{bait.log} {KEEPALIVE}", None),
        "hard-link": ("touch /workspace/real && ln /workspace/real " + KEEPALIVE, None),
    }


RESET = (
    "rm -rf /workspace/.keep-alive /workspace/real; "
    "if [ -L /workspace ]; then rm /workspace && mv /workspace.orig /workspace; fi"
)


# Both ways of reading the keep-alive. The component walk is the one production takes: under the
# unit's RestrictSUIDSGID=yes, systemd's seccomp filter answers openat2 with ENOSYS (it cannot see the
# mode inside struct open_how), so the daemon falls back to the walk on its first read
# (tests/e2e/test_systemd_real.py shows it under a real systemd). openat2 is what runs unsandboxed.
BOTH_READ_PATHS = pytest.mark.parametrize(
    "use_openat2", [False, None], ids=["production-walk", "openat2-if-available"]
)
PRODUCTION_READ_PATH = False


# --- 1. links -------------------------------------------------------------------------------------


@BOTH_READ_PATHS
def test_a_keepalive_link_is_reported_and_never_reaches_the_host(
    make_container: ContainerFactory, tmp_path: Path, bait: Bait, use_openat2: bool | None
) -> None:
    c = make_container(network_mode="none")
    pid = host_pid(c)
    config = ObserveConfig(ledger_path=tmp_path / "ledger.json", use_openat2=use_openat2)
    watches = {p: Watch(p) for p in (bait.fifo, bait.log, bait.dir_keepalive)}
    try:
        # The watches work: an open of ours is seen (so silence below means nothing opened them).
        with bait.log.open("rb") as f:
            f.read()
        assert any(m & IN_OPEN for m in watches[bait.log].events())

        with HostObserver(config, nvml=NoGpus()) as observer:
            for case, (setup, reached) in link_cases(bait).items():
                sh(c, RESET)
                sh(c, setup)
                if reached is not None:
                    # The threat is real: resolved naively, the container's path is the host file.
                    naive = os.stat(f"/proc/{pid}/root{KEEPALIVE}")
                    assert (naive.st_dev, naive.st_ino) == (reached.stat().st_dev, reached.stat().st_ino), (
                        case
                    )
                    if not reached.is_fifo():
                        os.utime(reached, None)  # touched a moment ago: a naive observer would honour it
                snap = observe_in_thread(observer, unblock=bait.fifo)
                ka = keepalive_of(snap, c)
                assert ka.state == KeepAliveState.LINK, (case, ka)
                assert ka.mtime is None, (case, ka)
                for path, watch in watches.items():
                    assert watch.events() == [], f"{case}: the controller opened or read {path}"
    finally:
        for watch in watches.values():
            watch.close()
        sh(c, RESET)


@BOTH_READ_PATHS
def test_a_fifo_or_a_huge_directory_as_keepalive_is_not_regular_and_costs_nothing(
    make_container: ContainerFactory, tmp_path: Path, use_openat2: bool | None
) -> None:
    c = make_container(network_mode="none")
    config = ObserveConfig(ledger_path=tmp_path / "ledger.json", use_openat2=use_openat2)
    with HostObserver(config, nvml=NoGpus()) as observer:
        sh(c, f"mkfifo {KEEPALIVE}")
        ka = keepalive_of(observe_in_thread(observer, unblock=None, timeout_s=30), c)
        assert (ka.state, ka.mtime) == (KeepAliveState.NOT_REGULAR, None) and "fifo" in (ka.detail or "")
        # A directory of 5,000 entries (built with shell builtins: no fork per file).
        sh(
            c,
            f"rm {KEEPALIVE} && mkdir {KEEPALIVE} && cd {KEEPALIVE} && "
            "i=0; while [ $i -lt 5000 ]; do : > f$i; i=$((i+1)); done",
        )
        ka = keepalive_of(observe_in_thread(observer, unblock=None, timeout_s=30), c)
        assert (ka.state, ka.mtime) == (KeepAliveState.NOT_REGULAR, None) and "directory" in (ka.detail or "")


@BOTH_READ_PATHS
def test_an_mtime_out_of_the_calendar_is_a_present_file_not_an_unknown_one(
    make_container: ContainerFactory, tmp_path: Path, use_openat2: bool | None
) -> None:
    # tmpfs stores any 64-bit time: `touch -d` past the year 9999, or long before year 1, made the
    # read fail (ValueError), and an unknown keep-alive holds an idle stop off for ever.
    c = make_container(network_mode="none", tmpfs={"/workspace": ""})
    config = ObserveConfig(ledger_path=tmp_path / "ledger.json", use_openat2=use_openat2)
    with HostObserver(config, nvml=NoGpus()) as observer:
        seen = {}
        for stamp in ("253402400000", "-99999999999"):
            sh(c, f"rm -f {KEEPALIVE} && touch -d @{stamp} {KEEPALIVE}")
            ka = keepalive_of(observer.observe(), c)
            seen[stamp] = (ka.state, ka.mtime)
    assert seen == {
        "253402400000": (KeepAliveState.PRESENT, datetime.max.replace(tzinfo=UTC)),
        "-99999999999": (KeepAliveState.PRESENT, datetime.min.replace(tzinfo=UTC)),
    }


# --- 1, end to end: a link holds off nothing, and ds01ctl says why ----------------------------------


def _items_for(p: Plan, container_id: str) -> list[tuple[str, str]]:
    out = [(a.kind.value, a.reason.value) for a in p.actions if a.target.container_id == container_id]
    out += [
        ("defer:" + d.why.value, d.rule.value) for d in p.deferred if d.target.container_id == container_id
    ]
    return out


def only_for(p: Plan, container_ids: set[str]) -> Plan:
    """The plan's actions for our containers only: the engine is shared with other tests."""
    return p.model_copy(
        update={"actions": tuple(a for a in p.actions if a.target.container_id in container_ids)}
    )


def test_a_link_to_a_fresh_host_file_does_not_hold_off_an_idle_stop(
    make_container: ContainerFactory, fake_nvml: FakeNvml, tmp_path: Path, bait: Bait
) -> None:
    fake_nvml.set_gpus(1)
    fake_nvml.write()
    # The control: a real keep-alive file, honoured; the attacker: a link to a host file we touch.
    honest = make_container(network_mode="none", device_requests=gpu_request(gpu_uuid(0)))
    hostile = make_container(network_mode="none", device_requests=gpu_request(gpu_uuid(0)))
    sh(honest, f"touch {KEEPALIVE}")
    sh(hostile, f"ln -s {bait.log} {KEEPALIVE}")
    desired = PolicySetDesired(load_spec_text(FAST_POLICY.format(idle="1s", cap="1h")))
    memory = ControllerMemory()
    seen: dict[str, list[tuple[str, str]]] = {honest.id: [], hostile.id: []}
    config = ObserveConfig(ledger_path=tmp_path / "ledger.json", use_openat2=PRODUCTION_READ_PATH)
    deadline = time.monotonic() + 20
    with HostObserver(config, nvml=NvmlObserver(timeout_s=10)) as observer:
        while time.monotonic() < deadline:
            os.utime(bait.log, None)  # the host file "changes often"
            snap = observer.observe()
            p = make_plan(snap, desired, memory, snap.observed_at)
            memory = record_outcomes(p)  # warnings count as delivered
            for cid in seen:
                seen[cid] += _items_for(p, cid)
            if ("StopContainer", "IdleTimeout") in seen[hostile.id]:
                break
            time.sleep(0.25)
    assert ("StopContainer", "IdleTimeout") in seen[hostile.id], seen[hostile.id]
    assert ("defer:KeepAlive", "IdleTimeout") not in seen[hostile.id]
    assert ("defer:KeepAlive", "IdleTimeout") in seen[honest.id]
    assert ("StopContainer", "IdleTimeout") not in seen[honest.id]
    found = snap.container(hostile.id)
    assert found is not None and found.signals is not None
    assert found.signals.keepalive.state == KeepAliveState.LINK

    # ds01ctl (as a process, observing for itself) shows the link, not a touched file.
    state = tmp_path / "state"
    MemoryStore(state).save(memory)
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "policy.yaml").write_text(FAST_POLICY.format(idle="1s", cap="1h"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DS01_")}
    env.update(fake_nvml.env())
    env.update(
        {
            "DS01_SPECS": str(specs),
            "DS01_STATE_DIR": str(state),
            "DS01_EVENTS_LOG": str(tmp_path / "events.jsonl"),
            "DS01_LEDGER": str(tmp_path / "ledger.json"),
            "NO_COLOR": "1",
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", "describe", "container", hostile.name],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("keep-alive"))
    assert "link" in row and "touched" not in row, row


# --- 2. a keep-alive touched for ever -----------------------------------------------------------------


@pytest.fixture
def toucher(make_container: ContainerFactory, fake_nvml: FakeNvml) -> Iterator[Any]:
    fake_nvml.set_gpus(1)
    fake_nvml.write()
    # Touches its keep-alive every half second; exits promptly on SIGTERM so the stop is quick.
    yield make_container(
        ["sh", "-c", f"trap 'exit 0' TERM; while :; do touch {KEEPALIVE}; sleep 0.5; done"],
        network_mode="none",
        device_requests=gpu_request(gpu_uuid(0)),
    )


def test_touching_the_keepalive_every_half_second_does_not_keep_an_idle_gpu_container_past_the_cap(
    toucher: Any, docker_client: Any, tmp_path: Path
) -> None:
    cap_s, idle_s = 3.0, 2.0
    desired = PolicySetDesired(load_spec_text(FAST_POLICY.format(idle=f"{idle_s:g}s", cap=f"{cap_s:g}s")))
    executor = RealExecutor(
        docker_client,
        EventLog(tmp_path / "events.jsonl"),
        RecordingNotifier(),
        tmp_path / "ledger.json",
        reset_command=["false", "{uuid}"],
        kill_wait_s=3.0,
        verify_timeout_s=10.0,
    )
    config = ObserveConfig(ledger_path=tmp_path / "ledger.json", use_openat2=PRODUCTION_READ_PATH)
    memory = ControllerMemory()
    history: list[tuple[datetime, list[tuple[str, str]], ContainerObs]] = []
    stopped_at: datetime | None = None
    deadline = time.monotonic() + 25
    with HostObserver(config, nvml=NvmlObserver(timeout_s=10)) as observer:
        while time.monotonic() < deadline:
            snap = observer.observe()
            obs = snap.container(toucher.id)
            assert obs is not None
            if obs.state != "running":
                break
            p = make_plan(snap, desired, memory, snap.observed_at)
            history.append((snap.observed_at, _items_for(p, toucher.id), obs))
            report = executor.execute(only_for(p, {toucher.id}), memory, snap.observed_at)
            memory = report.memory  # warnings delivered (to a recording notifier) are remembered
            if any(o.kind == ActionKind.STOP_CONTAINER and o.outcome == "done" for o in report.outcomes):
                stopped_at = snap.observed_at
                break
            time.sleep(0.5)

    assert stopped_at is not None, [(t.isoformat(), items) for t, items, _ in history]
    toucher.reload()
    assert toucher.attrs["State"]["Running"] is False
    # The keep-alive was honoured for a while (so it was a real one, and the test can tell)...
    held = [t for t, items, _ in history if ("defer:KeepAlive", "IdleTimeout") in items]
    assert held, history
    # ... it was fresh at every pass, including the last (touched every 0.5 s, never older than ~1 s) ...
    for t, _, obs in history:
        assert obs.signals is not None
        ka = obs.signals.keepalive
        assert ka.state == KeepAliveState.PRESENT and ka.mtime is not None
        assert t - ka.mtime < timedelta(seconds=1.5), (t, ka)
    # ... and the stop came once the cap, counted from the first sighting, had passed.
    mem = memory.containers.get(toucher.id)
    assert mem is not None and mem.keepalive is not None
    first_seen = mem.keepalive.first_seen_at
    assert first_seen + timedelta(seconds=cap_s) <= stopped_at < first_seen + timedelta(seconds=cap_s + 6)
    assert all(t < first_seen + timedelta(seconds=cap_s) for t in held)
