"""The README's rule table states the built-in policy's defaults: a test keeps them one truth."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from crd_like_specs.vocabulary import ContainerType
from desired_state.load import builtin_policy
from desired_state.resolve import global_policy, resolve_effective_policy

README = Path(__file__).parent.parent.parent / "README.md"
NOW = datetime(2026, 1, 30, tzinfo=UTC)
UNIT_S = {"min": 60.0, "h": 3600.0}


def rule_table() -> dict[str, str]:
    """Rule name -> the Default column, from the README's 'What it does' table."""
    rows: dict[str, str] = {}
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| Rule | Condition |") :].split("\n\n", 1)[0]
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[-1]
    return rows


def seconds(text: str) -> list[tuple[float, str]]:
    """'30 min (student), 1 h (researcher)' -> [(1800, 'student'), (3600, 'researcher')]."""
    found = re.findall(r"(\d+(?:\.\d+)?) (min|h)(?: \(([a-z]+)\))?", text)
    return [(float(n) * UNIT_S[u], who) for n, u, who in found]


def test_the_readme_rule_table_states_the_built_in_defaults() -> None:
    rows = rule_table()
    policy = builtin_policy()
    eff = resolve_effective_policy(
        policy, owner="anyone", container_type=ContainerType.ATOMIC, name="c", labels={}, now=NOW
    )
    gp = global_policy(policy)
    assert seconds(rows["Created, never started"])[0][0] == eff.created_container_timeout_s.value
    assert seconds(rows["Stopped, holds a GPU"])[0][0] == eff.gpu_hold_after_stop_s.value
    assert seconds(rows["Stopped"])[0][0] == eff.container_hold_after_stop_s.value
    assert seconds(rows["Leaked allocation"])[0][0] == gp.ledger_reservation_window_s.value

    # The idle and runtime columns, per container type and group: tests/unit/test_readme.py.
    reset = re.search(r"reset: ([a-z-]+)", rows["Dirty GPU"])
    assert reset is not None and reset.group(1) == gp.gpu_reset_policy.value.value
