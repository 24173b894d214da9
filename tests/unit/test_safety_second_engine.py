"""A second rootful Docker engine's live containers are never orphans.

Another ``dockerd`` on the host (its own ``--data-root``, the same cgroup driver) puts its
containers in cgroups of exactly this engine's form (``/docker/<id>``,
``system.slice/docker-<id>.scope``), and this engine does not list them: by the cgroup alone their
GPU processes are orphans, and were killed after two sightings. What tells them apart is the live
containerd shim that runs them (``containerd-shim-runc-v2 -namespace moby -id <id>``), among the
process's ancestors: an orphan's shim exits with its container. The observer walks the ancestry
(a fake ``/proc`` here, read by the real :class:`~controller.observe.procfs.ProcReader`), the
planner reports such a process as foreign, and the kill's re-check walks it again (real processes).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from controller.act.process_ops import Identity, check_identity, kill_ladder
from controller.observe.cgroups import shim_runs
from controller.observe.procfs import ProcReader, attribute_gpu_processes
from controller.plan.types import ActionKind, Plan
from controller.snapshot import CgroupScope, GpuObs, GpuProcessObs, GpuUuid, NvmlProcess
from tests.fixtures import builders as b

ID = "0123456789abcdef" * 4
OTHER = "fedcba9876543210" * 4
SHIM_V2 = [
    "/usr/bin/containerd-shim-runc-v2",
    "-namespace",
    "moby",
    "-id",
    ID,
    "-address",
    "/run/other/c.sock",
]
SHIM_V1 = [
    "containerd-shim",
    "-namespace",
    "moby",
    "-workdir",
    f"/srv/docker2/containerd/daemon/io.containerd.runtime.v1.linux/moby/{ID}",
    "-address",
    "/run/other/c.sock",
]
GPU_PID, INIT_PID, SHIM_PID = 902, 901, 900


# --- the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (SHIM_V2, True),
        (SHIM_V1, True),
        (["containerd-shim-runc-v2", "-namespace", "moby", "-id", OTHER], False),
        (["containerd-shim-runc-v2", "-namespace", "moby", "-id", ID[:12]], False),  # a prefix is not the id
        (["python3", "-id", ID], False),  # not a shim, whatever its arguments
        (["/opt/containerd-shim-runc-v2x", "-id", ID], True),  # any containerd-shim* program
        ([], False),
    ],
)  # fmt: skip
def test_shim_runs(argv: list[str], expected: bool) -> None:
    assert shim_runs(argv, ID) is expected


# --- observed from a fake /proc ---------------------------------------------------------------------


def write_process(proc: Path, pid: int, ppid: int, argv: list[str], *, uid: int, cgroup: str) -> None:
    d = proc / str(pid)
    d.mkdir(parents=True)
    name = Path(argv[0]).name[:15]
    (d / "cgroup").write_text(f"0::{cgroup}\n")
    (d / "status").write_text(f"Name:\t{name}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "comm").write_text(f"{name}\n")
    (d / "stat").write_text(f"{pid} ({name}) S {ppid} 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0\n")


def fake_proc(
    tmp_path: Path,
    shim_argv: list[str] | None,
    *,
    shim_uid: int = 0,
    init_ppid: int = SHIM_PID,
    shim_cgroup: str = "/system.slice/docker2.service",
) -> Path:
    """A GPU process (902) under a container init (901) under a shim (900), as a second engine runs it."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    if shim_argv is not None:
        write_process(proc, SHIM_PID, 1, shim_argv, uid=shim_uid, cgroup=shim_cgroup)
    write_process(proc, INIT_PID, init_ppid, ["sh", "-c", "train"], uid=1001, cgroup=f"/docker/{ID}")
    write_process(proc, GPU_PID, INIT_PID, ["python3", "train.py"], uid=1001, cgroup=f"/docker/{ID}")
    return proc


def observed(
    proc: Path, existing: set[str] | None = None
) -> tuple[tuple[GpuProcessObs, ...], tuple[str, ...]]:
    gpu = GpuObs(index=0, uuid=GpuUuid(b.GPU0), name="g", processes=(NvmlProcess(pid=GPU_PID),))
    return attribute_gpu_processes((gpu,), existing or set(), ProcReader(proc, {1001: "alice"}.get))


def test_a_process_under_a_live_shim_for_its_container_is_foreign(tmp_path: Path) -> None:
    (p,), errors = observed(fake_proc(tmp_path, SHIM_V2))
    assert errors == ()
    assert (p.container_id, p.container_exists, p.cgroup_scope) == (ID, False, CgroupScope.FOREIGN)
    assert p.live_shim.startswith(
        f"pid {SHIM_PID}: /usr/bin/containerd-shim-runc-v2 -namespace moby -id {ID}"
    )


