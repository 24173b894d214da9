"""Issue 11, case 3: GPU processes of workloads this engine does not run are never orphans.

A process is an orphan only when its cgroup is THIS engine's (Docker's own parent for its cgroup
driver, or a configured ``engineCgroupParents`` entry such as ``ds01.slice``) and this engine does
not list that id as live. Rootless Docker, the kubelet/containerd, CRI-O, Podman and sandboxes with
ids of their own are foreign: reported, never killed.

The processes are read from a fake ``/proc`` tree by the real observer code
(:func:`controller.observe.procfs.attribute_gpu_processes`) and planned by the real planner over
several passes, so the whole chain from cgroup text to KillProcess is under test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.observe.cgroups import DEFAULT_ENGINE_PARENTS, attribute, is_engine_cgroup
from controller.observe.procfs import ProcReader, attribute_gpu_processes
from controller.plan.types import ActionKind, Plan
from controller.snapshot import CgroupScope, GpuObs, GpuProcessObs, GpuUuid, NvmlProcess
from tests.fixtures import builders as b

ID = "0123456789abcdef" * 4  # a container id no engine on this host lists
SANDBOX = "885bb8c38f5db0b08b60bcf21d572f1f"  # seen on a real GPU VM: 32 hex, not a Docker id

ROOTLESS = f"/user.slice/user-1001.slice/user@1001.service/app.slice/docker-{ID}.scope"
KUBEPODS = f"/kubepods/burstable/pod7a1d2c3e-0000-4000-8000-000000000001/{ID}"
KUBEPODS_SYSTEMD = (
    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7a1d2c3e_0000.slice/"
    f"cri-containerd-{ID}.scope"
)
CRI_CONTAINERD = f"/system.slice/containerd.service/cri-containerd-{ID}.scope"
CUSTOM_PARENT = f"/mylab.slice/docker-{ID}.scope"  # another engine's (or an unconfigured) parent
CUSTOM_CGROUPFS = f"/mylab/{ID}"
PODMAN = f"/machine.slice/libpod-{ID}.scope"
PROCESS_API = f"/process_api/{SANDBOX}"

ENGINE_CGROUPFS = f"/docker/{ID}"
ENGINE_SYSTEMD = f"/system.slice/docker-{ID}.scope"
ENGINE_DS01 = f"/ds01.slice/ds01-student.slice/ds01-student-alice.slice/docker-{ID}.scope"
ENGINE_DS01_CGROUPFS = f"/ds01-student-alice.slice/{ID}"

FOREIGN = {
    "rootless-docker": ROOTLESS,
    "kubepods": KUBEPODS,
    "kubepods-systemd": KUBEPODS_SYSTEMD,
    "cri-containerd": CRI_CONTAINERD,
    "custom-parent": CUSTOM_PARENT,
    "custom-cgroupfs": CUSTOM_CGROUPFS,
    "podman": PODMAN,
    "process-api": PROCESS_API,
}
ENGINE = {
    "docker-cgroupfs": ENGINE_CGROUPFS,
    "docker-systemd": ENGINE_SYSTEMD,
    "ds01-slice": ENGINE_DS01,
    "ds01-slice-cgroupfs": ENGINE_DS01_CGROUPFS,
}


# --- the cgroup text alone -------------------------------------------------------------------------


@pytest.mark.parametrize("path", FOREIGN.values(), ids=FOREIGN.keys())
def test_other_runtimes_cgroups_are_foreign(path: str) -> None:
    attribution = attribute(f"0::{path}\n")
    assert attribution.scope is CgroupScope.FOREIGN
    assert attribution.cgroup == path


@pytest.mark.parametrize("path", ENGINE.values(), ids=ENGINE.keys())
def test_this_engines_cgroups(path: str) -> None:
    attribution = attribute(f"0::{path}\n")
    assert (attribution.scope, attribution.container_id) == (CgroupScope.ENGINE, ID)


def test_v1_lines_and_sub_cgroups_of_an_engine_container() -> None:
    text = f"12:pids:/docker/{ID}/init.scope\n1:name=systemd:/docker/{ID}\n0::/\n"
    assert attribute(text).scope is CgroupScope.ENGINE


def test_host_cgroups_name_no_workload() -> None:
    for path in (
        "/",
        "/init.scope",
        "/user.slice/user-1000.slice/session-3.scope",
        "/system.slice/sshd.service",
    ):
        attribution = attribute(f"0::{path}\n")
        assert (attribution.scope, attribution.container_id) == (CgroupScope.HOST, None)


@pytest.mark.parametrize(
    ("path", "parents", "expected"),
    [
        (f"/ds01.slice/ds01-student-alice.slice/docker-{ID}.scope", ("ds01.slice",), True),
        # A configured per-user slice: the systemd driver expands it to its ancestors.
        (ENGINE_DS01, ("ds01-student-alice.slice",), True),
        (ENGINE_DS01, ("ds01-faculty.slice",), False),
        (ENGINE_DS01, (), False),
        (f"/gpu-jobs/{ID}", ("/gpu-jobs",), True),
        (f"/gpu-jobs/{ID}", ("/gpu",), False),
        # The root slice would make every container the engine's: refused.
        (CUSTOM_PARENT, ("-.slice",), False),
        # Rootless Docker with DS01's parent inside the user's manager is still not this engine's.
        (f"{ROOTLESS.rsplit('/', 2)[0]}/ds01.slice/docker-{ID}.scope", ("ds01.slice",), False),
        # A parent that covers users' slices (containers given --cgroup-parent=user-1001.slice)
        # does not cover a user's own systemd manager: rootless Docker runs there.
        (f"/user.slice/user-1001.slice/docker-{ID}.scope", ("user.slice",), True),
        (ROOTLESS, ("user.slice",), False),
        (ROOTLESS, ("user-1001.slice",), False),
        # Docker's systemd default is exact: a service's sub-cgroup is not Docker's.
        (f"/system.slice/foo.service/docker-{ID}.scope", DEFAULT_ENGINE_PARENTS, False),
        # Another runtime's id form under this engine's parent is still not this engine's.
        (f"/ds01.slice/cri-containerd-{ID}.scope", ("ds01.slice",), False),
    ],
)  # fmt: skip
def test_engine_parents(path: str, parents: tuple[str, ...], expected: bool) -> None:
    assert is_engine_cgroup(path, ID, parents) is expected


# --- observed from a fake /proc, planned pass after pass -----------------------------------------


def fake_process(proc: Path, pid: int, cgroup: str) -> None:
    d = proc / str(pid)
    d.mkdir(parents=True)
    (d / "cgroup").write_text(cgroup)
    (d / "status").write_text("Name:\tpython3\nUid:\t1001\t1001\t1001\t1001\n")
    (d / "cmdline").write_bytes(b"python3\0train.py\0")
    (d / "comm").write_text("python3\n")
    (d / "stat").write_text(f"{pid} (python3) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0\n")


def observed(tmp_path: Path, cgroups: dict[int, str]) -> tuple[GpuProcessObs, ...]:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    for pid, path in cgroups.items():
        fake_process(proc, pid, f"0::{path}\n")
    gpu = GpuObs(
        index=0, uuid=GpuUuid(b.GPU0), name="g", processes=tuple(NvmlProcess(pid=p) for p in cgroups)
    )
    # No container exists on this engine: the engine lists none of these ids.
    processes, errors = attribute_gpu_processes((gpu,), set(), ProcReader(proc, {1001: "alice"}.get))
    assert errors == ()
    return processes


def run_passes(processes: tuple[GpuProcessObs, ...], passes: int = 3) -> list[Plan]:
    runner = b.Passes(b.desired(b.policy()))
    plans = []
    for i in range(passes):
        snap = b.snapshot(observed_at=b.at(seconds=30 * i), gpus=[b.gpu(0)], processes=processes)
        plans.append(runner.run(snap))
    return plans


def killed_pids(plans: list[Plan]) -> set[int]:
    return {
        a.target.pid for p in plans for a in p.actions if a.kind is ActionKind.KILL_PROCESS and a.target.pid
    }


def test_foreign_workloads_are_reported_never_killed(tmp_path: Path) -> None:
    cgroups = {1000 + i: path for i, path in enumerate(FOREIGN.values())}
    processes = observed(tmp_path, cgroups)
    assert {p.pid: p.cgroup_scope for p in processes} == dict.fromkeys(cgroups, CgroupScope.FOREIGN)
    plans = run_passes(processes)
    assert killed_pids(plans) == set()
    last = plans[-1]
    assert last.actions == ()
    foreign = {d.target.pid: d for d in last.deferred if d.rule.value == "ForeignGpuWorkload"}
    assert set(foreign) == set(cgroups)
    assert all(d.why.value == "Protected" for d in foreign.values())
    assert foreign[1000 + list(FOREIGN).index("process-api")].evidence["cgroup"] == PROCESS_API
    assert all(d.evidence["cgroup_scope"] == "foreign" for d in foreign.values())
    # They count as processes on the GPU: it is never marked dirty under them.
    assert last.memory.dirty_gpus == {}


def test_genuine_orphans_of_this_engine_are_still_killed(tmp_path: Path) -> None:
    cgroups = {2000 + i: path for i, path in enumerate(ENGINE.values())}
    processes = observed(tmp_path, cgroups)
    assert {p.pid: p.cgroup_scope for p in processes} == dict.fromkeys(cgroups, CgroupScope.ENGINE)
    plans = run_passes(processes, passes=2)
    assert killed_pids(plans[:1]) == set()  # the second sighting is still required
    assert killed_pids(plans) == set(cgroups)


def test_rootless_docker_under_a_configured_user_slice_is_never_killed(tmp_path: Path) -> None:
    """engineCgroupParents may name the users' slices (this engine's containers are given
    ``--cgroup-parent=user-<uid>.slice``); a user's rootless Docker, under that user's own systemd
    manager in the same slice, is still not this engine's. Its shim runs as the user, so the
    live-shim walk (root shims only) does not shield it: the cgroup must."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    engine_orphan = f"/user.slice/user-1001.slice/docker-{'f' * 64}.scope"
    cgroups = {3000: ROOTLESS, 3001: engine_orphan}
    for pid, path in cgroups.items():
        fake_process(proc, pid, f"0::{path}\n")
    gpu = GpuObs(
        index=0, uuid=GpuUuid(b.GPU0), name="g", processes=tuple(NvmlProcess(pid=p) for p in cgroups)
    )
    processes, errors = attribute_gpu_processes(
        (gpu,), set(), ProcReader(proc, {1001: "alice"}.get), ("user.slice",)
    )
    assert errors == ()
    assert {p.pid: p.cgroup_scope for p in processes} == {3000: CgroupScope.FOREIGN, 3001: CgroupScope.ENGINE}
    assert killed_pids(run_passes(processes)) == {3001}


