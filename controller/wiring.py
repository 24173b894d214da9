"""The wiring: the daemon's collaborators built from its settings, and its process lifetime.

Builds what a pass needs from :class:`controller.settings.Settings` and the loaded policy (the
observer, the stores, the event log, the real or dry-run executor: :func:`build_controller`), and
runs the daemon (:func:`run`): the single-instance lock, the metrics endpoint, the signal handlers
(SIGTERM/SIGINT stop, SIGHUP re-reads the policy) and the loop (:mod:`controller.loop`). Also the
start-up Docker ping (:func:`check_docker`).

Called by :mod:`controller.main` and ``ds01ctl reconcile``. Must not decide (the planner does),
act (the executor does) or schedule passes (the loop does); it only connects them.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Collection, Iterator
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING

from loguru import logger

from controller.act.events import EventLog
from controller.act.executor import DryRunExecutor, ExecutionReport, Executor, Outcome, RealExecutor
from controller.act.gpu_reset import ResetPrecheck
from controller.act.hook import NotificationHook, hook_config
from controller.act.notify import TerminalNotifier
from controller.act.report import ActionOutcome
from controller.act.salvage import load_state
from controller.act.schedule import ActionScheduler
from controller.loop import Controller, PassResult, Waker, _loop, utcnow
from controller.memory import ControllerMemory
from controller.observe.docker_adapter import make_client
from controller.observe.host import HostObserver, ObserveConfig, with_policy
from controller.ops.sdnotify import Notifier
from controller.plan.desired import PolicySetDesired
from controller.plan.types import Plan
from controller.record import RecordHealth
from controller.settings import Settings
from controller.startup import PING_TIMEOUT_S, docker_host, docker_problem, missing_socket, one_line_error
from controller.store import MemoryStore, acquire_run_lock
from desired_state.effective import GlobalPolicy
from desired_state.load import PolicyHolder

if TYPE_CHECKING:
    from controller.ops.metrics import Metrics


def make_real_executor(
    observer: HostObserver,
    event_log: EventLog,
    settings: Settings,
    gp: GlobalPolicy,
    save_memory: Callable[[ControllerMemory], None] | None = None,
    hook: NotificationHook | None = None,
) -> RealExecutor:
    return RealExecutor(
        docker_client=observer.docker,
        event_log=event_log,
        notifier=TerminalNotifier(),
        ledger_path=settings.ledger,
        reset_command=gp.gpu_reset_command.value,
        kill_grace_s=gp.kill_grace_s.value,
        reset_precheck=ResetPrecheck(observer.observe),
        release_nvml=observer.close_nvml,
        save_memory=save_memory,
        hook=hook,
        proc_root=observer.config.proc_root,
        cgroup_root=observer.config.cgroup_root,
    )


class _LazyDockerExecutor:
    """The real executor, built on first use: the Docker client may not exist yet at start
    (an engine that is down must not stop the daemon from starting)."""

    def __init__(self, build: Callable[[], RealExecutor]) -> None:
        self._build = build
        self._real: RealExecutor | None = None
        self._lock = threading.Lock()  # actions run in threads: build one executor, not one each

    def execute(self, plan: Plan, memory: ControllerMemory, now: datetime) -> ExecutionReport:
        with self._lock:
            if self._real is None:
                try:
                    self._real = self._build()
                except Exception as exc:  # the engine is down: nothing is done, all is re-planned later
                    why = f"not attempted: the Docker engine is unreachable ({one_line_error(exc)})"
                    outcomes = tuple(
                        ActionOutcome(
                            key=a.key,
                            kind=a.kind,
                            reason=a.reason,
                            target=a.target,
                            outcome=Outcome.SKIPPED,
                            detail=why,
                        )
                        for a in plan.actions
                    )
                    return ExecutionReport(outcomes=outcomes, memory=plan.memory)
            real = self._real
        return real.execute(plan, memory, now)

    def recover(
        self, memory: ControllerMemory, now: datetime, *, in_flight: Collection[str] = ()
    ) -> tuple[ControllerMemory, tuple[ActionOutcome, ...]]:
        if self._real is None:
            try:
                self._real = self._build()
            except Exception as exc:  # the engine is down: the intents stay open until it answers
                logger.warning("open intents not verified yet: {}", one_line_error(exc))
                return memory, ()
        return self._real.recover(memory, now, in_flight=in_flight)


def build_controller(
    settings: Settings, policy: PolicyHolder | None = None, metrics: Metrics | None = None
) -> Controller:
    """The controller for ``settings``; ``policy`` defaults to one loaded from its specs/DS01 config
    (raises :class:`desired_state.errors.PolicyLoadError` when that policy is invalid)."""
    if policy is None:
        policy = PolicyHolder(settings.specs, settings.ds01_config)
    gp = PolicySetDesired(policy.current).global_policy
    observer = HostObserver(
        with_policy(
            ObserveConfig(
                docker_timeout_s=settings.docker_timeout_s,
                ledger_path=settings.ledger,
                docker_pidfile=settings.docker_pidfile,
            ),
            gp,
        )
    )
    # One health for both halves of the record: the executor acts only when both can be written.
    health = RecordHealth()
    event_log = EventLog(settings.events_log, health=health)
    event_log.end_fragment_left()
    store = MemoryStore(settings.state_dir, health=health)
    scheduler = ActionScheduler()
    hook = NotificationHook(
        hook_config(policy.current),
        event_log=event_log,
        on_failure=metrics.record_hook_failure if metrics is not None else None,
    )
    make_executor: Callable[[GlobalPolicy], Executor] | None = None
    executor: Executor
    if settings.dry_run:
        executor = DryRunExecutor(event_log, hook=hook)
    else:
        # Mid-action saves merge with the other actions' outcomes (see ActionScheduler.saver).
        save = scheduler.saver(store.save)

        def make_executor(gp: GlobalPolicy) -> Executor:
            return _LazyDockerExecutor(
                lambda: make_real_executor(observer, event_log, settings, gp, save_memory=save, hook=hook)
            )

        executor = make_executor(gp)
    on_quarantine = metrics.record_quarantine if metrics is not None else None
    memory = load_state(store, event_log, utcnow(), on_quarantine=on_quarantine)
    controller = Controller(
        settings=settings,
        observer=observer,
        policy=policy,
        executor=executor,
        store=store,
        event_log=event_log,
        memory=memory,
        metrics=metrics,
        scheduler=scheduler,
        make_executor=make_executor,
        hook=hook,
    )
    controller._policy_loaded_at = policy.loaded_at
    return controller


def run(
    settings: Settings,
    policy: PolicyHolder,
    *,
    once: bool = False,
    on_pass: Callable[[PassResult], None] | None = None,
) -> int:
    """Run the daemon (or one pass with ``once``). Returns the process exit status.

    ``on_pass`` is called with each completed pass (``run --once`` prints the plan through it).
    Raises the start-up errors (lock held, metrics port taken, unusable state) for the caller to
    report; after start-up nothing escapes.
    """
    notifier = Notifier()
    waker = Waker()
    with acquire_run_lock(settings.state_dir):
        metrics_server = None
        metrics: Metrics | None = None
        if settings.metrics_port is not None:
            from controller.ops.metrics import Metrics

            metrics = Metrics()
            metrics_server = metrics.serve(settings.metrics_addr, settings.metrics_port)
        controller = build_controller(settings, policy, metrics)
        controller.should_stop = lambda: waker.stop_requested
        try:
            with _signals_to(waker):
                return _loop(controller, notifier, waker, once=once, on_pass=on_pass)
        finally:
            controller.observer.close()
            if controller.hook is not None:
                # Documents still queued get one delivery attempt's time; then they are lost (in memory).
                controller.hook.flush(controller.hook.config.timeout_s + 1)
                controller.hook.close()
            if metrics_server is not None:
                metrics_server.close()
            notifier.close()
            waker.close()


@contextlib.contextmanager
def _signals_to(waker: Waker) -> Iterator[None]:
    """SIGTERM and SIGINT stop the loop, SIGHUP re-reads the policy; the old handlers come back after."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # Only flags and the waker's pipe here: the handler runs between two bytecodes of the main
        # thread, which may hold the notifier's (or any) lock, so taking a lock could deadlock.
        if signum == signal.SIGHUP:
            waker.request_reload()
        else:
            waker.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def check_docker(settings: Settings) -> str | None:
    """None when the Docker engine answers a ping; otherwise the one line that says why not."""
    missing = missing_socket()
    if missing is not None:
        return missing  # no need to wait for a client to find that out
    try:
        client = make_client(docker_host(), min(settings.docker_timeout_s, PING_TIMEOUT_S))
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return docker_problem(exc)
    return None