def test_the_older_shim_naming_its_work_directory_counts(tmp_path: Path) -> None:
    (p,), _ = observed(fake_proc(tmp_path, SHIM_V1))
    assert p.cgroup_scope is CgroupScope.FOREIGN and p.live_shim.startswith(
        f"pid {SHIM_PID}: containerd-shim "
    )


@pytest.mark.parametrize(
    ("shim_argv", "shim_uid", "init_ppid"),
    [
        (None, 0, 1),  # the shim exited with its container: reparented to init, a genuine orphan
        (SHIM_V2, 1001, SHIM_PID),  # a user's process named like a shim shields nothing
        (["containerd-shim-runc-v2", "-namespace", "moby", "-id", OTHER], 0, SHIM_PID),  # another container's
        (SHIM_V2, 0, GPU_PID),  # a parent loop (a corrupt tree) ends the walk
    ],
    ids=["no-shim", "user-named-shim", "other-container", "loop"],
)
def test_without_a_root_shim_running_that_container_it_is_still_an_orphan(
    tmp_path: Path, shim_argv: list[str] | None, shim_uid: int, init_ppid: int
) -> None:
    (p,), errors = observed(fake_proc(tmp_path, shim_argv, shim_uid=shim_uid, init_ppid=init_ppid))
    assert errors == ()
    assert (p.cgroup_scope, p.live_shim) == (CgroupScope.ENGINE, "")
    assert killed_pids(run_passes((p,))) == {GPU_PID}


def test_a_shim_run_inside_a_container_shields_nothing(tmp_path: Path) -> None:
    """Root inside a container of a rootful engine is uid 0 on the host too: a process it names
    like a shim, in the container's own cgroup (or another container's), is no engine's shim."""
    for i, cgroup in enumerate((f"/docker/{ID}", f"/docker/{OTHER}", f"/system.slice/docker-{OTHER}.scope")):
        (tmp_path / str(i)).mkdir()
        proc = fake_proc(tmp_path / str(i), SHIM_V2, shim_cgroup=cgroup)
        (p,), errors = observed(proc)
        assert errors == () and (p.cgroup_scope, p.live_shim) == (CgroupScope.ENGINE, ""), cgroup
        assert killed_pids(run_passes((p,))) == {GPU_PID}


def test_a_container_this_engine_lists_is_not_walked(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, SHIM_V2)
    (p,), _ = observed(proc, existing={ID})
    assert (p.container_exists, p.cgroup_scope, p.live_shim) == (True, CgroupScope.ENGINE, "")


def test_an_unreadable_ancestor_is_an_error_not_an_orphan(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, SHIM_V2)
    (proc / str(SHIM_PID) / "cmdline").unlink()
    (proc / str(SHIM_PID) / "cmdline").mkdir()  # reading it fails with EISDIR: not "exited"
    _, errors = observed(proc)
    assert len(errors) == 1 and f"pid {GPU_PID}" in errors[0]


# --- planned pass after pass ------------------------------------------------------------------------


def run_passes(processes: tuple[GpuProcessObs, ...], passes: int = 3) -> list[Plan]:
    runner = b.Passes(b.desired(b.policy()))
    return [
        runner.run(b.snapshot(observed_at=b.at(seconds=30 * i), gpus=[b.gpu(0)], processes=processes))
        for i in range(passes)
    ]


def killed_pids(plans: list[Plan]) -> set[int]:
    return {a.target.pid or 0 for p in plans for a in p.actions if a.kind is ActionKind.KILL_PROCESS}


def test_another_engines_live_container_is_reported_never_killed(tmp_path: Path) -> None:
    (p,), _ = observed(fake_proc(tmp_path, SHIM_V2))
    plans = run_passes((p,))
    assert killed_pids(plans) == set() and plans[-1].actions == ()
    (d,) = plans[-1].deferred
    assert (d.rule.value, d.why.value, d.target.pid) == ("ForeignGpuWorkload", "Protected", GPU_PID)
    assert f"shim pid {SHIM_PID}: " in d.message and "another Docker engine's" in d.message
    assert d.evidence["live_shim"] == p.live_shim and d.evidence["cgroup_scope"] == "foreign"
    assert plans[-1].memory.dirty_gpus == {}  # its process keeps the GPU from being reset


# --- the kill's re-check, with real processes -------------------------------------------------------

SHIM_PROGRAM = "sleep 300 & wait"


def mirror(proc: Path, pid: int, *, cgroup: str | None = None) -> Path:
    """Copy ``/proc/<pid>``'s stat, status, cmdline and cgroup below ``proc`` (the re-check reads
    there); ``cgroup`` replaces the real cgroup."""
    d = proc / str(pid)
    d.mkdir(exist_ok=True)
    for name in ("stat", "status", "cmdline", "cgroup"):
        (d / name).write_bytes(Path(f"/proc/{pid}/{name}").read_bytes())
    if cgroup is not None:
        (d / "cgroup").write_text(f"0::{cgroup}\n")
    return d


