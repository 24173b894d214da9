"""``ds01ctl plan -o wide`` shortens long evidence values without breaking them; ``-o json`` keeps them.

A list or mapping printed in the wide view is still JSON (its first items, then one item that says
how many more there are); a long string is cut at a word with an ellipsis; the evidence line then
says that ``-o json`` has every value whole.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from controller.cli.planview import EVIDENCE_VALUE_MAX, evidence_text, plan_json, plan_text
from controller.cli.render import clean_tree
from controller.plan.types import Plan
from tests.unit import cli_world as w

NOTE = "(shortened; -o json has every value whole)"
NAMES = [f"student{i:03d}-notebook" for i in range(60)]
HOLDERS = {f"GPU-{i:02d}-5d7c0f3e-1b2a": [f"user{i}-train", f"user{i}-eval"] for i in range(30)}
TEXT = " ".join(f"word{i}" for i in range(80))


def _value(key: str, value: Any) -> str:
    """The printed text of one evidence value, with the note at the end removed."""
    line = evidence_text({key: value})
    assert line.startswith(f"{key}=")
    assert line.endswith(f" {NOTE}"), line
    return line[len(key) + 1 : -len(NOTE) - 1]


def test_a_long_list_is_shown_as_json_with_its_first_items_and_how_many_more() -> None:
    shown = _value("containers", NAMES)
    assert len(shown) <= EVIDENCE_VALUE_MAX
    parsed = json.loads(shown)
    assert isinstance(parsed, list) and len(parsed) >= 2
    *kept, more = parsed
    assert kept == NAMES[: len(kept)]
    assert more == f"… +{len(NAMES) - len(kept)} more"


def test_a_long_mapping_is_shown_as_json_with_its_first_keys_and_how_many_more() -> None:
    shown = _value("holders", HOLDERS)
    assert len(shown) <= EVIDENCE_VALUE_MAX
    parsed = json.loads(shown)
    assert isinstance(parsed, dict)
    more = parsed.pop("…")
    assert parsed and all(HOLDERS[k] == v for k, v in parsed.items())
    assert more == f"+{len(HOLDERS) - len(parsed)} more"


def test_a_long_string_inside_a_structure_keeps_the_json_whole() -> None:
    shown = _value("commands", [TEXT, "short"])
    parsed = json.loads(shown)
    assert parsed[0].endswith("…") and TEXT.startswith(parsed[0][:-1].rstrip())


def test_a_long_string_is_cut_at_a_word_with_an_ellipsis() -> None:
    shown = _value("message", TEXT)
    assert len(shown) <= EVIDENCE_VALUE_MAX
    assert shown.endswith("…")
    head = shown[:-1]
    assert TEXT.startswith(head) and TEXT[len(head)] == " "  # the cut falls between words


SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=60)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=12,
)


@given(
    st.lists(JSON_VALUES, min_size=1, max_size=30)
    | st.dictionaries(st.text(max_size=12), JSON_VALUES, min_size=1)
)
def test_a_structured_value_always_prints_as_json(value: list[Any] | dict[str, Any]) -> None:
    line = evidence_text({"v": value})
    shown = line.removesuffix(f" {NOTE}")[2:]
    parsed = json.loads(shown)
    assert type(parsed) is type(value)
    whole = clean_tree(value, 1 << 30)  # what -o json prints: the same value, every string cleaned
    assert (shown != line[2:]) == (parsed != whole)  # the note exactly when it was shortened


def test_short_values_are_printed_whole_without_the_note() -> None:
    assert evidence_text({"a": [1, 2], "b": {"x": "y"}, "c": "text"}) == 'a=[1,2], b={"x":"y"}, c=text'


def test_plan_wide_shortens_and_json_keeps_every_value_whole() -> None:
    v = w.view()
    assert v.plan is not None and v.plan.actions
    first = v.plan.actions[0]
    evidence = {"containers": NAMES, "holders": HOLDERS, "message": TEXT}
    plan = Plan.model_validate(
        {
            **v.plan.model_dump(),
            "actions": [first.model_copy(update={"evidence": evidence}), *v.plan.actions[1:]],
        }
    )
    wide = plan_text(plan, wide=True)
    line = next(x for x in wide.splitlines() if "containers=" in x)
    assert line.rstrip().endswith(NOTE)
    assert NAMES[-1] not in line
    data = plan_json(plan)
    (action,) = [a for a in data["actions"] if a["key"] == first.key]
    assert action["evidence"] == evidence
