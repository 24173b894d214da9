"""Assemble one :class:`~controller.snapshot.Snapshot` of the host: Docker, NVML, procfs, ledger.

Owns :class:`ObserveConfig`, :class:`HostObserver` (long-lived; the daemon keeps one and calls
:meth:`HostObserver.invalidate` on Docker events) and :func:`observe_host` (one-shot, for
``ds01ctl`` and ``python -m controller.observe``).

One pass: NVML first (its device list resolves the containers' GPU references), then Docker (one
list call, inspects only for what changed; see :mod:`controller.observe.docker_adapter`), then each
running container's main process (uid for ownership, activity signals), then NVML's compute
processes (attributed through their cgroups), then the ledger. Each domain's failure is recorded in
``Snapshot.health`` and never raised: a Docker engine that is down gives ``containers=()`` with the
DOCKER domain unavailable, which the planner must not read as "no containers" (nor read a GPU
process's ``container_exists=False`` as "its container is gone").

Called by the daemon loop and the CLI. It reads only; it must not change anything on the host.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from controller.observe.cgroups import DEFAULT_ENGINE_PARENTS, container_ids_in_path, parse_cgroup
from controller.observe.classify import Classification, classify
from controller.observe.docker_adapter import (
    DEFAULT_MAX_AGE_S,
    CallCounter,
    DockerContainer,
    DockerObserver,
    make_client,
)
from controller.observe.engine import DEFAULT_DOCKER_PIDFILE, engine_started_at, host_booted_at
from controller.observe.gpu_refs import resolve_gpu_refs
from controller.observe.keepalive import read_keepalive, validate_keepalive_path
from controller.observe.keepalive_reads import KeepAliveReads, KeepAliveRequest
from controller.observe.ledger import DEFAULT_LEDGER_PATH, DEFAULT_LOCK_TIMEOUT_S, read_ledger
from controller.observe.procfs import (
    DEFAULT_SYSTEM_PROCESS_NAMES,
    ProcessGone,
    ProcHandle,
    ProcReader,
    attribute_gpu_processes,
    parse_status_uid,
    uid_to_name_cached,
)
from controller.observe.signals import SignalConfig, gpu_util_readings, read_signals, unknown_signals
from controller.snapshot import (
    LIVE_STATES,
    ActivitySignals,
    ContainerObs,
    ContainerState,
    Domain,
    DomainHealth,
    GpuObs,
    GpuRef,
    GpuUtilReading,
    GpuUuid,
    KeepAlive,
    KeepAliveState,
    Snapshot,
)
from desired_state.effective import GlobalPolicy

DEFAULT_KEEPALIVE_PATH = "/workspace/.keep-alive"


class NvmlLike(Protocol):
    """What the observer needs from NVML (``controller.observe.nvml.NvmlObserver`` or a stand-in)."""

    def observe(self) -> tuple[tuple[GpuObs, ...], DomainHealth]: ...


class ObserveConfig(BaseModel):
    """Settings of the observation layer; every field has a safe default for a DS01 host."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    docker_base_url: str | None = Field(
        default=None, description="Engine URL (unix:///var/run/docker.sock); None reads DOCKER_HOST"
    )
    docker_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of every Docker request")
    inspect_max_age_s: float = Field(
        default=DEFAULT_MAX_AGE_S, gt=0, description="Re-inspect a cached container at least this often"
    )
    nvml_timeout_s: float = Field(default=10.0, gt=0, description="Deadline of one NVML observation")
    docker_pidfile: Path = Field(
        default=DEFAULT_DOCKER_PIDFILE,
        description="The engine's pidfile: its start time tells restarts apart",
    )
    ledger_path: Path = DEFAULT_LEDGER_PATH
    ledger_lock_timeout_s: float = Field(default=DEFAULT_LOCK_TIMEOUT_S, gt=0)
    keepalive_path: str = DEFAULT_KEEPALIVE_PATH
    proc_root: Path = Path("/proc")
    cgroup_root: Path = Path("/sys/fs/cgroup")
    system_process_names: tuple[str, ...] = DEFAULT_SYSTEM_PROCESS_NAMES
    engine_cgroup_parents: tuple[str, ...] = Field(
        default=DEFAULT_ENGINE_PARENTS,
        description="--cgroup-parent values of this engine's containers (besides Docker's defaults)",
    )
    use_openat2: bool | None = Field(
        default=None, description="None: openat2 where the kernel has it; False: always walk components"
    )

    @field_validator("keepalive_path")
    @classmethod
    def _keepalive_inside_container(cls, value: str) -> str:
        return validate_keepalive_path(value)


