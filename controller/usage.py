"""Usage samples: the compact periodic record of who holds which GPU, and the pure rules read from it.

Owns:

- the ``controller.usage_sample`` line format: every ``reporting.sampleInterval`` the daemon records,
  for each GPU or MIG device, its holders (container id, name, owner, group, state, idle or not),
  the memory in use and the utilisation (:func:`build_round`, :func:`encode_round`); a round is
  split over as many lines as it needs to keep each below ``PIPE_BUF``, and :func:`decode_round`
  reads one back from untrusted text (a line that does not fit the format is rejected whole);
- the hoarding predicate (:func:`hoarding_candidate`): GPU memory held at near-zero utilisation,
  apart from idleness, and :class:`HoardingWatch`, which turns samples into unbroken episodes;
- the reclaim rule (:class:`ReclaimTracker`): GPU time the controller's stops and removals gave back,
  counted between observations that saw the device free, until it is next taken.

Called by :mod:`controller.act.usage_recorder` (the daemon), :mod:`controller.accounting`
(``ds01ctl report``) and ``ds01ctl get gpus`` (the hoarding mark). Pure: no I/O, no clock, no
adapter; times come in as arguments.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from controller.memory import ControllerMemory
from controller.snapshot import ContainerObs, ContainerState, Domain, GpuObs, Snapshot

USAGE_EVENT: Final = "controller.usage_sample"
FORMAT_VERSION: Final = 1
MIB: Final = 1024 * 1024
# One round's lines stay this far below PIPE_BUF (the event log's header and escaping take the rest).
MAX_DETAILS_BYTES: Final = 3000
MAX_HOLDERS: Final = 4
_NAME_CHARS: Final = 48
_GROUP_CHARS: Final = 32
# A sample counts until the next round, at most this many sampling intervals: a longer gap means
# the daemon was not observing (stopped, or Docker or NVML down), and that time is not counted.
MAX_GAP_INTERVALS: Final = 2.0


class DeviceState:
    """What a device's holders were doing in one sample (disjoint)."""

    FREE = "free"  # no container references it
    BUSY = "busy"  # a running holder is active
    IDLE = "idle"  # every holder is stopped or idle
    UNKNOWN = "unknown"  # held, no holder known active, at least one not known idle


@dataclass(frozen=True)
class HolderSample:
    container_id: str
    name: str
    user: str
    group: str
    state: str
    idle: bool | None  # True: stopped or idle; False: active; None: not known


@dataclass(frozen=True)
class DeviceSample:
    uuid: str
    slot: str
    weight: float  # GPU equivalents: 1 for a GPU, a MIG device's share of its GPU
    memory_used_bytes: int | None
    utilization_pct: float | None  # None: not reported (MIG) or unreadable
    holders: tuple[HolderSample, ...] = ()
    more_holders: int = 0

    @property
    def state(self) -> str:
        if not self.holders:
            return DeviceState.FREE
        if any(h.idle is False for h in self.holders):
            return DeviceState.BUSY
        if all(h.idle is True for h in self.holders):
            return DeviceState.IDLE
        return DeviceState.UNKNOWN


@dataclass(frozen=True)
class UsageRound:
    at: datetime
    every_s: float
    devices: tuple[DeviceSample, ...]


@dataclass(frozen=True)
class HoardingPolicy:
    memory_threshold_bytes: int = 1024 * MIB
    max_utilization_pct: float = 1.0
    window_s: float = 1800.0


# --- building a round (the daemon) -------------------------------------------------------------


def holder_idle(c: ContainerObs, memory: ControllerMemory | None) -> bool | None:
    """A stopped holder holds its GPU idle; a running one is idle while its idle streak runs."""
    if c.state != ContainerState.RUNNING:
        return True
    cm = memory.containers.get(c.id) if memory is not None else None
    if cm is None:
        return None
    if cm.idle_since is not None:
        return True
    last = cm.samples[-1] if cm.samples else None
    if last is not None and last.idle is False:
        return False
    return None


def usable_devices(gpus: Sequence[GpuObs]) -> Iterator[tuple[GpuObs, str, int | None, float | None, float]]:
    """(gpu, device uuid, memory used, utilisation, weight) for each usable device: a GPU not in MIG
    mode (weight 1), or each MIG device (its share of its GPU's memory; 1/7 when unknown)."""
    for g in gpus:
        if not g.mig_enabled:
            yield g, g.uuid, g.memory_used_bytes, g.utilization_percent, 1.0
            continue
        for m in g.mig_devices:
            share = 1.0 / 7.0
            if m.memory_total_bytes and g.memory_total_bytes:
                share = m.memory_total_bytes / g.memory_total_bytes
            yield g, m.uuid, m.memory_used_bytes, None, round(min(max(share, 0.0), 1.0), 4)


