"""Rule 6: orphaned, foreign, host and system GPU processes; dirty GPUs, resets and alerts."""

from __future__ import annotations

from collections.abc import Sequence

from controller.memory import ControllerMemory, GpuMarkCause
from controller.plan.planner import plan
from controller.plan.types import KillParams, Plan, ResetParams
from controller.snapshot import ContainerObs, ContainerState, Domain, GpuObs, GpuProcessObs, ProcessState
from desired_state.effective import GlobalPolicy, GpuResetPolicy
from tests.fixtures import builders as b

GONE = "d" * 64  # the id of a container that no longer exists


def busy(name: str, *gpus: str, state: ContainerState = ContainerState.RUNNING) -> ContainerObs:
    sig = b.signals(b.T0, gpu_pct=dict.fromkeys(gpus, 99.0))
    return b.container(name, state=state, gpus=gpus, started_at=b.ago(minutes=5), sig=sig)


class World:
    """Processes and containers observed pass after pass (every 30 s), outcomes delivered."""

    def __init__(self, glob: GlobalPolicy | None = None) -> None:
        self.passes = b.Passes(b.desired(b.policy(), glob))
        self.tick = 0

    def run(
        self,
        processes: Sequence[GpuProcessObs],
        containers: Sequence[ContainerObs] = (),
        gpus: Sequence[GpuObs] = (b.gpu(0), b.gpu(1)),
        down: tuple[Domain, ...] = (),
    ) -> Plan:
        t = b.at(seconds=30 * self.tick)
        self.tick += 1
        snap = b.snapshot(observed_at=t, containers=containers, gpus=gpus, processes=processes, down=down)
        return self.passes.run(snap)


def proc_actions(p: Plan) -> list[tuple[str, str, str]]:
    return b.summary(p)


