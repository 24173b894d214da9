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
# Changed twice since, on purpose: two runtime deferrals whose first warning goes out in this very
# pass now show the stop at that warning plus its lead (12:10), the time the daemon keeps, not the
# bare limit (12:01 and 12:06); and the actions the per-pass budget holds say the pass each comes
# at (``in_passes``; "next pass" only for the first budget's worth). And the plan (not the
# deferrals) once more: the owner's notices of the runtime and quota warnings say for how long the
# stopped container is kept before its hold removes it. And the plan again: those warnings carry the
# hold their notice names as a number too (evidence ``kept_after_stop_s``, which the executor records
# with the start). Nothing else moved.
DEFERRALS_DIGEST = "df8d558dc3c4c786fd574ed3d5616dbb15a19caefd6a7b20181c1c06076304d6"
PLAN_DIGEST = "fc249a5d436f341c6060df359855be85203197956b337af2e90bfef58e4a8e95"


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
