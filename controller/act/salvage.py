"""Starting from corrupt state: state files moved aside, and a fresh memory that is never bolder.

At start the daemon reads its memory and checks the other state files it keeps in the state
directory. A file that cannot be read or parsed is moved aside as ``<name>.corrupt-<UTC time>``
(kept for the admin), announced once and loudly (an ``ERROR`` log line, a
``controller.state_quarantined`` event, the ``ds01_state_quarantined_timestamp_seconds`` metric),
and the daemon starts without it instead of refusing to start:

=========================  ====================================================================
``memory.json``            fresh memory: new idle streaks, new grace periods, new warnings
``policy-status.json``     written again at the next policy reload (``ds01ctl get policies``)
``workload-inventory.json`` the next pass is a baseline again (no ``detection.*`` events for it)
``inspect-cache.bin``      rewritten after the first pass (``ds01ctl`` starts cold meanwhile)
=========================  ====================================================================

A fresh memory is more conservative than the lost one in everything but a few things, which are
rebuilt from the event log (:func:`memory_from_events`) so that losing the memory never makes the
controller bolder: an open **circuit breaker**, the stop breaker or the release breaker, each as
itself (a fresh memory would close it), **GPU resets** already performed (a fresh memory would
allow resetting a still-dirty GPU again), **back-off** of failed actions, and the **forward
wall-clock steps** seen lately (``clock_steps``, from the daemon's ``controller.clock_step`` lines:
a fresh memory would count a step as hold time, runtime and reservation time, and remove a stopped
container, stop one over its max runtime or release a ledger row that much early), and the **hold a
stop notice named** for the start the controller stopped (``promised_hold_s``, from the stop's
``controller.action_started`` line, or a warning's before it, from its ``controller.warning`` line:
a fresh memory would remove the container by a policy reloaded shorter since, before the time its
owner was told; not the stop's mark, so the removal breaker counts that container again), and
the containers an engine or host **restart stopped** (``stopped_by_restart_at``, from the daemon's
``controller.restart_stop`` lines: decided from what the controller saw before the restart and from
the last restart, a fresh memory would give a container seen running across a long reboot, or one
stopped before a later restart, its normal hold and remove it at once), and the **stop time each
warning announced** for the start it was about (``announced``, from the ``controller.warning``
lines: a fresh memory would stop the container by a policy reloaded shorter since, before the time
its owner was told). Destructive actions
**started and never closed** (a crash during one) are rebuilt as open intents from their
``controller.action_started`` lines, so the next pass still records them once with their original
reason (an interrupted stop with the hold its notice names). The event log rotated last
(``<log>.1``) is read before the log itself. When the event log cannot be read, the breaker is
opened (unknown is not safe). Warnings and admin notices are not rebuilt (the holds they named
and the stop times they announced are): they may be sent once more (naming the stop time
announced before), and a stop waits for its warning's lead time again. A
memory file that is missing is rebuilt the same way: on a first start the log holds nothing of the
controller's. A memory that reads cleanly but is older than the log (restored from a backup) is
kept, with the breakers, resets, open intents, clock steps, stop notices' holds, restarts' marks
and warnings' stop times the log adds, and without its open intents that the log shows recorded
since (:func:`_closed_in_the_log`) (not over its own record of another start of a container:
the log's lines are not authenticated; the log's record of a later start is kept aside, and the
first pass that lists the container with that start takes it) (:func:`not_older_than_the_log`).

Called by :func:`controller.wiring.build_controller`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeGuard

from loguru import logger
from pydantic import ValidationError

from controller.act.events import EventLog, EventType, parse_timestamp, tail, utc_timestamp
from controller.act.executor import closed_by_its_line, event_reason
from controller.memory import (
    RETENTION_S,
    Attempt,
    Breaker,
    ClockStep,
    ContainerMemory,
    ControllerMemory,
    GpuMark,
    GpuMarkCause,
    Intent,
)
from controller.observe.docker_adapter import inspect_cache_readable
from controller.plan.clock import STEP_FORWARD
from controller.plan.types import KEPT_AFTER_STOP_S, Action, ActionKind, Reason
from controller.store import (
    INSPECT_CACHE_FILE,
    POLICY_STATUS_FILE,
    MemoryStore,
    StoreError,
    check_state_file,
    quarantine_file,
)

INVENTORY_FILE = "workload-inventory.json"
# The key of the release breaker's alert (controller.plan.safety.breaker_alert); the stop breaker's
# is "AlertAdmin:BreakerTripped:<time>".
RELEASE_BREAKER_KEY = "AlertAdmin:ReleaseBreakerTripped:"
# How many event-log lines (newest first) the rebuild of a lost memory reads at most.
SALVAGE_SCAN_LINES = 200_000
# A container's full id, as the controller writes it on its lines. The log is shared with scripts
# that run as the user: a record rebuilt for anything else (a GPU's UUID, a word of an action's key)
# would be a container gone at the first pass, which drops every record of an action whose key
# names it (``ControllerMemory.without_containers``): a GPU reset already performed, its back-off.
_CONTAINER_ID = re.compile(r"[0-9a-f]{64}\Z")

# What starting without each file means, for the log line and the docs.
CONSEQUENCE = {
    "memory.json": "starting with fresh memory (new idle streaks and grace periods; the breaker, "
    "GPU resets, back-off, wall-clock steps, the holds stop notices and warnings named and the containers a "
    "restart stopped are restored from the event log)",
    POLICY_STATUS_FILE: "ds01ctl shows no reload status until the next policy reload",
    INVENTORY_FILE: "the next pass is a new inventory baseline",
    INSPECT_CACHE_FILE: "ds01ctl starts cold until the first pass rewrites it",
}


@dataclass(frozen=True)
class Quarantined:
    path: Path
    moved_to: Path | None
    why: str


def _json_object_problem(data: bytes) -> str | None:
    try:
        value = json.loads(data)
    except ValueError as exc:
        return f"not valid JSON ({exc})"
    return None if isinstance(value, dict) else "does not hold a JSON object"


def _cache_problem(data: bytes) -> str | None:
    return None if inspect_cache_readable(data) else "not an inspect cache this controller wrote"


CHECKS: dict[str, Callable[[bytes], str | None]] = {
    POLICY_STATUS_FILE: _json_object_problem,
    INVENTORY_FILE: _json_object_problem,
    INSPECT_CACHE_FILE: _cache_problem,
}


def load_state(
    store: MemoryStore,
    event_log: EventLog,
    now: datetime,
    *,
    on_quarantine: Callable[[str, datetime], None] | None = None,
) -> ControllerMemory:
    """The memory to start from, after moving aside every state file that cannot be read.

    Raises :class:`controller.store.StoreError` only for what moving aside cannot fix (an
    untrusted state directory or file, a missing permission).
    """
    # No memory file is a first start, or a memory lost: moved aside by a start that was killed
    # before it saved one, or a state directory restored or replaced without it. Only the event log
    # tells them apart, and rebuilding from a log without the controller's lines is a fresh memory.
    missing = not os.path.lexists(store.path)
    memory, moved, why = store.load_or_quarantine(now)
    found: list[Quarantined] = []
    if moved is not None:
        found.append(Quarantined(store.path, moved, why))
    for name, check in CHECKS.items():
        path = store.state_dir / name
        try:
            problem = check_state_file(path, check)
        except StoreError as exc:  # untrusted: refused by its readers already; not ours to move
            logger.warning("state file {}: {}", path, exc)
            continue
        if problem is not None:
            found.append(Quarantined(path, quarantine_file(path, now), problem))
    for q in found:
        logger.error(
            "STATE FILE CORRUPT: {}: {}; moved aside to {} (kept for inspection); {}",
            q.path,
            q.why,
            q.moved_to,
            CONSEQUENCE.get(q.path.name, "starting without it"),
        )
        event_log.write(
            EventType.STATE_QUARANTINED,
            user=None,
            details={
                "file": str(q.path),
                "moved_to": str(q.moved_to) if q.moved_to else None,
                "why": q.why,
                "consequence": CONSEQUENCE.get(q.path.name, "starting without it"),
            },
        )
        if on_quarantine is not None:
            on_quarantine(q.path.name, now)
    if moved is not None or missing:
        memory = memory_from_event_log(event_log.path, now)
        if missing and memory != ControllerMemory():
            logger.warning(
                "no memory in {}, but the event log {} shows an earlier run: {}",
                store.path,
                event_log.path,
                CONSEQUENCE[store.path.name],
            )
        return memory
    return not_older_than_the_log(memory, event_log.path, now)


def not_older_than_the_log(memory: ControllerMemory, path: Path, now: datetime) -> ControllerMemory:
    """``memory`` with what the event log says happened after it was saved (see the module).

    A memory that reads cleanly may still be older than the log: restored from a backup, or copied
    from another host. What it would forget is taken from the log: a breaker tripped since (no
    reset after it), GPU resets done, actions started and never closed. What is there already is
    kept; forward wall-clock steps it never saw are added (:func:`_steps_since`); a log that cannot
    be read changes nothing (the memory itself was read)."""
    try:
        events = _read_log(path)
    except OSError:
        return memory
    memory = _closed_in_the_log(memory, events, now)
    logged = memory_from_events(events, now)
    update: dict[str, Any] = {}
    for name in ("breaker", "release_breaker"):
        mine, theirs = getattr(memory, name), getattr(logged, name)
        if theirs.tripped and not mine.tripped:
            update[name] = theirs
            logger.error("{}: tripped after the memory was saved (an older memory?): {}", name, theirs.reason)
    done = {k: at for k, at in logged.done.items() if k not in memory.done}
    if done:
        update["done"] = {**memory.done, **done}
        update["dirty_gpus"] = {**logged.dirty_gpus, **memory.dirty_gpus}
    intents = {k: i for k, i in logged.intents.items() if k not in memory.intents}
    if intents:
        update["intents"] = {**memory.intents, **intents}
    records = _records_added(memory, logged)
    if records is not memory:
        update["containers"] = records.containers
        logger.warning(
            "restored from the event log, newer than the memory: holds named by stop notices, "
            "containers stopped by a restart"
        )
    rebuilt = _records_of_other_starts(memory, logged)
    if rebuilt:
        update["rebuilt"] = {**memory.rebuilt, **rebuilt}
        logger.warning(
            "restored from the event log, newer than the memory: {} container(s) started again since it "
            "was saved, with holds notices named, restarts' marks or warnings' stop times (taken when a "
            "pass lists that start)",
            len(rebuilt),
        )
    steps = _steps_since(memory, logged.clock_steps)
    if steps:
        update["clock_steps"] = tuple(sorted((*memory.clock_steps, *steps), key=lambda s: s.seen_at))
        update["containers"] = _held_across(update.get("containers", memory.containers), steps)
        logger.warning(
            "restored from the event log, newer than the memory: {} forward wall-clock step(s)", len(steps)
        )
    if done or intents:
        logger.warning(
            "restored from the event log, newer than the memory: {} GPU reset(s) already performed, "
            "{} action(s) started and never recorded as finished",
            len(done),
            len(intents),
        )
    return memory.model_copy(update=update) if update else memory


def _closed_in_the_log(
    memory: ControllerMemory, events: list[dict[str, Any]], now: datetime
) -> ControllerMemory:
    """``memory`` without the open intents whose outcome line the log holds, with what the save after
    that line held (:func:`controller.act.executor.closed_by_its_line`).

    The recovery looks for an intent's outcome line in the log's last lines only: one written
    further back (a backup's intent, recorded since) would be verified again, and the stop or
    removal recorded twice, its owner told twice. And the log's later open intent of the same key
    (the same rule's stop of a later start, interrupted) is added only once this one is closed. An
    outcome line is not authenticated, but the recovery takes one as it is where it finds one; an
    intent the log does not show closed is kept over the log's intent of the same key."""
    if not memory.intents:
        return memory
    wanted = {(key, utc_timestamp(intent.started_at)): key for key, intent in memory.intents.items()}
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for event in events:
        d = _details(event)
        if d.get("phase") not in ("done", "failed", "skipped"):
            continue
        key = wanted.get((str(d.get("key")), str(d.get("intent_at"))))
        if key is not None and key not in found:
            found[key] = (str(event.get("event_type")), {**d, "at": event.get("timestamp")})
    for key, (event_type, details) in found.items():
        logger.warning("{}: recorded in the event log after the memory was saved (an older memory?)", key)
        memory = closed_by_its_line(memory, key, memory.intents[key], event_type, details, now)
    return memory


def _records_added(memory: ControllerMemory, logged: ControllerMemory) -> ControllerMemory:
    """``memory`` with the holds the logged stop notices named and the logged restarts' marks that it
    lacks (the same ``memory`` when it has them all): see :meth:`ControllerMemory.with_promised_hold`
    and :meth:`ControllerMemory.with_restart_mark`.

    Only for a container the memory holds no record of, or one of the same start. A record of
    another start is kept as it is: read cleanly, the memory is the controller's own, while the log's
    lines are not authenticated (scripts that run as the user append to it), and a line naming a
    later start would replace the record of the start listed now, with the hold its stop notice
    named, its restart's mark and its discounts."""
    for cm in logged.containers.values():
        held = memory.containers.get(cm.container_id)
        if cm.started_at is None or (held is not None and held.started_at != cm.started_at):
            continue
        if cm.promised_hold_s is not None:
            memory = memory.with_promised_hold(cm.container_id, cm.started_at, cm.promised_hold_s)
        if cm.stopped_by_restart_at is not None:
            memory = memory.with_restart_mark(cm.container_id, cm.started_at, cm.stopped_by_restart_at)
        for warning_key, stop_at in cm.announced.items():
            memory = memory.with_announced(cm.container_id, cm.started_at, warning_key, stop_at)
    return memory


def _records_of_other_starts(
    memory: ControllerMemory, logged: ControllerMemory
) -> dict[str, ContainerMemory]:
    """The log's records of a later start than the one ``memory`` holds a record of, that name a
    hold, a restart's mark or a stop time (:func:`_records_added` leaves them out). A memory restored
    from a backup holds a record of the start it saw; the container may have been started again,
    warned and stopped since, and the hold its owner was told then must still bind. Which start is
    real only the next listing tells (the log's lines are not authenticated): the planner takes one
    only for the start it lists (:attr:`ControllerMemory.rebuilt`), and the memory's own record stays."""
    found: dict[str, ContainerMemory] = {}
    for cid, cm in logged.containers.items():
        held = memory.containers.get(cid)
        if held is None or cm.started_at is None:
            continue
        if held.started_at is not None and cm.started_at <= held.started_at:
            continue
        if cm.promised_hold_s is not None or cm.stopped_by_restart_at is not None or cm.announced:
            found[cid] = cm
    return found


def _held_across(
    containers: Mapping[str, ContainerMemory], steps: tuple[ClockStep, ...]
) -> dict[str, ContainerMemory]:
    """Each record with the steps its memory never saw added to its hold discount: a container the
    memory saw stopped (or running: it may have stopped before a step since) does not count them as
    hold time, also when the next pass cannot see them as a rise of the offset (the host rebooted
    since). When it can, they count twice: a removal later, never earlier. The planner caps a
    discount at the time since the hold began, and drops it for a container listed running."""
    added_s = sum(s.step_s for s in steps)
    return {
        cid: cm.model_copy(update={"hold_discount_s": cm.hold_discount_s + added_s})
        for cid, cm in containers.items()
    }


def _steps_since(memory: ControllerMemory, logged: tuple[ClockStep, ...]) -> tuple[ClockStep, ...]:
    """The logged forward steps ``memory`` never saw: seen after its last clock reading (its wall time
    is the offset plus the monotonic reading), or after its last pass when it has none, and not
    already among its steps.

    A container with no record yet starts from them (the planner); one the memory holds gets them
    added to its hold discount (:func:`_held_across`). The next pass may see the same steps once more
    as one rise of the offset since that reading (no reboot since): a ledger row and a container then
    count them twice, which makes a release or a removal later, never earlier."""
    if memory.clock_offset_s is not None and memory.clock_monotonic_s is not None:
        # (A second's margin: that sum is a float, and passes are seconds apart.)
        reading = datetime.fromtimestamp(memory.clock_offset_s + memory.clock_monotonic_s, UTC)
        since: datetime | None = reading + timedelta(seconds=1)
    else:
        since = memory.last_pass_at
    known = {s.seen_at for s in memory.clock_steps}
    return tuple(s for s in logged if s.seen_at not in known and (since is None or s.seen_at > since))


def _read_log(path: Path) -> list[dict[str, Any]]:
    """The event log's last lines, the log rotated last (``<log>.1``) first; raises ``OSError``."""
    events: list[dict[str, Any]] = []
    for part in (path.with_name(path.name + ".1"), path):
        try:
            events += tail(part, SALVAGE_SCAN_LINES, scan_limit_lines=SALVAGE_SCAN_LINES)
        except FileNotFoundError:
            continue
    return events


def memory_from_event_log(path: Path, now: datetime) -> ControllerMemory:
    """A fresh memory with what must not be forgotten rebuilt from the event log (see the module).

    The log rotated last (``<log>.1``, left uncompressed by ``delaycompress``) is read first: a
    breaker tripped before this week's rotation is in it, and right after a rotation the log itself
    is not there at all (``nocreate``: deploy/logrotate.d)."""
    try:
        events = _read_log(path)
    except OSError as exc:
        reason = (
            f"the memory was lost and the event log {path} cannot be read ({exc.strerror or exc}) to "
            f"tell whether the breaker was open; review, then 'ds01ctl breaker reset'"
        )
        logger.error("circuit breaker opened: {}", reason)
        return ControllerMemory(breaker=Breaker(tripped=True, tripped_at=now, reason=reason))
    memory = memory_from_events(events, now)
    for name, breaker in memory.breakers_tripped:
        what = "circuit breaker" if name == "breaker" else name
        logger.error("{} restored from the event log: {}", what, breaker.reason)
    if memory.done or memory.attempts or memory.intents or memory.clock_steps or memory.containers:
        logger.warning(
            "restored from the event log: {} GPU reset(s) already performed, {} back-off(s), "
            "{} action(s) started and never recorded as finished, {} forward wall-clock step(s), "
            "{} container(s) with a hold a notice named or a restart's mark",
            len(memory.done),
            len(memory.attempts),
            len(memory.intents),
            len(memory.clock_steps),
            len(memory.containers),
        )
    return memory


def _details(event: Mapping[str, Any]) -> Mapping[str, Any]:
    d = event.get("details")
    return d if isinstance(d, Mapping) else {}


def memory_from_events(events: Iterable[Mapping[str, Any]], now: datetime) -> ControllerMemory:
    """Pure: the breakers, GPU resets, back-off, open intents, forward clock steps, the holds stop
    notices and warnings named and the restarts' marks a lost memory held, from event lines (oldest
    first).

    The clock steps are those of the last :data:`RETENTION_S`: the first pass starts each
    container's record from them (a step seen after its hold began or its start is not hold time or
    runtime: ``controller.plan.planner._observe_containers``) and then keeps them only as long as
    the planner does (``controller.plan.clock.recent_steps``)."""
    horizon = now - timedelta(seconds=RETENTION_S)
    breaker = release_breaker = Breaker()
    done: dict[str, datetime] = {}
    marks: dict[str, GpuMark] = {}
    attempts: dict[str, Attempt] = {}
    started: dict[tuple[str, str], tuple[datetime, Mapping[str, Any]]] = {}
    closed: set[tuple[str, str]] = set()
    carried_out: list[tuple[tuple[str, str], Mapping[str, Any]]] = []
    restarts: list[tuple[str, datetime, datetime]] = []
    warnings: list[tuple[str, datetime, float]] = []
    told: list[tuple[datetime, tuple[str, datetime, str, datetime]]] = []
    ended: dict[str, datetime] = {}  # container id -> the controller's last stop or removal of it
    steps: dict[datetime, ClockStep] = {}
    for event in events:
        kind = event.get("event_type")
        at = parse_timestamp(event.get("timestamp"))
        d = _details(event)
        if kind == EventType.CLOCK_STEP:
            step = _forward_step(at, d)
            if step is not None and step.seen_at >= horizon:
                steps[step.seen_at] = step
            continue
        if kind == EventType.RESTART_STOP:
            mark = _restart_mark(d)
            if mark is not None:
                restarts.append(mark)
            continue
        if kind == EventType.WARNING:
            warned = _warning(d)
            if warned is not None:
                cid, started_at, hold_s, announced = warned
                if hold_s is not None:
                    warnings.append((cid, started_at, hold_s))
                # Its stop time only from a line of an action (a key) written since the horizon.
                if (
                    announced is not None
                    and isinstance(d.get("key"), str)
                    and at is not None
                    and at >= horizon
                ):
                    told.append((at, (cid, started_at, *announced)))
        if kind == EventType.BREAKER_TRIPPED:
            message = str(d.get("message") or "tripped")
            restored = Breaker(
                tripped=True,
                tripped_at=at,
                reason=f"restored from the event log (memory was lost): {message}",
            )
            # Each breaker's alert names it in its key: the release breaker holds back releases alone.
            if str(d.get("key") or "").startswith(RELEASE_BREAKER_KEY):
                release_breaker = restored
            else:
                breaker = restored
        elif kind == "controller.breaker_reset":
            breaker = release_breaker = Breaker()  # a reset closes both
        key = d.get("key")
        if not isinstance(key, str) or at is None or at < horizon:
            continue
        tie = (key, str(d.get("intent_at")))
        if kind == EventType.ACTION_STARTED and d.get("phase") == "started":
            started[tie] = (at, d)
        elif d.get("phase") in ("done", "failed", "skipped"):
            closed.add(tie)
            if d.get("phase") == "done" and kind != EventType.ACTION_DONE:
                carried_out.append((tie, d))  # the action's own event: it was carried out
                if d.get("kind") in _ENDING and isinstance(d.get("container_id"), str):
                    ended[str(d["container_id"])] = at
        if key.startswith("ResetGpu:") and d.get("phase") != "started":
            # ResetGpu:<uuid>:<dirty since>:GpuDirty -- performed (or interrupted): never again blind.
            parts = key.split(":", 2)
            since = parse_timestamp(parts[2].rsplit(":", 1)[0]) if len(parts) == 3 else None
            done[key] = at
            if since is not None:
                marks[parts[1]] = GpuMark(since=since, cause=GpuMarkCause.STALE_MEMORY)
        if kind == EventType.ACTION_FAILED:
            next_at = parse_timestamp(d.get("next_attempt_at"))
            failures = d.get("failures")
            if next_at is not None and next_at > now and isinstance(failures, int):
                attempts[key] = Attempt(
                    failures=failures, last_error=str(d.get("error") or ""), next_attempt_at=next_at
                )
        elif d.get("phase") == "done" or kind in (EventType.GPU_HEALTH_CHECK,):
            attempts.pop(key, None)
    intents: dict[str, Intent] = {}
    for tie, (at, d) in started.items():
        if tie in closed:
            continue
        intent = _intent_from_started(tie[0], at, d)
        if intent is not None:
            intents[tie[0]] = intent
    memory = ControllerMemory(
        breaker=breaker,
        release_breaker=release_breaker,
        done=done,
        dirty_gpus=marks,
        attempts=attempts,
        intents=intents,
        clock_steps=tuple(steps[k] for k in sorted(steps)),
    )
    for tie, d in carried_out:
        begun = started.get(tie)
        if begun is not None:
            memory = _with_promise(memory, begun[1], d)
    for cid, started_at, hold_s in warnings:
        memory = memory.with_promised_hold(cid, started_at, hold_s)
    for cid, started_at, restart_at in restarts:
        memory = memory.with_restart_mark(cid, started_at, restart_at)
    for warned_at, (cid, started_at, warning_key, stop_at) in told:
        if cid not in ended or ended[cid] < warned_at:  # (a stop or removal since ended that start)
            # Moved by the forward steps seen since, as the memory moves it (plan.clock.with_clock_step).
            later_s = sum(s.step_s for s in memory.clock_steps if s.seen_at > warned_at)
            memory = memory.with_announced(cid, started_at, warning_key, stop_at + timedelta(seconds=later_s))
    return memory


def _warning(
    d: Mapping[str, Any],
) -> tuple[str, datetime, float | None, tuple[str, datetime] | None] | None:
    """What a ``controller.warning`` line says of the start it warned: the container and start, the
    hold after the stop its notice named (it binds that start as a stop notice's does:
    :func:`controller.plan.types.warning_record`; None: it named none), and the warning key and
    stop time it announced (None: a notice that named no stop time). None for a line that names no
    full container id (:data:`_CONTAINER_ID`) or no start."""
    cid = d.get("container_id")
    started_at = parse_timestamp(d.get("expected_started_at"))
    if not _is_container_id(cid) or started_at is None:
        return None
    hold_s = _hold_s(d.get(KEPT_AFTER_STOP_S))
    warning_key = d.get("warning_key")
    stop_at = parse_timestamp(d.get("stop_expected_at"))
    announced = (
        (warning_key, stop_at)
        if isinstance(warning_key, str) and warning_key and stop_at is not None
        else None
    )
    return cid, started_at, hold_s, announced


_ENDING = (ActionKind.STOP_CONTAINER.value, ActionKind.REMOVE_CONTAINER.value)


def _restart_mark(d: Mapping[str, Any]) -> tuple[str, datetime, datetime] | None:
    """The container, start and restart a ``controller.restart_stop`` line records; None for a line
    that does not say them all."""
    cid = d.get("container_id")
    started_at = parse_timestamp(d.get("started_at"))
    restart_at = parse_timestamp(d.get("restart_at"))
    if not _is_container_id(cid) or started_at is None or restart_at is None:
        return None
    return cid, started_at, restart_at


def _hold_s(value: object) -> float | None:
    """A hold in seconds as a line writes it (a finite number, not a boolean); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _is_container_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _CONTAINER_ID.match(value) is not None


def _with_promise(
    memory: ControllerMemory, started: Mapping[str, Any], done: Mapping[str, Any]
) -> ControllerMemory:
    """``memory`` with the hold the owner's notice of a StopContainer named, for the start it
    stopped (:meth:`ControllerMemory.with_promised_hold`): a stop carried out that left the
    container in place, its notice sent (not one found stopped and started again since). The hold is
    on its ``controller.action_started`` line (``started``); a line written before it was there
    leaves the stop event's evidence (``done``)."""
    if started.get("kind") != ActionKind.STOP_CONTAINER.value:
        return memory
    if done.get("removed") is not False or done.get("restarted_since"):
        return memory
    hold = started.get(KEPT_AFTER_STOP_S)
    evidence = done.get("evidence")
    if hold is None and isinstance(evidence, Mapping):
        hold = evidence.get(KEPT_AFTER_STOP_S)
    cid = started.get("container_id")
    started_at = parse_timestamp(started.get("expected_started_at"))
    hold_s = _hold_s(hold)
    if not _is_container_id(cid) or started_at is None or hold_s is None:
        return memory
    return memory.with_promised_hold(cid, started_at, hold_s)


def _forward_step(at: datetime | None, d: Mapping[str, Any]) -> ClockStep | None:
    """The forward step a ``controller.clock_step`` line records; None for a backward one (never
    discounted) or a line that does not say (seen at the observation it names, else when written)."""
    step_s = d.get("step_s")
    seen_at = parse_timestamp(d.get("seen_at")) or at
    if d.get("direction") != STEP_FORWARD or seen_at is None:
        return None
    if isinstance(step_s, bool) or not isinstance(step_s, int | float) or not step_s > 0:
        return None
    return ClockStep(seen_at=seen_at, step_s=float(step_s))


_REASON_BY_EVENT = {event_reason(r): r for r in Reason}


def _intent_from_started(key: str, at: datetime, d: Mapping[str, Any]) -> Intent | None:
    """The open intent a ``controller.action_started`` line describes; None if it is not complete."""
    reason = _REASON_BY_EVENT.get(str(d.get("reason")))
    intent_at = parse_timestamp(d.get("intent_at")) or at
    target = {
        name: d.get(name)
        for name in (
            "container",
            "container_id",
            "expected_state",
            "expected_started_at",
            "pid",
            "pid_start_time",
            "gpu",
            "user",
            "ledger_entry",
        )
        if d.get(name) is not None
    }
    gpus = d.get("gpus")
    evidence: dict[str, Any] = {"gpus": list(gpus)} if isinstance(gpus, list) else {}
    hold_s = _hold_s(d.get(KEPT_AFTER_STOP_S))
    if hold_s is not None:
        # The hold the stop's notice names: the recovery records the stop with it (own_record).
        evidence[KEPT_AFTER_STOP_S] = hold_s
    try:
        action = Action.model_validate(
            {
                "kind": d.get("kind"),
                "target": target,
                "reason": reason,
                "message": str(d.get("message") or ""),
                "evidence": evidence,
                "due_at": intent_at,
                "key": key,
                "params": d.get("params") if isinstance(d.get("params"), Mapping) else {},
            }
        )
    except ValidationError as exc:
        logger.warning("an unclosed intent in the event log cannot be rebuilt ({}): {}", key, exc)
        return None
    reclaimed = d.get("reclaimed_gpu_s")
    return Intent(
        action=action.model_dump(mode="json"),
        started_at=intent_at,
        reclaimed_gpu_s=float(reclaimed) if isinstance(reclaimed, int | float) else None,
    )
