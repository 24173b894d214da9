"""Resource limits as desired state on the real engine: observe, plan, ``docker update``, converge.

Mixed containers (no limits, above and below the spec, created and never started, compose-style and
devcontainer-style labels, and one holding more memory than the new limit) are brought to the
spec's limits in one acting pass; the result is checked in ``docker inspect`` and in the cgroup
files (v1 or v2, whichever this host has); a second pass plans no update; nothing is restarted;
the container holding memory is not cut below its use and keeps running.

The host is shared: only the actions on this test's containers are executed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.act.report import Outcome
from controller.memory import ControllerMemory
from controller.observe import HostObserver, ObserveConfig
from controller.observe.cgroups import controller_path, parse_cgroup, unified_path
from controller.plan.desired import PolicySetDesired
from controller.plan.planner import plan
from controller.plan.types import Action, ActionKind, DeferReason, Plan, Reason, ResourceUpdate
from controller.snapshot import Domain, DomainHealth, GpuObs, Snapshot
from desired_state.load import load_spec_text
from tests.fixtures.act import RecordingNotifier, make_plan, read_events
from tests.fixtures.docker_host import ContainerFactory

pytestmark = pytest.mark.docker

MiB = 1 << 20
SPEC = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata: {name: site}
spec:
  resources: {maxCpus: 1, memory: 64m, memorySwap: 96m, pidsLimit: 100}
  resourceEnforcement: {updateLimits: true}
  safety: {maxDestructiveActionsPerPass: 100000}  # the engine is shared: every container on it is planned
"""
CGROUP_ROOT = Path("/sys/fs/cgroup")


class NoGpus:
    def observe(self) -> tuple[tuple[GpuObs, ...], DomainHealth]:
        return (), DomainHealth(domain=Domain.NVML, ok=True)


def observe(tmp_path: Path) -> Snapshot:
    with HostObserver(ObserveConfig(ledger_path=tmp_path / "ledger.json"), nvml=NoGpus()) as observer:
        return observer.observe()


def ours(p: Plan, ids: set[str]) -> Plan:
    return p.model_copy(update={"actions": tuple(a for a in p.actions if a.target.container_id in ids)})


def cgroup_value(pid: int, v1_controller: str, v1_file: str, v2_file: str) -> str:
    lines = parse_cgroup(Path(f"/proc/{pid}/cgroup").read_text())
    found = controller_path(lines, v1_controller)
    if found is not None:
        line, path = found
        for name in (",".join(line.controllers), v1_controller):
            candidate = CGROUP_ROOT / name / path.lstrip("/") / v1_file
            if candidate.exists():
                return candidate.read_text().strip()
    unified = unified_path(lines)
    assert unified is not None, "no cgroup for the container"
    for base in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        candidate = base / unified.lstrip("/") / v2_file
        if candidate.exists():
            return candidate.read_text().strip()
    raise AssertionError(f"neither {v1_file} nor {v2_file} found for pid {pid}")


def cpu_limit(pid: int) -> float | None:
    try:
        quota = int(cgroup_value(pid, "cpu", "cpu.cfs_quota_us", "cpu.max.nonexistent"))
        period = int(cgroup_value(pid, "cpu", "cpu.cfs_period_us", "cpu.max.nonexistent"))
    except AssertionError:
        text = cgroup_value(pid, "cpu", "cpu.max", "cpu.max").split()
        return None if text[0] == "max" else int(text[0]) / int(text[1])
    return None if quota < 0 else quota / period


def host_config(client: Any, cid: str) -> dict[str, Any]:
    data: dict[str, Any] = client.api.inspect_container(cid)
    return data


