"""Policy errors people can act on: file, document, field path, line, what was expected, the fix.

Every problem found while reading specs or DS01's files becomes a :class:`PolicyError`; a load that
finds any raises :class:`PolicyLoadError` carrying all of them (not just the first), so an admin fixes
a file in one round. :func:`from_validation_error` turns pydantic's errors into these, with the line
taken from the YAML node marks (:class:`desired_state.yaml_docs.YamlDocument`).

Called by the loaders, the DS01 importer and ``validate``; no I/O here.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class PolicyError:
    """One problem in one place. ``str()`` is the one-line message shown to admins."""

    file: str | None
    line: int | None
    problem: str
    document: int | None = None  # 1-based position of the YAML document in its file
    kind: str | None = None
    name: str | None = None
    field: str = ""
    expected: str = ""
    fix: str = ""

    def __str__(self) -> str:
        where = self.file or "<policy>"
        if self.line is not None:
            where += f":{self.line}"
        parts = [where]
        doc = []
        if self.document is not None:
            doc.append(f"document {self.document}")
        if self.kind:
            doc.append(f"{self.kind}/{self.name}" if self.name else self.kind)
        if doc:
            parts.append(" ".join(doc[:1]) + (f" ({doc[1]})" if len(doc) > 1 else ""))
        if self.field:
            parts.append(self.field)
        text = ": ".join(parts) + ": " + self.problem
        if self.expected:
            text += f"; expected {self.expected}"
        if self.fix:
            text += f"; fix: {self.fix}"
        return text


class PolicyLoadError(Exception):
    """Loading failed; ``errors`` lists every problem found."""

    def __init__(self, errors: Sequence[PolicyError]) -> None:
        self.errors: tuple[PolicyError, ...] = tuple(errors)
        super().__init__("\n".join(str(e) for e in self.errors) or "policy could not be loaded")


# --- pydantic errors -> PolicyError ---------------------------------------------------------------------


LineOf = Callable[[Loc], int | None]


def from_validation_error(
    exc: ValidationError,
    *,
    model: type[BaseModel],
    data: Any,
    file: str | None,
    line_of: LineOf,
    document: int | None = None,
    kind: str | None = None,
    name: str | None = None,
    translate: Callable[[Loc], tuple[Loc, str] | None] | None = None,
) -> list[PolicyError]:
    """One :class:`PolicyError` per pydantic error, located in ``data`` (the YAML document).

    ``translate`` maps a model location back to a location in a differently shaped source (the DS01
    importer's files) and returns ``(source_loc, display_path)``, or None to keep the model's.
    """
    out: list[PolicyError] = []
    by_loc: dict[Loc, list[ErrorDetails]] = {}
    for err in exc.errors(include_url=False):
        by_loc.setdefault(_doc_loc(err, data), []).append(err)
    for loc, errs in by_loc.items():
        err = _merge_union_errors(errs)
        display = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in loc).replace(".[", "[")
        line_loc = loc
        if translate is not None:
            mapped = translate(loc)
            if mapped is not None:
                line_loc, display = mapped
        problem, expected, fix = explain(err, model, loc)
        out.append(
            PolicyError(
                file=file,
                line=line_of(line_loc),
                document=document,
                kind=kind,
                name=name,
                field=display,
                problem=problem,
                expected=expected,
                fix=fix,
            )
        )
    return out


def _merge_union_errors(errs: list[ErrorDetails]) -> ErrorDetails:
    """A value that fits none of a union's members yields one error per member: say it once."""
    if len(errs) == 1 or not all(e["type"] in _TYPE_WORDS for e in errs):
        return errs[0]
    words = list(dict.fromkeys(_TYPE_WORDS[e["type"]] for e in errs))
    merged = dict(errs[0])
    merged["type"] = "union_type"
    merged["ctx"] = {"expected": " or ".join(words)}
    return typing.cast(ErrorDetails, merged)


def _doc_loc(err: ErrorDetails, data: Any) -> Loc:
    """The error's location as a path through the document, without pydantic's union tags."""
    raw = [p for p in err["loc"] if p != "[key]"]
    loc: list[str | int] = []
    node = data
    for i, part in enumerate(raw):
        last = i == len(raw) - 1
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            loc.append(part)
            node = node[part]
        elif last and err["type"] in ("missing", "extra_forbidden"):
            loc.append(part)
        # else: a union member tag such as 'str' or 'function-after[...]': not part of the document
    return tuple(loc)


_TYPE_WORDS = {
    "float_type": "a number",
    "float_parsing": "a number",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping of key: value",
    "model_type": "a mapping of key: value",
    "model_attributes_type": "a mapping of key: value",
    "date_type": "a date such as 2026-01-31",
    "date_parsing": "a date such as 2026-01-31",
    "date_from_datetime_inexact": "a date such as 2026-01-31",
    "datetime_type": "a date and time with zone, such as 2026-03-31T23:59:59Z",
    "datetime_parsing": "a date and time with zone, such as 2026-03-31T23:59:59Z",
    "datetime_from_date_parsing": "a date and time with zone, such as 2026-03-31T23:59:59Z",
    "timezone_aware": "a date and time with zone, such as 2026-03-31T23:59:59Z",
}


def explain(err: ErrorDetails, model: type[BaseModel], loc: Loc) -> tuple[str, str, str]:
    """(problem, expected, fix) for one pydantic error, in words an admin can act on."""
    kind = err["type"]
    key = loc[-1] if loc else ""
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = allowed_keys(model, loc[:-1])
        guess = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        fix = f"rename it to '{guess[0]}'" if guess else "remove it"
        return (
            f"unknown field '{key}'",
            f"one of: {', '.join(allowed)}" if allowed else "no other fields",
            fix,
        )
    if kind == "missing":
        return (
            f"required field '{key}' is missing",
            describe_field(model, loc) or "a value",
            f"add '{key}: ...'",
        )
    if kind in ("duration", "not_null", "time_range"):
        return err["msg"], "", ""
    if kind in ("docker_minimum", "systemd_minimum"):
        # A value of the right type that the engine or systemd (or the kernel under them) refuses:
        # the message says why, the context carries the least value and how to write it.
        return err["msg"], f"at least {ctx.get('minimum')}", str(ctx.get("fix", ""))
    if kind == "systemd_format":
        # A value of the right form for us that systemd does not parse: why, what it reads, the fix.
        return err["msg"], str(ctx.get("expected", "")), str(ctx.get("fix", ""))
    if kind == "union_type":
        want = str(ctx["expected"])
        return f"{_show(value)} is not {want}", want, f"write {want}"
    if kind in ("literal_error", "enum"):
        return (
            f"{value!r} is not allowed",
            str(ctx.get("expected", "")),
            f"write one of {ctx.get('expected', '')}",
        )
    if kind in _TYPE_WORDS:
        want = _TYPE_WORDS[kind]
        return (
            f"{_show(value)} is not {want}",
            _with_description(want, model, loc),
            f"write {want}" + (" (quote it if it is text)" if kind == "string_type" else ""),
        )
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = ctx.get("ge", ctx.get("gt", ctx.get("le", ctx.get("lt"))))
        words = {
            "greater_than_equal": "at least",
            "greater_than": "more than",
            "less_than_equal": "at most",
            "less_than": "less than",
        }[kind]
        return f"{_show(value)} is out of range", f"{words} {bound}", f"use a value {words} {bound}"
    if kind == "finite_number":
        return (
            f"{_show(value)} is not a finite number",
            _with_description("a finite number", model, loc),
            "write a finite number",
        )
    if kind == "string_pattern_mismatch":
        expected = describe_field(model, loc) or f"the pattern {ctx.get('pattern')}"
        return f"{_show(value)} is not in the expected form", expected, ""
    if kind in ("too_short", "string_too_short"):
        return f"{_show(value)} is empty", describe_field(model, loc) or "at least one entry", "give a value"
    return err["msg"], describe_field(model, loc), ""


def _with_description(want: str, model: type[BaseModel], loc: Loc) -> str:
    described = describe_field(model, loc)
    return f"{want} ({described})" if described else want


def _show(value: Any) -> str:
    if isinstance(value, date):  # datetime included
        return value.isoformat()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- walking the models along a location -----------------------------------------------------------------


def _model_at(model: type[BaseModel], loc: Iterable[str | int]) -> tuple[type[BaseModel] | None, str]:
    """The model class reached by following ``loc`` (aliases), and the last field's description."""
    current: Any = model
    description = ""
    for part in loc:
        if isinstance(part, str) and not _is_model(current):
            # An optional section (``Aggregate | None``): the name is one of its fields, not a key of
            # a mapping, so its own description is found (not the section's).
            inner = unwrap_model(current)
            if inner is not None and _field_named(inner, part) is not None:
                current = inner
        if _is_model(current):
            field = _field_named(current, part)
            if field is None:
                return None, ""
            description = field.description or ""
            current = field.annotation
            continue
        # containers: a list index or a dict key descends into the item type
        current = item_type(current)
        if current is None:
            return None, description
    target = unwrap_model(current)
    return target, description


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _field_named(model: type[BaseModel], part: str | int) -> FieldInfo | None:
    """The field of ``model`` written ``part`` in a spec (its alias, else its name)."""
    for name, info in model.model_fields.items():
        if (info.alias or name) == part:
            return info
    return None


def unwrap_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in _args(annotation):
        found = unwrap_model(arg)
        if found is not None:
            return found
    return None


def _args(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return (typing.get_args(annotation)[0],)
    if origin in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return ()


def item_type(annotation: Any) -> Any:
    """The element type of a list/dict annotation (looking through Optional and Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is list:
        return typing.get_args(annotation)[0]
    if origin is dict:
        return typing.get_args(annotation)[1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in _args(annotation):
        if arg is type(None):
            continue
        found = item_type(arg)
        if found is not None:
            return found
    return None


def allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys a mapping at ``loc`` may hold (empty if unknown)."""
    target, _ = _model_at(model, loc)
    if target is None:
        return []
    return [info.alias or name for name, info in target.model_fields.items()]


def describe_field(model: type[BaseModel], loc: Loc) -> str:
    _, description = _model_at(model, loc)
    return description
