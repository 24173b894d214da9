"""The notification hook: every warning, stop/removal notice and admin alert as one JSON document,
handed to an admin-configured command (on its stdin) and/or POSTed to a webhook URL.

Owns delivery off the action path. The executors call :meth:`NotificationHook.submit`, which only
puts the document on a bounded in-memory queue (:data:`QUEUE_MAX` documents; when full the oldest
is dropped and that is recorded) and returns at once; one worker thread delivers. A delivery has a
timeout (``hookTimeout``; a command that does not finish in time is killed with its whole process
group). A failure is recorded (a ``controller.notification_failed`` event and the
``ds01_notification_hook_failures_total`` counter) and retried with exponential back-off
(:data:`RETRY_BASE_S` doubling up to :data:`RETRY_CAP_S`, :data:`MAX_ATTEMPTS` attempts in all).
The queue lives in memory: documents still waiting when the daemon stops are lost (the event log
keeps every warning, stop and alert regardless).

In dry-run the executors submit with ``dry_run=True``: such documents are dropped unless the
admin set ``notifications.dryRunNotices``. The command runs without a shell, with a small fixed
environment; the document is the only input. Never raises into its caller.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from loguru import logger

from controller.act.events import EventLog, EventType
from controller.act.sanitize import clean
from desired_state.policy_set import PolicySet
from desired_state.resolve import global_value

QUEUE_MAX: Final = 1000
MAX_ATTEMPTS: Final = 5
RETRY_BASE_S: Final = 5.0
RETRY_CAP_S: Final = 300.0
DEFAULT_TIMEOUT_S: Final = 10.0
_HOOK_ENV: Final = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class HookConfig:
    """The ``notifications`` policy keys: where documents go, how long one may take."""

    command: tuple[str, ...] = ()
    url: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    dry_run_notices: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.command) or bool(self.url)

    def transports(self) -> list[str]:
        return (["command"] if self.command else []) + (["url"] if self.url else [])


def hook_config(policy: PolicySet) -> HookConfig:
    """The hook's settings from a policy set (``spec.notifications``, the admin's layer over the built-in)."""
    command = global_value(policy, ("notifications", "hook_command")).value
    url = global_value(policy, ("notifications", "hook_url")).value
    timeout_s = global_value(policy, ("notifications", "hook_timeout")).value
    dry_run = global_value(policy, ("notifications", "dry_run_notices")).value
    return HookConfig(
        command=tuple(command or ()),
        url=url or None,
        timeout_s=float(timeout_s) if timeout_s else DEFAULT_TIMEOUT_S,
        dry_run_notices=bool(dry_run),
    )


@dataclass(order=True)
class _Item:
    due_s: float
    seq: int
    transport: str = field(compare=False)
    body: bytes = field(compare=False)
    summary: dict[str, Any] = field(compare=False)
    attempt: int = field(compare=False, default=1)


class HookError(Exception):
    """One delivery failed (exit status, HTTP status, timeout, unreachable)."""


class NotificationHook:
    """Delivers documents to the configured command and URL from a worker thread."""

    def __init__(
        self,
        config: HookConfig,
        *,
        event_log: EventLog | None = None,
        on_failure: Callable[[str], None] | None = None,
        on_delivered: Callable[[str], None] | None = None,
        retry_base_s: float = RETRY_BASE_S,
        retry_cap_s: float = RETRY_CAP_S,
        max_attempts: int = MAX_ATTEMPTS,
        queue_max: int = QUEUE_MAX,
    ) -> None:
        self.config = config
        self._events = event_log
        self._on_failure = on_failure
        self._on_delivered = on_delivered
        self._retry_base_s = retry_base_s
        self._retry_cap_s = retry_cap_s
        self._max_attempts = max_attempts
        self._queue_max = queue_max
        self._heap: list[_Item] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    # --- the caller's side: never blocks ----------------------------------------------------
    def submit(self, document: Mapping[str, Any], *, dry_run: bool = False) -> bool:
        """Queue ``document`` for every configured transport; False when nothing was queued."""
        config = self.config
        if not config.enabled or (dry_run and not config.dry_run_notices) or self._closed:
            return False
        doc = {**document, "dry_run": dry_run}
        try:
            body = json.dumps(doc, default=str, ensure_ascii=False).encode("utf-8", errors="replace")
        except (TypeError, ValueError) as exc:  # a value json cannot take: record, never raise
            logger.warning("notification hook: document not serialisable: {}", exc)
            return False
        summary = {k: doc.get(k) for k in ("kind", "reason", "owner", "container")}
        with self._cond:
            for transport in config.transports():
                if len(self._heap) >= self._queue_max:
                    dropped = heapq.nsmallest(1, self._heap, key=lambda i: i.seq)[0]
                    self._heap.remove(dropped)
                    heapq.heapify(self._heap)
                    self._record_failure(dropped, "queue full: the oldest document was dropped", None)
                heapq.heappush(self._heap, _Item(time.monotonic(), next(self._seq), transport, body, summary))
            self._ensure_worker()
            self._cond.notify_all()
        return True

    def flush(self, timeout_s: float) -> bool:
        """Wait until nothing is queued or being delivered (tests, shutdown); True if drained."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._heap or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def close(self, timeout_s: float = 2.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # --- the worker -------------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="ds01-notification-hook", daemon=True)
            self._thread.start()

    def _next(self) -> _Item | None:
        with self._cond:
            while not self._closed:
                if self._heap:
                    wait_s = self._heap[0].due_s - time.monotonic()
                    if wait_s <= 0:
                        self._busy = True
                        return heapq.heappop(self._heap)
                    self._cond.wait(wait_s)
                else:
                    self._cond.wait(1.0)
            return None

    def _run(self) -> None:
        while (item := self._next()) is not None:
            try:
                self._deliver(item)
            except Exception as exc:  # the worker must outlive any one document
                logger.opt(exception=exc).error("notification hook: unexpected error")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _deliver(self, item: _Item) -> None:
        config = self.config
        try:
            if item.transport == "command":
                run_command(config.command, item.body, config.timeout_s)
            else:
                post_url(config.url or "", item.body, config.timeout_s)
        except HookError as err:
            retry_in = None
            if item.attempt < self._max_attempts:
                retry_in = min(self._retry_cap_s, self._retry_base_s * 2 ** (item.attempt - 1))
                item.attempt += 1
                item.due_s = time.monotonic() + retry_in
                with self._cond:
                    heapq.heappush(self._heap, item)
            self._record_failure(item, str(err), retry_in)
            return
        if self._on_delivered is not None:
            self._on_delivered(item.transport)

    def _record_failure(self, item: _Item, error: str, retry_in_s: float | None) -> None:
        logger.warning(
            "notification hook ({}) failed: {}{}",
            item.transport,
            clean(error, 300),
            f"; retry in {retry_in_s:.0f}s" if retry_in_s is not None else "; given up",
        )
        if self._on_failure is not None:
            self._on_failure(item.transport)
        if self._events is not None:
            self._events.write(
                EventType.NOTIFICATION_FAILED,
                user=item.summary.get("owner") if isinstance(item.summary.get("owner"), str) else None,
                details={
                    **item.summary,
                    "transport": item.transport,
                    "error": error,
                    "attempt": item.attempt - (1 if retry_in_s is not None else 0),
                    "retry_in_s": retry_in_s,
                    "gave_up": retry_in_s is None,
                },
            )