def test_mixed_containers_converge_in_one_acting_pass(
    make_container: ContainerFactory, docker_client: Any, tmp_path: Path
) -> None:
    none = make_container(network_mode="none")
    above = make_container(
        network_mode="none", mem_limit="256m", memswap_limit="512m", nano_cpus=2_000_000_000, pids_limit=500
    )
    below = make_container(
        network_mode="none", mem_limit="32m", memswap_limit="32m", nano_cpus=500_000_000, pids_limit=50
    )
    created = make_container(start=False)
    compose = make_container(
        network_mode="none",
        labels={
            "com.docker.compose.project": "lab",
            "com.docker.compose.service": "train",
            "com.docker.compose.project.working_dir": "/home/alice/lab",
        },
    )
    devcontainer = make_container(
        network_mode="none",
        labels={
            "devcontainer.local_folder": "/home/bob/thesis",
            "devcontainer.config_file": ".devcontainer.json",
        },
    )
    # Holds ~100 MiB in tmpfs (charged to its memory cgroup): above the 64 MiB the spec asks for.
    hog = make_container(
        "sh -c 'dd if=/dev/zero of=/dev/shm/fill bs=1M count=100 2>/dev/null; sleep 300'",
        network_mode="none",
        shm_size="256m",
    )
    time.sleep(1.5)  # let dd fill the tmpfs
    everyone = [none, above, below, created, compose, devcontainer, hog]
    ids = {c.id for c in everyone}
    started = {c.id: host_config(docker_client, c.id)["State"]["StartedAt"] for c in everyone}

    desired = PolicySetDesired(load_spec_text(SPEC))
    first = plan(observe(tmp_path), desired, ControllerMemory(), datetime_now())
    mine = ours(first, ids)
    updates = {a.target.container_id: a for a in mine.actions if a.kind == ActionKind.UPDATE_RESOURCES}
    assert set(updates) == {none.id, above.id, created.id, compose.id, devcontainer.id, hog.id}
    assert updates[none.id].reason == Reason.LIMITS_MISSING
    assert updates[above.id].reason == Reason.LIMITS_ABOVE_SPEC
    assert "memory_bytes" not in updates[hog.id].params  # not cut below its use
    limit_rules = (Reason.LIMITS_MISSING, Reason.LIMITS_ABOVE_SPEC)
    hog_waits = [d for d in first.deferred if d.target.container_id == hog.id and d.rule in limit_rules]
    assert [d.why for d in hog_waits] == [DeferReason.BELOW_USAGE]
    warned = [
        a
        for a in mine.actions
        if a.kind == ActionKind.WARN_OWNER
        and a.target.container_id == hog.id
        and a.reason == Reason.LIMITS_BELOW_USAGE
    ]
    assert len(warned) == 1  # (its owner may also be warned about a quota: the engine is shared)

    log = tmp_path / "events.jsonl"
    executor = RealExecutor(
        docker_client, EventLog(log), RecordingNotifier(), tmp_path / "ledger.json", verify_timeout_s=5.0
    )
    report = executor.execute(mine, ControllerMemory(), datetime_now())
    done = {o.target.container_id: o for o in report.outcomes if o.kind == ActionKind.UPDATE_RESOURCES}
    assert {cid: o.outcome for cid, o in done.items()} == {cid: Outcome.DONE for cid in updates}, [
        o.detail for o in done.values()
    ]
    assert sum(1 for e in read_events(log) if e["event_type"] == "container.update") == 6

    for c in (none, above, created, compose, devcontainer):
        hc = host_config(docker_client, c.id)["HostConfig"]
        assert (hc["NanoCpus"], hc["Memory"], hc["MemorySwap"], hc["PidsLimit"]) == (
            1_000_000_000,
            64 * MiB,
            96 * MiB,
            100,
        ), c.name
    hc = host_config(docker_client, below.id)["HostConfig"]
    assert (hc["NanoCpus"], hc["Memory"], hc["MemorySwap"], hc["PidsLimit"]) == (
        500_000_000,
        32 * MiB,
        32 * MiB,
        50,
    )
    hc = host_config(docker_client, hog.id)["HostConfig"]
    assert hc["Memory"] == 0 and hc["NanoCpus"] == 1_000_000_000 and hc["PidsLimit"] == 100

    # The kernel holds the same limits (cgroup v1 or v2).
    for c in (none, above, compose, devcontainer):
        pid = int(host_config(docker_client, c.id)["State"]["Pid"])
        memory = cgroup_value(pid, "memory", "memory.limit_in_bytes", "memory.max")
        assert int(memory) == 64 * MiB, c.name
        assert cgroup_value(pid, "pids", "pids.max", "pids.max") == "100"
        assert cpu_limit(pid) == pytest.approx(1.0)
    hog_pid = int(host_config(docker_client, hog.id)["State"]["Pid"])
    hog_memory = cgroup_value(hog_pid, "memory", "memory.limit_in_bytes", "memory.max")
    assert hog_memory == "max" or int(hog_memory) > 1 << 40  # still unlimited

    # Nothing restarted; the hog still runs and still holds its memory.
    for c in everyone:
        state = host_config(docker_client, c.id)["State"]
        assert state["StartedAt"] == started[c.id], c.name
    assert host_config(docker_client, hog.id)["State"]["Running"] is True

    # A second pass (fresh observation) plans no update for any of them.
    second = ours(plan(observe(tmp_path), desired, report.memory, datetime_now()), ids)
    assert [a for a in second.actions if a.kind == ActionKind.UPDATE_RESOURCES] == []


