"""Documents of the kinds: parse one, read a members file, check a set together, write them back.

The building blocks both sources of desired state share: :mod:`desired_state.load` (admins' spec
files, the built-in default) and :mod:`desired_state.ds01_import` (DS01's files converted to the same
kinds) each turn their files into :class:`LoadedDocument` entries and :func:`assemble` them into a
:class:`PolicySet`. Knows nothing of where the files come from, and imports neither of those two
modules, so they do not import each other.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from crd_like_specs.kinds import API_VERSION, KINDS, Exemption, LifecyclePolicy, UserGroup, UserOverride
from desired_state.errors import Loc, PolicyError, PolicyLoadError, from_validation_error
from desired_state.policy_set import BUILTIN_PATH, Document, LoadedDocument, PolicySet, SpecSource
from desired_state.yaml_docs import YamlDocument, non_empty, read_documents, read_text

# --- one document ---------------------------------------------------------------------------------------


def parse_document(doc: YamlDocument) -> tuple[Document | None, list[PolicyError]]:
    """Validate one YAML document against its kind."""
    shown = str(doc.path)
    data = doc.data
    if not isinstance(data, dict):
        return None, [
            PolicyError(
                shown,
                doc.line,
                f"a document must be a mapping, not {type(data).__name__}",
                document=doc.number,
                expected=f"apiVersion: {API_VERSION}, kind, metadata.name and spec",
            )
        ]
    kind = data.get("kind")
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) and isinstance(meta.get("name"), str) else None
    if kind not in KINDS:
        guess = difflib.get_close_matches(str(kind), list(KINDS), n=1)
        return None, [
            PolicyError(
                shown,
                doc.line_of(("kind",)),
                "missing 'kind'" if kind is None else f"unknown kind {kind!r}",
                document=doc.number,
                field="kind",
                expected="one of " + ", ".join(KINDS),
                fix=f"write kind: {guess[0]}" if guess else "add kind: LifecyclePolicy (or UserGroup, ...)",
            )
        ]
    model = KINDS[str(kind)]
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, from_validation_error(
            exc,
            model=model,
            data=data,
            file=shown,
            line_of=doc.line_of,
            document=doc.number,
            kind=str(kind),
            name=name,
        )


def read_members_file(path: Path) -> tuple[list[str], list[PolicyError]]:
    """Login names from a members file: one per line, '#' starts a comment."""
    text, errors = read_text(path)
    if text is None:
        return [], errors
    members: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if any(ch.isspace() or ch in ",:;" for ch in line):
            errors.append(
                PolicyError(
                    str(path),
                    number,
                    f"{line!r} is not one login name",
                    expected="one login name per line",
                    fix="put each name on its own line (a comma-separated list is one line)",
                )
            )
            continue
        control = next((ch for ch in line if not ch.isprintable()), None)
        if control is not None:
            # A file written shortly before a power loss can come back as a run of NUL bytes: read
            # as a member named by them, the file's real members fell to the default group.
            nul = control == "\0"
            shown = line if len(line) <= 16 else line[:13] + "..."
            errors.append(
                PolicyError(
                    str(path),
                    number,
                    f"{shown!r} holds a control character ({'NUL' if nul else f'U+{ord(control):04X}'}), "
                    "which no login name has",
                    expected="one login name per line",
                    fix="rewrite the file (NUL bytes are what a crash leaves of a file written just before)"
                    if nul
                    else "remove the character",
                )
            )
            continue
        members.append(line)
    return members, errors


def with_members(group: UserGroup, members: Iterable[str]) -> UserGroup:
    """The group with ``members`` set (sorted, unique) and no membersFile: how a PolicySet holds groups."""
    data = group.model_dump(mode="json", exclude_unset=True)
    spec = data.setdefault("spec", {})
    spec.pop("membersFile", None)
    spec["members"] = sorted(set(members))
    return UserGroup.model_validate(data)


# --- a whole set ---------------------------------------------------------------------------------------


def assemble(
    entries: Sequence[LoadedDocument],
    *,
    origin: str,
    input_files: Sequence[str] = (),
    check_references: bool = True,
) -> tuple[PolicySet | None, list[PolicyError]]:
    """Check the documents together (one LifecyclePolicy, unique names, defaultGroup exists).

    ``check_references=False`` skips the defaultGroup check: used when some documents already
    failed, so a group that did not validate is not also reported as missing.
    """
    errors: list[PolicyError] = []
    seen: dict[tuple[str, str], LoadedDocument] = {}
    users: dict[str, LoadedDocument] = {}
    lifecycle: LoadedDocument | None = None
    kept: list[LoadedDocument] = []
    for entry in entries:
        doc = entry.document
        key = (doc.kind, doc.metadata.name)
        if key in seen:
            first = seen[key].source
            errors.append(
                _at(
                    entry,
                    ("metadata", "name"),
                    f"duplicate {doc.kind} name {doc.metadata.name!r} (first: {_where(first)})",
                    fix="rename one of them or delete the duplicate",
                    field="metadata.name",
                )
            )
            continue
        seen[key] = entry
        if isinstance(doc, LifecyclePolicy):
            if lifecycle is not None:
                errors.append(
                    _at(
                        entry,
                        (),
                        f"a second LifecyclePolicy (the first is {_where(lifecycle.source)}); "
                        "only one may be active",
                        fix="merge them into one document",
                    )
                )
                continue
            lifecycle = entry
        if isinstance(doc, UserOverride):
            user = doc.spec.user
            if user in users:
                errors.append(
                    _at(
                        entry,
                        ("spec", "user"),
                        f"a second UserOverride for user {user!r} (first: {_where(users[user].source)})",
                        fix="merge them into one UserOverride",
                        field="spec.user",
                    )
                )
                continue
            users[user] = entry
        kept.append(entry)
    group_names = {e.document.metadata.name for e in kept if isinstance(e.document, UserGroup)}
    if lifecycle is not None and check_references:
        policy = lifecycle.document
        assert isinstance(policy, LifecyclePolicy)
        wanted = policy.spec.default_group
        if wanted is not None and wanted not in group_names:
            errors.append(
                _at(
                    lifecycle,
                    ("spec", "defaultGroup"),
                    f"defaultGroup {wanted!r} names no UserGroup",
                    expected="one of: " + (", ".join(sorted(group_names)) or "(no groups are defined)"),
                    fix="define that UserGroup or change defaultGroup",
                    field="spec.defaultGroup",
                )
            )
    if errors:
        return None, errors
    docs = [e.document for e in kept]
    sources = [e.source for e in kept]
    for entry in kept:  # the layers below a layered document stay on record for `get policies`
        sources.extend(layer.source for layer in entry.layers[:-1])
    return (
        PolicySet(
            lifecycle=next((d for d in docs if isinstance(d, LifecyclePolicy)), None),
            groups=tuple(d for d in docs if isinstance(d, UserGroup)),
            overrides=tuple(d for d in docs if isinstance(d, UserOverride)),
            exemptions=tuple(d for d in docs if isinstance(d, Exemption)),
            sources=tuple(sources),
            origin=origin,
            input_files=tuple(input_files),
            layered=tuple(e for e in kept if e.layers),
        ),
        [],
    )


def _where(src: SpecSource) -> str:
    return src.path if src.line is None else f"{src.path}:{src.line}"


def _at(
    entry: LoadedDocument, loc: Loc, problem: str, *, expected: str = "", fix: str = "", field: str = ""
) -> PolicyError:
    entry = entry.layer_of(loc) if loc else entry
    src = entry.source
    line = entry.line_of(loc) if loc else src.line
    return PolicyError(
        src.path,
        line if line is not None else src.line,
        problem,
        document=src.document,
        kind=src.kind,
        name=src.name,
        field=field,
        expected=expected,
        fix=fix,
    )


def sorted_errors(errors: Iterable[PolicyError]) -> list[PolicyError]:
    """File by file, top to bottom (stable for errors without a line)."""
    return sorted(errors, key=lambda e: (e.file or "", e.line or 0))


def dump_documents(documents: Iterable[Document]) -> str:
    """Documents as multi-document YAML, writing only the keys that were set."""
    data: list[dict[str, Any]] = [d.model_dump(mode="json", exclude_unset=True) for d in documents]
    return yaml.safe_dump_all(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


# --- built-in ----------------------------------------------------------------------------------------------


@cache
def builtin_entries() -> tuple[LoadedDocument, ...]:
    """The built-in documents (crd_like_specs/builtin/default.yaml), validated once."""
    text = resources.files("crd_like_specs").joinpath("builtin/default.yaml").read_text(encoding="utf-8")
    docs, errors = read_documents(Path(BUILTIN_PATH), text)
    entries: list[LoadedDocument] = []
    for doc in non_empty(docs):
        document, doc_errors = parse_document(doc)
        errors.extend(doc_errors)
        if document is not None:
            src = SpecSource(document.kind, document.metadata.name, BUILTIN_PATH, doc.number, doc.line)
            entries.append(LoadedDocument(document, src, doc.line_of))
    if errors:  # pragma: no cover - guarded by tests; a broken package must not start
        raise PolicyLoadError(errors)
    return tuple(entries)


def builtin_lifecycle() -> LifecyclePolicy:
    """The built-in LifecyclePolicy: every key set; the bottom layer under any admin's policy."""
    for entry in builtin_entries():
        if isinstance(entry.document, LifecyclePolicy):
            return entry.document
    raise AssertionError("the built-in policy has no LifecyclePolicy")  # pragma: no cover


def builtin_policy() -> PolicySet:
    """The policy with no configuration at all: DS01's shipped values, groups without members."""
    entries = builtin_entries()
    groups = tuple(e.document for e in entries if isinstance(e.document, UserGroup))
    return PolicySet(
        lifecycle=None,
        groups=groups,
        sources=tuple(e.source for e in entries),
        origin="built-in default",
        fallback_default_group=builtin_lifecycle().spec.default_group,
    )
