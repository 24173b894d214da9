"""The ``docker update`` body the executor sends for an UpdateResources, from the limits it finds
right before acting: only what is still above the plan's values, and nothing ever raised."""

from __future__ import annotations

from controller.plan.limits_update import still_needed
from controller.plan.types import ResourceUpdate
from controller.snapshot import ResourceLimits

MiB = 1 << 20


def test_a_limit_set_since_the_plan_is_not_raised_to_unlimited_swap() -> None:
    """Planned on a container with no memory limit (so swap unlimited with the new memory); someone
    set memory and a finite swap total before the action ran: the total is kept, not lifted."""
    wanted = ResourceUpdate(memory_bytes=64 * MiB, memory_swap_bytes=-1)
    assert still_needed(wanted, ResourceLimits()) == {"Memory": 64 * MiB, "MemorySwap": -1}
    since = ResourceLimits(memory_bytes=128 * MiB, memory_swap_bytes=192 * MiB)
    assert still_needed(wanted, since) == {"Memory": 64 * MiB, "MemorySwap": 192 * MiB}
    docker_default = ResourceLimits(memory_bytes=128 * MiB)  # swap total: twice the memory
    assert still_needed(wanted, docker_default) == {"Memory": 64 * MiB, "MemorySwap": 256 * MiB}
    unlimited_swap = ResourceLimits(memory_bytes=128 * MiB, memory_swap_bytes=-1)
    assert still_needed(wanted, unlimited_swap) == {"Memory": 64 * MiB, "MemorySwap": -1}


def test_limits_at_or_below_the_plan_are_left_out() -> None:
    wanted = ResourceUpdate(memory_bytes=64 * MiB, memory_swap_bytes=96 * MiB, pids_limit=100)
    at = ResourceLimits(memory_bytes=64 * MiB, memory_swap_bytes=96 * MiB, pids_limit=50)
    assert still_needed(wanted, at) == {}
    swap_high = ResourceLimits(memory_bytes=32 * MiB, memory_swap_bytes=512 * MiB, pids_limit=100)
    assert still_needed(wanted, swap_high) == {"Memory": 32 * MiB, "MemorySwap": 96 * MiB}
