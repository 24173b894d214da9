"""Resource limits from the inspect and resource use from the cgroup (v1 and v2 fake trees on disk)."""

from __future__ import annotations

from pathlib import Path

from controller.observe.cgroups import parse_cgroup
from controller.observe.docker_adapter import parse_inspect
from controller.observe.resources import parse_limits, read_usage
from controller.snapshot import ResourceLimits

CID = "a" * 64
V2_CGROUP = f"0::/system.slice/docker-{CID}.scope\n"
V1_CGROUP = (
    f"12:pids:/docker/{CID}\n"
    f"9:memory:/docker/{CID}\n"
    f"4:cpu,cpuacct:/docker/{CID}\n"
    f"1:name=systemd:/docker/{CID}\n"
    "0::/system.slice/containerd.service\n"
)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_unlimited_host_config_reads_as_no_limits() -> None:
    limits = parse_limits(
        {
            "NanoCpus": 0,
            "CpuQuota": 0,
            "CpuPeriod": 0,
            "Memory": 0,
            "MemorySwap": 0,
            "MemoryReservation": 0,
            "PidsLimit": None,
        }
    )
    assert limits == ResourceLimits()
    assert limits.cpus is None and limits.total_swap_bytes is None


def test_limits_are_read_from_every_host_config_field() -> None:
    limits = parse_limits(
        {
            "NanoCpus": 2_500_000_000,
            "CpusetCpus": "0-3",
            "Memory": 1 << 30,
            "MemorySwap": 2 << 30,
            "MemoryReservation": 512 << 20,
            "PidsLimit": 256,
            "ShmSize": 64 << 20,
            "CgroupParent": "ds01.slice",
        }
    )
    assert limits.cpus == 2.5
    assert limits.memory_bytes == 1 << 30 and limits.total_swap_bytes == 2 << 30
    assert limits.memory_reservation_bytes == 512 << 20
    assert limits.pids_limit == 256 and limits.shm_size_bytes == 64 << 20
    assert limits.cpuset_cpus == "0-3" and limits.cgroup_parent == "ds01.slice"


def test_cpu_quota_and_period_give_the_cpu_limit() -> None:
    assert parse_limits({"CpuQuota": 150_000, "CpuPeriod": 100_000}).cpus == 1.5
    assert parse_limits({"CpuQuota": 50_000}).cpus == 0.5  # the default period is 100 ms


def test_swap_minus_one_is_unlimited_and_unset_swap_is_twice_the_memory() -> None:
    assert parse_limits({"Memory": 100, "MemorySwap": -1}).total_swap_bytes is None
    assert parse_limits({"Memory": 100, "MemorySwap": 0}).total_swap_bytes == 200
    assert parse_limits({"PidsLimit": -1}).pids_limit is None


def test_parse_inspect_carries_the_limits() -> None:
    raw = {
        "Id": CID,
        "Created": "2026-03-02T11:00:00Z",
        "State": {"Status": "created"},
        "HostConfig": {"Memory": 512 << 20, "PidsLimit": 64},
    }
    parsed = parse_inspect(raw, {"Id": CID, "Names": ["/x"], "State": "created"})
    assert parsed is not None and parsed.limits is not None
    assert parsed.limits.memory_bytes == 512 << 20 and parsed.limits.pids_limit == 64


def test_v2_usage_is_read_from_a_fake_unified_tree(tmp_path: Path) -> None:
    scope = tmp_path / "system.slice" / f"docker-{CID}.scope"
    _write(scope / "memory.current", "123456\n")
    _write(scope / "memory.peak", "234567\n")
    _write(scope / "pids.current", "7\n")
    usage = read_usage(parse_cgroup(V2_CGROUP), tmp_path)
    assert (usage.memory_bytes, usage.memory_peak_bytes, usage.pids_current) == (123456, 234567, 7)
    assert usage.memory_unknown is None and usage.pids_unknown is None


def test_v2_without_memory_peak_keeps_the_peak_unknown(tmp_path: Path) -> None:
    scope = tmp_path / "system.slice" / f"docker-{CID}.scope"
    _write(scope / "memory.current", "1000\n")
    usage = read_usage(parse_cgroup(V2_CGROUP), tmp_path)
    assert usage.memory_bytes == 1000 and usage.memory_peak_bytes is None


