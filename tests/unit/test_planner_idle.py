"""Rule 3, idle GPU containers: single-pass exceptions and multi-pass scenarios.

Multi-pass tests feed each plan's memory (plus the delivered warnings, as the executor records
them) into the next pass, advancing ``now`` and the container's cumulative counters.
Defaults: idle timeout 30 min, window 3 samples, grace 30 min, warn lead min(10 min, 20 %) = 6 min.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from controller.memory import ControllerMemory
from controller.plan.planner import plan
from controller.plan.types import Action, ActionKind, Plan, StopParams
from controller.snapshot import (
    ActivitySignals,
    ContainerObs,
    ContainerState,
    Domain,
    GpuObs,
    GpuProcessObs,
    KeepAlive,
    KeepAliveState,
    SignalSource,
)
from crd_like_specs.vocabulary import ContainerType
from desired_state.effective import EffectivePolicy, ExemptFrom, GlobalPolicy
from tests.fixtures import builders as b

STARTED = b.ago(hours=2)


class IdleHost:
    """One running GPU container observed at chosen minutes after T0."""

    def __init__(
        self,
        pol: EffectivePolicy | None = None,
        *,
        name: str = "train",
        gpus: tuple[str, ...] = (b.GPU0,),
        started_at: datetime = STARTED,
        others: tuple[ContainerObs, ...] = (),
        all_gpus: tuple[str, ...] = (b.GPU0, b.GPU1, b.GPU2, b.GPU3),
        host_gpus: tuple[GpuObs, ...] | None = None,
        deliver: bool = True,
        glob: GlobalPolicy | None = None,
    ) -> None:
        self.name = name
        self.gpus = gpus
        self.started_at = started_at
        self.id: str | None = None
        self.others = others
        self.all_gpus = all_gpus
        self.counters = b.Counters()
        self.host_gpus = host_gpus
        self.last_minute: float | None = None
        self.passes = b.Passes(b.desired(pol, glob), deliver=deliver)

    def container(
        self, minute: float, *, cpu_pct: float, gpu_pct: float | None, net: int, keep: KeepAlive
    ) -> ContainerObs:
        if self.last_minute is not None:
            self.counters.step((minute - self.last_minute) * 60, cpu_pct=cpu_pct, net_bytes=net)
        self.last_minute = minute
        sig = self.counters.read(b.at(minutes=minute), gpu_pct={g: gpu_pct for g in self.gpus}, keep=keep)
        return b.running(self.name, id=self.id, gpus=self.gpus, started_at=self.started_at, sig=sig)

    def at(
        self,
        minute: float,
        *,
        cpu_pct: float = 0.1,
        gpu_pct: float | None = 0.0,
        net: int = 0,
        keep: KeepAlive = b.NO_KEEPALIVE,
        down: tuple[Domain, ...] = (),
    ) -> Plan:
        c = self.container(minute, cpu_pct=cpu_pct, gpu_pct=gpu_pct, net=net, keep=keep)
        gpus = (
            list(self.host_gpus)
            if self.host_gpus is not None
            else [b.gpu(i, u) for i, u in enumerate(self.all_gpus)]
        )
        snap = b.snapshot(
            observed_at=b.at(minutes=minute), containers=[c, *self.others], gpus=gpus, down=down
        )
        return self.passes.run(snap)

    def idle_verdicts(self, p: Plan) -> list[tuple[str, str]]:
        return [(d.rule.value, d.why.value) for d in p.deferred if d.rule.value.startswith("Idle")]


def kinds(p: Plan) -> list[tuple[str, str]]:
    return [(a.kind.value, a.reason.value) for a in p.actions]


class TestIdleWarningsThenStop:
    def test_full_ladder_with_lead_time(self) -> None:
        h = IdleHost()
        assert kinds(h.at(0)) == []  # baseline
        assert h.idle_verdicts(h.passes.history[-1]) == [("IdleTimeout", "WaitingForWindow")]
        for minute in range(5, 30, 5):  # idle since minute 5
            assert kinds(h.at(minute)) == [], minute
        p30 = h.at(30)  # idle 25 min >= 80 % of 30
        assert kinds(p30) == [("WarnOwner", "IdleWarning")]
        warn = p30.actions[0]
        assert warn.params.level_pct == 80
        cid = b.cid("train")
        assert (
            warn.key == f"WarnOwner:{cid}:IdleWarning:80:{STARTED.isoformat()}:{b.at(minutes=5).isoformat()}"
        )
        assert warn.params.warning_key == f"idle:80:{STARTED.isoformat()}:{b.at(minutes=5).isoformat()}"
        p35 = h.at(35)  # idle 30 min: due, but the lead (6 min from minute 30) has not passed
        assert kinds(p35) == [("WarnOwner", "IdleWarning")]
        assert p35.actions[0].params.level_pct == 95
        assert h.idle_verdicts(p35) == [("IdleTimeout", "WaitingForWarning")]
        assert next(d for d in p35.deferred if d.rule.value == "IdleTimeout").due_at == b.at(minutes=36)
        p40 = h.at(40)
        assert b.summary(p40) == [("StopContainer", "IdleTimeout", "train")]
        stop = p40.actions[0]
        assert stop.params == StopParams(grace_s=60.0, remove=True)
        assert stop.key == f"StopContainer:{cid}:{STARTED.isoformat()}:IdleTimeout"
        assert stop.target.expected_started_at == STARTED
        assert stop.target.expected_state == "running"
        assert stop.evidence["first_warning_at"] == b.at(minutes=30).isoformat()
        assert stop.evidence["samples_in_streak"] == 8
        assert stop.due_at == b.at(minutes=36)

    def test_stop_never_in_the_same_pass_as_the_first_warning(self) -> None:
        # The notifier failed until minute 40: the stop is due but nobody was told.
        h = IdleHost(deliver=False)
        for minute in range(0, 36, 5):
            assert all(a.kind != ActionKind.STOP_CONTAINER for a in h.at(minute).actions)
        h.passes.deliver = True
        p = h.at(40)
        assert kinds(p) == [("WarnOwner", "IdleWarning")]
        assert h.idle_verdicts(p) == [("IdleTimeout", "WaitingForWarning")]
        wait = next(d for d in p.deferred if d.rule.value == "IdleTimeout")
        assert wait.due_at == b.at(minutes=46)
        assert kinds(h.at(45)) == []  # lead not over
        assert kinds(h.at(50)) == [("StopContainer", "IdleTimeout")]

    def test_controller_down_for_hours_starts_a_new_streak(self) -> None:
        # The first sample after a long outage is an unobserved span: when the container was last
        # active cannot be told, so the idle clock starts again after it (no stop on old evidence).
        h = IdleHost()
        for minute in (0, 5, 10, 15):
            h.at(minute)
        p = h.at(200)
        assert kinds(p) == []
        assert h.idle_verdicts(p) == [("IdleTimeout", "UnknownSignal")]
        acts = [(m, a.reason.value) for m in range(205, 241, 5) for a in h.at(m).actions]
        # A new streak from 205, with its own warnings (230, 235) and lead time: stopped at 240.
        assert acts == [(230, "IdleWarning"), (235, "IdleWarning"), (240, "IdleTimeout")]

    def test_the_warning_tells_the_owner_what_to_do_on_a_real_terminal(self) -> None:
        """Name, figures, stop time (local), the keep-alive, what is kept and lost, where to look."""
        import os
        import pwd
        import select
        from datetime import timedelta, timezone

        from controller.act.notify import Session, TerminalNotifier, notice_text

        h = IdleHost()
        warning = next(a for m in range(0, 31, 5) for a in h.at(m).actions if a.reason.value == "IdleWarning")
        local = timezone(timedelta(hours=1), "CET")
        text = notice_text(warning.params.model_dump(), warning.message, tz=local)
        stop = datetime.fromisoformat(str(warning.params.stop_expected_at).replace("Z", "+00:00"))
        assert f"Your container {h.name} has been idle for" in text and "(limit 30m)" in text
        assert f"stopped at {stop.astimezone(local).strftime('%Y-%m-%d %H:%M')} CET" in text
        assert (
            "touch /workspace/.keep-alive" in text
            and "a touch keeps it for up to 24h, and never beyond 24h after the file was first seen" in text
        )
        assert "What is kept: your files under /workspace" in text and "removed after the stop" in text
        assert f"ds01ctl describe container {h.name}" in text
        # delivered as such to a logged-in terminal
        me = pwd.getpwuid(os.geteuid()).pw_name
        master, slave = os.openpty()
        try:
            tty = os.ttyname(slave).removeprefix("/dev/")
            os.chmod(f"/dev/{tty}", 0o620)
            assert TerminalNotifier(sessions=lambda: [Session(me, tty)]).notify(me, text) == 1
            got = b""
            while select.select([master], [], [], 0.2)[0]:
                got += os.read(master, 65536)
            shown = got.decode()
            assert "touch /workspace/.keep-alive" in shown and f"ds01ctl describe container {h.name}" in shown
        finally:
            os.close(master)
            os.close(slave)

    def test_undelivered_warning_keeps_the_stop_waiting(self) -> None:
        h = IdleHost(deliver=False)  # e.g. the notifier keeps failing
        for minute in range(0, 300, 5):
            p = h.at(minute)
            assert all(a.kind != ActionKind.STOP_CONTAINER for a in p.actions), minute

    def test_activity_resets_streak_and_warnings(self) -> None:
        h = IdleHost()
        for minute in range(0, 31, 5):
            h.at(minute)
        assert [a.reason.value for a in h.passes.history[-1].actions] == ["IdleWarning"]
        assert kinds(h.at(35, cpu_pct=50)) == []  # busy
        # A new streak starts at minute 40 and needs its own warnings and lead time.
        for minute in range(40, 65, 5):
            assert kinds(h.at(minute)) == [], minute
        assert kinds(h.at(65)) == [("WarnOwner", "IdleWarning")]  # 25 min into the new streak

    def test_window_requires_enough_idle_samples(self) -> None:
        pol = b.policy(idle_timeout_s=10 * b.MIN, idle_detection_window=4)
        h = IdleHost(pol)
        h.at(0)
        h.at(5)
        h.at(10)
        p15 = h.at(15)  # idle for 10 min (timeout) but 3/4 samples
        assert kinds(p15) == [("WarnOwner", "IdleWarning")]
        assert h.idle_verdicts(p15) == [("IdleTimeout", "WaitingForWindow")]
        assert next(d for d in p15.deferred if d.rule.value == "IdleTimeout").due_at == b.at(minutes=20)
        assert kinds(h.at(20)) == [("StopContainer", "IdleTimeout")]  # lead = 2 min, warned at 15

    def test_min_duration_holds_the_stop(self) -> None:
        pol = b.policy(idle_timeout_s=5 * b.MIN, idle_min_duration_s=20 * b.MIN, idle_detection_window=1)
        h = IdleHost(pol)
        h.at(0)
        h.at(5)
        for minute in (10, 15, 20):
            assert all(a.kind != ActionKind.STOP_CONTAINER for a in h.at(minute).actions)
        assert kinds(h.at(25)) == [("StopContainer", "IdleTimeout")]

    def test_the_plan_says_when_the_min_duration_decides_not_the_timeout(self) -> None:
        pol = b.policy(idle_timeout_s=5 * b.MIN, idle_min_duration_s=20 * b.MIN, idle_detection_window=1)
        h = IdleHost(pol)
        h.at(0)
        h.at(5)
        p = h.at(15)  # idle 10 min: past the 5 min timeout, short of the 20 min span
        held = next(d for d in p.deferred if d.rule.value == "IdleTimeout")
        assert "idleMinDuration 20m" in held.message and "decides, not the idle timeout 5m" in held.message
        assert held.evidence["decided_by"].startswith("idleMinDuration 20m")
        assert held.due_at is not None
        assert datetime.fromisoformat(held.evidence["effective_stop_due_at"]) == held.due_at

    def test_the_stop_time_shown_and_announced_is_the_end_of_the_min_duration(self) -> None:
        """The timeout (5 min) comes before the minimum idle span (20 min): the stop comes when the
        span ends. The plan's stop time before the timeout, and the stop time the owner's warning
        announces, said 5 min plus the lead; both now say the span's end, when it comes."""
        from controller.plan.types import ClockEvidence, WarnParams

        pol = b.policy(idle_timeout_s=5 * b.MIN, idle_min_duration_s=20 * b.MIN, idle_detection_window=1)
        h = IdleHost(pol)
        h.at(0)
        early = h.at(2)
        held = next(d for d in early.deferred if d.rule.value == "IdleTimeout")
        clock = ClockEvidence.of(held)
        assert clock is not None and clock.clock_start is not None
        span_ends = clock.clock_start + timedelta(minutes=20)
        assert clock.stop_at() == span_ends
        warned = [a for minute in (4, 5, 6) for a in h.at(minute).actions if a.kind == ActionKind.WARN_OWNER]
        assert warned, "no warning before the timeout"
        for w in warned:
            announced = w.params_as(WarnParams).stop_expected_at
            assert announced is not None and datetime.fromisoformat(announced) == span_ends
        stops = [
            minute for minute in range(7, 30) if kinds(h.at(minute)) == [("StopContainer", "IdleTimeout")]
        ]
        assert stops and b.at(minutes=stops[0]) >= span_ends

    def test_high_demand_halves_the_timeout(self) -> None:
        # Every GPU of the host is used by a running container: demand 100 % >= 80 %.
        holders = tuple(
            b.running(f"h{i}", gpus=[g], started_at=b.ago(hours=1)) for i, g in enumerate(b.GPUS[1:])
        )
        h = IdleHost(others=holders)
        h.at(0)
        for minute in range(5, 17, 5):
            assert kinds(h.at(minute)) == []
        p = h.at(20)  # idle 15 min >= 15 min = 30 min x 0.5
        assert kinds(p) == [("WarnOwner", "IdleWarning")]
        assert p.actions[0].evidence["high_demand"] is True
        assert p.actions[0].evidence["timeout_s"] == 900

    def test_low_demand_keeps_the_timeout(self) -> None:
        h = IdleHost()
        h.at(0)
        p = h.at(5)
        idle = next(d for d in p.deferred if d.rule.value == "IdleTimeout")
        assert idle.evidence["high_demand"] is False
        assert idle.evidence["demand_fraction"] == 0.25


