"""The account behind ``ds01ctl report``: GPU-hours held, held idle, hoarded and reclaimed, and the
controller's actions, per user, group, day or reason, from the event log's events in time order.

Definitions (docs/cli.md, "report", says the same):

- **held**: a device (GPU, or MIG device weighted by its share of the GPU) referenced by at least one
  container, in any state, as the ``controller.usage_sample`` rounds saw it; each sample counts from
  its round until the next one, at most twice the sampling interval (a longer gap was not observed
  and is not counted), and never past the period's end. Time is shared equally among the holders.
- **idle**: held while every holder was stopped or idle (unknown is not idle).
- **hoarded**: held by a running container with at least ``hoardingMemoryThresholdMib`` of memory
  in use at ``hoardingMaxUtilizationPct`` or less, in an unbroken run of samples (same holders)
  lasting at least ``hoardingWindow``; the whole run counts. Hoarding is apart from idleness: a
  container busy on its CPU but not its GPU can hoard.
- **reclaimed**: after a stop or removal by the controller of a container that held a device, the
  time from the action until the device is next taken, counted only between observations that saw
  it held by nobody (:class:`controller.usage.ReclaimTracker`); attributed to the container's owner
  and the action's reason.
- **counts**: the controller's own lines (``source: ds01-controller``): warnings
  (``controller.warning``, not the FYI notices to exempt users), stops (``maintenance.idle_kill``,
  ``maintenance.runtime_kill``, ``container.stop``), removals (``container.remove``, and a stop
  that removed the container), kills (``process.kill``), resets (``gpu.health_check`` with
  status ``cleaned``), releases (``gpu.release``). Dry-run lines are not actions and are not counted.

Pure: fed events and times, no I/O, no clock. Called by :mod:`controller.cli.report`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Final

from controller.usage import (
    MAX_GAP_INTERVALS,
    USAGE_EVENT,
    BadSample,
    DeviceSample,
    DeviceState,
    HoardingEpisode,
    HoardingPolicy,
    HoardingWatch,
    ReclaimCredit,
    ReclaimTracker,
    UsageRound,
    decode_round,
    span_end,
)

CONTROLLER_SOURCE: Final = "ds01-controller"
BY_CHOICES: Final = ("user", "group", "day", "reason")
NO_KEY: Final = "-"
TOP_IDLE: Final = 10

_STOPS: Final = frozenset({"maintenance.idle_kill", "maintenance.runtime_kill", "container.stop"})
_REMOVE: Final = "container.remove"
_COUNTED: Final = {
    "controller.warning": "warnings",
    "maintenance.idle_kill": "stops",
    "maintenance.runtime_kill": "stops",
    "container.stop": "stops",
    "container.remove": "removals",
    "process.kill": "kills",
    "gpu.health_check": "resets",
    "gpu.release": "releases",
}


@dataclass
class Row:
    """One line of the report (or the totals). Seconds here; hours in the output."""

    held_gpu_s: float = 0.0
    idle_gpu_s: float = 0.0
    hoarded_gpu_s: float = 0.0
    reclaimed_gpu_s: float = 0.0
    warnings: int = 0
    stops: int = 0
    removals: int = 0
    kills: int = 0
    resets: int = 0
    releases: int = 0

    def as_dict(self, *, hours_known: bool = True) -> dict[str, Any]:
        """``hours_known`` False (no usage sample in the period): the GPU-hours are ``None``, unknown
        rather than zero; the action counts come from the controller's own lines and stand."""

        def hours(seconds: float) -> float | None:
            return _hours(seconds) if hours_known else None

        return {
            "gpu_hours_held": hours(self.held_gpu_s),
            "gpu_hours_idle": hours(self.idle_gpu_s),
            "gpu_hours_hoarded": hours(self.hoarded_gpu_s),
            "gpu_hours_reclaimed": hours(self.reclaimed_gpu_s),
            "warnings": self.warnings,
            "stops": self.stops,
            "removals": self.removals,
            "kills": self.kills,
            "resets": self.resets,
            "releases": self.releases,
        }


COUNT_FIELDS: Final = tuple(f.name for f in fields(Row) if not f.name.endswith("_s"))


def _hours(seconds: float) -> float:
    return round(seconds / 3600.0, 4)


