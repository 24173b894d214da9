"""A large synthetic host's plan (every action, deferral and memory record, in order) stays what it was.

The planner's speed work (counting, formatting and sorting done once or lazily, plain values inside
the planner) must not change a single byte of the plan; the digests below are those of the planner
before it, on the bench's synthetic host: the plan ``plan -o json`` prints, and the deferrals as the
CLI reads them (messages, evidence and order included).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from bench import synthetic
from controller.plan.desired import PolicySetDesired
from controller.plan.planner import plan
from controller.plan.types import Plan
from desired_state.load import load_policy

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
SIZE = 2_000
DEFERRALS_DIGEST = "d3d69ae3d88158f9e39bc48fdc763a853244dfe275a9e6d11765420044affe8f"
PLAN_DIGEST = "cfa38b3323cb517f61cc3909e27d507f0428f2a1baed7c6217344d0134070934"


def _plan(n: int) -> Plan:
    snapshot, memory = synthetic.build(n, NOW)
    return plan(snapshot, PolicySetDesired(load_policy()), memory, NOW)


def _deferrals_digest(the_plan: Plan) -> str:
    h = hashlib.sha256()
    for d in the_plan.deferred:
        row = (d.target.model_dump(mode="json"), d.rule, d.why, d.message, d.due_at, d.evidence)
        h.update(repr(row).encode())
        h.update(b"\n")
    return h.hexdigest()


def test_the_plan_is_identical_to_the_planner_before() -> None:
    the_plan = _plan(SIZE)
    assert len(the_plan.deferred) > 500
    assert len(the_plan.actions) > 100
    assert _deferrals_digest(the_plan) == DEFERRALS_DIGEST
    assert hashlib.sha256(the_plan.model_dump_json().encode()).hexdigest() == PLAN_DIGEST
