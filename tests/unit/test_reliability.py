"""Reliability under faults: the pass summary for a domain that is down, durable intent records,
failing closed when the record cannot be written, and starting from corrupt state (issue 18)."""

from __future__ import annotations

from controller.act.report import ExecutionReport
from controller.loop import summarize
from controller.plan.types import Plan
from controller.snapshot import Domain
from tests.fixtures import builders as b


def test_summary_says_unknown_for_a_domain_that_is_down() -> None:
    snap = b.snapshot(down=[Domain.DOCKER, Domain.NVML])
    plan = Plan(observed_at=snap.observed_at, evaluated_at=snap.observed_at)
    line = summarize(snap, plan, ExecutionReport(), 0.1)
    assert "containers=unknown running=unknown" in line
    assert "gpus=unknown" in line
    assert "containers=0" not in line
    assert "unavailable=docker,nvml" in line


def test_summary_counts_when_the_domains_answer() -> None:
    c = b.container()
    snap = b.snapshot(containers=[c], gpus=[b.gpu(0)])
    plan = Plan(observed_at=snap.observed_at, evaluated_at=snap.observed_at)
    line = summarize(snap, plan, ExecutionReport(), 0.1)
    assert "containers=1 running=1" in line
    assert "gpus=1" in line
