"""Rule 4, max runtime since the last start: warnings at 75 % and 90 %, then a stop (not a removal)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from controller.memory import ControllerMemory
from controller.plan.planner import plan
from controller.plan.types import Plan, StopParams
from controller.snapshot import ContainerObs
from desired_state.effective import EffectivePolicy, ExemptFrom
from tests.fixtures import builders as b

# A 10 h limit: warnings at 7.5 h and 9 h, lead min(10 min, 2 h) = 10 min.
LIMIT = b.policy(max_runtime_s=10 * b.HOUR, idle_timeout_s=None)


def busy(name: str = "job", started_at: datetime | None = None, minute: float = 0) -> ContainerObs:
    """A running GPU container that is busy on the GPU (so only the runtime rule can act)."""
    sig = b.signals(b.at(minutes=minute), gpu_pct={b.GPU0: 99.0})
    return b.running(name, gpus=[b.GPU0], started_at=started_at or b.ago(hours=1), sig=sig)


def once(
    *containers: ContainerObs, pol: EffectivePolicy = LIMIT, memory: ControllerMemory | None = None
) -> Plan:
    snap = b.snapshot(containers=containers, gpus=[b.gpu(0), b.gpu(1)])
    return plan(snap, b.desired(pol), memory or ControllerMemory(), b.T0)


def runtime_deferrals(p: Plan) -> list[tuple[str, str]]:
    return [(d.rule.value, d.why.value) for d in p.deferred if d.rule.value.startswith("MaxRuntime")]


class TestMaxRuntime:
    def test_the_notices_say_when_the_stopped_container_is_removed(self) -> None:
        """A GPU container stopped for its runtime is removed 15 min later (the GPU hold): the
        warning and the notice after the stop said the stopped container is kept."""
        from controller.plan.types import WarnParams

        runner = b.Passes(b.desired(LIMIT))
        for minute in range(0, 11 * 60, 15):
            snap = b.snapshot(
                observed_at=b.at(minutes=minute), containers=[busy(started_at=b.T0, minute=minute)]
            )
            runner.run(snap)
        actions = [a for p in runner.history for a in p.actions]
        kept = "the stopped container for 15m after the stop (then it is removed)"
        warning = next(a for a in actions if a.reason.value == "MaxRuntimeWarning")
        assert f"What is kept: your files under /workspace and {kept}" in (
            warning.params_as(WarnParams).notice or ""
        )
        stop = next(a for a in actions if a.reason.value == "MaxRuntimeExceeded")
        assert stop.evidence["kept_after_stop"] == kept
        # The same hold as a number, which the executor records as what the owner was told.
        assert stop.evidence["kept_after_stop_s"] == 15 * 60 and stop.promised_hold_s() == 15 * 60

    def test_not_due_is_deferred_until_first_warning(self) -> None:
        start = b.ago(hours=1)
        p = once(busy(started_at=start))
        assert p.actions == ()
        assert runtime_deferrals(p) == [("MaxRuntimeExceeded", "NotDue")]
        assert p.deferred[0].due_at == start + (b.at(hours=7.5) - b.T0)

    def test_warnings_then_stop_with_lead(self) -> None:
        start = b.T0
        runner = b.Passes(b.desired(LIMIT))
        log: list[tuple[float, str]] = []
        for minute in range(0, 11 * 60, 15):
            snap = b.snapshot(
                observed_at=b.at(minutes=minute), containers=[busy(started_at=start, minute=minute)]
            )
            log += [(minute / 60, a.reason.value) for a in runner.run(snap).actions]
        assert log[:3] == [
            (7.5, "MaxRuntimeWarning"),
            (9.0, "MaxRuntimeWarning"),
            (10.0, "MaxRuntimeExceeded"),
        ]
        stop = next(a for p in runner.history for a in p.actions if a.reason.value == "MaxRuntimeExceeded")
        assert stop.params == StopParams(grace_s=60.0, remove=False)
        assert stop.key == f"StopContainer:{b.cid('job')}:{start.isoformat()}:MaxRuntimeExceeded"
        warn = runner.history[30].actions[0]
        assert warn.params.warning_key == f"runtime:75:{start.isoformat()}"

    def test_first_warning_when_already_over_the_limit_delays_the_stop(self) -> None:
        runner = b.Passes(b.desired(LIMIT))
        c = busy(started_at=b.ago(hours=30))
        p1 = runner.run(b.snapshot(containers=[c]))
        assert b.summary(p1) == [("WarnOwner", "MaxRuntimeWarning", "job")]
        assert p1.actions[0].params.level_pct == 90
        assert runtime_deferrals(p1) == [("MaxRuntimeExceeded", "WaitingForWarning")]
        p2 = runner.run(b.snapshot(observed_at=b.at(minutes=5), containers=[c]), b.at(minutes=5))
        assert p2.actions == ()
        p3 = runner.run(b.snapshot(observed_at=b.at(minutes=10), containers=[c]), b.at(minutes=10))
        assert b.summary(p3) == [("StopContainer", "MaxRuntimeExceeded", "job")]

    @pytest.mark.parametrize("warned_at_min", [0, 1])
    def test_a_late_first_warning_moves_the_stop_time_the_plan_shows(self, warned_at_min: int) -> None:
        # The daemon was away: the first warning (90 %) goes out 8 minutes before the limit, and
        # the stop waits the full 10-minute lead after it. Before the limit, the deferral (what
        # plan, describe and NEXT show) names the time the daemon keeps, not the limit.
        runner = b.Passes(b.desired(LIMIT))
        start = b.ago(hours=10) + timedelta(minutes=8 + warned_at_min)
        for minute in range(warned_at_min, warned_at_min + 2):
            at = b.at(minutes=minute)
            p = runner.run(b.snapshot(observed_at=at, containers=[busy(started_at=start, minute=minute)]), at)
            (d,) = [d for d in p.deferred if d.rule.value == "MaxRuntimeExceeded"]
            warned = b.at(minutes=warned_at_min)
            assert d.due_at == warned + timedelta(minutes=10), minute
            assert d.evidence["stop_due_at"] == (warned + timedelta(minutes=10)).isoformat()
        stops = []
        for minute in range(warned_at_min + 2, warned_at_min + 12):
            at = b.at(minutes=minute)
            p = runner.run(b.snapshot(observed_at=at, containers=[busy(started_at=start, minute=minute)]), at)
            stops += [minute for a in p.actions if a.reason.value == "MaxRuntimeExceeded"]
        assert stops[0] == warned_at_min + 10  # the time shown is the time it comes

    def test_restart_resets_the_clock(self) -> None:
        memory = once(busy(started_at=b.ago(hours=9.5))).memory
        p = once(busy(started_at=b.ago(minutes=1)), memory=memory)
        assert p.actions == ()
        assert runtime_deferrals(p) == [("MaxRuntimeExceeded", "NotDue")]

    def test_exemption_defers_without_warnings(self) -> None:
        pol = b.policy(
            max_runtime_s=10 * b.HOUR,
            idle_timeout_s=None,
            exemptions=[b.exemption(ExemptFrom.MAX_RUNTIME, expires_at=b.at(days=2))],
        )
        p = once(busy(started_at=b.ago(hours=30)), pol=pol)
        assert p.actions == ()
        assert runtime_deferrals(p) == [("MaxRuntimeExceeded", "Exempt")]
        assert p.deferred[0].due_at == b.at(days=2)

    @pytest.mark.parametrize(
        "shield",
        [
            b.policy(
                max_runtime_s=10 * b.HOUR,
                idle_timeout_s=None,
                exemptions=[b.exemption(ExemptFrom.MAX_RUNTIME)],
            ),
            b.policy(max_runtime_s=10 * b.HOUR, idle_timeout_s=None, protected=True),
            b.policy(max_runtime_s=None, idle_timeout_s=None),
        ],
        ids=["exempt", "protected", "no limit"],
    )
    def test_a_warning_from_before_a_shield_does_not_count_once_it_ends(
        self, shield: EffectivePolicy
    ) -> None:
        # Warned at 7.5 h (the stop announced for 10 h); from 8 h a reload shields the job from
        # the limit (an exemption, protection, no limit) until 12 h. When the shield ends the old
        # warning does not count: the owner is warned again and the stop waits the full lead (10
        # min). Before, the job was stopped at 12 h, the pass the shield ended, unwarned since.
        runner = b.Passes(b.desired(LIMIT))
        log: list[tuple[float, list[tuple[str, str, str]]]] = []
        for minute in range(0, 12 * 60 + 16, 15):
            runner.desired = b.desired(shield if 8 * 60 <= minute < 12 * 60 else LIMIT)
            snap = b.snapshot(
                observed_at=b.at(minutes=minute), containers=[busy(started_at=b.T0, minute=minute)]
            )
            p = runner.run(snap)
            if p.actions:
                log.append((minute / 60, b.summary(p)))
        assert log == [
            (7.5, [("WarnOwner", "MaxRuntimeWarning", "job")]),
            (12.0, [("WarnOwner", "MaxRuntimeWarning", "job")]),
            (12.25, [("StopContainer", "MaxRuntimeExceeded", "job")]),
        ]

    def test_idle_exemption_does_not_shield_runtime(self) -> None:
        pol = b.policy(
            max_runtime_s=10 * b.HOUR, idle_timeout_s=None, exemptions=[b.exemption(ExemptFrom.IDLE)]
        )
        p = once(busy(started_at=b.ago(hours=30)), pol=pol)
        assert b.summary(p) == [("WarnOwner", "MaxRuntimeWarning", "job")]

    def test_no_limit_means_never(self) -> None:
        p = once(busy(started_at=b.ago(days=300)), pol=b.policy(max_runtime_s=None, idle_timeout_s=None))
        assert p.actions == ()
        assert p.deferred == ()

    def test_protected_and_monitoring(self) -> None:
        for pol, why in (
            (b.policy(max_runtime_s=60.0, protected=True), "Protected"),
            (b.policy(max_runtime_s=60.0, monitoring=True), "Monitoring"),
        ):
            p = once(busy(started_at=b.ago(days=3)), pol=pol)
            assert p.actions == ()
            assert runtime_deferrals(p) == [("MaxRuntimeExceeded", why)]

    def test_non_gpu_container_has_no_runtime_limit(self) -> None:
        c = b.running("web", started_at=b.ago(days=30), sig=b.signals(b.T0))
        assert once(c).actions == ()

    def test_one_stop_when_idle_and_runtime_are_both_due(self) -> None:
        # Both rules warned earlier (the world model does not carry out the stops); when both stops
        # are due in one pass, only the max-runtime stop is planned: it keeps the container.
        runner = b.Passes(b.desired(b.policy(max_runtime_s=10 * b.HOUR)))
        for minute in (40, 35, 30, 25, 20, 15, 10, 5, 0):
            t = b.ago(minutes=minute)
            sig = b.signals(t, gpu_pct={b.GPU0: 0.0})
            c = b.running("both", gpus=[b.GPU0], started_at=b.ago(hours=30), sig=sig)
            p = runner.run(b.snapshot(observed_at=t, containers=[c], gpus=[b.gpu(0)]))
        assert b.summary(p) == [("StopContainer", "MaxRuntimeExceeded", "both")]
        assert p.actions[0].evidence["idle_stop_also_due"].endswith(":IdleTimeout")