class TestIdleExceptions:
    def test_busy_gpu_is_never_idle(self) -> None:
        h = IdleHost()
        for minute in range(0, 300, 10):
            assert kinds(h.at(minute, cpu_pct=0.0, gpu_pct=100.0)) == [], minute

    def test_network_traffic_is_activity(self) -> None:
        h = IdleHost()
        for minute in range(0, 300, 10):
            assert kinds(h.at(minute, net=5_000_000)) == [], minute

    def test_grace_period_from_last_start(self) -> None:
        h = IdleHost(started_at=b.ago(minutes=10))
        p = h.at(0)
        assert h.idle_verdicts(p) == [("IdleTimeout", "GracePeriod")]
        assert next(d for d in p.deferred if d.rule.value == "IdleTimeout").due_at == b.at(minutes=20)

    def test_mig_unknown_utilization_falls_back_to_cpu_and_network(self) -> None:
        mig = b.ref(b.mig_uuid(1, 0), parent=b.GPU1)
        h = IdleHost(host_gpus=(b.gpu(0), b.gpu(1, mig_slots=2)))
        h.gpus = (mig.uuid,)  # type: ignore[assignment]
        for minute in range(0, 36, 5):
            h.at(minute, gpu_pct=None)
        assert kinds(h.passes.history[-1]) == [("WarnOwner", "IdleWarning")]

    def test_unknown_cpu_never_counts_as_idle(self) -> None:
        h = IdleHost()
        for minute in range(0, 300, 10):
            c = b.running(
                "train",
                gpus=[b.GPU0],
                started_at=STARTED,
                sig=b.signals(b.at(minutes=minute), cpu_usage_ns=None, gpu_pct={b.GPU0: 0.0}),
            )
            p = h.passes.run(b.snapshot(observed_at=b.at(minutes=minute), containers=[c], gpus=[b.gpu(0)]))
            assert kinds(p) == [], minute
        assert h.idle_verdicts(p) == [("IdleTimeout", "UnknownSignal")]

    def test_a_cpu_reading_from_the_process_tree_never_counts_as_idle(self) -> None:
        # No cgroup counter readable: the CPU is the main process's tree, which misses the work a
        # `docker exec` runs (its processes are not the main process's descendants). A quiet tree
        # proves nothing; a busy one is activity all the same.
        h = IdleHost()
        for minute in range(0, 300, 10):
            c = h.container(minute, cpu_pct=0.0, gpu_pct=0.0, net=0, keep=b.NO_KEEPALIVE)
            assert c.signals is not None
            tree = c.signals.model_copy(update={"cpu_source": SignalSource.PROCESS_TREE})
            c = c.model_copy(update={"signals": tree})
            p = h.passes.run(b.snapshot(observed_at=b.at(minutes=minute), containers=[c], gpus=[b.gpu(0)]))
            assert kinds(p) == [], minute
        assert h.idle_verdicts(p) == [("IdleTimeout", "UnknownSignal")]
        assert p.memory.containers[b.cid("train")].samples[-1].detail == (
            "unknown: cpu read from the main process tree, not the cgroup (docker exec work is not in it); "
            "gpu max 0.0%; cpu 0.0%; net 0B/s"
        )
        c = h.container(310, cpu_pct=50.0, gpu_pct=0.0, net=0, keep=b.NO_KEEPALIVE)
        assert c.signals is not None
        c = c.model_copy(
            update={"signals": c.signals.model_copy(update={"cpu_source": SignalSource.PROCESS_TREE})}
        )
        p = h.passes.run(b.snapshot(observed_at=b.at(minutes=310), containers=[c], gpus=[b.gpu(0)]))
        assert p.memory.containers[b.cid("train")].samples[-1].idle is False

    def test_an_older_active_reading_is_not_this_pass_s(self) -> None:
        # The last sample was active, but this pass's reading is not newer: unknown, not active.
        h = IdleHost()
        h.at(0, gpu_pct=100.0)
        c = h.container(5, cpu_pct=0.1, gpu_pct=100.0, net=0, keep=b.NO_KEEPALIVE)
        h.passes.run(b.snapshot(observed_at=b.at(minutes=5), containers=[c], gpus=[b.gpu(0)]))
        assert c.signals is not None
        older = c.model_copy(update={"signals": c.signals.model_copy(update={"read_at": b.at(minutes=4)})})
        p = h.passes.run(b.snapshot(observed_at=b.at(minutes=10), containers=[older], gpus=[b.gpu(0)]))
        assert h.idle_verdicts(p) == [("IdleTimeout", "UnknownSignal")]

    def test_an_active_reading_inside_the_grace_period_says_so(self) -> None:
        h = IdleHost(started_at=b.ago(minutes=10))
        h.at(0, gpu_pct=100.0)
        p = h.at(5, gpu_pct=100.0)
        assert h.idle_verdicts(p) == [("IdleTimeout", "GracePeriod")]

    def test_no_reading_this_pass_is_unknown(self) -> None:
        c = b.running("train", gpus=[b.GPU0], started_at=STARTED, sig=None)
        p = plan(b.snapshot(containers=[c], gpus=[b.gpu(0)]), b.desired(), ControllerMemory(), b.T0)
        assert [(d.rule.value, d.why.value) for d in p.deferred if d.rule.value == "IdleTimeout"] == [
            ("IdleTimeout", "UnknownSignal")
        ]

    def test_nvml_down_stops_no_gpu_container(self) -> None:
        h = IdleHost()
        for minute in range(0, 31, 5):
            h.at(minute)
        for minute in range(35, 200, 5):
            p = h.at(minute, down=(Domain.NVML,))
            assert kinds(p) == [], minute
            assert h.idle_verdicts(p) == [("IdleTimeout", "DomainUnavailable")]

    def test_streak_does_not_survive_an_nvml_outage(self) -> None:
        h = IdleHost()
        for minute in range(0, 26, 5):
            h.at(minute)
        h.at(30, down=(Domain.NVML,))
        for minute in range(35, 60, 5):
            assert kinds(h.at(minute)) == [], minute  # a new streak started at 35

    def test_non_gpu_container_is_never_idle_stopped(self) -> None:
        runner = b.Passes()
        counters = b.Counters()
        for minute in range(0, 300, 10):
            counters.step(600)
            c = b.running("web", started_at=STARTED, sig=counters.read(b.at(minutes=minute)))
            p = runner.run(b.snapshot(observed_at=b.at(minutes=minute), containers=[c]))
            assert p.actions == ()
            assert p.deferred == ()

    def test_devcontainer_without_idle_timeout_is_not_stopped(self) -> None:
        h = IdleHost(b.policy(idle_timeout_s=None, container_type=ContainerType.DEVCONTAINER.value))
        for minute in range(0, 300, 10):
            assert kinds(h.at(minute)) == []
        assert h.idle_verdicts(h.passes.history[-1]) == []

    def test_protected_and_monitoring_containers(self) -> None:
        for pol, why in ((b.policy(protected=True), "Protected"), (b.policy(monitoring=True), "Monitoring")):
            h = IdleHost(pol)
            for minute in range(0, 300, 10):
                assert kinds(h.at(minute)) == []
            assert h.idle_verdicts(h.passes.history[-1]) == [("IdleTimeout", why)]

    def test_exempt_owner_gets_one_notice_per_start_and_no_stop(self) -> None:
        h = IdleHost(b.policy(exemptions=[b.exemption(ExemptFrom.IDLE)]))
        notices = []
        for minute in range(0, 200, 5):
            p = h.at(minute)
            assert all(a.kind == ActionKind.WARN_OWNER for a in p.actions)
            notices += [(minute, a.reason.value) for a in p.actions]
        assert notices == [(35, "IdleExemptNotice")]
        assert h.idle_verdicts(h.passes.history[-1]) == [("IdleTimeout", "Exempt")]
        # A restart is a new start: one more notice at most.
        h.started_at = b.at(minutes=200)
        h.counters = b.Counters()
        h.last_minute = None
        later = [a.reason.value for m in range(230, 400, 5) for a in h.at(m).actions]
        assert later == ["IdleExemptNotice"]

    def test_expired_idle_exemption_no_longer_shields(self) -> None:
        h = IdleHost(b.policy(exemptions=[b.exemption(ExemptFrom.IDLE, expires_at=b.at(minutes=20))]))
        reasons = [(m, a.reason.value) for m in range(0, 45, 5) for a in h.at(m).actions]
        assert reasons == [(30, "IdleWarning"), (35, "IdleWarning"), (40, "IdleTimeout")]

    def test_a_warning_from_before_an_exemption_does_not_count_once_it_expires(self) -> None:
        # Warned at minute 30 (the stop announced for 36); at minute 35 a reload grants an idle
        # exemption until minute 120, and the owner is told the container is not stopped. It stays
        # idle. When the exemption expires the owner is warned again and the stop waits the full
        # lead (6 min): before, the old warning counted and the container was stopped at minute
        # 120, the pass the exemption ended, with no warning since "not stopped".
        h = IdleHost()
        reasons = [(m, a.reason.value) for m in range(0, 35, 5) for a in h.at(m).actions]
        h.passes.desired = b.desired(
            b.policy(exemptions=[b.exemption(ExemptFrom.IDLE, expires_at=b.at(minutes=120))])
        )
        reasons += [(m, a.reason.value) for m in range(35, 135, 5) for a in h.at(m).actions]
        assert reasons == [
            (30, "IdleWarning"),
            (35, "IdleExemptNotice"),
            (120, "IdleWarning"),
            (130, "IdleTimeout"),
        ]

    def test_runtime_exemption_does_not_shield_idle(self) -> None:
        h = IdleHost(b.policy(exemptions=[b.exemption(ExemptFrom.MAX_RUNTIME)]))
        reasons = [a.reason.value for m in range(0, 45, 5) for a in h.at(m).actions]
        assert reasons == ["IdleWarning", "IdleWarning", "IdleTimeout"]


