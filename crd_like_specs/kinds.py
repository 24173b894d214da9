"""The CRD-like kinds: pydantic models that admins' YAML documents are validated against.

Every document is shaped like a Kubernetes object::

    apiVersion: ds01.io/v1alpha1
    kind: LifecyclePolicy | UserGroup | UserOverride | Exemption
    metadata: {name: ...}
    spec: {...}

Keys are camelCase, unknown keys are errors (``extra="forbid"``), durations are strings with a unit
(``"30m"``) in YAML or :class:`~crd_like_specs.durations.Seconds` from code (the DS01 importer), and
``null`` on a duration means never / no limit. A key that is absent is *unset* and
falls through to the next layer down (see :func:`desired_state.resolve.describe_precedence`); the
models keep that distinction in ``model_fields_set`` and compare it in ``==``.

Loaded by :mod:`desired_state.load` (admins' specs) and :mod:`desired_state.ds01_import` (DS01's
files, converted to these kinds); the JSON Schemas in ``schemas/`` are generated from here by
``python -m crd_like_specs.generate``. This module holds types only: no I/O, no resolution logic.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from crd_like_specs.durations import (
    DURATION_PATTERN,
    EXAMPLES,
    DurationError,
    Seconds,
    format_duration,
    parse_duration,
)
from crd_like_specs.sizes import DOCKER_MIN_MEMORY_BYTES, SizeError, format_size, parse_size
from crd_like_specs.vocabulary import (
    ContainerType,
    ExemptFrom,
    GpuResetPolicy,
    HostProcessPolicy,
    MigIdleFallback,
)

API_VERSION: Final = "ds01.io/v1alpha1"
NAME_PATTERN: Final = r"^[A-Za-z0-9]([A-Za-z0-9_.@-]{0,251}[A-Za-z0-9])?$"
# dockerd passes --cpus 0.001 on, but the kernel refuses the CFS quota it makes (100 us per 100 ms
# period; the least is 1 ms): the smallest CPU limit that works is 0.01.
DOCKER_MIN_CPUS: Final = 0.01
DOCKER_SIZE_PATTERN: Final = r"^\d+(\.\d+)?\s?[kKmMgGtTpP]?[iI]?[bB]?$"
# docker --memory-swap -1: the memory is limited, the swap is not.
UNLIMITED_SWAP: Final = "-1"
DOCKER_SWAP_PATTERN: Final = r"^(-1|\d+(\.\d+)?\s?[kKmMgGtTpP]?[iI]?[bB]?)$"
# systemd's CPUQuota= parser takes a percentage with at most two decimal places (N%, N.N%, N.NN%;
# older releases fewer) and refuses 0% (a unit file's is ignored: the slice would have no cap).
SYSTEMD_PERCENT_PATTERN: Final = r"^\d+(\.\d{1,2})?%$"
# The kernel refuses a CFS quota under 1 ms per period, and systemd stretches the period of a small
# quota to at most 1 s: the least CPUQuota it can apply is 1 ms per second, 0.1%.
SYSTEMD_MIN_CPU_QUOTA_PCT: Final = 0.1
SYSTEMD_SIZE_PATTERN: Final = r"^(\d+(\.\d+)?[KMGTPE]?|infinity)$"


# --- duration types -----------------------------------------------------------------------------


def _duration(value: Any, *, nullable: bool) -> float | None:
    if value is None:
        if nullable:
            return None
        raise PydanticCustomError(
            "not_null",
            "null is not allowed here (it would mean 'never'); write a duration such as {examples}",
            {"examples": EXAMPLES},
        )
    if isinstance(value, Seconds):  # already seconds (the DS01 importer): taken as it is, not parsed
        return value.value
    if isinstance(value, bool):
        raise PydanticCustomError(
            "duration", "{value} is a boolean, not a duration; write e.g. '30m'", {"value": value}
        )
    if isinstance(value, int | float):
        if value == 0:
            hint = "write '0s' for zero" + (", or null for never" if nullable else "")
        else:
            hint = f"write '{value}h' or '{value}m' (or '{value}s')"
        raise PydanticCustomError(
            "duration",
            "plain number {value} is ambiguous (no unit); {hint}",
            {"value": value, "hint": hint},
        )
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except DurationError as exc:
            raise PydanticCustomError("duration", "{reason}", {"reason": str(exc)}) from None
    raise PydanticCustomError(
        "duration",
        "{kind} is not a duration; write e.g. {examples}",
        {"kind": type(value).__name__, "examples": EXAMPLES},
    )


def _nullable_duration(value: Any) -> float | None:
    return _duration(value, nullable=True)


def _required_duration(value: Any) -> float | None:
    return _duration(value, nullable=False)


def _format_optional(seconds: float | None) -> str | None:
    return None if seconds is None else format_duration(seconds)


_DURATION_SCHEMA: Final[dict[str, Any]] = {
    "type": "string",
    "pattern": DURATION_PATTERN,
    "description": "A duration with a unit: s, m, h, d or w, e.g. '90s', '30m', '1.5h', '7d', '1h30m'",
}

NullableDuration = Annotated[
    float | None,
    BeforeValidator(_nullable_duration),
    PlainSerializer(_format_optional, return_type=str | None),
    WithJsonSchema({"anyOf": [_DURATION_SCHEMA, {"type": "null"}]}),
]
"""Seconds, or None meaning never / no limit. Written as ``"30m"`` or ``null``."""

Duration = Annotated[
    float | None,
    BeforeValidator(_required_duration),
    PlainSerializer(_format_optional, return_type=str | None),
    WithJsonSchema(_DURATION_SCHEMA),
]
"""Seconds; ``null`` is rejected. The Python value is None only while the key is unset."""


# --- not-null scalars -------------------------------------------------------------------------------


def _reject_null(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError(
            "not_null", "null is not allowed here; give a value or leave the key out", {}
        )
    return value


def _drop_null_branch(schema: dict[str, Any]) -> None:
    """JSON Schema of a not-null field: the model keeps ``| None`` only to mean 'unset'."""
    branches = schema.get("anyOf")
    if isinstance(branches, list):
        kept = [b for b in branches if b != {"type": "null"}]
        if len(kept) == 1:
            schema.pop("anyOf")
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept
    if schema.get("default", 0) is None:
        schema.pop("default")


_NOT_NULL = BeforeValidator(_reject_null)
_NO_NULL_SCHEMA = Field(json_schema_extra=_drop_null_branch)

Number = Annotated[float, Strict()]
Integer = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Percent = Annotated[float, Strict(), Field(ge=0, le=100)]
Fraction = Annotated[float, Strict(), Field(ge=0, le=1)]
NonNegative = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Count = Annotated[int, Strict(), Field(ge=1)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]

NotNullPercent = Annotated[Percent | None, _NOT_NULL, _NO_NULL_SCHEMA]
NotNullFraction = Annotated[Fraction | None, _NOT_NULL, _NO_NULL_SCHEMA]
NotNullNonNegative = Annotated[NonNegative | None, _NOT_NULL, _NO_NULL_SCHEMA]
NotNullCount = Annotated[Count | None, _NOT_NULL, _NO_NULL_SCHEMA]
NotNullBool = Annotated[Bool | None, _NOT_NULL, _NO_NULL_SCHEMA]
NotNullStr = Annotated[str | None, _NOT_NULL, _NO_NULL_SCHEMA]


# --- base ------------------------------------------------------------------------------------------


class SpecModel(BaseModel):
    """Base of every part of a kind: camelCase keys, unknown keys rejected, immutable.

    Two values are equal only if they also agree on which keys were written: an unset key (falls
    through to the layer below) and an explicit ``null`` (never) are different policies.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        use_enum_values=False,
    )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpecModel):
            return NotImplemented
        return super().__eq__(other) and self.model_fields_set == other.model_fields_set

    __hash__ = None  # type: ignore[assignment]  # mutable containers inside: not hashable


