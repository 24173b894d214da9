"""docs/architecture.md stays true: the modules it names exist, and its walk of one value is short."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"
MODULE = re.compile(r"`((?:controller|desired_state|crd_like_specs)/[\w/]*\.py|controller/\w+/)`")


def test_every_module_the_page_names_exists() -> None:
    named = set(MODULE.findall(DOC.read_text(encoding="utf-8")))
    assert named
    assert sorted(m for m in named if not (REPO / m).exists()) == []


def test_the_walk_from_yaml_to_stopcontainer_is_short_and_names_each_module_once() -> None:
    text = DOC.read_text(encoding="utf-8")
    walk = text.split("## One value from YAML to `StopContainer`", 1)[1]
    steps = re.findall(r"^\d+\. ", walk, flags=re.MULTILINE)
    assert 0 < len(steps) < 10
    named = MODULE.findall(walk)
    assert len(named) == len(set(named)), sorted(m for m in named if named.count(m) > 1)
    assert "StopContainer" in walk and "idle_timeout_s" in walk