def filler_and_its_update(
    make_container: ContainerFactory, tmp_path: Path, *, then: str = ""
) -> tuple[Any, Action]:
    """A container that uses little until ``/tmp/go`` exists, then writes 100 MiB to its tmpfs (and
    runs ``then``) and creates ``/tmp/done``; and the update that lowers its memory to 64 MiB,
    planned while it is small."""
    c = make_container(
        "sh -c 'while [ ! -e /tmp/go ]; do sleep 0.1; done; "
        f"dd if=/dev/zero of=/dev/shm/fill bs=1M count=100 2>/dev/null; {then} touch /tmp/done; sleep 300'",
        network_mode="none",
        shm_size="256m",
    )
    time.sleep(0.5)
    desired = PolicySetDesired(load_spec_text(SPEC))
    p = ours(plan(observe(tmp_path), desired, ControllerMemory(), datetime_now()), {c.id})
    (update,) = [a for a in p.actions if a.kind == ActionKind.UPDATE_RESOURCES]
    assert update.params_as(ResourceUpdate).memory_bytes == 64 * MiB
    return c, update


def test_the_executor_rechecks_use_right_before_lowering(
    make_container: ContainerFactory, docker_client: Any, tmp_path: Path
) -> None:
    # Planned while the container used little; it fills its tmpfs before the action runs.
    c, update = filler_and_its_update(make_container, tmp_path)
    c.exec_run("touch /tmp/go")
    time.sleep(1.5)
    executor = RealExecutor(
        docker_client, EventLog(tmp_path / "e.jsonl"), RecordingNotifier(), tmp_path / "l.json"
    )
    report = executor.execute(make_plan(update), ControllerMemory(), datetime_now())
    (outcome,) = report.outcomes
    assert outcome.outcome is Outcome.SKIPPED and "uses" in outcome.detail, outcome.detail
    assert host_config(docker_client, c.id)["HostConfig"]["Memory"] == 0
    assert host_config(docker_client, c.id)["State"]["Running"] is True


def test_a_memory_limit_is_never_lowered_below_the_peak_since_the_container_started(
    make_container: ContainerFactory, docker_client: Any, tmp_path: Path
) -> None:
    """The job fills 100 MiB and frees it again (a data load, an evaluation): its use is back
    under the 64 MiB limit, but it needs 100 MiB again at its next phase, and the lowered limit
    OOM-kills it then. The cgroup's peak is a floor for the re-check and the planner alike."""
    c, update = filler_and_its_update(make_container, tmp_path, then="rm /dev/shm/fill;")
    c.exec_run("touch /tmp/go")
    deadline = time.monotonic() + 30
    while c.exec_run("ls /tmp/done").exit_code != 0:
        assert time.monotonic() < deadline, "the container never filled and freed its tmpfs"
        time.sleep(0.1)
    executor = RealExecutor(
        docker_client, EventLog(tmp_path / "e.jsonl"), RecordingNotifier(), tmp_path / "l.json"
    )
    (outcome,) = executor.execute(make_plan(update), ControllerMemory(), datetime_now()).outcomes
    assert outcome.outcome is Outcome.SKIPPED and "peak" in outcome.detail, outcome.detail
    assert host_config(docker_client, c.id)["HostConfig"]["Memory"] == 0
    # A fresh plan sees the same: the use is low, the peak is not; the memory waits, the rest comes.
    snap = observe(tmp_path)
    (seen,) = [x for x in snap.containers if x.id == c.id]
    assert seen.signals is not None and seen.signals.memory_bytes is not None
    assert seen.signals.memory_bytes < 64 * MiB <= 100 * MiB <= (seen.signals.memory_peak_bytes or 0)
    p = ours(plan(snap, PolicySetDesired(load_spec_text(SPEC)), ControllerMemory(), datetime_now()), {c.id})
    (again,) = [a for a in p.actions if a.kind == ActionKind.UPDATE_RESOURCES]
    assert again.params_as(ResourceUpdate).memory_bytes is None
    (wait,) = [d for d in p.deferred if d.why is DeferReason.BELOW_USAGE and d.target.container_id == c.id]
    assert "since it started" in wait.message and wait.evidence["memory_peak_bytes"] >= 100 * MiB


def test_use_that_grows_while_the_update_intent_is_written_is_seen_before_lowering(
    make_container: ContainerFactory, docker_client: Any, tmp_path: Path
) -> None:
    # The use is low at the plan and at the check before the intent; the container fills its tmpfs
    # while the intent is written (fsynced; the save may wait for other actions' saves). The limit
    # must not be lowered under it: the use is read again after the intent.
    c, update = filler_and_its_update(make_container, tmp_path)

    def save(memory: ControllerMemory) -> None:
        c.exec_run("touch /tmp/go")
        for _ in range(100):  # until the 100 MiB are written
            if c.exec_run("ls /tmp/done").exit_code == 0:
                return
            time.sleep(0.1)
        raise AssertionError("the container did not fill its tmpfs")

    executor = RealExecutor(
        docker_client,
        EventLog(tmp_path / "e.jsonl"),
        RecordingNotifier(),
        tmp_path / "l.json",
        save_memory=save,
    )
    report = executor.execute(make_plan(update), ControllerMemory(), datetime_now())
    (outcome,) = report.outcomes
    assert outcome.outcome is Outcome.SKIPPED and "uses" in outcome.detail, outcome.detail
    assert host_config(docker_client, c.id)["HostConfig"]["Memory"] == 0
    assert host_config(docker_client, c.id)["State"]["Running"] is True
    started, closed = read_events(tmp_path / "e.jsonl", intents=True)
    assert started["event_type"] == "controller.action_started"
    assert closed["details"]["phase"] == "skipped"


