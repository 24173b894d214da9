"""Words every layer shares: container types and the enumerated values of the policy's keys.

Kept here, below the kinds, the policy resolver and the observer, so none of them imports another
for a word: the kinds validate these values, the resolver hands them to the planner.
"""

from __future__ import annotations

from enum import StrEnum


class ContainerType(StrEnum):
    """How a container was created, as DS01 classifies it (label-schema.yaml, notes section 2.3)."""

    DEVCONTAINER = "devcontainer"
    COMPOSE = "compose"
    DOCKER = "docker"
    ATOMIC = "atomic"
    ORCHESTRATION = "orchestration"
    API = "api"
    CUSTOM = "custom"
    UNKNOWN = "unknown"


class ExemptFrom(StrEnum):
    IDLE = "idle"
    MAX_RUNTIME = "max_runtime"
    CLEANUP = "cleanup"
    RESOURCES = "resources"  # the CPU, memory and pids limits and the quota stops


class GpuResetPolicy(StrEnum):
    NEVER = "never"
    WHEN_EXCLUSIVE = "when-exclusive"


class HostProcessPolicy(StrEnum):
    REPORT = "report"  # bare host GPU processes are reported, never killed


class MigIdleFallback(StrEnum):
    """What decides the idle state of a MIG device, whose utilisation NVML never reports."""

    CPU_AND_NETWORK = "cpu-and-network"  # CPU and network decide alone (weaker evidence; DS01's rule)
    NEVER = "never"  # a container on a MIG device is never idle (never idle-stopped)