def build_round(
    snapshot: Snapshot,
    memory: ControllerMemory | None,
    group_of: Mapping[str, str],
    every_s: float,
) -> UsageRound | None:
    """One sample of every device, or None when Docker or NVML could not be read (unknown is not free)."""
    if not (snapshot.domain_ok(Domain.DOCKER) and snapshot.domain_ok(Domain.NVML)):
        return None
    holders: dict[str, list[ContainerObs]] = {}
    for c in snapshot.containers:
        for ref in c.gpu_uuids:
            holders.setdefault(ref, []).append(c)
    slots: dict[str, str] = {g.uuid: str(g.index) for g in snapshot.gpus}
    for g in snapshot.gpus:
        for m in g.mig_devices:
            slots[m.uuid] = f"{g.index}.{m.index}"
    devices = []
    for g, uuid, used, util, weight in usable_devices(snapshot.gpus):
        # A container given the whole GPU holds every MIG device of it too.
        own = holders.get(uuid, []) + ([] if uuid == g.uuid else holders.get(g.uuid, []))
        own = sorted({c.id: c for c in own}.values(), key=lambda c: (c.name, c.id))
        devices.append(
            DeviceSample(
                uuid=uuid,
                slot=slots.get(uuid, "?"),
                weight=weight,
                memory_used_bytes=used,
                utilization_pct=util,
                holders=tuple(
                    HolderSample(
                        container_id=c.id[:12],
                        name=c.name[:_NAME_CHARS],
                        user=c.owner[:_NAME_CHARS],
                        group=group_of.get(c.owner, "-")[:_GROUP_CHARS],
                        state=c.state.value,
                        idle=holder_idle(c, memory),
                    )
                    for c in own[:MAX_HOLDERS]
                ),
                more_holders=max(0, len(own) - MAX_HOLDERS),
            )
        )
    return UsageRound(at=snapshot.observed_at, every_s=every_s, devices=tuple(devices))


def _device_json(d: DeviceSample) -> dict[str, Any]:
    # Every string is bounded here, so a device never outgrows a line (the writer would shrink it).
    out: dict[str, Any] = {"gpu": d.uuid[:64], "slot": d.slot[:16], "w": d.weight, "state": d.state}
    out["mem_mib"] = None if d.memory_used_bytes is None else round(d.memory_used_bytes / MIB)
    out["util"] = d.utilization_pct
    if d.holders:
        out["holders"] = [
            {
                "id": h.container_id[:12],
                "name": h.name[:_NAME_CHARS],
                "user": h.user[:_NAME_CHARS],
                "group": h.group[:_GROUP_CHARS],
                "state": h.state[:16],
                "idle": h.idle,
            }
            for h in d.holders
        ]
    if d.more_holders:
        out["more"] = d.more_holders
    return out


def encode_round(r: UsageRound) -> list[dict[str, Any]]:
    """The round as the ``details`` of one or more event lines (each below ``MAX_DETAILS_BYTES``)."""
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for d in r.devices:
        item = _device_json(d)
        n = len(json.dumps(item, ensure_ascii=False, separators=(",", ":"))) + 1
        if chunks[-1] and size + n > MAX_DETAILS_BYTES - 200:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += n
    at = r.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [
        {
            "v": FORMAT_VERSION,
            "at": at,
            "every_s": r.every_s,
            "part": i + 1,
            "parts": len(chunks),
            "devices": c,
        }
        for i, c in enumerate(chunks)
    ]


# --- reading a round back (untrusted text) ----------------------------------------------------


class BadSample(ValueError):
    """A usage sample line that does not fit the format (hostile, truncated or from a newer writer)."""


def _text(value: object, what: str, max_chars: int = 128) -> str:
    if not isinstance(value, str) or not value or len(value) > max_chars:
        raise BadSample(f"{what} is not a short string")
    return value


def _number(value: object, what: str, *, nullable: bool = True) -> float | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise BadSample(f"{what} is not a non-negative number")
    return float(value)


def _holder(raw: object) -> HolderSample:
    if not isinstance(raw, Mapping):
        raise BadSample("a holder is not an object")
    idle = raw.get("idle")
    if idle is not None and not isinstance(idle, bool):
        raise BadSample("holder idle is not true, false or null")
    return HolderSample(
        container_id=_text(raw.get("id"), "holder id", 64),
        name=_text(raw.get("name", "?"), "holder name"),
        user=_text(raw.get("user", "unknown"), "holder user"),
        group=_text(raw.get("group", "-"), "holder group"),
        state=_text(raw.get("state", "?"), "holder state", 32),
        idle=idle,
    )