class TestKeepAlive:
    def test_touching_every_pass_cannot_extend_past_the_cap(self) -> None:
        pol = b.policy(keepalive_max_age_s=b.HOUR)
        h = IdleHost(pol)
        seen: list[tuple[int, list[tuple[str, str]]]] = []
        for minute in range(0, 100, 5):
            p = h.at(minute, keep=b.keepalive(mtime=b.at(minutes=minute)))  # touched right before each pass
            seen.append((minute, kinds(p)))
        ka = next(d for d in h.passes.history[5].deferred if d.rule.value == "IdleTimeout")
        assert ka.why.value == "KeepAlive"
        assert ka.due_at == b.at(minutes=60)  # first seen at minute 0, capped at 1 h
        acts = [(m, k) for m, k in seen if k]
        # At minute 60 the cap ends: the idle stop is long due, so warn now and stop after the lead.
        assert acts[0] == (60, [("WarnOwner", "IdleWarning")])
        assert acts[1] == (70, [("StopContainer", "IdleTimeout")])

    def test_an_mtime_at_the_end_of_time_is_capped_like_any_future_one(self) -> None:
        # `touch -d @253402300000` on a tmpfs workspace: the last representable day. Adding the cap
        # to it overflowed, and every pass of the daemon failed while the file was there.
        h = IdleHost(b.policy(keepalive_max_age_s=b.HOUR))
        keep = b.keepalive(mtime=datetime(9999, 12, 31, 23, 46, 40, tzinfo=UTC))
        acts = [(m, a.reason.value) for m in range(0, 75, 5) for a in h.at(m, keep=keep).actions]
        assert acts == [(60, "IdleWarning"), (70, "IdleTimeout")]

    def test_replacing_the_file_does_not_renew_it(self) -> None:
        h = IdleHost(b.policy(keepalive_max_age_s=b.HOUR))
        acts = []
        for minute in range(0, 100, 5):
            keep = b.keepalive(mtime=b.at(minutes=minute), inode=1000 + minute)  # rm + touch each time
            acts += [(minute, a.reason.value) for a in h.at(minute, keep=keep).actions]
        assert acts[:2] == [(60, "IdleWarning"), (70, "IdleTimeout")]

    def test_keepalive_after_a_warning_means_a_fresh_warning_before_the_stop(self) -> None:
        h = IdleHost(b.policy(keepalive_max_age_s=b.HOUR))
        acts: list[tuple[int, str]] = []
        for minute in range(0, 115, 5):
            keep = b.keepalive(mtime=b.at(minutes=minute)) if minute >= 35 else b.NO_KEEPALIVE
            acts += [(minute, a.reason.value) for a in h.at(minute, keep=keep).actions]
        # Warned at 30; the owner touches the keep-alive (seen at 35, honoured one hour); when it
        # lapses at 95 the stop is long due, but the owner is warned again and gets the lead time.
        assert acts[:3] == [(30, "IdleWarning"), (95, "IdleWarning"), (105, "IdleTimeout")]

    def test_a_warning_after_the_keepalive_lapsed_does_not_tell_the_owner_to_touch_it(self) -> None:
        """Seen at 35 and honoured for its hour: the warning at 95 comes because it lapsed, and a
        touch now would change nothing (the cap runs from the first sighting). Telling the owner to
        touch it, as every notice did, was untrue; the notice says to use the container instead."""
        h = IdleHost(b.policy(keepalive_max_age_s=b.HOUR))
        warnings: dict[int, Action] = {}
        for minute in range(0, 100, 5):
            keep = b.keepalive(mtime=b.at(minutes=minute)) if minute >= 35 else b.NO_KEEPALIVE
            for a in h.at(minute, keep=keep).actions:
                if a.reason.value == "IdleWarning":
                    warnings[minute] = a
        assert sorted(warnings) == [30, 95]
        before, after = (str(warnings[m].params.notice) for m in (30, 95))
        assert (
            "To keep it: run `touch /workspace/.keep-alive` inside the container; "
            "a touch keeps it for up to 1h" in before
        )
        assert "touch /workspace/" not in after
        assert (
            "To keep it: use it (GPU, CPU or network). The keep-alive file /workspace/.keep-alive no longer "
            "keeps it: it was first seen 1h ago while the container was idle, and a touch keeps it for at "
            "most 1h after that."
        ) in after

    def test_a_warning_while_a_stale_keepalive_could_still_count_says_for_how_long(self) -> None:
        """A file seen from the start but last touched two days ago is not honoured; a touch now
        counts until a day after it was first seen: the notice says how much of that is left."""
        h = IdleHost()
        keep = b.keepalive(mtime=b.ago(days=2))
        warning = next(
            a for m in range(0, 45, 5) for a in h.at(m, keep=keep).actions if a.reason.value == "IdleWarning"
        )
        assert (
            "a touch now keeps it for at most 23h30m more (the file was first seen 30m ago while the "
            "container was idle, and counts for 24h from then)"
        ) in str(warning.params.notice)

    def test_symlink_keepalive_is_ignored(self) -> None:
        h = IdleHost()
        acts = [
            (m, a.reason.value)
            for m in range(0, 45, 5)
            for a in h.at(m, keep=b.keepalive(KeepAliveState.LINK)).actions
        ]
        assert acts == [(30, "IdleWarning"), (35, "IdleWarning"), (40, "IdleTimeout")]

    def test_a_warning_never_tells_the_owner_to_touch_a_keepalive_that_is_ignored(self) -> None:
        """A link (say one shared file linked into every container) or a FIFO is never honoured:
        `touch` follows the link and leaves it a link. The notice told the owner to touch it, the
        owner did, and the container was stopped at the end of the lead all the same."""
        for state, why in ((KeepAliveState.LINK, "link"), (KeepAliveState.NOT_REGULAR, "not-regular")):
            h = IdleHost()
            keep = b.keepalive(state)
            warning = next(
                a
                for m in range(0, 35, 5)
                for a in h.at(m, keep=keep).actions
                if a.reason.value == "IdleWarning"
            )
            notice = str(warning.params.notice)
            assert "touch /workspace/" not in notice, state
            assert (
                "To keep it: use it (GPU, CPU or network), or make /workspace/.keep-alive a regular file of "
                f"its own, with no link on its path: the one there now is ignored ({why}), and touching it "
                "changes nothing."
            ) in notice, notice

    def test_stale_mtime_is_ignored(self) -> None:
        h = IdleHost()
        keep = b.keepalive(mtime=b.ago(days=2))
        acts = [(m, a.reason.value) for m in range(0, 45, 5) for a in h.at(m, keep=keep).actions]
        assert acts == [(30, "IdleWarning"), (35, "IdleWarning"), (40, "IdleTimeout")]


