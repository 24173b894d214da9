"""GPU process attribution and activity signals, with real containers and real host processes.

NVML is the stand-in library read by the real ``NvmlObserver``; its ``proc`` lines name the host
PIDs of real processes: one in a container, one on the host, one left in the cgroup of a container
that does not exist, one that is gone.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker.types
import psutil
import pytest

from controller.memory import ControllerMemory, Sample
from controller.observe import HostObserver, ObserveConfig
from controller.observe.cgroups import attribute
from controller.observe.keepalive import _OPENAT2
from controller.observe.nvml import NvmlObserver
from controller.plan.desired import PolicySetDesired
from controller.plan.idle import Thresholds, classify
from controller.plan.planner import plan as make_plan
from controller.snapshot import (
    CgroupScope,
    ContainerObs,
    Domain,
    KeepAliveState,
    ProcessState,
    SignalSource,
    Snapshot,
)
from desired_state.load import load_spec_text
from tests.fixtures.builders import record_outcomes
from tests.fixtures.docker_host import ContainerFactory, OrphanProcess
from tests.fixtures.nvml import FakeNvml, NoGpus, gpu_uuid, mig_uuid

pytestmark = pytest.mark.docker


def observe(tmp_path: Path, nvml: Any = None, **overrides: Any) -> Snapshot:
    config = ObserveConfig(ledger_path=tmp_path / "ledger.json", **overrides)
    with HostObserver(config, nvml=nvml or NoGpus()) as observer:
        return observer.observe()


def find(snap: Snapshot, container: Any) -> ContainerObs:
    found = snap.container(container.id)
    assert found is not None
    return found


def host_pid(container: Any) -> int:
    container.reload()
    return int(container.attrs["State"]["Pid"])


def pid_that_cannot_exist() -> int:
    # Valid PIDs are below pid_max, so this one is never in /proc.
    return int(Path("/proc/sys/kernel/pid_max").read_text())


# --- GPU processes ----------------------------------------------------------------------------------


def test_gpu_processes_are_attributed_through_their_cgroups(
    make_container: ContainerFactory,
    fake_nvml: FakeNvml,
    host_process: Callable[..., subprocess.Popen[bytes]],
    orphan_cgroup_process: OrphanProcess,
    tmp_path: Path,
) -> None:
    container = make_container(network_mode="none")
    in_container = host_pid(container)
    on_host = host_process("sleep", "300").pid
    # A host process whose program is named like NVIDIA's host engine: a system process.
    engine = tmp_path / "nv-hostengine"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", engine)
    system = host_process(str(engine), "300").pid
    gone = pid_that_cannot_exist()

    fake_nvml.set_gpus(2)
    fake_nvml.add_mig(1)
    fake_nvml.add_process(gpu_uuid(0), in_container, used_mem_bytes=1 << 30)
    fake_nvml.add_process(mig_uuid(1, 0), in_container)
    fake_nvml.add_process(gpu_uuid(0), on_host)
    fake_nvml.add_process(gpu_uuid(0), orphan_cgroup_process.pid)
    fake_nvml.add_process(gpu_uuid(0), system)
    fake_nvml.add_process(gpu_uuid(0), gone)
    fake_nvml.write()

    snap = observe(tmp_path, NvmlObserver(timeout_s=10))
    assert snap.domain_ok(Domain.NVML) and snap.domain_ok(Domain.PROCFS), snap.health
    by = {(p.pid, p.device_uuid): p for p in snap.processes}

    c = by[(in_container, gpu_uuid(0))]
    assert (c.container_id, c.container_exists, c.is_system, c.state) == (
        container.id,
        True,
        False,
        ProcessState.PRESENT,
    )
    assert c.used_memory_bytes == 1 << 30 and c.cmdline == "sleep 300" and c.user == "root"
    assert c.cgroup.endswith(container.id) or c.cgroup.endswith(f"docker-{container.id}.scope")
    # This engine's own cgroup, whatever its driver: its orphans can be recognised as such.
    assert c.cgroup_scope is CgroupScope.ENGINE, c.cgroup
    assert c.start_time == pytest.approx(psutil.Process(in_container).create_time(), abs=0.01)
    mig = by[(in_container, mig_uuid(1, 0))]
    assert (mig.gpu_uuid, mig.container_id) == (gpu_uuid(1), container.id)

    h = by[(on_host, gpu_uuid(0))]
    assert (h.container_id, h.container_exists, h.is_system, h.uid) == (None, False, False, os.getuid())
    # Never this engine's; HOST, or FOREIGN where the tests themselves run in a sandbox's cgroup
    # (e.g. /process_api/<32 hex>): the same scope as this test process's own.
    assert h.cgroup_scope is attribute(Path("/proc/self/cgroup").read_text()).scope
    assert h.cgroup_scope is not CgroupScope.ENGINE
    assert h.start_time == pytest.approx(psutil.Process(on_host).create_time(), abs=0.01)

    o = by[(orphan_cgroup_process.pid, gpu_uuid(0))]
    assert (o.container_id, o.container_exists) == (orphan_cgroup_process.container_id, False)
    assert o.cgroup == f"/docker/{orphan_cgroup_process.container_id}"
    assert o.cgroup_scope is CgroupScope.ENGINE

    assert by[(system, gpu_uuid(0))].is_system
    v = by[(gone, gpu_uuid(0))]
    assert (v.state, v.container_id, v.start_time, v.cmdline) == (ProcessState.VANISHED, None, None, "")


# --- activity signals --------------------------------------------------------------------------------


def signals_of(snap: Snapshot, container: Any) -> Any:
    signals = find(snap, container).signals
    assert signals is not None
    return signals


def test_cpu_network_and_process_count(make_container: ContainerFactory, tmp_path: Path) -> None:
    busy = make_container("sh -c 'yes > /dev/null'", network_mode="none")
    three = make_container("sh -c 'sleep 300 & sleep 300 & wait'")
    container_ip = (three.reload(), three.attrs["NetworkSettings"]["IPAddress"])[1]
    time.sleep(0.3)  # let sh start both children

    first = observe(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(20):
            s.sendto(b"x" * 1000, (container_ip, 9))
    time.sleep(0.5)
    second = observe(tmp_path)

    b1, b2 = signals_of(first, busy), signals_of(second, busy)
    assert b1.cpu_source == SignalSource.CGROUP and b1.cpu_unknown is None
    assert b2.cpu_usage_ns - b1.cpu_usage_ns > 100_000_000  # yes spins: well over 0.1 s of CPU in 0.5 s
    assert b2.read_at > b1.read_at

    t1, t2 = signals_of(first, three), signals_of(second, three)
    assert (t1.process_count, t1.process_source) == (3, SignalSource.CGROUP)
    assert t2.net_bytes - t1.net_bytes >= 20 * 1000
    # A container with no network namespace of its own but lo: zero traffic, and known.
    assert b1.net_bytes == 0 and b1.net_unknown is None


def test_running_for_s_matches_the_wall_runtime(make_container: ContainerFactory, tmp_path: Path) -> None:
    # The boot-clock runtime read from /proc agrees with StartedAt on a host whose clock does not step.
    container = make_container(network_mode="none")
    time.sleep(1.5)
    snap = observe(tmp_path)
    c = find(snap, container)
    assert c.started_at is not None and c.running_for_s is not None
    wall_s = (snap.observed_at - c.started_at).total_seconds()
    assert wall_s >= 1.0
    assert abs(c.running_for_s - wall_s) < 3.0


def test_process_tree_fallback_is_reported_as_such(make_container: ContainerFactory, tmp_path: Path) -> None:
    c = make_container("sh -c 'sleep 300 & sleep 300 & wait'", network_mode="none")
    time.sleep(0.3)
    empty_cgroup_root = tmp_path / "no-cgroups"
    empty_cgroup_root.mkdir()
    signals = signals_of(observe(tmp_path, cgroup_root=empty_cgroup_root), c)
    assert signals.cpu_source == SignalSource.PROCESS_TREE and signals.cpu_usage_ns is not None
    assert (signals.process_count, signals.process_source) == (3, SignalSource.PROCESS_TREE)


def test_work_started_by_docker_exec_is_never_idle_on_the_process_tree(
    make_container: ContainerFactory, tmp_path: Path
) -> None:
    # DS01's containers idle in `sleep infinity` and their owners `docker exec` the work: the exec'd
    # process is the shim's child, not the main process's, so the process tree does not see it.
    c = make_container("sleep 300", network_mode="none")
    c.exec_run(["sh", "-c", "yes > /dev/null"], detach=True)
    time.sleep(0.3)
    empty_cgroup_root = tmp_path / "no-cgroups"
    empty_cgroup_root.mkdir()
    first = signals_of(observe(tmp_path, cgroup_root=empty_cgroup_root), c)
    time.sleep(1.0)
    second = signals_of(observe(tmp_path, cgroup_root=empty_cgroup_root), c)
    assert second.cpu_source == SignalSource.PROCESS_TREE
    thresholds = Thresholds(
        gpu_pct=5.0, cpu_pct=2.0, net_bytes_per_s=300.0, max_sample_interval_s=600.0, mig_fallback=True
    )
    prev = Sample(at=first.read_at, cpu_usage_ns=first.cpu_usage_ns, net_bytes=first.net_bytes)
    verdict = classify(prev, second, {gpu_uuid(0): 0.0}, thresholds, nvml_ok=True)
    assert verdict.idle is None, verdict.detail
    assert "main process tree" in verdict.detail
    # Read from the cgroup, the same work is activity.
    first = signals_of(observe(tmp_path), c)
    time.sleep(1.0)
    second = signals_of(observe(tmp_path), c)
    prev = Sample(at=first.read_at, cpu_usage_ns=first.cpu_usage_ns, net_bytes=first.net_bytes)
    assert classify(prev, second, {gpu_uuid(0): 0.0}, thresholds, nvml_ok=True).idle is False


KEEPALIVE_SETUPS = {
    "absent": ("rm -rf /workspace/.keep-alive", KeepAliveState.ABSENT),
    "present": ("touch /workspace/.keep-alive", KeepAliveState.PRESENT),
    "symlink": ("ln -s /etc/passwd /workspace/.keep-alive", KeepAliveState.LINK),
    "dangling-symlink": ("ln -s /nowhere /workspace/.keep-alive", KeepAliveState.LINK),
    "hardlink": ("touch /tmp/target && ln /tmp/target /workspace/.keep-alive", KeepAliveState.LINK),
    "fifo": ("mkfifo /workspace/.keep-alive", KeepAliveState.NOT_REGULAR),
    "directory": ("mkdir /workspace/.keep-alive", KeepAliveState.NOT_REGULAR),
    # The parent directory replaced by a link (to a directory that has the file): never followed.
    "parent-symlink": (
        "mkdir -p /tmp/elsewhere && touch /tmp/elsewhere/.keep-alive && mv /workspace /workspace.orig"
        " && ln -s /tmp/elsewhere /workspace",
        KeepAliveState.LINK,
    ),
}


RESET_KEEPALIVE = (
    "rm -rf /workspace/.keep-alive; [ -L /workspace ] && rm /workspace && mv /workspace.orig /workspace"
)


@pytest.mark.parametrize("use_openat2", [True, False], ids=["openat2", "walk"])
def test_keepalive_file_states(make_container: ContainerFactory, tmp_path: Path, use_openat2: bool) -> None:
    if use_openat2 and not _OPENAT2.available:
        pytest.skip("this kernel has no openat2; the component walk is tested by the other case")
    c = make_container(network_mode="none")
    seen: dict[str, KeepAliveState] = {}
    for name, (command, _) in KEEPALIVE_SETUPS.items():
        c.exec_run(["sh", "-c", RESET_KEEPALIVE])
        result = c.exec_run(["sh", "-c", command])
        assert result.exit_code == 0, (name, result.output)
        ka = signals_of(observe(tmp_path, use_openat2=use_openat2), c).keepalive
        seen[name] = ka.state
        if ka.state == KeepAliveState.PRESENT:
            assert ka.mtime is not None and abs(time.time() - ka.mtime.timestamp()) < 120
            assert ka.inode is not None
    assert seen == {name: expected for name, (_, expected) in KEEPALIVE_SETUPS.items()}


def test_keepalive_never_touches_the_host_path(make_container: ContainerFactory, tmp_path: Path) -> None:
    # The host has the file at the same path; the container does not: absent, because only the
    # container's root is looked at.
    host_file = tmp_path / "workspace" / ".keep-alive"
    host_file.parent.mkdir()
    host_file.write_text("")
    c = make_container(network_mode="none")
    ka = signals_of(observe(tmp_path, keepalive_path=str(host_file)), c).keepalive
    assert ka.state == KeepAliveState.ABSENT


def test_limits_and_usage_of_real_containers(make_container: ContainerFactory, tmp_path: Path) -> None:
    # Limits from the cached inspect, usage from the cgroup (this host's version, v1 or v2).
    limited = make_container(
        "sh -c 'sleep 300 & sleep 300 & wait'",
        network_mode="none",
        mem_limit="256m",
        memswap_limit="512m",
        nano_cpus=1_500_000_000,
        pids_limit=64,
    )
    unlimited = make_container(network_mode="none")
    created = make_container(start=False)
    time.sleep(0.3)
    snap = observe(tmp_path)

    lim = find(snap, limited).limits
    assert lim is not None
    assert (lim.cpus, lim.memory_bytes, lim.total_swap_bytes, lim.pids_limit) == (
        1.5,
        256 << 20,
        512 << 20,
        64,
    )
    free = find(snap, unlimited).limits
    assert free is not None and (free.cpus, free.memory_bytes, free.pids_limit) == (None, None, None)
    assert find(snap, created).limits is not None and find(snap, created).signals is None

    s = signals_of(snap, limited)
    assert s.memory_unknown is None and s.memory_bytes is not None and s.memory_bytes > 0
    assert s.pids_current == 3 and s.pids_unknown is None


def test_usage_unreadable_stays_unknown(make_container: ContainerFactory, tmp_path: Path) -> None:
    c = make_container(network_mode="none")
    empty_cgroup_root = tmp_path / "no-cgroups"
    empty_cgroup_root.mkdir()
    s = signals_of(observe(tmp_path, cgroup_root=empty_cgroup_root), c)
    assert s.memory_bytes is None and s.memory_unknown and s.pids_current is None and s.pids_unknown


# --- the GPUs a container's idleness is judged on ---------------------------------------------------

BUSY_ELSEWHERE_POLICY = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: busy-elsewhere
spec:
  settings:
    gracePeriod: 0s
    idleDetectionWindow: 1
    idleMinDuration: 0s
    warnLead: 1s
    highDemandIdleReduction: 1.0
  containerTypes:
    docker:
      idleTimeout: 1s
"""


