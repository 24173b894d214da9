"""Idle evaluation: raw cumulative counters -> one sample per pass -> a continuous idle streak.

Owns the per-sample idle decision and the streak bookkeeping kept in :class:`ContainerMemory`
(``samples``, ``idle_since``, ``last_active_at``, ``keepalive``, ``unobserved``,
``grace_extension_s``). Called by the planner once per running container per pass; pure (no clock
reads, no I/O).

The decision for one sample, given the previous sample of the same start:

* any known activity signal at or above its threshold makes the sample **active** -- GPU
  utilization of any GPU the container holds, CPU (% of one core from the ``cpu_usage_ns`` delta
  over the wall-clock delta) or the network rate (rx+tx bytes per second over the same delta, so
  the verdict does not depend on how often passes run);
* the sample is **idle** only when every required signal is known and below its threshold. The
  utilisation of every GPU the container may use is required: an unknown reading of a full GPU
  makes the sample undecidable. Only a MIG device (NVML never reports utilisation for one) may
  leave CPU and network to decide alone, and only when the policy's ``migIdleFallback`` allows it;
* otherwise the sample is **undecidable** (``idle=None``): the first sample after a (re)start
  (no rate yet), a counter that could not be read or went backwards, a low CPU reading taken from
  the main process tree instead of the cgroup (it misses ``docker exec`` work), NVML unavailable as a whole
  (then a busy GPU could not be seen, so nothing may count as idle), an unknown GPU reading, or an
  **unobserved span**: the sample came more than ``maxSampleInterval`` after the previous one
  (daemon or Docker down, a forward clock step), the wall clock stepped forward in between (the
  monotonic clock tells: :mod:`controller.plan.clock`) or back behind the previous sample (the
  readings taken meanwhile cannot be placed among the samples), or the container was seen paused or
  Docker was unavailable in between. Counters over such a span are an average that can hide activity at its
  end (idle, paused 90 minutes, then one busy minute reads as "cpu 1.1 %"), and the GPU is only
  read at the pass, so when the container last was active cannot be told.

A streak starts at the first idle sample taken after the grace period and is broken by any
active or undecidable sample; ``idle_since`` is the time of its first sample. So idle time never
runs across an unobserved span (a paused container accrues none), and the warnings of the streak
before it are void: a stop after the span needs a new streak and a fresh warning with its lead
time. Unobserved time inside the grace period lengthens the grace period by as much (a forward
clock step does not cut it short).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controller.memory import MAX_SAMPLES, ContainerMemory, KeepAliveSeen, Sample
from controller.plan.context import span
from controller.snapshot import ActivitySignals, ContainerObs, KeepAlive, KeepAliveState, SignalSource
from desired_state.effective import EffectivePolicy, MigIdleFallback, Sourced

NS_PER_S = 1_000_000_000
# Read once (an enum member read from its class goes through the enum's metaclass): tested for every
# running GPU container on every pass.
_PROCESS_TREE, _PRESENT = SignalSource.PROCESS_TREE, KeepAliveState.PRESENT
IDLE_WARNING_PREFIX = "idle:"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The activity thresholds one container is judged by."""

    gpu_pct: float
    cpu_pct: float
    net_bytes_per_s: float
    max_sample_interval_s: float  # a longer span between two samples is unobserved
    mig_fallback: bool  # a MIG device (no utilisation) may leave CPU and network to decide

    @staticmethod
    def inputs(policy: EffectivePolicy) -> tuple[Sourced[Any], ...]:
        """The policy values the thresholds are built from (all of them)."""
        return (
            policy.gpu_idle_threshold_pct,
            policy.cpu_idle_threshold_pct,
            policy.network_idle_threshold_bytes_per_s,
            policy.mig_idle_fallback,
        )

    @classmethod
    def from_policy(cls, policy: EffectivePolicy, *, max_sample_interval_s: float) -> Thresholds:
        gpu, cpu, net, mig = Thresholds.inputs(policy)
        return cls(
            gpu_pct=gpu.value,
            cpu_pct=cpu.value,
            net_bytes_per_s=net.value,
            max_sample_interval_s=max_sample_interval_s,
            mig_fallback=mig.value == MigIdleFallback.CPU_AND_NETWORK,
        )


