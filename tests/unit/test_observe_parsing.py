"""Parsers of the observation layer, and procfs/cgroup readers against a fake tree under tmp_path.

Real-host behaviour (real containers, real processes) is in tests/integration/test_observe_*.py;
these check the parsing and the decisions on inputs that are hard to produce for real.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.observe import keepalive as keepalive_module
from controller.observe.cgroups import container_lines, parse_cgroup
from controller.observe.docker_adapter import (
    DockerContainer,
    cache_still_valid,
    duration_upper_bound_s,
    parse_docker_time,
    parse_inspect,
    status_upper_bound_s,
)
from controller.observe.gpu_refs import RawGpuRefs
from controller.observe.keepalive import read_keepalive, validate_keepalive_path
from controller.observe.procfs import (
    ProcHandle,
    ProcReader,
    attribute_gpu_processes,
    parse_cmdline,
    parse_stat_start_ticks,
    parse_status_uid,
    parse_uptime,
)
from controller.observe.signals import (
    SignalConfig,
    gpu_util_readings,
    parse_cpu_stat_usage_ns,
    parse_net_dev,
    read_signals,
)
from controller.snapshot import (
    ContainerId,
    ContainerState,
    GpuObs,
    GpuUuid,
    KeepAliveState,
    MigDeviceObs,
    NvmlProcess,
    ProcessState,
    SignalSource,
)

CID = "c" * 64
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

# --- Docker status text and the inspect cache ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bound_s"),
    [
        ("Less than a second", 1),
        ("1 second", 2),
        ("45 seconds", 46),
        ("About a minute", 120),
        ("5 minutes", 360),
        ("About an hour", 5400),
        ("3 hours", 3.5 * 3600),
        ("2 days", 3 * 86400 + 1800),
        ("3 weeks", 4 * 7 * 86400 + 1800),
        ("nonsense", None),
        ("5 fortnights", None),
    ],
)
def test_duration_upper_bound(text: str, bound_s: float | None) -> None:
    assert duration_upper_bound_s(text) == bound_s


def test_status_forms() -> None:
    assert status_upper_bound_s("Up 5 minutes") == ("up", 360, None)
    assert status_upper_bound_s("Up 5 minutes (Paused)") == ("up", 360, None)
    assert status_upper_bound_s("Up 2 hours (healthy)") == ("up", 2.5 * 3600, None)
    assert status_upper_bound_s("Exited (137) 3 seconds ago") == ("exited", 4, 137)
    assert status_upper_bound_s("Created") is None
    assert status_upper_bound_s("Restarting (1) 2 seconds ago") is None


def cached(
    state: ContainerState, started: datetime | None, finished: datetime | None = None, code: int | None = None
) -> DockerContainer:
    return DockerContainer(
        id=ContainerId(CID), name="x", image="i", labels={}, state=state, created_at=T0, started_at=started,
        finished_at=finished, pid=None, restart_count=0, exit_code=code, cgroup_parent="", network_mode="",
        gpu_refs=RawGpuRefs(),
    )  # fmt: skip


def test_cache_validity_detects_restarts_from_the_status_text() -> None:
    now = T0 + timedelta(minutes=10)
    running = cached(ContainerState.RUNNING, started=T0)
    assert cache_still_valid(running, "running", "Up 10 minutes", now)
    # Restarted between passes: still "running", but up for less time than the cache implies.
    assert not cache_still_valid(running, "running", "Up 3 seconds", now)
    assert not cache_still_valid(running, "exited", "Exited (0) 1 second ago", now)
    assert not cache_still_valid(running, "running", "Up with a new text format", now)
    exited = cached(ContainerState.EXITED, started=T0, finished=T0 + timedelta(minutes=5), code=0)
    assert cache_still_valid(exited, "exited", "Exited (0) 5 minutes ago", now)
    assert not cache_still_valid(exited, "exited", "Exited (1) 5 minutes ago", now)
    assert not cache_still_valid(exited, "exited", "Exited (0) 2 seconds ago", now)
    created = cached(ContainerState.CREATED, started=None)
    assert cache_still_valid(created, "created", "Created", now)
    assert not cache_still_valid(created, "running", "Up 1 second", now)
    assert not cache_still_valid(
        cached(ContainerState.RESTARTING, T0), "restarting", "Restarting (1) 1 second ago", now
    )


def test_inspect_of_a_dead_container_and_of_junk() -> None:
    entry = {
        "Id": CID,
        "Names": ["/other/alias", "/dead-one"],
        "Image": "img:1",
        "Labels": {"k": "v", "n": 5},
        "State": "dead",
        "Created": 1714564800,
    }
    raw = {"Id": CID, "Created": "garbage", "RestartCount": 2,
           "State": {"Status": "dead", "Dead": True, "Pid": 0, "ExitCode": 137,
                     "StartedAt": "2024-05-01T12:00:00Z", "FinishedAt": "2024-05-01T12:05:00Z"},
           "HostConfig": {"CgroupParent": "/ds01.slice", "NetworkMode": "bridge", "Runtime": "runc"},
           "Config": {"Env": ["NVIDIA_VISIBLE_DEVICES=0"]}}  # fmt: skip
    c = parse_inspect(raw, entry)
    assert c is not None
    assert (c.state, c.exit_code, c.pid, c.restart_count, c.name) == (
        ContainerState.DEAD,
        137,
        None,
        2,
        "dead-one",
    )
    assert c.created_at == T0  # the list's epoch when the inspect's time is unreadable
    assert c.labels == {"k": "v"} and c.cgroup_parent == "/ds01.slice" and c.gpu_refs == RawGpuRefs()
    assert c.finished_at == T0 + timedelta(minutes=5)
    assert parse_inspect("junk", entry) is None
    assert parse_inspect({"Id": CID, "State": {"Status": "sleeping"}}, entry) is None
    assert parse_inspect({"Id": CID, "State": []}, {**entry, "State": "exited"}) is not None


def test_docker_time() -> None:
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
    assert parse_docker_time("") is None
    assert parse_docker_time(None) is None
    assert parse_docker_time("yesterday") is None
    assert parse_docker_time("2024-05-01T12:00:00.123456789Z") == T0 + timedelta(microseconds=123456)


# --- procfs text -------------------------------------------------------------------------------------

NET_DEV = "\n".join(
    [
        "Inter-|   Receive                                                |  Transmit",
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop ...",
        "    lo:    9999       9    0    0    0     0          0         0     9999       9   0 0 0 0 0 0",
        "  eth0:     200       2    0    0    0     0          0         0       50       1   0 0 0 0 0 0",
        "  eth1: 1000 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0",
    ]
)


def test_net_dev_sums_all_but_lo() -> None:
    assert parse_net_dev(NET_DEV) == 200 + 50 + 1000 + 7
    assert parse_net_dev(NET_DEV.split("\n  eth0")[0]) == 0  # only lo: no traffic, but known
    assert parse_net_dev("") is None


def test_small_procfs_parsers() -> None:
    assert parse_cpu_stat_usage_ns("usage_usec 1500\nuser_usec 1000\n") == 1_500_000
    assert parse_cpu_stat_usage_ns("nr_periods 0\n") is None
    assert parse_status_uid("Name:\tsleep\nUid:\t1000\t1000\t1000\t1000\n") == 1000
    assert parse_status_uid("Name:\tx\n") is None
    assert parse_cmdline(b"python3\x00-c\x00print(1)\x00") == "python3 -c print(1)"
    assert parse_cmdline(b"\xff\xfebad\x00") == "\ufffd\ufffdbad"
    assert parse_cmdline(b"") == ""
    assert parse_cmdline(b"x" * 10000).endswith("…")
    stat = "42 (a) (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 100"
    assert parse_stat_start_ticks(stat) == 123456
    assert parse_stat_start_ticks("garbage") is None


# --- a fake proc tree --------------------------------------------------------------------------------


def fake_process(
    proc: Path,
    pid: int,
    *,
    cgroup: str,
    uid: int = 1000,
    argv: tuple[str, ...] = ("sleep", "1"),
    comm: str = "sleep",
) -> Path:
    d = proc / str(pid)
    (d / "root").mkdir(parents=True)
    (d / "net").mkdir()
    (d / "cgroup").write_text(cgroup)
    (d / "status").write_text(f"Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "comm").write_text(comm + "\n")
    (d / "stat").write_text(f"{pid} ({comm}) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0\n")
    (d / "net" / "dev").write_text(NET_DEV)
    return d


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    (root / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    return root


def procs(*pids: int) -> tuple[NvmlProcess, ...]:
    return tuple(NvmlProcess(pid=p) for p in pids)


def test_gpu_process_attribution(proc: Path) -> None:
    other = "b" * 64
    fake_process(proc, 10, cgroup=f"0::/docker/{CID}\n")
    fake_process(proc, 11, cgroup=f"4:pids:/ds01.slice/{other}\n0::/\n")
    fake_process(
        proc, 12, cgroup="0::/user.slice\n", argv=("/usr/bin/nvidia-persistenced",), comm="nvidia-persiste"
    )
    fake_process(proc, 13, cgroup=f"0::/docker/{CID}\n", argv=("/usr/bin/Xorg",), comm="Xorg")
    fake_process(proc, 14, cgroup="0::/user.slice\n", argv=("python3", "train.py"), comm="python3")
    gpu = GpuUuid("GPU-1")
    mig = GpuUuid("MIG-1")
    gpus = (
        GpuObs(
            index=0, uuid=gpu, name="g",
            processes=(NvmlProcess(pid=10, used_memory_bytes=5), *procs(11, 12, 99)),
            mig_devices=(MigDeviceObs(uuid=mig, index=0, processes=procs(13, 14, 10)),),
        ),
    )  # fmt: skip
    reader = ProcReader(proc, {1000: "alice"}.get)
    observed, errors = attribute_gpu_processes(gpus, {CID}, reader)
    assert errors == ()
    by = {(p.pid, p.device_uuid): p for p in observed}
    assert len(observed) == 7
    p10 = by[(10, gpu)]
    assert (p10.container_id, p10.container_exists, p10.is_system, p10.user) == (CID, True, False, "alice")
    assert p10.start_time == pytest.approx(500 / os.sysconf("SC_CLK_TCK") + 1700000000)
    assert (p10.used_memory_bytes, p10.cmdline, p10.cgroup) == (5, "sleep 1", f"/docker/{CID}")
    assert by[(10, mig)].gpu_uuid == gpu
    assert (by[(11, gpu)].container_id, by[(11, gpu)].container_exists) == ("b" * 64, False)
    assert by[(12, gpu)].is_system and by[(12, gpu)].container_id is None
    # A process in a container is never a "system" process, whatever its name.
    assert not by[(13, mig)].is_system
    assert not by[(14, mig)].is_system and by[(14, mig)].container_id is None
    assert by[(99, gpu)].state == ProcessState.VANISHED and by[(99, gpu)].cmdline == ""


def openat2_or_skip(mode: bool) -> None:
    if mode and not keepalive_module._OPENAT2.available:
        pytest.skip("this kernel has no openat2; the component walk is tested by the other case")


@pytest.mark.parametrize("use_openat2", [True, False], ids=["openat2", "walk"])
def test_keepalive_states_in_a_fake_root(proc: Path, tmp_path: Path, use_openat2: bool) -> None:
    openat2_or_skip(use_openat2)
    outside = tmp_path / "host-secret"
    outside.write_text("x")
    results: dict[str, KeepAliveState] = {}
    cases = {
        "present": lambda ws: (ws / ".keep-alive").write_text(""),
        "absent": lambda ws: None,
        "symlink": lambda ws: (ws / ".keep-alive").symlink_to(outside),
        "relative-symlink": lambda ws: (ws / ".keep-alive").symlink_to("real"),
        "hardlink": lambda ws: os.link(outside, ws / ".keep-alive"),
        "fifo": lambda ws: os.mkfifo(ws / ".keep-alive"),
        "directory": lambda ws: (ws / ".keep-alive").mkdir(),
    }
    for pid, (name, make) in enumerate(cases.items(), start=100):
        d = fake_process(proc, pid, cgroup="0::/\n")
        ws = d / "root" / "workspace"
        ws.mkdir()
        (ws / "real").write_text("")
        make(ws)
        with ProcHandle(proc, pid) as handle:
            results[name] = read_keepalive(handle.fd, "/workspace/.keep-alive", use_openat2=use_openat2).state
    # The workspace itself a symlink to a host directory that has the file.
    d = fake_process(proc, 200, cgroup="0::/\n")
    (tmp_path / "hostdir").mkdir()
    (tmp_path / "hostdir" / ".keep-alive").write_text("")
    (d / "root" / "workspace").symlink_to(tmp_path / "hostdir")
    with ProcHandle(proc, 200) as handle:
        results["dir-symlink"] = read_keepalive(
            handle.fd, "/workspace/.keep-alive", use_openat2=use_openat2
        ).state
    assert results == {
        "present": KeepAliveState.PRESENT,
        "absent": KeepAliveState.ABSENT,
        "symlink": KeepAliveState.LINK,
        "relative-symlink": KeepAliveState.LINK,
        "hardlink": KeepAliveState.LINK,
        "fifo": KeepAliveState.NOT_REGULAR,
        "directory": KeepAliveState.NOT_REGULAR,
        "dir-symlink": KeepAliveState.LINK,
    }


def test_keepalive_present_reports_mtime_and_inode(proc: Path) -> None:
    d = fake_process(proc, 7, cgroup="0::/\n")
    f = d / "root" / "workspace" / ".keep-alive"
    f.parent.mkdir()
    f.write_text("")
    os.utime(f, (1700000000, 1700000000))
    with ProcHandle(proc, 7) as handle:
        ka = read_keepalive(handle.fd, "/workspace/.keep-alive")
    assert ka.state == KeepAliveState.PRESENT
    assert ka.mtime == datetime.fromtimestamp(1700000000, tz=UTC)
    assert ka.inode == f.stat().st_ino


@pytest.mark.parametrize(
    "bad", ["workspace/.keep-alive", "/workspace/../etc/x", "/", "/a//b", "/a/./b", "/a\0b"]
)
def test_keepalive_path_validation(bad: str) -> None:
    with pytest.raises(ValueError, match="keepalive_path"):
        validate_keepalive_path(bad)


def test_signals_from_a_fake_cgroup_tree(proc: Path, tmp_path: Path) -> None:
    cgroups = tmp_path / "cgroup"
    v1 = cgroups / "cpu,cpuacct" / "docker" / CID
    v1.mkdir(parents=True)
    (v1 / "cpuacct.usage").write_text("123456789\n")
    pids = cgroups / "pids" / "docker" / CID
    pids.mkdir(parents=True)
    (pids / "cgroup.procs").write_text("1\n2\n3\n")
    fake_process(proc, 5, cgroup=f"3:cpu,cpuacct:/docker/{CID}\n2:pids:/docker/{CID}\n0::/\n")
    v2 = cgroups / "system.slice" / f"docker-{CID}.scope"
    v2.mkdir(parents=True)
    (v2 / "cpu.stat").write_text("usage_usec 42\n")
    (v2 / "cgroup.procs").write_text("7\n")
    fake_process(proc, 6, cgroup=f"0::/system.slice/docker-{CID}.scope\n")
    fake_process(proc, 8, cgroup="0::/../../escape\n")
    config = SignalConfig(cgroup_root=cgroups, proc_root=proc, keepalive_path="/workspace/.keep-alive")
    util = gpu_util_readings([GpuUuid("GPU-1")], None, "driver not loaded")
    out = {}
    for pid in (5, 6, 8):
        with ProcHandle(proc, pid) as handle:
            out[pid] = read_signals(
                handle, handle.read_text("cgroup"), config, network_mode="bridge", gpu_util=util, now=T0
            )
    assert (out[5].cpu_usage_ns, out[5].cpu_source, out[5].process_count, out[5].net_bytes) == (
        123456789,
        SignalSource.CGROUP,
        3,
        1257,
    )
    assert (out[6].cpu_usage_ns, out[6].process_count) == (42000, 1)
    # No readable cgroup and a fake proc root (psutil would read the real /proc): unknown, with why.
    assert out[8].cpu_usage_ns is None and out[8].cpu_unknown and out[8].process_count is None
    assert out[5].gpu_util[0].unknown_reason == "NVML unavailable: driver not loaded"
    assert out[5].keepalive.state == KeepAliveState.ABSENT
    with ProcHandle(proc, 5) as handle:
        host_net = read_signals(
            handle, handle.read_text("cgroup"), config, network_mode="host", gpu_util=(), now=T0
        )
    assert host_net.net_bytes is None and host_net.net_unknown is not None


# --- a main process in a child of the container's cgroup (docker:dind, systemd in a container) ---


def test_the_container_lines_are_cut_at_the_container_not_at_its_main_process() -> None:
    other = "d" * 64
    lines = parse_cgroup(
        f"0::/system.slice/docker-{CID}.scope/init\n"  # docker:dind, systemd (init.scope): a child
        f"4:memory:/docker/{CID}/init.scope\n"  # the same on cgroup v1
        f"3:pids:/docker/{CID}\n"  # already the container's own: unchanged
        "2:name=systemd:/user.slice\n"  # names no container: unchanged
        f"1:cpu,cpuacct:/docker/{other}/docker/{CID}/init\n"  # nested: cut after this container
    )
    assert [line.path for line in container_lines(lines, CID)] == [
        f"/system.slice/docker-{CID}.scope",
        f"/docker/{CID}",
        f"/docker/{CID}",
        "/user.slice",
        f"/docker/{other}/docker/{CID}",
    ]


def test_signals_and_use_are_the_whole_containers_when_its_main_process_sits_in_a_child(
    proc: Path, tmp_path: Path
) -> None:
    """docker:dind moves every process to <scope>/init: the child counts its own 60 MiB and 12
    tasks, the container 20 GiB and 900. Read in the child, a busy container looked nearly empty:
    its memory limit was lowered under its use (the kernel OOM-kills) and its CPU time was the
    child's alone (idle evidence)."""
    cgroups = tmp_path / "cgroup"
    scope = cgroups / "system.slice" / f"docker-{CID}.scope"
    child = scope / "init"
    child.mkdir(parents=True)
    inner = scope / "docker" / ("e" * 64)  # a container of the nested engine
    inner.mkdir(parents=True)
    for directory, memory, tasks, cpu_us in ((scope, 20 << 30, 900, 9_000_000), (child, 60 << 20, 12, 5)):
        (directory / "memory.current").write_text(f"{memory}\n")
        (directory / "memory.swap.current").write_text("0\n")
        (directory / "pids.current").write_text(f"{tasks}\n")
        (directory / "cpu.stat").write_text(f"usage_usec {cpu_us}\n")
    # cgroup.procs lists a cgroup's own members: none in the container's, 3 in init, 5 nested.
    (scope / "cgroup.procs").write_text("")
    (child / "cgroup.procs").write_text("1\n2\n3\n")
    (inner / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in range(10, 15)))
    fake_process(proc, 6, cgroup=f"0::/system.slice/docker-{CID}.scope/init\n")
    config = SignalConfig(cgroup_root=cgroups, proc_root=proc, keepalive_path="/workspace/.keep-alive")
    with ProcHandle(proc, 6) as handle:
        signals = read_signals(
            handle,
            handle.read_text("cgroup"),
            config,
            network_mode="none",
            gpu_util=(),
            now=T0,
            container_id=CID,
        )
    assert signals.memory_bytes == 20 << 30 and signals.pids_current == 900
    assert signals.cpu_usage_ns == 9_000_000_000 and signals.process_count == 8


