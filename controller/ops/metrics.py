"""Prometheus metrics for the controller, on a registry of its own, and the HTTP endpoint serving them.

Owns: every ``ds01_*`` metric name, its labels and its meaning (``docs/operations.md`` lists them;
``deploy/prometheus/ds01-alerts.yml`` and ``deploy/grafana/ds01-dashboard.json`` are checked
against this module by the tests).
Called by: the daemon loop, once per pass (:meth:`Metrics.observe_pass`) and once per executed
action (:meth:`Metrics.record_action`), and at start-up (:meth:`Metrics.serve`).
Must not: touch the global ``prometheus_client.REGISTRY`` (tests and embedders create several
``Metrics``), read the world itself, or put unbounded user-controlled text in a label.

Per-pass state (containers, GPUs, orphans, domain health, breaker) is kept as one immutable value
and rendered by a collector at scrape time, so a scrape never sees half of one pass and half of the
next. A value that was not known in a pass (``None``) is not exported at all: unknown is not zero.
"""

from __future__ import annotations

import errno
import platform
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from importlib import metadata
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

DEFAULT_METRICS_HOST: Final = "127.0.0.1"
DEFAULT_METRICS_PORT: Final = 9108
PACKAGE_NAME: Final = "ds01-controller"

# Label keys, in one place.
LABEL_DOMAIN: Final = "domain"
LABEL_KIND: Final = "kind"
LABEL_REASON: Final = "reason"
LABEL_OUTCOME: Final = "outcome"
LABEL_STATE: Final = "state"
LABEL_TYPE: Final = "type"
LABEL_GPU: Final = "gpu"

MAX_LABEL_CHARS: Final = 64
UNKNOWN_LABEL: Final = "unknown"

# Passes range from tens of milliseconds (a quiet host) to minutes (a slow Docker engine).
PASS_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OBSERVE_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class GpuState(StrEnum):
    """The ``state`` label of ``ds01_gpus``. Disjoint: each GPU (or MIG device) is counted once."""

    HELD = "held"  # held by a container that is not known to be idle
    IDLE_HELD = "idle-held"  # held by a container judged idle
    FREE = "free"  # held by no container


class PassOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class MetricsError(Exception):
    """Base of the errors this module raises."""


class MetricsBindError(MetricsError):
    """The metrics endpoint could not listen on the requested address and port."""


def clean_label(value: object, max_chars: int = MAX_LABEL_CHARS) -> str:
    """A label value safe to export: printable, one line, bounded length, never empty.

    Enum members give their value. Anything else (a GPU UUID, a domain name) is flattened so that a
    hostile or broken value cannot bloat the exposition or smuggle control characters into it.
    """
    text = value.value if isinstance(value, StrEnum) else str(value)
    flat = "".join(ch if ch.isprintable() else "?" for ch in text).strip()
    if not flat:
        return UNKNOWN_LABEL
    if len(flat) > max_chars:
        flat = flat[: max_chars - 1] + "…"
    return flat


@dataclass(frozen=True)
class _PassState:
    """What the last pass saw; rendered at scrape time by :class:`_PassStateCollector`."""

    containers: Mapping[tuple[str, str], int] | None = None
    gpus: Mapping[str, int] | None = None
    gpu_idle_held_s: Mapping[str, float] | None = None
    orphans: int | None = None
    domains_up: Mapping[str, bool] = field(default_factory=dict)
    breaker_tripped: bool | None = None
    last_success_epoch: float = 0.0


