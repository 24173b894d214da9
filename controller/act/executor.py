"""The real executor: carries out a plan's actions on the host, each one re-checked and verified.

Guarantees (each one tested against the real Docker engine and real processes):

- **Re-check before acting.** A container action runs only if a *fresh* inspect still shows the
  container the plan saw: same id, same state, same ``StartedAt`` (a restart in between means the
  plan is stale), and the reason still plausible (a "never started" container has not started; a
  per-user quota's stop still has every other container the quota counted against the owner,
  ``StopParams.quota_counted_ids``, live, read in one list call, the owner not resolved again).
  Otherwise the action is ``skipped`` with the reason and a ``controller.action_skipped`` event; a
  quota re-check the engine does not answer skips the stop too (unknown is not permission). A stop
  the engine answers 304 (the container stopped by someone after the last look) is recorded as
  that look would have recorded it: not the controller's stop.
- **Idempotent.** A container already removed, a process already exited, a ledger row already
  gone: ``already_done``, which is success.
- **Verified.** "Removed" is reported only after an inspect answers 404; "stopped" only after an
  inspect shows it not running; a process only after it is gone. Exit codes are not trusted. A
  removal the engine is still carrying out when the wait ends (``removing``) is ``in_progress``
  and keeps its intent open: the next pass records it once the engine shows the container gone.
- **Exact signals.** A process is checked (start time and container cgroup) before *every*
  signal; see :mod:`controller.act.process_ops`.
- **Fresh GPU re-check.** A GPU reset runs only after a fresh observation shows NVML readable, no
  process on the GPU and no live container holding it (``reset_precheck``, see
  :mod:`controller.act.gpu_reset`); without a re-check configured, resets are skipped. The
  controller's own NVML session is closed before the command runs (``release_nvml``):
  ``nvidia-smi -r`` refuses a GPU any other NVML client holds open, this daemon included.
- **Bounded.** Every Docker call has an HTTP timeout, the reset command a timeout, terminal
  writes a deadline, the ledger lock a timeout. Transient errors are retried (tenacity, inside
  :mod:`controller.act.docker_ops`); a failure is recorded with exponential back-off per action
  key (``memory.with_failure``) and never stops the other actions. Nothing raises out of
  :meth:`RealExecutor.execute`.

Memory: the result is built on ``plan.memory`` (the planner's next memory, including any breaker
it tripped) plus the outcome transitions: one-shot actions (WarnOwner, AlertAdmin) and GPU resets
are recorded as done, warnings under their ``WarnParams.warning_key``, failures with back-off; a
success clears the action's failure record. The ``memory`` argument (the memory the plan was made
from) is not read by the real executor; the dry-run executor keeps its outcome records.

The reset command is the executor's own (from the controller's configuration at start), not a
command carried in a plan's parameters: a plan is data that ``ds01ctl`` prints and tests build,
and it must never decide what the daemon executes as root.

**Intent first.** Before a destructive action (StopContainer, RemoveContainer, KillProcess,
ResetGpu, ReleaseAllocation) touches anything, and after its re-check, the executor records what
it is about to do and why: an :class:`~controller.memory.Intent` in the memory (saved through
``save_memory``, fsynced) and a ``controller.action_started`` line (fsynced). When either write
fails, the action does not run: it is ``skipped`` with the file and the errno (fail closed: the
controller never does what it cannot record). The outcome closes the intent with ``phase``
``done``/``failed``/``skipped`` on the action's own event. An intent still open when a pass begins
(the daemon was killed during the action) is verified against the world and completed with its
original reason by :meth:`RealExecutor.recover`.

Called by the daemon loop. The dry-run executor is :class:`controller.act.dry_run.DryRunExecutor`.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loguru import logger

from controller.act.docker_ops import DockerOps, Inspected
from controller.act.dry_run import DryRunExecutor
from controller.act.errors import ActError, ConflictError, GoneError, PermanentError, TransientError, classify
from controller.act.events import (
    DEFAULT_SCAN_LIMIT_BYTES,
    EventLog,
    EventType,
    iter_lines_reversed,
    parse_timestamp,
    utc_timestamp,
)
from controller.act.gpu_reset import DEFAULT_RESET_COMMAND, run_reset
from controller.act.hook import NotificationHook
from controller.act.ledger_writer import release_row, row_matches
from controller.act.notify import Notifier, notice_text
from controller.act.owner_notices import OwnerNotices
from controller.act.process_ops import Identity, check_identity, kill_ladder
from controller.act.report import ActionOutcome, ExecutionReport, Executor, Outcome
from controller.act.sanitize import clean
from controller.memory import ControllerMemory, Intent
from controller.observe.cgroups import container_ids_in_path, container_lines, parse_cgroup
from controller.observe.ledger import Allocation, LedgerError, read_ledger
from controller.observe.resources import read_usage
from controller.plan.context import may_be_id_prefix
from controller.plan.limits_update import still_needed
from controller.plan.rules.resources import highest_use, memory_floor, pids_floor
from controller.plan.types import (
    DONE_KINDS,
    KEPT_AFTER_STOP_S,
    Action,
    ActionKind,
    GpuEvidence,
    KillParams,
    Plan,
    ProcessEvidence,
    Reason,
    ResetParams,
    ResourceUpdate,
    StopParams,
    WarnParams,
    own_record,
    warning_record,
)
from controller.record import RecordUnavailable
from controller.snapshot import LIVE_STATES, LedgerEntry, ResourceLimits

__all__ = ["DryRunExecutor", "ExecutionReport", "Executor", "Outcome", "RealExecutor"]

DEFAULT_STOP_TIMEOUT_S = 60
DEFAULT_RESET_TIMEOUT_S = 120.0
# Docker's StartedAt has nanoseconds; the snapshot keeps microseconds (truncated or rounded).
STARTED_AT_TOLERANCE = timedelta(milliseconds=1)
_NOT_RUNNING = frozenset({"created", "exited", "dead"})
# The per-user quotas whose stops are justified by the owner's other containers, and the states in
# which the quotas count a container (the snapshot's LIVE_STATES, as the engine names them).
_OWNER_QUOTAS = frozenset({Reason.CONTAINER_QUOTA_EXCEEDED, Reason.GPU_QUOTA_EXCEEDED})
_QUOTA_LIVE = frozenset(state.value for state in LIVE_STATES)
# After a crash, an action found still under way is given this long past its own timeout to finish
# (docker stop goes on in the engine when the client dies) before it is recorded as not carried out.
RECOVERY_SLACK_S = 30.0
# How far back in the event log a recovery looks for an outcome already written.
RECOVERY_SCAN_LINES = 20_000
# A stop's own removal that the engine is still carrying out when the wait ends (_remove_stopped).
_STILL_REMOVING = "the engine is still removing it"
_PHASE = {
    Outcome.DONE: "done",
    Outcome.ALREADY_DONE: "done",
    Outcome.FAILED: "failed",
    Outcome.SKIPPED: "skipped",
}

# DS01's container.remove reasons (notes §4.3, §3); other reasons are written in snake_case.
_DS01_REASON = {
    Reason.CREATED_NEVER_STARTED: "created_never_started",
    Reason.STOPPED_HOLD_EXPIRED: "hold_expired",
    Reason.GPU_HOLD_EXPIRED: "gpu_hold_expired",
}
_STOP_EVENT = {Reason.IDLE_TIMEOUT: EventType.IDLE_KILL, Reason.MAX_RUNTIME_EXCEEDED: EventType.RUNTIME_KILL}


def event_reason(reason: Reason) -> str:
    return _DS01_REASON.get(reason) or re.sub(r"(?<!^)(?=[A-Z])", "_", reason.value).lower()


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Skip(Exception):
    """The precondition no longer holds; nothing was touched."""


@dataclass
class _Done:
    outcome: Outcome
    detail: str
    memory: ControllerMemory
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    reclaimed_gpu_s: float | None = None
    # Carried out by the engine but not finished yet (a removal it is still deleting): the intent
    # stays open, and a later pass records the outcome once the world shows it (recover).
    pending: bool = False


def closed_by_its_line(
    memory: ControllerMemory,
    key: str,
    intent: Intent,
    event_type: str,
    details: Mapping[str, Any],
    now: datetime,
) -> ControllerMemory:
    """``memory`` without the intent whose outcome line the event log holds (its event type and
    details, with the line's time as ``at``), and with what the save after that line held: a GPU
    reset is marked done (never repeated); the controller's own stop or removal is recorded as such
    (the breakers weigh it so). An intent whose outcome lines waited in it (``closing``) had that
    record made when they were written."""
    memory = memory.without_intent(key)
    if intent.closing:
        return memory
    action = Action.model_validate(intent.action)
    if action.kind in DONE_KINDS and key not in memory.done:
        memory = memory.with_done(key, now)
    if details.get("phase") == "done" and event_type != EventType.ACTION_DONE:
        # The action's own event: carried out (an "already done" has no record to make).
        at = parse_timestamp(details.get("at")) or now
        removed = action.kind is ActionKind.REMOVE_CONTAINER or details.get("removed") is True
        memory = own_record(memory, action, at, removed=removed)
    return memory


def _someone_elses_stop(
    fresh: Inspected, same_start: bool, stopped_since: bool, since: datetime, now: datetime
) -> str | None:
    """Why an interrupted stop's container, found not running, was stopped by someone else, not by
    the controller; None when it may be the controller's. Only with the wall clock not behind the
    intent's time now (``since``): a clock stepped back and forth since cannot be told from it, and
    the owner's is the safe side.

    * It ended before this stop's intent was written (the last look saw it, and the daemon died
      before the skip was recorded): no notice, no mark.
    * It was started again before the intent was written: the last look, after it, saw another
      start than the plan's, and the stop was never sent; whoever stopped this start since, it was
      not the controller."""
    if fresh.status not in _NOT_RUNNING or now < since:
        return None
    if same_start and fresh.finished_at is not None and not stopped_since:
        return (
            f"the container was {fresh.status} before the stop began (FinishedAt "
            f"{_iso(fresh.finished_at)}): stopped by someone else"
        )
    if not same_start and fresh.started_at is not None and fresh.started_at < since:
        return (
            f"the container was started again before the stop began (StartedAt "
            f"{_iso(fresh.started_at)}) and is {fresh.status}: stopped by someone else"
        )
    return None


def _gpus_of(action: Action) -> list[str]:
    """The GPUs an action's container held: the planner's ``gpus`` evidence, else its target."""
    found = dict.fromkeys(GpuEvidence.from_evidence(action.evidence).devices())
    if action.target.gpu:
        found.setdefault(action.target.gpu, None)
    return list(found)


def _clear_attempts(memory: ControllerMemory, key: str) -> ControllerMemory:
    if key not in memory.attempts:
        return memory
    attempts = dict(memory.attempts)
    del attempts[key]
    return memory.model_copy(update={"attempts": attempts})


class RealExecutor:
    """Performs a plan's actions through Docker, signals, the reset command, the ledger and TTYs."""

    def __init__(
        self,
        docker_client: Any,
        event_log: EventLog,
        notifier: Notifier,
        ledger_path: Path,
        reset_command: Sequence[str] = DEFAULT_RESET_COMMAND,
        kill_grace_s: float = 10.0,
        clock: Callable[[], datetime] = utcnow,
        *,
        reset_timeout_s: float = DEFAULT_RESET_TIMEOUT_S,
        reset_precheck: Callable[[str], Sequence[str]] | None = None,
        release_nvml: Callable[[], None] | None = None,
        kill_wait_s: float = 5.0,
        ledger_lock_timeout_s: float = 5.0,
        verify_timeout_s: float = 10.0,
        save_memory: Callable[[ControllerMemory], None] | None = None,
        hook: NotificationHook | None = None,
        proc_root: Path = Path("/proc"),
        cgroup_root: Path = Path("/sys/fs/cgroup"),
    ) -> None:
        # Where a container's use is read again right before its limits are lowered.
        self._proc_root = proc_root
        self._cgroup_root = cgroup_root
        self._docker = DockerOps(docker_client, verify_timeout_s=verify_timeout_s)
        # Owner notices (terminals, else the workspace's alerts file) and the notification hook.
        self._notices = OwnerNotices(notifier, hook, clock=clock, events_log=event_log.path)
        # Saves (and fsyncs) the memory holding a new intent before the action runs; raises OSError.
        self._save_memory = save_memory
        # Intents written for the actions in progress (action key -> intent), closed by _recorded.
        self._begun: dict[str, Intent] = {}
        self._events = event_log
        self._notifier = notifier
        self._ledger_path = Path(ledger_path)
        self._reset_command = tuple(reset_command)
        self._kill_grace_s = kill_grace_s
        self._kill_wait_s = kill_wait_s
        self._reset_timeout_s = reset_timeout_s
        self._reset_precheck = reset_precheck
        # Closes this process's NVML session (the next observation opens a new one).
        self._release_nvml = release_nvml
        self._ledger_lock_timeout_s = ledger_lock_timeout_s
        self._clock = clock

    # --- the pass ---------------------------------------------------------------------------
    def execute(self, plan: Plan, memory: ControllerMemory, now: datetime) -> ExecutionReport:
        mem = plan.memory
        outcomes: list[ActionOutcome] = []
        for action in plan.actions:
            started = time.monotonic()
            result = self._recorded(action, mem, now)
            mem = result.memory
            for event_type, details in result.events:
                self._events.write(event_type, user=action.target.user, details=details)
            outcomes.append(
                ActionOutcome(
                    key=action.key,
                    kind=action.kind,
                    reason=action.reason,
                    target=action.target,
                    outcome=result.outcome,
                    detail=clean(result.detail, 1000),
                    duration_s=round(time.monotonic() - started, 6),
                    reclaimed_gpu_s=result.reclaimed_gpu_s,
                )
            )
            log = logger.warning if result.outcome is Outcome.FAILED else logger.info
            log(
                "{} {} {}: {}",
                action.kind.value,
                clean(action.target.label(), 80),
                result.outcome.value,
                clean(result.detail, 300),
            )
        return ExecutionReport(outcomes=tuple(outcomes), memory=mem)

    # --- one action, recorded: intent before, outcome after -----------------------------------
    def _recorded(self, action: Action, mem: ControllerMemory, now: datetime) -> _Done:
        """Run one action; when it wrote an intent, close it with the outcome (written durably).

        An outcome line that cannot be written keeps the intent, holding those lines, so the next
        pass writes them (:meth:`recover`): the record is completed exactly once.
        """
        self._begun.pop(action.key, None)
        try:
            result = self._one(action, mem, now)
        except Exception as exc:  # the last guard: one broken action never ends the pass
            logger.opt(exception=exc).error("executor: unexpected error in {}", action.key)
            result = self._failed(action, mem, classify(exc, f"{action.kind.value} {action.target.label()}"))
        intent = self._begun.pop(action.key, None)
        if intent is None:
            return result  # nothing was started: the events are the plain audit lines
        if result.pending:
            return result  # still under way: its intent stays open, for the next pass to verify
        events = self._closing_events(action, intent, result.outcome, result.detail, result.events)
        memory = result.memory.without_intent(action.key)
        try:
            for event_type, details in events:
                self._events.write_durable(event_type, user=action.target.user, details=details)
        except RecordUnavailable as err:
            logger.error(
                "{} {}: outcome not recorded yet ({}); retried next pass", action.kind.value, action.key, err
            )
            closing = [{"event_type": t, "user": action.target.user, "details": d} for t, d in events]
            memory = memory.with_intent(action.key, intent.model_copy(update={"closing": closing}))
        result.memory = memory
        result.events = []
        if result.outcome is Outcome.DONE and intent.reclaimed_gpu_s is not None:
            result.reclaimed_gpu_s = intent.reclaimed_gpu_s
        return result

    def _closing_events(
        self,
        action: Action,
        intent: Intent,
        outcome: Outcome,
        detail: str,
        events: list[tuple[str, dict[str, Any]]],
        *,
        recovered: bool = False,
    ) -> list[tuple[str, dict[str, Any]]]:
        """The outcome lines of an intent: the first carries ``phase`` (done, failed, skipped)."""
        phase = _PHASE.get(outcome, "failed")
        tie: dict[str, Any] = {"phase": phase, "intent_at": intent.started_at}
        if recovered:
            tie["recovered"] = True
        if not events:
            kind = EventType.ACTION_DONE if phase == "done" else EventType.ACTION_FAILED
            events = [(kind, {**self._base(action), "outcome": outcome.value, "detail": detail})]
        first_type, first = events[0]
        return [(first_type, {**first, "key": action.key, **tie}), *events[1:]]

    def _begin(self, action: Action, mem: ControllerMemory, now: datetime) -> ControllerMemory:
        """Record the intent (memory, then event line; both fsynced) just before the action runs.

        Raises :class:`RecordUnavailable` naming the file and errno: then the action must not run.
        The memory goes first: a crash between the two writes leaves an intent that the next pass
        verifies (the action never ran), never a ``started`` line that nothing closes.
        """
        earlier = mem.intents.get(action.key)
        if earlier is not None and earlier.closing:
            raise _Skip("the outcome of the previous attempt is not recorded yet; nothing runs before it is")
        if earlier is not None:
            # The same decision, interrupted earlier and still open (a stop the engine may still be
            # carrying out): this run completes that intent; its record stays one start, one outcome.
            self._begun[action.key] = earlier
            logger.info(
                "{} {}: resuming the interrupted action", action.kind.value, clean(action.target.label(), 80)
            )
            return mem
        intent = Intent(
            action=action.model_dump(mode="json"),
            started_at=self._clock(),
            reclaimed_gpu_s=_reclaimed_gpu_s(action, mem, now),
        )
        recorded = mem.with_intent(action.key, intent)
        if self._save_memory is not None:
            try:
                self._save_memory(recorded)
            except RecordUnavailable:
                raise
            except OSError as exc:
                raise RecordUnavailable(exc.filename or "memory", exc) from exc
        t = action.target
        details: dict[str, Any] = {
            **self._base(action),
            "phase": "started",
            "intent_at": intent.started_at,
            "message": action.message,
            # Not the quota's counted ids: a re-check's input, read before this line, one per
            # container the owner keeps; their number must not push the line past PIPE_BUF, where it
            # would be shrunk and lose what rebuilds the intent (see salvage).
            "params": action.params.model_dump(mode="json", exclude={"quota_counted_ids"}),
        }
        # Enough to rebuild the intent from this line alone if the memory is lost (see salvage).
        for name in ("expected_state", "expected_started_at", "pid_start_time", "user", "ledger_entry"):
            value = getattr(t, name)
            if value is not None:
                details[name] = value
        gpus = _gpus_of(action)
        if gpus:
            details["gpus"] = gpus
        if intent.reclaimed_gpu_s is not None:
            details["reclaimed_gpu_s"] = intent.reclaimed_gpu_s
        promised = action.promised_hold_s()
        if promised is not None:
            # The hold the stop's notice names: a lost memory still keeps the container that long.
            details[KEPT_AFTER_STOP_S] = promised
        self._events.write_durable(EventType.ACTION_STARTED, user=t.user, details=details)
        self._begun[action.key] = intent
        logger.info(
            "{} {}: started ({}){}",
            action.kind.value,
            clean(t.label(), 80),
            event_reason(action.reason),
            _grace_note(action),
        )
        return recorded

    def _not_recorded(self, action: Action, mem: ControllerMemory, err: RecordUnavailable) -> _Done:
        # No event: the record is what is broken, and the loop reports the condition once.
        return _Done(Outcome.SKIPPED, f"not attempted: {err}; nothing is done that cannot be recorded", mem)

    # --- recovery: intents left open by an earlier run ----------------------------------------
    def recover(
        self, memory: ControllerMemory, now: datetime, *, in_flight: Collection[str] = ()
    ) -> tuple[ControllerMemory, tuple[ActionOutcome, ...]]:
        """Complete the record of every intent an earlier pass left open; never raises.

        Each one is verified against the world (the container gone or stopped since the intent, the
        process gone, the ledger row gone) and recorded once, with its original reason and
        ``recovered: true``. One that may still be under way (a ``docker stop`` the engine is still
        carrying out) stays open until it ends or its timeout has passed; one whose world cannot be
        read now (Docker down) stays open too. A GPU reset cannot be verified: it is recorded as
        failed and marked done, so it is never repeated (the planner alerts instead).

        ``in_flight``: the keys of actions this process is still carrying out (abandoned past their
        deadline, their threads still running). Their intents are left alone: the action records
        its own outcome when it ends, and a later pass finds that line (:meth:`_already_closed`).
        Verified now, a stop still in the engine would be recorded "not carried out", then done.
        """
        outcomes: list[ActionOutcome] = []
        for key, intent in sorted(memory.intents.items(), key=lambda kv: kv[1].started_at):
            if key in in_flight:
                logger.info("{}: still in flight; its outcome is recorded when it ends", key)
                continue
            try:
                memory, outcome = self._recover_one(key, intent, memory, now)
            except RecordUnavailable as err:
                logger.error("recovery of {}: the outcome cannot be recorded yet ({})", key, err)
                continue
            except Exception as exc:  # cannot verify now (engine away...): the intent stays open
                logger.warning("recovery of {}: cannot verify the outcome yet: {}", key, exc)
                continue
            if outcome is not None:
                outcomes.append(outcome)
        return memory, tuple(outcomes)

    def _recover_one(
        self, key: str, intent: Intent, memory: ControllerMemory, now: datetime
    ) -> tuple[ControllerMemory, ActionOutcome | None]:
        if intent.closing:
            self._write_closing(key, intent)
            return memory.without_intent(key), None
        action = Action.model_validate(intent.action)
        closed = self._already_closed(key, intent)
        if closed is not None:
            # Killed after the outcome line, before the memory saying so (or an action abandoned
            # past its deadline, whose outcome ended in no pass's memory): the line stands.
            return closed_by_its_line(memory, key, intent, *closed, self._clock()), None
        verdict = self._verify(action, intent, now)
        if verdict is None:
            return memory, None  # may still be under way: look again next pass
        outcome, detail, events, seen = verdict
        if outcome is Outcome.FAILED and not events:
            events = [(EventType.ACTION_FAILED, {**self._base(action), "error": detail})]
        notify = outcome is Outcome.DONE and events and not events[0][1].get("restarted_since")
        if notify and action.kind in (ActionKind.STOP_CONTAINER, ActionKind.REMOVE_CONTAINER):
            # The owner's notice comes after the engine's act, and a crash during the act (the
            # longest step of a stop) left it unsent. Sent once: from here on the record is
            # completed once, its lines kept in the intent while they cannot be written.
            stop = action.kind is ActionKind.STOP_CONTAINER
            main = events[0][1]
            # When it happened, not this later pass: the engine's end of the stop where it shows one,
            # else the start of the interrupted action.
            happened = seen.finished_at if seen is not None else None
            main["notice"] = self._notices.after(
                action,
                seen.workspace if seen is not None else None,
                removed=bool(main.get("removed", not stop)),
                was_running=stop,
                workspace_known=seen is not None,
                workspace_mounted=seen.workspace_mounted if seen is not None else None,
                at=happened or intent.started_at,
            )
        lines = self._closing_events(action, intent, outcome, detail, events, recovered=True)
        memory = memory.without_intent(key)
        try:
            for event_type, details in lines:
                self._events.write_durable(event_type, user=action.target.user, details=details)
        except RecordUnavailable as err:
            # Verified (and the owner told): the lines wait in the intent for a pass that can
            # write them, as an outcome that could not be written does (see _recorded).
            logger.error("recovery of {}: outcome not recorded yet ({}); retried next pass", key, err)
            closing = [{"event_type": t, "user": action.target.user, "details": d} for t, d in lines]
            memory = memory.with_intent(key, intent.model_copy(update={"closing": closing}))
        if action.kind in DONE_KINDS:
            memory = memory.with_done(key, self._clock())  # a reset is never repeated blind
        if outcome is Outcome.DONE:
            # A stop found gone was removed with it (its event says so); a removal found done is one.
            removed = action.kind is ActionKind.REMOVE_CONTAINER or bool(
                events and events[0][1].get("removed")
            )
            memory = own_record(memory, action, self._clock(), removed=removed)
        logger.warning(
            "{} {} ({}), interrupted by a restart: recorded as {}: {}",
            action.kind.value,
            clean(action.target.label(), 80),
            event_reason(action.reason),
            outcome.value,
            clean(detail, 300),
        )
        return memory, ActionOutcome(
            key=key,
            kind=action.kind,
            reason=action.reason,
            target=action.target,
            outcome=outcome,
            detail=clean(f"recovered after a restart: {detail}", 1000),
            reclaimed_gpu_s=intent.reclaimed_gpu_s if outcome is Outcome.DONE else None,
        )

    def _write_closing(self, key: str, intent: Intent) -> None:
        """Write the outcome lines an earlier pass could not write, unless they are in the log now.

        An earlier recovery may have written them and been killed before the memory without the
        intent was saved: they are written once. The intent's time is written in the log's own
        form (the lines held in the saved memory carry it in the memory's), so that a later
        recovery finds them (:meth:`_already_closed`)."""
        if self._already_closed(key, intent) is not None:
            return
        for n, line in enumerate(intent.closing):
            details = dict(line.get("details") or {})
            if n == 0:
                details["intent_at"] = utc_timestamp(intent.started_at)
            self._events.write_durable(str(line.get("event_type")), user=line.get("user"), details=details)

    def _already_closed(self, key: str, intent: Intent) -> tuple[str, Mapping[str, Any]] | None:
        """The outcome line of this intent already in the event log (its memory entry not yet
        cleared): its event type and details, with the line's time as ``at``; None if there is none.

        The last :data:`RECOVERY_SCAN_LINES` lines are read whatever their times: the log is not in
        time order once the clock was stepped back (a host that came back with its clock behind),
        and stopping at the first line older than the intent would miss its outcome."""
        stamp = utc_timestamp(intent.started_at)
        needle = stamp.encode("ascii")
        try:
            lines = iter_lines_reversed(self._events.path, max_scan_bytes=DEFAULT_SCAN_LIMIT_BYTES)
            for scanned, raw in enumerate(lines):
                if scanned >= RECOVERY_SCAN_LINES:
                    break
                if needle not in raw:
                    continue  # not a line of this intent: no need to parse it
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                d = event.get("details") if isinstance(event, dict) else None
                if (
                    isinstance(d, Mapping)
                    and d.get("key") == key
                    and d.get("intent_at") == stamp
                    and d.get("phase") in ("done", "failed", "skipped")
                ):
                    return str(event.get("event_type")), {**d, "at": event.get("timestamp")}
        except OSError:
            return None
        return None

    def _verify(
        self, action: Action, intent: Intent, now: datetime
    ) -> tuple[Outcome, str, list[tuple[str, dict[str, Any]]], Inspected | None] | None:
        """What became of an interrupted action, and the inspect of a container found stopped
        (its workspace and end, for its owner's notice); None while it may still be under way."""
        t = action.target
        waited_s = (now - intent.started_at).total_seconds()
        if action.kind in (ActionKind.STOP_CONTAINER, ActionKind.REMOVE_CONTAINER):
            cid = t.container_id or ""
            fresh = self._docker.inspect(cid)
            timeout_s = _int_param(action.params_as(StopParams).grace_s, DEFAULT_STOP_TIMEOUT_S)
            stop = action.kind is ActionKind.STOP_CONTAINER
            if fresh is None:
                reason = event_reason(action.reason)
                if stop:
                    main = self._stop_details(action, timeout_s, removed=True, exit_state="removed")
                    first = (_STOP_EVENT.get(action.reason, EventType.CONTAINER_STOP), main)
                else:
                    first = (
                        EventType.CONTAINER_REMOVE,
                        self._remove_details(action, t.expected_state or "?"),
                    )
                return (
                    Outcome.DONE,
                    "the container is gone",
                    [first, *self._release_events(action, reason)],
                    None,
                )
            if not stop:
                if fresh.status == "removing":
                    return None  # the engine is still deleting it: recorded once it is gone
                return (
                    Outcome.FAILED,
                    f"not carried out: the container still exists ({fresh.status})",
                    [],
                    None,
                )
            if fresh.status == "removing":
                # Stopped, and the engine is still deleting it (an --rm container, or the stop's own
                # removal): recorded once it is gone, as a removal still under way is.
                return None
            same_start = _same_time(fresh.started_at, t.expected_started_at)
            since = intent.started_at - timedelta(seconds=1)
            stopped_since = fresh.finished_at is not None and fresh.finished_at >= since
            why = _someone_elses_stop(fresh, same_start, stopped_since, since, now)
            if why is not None:
                return (
                    Outcome.SKIPPED,
                    why,
                    [(EventType.ACTION_SKIPPED, {**self._base(action), "why": why})],
                    None,
                )
            # The start the re-check before the intent saw running, no longer running, ended after
            # that check, whatever its FinishedAt says against the intent's time: a wall clock
            # stepped back between the two puts the stop "before" the intent that began it.
            ended = same_start or stopped_since or fresh.finished_at is None
            if fresh.status in _NOT_RUNNING and ended:
                main = self._stop_details(action, timeout_s, removed=False, exit_state=fresh.status)
                first = (_STOP_EVENT.get(action.reason, EventType.CONTAINER_STOP), main)
                return Outcome.DONE, f"found {fresh.status} after the stop began", [first], fresh
            if same_start:
                if waited_s < timeout_s + RECOVERY_SLACK_S:
                    return None  # the engine may still be carrying the stop out
                return Outcome.FAILED, f"not carried out: the container is still {fresh.status}", [], None
            if stopped_since:
                main = self._stop_details(action, timeout_s, removed=False, exit_state=fresh.status)
                main["restarted_since"] = True
                first = (_STOP_EVENT.get(action.reason, EventType.CONTAINER_STOP), main)
                return Outcome.DONE, "stopped, then started again by someone else", [first], None
            return Outcome.FAILED, f"not carried out: the container is {fresh.status}", [], None
        if action.kind is ActionKind.KILL_PROCESS:
            if t.pid is None or t.pid_start_time is None:
                return Outcome.FAILED, "not verifiable: no pid identity", [], None
            expected_cid = ProcessEvidence.from_evidence(action.evidence).container_id_or(t.container_id)
            check = check_identity(t.pid, t.pid_start_time, expected_cid)
            if check.identity in (Identity.LIVE, Identity.UNKNOWN, Identity.MOVED):
                return Outcome.FAILED, f"not carried out: {check.detail}", [], None
            if check.identity is Identity.SAME:
                grace_s = _or(action.params_as(KillParams).grace_s, self._kill_grace_s)
                if waited_s < grace_s + self._kill_wait_s + RECOVERY_SLACK_S:
                    return None
                return Outcome.FAILED, "not carried out: the process is still running", [], None
            details = {
                **self._base(action),
                "signals": [],
                "result": f"the process is gone ({check.detail or check.identity.value})",
                "message": action.message,
                "evidence": action.evidence,
            }
            return Outcome.DONE, "the process is gone", [(EventType.PROCESS_KILL, details)], None
        if action.kind is ActionKind.RELEASE_ALLOCATION:
            entry = t.ledger_entry or {}
            # Read as the observer reads it (under the shared lock): a ledger that cannot be read,
            # or is damaged, is not one without the row; the intent stays open until it can be.
            ledger = read_ledger(self._ledger_path, None, self._ledger_lock_timeout_s)
            if any(row_matches(_allocation(e), entry) for e in ledger.entries):
                return Outcome.FAILED, "not carried out: the ledger row is still there", [], None
            if ledger.error is not None:
                raise LedgerError(f"whether the ledger row is gone cannot be told: {ledger.error}")
            details = {
                "gpu": entry.get("gpu_uuid") or entry.get("gpu"),
                "container": entry.get("container"),
                "reason": event_reason(action.reason),
                "ledger_row": dict(entry),
                "key": action.key,
                "evidence": action.evidence,
            }
            return Outcome.DONE, "the ledger row is gone", [(EventType.GPU_RELEASE, details)], None
        if action.kind is ActionKind.UPDATE_RESOURCES:
            seen = self._docker.inspect(t.container_id or "")
            if seen is None:
                return Outcome.DONE, "the container is gone", [], None
            left = still_needed(action.params_as(ResourceUpdate), seen.limits)
            if not left:
                return Outcome.DONE, "the limits are at or below the requested ones", [], None
            return Outcome.FAILED, "not carried out: " + ", ".join(sorted(left)) + " still above", [], None
        # A GPU reset leaves nothing to inspect: its outcome is unknown, and it is not repeated.
        return Outcome.FAILED, "interrupted; its outcome is unknown, so it is not repeated", [], None

    def _one(self, action: Action, mem: ControllerMemory, now: datetime) -> _Done:
        done_at = mem.done.get(action.key) if action.kind in DONE_KINDS else None
        if done_at is not None:
            return _Done(Outcome.ALREADY_DONE, f"already done at {done_at.isoformat()}", mem)
        if action.destructive and mem.breaker.tripped:
            # The planner defers destructive actions while the breaker is open; this is the backstop.
            return self._skipped(action, mem, f"circuit breaker open: {mem.breaker.reason}")
        if action.kind is ActionKind.RELEASE_ALLOCATION and mem.release_breaker.tripped:
            return self._skipped(action, mem, f"release breaker open: {mem.release_breaker.reason}")
        attempt = mem.attempts.get(action.key)
        if attempt is not None and attempt.next_attempt_at is not None and attempt.next_attempt_at > now:
            # No event: the planner reports back-off as a deferral; a line per pass would flood the log.
            return _Done(Outcome.SKIPPED, f"backing off until {attempt.next_attempt_at.isoformat()}", mem)
        handler = {
            ActionKind.STOP_CONTAINER: self._stop,
            ActionKind.REMOVE_CONTAINER: self._remove,
            ActionKind.KILL_PROCESS: self._kill,
            ActionKind.RESET_GPU: self._reset,
            ActionKind.RELEASE_ALLOCATION: self._release,
            ActionKind.WARN_OWNER: self._warn,
            ActionKind.ALERT_ADMIN: self._alert,
            ActionKind.UPDATE_RESOURCES: self._update,
        }[action.kind]
        try:
            result = handler(action, mem, now)
        except _Skip as skip:
            return self._skipped(action, mem, str(skip))
        except RecordUnavailable as err:
            return self._not_recorded(action, mem, err)
        except ActError as err:
            return self._failed(action, mem, err)
        if result.outcome in (Outcome.DONE, Outcome.ALREADY_DONE):
            result.memory = _clear_attempts(result.memory, action.key)
            if action.kind in DONE_KINDS:
                result.memory = result.memory.with_done(action.key, self._clock())
        return result

    # --- outcome helpers --------------------------------------------------------------------
    def _base(self, action: Action) -> dict[str, Any]:
        t = action.target
        details: dict[str, Any] = {
            "key": action.key,
            "kind": action.kind,
            "reason": event_reason(action.reason),
        }
        for name in ("container", "container_id", "pid", "gpu"):
            value = getattr(t, name)
            if value is not None:
                details[name] = value
        return details

    def _skipped(self, action: Action, mem: ControllerMemory, why: str, **extra: Any) -> _Done:
        details = {**self._base(action), "why": why, **extra}
        return _Done(Outcome.SKIPPED, why, mem, [(EventType.ACTION_SKIPPED, details)])

    def _failed(self, action: Action, mem: ControllerMemory, err: ActError) -> _Done:
        failed_mem = mem.with_failure(action.key, str(err), self._clock())
        attempt = failed_mem.attempts[action.key]
        details = {
            **self._base(action),
            "error": str(err),
            "transient": isinstance(err, TransientError),
            "failures": attempt.failures,
            "next_attempt_at": attempt.next_attempt_at,
        }
        return _Done(Outcome.FAILED, str(err), failed_mem, [(EventType.ACTION_FAILED, details)])

    # --- containers -------------------------------------------------------------------------
    def _precondition(self, action: Action) -> Inspected | None:
        """A fresh inspect that still matches the plan, or None when the container is gone."""
        t = action.target
        cid = t.container_id
        if not cid:
            raise PermanentError(f"{action.kind.value} without a container id")
        if t.expected_state is None:
            raise _Skip("the plan carries no expected state for this container; refusing to act blind")
        fresh = self._docker.inspect(cid)
        if fresh is None:
            return None
        if not fresh.id.startswith(cid):
            raise _Skip(f"id {cid[:12]} now names container {fresh.id[:12]}")
        if t.container and fresh.name != t.container:
            # Protection, the container type and the owner may follow the name: the plan judged
            # another one. The next pass decides under the new name.
            raise _Skip(f"renamed to {fresh.name} since the plan (it saw {t.container})")
        if fresh.status != t.expected_state:
            raise _Skip(f"state is now {fresh.status}, the plan saw {t.expected_state}")
        if not _same_time(fresh.started_at, t.expected_started_at):
            raise _Skip(
                f"restarted since the plan: StartedAt is now {_iso(fresh.started_at)}, "
                f"the plan saw {_iso(t.expected_started_at)}"
            )
        self._check_plausible(action, fresh)
        self._check_quota_counted(action)
        return fresh

    def _begin_checked(
        self, action: Action, mem: ControllerMemory, now: datetime, fresh: Inspected
    ) -> tuple[ControllerMemory, Inspected | None]:
        """Record the intent, then look at the container once more, right before the call.

        Writing the intent takes a while (the memory and the event line are fsynced, and the
        memory's save waits for other actions' saves): a container restarted meanwhile is a new,
        live start that nothing judged. The check before the intent (``fresh``) spares a moot
        action its record; this one is the last look before the engine is told. A change found
        here closes the intent as skipped; a container gone closes it as already done (None).

        An interrupted intent that this run resumes writes nothing, so nothing waited: ``fresh``
        stands. Looking again there would take the interrupted action's own effect (its stop,
        completing meanwhile) for a change, and record the controller's stop as skipped.
        """
        resumed = action.key in mem.intents
        mem = self._begin(action, mem, now)
        return mem, fresh if resumed else self._precondition(action)

    @staticmethod
    def _check_plausible(action: Action, fresh: Inspected) -> None:
        reason = action.reason
        if reason is Reason.CREATED_NEVER_STARTED and (fresh.status != "created" or fresh.started_at):
            raise _Skip("the container has started since the plan")
        if action.kind is ActionKind.REMOVE_CONTAINER and fresh.status not in _NOT_RUNNING:
            raise _Skip(f"the container is {fresh.status}; only created, exited or dead ones are removed")
        if action.kind is ActionKind.STOP_CONTAINER and fresh.status != "running":
            raise _Skip(f"the container is {fresh.status}, not running")

    def _check_quota_counted(self, action: Action) -> None:
        """A per-user quota's stop still has its reason: every container the quota counted against
        the owner and keeps (``StopParams.quota_counted_ids``) is still live, as the quota counts
        (running, paused, restarting). Read in one list call; the owner is not resolved here.

        One stopped or removed since the plan may have brought the owner within the quota: the stop
        is skipped and the next pass judges the quota again (the warning holds while the container
        stays beyond it, so a stop still due comes one pass later). Containers started since do
        not matter: they only add to what the owner runs."""
        if action.kind is not ActionKind.STOP_CONTAINER or action.reason not in _OWNER_QUOTAS:
            return
        counted = action.params_as(StopParams).quota_counted_ids
        if counted is None:
            raise _Skip(
                "the plan does not name the containers the quota counted, so it cannot be re-checked; "
                "the quota is judged again next pass"
            )
        if not counted:
            return  # nothing else counted: this container alone is beyond the quota
        try:
            listed = self._docker.list_by_id(counted)
        except ActError as err:
            # Unknown is not permission: nothing is stopped on a quota that could not be re-checked.
            raise _Skip(f"the quota could not be re-checked ({err}); it is judged again next pass") from None
        ended: list[str] = []
        for cid in counted:
            seen = listed.get(cid)
            if seen is None:
                ended.append(f"{cid[:12]} gone")
            elif seen.status not in _QUOTA_LIVE:
                ended.append(f"{seen.name or cid[:12]} {seen.status}")
        if ended:
            raise _Skip(
                f"the quota must be judged again: not every container it counted against "
                f"{action.target.user or 'the owner'} is still live ({', '.join(ended)})"
            )

    def _release_events(self, action: Action, why: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (
                EventType.GPU_RELEASE,
                {
                    "gpu": gpu,
                    "container": action.target.container,
                    "container_id": action.target.container_id,
                    "reason": why,
                    "evidence": "container removed (inspect: 404)",
                },
            )
            for gpu in _gpus_of(action)
        ]

    def _stop(self, action: Action, mem: ControllerMemory, now: datetime) -> _Done:
        fresh = self._precondition(action)
        if fresh is None:
            return _Done(Outcome.ALREADY_DONE, "container already gone", mem)
        cid = fresh.id
        stop_params = action.params_as(StopParams)
        timeout_s = _int_param(stop_params.grace_s, DEFAULT_STOP_TIMEOUT_S)
        remove = stop_params.remove
        resumed = action.key in mem.intents
        mem, fresh = self._begin_checked(action, mem, now, fresh)
        if fresh is None:
            return _Done(Outcome.ALREADY_DONE, "container removed before the stop", mem)
        try:
            stopped = self._docker.stop(cid, timeout_s=timeout_s)
        except GoneError:
            return _Done(Outcome.ALREADY_DONE, "container removed while stopping", mem)
        if not stopped and not resumed:
            # Not running when the stop reached the engine (its 304): someone stopped it after the
            # last look. That look, taken again, records the stop as theirs, as it would have a
            # moment earlier. (A resumed stop's 304 is the interrupted stop's own effect.)
            if self._precondition(action) is None:
                return _Done(Outcome.ALREADY_DONE, "container removed before the stop", mem)
            raise _Skip("the container was no longer running when the stop reached the engine")
        after = self._docker.wait_not_running(cid)
        # An --rm container removes itself on stop; one the engine is still removing when the wait
        # ends (a large writable layer takes long) is going as well: the stop took it with it.
        removed = after is None or after.status == "removing"
        if after is not None and after.status in ("running", "restarting"):
            raise PermanentError(f"docker stop returned but the container is still {after.status}")
        not_removed = None
        if remove and not removed and not stopped:
            # A resumed stop answered 304: the interrupted request's stop, or its owner's a moment
            # before; nothing tells them apart. Kept (the hold removes it later), never deleted on a
            # stop that may not be the controller's.
            not_removed = (
                "the engine answered that it was already stopped (by the interrupted stop or by someone else)"
            )
        elif remove and not removed:
            not_removed = self._remove_stopped(cid)
            if not_removed is _STILL_REMOVING:
                # Stopped, and the engine still deleting it after the wait: its removal may yet fail
                # (left `dead`). The stop stays open, as one interrupted while the engine removes
                # the container does: the next pass records it, and tells its owner, as removed once
                # the engine shows it gone, as stopped if the container stays (recover).
                detail = "stopped; the engine is still removing it after the wait: recorded once it is gone"
                return _Done(Outcome.IN_PROGRESS, detail, mem, pending=True)
        removed = removed or (remove and not_removed is None)
        details = self._stop_details(
            action, timeout_s, removed=removed, exit_state=after.status if after is not None else "removed"
        )
        if not_removed is not None:
            details["remove_error"] = not_removed
        events = [(_STOP_EVENT.get(action.reason, EventType.CONTAINER_STOP), details)]
        if removed:
            events += self._release_events(action, event_reason(action.reason))
        what = "stopped and removed" if removed else "stopped"
        details["notice"] = self._notices.after(
            action,
            fresh.workspace,
            removed=removed,
            was_running=True,
            workspace_known=True,
            workspace_mounted=fresh.workspace_mounted,
        )
        mem = own_record(mem, action, self._clock(), removed=removed)
        detail = f"{what} (stop timeout {timeout_s}s)" + (
            f"; not removed: {not_removed}" if not_removed else ""
        )
        return _Done(Outcome.DONE, detail, mem, events)

    def _remove_stopped(self, cid: str) -> str | None:
        """Remove a container this stop has just stopped: None once it is gone,
        :data:`_STILL_REMOVING` while the engine is still deleting it, else why it is not.

        The stop stands either way (its event, the owner's notice, the controller's mark): a removal
        that fails leaves a stopped container, which the holds remove later. A removal already under
        way (an ``--rm`` container's, someone's ``docker rm``) is waited out."""
        try:
            self._docker.remove(cid)
        except GoneError:
            pass
        except ActError as err:
            if not isinstance(err, ConflictError):
                return str(err)
            still = self._docker.wait_gone(cid)
            if still is None:
                return None
            return _STILL_REMOVING if still.status == "removing" else str(err)
        still = self._docker.wait_gone(cid)
        if still is None:
            return None
        if still.status == "removing":
            return _STILL_REMOVING  # the engine still deleting it (a large writable layer)
        return f"the container still exists after remove (state {still.status})"

    def _stop_details(
        self, action: Action, timeout_s: int, *, removed: bool, exit_state: str
    ) -> dict[str, Any]:
        return {
            **self._base(action),
            "message": action.message,
            "timeout_s": timeout_s,
            "removed": removed,
            "exit_state": exit_state,
            "evidence": action.evidence,
        }

    def _remove_details(self, action: Action, state: str) -> dict[str, Any]:
        return {**self._base(action), "message": action.message, "state": state, "evidence": action.evidence}

    def _remove(self, action: Action, mem: ControllerMemory, now: datetime) -> _Done:
        fresh = self._precondition(action)
        if fresh is None:
            return _Done(Outcome.ALREADY_DONE, "container already gone", mem)
        cid = fresh.id
        mem, fresh = self._begin_checked(action, mem, now, fresh)
        if fresh is None:
            return _Done(Outcome.ALREADY_DONE, "container removed by someone else", mem)
        try:
            self._docker.remove(cid)
        except GoneError:
            return _Done(Outcome.ALREADY_DONE, "container removed by someone else", mem)
        except ConflictError as err:
            # "removal already in progress" (someone else's rm): success if it ends with the container gone.
            if self._docker.wait_gone(cid) is None:
                return _Done(Outcome.ALREADY_DONE, "container removed concurrently", mem)
            raise err
        still = self._docker.wait_gone(cid)
        if still is not None and still.status == "removing":
            # The engine took the request and is still deleting it (a large writable layer; a first
            # request answered late): this removal, under way. Not a failure, and not reported
            # removed before the engine shows it gone: the next pass records it then (recover).
            detail = "the engine is still removing it after the wait; recorded once it is gone"
            return _Done(Outcome.IN_PROGRESS, detail, mem, pending=True)
        if still is not None:
            # DS01 bug 7: never report a removal the engine does not show.
            raise PermanentError(
                f"docker accepted the removal but the container still exists ({still.status})"
            )
        reason = event_reason(action.reason)
        details = self._remove_details(action, fresh.status)
        details["notice"] = self._notices.after(
            action,
            fresh.workspace,
            removed=True,
            was_running=False,
            workspace_known=True,
            workspace_mounted=fresh.workspace_mounted,
        )
        events = [(EventType.CONTAINER_REMOVE, details), *self._release_events(action, reason)]
        mem = own_record(mem, action, self._clock(), removed=True)
        return _Done(Outcome.DONE, f"removed ({fresh.status})", mem, events)

    def _warn(self, action: Action, mem: ControllerMemory, now: datetime) -> _Done:
        t = action.target
        fresh = None
        if t.container_id and t.expected_state is not None:
            fresh = self._precondition_for_notice(action)
            if fresh is None:
                raise _Skip("the container is gone; no notice needed")
        warn = action.params_as(WarnParams)
        severity = warn.severity or ("NOTICE" if action.reason is Reason.IDLE_EXEMPT_NOTICE else "WARNING")
        user = t.user
        delivered = 0
        alerts_file = None
        if user and user != "unknown":
            text = notice_text(warn.model_dump(), action.message)
            delivered = self._notifier.notify(user, text, severity=severity)
            alerts_file = self._notices.fallback(
                user, text, severity, fresh.workspace if fresh else None, delivered
            )
        self._notices.warned(action)
        warning_key = warn.warning_key or action.reason.value
        # The warning key, the stop time it announced, and the hold after the stop it named, which
        # binds that start as a stop notice's does (the hold rule keeps it).
        new_mem = warning_record(mem, action, self._clock())
        details = {
            **self._base(action),
            "warning_key": warning_key,
            "severity": severity,
            "message": action.message,
            "terminals": delivered,
            "evidence": action.evidence,
        }
        promised = action.promised_hold_s()
        if promised is not None and t.expected_started_at is not None:
            # With the start it binds: a lost memory still keeps that start that long (see salvage).
            details["expected_started_at"] = t.expected_started_at
            details[KEPT_AFTER_STOP_S] = promised
        if alerts_file is not None:
            details["alerts_file"] = alerts_file
        if warn.announced_stop() is not None and t.expected_started_at is not None:
            # The stop time the owner was told, and the start it is about: a lost memory keeps it (salvage).
            details["stop_expected_at"] = warn.stop_expected_at
            details["expected_started_at"] = t.expected_started_at
        detail = f"notice sent to {delivered} terminal(s) of {user or 'nobody'}"
        return _Done(Outcome.DONE, detail, new_mem, [(EventType.WARNING, details)])

    def _precondition_for_notice(self, action: Action) -> Inspected | None:
        t = action.target
        assert t.container_id is not None
        fresh = self._docker.inspect(t.container_id)
        if fresh is None:
            return None
        if fresh.status != t.expected_state or not _same_time(fresh.started_at, t.expected_started_at):
            raise _Skip(
                f"the container changed since the plan (now {fresh.status}, started {_iso(fresh.started_at)})"
            )
        return fresh

    # --- processes, GPUs, ledger, admin -----------------------------------------------------
    def _kill(self, action: Action, mem: ControllerMemory, now: datetime) -> _Done:
        t = action.target
        if t.pid is None or t.pid_start_time is None:
            raise _Skip("the plan has no pid start time; a pid is never signalled without an identity check")
        # The evidence names the container whose cgroup holds the process (None: a host process).
        proc_ev = ProcessEvidence.from_evidence(action.evidence)
        if proc_ev.container_id_type is not None:
            raise PermanentError(f"evidence container_id is {proc_ev.container_id_type}, not a string")
        expected_cid = proc_ev.container_id_or(t.container_id)
        grace_s = _or(action.params_as(KillParams).grace_s, self._kill_grace_s)
        # The cgroup that made it an orphan (this engine's): a process found elsewhere is not killed.
        planned_cgroup = proc_ev.cgroup if expected_cid is not None else None
        # Re-check before recording the intent: a pid already reused or gone needs no intent.
        pre = check_identity(t.pid, t.pid_start_time, expected_cid)
        if pre.identity in (Identity.LIVE, Identity.UNKNOWN):
            raise _Skip(pre.detail)
        if pre.identity in (Identity.CHANGED, Identity.MOVED):
            raise _Skip(f"not the planned process any more: {pre.detail}")
        if pre.identity is Identity.GONE:
            return _Done(Outcome.ALREADY_DONE, f"process already gone ({pre.detail})", mem)
        mem = self._begin(action, mem, now)
        result = kill_ladder(
            t.pid,
            t.pid_start_time,
            expected_cid,
            grace_s=grace_s,
            kill_wait_s=self._kill_wait_s,
            cgroup=planned_cgroup,
        )
        if result.outcome in (Identity.LIVE, Identity.UNKNOWN, Identity.MOVED):
            if result.signals_sent:
                # Stopped between the signals: what was sent is said (nothing further on a guess).
                why = f"{'+'.join(result.signals_sent)} sent, then stopped: {result.detail}"
                return self._skipped(action, mem, why, signals=list(result.signals_sent))
            raise _Skip(
                result.detail
                if result.outcome is not Identity.MOVED
                else f"not the planned process any more: {result.detail}"
            )
        if result.outcome is Identity.CHANGED:
            raise _Skip(f"not the planned process any more: {result.detail}")
        if not result.signals_sent:
            return _Done(Outcome.ALREADY_DONE, f"process already gone ({result.detail})", mem)
        details = {
            **self._base(action),
            "signals": list(result.signals_sent),
            "result": result.detail,
            "message": action.message,
            "evidence": action.evidence,
        }
        return _Done(
            Outcome.DONE,
            f"{'+'.join(result.signals_sent)}: {result.detail}",
            mem,
            [(EventType.PROCESS_KILL, details)],
        )

    def _reset(self, action: Action, mem: ControllerMemory, now: datetime) -> _Done:
        gpu = action.target.gpu
        if not gpu:
            raise PermanentError("ResetGpu without a GPU UUID")
        # The plan's observation may be minutes old: re-observe and re-check right before acting.
        if self._reset_precheck is None:
            raise _Skip(
                "no fresh NVML and Docker re-check is configured; a GPU is never reset on the plan alone"
            )
        _safe_to_reset(self._reset_precheck, gpu)
        timeout_s = _or(action.params_as(ResetParams).timeout_s, self._reset_timeout_s)
        mem = self._begin(action, mem, now)
        # The last look, after the intent's (fsynced, possibly queued) write: a process or container
        # that took the GPU meanwhile closes the intent as skipped (see _begin_checked).
        _safe_to_reset(self._reset_precheck, gpu)
        if self._release_nvml is not None:
            # nvidia-smi -r refuses a GPU another NVML client holds open ("In use by another
            # client"): the session the re-check just used, held between passes, is one.
            self._release_nvml()
        result = run_reset(self._reset_command, gpu, timeout_s=timeout_s)
        status = "cleaned" if result.ok else "reset_failed"
        details = {
            "gpu": gpu,
            "status": status,
            "reason": event_reason(action.reason),
            "returncode": result.returncode,
            "timed_out": result.timed_out,
            "output": result.output,
            "duration_s": round(result.duration_s, 3),
            "key": action.key,
        }
        if not result.ok:
            self._events.write(EventType.GPU_HEALTH_CHECK, user=None, details=details)
            why = "timed out" if result.timed_out else f"exit status {result.returncode}"
            raise PermanentError(f"GPU reset of {gpu} failed ({why}): {result.output[-200:]}")
        return _Done(
            Outcome.DONE,
            f"reset {gpu} in {result.duration_s:.1f}s",
            mem,
            [(EventType.GPU_HEALTH_CHECK, details)],
        )

    def _release(self, action: Action, mem: ControllerMemory, now: datetime) -> _Done:
        entry = action.target.ledger_entry
        if not entry:
            raise PermanentError("ReleaseAllocation without the ledger row to remove")
        self._row_container_unchanged(action, entry)
        resumed = action.key in mem.intents
        mem = self._begin(action, mem, now)
        if not resumed:
            self._row_container_unchanged(action, entry)  # writing the intent took a while
        removed = release_row(self._ledger_path, entry, timeout_s=self._ledger_lock_timeout_s)
        if not removed:
            return _Done(Outcome.ALREADY_DONE, "ledger row already gone", mem)
        details = {
            "gpu": entry.get("gpu_uuid") or entry.get("gpu"),
            "container": entry.get("container"),
            "reason": event_reason(action.reason),
            "ledger_row": dict(entry),
            "key": action.key,
            "evidence": action.evidence,
        }
        return _Done(
            Outcome.DONE, f"removed ledger row {_row_text(entry)}", mem, [(EventType.GPU_RELEASE, details)]
        )

    def _row_container_unchanged(self, action: Action, entry: Mapping[str, str]) -> None:
        """The container the row names is still the one the plan judged (or still absent).

        A ``docker run --name train`` that finished after the plan may hold the row's GPU now; a
        release would then free a GPU in use for the allocator. The engine resolves an exact id or
        name first, then an id prefix of any length; only what the planner would match counts
        (:meth:`controller.plan.context.PassContext.find_container`)."""
        ref = str(entry.get("container") or "")
        if not ref:
            return
        as_prefix = may_be_id_prefix(ref)
        try:
            fresh = self._docker.inspect(ref)
        except ActError as err:
            # Several ids start with it. The engine tries an exact id and name first: no container
            # has this name, and a key too short to be an id prefix names none of them either.
            if as_prefix or _MULTIPLE_IDS not in str(err).lower():
                raise
            return
        if fresh is not None and fresh.name != ref and fresh.id != ref and not as_prefix:
            # The engine matched an id prefix of any length; the planner takes only a key long
            # enough to be one (``may_be_id_prefix``): no container has this name.
            fresh = None
        planned = action.target.container_id
        if fresh is None:
            return  # gone, or still absent
        if planned is None:
            raise _Skip(f"container {fresh.name} ({fresh.status}) exists now; the plan saw none named {ref}")
        if not fresh.id.startswith(planned):
            raise _Skip(f"{ref} now names container {fresh.id[:12]}, not {planned[:12]} the plan judged")

    def _update(self, action: Action, mem: ControllerMemory, now: datetime) -> _Done:
        """Lower the limits in place; re-read the limits and the use first, verify after."""
        fresh = self._precondition(action)
        if fresh is None:
            return _Done(Outcome.ALREADY_DONE, "container already gone", mem)
        wanted = action.params_as(ResourceUpdate)
        if not self._update_body(fresh, wanted):
            return _Done(Outcome.ALREADY_DONE, "already at or below the requested limits", mem)
        mem, fresh = self._begin_checked(action, mem, now, fresh)
        if fresh is None:
            return _Done(Outcome.ALREADY_DONE, "container removed before the update", mem)
        # The use may have grown while the intent was written: what is lowered is judged again.
        body = self._update_body(fresh, wanted)
        if not body:
            return _Done(Outcome.ALREADY_DONE, "already at or below the requested limits", mem)
        try:
            self._docker.update(fresh.id, body)
        except GoneError:
            return _Done(Outcome.ALREADY_DONE, "container removed while updating", mem)
        after = self._docker.inspect(fresh.id)
        if after is None:
            return _Done(Outcome.ALREADY_DONE, "container removed while updating", mem)
        left = still_needed(wanted, after.limits)
        if left:
            raise PermanentError(f"docker update returned but {', '.join(sorted(left))} is still above")
        before = fresh.limits
        details = {
            **self._base(action),
            "message": action.message,
            "set": body,
            "before": _limits_dict(before),
            "after": _limits_dict(after.limits),
            "evidence": action.evidence,
        }
        return _Done(
            Outcome.DONE,
            "limits set in place: " + ", ".join(f"{k}={v}" for k, v in sorted(body.items())),
            mem,
            [(EventType.CONTAINER_UPDATE, details)],
        )

    def _update_body(self, fresh: Inspected, wanted: ResourceUpdate) -> dict[str, int]:
        """What ``docker update`` must still set on ``fresh`` (empty: nothing), after checking that
        the use read now leaves room under what it lowers (raises _Skip otherwise)."""
        body = still_needed(wanted, fresh.limits)
        if body and fresh.status == "running":
            self._check_use(fresh, wanted, body)
        return body

    def _check_use(self, fresh: Inspected, wanted: ResourceUpdate, body: dict[str, int]) -> None:
        """Skip when the use read now does not leave room under a limit the update lowers: memory,
        memory plus swap (each with the margin), the task count."""
        have = fresh.limits or ResourceLimits()
        memory = body.get("Memory")
        lowers_memory = memory is not None and (have.memory_bytes is None or memory < have.memory_bytes)
        swap = body.get("MemorySwap")
        lowers_swap = (
            swap is not None
            and swap != -1
            and (have.total_swap_bytes is None or swap < have.total_swap_bytes)
        )
        if not lowers_memory and not lowers_swap and "PidsLimit" not in body:
            return
        if fresh.pid is None:
            raise _Skip("running but the engine reports no main process: its use cannot be re-checked")
        try:
            text = (self._proc_root / str(fresh.pid) / "cgroup").read_text()
        except OSError as exc:
            raise _Skip(f"cannot re-check the use: {exc}") from None
        lines = parse_cgroup(text)
        if not any(fresh.id in container_ids_in_path(line.path) for line in lines):
            raise _Skip(f"pid {fresh.pid} no longer belongs to the container; use not re-checked")
        # The container's own cgroup, where the limits go, even when its main process sits in a
        # child of it (docker:dind, systemd): the child counts only itself.
        usage = read_usage(container_lines(lines, fresh.id), self._cgroup_root)
        margin = wanted.memory_margin_pct
        if lowers_memory and memory is not None:
            if usage.memory_bytes is None:
                raise _Skip(f"memory use unknown right before acting ({usage.memory_unknown})")
            high = highest_use(usage.memory_bytes, usage.memory_peak_bytes)
            if memory < memory_floor(high, margin):
                raise _Skip(
                    f"it uses {usage.memory_bytes} bytes now (peak {usage.memory_peak_bytes}); {memory} is "
                    f"below that plus {margin:g} %"
                )
        if lowers_swap and swap is not None:
            if usage.memory_swap_bytes is None:
                raise _Skip(f"memory plus swap use unknown right before acting ({usage.memory_swap_unknown})")
            if swap < memory_floor(
                highest_use(usage.memory_swap_bytes, usage.memory_swap_peak_bytes), margin
            ):
                raise _Skip(
                    f"it uses {usage.memory_swap_bytes} bytes of memory plus swap now (peak "
                    f"{usage.memory_swap_peak_bytes}); {swap} is below that plus {margin:g} %"
                )
        if "PidsLimit" in body:
            if usage.pids_current is None:
                raise _Skip(f"task count unknown right before acting ({usage.pids_unknown})")
            if body["PidsLimit"] < pids_floor(highest_use(usage.pids_current, usage.pids_peak), margin):
                raise _Skip(
                    f"it runs {usage.pids_current} tasks now (peak {usage.pids_peak}); the pids limit "
                    f"{body['PidsLimit']} leaves less than {margin:g} % (at least one task) of room"
                )

    def _alert(self, action: Action, mem: ControllerMemory, now: datetime) -> _Done:
        event_type = EventType.BREAKER_TRIPPED if action.reason is Reason.BREAKER_TRIPPED else EventType.ALERT
        logger.warning("ADMIN ALERT ({}): {}", action.reason.value, clean(action.message, 500))
        details = {**self._base(action), "message": action.message, "evidence": action.evidence}
        self._notices.alerted(action)
        return _Done(Outcome.DONE, "alert recorded", mem, [(event_type, details)])


