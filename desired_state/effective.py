"""The effective policy of one container: every timer and threshold, each with where it came from.

This is the contract between the desired-state layer (which computes it) and the planner (which
only reads it). Durations are seconds (``float``) or ``None`` meaning never / no limit.
Produced by :func:`desired_state.resolve.resolve_effective_policy`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from crd_like_specs.durations import format_duration
from crd_like_specs.vocabulary import ExemptFrom, GpuResetPolicy, HostProcessPolicy, MigIdleFallback

# The vocabularies live in crd_like_specs (below this package); they are part of this contract.
__all__ = [
    "LEAD_FRACTION",
    "ActiveExemption",
    "EffectivePolicy",
    "ExemptFrom",
    "GlobalPolicy",
    "GpuResetPolicy",
    "HostProcessPolicy",
    "Interaction",
    "MigIdleFallback",
    "Sourced",
    "interactions",
    "setting_interactions",
]

T = TypeVar("T")


class Sourced(BaseModel, Generic[T]):
    """A value with its provenance, e.g. ``1h from UserGroup/researcher``."""

    model_config = ConfigDict(frozen=True)

    value: T
    source: str = Field(
        description="e.g. 'built-in default', 'LifecyclePolicy/default', 'UserGroup/researcher'"
    )


class ActiveExemption(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(description="The Exemption's metadata.name (or DS01 record index)")
    exempt_from: ExemptFrom
    reason: str = ""
    approved_by: str = ""
    expires_at: datetime | None = Field(default=None, description="None: permanent")
    source: str


_UNSET = "not configured"


class ResourceSpec(BaseModel):
    """One container's resource limits and its owner's quotas, each with where it came from.

    ``None`` is *no limit*. Memory and swap are bytes; ``memory_swap_bytes`` is memory plus swap
    (``docker --memory-swap``).
    """

    model_config = ConfigDict(frozen=True)

    max_cpus: Sourced[float | None] = Sourced(value=None, source=_UNSET)
    memory_bytes: Sourced[int | None] = Sourced(value=None, source=_UNSET)
    memory_swap_bytes: Sourced[int | None] = Sourced(value=None, source=_UNSET)
    pids_limit: Sourced[int | None] = Sourced(value=None, source=_UNSET)
    max_containers_per_user: Sourced[int | None] = Sourced(value=None, source=_UNSET)
    max_gpu_equivalents: Sourced[float | None] = Sourced(value=None, source=_UNSET)
    max_gpu_slots_per_container: Sourced[int | None] = Sourced(value=None, source=_UNSET)
    # The owner's per-user slice caps (DS01 ``aggregate``, one block: every value has its source).
    aggregate_cpus: Sourced[float | None] = Field(
        default=Sourced(value=None, source=_UNSET), description="cpuQuota in CPUs ('9600%' is 96)"
    )
    aggregate_memory_bytes: Sourced[int | None] = Field(
        default=Sourced(value=None, source=_UNSET), description="memoryMax"
    )
    aggregate_memory_high_bytes: Sourced[int | None] = Field(
        default=Sourced(value=None, source=_UNSET), description="memoryHigh (throttling, not a cap)"
    )
    aggregate_tasks: Sourced[int | None] = Field(
        default=Sourced(value=None, source=_UNSET), description="tasksMax"
    )
    exempt: Sourced[bool] = Field(
        default=Sourced(value=False, source=_UNSET),
        description="Opted out of the limits and quota stops (container type resourcesExempt)",
    )


class EffectivePolicy(BaseModel):
    """Everything the planner needs to decide about one container."""

    model_config = ConfigDict(frozen=True)

    owner: str
    group: Sourced[str]
    container_type: str

    idle_timeout_s: Sourced[float | None]
    max_runtime_s: Sourced[float | None]
    gpu_hold_after_stop_s: Sourced[float | None]
    container_hold_after_stop_s: Sourced[float | None]
    created_container_timeout_s: Sourced[float | None]
    grace_period_s: Sourced[float]
    sigterm_grace_s: Sourced[float]

    gpu_idle_threshold_pct: Sourced[float]
    cpu_idle_threshold_pct: Sourced[float]
    network_idle_threshold_bytes_per_s: Sourced[float] = Field(
        description="Network rate (rx+tx bytes per second) below which the network counts as idle"
    )
    mig_idle_fallback: Sourced[MigIdleFallback] = Field(
        description="Whether CPU and network alone may find a container on a MIG device idle"
    )
    idle_detection_window: Sourced[int] = Field(description="Consecutive idle samples required")
    idle_min_duration_s: Sourced[float] = Field(description="Minimum continuous idle span before a stop")

    keepalive_path: Sourced[str]
    keepalive_max_age_s: Sourced[float | None]

    high_demand_threshold: Sourced[float]
    high_demand_idle_reduction: Sourced[float]
    warn_lead_s: Sourced[float] = Field(description="Minimum lead time between first warning and stop")
    remove_after_idle_stop: Sourced[bool]

    protected: Sourced[bool] = Field(description="Never stopped or removed (admin-granted or trusted label)")
    monitoring: Sourced[bool] = Field(description="Monitoring stack: skipped by idle, runtime and cleanup")

    exemptions: tuple[ActiveExemption, ...] = ()
    resources: ResourceSpec = Field(
        default_factory=ResourceSpec, description="CPU, memory and pids limits and the owner's quotas"
    )

    def exemption(self, kind: ExemptFrom) -> ActiveExemption | None:
        for e in self.exemptions:
            if e.exempt_from == kind:
                return e
        return None


class GlobalPolicy(BaseModel):
    """Host-wide settings that do not vary per container."""

    model_config = ConfigDict(frozen=True)

    gpu_reset_policy: Sourced[GpuResetPolicy]
    gpu_reset_command: Sourced[tuple[str, ...]]
    host_gpu_processes: Sourced[HostProcessPolicy]
    max_destructive_actions_per_pass: Sourced[int]
    breaker_max_fraction: Sourced[float] = Field(
        description="Trip when one pass would stop more than this share of running GPU containers"
    )
    breaker_min_containers: Sourced[int] = Field(
        description="The breaker only considers shares when at least this many would be stopped"
    )
    release_breaker_max_fraction: Sourced[float] = Field(
        description="Hold back ledger releases when one pass would release more than this share of its rows"
    )
    release_breaker_min_rows: Sourced[int] = Field(
        description="The release breaker only considers shares when at least this many rows would go"
    )
    breaker_max_remove_fraction: Sourced[float] = Field(
        description="Trip when one pass would remove more than this share of the stopped containers"
    )
    breaker_min_removals: Sourced[int] = Field(
        description="The breaker only considers the removal share when at least this many would be removed"
    )
    restart_stopped_hold_s: Sourced[float | None] = Field(
        description="Hold of a container stopped by an engine or host restart; None: an admin decides"
    )
    ledger_reservation_window_s: Sourced[float]
    orphan_sightings_required: Sourced[int]
    max_sample_interval_s: Sourced[float] = Field(
        description="An activity sample taken longer than this after the previous one is undecidable"
    )
    kill_grace_s: Sourced[float]
    max_concurrent_actions: Sourced[int] = Field(
        default=Sourced(value=4, source="built-in default"), description="Actions the daemon runs at once"
    )
    max_action_age_s: Sourced[float | None] = Field(
        default=Sourced(value=None, source="built-in default"),
        description="Oldest a plan may be when one of its actions starts; None: the resync interval",
    )
    transient_process_min_age_s: Sourced[float] = Field(
        default=Sourced(value=60.0, source="built-in default"),
        description="How long a bare host GPU process must be seen before it is announced (DS01: ~60 s)",
    )
    trust_labels: Sourced[bool] = Field(
        description="Honour ds01.protected/ds01.monitoring/ds01.user labels (admission layer enforces them)"
    )
    system_process_names: Sourced[tuple[str, ...]]
    host_keepalive_path: Sourced[str] = Field(
        default=Sourced(value="/workspace/.keep-alive", source="built-in default"),
        description=(
            "The one keep-alive path the observer reads in every container: the policy's setting for "
            "an owner in no group and a container of unknown type (per-group or per-type paths are "
            "shown by describe, not read)"
        ),
    )
    engine_cgroup_parents: Sourced[tuple[str, ...]] = Field(
        description="Cgroup parents of this engine's containers; GPU processes elsewhere are foreign"
    )
    update_limits: Sourced[bool] = Field(
        default=Sourced(value=False, source="built-in default"),
        description="Bring containers above their owner's limits down in place (UpdateResources)",
    )
    memory_margin_pct: Sourced[float] = Field(
        default=Sourced(value=10.0, source="built-in default"),
        description="A memory limit is never set below current use plus this share (%)",
    )
    quota_enforce: Sourced[str] = Field(
        default=Sourced(value="report", source="built-in default"),
        description="report: warn and alert on quotas; stop: also stop the newest beyond the quota",
    )
    aggregate_alerts: Sourced[bool] = Field(
        default=Sourced(value=False, source="built-in default"),
        description="AlertAdmin for a user whose containers bypass their slice or sum over its caps",
    )


# A warning lead is capped at this share of the timeout: the planner's ladder and validate's warning.
LEAD_FRACTION = 0.2


def _show(value: float) -> str:
    return format_duration(value)


class Interaction(NamedTuple):
    """One setting that overrides another or makes it meaningless: the text, and the settings it
    names, each as (its key under ``settings``, e.g. ``keepaliveMaxAge``, and where its value came
    from), so ``validate`` can point at the line of each key."""

    text: str
    keys: tuple[tuple[str, str], ...]


def setting_interactions(eff: EffectivePolicy) -> list[str]:
    """Where one setting overrides another or makes it meaningless, each with both sources.

    Shown by ``validate`` (per group and type), ``plan`` and ``describe``: the admin sees which setting
    decides a due time, not only the one they changed.
    """
    return [i.text for i in interactions(eff)]


def interactions(eff: EffectivePolicy) -> list[Interaction]:
    """:func:`setting_interactions` with the keys each one names."""
    notes: list[Interaction] = []
    idle = eff.idle_timeout_s
    span = eff.idle_min_duration_s
    if idle.value is not None and span.value > idle.value:
        notes.append(
            Interaction(
                f"idleMinDuration {_show(span.value)} ({span.source}) is longer than the idle timeout "
                f"{_show(idle.value)} ({idle.source}): an idle stop comes after {_show(span.value)} of "
                "continuous idleness; idleMinDuration decides, not the idle timeout",
                (("idleMinDuration", span.source), ("idleTimeout", idle.source)),
            )
        )
    lead = eff.warn_lead_s
    for what, key, timeout in (
        ("idle timeout", "idleTimeout", idle),
        ("max runtime", "maxRuntime", eff.max_runtime_s),
    ):
        if timeout.value is not None and lead.value > timeout.value:
            notes.append(
                Interaction(
                    f"warnLead {_show(lead.value)} ({lead.source}) is longer than the {what} "
                    f"{_show(timeout.value)} ({timeout.source}): the lead is capped at "
                    f"{LEAD_FRACTION:.0%} of the timeout, {_show(round(LEAD_FRACTION * timeout.value, 3))}",
                    (("warnLead", lead.source), (key, timeout.source)),
                )
            )
    cap, runtime = eff.keepalive_max_age_s, eff.max_runtime_s
    if runtime.value is not None and cap.value is not None and cap.value > runtime.value:
        notes.append(
            Interaction(
                f"keepaliveMaxAge {_show(cap.value)} ({cap.source}) is longer than the max runtime "
                f"{_show(runtime.value)} ({runtime.source}): a keep-alive holds off only the idle stop; "
                "the max runtime stops the container first",
                (("keepaliveMaxAge", cap.source), ("maxRuntime", runtime.source)),
            )
        )
    return notes
