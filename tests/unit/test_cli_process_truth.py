"""``get processes``, ``get gpus`` and ``describe user`` say what the planner decided.

Three views contradicted the plan they showed: a paused container's process was an ``orphan`` on a
``dirty`` GPU (the planner counts paused and restarting containers as live, never kills their
processes, marks nothing dirty); a process of a container whose GPU reference did not resolve was
``suspect`` on a ``dirty`` device (the planner raises no alert: such a container may use any GPU);
and ``describe user`` left out the processes in the user's own containers that run as root.
"""

from __future__ import annotations

import pytest

from controller.cli.describe import describe_user
from controller.cli.get import GetOptions, run_get
from controller.cli.view import View
from controller.snapshot import (
    CgroupScope,
    ContainerState,
    Domain,
    DomainHealth,
    GpuProcessObs,
    GpuUuid,
    ProcessState,
)
from tests.fixtures import builders as b

MIG11 = b.mig_uuid(1, 1)
GPUS = (
    b.gpu(0, processes=[101], memory_used_bytes=2 << 30),
    b.gpu(1, mig_slots=2),
    b.gpu(2, processes=[303], memory_used_bytes=2 << 30),
)


def view() -> View:
    desired = b.desired(b.policy())
    passes = b.Passes(desired)
    for i in range(3):
        t = b.at(seconds=30 * i)
        busy = b.signals(t, cpu_usage_ns=int(30e9 * i), gpu_pct={b.GPU2: 90.0})
        containers = [
            b.container("paused-job", state=ContainerState.PAUSED, gpus=[b.GPU0], owner="alice"),
            b.running("unres", gpus=[b.unresolved_ref("7")], owner="bob", sig=busy),
            b.running("rootjob", gpus=[b.GPU2], owner="carol", sig=busy),
        ]
        processes = [
            b.process(101, b.GPU0, container_id=b.cid("paused-job"), container_exists=True),
            b.process(202, b.GPU1, device_uuid=MIG11, container_id=b.cid("unres"), container_exists=True),
            b.process(303, b.GPU2, container_id=b.cid("rootjob"), container_exists=True, user="root", uid=0),
        ]
        snap = b.snapshot(observed_at=t, containers=containers, gpus=GPUS, processes=processes)
        p = passes.run(snap)
    assert p.actions == () and p.memory.dirty_gpus == {}  # the planner: nothing to kill or reset
    return View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=desired)


def rows(text: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    return {line.split()[0]: line.split() for line in lines[1:] if line.strip()}


def test_process_verdicts_follow_the_planner() -> None:
    out = rows(run_get("processes", view(), GetOptions())[0])
    assert {pid: r[-1] for pid, r in out.items()} == {"101": "ok", "202": "ok", "303": "ok"}


def test_no_gpu_is_dirty_where_the_planner_marks_none() -> None:
    out = rows(run_get("gpus", view(), GetOptions())[0])
    assert "dirty" not in {r[-1] for r in out.values()}, out
    assert out["0"][-1] == "paused-held"  # the paused holder's GPU (it accrues no idle time)


def test_describe_user_lists_the_processes_in_their_containers_run_as_root() -> None:
    text = describe_user(view(), "carol")
    section = text[text.index("GPU processes") : text.index("Ledger")]
    assert "303" in section and "rootjob" in section


def unread_view(state: ProcessState) -> View:
    """GPU 3 lists one process whose /proc entry was never read, as the observer records it: no
    cgroup, container, user or command line. VANISHED: gone when read (it exited after NVML listed
    it, or /proc hides it from this user); PRESENT: the read failed, and /proc is unavailable. The
    planner kills, alerts on and marks nothing for it."""
    unread = GpuProcessObs(
        pid=404,
        device_uuid=GpuUuid(b.GPU3),
        gpu_uuid=GpuUuid(b.GPU3),
        used_memory_bytes=1 << 30,
        state=state,
        cgroup_scope=CgroupScope.UNKNOWN,
    )
    desired = b.desired(b.policy())
    passes = b.Passes(desired)
    for i in range(3):
        t = b.at(seconds=30 * i)
        snap = b.snapshot(observed_at=t, gpus=[b.gpu(3, processes=[404])])
        if state == ProcessState.PRESENT:
            down = DomainHealth(domain=Domain.PROCFS, ok=False, error="pid 404: [Errno 13] Permission denied")
            health = tuple(down if h.domain == Domain.PROCFS else h for h in snap.health)
            snap = snap.model_copy(update={"health": health})
        snap = snap.model_copy(update={"processes": (unread,)})  # kept, as the observer keeps them
        p = passes.run(snap)
    assert p.actions == () and p.memory.dirty_gpus == {}
    assert not [d for d in p.deferred if d.target.pid == 404 or d.target.gpu == b.GPU3]
    return View(snapshot=snap, now=t, plan=p, memory=p.memory, desired=desired)


@pytest.mark.parametrize("state", [ProcessState.VANISHED, ProcessState.PRESENT])
def test_a_process_whose_proc_entry_was_never_read_is_not_a_host_process_nor_dirt(
    state: ProcessState,
) -> None:
    view = unread_view(state)
    (row,) = rows(run_get("processes", view, GetOptions())[0]).values()
    assert "host" not in row and "suspect" not in row, row
    command = "(vanished)" if state == ProcessState.VANISHED else "unknown"
    assert row[-4:] == ["unknown", "unknown", command, "unknown"], row  # user, container, command, verdict
    # Not dirty (the planner marks nothing), nor free: a process NVML listed on it is unaccounted for.
    gpu = rows(run_get("gpus", view, GetOptions())[0])["3"]
    assert gpu[-1] == "unknown", gpu
