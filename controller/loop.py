"""The daemon loop: level-triggered passes woken by Docker events, a periodic resync and due times.

Owns the pass (reload policy -> resolve it once -> observe -> plan -> execute -> persist -> the pass
end, :meth:`Controller._end_pass`, where everything that reports a pass goes) and its scheduling:
when the next pass runs (:func:`next_wait_s`), the Docker event watcher that wakes it early
(:func:`watch_docker_events`, :class:`Waker`) and the systemd watchdog feed. Docker events only
*wake* the loop; every pass re-observes the whole host. A failed pass is logged and retried at the
next wake-up; it never ends the daemon. The watchdog is fed when a pass completes and, while a pass
waits on its actions, by the scheduler's heartbeat as long as every action in flight is within its
deadline: slow stops are not a hung loop, but a hung loop still gets restarted by systemd.

Actions run through :class:`controller.act.schedule.ActionScheduler` (bounded concurrency, one
action per target, deadlines; a plan older than ``safety.maxActionAge`` is not acted on: the loop
re-plans from a fresh observation at once).

Crash safety: the real executor is handed one action at a time and the memory is saved after
each outcome, so a ``kill -9`` between two actions loses nothing already done (a warning is not
sent twice, a removal is not reported twice). A destructive action is recorded (an intent,
saved) before it runs; a kill *during* it leaves that intent open, and the next pass has the
executor verify and record it (:meth:`RealExecutor.recover`) before planning. A memory save that
fails does not fail the pass: the executor then refuses destructive actions (it cannot record
their intent), and the condition is announced once, in the pass summary and as a metric.

Built and started by :mod:`controller.wiring` (collaborators, lock, signals, metrics endpoint); the
gauges are mapped in :mod:`controller.pass_metrics`. Must not decide what to do (the planner does)
nor touch the host itself (the executor does).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from loguru import logger

from controller.act.events import EventLog, EventType, log_trust_problem
from controller.act.executor import ExecutionReport, Executor, Outcome
from controller.act.hook import NotificationHook, hook_config
from controller.act.inventory import awareness_events, load_inventory, write_inventory
from controller.act.report import ActionOutcome
from controller.act.schedule import ActionScheduler, Limits
from controller.act.usage_recorder import UsageRecorder
from controller.lastpass import save_last_pass
from controller.memory import ControllerMemory
from controller.observe.host import HostObserver, with_policy
from controller.ops.sdnotify import Notifier
from controller.pass_metrics import record_failed_pass, record_metrics
from controller.plan import wake
from controller.plan.clock import clock_step_details, clock_step_line
from controller.plan.desired import PolicySetDesired
from controller.plan.open_alerts import OpenAlert, count_by_reason, open_alerts
from controller.plan.planner import plan as make_plan
from controller.plan.rules.cleanup import restart_mark_details
from controller.plan.types import Plan
from controller.plan.wake import MIN_WAIT_S
from controller.policy_identity import policy_identity
from controller.record import RecordUnavailable
from controller.settings import Settings
from controller.snapshot import Domain, Snapshot
from controller.startup import degraded_line, one_line_error, recovered_line
from controller.store import (
    BREAKER_RESET_REQUEST,
    MemoryStore,
    StoreError,
    save_inspect_cache,
    write_policy_status,
)
from desired_state.effective import GlobalPolicy
from desired_state.load import PolicyHolder

if TYPE_CHECKING:
    from controller.ops.metrics import Metrics

# After a Docker event, wait this long for the burst to settle (compose starts many containers).
EVENT_DEBOUNCE_S = 0.05
# An event-woken pass starts at least this long after the previous one began, so a storm of
# events (compose up, a crash loop) costs a few passes a second at most, not one per event.
MIN_EVENT_PASS_SPACING_S = 0.25
# Only events that change what a pass would see wake it: exec_* (every `docker exec`, every
# HEALTHCHECK), attach, resize, top, commit and the like do not.
WAKING_EVENTS = (
    "create",
    "start",
    "restart",
    "die",
    "stop",
    "destroy",
    "pause",
    "unpause",
    "oom",
    "rename",
    "update",
)
# Re-following the Docker event stream after it broke: first retry, and the longest back-off.
EVENTS_RETRY_MIN_S = 0.5
EVENTS_RETRY_MAX_S = 5.0
# A failed pass is retried after 2, 4, 8... seconds, never later than the resync interval.
FAILED_PASS_BACKOFF_BASE_S = 2.0


def utcnow() -> datetime:
    return datetime.now(UTC)


# Outcomes that touch neither the host nor the record (a dry run's, a plan too old to start).
_UNTOUCHED = frozenset({Outcome.DRY_RUN, Outcome.STALE})


@dataclass
class PassResult:
    snapshot: Snapshot
    plan: Plan
    report: ExecutionReport
    duration_s: float
    summary: str


@dataclass
class Controller:
    """One controller instance: its collaborators and the memory carried between passes."""

    settings: Settings
    observer: HostObserver
    policy: PolicyHolder
    executor: Executor
    store: MemoryStore
    event_log: EventLog
    memory: ControllerMemory
    metrics: Metrics | None = None
    clock: Callable[[], datetime] = utcnow
    # Asked between two actions: a stop request ends the pass early (the rest is re-planned later).
    should_stop: Callable[[], bool] = lambda: False
    # Called at least every few tenths of a second while actions run within their deadlines.
    heartbeat: Callable[[], None] = lambda: None
    scheduler: ActionScheduler = field(default_factory=ActionScheduler, repr=False)
    # Builds the executor for a reloaded policy's host-wide settings (None: keep ``executor``);
    # set by the wiring (controller.wiring.build_controller).
    make_executor: Callable[[GlobalPolicy], Executor] | None = field(default=None, repr=False)
    hook: NotificationHook | None = field(default=None, repr=False)  # notifications.* (policy)
    _previous_inventory: dict[str, Any] | None = field(default=None, repr=False)
    _inventory_loaded: bool = field(default=False, repr=False)
    _down: dict[Domain, str] = field(default_factory=dict, repr=False)
    _policy_loaded_at: datetime | None = field(default=None, repr=False)
    # True until a clean status has been written: a stale failure from an earlier run is cleared.
    _policy_status_error: bool = field(default=True, repr=False)
    _inspect_cache_saved: bool = field(default=False, repr=False)
    # The record (event log, memory file) could not be written: the error, while it lasts.
    _record_problem: str | None = field(default=None, repr=False)
    _log_trust_problem: str | None = field(default=None, repr=False)
    # Admin alerts this pass's observation raises (ds01_admin_alerts_open); set before _end_pass.
    _open_alerts: tuple[OpenAlert, ...] = field(default=(), repr=False)
    usage: UsageRecorder = field(default_factory=UsageRecorder, repr=False)

    def run_pass(self) -> PassResult:
        started = time.monotonic()
        self._consume_breaker_reset()
        reloaded = self._reload_policy()
        # The one resolution of this pass: the planner, the executor's limits, the observer's
        # host-wide settings and the awareness output all read it.
        desired = PolicySetDesired(self.policy.current)
        gp = desired.global_policy
        if reloaded:
            self._apply_global(gp)
        snapshot = self.observer.observe()
        observed_mono = self.scheduler.monotonic()  # a plan's age (safety.maxActionAge) counts from here
        self._announce_health(snapshot)
        recovered = self._recover_intents()
        if snapshot.docker_api_calls > 1 or not self._inspect_cache_saved:
            # Something was (re)inspected: save the cache so a cold ds01ctl need not inspect 500.
            save_inspect_cache(self.settings.state_dir, self.observer.export_inspect_cache())
            self._inspect_cache_saved = True
        now = self.clock()
        the_plan = make_plan(snapshot, desired, self.memory, now)
        stepped = clock_step_line(self.memory, the_plan.memory)
        if stepped is not None:
            logger.warning(stepped)
            # In the event log too: a memory lost or restored from a backup rebuilds its steps from
            # it (controller.act.salvage), so that a step is never hold, runtime or reservation time.
            self.event_log.write(
                EventType.CLOCK_STEP,
                user=None,
                details=clock_step_details(self.memory, the_plan.memory, snapshot.observed_at),
            )
        for details in restart_mark_details(self.memory, the_plan.memory):
            # A container a restart stopped keeps the restart's hold after a lost memory too (salvage).
            self.event_log.write(EventType.RESTART_STOP, user=None, details=details)
        # Admin alerts raised by this observation (delivered before or not): ds01_admin_alerts_open.
        self._open_alerts = open_alerts(self.memory, the_plan) if self.metrics is not None else ()
        report = self._execute(the_plan, now, observed_mono, gp)
        if recovered:
            report = report.model_copy(update={"outcomes": (*recovered, *report.outcomes)})
        memory = report.memory  # last_pass_at is the plan's (controller.memory.ControllerMemory)
        self._save(memory)
        self._awareness(snapshot, gp)
        self.usage.after_pass(self, snapshot, memory, report.outcomes, now)  # usage samples, reclaim metric
        record_problem = self._announce_record()
        duration_s = time.monotonic() - started
        summary = summarize(snapshot, the_plan, report, duration_s)
        if record_problem is not None:
            summary += f" RECORD UNWRITABLE ({record_problem}): no destructive action"
        log_problem = self._announce_log_trust()
        if log_problem is not None:
            summary += f" EVENT LOG UNSAFE ({log_problem})"
        result = PassResult(snapshot, the_plan, report, duration_s, summary)
        self._end_pass(result)
        return result

    def _end_pass(self, result: PassResult) -> None:
        """The pass end: everything that reports a finished pass (its memory is saved by now).

        The one place to add what a pass should publish (metrics, files for ``ds01ctl``...).
        """
        if self.metrics is not None:
            record_metrics(
                self.metrics, result.snapshot, result.plan, result.report, result.duration_s, self.memory
            )
            self.metrics.set_record_writable(self._record_problem is None)
            self.metrics.set_open_alerts(count_by_reason(self._open_alerts))
        # What ds01ctl get/describe show (not once it acted: its plan would show that as pending).
        acted = sum(o.outcome not in _UNTOUCHED for o in result.report.outcomes)
        save_last_pass(self.settings, self.policy, result.snapshot, result.plan, acted)

    def _save(self, memory: ControllerMemory) -> None:
        """Keep ``memory`` and save it. A save that fails (disk full, read-only) does not end the
        pass: observation, metrics and awareness go on, the failure is a health state, and the
        executor refuses destructive actions until the memory can be written again."""
        self.memory = memory
        try:
            self.store.save(memory)
        except (OSError, StoreError) as exc:
            logger.debug("memory not saved: {}", exc)  # announced once by _announce_record

    def _recover_intents(self) -> tuple[ActionOutcome, ...]:
        """Complete the record of actions an earlier run left open (killed during them).

        Not of those still running here: an action abandoned past its deadline goes on in its
        thread, and records its own outcome when it ends."""
        recover = getattr(self.executor, "recover", None)
        if not self.memory.intents or self.settings.dry_run or recover is None:
            return ()
        memory, outcomes = recover(self.memory, self.clock(), in_flight=frozenset(self.scheduler.abandoned))
        if memory is not self.memory:
            self._save(memory)  # written before the pass goes on: a crash now does not record twice
        return tuple(outcomes)

    def _announce_record(self) -> str | None:
        """One line (and event) when the record becomes unwritable, one when it is writable again."""
        health = self.store.health
        probed = False
        if self._record_problem is not None and health.failing() == {str(self.event_log.path)}:
            # On a quiet host nothing else writes to the log: the recovery line is the probe.
            with contextlib.suppress(RecordUnavailable):
                self.event_log.write_durable(
                    EventType.RECORD_RECOVERED, user=None, details={"was": self._record_problem}
                )
                probed = True
        problem = health.problem()
        if problem is not None and self._record_problem is None:
            logger.error(
                "degraded: the record cannot be written ({}); no destructive action runs until it can "
                "(observation, metrics and awareness go on)",
                problem,
            )
            self.event_log.write(EventType.RECORD_UNAVAILABLE, user=None, details={"error": problem})
            write_policy_status(
                self.settings.state_dir,
                self.policy.loaded_at,
                [str(e) for e in self.policy.last_errors],
                self.clock(),
                record_error=problem,
                policy=self._policy_identity(),
            )
        elif problem is None and self._record_problem is not None:
            logger.info("recovered: the record can be written again; destructive actions resume")
            if not probed:
                self.event_log.write(
                    EventType.RECORD_RECOVERED, user=None, details={"was": self._record_problem}
                )
            write_policy_status(
                self.settings.state_dir,
                self.policy.loaded_at,
                [str(e) for e in self.policy.last_errors],
                self.clock(),
                policy=self._policy_identity(),
            )
        self._record_problem = problem
        return problem

    def _announce_log_trust(self) -> str | None:
        """An error line when the event log or its directory becomes writable by other users (one
        could lock the controller out of its record), one when that is fixed. It changes nothing the
        controller does: a log it cannot append to already pauses destructive actions."""
        problem = log_trust_problem(self.event_log.path)
        if problem is not None and problem != self._log_trust_problem:
            logger.error("{}", problem)
        elif problem is None and self._log_trust_problem is not None:
            logger.info("the event log {} and its directory are root's alone again", self.event_log.path)
        self._log_trust_problem = problem
        return problem

    def _execute(
        self, the_plan: Plan, now: datetime, observed_mono: float, gp: GlobalPolicy
    ) -> ExecutionReport:
        if self.settings.dry_run or not the_plan.actions:
            # Dry-run changes nothing, so there is nothing to lose in a crash: one call, one save.
            return self.executor.execute(the_plan, self.memory, now)
        max_age_s = gp.max_action_age_s.value
        self.scheduler.limits = Limits(
            max_concurrent=gp.max_concurrent_actions.value,
            max_age_s=self.settings.interval_s if max_age_s is None else max_age_s,
            kill_grace_s=gp.kill_grace_s.value,
        )
        return self.scheduler.run(
            the_plan,
            now,
            self.executor.execute,
            observed_at=observed_mono,
            # What was just done is on disk before the next outcome is merged.
            on_progress=self._save,
            heartbeat=self.heartbeat,
            should_stop=self.should_stop,
        )

    def _reload_policy(self) -> bool:
        """Re-read the policy if its files changed; True when a new one replaced the one in force."""
        errors = self.policy.reload()
        if errors:
            logger.error(
                "policy reload failed, keeping the last good policy (loaded {}); {} problem(s):",
                self.policy.loaded_at.isoformat(timespec="seconds"),
                len(errors),
            )
            for err in errors:
                logger.error("policy: {}", err)
            self.event_log.write(
                "controller.policy_error",
                user=None,
                details={"errors": [str(e) for e in errors], "kept_policy_loaded_at": self.policy.loaded_at},
            )
            self._write_policy_status([str(e) for e in errors])
            return False
        if (self._policy_status_error and not self.policy.last_errors) or (
            self.policy.loaded_at != self._policy_loaded_at
        ):
            # Once the files load again (a pass with unchanged, still broken files reloads nothing),
            # and after every successful reload: the status names the policy the daemon now runs.
            self._write_policy_status([])
        reloaded = self._policy_loaded_at is not None and self.policy.loaded_at != self._policy_loaded_at
        if reloaded:
            logger.info("policy reloaded: {}", self.policy.current.origin)
        self._policy_loaded_at = self.policy.loaded_at
        return reloaded

    def _policy_identity(self) -> dict[str, object]:
        return policy_identity(self.policy.current, self.settings.specs, self.settings.ds01_config)

    def _write_policy_status(self, errors: list[str]) -> None:
        """What ``ds01ctl get policies`` reports about the daemon's last reload."""
        identity = self._policy_identity()
        write_policy_status(
            self.settings.state_dir,
            self.policy.loaded_at,
            errors,
            self.clock(),
            record_error=self._record_problem,
            policy=identity,
        )
        self._policy_status_error = bool(errors)

    def _apply_global(self, gp: GlobalPolicy) -> None:
        """Host-wide settings the observer and executor were built with follow a policy reload."""
        self.observer.config = with_policy(self.observer.config, gp)
        hook = self.hook
        if hook is not None:
            hook.config = hook_config(self.policy.current)
        if self.make_executor is not None:
            self.executor = self.make_executor(gp)  # the reset command, kill grace... of the new policy

    def _announce_health(self, snapshot: Snapshot) -> None:
        """One ``degraded:`` line when a domain becomes unavailable, one ``recovered:`` when it is back."""
        for h in snapshot.health:
            was_down = h.domain in self._down
            if not h.ok and not was_down:
                self._down[h.domain] = h.error or ""
                logger.warning(degraded_line(h.domain, h.error))
            elif h.ok and was_down:
                del self._down[h.domain]
                logger.info(recovered_line(h.domain))

    def _awareness(self, snapshot: Snapshot, gp: GlobalPolicy) -> None:
        """DS01's detector duties: the workload inventory and detection.* events.

        In dry-run too: they are awareness output and change nothing on the host.
        """
        min_age_s = gp.transient_process_min_age_s.value
        if not self._inventory_loaded:
            self._previous_inventory = load_inventory(self.settings.inventory_path)
            self._inventory_loaded = True
        for event_type, user, details in awareness_events(
            self._previous_inventory, snapshot, self.memory, min_age_s
        ):
            self.event_log.write(event_type, user=user, details=details)
        self._previous_inventory = write_inventory(
            snapshot, self.settings.inventory_path, self._previous_inventory, min_age_s
        )

    def _consume_breaker_reset(self) -> None:
        request = self.settings.state_dir / BREAKER_RESET_REQUEST
        if not request.exists():
            return
        try:
            request.unlink()
        except OSError as exc:
            logger.error("cannot consume breaker reset request {}: {}", request, exc)
            return
        if self.memory.breakers_tripped:
            was, release_was = self.memory.breaker.reason, self.memory.release_breaker.reason
            logger.warning("circuit breakers reset by an admin (were tripped: {} / {})", was, release_was)
            self.event_log.write(
                "controller.breaker_reset",
                user=None,
                details={"was": was, **({"release_was": release_was} if release_was else {})},
            )
        self._save(self.memory.with_breakers_reset())