PIDS_SPEC = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata: {name: site}
spec:
  resources: {pidsLimit: 40}
  resourceEnforcement: {updateLimits: true, memoryMarginPct: 10}
  safety: {maxDestructiveActionsPerPass: 100000}  # the engine is shared: every container on it is planned
"""


def forker_and_its_update(make_container: ContainerFactory, tmp_path: Path) -> tuple[Any, Action]:
    """A container that runs a task or two, and the update that lowers its pids limit to 40, planned
    then; once planned, it is told to start 36 more, and this returns when they run."""
    c = make_container(
        "sh -c 'while [ ! -e /tmp/go ]; do sleep 0.1; done; "
        "i=0; while [ $i -lt 36 ]; do sleep 300 & i=$((i+1)); done; touch /tmp/done; sleep 300'",
        network_mode="none",
    )
    time.sleep(0.5)
    desired = PolicySetDesired(load_spec_text(PIDS_SPEC))
    p = ours(plan(observe(tmp_path), desired, ControllerMemory(), datetime_now()), {c.id})
    (update,) = [a for a in p.actions if a.kind == ActionKind.UPDATE_RESOURCES]
    assert update.params_as(ResourceUpdate).pids_limit == 40
    c.exec_run("touch /tmp/go")
    for _ in range(100):
        if c.exec_run("ls /tmp/done").exit_code == 0:
            return c, update
        time.sleep(0.1)
    raise AssertionError("the container did not start its 36 tasks")


def test_the_executor_leaves_room_to_fork_right_before_lowering_the_pids_limit(
    make_container: ContainerFactory, docker_client: Any, tmp_path: Path
) -> None:
    # Planned while it ran a couple of tasks; it starts 36 more before the action runs. A limit of 40
    # would leave it less than 10 % of room (its next worker would fail to start): skipped.
    c, update = forker_and_its_update(make_container, tmp_path)
    assert_skipped_for_room(docker_client, tmp_path, c, update)


def test_a_pids_limit_is_never_lowered_below_the_peak_since_the_container_started(
    make_container: ContainerFactory, docker_client: Any, tmp_path: Path
) -> None:
    # Planned while it ran a couple of tasks; it starts 36 workers and ends them again before the
    # action runs (an epoch's data loaders). It starts them again at its next epoch, and a limit of
    # 40 would fail the last of them: the peak since it started is the floor, as the count now is.
    c = make_container(
        "sh -c 'while [ ! -e /tmp/go ]; do sleep 0.1; done; i=0; p=; "
        'while [ $i -lt 36 ]; do sleep 300 & p="$p $!"; i=$((i+1)); done; kill $p; wait; '
        "touch /tmp/done; sleep 300'",
        network_mode="none",
    )
    time.sleep(0.5)
    desired = PolicySetDesired(load_spec_text(PIDS_SPEC))
    p = ours(plan(observe(tmp_path), desired, ControllerMemory(), datetime_now()), {c.id})
    (update,) = [a for a in p.actions if a.kind == ActionKind.UPDATE_RESOURCES]
    assert update.params_as(ResourceUpdate).pids_limit == 40
    c.exec_run("touch /tmp/go")
    deadline = time.monotonic() + 30
    while c.exec_run("ls /tmp/done").exit_code != 0:
        assert time.monotonic() < deadline, "the container never started and ended its workers"
        time.sleep(0.1)
    assert_skipped_for_room(docker_client, tmp_path, c, update)
    # A fresh plan sees the same: few tasks now, many at its peak; the pids limit waits.
    snap = observe(tmp_path)
    (seen,) = [x for x in snap.containers if x.id == c.id]
    assert seen.signals is not None and seen.signals.pids_current is not None
    assert seen.signals.pids_current < 10 and (seen.signals.pids_peak or 0) >= 37
    p = ours(plan(snap, desired, ControllerMemory(), datetime_now()), {c.id})
    assert all(
        a.params_as(ResourceUpdate).pids_limit is None
        for a in p.actions
        if a.kind == ActionKind.UPDATE_RESOURCES
    )
    (wait,) = [d for d in p.deferred if d.why is DeferReason.BELOW_USAGE and d.target.container_id == c.id]
    assert wait.evidence["pids_peak"] >= 37


def assert_skipped_for_room(docker_client: Any, tmp_path: Path, c: Any, update: Action) -> None:
    """The executor skips ``update`` (its pids limit would leave too little room to fork), and the
    running container keeps no pids limit."""
    executor = RealExecutor(
        docker_client, EventLog(tmp_path / "e.jsonl"), RecordingNotifier(), tmp_path / "l.json"
    )
    (outcome,) = executor.execute(make_plan(update), ControllerMemory(), datetime_now()).outcomes
    assert outcome.outcome is Outcome.SKIPPED and "room" in outcome.detail, outcome.detail
    state = host_config(docker_client, c.id)
    assert state["HostConfig"]["PidsLimit"] in (None, 0, -1) and state["State"]["Running"] is True


def main_process_cgroups(pid: int) -> list[Path]:
    """The pids, memory and cpuacct cgroup directories (v1) or the unified one (v2) of ``pid``."""
    lines = parse_cgroup(Path(f"/proc/{pid}/cgroup").read_text())
    dirs: list[Path] = []
    for controller in ("pids", "memory", "cpuacct"):
        found = controller_path(lines, controller)
        if found is not None:
            dirs.append(CGROUP_ROOT / ",".join(found[0].controllers) / found[1].lstrip("/"))
    unified = unified_path(lines)
    if not dirs and unified is not None:
        base = CGROUP_ROOT if (CGROUP_ROOT / "cgroup.controllers").exists() else CGROUP_ROOT / "unified"
        dirs.append(base / unified.lstrip("/"))
    return dirs


def test_a_main_process_in_a_child_cgroup_does_not_hide_the_containers_use(
    make_container: ContainerFactory, docker_client: Any, tmp_path: Path
) -> None:
    """docker:dind moves its processes to <container cgroup>/init, systemd in a container runs in
    init.scope: the main process's own cgroup is a child that counts only itself. Planned while it
    ran two tasks, the container starts 36 more in its own cgroup (37 with its shell), and then its
    main process moves to a child (done here from the host, as the entrypoint would). Read in the
    child, the use was two tasks, and a pids limit of 40 was set under 37 live tasks."""
    c, update = forker_and_its_update(make_container, tmp_path)
    pid = docker_client.api.inspect_container(c.id)["State"]["Pid"]
    parents = main_process_cgroups(pid)
    children = [d / "init" for d in parents]
    try:
        for child in children:
            child.mkdir()
            (child / "cgroup.procs").write_text(str(pid))
        assert_skipped_for_room(docker_client, tmp_path, c, update)
        # The observer reads the container's own cgroup too: the planner sees the 37 tasks.
        (seen,) = [o for o in observe(tmp_path).containers if o.id == c.id]
        assert seen.signals is not None and seen.signals.pids_current is not None
        assert seen.signals.pids_current >= 37, seen.signals
    finally:
        for parent, child in zip(parents, children, strict=True):
            if child.exists():
                for task in (child / "cgroup.procs").read_text().split():
                    (parent / "cgroup.procs").write_text(task)
                child.rmdir()


def test_a_container_with_a_cpu_period_is_limited_by_a_quota(
    make_container: ContainerFactory, docker_client: Any, tmp_path: Path
) -> None:
    # "--cpu-period" alone: the engine refuses NanoCpus on it, so the limit must be a quota.
    c = make_container(network_mode="none", cpu_period=50_000)
    started = host_config(docker_client, c.id)["State"]["StartedAt"]
    desired = PolicySetDesired(load_spec_text(SPEC))
    p = ours(plan(observe(tmp_path), desired, ControllerMemory(), datetime_now()), {c.id})
    (update,) = [a for a in p.actions if a.kind == ActionKind.UPDATE_RESOURCES]
    executor = RealExecutor(
        docker_client, EventLog(tmp_path / "e.jsonl"), RecordingNotifier(), tmp_path / "l.json"
    )
    (outcome,) = executor.execute(make_plan(update), ControllerMemory(), datetime_now()).outcomes
    assert outcome.outcome is Outcome.DONE, outcome.detail
    state = host_config(docker_client, c.id)
    hc = state["HostConfig"]
    assert (hc["NanoCpus"], hc["CpuQuota"], hc["CpuPeriod"]) == (0, 50_000, 50_000)
    assert cpu_limit(int(state["State"]["Pid"])) == pytest.approx(1.0)
    assert state["State"]["StartedAt"] == started


SWAP_SPEC = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata: {name: site}
spec:
  resources: {maxCpus: 1, memory: 256m, memorySwap: %s, pidsLimit: 100}
  resourceEnforcement: {updateLimits: true}
  safety: {maxDestructiveActionsPerPass: 100000}
"""
FILL = "dd if=/dev/zero of=/dev/shm/fill bs=1M count=240 2>/dev/null"


