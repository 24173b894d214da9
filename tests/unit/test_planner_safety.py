"""The safety gates (budget, breaker, back-off, one-shot keys), domain outages and plan memory."""

from __future__ import annotations

from datetime import datetime, timedelta

from controller.memory import Attempt, Breaker, ContainerMemory, ControllerMemory
from controller.plan.planner import plan
from controller.plan.types import ActionKind, Plan
from controller.snapshot import ContainerObs, Domain
from desired_state.effective import EffectivePolicy, GlobalPolicy
from tests.fixtures import builders as b


def once(
    *containers: ContainerObs,
    glob: GlobalPolicy | None = None,
    pol: EffectivePolicy | None = None,
    memory: ControllerMemory | None = None,
    down: tuple[Domain, ...] = (),
) -> Plan:
    snap = b.snapshot(containers=containers, gpus=[b.gpu(i) for i in range(4)], down=down)
    return plan(snap, b.desired(pol, glob), memory or ControllerMemory(), b.T0)


def stale_created(n: int) -> list[ContainerObs]:
    """n never-started containers, c00 the oldest."""
    return [b.created(f"c{i:02d}", created_at=b.ago(hours=10, minutes=-i)) for i in range(n)]


def busy_gpu(name: str, *, started_hours_ago: float) -> ContainerObs:
    """A running container busy on a GPU of its own (so only the runtime rule can act on it)."""
    g = f"GPU-{name}"
    sig = b.signals(b.T0, gpu_pct={g: 99.0})
    return b.running(name, gpus=[g], started_at=b.ago(hours=started_hours_ago), sig=sig)


def over_runtime(name: str) -> ContainerObs:
    return busy_gpu(name, started_hours_ago=30)


def warned(*containers: ContainerObs) -> ControllerMemory:
    """Memory in which each container's owner got the 90 % runtime warning an hour ago."""
    mem = ControllerMemory()
    for c in containers:
        assert c.started_at is not None
        cm = ContainerMemory(container_id=c.id, name=c.name, started_at=c.started_at)
        mem = mem.model_copy(update={"containers": {**mem.containers, c.id: cm}})
        mem = mem.with_warning(c.id, f"runtime:90:{c.started_at.isoformat()}", b.ago(hours=1))
    return mem


class TestBudget:
    def test_oldest_due_first_rest_deferred(self) -> None:
        p = once(*stale_created(12), glob=b.global_policy(max_destructive_actions_per_pass=10))
        assert [a.target.container for a in p.actions] == [f"c{i:02d}" for i in range(10)]
        assert b.deferred_summary(p) == sorted(
            [
                ("CreatedNeverStarted", "BudgetExhausted", "c10"),
                ("CreatedNeverStarted", "BudgetExhausted", "c11"),
            ],
            key=lambda t: b.cid(t[2]),
        )
        assert all(d.evidence["budget"] == 10 for d in p.deferred)

    def test_held_back_removals_quote_the_removal_and_admitted_ones_are_whole(self) -> None:
        # The removals' messages and evidence are written only for those the budget admits: what is
        # written must not depend on the budget, and a held-back one quotes its removal's key and due.
        cs = [
            b.exited("gone-gpu", gpus=[b.GPU0], finished_at=b.ago(days=3)),
            b.exited("gone", finished_at=b.ago(days=2)),
            *stale_created(2),
        ]
        every = once(*cs, glob=b.global_policy(max_destructive_actions_per_pass=10))
        assert len(every.actions) == 4
        for budget in range(4):
            p = once(*cs, glob=b.global_policy(max_destructive_actions_per_pass=budget))
            assert p.actions == every.actions[:budget]
            held = every.actions[budget:]
            assert len(p.deferred) == len(held)
            assert {d.evidence["key"]: (d.target, d.evidence["due_at"]) for d in p.deferred} == {
                a.key: (a.target, a.due_at.isoformat()) for a in held
            }
            assert all(d.evidence["action"] == "RemoveContainer" for d in p.deferred)

    def test_non_destructive_actions_do_not_count(self) -> None:
        c = b.running(
            "train", gpus=[b.GPU0], started_at=b.ago(hours=23), sig=b.signals(b.T0, gpu_pct={b.GPU0: 99.0})
        )
        p = once(c, *stale_created(2), glob=b.global_policy(max_destructive_actions_per_pass=2))
        assert sorted(a.kind.value for a in p.actions) == ["RemoveContainer", "RemoveContainer", "WarnOwner"]

    def test_zero_budget_acts_on_nothing_destructive(self) -> None:
        p = once(*stale_created(3), glob=b.global_policy(max_destructive_actions_per_pass=0))
        assert p.actions == ()
        assert {d.why.value for d in p.deferred} == {"BudgetExhausted"}


