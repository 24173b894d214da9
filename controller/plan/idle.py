"""Idle evaluation: raw cumulative counters -> one sample per pass -> a continuous idle streak.

Owns the per-sample idle decision and the streak bookkeeping kept in :class:`ContainerMemory`
(``samples``, ``idle_since``, ``last_active_at``, ``keepalive``). Called by the planner once per
running container per pass; pure (no clock reads, no I/O).

The decision for one sample, given the previous sample of the same start:

* any known activity signal at or above its threshold makes the sample **active** -- GPU
  utilization of any GPU the container holds, CPU (% of one core from the ``cpu_usage_ns`` delta
  over the wall-clock delta) or network bytes moved since the previous sample;
* the sample is **idle** only when every required signal is known and below its threshold.
  Per-GPU utilization that is unknown (MIG devices) is not required: the CPU and network signals
  decide alone. CPU and network rates are required: unknown is not idle;
* otherwise the sample is **undecidable** (``idle=None``): the first sample after a (re)start
  (no rate yet), a counter that could not be read or went backwards, or NVML unavailable as a
  whole (then a busy GPU could not be seen, so nothing may count as idle).

A streak starts at the first idle sample taken after the grace period and is broken by any
active or undecidable sample; ``idle_since`` is the time of its first sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.memory import MAX_SAMPLES, ContainerMemory, KeepAliveSeen, Sample
from controller.snapshot import ActivitySignals, ContainerObs, KeepAlive, KeepAliveState
from desired_state.effective import EffectivePolicy

NS_PER_S = 1_000_000_000
IDLE_WARNING_PREFIX = "idle:"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The activity thresholds one container is judged by."""

    gpu_pct: float
    cpu_pct: float
    net_bytes_per_interval: float

    @classmethod
    def from_policy(cls, policy: EffectivePolicy) -> Thresholds:
        return cls(
            gpu_pct=policy.gpu_idle_threshold_pct.value,
            cpu_pct=policy.cpu_idle_threshold_pct.value,
            net_bytes_per_interval=policy.network_idle_threshold_bytes.value,
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """The idle decision for one sample, with the numbers that decided it."""

    idle: bool | None
    detail: str
    cpu_pct: float | None = None
    net_delta_bytes: int | None = None


def _fmt_pct(value: float) -> str:
    return f"{value:.1f}%"


def classify(
    prev: Sample | None,
    signals: ActivitySignals,
    gpu_pct: Mapping[str, float | None],
    thresholds: Thresholds,
    *,
    nvml_ok: bool,
) -> Verdict:
    """Decide whether the reading ``signals`` is idle, active or undecidable.

    ``prev`` is the previous sample of the same container start (None for the first one);
    ``gpu_pct`` maps each GPU the container holds to its utilization (None: unknown).
    """
    parts: list[str] = []
    reasons_unknown: list[str] = []
    active = False

    if not nvml_ok:
        # A GPU at 100 % would be invisible: such a sample can never count as idle.
        reasons_unknown.append("nvml unavailable")
        parts.append("gpu unavailable")
    else:
        known = {uuid: pct for uuid, pct in gpu_pct.items() if pct is not None}
        busy = sorted(uuid for uuid, pct in known.items() if pct >= thresholds.gpu_pct)
        if busy:
            active = True
            parts.append("gpu " + ",".join(f"{u}={_fmt_pct(known[u])}" for u in busy))
        elif known:
            parts.append(f"gpu max {_fmt_pct(max(known.values()))}")
        else:
            # MIG devices report no utilization: CPU and network decide (documented fallback).
            parts.append("gpu unknown")

    cpu_pct: float | None = None
    net_delta: int | None = None
    if prev is None:
        reasons_unknown.append("baseline (first sample of this start)")
    else:
        wall_ns = int((signals.read_at - prev.at).total_seconds() * NS_PER_S)
        if wall_ns <= 0:
            reasons_unknown.append("no time elapsed since the previous sample")
        else:
            if signals.cpu_usage_ns is None or prev.cpu_usage_ns is None:
                reasons_unknown.append(f"cpu unknown ({signals.cpu_unknown or 'previous reading missing'})")
            elif signals.cpu_usage_ns < prev.cpu_usage_ns:
                reasons_unknown.append("cpu counter went backwards")
            else:
                cpu_pct = (signals.cpu_usage_ns - prev.cpu_usage_ns) / wall_ns * 100.0
                parts.append(f"cpu {_fmt_pct(cpu_pct)}")
                if cpu_pct >= thresholds.cpu_pct:
                    active = True
            if signals.net_bytes is None or prev.net_bytes is None:
                reasons_unknown.append(f"net unknown ({signals.net_unknown or 'previous reading missing'})")
            elif signals.net_bytes < prev.net_bytes:
                reasons_unknown.append("net counter went backwards")
            else:
                net_delta = signals.net_bytes - prev.net_bytes
                parts.append(f"net {net_delta}B")
                if net_delta >= thresholds.net_bytes_per_interval:
                    active = True

    if active:
        return Verdict(False, "active: " + "; ".join(parts), cpu_pct, net_delta)
    if reasons_unknown:
        return Verdict(None, "unknown: " + "; ".join(reasons_unknown + parts), cpu_pct, net_delta)
    return Verdict(True, "idle: " + "; ".join(parts), cpu_pct, net_delta)


def _drop_idle_warnings(warnings: Mapping[str, datetime]) -> dict[str, datetime]:
    return {k: v for k, v in warnings.items() if not k.startswith(IDLE_WARNING_PREFIX)}


def fresh_memory(container: ContainerObs, seen_at: datetime, prev: ContainerMemory | None) -> ContainerMemory:
    """Memory for a container seen for the first time, or restarted (a new StartedAt).

    Everything tied to one start is dropped: samples, streak, warnings, the keep-alive sighting.
    """
    first_seen = prev.first_seen_at if prev is not None and prev.first_seen_at is not None else seen_at
    return ContainerMemory(
        container_id=container.id,
        name=container.name,
        started_at=container.started_at,
        samples=(),
        idle_since=None,
        last_active_at=None,
        warnings={},
        first_seen_at=first_seen,
        keepalive=None,
    )


def advance(
    mem: ContainerMemory,
    container: ContainerObs,
    *,
    thresholds: Thresholds,
    grace_end: datetime,
    gpu_pct: Mapping[str, float | None],
    nvml_ok: bool,
) -> ContainerMemory:
    """Fold this pass's reading of a running container into its memory.

    ``mem`` already belongs to the container's current start. A reading already folded in (same
    ``read_at``) changes nothing, so planning the same snapshot twice is harmless.
    """
    signals = container.signals
    if signals is None:
        return mem
    prev = mem.samples[-1] if mem.samples else None
    if prev is not None and signals.read_at <= prev.at:
        return mem
    verdict = classify(prev, signals, gpu_pct, thresholds, nvml_ok=nvml_ok)
    sample = Sample(
        at=signals.read_at,
        cpu_usage_ns=signals.cpu_usage_ns,
        net_bytes=signals.net_bytes,
        idle=verdict.idle,
        detail=verdict.detail,
    )
    samples = (*mem.samples[-(MAX_SAMPLES - 1) :], sample)
    idle_since = mem.idle_since
    last_active_at = mem.last_active_at
    warnings = mem.warnings
    keepalive = mem.keepalive
    if verdict.idle is True and signals.read_at >= grace_end:
        if idle_since is None:
            idle_since = signals.read_at
    else:
        # Active, undecidable, or still inside the grace period: the continuous streak is broken.
        # Its warnings are void (a new streak warns again).
        if idle_since is not None:
            warnings = _drop_idle_warnings(warnings)
        idle_since = None
        if verdict.idle is False:
            last_active_at = signals.read_at
            # Real activity renews the keep-alive allowance: the cap runs from the first sighting
            # of a keep-alive after the container's last activity (see keepalive_until).
            keepalive = None
    keepalive = _observe_keepalive(keepalive, signals.keepalive, signals.read_at)
    return ContainerMemory(
        container_id=mem.container_id,
        name=container.name,
        started_at=mem.started_at,
        samples=samples,
        idle_since=idle_since,
        last_active_at=last_active_at,
        warnings=warnings,
        first_seen_at=mem.first_seen_at,
        keepalive=keepalive,
    )


def _observe_keepalive(seen: KeepAliveSeen | None, ka: KeepAlive, at: datetime) -> KeepAliveSeen | None:
    if ka.state != KeepAliveState.PRESENT:
        # Keep the sighting: removing and re-creating the file must not restart the cap.
        return seen
    if seen is None:
        return KeepAliveSeen(inode=ka.inode, first_seen_at=at)
    if seen.inode != ka.inode:
        # A replaced file (new inode) is noted but does not renew the allowance either.
        return KeepAliveSeen(inode=ka.inode, first_seen_at=seen.first_seen_at)
    return seen


@dataclass(frozen=True, slots=True)
class KeepAliveVerdict:
    honoured: bool
    until: datetime | None
    detail: str


def keepalive_verdict(
    ka: KeepAlive | None, seen: KeepAliveSeen | None, max_age_s: float | None, now: datetime
) -> KeepAliveVerdict:
    """Whether the keep-alive file holds off an idle stop at ``now``, and until when.

    Honoured only for a regular file (not a link, FIFO, directory, nor unknown) whose mtime is
    younger than the cap AND that the controller first saw (since the container's last activity)
    less than the cap ago: touching it every minute, or setting a future mtime, buys at most one
    cap's worth of idle time.
    """
    if ka is None or ka.state != KeepAliveState.PRESENT:
        state = ka.state.value if ka is not None else "not read"
        return KeepAliveVerdict(False, None, f"keep-alive {state}")
    if max_age_s is None:
        return KeepAliveVerdict(True, None, "keep-alive present (no age cap)")
    if ka.mtime is None or seen is None:
        return KeepAliveVerdict(False, None, "keep-alive present but its age is unknown")
    cap = timedelta(seconds=max_age_s)
    until = min(ka.mtime + cap, seen.first_seen_at + cap)
    if now < until:
        return KeepAliveVerdict(True, until, f"keep-alive honoured until {until.isoformat()}")
    return KeepAliveVerdict(False, until, f"keep-alive expired at {until.isoformat()}")


@dataclass(frozen=True, slots=True)
class IdleStatus:
    """The idle streak as of this pass."""

    current: Sample | None  # this pass's sample; None when there is no fresh reading
    idle_since: datetime | None
    streak_samples: int
    interval_s: float | None  # the latest sampling interval, to estimate when the window fills


def idle_status(mem: ContainerMemory, container: ContainerObs) -> IdleStatus:
    signals = container.signals
    samples = mem.samples
    current = samples[-1] if samples and signals is not None and samples[-1].at == signals.read_at else None
    interval_s = (samples[-1].at - samples[-2].at).total_seconds() if len(samples) >= 2 else None
    count = 0
    if mem.idle_since is not None:
        for sample in reversed(samples):
            if sample.at < mem.idle_since or sample.idle is not True:
                break
            count += 1
    return IdleStatus(current, mem.idle_since, count, interval_s)
