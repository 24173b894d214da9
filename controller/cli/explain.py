"""``ds01ctl explain KIND[.field...]``: a spec kind's fields from its own JSON Schema, as kubectl's.

The schema is the one ``crd_like_specs.generate`` writes (built from the kinds, so it cannot drift
from what ``validate`` accepts). A map field (``containerTypes``) takes any key its schema allows
as the next step: ``LifecyclePolicy.spec.containerTypes.docker.maxRuntime``. Pure: no files are read.
"""

from __future__ import annotations

from typing import Any

from controller.cli.errors import CliError
from controller.cli.render import clean
from controller.flags import closest


def _kinds() -> dict[str, str]:
    from crd_like_specs.kinds import KINDS

    return {k.lower(): k for k in KINDS}


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref``, a nullable ``anyOf`` and a list's items to the node that has the fields
    (a list of objects has its items' fields, as in kubectl's ``explain``)."""
    while True:
        items = node.get("items")
        if (
            node.get("type") == "array"
            and isinstance(items, dict)
            and ("$ref" in items or items.get("type") == "object")
        ):
            node = {**items, "description": node.get("description", items.get("description"))}
            continue
        if "$ref" in node:
            ref = node["$ref"].rsplit("/", 1)[-1]
            node = {**root["$defs"][ref], **{k: v for k, v in node.items() if k != "$ref"}}
            continue
        variants = [v for v in node.get("anyOf", ()) if v.get("type") != "null"]
        if len(variants) == 1 and ("$ref" in variants[0] or variants[0].get("type") == "object"):
            node = {**variants[0], "description": node.get("description", variants[0].get("description"))}
            continue
        return node


def _map_keys(node: dict[str, Any], root: dict[str, Any]) -> list[str] | None:
    """The keys a map allows (its ``propertyNames``' enum, as validate reads it); None: any key."""
    names = node.get("propertyNames")
    if not isinstance(names, dict):
        return None
    enum = _resolve(names, root).get("enum")
    return [str(v) for v in enum] if isinstance(enum, list) else None


def _type_name(node: dict[str, Any], root: dict[str, Any]) -> str:
    if "const" in node:
        return f"{node['const']}"
    if "$ref" in node:
        target = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        if "enum" in target:
            return "one of " + ", ".join(str(v) for v in target["enum"])
        return "object"
    if "anyOf" in node:
        names = [_type_name(v, root) for v in node["anyOf"]]
        return " or ".join(dict.fromkeys(names))
    if "enum" in node:
        return "one of " + ", ".join(str(v) for v in node["enum"])
    kind = node.get("type")
    if kind == "string" and "[smhdw]" in str(node.get("pattern", "")):
        return "duration"
    if kind == "array":
        return "[]" + _type_name(node.get("items", {}), root)
    if kind == "object" and "additionalProperties" in node:
        return "map of " + _type_name(node["additionalProperties"], root)
    return str(kind or "any")


def explain(path: str) -> str:
    """The text for ``ds01ctl explain PATH``; ``CliError`` for an unknown kind or field."""
    from crd_like_specs.generate import schema_for
    from crd_like_specs.kinds import API_VERSION

    kinds = _kinds()
    parts = [p for p in path.split(".") if p]
    if not parts:
        raise CliError(f"name a kind: {', '.join(sorted(kinds.values()))} (ds01ctl explain LifecyclePolicy)")
    head, *fields = parts
    kind = kinds.get(head.lower()) if head else None
    if kind is None:
        meant = closest(head.lower(), kinds)
        hint = f"; did you mean {kinds[meant]}?" if meant else ""
        raise CliError(f"unknown kind {clean(head, 40)!r}{hint} (kinds: {', '.join(sorted(kinds.values()))})")
    root = schema_for(kind)
    node: dict[str, Any] = root
    walked: list[str] = []
    for field in fields:
        node = _resolve(node, root)
        props = node.get("properties", {})
        if field in props:
            node = props[field]
        elif isinstance(node.get("additionalProperties"), dict):
            keys = _map_keys(node, root)
            if keys is not None and field not in keys:
                where = ".".join([kind, *walked])
                meant = closest(field, keys)
                hint = f"; did you mean {meant}?" if meant else ""
                raise CliError(
                    f"{clean(field, 60)!r} is not a key of {where}{hint} (its keys: {', '.join(keys)})"
                )
            node = node["additionalProperties"]  # a map: any key it allows (a container type...)
        else:
            where = ".".join([kind, *walked]) or kind
            meant = closest(field, props)
            hint = f"; did you mean {meant}?" if meant else ""
            raise CliError(
                f"{where} has no field {clean(field, 60)!r}{hint} (ds01ctl explain {where} lists its fields)"
            )
        walked.append(field)
    lines = [f"KIND:     {kind}", f"VERSION:  {API_VERSION}"]
    if walked:
        lines.append(f"FIELD:    {'.'.join(walked)} <{_type_name(node, root)}>")
    description = node.get("description") or _resolve(node, root).get("description") or ""
    lines += ["", "DESCRIPTION:", f"  {description or '(none)'}"]
    resolved = _resolve(node, root)
    if "additionalProperties" in resolved and isinstance(resolved["additionalProperties"], dict):
        value = resolved["additionalProperties"]
        keys = _map_keys(resolved, root)
        resolved = _resolve(value, root)
        held = "the fields below" if resolved.get("properties") else f"a {_type_name(value, root)}"
        each = f"each key, one of {', '.join(keys)}," if keys is not None else "each key"
        lines += ["", f"(a map: {each} holds {held})"]
    props = resolved.get("properties", {})
    if props:
        required = set(resolved.get("required", ()))
        lines += ["", "FIELDS:"]
        for name, sub in props.items():
            mark = " (required)" if name in required else ""
            lines.append(f"  {name}  <{_type_name(sub, root)}>{mark}")
            if sub.get("description"):
                lines.append(f"    {sub['description']}")
    return "\n".join(lines) + "\n"