def test_a_swap_limit_comes_down_on_a_container_using_most_of_its_unchanged_memory(
    make_container: ContainerFactory, docker_client: Any, tmp_path: Path
) -> None:
    # 240 MiB of its 256 MiB in use: the memory limit stays, only memory-plus-swap comes down.
    c = make_container(
        f"sh -c '{FILL}; sleep 300'",
        network_mode="none",
        shm_size="512m",
        mem_limit="256m",
        memswap_limit="1g",
        nano_cpus=10**9,
        pids_limit=100,
    )
    time.sleep(1.5)
    desired = PolicySetDesired(load_spec_text(SWAP_SPEC % "384m"))
    p = ours(plan(observe(tmp_path), desired, ControllerMemory(), datetime_now()), {c.id})
    (update,) = [a for a in p.actions if a.kind == ActionKind.UPDATE_RESOURCES]
    executor = RealExecutor(
        docker_client, EventLog(tmp_path / "e.jsonl"), RecordingNotifier(), tmp_path / "l.json"
    )
    (outcome,) = executor.execute(make_plan(update), ControllerMemory(), datetime_now()).outcomes
    assert outcome.outcome is Outcome.DONE, outcome.detail
    state = host_config(docker_client, c.id)
    assert (state["HostConfig"]["Memory"], state["HostConfig"]["MemorySwap"]) == (256 * MiB, 384 * MiB)
    assert state["State"]["Running"] is True