class _PassStateCollector(Collector):
    def __init__(self) -> None:
        self.state = _PassState()

    def describe(self) -> Iterable[Metric]:
        return list(self._families(_PassState()))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self.state))

    @staticmethod
    def _families(s: _PassState) -> Iterator[Metric]:
        containers = GaugeMetricFamily(
            "ds01_containers",
            "Containers seen in the last pass, by Docker state and DS01 container type",
            labels=[LABEL_STATE, LABEL_TYPE],
        )
        for (state, ctype), count in sorted((s.containers or {}).items()):
            containers.add_metric([state, ctype], count)
        yield containers

        gpus = GaugeMetricFamily(
            "ds01_gpus",
            "GPUs and MIG devices by hold state in the last pass (held, idle-held, free; disjoint)",
            labels=[LABEL_STATE],
        )
        for state, count in sorted((s.gpus or {}).items()):
            gpus.add_metric([state], count)
        yield gpus

        idle_held = GaugeMetricFamily(
            "ds01_gpu_idle_held_seconds",
            "How long each idle-held GPU or MIG device has been held by an idle container",
            labels=[LABEL_GPU],
        )
        for gpu, seconds in sorted((s.gpu_idle_held_s or {}).items()):
            idle_held.add_metric([gpu], seconds)
        yield idle_held

        orphans = GaugeMetricFamily(
            "ds01_orphan_processes", "GPU processes whose container is gone, seen in the last pass"
        )
        if s.orphans is not None:
            orphans.add_metric([], s.orphans)
        yield orphans

        domain_up = GaugeMetricFamily(
            "ds01_domain_up",
            "1 if the observation domain (docker, nvml, procfs, ledger) was readable in the last pass",
            labels=[LABEL_DOMAIN],
        )
        for domain, ok in sorted(s.domains_up.items()):
            domain_up.add_metric([domain], 1.0 if ok else 0.0)
        yield domain_up

        breaker = GaugeMetricFamily(
            "ds01_breaker_tripped", "1 while the circuit breaker holds back destructive actions"
        )
        if s.breaker_tripped is not None:
            breaker.add_metric([], 1.0 if s.breaker_tripped else 0.0)
        yield breaker

        last_success = GaugeMetricFamily(
            "ds01_last_successful_pass_timestamp_seconds",
            "Unix time the last pass completed successfully; 0 until the first one",
        )
        last_success.add_metric([], s.last_success_epoch)
        yield last_success


