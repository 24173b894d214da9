"""The forecast (``controller.plan.forecast``): the daemon's passes simulated until a later time.

The issue's cases: a 1 h max runtime forecast two hours ahead lists the 75 % and 90 % warnings
and the stop at start + 1 h (one pass at +2 h with today's memory said "running for 2h (90% of
1h)" and put the stop at +2h10m); a candidate with a 1 s max runtime shows the stop within five
minutes; an idle container with a keep-alive is stopped at the keep-alive's cap (plus the lead).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.memory import ControllerMemory
from controller.plan.forecast import Change, Forecast, compare, forecast
from controller.plan.planner import plan
from controller.plan.types import ActionKind, ResourceUpdate, StopParams, WarnParams
from controller.snapshot import ContainerObs, ResourceLimits
from desired_state.effective import ResourceSpec, Sourced
from tests.fixtures import builders as b
from tests.fixtures.local_zone import utc_clock  # noqa: F401 (the fixture)

INTERVAL_S = 30.0


def busy(name: str = "job", *, started_at: datetime, gpu_pct: float = 99.0) -> ContainerObs:
    sig = b.signals(b.T0, cpu_usage_ns=0, net_bytes=0, gpu_pct={b.GPU0: gpu_pct})
    return b.running(name, gpus=[b.GPU0], started_at=started_at, sig=sig)


def steps(f: Forecast) -> list[tuple[str, str, datetime]]:
    return [(p.action.kind.value, p.action.reason.value, p.pass_at) for p in f.actions]


def run(
    *containers: ContainerObs,
    hours: float = 2,
    memory: ControllerMemory | None = None,
    **pol: object,
) -> Forecast:
    snap = b.snapshot(containers=containers, gpus=[b.gpu(0)])
    desired = b.desired(b.policy(**pol))  # type: ignore[arg-type]
    return forecast(
        snap, desired, memory or ControllerMemory(), until=b.at(hours=hours), interval_s=INTERVAL_S
    )


def near(when: datetime, expected: datetime, slack_s: float = 1.0) -> bool:
    return timedelta(0) <= when - expected <= timedelta(seconds=slack_s)


class TestMaxRuntime:
    def test_one_hour_limit_two_hours_ahead_warns_at_75_and_90_and_stops_at_one_hour(self) -> None:
        start = b.ago(minutes=1)
        f = run(busy(started_at=start), max_runtime_s=b.HOUR, idle_timeout_s=None)
        got = steps(f)
        assert [(k, r) for k, r, _ in got] == [
            ("WarnOwner", "MaxRuntimeWarning"),
            ("WarnOwner", "MaxRuntimeWarning"),
            ("StopContainer", "MaxRuntimeExceeded"),
            # Stopped, it stays stopped: the GPU hold after a stop (15 min) then removes it.
            ("RemoveContainer", "GpuHoldExpired"),
        ]
        assert near(got[0][2], start + timedelta(minutes=45))
        assert near(got[1][2], start + timedelta(minutes=54))
        assert near(got[2][2], start + timedelta(hours=1))
        assert near(got[3][2], start + timedelta(hours=1, minutes=15))
        warn75, warn90, stop, _ = (p.action for p in f.actions)
        assert warn75.params_as(WarnParams).level_pct == 75 and warn90.params_as(WarnParams).level_pct == 90
        assert "running for 45m (75% of 1h)" in warn75.message
        assert "running for 54m (90% of 1h)" in warn90.message
        assert stop.due_at == start + timedelta(hours=1)
        assert not f.truncated
        assert f.deferred == ()

    def test_the_old_one_pass_answer_was_wrong_by_more_than_an_hour(self) -> None:
        """What `plan --at +2h` printed before: one pass at +2 h with today's memory."""
        start = b.ago(minutes=1)
        snap = b.snapshot(containers=[busy(started_at=start)], gpus=[b.gpu(0)])
        desired = b.desired(b.policy(max_runtime_s=b.HOUR, idle_timeout_s=None))
        one = plan(snap, desired, ControllerMemory(), b.at(hours=2))
        assert [a.kind for a in one.actions] == [ActionKind.WARN_OWNER]
        f = forecast(snap, desired, ControllerMemory(), until=b.at(hours=2), interval_s=INTERVAL_S)
        stop = next(p for p in f.actions if p.action.kind == ActionKind.STOP_CONTAINER)
        assert near(stop.pass_at, start + timedelta(hours=1))

    def test_a_candidate_with_a_one_second_limit_stops_within_five_minutes(self) -> None:
        start = b.ago(minutes=1)
        c = busy(started_at=start)
        current = run(c, hours=5 / 60, max_runtime_s=b.HOUR, idle_timeout_s=None)
        candidate = run(c, hours=5 / 60, max_runtime_s=1.0, idle_timeout_s=None)
        assert current.actions == ()
        kinds = [(k, r) for k, r, _ in steps(candidate)]
        assert kinds == [("WarnOwner", "MaxRuntimeWarning"), ("StopContainer", "MaxRuntimeExceeded")]
        # Already over the limit: warned now, stopped after the lead (20% of 1 s).
        assert near(candidate.actions[1].pass_at, b.T0 + timedelta(seconds=0.2))
        diff = compare(current, candidate, [c])
        assert [(d.container, d.change) for d in diff] == [("job", Change.NEWLY)]
        assert diff[0].current_at is None and diff[0].candidate_at == candidate.actions[1].pass_at

    def test_the_daemons_memory_is_the_starting_point(self) -> None:
        """A warning the daemon already delivered is not predicted again, and its time holds."""
        start = b.ago(minutes=50)
        c = busy(started_at=start)
        snap = b.snapshot(containers=[c], gpus=[b.gpu(0)])
        desired = b.desired(b.policy(max_runtime_s=b.HOUR, idle_timeout_s=None))
        first = plan(snap, desired, ControllerMemory(), b.T0)
        memory = b.record_outcomes(first, delivered_at=b.ago(minutes=5))
        f = forecast(snap, desired, memory, until=b.at(hours=1), interval_s=INTERVAL_S)
        got = steps(f)
        assert [(k, r) for k, r, _ in got] == [
            ("WarnOwner", "MaxRuntimeWarning"),
            ("StopContainer", "MaxRuntimeExceeded"),
            ("RemoveContainer", "GpuHoldExpired"),
        ]
        assert near(got[0][2], start + timedelta(minutes=54))
        assert near(got[1][2], start + timedelta(hours=1))