def summarize(snapshot: Snapshot, the_plan: Plan, report: ExecutionReport, duration_s: float) -> str:
    down = [h.domain.value for h in snapshot.health if not h.ok]
    # Unavailable is not empty: a domain that could not be read is counted "unknown", never 0.
    if snapshot.domain_ok(Domain.DOCKER):
        running = str(sum(1 for c in snapshot.containers if c.state == "running"))
        containers = str(len(snapshot.containers))
    else:
        running = containers = "unknown"
    gpus = str(len(snapshot.gpus)) if snapshot.domain_ok(Domain.NVML) else "unknown"
    outcomes: dict[str, int] = {}
    for o in report.outcomes:
        outcomes[o.outcome] = outcomes.get(o.outcome, 0) + 1
    parts = [
        f"pass {duration_s * 1000:.0f}ms",
        f"containers={containers} running={running}",
        f"gpus={gpus}",
        f"actions={len(the_plan.actions)}",
        f"deferred={len(the_plan.deferred)}",
    ]
    if outcomes:
        parts.append("outcomes=" + ",".join(f"{k}:{v}" for k, v in sorted(outcomes.items())))
    if down:
        parts.append("unavailable=" + ",".join(down))
    if report.memory.breaker.tripped:
        parts.append("BREAKER TRIPPED")
    return " ".join(parts)