class TestStateIsPerStartAndPerId:
    def test_restart_resets_grace_streak_and_warnings(self) -> None:
        h = IdleHost()
        for minute in range(0, 31, 5):
            h.at(minute)
        assert kinds(h.passes.history[-1]) == [("WarnOwner", "IdleWarning")]
        h.started_at = b.at(minutes=32)  # restarted; counters restart too
        h.counters = b.Counters()
        h.last_minute = None
        p = h.at(35)
        assert kinds(p) == []
        assert h.idle_verdicts(p) == [("IdleTimeout", "GracePeriod")]
        mem = p.memory.containers[b.cid("train")]
        assert mem.started_at == b.at(minutes=32)
        assert mem.warnings == {}
        assert len(mem.samples) == 1
        acts = [(m, a.reason.value) for m in range(40, 140, 5) for a in h.at(m).actions]
        # Grace until 62, baseline at 40 then idle samples; first idle sample after grace at 65.
        assert acts[:3] == [(90, "IdleWarning"), (95, "IdleWarning"), (100, "IdleTimeout")]

    def test_recreated_container_with_same_name_does_not_inherit(self) -> None:
        h = IdleHost()
        for minute in range(0, 31, 5):
            h.at(minute)
        old_id = b.cid("train")
        h.id = "f" * 64  # same name, new container
        h.started_at = b.at(minutes=31)
        h.counters = b.Counters()
        h.last_minute = None
        p = h.at(35)
        assert kinds(p) == []
        assert set(p.memory.containers) == {"f" * 64}
        assert old_id not in p.memory.containers


