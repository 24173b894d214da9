"""Observed state: one frozen, typed value describing the whole host at one instant.

Produced by :func:`controller.observe.observe_host`; read by the planner, ``ds01ctl`` and the
inventory writer. This module holds values only: no I/O, no adapters. Anything that could not be
read is represented explicitly (``None`` plus a reason, or a domain marked unavailable); nothing
here silently means "zero" or "empty" when it really means "unknown".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from operator import attrgetter
from typing import Any, Literal, NewType, Self, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.dataclasses import dataclass

from crd_like_specs.vocabulary import ContainerType

ContainerId = NewType("ContainerId", str)
GpuUuid = NewType("GpuUuid", str)

# Docker reports "never" as this timestamp (State.StartedAt / FinishedAt of a created container).
DOCKER_ZERO_TIME = "0001-01-01T00:00:00Z"


class Frozen(BaseModel):
    """Base for the observed values read a few times a pass: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Slotted:
    """Base for the values the planner reads thousands of times a pass (observed containers, their
    GPU references, GPU processes, signals and ledger rows; the memory's records and samples):
    frozen, validated, and dumped and loaded by pydantic like a :class:`Frozen` model, but each a
    slotted pydantic dataclass rather than a model.

    A model keeps its fields in a dict of its own, and pydantic's ``BaseModel.__getattr__`` keeps
    Python 3.11 from its fast path for reading them: a field of a model takes about three times as
    long to read as a slot, and the dict makes each value larger (bench/RESULTS.md). The JSON, the
    schema and the validation errors are the model's; ``model_copy``, ``model_dump`` and an
    unvalidated ``built`` are here.
    """

    __slots__ = ()

    def model_copy(self, *, update: Mapping[str, object] | None = None) -> Self:
        """A copy with ``update``'s fields replaced, unvalidated: pydantic's ``model_copy``, as on
        every model (a name that is not a field raises AttributeError)."""
        cls = type(self)
        layout = _LAYOUTS.get(cls) or _layout(cls)
        values: Sequence[object] = layout.read(self)
        if update:
            changed, index = list(values), layout.index
            try:
                for name, value in update.items():
                    changed[index[name]] = value
            except KeyError as exc:
                raise AttributeError(f"{cls.__name__!r} has no field {exc.args[0]!r}") from None
            values = changed
        new: Self = object.__new__(cls)
        for set_, value in zip(layout.setters, values, strict=True):
            set_(new, value)
        return new

    @classmethod
    def built(cls, values: Mapping[str, object]) -> Self:
        """A value of ``values``, which name every field, unvalidated (as ``model_construct``): for
        the planner, which builds them from typed values thousands of times a pass. A name that is
        not a field raises AttributeError, a field left out KeyError (never a value missing one)."""
        layout = _LAYOUTS.get(cls) or _layout(cls)
        setters = layout.by_name
        new: Self = object.__new__(cls)
        try:
            for name, value in values.items():
                setters[name](new, value)
        except KeyError as exc:
            raise AttributeError(f"{cls.__name__!r} has no field {exc.args[0]!r}") from None
        if len(values) != len(setters):
            raise KeyError(", ".join(name for name in setters if name not in values))
        return new

    def model_dump(self, *, mode: Literal["json", "python"] = "python") -> dict[str, Any]:
        """The value as pydantic dumps it inside a model (what ``model_dump`` gives for a model)."""
        cls = type(self)
        adapter = _ADAPTERS.get(cls)
        if adapter is None:
            adapter = _ADAPTERS[cls] = TypeAdapter(cls)
        return cast(dict[str, Any], adapter.dump_python(self, mode=mode))


@dataclasses.dataclass(frozen=True, slots=True)
class _Layout:
    """How to read and set every field of one slotted class (records are copied and built thousands
    of times a pass): every field read at once (one ``attrgetter``), each slot set through its own
    descriptor (``object.__setattr__`` would look each one up by name)."""

    read: Callable[[Any], tuple[object, ...]]
    setters: tuple[Callable[[Any, object], None], ...]  # in field order
    index: dict[str, int]  # field name -> its place in ``setters``
    by_name: dict[str, Callable[[Any, object], None]]