def test_the_executor_rechecks_memory_plus_swap_use_right_before_lowering_it(
    make_container: ContainerFactory, docker_client: Any, tmp_path: Path
) -> None:
    # Planned while it used little; it fills 240 MiB before the action runs: memory plus swap of
    # 256 MiB would leave it no room (the memory limit itself does not change).
    c = make_container(
        f"sh -c 'while [ ! -e /tmp/go ]; do sleep 0.1; done; {FILL}; sleep 300'",
        network_mode="none",
        shm_size="512m",
        mem_limit="256m",
        memswap_limit="1g",
    )
    time.sleep(0.5)
    desired = PolicySetDesired(load_spec_text(SWAP_SPEC % "256m"))
    p = ours(plan(observe(tmp_path), desired, ControllerMemory(), datetime_now()), {c.id})
    (update,) = [a for a in p.actions if a.kind == ActionKind.UPDATE_RESOURCES]
    assert update.params_as(ResourceUpdate).memory_swap_bytes == 256 * MiB
    c.exec_run("touch /tmp/go")
    time.sleep(1.5)
    executor = RealExecutor(
        docker_client, EventLog(tmp_path / "e.jsonl"), RecordingNotifier(), tmp_path / "l.json"
    )
    (outcome,) = executor.execute(make_plan(update), ControllerMemory(), datetime_now()).outcomes
    assert outcome.outcome is Outcome.SKIPPED and "memory plus swap" in outcome.detail, outcome.detail
    state = host_config(docker_client, c.id)
    assert (state["HostConfig"]["Memory"], state["HostConfig"]["MemorySwap"]) == (256 * MiB, 1 << 30)
    assert state["State"]["Running"] is True


def test_memory_plus_swap_is_never_lowered_below_its_peak_since_the_container_started(
    make_container: ContainerFactory, docker_client: Any, tmp_path: Path
) -> None:
    # Planned while it used little; it fills 240 MiB and frees it again before the action runs: its
    # memory plus swap is back to little, but it needs 240 MiB again at its next phase, and a total
    # of 256 MiB leaves it no room (on a host with swap, the pages it swapped have nowhere to go).
    c = make_container(
        f"sh -c 'while [ ! -e /tmp/go ]; do sleep 0.1; done; {FILL}; rm /dev/shm/fill; touch /tmp/done; "
        "sleep 300'",
        network_mode="none",
        shm_size="512m",
        mem_limit="256m",
        memswap_limit="1g",
    )
    time.sleep(0.5)
    desired = PolicySetDesired(load_spec_text(SWAP_SPEC % "256m"))
    p = ours(plan(observe(tmp_path), desired, ControllerMemory(), datetime_now()), {c.id})
    (update,) = [a for a in p.actions if a.kind == ActionKind.UPDATE_RESOURCES]
    assert update.params_as(ResourceUpdate).memory_swap_bytes == 256 * MiB
    c.exec_run("touch /tmp/go")
    deadline = time.monotonic() + 30
    while c.exec_run("ls /tmp/done").exit_code != 0:
        assert time.monotonic() < deadline, "the container never filled and freed its tmpfs"
        time.sleep(0.1)
    executor = RealExecutor(
        docker_client, EventLog(tmp_path / "e.jsonl"), RecordingNotifier(), tmp_path / "l.json"
    )
    (outcome,) = executor.execute(make_plan(update), ControllerMemory(), datetime_now()).outcomes
    assert outcome.outcome is Outcome.SKIPPED and "memory plus swap" in outcome.detail, outcome.detail
    state = host_config(docker_client, c.id)
    assert (state["HostConfig"]["Memory"], state["HostConfig"]["MemorySwap"]) == (256 * MiB, 1 << 30)
    # A fresh plan sees the same: the use is low, the peak is not; the total waits.
    snap = observe(tmp_path)
    (seen,) = [x for x in snap.containers if x.id == c.id]
    assert seen.signals is not None and seen.signals.memory_swap_bytes is not None
    assert (
        seen.signals.memory_swap_bytes < 200 * MiB <= 240 * MiB <= (seen.signals.memory_swap_peak_bytes or 0)
    )
    p = ours(plan(snap, desired, ControllerMemory(), datetime_now()), {c.id})
    (again,) = [a for a in p.actions if a.kind == ActionKind.UPDATE_RESOURCES]  # its CPU and pids limits
    assert again.params_as(ResourceUpdate).memory_swap_bytes is None
    (wait,) = [d for d in p.deferred if d.why is DeferReason.BELOW_USAGE and d.target.container_id == c.id]
    assert wait.evidence["memory_swap_peak_bytes"] >= 240 * MiB