@pytest.fixture
def shim_tree(tmp_path: Path) -> Iterator[tuple[int, float, Path]]:
    """A root process named ``containerd-shim-runc-v2 ... -id <ID>`` with a child ``sleep``, both
    copied below ``proc`` with the child's cgroup ``/docker/<ID>`` (the re-check reads there)."""
    shim = subprocess.Popen(
        ["containerd-shim-runc-v2", "-c", SHIM_PROGRAM, "-namespace", "moby", "-id", ID], executable="/bin/sh"
    )
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(shim.pid).children():
            assert time.monotonic() < deadline, "the stand-in shim started no child"
            time.sleep(0.02)
        child = psutil.Process(shim.pid).children()[0]
        mirror(tmp_path, child.pid, cgroup=f"/docker/{ID}")
        mirror(tmp_path, shim.pid)
        yield child.pid, child.create_time(), tmp_path
    finally:
        for p in psutil.Process(shim.pid).children():
            p.kill()
        shim.kill()
        shim.wait(timeout=10)


def test_the_kill_re_check_finds_the_live_shim(shim_tree: tuple[int, float, Path]) -> None:
    pid, started, proc = shim_tree
    if os.geteuid() != 0:
        pytest.fail("this test needs root: a shim only counts when root runs it")
    check = check_identity(pid, started, ID, proc=proc, cgroup=f"/docker/{ID}")
    assert check.identity is Identity.LIVE and "containerd-shim-runc-v2" in check.detail
    # A short id in the plan is matched against the cgroup's full id before the walk.
    assert check_identity(pid, started, ID[:12], proc=proc).identity is Identity.LIVE
    result = kill_ladder(pid, started, ID, grace_s=0.1, kill_wait_s=0.1, proc=proc, cgroup=f"/docker/{ID}")
    assert (result.outcome, result.signals_sent) == (Identity.LIVE, ())
    assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def test_a_shim_of_another_container_does_not_shield(shim_tree: tuple[int, float, Path]) -> None:
    pid, started, proc = shim_tree
    (proc / str(pid) / "cgroup").write_text(f"0::/docker/{OTHER}\n")
    assert check_identity(pid, started, OTHER, proc=proc, cgroup=f"/docker/{OTHER}").identity is Identity.SAME


def test_the_kill_re_check_ignores_a_shim_inside_a_container(shim_tree: tuple[int, float, Path]) -> None:
    """The same stand-in shim, now seen in a container's cgroup (root inside a container of a
    rootful engine): it shields nothing, the process is the planned one."""
    pid, started, proc = shim_tree
    shim_pid = psutil.Process(pid).ppid()
    (proc / str(shim_pid) / "cgroup").write_text(f"0::/docker/{OTHER}\n")
    assert check_identity(pid, started, ID, proc=proc, cgroup=f"/docker/{ID}").identity is Identity.SAME


@pytest.mark.parametrize("unreadable", ["status", "cmdline", "cgroup"])
def test_the_kill_re_check_refuses_when_an_ancestor_cannot_be_read(
    shim_tree: tuple[int, float, Path], unreadable: str
) -> None:
    """The observer marks /proc unavailable when an ancestor cannot be read (no kill on a guess);
    the re-check walked its own copy and took such an ancestor for no shim: the kill went ahead.
    Both now walk :func:`find_live_shim`, and the re-check refuses."""
    pid, started, proc = shim_tree
    shim_pid = psutil.Process(pid).ppid()
    target = proc / str(shim_pid) / unreadable
    target.unlink()
    target.mkdir()  # reading it fails (IsADirectoryError) even for root; the process has not exited
    check = check_identity(pid, started, ID, proc=proc, cgroup=f"/docker/{ID}")
    assert check.identity is Identity.UNKNOWN and f"ancestor {pid}'s parent" in check.detail
    result = kill_ladder(pid, started, ID, grace_s=0.1, kill_wait_s=0.1, proc=proc, cgroup=f"/docker/{ID}")
    assert (result.outcome, result.signals_sent) == (Identity.UNKNOWN, ())
    assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    # The observer, reading the same tree, reports the same ancestor as an error.
    errors: list[str] = []
    assert ProcReader(proc, {}.get).live_shim(pid, ID, errors) == ""
    assert len(errors) == 1 and f"ancestor {pid}'s parent" in errors[0]


def test_a_host_process_is_not_walked(shim_tree: tuple[int, float, Path]) -> None:
    """A process in no container's cgroup has no container for a shim to run: an unreadable
    ancestor does not block its kill (the cgroup already says it is the planned host process)."""
    pid, started, proc = shim_tree
    (proc / str(pid) / "cgroup").write_text("0::/user.slice/user-1001.slice\n")
    shim_pid = psutil.Process(pid).ppid()
    (proc / str(shim_pid) / "status").unlink()
    (proc / str(shim_pid) / "status").mkdir()
    assert check_identity(pid, started, None, proc=proc).identity is Identity.SAME
