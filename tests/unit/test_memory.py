"""Memory transitions: outcomes recorded by the executor, and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.memory import RETENTION_S, ControllerMemory

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_old_done_keys_and_attempts_are_pruned_recent_ones_kept() -> None:
    old = NOW - timedelta(seconds=RETENTION_S + 60)
    memory = (
        ControllerMemory()
        .with_done("WarnOwner:old", old)
        .with_done("WarnOwner:new", NOW - timedelta(hours=1))
        .with_failure("StopContainer:old", "boom", old - timedelta(hours=1))
        .with_failure("StopContainer:new", "boom", NOW)
    )
    pruned = memory.pruned(NOW)
    assert set(pruned.done) == {"WarnOwner:new"}
    assert set(pruned.attempts) == {"StopContainer:new"}


def test_pruning_nothing_returns_the_same_value() -> None:
    memory = ControllerMemory().with_done("k", NOW)
    assert memory.pruned(NOW) is memory


def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    memory = ControllerMemory()
    delays = []
    for _ in range(12):
        memory = memory.with_failure("k", "err", NOW, base_s=5.0, cap_s=900.0)
        attempt = memory.attempts["k"]
        assert attempt.next_attempt_at is not None
        delays.append((attempt.next_attempt_at - NOW).total_seconds())
    assert delays[:4] == [5.0, 10.0, 20.0, 40.0]
    assert max(delays) == 900.0
    assert memory.attempts["k"].failures == 12


def test_done_clears_the_failure_record() -> None:
    memory = ControllerMemory().with_failure("k", "err", NOW).with_done("k", NOW)
    assert "k" not in memory.attempts
    assert memory.done["k"] == NOW


def test_warning_is_recorded_per_container_id() -> None:
    memory = ControllerMemory().with_warning("abc", "idle:80", NOW)
    assert memory.containers["abc"].warnings == {"idle:80": NOW}
    assert memory.forget_container("abc").containers == {}
