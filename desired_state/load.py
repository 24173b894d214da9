"""Loading the desired state: CRD-like spec files, DS01's config directory, or the built-in default.

* :func:`load_policy` builds a :class:`PolicySet` from a directory of ``*.yaml`` / ``*.yml`` specs
  (conventionally :data:`DEFAULT_SPECS_DIR`) and/or a DS01 config directory holding
  ``resource-limits.yaml``; with neither, the built-in default (DS01's shipped values) applies.
  Any problem raises :class:`PolicyLoadError` listing every error with file, line and fix.
* :class:`PolicyHolder` keeps the last good PolicySet for the daemon: :meth:`PolicyHolder.reload`
  is cheap to call every pass (it re-reads only when a file's mtime/size/inode changed) and a
  reload that fails keeps the previous policy in force and reports why.

The documents themselves (parse, check a set, the built-in default, dump as YAML) are
:mod:`desired_state.documents`; the names callers know from here are re-exported (``__all__``).
The DS01 import (:mod:`desired_state.ds01_import`) builds on ``documents``, never on this module.

Reads files; resolves nothing (see :mod:`desired_state.resolve`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from crd_like_specs.kinds import KINDS, Exemption, LifecyclePolicy, UserGroup, UserOverride
from desired_state import ds01_import
from desired_state.documents import (
    assemble,
    builtin_entries,
    builtin_lifecycle,
    builtin_policy,
    dump_documents,
    parse_document,
    read_members_file,
    sorted_errors,
    with_members,
)
from desired_state.errors import PolicyError, PolicyLoadError, from_validation_error
from desired_state.policy_set import (
    Document,
    LoadedDocument,
    PolicySet,
    SpecSource,
)
from desired_state.yaml_docs import YamlDocument, non_empty, read_documents

__all__ = [
    "DEFAULT_SPECS_DIR",
    "SPEC_SUFFIXES",
    "PolicyHolder",
    "assemble",
    "builtin_entries",
    "builtin_lifecycle",
    "builtin_policy",
    "dump_documents",
    "layer_entries",
    "layered_set",
    "load_policy",
    "load_spec_files",
    "load_spec_text",
    "spec_files",
]

DEFAULT_SPECS_DIR: Final = Path("/etc/ds01/specs")
SPEC_SUFFIXES: Final = (".yaml", ".yml")


# --- spec files ---------------------------------------------------------------------------------------


def _entries_from_file(
    path: Path, text: str | None = None
) -> tuple[list[LoadedDocument], list[str], list[PolicyError]]:
    """Documents of one spec file (or of ``text`` shown as ``path``), the members files read, the errors."""
    docs, errors = read_documents(path, text)
    if not errors and not non_empty(docs):
        errors.append(
            PolicyError(
                str(path),
                1,
                "the file holds no documents (empty or comments only)",
                expected="one or more documents separated by ---",
                fix="add a document or delete the file",
            )
        )
    entries: list[LoadedDocument] = []
    inputs: list[str] = []
    for doc in non_empty(docs):
        document, doc_errors = parse_document(doc)
        errors.extend(doc_errors)
        if document is None:
            continue
        detail = ""
        if isinstance(document, UserGroup):
            members = list(document.spec.members or ())
            members_file = document.spec.members_file
            if members_file is not None:
                try:
                    target = (path.parent / members_file).resolve()
                except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
                    problem = f"membersFile {members_file!r} cannot be resolved: {exc}"
                    errors.append(
                        _members_file_error(
                            path, doc, document, problem, "correct the path (a symbolic link loop?)"
                        )
                    )
                    continue
                inputs.append(str(target))
                file_members, member_errors = read_members_file(target)
                if member_errors and not target.is_file():
                    problem = f"membersFile {members_file!r} not found (looked for {target})"
                    fix = "create the file or correct the path"
                    if target.exists():  # there, but a directory, a named pipe...: say what it is
                        problem = f"membersFile {members_file!r} ({target}): {member_errors[0].problem}"
                        fix = member_errors[0].fix or fix
                    member_errors = [_members_file_error(path, doc, document, problem, fix)]
                errors.extend(member_errors)
                members.extend(file_members)
                detail = f"members also from {target}"
            if document.spec.members is not None or members_file is not None:
                # A group that lists no members keeps them unset, so layered over DS01's group of
                # the same name it changes settings only and keeps DS01's members.
                document = with_members(document, members)
        source = SpecSource(
            kind=document.kind,
            name=document.metadata.name,
            path=str(path),
            document=doc.number,
            line=doc.line,
            detail=detail,
        )
        entries.append(LoadedDocument(document, source, doc.line_of))
    return entries, inputs, errors


def _members_file_error(
    path: Path, doc: YamlDocument, group: UserGroup, problem: str, fix: str
) -> PolicyError:
    return PolicyError(
        str(path),
        doc.line_of(("spec", "membersFile")),
        problem,
        document=doc.number,
        kind="UserGroup",
        name=group.metadata.name,
        field="spec.membersFile",
        expected="a file relative to this spec file",
        fix=fix,
    )


def spec_files(specs_dir: Path) -> list[Path]:
    """The spec files of a directory: ``*.yaml`` / ``*.yml`` (any case), not hidden, sorted by name.

    Every such name is listed, whatever it is: a symlink whose target is gone, or a directory, is
    then an error naming it when read. Skipped, the file's documents would silently drop out of the
    policy (and an admin's whole policy with it, for the built-in default)."""
    return sorted(
        p for p in specs_dir.iterdir() if p.suffix.lower() in SPEC_SUFFIXES and not p.name.startswith(".")
    )


def load_spec_files(paths: Sequence[Path]) -> tuple[list[LoadedDocument], list[str], list[PolicyError]]:
    entries: list[LoadedDocument] = []
    inputs: list[str] = []
    errors: list[PolicyError] = []
    for path in paths:
        file_entries, file_inputs, file_errors = _entries_from_file(path)
        entries.extend(file_entries)
        inputs.append(str(path))
        inputs.extend(file_inputs)
        errors.extend(file_errors)
    return entries, inputs, errors


# --- layering ---------------------------------------------------------------------------------------


def _layer_key(doc: Document) -> tuple[str, str] | None:
    """What a document of an upper layer replaces key by key: the one LifecyclePolicy, a UserOverride
    of the same user, any other document of the same kind and name; None: nothing.

    An Exemption replaces nothing: one of the specs is one more grant, never a change to a DS01
    record that happens to have its name (DS01's are named <user>-<index>). Merged, its exemptFrom
    replaced the record's, and a running job lost its exemption; two of one name are a duplicate."""
    if isinstance(doc, LifecyclePolicy):
        return (doc.kind, "")
    if isinstance(doc, UserOverride):
        return (doc.kind, doc.spec.user)
    if isinstance(doc, Exemption):
        return None
    return (doc.kind, doc.metadata.name)


def _deep_merge(lower: dict[str, Any], upper: dict[str, Any]) -> dict[str, Any]:
    """``upper`` over ``lower``: mappings merge key by key, anything else (lists included) replaces."""
    out = dict(lower)
    for key, value in upper.items():
        below = out.get(key)
        out[key] = _deep_merge(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return out


def layer_entries(
    lower: Sequence[LoadedDocument], upper: Sequence[LoadedDocument]
) -> tuple[list[LoadedDocument], list[PolicyError]]:
    """The documents of ``upper`` (the admin's specs) layered over ``lower`` (the DS01 import).

    A document of ``upper`` that matches one of ``lower`` (:func:`_layer_key`) is merged over it key
    by key: every key the upper one writes wins, every other key keeps the lower one's value (and
    provenance, see :meth:`PolicySet.layers_of`). The merged document takes the upper one's name.
    Other documents of either layer are kept as they are. Duplicates inside one layer are left for
    :func:`assemble` to report.
    """
    errors: list[PolicyError] = []
    below: dict[tuple[str, str], LoadedDocument] = {}
    for entry in lower:
        lower_key = _layer_key(entry.document)
        if lower_key is not None:
            below.setdefault(lower_key, entry)
    merged: dict[tuple[str, str], LoadedDocument] = {}
    out_upper: list[LoadedDocument] = []
    for entry in upper:
        key = _layer_key(entry.document)
        base = below.get(key) if key is not None else None
        if key is None or base is None or key in merged:
            out_upper.append(entry)
            continue
        data = _deep_merge(
            base.document.model_dump(mode="json", exclude_unset=True),
            entry.document.model_dump(mode="json", exclude_unset=True),
        )
        model = KINDS[entry.document.kind]
        try:
            document = model.model_validate(data)
        except ValidationError as exc:
            errors.extend(
                from_validation_error(
                    exc,
                    model=model,
                    data=data,
                    file=entry.source.path,
                    line_of=entry.line_of,
                    document=entry.source.document,
                    kind=entry.document.kind,
                    name=entry.document.metadata.name,
                )
            )
            continue
        src = entry.source
        detail = f"layered over {base.source}"
        source = SpecSource(
            kind=src.kind,
            name=src.name,
            path=src.path,
            document=src.document,
            line=src.line,
            detail=f"{src.detail}; {detail}" if src.detail else detail,
        )
        layered = LoadedDocument(document, source, entry.line_of, layers=(*(base.layers or (base,)), entry))
        merged[key] = layered
        out_upper.append(layered)
    kept_lower = [
        e for e in lower if (key := _layer_key(e.document)) not in merged or below.get(key) is not e
    ]
    return [*kept_lower, *out_upper], errors


# --- load_policy ------------------------------------------------------------------------------------------


def _collect(
    specs_dir: Path | None, ds01_config_dir: Path | None
) -> tuple[PolicySet | None, list[PolicyError], list[str]]:
    """:func:`_collect_inputs`, and any exception it did not foresee as an error: a start fails with
    it, a reload keeps the last good policy (an escaping exception failed every pass instead)."""
    try:
        return _collect_inputs(specs_dir, ds01_config_dir)
    except Exception as exc:
        where = " + ".join(str(p) for p in (specs_dir, ds01_config_dir) if p is not None)
        problem = f"cannot load the policy: {type(exc).__name__}: {exc}"
        return None, [PolicyError(where, None, problem, fix="correct the file it names (or report it)")], []


def _collect_inputs(
    specs_dir: Path | None, ds01_config_dir: Path | None
) -> tuple[PolicySet | None, list[PolicyError], list[str]]:
    if specs_dir is None and ds01_config_dir is None:
        return builtin_policy(), [], []
    entries: list[LoadedDocument] = []
    spec_entries: list[LoadedDocument] = []
    inputs: list[str] = []
    errors: list[PolicyError] = []
    origin: list[str] = []
    if specs_dir is not None:
        origin.append(f"specs {specs_dir}")
        if not specs_dir.is_dir():
            what = "is not a directory" if specs_dir.exists() else "does not exist"
            errors.append(
                PolicyError(str(specs_dir), None, f"specs directory {what}", fix="create it or fix the path")
            )
        else:
            files = spec_files(specs_dir)
            if not files:
                # (An admin moving the one file aside to edit it must not put the built-in default
                # in force: a reload keeps the last good policy, a start fails.)
                errors.append(
                    PolicyError(
                        str(specs_dir),
                        None,
                        "the specs directory holds no *.yaml or *.yml files",
                        fix="put the spec files back, or start without --specs (DS01_SPECS)",
                    )
                )
            spec_entries, spec_inputs, spec_errors = load_spec_files(files)
            inputs.extend(spec_inputs)
            errors.extend(spec_errors)
    if ds01_config_dir is not None:
        origin.append(f"DS01 config {ds01_config_dir}")
        ds01_entries, ds01_inputs, ds01_errors = ds01_import.import_entries(ds01_config_dir)
        entries.extend(ds01_entries)
        inputs.extend(ds01_inputs)
        errors.extend(ds01_errors)
    entries, layer_errors = layered_set(entries, spec_entries)
    errors.extend(layer_errors)
    policy, set_errors = assemble(
        entries, origin=" + ".join(origin), input_files=inputs, check_references=not errors
    )
    errors = sorted_errors([*errors, *set_errors])
    return (None if errors else policy), errors, inputs


def layered_set(
    ds01_entries: Sequence[LoadedDocument], spec_entries: Sequence[LoadedDocument]
) -> tuple[list[LoadedDocument], list[PolicyError]]:
    """The specs over the DS01 import (see :func:`layer_entries`); the specs alone when there is none.

    Each layer is first checked on its own (two LifecyclePolicies in the specs stay an error), so a
    duplicate is reported where it is, not as a clash between layers. Used by the daemon and
    ``ds01ctl validate`` alike, so both give the same answer.
    """
    if not ds01_entries or not spec_entries:
        return [*ds01_entries, *spec_entries], []
    errors: list[PolicyError] = []
    for layer in (ds01_entries, spec_entries):
        _policy, layer_errors = assemble(layer, origin="layer", check_references=False)
        errors.extend(layer_errors)
    if errors:
        return [*ds01_entries, *spec_entries], errors
    entries, errors = layer_entries(ds01_entries, spec_entries)
    return entries, [*errors, *_groups_over_nothing(entries, ds01_entries, spec_entries)]


def _groups_over_nothing(
    entries: Sequence[LoadedDocument],
    ds01_entries: Sequence[LoadedDocument],
    spec_entries: Sequence[LoadedDocument],
) -> list[PolicyError]:
    """A UserGroup of the specs that names no members (so keeps a DS01 group's) but layers over no
    DS01 group, and is not the defaultGroup: it applies to nobody.

    That is what a DS01 group renamed (researcher -> researchers) leaves of the specs' changes to
    it: silently, its members lost them (a longer timeout, higher limits) and were stopped sooner."""
    layered = {id(e) for e in entries}
    lifecycle = next((e.document for e in entries if isinstance(e.document, LifecyclePolicy)), None)
    default = lifecycle.spec.default_group if lifecycle is not None else None
    ds01_groups = [e.document.metadata.name for e in ds01_entries if isinstance(e.document, UserGroup)]
    errors: list[PolicyError] = []
    for entry in spec_entries:
        doc = entry.document
        if (
            not isinstance(doc, UserGroup)
            or id(entry) not in layered  # merged over a DS01 group of its name
            or "members" in doc.spec.model_fields_set
            or doc.metadata.name == default
        ):
            continue
        src = entry.source
        errors.append(
            PolicyError(
                src.path,
                entry.line_of(("metadata", "name")),
                f"UserGroup/{doc.metadata.name} names no members and layers over no group of DS01's "
                f"({', '.join(ds01_groups) or 'none'}): it applies to nobody",
                document=src.document,
                kind=doc.kind,
                name=doc.metadata.name,
                field="metadata.name",
                fix="name it like the DS01 group it changes (renamed there?), or give it members "
                "(members: [] for none on purpose)",
            )
        )
    return errors


def load_policy(specs_dir: Path | None = None, ds01_config_dir: Path | None = None) -> PolicySet:
    """The desired state from specs and/or DS01's config; the built-in default with neither.

    ``specs_dir`` is a directory of CRD-like ``*.yaml``/``*.yml`` files (the daemon's convention is
    :data:`DEFAULT_SPECS_DIR`); ``ds01_config_dir`` holds ``resource-limits.yaml`` and optionally
    ``groups/*.members``, ``user-overrides.yaml``, ``lifecycle-exemptions.yaml``. With both, the
    specs are layered over the DS01 import key by key, the specs winning (:func:`layered_set`).
    Raises :class:`PolicyLoadError`.
    """
    policy, errors, _ = _collect(specs_dir, ds01_config_dir)
    if errors or policy is None:
        raise PolicyLoadError(errors)
    return policy


def load_spec_text(text: str, name: str = "<text>") -> PolicySet:
    """A PolicySet from YAML text; a membersFile is read relative to the directory of ``name``."""
    entries, inputs, errors = _entries_from_file(Path(name), text)
    policy, set_errors = assemble(entries, origin=name, input_files=inputs, check_references=not errors)
    errors = sorted_errors([*errors, *set_errors])
    if errors or policy is None:
        raise PolicyLoadError(errors)
    return policy


# --- the daemon's holder ---------------------------------------------------------------------------------

Fingerprint = tuple[tuple[str, int, int, int] | tuple[str], ...]


def _stat(path: str) -> tuple[str, int, int, int] | tuple[str]:
    try:
        st = Path(path).stat()
    except OSError:
        return (path,)
    return (path, st.st_mtime_ns, st.st_size, st.st_ino)


# How long the daemon waits after the last write to a policy file before it reads the change.
RELOAD_SETTLE_S: Final = 2.0
# Reads of one reload while each names files the one before did not (see PolicyHolder._read).
_READS: Final = 3


def _written_lately(fingerprint: Fingerprint, settle_s: float) -> bool:
    """Whether a file was modified within the last ``settle_s`` (a time further in the future than
    that is a clock oddity, not a write under way: it would otherwise hold every reload back)."""
    now_ns, window_ns = time.time_ns(), int(settle_s * 1e9)
    return any(len(f) == 4 and now_ns - window_ns < f[1] <= now_ns + window_ns for f in fingerprint)


def _parts(policy: PolicySet, document: Document) -> list[tuple[Document, str]]:
    """The documents ``document`` was made of (its layers, or itself), each with its file."""
    for entry in policy.layered:
        if entry.document is document:
            return [(layer.document, layer.source.path) for layer in entry.layers]
    source = policy.source(document.kind, document.metadata.name)
    return [(document, source.path)] if source is not None else []


def _written_keys(document: Document) -> set[tuple[str, ...]]:
    """The paths of the values ``document``'s spec writes (the user it names aside)."""
    keys: set[tuple[str, ...]] = set()

    def walk(node: Any, at: tuple[str, ...]) -> None:
        if not isinstance(node, dict):
            keys.add(at)
            return
        for key, value in node.items():
            walk(value, (*at, str(key)))

    walk(document.spec.model_dump(mode="json", exclude_unset=True), ())
    return keys - {("user",)}


def _lost_from(current: PolicySet, held: UserOverride | Exemption, path: str, new: PolicySet) -> bool:
    """Whether what the policy in force read from ``path`` for ``held`` is not in ``new``.

    An override layered over DS01's (a UserOverride of the specs for the same user) keeps its name
    when DS01's file is gone, and lost what DS01's entry wrote all the same: every key the file's
    part wrote must still be written by the user's override."""
    from_file = [doc for doc, src in _parts(current, held) if src == path]
    if not from_file:
        return False
    if isinstance(held, Exemption):
        return all(e.metadata.name != held.metadata.name for e in new.exemptions)
    now = next((o for o in new.overrides if o.spec.user == held.spec.user), None)
    kept = _written_keys(now) if now is not None else set()
    return any(not _written_keys(doc) <= kept for doc in from_file)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class PolicyHolder:
    """Keeps the last good PolicySet; reloads when a file changed; a bad reload keeps the old one.

    The first load happens in the constructor and raises :class:`PolicyLoadError` if it fails (the
    daemon must not start on a policy it cannot read).
    """

    def __init__(
        self,
        specs_dir: Path | None = None,
        ds01_config_dir: Path | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
        settle_s: float = 0.0,
    ) -> None:
        self.specs_dir = specs_dir
        self.ds01_config_dir = ds01_config_dir
        self._clock = clock
        self.settle_s = settle_s
        self._forced = False
        self._inputs: list[str] = []
        self.last_errors: tuple[PolicyError, ...] = ()
        self.last_error_at: datetime | None = None
        policy, errors, inputs = _collect(specs_dir, ds01_config_dir)
        self._inputs = inputs
        self._fingerprint: Fingerprint | None = self.fingerprint()
        if errors or policy is None:
            raise PolicyLoadError(errors)
        self.current: PolicySet = policy
        self.loaded_at: datetime = clock()
        # The files that were there when the policy in force was read (see _lost_with_gone_files).
        self._present = frozenset(f[0] for f in self._fingerprint if len(f) == 4)

    @property
    def last_error(self) -> str | None:
        """The failed reload's errors, one per line; None after a good (re)load."""
        return "\n".join(str(e) for e in self.last_errors) if self.last_errors else None

    def fingerprint(self) -> Fingerprint:
        """mtime/size/inode of every file the policy is (or could be) read from."""
        return tuple(_stat(p) for p in self._paths(self._inputs))

    def _paths(self, inputs: Sequence[str]) -> list[str]:
        """Every file the policy is (or could be) read from, given the files a load read."""
        paths: set[str] = set(inputs)
        if self.specs_dir is not None:
            paths.add(str(self.specs_dir))
            if self.specs_dir.is_dir():
                paths.update(str(p) for p in spec_files(self.specs_dir))
        if self.ds01_config_dir is not None:
            paths.update(str(p) for p in ds01_import.candidate_files(self.ds01_config_dir))
        return sorted(paths)

    def _read(
        self, fingerprint: Fingerprint
    ) -> tuple[PolicySet | None, list[PolicyError], list[str], Fingerprint] | None:
        """:func:`_collect`, with the fingerprint of every file it read taken before it read them.

        A read that names a file ``fingerprint`` does not cover (a spec's new membersFile, kept
        anywhere) is done again with that file watched: its state before the first read is not
        known, so a change while it was read (a writer finishing) would go unseen, and the half
        read kept. None when the files read keep changing: the next pass tries again."""
        for _ in range(_READS):
            policy, errors, inputs = _collect(self.specs_dir, self.ds01_config_dir)
            watched = {f[0] for f in fingerprint}
            if all(p in watched for p in inputs):
                return policy, errors, inputs, fingerprint
            fingerprint = tuple(_stat(p) for p in self._paths(inputs))
        return None

    def _lost_with_gone_files(self, policy: PolicySet) -> list[PolicyError]:
        """An error for each DS01 members file the policy in force was read with that is gone while
        its group stays, taking members out of it (and for its overrides and exemptions files).

        DS01's members files are its one source of membership, and optional: at start an absent one
        is a group without members. Gone from under a running daemon (a ``git clean -x`` of the
        checkout, a sync job that removes the file and rewrites it slowly), it is far more often
        an accident than a decision, and read as "no members" it put every member in the default
        group, with its shorter timeouts and lower limits (a lowered limit is never raised). The
        admin who means it empties the file, or removes the group."""
        if self.ds01_config_dir is None:
            return []
        errors: list[PolicyError] = []
        for old in self.current.groups:
            name = old.metadata.name
            path = ds01_import.members_path(self.ds01_config_dir, name)
            new = policy.group(name)
            if new is None or str(path) not in self._present or os.path.lexists(path):
                continue
            lost = sorted(set(old.spec.members or ()) - set(new.spec.members or ()))
            if not lost:
                continue
            shown = ", ".join(lost[:10]) + (f" and {len(lost) - 10} more" if len(lost) > 10 else "")
            errors.append(
                PolicyError(
                    str(path),
                    None,
                    f"the members file of UserGroup/{name} is gone, and with it {len(lost)} of its "
                    f"members ({shown}), who would fall to the default group; the policy in force "
                    "keeps them",
                    fix="restore the file; to take them out of the group, empty it (comments only) or "
                    "remove the group",
                )
            )
        # DS01's overrides and exemptions files, git-ignored like the members files: gone, every
        # override and exemption went with them, and the jobs they kept running were stopped.
        held: list[UserOverride | Exemption] = [*self.current.overrides, *self.current.exemptions]
        for file_name, what in (
            (ds01_import.OVERRIDES_FILE, "overrides"),
            (ds01_import.EXEMPTIONS_FILE, "exemptions"),
        ):
            path = self.ds01_config_dir / file_name
            if str(path) not in self._present or os.path.lexists(path):
                continue
            users = sorted({d.spec.user for d in held if _lost_from(self.current, d, str(path), policy)})
            if users:
                errors.append(
                    PolicyError(
                        str(path),
                        None,
                        f"the file is gone, and with it the {what} of {', '.join(map(repr, users))}; the "
                        "policy in force keeps them",
                        fix="restore the file; to remove them, empty it (comments only)",
                    )
                )
        return errors

    def force_reload(self) -> None:
        """Make the next :meth:`reload` re-read every file (SIGHUP), at once: the admin who asks is
        done writing. Does no I/O itself."""
        self._fingerprint = None
        self._forced = True

    def reload(self) -> list[PolicyError]:
        """Re-read if anything changed. Returns the errors of a failed reload (the old policy stays).

        With ``settle_s`` (the daemon's), a change is read only once every file has been left alone
        that long (a file it newly names, such as a new membersFile, included), and is applied only
        if no file changed while it was read: a file rewritten in place (an editor, ``cat >``, a
        sync job) read half-way through is often valid YAML that says less, and one pass of it
        lowered a running job's limits for good (a limit is never raised). Until then the policy in
        force stays; a later pass reads it. After :meth:`force_reload` (SIGHUP) the change is read
        at once, still not applied if a file changed while it was read."""
        fingerprint = self.fingerprint()
        if fingerprint == self._fingerprint:
            return []
        forced, self._forced = self._forced, False
        if self.settle_s > 0 and not forced and _written_lately(fingerprint, self.settle_s):
            return []
        read = self._read(fingerprint)
        if read is None:
            return []
        policy, errors, inputs, fingerprint = read
        if self.settle_s > 0:
            if any(_stat(f[0]) != f for f in fingerprint):
                return []  # changed while being read: read again when it has settled
            if not forced and _written_lately(fingerprint, self.settle_s):
                return []  # a file the read newly named may still be being written
        self._inputs = inputs
        # Keep the fingerprint taken before reading, so a file changed while we read is re-read next
        # pass (less the files the policy no longer reads).
        paths = set(self._paths(inputs))
        self._fingerprint = tuple(f for f in fingerprint if f[0] in paths)
        if not errors and policy is not None:
            errors = self._lost_with_gone_files(policy)
        if errors or policy is None:
            self.last_errors = tuple(errors)
            self.last_error_at = self._clock()
            return list(errors)
        self.current = policy
        self.loaded_at = self._clock()
        self._present = frozenset(f[0] for f in fingerprint if len(f) == 4)
        self.last_errors = ()
        self.last_error_at = None
        return []