def post_update(client: Any, cid: str, body: dict[str, int]) -> None:
    """``docker update`` with the engine's own field names (as the executor posts it)."""
    api = client.api
    api._result(api._post_json(api._url("/containers/{0}/update", cid), data=body), True)


def test_the_least_cpu_limit_validation_allows_is_one_the_engine_takes(
    make_container: ContainerFactory, docker_client: Any, tmp_path: Path
) -> None:
    """maxCpus below 0.01 is a validation error: the engine passes ``--cpus 0.001`` on and the
    kernel refuses its 100 us CFS quota. 0.01 (a 1 ms quota) is planned and done."""
    c = make_container(network_mode="none")
    with pytest.raises(docker.errors.APIError, match="cfs_quota_us"):
        post_update(docker_client, c.id, {"NanoCpus": 1_000_000})
    spec = SPEC.replace("maxCpus: 1,", "maxCpus: 0.01,")
    p = ours(
        plan(observe(tmp_path), PolicySetDesired(load_spec_text(spec)), ControllerMemory(), datetime_now()),
        {c.id},
    )
    (update,) = [a for a in p.actions if a.kind == ActionKind.UPDATE_RESOURCES]
    assert update.params_as(ResourceUpdate).nano_cpus == 10_000_000
    executor = RealExecutor(
        docker_client, EventLog(tmp_path / "e.jsonl"), RecordingNotifier(), tmp_path / "l.json"
    )
    (outcome,) = executor.execute(make_plan(update), ControllerMemory(), datetime_now()).outcomes
    assert outcome.outcome is Outcome.DONE, outcome.detail
    state = host_config(docker_client, c.id)
    assert state["HostConfig"]["NanoCpus"] == 10_000_000
    assert cpu_limit(int(state["State"]["Pid"])) == pytest.approx(0.01)


RESERVATION_SPEC = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata: {name: site}
spec:
  resources: {memory: 256m, memorySwap: 256m, pidsLimit: 100}
  resourceEnforcement: {updateLimits: true}
  safety: {maxDestructiveActionsPerPass: 100000}
"""


def test_the_engine_takes_a_memory_limit_below_the_reservation_and_then_will_not_start_it(
    make_container: ContainerFactory, docker_client: Any
) -> None:
    """Why the update lowers the reservation: without it, ``docker update`` succeeds (this engine
    checks the reservation only against a memory limit sent with it) and the container is left
    in a state the engine refuses to start. Should an engine refuse the update itself, that is
    the same conflict, met earlier."""
    c = make_container(network_mode="none", mem_reservation="512m")
    try:
        docker_client.api.update_container(c.id, mem_limit=256 * MiB, memswap_limit=256 * MiB)
    except docker.errors.APIError as exc:
        assert "reservation" in str(exc), exc
        return
    assert host_config(docker_client, c.id)["HostConfig"]["MemoryReservation"] == 512 * MiB
    c.stop(timeout=1)
    with pytest.raises(docker.errors.APIError, match="memory reservation"):
        c.start()


def test_a_reservation_above_the_new_memory_limit_comes_down_in_the_same_update(
    make_container: ContainerFactory, docker_client: Any, tmp_path: Path
) -> None:
    """Run and created with ``--memory-reservation 512m``, limited to 256m by the spec: one update
    each, done without a failing engine call; both start afterwards (the created one for the first
    time, the running one after a stop); a second pass plans nothing."""
    running = make_container(network_mode="none", mem_reservation="512m")
    created = make_container(network_mode="none", mem_reservation="512m", start=False)
    ids = {running.id, created.id}
    desired = PolicySetDesired(load_spec_text(RESERVATION_SPEC))
    p = ours(plan(observe(tmp_path), desired, ControllerMemory(), datetime_now()), ids)
    updates = {a.target.container_id: a for a in p.actions if a.kind == ActionKind.UPDATE_RESOURCES}
    assert set(updates) == ids
    for update in updates.values():
        assert update.params_as(ResourceUpdate) == ResourceUpdate(
            memory_bytes=256 * MiB,
            memory_swap_bytes=256 * MiB,
            memory_reservation_bytes=256 * MiB,
            pids_limit=100,
        )
    log = tmp_path / "events.jsonl"
    executor = RealExecutor(docker_client, EventLog(log), RecordingNotifier(), tmp_path / "l.json")
    report = executor.execute(make_plan(*updates.values()), ControllerMemory(), datetime_now())
    assert {o.target.container_id: (o.outcome, o.detail) for o in report.outcomes} == {
        cid: (
            Outcome.DONE,
            "limits set in place: Memory=268435456, MemoryReservation=268435456, MemorySwap=268435456, "
            "PidsLimit=100",
        )
        for cid in ids
    }
    for c in (running, created):
        hc = host_config(docker_client, c.id)["HostConfig"]
        assert (hc["Memory"], hc["MemorySwap"], hc["MemoryReservation"]) == (256 * MiB,) * 3, c.name
    sets = [e["details"]["set"] for e in read_events(log) if e["event_type"] == "container.update"]
    body = {"Memory": 256 * MiB, "MemorySwap": 256 * MiB, "MemoryReservation": 256 * MiB, "PidsLimit": 100}
    assert sets == [body, body]

    created.start()
    running.stop(timeout=1)
    running.start()
    for c in (running, created):
        assert host_config(docker_client, c.id)["State"]["Running"] is True, c.name

    second = ours(plan(observe(tmp_path), desired, report.memory, datetime_now()), ids)
    assert [a for a in second.actions if a.kind == ActionKind.UPDATE_RESOURCES] == []


def datetime_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


QUOTA_SPEC = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata: {name: site}
spec:
  resources: {maxContainersPerUser: 2, maxGpuEquivalents: 0.5, maxGpuSlotsPerContainer: 1}
  resourceEnforcement: {updateLimits: false}
"""