class TestBreaker:
    def test_trips_on_mass_stop(self) -> None:
        cs = [over_runtime(f"g{i}") for i in range(4)]
        p = once(*cs, memory=warned(*cs))
        assert b.summary(p) == [("AlertAdmin", "BreakerTripped", "host")]
        assert p.actions[0].evidence["would_stop"] == 4
        assert p.memory.breaker.tripped
        assert p.memory.breaker.tripped_at == b.T0
        assert sorted(b.deferred_summary(p)) == sorted(
            ("MaxRuntimeExceeded", "BreakerOpen", c.name) for c in cs
        )

    def test_below_min_containers_does_not_trip(self) -> None:
        cs = [over_runtime(f"g{i}") for i in range(2)]
        p = once(*cs, memory=warned(*cs))
        assert [a.kind.value for a in p.actions] == ["StopContainer", "StopContainer"]
        assert not p.memory.breaker.tripped

    def test_small_fraction_does_not_trip(self) -> None:
        due = [over_runtime(f"g{i}") for i in range(3)]
        fresh = [busy_gpu(f"f{i}", started_hours_ago=1) for i in range(4)]
        p = once(*due, *fresh, memory=warned(*due))  # 3 of 7 <= 50 %
        assert [a.kind.value for a in p.actions] == ["StopContainer"] * 3

    def test_open_breaker_defers_all_destructive_but_not_warnings(self) -> None:
        mem = ControllerMemory(breaker=Breaker(tripped=True, tripped_at=b.ago(hours=1), reason="test"))
        warn_me = b.running(
            "w", gpus=[b.GPU1], started_at=b.ago(hours=23), sig=b.signals(b.T0, gpu_pct={b.GPU1: 99.0})
        )
        p = once(b.created("old", created_at=b.ago(days=1)), warn_me, memory=mem)
        assert b.summary(p) == [("WarnOwner", "MaxRuntimeWarning", "w")]
        assert ("CreatedNeverStarted", "BreakerOpen", "old") in b.deferred_summary(p)
        assert p.memory.breaker == mem.breaker

    def test_stays_tripped_until_reset(self) -> None:
        cs = [over_runtime(f"g{i}") for i in range(4)]
        p1 = once(*cs, memory=warned(*cs))
        p2 = once(*cs, memory=b.record_outcomes(p1))
        assert p2.actions == ()
        assert {d.why.value for d in p2.deferred} == {"BreakerOpen"}
        reset = b.record_outcomes(p1).with_breaker(Breaker())
        p3 = once(*cs, memory=reset)
        assert b.summary(p3) == [("AlertAdmin", "BreakerTripped", "host")]  # still a mass stop: trips again


class TestBackoffAndDone:
    def test_backoff_defers_until_next_attempt(self) -> None:
        c = b.created("old", created_at=b.ago(days=1))
        key = f"RemoveContainer:{c.id}:CreatedNeverStarted"
        mem = ControllerMemory().with_failure(key, "conflict", b.ago(seconds=1))
        p = once(c, memory=mem)
        assert p.actions == ()
        assert b.deferred_summary(p) == [("CreatedNeverStarted", "Backoff", "old")]
        assert p.deferred[0].due_at == b.at(seconds=4)
        later = plan(
            b.snapshot(observed_at=b.at(seconds=5), containers=[c]), b.desired(), mem, b.at(seconds=5)
        )
        assert b.summary(later) == [("RemoveContainer", "CreatedNeverStarted", "old")]

    def test_done_destructive_key_is_not_suppressed(self) -> None:
        # Level-triggered: the container is still there, so the removal did not take.
        c = b.created("old", created_at=b.ago(days=1))
        mem = ControllerMemory().with_done(f"RemoveContainer:{c.id}:CreatedNeverStarted", b.ago(minutes=1))
        assert b.summary(once(c, memory=mem)) == [("RemoveContainer", "CreatedNeverStarted", "old")]

    def test_expired_backoff_is_ignored(self) -> None:
        c = b.created("old", created_at=b.ago(days=1))
        key = f"RemoveContainer:{c.id}:CreatedNeverStarted"
        mem = ControllerMemory(attempts={key: Attempt(failures=3, next_attempt_at=b.ago(seconds=1))})
        assert b.summary(once(c, memory=mem)) == [("RemoveContainer", "CreatedNeverStarted", "old")]