def run_command(argv: Sequence[str], body: bytes, timeout_s: float) -> None:
    """Run the hook command with ``body`` on stdin; raise :class:`HookError` unless it exits 0 in time."""
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=dict(_HOOK_ENV),
                cwd="/",
                close_fds=True,
                start_new_session=True,  # its own process group: a timeout kills everything it started
            )
        except OSError as exc:
            raise HookError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from exc
        try:
            proc.communicate(body, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise HookError(f"timed out after {timeout_s:g}s (killed)") from None
        except BrokenPipeError:
            proc.wait(timeout=timeout_s)  # it exited without reading: its status decides
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read()[-300:].decode("utf-8", errors="replace").strip()
            raise HookError(f"exit status {proc.returncode}" + (f": {tail}" if tail else ""))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def post_url(url: str, body: bytes, timeout_s: float) -> None:
    """POST ``body`` as JSON; raise :class:`HookError` unless the answer is 2xx in time."""
    if not url.startswith(("http://", "https://")):
        raise HookError("the webhook URL must be http:// or https://")
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked just above
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "ds01-controller"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - scheme checked
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        raise HookError(f"HTTP {exc.code} from the webhook") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HookError(f"webhook unreachable: {reason}") from None
    if not 200 <= status < 300:
        raise HookError(f"HTTP {status} from the webhook")


def hook_document(
    *,
    kind: str,
    owner: str | None,
    container: str | None,
    container_id: str | None,
    reason: str,
    message: str,
    figures: Mapping[str, Any],
    stop_at: str | None,
    at: str,
    host: str | None = None,
) -> dict[str, Any]:
    """The one JSON document every receiver gets (``dry_run`` is added by :meth:`NotificationHook.submit`)."""
    return {
        "kind": kind,
        "owner": owner,
        "container": container,
        "container_id": container_id,
        "reason": reason,
        "message": message,
        "figures": dict(figures),
        "stop_at": stop_at,
        "at": at,
        "host": host or os.uname().nodename,
    }