# --- per-container settings ----------------------------------------------------------------------------


class Settings(SpecModel):
    """Timers and thresholds of one container. Every key is optional: an unset key falls through."""

    idle_timeout: NullableDuration = Field(
        default=None, description="Stop a container after this long idle; null: never idle-stopped"
    )
    max_runtime: NullableDuration = Field(
        default=None, description="Stop a container this long after its last start; null: no limit"
    )
    gpu_hold_after_stop: NullableDuration = Field(
        default=None,
        description="Remove a stopped container that references a GPU after this long, or after "
        "containerHoldAfterStop where that is shorter; null: containerHoldAfterStop alone decides",
    )
    container_hold_after_stop: NullableDuration = Field(
        default=None,
        description="Remove an exited container after this long (one that references a GPU after "
        "gpuHoldAfterStop where that is shorter); null: only gpuHoldAfterStop removes one",
    )
    created_container_timeout: NullableDuration = Field(
        default=None, description="Remove a created-but-never-started container after this long; null: never"
    )
    grace_period: Duration = Field(
        default=None, description="No idle evaluation within this long of each start (warm-up)"
    )
    sigterm_grace: Duration = Field(
        default=None, description="Time between SIGTERM and SIGKILL when stopping (docker stop -t)"
    )
    keepalive_path: NotNullStr = Field(
        default=None,
        pattern=r"^/",
        description="Absolute path of the keep-alive file in the container; touching it postpones idle stops",
    )
    keepalive_max_age: NullableDuration = Field(
        default=None,
        description="A keep-alive file is honoured for this long after its mtime or after the "
        "controller first saw it (since the container was last active), whichever ends first; "
        "null: honoured at any age",
    )
    remove_after_idle_stop: NotNullBool = Field(
        default=None,
        description="Remove a container right after an idle stop (DS01 behaviour) instead of holding it",
    )
    warn_lead: Duration = Field(
        default=None,
        description="Warn this long before an idle or runtime stop (capped at 20% of the timeout) "
        "and before a quota stop (not capped)",
    )
    gpu_idle_threshold_pct: NotNullPercent = Field(
        default=None, description="GPU utilisation (%) below which the GPU counts as idle"
    )
    cpu_idle_threshold_pct: NotNullNonNegative = Field(
        default=None, description="CPU use (% of one core) below which the CPU counts as idle"
    )
    network_idle_threshold_bytes_per_second: NotNullNonNegative = Field(
        default=None,
        description=(
            "Network rate (rx+tx bytes per second, averaged over the sampling interval) below which "
            "the network counts as idle; DS01's per-check value divided by its hourly check (3600 s)"
        ),
    )
    mig_idle_fallback: Annotated[MigIdleFallback | None, _NOT_NULL, _NO_NULL_SCHEMA] = Field(
        default=None,
        description=(
            "A MIG device reports no utilisation: cpu-and-network lets CPU and network alone find the "
            "container idle (weaker evidence, DS01's rule); never: it is never idle"
        ),
    )
    idle_detection_window: NotNullCount = Field(
        default=None, description="Consecutive idle samples required before a container counts as idle"
    )
    idle_min_duration: Duration = Field(
        default=None,
        description="Minimum continuous idle span (with the window) before a container counts as idle",
    )
    high_demand_threshold: NotNullFraction = Field(
        default=None, description="Share of GPUs allocated at which the host is in high demand"
    )
    high_demand_idle_reduction: NotNullFraction = Field(
        default=None, description="Multiplier applied to idle timeouts while in high demand"
    )