# Not frozen (nothing changes one): one is built per running GPU container per pass, and a frozen
# dataclass's __init__ costs twice as much.
@dataclass(slots=True)
class Verdict:
    """The idle decision for one sample, with the numbers that decided it."""

    idle: bool | None
    detail: str
    cpu_pct: float | None = None
    net_delta_bytes: int | None = None
    unobserved: bool = False  # undecidable because the span since the previous sample was not watched


def _fmt_pct(value: float) -> str:
    return f"{value:.1f}%"


def _fmt_s(value: float) -> str:
    return f"{value:.0f}s" if value < 120 else f"{value / 60:.0f}m"


@dataclass(slots=True)
class _Reading:
    """What :func:`classify` has found so far in one reading."""

    parts: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    active: bool = False
    cpu_pct: float | None = None
    net_delta: int | None = None
    gap: bool = False


def classify(
    prev: Sample | None,
    signals: ActivitySignals,
    gpu_pct: Mapping[str, float | None],
    thresholds: Thresholds,
    *,
    nvml_ok: bool,
    mig_uuids: Set[str] = frozenset(),
    unobserved: str | None = None,
) -> Verdict:
    """Decide whether the reading ``signals`` is idle, active or undecidable.

    ``prev`` is the previous sample of the same container start (None for the first one);
    ``gpu_pct`` maps each GPU the container holds to its utilization (None: unknown);
    ``mig_uuids`` are the devices that report no utilisation by design (MIG devices and GPUs in
    MIG mode); ``unobserved`` says why the span since ``prev`` was not watched, if it was not.
    """
    if nvml_ok and prev is not None and unobserved is None and len(gpu_pct) == 1:
        verdict = _steady(prev, signals, gpu_pct, thresholds, mig_uuids)
        if verdict is not None:
            return verdict
    return _walk(
        prev, signals, gpu_pct, thresholds, nvml_ok=nvml_ok, mig_uuids=mig_uuids, unobserved=unobserved
    )


def _walk(
    prev: Sample | None,
    signals: ActivitySignals,
    gpu_pct: Mapping[str, float | None],
    thresholds: Thresholds,
    *,
    nvml_ok: bool,
    mig_uuids: Set[str],
    unobserved: str | None,
) -> Verdict:
    """:func:`classify` for any reading: every signal in turn, each unknown one said."""
    r = _Reading()
    if not nvml_ok:
        # A GPU at 100 % would be invisible: such a sample can never count as idle.
        r.unknown.append("nvml unavailable")
        r.parts.append("gpu unavailable")
    else:
        _gpu_reading(r, signals, gpu_pct, thresholds, mig_uuids)
    if prev is None:
        r.unknown.append("baseline (first sample of this start)")
    else:
        _rate_reading(r, prev, signals, thresholds, unobserved)
    if r.active:
        return Verdict(False, "active: " + "; ".join(r.parts), r.cpu_pct, r.net_delta)
    if r.unknown:
        return Verdict(None, "unknown: " + "; ".join(r.unknown + r.parts), r.cpu_pct, r.net_delta, r.gap)
    return Verdict(True, "idle: " + "; ".join(r.parts), r.cpu_pct, r.net_delta)