class _NoNvml:
    """Stands in when the NVML adapter cannot even be constructed; reports why, every pass."""

    def __init__(self, error: str) -> None:
        self.error = error

    def observe(self) -> tuple[tuple[GpuObs, ...], DomainHealth]:
        return (), DomainHealth(domain=Domain.NVML, ok=False, error=self.error)


def container_obs(
    c: DockerContainer,
    verdict: Classification,
    refs: tuple[GpuRef, ...],
    signals: ActivitySignals | None,
    running_for_s: float | None,
) -> ContainerObs:
    """One container's observation from its inspect, DS01 classification, resolved GPU references
    and signals (the simulator in tests builds its snapshots through this too)."""
    return ContainerObs(
        id=c.id,
        name=c.name,
        image=c.image,
        labels=c.labels,
        state=c.state,
        created_at=c.created_at,
        started_at=c.started_at,
        finished_at=c.finished_at,
        pid=c.pid,
        restart_count=c.restart_count,
        exit_code=c.exit_code,
        cgroup_parent=c.cgroup_parent,
        owner=verdict.owner,
        owner_rule=verdict.owner_rule,
        container_type=verdict.container_type,
        type_rule=verdict.type_rule,
        managed=verdict.managed,
        protected_label=verdict.protected,
        monitoring_label=verdict.monitoring,
        gpu_refs=refs,
        all_gpus=c.gpu_refs.all_gpus,
        signals=signals,
        running_for_s=running_for_s,
        limits=c.limits,
        workspace_mounted=c.workspace_mounted,
    )