class TypeSettings(Settings):
    """Settings pinned for one container type. ``idleExempt`` can only be changed per type."""

    idle_exempt: NotNullBool = Field(
        default=None,
        description=(
            "Containers of this type are never idle-stopped, whatever a group's or user's general "
            "idleTimeout says; only a containerTypes block (LifecyclePolicy, UserGroup, UserOverride) "
            "changes it"
        ),
    )

    resources_exempt: NotNullBool = Field(
        default=None,
        description=(
            "Containers of this type are never brought under their owner's CPU, memory and pids limits "
            "(UpdateResources) nor stopped for a quota; they still count towards the owner's quotas"
        ),
    )


ContainerTypeSettings = dict[ContainerType, TypeSettings]


# --- resource limits and quotas --------------------------------------------------------------------


class Aggregate(SpecModel):
    """Per-user systemd-slice caps (DS01 ``aggregate``)."""

    cpu_quota: NotNullStr = Field(
        default=None,
        pattern=SYSTEMD_PERCENT_PATTERN,
        description=(
            f"systemd CPUQuota, e.g. '9600%' (96 CPUs); at least {SYSTEMD_MIN_CPU_QUOTA_PCT:g}% "
            "(systemd's least), at most two decimal places"
        ),
    )
    memory_max: NotNullStr = Field(default=None, pattern=SYSTEMD_SIZE_PATTERN, description="e.g. '96G'")
    memory_high: NotNullStr = Field(default=None, pattern=SYSTEMD_SIZE_PATTERN, description="e.g. '86G'")
    tasks_max: Integer | None = Field(
        default=None, ge=0, description="TasksMax; null: no cap (systemd's 'infinity' reads as null)"
    )
    gpu_limit: Number | None = Field(default=None, ge=0, description="GPU-equivalents; null: no cap")

    @field_validator("tasks_max", mode="before")
    @classmethod
    def _tasks_infinity_is_no_cap(cls, value: Any) -> Any:
        # systemd's TasksMax=infinity, as memory_max: infinity, is no cap: the same as null.
        return None if value == "infinity" else value

    @field_validator("cpu_quota", mode="before")
    @classmethod
    def _quota_systemd_applies(cls, value: Any) -> Any:
        # Before the pattern check, so that "0%" and "150.125%" get the reason; what is not a
        # percentage at all (or not a string) is left to it ("not in the expected form").
        if not isinstance(value, str) or not re.fullmatch(r"\d+(\.\d+)?%", value):
            return value
        decimals = value[:-1].partition(".")[2]
        if len(decimals) > 2:
            raise PydanticCustomError(
                "systemd_format",
                "{value} has more decimal places than systemd reads (CPUQuota takes N%, N.N% or N.NN%): "
                "systemctl set-property refuses it, and a unit file's is ignored",
                {
                    "value": value,
                    "expected": "a percentage with at most two decimal places",
                    "fix": "round it to two decimal places",
                },
            )
        if float(value[:-1]) < SYSTEMD_MIN_CPU_QUOTA_PCT:
            minimum = f"{SYSTEMD_MIN_CPU_QUOTA_PCT:g}%"
            raise PydanticCustomError(
                "systemd_minimum",
                "CPU quota {value} is below systemd's minimum of {minimum}: systemd refuses 0% (and a unit "
                "file's is ignored, leaving the slice without a cap), and the kernel a quota under 1 ms "
                "per period, which systemd stretches to at most 1 s",
                {"value": value, "minimum": minimum, "fix": f"write at least {minimum} (100% is one CPU)"},
            )
        return value


Scalar = str | Number | None


