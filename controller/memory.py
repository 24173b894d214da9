"""Controller memory: what must outlive one pass, keyed by container *id* (never by name).

Pure values and pure transitions only; persistence lives in :mod:`controller.store`. The planner
reads a memory and returns the next one (new samples, sightings); the executor records outcomes
(warnings sent, failures and back-off, the breaker) through the ``with_*`` transitions here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass

from controller.snapshot import Slotted

SCHEMA_VERSION = 1
MAX_SAMPLES = 64
# One-shot keys (warnings, alerts) and failure records older than this are forgotten, so memory
# stays bounded on a host that runs for months. A one-shot alert may repeat once after this long.
RETENTION_S = 30 * 24 * 3600.0
# The containers the controller removed are remembered this long: the ledger rows that still name
# one are released after the removal (within the reservation window's passes, or a budget's wait),
# and they do not weigh on the release breaker (controller.plan.safety).
REMOVED_RETENTION_S = 24 * 3600.0
_KEY_TOKEN = re.compile(r"[:+]")


def _utc_if_naive(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# Every time the controller writes carries its offset. One without (a hand edit, a tool that wrote
# the file) is read as UTC: kept naive, it could not be compared with the pass's time, and every
# pass failed on it while the file itself loaded cleanly.
UtcTime = Annotated[datetime, AfterValidator(_utc_if_naive)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample(Slotted):
    """One activity reading of a running container."""

    at: UtcTime
    cpu_usage_ns: int | None = None
    net_bytes: int | None = None
    idle: bool | None = Field(default=None, description="None: could not be decided (unknown signal)")
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepAliveSeen(Slotted):
    """The keep-alive file the controller first saw, to cap keep-alive from first sight."""

    inode: int | None
    first_seen_at: UtcTime
    honoured_mtime: UtcTime | None = Field(
        default=None,
        description="The file's mtime when the keep-alive last held off an idle stop: the idle "
        "warnings start over after each touch that was honoured",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerMemory(Slotted):
    container_id: str
    name: str = ""
    started_at: UtcTime | None = Field(default=None, description="StartedAt these samples belong to")
    samples: tuple[Sample, ...] = ()
    idle_since: UtcTime | None = None
    last_active_at: UtcTime | None = None
    warnings: dict[str, UtcTime] = Field(default_factory=dict, description="warning key -> sent at")
    announced: dict[str, UtcTime] = Field(
        default_factory=dict,
        description="warning key -> the stop time that delivered warning announced: the stop never "
        "comes before it (kept only for keys still in warnings, or rebuilt from the event log)",
    )
    first_seen_at: UtcTime | None = None
    keepalive: KeepAliveSeen | None = None
    unobserved: str | None = Field(
        default=None,
        description="Why the span since the last sample was not watched (paused, Docker unavailable); "
        "the next sample cannot tell when the container was active",
    )
    grace_extension_s: float = Field(
        default=0.0,
        description="Unobserved time (gaps, clock steps) in the grace period, which lasts that much longer",
    )
    runtime_discount_s: float = Field(
        default=0.0,
        description="Forward wall-clock steps seen during this start: wall time that is not runtime",
    )
    hold_discount_s: float = Field(
        default=0.0,
        description="Forward wall-clock steps seen since it stopped (or, never started, since it was "
        "created): wall time that does not count towards its hold",
    )
    last_state: str = Field(default="", description="The state the last pass that saw it observed")
    stopped_by_restart_at: UtcTime | None = Field(
        default=None, description="It was stopped by the engine or host restart at this time, not by a user"
    )
    stopped_by_controller_at: UtcTime | None = Field(
        default=None,
        description="The controller's own StopContainer stopped this start of it at this time (the stop "
        "breaker weighed that stop); its removal is not counted by the removal breaker",
    )
    promised_hold_s: float | None = Field(
        default=None,
        description="The longest hold after the stop that a notice to the owner named for this start "
        '("kept for 2d after the stop"): a warning before the stop, or the notice of the controller\'s '
        "stop, in seconds: this start is not removed before its FinishedAt plus this, whatever the "
        "policy's hold is now. None: no notice named one",
    )


class ProcessSighting(BaseModel):
    model_config = ConfigDict(frozen=True)

    pid: int
    start_time: float | None
    first_seen_at: UtcTime
    last_seen_at: UtcTime
    sightings: int = 1
    reported: bool = Field(default=False, description="A discovery event was written for it")


class Attempt(BaseModel):
    model_config = ConfigDict(frozen=True)

    failures: int = 0
    last_error: str = ""
    next_attempt_at: UtcTime | None = None


class Breaker(BaseModel):
    model_config = ConfigDict(frozen=True)

    tripped: bool = False
    tripped_at: UtcTime | None = None
    reason: str = ""


class GpuMarkCause(StrEnum):
    ORPHANS = "orphans"  # orphaned compute processes were found (and killed) on it
    STALE_MEMORY = "stale-memory"  # memory in use with no process and no live holder


class GpuMark(BaseModel):
    """A physical GPU the planner found dirty; the reset-or-alert decision follows in a later pass."""

    model_config = ConfigDict(frozen=True)

    since: UtcTime
    cause: GpuMarkCause


class ClockStep(BaseModel):
    """A forward wall-clock step, as the pass that saw it read it (:mod:`controller.plan.clock`)."""

    model_config = ConfigDict(frozen=True)

    seen_at: UtcTime = Field(description="The wall time of the observation that saw it (after the step)")
    step_s: float


class RemovedContainer(BaseModel):
    """A container the controller removed itself (kept :data:`REMOVED_RETENTION_S`)."""

    model_config = ConfigDict(frozen=True)

    name: str
    removed_at: UtcTime


class Intent(BaseModel):
    """A destructive action the executor is about to carry out, saved (fsynced) before it starts.

    Cleared when the action's outcome is recorded. One still present when a pass begins belongs to
    an action whose outcome was never recorded (the daemon was killed during it, or the record could
    not be written): the executor verifies the outcome and completes the record with the original
    reason (:meth:`controller.act.executor.RealExecutor.recover`).
    """

    model_config = ConfigDict(frozen=True)

    action: dict[str, Any] = Field(description="The planned Action (JSON form): kind, target, reason, params")
    started_at: UtcTime
    reclaimed_gpu_s: float | None = Field(
        default=None, description="GPU-seconds an idle stop reclaims (the idle time it ends, times its GPUs)"
    )
    closing: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Outcome events that could not be written yet ({event_type, user, details})",
    )


class ControllerMemory(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: int = SCHEMA_VERSION
    containers: dict[str, ContainerMemory] = Field(default_factory=dict)
    processes: dict[str, ProcessSighting] = Field(
        default_factory=dict, description="key 'pid:start_time' -> sighting"
    )
    attempts: dict[str, Attempt] = Field(default_factory=dict, description="action key -> attempts")
    done: dict[str, UtcTime] = Field(
        default_factory=dict, description="Idempotency keys of one-shot actions already performed"
    )
    breaker: Breaker = Breaker()
    release_breaker: Breaker = Field(
        default=Breaker(), description="Holds back ledger releases only; 'breaker reset' closes it too"
    )
    dirty_gpus: dict[str, GpuMark] = Field(
        default_factory=dict, description="physical GPU UUID -> dirty mark (reset or alert pending)"
    )
    last_pass_at: UtcTime | None = Field(
        default=None,
        description="The last pass that planned the containers (Docker answered): a removal due before "
        "it was due then, a backlog the removal breaker does not count again. A pass with Docker "
        "unavailable plans no container and leaves it as it was",
    )
    clock_offset_s: float | None = Field(
        default=None,
        description="Wall-clock minus monotonic seconds at the last pass that read both (a forward step "
        "raises it, a backward one lowers it)",
    )
    clock_monotonic_s: float | None = Field(
        default=None, description="The last monotonic reading (a lower one: the host rebooted)"
    )
    clock_steps: tuple[ClockStep, ...] = Field(
        default=(),
        description="Forward wall-clock steps seen lately, kept while a ledger row written before one "
        "may still be inside its reservation window (a step is not reservation time), and all of them "
        "while Docker does not answer: a container listed with no record starts its hold from them",
    )
    intents: dict[str, Intent] = Field(
        default_factory=dict, description="action key -> destructive action started, outcome not yet recorded"
    )
    removed: dict[str, RemovedContainer] = Field(
        default_factory=dict,
        description="container id -> a container the controller removed itself, for a day: the ledger "
        "rows still naming it are released without weighing on the release breaker",
    )
    rebuilt: dict[str, ContainerMemory] = Field(
        default_factory=dict,
        description="container id -> a record rebuilt from the event log for another start than the one "
        "this memory holds a record of (a memory restored from a backup, older than the log): it "
        "replaces that record at the first pass that lists the container with the start it names, and "
        "is dropped at the first pass Docker answers",
    )

    # --- outcome transitions used by the executor -------------------------------------------
    def with_done(self, key: str, at: datetime) -> ControllerMemory:
        done = dict(self.done)
        done[key] = at
        attempts = dict(self.attempts)
        attempts.pop(key, None)
        return self.model_copy(update={"done": done, "attempts": attempts})

    def with_warning(
        self, container_id: str, warning_key: str, at: datetime, announced: datetime | None = None
    ) -> ControllerMemory:
        """A warning delivered at ``at``; ``announced``: the stop time it told the owner."""
        cm = self.containers.get(container_id) or ContainerMemory(container_id=container_id)
        warnings = dict(cm.warnings)
        warnings[warning_key] = at
        # Announcements of warnings voided since (a new streak, a new start) go with them; a new
        # delivery under a key replaces its announcement (one that named no time leaves none).
        kept = {k: t for k, t in cm.announced.items() if k in warnings and k != warning_key}
        if announced is not None:
            kept[warning_key] = announced
        containers = dict(self.containers)
        containers[container_id] = cm.model_copy(update={"warnings": warnings, "announced": kept})
        return self.model_copy(update={"containers": containers})

    def with_controller_stop(
        self,
        container_id: str,
        started_at: datetime | None,
        at: datetime,
        promised_hold_s: float | None = None,
    ) -> ControllerMemory:
        """The controller's own stop of the start ``started_at`` of a container, done at ``at``;
        ``promised_hold_s``: the hold after the stop its owner's notice named (the longest one kept,
        should the stop be recorded twice).

        Tied to that start: a record of another start is not marked (the planner would drop the mark
        with it anyway, at the container's next start)."""
        cm = self.containers.get(container_id)
        if cm is None:
            cm = ContainerMemory(container_id=container_id, started_at=started_at, first_seen_at=at)
        elif cm.started_at != started_at:
            return self
        update: dict[str, Any] = {"stopped_by_controller_at": at}
        if promised_hold_s is not None:
            earlier = cm.promised_hold_s
            update["promised_hold_s"] = promised_hold_s if earlier is None else max(earlier, promised_hold_s)
        containers = dict(self.containers)
        containers[container_id] = cm.model_copy(update=update)
        return self.model_copy(update={"containers": containers})

    def with_promised_hold(self, container_id: str, started_at: datetime, hold_s: float) -> ControllerMemory:
        """The hold after the stop that a notice to the owner of the start ``started_at`` named: a
        warning's, recorded when it is sent (:func:`controller.plan.types.warning_record`), or one
        rebuilt from the event log (:mod:`controller.act.salvage`), a warning's or the controller's
        stop's. Not the stop's mark (``stopped_by_controller_at``): the removal breaker counts a
        container whose mark was lost.

        The longest promise of that start is kept. A record of an earlier start (rebuilt from an
        earlier line) gives way to it; one of a later start is left alone: the promise no longer
        applies. (A memory read cleanly keeps its own record of another start: the salvage does not
        call this for it.)"""
        cm = self._record_of_start(container_id, started_at)
        if cm is None or (cm.promised_hold_s is not None and cm.promised_hold_s >= hold_s):
            return self
        containers = dict(self.containers)
        containers[container_id] = cm.model_copy(update={"promised_hold_s": hold_s})
        return self.model_copy(update={"containers": containers})

    def with_restart_mark(
        self, container_id: str, started_at: datetime, restart_at: datetime
    ) -> ControllerMemory:
        """The start ``started_at`` of a container was stopped by the restart at ``restart_at``, as a
        pass decided, rebuilt from the event log (:mod:`controller.act.salvage`): it keeps the restart's
        hold. A mark already there stays; records of other starts as :meth:`with_promised_hold`."""
        cm = self._record_of_start(container_id, started_at)
        if cm is None or cm.stopped_by_restart_at is not None:
            return self
        containers = dict(self.containers)
        containers[container_id] = cm.model_copy(update={"stopped_by_restart_at": restart_at})
        return self.model_copy(update={"containers": containers})

    def with_announced(
        self, container_id: str, started_at: datetime, warning_key: str, stop_at: datetime
    ) -> ControllerMemory:
        """The stop time a warning about the start ``started_at`` announced, rebuilt from the event
        log (:mod:`controller.act.salvage`): the stop never comes before it. Not the warning's
        delivery: it is sent again, naming that time. The latest time kept; records of other starts
        as :meth:`with_promised_hold`."""
        cm = self._record_of_start(container_id, started_at)
        if cm is None:
            return self
        told = cm.announced.get(warning_key)
        if told is not None and told >= stop_at:
            return self
        containers = dict(self.containers)
        containers[container_id] = cm.model_copy(update={"announced": {**cm.announced, warning_key: stop_at}})
        return self.model_copy(update={"containers": containers})

    def _record_of_start(self, container_id: str, started_at: datetime) -> ContainerMemory | None:
        """The record of the start ``started_at`` of a container, a new one when the memory holds
        none or one of an earlier start; None when it holds one of a later start."""
        cm = self.containers.get(container_id)
        if cm is not None and cm.started_at is not None and cm.started_at > started_at:
            return None
        if cm is None or cm.started_at != started_at:
            return ContainerMemory(container_id=container_id, started_at=started_at)
        return cm

    def with_controller_removal(self, container_id: str, name: str, at: datetime) -> ControllerMemory:
        """A container the controller removed at ``at`` (its ledger rows are its own to release)."""
        removed = dict(self.removed)
        removed[container_id] = RemovedContainer(name=name, removed_at=at)
        return self.model_copy(update={"removed": removed})

    def with_controller_end(
        self,
        container_id: str,
        name: str,
        started_at: datetime | None,
        at: datetime,
        *,
        removed: bool,
        promised_hold_s: float | None = None,
    ) -> ControllerMemory:
        """What the controller's own stop or removal of a container left: removed (see
        :meth:`with_controller_removal`), or stopped in place (see :meth:`with_controller_stop`,
        with the hold its notice named). The executor records a done stop or removal this way, the
        forecast a predicted one."""
        if removed:
            return self.with_controller_removal(container_id, name, at)
        return self.with_controller_stop(container_id, started_at, at, promised_hold_s)

    def with_failure(
        self, key: str, error: str, at: datetime, base_s: float = 5.0, cap_s: float = 900.0
    ) -> ControllerMemory:
        prev = self.attempts.get(key) or Attempt()
        failures = prev.failures + 1
        delay = min(cap_s, base_s * (2 ** (failures - 1)))
        attempts = dict(self.attempts)
        attempts[key] = Attempt(
            failures=failures, last_error=error, next_attempt_at=at + timedelta(seconds=delay)
        )
        return self.model_copy(update={"attempts": attempts})

    def with_intent(self, key: str, intent: Intent) -> ControllerMemory:
        intents = dict(self.intents)
        intents[key] = intent
        return self.model_copy(update={"intents": intents})

    def without_intent(self, key: str) -> ControllerMemory:
        if key not in self.intents:
            return self
        intents = dict(self.intents)
        del intents[key]
        return self.model_copy(update={"intents": intents})

    def with_breaker(self, breaker: Breaker) -> ControllerMemory:
        return self.model_copy(update={"breaker": breaker})

    @property
    def breakers_tripped(self) -> list[tuple[str, Breaker]]:
        """The tripped breakers by name ("breaker", "release breaker"), for status lines."""
        named = (("breaker", self.breaker), ("release breaker", self.release_breaker))
        return [(name, b) for name, b in named if b.tripped]

    def with_breakers_reset(self) -> ControllerMemory:
        """What ``ds01ctl breaker reset`` leaves: both breakers closed."""
        return self.model_copy(update={"breaker": Breaker(), "release_breaker": Breaker()})

    def pruned(self, now: datetime) -> ControllerMemory:
        """Drop done keys and attempts older than :data:`RETENTION_S`, removals older than
        :data:`REMOVED_RETENTION_S`."""
        horizon = now - timedelta(seconds=RETENTION_S)

        def kept(a: Attempt) -> bool:
            return a.next_attempt_at is None or a.next_attempt_at >= horizon

        removed_horizon = now - timedelta(seconds=REMOVED_RETENTION_S)
        # The common pass drops nothing: look before copying.
        if (
            all(at >= horizon for at in self.done.values())
            and all(map(kept, self.attempts.values()))
            and all(r.removed_at >= removed_horizon for r in self.removed.values())
        ):
            return self
        done = {k: at for k, at in self.done.items() if at >= horizon}
        attempts = {k: a for k, a in self.attempts.items() if kept(a)}
        removed = {cid: r for cid, r in self.removed.items() if r.removed_at >= removed_horizon}
        return self.model_copy(update={"done": done, "attempts": attempts, "removed": removed})

    def without_containers(self, gone: set[str]) -> ControllerMemory:
        """Drop the attempts and done keys that name a container that is gone.

        Keys name containers by full id (``RemoveContainer:<id>:...``, ``WarnOwner:<id>:...``,
        ``AlertAdmin:DuplicateGpuHolder:<gpu>:<id>+<id>``). A container id never comes back, so what
        was recorded about its actions can never be consulted again; kept, it would grow with every
        container a busy host ever ran.
        """
        if not gone:
            return self

        def keep(key: str) -> bool:
            return not any(token in gone for token in _KEY_TOKEN.split(key))

        done = {k: at for k, at in self.done.items() if keep(k)}
        attempts = {k: a for k, a in self.attempts.items() if keep(k)}
        if len(done) == len(self.done) and len(attempts) == len(self.attempts):
            return self
        return self.model_copy(update={"done": done, "attempts": attempts})

    def forget_container(self, container_id: str) -> ControllerMemory:
        if container_id not in self.containers:
            return self
        containers = dict(self.containers)
        del containers[container_id]
        return self.model_copy(update={"containers": containers})