def _steady(
    prev: Sample,
    signals: ActivitySignals,
    gpu_pct: Mapping[str, float | None],
    thresholds: Thresholds,
    mig_uuids: Set[str],
) -> Verdict | None:
    """:func:`_walk`'s verdict for the common reading, None for any other.

    The common reading: one device, read (or a MIG device that CPU and network decide for), both
    counters read and not gone backwards, over a watched span (some time elapsed, not over
    ``maxSampleInterval``; the caller checked that NVML is up, ``prev`` exists and nothing marked
    the span unobserved). Nothing is unknown then, so the walk's verdict is active or idle, and its
    detail is the GPU's, the CPU's and the network's parts, in that order; built here directly
    (``tests/unit/test_idle.py`` holds the two equal).
    """
    cpu, prev_cpu, net, prev_net = signals.cpu_usage_ns, prev.cpu_usage_ns, signals.net_bytes, prev.net_bytes
    if cpu is None or prev_cpu is None or cpu < prev_cpu or net is None or prev_net is None or net < prev_net:
        return None
    if signals.cpu_source == _PROCESS_TREE:
        return None  # it may show activity, never idleness: the walk says so
    wall_s = (signals.read_at - prev.at).total_seconds()
    wall_ns = int(wall_s * NS_PER_S)
    if wall_ns <= 0 or wall_s > thresholds.max_sample_interval_s:
        return None
    ((uuid, pct),) = gpu_pct.items()
    if pct is not None:
        active = pct >= thresholds.gpu_pct
        gpu_part = f"gpu {uuid}={pct:.1f}%" if active else f"gpu max {pct:.1f}%"
    elif thresholds.mig_fallback and uuid in mig_uuids:
        active = False
        gpu_part = f"gpu {uuid} MIG, no utilisation: cpu and network decide"
    else:
        return None
    cpu_pct = (cpu - prev_cpu) / wall_ns * 100.0
    net_delta = net - prev_net
    net_rate = net_delta / wall_s
    if cpu_pct >= thresholds.cpu_pct or net_rate >= thresholds.net_bytes_per_s:
        active = True
    detail = f"{gpu_part}; cpu {cpu_pct:.1f}%; net {net_rate:.0f}B/s"
    if active:
        return Verdict(False, "active: " + detail, cpu_pct, net_delta)
    return Verdict(True, "idle: " + detail, cpu_pct, net_delta)


def _gpu_reading(
    r: _Reading,
    signals: ActivitySignals,
    gpu_pct: Mapping[str, float | None],
    thresholds: Thresholds,
    mig_uuids: Set[str],
) -> None:
    if len(gpu_pct) == 1:
        # Most GPU containers hold one device: the walk below, for one.
        ((uuid, pct),) = gpu_pct.items()
        if pct is None:
            _missing_gpus(r, signals, [uuid], thresholds, mig_uuids)
        elif pct >= thresholds.gpu_pct:
            r.active = True
            r.parts.append(f"gpu {uuid}={_fmt_pct(pct)}")
        else:
            r.parts.append(f"gpu max {_fmt_pct(pct)}")
        return
    known: dict[str, float] = {}
    missing: list[str] = []
    for uuid, pct in gpu_pct.items():
        if pct is None:
            missing.append(uuid)
        else:
            known[uuid] = pct
    if known:
        busy = sorted(uuid for uuid, pct in known.items() if pct >= thresholds.gpu_pct)
        if busy:
            r.active = True
            r.parts.append("gpu " + ",".join(f"{u}={_fmt_pct(known[u])}" for u in busy))
        else:
            r.parts.append(f"gpu max {_fmt_pct(max(known.values()))}")
    if missing:
        _missing_gpus(r, signals, sorted(missing), thresholds, mig_uuids)


def _missing_gpus(
    r: _Reading, signals: ActivitySignals, missing: list[str], thresholds: Thresholds, mig_uuids: Set[str]
) -> None:
    """The GPUs with no utilisation reading (``missing``, sorted): unknown, or a MIG fallback."""
    fallback: list[str] = []
    for uuid in missing:
        if uuid not in mig_uuids:
            # A full GPU whose reading failed may be at 100 %: unknown is not idle.
            why = _unknown_reason(signals, uuid) or "not reported"
            r.unknown.append(f"gpu {uuid} utilisation unknown ({why})")
        elif thresholds.mig_fallback:
            fallback.append(uuid)
        else:
            r.unknown.append(f"gpu {uuid} is a MIG device (no utilisation) and migIdleFallback is never")
    if fallback:
        # MIG devices report no utilization: CPU and network decide (documented, weaker evidence).
        r.parts.append(f"gpu {','.join(fallback)} MIG, no utilisation: cpu and network decide")


def _unknown_reason(signals: ActivitySignals, uuid: str) -> str | None:
    """Why the reading of ``uuid`` is missing, as its last reading says (None: not said)."""
    for reading in reversed(signals.gpu_util):
        if reading.uuid == uuid:
            return reading.unknown_reason
    return None