def test_v1_usage_is_read_from_the_memory_and_pids_hierarchies(tmp_path: Path) -> None:
    _write(tmp_path / "memory" / "docker" / CID / "memory.usage_in_bytes", "4096\n")
    _write(tmp_path / "memory" / "docker" / CID / "memory.max_usage_in_bytes", "8192\n")
    _write(tmp_path / "pids" / "docker" / CID / "pids.current", "3\n")
    usage = read_usage(parse_cgroup(V1_CGROUP), tmp_path)
    assert (usage.memory_bytes, usage.memory_peak_bytes, usage.pids_current) == (4096, 8192, 3)


def test_unreadable_usage_stays_unknown_with_the_files_tried(tmp_path: Path) -> None:
    usage = read_usage(parse_cgroup(V1_CGROUP), tmp_path)
    assert usage.memory_bytes is None and usage.pids_current is None
    assert usage.memory_unknown is not None and "memory.usage_in_bytes" in usage.memory_unknown
    assert usage.pids_unknown is not None and "pids.current" in usage.pids_unknown


def test_a_cgroup_path_leaving_the_root_is_not_followed(tmp_path: Path) -> None:
    _write(tmp_path / "memory.current", "5\n")
    usage = read_usage(parse_cgroup("0::/../..\n"), tmp_path / "sub")
    assert usage.memory_bytes is None


def test_memory_plus_swap_use_is_read_on_v1_and_v2(tmp_path: Path) -> None:
    # What a memory-plus-swap limit (docker --memory-swap) is compared with by the kernel.
    v1 = tmp_path / "v1"
    _write(v1 / "memory" / "docker" / CID / "memory.usage_in_bytes", "4096\n")
    _write(v1 / "memory" / "docker" / CID / "memory.memsw.usage_in_bytes", "6144\n")
    usage = read_usage(parse_cgroup(V1_CGROUP), v1)
    assert (usage.memory_bytes, usage.memory_swap_bytes, usage.memory_swap_unknown) == (4096, 6144, None)
    v2 = tmp_path / "v2" / "system.slice" / f"docker-{CID}.scope"
    _write(v2 / "memory.current", "1000\n")
    _write(v2 / "memory.swap.current", "500\n")
    usage = read_usage(parse_cgroup(V2_CGROUP), tmp_path / "v2")
    assert (usage.memory_bytes, usage.memory_swap_bytes) == (1000, 1500)


def test_memory_plus_swap_use_without_swap_accounting_is_unknown(tmp_path: Path) -> None:
    _write(tmp_path / "memory" / "docker" / CID / "memory.usage_in_bytes", "4096\n")
    usage = read_usage(parse_cgroup(V1_CGROUP), tmp_path)
    assert usage.memory_bytes == 4096 and usage.memory_swap_bytes is None
    assert (
        usage.memory_swap_unknown is not None and "memory.memsw.usage_in_bytes" in usage.memory_swap_unknown
    )


def test_the_peak_of_memory_plus_swap_is_read_on_v1_and_v2(tmp_path: Path) -> None:
    # The floor of a memory-plus-swap limit, as the memory peak is the memory limit's.
    v1 = tmp_path / "v1"
    _write(v1 / "memory" / "docker" / CID / "memory.usage_in_bytes", "4096\n")
    _write(v1 / "memory" / "docker" / CID / "memory.memsw.usage_in_bytes", "6144\n")
    _write(v1 / "memory" / "docker" / CID / "memory.memsw.max_usage_in_bytes", "9000\n")
    assert read_usage(parse_cgroup(V1_CGROUP), v1).memory_swap_peak_bytes == 9000
    v2 = tmp_path / "v2" / "system.slice" / f"docker-{CID}.scope"
    _write(v2 / "memory.current", "1000\n")
    _write(v2 / "memory.swap.current", "500\n")
    # Without memory.swap.peak (kernels before 6.5) the peak is unknown, not the use now.
    assert read_usage(parse_cgroup(V2_CGROUP), tmp_path / "v2").memory_swap_peak_bytes is None
    _write(v2 / "memory.peak", "3000\n")
    _write(v2 / "memory.swap.peak", "700\n")
    # Two peaks apart, maybe at two times: their sum is at least the peak of the total.
    assert read_usage(parse_cgroup(V2_CGROUP), tmp_path / "v2").memory_swap_peak_bytes == 3700


def test_the_peak_task_count_is_read_where_the_kernel_keeps_one(tmp_path: Path) -> None:
    _write(tmp_path / "pids" / "docker" / CID / "pids.current", "3\n")
    assert read_usage(parse_cgroup(V1_CGROUP), tmp_path).pids_peak is None  # before kernel 6.1: unknown
    _write(tmp_path / "pids" / "docker" / CID / "pids.peak", "40\n")
    assert read_usage(parse_cgroup(V1_CGROUP), tmp_path).pids_peak == 40