_LAYOUTS: dict[type, _Layout] = {}


def _layout(cls: type) -> _Layout:
    names = [f.name for f in dataclasses.fields(cast(Any, cls))]
    many = attrgetter(*names)
    setters = tuple(getattr(cls, name).__set__ for name in names)
    layout = _LAYOUTS[cls] = _Layout(
        read=many if len(names) > 1 else lambda old: (many(old),),  # (one name: a value, not a tuple)
        setters=setters,
        index={name: i for i, name in enumerate(names)},
        by_name=dict(zip(names, setters, strict=True)),
    )
    return layout


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


class Domain(StrEnum):
    DOCKER = "docker"
    NVML = "nvml"
    PROCFS = "procfs"
    LEDGER = "ledger"


class DomainHealth(Frozen):
    domain: Domain
    ok: bool
    error: str | None = Field(default=None, description="Why the domain is unavailable; None when ok")
    duration_s: float = Field(default=0.0, description="Wall time spent observing this domain")


class ContainerState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"


# A container's Created as the observer gives it when Docker's could not be read (neither the
# inspect's nor the listing's): the oldest time there is, never to be taken as its age.
CREATED_UNKNOWN = datetime.min.replace(tzinfo=UTC)

# Containers whose processes are legitimately alive: a paused container's processes are frozen,
# a restarting one is being brought back by Docker. None of them has orphans.
LIVE_STATES = frozenset({ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING})


class OwnerRule(StrEnum):
    """Which rule of DS01's ownership chain decided a container's owner."""

    LABEL_DS01_USER = "label:ds01.user"
    LABEL_AIME_USER = "label:aime.mlc.USER"
    DEVCONTAINER_LOCAL_FOLDER = "label:devcontainer.local_folder"
    COMPOSE_WORKING_DIR = "label:com.docker.compose.project.working_dir"
    NAME_UID = "name:<name>._.<uid>"
    PROCESS_UID = "process:uid of main process"
    POLICY_SELECTOR = "policy:owner selector"
    UNKNOWN = "unknown"


class TypeRule(StrEnum):
    """Which rule of DS01's type chain decided a container's type."""

    LABEL_CONTAINER_TYPE = "label:ds01.container_type"
    LABEL_INTERFACE = "label:ds01.interface"
    AIME_NAME = "name:<name>._.<uid>"
    DEVCONTAINER_LABEL = "label:devcontainer.*"
    VSC_NAME = "name:vsc-*"
    COMPOSE_LABEL = "label:com.docker.compose.*"
    DEFAULT = "default"


class GpuRefSource(StrEnum):
    """The route by which a container references a GPU."""

    DEVICE_REQUEST = "HostConfig.DeviceRequests"
    CDI_DEVICE = "HostConfig.DeviceRequests:cdi"
    VISIBLE_DEVICES_ENV = "env:NVIDIA_VISIBLE_DEVICES"
    DEVICE_MAPPING = "HostConfig.Devices:/dev/nvidia*"
    LABEL_GPU_UUID = "label:ds01.gpu.uuid"
    LABEL_GPU_UUIDS = "label:ds01.gpu.uuids"
    LABEL_GPU_SLOT = "label:ds01.gpu_slot"
    LABEL_GPU_SLOTS = "label:ds01.gpu.slots"


@dataclass(frozen=True, slots=True, kw_only=True, config=ConfigDict(extra="forbid"))
class GpuRef(Slotted):
    """One reference from a container to a GPU or MIG device, resolved through NVML if possible."""

    raw: str = Field(description="The reference as written: a UUID, an index, 'X.Y', 'X:Y', 'all'")
    source: GpuRefSource
    uuid: GpuUuid | None = Field(default=None, description="GPU- or MIG- UUID; None when unresolved")
    parent_uuid: GpuUuid | None = Field(
        default=None, description="The physical GPU's UUID (equal to uuid for a full GPU)"
    )
    is_mig: bool = False
    unresolved_reason: str | None = None

    @property
    def resolved(self) -> bool:
        return self.uuid is not None


