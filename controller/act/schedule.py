"""How a plan's actions are run: order, bounded concurrency, one action per target, deadlines, staleness.

Owns the *plan-level* iteration of the acting daemon. Each single action is still carried out by
the executor (its re-checks, its Docker calls, signals and records), called once per action through
``run_one`` on a one-action plan; this module decides when each one starts and how long it is
waited for. Called by :meth:`controller.loop.Controller.run_pass`. Must not decide *what* to do (the
planner does) nor touch the host itself (the executor does).

The rules:

- **Plan order.** Actions start in the order the planner listed them. A later action overtakes an
  earlier one that is waiting only when they share no target.
- **One action per target at a time.** Two actions share a target when they name the same
  container (id or name) or the same pid. Every ledger release shares the ledger (one writer; the
  file also has its own lock). A GPU reset runs alone: it starts when nothing else is in flight and
  nothing starts while it runs.
- **Bounded concurrency.** At most ``max_concurrent`` actions are in flight, so four stops whose
  processes ignore SIGTERM take one grace period, not four.
- **Stale plans are not acted on.** An action that has not started ``max_age_s`` after the end of
  the observation its plan was made from is not started at all: it is reported ``stale`` and the
  caller re-plans from a fresh observation at once. The re-checks before each action cover the
  container's identity and state; only a fresh plan covers its activity.
- **Deadlines.** Each action has one, from its own timeouts (the stop's SIGTERM grace, the kill's
  grace and wait, the reset's timeout) plus :data:`DEADLINE_SLACK_S`. A stop that outlives its grace
  is escalated by the engine itself (``docker stop -t``: SIGKILL) and a kill by its ladder; an
  action still running past its deadline is reported failed and *abandoned*: its thread is left to
  finish (every call under it has a timeout), its target stays locked, across passes, until it does,
  and every other target goes on.
- **Progress.** A line when each action starts ("stopping X, SIGTERM grace 60 s"), a line every
  :data:`PROGRESS_LOG_S` while actions are in flight, and ``heartbeat()`` at least every
  :data:`TICK_S` while every action in flight is within its deadline: the daemon feeds the systemd
  watchdog from it, so a pass that waits on slow stops is not mistaken for a hung one, while a hung
  dispatcher still is.
- **Memory, one writer at a time.** Each action runs against the memory as it was when it started;
  the outcome records it changed (the keys of ``done``, ``attempts``, a container's ``warnings``...)
  are merged into the pass's memory when it finishes, and ``on_progress`` is called with the memory
  after each outcome (the daemon saves it there, so a crash loses at most what was in flight). An
  executor that must save *during* an action (a record written before it acts) saves through
  :meth:`ActionScheduler.saver`, which merges into the same memory under the same lock, so
  concurrent actions never overwrite each other's records.
"""

from __future__ import annotations

import errno
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from controller.act.report import ActionOutcome, ExecutionReport, Outcome
from controller.act.sanitize import clean
from controller.memory import ControllerMemory
from controller.plan.types import Action, ActionKind, KillParams, Plan, ResetParams, StopParams

__all__ = [
    "DEADLINE_SLACK_S",
    "DEFAULT_MAX_CONCURRENT",
    "ActionScheduler",
    "Limits",
    "action_deadline_s",
    "conflict_keys",
    "merge_outcome",
    "start_line",
]

DEFAULT_MAX_CONCURRENT = 4
# How often the dispatcher wakes while actions are in flight: deadlines, heartbeat, stop requests.
TICK_S = 0.25
PROGRESS_LOG_S = 15.0
# Added to an action's own timeouts: the Docker calls around a stop (inspect, remove, the verify
# polls of 10 s each, the HTTP timeout and retries), the identity checks around a kill.
DEADLINE_SLACK_S = 60.0
# The executor's defaults for parameters a plan may leave out (see controller.act.executor).
DEFAULT_STOP_GRACE_S = 60.0
DEFAULT_KILL_GRACE_S = 10.0
DEFAULT_KILL_WAIT_S = 5.0
DEFAULT_RESET_TIMEOUT_S = 120.0
LEDGER_KEY = "ledger"

