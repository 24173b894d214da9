"""A large synthetic host's deferrals (messages, evidence and order included) stay what they were.

The planner's speed work (counting, formatting and sorting done once or lazily) must not change a
single deferral; the digest below is that of the planner before it, on the bench's synthetic host.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from bench import synthetic
from controller.plan.desired import PolicySetDesired
from controller.plan.planner import plan
from desired_state.load import load_policy

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
SIZE = 2_000
DIGEST = "d3d69ae3d88158f9e39bc48fdc763a853244dfe275a9e6d11765420044affe8f"


def _digest(n: int) -> tuple[int, str]:
    snapshot, memory = synthetic.build(n, NOW)
    the_plan = plan(snapshot, PolicySetDesired(load_policy()), memory, NOW)
    h = hashlib.sha256()
    for d in the_plan.deferred:
        row = (d.target.model_dump(mode="json"), d.rule, d.why, d.message, d.due_at, d.evidence)
        h.update(repr(row).encode())
        h.update(b"\n")
    return len(the_plan.deferred), h.hexdigest()


def test_deferrals_identical_to_the_planner_before() -> None:
    count, digest = _digest(SIZE)
    assert count > 500
    assert digest == DIGEST