def test_idle_stop_keeps_remove_policy() -> None:
    h = IdleHost(b.policy(remove_after_idle_stop=False, sigterm_grace_s=30.0))
    stops = [a for m in range(0, 45, 5) for a in h.at(m).actions if a.kind == ActionKind.STOP_CONTAINER]
    assert [a.params for a in stops] == [StopParams(grace_s=30.0, remove=False)]


def test_paused_gpu_container_is_not_idle_stopped() -> None:
    c = b.container("p", state=ContainerState.PAUSED, gpus=[b.GPU0], started_at=b.ago(days=3))
    p = plan(b.snapshot(containers=[c], gpus=[b.gpu(0)]), b.desired(), ControllerMemory(), b.T0)
    assert p.actions == ()
    assert p.deferred == ()


class TestWhichGpusCount:
    def _passes(
        self,
        c_for: Callable[[ActivitySignals], ContainerObs],
        gpus: list[GpuObs],
        processes: tuple[GpuProcessObs, ...] = (),
    ) -> list[tuple[int, str]]:
        runner = b.Passes()
        counters = b.Counters()
        acts: list[tuple[int, str]] = []
        for minute in range(0, 45, 5):
            counters.step(300, cpu_pct=0.1)
            c = c_for(counters.read(b.at(minutes=minute)))
            snap = b.snapshot(
                observed_at=b.at(minutes=minute), containers=[c], gpus=gpus, processes=processes
            )
            acts += [(minute, a.reason.value) for a in runner.run(snap).actions]
        return acts

    def test_all_gpus_container_is_busy_when_any_gpu_is(self) -> None:
        def mk(sig: ActivitySignals) -> ContainerObs:
            return b.running("cuda", all_gpus=True, started_at=STARTED, sig=sig)

        busy = [b.gpu(0, util_pct=0.0), b.gpu(1, util_pct=80.0)]
        assert self._passes(mk, busy) == []
        idle = [b.gpu(0, util_pct=0.0), b.gpu(1, util_pct=0.0)]
        assert self._passes(mk, idle) == [(30, "IdleWarning"), (35, "IdleWarning"), (40, "IdleTimeout")]

    def test_a_gpu_its_process_computes_on_counts_though_it_references_another(self) -> None:
        # `--gpus device=1 --privileged`: every GPU's device node is there, and CUDA's cuda:0 is
        # GPU 0. The job on GPU 0 is reported to the admin, and keeps its container from being idle.
        def mk(sig: ActivitySignals) -> ContainerObs:
            return b.running("priv", gpus=[b.GPU1], started_at=STARTED, sig=sig)

        gpus = [b.gpu(0, util_pct=100.0), b.gpu(1, util_pct=0.0)]
        on_gpu0 = (b.process(4242, b.GPU0, container_id=b.cid("priv"), container_exists=True),)
        assert self._passes(mk, gpus, on_gpu0) == [(0, "ForeignProcessOnGpu")]
        assert self._passes(mk, gpus) == [(30, "IdleWarning"), (35, "IdleWarning"), (40, "IdleTimeout")]

    def test_unresolved_reference_counts_every_gpu(self) -> None:
        def mk(sig: ActivitySignals) -> ContainerObs:
            return b.running("odd", gpus=[b.unresolved_ref("7")], started_at=STARTED, sig=sig)

        assert self._passes(mk, [b.gpu(0, util_pct=50.0)]) == []


