"""No function in the planner (``controller/plan/``) grows over the limit.

The rules are read as short sequences of named checks (preconditions, then the decision, then the
action); a long function is where a missed branch hides. Parses every module with ``ast``; the
failure names each function over the limit and its length.
"""

from __future__ import annotations

import ast
from pathlib import Path

import controller.plan

MAX_LINES = 60
PLAN_DIR = Path(controller.plan.__file__).parent


def function_lengths(root: Path) -> list[tuple[str, int]]:
    """(``module::qualified.name``, lines from ``def`` to the last line) for every function."""
    found: list[tuple[str, int]] = []

    def walk(node: ast.AST, prefix: str, module: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                end = child.end_lineno or child.lineno
                found.append((f"{module}::{name}", end - child.lineno + 1))
                walk(child, f"{name}.", module)
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.", module)
            else:
                walk(child, prefix, module)

    for path in sorted(root.rglob("*.py")):
        walk(ast.parse(path.read_text(), filename=str(path)), "", str(path.relative_to(root.parent.parent)))
    return found


def test_function_lengths_are_measured() -> None:
    # The walk must see the planner's functions, nested ones included (an empty walk proves nothing).
    names = {name for name, _ in function_lengths(PLAN_DIR)}
    assert "controller/plan/planner.py::plan" in names
    assert "controller/plan/rules/lifecycle.py::idle_stop" in names
    assert any(".sight" in n or "." in n.split("::")[1] for n in names)


def test_no_planner_function_over_the_limit() -> None:
    too_long = [f"{name} ({n} lines)" for name, n in function_lengths(PLAN_DIR) if n > MAX_LINES]
    assert not too_long, f"functions over {MAX_LINES} lines in controller/plan/: " + ", ".join(too_long)
