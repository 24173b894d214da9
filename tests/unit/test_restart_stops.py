"""Containers stopped by an engine or host restart are not their owners' stops.

After dockerd restarts (or the host reboots) every container without a restart policy is exited.
Nobody chose those stops: such a container keeps the restart hold (``restartStoppedHold``, 24 h by
default; null: an admin decides) instead of its normal stopped hold, and a pass that would remove
more than a set share of the host's stopped containers trips the breaker like a mass stop does.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from controller.memory import ContainerMemory, ControllerMemory
from controller.observe.engine import engine_started_at, host_booted_at
from controller.plan.planner import plan
from controller.plan.rules.cleanup import stopped_by_restart
from controller.plan.safety import OWN_STOP_SLACK_S
from controller.plan.types import ActionKind, DeferReason, Plan, Reason
from controller.snapshot import ContainerObs, ContainerState, Domain
from tests.fixtures import builders as b

# The engine restarted 40 minutes before T0; its shutdown stopped the containers a few seconds
# before that. The normal holds (15 min GPU, 30 min container) have passed; the 24 h restart hold not.
ENGINE_START = b.ago(minutes=40)
SHUTDOWN = ENGINE_START - timedelta(seconds=8)
STARTED = b.ago(days=2)


def stopped(
    name: str, *, finished_at: datetime = SHUTDOWN, exit_code: int = 137, **kw: object
) -> ContainerObs:
    return b.exited(name, started_at=STARTED, finished_at=finished_at, exit_code=exit_code, **kw)  # type: ignore[arg-type]


def seen(c: ContainerObs, state: ContainerState, **kw: object) -> ContainerMemory:
    """What the controller remembered of it before the restart."""
    return ContainerMemory(
        container_id=c.id, name=c.name, started_at=c.started_at, last_state=state.value, **kw
    )  # type: ignore[arg-type]


def run(
    *containers: ContainerObs,
    memory: ControllerMemory | None = None,
    engine_start: datetime | None = ENGINE_START,
    booted: datetime | None = None,
    now: datetime = b.T0,
    **glob: object,
) -> Plan:
    snap = b.snapshot(observed_at=now, containers=containers).model_copy(
        update={"engine_started_at": engine_start, "host_booted_at": booted}
    )
    desired = b.desired(glob=b.global_policy(**glob))
    return plan(snap, desired, memory or ControllerMemory(last_pass_at=now - timedelta(seconds=30)), now)


def removals(p: Plan) -> list[str]:
    return sorted(a.target.container or "" for a in p.actions if a.kind == ActionKind.REMOVE_CONTAINER)


class TestRestartHold:
    def test_containers_the_engine_restart_stopped_keep_the_restart_hold(self) -> None:
        train = stopped("train", gpus=[b.GPU0])
        notebook = stopped("notebook")
        memory = ControllerMemory(
            containers={c.id: seen(c, ContainerState.RUNNING) for c in (train, notebook)},
            last_pass_at=ENGINE_START - timedelta(minutes=1),
        )
        p = run(train, notebook, memory=memory)
        assert removals(p) == []
        for c in (train, notebook):
            (d,) = [d for d in p.deferred if d.target.container_id == c.id]
            assert d.why == DeferReason.NOT_DUE
            assert d.due_at == SHUTDOWN + timedelta(hours=24)
            assert (
                f"stopped by the engine restart at {ENGINE_START.isoformat()}"
                in d.message.replace("+00:00", "Z").replace("Z", "+00:00")
                or "stopped by the engine restart at" in d.message
            )
            assert d.evidence["stopped_by_restart_at"] is not None
            assert p.memory.containers[c.id].stopped_by_restart_at == ENGINE_START
        # The mark is remembered: the next pass still holds them (they are "exited" in memory now).
        later = run(train, notebook, memory=p.memory, now=b.T0 + timedelta(hours=1))
        assert removals(later) == []
        # And once the restart hold has passed they are removed, the reason saying why they waited.
        due = run(train, notebook, memory=later.memory, now=SHUTDOWN + timedelta(hours=24, seconds=1))
        assert removals(due) == ["notebook", "train"]
        assert all(
            "stopped by the engine restart" in a.message
            for a in due.actions
            if a.kind == ActionKind.REMOVE_CONTAINER
        )

    def test_the_restart_hold_never_shortens_a_longer_normal_hold(self) -> None:
        c = stopped("c", finished_at=b.ago(minutes=10))
        memory = ControllerMemory(
            containers={c.id: seen(c, ContainerState.EXITED, stopped_by_restart_at=ENGINE_START)}
        )
        p = run(c, memory=memory, restart_stopped_hold_s=60.0)
        assert removals(p) == []
        (d,) = [d for d in p.deferred if d.target.container_id == c.id]
        assert d.due_at == b.ago(minutes=10) + timedelta(minutes=30)  # the 30 min container hold

    def test_null_restart_hold_keeps_it_for_an_admin(self) -> None:
        c = stopped("c")
        memory = ControllerMemory(containers={c.id: seen(c, ContainerState.RUNNING)})
        p = run(c, memory=memory, restart_stopped_hold_s=None, now=b.T0 + timedelta(days=30))
        assert removals(p) == []
        (d,) = [d for d in p.deferred if d.target.container_id == c.id]
        assert d.due_at is None and "kept until an admin removes it" in d.message

    def test_a_stop_the_controller_saw_before_the_restart_is_its_owners(self) -> None:
        c = stopped("c", finished_at=ENGINE_START - timedelta(minutes=5), exit_code=0)
        memory = ControllerMemory(containers={c.id: seen(c, ContainerState.EXITED)})
        assert removals(run(c, memory=memory)) == ["c"]

    def test_a_stop_seen_while_the_engine_shut_down_is_the_restarts(self) -> None:
        # The engine still answered while it stopped its containers: the controller saw them
        # exited (with the old engine's start time), seconds before the new engine started.
        c = stopped("c", finished_at=ENGINE_START - timedelta(seconds=5))
        memory = ControllerMemory(containers={c.id: seen(c, ContainerState.EXITED)})
        p = run(c, memory=memory)
        assert removals(p) == []
        assert p.memory.containers[c.id].stopped_by_restart_at == ENGINE_START

    def test_a_stop_seen_while_the_host_shut_down_is_the_restarts_after_a_slow_boot(self) -> None:
        # The controller's last pass ran while the host shut down: it saw the containers exited.
        # Firmware and boot took 6 minutes before the engine started again.
        last_pass = ENGINE_START - timedelta(minutes=6)
        c = stopped("c", gpus=[b.GPU0], finished_at=last_pass - timedelta(seconds=5))
        memory = ControllerMemory(containers={c.id: seen(c, ContainerState.EXITED)}, last_pass_at=last_pass)
        p = run(c, memory=memory)
        assert removals(p) == []
        assert p.memory.containers[c.id].stopped_by_restart_at == ENGINE_START
        # The mark stays on the passes after it.
        assert removals(run(c, memory=p.memory, now=b.T0 + timedelta(hours=1))) == []

    @pytest.mark.parametrize(
        ("last_pass_before_start", "stopped_before_last_pass"),
        [(timedelta(minutes=6), timedelta(minutes=10)), (timedelta(hours=2), timedelta(minutes=1))],
        ids=["stopped-well-before-the-shutdown", "controller-away-long-before-the-restart"],
    )
    def test_a_stop_seen_well_before_the_shutdown_is_still_the_owners(
        self, last_pass_before_start: timedelta, stopped_before_last_pass: timedelta
    ) -> None:
        last_pass = ENGINE_START - last_pass_before_start
        c = stopped("c", gpus=[b.GPU0], finished_at=last_pass - stopped_before_last_pass, exit_code=0)
        memory = ControllerMemory(containers={c.id: seen(c, ContainerState.EXITED)}, last_pass_at=last_pass)
        p = run(c, memory=memory)
        assert removals(p) == ["c"]
        assert p.memory.containers[c.id].stopped_by_restart_at is None

    def test_without_memory_a_stop_close_before_the_restart_counts(self) -> None:
        near = stopped("near", finished_at=ENGINE_START - timedelta(minutes=3))
        long_before = stopped("long-before", finished_at=ENGINE_START - timedelta(hours=2))
        p = run(near, long_before)
        assert removals(p) == ["long-before"]
        assert p.memory.containers[near.id].stopped_by_restart_at == ENGINE_START
        assert p.memory.containers[long_before.id].stopped_by_restart_at is None

    def test_the_controller_saw_it_running_across_a_long_reboot(self) -> None:
        # The host was down for 3 hours: the shutdown stop is long before the engine start.
        c = stopped("c", finished_at=ENGINE_START - timedelta(hours=3))
        memory = ControllerMemory(containers={c.id: seen(c, ContainerState.RUNNING)})
        assert removals(run(c, memory=memory)) == []

    def test_started_after_the_restart_is_not_a_restart_stop(self) -> None:
        c = b.exited(
            "c",
            started_at=ENGINE_START + timedelta(minutes=1),
            finished_at=ENGINE_START + timedelta(minutes=2),
        )
        memory = ControllerMemory(containers={c.id: seen(c, ContainerState.RUNNING)})
        assert removals(run(c, memory=memory)) == ["c"]

    @pytest.mark.parametrize(("exit_code", "by_restart"), [(255, True), (0, False), (137, False)])
    def test_after_the_start_only_the_engines_restore_counts(self, exit_code: int, by_restart: bool) -> None:
        c = stopped("c", finished_at=ENGINE_START + timedelta(seconds=20), exit_code=exit_code)
        got = stopped_by_restart(c, None, ENGINE_START)
        assert (got == ENGINE_START) is by_restart

    @pytest.mark.parametrize("exit_code", [0, 137, 143])
    @pytest.mark.parametrize(
        "last_pass",
        [ENGINE_START - timedelta(seconds=20), ENGINE_START + timedelta(seconds=1)],
        ids=["before", "during"],
    )
    def test_a_crashed_engines_survivors_its_restart_shut_down_keep_the_restart_hold(
        self, exit_code: int, last_pass: datetime
    ) -> None:
        """dockerd killed (the OOM killer, a crash): its containers run on under their shims, and the
        new engine, without live-restore, stops them as it starts (and may list them running
        meanwhile). They stop after the engine start with their own exit code (0 or 143 on SIGTERM,
        137 after the stop timeout), not the 255 of one found dead. The controller saw them running:
        nobody but the restart stopped them."""
        c = stopped("c", gpus=[b.GPU0], finished_at=ENGINE_START + timedelta(seconds=12), exit_code=exit_code)
        memory = ControllerMemory(containers={c.id: seen(c, ContainerState.RUNNING)}, last_pass_at=last_pass)
        p = run(c, memory=memory)
        assert removals(p) == []
        (d,) = [d for d in p.deferred if d.target.container_id == c.id]
        assert d.due_at == c.finished_at + timedelta(hours=24)
        assert p.memory.containers[c.id].stopped_by_restart_at == ENGINE_START

    def test_a_stop_well_after_the_restart_of_a_container_seen_running_is_its_owners(self) -> None:
        # With live-restore the containers run on across the restart: one stopped minutes after it
        # was stopped by its owner.
        c = stopped("c", gpus=[b.GPU0], finished_at=ENGINE_START + timedelta(minutes=5), exit_code=0)
        memory = ControllerMemory(
            containers={c.id: seen(c, ContainerState.RUNNING)},
            last_pass_at=ENGINE_START + timedelta(minutes=4),
        )
        p = run(c, memory=memory)
        assert removals(p) == ["c"]
        assert p.memory.containers[c.id].stopped_by_restart_at is None

    @pytest.mark.parametrize("remembered", [True, False])
    def test_a_shutdown_stop_a_second_after_the_start_read_from_procfs_is_the_restarts(
        self, remembered: bool
    ) -> None:
        """procfs gives the boot time in whole seconds, so the engine start it yields may be up to a
        second early: a container the shutdown killed (137) just before the real start then seems
        to have stopped after it. It keeps the restart hold; it is not removed after the normal one."""
        c = stopped("c", finished_at=ENGINE_START + timedelta(seconds=0.9))
        memory = ControllerMemory(containers={c.id: seen(c, ContainerState.RUNNING)}) if remembered else None
        p = run(c, memory=memory)
        assert removals(p) == []
        assert p.memory.containers[c.id].stopped_by_restart_at == ENGINE_START

    def test_unknown_restart_time_changes_nothing(self) -> None:
        c = stopped("c")
        memory = ControllerMemory(containers={c.id: seen(c, ContainerState.RUNNING)})
        assert removals(run(c, memory=memory, engine_start=None)) == ["c"]

    def test_host_boot_time_stands_in_for_an_unknown_engine_start(self) -> None:
        c = stopped("c")
        memory = ControllerMemory(containers={c.id: seen(c, ContainerState.RUNNING)})
        assert removals(run(c, memory=memory, engine_start=None, booted=ENGINE_START)) == []

    def test_a_new_start_clears_the_mark(self) -> None:
        c = stopped("c")
        prev = seen(c, ContainerState.EXITED, stopped_by_restart_at=ENGINE_START)
        assert stopped_by_restart(c, prev, ENGINE_START) == ENGINE_START
        restarted = c.model_copy(update={"started_at": b.ago(minutes=20), "finished_at": b.ago(minutes=19)})
        assert stopped_by_restart(restarted, prev, ENGINE_START) is None


class TestRemovalBreaker:
    def host(self, due: int, other: int) -> list[ContainerObs]:
        # ``due`` exited 30 min 10 s ago: their 30 min hold passed since the last pass (30 s ago).
        cs = [b.exited(f"due{i}", finished_at=b.ago(minutes=30, seconds=10)) for i in range(due)]
        cs += [b.exited(f"fresh{i}", finished_at=b.ago(minutes=1)) for i in range(other)]
        return cs

    def test_removing_most_stopped_containers_at_once_trips_the_breaker(self) -> None:
        p = run(*self.host(due=6, other=2), engine_start=None)
        assert removals(p) == []
        assert p.memory.breaker.tripped
        assert "would remove 6 of 8 stopped containers" in p.memory.breaker.reason
        (alert,) = [a for a in p.actions if a.reason == Reason.BREAKER_TRIPPED]
        assert alert.evidence["would_remove"] == 6
        assert {d.why for d in p.deferred if d.target.container} >= {DeferReason.BREAKER_OPEN}

    def test_a_share_below_the_limit_or_too_few_removals_do_not(self) -> None:
        assert removals(run(*self.host(due=6, other=7), engine_start=None)) == [f"due{i}" for i in range(6)]
        assert removals(run(*self.host(due=4, other=0), engine_start=None)) == [f"due{i}" for i in range(4)]

    def test_a_backlog_overdue_at_the_last_pass_does_not_trip_it_again(self) -> None:
        # After an admin's reset, removals that were already due at the last pass go ahead.
        memory = ControllerMemory(last_pass_at=b.ago(seconds=30))
        cs = [b.exited(f"old{i}", finished_at=b.ago(hours=2)) for i in range(6)]
        p = run(*cs, memory=memory, engine_start=None)
        assert not p.memory.breaker.tripped
        assert len(removals(p)) == 6

    def test_removals_that_fell_due_while_docker_was_away_are_not_a_backlog(self) -> None:
        """An engine restart stops six jobs (its start time unreadable: not recognised as one) and
        Docker stays away 40 min while the controller passes every 5 min. The 15-min GPU hold of
        each fell due in those passes. Counted as a backlog "overdue at the last pass", all six were
        removed and the breaker stayed closed; with the controller down instead, it tripped."""
        shutdown = b.ago(minutes=40)
        names = [f"job{i}" for i in range(6)]
        running = [b.running(n, gpus=[b.GPU0], started_at=STARTED) for n in names]
        exited = [b.exited(n, gpus=[b.GPU0], started_at=STARTED, finished_at=shutdown) for n in names]
        before = shutdown - timedelta(seconds=20)
        memory = run(*running, engine_start=None, now=before).memory
        at = shutdown + timedelta(seconds=10)
        while at < b.ago(seconds=30):
            down = b.snapshot(observed_at=at, down=[Domain.DOCKER])
            memory = plan(down, b.desired(), memory, at).memory
            at += timedelta(minutes=5)
        assert memory.last_pass_at == before, "a pass without Docker planned no container"
        p = run(*exited, memory=memory, engine_start=None)
        assert removals(p) == []
        assert p.memory.breaker.tripped
        assert "would remove 6 of 6 stopped containers" in p.memory.breaker.reason

    def test_a_last_pass_in_the_future_is_no_backlog(self) -> None:
        # The wall clock ran a day ahead for one pass (then NTP set it back); an engine restart now
        # stops everything. Every due removal fell due "before the last pass": all counted as a
        # backlog, and ten a pass went ahead with the breaker closed.
        memory = ControllerMemory(last_pass_at=b.T0 + timedelta(days=1))
        p = run(*self.host(due=6, other=2), memory=memory, engine_start=None)
        assert removals(p) == []
        assert p.memory.breaker.tripped

    def test_the_share_is_a_policy_setting(self) -> None:
        p = run(*self.host(due=6, other=2), engine_start=None, breaker_max_remove_fraction=0.9)
        assert not p.memory.breaker.tripped and len(removals(p)) == 6


def own_stops(*containers: ContainerObs, at: datetime | None = None) -> ControllerMemory:
    """The memory after the controller stopped ``containers`` itself (as the executor records it)."""
    memory = ControllerMemory(last_pass_at=b.ago(seconds=30))
    for c in containers:
        memory = memory.with_controller_stop(c.id, c.started_at, at or c.finished_at or b.T0)
    return memory


class TestOwnStopsAndTheRemovalBreaker:
    """The controller's own stops were weighed by the stop breaker when it made them: the removals
    that follow them, due together because they were stopped together, do not trip the breaker."""

    def due(self, prefix: str, n: int) -> list[ContainerObs]:
        # Stopped 30 min 10 s ago: the 30 min hold passed since the last pass (30 s ago).
        return [b.exited(f"{prefix}{i}", finished_at=b.ago(minutes=30, seconds=10)) for i in range(n)]

    def test_removals_after_its_own_stops_go_ahead(self) -> None:
        cs = self.due("own", 6) + [b.exited(f"fresh{i}", finished_at=b.ago(minutes=1)) for i in range(2)]
        p = run(*cs, memory=own_stops(*cs[:6]), engine_start=None)
        assert not p.memory.breaker.tripped
        assert removals(p) == [f"own{i}" for i in range(6)]
        # The same host without the record (another's stops, or a memory that lost the marks) trips it.
        assert run(*cs, engine_start=None).memory.breaker.tripped

    def test_its_own_stops_do_not_dilute_the_share_of_the_others(self) -> None:
        # 5 of the 6 containers others stopped come due at once: a restart's pattern, though 20 more
        # stopped containers (the controller's own, not due) sit on the host.
        others = [*self.due("other", 5), b.exited("other5", finished_at=b.ago(minutes=1))]
        own = [b.exited(f"own{i}", finished_at=b.ago(minutes=5)) for i in range(20)]
        p = run(*others, *own, memory=own_stops(*own), engine_start=None)
        assert p.memory.breaker.tripped
        assert "would remove 5 of 6 stopped containers" in p.memory.breaker.reason
        assert removals(p) == []

    def test_a_mix_is_judged_on_the_others_alone(self) -> None:
        own, others = self.due("own", 6), self.due("other", 2)
        rest = [b.exited(f"fresh{i}", finished_at=b.ago(minutes=1)) for i in range(3)]
        p = run(*own, *others, *rest, memory=own_stops(*own), engine_start=None)
        assert not p.memory.breaker.tripped  # 2 of the others' 5: below the minimum of 5 anyway
        assert len(removals(p)) == 8

    def test_the_mark_is_carried_from_pass_to_pass_and_dropped_at_the_next_start(self) -> None:
        started = b.ago(hours=3)
        cs = [
            b.exited(f"own{i}", started_at=started, finished_at=b.ago(minutes=29, seconds=50))
            for i in range(6)
        ]
        first = run(*cs, memory=own_stops(*cs), engine_start=None)  # 10 s before the holds expire
        assert removals(first) == []
        assert all(first.memory.containers[c.id].stopped_by_controller_at is not None for c in cs)
        later = b.T0 + timedelta(seconds=30)
        second = run(*cs, memory=first.memory, engine_start=None, now=later)
        assert not second.memory.breaker.tripped and len(removals(second)) == 6
        # Started again by their owner and stopped by the owner: the controller's mark was of the
        # earlier start, and these stops are someone else's.
        again = [
            c.model_copy(
                update={"started_at": b.ago(minutes=50), "finished_at": b.ago(minutes=29, seconds=40)}
            )
            for c in cs
        ]
        third = run(*again, memory=first.memory, engine_start=None, now=later)
        assert third.memory.breaker.tripped
        assert all(third.memory.containers[c.id].stopped_by_controller_at is None for c in again)

    def test_a_finished_at_that_does_not_fit_the_recorded_stop_counts_like_any_other(self) -> None:
        # The engine says these stopped half an hour before the controller recorded stopping them: a
        # signal nothing here vouches for (a broken FinishedAt would make every hold look expired).
        cs = self.due("own", 6)
        p = run(*cs, memory=own_stops(*cs, at=b.T0 - timedelta(seconds=40)), engine_start=None)
        assert p.memory.breaker.tripped and removals(p) == []
        # Within the SIGTERM grace and the engine's slack of the record, it is the controller's stop.
        grace_s = b.policy().sigterm_grace_s.value
        at = cs[0].finished_at + timedelta(seconds=grace_s + OWN_STOP_SLACK_S - 1)  # type: ignore[operator]
        p = run(*cs, memory=own_stops(*cs, at=at), engine_start=None)
        assert not p.memory.breaker.tripped and len(removals(p)) == 6

    def test_a_mark_is_only_written_for_the_start_it_belongs_to(self) -> None:
        c = b.exited("c", started_at=b.ago(hours=2), finished_at=b.ago(hours=1))
        memory = ControllerMemory(containers={c.id: seen(c, ContainerState.RUNNING)})
        assert memory.with_controller_stop(c.id, b.ago(hours=5), b.T0) == memory
        marked = memory.with_controller_stop(c.id, c.started_at, b.T0)
        assert marked.containers[c.id].stopped_by_controller_at == b.T0
        # A container the memory had no record of gets one, tied to the stopped start.
        fresh = ControllerMemory().with_controller_stop(c.id, c.started_at, b.T0).containers[c.id]
        assert (fresh.started_at, fresh.stopped_by_controller_at) == (c.started_at, b.T0)


class TestEngineTimes:
    def fake_proc(self, root: Path, *, comm: str = "dockerd", ticks: int = 12_345) -> Path:
        (root / "4242").mkdir(parents=True)
        (root / "4242" / "comm").write_text(f"{comm}\n")
        fields = ["S"] + ["0"] * 18 + [str(ticks)] + ["0"] * 10
        (root / "4242" / "stat").write_text(f"4242 ({comm}) " + " ".join(fields) + "\n")
        (root / "stat").write_text("cpu  1 2 3\nbtime 1796387868\n")
        pidfile = root / "docker.pid"
        pidfile.write_text("4242")
        return pidfile

    def test_engine_start_is_boot_plus_the_process_start(self, tmp_path: Path) -> None:
        import os

        pidfile = self.fake_proc(tmp_path)
        got = engine_started_at(pidfile, tmp_path)
        assert got is not None
        assert got.timestamp() == pytest.approx(1796387868 + 12_345 / os.sysconf("SC_CLK_TCK"))
        booted = host_booted_at(tmp_path)
        assert booted is not None and booted.timestamp() == 1796387868

    def test_a_stale_pidfile_or_missing_files_give_unknown(self, tmp_path: Path) -> None:
        pidfile = self.fake_proc(tmp_path, comm="bash")
        assert engine_started_at(pidfile, tmp_path) is None
        assert engine_started_at(tmp_path / "nope.pid", tmp_path) is None
        (tmp_path / "docker.pid").write_text("not a pid")
        assert engine_started_at(tmp_path / "docker.pid", tmp_path) is None
        assert host_booted_at(tmp_path / "absent") is None


def test_the_engine_pidfile_comes_from_the_environment() -> None:
    import argparse

    from controller.settings import DEFAULT_DOCKER_PIDFILE, settings_from

    assert settings_from(argparse.Namespace(), {}).docker_pidfile == DEFAULT_DOCKER_PIDFILE
    got = settings_from(argparse.Namespace(), {"DS01_DOCKER_PIDFILE": "/run/docker-2.pid"})
    assert got.docker_pidfile == Path("/run/docker-2.pid")


class TestDescribeSaysWhoStoppedIt:
    """``ds01ctl describe container``'s Timers line says who stopped a stopped container when the
    controller knows: a restart (and the longer hold it brings) or the controller itself."""

    def timers(self, c: ContainerObs, mem: ContainerMemory, **glob: object) -> str:
        from controller.cli.describe import describe_container
        from controller.cli.view import View

        snap = b.snapshot(observed_at=b.T0, containers=[c], gpus=[b.gpu(0)]).model_copy(
            update={"engine_started_at": ENGINE_START}
        )
        desired = b.desired(glob=b.global_policy(**glob))
        p = plan(
            snap, desired, ControllerMemory(last_pass_at=b.ago(seconds=30), containers={c.id: mem}), b.T0
        )
        text = describe_container(
            View(snapshot=snap, now=b.T0, plan=p, memory=p.memory, desired=desired), c.name
        )
        return text.split("Timers:\n", 1)[1].splitlines()[0].strip()

    def test_a_restarts_stop_and_its_hold(self) -> None:
        c = stopped("victim", gpus=[b.GPU0])
        line = self.timers(c, seen(c, ContainerState.RUNNING))
        assert "stopped by the engine or host restart of " in line and "not its owner" in line
        assert "held at least 1d (restartStoppedHold" in line
        assert "in 23h" in line  # the removal the 24 h hold puts off, as the plan says
        line = self.timers(c, seen(c, ContainerState.RUNNING), restart_stopped_hold_s=None)
        assert "kept until an admin removes it (restartStoppedHold" in line

    def test_the_controllers_own_stop(self) -> None:
        c = b.exited("own", started_at=STARTED, finished_at=b.ago(minutes=5), gpus=[b.GPU0])
        mark = c.finished_at
        line = self.timers(c, seen(c, ContainerState.RUNNING, stopped_by_controller_at=mark))
        assert "stopped by the controller at " in line and "restart" not in line

    def test_nothing_is_said_when_nobody_here_knows(self) -> None:
        c = b.exited("users", started_at=STARTED, finished_at=b.ago(minutes=5), gpus=[b.GPU0])
        line = self.timers(c, seen(c, ContainerState.EXITED))
        assert "stopped by" not in line
        # A mark of an earlier start says nothing of this one.
        old = seen(c, ContainerState.RUNNING, stopped_by_controller_at=b.ago(days=3)).model_copy(
            update={"started_at": b.ago(days=4)}
        )
        assert "stopped by" not in self.timers(c, old)