def test_a_gpu_the_container_computes_on_counts_though_it_references_another(
    make_container: ContainerFactory, fake_nvml: FakeNvml, tmp_path: Path
) -> None:
    # `--gpus device=1 --privileged` (clearml-agent's command line, a compose service with
    # `privileged: true`): a privileged container has every /dev/nvidia* node, so CUDA sees every
    # GPU and its cuda:0 is GPU 0. The container references GPU 1 and computes on GPU 0.
    fake_nvml.set_gpus(2)
    c = make_container(
        network_mode="none",
        device_requests=[
            docker.types.DeviceRequest(driver="nvidia", device_ids=[gpu_uuid(1)], capabilities=[["gpu"]])
        ],
    )
    fake_nvml.gpu(0).util_percent = 100
    fake_nvml.add_process(gpu_uuid(0), host_pid(c))
    fake_nvml.write()
    desired = PolicySetDesired(load_spec_text(BUSY_ELSEWHERE_POLICY))
    memory = ControllerMemory()
    planned: list[tuple[str, str]] = []
    config = ObserveConfig(ledger_path=tmp_path / "ledger.json")
    with HostObserver(config, nvml=NvmlObserver(timeout_s=10)) as observer:
        for _ in range(8):
            snap = observer.observe()
            p = make_plan(snap, desired, memory, snap.observed_at)
            memory = record_outcomes(p)  # warnings count as delivered
            planned += [(a.kind.value, a.reason.value) for a in p.actions if a.target.container_id == c.id]
            time.sleep(0.3)
    assert [k for k in planned if k[1] != "ForeignProcessOnGpu"] == [], planned
    samples = memory.containers[c.id].samples
    assert samples[-1].idle is False and f"gpu {gpu_uuid(0)}=100.0%" in samples[-1].detail