class Resources(SpecModel):
    """Per-user resource limits (per container: maxCpus, memory, memorySwap, pidsLimit) and quotas.

    DS01's keys, imported losslessly. The controller brings containers under the limits in place
    (UpdateResources) and reports the quotas (maxContainersPerUser, maxGpuEquivalents,
    maxGpuSlotsPerContainer); the other keys are kept, enforced by DS01's wrapper.
    """

    max_gpu_equivalents: Number | None = Field(
        default=None, ge=0, description="Fair-share GPU quota; null: unlimited"
    )
    max_gpu_slots_per_container: Integer | None = Field(
        default=None, ge=0, description="Distinct GPU/MIG units per container; null: unlimited"
    )
    allow_full_gpu: NotNullBool = Field(default=None, description="May receive non-MIG GPUs")
    max_cpus: Annotated[Number | None, _NOT_NULL, _NO_NULL_SCHEMA] = Field(
        default=None,
        ge=DOCKER_MIN_CPUS,
        description=f"docker --cpus; at least {DOCKER_MIN_CPUS:g} (Docker's minimum)",
    )
    memory: NotNullStr = Field(
        default=None, pattern=DOCKER_SIZE_PATTERN, description="docker --memory, e.g. 32g"
    )
    memory_swap: NotNullStr = Field(
        default=None,
        pattern=DOCKER_SWAP_PATTERN,
        description="docker --memory-swap: memory plus swap, e.g. 32g (no swap with memory 32g); "
        "'-1': unlimited swap (no swap limit is set or lowered)",
    )
    shm_size: NotNullStr = Field(default=None, pattern=DOCKER_SIZE_PATTERN, description="docker --shm-size")
    pids_limit: Integer | None = Field(default=None, description="docker --pids-limit; null: unlimited")
    max_containers_per_user: Integer | None = Field(default=None, ge=0, description="null: unlimited")
    max_tasks: Integer | None = Field(default=None, ge=0, description="systemd TasksMax; null: unlimited")
    priority: Annotated[Integer | None, _NOT_NULL, _NO_NULL_SCHEMA] = Field(
        default=None, description="Allocation priority"
    )
    gpu_memory: Scalar = Field(default=None, description="Declared by DS01, not implemented there")
    io_read_bps: Scalar = Field(default=None, description="Declared by DS01, not implemented there")
    io_write_bps: Scalar = Field(default=None, description="Declared by DS01, not implemented there")
    ulimit_nofile: Scalar = Field(default=None, description="Declared by DS01, not implemented there")
    storage_workspace: Scalar = Field(default=None, description="Declared by DS01, not implemented there")
    storage_data: Scalar = Field(default=None, description="Declared by DS01, not implemented there")
    storage_tmp: Scalar = Field(default=None, description="docker --tmpfs /tmp size")
    aggregate: Aggregate | None = Field(default=None, description="Per-user slice caps; null: no cap")

    @field_validator("max_cpus", mode="before")
    @classmethod
    def _cpus_at_least_docker_minimum(cls, value: Any) -> Any:
        # Before the type and range checks, so that 0.001 gets the reason; 0 or below (and a
        # string) is left to them ("out of range", "not a number").
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if is_number and 0 < value < DOCKER_MIN_CPUS:
            raise PydanticCustomError(
                "docker_minimum",
                "{value} CPUs is below Docker's minimum of {minimum}: the kernel refuses a CPU quota under "
                "1 ms per 100 ms period, so every docker update of a container's limit would fail",
                {
                    "value": value,
                    "minimum": f"{DOCKER_MIN_CPUS:g}",
                    "fix": f"write at least {DOCKER_MIN_CPUS:g} (0.5 is half a CPU)",
                },
            )
        return value

    @field_validator("memory")
    @classmethod
    def _at_least_docker_minimum(cls, value: str | None) -> str | None:
        if value is not None and _size(value) < DOCKER_MIN_MEMORY_BYTES:
            minimum = format_size(DOCKER_MIN_MEMORY_BYTES)
            raise PydanticCustomError(
                "docker_minimum",
                "memory {value} is below Docker's minimum of {minimum}; the engine refuses such a limit",
                {
                    "value": value,
                    "minimum": minimum,
                    "fix": f"write at least {DOCKER_MIN_MEMORY_BYTES >> 20}m",
                },
            )
        return value

    @field_validator("memory_swap", mode="before")
    @classmethod
    def _swap_minus_one_as_docker_writes_it(cls, value: Any) -> Any:
        # DS01's files pass the value to docker run as written: an unquoted -1 is Docker's unlimited.
        return (
            UNLIMITED_SWAP
            if isinstance(value, int) and not isinstance(value, bool) and value == -1
            else value
        )

    @field_validator("memory_swap")
    @classmethod
    def _swap_not_below_memory(cls, value: str | None, info: ValidationInfo) -> str | None:
        memory = info.data.get("memory")
        if value == UNLIMITED_SWAP:
            return value
        if value is not None and isinstance(memory, str) and _size(value) < _size(memory):
            raise PydanticCustomError(
                "memory_swap",
                "memorySwap {swap} is below memory {memory}: it is memory plus swap (docker --memory-swap), "
                "so it must be at least the memory",
                {"swap": value, "memory": memory},
            )
        return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except SizeError as exc:
        raise PydanticCustomError("size", "{reason}", {"reason": str(exc)}) from None