class TestIdle:
    def test_idle_container_with_a_keepalive_is_stopped_at_the_keepalive_cap(self) -> None:
        """Idle for an hour with a 30 min timeout, but a keep-alive touched 10 minutes ago with a
        1 h cap: honoured until its cap, then warned (with the lead) and stopped."""
        started = b.ago(hours=3)
        ka = b.keepalive(mtime=b.ago(minutes=10))
        prev = b.signals(b.ago(seconds=30), gpu_pct={b.GPU0: 0.0}, keep=ka)
        now_sig = b.signals(b.T0, gpu_pct={b.GPU0: 0.0}, keep=ka)
        c_prev = b.running("idler", gpus=[b.GPU0], started_at=started, sig=prev)
        c = b.running("idler", gpus=[b.GPU0], started_at=started, sig=now_sig)
        # No high-demand reduction: the timeout is 30 min, so the lead is min(10 min, 20 %) = 6 min.
        pol = b.policy(keepalive_max_age_s=b.HOUR, max_runtime_s=None, high_demand_idle_reduction=1.0)
        desired = b.desired(pol)
        # The daemon's memory: it has watched the container for a while (two samples).
        m1 = plan(
            b.snapshot(observed_at=b.ago(seconds=30), containers=[c_prev], gpus=[b.gpu(0)]),
            desired,
            ControllerMemory(),
            b.ago(seconds=30),
        ).memory
        snap = b.snapshot(containers=[c], gpus=[b.gpu(0)])
        f = forecast(snap, desired, m1, until=b.at(hours=3), interval_s=INTERVAL_S)
        cap = b.ago(minutes=10) + timedelta(hours=1)
        kinds = [(k, r) for k, r, _ in steps(f)]
        assert kinds[-1] == ("StopContainer", "IdleTimeout")
        assert ("WarnOwner", "IdleWarning") in kinds
        first_warn = next(p for p in f.actions if p.action.kind == ActionKind.WARN_OWNER)
        assert near(first_warn.pass_at, cap, slack_s=INTERVAL_S)
        stop = f.actions[-1]
        assert near(stop.pass_at, cap + timedelta(minutes=6), slack_s=INTERVAL_S)
        assert stop.action.params_as(StopParams).remove is True

    def test_busy_container_stays_busy(self) -> None:
        started = b.ago(hours=3)
        c = busy("worker", started_at=started)
        f = run(c, hours=4, max_runtime_s=None)
        assert f.actions == ()

    def test_unknown_activity_is_not_idle(self) -> None:
        """No earlier reading and no running time: no rate, so no idle stop is forecast."""
        started = b.ago(hours=3)
        sig = b.signals(b.T0, gpu_pct={b.GPU0: 0.0})
        c = b.running("fresh", gpus=[b.GPU0], started_at=started, sig=sig)
        f = run(c, hours=4, max_runtime_s=None)
        assert f.actions == ()
        assert any("activity rate unknown now for fresh" in a for a in f.assumptions)
        assert any(d.why.value == "UnknownSignal" for d in f.deferred)