def test_a_live_container_of_this_engine_under_an_unknown_parent_is_not_foreign_reported() -> None:
    """The engine lists it running: its process is a live container's, whatever the parent."""
    c = b.container("train", gpus=[b.GPU0], started_at=b.ago(minutes=5))
    p = b.process(
        3000,
        b.GPU0,
        container_id=c.id,
        container_exists=True,
        cgroup=f"/mylab/{c.id}",
        scope=CgroupScope.FOREIGN,
    )
    plans = []
    runner = b.Passes(b.desired(b.policy()))
    for i in range(3):
        snap = b.snapshot(observed_at=b.at(seconds=30 * i), containers=[c], gpus=[b.gpu(0)], processes=[p])
        plans.append(runner.run(snap))
    assert killed_pids(plans) == set()
    assert [d for d in plans[-1].deferred if d.target.pid == 3000] == []


# --- reported: detection.* events and ds01ctl get processes --------------------------------------


def test_foreign_workloads_are_announced_as_detection_events() -> None:
    from controller.act.inventory import awareness_events, build_inventory

    rootless = b.process(4000, b.GPU0, container_id=ID, cgroup=ROOTLESS, scope=CgroupScope.FOREIGN)
    sandbox = b.process(4001, b.GPU0, cgroup=PROCESS_API, scope=CgroupScope.FOREIGN)
    inv0 = build_inventory(b.snapshot(observed_at=b.at(), gpus=[b.gpu(0)]), None)
    s1 = b.snapshot(observed_at=b.at(seconds=30), gpus=[b.gpu(0)], processes=[rootless, sandbox])
    assert awareness_events(inv0, s1) == []  # first sighting
    inv1 = build_inventory(s1, inv0)
    assert set(inv1["_pending_foreign_processes"]) == {"4000", "4001"} and inv1["host_processes"] == {}
    # announced once seen for the transient filter's minute (transientProcessMinAge)
    s2 = b.snapshot(observed_at=b.at(seconds=90), gpus=[b.gpu(0)], processes=[rootless, sandbox])
    events = awareness_events(inv1, s2)
    assert sorted((e[0], e[2]["pid"], e[2]["cgroup"]) for e in events) == [
        ("detection.foreign_gpu_process_discovered", 4000, ROOTLESS),
        ("detection.foreign_gpu_process_discovered", 4001, PROCESS_API),
    ]
    gone = awareness_events(
        build_inventory(s2, inv1), b.snapshot(observed_at=b.at(seconds=120), gpus=[b.gpu(0)])
    )
    assert sorted(e[0] for e in gone) == ["detection.foreign_gpu_process_exited"] * 2