def _iso(at: datetime) -> str:
    from datetime import UTC

    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Report:
    since: datetime
    until: datetime
    by: str
    totals: Row
    rows: dict[str, Row]
    top_idle: list[dict[str, Any]]
    hoarding: list[dict[str, Any]]
    sample_interval_s: float | None
    observed_s: float
    rounds: int
    bad_samples: int
    out_of_order: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "UsageReport",
            "since": _iso(self.since),
            "until": _iso(self.until),
            "by": self.by,
            # With no usage sample the hours are unknown, not zero (the notes say so too).
            "totals": self.totals.as_dict(hours_known=self.rounds > 0),
            "rows": [
                {"key": k, **r.as_dict(hours_known=self.rounds > 0)} for k, r in sorted(self.rows.items())
            ],
            "top_idle_holders": self.top_idle,
            "hoarding": self.hoarding,
            "samples": {
                "rounds": self.rounds,
                "interval_s": self.sample_interval_s,
                "observed_hours": _hours(self.observed_s),
                "period_hours": _hours((self.until - self.since).total_seconds()),
                "bad": self.bad_samples,
                "out_of_order": self.out_of_order,
            },
            "notes": list(self.notes),
        }


def day_spans(start: datetime, end: datetime, tz: tzinfo | None) -> list[tuple[date, float]]:
    """``[start, end)`` cut at midnight in ``tz`` (None: the system's local time, DST included)."""
    out: list[tuple[date, float]] = []
    cur = start
    while cur < end:
        local = cur.astimezone(tz)
        midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=tz)
        nxt_local = midnight if tz is not None else midnight.astimezone()
        nxt = min(end, nxt_local)
        if nxt <= cur:  # a zone whose midnight does not exist: step an hour
            nxt = min(end, cur + timedelta(hours=1))
        out.append((local.date(), (nxt - cur).total_seconds()))
        cur = nxt
    return out