class TestDomainsAndMemory:
    def test_docker_down_no_container_action_and_memory_kept(self) -> None:
        old = ContainerMemory(container_id="x" * 64, name="kept", first_seen_at=b.ago(days=1))
        mem = ControllerMemory(containers={old.container_id: old})
        p = once(b.created("old", created_at=b.ago(days=1)), memory=mem, down=(Domain.DOCKER,))
        assert p.actions == ()
        assert {d.why.value for d in p.deferred} == {"DomainUnavailable"}
        assert p.memory.containers == mem.containers

    def test_disappeared_containers_are_forgotten(self) -> None:
        c = b.created("new", created_at=b.ago(minutes=1))
        p1 = once(c)
        assert set(p1.memory.containers) == {c.id}
        assert p1.memory.containers[c.id].first_seen_at == b.T0
        p2 = once(memory=p1.memory)
        assert p2.memory.containers == {}

    def test_first_sighting_is_kept_across_passes(self) -> None:
        c = b.created("new", created_at=b.ago(minutes=1))
        p1 = once(c)
        p2 = plan(
            b.snapshot(observed_at=b.at(minutes=5), containers=[c]), b.desired(), p1.memory, b.at(minutes=5)
        )
        assert p2.memory.containers[c.id].first_seen_at == b.T0

    def test_plan_records_pass_time_and_keeps_outcomes(self) -> None:
        mem = (
            ControllerMemory().with_done("AlertAdmin:x", b.ago(days=1)).with_failure("k", "e", b.ago(days=1))
        )
        p = once(memory=mem)
        assert p.memory.last_pass_at == b.T0
        assert p.memory.done == mem.done
        assert p.memory.attempts == mem.attempts

    def test_next_due_at_is_the_earliest_deferral(self) -> None:
        p = once(b.created("a", created_at=b.ago(minutes=20)), b.created("z", created_at=b.ago(minutes=10)))
        assert p.next_due_at == b.at(minutes=10)

    def test_plan_json_is_serialisable_with_iso_evidence(self) -> None:
        import json

        cs = [over_runtime(f"g{i}") for i in range(2)]
        p = once(*cs, b.created("old", created_at=b.ago(days=1)), memory=warned(*cs))
        text = json.dumps(p.model_dump(mode="json"))
        assert "StopContainer" in text
        for a in p.actions:
            json.dumps(a.evidence)
            json.dumps(a.params.model_dump(mode="json"))
        for d in p.deferred:
            json.dumps(d.evidence)

    def test_every_action_is_due(self) -> None:
        cs = [over_runtime(f"g{i}") for i in range(2)]
        p = once(*cs, *stale_created(3), memory=warned(*cs))
        assert p.actions
        assert all(a.due_at <= b.T0 for a in p.actions)
        assert all(a.kind != ActionKind.STOP_CONTAINER or a.params.grace_s == 60.0 for a in p.actions)
        assert p.evaluated_at - p.observed_at == timedelta(0)


class TestMemoryFolding:
    def _running(self, t: datetime, cpu_ns: int) -> ContainerObs:
        sig = b.signals(t, cpu_usage_ns=cpu_ns, gpu_pct={b.GPU0: 0.0})
        return b.running("train", gpus=[b.GPU0], started_at=b.ago(hours=2), sig=sig)

    def test_planning_the_same_snapshot_twice_folds_it_once(self) -> None:
        snap = b.snapshot(containers=[self._running(b.T0, 0)], gpus=[b.gpu(0)])
        p1 = plan(snap, b.desired(), ControllerMemory(), b.T0)
        p2 = plan(snap, b.desired(), p1.memory, b.T0)
        assert p2.memory.containers == p1.memory.containers
        assert len(p2.memory.containers[b.cid("train")].samples) == 1

    def test_samples_are_dropped_once_the_container_stops(self) -> None:
        p1 = plan(
            b.snapshot(containers=[self._running(b.T0, 0)], gpus=[b.gpu(0)]),
            b.desired(),
            ControllerMemory(),
            b.T0,
        )
        stopped = b.exited("train", gpus=[b.GPU0], started_at=b.ago(hours=2), finished_at=b.at(minutes=1))
        t = b.at(minutes=2)
        p2 = plan(b.snapshot(observed_at=t, containers=[stopped], gpus=[b.gpu(0)]), b.desired(), p1.memory, t)
        mem = p2.memory.containers[stopped.id]
        assert mem.samples == ()
        assert mem.first_seen_at == b.T0
