"""The ``docker update`` of an UpdateResources action, and the limits it leaves.

:func:`still_needed` is the body the executor sends: only the limits still above the action's
(``ResourceUpdate``), so an update already done is success and nothing is raised.
:func:`after_update` is what Docker then reports in ``HostConfig``: each field of the body set,
the others as they were. The executor sends the first and verifies with it; the forecast applies
the second to its simulated container, so a later simulated pass sees the new limits (and plans
no update again), as the daemon's next pass does. Pure.
"""

from __future__ import annotations

from controller.plan.types import ResourceUpdate
from controller.snapshot import ResourceLimits

# ``docker update`` body fields (Docker API names) -> ``ResourceLimits`` fields.
_FIELDS = {
    "NanoCpus": "nano_cpus",
    "CpuQuota": "cpu_quota_us",
    "CpuPeriod": "cpu_period_us",
    "Memory": "memory_bytes",
    "MemorySwap": "memory_swap_bytes",
    "MemoryReservation": "memory_reservation_bytes",
    "PidsLimit": "pids_limit",
}


def still_needed(wanted: ResourceUpdate, limits: ResourceLimits | None) -> dict[str, int]:
    """The ``docker update`` body for the limits still above ``wanted`` (API field names).

    A limit at or below the wanted one is left out: "already done" is success and nothing is
    raised. Memory and swap travel together (Docker checks one against the other). A memory
    reservation above the memory limit sent comes down to it, judged on ``limits`` (read right
    before acting) whatever the plan saw: Docker takes the update without it but then refuses to
    start the container ("Minimum memory limit can not be less than memory reservation limit").
    """
    have = limits or ResourceLimits()
    body: dict[str, int] = {}
    if wanted.nano_cpus is not None and (have.cpus is None or have.cpus * 1e9 > wanted.nano_cpus + 1):
        body["NanoCpus"] = wanted.nano_cpus
    if wanted.cpu_quota_us is not None and (
        have.cpus is None or have.cpus > wanted.cpu_quota_us / (wanted.cpu_period_us or 100_000) + 1e-9
    ):
        body["CpuQuota"] = wanted.cpu_quota_us
        if wanted.cpu_period_us is not None:
            body["CpuPeriod"] = wanted.cpu_period_us
    memory_high = wanted.memory_bytes is not None and (
        have.memory_bytes is None or have.memory_bytes > wanted.memory_bytes
    )
    swap = wanted.memory_swap_bytes
    swap_high = swap is not None and (
        swap != -1 and (have.total_swap_bytes is None or have.total_swap_bytes > swap)
    )
    if memory_high or swap_high:
        if wanted.memory_bytes is not None and (
            have.memory_bytes is None or have.memory_bytes > wanted.memory_bytes or swap_high
        ):
            body["Memory"] = min(wanted.memory_bytes, have.memory_bytes or wanted.memory_bytes)
        if swap == -1 and have.total_swap_bytes is not None:
            # Planned on a container without a memory limit (swap unlimited with the new memory); a
            # total was set since: kept, never lifted to unlimited.
            body["MemorySwap"] = max(have.total_swap_bytes, body.get("Memory", 0))
        elif swap is not None:
            body["MemorySwap"] = swap
    reservation = lowered_reservation(body.get("Memory"), have.memory_reservation_bytes)
    if reservation is not None:
        body["MemoryReservation"] = reservation
    if wanted.pids_limit is not None and (have.pids_limit is None or have.pids_limit > wanted.pids_limit):
        body["PidsLimit"] = wanted.pids_limit
    return body


def lowered_reservation(memory_bytes: int | None, reservation_bytes: int | None) -> int | None:
    """The memory reservation an update that sets ``memory_bytes`` must also set, or None: one above
    the new limit comes down to it (Docker takes the update without it, then refuses to start the
    container); none, or one at or below it, is left alone, and nothing without a memory limit sent."""
    if memory_bytes is not None and reservation_bytes is not None and reservation_bytes > memory_bytes:
        return memory_bytes
    return None


def after_update(limits: ResourceLimits | None, body: dict[str, int]) -> ResourceLimits:
    """The limits a container reports once ``docker update`` set ``body`` on it."""
    have = limits or ResourceLimits()
    return have.model_copy(update={_FIELDS[k]: v for k, v in body.items() if k in _FIELDS})


__all__ = ["after_update", "still_needed"]
