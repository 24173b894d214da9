"""Idle evaluation: one sample's verdict, the streak bookkeeping, and the keep-alive cap."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controller.memory import ContainerMemory, KeepAliveSeen, Sample
from controller.plan.idle import (
    Thresholds,
    _walk,
    advance,
    classify,
    fresh_memory,
    idle_status,
    keepalive_verdict,
)
from controller.snapshot import ActivitySignals, ContainerObs, KeepAlive, KeepAliveState, SignalSource
from tests.fixtures import builders as b

# 1 MB per 5-minute interval as a rate; samples further apart than 10 minutes are unobserved spans.
TH = Thresholds(
    gpu_pct=5.0, cpu_pct=2.0, net_bytes_per_s=1_000_000 / 300, max_sample_interval_s=600.0, mig_fallback=True
)
MINUTE_NS = 60 * 1_000_000_000


def prev_sample(cpu_ns: int | None = 0, net: int | None = 0) -> Sample:
    return Sample(at=b.T0, cpu_usage_ns=cpu_ns, net_bytes=net, idle=True)


def reading(cpu_pct: float = 0.0, net: int = 0) -> ActivitySignals:
    """Signals one minute after prev_sample() with the given CPU % of one core."""
    return b.signals(b.at(minutes=1), cpu_usage_ns=int(MINUTE_NS * cpu_pct / 100), net_bytes=net)


class TestClassify:
    def test_all_signals_below_thresholds_is_idle(self) -> None:
        v = classify(prev_sample(), reading(1.0, 10), {b.GPU0: 1.0}, TH, nvml_ok=True)
        assert v.idle is True
        assert v.cpu_pct == pytest.approx(1.0)
        assert v.net_delta_bytes == 10

    def test_busy_gpu_with_idle_cpu_is_active(self) -> None:
        # DS01 Phase 5: CPU-only detection stopped containers at 0 % CPU and 100 % GPU.
        v = classify(prev_sample(), reading(0.0), {b.GPU0: 100.0}, TH, nvml_ok=True)
        assert v.idle is False
        assert "gpu" in v.detail

    def test_any_busy_gpu_of_several_is_active(self) -> None:
        v = classify(prev_sample(), reading(0.0), {b.GPU0: 0.0, b.GPU1: 50.0}, TH, nvml_ok=True)
        assert v.idle is False

    def test_cpu_at_threshold_is_active(self) -> None:
        v = classify(prev_sample(), reading(2.0), {b.GPU0: 0.0}, TH, nvml_ok=True)
        assert v.idle is False

    def test_cpu_rate_is_percent_of_one_core(self) -> None:
        # 30 s of CPU over 60 s of wall time is 50 % of one core.
        v = classify(prev_sample(), reading(50.0), {}, TH, nvml_ok=True)
        assert v.cpu_pct == pytest.approx(50.0)

    def test_network_rate_above_threshold_is_active(self) -> None:
        v = classify(prev_sample(net=5), reading(0.0, 1_000_005), {b.GPU0: 0.0}, TH, nvml_ok=True)
        assert v.idle is False
        assert v.net_delta_bytes == 1_000_000

    def test_first_sample_is_a_baseline(self) -> None:
        v = classify(None, reading(0.0), {b.GPU0: 0.0}, TH, nvml_ok=True)
        assert v.idle is None
        assert "baseline" in v.detail

    def test_busy_gpu_decides_even_on_the_baseline(self) -> None:
        v = classify(None, reading(0.0), {b.GPU0: 90.0}, TH, nvml_ok=True)
        assert v.idle is False

    def test_mig_device_without_utilization_falls_back_to_cpu_and_network(self) -> None:
        mig = b.mig_uuid(0, 1)
        v = classify(prev_sample(), reading(0.1), {mig: None}, TH, nvml_ok=True, mig_uuids={mig})
        assert v.idle is True
        assert "cpu and network decide" in v.detail

    def test_unknown_cpu_is_undecidable(self) -> None:
        sig = b.signals(b.at(minutes=1), cpu_usage_ns=None, net_bytes=0)
        v = classify(prev_sample(), sig, {b.GPU0: 0.0}, TH, nvml_ok=True)
        assert v.idle is None
        assert "cpu unknown" in v.detail

    def test_unknown_network_is_undecidable(self) -> None:
        sig = b.signals(b.at(minutes=1), cpu_usage_ns=0, net_bytes=None)
        assert classify(prev_sample(), sig, {b.GPU0: 0.0}, TH, nvml_ok=True).idle is None

    def test_unknown_previous_reading_is_undecidable(self) -> None:
        v = classify(prev_sample(cpu_ns=None), reading(0.0), {b.GPU0: 0.0}, TH, nvml_ok=True)
        assert v.idle is None

    def test_known_activity_wins_over_an_unknown_signal(self) -> None:
        sig = b.signals(b.at(minutes=1), cpu_usage_ns=MINUTE_NS, net_bytes=None)
        assert classify(prev_sample(), sig, {}, TH, nvml_ok=True).idle is False

    def test_counter_going_backwards_is_undecidable(self) -> None:
        v = classify(prev_sample(cpu_ns=10**12), reading(0.0), {b.GPU0: 0.0}, TH, nvml_ok=True)
        assert v.idle is None
        assert "backwards" in v.detail

    def test_nvml_unavailable_is_never_idle(self) -> None:
        v = classify(prev_sample(), reading(0.0), {}, TH, nvml_ok=False)
        assert v.idle is None
        assert "nvml unavailable" in v.detail


_MIG = b.mig_uuid(0, 1)


@pytest.mark.parametrize("gpu", [{b.GPU0: 1.0}, {b.GPU0: 5.0}, {b.GPU0: 80.0}, {b.GPU0: None}, {_MIG: None}])
@pytest.mark.parametrize("mig_fallback", [True, False])
@pytest.mark.parametrize("seconds", [0.0, -5.0, 0.5e-9, 60.0, 599.0, 600.0, 600.5, 3600.0])
@pytest.mark.parametrize(
    ("prev_cpu", "cpu", "prev_net", "net"),
    [
        (0, 0, 0, 0),
        (0, 10**9, 0, 10),
        (0, 10**12, 0, 0),
        (0, 0, 0, 10**9),
        (5, 4, 0, 0),
        (0, 0, 5, 4),
        (None, 0, 0, 0),
        (0, None, 0, 0),
        (0, 0, None, 0),
        (0, 0, 0, None),
    ],
)
def test_the_common_reading_is_judged_as_the_walk_judges_it(
    gpu: dict[str, float | None],
    mig_fallback: bool,
    seconds: float,
    prev_cpu: int | None,
    cpu: int | None,
    prev_net: int | None,
    net: int | None,
) -> None:
    """classify decides the common reading without walking every signal: the same verdict and detail
    as the walk, on either side of each condition that keeps a reading out of the short way."""
    th = Thresholds(
        gpu_pct=5.0,
        cpu_pct=2.0,
        net_bytes_per_s=1_000_000 / 300,
        max_sample_interval_s=600.0,
        mig_fallback=mig_fallback,
    )
    prev = Sample(at=b.T0, cpu_usage_ns=prev_cpu, net_bytes=prev_net, idle=True)
    sig = b.signals(b.T0 + timedelta(seconds=seconds), cpu_usage_ns=cpu, net_bytes=net)
    tree = sig.model_copy(update={"cpu_source": SignalSource.PROCESS_TREE})
    for mig_uuids in (frozenset(), frozenset({_MIG})):
        for read in (sig, tree):
            args = (prev, read, gpu, th)
            fast = classify(*args, nvml_ok=True, mig_uuids=mig_uuids)
            assert fast == _walk(*args, nvml_ok=True, mig_uuids=mig_uuids, unobserved=None)


def _running(sig: ActivitySignals | None, started_minutes_ago: float = 120) -> ContainerObs:
    return b.running("t", gpus=[b.GPU0], started_at=b.ago(minutes=started_minutes_ago), sig=sig)


class TestAdvance:
    def _step(self, mem: ContainerMemory, minute: float, cpu_ns: int) -> ContainerMemory:
        c = _running(b.signals(b.at(minutes=minute), cpu_usage_ns=cpu_ns, net_bytes=0))
        return advance(
            mem,
            c,
            thresholds=TH,
            grace_period_s=30 * 60,
            gpu_pct={b.GPU0: 0.0},
            nvml_ok=True,
        )

    def test_streak_starts_at_first_idle_sample_and_counts(self) -> None:
        mem = fresh_memory(_running(None), b.T0, None)
        mem = self._step(mem, 0, 0)
        assert mem.idle_since is None  # baseline
        mem = self._step(mem, 5, 0)
        mem = self._step(mem, 10, 0)
        assert mem.idle_since == b.at(minutes=5)
        status = idle_status(mem, _running(b.signals(b.at(minutes=10))))
        assert status.streak_samples == 2
        assert status.interval_s == 300

    def test_active_sample_resets_streak_and_idle_warnings(self) -> None:
        mem = fresh_memory(_running(None), b.T0, None)
        mem = self._step(mem, 0, 0)
        mem = self._step(mem, 5, 0)
        mem = mem.model_copy(
            update={"warnings": {"idle:80:x": b.at(minutes=5), "runtime:75:x": b.at(minutes=5)}}
        )
        mem = self._step(mem, 10, 60 * MINUTE_NS)  # 1200 % CPU: busy
        assert mem.idle_since is None
        assert mem.last_active_at == b.at(minutes=10)
        assert mem.warnings == {"runtime:75:x": b.at(minutes=5)}

    def test_undecidable_sample_breaks_streak_without_counting_as_activity(self) -> None:
        mem = fresh_memory(_running(None), b.T0, None)
        mem = self._step(mem, 0, 0)
        mem = self._step(mem, 5, 0)
        c = _running(b.signals(b.at(minutes=10), cpu_usage_ns=None, net_bytes=0))
        mem = advance(mem, c, thresholds=TH, grace_period_s=60 * 60, gpu_pct={}, nvml_ok=True)
        assert mem.idle_since is None
        assert mem.last_active_at is None

    def test_idle_sample_inside_grace_period_does_not_start_streak(self) -> None:
        mem = fresh_memory(_running(None), b.T0, None)
        for minute in (0, 5):
            c = _running(b.signals(b.at(minutes=minute)))
            mem = advance(mem, c, thresholds=TH, grace_period_s=150 * 60, gpu_pct={}, nvml_ok=True)
        assert mem.samples[-1].idle is True
        assert mem.idle_since is None

    def test_same_reading_twice_changes_nothing(self) -> None:
        mem = fresh_memory(_running(None), b.T0, None)
        mem = self._step(mem, 0, 0)
        again = self._step(mem, 0, 0)
        assert again is mem

    def test_samples_are_capped(self) -> None:
        mem = fresh_memory(_running(None), b.T0, None)
        for i in range(80):
            mem = self._step(mem, i, 0)
        assert len(mem.samples) == 64
        assert mem.samples[-1].at == b.at(minutes=79)


class TestKeepAlive:
    CAP_S = 3600.0

    def test_fresh_present_file_first_seen_recently_is_honoured(self) -> None:
        ka = b.keepalive(mtime=b.ago(minutes=1))
        v = keepalive_verdict(ka, KeepAliveSeen(inode=1, first_seen_at=b.ago(minutes=10)), self.CAP_S, b.T0)
        assert v.honoured
        assert v.until == b.at(minutes=50)

    def test_touching_it_does_not_extend_past_first_sighting_plus_cap(self) -> None:
        ka = b.keepalive(mtime=b.T0)  # touched just now
        v = keepalive_verdict(ka, KeepAliveSeen(inode=1, first_seen_at=b.ago(minutes=61)), self.CAP_S, b.T0)
        assert not v.honoured
        assert v.until == b.ago(minutes=1)

    def test_future_mtime_is_capped_by_first_sighting(self) -> None:
        ka = b.keepalive(mtime=b.at(days=3650))
        v = keepalive_verdict(ka, KeepAliveSeen(inode=1, first_seen_at=b.ago(minutes=30)), self.CAP_S, b.T0)
        assert v.honoured
        assert v.until == b.at(minutes=30)

    def test_old_mtime_is_not_honoured(self) -> None:
        ka = b.keepalive(mtime=b.ago(hours=2))
        v = keepalive_verdict(ka, KeepAliveSeen(inode=1, first_seen_at=b.ago(minutes=1)), self.CAP_S, b.T0)
        assert not v.honoured

    @pytest.mark.parametrize(
        "state",
        [KeepAliveState.LINK, KeepAliveState.NOT_REGULAR, KeepAliveState.UNKNOWN, KeepAliveState.ABSENT],
    )
    def test_anything_but_a_regular_file_is_never_honoured(self, state: KeepAliveState) -> None:
        v = keepalive_verdict(
            b.keepalive(state), KeepAliveSeen(inode=1, first_seen_at=b.T0), self.CAP_S, b.T0
        )
        assert not v.honoured

    def test_no_cap_means_present_is_enough(self) -> None:
        v = keepalive_verdict(b.keepalive(mtime=b.ago(days=30)), None, None, b.T0)
        assert v.honoured
        assert v.until is None

    def test_first_sighting_survives_removal_and_new_inode_but_activity_renews_it(self) -> None:
        def step(mem: ContainerMemory, minute: float, cpu_ns: int, ka: KeepAlive) -> ContainerMemory:
            sig = b.signals(b.at(minutes=minute), cpu_usage_ns=cpu_ns, keep=ka)
            c = _running(sig)
            return advance(mem, c, thresholds=TH, grace_period_s=60 * 60, gpu_pct={}, nvml_ok=True)

        mem = fresh_memory(_running(None), b.T0, None)
        mem = step(mem, 0, 0, b.keepalive(mtime=b.T0, inode=1))
        assert mem.keepalive == KeepAliveSeen(inode=1, first_seen_at=b.T0)
        mem = step(mem, 5, 0, b.NO_KEEPALIVE)
        mem = step(mem, 10, 0, b.keepalive(mtime=b.at(minutes=10), inode=2))
        assert mem.keepalive == KeepAliveSeen(inode=2, first_seen_at=b.T0)
        mem = step(mem, 15, 30 * MINUTE_NS, b.keepalive(mtime=b.at(minutes=15), inode=2))  # busy
        assert mem.keepalive == KeepAliveSeen(inode=2, first_seen_at=b.at(minutes=15))


def test_fresh_memory_keeps_first_sighting_across_restart() -> None:
    c = _running(None)
    old = ContainerMemory(container_id="x", started_at=b.ago(days=1), first_seen_at=b.ago(days=2))
    mem = fresh_memory(c, b.T0, old)
    assert mem.first_seen_at == b.ago(days=2)
    assert mem.samples == ()
    assert mem.started_at == b.ago(minutes=120)
    assert b.T0 - mem.first_seen_at == timedelta(days=2)