class KeepAliveState(StrEnum):
    ABSENT = "absent"
    PRESENT = "present"
    LINK = "link"  # a symlink or hard link: never honoured (hostile input)
    NOT_REGULAR = "not-regular"  # a FIFO, directory, device...: never honoured
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True, config=ConfigDict(extra="forbid"))
class KeepAlive(Slotted):
    state: KeepAliveState
    mtime: datetime | None = None
    inode: int | None = Field(default=None, description="Identity of the file, to notice replacement")
    detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True, config=ConfigDict(extra="forbid"))
class GpuUtilReading(Slotted):
    uuid: GpuUuid
    percent: float | None = None
    unknown_reason: str | None = None


class SignalSource(StrEnum):
    """Where a counter came from: the container's cgroup, or (fallback) its main process tree.

    A process-tree CPU total drops when a child exits, so it is not a monotonic counter, and it
    misses the processes ``docker exec`` starts (they are not the main process's descendants).
    """

    CGROUP = "cgroup"
    PROCESS_TREE = "process-tree"


class ResourceLimits(Frozen):
    """A container's CPU, memory and process limits as its ``HostConfig`` states them.

    ``None`` means *no limit* (Docker's 0, or -1 where that means unlimited); the whole value is
    absent (``ContainerObs.limits is None``) when the inspect was not read.
    """

    nano_cpus: int | None = Field(default=None, description="HostConfig.NanoCpus (docker --cpus x 1e9)")
    cpu_quota_us: int | None = Field(default=None, description="HostConfig.CpuQuota (with CpuPeriod)")
    cpu_period_us: int | None = Field(default=None, description="HostConfig.CpuPeriod; None: 100 ms")
    cpuset_cpus: str = Field(default="", description="HostConfig.CpusetCpus ('' : every CPU)")
    memory_bytes: int | None = Field(default=None, description="HostConfig.Memory")
    memory_swap_bytes: int | None = Field(
        default=None,
        description="HostConfig.MemorySwap (memory plus swap); None: unset (twice the memory), -1: unlimited",
    )
    memory_reservation_bytes: int | None = Field(
        default=None,
        description="HostConfig.MemoryReservation (docker --memory-reservation, a soft floor); None: unset",
    )
    pids_limit: int | None = Field(default=None, description="HostConfig.PidsLimit")
    shm_size_bytes: int | None = Field(default=None, description="HostConfig.ShmSize")
    cgroup_parent: str = Field(default="", description="HostConfig.CgroupParent")

    @property
    def cpus(self) -> float | None:
        """The CPU limit in CPUs (NanoCpus, else CpuQuota / CpuPeriod); None: unlimited."""
        if self.nano_cpus:
            return self.nano_cpus / 1e9
        if self.cpu_quota_us is not None and self.cpu_quota_us > 0:
            return self.cpu_quota_us / (self.cpu_period_us or 100_000)
        return None

    @property
    def total_swap_bytes(self) -> int | None:
        """Memory plus swap the container may use (Docker's rule); None: unlimited."""
        if self.memory_bytes is None or self.memory_swap_bytes == -1:
            return None
        if self.memory_swap_bytes is None:
            return 2 * self.memory_bytes  # Docker's default: as much swap as memory
        return self.memory_swap_bytes