class ResourceEnforcement(SpecModel):
    """How the controller applies the resource limits and quotas (host-wide)."""

    update_limits: NotNullBool = Field(
        default=None,
        description="Bring containers whose CPU, memory, swap or pids limit is unset or above their "
        "owner's down to it in place (docker update); false: only reported",
    )
    memory_margin_pct: NotNullNonNegative = Field(
        default=None,
        description="A memory limit is never set below the container's current use plus this margin "
        "(% of the use), nor a pids limit below its task count plus this margin (and one task of room); "
        "the update waits and the owner is warned instead",
    )
    enforce: Literal["report", "stop"] | None = Field(
        default=None,
        description="Per-user and per-container GPU quotas: report (warn the owner, alert the admin) or "
        "stop the newest containers beyond the quota after the warning lead",
    )
    aggregate_alerts: NotNullBool = Field(
        default=None,
        description="Alert the admin about a user whose live containers are not all under the user's "
        "slice (DS01's per-user cgroup parent, the aggregate caps) or whose summed CPU limits, memory "
        "or tasks exceed the aggregate caps; false: only shown by ds01ctl get/describe users",
    )


# --- selectors and global settings --------------------------------------------------------------------


class ContainerSelector(SpecModel):
    """Matches containers; every key given must match. At least one of name, labels, owner."""

    name: str | None = Field(
        default=None, min_length=1, description="Container name glob, e.g. 'ds01-grafana*'"
    )
    labels: dict[str, str] | None = Field(
        default=None, description="Labels that must all be present with these values"
    )
    owner: str | None = Field(
        default=None, min_length=1, description="Owner login name (or its sanitised form)"
    )
    reason: str | None = Field(default=None, description="Why, shown by ds01ctl describe")

    @model_validator(mode="after")
    def _not_empty(self) -> ContainerSelector:
        if self.name is None and not self.labels and self.owner is None:
            raise PydanticCustomError(
                "empty_selector",
                "a selector needs at least one of name, labels, owner (an empty one matches everything)",
            )
        return self


class GpuReset(SpecModel):
    policy: Annotated[GpuResetPolicy | None, _NOT_NULL, _NO_NULL_SCHEMA] = Field(
        default=None,
        description="never, or when-exclusive: only when no other container or process uses the GPU",
    )
    command: Annotated[list[str] | None, _NOT_NULL, _NO_NULL_SCHEMA] = Field(
        default=None,
        min_length=1,
        description="argv of the reset command; '{uuid}' is replaced by the GPU UUID",
    )

    @field_validator("command")
    @classmethod
    def _names_the_gpu(cls, command: list[str] | None) -> list[str] | None:
        if command is not None and not any("{uuid}" in arg for arg in command):
            raise PydanticCustomError(
                "reset_command",
                "the reset command must name the GPU with '{placeholder}' (else it could reset every GPU)",
                {"placeholder": "{uuid}"},
            )
        return command