class TestLedger:
    def test_a_leaked_row_is_released_once_and_is_gone_after(self) -> None:
        """The release removes the row from the simulated ledger, as the executor does."""
        leaked = b.ledger_entry("gone", b.GPU0, allocated_at=b.ago(minutes=6))
        other = b.ledger_entry("also-gone", b.GPU0, allocated_at=b.ago(minutes=7))
        snap = b.snapshot(containers=[], gpus=[b.gpu(0)], ledger=b.ledger(leaked, other))
        f = forecast(
            snap, b.desired(b.policy()), ControllerMemory(), until=b.at(hours=1), interval_s=INTERVAL_S
        )
        releases = [p for p in f.actions if p.action.kind == ActionKind.RELEASE_ALLOCATION]
        assert sorted(p.action.target.container or "" for p in releases) == ["also-gone", "gone"]
        assert {p.pass_at for p in releases} == {b.T0}
        assert not any(d.rule.value == "LeakedAllocation" for d in f.deferred)


class TestOwnStops:
    """Six jobs launched together reach their max runtime in one pass; their GPU hold expires in one
    pass too. The executor records the stops and the removals as the controller's own, so neither
    breaker counts what follows them, and the forecast records them the same way."""

    def steps(self, *, ledger: bool) -> tuple[list[tuple[str, str]], Forecast]:
        gpus = [b.gpu(i) for i in range(6)]
        sig = b.signals(b.T0, cpu_usage_ns=0, net_bytes=0, gpu_pct={g.uuid: 99.0 for g in gpus})
        start = b.ago(minutes=50)
        jobs = [b.running(f"job{i}", gpus=[g.uuid], started_at=start, sig=sig) for i, g in enumerate(gpus)]
        rows = [b.ledger_entry(c.name, c.gpu_refs[0].raw, allocated_at=b.ago(hours=1)) for c in jobs]
        snap = b.snapshot(containers=jobs, gpus=gpus, ledger=b.ledger(*rows) if ledger else None)
        # Six of six running GPU containers stopped at once would trip the stop breaker: lifted here.
        desired = b.desired(
            b.policy(max_runtime_s=b.HOUR, idle_timeout_s=None), b.global_policy(breaker_min_containers=10)
        )
        f = forecast(snap, desired, ControllerMemory(), until=b.at(hours=1), interval_s=INTERVAL_S)
        acts = [
            (p.action.kind.value, p.action.reason.value) for p in f.actions if p.action.kind != "WarnOwner"
        ]
        return acts, f

    def test_removals_after_a_batch_of_its_own_stops_are_forecast_as_the_daemon_makes_them(self) -> None:
        acts, f = self.steps(ledger=False)
        assert (
            acts
            == [("StopContainer", "MaxRuntimeExceeded")] * 6 + [("RemoveContainer", "GpuHoldExpired")] * 6
        )
        removals = [p for p in f.actions if p.action.kind == ActionKind.REMOVE_CONTAINER]
        assert {p.pass_at for p in removals} == {removals[0].pass_at}, "due together, removed together"

    def test_the_ledger_rows_of_its_own_removals_are_released_as_the_daemon_releases_them(self) -> None:
        """With a ledger row each: once removed, six of six rows are leaked together."""
        acts, _ = self.steps(ledger=True)
        assert acts == (
            [("StopContainer", "MaxRuntimeExceeded")] * 6
            + [("RemoveContainer", "GpuHoldExpired")] * 6
            + [("ReleaseAllocation", "LeakedAllocation")] * 6
        )


class TestBounds:
    def test_the_pass_bound_is_said(self) -> None:
        c = busy(started_at=b.ago(minutes=1))
        snap = b.snapshot(containers=[c], gpus=[b.gpu(0)])
        desired = b.desired(b.policy(max_runtime_s=b.HOUR, idle_timeout_s=None))
        f = forecast(
            snap, desired, ControllerMemory(), until=b.at(hours=2), interval_s=INTERVAL_S, max_passes=3
        )
        assert f.truncated and f.passes == 3
        assert any("stopped after 3 simulated passes" in a for a in f.assumptions)

    def test_a_forecast_cut_short_ends_at_its_last_simulated_pass(self) -> None:
        c = busy(started_at=b.ago(minutes=1))
        snap = b.snapshot(containers=[c], gpus=[b.gpu(0)])
        desired = b.desired(b.policy(max_runtime_s=b.HOUR, idle_timeout_s=None))
        cut = forecast(
            snap, desired, ControllerMemory(), until=b.at(hours=2), interval_s=INTERVAL_S, max_passes=3
        )
        assert cut.truncated and cut.last_pass_at < cut.until
        # The same forecast until its last pass runs those three passes, and no more.
        upto = forecast(snap, desired, ControllerMemory(), until=cut.last_pass_at, interval_s=INTERVAL_S)
        assert upto.passes == 3 and not upto.truncated
        assert upto.last_pass_at == cut.last_pass_at
        assert any(f"at {cut.last_pass_at.isoformat()}:" in a for a in cut.assumptions)

    def test_passes_are_not_one_per_resync_while_nothing_is_pending(self) -> None:
        f = run(busy(started_at=b.ago(minutes=1)), hours=24, max_runtime_s=None)
        assert not f.truncated
        assert f.passes < 24 * 3600 / INTERVAL_S / 4