def _device(raw: object) -> DeviceSample:
    if not isinstance(raw, Mapping):
        raise BadSample("a device is not an object")
    weight = _number(raw.get("w", 1.0), "weight", nullable=False)
    if weight is None or weight > 1.0:
        raise BadSample("weight is not within 0..1")
    mem = _number(raw.get("mem_mib"), "mem_mib")
    util = _number(raw.get("util"), "util")
    holders = raw.get("holders", [])
    if not isinstance(holders, list) or len(holders) > MAX_HOLDERS:
        raise BadSample("holders is not a short list")
    more = raw.get("more", 0)
    if isinstance(more, bool) or not isinstance(more, int) or more < 0:
        raise BadSample("more is not a count")
    return DeviceSample(
        uuid=_text(raw.get("gpu"), "gpu"),
        slot=_text(raw.get("slot", "?"), "slot", 16),
        weight=weight,
        memory_used_bytes=None if mem is None else int(mem * MIB),
        utilization_pct=None if util is None else min(util, 100.0),
        holders=tuple(_holder(h) for h in holders),
        more_holders=more,
    )


def decode_round(details: object, fallback_at: datetime) -> UsageRound:
    """One line's part of a round; raises :class:`BadSample` when it does not fit the format."""
    if not isinstance(details, Mapping):
        raise BadSample("details is not an object")
    if details.get("v") != FORMAT_VERSION:
        raise BadSample("unknown format version")
    at = fallback_at
    raw_at = details.get("at")
    if isinstance(raw_at, str):
        try:
            parsed = datetime.fromisoformat(raw_at)
        except ValueError:
            raise BadSample("at is not a timestamp") from None
        if parsed.tzinfo is None:
            raise BadSample("at has no time zone")
        at = parsed
    every = _number(details.get("every_s"), "every_s", nullable=False)
    if every is None or every <= 0:
        raise BadSample("every_s is not positive")
    devices = details.get("devices")
    if not isinstance(devices, list) or len(devices) > 64:
        raise BadSample("devices is not a list")
    return UsageRound(at=at, every_s=every, devices=tuple(_device(d) for d in devices))


# --- hoarding -------------------------------------------------------------------------------------


def hoarding_candidate(d: DeviceSample, policy: HoardingPolicy) -> bool | None:
    """Memory held at near-zero utilisation by a running holder: True, False, or None (not known).

    Utilisation that is not reported (MIG devices) or unreadable is not near zero: unknown is not
    idle, so such a device is never called a hoarder.
    """
    if not any(h.state == ContainerState.RUNNING.value for h in d.holders):
        return False
    if d.memory_used_bytes is None or d.utilization_pct is None:
        return None
    return (
        d.memory_used_bytes >= policy.memory_threshold_bytes
        and d.utilization_pct <= policy.max_utilization_pct
    )


@dataclass
class HoardingEpisode:
    """One device's memory held at near-zero utilisation by the same holders, unbroken."""

    uuid: str
    slot: str
    weight: float
    holders: tuple[HolderSample, ...]
    start: datetime
    end: datetime  # the last sample that still saw it (plus its span, once closed)
    max_memory_bytes: int
    spans: list[tuple[datetime, datetime]] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds()


class HoardingWatch:
    """Per device, the open episode: extended by each candidate sample, closed by anything else."""

    def __init__(self, policy: HoardingPolicy) -> None:
        self.policy = policy
        self.open: dict[str, HoardingEpisode] = {}

    def sample(self, d: DeviceSample, start: datetime, end: datetime) -> HoardingEpisode | None:
        """Feed one device's sample covering ``[start, end)``; returns an episode that just closed."""
        closed = None
        ep = self.open.get(d.uuid)
        ids = tuple(h.container_id for h in d.holders)
        if hoarding_candidate(d, self.policy) is True:
            same = ep is not None and ep.end == start and tuple(h.container_id for h in ep.holders) == ids
            if not same:
                closed = self.open.pop(d.uuid, None)
                ep = HoardingEpisode(d.uuid, d.slot, d.weight, d.holders, start, start, 0)
                self.open[d.uuid] = ep
            assert ep is not None
            ep.end = end
            ep.max_memory_bytes = max(ep.max_memory_bytes, d.memory_used_bytes or 0)
            ep.spans.append((start, end))
        else:
            closed = self.open.pop(d.uuid, None)
        return closed if closed is not None and closed.duration_s >= self.policy.window_s else None

    def gap(self, before: datetime) -> list[HoardingEpisode]:
        """Close every episode not extended up to ``before`` (a gap in the samples breaks it)."""
        out = []
        for uuid, ep in list(self.open.items()):
            if ep.end < before:
                del self.open[uuid]
                if ep.duration_s >= self.policy.window_s:
                    out.append(ep)
        return out

    def finish(self) -> list[HoardingEpisode]:
        out = [ep for ep in self.open.values() if ep.duration_s >= self.policy.window_s]
        self.open.clear()
        return out