class Safety(SpecModel):
    max_destructive_actions_per_pass: NotNullCount = Field(
        default=None, description="Stops, removals, kills and resets allowed in one pass; the rest wait"
    )
    breaker_max_fraction: NotNullFraction = Field(
        default=None,
        description="Trip when one pass would stop more than this share of running GPU containers",
    )
    breaker_min_containers: NotNullCount = Field(
        default=None,
        description="The breaker only considers the share when at least this many would be stopped",
    )
    release_breaker_max_fraction: NotNullFraction = Field(
        default=None,
        description="Hold back every ledger release when one pass would release more than this share "
        "of the ledger's rows",
    )
    release_breaker_min_rows: NotNullCount = Field(
        default=None,
        description="The release breaker only considers the share when at least this many rows would go",
    )
    max_concurrent_actions: NotNullCount = Field(
        default=None,
        description="Actions in flight at once (one per target); stops ignoring SIGTERM wait side by side",
    )
    max_action_age: NullableDuration = Field(
        default=None,
        description=(
            "An action not started this long after the observation its plan was made from is re-planned "
            "from a fresh one instead; null: the daemon's resync interval (--interval)"
        ),
    )

    @field_validator("max_action_age")
    @classmethod
    def _positive_age(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise PydanticCustomError(
                "duration", "maxActionAge must be longer than 0s (0s would re-plan every action forever)", {}
            )
        return value

    breaker_max_remove_fraction: NotNullFraction = Field(
        default=None,
        description="Trip when one pass would remove more than this share of the stopped containers",
    )
    breaker_min_removals: NotNullCount = Field(
        default=None,
        description="The breaker only considers the removal share when at least this many would be removed",
    )


class Notifications(SpecModel):
    """The notification hook: every warning, stop/removal notice and admin alert as one JSON document."""

    hook_command: Annotated[list[str] | None, Field(min_length=1)] = Field(
        default=None,
        description="argv of a command that gets each document on its stdin (no shell); null: none",
    )
    hook_url: Annotated[str | None, Field(pattern=r"^https?://[^\s]+$")] = Field(
        default=None, description="http(s) URL each document is POSTed to as JSON; null: none"
    )
    hook_timeout: Duration = Field(
        default=None, description="How long one delivery may take (the command is killed after it)"
    )
    dry_run_notices: NotNullBool = Field(
        default=None, description="Send documents in dry-run too (marked dry_run: true); false: silent"
    )


class Ds01Enforcement(SpecModel):
    """DS01 ``enforcement``."""

    aggregate_limits: NotNullBool = Field(default=None, description="Per-user systemd slice caps enforced")
    cgroup_driver: NotNullStr = Field(default=None, description="Docker cgroup driver DS01 requires")


_UNUSED = "Declared by DS01, not implemented there"


class Ds01GpuAllocation(SpecModel):
    """DS01 ``gpu_allocation`` (comments only in the shipped file)."""

    slots_per_gpu: Annotated[Integer | None, _NOT_NULL, _NO_NULL_SCHEMA] = Field(
        default=None, ge=1, description="Legacy full-GPU slot count (alias mig_instances_per_gpu)"
    )
    strategy: NotNullStr = Field(default=None, description=_UNUSED)
    allocation_method: NotNullStr = Field(default=None, description=_UNUSED)
    enable_mig: NotNullBool = Field(default=None, description=_UNUSED)
    mig_strategy: NotNullStr = Field(default=None, description=_UNUSED)
    mig_profile: NotNullStr = Field(default=None, description=_UNUSED)
    mig_gpus: dict[int, dict[str, Scalar | bool]] | None = Field(default=None, description=_UNUSED)
    respect_reservations: NotNullBool = Field(default=None, description=_UNUSED)


class Ds01BareMetalAccess(SpecModel):
    """DS01 ``bare_metal_access``: who may use GPUs on the host outside containers."""

    exempt_users: list[str] | None = Field(default=None, description="Permanently allowed users")
    admin_group: NotNullStr = Field(default=None, description="Group that administers grants")
    default_grant_duration: NullableDuration = Field(
        default=None, description="Default length of a grant; null: no end (a grant lasts until revoked)"
    )
    state_dir: NotNullStr = Field(default=None, description="Where DS01 keeps grant files")


class Ds01Wrapper(SpecModel):
    """DS01 ``access_control.wrapper``: the docker CLI wrapper."""

    enforcement_mode: Literal["disabled", "monitoring", "full"] | None = Field(
        default=None, description="Wrapper mode"
    )
    debug_level: Annotated[int, Strict(), Field(ge=0, le=2)] | None = Field(
        default=None, description="0, 1 or 2"
    )
    unknown_commands: Literal["allow", "deny"] | None = Field(
        default=None, description="Unrecognised commands"
    )


class Ds01AccessControl(SpecModel):
    """DS01 ``access_control``."""

    admin_users: list[str] | None = Field(default=None, description="Users who bypass isolation checks")
    admin_group: NotNullStr = Field(default=None, description="Group that bypasses isolation checks")
    wrapper: Ds01Wrapper | None = Field(default=None, description="Docker wrapper settings")


class Ds01Settings(SpecModel):
    """DS01 settings kept for losslessness; the lifecycle controller does not act on them."""

    enforcement: Ds01Enforcement | None = Field(default=None, description="DS01 enforcement")
    gpu_allocation: Ds01GpuAllocation | None = Field(default=None, description="DS01 gpu_allocation")
    bare_metal_access: Ds01BareMetalAccess | None = Field(default=None, description="DS01 bare_metal_access")
    access_control: Ds01AccessControl | None = Field(default=None, description="DS01 access_control")
    infrastructure_label: NotNullStr = Field(default=None, description="DS01 monitoring.infrastructure_label")
    gpu_hold_after_manual_stop: NullableDuration = Field(
        default=None, description="DS01 policies.gpu_hold_after_manual_stop_m (declared, never read by DS01)"
    )


# --- the kinds ---------------------------------------------------------------------------------------


class Metadata(SpecModel):
    name: str = Field(
        pattern=NAME_PATTERN, description="Unique per kind: letters, digits, '-', '_', '.', '@'"
    )
    labels: dict[str, str] | None = Field(default=None, description="Free-form labels (not interpreted)")
    annotations: dict[str, str] | None = Field(
        default=None, description="Free-form notes, e.g. a ticket reference"
    )


class Reporting(SpecModel):
    """What the daemon records for ``ds01ctl report``, and when a held GPU counts as hoarded."""

    sample_interval: Duration = Field(
        default=None,
        description=(
            "How often the daemon writes a usage sample (controller.usage_sample: each GPU's holders, "
            "idleness, memory and utilisation) to the event log; ds01ctl report adds them up"
        ),
    )
    hoarding_memory_threshold_mib: NotNullNonNegative = Field(
        default=None,
        description="A GPU holding at least this much memory (MiB) at near-zero utilisation is hoarded",
    )
    hoarding_max_utilization_pct: NotNullPercent = Field(
        default=None, description="Near-zero: GPU utilisation (%) at or below this counts for hoarding"
    )
    hoarding_window: Duration = Field(
        default=None,
        description="Hoarding is reported once memory is held at near-zero utilisation this long, unbroken",
    )

    @field_validator("sample_interval")
    @classmethod
    def _long_enough(cls, value: float | None) -> float | None:
        if value is not None and value < 10:
            raise PydanticCustomError(
                "duration", "sampleInterval must be at least 10s (each sample is a few event log lines)", {}
            )
        return value


class LifecyclePolicySpec(SpecModel):
    default_group: str | None = Field(
        default=None, description="UserGroup for owners in no group (and unknown owners); null or unset: none"
    )
    settings: Settings = Field(default_factory=Settings, description="Defaults for every container")
    container_types: ContainerTypeSettings = Field(
        default_factory=dict,
        description="Settings pinned per container type (beat a group's general settings)",
    )
    resources: Resources = Field(
        default_factory=Resources, description="Resource limits and quotas of every user"
    )
    trust_labels: NotNullBool = Field(
        default=None,
        description="Honour ds01.protected / ds01.monitoring / ds01.user labels; false: only selectors count",
    )
    protect: Annotated[list[ContainerSelector] | None, _NOT_NULL, _NO_NULL_SCHEMA] = Field(
        default=None, description="Containers never stopped or removed"
    )
    monitoring: Annotated[list[ContainerSelector] | None, _NOT_NULL, _NO_NULL_SCHEMA] = Field(
        default=None, description="Monitoring-stack containers: skipped by idle, runtime and cleanup"
    )
    gpu_reset: GpuReset = Field(
        default_factory=GpuReset, description="Whether and how a released GPU is reset"
    )
    host_gpu_processes: Annotated[HostProcessPolicy | None, _NOT_NULL, _NO_NULL_SCHEMA] = Field(
        default=None, description="GPU processes outside any container: report (never killed)"
    )
    safety: Safety = Field(default_factory=Safety, description="Action budget and circuit breaker")
    restart_stopped_hold: NullableDuration = Field(
        default=None,
        description="Hold of a container stopped by an engine or host restart (not by its owner), "
        "instead of the normal holds when longer; null: kept until an admin removes it",
    )
    ledger_reservation_window: Duration = Field(
        default=None, description="A ledger reservation without a container counts as held this long"
    )
    orphan_sightings_required: NotNullCount = Field(
        default=None, description="Passes an orphaned GPU process must be seen in before it is killed"
    )
    max_sample_interval: Duration = Field(
        default=None,
        description=(
            "An activity sample taken longer than this after the previous one (daemon or Docker down, "
            "a clock step) is undecidable: it cannot tell when the container was active; keep it at "
            "least twice the daemon's --interval"
        ),
    )
    kill_grace: Duration = Field(
        default=None, description="SIGTERM to SIGKILL delay for orphaned GPU processes"
    )
    transient_process_min_age: Duration = Field(
        default=None,
        description=(
            "A bare host GPU process is announced (detection.host_gpu_process_discovered, the "
            "inventory's host_processes) once it has been seen for this long, on two scans at least, "
            "as DS01's detector did (about 60 s); shorter-lived ones stay in _pending_processes"
        ),
    )
    system_process_names: Annotated[list[str] | None, _NOT_NULL, _NO_NULL_SCHEMA] = Field(
        default=None, description="GPU processes that are never orphans (nvidia-persistenced, Xorg...)"
    )
    engine_cgroup_parents: Annotated[list[str] | None, _NOT_NULL, _NO_NULL_SCHEMA] = Field(
        default=None,
        description="--cgroup-parent values this Docker engine's containers get (a slice covers its "
        "sub-slices), besides Docker's own /docker and system.slice; a GPU process in any other "
        "container cgroup (rootless Docker, Kubernetes, containerd) is foreign: reported, never killed",
    )
    notifications: Notifications = Field(
        default_factory=Notifications,
        description="The notification hook (a command and/or a webhook URL); off by default",
    )
    resource_enforcement: ResourceEnforcement = Field(
        default_factory=ResourceEnforcement,
        description="How the resource limits and quotas are applied (UpdateResources, quota stops)",
    )
    ds01: Ds01Settings = Field(
        default_factory=Ds01Settings, description="DS01 settings kept for losslessness"
    )
    reporting: Reporting = Field(
        default_factory=Reporting,
        description="Usage samples for ds01ctl report, and the hoarding thresholds (report, get gpus)",
    )


class UserGroupSpec(SpecModel):
    order: Annotated[Integer | None, _NOT_NULL, _NO_NULL_SCHEMA] = Field(
        default=None, description="Groups are matched in ascending order (then by name); unset: 100"
    )
    members: list[str] | None = Field(default=None, description="Login names")
    members_file: str | None = Field(
        default=None,
        description="File of login names, one per line ('#' comments), relative to this spec file; merged",
    )
    settings: Settings = Field(
        default_factory=Settings, description="Override the LifecyclePolicy's settings"
    )
    container_types: ContainerTypeSettings = Field(
        default_factory=dict, description="Per-type settings for this group (beat the type's pinned values)"
    )
    resources: Resources = Field(
        default_factory=Resources, description="Resource limits and quotas of this group's members"
    )

    @field_validator("members")
    @classmethod
    def _names(cls, members: list[str] | None) -> list[str] | None:
        for member in members or ():
            if not member.strip() or member != member.strip():
                raise PydanticCustomError(
                    "member", "member {member!r} is empty or has spaces around it", {"member": member}
                )
        return members


class UserOverrideSpec(SpecModel):
    user: str = Field(min_length=1, description="Login name")
    settings: Settings = Field(
        default_factory=Settings, description="Override group and defaults, for every type"
    )
    container_types: ContainerTypeSettings = Field(
        default_factory=dict, description="Per-type settings for this user"
    )
    resources: Resources = Field(
        default_factory=Resources, description="Resource limits and quotas of this user"
    )


class ExemptionSpec(SpecModel):
    user: str = Field(min_length=1, description="Login name")
    exempt_from: list[ExemptFrom] = Field(
        min_length=1, description="idle, max_runtime, cleanup and/or resources"
    )
    reason: str = Field(min_length=1, description="Why the exemption was granted")
    approved_by: str | None = Field(default=None, description="Who approved it")
    approved_on: date | None = Field(default=None, description="When it was approved")
    expires_at: AwareDatetime | None = Field(
        description="With a zone, e.g. 2026-03-31T23:59:59Z; null: permanent. Expired ones stay on record"
    )
    category: str | None = Field(default=None, description="e.g. research_grant, waiver")
    requested_by: str | None = Field(default=None, description="Who asked for it")

    @field_validator("expires_at", mode="before")
    @classmethod
    def _a_time_not_a_number(cls, value: object) -> object:
        # pydantic would read a number as seconds since 1970: expiresAt: 20260331 (a compact date)
        # became 1970-08-23, an exemption expired before it was written. A number in quotes
        # ('20260331', as a string) is read the same way, so it is refused the same way.
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number or (isinstance(value, str) and _numeric(value)):
            raise PydanticCustomError(
                "number_not_time",
                "{value} is a number, not a time (it would be read as seconds since 1970); write a "
                "date and time with a zone such as 2026-03-31T23:59:59Z",
                {"value": repr(value) if isinstance(value, str) else value},
            )
        return value

    @field_validator("expires_at")
    @classmethod
    def _within_utc(cls, value: datetime | None) -> datetime | None:
        # 9999-12-31T23:59:59-05:00 ("forever", in a local zone) is in year 10000 in UTC: no
        # datetime holds it, and every view that shows the exemption's expiry (ds01ctl plan,
        # describe) failed on it. Permanent is null.
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise PydanticCustomError(
                    "time_range",
                    "{value} is outside the times that can be written in UTC (years 1 to 9999); write "
                    "null for a permanent exemption, or an earlier time",
                    {"value": value.isoformat()},
                ) from None
        return value

    @field_validator("exempt_from")
    @classmethod
    def _unique(cls, values: list[ExemptFrom]) -> list[ExemptFrom]:
        if len(set(values)) != len(values):
            raise PydanticCustomError("duplicate", "exemptFrom lists an entry twice", {})
        return values


def _numeric(text: str) -> bool:
    """Whether ``text`` reads as a number (``'20260331'``, ``'1.7e9'``), not as a date and time."""
    try:
        float(text)
    except ValueError:
        return False
    return True


ApiVersion = Annotated[Literal["ds01.io/v1alpha1"], Field(description="Always ds01.io/v1alpha1")]
_META = "metadata.name identifies the document (unique per kind)"

# Each kind spells out apiVersion, kind, metadata, spec itself so they are dumped in that order.


class LifecyclePolicy(SpecModel):
    """Defaults for every container, per-type settings and host-wide settings. At most one is active."""

    api_version: ApiVersion
    kind: Literal["LifecyclePolicy"] = Field(description="The kind of document")
    metadata: Metadata = Field(description=_META)
    spec: LifecyclePolicySpec = Field(default_factory=LifecyclePolicySpec, description="The policy")


class UserGroup(SpecModel):
    """A group of users with overrides of the LifecyclePolicy's settings."""

    api_version: ApiVersion
    kind: Literal["UserGroup"] = Field(description="The kind of document")
    metadata: Metadata = Field(description=_META)
    spec: UserGroupSpec = Field(default_factory=UserGroupSpec, description="Members and overrides")


class UserOverride(SpecModel):
    """One user's overrides; reaches that user's containers of every type."""

    api_version: ApiVersion
    kind: Literal["UserOverride"] = Field(description="The kind of document")
    metadata: Metadata = Field(description=_META)
    spec: UserOverrideSpec = Field(description="The user and the overrides")


class Exemption(SpecModel):
    """One user's exemption, time-bounded or permanent, from the idle, runtime, cleanup or resource rules."""

    api_version: ApiVersion
    kind: Literal["Exemption"] = Field(description="The kind of document")
    metadata: Metadata = Field(description=_META)
    spec: ExemptionSpec = Field(description="Who, from what, why, until when")


Kind = LifecyclePolicy | UserGroup | UserOverride | Exemption

KINDS: Final[dict[str, type[LifecyclePolicy] | type[UserGroup] | type[UserOverride] | type[Exemption]]] = {
    "LifecyclePolicy": LifecyclePolicy,
    "UserGroup": UserGroup,
    "UserOverride": UserOverride,
    "Exemption": Exemption,
}