class TestSightings:
    def test_an_orphan_seen_once_is_killed_at_the_next_resync_as_the_daemon_kills_it(self) -> None:
        """A second sighting is the next pass: with nothing else pending the forecast strode to half
        maxSampleInterval (5 min here) and put the kill, and the GPU's reset, that late."""
        orphan = b.process(4242, b.GPU0, container_id=b.cid("gone"))
        snap = b.snapshot(gpus=[b.gpu(0)], processes=[orphan])
        f = forecast(snap, b.desired(), ControllerMemory(), until=b.at(hours=1), interval_s=INTERVAL_S)
        kinds = [(k, r) for k, r, _ in steps(f)]
        assert kinds[0] == ("KillProcess", "OrphanedProcess")
        assert near(f.actions[0].pass_at, b.T0 + timedelta(seconds=INTERVAL_S))
        # The daemon's own next pass decides the same.
        first = plan(snap, b.desired(), ControllerMemory(), b.T0)
        second = plan(
            snap.model_copy(update={"observed_at": b.at(seconds=INTERVAL_S)}),
            b.desired(),
            first.memory,
            b.at(seconds=INTERVAL_S),
        )
        assert [a.kind for a in second.actions][:1] == [ActionKind.KILL_PROCESS]


class TestResourceUpdates:
    """``docker update`` lowers the limits once: the next pass sees them and plans nothing."""

    GiB = 1 << 30

    def limited(self, name: str, limits: ResourceLimits) -> ContainerObs:
        sig = b.signals(b.T0, cpu_usage_ns=0, net_bytes=0).model_copy(
            update={"memory_bytes": self.GiB, "memory_swap_bytes": self.GiB, "pids_current": 5}
        )
        return b.running(name, started_at=b.ago(minutes=1), sig=sig).model_copy(update={"limits": limits})

    def run_limited(self, *containers: ContainerObs, update_limits: bool = True) -> Forecast:
        src = "UserGroup/student"
        res = ResourceSpec(
            max_cpus=Sourced(value=2.0, source=src),
            memory_bytes=Sourced(value=8 * self.GiB, source=src),
            memory_swap_bytes=Sourced(value=8 * self.GiB, source=src),
            pids_limit=Sourced(value=1024, source=src),
        )
        pol = b.policy(max_runtime_s=None, idle_timeout_s=None).model_copy(update={"resources": res})
        snap = b.snapshot(containers=containers).model_copy(update={"host_cpus": 16})
        desired = b.desired(pol, b.global_policy(update_limits=update_limits))
        return forecast(snap, desired, ControllerMemory(), until=b.at(hours=1), interval_s=INTERVAL_S)

    def test_an_hour_predicts_one_update_per_over_limit_container(self) -> None:
        unset = self.limited("unset", ResourceLimits())
        above = self.limited(
            "above", ResourceLimits(nano_cpus=8 * 10**9, memory_bytes=32 * self.GiB, pids_limit=4096)
        )
        quota = self.limited("quota", ResourceLimits(cpu_quota_us=800_000, cpu_period_us=100_000))
        within = self.limited(
            "within",
            ResourceLimits(
                nano_cpus=10**9, memory_bytes=4 * self.GiB, memory_swap_bytes=4 * self.GiB, pids_limit=512
            ),
        )
        f = self.run_limited(unset, above, quota, within)
        got = [(p.action.target.container, p.pass_at) for p in f.actions]
        assert sorted(n for n, _ in got) == ["above", "quota", "unset"]
        assert all(p.action.kind == ActionKind.UPDATE_RESOURCES for p in f.actions)
        # All in the first pass; the later passes (there are some) plan none.
        assert {at for _, at in got} == {f.start_at}
        assert f.passes > 1 and not f.truncated
        assert not any(d.why.value == "NotEnforced" for d in f.deferred)
        first = {p.action.target.container: p.action.params_as(ResourceUpdate) for p in f.actions}
        assert first["quota"].cpu_quota_us == 200_000 and first["quota"].nano_cpus is None
        assert first["unset"].nano_cpus == 2 * 10**9

    def test_with_update_limits_off_nothing_is_predicted(self) -> None:
        f = self.run_limited(self.limited("unset", ResourceLimits()), update_limits=False)
        assert f.actions == ()


# --- the messages' figures are right at the pass that sends them ----------------------------------

_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_WARN = re.compile(r"running for (\S+) \((\d+)% of (\S+)\)")