def test_quotas_of_several_users_with_mig_slices_of_different_sizes(
    make_container: ContainerFactory, tmp_path: Path, fake_nvml: Any
) -> None:
    from controller.observe.nvml import NvmlObserver
    from tests.fixtures.nvml import FakeNvml

    assert isinstance(fake_nvml, FakeNvml)
    fake_nvml.set_gpus(1)
    three = fake_nvml.add_mig(0, profile="3g.40gb")  # 3/7 of a GPU
    one = fake_nvml.add_mig(0, profile="1g.10gb")  # 1/7
    fake_nvml.write()

    # Owners unique to this test: the engine is shared with other tests.
    alice, bob = f"alice{make_container.test_id[-8:]}", f"bob{make_container.test_id[-8:]}"

    def user(name: str, **labels: str) -> dict[str, str]:
        return {"ds01.user": name, **labels}

    # alice: 3 containers (quota 2), and 3/7 + 1/7 = 4/7 GPU-equivalents (quota 0.5)
    a1 = make_container(network_mode="none", labels=user(alice, **{"ds01.gpu.uuid": three.uuid}))
    time.sleep(1.1)
    a2 = make_container(network_mode="none", labels=user(alice, **{"ds01.gpu.uuid": one.uuid}))
    time.sleep(1.1)
    a3 = make_container(network_mode="none", labels=user(alice))
    # bob: one container on the 3g slice only: 3/7 is within 0.5
    b1 = make_container(network_mode="none", labels=user(bob, **{"ds01.gpu.uuid": three.uuid}))
    ids = {c.id for c in (a1, a2, a3, b1)}

    config = ObserveConfig(ledger_path=tmp_path / "ledger.json")
    with HostObserver(config, nvml=NvmlObserver(timeout_s=10)) as observer:
        snap = observer.observe()
    p = plan(snap, PolicySetDesired(load_spec_text(QUOTA_SPEC)), ControllerMemory(), datetime_now())
    alerts = {
        (a.reason, a.target.user): a
        for a in p.actions
        if a.kind == ActionKind.ALERT_ADMIN and a.target.user in (alice, bob)
    }
    assert set(alerts) == {(Reason.CONTAINER_QUOTA_EXCEEDED, alice), (Reason.GPU_QUOTA_EXCEEDED, alice)}
    assert alerts[(Reason.CONTAINER_QUOTA_EXCEEDED, alice)].evidence["beyond"] == [a3.name]
    gpu = alerts[(Reason.GPU_QUOTA_EXCEEDED, alice)].evidence
    assert gpu["gpu_equivalents"] == round(3 / 7, 6) + round(1 / 7, 6)
    assert gpu["beyond"] == [a2.name]
    warned = {a.target.container_id for a in p.actions if a.kind == ActionKind.WARN_OWNER}
    assert warned & ids == {a3.id, a2.id}
    assert not [a for a in p.actions if a.kind == ActionKind.STOP_CONTAINER and a.target.container_id in ids]
