"""``ds01ctl explain`` says what the two holds of a stopped container do, as the planner applies them.

The planner removes a stopped container that references a GPU when the shorter of
``gpuHoldAfterStop`` and ``containerHoldAfterStop`` ends; ``null`` for one of them leaves the
other. ``explain`` said ``gpuHoldAfterStop`` null keeps it "indefinitely" and
``containerHoldAfterStop`` null means "never auto-removed": with the built-in 30m container hold a
GPU container is removed 30 minutes after it stopped, whatever the null GPU hold.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from controller.cli.explain import explain
from controller.plan.types import ActionKind, Reason
from tests.fixtures import builders as b

FIELD = "LifecyclePolicy.spec.settings."


def removed_at(gpu_hold_s: float | None, container_hold_s: float | None) -> tuple[datetime, Reason]:
    """When the planner removes a GPU container that stopped at T0, and by which rule."""
    pol = b.policy(gpu_hold_after_stop_s=gpu_hold_s, container_hold_after_stop_s=container_hold_s)
    passes = b.Passes(b.desired(pol))
    for minute in range(0, 120):
        t = b.at(minutes=minute)
        c = b.exited("stopped", gpus=[b.GPU0], finished_at=b.T0)
        p = passes.run(b.snapshot(observed_at=t, containers=[c], gpus=(b.gpu(0),)))
        (removal,) = b.actions_of(p, ActionKind.REMOVE_CONTAINER) or (None,)
        if removal is not None:
            return t, removal.reason
    raise AssertionError("not removed within two hours")


@pytest.mark.parametrize(
    ("null", "other", "other_s", "rule"),
    [
        ("gpuHoldAfterStop", "containerHoldAfterStop", 1800.0, Reason.STOPPED_HOLD_EXPIRED),
        ("containerHoldAfterStop", "gpuHoldAfterStop", 900.0, Reason.GPU_HOLD_EXPIRED),
    ],
)
def test_a_null_hold_leaves_the_other_and_explain_says_so(
    null: str, other: str, other_s: float, rule: Reason
) -> None:
    holds = (None, other_s) if null == "gpuHoldAfterStop" else (other_s, None)
    at, reason = removed_at(*holds)
    assert (at, reason) == (b.at(seconds=other_s), rule)  # the other hold removes it
    text = explain(FIELD + null)
    assert "indefinitely" not in text and "never auto-removed" not in text, text
    assert other in text, text  # it names the hold that still applies


def test_explain_says_the_shorter_hold_removes_a_gpu_container() -> None:
    # Both set: the shorter one (here the container hold) removes it.
    assert removed_at(3600.0, 1800.0) == (b.at(minutes=30), Reason.STOPPED_HOLD_EXPIRED)
    for field in ("gpuHoldAfterStop", "containerHoldAfterStop"):
        assert "shorter" in explain(FIELD + field), explain(FIELD + field)