def _reclaimed_gpu_s(action: Action, mem: ControllerMemory, now: datetime) -> float | None:
    """GPU-seconds an idle stop reclaims: how long the container had been idle, times its GPUs."""
    if action.kind is not ActionKind.STOP_CONTAINER or action.reason is not Reason.IDLE_TIMEOUT:
        return None
    cm = mem.containers.get(action.target.container_id or "")
    if cm is None or cm.idle_since is None:
        return None
    gpus = len(GpuEvidence.from_evidence(action.evidence).gpus) or 1
    return max(0.0, (now - cm.idle_since).total_seconds()) * gpus


def _allocation(e: LedgerEntry) -> Allocation:
    return Allocation(gpu=e.gpu, container=e.container, user=e.user, allocated_at=e.allocated_at)


def _limits_dict(limits: ResourceLimits | None) -> dict[str, Any] | None:
    if limits is None:
        return None
    return {
        "cpus": limits.cpus,
        "memory_bytes": limits.memory_bytes,
        "memory_swap_bytes": limits.total_swap_bytes,
        "memory_reservation_bytes": limits.memory_reservation_bytes,
        "pids_limit": limits.pids_limit,
    }


def _safe_to_reset(precheck: Callable[[str], Sequence[str]], gpu: str) -> None:
    """Raise _Skip naming what a fresh observation says keeps ``gpu`` from being reset now."""
    blockers = list(precheck(gpu))
    if blockers:
        raise _Skip("not safe to reset now: " + "; ".join(blockers))


def _or(value: float | None, default: float) -> float:
    return float(value) if value is not None else float(default)


def _grace_note(action: Action) -> str:
    if action.kind is not ActionKind.STOP_CONTAINER:
        return ""
    grace_s = action.params_as(StopParams).grace_s
    return f", SIGTERM grace {grace_s} s" if grace_s is not None else ""


# The engine's answer to an id prefix several containers share ("Multiple IDs found with provided
# prefix: ..."), compared in lower case.
_MULTIPLE_IDS = "multiple ids found"


def _int_param(value: object, default: int) -> int:
    """A whole number of seconds for the engine, rounded up: a grace is never shortened (0.5 s
    truncated to 0 would be SIGKILL straight after SIGTERM)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return math.ceil(value)
    return default


def _row_text(entry: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={clean(str(v), 80)}" for k, v in sorted(entry.items()))


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else "never"


def _same_time(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if b.tzinfo is None:
        b = b.replace(tzinfo=UTC)
    return abs(a - b) < STARTED_AT_TOLERANCE
