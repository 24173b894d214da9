"""The ``docker update`` body the executor sends for an UpdateResources, from the limits it finds
right before acting: only what is still above the plan's values, and nothing ever raised."""

from __future__ import annotations

from controller.plan.limits_update import after_update, still_needed
from controller.plan.types import ResourceUpdate
from controller.snapshot import ResourceLimits

MiB = 1 << 20
GiB = 1 << 30


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


def test_a_reservation_above_the_memory_sent_comes_down_with_it() -> None:
    """Docker takes ``Memory`` below the container's ``MemoryReservation`` and then refuses to start
    it ("Minimum memory limit can not be less than memory reservation limit"): the body lowers the
    reservation to the memory it sends, judged on the limits read right before acting."""
    wanted = ResourceUpdate(memory_bytes=256 * MiB, memory_swap_bytes=256 * MiB)
    reserved = ResourceLimits(memory_reservation_bytes=512 * MiB)
    assert still_needed(wanted, reserved) == {
        "Memory": 256 * MiB,
        "MemorySwap": 256 * MiB,
        "MemoryReservation": 256 * MiB,
    }
    # At or below the memory: left alone (never raised, never sent for nothing).
    for at_or_below in (256 * MiB, 64 * MiB):
        fine = ResourceLimits(memory_reservation_bytes=at_or_below)
        assert still_needed(wanted, fine) == {"Memory": 256 * MiB, "MemorySwap": 256 * MiB}
    # Raised since the plan (the plan saw none): read now, so still lowered with the memory.
    planned_without = ResourceUpdate(memory_bytes=256 * MiB, memory_swap_bytes=256 * MiB)
    since = ResourceLimits(memory_bytes=GiB, memory_swap_bytes=GiB, memory_reservation_bytes=GiB)
    assert still_needed(planned_without, since)["MemoryReservation"] == 256 * MiB
    # Memory already at the plan's (someone lowered it): nothing to send, the reservation is not ours.
    done = ResourceLimits(memory_bytes=256 * MiB, memory_swap_bytes=256 * MiB, memory_reservation_bytes=GiB)
    assert still_needed(wanted, done) == {}
    # What the engine then reports: the reservation at the memory limit.
    after = after_update(reserved, still_needed(wanted, reserved))
    assert (after.memory_bytes, after.memory_reservation_bytes) == (256 * MiB, 256 * MiB)
    assert still_needed(wanted, after) == {}