class HostObserver:
    """Observes the host once per :meth:`observe`; keeps the Docker client and inspect cache between."""

    def __init__(self, config: ObserveConfig, nvml: NvmlLike | None = None) -> None:
        self.config = config
        self.counter = CallCounter()
        self._docker = DockerObserver(
            lambda: make_client(config.docker_base_url, config.docker_timeout_s),
            max_age_s=config.inspect_max_age_s,
            counter=self.counter,
        )
        self._nvml: NvmlLike = nvml if nvml is not None else _default_nvml(config.nvml_timeout_s)
        self._observe_lock = threading.Lock()
        # Kept between passes: a read blocked on a hung filesystem is remembered, not started again.
        # The reads take the config as it is when they run: a policy reload may move keepalivePath.
        self.keepalive_reads = KeepAliveReads(self._read_keepalive)

    def _read_keepalive(self, req: KeepAliveRequest) -> KeepAlive:
        config = self.config
        return read_keepalive_of(config.proc_root, config.keepalive_path, config.use_openat2, req)

    @property
    def docker(self) -> Any:
        """The Docker client (``docker.DockerClient``), for the executor to reuse.

        Created on first use; raises ``docker.errors.DockerException`` when the engine is unreachable.
        """
        return self._docker.client

    def export_inspect_cache(self) -> bytes:
        """The inspect cache, for the daemon to save (see :mod:`controller.store`)."""
        return self._docker.export_cache()

    def import_inspect_cache(self, data: bytes) -> int:
        """Start from a saved inspect cache (``ds01ctl``); entries are re-validated like any other."""
        return self._docker.import_cache(data)

    def invalidate(self, container_id: str | None = None) -> None:
        """Re-inspect this container (id or id prefix) on the next pass; None: every container."""
        self._docker.invalidate(container_id)

    def close(self) -> None:
        self._docker.close()
        self.close_nvml()

    def close_nvml(self) -> None:
        """Shut this process's NVML session down; the next observation opens a new one. A GPU
        reset (``nvidia-smi -r``) refuses a GPU that another NVML client holds open."""
        close = getattr(self._nvml, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> HostObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def observe(self, now: datetime | None = None) -> Snapshot:
        with self._observe_lock:
            if now is not None:
                return self._observe(now, None)  # a given time has no monotonic reading to pair with
            # Read together: the planner tells a wall-clock step from real time by their difference.
            return self._observe(datetime.now(UTC), time.monotonic())

    def _observe(self, now: datetime, monotonic_s: float | None) -> Snapshot:
        calls_before = self.counter.count
        health: dict[Domain, DomainHealth] = {}

        started = time.monotonic()
        try:
            gpus, nvml_health = self._nvml.observe()
        except Exception as exc:  # a stand-in or future adapter must not break the pass
            gpus, nvml_health = (
                (),
                DomainHealth(domain=Domain.NVML, ok=False, error=f"{type(exc).__name__}: {exc}"),
            )
        if nvml_health.duration_s == 0.0:
            nvml_health = nvml_health.model_copy(update={"duration_s": time.monotonic() - started})
        health[Domain.NVML] = nvml_health
        resolvable: Sequence[GpuObs] | None = gpus if nvml_health.ok else None

        started = time.monotonic()
        observation = self._docker.observe()
        health[Domain.DOCKER] = DomainHealth(
            domain=Domain.DOCKER,
            ok=observation.error is None,
            error=observation.error,
            duration_s=time.monotonic() - started,
        )

        started = time.monotonic()
        uid_to_name = uid_to_name_cached()
        reader = ProcReader(self.config.proc_root, uid_to_name, self.config.system_process_names)
        signal_config = SignalConfig(
            cgroup_root=self.config.cgroup_root,
            proc_root=self.config.proc_root,
            keepalive_path=self.config.keepalive_path,
            use_openat2=self.config.use_openat2,
        )
        # The keep-alive files are read after the listing, in one batch with a deadline (a hung
        # filesystem under a workspace must not stall the pass): each running container read leaves
        # a request here.
        keepalive_requests: list[KeepAliveRequest] = []
        containers = [
            self._container(c, resolvable, nvml_health.error, reader, signal_config, keepalive_requests)
            for c in observation.containers
        ]
        _with_keepalives(containers, keepalive_requests, self.keepalive_reads)
        existing = {c.id for c in containers}
        live = {c.id for c in containers if c.state in LIVE_STATES}
        processes, proc_errors = attribute_gpu_processes(
            gpus, existing, reader, self.config.engine_cgroup_parents, live
        )
        proc_problems = [e for e in (reader.health_error(), *proc_errors) if e]
        health[Domain.PROCFS] = DomainHealth(
            domain=Domain.PROCFS,
            ok=not proc_problems,
            error="; ".join(proc_problems) or None,
            duration_s=time.monotonic() - started,
        )

        started = time.monotonic()
        ledger = read_ledger(self.config.ledger_path, resolvable, self.config.ledger_lock_timeout_s)
        health[Domain.LEDGER] = DomainHealth(
            domain=Domain.LEDGER,
            ok=ledger.error is None,
            error=ledger.error,
            duration_s=time.monotonic() - started,
        )

        return Snapshot(
            observed_at=now,
            observed_monotonic_s=monotonic_s,
            health=tuple(health[d] for d in (Domain.DOCKER, Domain.NVML, Domain.PROCFS, Domain.LEDGER)),
            containers=tuple(containers),
            gpus=tuple(gpus),
            processes=processes,
            ledger=ledger,
            docker_api_calls=self.counter.count - calls_before,
            engine_started_at=engine_started_at(self.config.docker_pidfile, self.config.proc_root),
            host_booted_at=host_booted_at(self.config.proc_root),
            host_cpus=_host_cpus(),
        )

    def _container(
        self,
        c: DockerContainer,
        gpus: Sequence[GpuObs] | None,
        nvml_error: str | None,
        reader: ProcReader,
        signal_config: SignalConfig,
        keepalive_requests: list[KeepAliveRequest],
    ) -> ContainerObs:
        refs = resolve_gpu_refs(c.gpu_refs, gpus)
        main_uid: int | None = None
        signals: ActivitySignals | None = None
        running_for_s: float | None = None
        if c.state == ContainerState.RUNNING:
            uuids = _device_uuids(refs, c.gpu_refs.all_gpus, gpus)
            util = gpu_util_readings(uuids, gpus, nvml_error)
            main_uid, signals, running_for_s = self._main_process(c, reader, signal_config, util)
        verdict = classify(c.name, c.labels, main_uid, reader.uid_to_name)
        if signals is not None and signals.keepalive is KEEPALIVE_NOT_READ and c.pid is not None:
            # Read after the listing, with a deadline (_with_keepalives), by its owner's name.
            keepalive_requests.append(KeepAliveRequest(c.id, verdict.owner, c.pid))
        return container_obs(c, verdict, refs, signals, running_for_s)

    def _main_process(
        self,
        c: DockerContainer,
        reader: ProcReader,
        signal_config: SignalConfig,
        util: tuple[GpuUtilReading, ...],
    ) -> tuple[int | None, ActivitySignals, float | None]:
        if c.pid is None:
            return None, unknown_signals("the engine reports no main process"), None
        try:
            with ProcHandle(reader.proc_root, c.pid) as handle:
                cgroup_text = handle.read_text("cgroup")
                # The cached pid can be stale (a restart not seen yet) and then reused by another
                # process: only read through it if its cgroup still names this container.
                if not _names_container(cgroup_text, c.id):
                    return None, unknown_signals(f"pid {c.pid} no longer belongs to the container"), None
                uid = parse_status_uid(handle.read_text("status"))
                signals = read_signals(
                    handle,
                    cgroup_text,
                    signal_config,
                    network_mode=c.network_mode,
                    gpu_util=util,
                    container_id=c.id,
                    keepalive=KEEPALIVE_NOT_READ,  # read after the listing: _with_keepalives
                )
                return uid, signals, reader.running_for_s(handle)
        except ProcessGone as exc:
            return None, unknown_signals(f"main process gone: {exc}"), None
        except OSError as exc:
            return None, unknown_signals(f"cannot read the main process: {exc}"), None


KEEPALIVE_NOT_READ = KeepAlive(state=KeepAliveState.UNKNOWN, detail="not read")


def _with_keepalives(
    containers: list[ContainerObs], requests: list[KeepAliveRequest], reads: KeepAliveReads
) -> None:
    """Each requested container's keep-alive, read in one batch with a deadline."""
    if not requests:
        return
    found = reads.read_all(requests)
    where: dict[str, int] = {c.id: i for i, c in enumerate(containers)}
    for req, keepalive in zip(requests, found, strict=True):
        i = where[req.container_id]
        c = containers[i]
        if c.signals is not None:
            signals = c.signals.model_copy(update={"keepalive": keepalive})
            containers[i] = c.model_copy(update={"signals": signals})


def read_keepalive_of(
    proc_root: Path, path: str, use_openat2: bool | None, req: KeepAliveRequest
) -> KeepAlive:
    """One container's keep-alive, through its main process opened here: only while the process's
    cgroup still names the container (a pid reused since the listing is another process)."""
    try:
        with ProcHandle(proc_root, req.pid) as handle:
            if not _names_container(handle.read_text("cgroup"), req.container_id):
                return KeepAlive(
                    state=KeepAliveState.UNKNOWN, detail=f"pid {req.pid} no longer belongs to the container"
                )
            return read_keepalive(handle.fd, path, use_openat2=use_openat2)
    except ProcessGone as exc:
        return KeepAlive(state=KeepAliveState.UNKNOWN, detail=f"main process gone: {exc}")
    except OSError as exc:
        return KeepAlive(state=KeepAliveState.UNKNOWN, detail=f"cannot read the main process: {exc}")


def with_policy(config: ObserveConfig, gp: GlobalPolicy) -> ObserveConfig:
    """``config`` with the settings the policy decides: the daemon's observer, its reloads and
    ds01ctl's own observation all take them from here (ds01ctl once read another keep-alive path
    than the daemon, and planned idle stops the daemon never made)."""
    return config.model_copy(
        update={
            "system_process_names": gp.system_process_names.value,
            "engine_cgroup_parents": gp.engine_cgroup_parents.value,
            "keepalive_path": gp.host_keepalive_path.value,
        }
    )


def observe_host(config: ObserveConfig | None = None, nvml: NvmlLike | None = None) -> Snapshot:
    """One snapshot with a fresh observer (no cache): for one-shot callers."""
    with HostObserver(config or ObserveConfig(), nvml) as observer:
        return observer.observe()


def _names_container(cgroup_text: str, container_id: str) -> bool:
    # A full 64-digit id found anywhere in the paths is that container's cgroup or one below it:
    # told without parsing them (the parse was a third of a keep-alive read, and runs for every
    # running container on every pass). A shorter id is only a parsed component's.
    if len(container_id) == 64 and container_id in cgroup_text:
        return True
    return any(container_id in container_ids_in_path(line.path) for line in parse_cgroup(cgroup_text))


def _device_uuids(refs: Sequence[GpuRef], all_gpus: bool, gpus: Sequence[GpuObs] | None) -> list[GpuUuid]:
    uuids = list(dict.fromkeys(r.uuid for r in refs if r.uuid is not None))
    if all_gpus and gpus is not None:
        for gpu in gpus:
            if gpu.uuid not in uuids:
                uuids.append(gpu.uuid)
    return uuids


def _host_cpus() -> int | None:
    """The CPUs this host offers (as dockerd counts them: the CPUs it may run on)."""
    try:
        return len(os.sched_getaffinity(0)) or None
    except (AttributeError, OSError):
        return os.cpu_count()


def _default_nvml(timeout_s: float) -> NvmlLike:
    try:
        from controller.observe.nvml import NvmlObserver
    except Exception as exc:  # pynvml missing or broken: NVML is unavailable, not fatal
        return _NoNvml(f"the NVML adapter cannot be loaded: {type(exc).__name__}: {exc}")
    return NvmlObserver(timeout_s=timeout_s)