@dataclass(frozen=True, slots=True, kw_only=True, config=ConfigDict(extra="forbid"))
class ActivitySignals(Slotted):
    """Raw cumulative counters for one running container; rates come from two snapshots.

    Each counter is ``None`` with a reason when it could not be read.
    """

    read_at: datetime
    cpu_usage_ns: int | None = None
    cpu_unknown: str | None = None
    cpu_source: SignalSource | None = None
    net_bytes: int | None = Field(default=None, description="rx + tx bytes over all interfaces but lo")
    net_unknown: str | None = None
    process_count: int | None = None
    process_unknown: str | None = None
    process_source: SignalSource | None = None
    gpu_util: tuple[GpuUtilReading, ...] = ()
    keepalive: KeepAlive = KeepAlive(state=KeepAliveState.UNKNOWN, detail="not read")
    memory_bytes: int | None = Field(default=None, description="The cgroup's memory use now")
    memory_peak_bytes: int | None = Field(default=None, description="The cgroup's highest memory use")
    memory_unknown: str | None = Field(default="not read", description="Why memory use is unknown")
    memory_swap_bytes: int | None = Field(
        default=None, description="The cgroup's memory plus swap use now (what --memory-swap limits)"
    )
    memory_swap_unknown: str | None = Field(
        default="not read", description="Why memory plus swap use is unknown"
    )
    memory_swap_peak_bytes: int | None = Field(
        default=None,
        description="The cgroup's highest memory plus swap use (v2: the two peaks summed, at least that)",
    )
    pids_current: int | None = Field(default=None, description="Tasks in the cgroup now (pids.current)")
    pids_peak: int | None = Field(
        default=None, description="The cgroup's highest task count (pids.peak, kernel 6.1 and later)"
    )
    pids_unknown: str | None = Field(default="not read", description="Why the task count is unknown")


@dataclass(frozen=True, slots=True, kw_only=True, config=ConfigDict(extra="forbid"))
class ContainerObs(Slotted):
    """One container as observed: a slotted value (:class:`Slotted`).

    The planner walks every container several times a pass; keeping its fields in slots rather than
    a model's dict made the planner at 10,000 containers about 12 % quicker (bench/RESULTS.md,
    eighth round).
    """

    id: ContainerId
    name: str
    image: str
    labels: Mapping[str, str] = Field(default_factory=dict)
    state: ContainerState
    created_at: datetime
    started_at: datetime | None = Field(default=None, description="None when never started")
    finished_at: datetime | None = Field(default=None, description="None when never finished")
    pid: int | None = Field(default=None, description="Host PID of the main process; None when not running")
    restart_count: int = 0
    exit_code: int | None = None
    cgroup_parent: str = ""
    owner: str = "unknown"
    owner_rule: OwnerRule = OwnerRule.UNKNOWN
    container_type: ContainerType = ContainerType.UNKNOWN
    type_rule: TypeRule = TypeRule.DEFAULT
    managed: bool = False
    protected_label: bool = Field(default=False, description="ds01.protected=true as set on the container")
    monitoring_label: bool = Field(default=False, description="ds01.monitoring=true as set on the container")
    gpu_refs: tuple[GpuRef, ...] = ()
    all_gpus: bool = Field(default=False, description="Requested every GPU (Count -1 or 'all')")
    signals: ActivitySignals | None = None
    running_for_s: float | None = Field(
        default=None,
        description="Seconds the main process has run, on the boot clock (/proc uptime minus its start); "
        "wall-clock steps do not move it; None when unreadable",
    )
    limits: ResourceLimits | None = Field(
        default=None, description="CPU, memory and pids limits from the inspect; None: not observed"
    )
    workspace_mounted: bool | None = Field(
        default=None,
        description="A host directory or volume is mounted at /workspace (its files outlive the "
        "container); None: not known",
    )

    @property
    def has_gpu(self) -> bool:
        # The planner's per-container loops write this test out (``c.gpu_refs or c.all_gpus``, a
        # property call costing several times the test): change them with it (grep has_gpu).
        return bool(self.gpu_refs) or self.all_gpus

    def may_use_device(self, device_uuid: str) -> bool:
        """May this container use ``device_uuid`` by its references alone: every GPU, a reference
        that did not resolve (it may name any GPU), or that very device? (The planner and
        ``ds01ctl`` also accept a device on a GPU it references, each by its own GPU map.)"""
        if self.all_gpus:
            return True
        for ref in self.gpu_refs:  # noqa: SIM110 (a plain loop: a generator costs more than the test)
            if ref.uuid is None or ref.uuid == device_uuid:
                return True
        return False

    @property
    def gpu_uuids(self) -> tuple[GpuUuid, ...]:
        seen: dict[GpuUuid, None] = {}
        for ref in self.gpu_refs:
            if ref.uuid is not None:
                seen.setdefault(ref.uuid, None)
        return tuple(seen)

    @property
    def short_id(self) -> str:
        return self.id[:12]