def test_gpu_util_readings() -> None:
    gpus = (
        GpuObs(index=0, uuid=GpuUuid("GPU-0"), name="g", utilization_percent=55.0),
        GpuObs(index=1, uuid=GpuUuid("GPU-1"), name="g", mig_enabled=True, utilization_unknown="MIG mode",
               mig_devices=(MigDeviceObs(uuid=GpuUuid("MIG-1"), index=0),)),
    )  # fmt: skip
    readings = gpu_util_readings([GpuUuid("GPU-0"), GpuUuid("MIG-1"), GpuUuid("GPU-9")], gpus, None)
    assert [(r.percent, r.unknown_reason) for r in readings] == [
        (55.0, None),
        (None, "MIG mode"),
        (None, "no such device on this host"),
    ]


def test_running_for_s_reads_the_boot_clock(proc: Path) -> None:
    # starttime 500 ticks after boot; uptime 3600.5 s: running 3600.5 - 500/CLK_TCK s, whatever
    # the wall clock says. Unreadable uptime or stat: None (unknown, never 0).
    fake_process(proc, 10, cgroup=f"0::/docker/{CID}\n")
    (proc / "uptime").write_text("3600.50 7000.00\n")
    reader = ProcReader(proc, {1000: "alice"}.get)
    with ProcHandle(proc, 10) as handle:
        assert reader.running_for_s(handle) == pytest.approx(3600.5 - 500 / os.sysconf("SC_CLK_TCK"))
    (proc / "10" / "stat").write_text("garbage")
    with ProcHandle(proc, 10) as handle:
        assert reader.running_for_s(handle) is None
    fake_process(proc, 11, cgroup=f"0::/docker/{CID}\n")
    (proc / "uptime").unlink()
    with ProcHandle(proc, 11) as handle:
        assert reader.running_for_s(handle) is None
    assert parse_uptime("12.5 3.0\n") == 12.5
    assert parse_uptime("") is None and parse_uptime("x y") is None and parse_uptime("-1 0") is None
