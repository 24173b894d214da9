"""Generate the JSON Schemas in ``schemas/`` from the kinds: ``python -m crd_like_specs.generate``.

``--check`` writes nothing and exits 1 when a checked-in schema differs from the generated one (the
test suite runs the same comparison). Editors can point their YAML language server at these files.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from crd_like_specs.kinds import API_VERSION, KINDS

SCHEMA_DIR: Final = Path(__file__).parent / "schemas"


def _tidy(node: Any) -> Any:
    """Drop pydantic's generated titles and the ``default: null`` that only means 'unset' here."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "title" and isinstance(value, str):
                continue
            if key == "default" and value is None:
                continue
            out[key] = _tidy(value)
        return out
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    return node


def schema_for(kind: str) -> dict[str, Any]:
    model = KINDS[kind]
    schema = _tidy(model.model_json_schema(by_alias=True, mode="validation"))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://ds01.io/schemas/{API_VERSION}/{kind}.json",
        "title": kind,
        **schema,
    }


def rendered() -> dict[str, str]:
    """File name -> text of every schema, as it should be checked in."""
    return {f"{kind}.json": json.dumps(schema_for(kind), indent=2, sort_keys=False) + "\n" for kind in KINDS}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    stale: list[str] = []
    for name, text in rendered().items():
        path = SCHEMA_DIR / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not check:
            SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if check and stale:
        sys.stderr.write(f"stale schemas: {', '.join(stale)}; run python -m crd_like_specs.generate\n")
        return 1
    for name in stale:
        sys.stdout.write(f"wrote {SCHEMA_DIR / name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