class MetricsServer:
    """A running metrics endpoint. ``close()`` stops it and frees the port."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        address = httpd.server_address
        self.host: str = str(address[0])
        self.port: int = int(address[1])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _package_version() -> str:
    try:
        return metadata.version(PACKAGE_NAME)
    except metadata.PackageNotFoundError:
        return UNKNOWN_LABEL


# AlertAdmin's reasons (controller.plan.types.Reason values; ops may not import the planner).
ALERT_ADMIN_KIND: Final = "AlertAdmin"
ADMIN_ALERT_REASONS: Final = (
    "DuplicateGpuHolder",
    "ForeignProcessOnGpu",
    "GpuDirty",
    "BreakerTripped",
    "LedgerUnreadable",
)


class Metrics:
    """The controller's metrics. One instance per daemon; every instance has its own registry."""

    def __init__(self, *, version: str | None = None, now_epoch: float | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._lock = threading.Lock()

        self._pass_duration = Histogram(
            "ds01_pass_duration_seconds",
            "Wall time of one reconcile pass (observe, plan, act)",
            buckets=PASS_BUCKETS_S,
            registry=r,
        )
        self._passes = Counter(
            "ds01_passes", "Reconcile passes by outcome", labelnames=[LABEL_OUTCOME], registry=r
        )
        self._observe_duration = Histogram(
            "ds01_observe_duration_seconds",
            "Wall time spent observing one domain in one pass",
            labelnames=[LABEL_DOMAIN],
            buckets=OBSERVE_BUCKETS_S,
            registry=r,
        )
        self._actions = Counter(
            "ds01_actions",
            "Actions the executor handled, by kind, reason and outcome",
            labelnames=[LABEL_KIND, LABEL_REASON, LABEL_OUTCOME],
            registry=r,
        )
        self._admin_alerts = Counter(
            "ds01_admin_alerts",
            "AlertAdmin actions delivered (journal and event log), by reason: each needs an admin",
            labelnames=[LABEL_REASON],
            registry=r,
        )
        for reason in ADMIN_ALERT_REASONS:
            self._admin_alerts.labels(reason)  # zeros from the start, so increase() sees the first one
        self._open_alerts = Gauge(
            "ds01_admin_alerts_open",
            "Admin alerts open now, by reason: raised by the last pass's observation and not cleared",
            labelnames=[LABEL_REASON],
            registry=r,
        )
        for reason in ADMIN_ALERT_REASONS:
            self._open_alerts.labels(reason).set(0)
        self._hook_failures = Counter(
            "ds01_notification_hook_failures",
            "Failed deliveries of the notification hook, by transport (command, url); each is retried",
            labelnames=["transport"],
            registry=r,
        )
        for transport in ("command", "url"):
            self._hook_failures.labels(transport)
        self._reclaimed = Counter(
            "ds01_idle_gpu_seconds_reclaimed",
            "GPU-seconds that stopped idle containers had been holding their GPUs while idle",
            registry=r,
        )
        self._gpu_reclaimed = Counter(
            "ds01_gpu_seconds_reclaimed",
            "GPU-seconds given back by the controller's stops and removals: time a freed GPU was seen "
            "free until it was next taken (GPU equivalents; ds01ctl report's definition)",
            labelnames=[LABEL_REASON],
            registry=r,
        )
        # Resource limits and quotas (docs/policy.md#resource-limits-and-quotas).
        self._over_spec = Gauge(
            "ds01_containers_over_spec",
            "Containers whose CPU, memory, swap or pids limit was unset or above their owner's (last pass)",
            registry=r,
        )
        self._over_quota = Gauge(
            "ds01_users_over_quota",
            "Owners over their container or GPU-equivalents quota in the last pass",
            registry=r,
        )
        self._brought_under = Counter(
            "ds01_memory_brought_under_limits_bytes",
            "Memory in use by containers when a memory limit was set or lowered on them (docker update)",
            registry=r,
        )
        self._record_writable = Gauge(
            "ds01_record_writable",
            "1 while the event log and the memory file can be written; 0: no destructive action runs",
            registry=r,
        )
        self._record_writable.set(1)
        self._quarantined = Gauge(
            "ds01_state_quarantined_timestamp_seconds",
            "Unix time a corrupt or unreadable state file was moved aside at start (by file name)",
            labelnames=["file"],
            registry=r,
        )
        start = Gauge(
            "ds01_controller_start_time_seconds", "Unix time this controller process started", registry=r
        )
        start.set(time.time() if now_epoch is None else now_epoch)
        Info("ds01_build", "Version of the running controller", registry=r).info(
            {"version": clean_label(version or _package_version()), "python": platform.python_version()}
        )
        self._state_collector = _PassStateCollector()
        r.register(self._state_collector)
        # Process CPU, memory, open fds: the daemon's own health, next to the host's.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        for outcome in PassOutcome:
            self._passes.labels(outcome.value)  # export zeros so rate() works from the first pass

    def observe_pass(
        self,
        duration_s: float,
        snapshot_health: Sequence[tuple[str, bool, float]],
        containers_by_state_type: Mapping[tuple[str, str], int] | None,
        gpus_by_state: Mapping[str, int] | None,
        orphans: int | None,
        breaker_tripped: bool,
        succeeded: bool,
        now_epoch: float,
        gpu_idle_held_s: Mapping[str, float] | None = None,
    ) -> None:
        """Record one finished pass (successful or not).

        ``snapshot_health``: ``(domain, ok, duration_s)`` per observed domain, e.g. from
        ``Snapshot.health``. A domain reported in an earlier pass but missing now is exported as down.
        ``containers_by_state_type``, ``gpus_by_state``, ``orphans``, ``gpu_idle_held_s``: ``None``
        when not known in this pass (e.g. Docker or NVML unreadable): their series disappear instead
        of reading zero. ``gpus_by_state`` keys are :class:`GpuState` values; missing ones export 0.
        """
        self._pass_duration.observe(max(duration_s, 0.0))
        self._passes.labels((PassOutcome.SUCCEEDED if succeeded else PassOutcome.FAILED).value).inc()
        with self._lock:
            previous = self._state_collector.state
            domains_up = dict.fromkeys(previous.domains_up, False)
            for domain, ok, observe_s in snapshot_health:
                name = clean_label(domain)
                domains_up[name] = bool(ok)
                self._observe_duration.labels(name).observe(max(observe_s, 0.0))
            containers: dict[tuple[str, str], int] | None = None
            if containers_by_state_type is not None:
                containers = {}
                for (state, ctype), count in containers_by_state_type.items():
                    key = (clean_label(state), clean_label(ctype))
                    containers[key] = containers.get(key, 0) + int(count)
            gpus: dict[str, int] | None = None
            if gpus_by_state is not None:
                gpus = {s.value: 0 for s in GpuState}
                for state, count in gpus_by_state.items():
                    gpu_state = clean_label(state)
                    gpus[gpu_state] = gpus.get(gpu_state, 0) + int(count)
            idle_held = (
                None
                if gpu_idle_held_s is None
                else {clean_label(gpu): max(float(s), 0.0) for gpu, s in gpu_idle_held_s.items()}
            )
            self._state_collector.state = _PassState(
                containers=containers,
                gpus=gpus,
                gpu_idle_held_s=idle_held,
                orphans=None if orphans is None else int(orphans),
                domains_up=domains_up,
                breaker_tripped=bool(breaker_tripped),
                last_success_epoch=now_epoch if succeeded else previous.last_success_epoch,
            )

    def record_action(self, kind: str, reason: str, outcome: str) -> None:
        """Count one action the executor handled (enum members or their string values)."""
        self._actions.labels(clean_label(kind), clean_label(reason), clean_label(outcome)).inc()
        if (
            str(getattr(kind, "value", kind)) == ALERT_ADMIN_KIND
            and str(getattr(outcome, "value", outcome)) == "done"
        ):
            self._admin_alerts.labels(clean_label(reason)).inc()

    def set_open_alerts(self, by_reason: Mapping[str, int]) -> None:
        """The admin alerts open after a pass, by reason (a reason not given is 0)."""
        with self._lock:
            for reason in {*ADMIN_ALERT_REASONS, *by_reason}:
                self._open_alerts.labels(clean_label(reason)).set(int(by_reason.get(reason, 0)))

    def record_hook_failure(self, transport: str) -> None:
        """One failed delivery of the notification hook (command or url)."""
        self._hook_failures.labels(clean_label(transport)).inc()

    def observe_resources(self, containers_over_spec: int | None, users_over_quota: int | None) -> None:
        """The last pass's counts; None (Docker unreadable) leaves the previous values."""
        if containers_over_spec is not None:
            self._over_spec.set(containers_over_spec)
        if users_over_quota is not None:
            self._over_quota.set(users_over_quota)

    def add_memory_brought_under_limits(self, n_bytes: int) -> None:
        """Add the memory use of a container that a memory limit was just set on."""
        if n_bytes > 0:
            self._brought_under.inc(n_bytes)

    def set_record_writable(self, writable: bool) -> None:
        """Whether the last pass could write its record (event log and memory file)."""
        self._record_writable.set(1 if writable else 0)

    def record_quarantine(self, file_name: str, at: datetime) -> None:
        """A state file was moved aside at start (the name is one of the controller's own files)."""
        self._quarantined.labels(clean_label(file_name)).set(at.timestamp())

    def add_reclaimed_gpu_seconds(self, seconds: float) -> None:
        """Add the GPU-seconds a just-stopped idle container had held idle (GPUs x idle time)."""
        if seconds > 0:
            self._reclaimed.inc(seconds)

    def add_gpu_seconds_reclaimed(self, seconds: float, reason: str) -> None:
        """Add GPU-seconds a freed GPU stayed free (controller.usage.ReclaimTracker's credits)."""
        if seconds > 0:
            self._gpu_reclaimed.labels(clean_label(reason)).inc(seconds)

    def render(self) -> bytes:
        """The text exposition, as a scrape would return it."""
        return generate_latest(self.registry)

    def serve(self, host: str = DEFAULT_METRICS_HOST, port: int = DEFAULT_METRICS_PORT) -> MetricsServer:
        """Serve ``/metrics`` on a background thread. Port 0 picks a free port (see ``.port``).

        Raises :class:`MetricsBindError` with the fix when the address cannot be used.
        """
        try:
            httpd, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsBindError(_bind_error_message(host, port, exc)) from exc
        return MetricsServer(httpd, thread)


def _bind_error_message(host: str, port: int, exc: OSError) -> str:
    fix = "set DS01_METRICS_PORT or --metrics-port"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use: {fix}"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on port {port} on {host}: {fix} (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{host} is not an address of this host, cannot listen on port {port}: "
            "set DS01_METRICS_ADDR or --metrics-addr"
        )
    return (
        f"cannot listen on {host} port {port}: {exc.strerror or exc}: "
        "check DS01_METRICS_ADDR / --metrics-addr and DS01_METRICS_PORT / --metrics-port"
    )
