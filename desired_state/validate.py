"""Validate spec files and DS01 config directories without running anything.

:func:`validate_paths` backs ``ds01ctl validate PATH...`` (exit 0 when valid, 1 otherwise) and
``python -m desired_state.validate PATH...``. Each path may be:

* a DS01 config directory (it holds ``resource-limits.yaml``), or one of DS01's files
  (``resource-limits.yaml``, ``user-overrides.yaml``, ``lifecycle-exemptions.yaml``): the whole
  directory is imported;
* a directory of CRD-like specs, or single spec files.

All spec files named, and the DS01 directories, are checked together as one policy, exactly as the
daemon loads ``--specs`` with ``--ds01-config``: the specs layered over the DS01 import (so a second
LifecyclePolicy or a duplicate name among the spec files is reported, and a reference that does not
resolve after layering is an error with file and line). Reads files; changes nothing.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any, Final

from crd_like_specs.vocabulary import ContainerType
from desired_state import ds01_import
from desired_state.documents import assemble, sorted_errors
from desired_state.ds01_import import DS01_MAIN_FILE, RUNTIME_DIR
from desired_state.effective import interactions
from desired_state.errors import PolicyError
from desired_state.load import layered_set, load_spec_files, spec_files
from desired_state.policy_set import LoadedDocument, PolicySet
from desired_state.resolve import BUILTIN, resolve_effective_policy

DS01_FILES: Final = (DS01_MAIN_FILE, "user-overrides.yaml", "lifecycle-exemptions.yaml")


def validate_paths(paths: Sequence[Path], ds01_config: Path | None = None) -> list[str]:
    """One message per problem (file:line, document, field, what was expected, the fix); [] = valid.

    ``ds01_config`` (``--ds01-config``), when one of ``paths``, is DS01's directory whatever it
    holds, as the daemon reads it."""
    return [str(e) for e in validation_errors(paths, ds01_config)]


def validation_errors(paths: Sequence[Path], ds01_config: Path | None = None) -> list[PolicyError]:
    errors: list[PolicyError] = []
    files: list[Path] = []
    ds01_dirs: list[Path] = []
    for path in paths:
        if path.is_dir() or _named(path, ds01_config):
            if _is_ds01(path, ds01_config):
                ds01_dirs.append(path)
            else:
                found = spec_files(path)
                if not found:
                    errors.append(
                        PolicyError(
                            str(path), None, "no *.yaml or *.yml files here", fix="name spec files *.yaml"
                        )
                    )
                files.extend(found)
        elif path.name in DS01_FILES:
            ds01_dirs.append(path.parent)
        elif path.exists():
            files.append(path)
        else:
            errors.append(PolicyError(str(path), None, "no such file or directory", fix="check the path"))
    entries: list[LoadedDocument] = []
    spec_entries, _inputs, spec_errors = load_spec_files(list(dict.fromkeys(files)))
    errors.extend(spec_errors)
    for directory in dict.fromkeys(ds01_dirs):
        ds01_entries, _ds01_inputs, ds01_errors = ds01_import.import_entries(directory)
        entries.extend(ds01_entries)
        errors.extend(ds01_errors)
    # As the daemon loads them: the specs layered over the DS01 import.
    entries, layer_errors = layered_set(entries, spec_entries)
    errors.extend(layer_errors)
    _policy, set_errors = assemble(entries, origin="validate", check_references=not errors)
    return sorted_errors([*errors, *set_errors])


def _assembled(
    paths: Sequence[Path], ds01_config: Path | None = None
) -> tuple[PolicySet, list[LoadedDocument], list[str]] | None:
    """The policy ``paths`` form, as the daemon would load it, its documents (each with the lines
    of its keys) and the files read; None when it does not load."""
    if validation_errors(paths, ds01_config):
        return None
    ds01_dirs = _ds01_dirs(paths, ds01_config)
    files = [path for path in paths if not _is_ds01(path, ds01_config)]
    spec_paths = [p for f in files for p in (spec_files(f) if f.is_dir() else [f])]
    spec_entries, inputs, _errors = load_spec_files(list(dict.fromkeys(spec_paths)))
    entries: list[LoadedDocument] = []
    for directory in dict.fromkeys(ds01_dirs):
        ds01_entries, ds01_inputs, _ds01_errors = ds01_import.import_entries(directory)
        entries.extend(ds01_entries)
        inputs.extend(ds01_inputs)
    entries, _layer_errors = layered_set(entries, spec_entries)
    policy, _set_errors = assemble(entries, origin="validate")
    return (policy, entries, inputs) if policy is not None else None


# A settings layer as resolve labels it: ``LifecyclePolicy/lab``, ``UserGroup/x (site.yaml)`` (one of
# two layers of that name), ``container type docker (LifecyclePolicy/lab)``, ``UserGroup/x
# containerTypes.docker``; an exemption may follow (``; waived by Exemption/e``).
_LAYER: Final = re.compile(
    r"^(?:container type (?P<lc_type>[A-Za-z0-9_-]+) \()?"
    r"(?P<kind>LifecyclePolicy|UserGroup|UserOverride)/(?P<name>[A-Za-z0-9._-]+)"
    r"(?: \((?P<file>[^()]+)\))?\)?"
    r"(?: containerTypes\.(?P<type>[A-Za-z0-9_-]+))?"
)


def _key_line(entries: Sequence[LoadedDocument], source: str, key: str) -> str | None:
    """``file:line`` of the settings key ``key`` in the layer ``source`` names; None for a built-in
    layer or a source that names no document."""
    m = _LAYER.match(source)
    if m is None or m["file"] == BUILTIN:
        return None
    ctype = m["lc_type"] or m["type"]
    loc = ("spec", "containerTypes", ctype, key) if ctype else ("spec", "settings", key)
    for entry in entries:
        for layer in entry.layers or (entry,):
            doc, src = layer.document, layer.source
            if doc.kind != m["kind"] or doc.metadata.name != m["name"] or src.builtin:
                continue
            if m["file"] is not None and PurePath(src.path).name != m["file"]:
                continue
            line = layer.line_of(loc)
            line = line if line is not None else src.line
            return f"{src.path}:{line}" if line is not None else src.path
    return None


def validation_warnings(
    paths: Sequence[Path], now: datetime | None = None, ds01_config: Path | None = None
) -> list[str]:
    """Settings that override another or make it meaningless (not errors: the policy is valid).

    Each effective combination (every group, its members' overrides, every container type) is
    resolved as the daemon would; each interaction is reported once, with the groups and types it
    applies to and the file and line of every key it names.
    """
    assembled = _assembled(paths, ds01_config)
    if assembled is None:
        return []
    policy, entries, inputs = assembled
    at = now or datetime.now(UTC)
    owners: list[tuple[str, str]] = [("(no group)", "\x00nobody")]
    for group in policy.groups:
        members = group.spec.members or []
        if members:
            owners.append((f"UserGroup/{group.metadata.name}", members[0]))
    owners.extend((f"UserOverride/{o.metadata.name}", o.spec.user) for o in policy.overrides)
    found: dict[str, list[str]] = {}
    keys: dict[str, tuple[tuple[str, str], ...]] = {}
    for who, owner in owners:
        for ctype in ContainerType:
            eff = resolve_effective_policy(
                policy, owner=owner, container_type=ctype, name="", labels={}, now=at
            )
            for found_note in interactions(eff):
                found.setdefault(found_note.text, []).append(f"{who} {ctype.value}")
                keys[found_note.text] = found_note.keys
    out: list[str] = []
    for note, where in found.items():
        # Each key the note names, where it is written (built-in values are in no file).
        lines = (_key_line(entries, source, key) for key, source in keys[note])
        files = list(dict.fromkeys(f for f in lines if f is not None))
        shown = ", ".join(where[:6]) + (f" and {len(where) - 6} more" if len(where) > 6 else "")
        text = f"warning: {note} (for {shown})"
        out.append(f"{text} [{'; '.join(files)}]" if files else text)
    out.extend(_several_groups(policy, entries))
    out.extend(_orphaned_members_files(paths, inputs, ds01_config))
    return out


def _orphaned_members_files(
    paths: Sequence[Path], inputs: Sequence[str], ds01_config: Path | None = None
) -> list[str]:
    """One warning per ``groups/<name>.members`` of a DS01 config directory that nothing reads (no
    group of its ``resource-limits.yaml``, no spec's ``membersFile``): after a group is renamed or
    removed its members file is read by nobody, and the logins it lists get another group's settings
    (or none) without a word."""
    read = {os.path.realpath(p) for p in inputs}
    out: list[str] = []
    for directory in dict.fromkeys(_ds01_dirs(paths, ds01_config)):
        groups_dir = directory / ds01_import.GROUPS_DIR
        if not groups_dir.is_dir():
            continue
        for members_file in sorted(groups_dir.glob("*.members")):
            if os.path.realpath(members_file) in read:
                continue
            group = members_file.name.removesuffix(".members")
            out.append(
                f"warning: {members_file} is read by no group: {directory / DS01_MAIN_FILE} has no group"
                f" '{group}' (renamed or removed?), so the logins it lists are not members of '{group}';"
                f" rename the file to <group>.members of the group they belong to, or delete it"
            )
    return out


def _is_ds01(path: Path, ds01_config: Path | None = None) -> bool:
    """A DS01 config directory, or one of its files.

    A directory is DS01's when it is ``ds01_config`` (``--ds01-config``), or holds resource-limits.yaml
    in any form: a link to nothing or a directory by that name is DS01's file gone wrong (the daemon
    says so), not a sign of a specs directory, whose every file would then be read as a spec (and
    DS01's user-overrides.yaml be told to add ``kind:``)."""
    if _named(path, ds01_config):
        return True
    if not path.is_dir():
        return path.name in DS01_FILES
    # DS01's config/, whose files are in runtime/: the import names the directory to use.
    return os.path.lexists(path / DS01_MAIN_FILE) or (path / RUNTIME_DIR / DS01_MAIN_FILE).is_file()


def _named(path: Path, ds01_config: Path | None) -> bool:
    """Whether ``path`` is the directory ``--ds01-config`` names (relatively, through a link...)."""
    return ds01_config is not None and path.resolve() == ds01_config.resolve()


def _ds01_dirs(paths: Sequence[Path], ds01_config: Path | None = None) -> list[Path]:
    """The DS01 config directories among ``paths`` (named, or by one of their files)."""
    return [
        path if path.is_dir() or _named(path, ds01_config) else path.parent
        for path in paths
        if _is_ds01(path, ds01_config)
    ]


def _several_groups(policy: PolicySet, entries: Sequence[LoadedDocument]) -> list[str]:
    """One warning per login name more than one group lists: only the first group by order applies
    (as in DS01), so the others' settings never do for that user, whatever their members say."""
    out: list[str] = []
    for member, groups in sorted(policy.members_in_several_groups().items()):
        first, *later = (f"UserGroup/{g.metadata.name}" for g in groups)
        lines = (_members_line(entries, g.metadata.name, member) for g in groups)
        files = list(dict.fromkeys(f for f in lines if f is not None))
        text = (
            f"warning: '{member}' is a member of {first} and {' and '.join(later)}: only {first} "
            f"applies to '{member}' (the first group by order, then name; in DS01's file, the first "
            f"listed); remove '{member}' from the others, or reorder the groups"
        )
        out.append(f"{text} [{'; '.join(files)}]" if files else text)
    return out


def _members_line(entries: Sequence[LoadedDocument], group: str, member: str) -> str | None:
    """``file:line`` of the members of the layer of UserGroup ``group`` that lists ``member``."""
    for entry in entries:
        for layer in entry.layers or (entry,):
            doc, src = layer.document, layer.source
            if doc.kind != "UserGroup" or doc.metadata.name != group or src.builtin:
                continue
            if member not in (getattr(doc.spec, "members", None) or ()):
                continue
            line = layer.line_of(("spec", "members"))
            line = line if line is not None else src.line
            return f"{src.path}:{line}" if line is not None else src.path
    return None


def main(argv: Sequence[str] | None = None, out: Callable[[str], Any] | None = None) -> int:
    """``python -m desired_state.validate PATH...``: print problems; exit 0 valid, 1 invalid, 2 usage."""
    args = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout.write
    if not args or any(a in ("-h", "--help") for a in args):
        out("usage: python -m desired_state.validate PATH...  (spec files/dirs or a DS01 config dir)\n")
        return 2
    messages = validate_paths([Path(a) for a in args])
    for message in messages:
        out(message + "\n")
    if messages:
        out(f"{len(messages)} problem{'' if len(messages) == 1 else 's'} found\n")
        return 1
    out("valid\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