class Accountant:
    """Folds events (in log order) into a :class:`Report` for ``[since, until)``.

    Events before ``since`` may be fed (and should be, a day's worth): they carry the samples and
    actions whose time runs into the period; only the part inside the period is counted.
    """

    def __init__(
        self,
        since: datetime,
        until: datetime,
        *,
        by: str = "user",
        hoarding: HoardingPolicy | None = None,
        tz: tzinfo | None = None,
        group_of: Callable[[str], str] | None = None,
    ) -> None:
        if by not in BY_CHOICES:
            raise ValueError(f"by must be one of {', '.join(BY_CHOICES)}")
        self.since, self.until, self.by = since, until, by
        self.tz = tz  # None: the system's local time
        self.hoarding_policy = hoarding or HoardingPolicy()
        self._group_of = group_of or (lambda _user: NO_KEY)
        self.totals = Row()
        self.rows: dict[str, Row] = {}
        self._idle_by_user: dict[str, list[float]] = {}  # user -> [idle, held, hoarded]
        self._user_group: dict[str, str] = {}
        self._pending: UsageRound | None = None
        self._previous: UsageRound | None = None
        self._devices_of: dict[str, list[tuple[str, float]]] = {}
        self._tracker = ReclaimTracker(max_gap_s=300.0 * MAX_GAP_INTERVALS)
        self._watch = HoardingWatch(self.hoarding_policy)
        self._episodes: list[HoardingEpisode] = []
        self.interval_s: float | None = None
        self.observed_s = 0.0
        self.rounds = 0
        self.bad_samples = 0
        self.out_of_order = 0

    # --- input -------------------------------------------------------------------------------
    def feed(self, at: datetime, event: Mapping[str, Any]) -> None:
        event_type = event.get("event_type")
        if event.get("source") != CONTROLLER_SOURCE or not isinstance(event_type, str):
            return  # DS01's own scripts share the file; only the controller's lines are accounted
        if event_type == USAGE_EVENT:
            self._sample(at, event.get("details"))
            return
        what = _COUNTED.get(event_type)
        if what is None:
            return
        details = event.get("details")
        d: Mapping[str, Any] = details if isinstance(details, Mapping) else {}
        if event_type == "gpu.health_check" and d.get("status") != "cleaned":
            return  # a failed reset, or a check that reset nothing
        if event_type == "controller.warning" and d.get("severity") == "NOTICE":
            return  # an FYI notice (an exempt user's idle container) warns of nothing
        user = event.get("user") if isinstance(event.get("user"), str) else None
        reason = d.get("reason") if isinstance(d.get("reason"), str) else NO_KEY
        if self.since <= at < self.until:
            self._count(what, at, user, str(reason))
            if event_type in _STOPS and d.get("removed") is True:
                self._count("removals", at, user, str(reason))
        if event_type in _STOPS or event_type == _REMOVE:
            self._freed(at, d, user, str(reason))

    def feed_all(self, events: Iterable[tuple[datetime, Mapping[str, Any]]]) -> Report:
        for at, event in events:
            self.feed(at, event)
        return self.finish()

    # --- counts ------------------------------------------------------------------------------
    def _group(self, user: str | None) -> str:
        if user is None:
            return NO_KEY
        return self._user_group.get(user) or self._group_of(user)

    def _key(self, at: datetime, user: str | None, group: str | None, reason: str | None) -> str | None:
        if self.by == "user":
            return user or NO_KEY
        if self.by == "group":
            return group or NO_KEY
        if self.by == "day":
            return at.astimezone(self.tz).date().isoformat()
        return reason

    def _row(self, key: str) -> Row:
        return self.rows.setdefault(key, Row())

    def _count(self, what: str, at: datetime, user: str | None, reason: str) -> None:
        setattr(self.totals, what, getattr(self.totals, what) + 1)
        key = self._key(at, user, self._group(user), reason)
        if key is not None:
            row = self._row(key)
            setattr(row, what, getattr(row, what) + 1)

    def _add_time(
        self,
        what: str,
        start: datetime,
        end: datetime,
        weight: float,
        who: list[tuple[str, str]],
        reason: str | None,
    ) -> float:
        """Add device time ``[start, end)`` (clipped to the period) shared among ``who``."""
        start, end = max(start, self.since), min(end, self.until)
        if end <= start or weight <= 0:
            return 0.0
        seconds = (end - start).total_seconds() * weight
        setattr(self.totals, what, getattr(self.totals, what) + seconds)
        share = 1.0 / max(len(who), 1)
        for user, group in who or [(NO_KEY, NO_KEY)]:
            if self.by == "day":
                for day, s in day_spans(start, end, self.tz):
                    row = self._row(day.isoformat())
                    setattr(row, what, getattr(row, what) + s * weight * share)
                continue
            key = self._key(start, user, group, reason)
            if key is None:
                continue  # by reason: time that no action caused has no row (totals only)
            row = self._row(key)
            setattr(row, what, getattr(row, what) + seconds * share)
        return seconds

    # --- samples ------------------------------------------------------------------------------
    def _sample(self, at: datetime, details: object) -> None:
        try:
            part = decode_round(details, at)
        except BadSample:
            self.bad_samples += 1
            return
        if self._pending is not None and part.at == self._pending.at:
            self._pending = UsageRound(
                self._pending.at, self._pending.every_s, self._pending.devices + part.devices
            )
            return
        self._flush()
        self._pending = part

    def _flush(self) -> None:
        """The pending round is complete: count the previous one up to it, then watch for reclaim."""
        r, self._pending = self._pending, None
        if r is None:
            return
        prev = self._previous
        if prev is not None and r.at <= prev.at:
            self.out_of_order += 1  # a clock step back, or files out of order: not counted twice
            return
        if prev is not None:
            self._close(prev, r.at)
        self.rounds += 1
        self.interval_s = r.every_s
        self._tracker.max_gap_s = r.every_s * MAX_GAP_INTERVALS
        free = {d.uuid for d in r.devices if d.state == DeviceState.FREE}
        listed = {d.uuid for d in r.devices}
        for credit in self._tracker.observe(r.at, free, listed):
            self._credit(credit)
        for d in r.devices:
            for h in d.holders:
                self._user_group[h.user] = h.group
        devices_of: dict[str, list[tuple[str, float]]] = {}
        for d in r.devices:
            for h in d.holders:
                devices_of.setdefault(h.container_id, []).append((d.uuid, d.weight))
        self._devices_of.update(devices_of)
        self._previous = r

    def _close(self, r: UsageRound, next_at: datetime | None) -> None:
        end = span_end(r.at, next_at, r.every_s, self.until)
        if end <= r.at:
            return
        lo, hi = max(r.at, self.since), min(end, self.until)
        if hi > lo:
            self.observed_s += (hi - lo).total_seconds()
        for ep in self._watch.gap(r.at):
            self._episode(ep)
        for d in r.devices:
            self._device_time(d, r.at, end)
            closed = self._watch.sample(d, r.at, end)
            if closed is not None:
                self._episode(closed)

    def _device_time(self, d: DeviceSample, start: datetime, end: datetime) -> None:
        if not d.holders:
            return
        who = [(h.user, h.group) for h in d.holders]
        held = self._add_time("held_gpu_s", start, end, d.weight, who, None)
        idle = 0.0
        if d.state == DeviceState.IDLE:
            idle = self._add_time("idle_gpu_s", start, end, d.weight, who, None)
        share = 1.0 / len(who)
        for user, _group in who:
            acc = self._idle_by_user.setdefault(user, [0.0, 0.0, 0.0])
            acc[0] += idle * share
            acc[1] += held * share

    def _episode(self, ep: HoardingEpisode) -> None:
        who = [(h.user, h.group) for h in ep.holders]
        total = 0.0
        for start, end in ep.spans:
            total += self._add_time("hoarded_gpu_s", start, end, ep.weight, who, None)
        if total <= 0:
            return  # entirely outside the period
        for user, _group in who:
            self._idle_by_user.setdefault(user, [0.0, 0.0, 0.0])[2] += total / len(who)
        self._episodes.append(ep)

    # --- reclaim ------------------------------------------------------------------------------
    def _freed(self, at: datetime, d: Mapping[str, Any], user: str | None, reason: str) -> None:
        cid = d.get("container_id")
        devices: list[tuple[str, float]] = []
        if isinstance(cid, str) and cid:
            # The round still being assembled is the latest view of who held what.
            pending = self._pending.devices if self._pending is not None else ()
            devices = [
                (x.uuid, x.weight) for x in pending if any(h.container_id == cid[:12] for h in x.holders)
            ]
            devices = devices or self._devices_of.get(cid[:12], [])
        if not devices:
            return  # never seen holding a GPU: nothing to count as given back
        owner = user or NO_KEY
        name = d.get("container") if isinstance(d.get("container"), str) else cid
        self._tracker.freed(
            devices, at, user=owner, group=self._group(user), reason=reason, container=str(name)
        )

    def _credit(self, credit: ReclaimCredit) -> None:
        t = credit.tag
        self._add_time("reclaimed_gpu_s", credit.start, credit.end, t.weight, [(t.user, t.group)], t.reason)

    # --- output ------------------------------------------------------------------------------
    def finish(self) -> Report:
        self._flush()
        if self._previous is not None:
            self._close(self._previous, None)
        for ep in self._watch.finish():
            self._episode(ep)
        notes: list[str] = []
        period_s = (self.until - self.since).total_seconds()
        if self.rounds == 0:
            notes.append(
                "no usage samples in the period: GPU-hours held, idle, hoarded and reclaimed are unknown "
                "(the daemon writes controller.usage_sample every reporting.sampleInterval)"
            )
        elif self.observed_s < period_s * 0.99:
            notes.append(
                f"usage samples cover {_hours(self.observed_s):g} h of the {_hours(period_s):g} h period; "
                "the rest (daemon stopped, Docker or NVML unavailable) is not counted"
            )
        if self.bad_samples:
            notes.append(f"{self.bad_samples} usage sample line(s) did not fit the format and were skipped")
        top = sorted(
            ((u, v) for u, v in self._idle_by_user.items() if v[0] > 0 or v[2] > 0),
            key=lambda kv: (-kv[1][0], -kv[1][2], kv[0]),
        )[:TOP_IDLE]
        return Report(
            since=self.since,
            until=self.until,
            by=self.by,
            totals=self.totals,
            rows=self.rows,
            top_idle=[
                {
                    "user": u,
                    "group": self._user_group.get(u, NO_KEY),
                    "gpu_hours_idle": _hours(v[0]),
                    "gpu_hours_held": _hours(v[1]),
                    "gpu_hours_hoarded": _hours(v[2]),
                }
                for u, v in top
            ],
            hoarding=[
                {
                    "gpu": ep.uuid,
                    "slot": ep.slot,
                    "containers": [h.name for h in ep.holders],
                    "users": sorted({h.user for h in ep.holders}),
                    "start": _iso(ep.start),
                    "end": _iso(ep.end),
                    "hours": _hours(ep.duration_s),
                    "max_memory_bytes": ep.max_memory_bytes,
                }
                for ep in sorted(self._episodes, key=lambda e: (e.start, e.uuid))
            ],
            sample_interval_s=self.interval_s,
            observed_s=self.observed_s,
            rounds=self.rounds,
            bad_samples=self.bad_samples,
            out_of_order=self.out_of_order,
            notes=notes,
        )