def parse_duration(text: str) -> tuple[float, float]:
    """``fmt_duration`` text -> (value in seconds, the resolution it was truncated to)."""
    parts = re.findall(r"(\d+)([dhms])", text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    total = sum(int(n) * _UNIT_S[u] for n, u in parts)
    return float(total), float(min(_UNIT_S[u] for _, u in parts))


@settings(max_examples=40, deadline=None)
@given(
    timeout_s=st.sampled_from([1.0, 45.0, 600.0, 3600.0, 5400.0, 36000.0]),
    started_fraction=st.floats(min_value=0.0, max_value=3.0),
    horizon_fraction=st.floats(min_value=0.1, max_value=2.5),
)
def test_warning_figures_parse_back_to_the_pass_time(
    timeout_s: float, started_fraction: float, horizon_fraction: float
) -> None:
    """Every predicted runtime warning says the elapsed time at its own pass (not at the horizon),
    the right limit, and the percentage of the limit that elapsed time is."""
    start = b.T0 - timedelta(seconds=round(started_fraction * timeout_s, 3))
    c = busy(started_at=start)
    snap = b.snapshot(containers=[c], gpus=[b.gpu(0)])
    desired = b.desired(b.policy(max_runtime_s=timeout_s, idle_timeout_s=None))
    until = b.T0 + timedelta(seconds=horizon_fraction * timeout_s + 60)
    f = forecast(snap, desired, ControllerMemory(), until=until, interval_s=INTERVAL_S)
    warnings = [p for p in f.actions if p.action.kind == ActionKind.WARN_OWNER]
    for p in warnings:
        m = _WARN.search(p.action.message)
        assert m is not None, p.action.message
        shown_s, resolution_s = parse_duration(m.group(1))
        limit_s, _ = parse_duration(m.group(3))
        elapsed_s = (p.pass_at - start).total_seconds()
        assert limit_s == round(timeout_s) or timeout_s < 1.5
        assert shown_s <= round(elapsed_s) < shown_s + resolution_s, (p.action.message, elapsed_s)
        assert int(m.group(2)) == int(100 * elapsed_s / timeout_s + 1e-9), (p.action.message, elapsed_s)
        assert p.pass_at <= until
    assert [p.pass_at for p in f.actions] == sorted(p.pass_at for p in f.actions)


# --- how ds01ctl shows it ---------------------------------------------------------------------------


def test_next_column_and_text_read_the_forecast() -> None:
    """NEXT: the first warning and the stop, with 'if it stays idle' for an idle stop; the text
    output states the assumptions and lists each action at its pass."""
    from controller.cli.forecastview import forecast_json, forecast_text, next_text

    started = b.ago(hours=3)
    prev = b.signals(b.ago(seconds=30), gpu_pct={b.GPU0: 0.0})
    c_prev = b.running("idler", gpus=[b.GPU0], started_at=started, sig=prev)
    c = b.running("idler", gpus=[b.GPU0], started_at=started, sig=b.signals(b.T0, gpu_pct={b.GPU0: 0.0}))
    desired = b.desired(b.policy(max_runtime_s=None, high_demand_idle_reduction=1.0))
    m1 = plan(
        b.snapshot(observed_at=b.ago(seconds=30), containers=[c_prev], gpus=[b.gpu(0)]),
        desired,
        ControllerMemory(),
        b.ago(seconds=30),
    ).memory
    f = forecast(
        b.snapshot(containers=[c], gpus=[b.gpu(0)]), desired, m1, until=b.at(hours=1), interval_s=INTERVAL_S
    )
    text = next_text(f, c.id, b.T0)
    assert text is not None
    # (removeAfterIdleStop: the idle stop removes the container too, and says so.)
    assert re.fullmatch(r"warning \d\d:\d\d \S+, stop and remove \d\d:\d\d \S+ if it stays idle", text), text
    out = forecast_text(f)
    assert out.startswith("Forecast from ") and "Assuming:\n  - signals held as observed" in out
    assert "StopContainer and remove idler  [IdleTimeout]" in out
    data = forecast_json(f)
    assert data["actions"][0]["pass_at"] and data["assumptions"] == list(f.assumptions)
    assert next_text(f, "no-such-container", b.T0) is None


def _cut_short() -> Forecast:
    """A day's forecast of a busy container with no limit, stopped by the pass bound."""
    c = busy(started_at=b.ago(minutes=1))
    snap = b.snapshot(containers=[c], gpus=[b.gpu(0)])
    desired = b.desired(b.policy(max_runtime_s=None, idle_timeout_s=None))
    f = forecast(snap, desired, ControllerMemory(), until=b.at(hours=24), interval_s=INTERVAL_S, max_passes=3)
    assert f.truncated and f.actions == () and f.last_pass_at < f.until
    return f


def test_a_forecast_cut_short_says_how_far_it_looked_in_plan_at() -> None:
    from controller.cli.forecastview import forecast_text
    from controller.cli.render import stamp

    f = _cut_short()
    out = forecast_text(f)
    assert "nothing would change until then" not in out
    assert f"No actions predicted until {stamp(f.last_pass_at)}" in out
    assert f"cut short at {stamp(f.last_pass_at)}" in out and f"short of {stamp(f.until)}" in out


def test_a_forecast_cut_short_says_how_far_it_looked_in_describe() -> None:
    from types import SimpleNamespace

    from controller.cli.forecastview import forecast_section
    from controller.cli.render import Sections, stamp

    f = _cut_short()
    s = Sections()
    forecast_section(SimpleNamespace(forecast=f, now=b.T0), "job", s)
    out = s.render()
    assert stamp(f.until) not in out.replace(f"short of {stamp(f.until)}", "")
    assert f"nothing predicted until {stamp(f.last_pass_at)}" in out
    assert f"the forecast was cut short after {f.max_passes} passes, short of {stamp(f.until)}" in out


# --- plan --policy: the difference between the installed policy and a candidate --------------------


def _stop_at(max_runtime_s: float | None, c: ContainerObs, hours: float = 24) -> Forecast:
    return run(c, hours=hours, max_runtime_s=max_runtime_s, idle_timeout_s=None)


class TestPolicyDifference:
    """Each change ``plan --policy`` reports for a container whose stop moves, exactly."""

    start = b.ago(minutes=1)

    def line(self, current: Forecast, candidate: Forecast, c: ContainerObs) -> tuple[list[str], str]:
        from controller.cli.forecastview import diff_text

        changes = compare(current, candidate, [c])
        text = diff_text(changes, current, candidate, "cand.yaml")
        return [ch.change.value for ch in changes], text

    def test_a_shorter_runtime_limit_stops_it_sooner(self) -> None:
        from controller.cli.render import stamp

        c = busy(started_at=self.start)
        current, candidate = _stop_at(2 * b.HOUR, c), _stop_at(b.HOUR, c)
        changes, text = self.line(current, candidate, c)
        now_at, cand_at = self.start + timedelta(hours=2), self.start + timedelta(hours=1)
        assert changes == ["sooner"]
        assert near(current.ending(c.id).pass_at, now_at)  # type: ignore[union-attr]
        assert near(candidate.ending(c.id).pass_at, cand_at)  # type: ignore[union-attr]
        assert (
            f"  stopped sooner    job (alice): now {stamp(current.ending(c.id).pass_at)} "  # type: ignore[union-attr]
            f"[MaxRuntimeExceeded] -> candidate {stamp(candidate.ending(c.id).pass_at)} "  # type: ignore[union-attr]
            "[MaxRuntimeExceeded]"
        ) in text.splitlines()
        assert "Difference: 1 stopped sooner, 0 stopped later, 0 newly stopped, 0 no longer stopped." in text

    def test_a_longer_runtime_limit_stops_it_later(self) -> None:
        c = busy(started_at=self.start)
        current, candidate = _stop_at(b.HOUR, c), _stop_at(3 * b.HOUR, c)
        changes, text = self.line(current, candidate, c)
        assert changes == ["later"]
        assert near(candidate.ending(c.id).pass_at, self.start + timedelta(hours=3))  # type: ignore[union-attr]
        assert "Difference: 0 stopped sooner, 1 stopped later, 0 newly stopped, 0 no longer stopped." in text
        assert [ln.split()[:3] for ln in text.splitlines() if "job (alice)" in ln] == [
            ["stopped", "later", "job"]
        ]

    def test_no_runtime_limit_no_longer_stops_it(self) -> None:
        from controller.cli.render import stamp

        c = busy(started_at=self.start)
        current, candidate = _stop_at(b.HOUR, c), _stop_at(None, c)
        changes, text = self.line(current, candidate, c)
        assert changes == ["no-longer"]
        assert candidate.ending(c.id) is None
        assert (
            f"  no longer stopped job (alice): now {stamp(current.ending(c.id).pass_at)} "  # type: ignore[union-attr]
            "[MaxRuntimeExceeded] -> candidate not before the horizon"
        ) in text.splitlines()

    def test_a_forecast_cut_short_is_compared_only_as_far_as_it_looked(self) -> None:
        """The installed policy stops the job at 2h; the candidate's forecast is cut short after 3
        passes: that is no "no longer stopped" (the candidate never got there), and the text says
        how far the two were compared, not "until" the horizon."""
        from controller.cli.render import stamp

        c = busy(started_at=self.start)
        current = _stop_at(2 * b.HOUR, c)
        snap = b.snapshot(containers=[c], gpus=[b.gpu(0)])
        desired = b.desired(b.policy(max_runtime_s=2 * b.HOUR, idle_timeout_s=None))
        candidate = forecast(
            snap, desired, ControllerMemory(), until=b.at(hours=24), interval_s=INTERVAL_S, max_passes=3
        )
        assert candidate.truncated and current.ending(c.id) is not None
        changes, text = self.line(current, candidate, c)
        assert changes == []
        assert text.splitlines()[0].endswith(
            f"until {stamp(candidate.last_pass_at)} (cut short of {stamp(current.until)})"
        )
        assert (
            f"The candidate policy's forecast was cut short after 3 passes at {stamp(candidate.last_pass_at)}"
            in text
        )
        assert f"Compared until {stamp(candidate.last_pass_at)} only" in text
        # within the reach a difference is still one, and "null" reads as "not before" the reach
        soon = _stop_at(b.HOUR, c)
        cut = forecast(  # a 20h limit, looked at for about 2h only
            snap,
            b.desired(b.policy(max_runtime_s=20 * b.HOUR, idle_timeout_s=None)),
            ControllerMemory(),
            until=b.at(hours=24),
            interval_s=INTERVAL_S,
            max_passes=30,
        )
        assert cut.truncated and cut.last_pass_at > soon.ending(c.id).pass_at  # type: ignore[union-attr]
        changes, text = self.line(soon, cut, c)
        assert changes == ["no-longer"]
        assert f"-> candidate not before {stamp(cut.last_pass_at)}" in text

    def test_a_stop_beyond_the_default_horizon_is_no_difference(self) -> None:
        """The default horizon is 24 h: a stop moved from 25 h to 26 h is not reported, one moved
        from 23 h to 22 h is."""
        from controller.cli.forecastview import DEFAULT_DIFF_HORIZON

        assert timedelta(hours=24) == DEFAULT_DIFF_HORIZON
        hours = DEFAULT_DIFF_HORIZON.total_seconds() / 3600
        c = busy(started_at=b.T0)
        beyond = compare(_stop_at(25 * b.HOUR, c, hours), _stop_at(26 * b.HOUR, c, hours), [c])
        assert beyond == ()
        within = compare(_stop_at(23 * b.HOUR, c, hours), _stop_at(22 * b.HOUR, c, hours), [c])
        assert [ch.change.value for ch in within] == ["sooner"]


def test_plan_policy_says_when_the_candidate_reads_the_host_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The host is observed once, as the candidate reads it (its keep-alive path): the installed
    policy's forecast is then judged on keep-alive files its controller never reads, and a keep-alive
    the candidate ignores showed as no difference, without a word."""
    from dataclasses import replace

    from controller.cli import gather as gather_mod
    from controller.cli.main import main
    from controller.plan.desired import PolicySetDesired
    from desired_state.load import load_policy
    from tests.unit import cli_world as w

    def spec_dir(name: str, settings: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "lab.yaml").write_text(
            "apiVersion: ds01.io/v1alpha1\nkind: LifecyclePolicy\nmetadata: {name: lab}\n"
            f"spec:\n  settings: {{{settings}}}\n"
        )
        return d

    installed = load_policy(spec_dir("installed", "idleTimeout: 1h"), None)
    same = spec_dir("same", "idleTimeout: 2h")
    moved = spec_dir("moved", "idleTimeout: 1h, keepalivePath: /workspace/.stay")

    def fake_gather(_settings: object, opts: gather_mod.GatherOptions) -> object:
        assert opts.candidate is not None
        view = w.view()
        return replace(view, desired=PolicySetDesired(load_policy(opts.candidate, None)), notes=[])

    monkeypatch.setattr(gather_mod, "gather", fake_gather)
    monkeypatch.setattr(gather_mod, "load_installed_policy", lambda _s: (installed, w.policy_info()))
    monkeypatch.setattr(gather_mod, "read_memory", lambda _d: (ControllerMemory(), None))
    flags = ["--env-file", "", "--state-dir", str(tmp_path / "state"), "--at", "+1h"]
    main(["plan", "--policy", str(same), *flags])
    assert "keepalivePath" not in capsys.readouterr().err
    main(["plan", "--policy", str(moved), *flags])
    err = capsys.readouterr().err
    assert "warning: the candidate reads the host otherwise (keepalivePath" in err, err
    assert "/workspace/.keep-alive" in err and "/workspace/.stay" in err


@pytest.mark.usefixtures("utc_clock")
def test_next_text_says_an_exempt_owners_notice_is_no_warning_and_gives_the_warning_before_the_stop() -> None:
    """alice is exempt from idle stops until 14:00: at 12:30 she gets the FYI notice (not stopped),
    at 14:00 the warning, at 14:06 the stop. NEXT said "warning 12:30, stop and remove 14:06": a
    warning with an hour and a half's lead, where the notice says nothing is stopped and the one
    warning comes six minutes before the stop."""
    from controller.cli.forecastview import next_text
    from desired_state.effective import ExemptFrom

    grant = b.exemption(ExemptFrom.IDLE, expires_at=b.at(hours=2))
    desired = b.desired(b.policy(max_runtime_s=None, high_demand_idle_reduction=1.0, exemptions=[grant]))
    passes = b.Passes(desired)
    started = b.ago(hours=3)
    for s in (-60, -30, 0):
        t = b.at(seconds=s)
        c = b.running("idler", gpus=[b.GPU0], started_at=started, sig=b.signals(t, gpu_pct={b.GPU0: 0.0}))
        snap = b.snapshot(observed_at=t, containers=[c], gpus=[b.gpu(0)])
        passes.run(snap)
    f = forecast(snap, desired, passes.memory, until=b.at(hours=3), interval_s=INTERVAL_S)
    got = [(r, p) for _k, r, p in steps(f)]
    assert [r for r, _ in got] == ["IdleExemptNotice", "IdleWarning", "IdleTimeout"]
    assert near(got[0][1], b.at(minutes=30), slack_s=INTERVAL_S)
    assert near(got[1][1], b.at(hours=2), slack_s=INTERVAL_S)
    assert (
        next_text(f, c.id, b.T0)
        == "notice 12:30 UTC, warning 14:00 UTC, stop and remove 14:06 UTC if it stays idle"
    )


def test_a_shorter_hold_removes_an_exited_container_sooner_and_says_removed_not_stopped() -> None:
    """carol-old exited 10 minutes ago: a candidate with a 30m hold instead of 6h removes it at
    12:20, not 17:50. The difference said "stopped sooner" of a container stopped already: the
    candidate deletes it sooner."""
    from controller.cli.forecastview import diff_json, diff_text

    c = b.exited("carol-old", finished_at=b.ago(minutes=10))
    snap = b.snapshot(containers=[c], gpus=[b.gpu(0)])

    def under(hold_s: float) -> Forecast:
        desired = b.desired(b.policy(container_hold_after_stop_s=hold_s))
        return forecast(snap, desired, ControllerMemory(), until=b.at(hours=24), interval_s=INTERVAL_S)

    current, candidate = under(6 * b.HOUR), under(1800.0)
    (change,) = compare(current, candidate, [c])
    assert change.change is Change.SOONER
    assert (change.current_action, change.candidate_action) == ("remove", "remove")
    text = diff_text((change,), current, candidate, "cand.yaml")
    (line,) = [ln for ln in text.splitlines() if "carol-old" in ln]
    assert line.split()[:3] == ["removed", "sooner", "carol-old"], line
    assert not [ln for ln in text.splitlines() if ln.startswith("  stopped")], text
    assert (
        text.count("Difference: 0 stopped sooner, 0 stopped later, 0 newly stopped, 0 no longer stopped") == 1
    )
    assert "1 removed sooner." in text
    data = diff_json((change,), current, candidate, "cand.yaml", b.at(hours=24))
    assert data["changes"][0]["candidate_action"] == "remove"
    # A running container's stop is still a stop, and says so.
    job = busy(started_at=b.ago(minutes=1))
    (stop,) = compare(_stop_at(2 * b.HOUR, job), _stop_at(b.HOUR, job), [job])
    assert (stop.current_action, stop.candidate_action) == ("stop", "stop")


def test_a_candidate_that_removes_on_the_idle_stop_is_a_removal_sooner_not_no_difference() -> None:
    """Both policies stop the idle container at the same pass; the installed one keeps it (removed
    when its GPU hold ends, 15 minutes later), the candidate removes it with the stop
    (removeAfterIdleStop: true). plan --policy said "No difference", hiding the deletion."""
    from controller.cli.forecastview import diff_text

    started = b.ago(hours=3)
    prev = b.signals(b.ago(seconds=30), gpu_pct={b.GPU0: 0.0})
    c_prev = b.running("idler", gpus=[b.GPU0], started_at=started, sig=prev)
    c = b.running("idler", gpus=[b.GPU0], started_at=started, sig=b.signals(b.T0, gpu_pct={b.GPU0: 0.0}))
    snap = b.snapshot(containers=[c], gpus=[b.gpu(0)])

    def under(removes: bool) -> Forecast:
        desired = b.desired(
            b.policy(max_runtime_s=None, high_demand_idle_reduction=1.0, remove_after_idle_stop=removes)
        )
        first = b.snapshot(observed_at=b.ago(seconds=30), containers=[c_prev], gpus=[b.gpu(0)])
        m1 = plan(first, desired, ControllerMemory(), b.ago(seconds=30)).memory
        return forecast(snap, desired, m1, until=b.at(hours=24), interval_s=INTERVAL_S)

    current, candidate = under(False), under(True)
    stop_now, stop_cand = current.ending(c.id), candidate.ending(c.id)
    assert stop_now is not None and stop_cand is not None and stop_now.pass_at == stop_cand.pass_at
    (change,) = compare(current, candidate, [c])
    assert change.change is Change.SOONER and change.what == "removal"
    assert (change.current_reason, change.candidate_reason) == ("GpuHoldExpired", "IdleTimeout")
    assert (change.current_action, change.candidate_action) == ("remove", "stop and remove")
    assert change.candidate_at == stop_cand.pass_at and change.current_at is not None
    assert change.current_at - stop_now.pass_at >= timedelta(minutes=15)
    text = diff_text((change,), current, candidate, "cand.yaml")
    assert "No difference" not in text
    (line,) = [ln for ln in text.splitlines() if "idler" in ln]
    assert line.split()[:3] == ["removed", "sooner", "idler"], line