class TestOrphans:
    def test_orphan_of_removed_container_killed_on_second_sighting(self) -> None:
        w = World()
        orphan = b.process(777, b.GPU0, container_id=GONE, start_time=1234.5)
        p1 = w.run([orphan])
        assert p1.actions == ()
        assert ("OrphanedProcess", "NeedsSecondSighting", "pid 777") in b.deferred_summary(p1)
        assert p1.memory.processes["777:1234.5"].sightings == 1
        p2 = w.run([orphan])
        assert b.summary(p2) == [("KillProcess", "OrphanedProcess", "pid 777")]
        kill = p2.actions[0]
        assert kill.target.pid == 777
        assert kill.target.pid_start_time == 1234.5
        assert kill.target.container_id == GONE
        assert kill.params == KillParams(grace_s=10.0)
        assert kill.key == "KillProcess:777:1234.5:OrphanedProcess"
        assert kill.evidence["container_state"] == "missing"
        assert kill.evidence["sightings"] == 2

    def test_sightings_must_be_consecutive(self) -> None:
        w = World()
        orphan = b.process(777, b.GPU0, container_id=GONE)
        w.run([orphan])
        w.run([])  # not seen: the count starts again
        p = w.run([orphan])
        assert p.actions == ()
        assert p.memory.processes["777:1700000000.0"].sightings == 1

    def test_pid_reuse_is_a_new_process(self) -> None:
        w = World()
        w.run([b.process(777, b.GPU0, container_id=GONE, start_time=100.0)])
        p = w.run([b.process(777, b.GPU0, container_id=GONE, start_time=200.0)])
        assert p.actions == ()
        assert set(p.memory.processes) == {"777:200.0"}
        assert p.memory.processes["777:200.0"].sightings == 1

    def test_replanning_the_same_snapshot_does_not_count_twice(self) -> None:
        snap = b.snapshot(gpus=[b.gpu(0)], processes=[b.process(5, b.GPU0, container_id=GONE)])
        p1 = plan(snap, b.desired(), ControllerMemory(), b.T0)
        p2 = plan(snap, b.desired(), p1.memory, b.T0)
        assert p2.actions == ()
        assert p2.memory.processes == p1.memory.processes

    def test_orphan_of_exited_container(self) -> None:
        dead = b.exited("done", gpus=[b.GPU0], finished_at=b.ago(minutes=1))
        w = World()
        proc = b.process(42, b.GPU0, container_id=dead.id, container_exists=True)
        w.run([proc], [dead])
        p = w.run([proc], [dead])
        assert b.summary(p) == [("KillProcess", "OrphanedProcess", "done")]
        assert p.actions[0].target.container == "done"
        assert p.actions[0].evidence["container_state"] == "exited"

    def test_processes_of_live_containers_are_never_killed(self) -> None:
        live = [
            busy("run", b.GPU0),
            busy("paused", b.GPU0, state=ContainerState.PAUSED),
            busy("restarting", b.GPU0, state=ContainerState.RESTARTING),
        ]
        procs = [
            b.process(100 + i, b.GPU0, container_id=c.id, container_exists=True) for i, c in enumerate(live)
        ]
        w = World()
        for _ in range(4):
            p = w.run(procs, live)
            assert [a for a in p.actions if a.kind.value == "KillProcess"] == []
            assert [d for d in p.deferred if d.rule.value == "OrphanedProcess"] == []

    def test_unknown_start_time_is_never_killed(self) -> None:
        w = World()
        proc = b.process(9, b.GPU0, container_id=GONE, start_time=None)
        for _ in range(3):
            p = w.run([proc])
            assert p.actions == ()
        assert ("OrphanedProcess", "UnknownSignal", "pid 9") in b.deferred_summary(p)

    def test_container_in_proc_but_missing_from_snapshot_is_not_an_orphan(self) -> None:
        w = World()
        proc = b.process(9, b.GPU0, container_id=GONE, container_exists=True)
        for _ in range(3):
            p = w.run([proc])
            assert p.actions == ()
        assert ("OrphanedProcess", "UnknownSignal", "pid 9") in b.deferred_summary(p)

    def test_process_on_two_gpus_is_killed_once(self) -> None:
        w = World()
        procs = [b.process(5, b.GPU0, container_id=GONE), b.process(5, b.GPU1, container_id=GONE)]
        w.run(procs)
        p = w.run(procs)
        assert b.summary(p) == [("KillProcess", "OrphanedProcess", "pid 5")]

    def test_vanished_and_system_processes_are_ignored(self) -> None:
        w = World()
        procs = [
            b.process(5, b.GPU0, container_id=GONE, state=ProcessState.VANISHED),
            b.process(6, b.GPU0, is_system=True, cmdline="nvidia-persistenced"),
        ]
        for _ in range(3):
            p = w.run(procs)
            assert p.actions == ()
            assert [d for d in p.deferred if d.target.pid is not None] == []

    def test_procfs_down_kills_nothing_and_keeps_sightings(self) -> None:
        w = World()
        orphan = b.process(777, b.GPU0, container_id=GONE)
        w.run([orphan])
        p = w.run([orphan], down=(Domain.PROCFS,))
        assert p.actions == ()
        assert ("OrphanedProcess", "DomainUnavailable", "host") in b.deferred_summary(p)
        assert p.memory.processes["777:1700000000.0"].sightings == 1

    def test_docker_down_kills_nothing(self) -> None:
        w = World()
        orphan = b.process(777, b.GPU0, container_id=GONE)
        w.run([orphan])
        p = w.run([orphan], down=(Domain.DOCKER,))
        assert p.actions == ()