def test_get_processes_shows_foreign_not_orphan() -> None:
    from controller.cli.get import process_container, process_verdict
    from controller.cli.view import View

    rootless = b.process(4000, b.GPU0, container_id=ID, cgroup=ROOTLESS, scope=CgroupScope.FOREIGN)
    sandbox = b.process(4001, b.GPU0, cgroup=PROCESS_API, scope=CgroupScope.FOREIGN)
    orphan = b.process(4002, b.GPU0, container_id=ID, cgroup=ENGINE_SYSTEMD, scope=CgroupScope.ENGINE)
    snap = b.snapshot(gpus=[b.gpu(0)], processes=[rootless, sandbox, orphan])
    view = View(snapshot=snap, now=b.T0)
    assert [process_verdict(view, p) for p in (rootless, sandbox, orphan)] == ["foreign", "foreign", "orphan"]
    assert [process_container(view, p) for p in (rootless, sandbox, orphan)] == ["foreign", "foreign", "gone"]


# --- the kill re-checks the cgroup that made it an orphan ----------------------------------------


def test_the_kill_re_check_requires_the_planned_cgroup(tmp_path: Path) -> None:
    import os

    import psutil

    from controller.act.process_ops import Identity, check_identity

    pid = os.getpid()
    started = psutil.Process(pid).create_time()
    (tmp_path / str(pid)).mkdir()
    cgroup_file = tmp_path / str(pid) / "cgroup"
    cgroup_file.write_text(f"0::{ENGINE_CGROUPFS}\n")
    assert check_identity(pid, started, ID, proc=tmp_path, cgroup=ENGINE_CGROUPFS).identity is Identity.SAME
    # Same container id, but now in another runtime's cgroup: not the process the plan judged.
    cgroup_file.write_text(f"0::{ROOTLESS}\n")
    check = check_identity(pid, started, ID, proc=tmp_path, cgroup=ENGINE_CGROUPFS)
    assert check.identity is Identity.MOVED and ROOTLESS in check.detail


def test_the_orphan_gauge_does_not_count_foreign_workloads() -> None:
    from controller.act.dry_run import DryRunExecutor
    from controller.ops.metrics import Metrics
    from controller.pass_metrics import record_metrics

    foreign = b.process(5000, b.GPU0, container_id=ID, cgroup=ROOTLESS, scope=CgroupScope.FOREIGN)
    orphan = b.process(5001, b.GPU0, container_id="e" * 64)
    snap = b.snapshot(gpus=[b.gpu(0)], processes=[foreign, orphan])
    the_plan = b.Passes(b.desired(b.policy())).run(snap)
    report = DryRunExecutor(None).execute(the_plan, the_plan.memory, snap.observed_at)
    metrics = Metrics(version="test")
    record_metrics(metrics, snap, the_plan, report, 0.1, the_plan.memory)
    assert "ds01_orphan_processes 1.0" in metrics.render().decode()