def test_each_policy_judges_its_own_containers_readings_in_one_pass() -> None:
    """The pass builds idle thresholds once per policy: two containers with other thresholds, read
    alike, are judged each by its own (one idle at a CPU threshold of 50 %, one active at 5 %)."""
    strict, loose = b.policy(cpu_idle_threshold_pct=50.0), b.policy(cpu_idle_threshold_pct=5.0)
    desired = b.desired(per_container={"strict": strict, "loose": loose})
    counters = {"strict": b.Counters(), "loose": b.Counters()}

    def host(minute: float) -> list[ContainerObs]:
        out = []
        for name, counter in counters.items():
            if minute:
                counter.step(minute * 60, cpu_pct=20.0)
            sig = counter.read(b.at(minutes=minute), gpu_pct={b.GPU0 if name == "strict" else b.GPU1: 0.0})
            gpu = b.GPU0 if name == "strict" else b.GPU1
            out.append(b.running(name, gpus=[gpu], started_at=STARTED, sig=sig))
        return out

    gpus = [b.gpu(0), b.gpu(1)]
    first = plan(b.snapshot(containers=host(0), gpus=gpus), desired, ControllerMemory(), b.at(minutes=0))
    later = b.at(minutes=1)
    second = plan(b.snapshot(observed_at=later, containers=host(1), gpus=gpus), desired, first.memory, later)
    verdicts = {m.name: m.samples[-1].idle for m in second.memory.containers.values()}
    assert verdicts == {"strict": True, "loose": False}