class NvmlProcess(Frozen):
    pid: int
    used_memory_bytes: int | None = None


class MigDeviceObs(Frozen):
    uuid: GpuUuid
    index: int
    profile: str | None = Field(
        default=None, description="The GPU instance profile, e.g. '3g.40gb' (from the device's NVML name)"
    )
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    memory_used_bytes: int | None = Field(
        default=None,
        description="Memory in use by applications (NVML memory v2: the driver's reserved excluded)",
    )
    memory_total_bytes: int | None = None
    memory_reserved_bytes: int | None = Field(
        default=None, description="Memory the driver reserves for itself (NVML memory v2); None when unknown"
    )
    memory_used_includes_reserved: bool = Field(
        default=False,
        description="True when read with NVML memory v1 (no v2 on this driver): used then counts the "
        "driver's reserved memory, so it is not 0 on an idle GPU",
    )
    memory_used_unknown: str | None = Field(
        default=None, description="Why memory_used_bytes is None (the NVML call's error, or not available)"
    )
    processes: tuple[NvmlProcess, ...] = ()
    processes_unknown: str | None = Field(
        default=None, description="Why the process list could not be read; () then means unknown, not none"
    )
    compute_slices: int | None = Field(
        default=None, description="Compute-instance slices (nvmlDeviceGetAttributes); None: unknown"
    )
    gpu_equivalents: float | None = Field(
        default=None,
        description="Its share of the GPU (compute slices / the GPU's slots): DS01's GPU-equivalents",
    )
    gpu_equivalents_unknown: str | None = Field(default=None, description="Why gpu_equivalents is unknown")


class GpuObs(Frozen):
    index: int
    uuid: GpuUuid
    name: str
    memory_used_bytes: int | None = Field(
        default=None,
        description="Memory in use by applications (NVML memory v2: the driver's reserved excluded)",
    )
    memory_total_bytes: int | None = None
    memory_reserved_bytes: int | None = Field(
        default=None, description="Memory the driver reserves for itself (NVML memory v2); None when unknown"
    )
    memory_used_includes_reserved: bool = Field(
        default=False,
        description="True when read with NVML memory v1 (no v2 on this driver): used then counts the "
        "driver's reserved memory, so it is not 0 on an idle GPU",
    )
    memory_used_unknown: str | None = Field(
        default=None, description="Why memory_used_bytes is None (the NVML call's error, or not available)"
    )
    utilization_percent: float | None = None
    utilization_unknown: str | None = Field(default=None, description="Why utilization is unknown (MIG...)")
    mig_enabled: bool = False
    mig_devices: tuple[MigDeviceObs, ...] = ()
    processes: tuple[NvmlProcess, ...] = Field(
        default=(),
        description="Compute processes on the full GPU; in MIG mode they are listed on their MIG device",
    )
    processes_unknown: str | None = Field(
        default=None, description="Why the process list could not be read; () then means unknown, not none"
    )


class CgroupScope(StrEnum):
    """Whose cgroup a GPU process is in (see :mod:`controller.observe.cgroups`)."""

    ENGINE = "engine"  # a container cgroup under a parent of this Docker engine
    FOREIGN = "foreign"  # a container-like cgroup of another runtime (rootless Docker, containerd, a sandbox)
    HOST = "host"  # no container cgroup at all
    UNKNOWN = "unknown"  # not read (the process vanished, or /proc could not be read)


class ProcessState(StrEnum):
    PRESENT = "present"
    VANISHED = "vanished"  # listed by NVML, gone from /proc before we read it