class TestReportedProcesses:
    def test_foreign_process_in_live_container_alerts_once(self) -> None:
        c = busy("train", b.GPU0)
        proc = b.process(50, b.GPU1, container_id=c.id, container_exists=True)
        w = World()
        p1 = w.run([proc], [c])
        assert b.summary(p1) == [("AlertAdmin", "ForeignProcessOnGpu", "train")]
        assert p1.actions[0].target.pid == 50
        assert w.run([proc], [c]).actions == ()

    def test_all_gpus_container_is_never_foreign(self) -> None:
        c = b.running("cuda", all_gpus=True, started_at=b.ago(minutes=5), sig=b.signals(b.T0))
        proc = b.process(50, b.GPU1, container_id=c.id, container_exists=True)
        assert World().run([proc], [c]).actions == ()

    def test_host_process_is_reported_never_killed(self) -> None:
        w = World()
        host = b.process(900, b.GPU0, container_id=None, user="bob")
        for _ in range(3):
            p = w.run([host])
            assert p.actions == ()
        assert b.deferred_summary(p) == [("HostGpuProcess", "Protected", "pid 900")]
        assert p.deferred[0].evidence["sightings"] == 3
        assert p.deferred[0].evidence["user"] == "bob"


class TestDirtyGpus:
    def test_kill_then_reset_in_a_later_pass(self) -> None:
        w = World()
        orphan = b.process(777, b.GPU0, container_id=GONE)
        w.run([orphan])
        p2 = w.run([orphan])
        assert b.summary(p2) == [("KillProcess", "OrphanedProcess", "pid 777")]
        assert ("GpuDirty", "NotDue", b.GPU0) in b.deferred_summary(p2)
        assert p2.memory.dirty_gpus[b.GPU0].cause == GpuMarkCause.ORPHANS
        p3 = w.run([])  # the orphan is verified gone
        assert b.summary(p3) == [("ResetGpu", "GpuDirty", b.GPU0)]
        reset = p3.actions[0]
        assert reset.params == ResetParams(command=("nvidia-smi", "--gpu-reset", "-i", "{uuid}"))
        assert reset.key == f"ResetGpu:{b.GPU0}:{b.at(seconds=30).isoformat()}:GpuDirty"
        p4 = w.run([])
        assert p4.actions == ()
        assert p4.memory.dirty_gpus == {}

    def test_orphan_surviving_the_kill_is_not_reset_under(self) -> None:
        w = World()
        orphan = b.process(777, b.GPU0, container_id=GONE)
        w.run([orphan])
        w.run([orphan])
        p3 = w.run([orphan])  # still there: kill again, no reset
        assert b.summary(p3) == [("KillProcess", "OrphanedProcess", "pid 777")]

    def test_mig_gpu_alerts_instead_of_reset(self) -> None:
        w = World()
        mig = b.mig_uuid(1, 0)
        orphan = b.process(7, b.GPU1, device_uuid=mig, container_id=GONE)
        gpus = (b.gpu(0), b.gpu(1, mig_slots=2))
        w.run([orphan], gpus=gpus)
        assert b.summary(w.run([orphan], gpus=gpus)) == [("KillProcess", "OrphanedProcess", "pid 7")]
        p3 = w.run([], gpus=gpus)
        assert b.summary(p3) == [("AlertAdmin", "GpuDirty", b.GPU1)]
        assert any("MIG" in blocker for blocker in p3.actions[0].evidence["blockers"])
        assert w.run([], gpus=gpus).actions == ()

    def test_reset_policy_never_alerts(self) -> None:
        w = World(b.global_policy(gpu_reset_policy=GpuResetPolicy.NEVER))
        orphan = b.process(777, b.GPU0, container_id=GONE)
        w.run([orphan])
        w.run([orphan])
        assert b.summary(w.run([])) == [("AlertAdmin", "GpuDirty", b.GPU0)]

    def test_live_holder_or_other_process_blocks_reset(self) -> None:
        w = World()
        orphan = b.process(777, b.GPU0, container_id=GONE)
        w.run([orphan])
        w.run([orphan])
        newcomer = busy("new", b.GPU0)
        p3 = w.run([b.process(800, b.GPU0, container_id=newcomer.id, container_exists=True)], [newcomer])
        assert b.summary(p3) == [("AlertAdmin", "GpuDirty", b.GPU0)]
        blockers = p3.actions[0].evidence["blockers"]
        assert blockers == ["other processes on it: 800", "held by live containers: new"]

    def test_a_live_container_whose_gpu_is_unknown_blocks_every_reset(self) -> None:
        """It may be using any GPU: no GPU is reset under it. A stopped one uses none."""
        w = World()
        lost = b.container("lost", gpus=[b.unresolved_ref("7")], sig=b.signals(b.T0))
        gone = b.container(
            "gone", state=ContainerState.EXITED, gpus=[b.unresolved_ref("8")], finished_at=b.T0
        )
        paused = b.container("paused", state=ContainerState.PAUSED, gpus=[b.unresolved_ref("9")])
        # Between two runs of a crash loop: its processes are back any moment.
        looping = b.container("looping", state=ContainerState.RESTARTING, gpus=[b.unresolved_ref("6")])
        stale = 4 * 1024**3
        dirty = (b.gpu(0, memory_used_bytes=stale), b.gpu(1, memory_used_bytes=stale))
        w.run([], [lost, gone, paused, looping], gpus=dirty)
        p2 = w.run([], [lost, gone, paused, looping], gpus=dirty)
        assert b.summary(p2) == [("AlertAdmin", "GpuDirty", b.GPU0), ("AlertAdmin", "GpuDirty", b.GPU1)]
        for alert in p2.actions:
            assert alert.evidence["blockers"] == [
                "live containers whose GPU references cannot be resolved: looping, lost, paused"
            ]
        # Once they have stopped, nothing blocks: both GPUs are reset.
        ended = [c.model_copy(update={"state": ContainerState.EXITED}) for c in (lost, paused, looping)]
        p3 = w.run([], [*ended, gone], gpus=dirty)
        assert b.summary(p3) == [("ResetGpu", "GpuDirty", b.GPU0), ("ResetGpu", "GpuDirty", b.GPU1)]

    def test_stale_memory_needs_second_sighting_then_reset(self) -> None:
        w = World()
        dirty = (b.gpu(0, memory_used_bytes=4 * 1024**3), b.gpu(1))
        p1 = w.run([], gpus=dirty)
        assert p1.actions == ()
        assert b.deferred_summary(p1) == [("GpuDirty", "NeedsSecondSighting", b.GPU0)]
        p2 = w.run([], gpus=dirty)
        assert b.summary(p2) == [("ResetGpu", "GpuDirty", b.GPU0)]
        clean = (b.gpu(0), b.gpu(1))
        p3 = w.run([], gpus=clean)
        assert p3.actions == ()
        assert p3.memory.dirty_gpus == {}

    def test_transient_memory_reading_is_forgotten(self) -> None:
        w = World()
        w.run([], gpus=(b.gpu(0, memory_used_bytes=4 * 1024**3),))
        p = w.run([], gpus=(b.gpu(0),))
        assert p.actions == ()
        assert p.memory.dirty_gpus == {}

    def test_memory_in_use_by_a_live_holder_is_not_dirty(self) -> None:
        w = World()
        c = busy("train", b.GPU0)
        for _ in range(3):
            p = w.run([], [c], gpus=(b.gpu(0, memory_used_bytes=4 * 1024**3),))
            assert p.actions == ()
            assert p.memory.dirty_gpus == {}

    def test_reset_that_did_not_help_alerts_once(self) -> None:
        w = World()
        dirty = (b.gpu(0, memory_used_bytes=4 * 1024**3),)
        w.run([], gpus=dirty)
        assert b.summary(w.run([], gpus=dirty)) == [("ResetGpu", "GpuDirty", b.GPU0)]
        p3 = w.run([], gpus=dirty)  # reset done, still dirty
        assert b.summary(p3) == [("AlertAdmin", "GpuDirty", b.GPU0)]
        p4 = w.run([], gpus=dirty)
        assert p4.actions == ()
        assert b.deferred_summary(p4) == [("GpuDirty", "ResetNotAllowed", b.GPU0)]