class TestTheStopDoesWhatTheWarningSaid:
    """Each idle warning tells the owner whether the stop keeps the container or removes it
    (``removeAfterIdleStop``). A reload between the warning and the stop that turned the removal on
    removed a container whose owner was told it would be kept (its files outside /workspace lost)."""

    @staticmethod
    def _policy(removes: bool) -> EffectivePolicy:
        return b.policy(remove_after_idle_stop=removes)

    def _warned_then_reloaded(self, warned_with: bool, stopped_with: bool) -> tuple[IdleHost, Plan]:
        h = IdleHost(self._policy(warned_with))
        for minute in range(0, 36, 5):
            h.at(minute)  # warned at 30 and 35, as in test_full_ladder_with_lead_time
        told = [a for p in h.passes.history for a in p.actions if a.kind == ActionKind.WARN_OWNER]
        assert len(told) == 2
        said = "the container itself is removed after the stop"
        assert all((said in a.params.notice) == warned_with for a in told), told[0].params.notice
        h.passes.desired = b.desired(self._policy(stopped_with))  # the admin's reload
        return h, h.at(40)

    def test_turned_on_after_a_kept_warning_warns_again_before_removing(self) -> None:
        h, p40 = self._warned_then_reloaded(warned_with=False, stopped_with=True)
        # Not the stop that was due at 36: a new warning, saying the container is removed.
        assert kinds(p40) == [("WarnOwner", "IdleWarning")]
        assert "the container itself is removed after the stop" in p40.actions[0].params.notice
        assert h.idle_verdicts(p40) == [("IdleTimeout", "WaitingForWarning")]
        p45 = h.at(45)  # the lead (6 min from 40) has not passed
        assert all(a.kind != ActionKind.STOP_CONTAINER for a in p45.actions)
        p50 = h.at(50)
        stops = [a for a in p50.actions if a.kind == ActionKind.STOP_CONTAINER]
        assert len(stops) == 1 and stops[0].params == StopParams(grace_s=60.0, remove=True)
        assert stops[0].evidence["first_warning_at"] == b.at(minutes=40).isoformat()

    def test_turned_off_after_a_removal_warning_warns_again_before_keeping(self) -> None:
        h, p40 = self._warned_then_reloaded(warned_with=True, stopped_with=False)
        assert kinds(p40) == [("WarnOwner", "IdleWarning")]
        assert "What is kept: your files under /workspace and " in p40.actions[0].params.notice
        p50 = h.at(50)
        stops = [a for a in p50.actions if a.kind == ActionKind.STOP_CONTAINER]
        assert len(stops) == 1 and stops[0].params == StopParams(grace_s=60.0, remove=False)

    def test_unchanged_the_stop_comes_at_its_time(self) -> None:
        for removes in (True, False):
            _h, p40 = self._warned_then_reloaded(warned_with=removes, stopped_with=removes)
            assert b.summary(p40) == [("StopContainer", "IdleTimeout", "train")], removes
            assert p40.actions[0].params == StopParams(grace_s=60.0, remove=removes)
