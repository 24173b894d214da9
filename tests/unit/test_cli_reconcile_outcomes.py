"""`ds01ctl reconcile` reports each action's outcome truly: a removal the engine is still carrying
out when the wait ends is `in_progress`, not `failed` (the pass exits 0); a failure exits 1."""

from __future__ import annotations

import pytest

from controller.act.report import ActionOutcome, ExecutionReport, Outcome
from controller.cli.reconcile import _print_result
from controller.cli.render import PLAIN
from controller.loop import PassResult
from controller.memory import ControllerMemory
from controller.plan.types import ActionKind, Plan, Reason, Target
from tests.fixtures import builders as b


def _result(outcome: Outcome, detail: str) -> PassResult:
    cid = b.cid("train")
    done = ActionOutcome(
        key=f"RemoveContainer:{cid}:StoppedHoldExpired",
        kind=ActionKind.REMOVE_CONTAINER,
        reason=Reason.STOPPED_HOLD_EXPIRED,
        target=Target(container="train", container_id=cid, user="alice"),
        outcome=outcome,
        detail=detail,
    )
    report = ExecutionReport(outcomes=(done,), memory=ControllerMemory())
    the_plan = Plan(observed_at=b.T0, evaluated_at=b.T0)
    return PassResult(b.snapshot(), the_plan, report, 0.1, "pass summary")


def test_a_removal_still_under_way_is_in_progress_and_not_a_failed_pass(
    capsys: pytest.CaptureFixture[str],
) -> None:
    detail = "the engine is still removing it after the wait; recorded once it is gone"
    rc = _print_result(_result(Outcome.IN_PROGRESS, detail), False, "table", PLAIN)
    out = capsys.readouterr().out
    assert rc == 0
    assert "in_progress  RemoveContainer train" in out and "failed" not in out


def test_a_failed_action_still_fails_the_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert _print_result(_result(Outcome.FAILED, "docker error"), False, "table", PLAIN) == 1
    assert "failed  RemoveContainer train" in capsys.readouterr().out