class Waker:
    """Wakes the loop early: Docker events, signals. Level-triggered: it carries no payload.

    A self-pipe rather than a ``threading.Event``: a signal handler runs in the main thread between
    two bytecodes, possibly while that thread holds the Event's lock, and waking through the lock
    could then deadlock. ``os.write`` to a non-blocking pipe takes no lock.
    """

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.stop_requested = False
        self.reload_requested = False

    def wake(self) -> None:
        try:
            os.write(self._write_fd, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (it will wake anyway) or already closed (shutting down)

    def stop(self) -> None:
        self.stop_requested = True
        self.wake()

    def request_reload(self) -> None:
        self.reload_requested = True
        self.wake()

    def wait(self, timeout_s: float) -> bool:
        """Sleep until woken or ``timeout_s`` passed; True when woken."""
        readable, _, _ = select.select([self._read_fd], [], [], max(MIN_WAIT_S, timeout_s))
        if not readable:
            return False
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def watch_docker_events(observer: HostObserver, waker: Waker) -> threading.Thread:
    """Follow the Docker event stream in a thread; each container event invalidates and wakes.

    When the stream breaks (the engine restarted, the socket went away) the thread resyncs the
    whole host, then follows again from the time of the break (``since``), so an event the engine
    recorded while the stream was down still wakes the loop.
    """

    def resync() -> None:
        # Whatever happened while the stream was not followed is unknown: re-inspect everything.
        observer.invalidate(None)
        waker.wake()

    def follow() -> None:
        retry_s = EVENTS_RETRY_MIN_S
        since: float | None = None  # None: only new events (first follow)
        broken_for: str | None = None  # why the stream is not being followed, while it is not
        while not waker.stop_requested:
            try:
                stream = observer.docker.events(
                    decode=True, filters={"type": "container", "event": list(WAKING_EVENTS)}, since=since
                )
            except Exception as exc:  # the engine is away: try again later, quietly
                if broken_for is None:
                    broken_for = _reason(exc)
                    since = time.time()
                    resync()
                time.sleep(retry_s)
                retry_s = min(retry_s * 2, EVENTS_RETRY_MAX_S)
                continue
            if broken_for is not None:
                logger.info("following Docker events again (the stream had ended: {})", broken_for)
                broken_for = None
                resync()
            retry_s = EVENTS_RETRY_MIN_S
            try:
                for event in stream:
                    if waker.stop_requested:
                        return
                    cid = event.get("id") if isinstance(event, dict) else None
                    observer.invalidate(cid if isinstance(cid, str) else None)
                    waker.wake()
                broken_for = "closed by the engine"
            except Exception as exc:  # the engine went away mid-stream
                broken_for = _reason(exc)
            if waker.stop_requested:
                return
            logger.debug("docker event stream ended: {}", broken_for)
            since = time.time()
            resync()
            time.sleep(retry_s)

    thread = threading.Thread(target=follow, name="docker-events", daemon=True)
    thread.start()
    return thread


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def next_wait_s(the_plan: Plan | None, now: datetime, interval_s: float) -> float:
    """Sleep until the resync or the earliest *future* due time (:func:`controller.plan.wake.wait_s`)."""
    due = (d.due_at for d in the_plan.deferred) if the_plan is not None else ()
    return wake.wait_s(due, now, interval_s)


def _loop(
    controller: Controller,
    notifier: Notifier,
    waker: Waker,
    *,
    once: bool,
    on_pass: Callable[[PassResult], None] | None,
) -> int:
    """Run passes until ``waker`` says stop: each woken by an event, a due time or the resync.

    The scheduling only: the wiring (:func:`controller.wiring.run`) built the controller and routes
    SIGTERM/SIGINT/SIGHUP to ``waker``.
    """
    settings = controller.settings
    if not once:
        watch_docker_events(controller.observer, waker)
    notifier.ready(f"started; first pass running ({'dry-run' if settings.dry_run else 'acting'})")
    # Feed the watchdog at least twice per WatchdogSec, whatever the resync interval.
    watchdog_s = notifier.watchdog_interval_s()
    max_wait_s = min(settings.interval_s, watchdog_s / 2) if watchdog_s else settings.interval_s
    controller.heartbeat = watchdog_heartbeat(notifier, watchdog_s)
    failures = 0
    while not waker.stop_requested:
        if waker.reload_requested:
            waker.reload_requested = False
            logger.info("SIGHUP: re-reading the policy")
            controller.policy.force_reload()
        started = time.monotonic()
        try:
            result = controller.run_pass()
        except Exception as exc:  # a failed pass never kills the daemon
            failures += 1
            if controller.metrics is not None:
                record_failed_pass(
                    controller.metrics, time.monotonic() - started, controller.memory.breaker.tripped
                )
            why = one_line_error(exc)
            logger.opt(exception=exc).error("pass failed ({} in a row): {}", failures, why)
            notifier.status(f"last pass failed ({failures} in a row): {why}")
            if once:
                return 1
            waker.wait(min(settings.interval_s, FAILED_PASS_BACKOFF_BASE_S**failures))
            continue
        failures = 0
        logger.info("{}{}", "DRY-RUN " if settings.dry_run else "", result.summary)
        notifier.status(result.summary)
        notifier.watchdog()
        if on_pass is not None:
            on_pass(result)
        if once:
            return _once_status(result)
        wait_s = min(max_wait_s, next_wait_s(result.plan, controller.clock(), settings.interval_s))
        if result.report.count(Outcome.STALE):
            wait_s = 0.0  # actions left unstarted because the plan got old: re-plan them now
        if waker.wait(wait_s) and not waker.stop_requested:
            since_start_s = time.monotonic() - started
            time.sleep(max(EVENT_DEBOUNCE_S, MIN_EVENT_PASS_SPACING_S - since_start_s))
    notifier.stopping()
    logger.info("ds01-controller stopped")
    return 0


def watchdog_heartbeat(notifier: Notifier, watchdog_s: float | None) -> Callable[[], None]:
    """WATCHDOG=1 from the action scheduler, at most every quarter of the watchdog interval.

    The scheduler calls it only while every action in flight is within its deadline, from the
    thread that runs the pass: a pass waiting on stops that honour their grace keeps the service
    alive, a pass stuck anywhere else (observation, a save, the dispatcher itself) does not.
    """
    if not watchdog_s:
        return lambda: None
    every_s = watchdog_s / 4
    last_s = time.monotonic()

    def beat() -> None:
        nonlocal last_s
        now_s = time.monotonic()
        if now_s - last_s >= every_s:
            last_s = now_s
            notifier.watchdog()

    return beat


def _once_status(result: PassResult) -> int:
    """``run --once`` fails when Docker could not be observed: such a plan cannot be trusted."""
    if result.snapshot.domain_ok(Domain.DOCKER):
        return 0
    logger.error(
        "the pass could not observe Docker ({}); its plan shows no container action",
        result.snapshot.domain_error(Domain.DOCKER),
    )
    return 1
