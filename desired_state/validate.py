"""Validate spec files and DS01 config directories without running anything.

:func:`validate_paths` backs ``ds01ctl validate PATH...`` (exit 0 when valid, 1 otherwise) and
``python -m desired_state.validate PATH...``. Each path may be:

* a DS01 config directory (it holds ``resource-limits.yaml``), or one of DS01's files
  (``resource-limits.yaml``, ``user-overrides.yaml``, ``lifecycle-exemptions.yaml``): the whole
  directory is imported;
* a directory of CRD-like specs, or single spec files.

All spec files named, and the DS01 directories, are checked together as one policy (so a second
LifecyclePolicy or a duplicate name across files is reported). Reads files; changes nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from desired_state.errors import PolicyError
from desired_state.load import DS01_MAIN_FILE, assemble, load_spec_files, sorted_errors, spec_files
from desired_state.policy_set import LoadedDocument

DS01_FILES: Final = (DS01_MAIN_FILE, "user-overrides.yaml", "lifecycle-exemptions.yaml")


def validate_paths(paths: Sequence[Path]) -> list[str]:
    """One message per problem (file:line, document, field, what was expected, the fix); [] = valid."""
    return [str(e) for e in validation_errors(paths)]


def validation_errors(paths: Sequence[Path]) -> list[PolicyError]:
    from desired_state import ds01_import

    errors: list[PolicyError] = []
    files: list[Path] = []
    ds01_dirs: list[Path] = []
    for path in paths:
        if path.is_dir():
            if (path / DS01_MAIN_FILE).is_file():
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
    entries.extend(spec_entries)
    errors.extend(spec_errors)
    for directory in dict.fromkeys(ds01_dirs):
        ds01_entries, _ds01_inputs, ds01_errors = ds01_import.import_entries(directory)
        entries.extend(ds01_entries)
        errors.extend(ds01_errors)
    _policy, set_errors = assemble(entries, origin="validate", check_references=not errors)
    return sorted_errors([*errors, *set_errors])


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