RunOne = Callable[[Plan, ControllerMemory, datetime], ExecutionReport]
_Update = Callable[[ControllerMemory], ControllerMemory]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Limits:
    """How many actions may run at once, and how old a plan may be when one of its actions starts."""

    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    max_age_s: float = 30.0
    kill_grace_s: float = DEFAULT_KILL_GRACE_S


def _num(value: object, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return default


def action_deadline_s(action: Action, *, kill_grace_s: float = DEFAULT_KILL_GRACE_S) -> float:
    """How long ``action`` may run before it counts as stuck: its own timeouts plus the slack."""
    if action.kind is ActionKind.STOP_CONTAINER:
        own = _num(action.params_as(StopParams).grace_s, DEFAULT_STOP_GRACE_S)
    elif action.kind is ActionKind.KILL_PROCESS:
        own = _num(action.params_as(KillParams).grace_s, kill_grace_s) + DEFAULT_KILL_WAIT_S
    elif action.kind is ActionKind.RESET_GPU:
        own = _num(action.params_as(ResetParams).timeout_s, DEFAULT_RESET_TIMEOUT_S)
    else:
        own = 0.0
    return own + DEADLINE_SLACK_S


def start_line(action: Action, *, kill_grace_s: float = DEFAULT_KILL_GRACE_S) -> str:
    """The progress line logged when ``action`` starts."""
    label = clean(action.target.label(), 80)
    if action.kind is ActionKind.STOP_CONTAINER:
        stop = action.params_as(StopParams)
        grace = _num(stop.grace_s, DEFAULT_STOP_GRACE_S)
        then = " and removing" if stop.remove else ""
        return f"stopping{then} {label}, SIGTERM grace {grace:g} s ({action.reason.value})"
    if action.kind is ActionKind.KILL_PROCESS:
        grace = _num(action.params_as(KillParams).grace_s, kill_grace_s)
        return f"signalling {label}, SIGTERM grace {grace:g} s ({action.reason.value})"
    if action.kind is ActionKind.RESET_GPU:
        timeout = _num(action.params_as(ResetParams).timeout_s, DEFAULT_RESET_TIMEOUT_S)
        return f"resetting GPU {label}, timeout {timeout:g} s"
    return f"{action.kind.value} {label} ({action.reason.value})"


def conflict_keys(action: Action) -> frozenset[str]:
    """The targets ``action`` touches: two actions sharing one never run at the same time."""
    t = action.target
    keys: set[str] = set()
    if t.container_id:
        keys.add(f"container:{t.container_id}")
    if t.container:
        keys.add(f"name:{t.container}")
    if t.pid is not None:
        keys.add(f"pid:{t.pid}")
    if action.kind is ActionKind.RELEASE_ALLOCATION:
        keys.add(LEDGER_KEY)
    return frozenset(keys)


def _exclusive(action: Action) -> bool:
    # A reset while a process on that GPU is being killed (or a container on it stopped) would act
    # on a GPU still in use; resets are rare, so one runs with nothing else in flight.
    return action.kind is ActionKind.RESET_GPU


def merge_outcome(
    current: ControllerMemory, before: ControllerMemory, after: ControllerMemory
) -> ControllerMemory:
    """``current`` with what one action changed from ``before`` to ``after``, key by key.

    The executor builds an action's memory with copy-on-write transitions (``with_done``,
    ``with_failure``, ``with_warning``...), so an entry it did not touch is the *same object* in
    ``before`` and ``after``: comparing identities finds exactly the action's own changes, whatever
    fields a memory gains later. Actions in flight together share no target, so their changes
    never touch the same key.
    """
    update: dict[str, Any] = {}
    for name in type(current).model_fields:
        old, new = getattr(before, name), getattr(after, name)
        if new is old:
            continue
        if isinstance(new, Mapping) and isinstance(old, Mapping):
            merged = dict(update.get(name, getattr(current, name)))
            for key in old.keys() | new.keys():
                if key not in new:
                    merged.pop(key, None)
                elif old.get(key) is not new[key]:
                    merged[key] = new[key]
            update[name] = merged
        elif new != old:
            update[name] = new
    return current.model_copy(update=update) if update else current


@dataclass
class _Running:
    action: Action
    keys: frozenset[str]
    before: ControllerMemory
    started: float
    deadline: float
    thread: threading.Thread | None = None
    abandoned: bool = False


@dataclass
class ActionScheduler:
    """Runs plans' actions by the rules above. One per daemon: it remembers abandoned actions."""

    limits: Limits = field(default_factory=Limits)
    monotonic: Callable[[], float] = time.monotonic
    clock: Callable[[], datetime] = utcnow
    # Actions abandoned past their deadline whose thread has not ended yet: their targets stay locked.
    _abandoned: dict[int, _Running] = field(default_factory=dict, repr=False)
    _seq: Iterator[int] = field(default_factory=itertools.count, repr=False)
    # The memory of the run in progress (None between runs), and the lock every change and save of
    # it takes: outcomes (this thread) and mid-action saves (the actions' threads) are serialized.
    _current: ControllerMemory | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def saver(self, save: Callable[[ControllerMemory], None]) -> Callable[[ControllerMemory], None]:
        """A save for the executor to call *during* an action (e.g. an intent before a stop).

        Called from an action's thread while a run is in progress, it merges what that action changed
        into the run's memory (under the lock the outcomes take) and saves the merged memory with
        ``save``, so no action's save drops another's, nor an outcome saved meanwhile; the action's
        final outcome is then merged from there. ``save``'s error reaches the caller and changes
        nothing. An action abandoned past its deadline may not save (``OSError``): its pass is over,
        and it must not act on a record it cannot keep. Outside a run it is ``save`` itself.
        """

        def save_during_action(memory: ControllerMemory) -> None:
            entry: _Running | None = getattr(self._local, "entry", None)
            if entry is None:
                save(memory)
                return
            with self._lock:
                if entry.abandoned or self._current is None:
                    raise OSError(
                        errno.ECANCELED,
                        f"{entry.action.key}: abandoned past its deadline; its record can no longer be kept",
                    )
                merged = merge_outcome(self._current, entry.before, memory)
                save(merged)
                entry.before = memory
                self._current = merged

        return save_during_action

    def run(
        self,
        plan: Plan,
        now: datetime,
        run_one: RunOne,
        *,
        observed_at: float,
        on_progress: Callable[[ControllerMemory], None] = lambda _m: None,
        heartbeat: Callable[[], None] = lambda: None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> ExecutionReport:
        """Run ``plan``'s actions; ``observed_at`` is the ``monotonic()`` time its observation ended.

        Never raises for an action's sake: every action ends with one outcome (or none, when a stop
        was requested before it started: it is re-planned at the next start).
        """
        limits = self.limits
        actions = plan.actions
        pending = list(range(len(actions)))  # indices into the plan: keys need not be unique
        running: dict[int, _Running] = {}
        outcomes: dict[int, ActionOutcome] = {}
        done: queue.SimpleQueue[tuple[int, ExecutionReport | BaseException]] = queue.SimpleQueue()
        last_log = self.monotonic()

        def record(index: int, outcome: ActionOutcome, update: _Update | None = None) -> None:
            with self._lock:
                assert self._current is not None
                if update is not None:
                    self._current = update(self._current)
                outcomes[index] = outcome
                on_progress(self._current)

        with self._lock:
            self._current = plan.memory
        try:
            while pending or running:
                self._reap_abandoned()
                tick = self.monotonic()
                age_s = tick - observed_at
                if pending and should_stop():
                    # Nothing new starts; what runs is waited for (its deadline still applies).
                    logger.info("stopping: {} planned action(s) left for the next start", len(pending))
                    pending.clear()
                elif pending and age_s > limits.max_age_s:
                    self._stale(actions, pending, outcomes, age_s)
                    pending.clear()
                else:
                    self._dispatch(plan, pending, running, now, run_one, done, record)
                if not running:
                    continue
                # Wait for an outcome, a deadline or the next tick, whichever comes first.
                next_deadline = min(r.deadline for r in running.values())
                wait_s = max(0.0, min(TICK_S, next_deadline - self.monotonic()))
                try:
                    index, result = done.get(timeout=wait_s) if wait_s > 0 else done.get_nowait()
                except queue.Empty:
                    pass
                else:
                    finished = running.pop(index)
                    record(index, *self._finished(finished, result))
                now_mono = self.monotonic()
                for index, late in list(running.items()):
                    if now_mono >= late.deadline:
                        del running[index]
                        with self._lock:
                            late.abandoned = True
                        self._abandoned[next(self._seq)] = late
                        record(index, *self._abandon(late, now_mono))
                if all(now_mono < r.deadline for r in running.values()):
                    heartbeat()
                if running and now_mono - last_log >= PROGRESS_LOG_S:
                    last_log = now_mono
                    logger.info(
                        "waiting for {} action(s): {}",
                        len(running),
                        "; ".join(
                            f"{r.action.kind.value} {clean(r.action.target.label(), 40)} "
                            f"({now_mono - r.started:.0f} s, deadline {r.deadline - r.started:.0f} s)"
                            for r in running.values()
                        ),
                    )
        finally:
            with self._lock:
                memory, self._current = self._current, None
                # Left early (a save failed, say): what is still running keeps its target locked.
                for entry in running.values():
                    entry.abandoned = True
                    self._abandoned[next(self._seq)] = entry
        ordered = tuple(outcomes[i] for i in range(len(actions)) if i in outcomes)
        return ExecutionReport(outcomes=ordered, memory=memory)

    # --- dispatch ---------------------------------------------------------------------------
    def _dispatch(
        self,
        plan: Plan,
        pending: list[int],
        running: dict[int, _Running],
        now: datetime,
        run_one: RunOne,
        done: queue.SimpleQueue[tuple[int, ExecutionReport | BaseException]],
        record: Callable[[int, ActionOutcome], None],
    ) -> None:
        """Start every pending action the rules allow now, in plan order."""
        limits = self.limits
        locked: set[str] = set()  # targets of in-flight actions and of earlier actions still waiting
        for r in running.values():
            locked |= r.keys
        barrier = any(_exclusive(r.action) for r in running.values())
        for index in list(pending):
            action = plan.actions[index]
            keys = conflict_keys(action)
            busy = self._abandoned_on(action, keys)
            if busy is not None:
                pending.remove(index)
                where = "on this target" if keys & busy.keys else clean(busy.action.target.label(), 80)
                alone = "; a GPU reset runs alone" if _exclusive(action) or _exclusive(busy.action) else ""
                why = (
                    f"not started: {busy.action.kind.value} {where} is still running "
                    f"({self.monotonic() - busy.started:.0f} s, past its deadline){alone}; "
                    "re-planned next pass"
                )
                record(index, _outcome(action, Outcome.SKIPPED, why))
                continue
            if barrier or len(running) >= max(1, limits.max_concurrent):
                break
            if _exclusive(action):
                if running or pending[0] != index:
                    # Everything listed before it must end first, and nothing overtakes it.
                    break
                barrier = True
            elif keys & locked:
                locked |= keys  # keep this target's later actions behind this one
                continue
            pending.remove(index)
            locked |= keys
            self._start(plan, index, keys, now, run_one, running, done)

    def _start(
        self,
        plan: Plan,
        index: int,
        keys: frozenset[str],
        now: datetime,
        run_one: RunOne,
        running: dict[int, _Running],
        done: queue.SimpleQueue[tuple[int, ExecutionReport | BaseException]],
    ) -> None:
        action = plan.actions[index]
        with self._lock:
            assert self._current is not None
            memory = self._current
        started = self.monotonic()
        deadline_s = action_deadline_s(action, kill_grace_s=self.limits.kill_grace_s)
        entry = _Running(action, keys, memory, started, started + deadline_s)
        # What the executor reads: this one action, and the memory as it is when the action starts.
        one = plan.model_copy(update={"actions": (action,), "memory": memory})

        def work() -> None:
            self._local.entry = entry  # for the executor's mid-action saves (see saver)
            try:
                result: ExecutionReport | BaseException = run_one(one, memory, now)
            except BaseException as exc:  # the executor never raises; this is the last guard
                result = exc
            finally:
                self._local.entry = None
            done.put((index, result))

        if action.destructive or action.kind is ActionKind.RESET_GPU:
            logger.info(
                "{} (deadline {:g} s)", start_line(action, kill_grace_s=self.limits.kill_grace_s), deadline_s
            )
        thread = threading.Thread(target=work, name=f"action-{action.kind.value}", daemon=True)
        entry.thread = thread
        running[index] = entry
        thread.start()

    # --- outcomes ---------------------------------------------------------------------------
    def _stale(
        self,
        actions: tuple[Action, ...],
        pending: list[int],
        outcomes: dict[int, ActionOutcome],
        age_s: float,
    ) -> None:
        why = f"the plan is {age_s:.0f} s old (maxActionAge {self.limits.max_age_s:g} s)"
        for index in pending:
            detail = f"not started: {why}; re-planned from a fresh observation"
            outcomes[index] = _outcome(actions[index], Outcome.STALE, detail)
        logger.info(
            "{} planned action(s) not started: {}; re-planning from a fresh observation", len(pending), why
        )

    def _finished(
        self, entry: _Running, result: ExecutionReport | BaseException
    ) -> tuple[ActionOutcome, _Update | None]:
        action = entry.action
        if isinstance(result, BaseException):
            logger.opt(exception=result).error("executor: unexpected error in {}", action.key)
            detail = f"unexpected error: {type(result).__name__}: {result}"
            at = self.clock()
            return _outcome(action, Outcome.FAILED, detail), lambda m: m.with_failure(action.key, detail, at)
        found = [o for o in result.outcomes if o.key == action.key]
        if not found:
            return _outcome(action, Outcome.FAILED, "the executor reported no outcome"), None
        # entry.before is read under the lock: a mid-action save may have moved it on.
        return found[0], lambda m: merge_outcome(m, entry.before, result.memory)

    def _abandon(self, entry: _Running, now_mono: float) -> tuple[ActionOutcome, _Update]:
        action = entry.action
        ran_s = now_mono - entry.started
        deadline_s = entry.deadline - entry.started
        detail = (
            f"still running after {ran_s:.0f} s, past its deadline of {deadline_s:.0f} s; "
            "no longer waited for (its target stays locked until it ends)"
        )
        logger.error("{} {}: {}", action.kind.value, clean(action.target.label(), 80), detail)
        outcome = _outcome(action, Outcome.FAILED, detail, duration_s=ran_s)
        at = self.clock()
        return outcome, lambda m: m.with_failure(action.key, detail, at)

    def _abandoned_on(self, action: Action, keys: frozenset[str]) -> _Running | None:
        """An action abandoned past its deadline and still running that ``action`` must not start
        beside: one on a target it touches, or any at all where either is a GPU reset (a reset runs
        alone: a stop or kill still under way may be on that GPU, whose processes it holds)."""
        alone = _exclusive(action)
        for entry in self._abandoned.values():
            if alone or keys & entry.keys or _exclusive(entry.action):
                return entry
        return None

    def _reap_abandoned(self) -> None:
        for key, entry in list(self._abandoned.items()):
            if entry.thread is None or not entry.thread.is_alive():
                logger.info(
                    "{} {} ended, {:.0f} s after it started; its target is free again",
                    entry.action.kind.value,
                    clean(entry.action.target.label(), 80),
                    self.monotonic() - entry.started,
                )
                del self._abandoned[key]

    @property
    def abandoned(self) -> tuple[str, ...]:
        """Keys of actions abandoned past their deadline that are still running."""
        self._reap_abandoned()
        return tuple(e.action.key for e in self._abandoned.values())


def _outcome(action: Action, outcome: Outcome, detail: str, *, duration_s: float = 0.0) -> ActionOutcome:
    return ActionOutcome(
        key=action.key,
        kind=action.kind,
        reason=action.reason,
        target=action.target,
        outcome=outcome,
        detail=clean(detail, 1000),
        duration_s=round(duration_s, 6),
    )
