"""Words every layer shares: container types and the trust levels of container labels.

Kept here, below both the observer and the policy resolver, so neither imports the other.
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
