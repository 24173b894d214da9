"""Wrong kills: no process but the planned one ever receives a signal (real processes, real cgroups).

Every process here is a shell that writes a marker file when it receives SIGTERM (``trap``) and
exits; so "never signalled" is checked twice: the process is still alive in ``/proc`` and its marker
does not exist. Each case has a control that *is* killed in the same pass, which proves the plan,
the executor and the markers work (a test where nothing is ever killed could not fail).

- **PID reuse, start time**: a KillProcess whose recorded start time no longer matches the pid.
- **PID reuse, for real**: the planned process exits and a new one is placed at the same pid
  (``/proc/sys/kernel/ns_last_pid``); the newcomer is not signalled.
- **Moved cgroup**: an orphan (in the cgroup of a container that does not exist) planned for a
  kill by the real planner after two sightings, then moved back to the root cgroup before the
  executor runs: not signalled.
- **Another user's process in a live container** and **a bare-metal host process of another
  user**, both listed by the stand-in NVML as GPU processes: the planner never plans a kill, and
  executing the whole plan leaves them alone.
- **A second rootful engine's live container**: a second ``dockerd`` on the host puts its
  containers in cgroups of this engine's form (``/docker/<id>``), and this engine does not list
  them. Its GPU process is reported as foreign (a live shim runs it), never planned for a kill; a
  KillProcess for it, as a planner without that check wrote one, is skipped by the executor.
- **A live container nested in a stopped one's cgroup**: ``--cgroup-parent=/docker/<id of a
  created or exited container>`` puts a running container's processes in ``/docker/<outer>/<inner>``.
  Both ids are this engine's; the running inner one is the process's container, never an orphan of
  the outer one, and a KillProcess naming the outer one is skipped by the executor.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker.types
import psutil
import pytest

from controller.act.events import EventLog
from controller.act.executor import RealExecutor
from controller.memory import ControllerMemory
from controller.observe import HostObserver, ObserveConfig
from controller.observe.cgroups import attribute
from controller.observe.nvml import NvmlObserver
from controller.plan.desired import PolicySetDesired
from controller.plan.planner import plan as make_plan
from controller.plan.types import Action, ActionKind, Plan, Reason, Target
from controller.snapshot import CgroupScope, Snapshot
from desired_state.load import load_spec_text
from tests.fixtures.act import RecordingNotifier
from tests.fixtures.docker_host import ContainerFactory
from tests.fixtures.dockerd import TEST_IMAGE, PrivateEngine, discard_private_engine, start_private_engine
from tests.fixtures.nvml import FakeNvml, gpu_uuid

pytestmark = pytest.mark.docker

PIDS_ROOT = Path("/sys/fs/cgroup/pids")
TEST_USER = "ds01-test-user"

POLICY = """\
apiVersion: ds01.io/v1alpha1
kind: LifecyclePolicy
metadata:
  name: security-kill
spec:
  orphanSightingsRequired: 2
  killGrace: 1s
  safety:
    maxDestructiveActionsPerPass: 1000