def _rate_reading(
    r: _Reading, prev: Sample, signals: ActivitySignals, thresholds: Thresholds, unobserved: str | None
) -> None:
    wall_s = (signals.read_at - prev.at).total_seconds()
    wall_ns = int(wall_s * NS_PER_S)
    if wall_ns <= 0:
        r.unknown.append("no time elapsed since the previous sample")
        return
    if unobserved is not None:
        r.gap = True
        r.unknown.append(f"unobserved span: {unobserved}")
    elif wall_s > thresholds.max_sample_interval_s:
        r.gap = True
        r.unknown.append(
            f"unobserved span: {_fmt_s(wall_s)} since the previous sample (over "
            f"maxSampleInterval {_fmt_s(thresholds.max_sample_interval_s)})"
        )
    if signals.cpu_usage_ns is None or prev.cpu_usage_ns is None:
        r.unknown.append(f"cpu unknown ({signals.cpu_unknown or 'previous reading missing'})")
    elif signals.cpu_usage_ns < prev.cpu_usage_ns:
        r.unknown.append("cpu counter went backwards")
    else:
        # An average over the span: it can hide activity, never invent it, so "active" holds even
        # over an unobserved span.
        r.cpu_pct = (signals.cpu_usage_ns - prev.cpu_usage_ns) / wall_ns * 100.0
        r.parts.append(f"cpu {_fmt_pct(r.cpu_pct)}")
        if r.cpu_pct >= thresholds.cpu_pct:
            r.active = True
        elif signals.cpu_source == SignalSource.PROCESS_TREE:
            # The main process and its live descendants only: work started by `docker exec` (not a
            # descendant) and children that exited are not in it, so a low reading proves nothing.
            r.unknown.append(
                "cpu read from the main process tree, not the cgroup (docker exec work is not in it)"
            )
    if signals.net_bytes is None or prev.net_bytes is None:
        r.unknown.append(f"net unknown ({signals.net_unknown or 'previous reading missing'})")
    elif signals.net_bytes < prev.net_bytes:
        r.unknown.append("net counter went backwards")
    else:
        r.net_delta = signals.net_bytes - prev.net_bytes
        net_rate = r.net_delta / wall_s
        r.parts.append(f"net {net_rate:.0f}B/s")
        if net_rate >= thresholds.net_bytes_per_s:
            r.active = True


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


def grace_end(mem: ContainerMemory | None, started_at: datetime, grace_period_s: float) -> datetime:
    """End of the grace period of the start ``started_at``: lengthened by unobserved time inside it."""
    extension_s = mem.grace_extension_s if mem is not None and mem.started_at == started_at else 0.0
    return started_at + span(grace_period_s + extension_s)


def mark_unobserved(mem: ContainerMemory, why: str) -> ContainerMemory:
    """Note that the container is not being watched now (paused, Docker unavailable).

    The next sample then spans an unobserved period and is undecidable. Only a record with samples
    needs it (a first sample is a baseline anyway); the first reason is kept.
    """
    if not mem.samples or mem.unobserved is not None:
        return mem
    return mem.model_copy(update={"unobserved": why})