@dataclass(frozen=True, slots=True, kw_only=True, config=ConfigDict(extra="forbid"))
class GpuProcessObs(Slotted):
    """A compute process seen by NVML, attributed through /proc."""

    pid: int
    device_uuid: GpuUuid = Field(description="The device NVML listed it on (MIG or full GPU UUID)")
    gpu_uuid: GpuUuid = Field(description="The physical GPU")
    used_memory_bytes: int | None = None
    state: ProcessState = ProcessState.PRESENT
    start_time: float | None = Field(default=None, description="Process start (epoch s); guards PID reuse")
    uid: int | None = None
    user: str | None = None
    cmdline: str = ""
    cgroup: str = Field(default="", description="The cgroup path that decided the attribution")
    container_id: ContainerId | None = Field(default=None, description="Container named by the cgroup")
    container_exists: bool = False
    cgroup_scope: CgroupScope = Field(
        default=CgroupScope.UNKNOWN,
        description="Whose cgroup it is; only a process in this engine's cgroup can be an orphan",
    )
    live_shim: str = Field(
        default="",
        description="A root-owned containerd shim among its ancestors that runs its container, which "
        "this engine does not list ('pid N: <command line>'): another engine's live container (FOREIGN)",
    )
    is_system: bool = False


@dataclass(frozen=True, slots=True, kw_only=True, config=ConfigDict(extra="forbid"))
class LedgerEntry(Slotted):
    gpu: str = Field(description="The GPU as the allocator wrote it (UUID, index or slot)")
    gpu_uuid: GpuUuid | None = None
    container: str = Field(description="Container name or id")
    user: str
    allocated_at: datetime


class Ledger(Frozen):
    path: str
    version: int | None = None
    entries: tuple[LedgerEntry, ...] = ()
    error: str | None = Field(default=None, description="Set when the ledger exists but cannot be read")


class ImpliedAllocation(Frozen):
    """A GPU held by a container, derived from its GPU references."""

    gpu_uuid: GpuUuid
    container_id: ContainerId
    container_name: str
    user: str
    state: ContainerState


class Snapshot(Frozen):
    observed_at: datetime
    health: tuple[DomainHealth, ...]
    containers: tuple[ContainerObs, ...] = ()
    gpus: tuple[GpuObs, ...] = ()
    processes: tuple[GpuProcessObs, ...] = ()
    ledger: Ledger = Ledger(path="")
    docker_api_calls: int = Field(default=0, description="Docker API requests made for this snapshot")
    engine_started_at: datetime | None = Field(
        default=None, description="When the Docker engine process started; None: unknown"
    )
    host_booted_at: datetime | None = Field(default=None, description="The host's boot time; None: unknown")
    host_cpus: int | None = Field(
        default=None,
        description="CPUs the engine can give a container (docker refuses --cpus above); None: unknown",
    )
    observed_monotonic_s: float | None = Field(
        default=None,
        description="CLOCK_MONOTONIC seconds read with observed_at (it does not jump when the wall clock is "
        "stepped); None: unknown",
    )

    def domain_ok(self, domain: Domain) -> bool:
        return any(h.domain == domain and h.ok for h in self.health)

    def domain_error(self, domain: Domain) -> str | None:
        for h in self.health:
            if h.domain == domain:
                return h.error
        return "not observed"

    @property
    def implied_allocations(self) -> tuple[ImpliedAllocation, ...]:
        out: list[ImpliedAllocation] = []
        for c in self.containers:
            for uuid in c.gpu_uuids:
                out.append(
                    ImpliedAllocation(
                        gpu_uuid=uuid, container_id=c.id, container_name=c.name, user=c.owner, state=c.state
                    )
                )
        return tuple(out)

    def container(self, key: str) -> ContainerObs | None:
        """Find a container by exact id, id prefix (>= 4 chars) or name."""
        for c in self.containers:
            if c.id == key or c.name == key:
                return c
        if len(key) >= 4:
            matches = [c for c in self.containers if c.id.startswith(key)]
            if len(matches) == 1:
                return matches[0]
        return None