# --- reclaimed GPU time ---------------------------------------------------------------------------


@dataclass
class ReclaimTag:
    """A device the controller freed: who had it, why it was taken back, and up to when it is counted."""

    uuid: str
    weight: float
    user: str
    group: str
    reason: str
    container: str
    counted_until: datetime


@dataclass(frozen=True)
class ReclaimCredit:
    tag: ReclaimTag
    start: datetime
    end: datetime

    @property
    def gpu_seconds(self) -> float:
        return (self.end - self.start).total_seconds() * self.tag.weight


class ReclaimTracker:
    """GPU time given back by the controller's stops and removals, counted conservatively.

    A device is tagged when a stop or removal by the controller takes it from its holder. Each later
    observation that sees the device held by no container credits the time since the action (or
    since the previous such observation); the first observation that sees it held again (taken),
    does not list it, or comes more than ``max_gap_s`` after the last one (nobody watched) ends the
    tag without credit for that stretch. An observation older than the tag says nothing about it.
    """

    def __init__(self, max_gap_s: float) -> None:
        self.max_gap_s = max_gap_s
        self.tags: dict[str, ReclaimTag] = {}

    def freed(
        self,
        devices: Iterable[tuple[str, float]],
        at: datetime,
        *,
        user: str,
        group: str,
        reason: str,
        container: str,
    ) -> None:
        for uuid, weight in devices:
            # A device already counting keeps its first tag: one reclaim, one cause.
            self.tags.setdefault(uuid, ReclaimTag(uuid, weight, user, group, reason, container, at))

    def observe(self, at: datetime, free: Collection[str], listed: Collection[str]) -> list[ReclaimCredit]:
        """One observation at ``at``: ``listed`` devices were seen, ``free`` of them held by nobody."""
        credits: list[ReclaimCredit] = []
        for uuid, tag in list(self.tags.items()):
            if at <= tag.counted_until:
                continue  # taken before the action (a pass's snapshot precedes its actions)
            if uuid not in listed or uuid not in free:
                del self.tags[uuid]  # taken again, or not seen: unknown is not free
                continue
            if (at - tag.counted_until).total_seconds() > self.max_gap_s:
                del self.tags[uuid]  # nobody watched it long enough to say it stayed free
                continue
            credits.append(ReclaimCredit(tag, tag.counted_until, at))
            tag.counted_until = at
        return credits


def span_end(start: datetime, next_at: datetime | None, every_s: float, until: datetime) -> datetime:
    """Where a sample taken at ``start`` stops counting: the next round, the cap, or ``until``."""
    cap = start + timedelta(seconds=every_s * MAX_GAP_INTERVALS)
    end = min(cap, until)
    if next_at is not None:
        end = min(end, next_at)
    return max(end, start)


def hoarding_now(
    rounds: Sequence[UsageRound], current: UsageRound, policy: HoardingPolicy
) -> dict[str, bool | None]:
    """Per device of ``current``: hoarding now (True), not (False), or not known (None).

    Hoarding now: the current observation and every sample back to ``window`` ago are candidates
    (:func:`hoarding_candidate`) with the same holders, no two more than the sample gap apart. Too
    few samples to cover the window (the daemon just started, or was down) is not known, not False.
    """
    history = sorted((r for r in rounds if r.at < current.at), key=lambda r: r.at)
    out: dict[str, bool | None] = {}
    for d in current.devices:
        candidate = hoarding_candidate(d, policy)
        if candidate is not True:
            out[d.uuid] = candidate
            continue
        ids = tuple(h.container_id for h in d.holders)
        start = current.at
        verdict: bool | None = None
        for r in reversed(history):
            if (start - r.at).total_seconds() > r.every_s * MAX_GAP_INTERVALS:
                break  # not watched in between: not known
            past = next((x for x in r.devices if x.uuid == d.uuid), None)
            if past is None:
                break
            if (
                hoarding_candidate(past, policy) is not True
                or tuple(h.container_id for h in past.holders) != ids
            ):
                verdict = False  # it used the GPU, freed the memory or changed hands within the window
                break
            start = r.at
            if (current.at - start).total_seconds() >= policy.window_s:
                break
        if (current.at - start).total_seconds() >= policy.window_s:
            verdict = True
        out[d.uuid] = verdict
    return out