def advance(
    mem: ContainerMemory,
    container: ContainerObs,
    *,
    thresholds: Thresholds,
    grace_period_s: float,
    gpu_pct: Mapping[str, float | None],
    nvml_ok: bool,
    mig_uuids: Set[str] = frozenset(),
) -> ContainerMemory:
    """Fold this pass's reading of a running container into its memory.

    ``mem`` already belongs to the container's current start. A reading already folded in (same
    ``read_at``) changes nothing, so planning the same snapshot twice is harmless; one taken before
    the last sample is not folded in either (:func:`_read_before`).
    """
    signals = container.signals
    if signals is None or container.started_at is None:
        return mem
    prev = mem.samples[-1] if mem.samples else None
    if prev is not None and signals.read_at <= prev.at:
        return _read_before(mem, signals.read_at, prev.at)
    verdict = classify(
        prev, signals, gpu_pct, thresholds, nvml_ok=nvml_ok, mig_uuids=mig_uuids, unobserved=mem.unobserved
    )
    sample = _sample(signals, verdict)
    samples = (*mem.samples[-(MAX_SAMPLES - 1) :], sample)
    extension_s = mem.grace_extension_s
    if (
        verdict.unobserved
        and prev is not None
        and prev.at < grace_end(mem, container.started_at, grace_period_s)
    ):
        # Unobserved time (a forward clock step, the daemon down) does not use up the grace period.
        extension_s += (signals.read_at - prev.at).total_seconds()
    idle_since, last_active_at, warnings, keepalive = _streak(
        mem, verdict, signals.read_at, container.started_at, grace_period_s + extension_s
    )
    keepalive = _observe_keepalive(keepalive, signals.keepalive, signals.read_at)
    # Every field of the streak given (as a fresh record would have them); the state the pass saw
    # (last_state, stopped_by_restart_at) is the planner's to write.
    return mem.model_copy(
        update={
            "name": container.name,
            "samples": samples,
            "idle_since": idle_since,
            "last_active_at": last_active_at,
            "warnings": warnings,
            "keepalive": keepalive,
            "unobserved": None,
            "grace_extension_s": extension_s,
        }
    )


def _read_before(mem: ContainerMemory, read_at: datetime, prev_at: datetime) -> ContainerMemory:
    """The memory after a reading timed at or before the last sample (``prev_at``).

    At the same time it is that sample's reading, planned again: nothing changes. Before it, the
    wall clock stepped back: the reading cannot be placed in the samples, and what it saw (a busy
    GPU) would be lost, the streak running on across it. So the span is unobserved: the next sample
    is undecidable and ends the streak, as after any span the controller did not watch.
    """
    if read_at == prev_at:
        return mem
    return mark_unobserved(mem, f"the wall clock stepped back (a reading timed before {prev_at.isoformat()})")


def _sample(signals: ActivitySignals, verdict: Verdict) -> Sample:
    return Sample.built(
        {
            "at": signals.read_at,
            "cpu_usage_ns": signals.cpu_usage_ns,
            "net_bytes": signals.net_bytes,
            "idle": verdict.idle,
            "detail": verdict.detail,
        },
    )


def _streak(
    mem: ContainerMemory, verdict: Verdict, read_at: datetime, started_at: datetime, grace_s: float
) -> tuple[datetime | None, datetime | None, dict[str, datetime], KeepAliveSeen | None]:
    """The idle streak after this reading: (idle_since, last_active_at, warnings, keepalive).

    ``grace_s`` is the grace period, extended; its end is only needed for an idle reading."""
    if verdict.idle is True and read_at >= started_at + span(grace_s):
        return mem.idle_since or read_at, mem.last_active_at, mem.warnings, mem.keepalive
    # Active, undecidable (an unobserved span included), or still inside the grace period: the
    # continuous streak is broken. Its warnings are void (a new streak warns again).
    # (No warning at all: nothing to drop, the dict is kept as when no streak ran.)
    warnings = (
        _drop_idle_warnings(mem.warnings) if mem.idle_since is not None and mem.warnings else mem.warnings
    )
    if verdict.idle is False:
        # Real activity renews the keep-alive allowance: the cap runs from the first sighting of a
        # keep-alive after the container's last activity (see keepalive_until).
        return None, read_at, warnings, None
    return None, mem.last_active_at, warnings, mem.keepalive


def _observe_keepalive(seen: KeepAliveSeen | None, ka: KeepAlive, at: datetime) -> KeepAliveSeen | None:
    if ka.state != _PRESENT:
        # Keep the sighting: removing and re-creating the file must not restart the cap.
        return seen
    if seen is None:
        return KeepAliveSeen(inode=ka.inode, first_seen_at=at)
    if seen.inode != ka.inode:
        # A replaced file (new inode) is noted but does not renew the allowance either.
        return KeepAliveSeen(
            inode=ka.inode, first_seen_at=seen.first_seen_at, honoured_mtime=seen.honoured_mtime
        )
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
    # min(mtime, first sighting) + cap: an mtime at the calendar's end (a user's `touch -d`) must
    # not overflow when the cap is added to it.
    until = min(ka.mtime, seen.first_seen_at) + cap
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
