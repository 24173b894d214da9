"""The checked-in JSON Schemas are generated from the kinds and must not go stale."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from crd_like_specs import generate
from crd_like_specs.durations import DURATION_PATTERN
from crd_like_specs.kinds import KINDS


def test_checked_in_schemas_match_the_kinds() -> None:
    expected = generate.rendered()
    assert sorted(expected) == sorted(f"{k}.json" for k in KINDS)
    stale = [name for name, text in expected.items() if (generate.SCHEMA_DIR / name).read_text() != text]
    assert stale == [], "run: python -m crd_like_specs.generate"


def test_check_mode_fails_on_a_stale_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(generate.SCHEMA_DIR, schemas)
    monkeypatch.setattr(generate, "SCHEMA_DIR", schemas)
    assert generate.main(["--check"]) == 0
    (schemas / "UserGroup.json").write_text("{}\n")
    assert generate.main(["--check"]) == 1
    assert generate.main([]) == 0  # regenerates
    assert generate.main(["--check"]) == 0


@pytest.mark.parametrize("kind", list(KINDS))
def test_schemas_are_strict_and_use_our_vocabulary(kind: str) -> None:
    schema = json.loads((generate.SCHEMA_DIR / f"{kind}.json").read_text())
    assert schema["title"] == kind
    assert schema["properties"]["kind"]["const"] == kind
    assert schema["additionalProperties"] is False
    assert all(
        d.get("additionalProperties") is False for d in schema["$defs"].values() if d.get("type") == "object"
    )
    text = json.dumps(schema)
    assert '"title": "' not in text.replace(f'"title": "{kind}"', "")  # no generated noise
    assert "idle_timeout" not in text  # camelCase keys only


def test_duration_fields_are_strings_with_units() -> None:
    schema = json.loads((generate.SCHEMA_DIR / "LifecyclePolicy.json").read_text())
    settings = schema["$defs"]["Settings"]["properties"]
    grace = settings["gracePeriod"]
    assert grace["type"] == "string" and grace["pattern"] == DURATION_PATTERN
    idle = settings["idleTimeout"]["anyOf"]
    assert {"type": "null"} in idle  # null: never
    pattern = re.compile(DURATION_PATTERN)
    assert pattern.match("1h30m") and not pattern.match("48") and not pattern.match("-1h")
    # a not-null number is not offered null by the schema either
    assert settings["gpuIdleThresholdPct"] == {
        "description": "GPU utilisation (%) below which the GPU counts as idle",
        "maximum": 100,
        "minimum": 0,
        "type": "number",
    }