"""


@dataclass
class Trapped:
    """A process that writes ``marker`` when it gets SIGTERM, then exits. It has no children."""

    proc: subprocess.Popen[bytes]
    marker: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def start_time(self) -> float:
        return psutil.Process(self.pid).create_time()

    def alive(self) -> bool:
        self.proc.poll()
        try:
            return psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def signalled(self) -> bool:
        return self.marker.exists()


# A Python process rather than a shell with a trap: a shell would need a child to wait on, and a
# child outliving its parent can pin the pid (as a process group id) on a host whose pid 1 does
# not reap orphans.
TRAP_PROGRAM = """\
import signal, sys, time
marker = sys.argv[1]
def term(*_):
    open(marker, "w").write("TERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
open(marker + ".ready", "w").close()
while True:
    time.sleep(60)
"""


def python_for(user: str | None) -> str:
    """An interpreter ``user`` can run (the test's own one may live in a directory private to root)."""
    candidates = [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]
    if user is None:
        return sys.executable
    for candidate in candidates:
        check = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", candidate, "-c", "pass"]
        if Path(candidate).exists() and subprocess.run(check, capture_output=True).returncode == 0:
            return candidate
    pytest.fail(f"no Python interpreter that {user} may run among {candidates}")


@pytest.fixture
def trapped() -> Iterator[Callable[..., Trapped]]:
    # A directory any user can write a marker into (pytest's tmp_path is private to root).
    shared = Path(tempfile.mkdtemp(prefix="ds01-security-kill-"))
    shared.chmod(0o777)
    started: list[Trapped] = []

    def start(name: str, *, user: str | None = None) -> Trapped:
        marker = shared / f"{name}-{len(started)}.term"
        prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
        argv = [*prefix, python_for(user), "-c", TRAP_PROGRAM, str(marker)]
        t = Trapped(subprocess.Popen(argv), marker)
        started.append(t)
        deadline = time.monotonic() + 20
        while not Path(f"{marker}.ready").exists():  # the handler is installed
            assert t.proc.poll() is None and time.monotonic() < deadline, f"{name} did not start"
            time.sleep(0.02)
        return t

    yield start
    for t in started:
        with contextlib.suppress(ProcessLookupError):
            t.proc.kill()
        t.proc.wait(timeout=10)
    for f in shared.iterdir():
        f.unlink()
    shared.rmdir()


@pytest.fixture
def fake_docker_cgroup() -> Iterator[tuple[str, Path]]:
    """A pids cgroup named like a container that does not exist: the shape of an orphan's cgroup."""
    if not (PIDS_ROOT / "cgroup.procs").exists():
        pytest.fail(f"{PIDS_ROOT} is not a cgroup v1 hierarchy; this test needs the v1 pids controller")
    cid = secrets.token_hex(32)
    path = PIDS_ROOT / "docker" / cid
    path.mkdir(parents=True)
    yield cid, path
    for pid in (path / "cgroup.procs").read_text().split():
        with contextlib.suppress(OSError):
            (PIDS_ROOT / "cgroup.procs").write_text(pid)
    for _ in range(50):
        try:
            path.rmdir()
            break
        except OSError:
            time.sleep(0.05)


def executor(docker_client: Any, tmp_path: Path) -> RealExecutor:
    return RealExecutor(
        docker_client,
        EventLog(tmp_path / "events.jsonl"),
        RecordingNotifier(),
        tmp_path / "ledger.json",
        reset_command=["false", "{uuid}"],
        kill_grace_s=1.0,
        kill_wait_s=3.0,
    )


def kill_action(pid: int, start_time: float, container_id: str | None = None) -> Action:
    """A KillProcess exactly as the planner writes one (target pid + start time, evidence cgroup)."""
    now = datetime.now(UTC)
    return Action(
        kind=ActionKind.KILL_PROCESS,
        target=Target(pid=pid, pid_start_time=start_time, gpu=gpu_uuid(0), user="alice"),
        reason=Reason.ORPHANED_PROCESS,
        message=f"pid {pid} is an orphan",
        evidence={"container_id": container_id},
        due_at=now - timedelta(seconds=1),
        key=f"KillProcess:{pid}:{start_time}",
        params={"grace_s": 1.0},
    )


def run(ex: RealExecutor, *actions: Action) -> dict[int, str]:
    now = datetime.now(UTC)
    p = Plan(observed_at=now, evaluated_at=now, actions=actions, memory=ControllerMemory())
    report = ex.execute(p, ControllerMemory(), now)
    return {o.target.pid or 0: o.outcome.value for o in report.outcomes}


def wait_gone(t: Trapped) -> None:
    deadline = time.monotonic() + 5
    while t.alive() and time.monotonic() < deadline:
        time.sleep(0.05)


# --- PID reuse --------------------------------------------------------------------------------------


def test_a_pid_whose_start_time_changed_is_not_signalled(
    trapped: Callable[..., Trapped], docker_client: Any, tmp_path: Path
) -> None:
    victim, control = trapped("victim"), trapped("control")
    outcomes = run(
        executor(docker_client, tmp_path),
        # The plan saw a process at this pid that started five seconds earlier: not this one.
        kill_action(victim.pid, victim.start_time - 5.0),
        kill_action(control.pid, control.start_time),
    )
    assert outcomes == {victim.pid: "skipped", control.pid: "done"}
    assert victim.alive() and not victim.signalled()
    wait_gone(control)
    assert control.signalled() and not control.alive()


def test_a_new_process_at_a_reused_pid_is_not_signalled(
    trapped: Callable[..., Trapped], docker_client: Any, tmp_path: Path
) -> None:
    # Place a new process at the planned pid: set the kernel's last-allocated pid just below it.
    for _attempt in range(20):
        planned = trapped("planned")
        pid, start_time = planned.pid, planned.start_time
        planned.proc.kill()  # the planned process exits (and is reaped) before the executor runs
        planned.proc.wait(timeout=10)
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        newcomer = trapped("newcomer")
        if newcomer.pid == pid:
            break
        newcomer.proc.kill()  # another process took the pid first: try again
        newcomer.proc.wait(timeout=10)
    else:
        pytest.fail("could not place a process at a reused pid in 20 attempts (a very busy host?)")
    control = trapped("control")
    outcomes = run(
        executor(docker_client, tmp_path),
        kill_action(pid, start_time),
        kill_action(control.pid, control.start_time),
    )
    assert outcomes == {pid: "skipped", control.pid: "done"}
    assert newcomer.alive() and not newcomer.signalled()
    wait_gone(control)
    assert control.signalled()


# --- moved between plan and act ---------------------------------------------------------------------


def observe(tmp_path: Path) -> Snapshot:
    config = ObserveConfig(ledger_path=tmp_path / "ledger.json")
    with HostObserver(config, nvml=NvmlObserver(timeout_s=10)) as observer:
        return observer.observe()


def two_pass_plan(tmp_path: Path) -> Plan:
    """Two observations and plans, as the daemon makes them: orphans need two sightings."""
    desired = PolicySetDesired(load_spec_text(POLICY))
    memory = ControllerMemory()
    for _ in range(2):
        snap = observe(tmp_path)
        p = make_plan(snap, desired, memory, snap.observed_at)
        memory = p.memory
    return p


def for_pids(p: Plan, pids: set[int]) -> Plan:
    """Only the actions about our processes: the engine and host are shared with other tests."""
    return p.model_copy(update={"actions": tuple(a for a in p.actions if a.target.pid in pids)})


def test_an_orphan_moved_out_of_the_dead_containers_cgroup_before_the_kill_is_not_signalled(
    trapped: Callable[..., Trapped],
    fake_docker_cgroup: tuple[str, Path],
    fake_nvml: FakeNvml,
    docker_client: Any,
    tmp_path: Path,
) -> None:
    cid, cgroup = fake_docker_cgroup
    moved, control = trapped("moved"), trapped("control")
    for t in (moved, control):
        (cgroup / "cgroup.procs").write_text(str(t.pid))
    fake_nvml.set_gpus(1)
    fake_nvml.add_process(gpu_uuid(0), moved.pid)
    fake_nvml.add_process(gpu_uuid(0), control.pid)
    fake_nvml.write()

    p = for_pids(two_pass_plan(tmp_path), {moved.pid, control.pid})
    kills = {a.target.pid: a for a in p.actions if a.kind == ActionKind.KILL_PROCESS}
    assert set(kills) == {moved.pid, control.pid}, p.actions
    assert kills[moved.pid].evidence.get("container_id") == cid

    (PIDS_ROOT / "cgroup.procs").write_text(str(moved.pid))  # it left the orphaned cgroup
    report = executor(docker_client, tmp_path).execute(p, p.memory, datetime.now(UTC))
    outcomes = {o.target.pid: (o.outcome.value, o.detail) for o in report.outcomes}
    assert outcomes[moved.pid][0] == "skipped" and "cgroup" in outcomes[moved.pid][1]
    assert outcomes[control.pid][0] == "done"
    assert moved.alive() and not moved.signalled()
    wait_gone(control)
    assert control.signalled()


# --- never planned ----------------------------------------------------------------------------------


def test_processes_in_live_containers_and_on_the_host_are_never_planned_or_signalled(
    trapped: Callable[..., Trapped],
    make_container: ContainerFactory,
    fake_docker_cgroup: tuple[str, Path],
    fake_nvml: FakeNvml,
    docker_client: Any,
    tmp_path: Path,
) -> None:
    if subprocess.run(["id", "-u", TEST_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-M", TEST_USER], check=True, capture_output=True)
    # Another user's job in a live container that holds GPU 0; listed on GPU 0 and on GPU 1.
    box = make_container(
        ["sh", "-c", 'trap "echo TERM > /scratch/term; exit 0" TERM; sleep 300 & wait'],
        user="4321",
        tmpfs={"/scratch": "mode=1777"},
        network_mode="none",
        device_requests=[
            docker.types.DeviceRequest(driver="nvidia", device_ids=[gpu_uuid(0)], capabilities=[["gpu"]])
        ],
    )
    box.reload()
    in_container = int(box.attrs["State"]["Pid"])
    # A bare-metal GPU job of a user with host access, run as that user.
    bare = trapped("bare-metal", user=TEST_USER)
    # The control: an orphan, which the same plan does kill.
    _, cgroup = fake_docker_cgroup
    control = trapped("control")
    (cgroup / "cgroup.procs").write_text(str(control.pid))

    fake_nvml.set_gpus(2)
    for pid in (in_container, bare.pid, control.pid):
        fake_nvml.add_process(gpu_uuid(0), pid)
    fake_nvml.add_process(gpu_uuid(1), in_container)
    fake_nvml.write()

    ours = {in_container, bare.pid, control.pid}
    p = for_pids(two_pass_plan(tmp_path), ours)
    killed = {a.target.pid for a in p.actions if a.kind == ActionKind.KILL_PROCESS}
    assert killed == {control.pid}, p.actions
    # Reported instead: the host process as HostGpuProcess, the foreign one as an admin alert.
    # Where the tests themselves run inside a sandbox's cgroup (e.g. /process_api/<32 hex>), the
    # "bare-metal" process is in it too, and is reported as that foreign workload instead.
    reported = {(d.target.pid, d.rule.value) for d in p.deferred}
    sandboxed = attribute(Path("/proc/self/cgroup").read_text()).scope is CgroupScope.FOREIGN
    assert (bare.pid, "ForeignGpuWorkload" if sandboxed else "HostGpuProcess") in reported, p.deferred

    executor(docker_client, tmp_path).execute(p, p.memory, datetime.now(UTC))
    wait_gone(control)
    assert control.signalled()
    assert bare.alive() and not bare.signalled()
    assert psutil.Process(in_container).status() != psutil.STATUS_ZOMBIE
    box.reload()
    assert box.attrs["State"]["Running"] is True
    assert box.exec_run(["sh", "-c", "test ! -e /scratch/term"]).exit_code == 0


# --- another engine's live container ------------------------------------------------------------


@pytest.fixture
def second_engine() -> Iterator[PrivateEngine]:
    engine = start_private_engine()
    try:
        yield engine
    finally:
        discard_private_engine(engine)


def test_a_second_engines_live_container_is_never_planned_or_signalled(
    second_engine: PrivateEngine,
    trapped: Callable[..., Trapped],
    fake_docker_cgroup: tuple[str, Path],
    fake_nvml: FakeNvml,
    docker_client: Any,
    tmp_path: Path,
) -> None:
    other: Any = second_engine.client()
    box = other.containers.run(
        TEST_IMAGE,
        ["sh", "-c", 'trap "echo TERM > /scratch/term; exit 0" TERM; sleep 300 & wait'],
        labels={"ds01.test": "second-engine"},
        tmpfs={"/scratch": "mode=1777"},
        network_mode="none",
        detach=True,
    )
    box.reload()
    in_other = int(box.attrs["State"]["Pid"])
    in_other_start = psutil.Process(in_other).create_time()
    # This engine's cgroup form, an id this engine does not list: the cgroup alone says orphan.
    scope = attribute(Path(f"/proc/{in_other}/cgroup").read_text())
    assert (scope.container_id, scope.scope) == (box.id, CgroupScope.ENGINE)
    # The control: a genuine orphan of this engine, killed by the same plan.
    _, cgroup = fake_docker_cgroup
    control = trapped("control")
    (cgroup / "cgroup.procs").write_text(str(control.pid))
    fake_nvml.set_gpus(1)
    fake_nvml.add_process(gpu_uuid(0), in_other)
    fake_nvml.add_process(gpu_uuid(0), control.pid)
    fake_nvml.write()

    p = for_pids(two_pass_plan(tmp_path), {in_other, control.pid})
    assert {a.target.pid for a in p.actions if a.kind == ActionKind.KILL_PROCESS} == {control.pid}
    (reported,) = [d for d in p.deferred if d.target.pid == in_other]
    assert (reported.rule.value, reported.why.value) == ("ForeignGpuWorkload", "Protected")
    assert "containerd-shim" in reported.evidence["live_shim"] and box.id in reported.evidence["live_shim"]

    # A kill planned without that check (by an older planner, or from the cgroup alone).
    stale = kill_action(in_other, in_other_start, box.id).model_copy(
        update={"evidence": {"container_id": box.id, "cgroup": scope.cgroup}}
    )
    report = executor(docker_client, tmp_path).execute(
        p.model_copy(update={"actions": (*p.actions, stale)}), p.memory, datetime.now(UTC)
    )
    outcomes = {o.target.pid: (o.outcome.value, o.detail) for o in report.outcomes}
    assert outcomes[in_other][0] == "skipped" and "live containerd shim" in outcomes[in_other][1], outcomes
    wait_gone(control)
    assert control.signalled()
    box.reload()
    assert box.attrs["State"]["Running"] is True
    assert box.exec_run(["sh", "-c", "test ! -e /scratch/term"]).exit_code == 0


# --- a live container nested in a stopped one's cgroup ----------------------------------------------


def test_a_live_container_nested_in_a_stopped_containers_cgroup_is_never_planned_or_signalled(
    make_container: ContainerFactory,
    trapped: Callable[..., Trapped],
    fake_docker_cgroup: tuple[str, Path],
    fake_nvml: FakeNvml,
    docker_client: Any,
    tmp_path: Path,
) -> None:
    if docker_client.info().get("CgroupDriver") != "cgroupfs":
        pytest.fail("this test needs the cgroupfs driver (a cgroup parent given as a path)")
    outer = make_container(start=False)  # created, never started: listed, not live
    inner = make_container(
        ["sh", "-c", 'trap "echo TERM > /scratch/term; exit 0" TERM; sleep 300 & wait'],
        cgroup_parent=f"/docker/{outer.id}",
        tmpfs={"/scratch": "mode=1777"},
        network_mode="none",
    )
    in_inner = int(inner.attrs["State"]["Pid"])
    in_inner_start = psutil.Process(in_inner).create_time()
    scope = attribute(Path(f"/proc/{in_inner}/cgroup").read_text())
    assert scope.candidates == (outer.id, inner.id), scope
    # The control: a genuine orphan of this engine, killed by the same plan.
    _, cgroup = fake_docker_cgroup
    control = trapped("control")
    (cgroup / "cgroup.procs").write_text(str(control.pid))
    fake_nvml.set_gpus(1)
    fake_nvml.add_process(gpu_uuid(0), in_inner)
    fake_nvml.add_process(gpu_uuid(0), control.pid)
    fake_nvml.write()

    p = for_pids(two_pass_plan(tmp_path), {in_inner, control.pid})
    assert {a.target.pid for a in p.actions if a.kind == ActionKind.KILL_PROCESS} == {control.pid}, p.actions

    # A kill naming the outer container, as a planner that took the outermost id wrote one.
    stale = kill_action(in_inner, in_inner_start, outer.id).model_copy(
        update={"evidence": {"container_id": outer.id, "cgroup": scope.cgroup}}
    )
    report = executor(docker_client, tmp_path).execute(
        p.model_copy(update={"actions": (*p.actions, stale)}), p.memory, datetime.now(UTC)
    )
    outcomes = {o.target.pid: (o.outcome.value, o.detail) for o in report.outcomes}
    assert outcomes[in_inner][0] == "skipped" and inner.id[:12] in outcomes[in_inner][1], outcomes
    wait_gone(control)
    assert control.signalled()
    inner.reload()
    assert inner.attrs["State"]["Running"] is True
    assert inner.exec_run(["sh", "-c", "test ! -e /scratch/term"]).exit_code == 0


def test_a_process_placed_at_the_pid_between_the_check_and_the_signal_is_not_signalled(
    trapped: Callable[..., Trapped], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planned process passes its identity check, then exits, and the kernel gives its pid to
    a newcomer before the SIGTERM goes out: a signal sent by pid (``kill(2)``) reached the
    newcomer. Sent through the pidfd opened before the check, it reaches nobody."""
    import controller.act.process_ops as ops

    planned = trapped("planned")
    pid, start_time = planned.pid, planned.start_time
    placed: list[Trapped] = []
    real_check = ops.check_identity

    def check_then_replace(*args: Any, **kwargs: Any) -> ops.IdentityCheck:
        check = real_check(*args, **kwargs)
        if not placed and check.identity is ops.Identity.SAME:
            placed.append(newcomer_at(pid, planned, trapped))
        return check

    monkeypatch.setattr(ops, "check_identity", check_then_replace)
    result = ops.kill_ladder(pid, start_time, None, grace_s=1.0, kill_wait_s=1.0)
    (newcomer,) = placed
    assert newcomer.pid == pid
    assert result.outcome is ops.Identity.GONE and result.signals_sent == (), result
    assert newcomer.alive() and not newcomer.signalled()
    assert not planned.signalled()  # it was killed by the test (SIGKILL), never by the ladder


def newcomer_at(pid: int, planned: Trapped, trapped: Callable[..., Trapped]) -> Trapped:
    """Ends ``planned`` (reaped) and starts a process at its pid (``ns_last_pid``, retried)."""
    planned.proc.kill()
    planned.proc.wait(timeout=10)
    for _attempt in range(50):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        newcomer = trapped("newcomer")
        if newcomer.pid == pid:
            return newcomer
        newcomer.proc.kill()  # another process took the pid first: try again
        newcomer.proc.wait(timeout=10)
    pytest.fail("could not place a process at a reused pid in 50 attempts (a very busy host?)")
