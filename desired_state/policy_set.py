"""PolicySet: the loaded, validated desired state, and where each of its documents came from.

A PolicySet holds at most one LifecyclePolicy (None: the built-in one alone), the user groups in
matching order, user overrides and exemptions (expired ones included: they stay on record), plus
the sources for ``ds01ctl get policies``. It is immutable and compares by its documents only.

Built by :mod:`desired_state.load` (specs and/or DS01 files) and read by :mod:`desired_state.resolve`.
No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath
from typing import Final

from crd_like_specs.kinds import Exemption, LifecyclePolicy, UserGroup, UserOverride
from desired_state.errors import Loc

BUILTIN_PATH: Final = "<built-in>"
DEFAULT_GROUP_ORDER: Final = 100

Document = LifecyclePolicy | UserGroup | UserOverride | Exemption


def sanitise_username(username: str) -> str:
    """DS01's sanitised form of a login name (used for systemd slices and as a fallback key).

    The domain is stripped (``h.baker@school.lan`` -> ``h.baker``), dots and characters outside
    ``[A-Za-z0-9_:]`` become ``_``, runs of ``_`` collapse and leading/trailing ``_`` go. DS01 also
    shortens names over 32 characters with a hash suffix; such names cannot be matched here and
    are left long (documented in docs/policy.md).
    """
    text = username.split("@", 1)[0]
    text = re.sub(r"[^A-Za-z0-9_:]", "_", text.replace(".", "_"))
    return re.sub(r"_+", "_", text).strip("_")


@dataclass(frozen=True)
class SpecSource:
    """Where one document came from."""

    kind: str
    name: str
    path: str  # a file path, or BUILTIN_PATH
    document: int | None = None  # 1-based position in the file
    line: int | None = None
    detail: str = ""  # e.g. "members also from groups/researcher.members"

    @property
    def builtin(self) -> bool:
        return self.path == BUILTIN_PATH

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        text = f"{self.kind}/{self.name} from {where}"
        return f"{text} ({self.detail})" if self.detail else text


def _no_line(_loc: Loc) -> int | None:
    return None


@dataclass(frozen=True)
class LoadedDocument:
    """A validated document, where it came from, and how to find the line of one of its fields."""

    document: Document
    source: SpecSource
    line_of: Callable[[Loc], int | None] = field(default=_no_line, compare=False, repr=False)
    # A document layered from several (DS01 import below, specs above): those, lowest first.
    layers: tuple[LoadedDocument, ...] = field(default=(), compare=False, repr=False)

    def layer_of(self, loc: Loc) -> LoadedDocument:
        """The layer that wrote ``loc`` (the highest), or this document when it is not layered."""
        for layer in reversed(self.layers):
            if written(layer.document, loc):
                return layer
        return self


def written(document: Document, loc: Loc) -> bool:
    """Whether ``document`` writes the field at ``loc`` (snake_case or camelCase path)."""
    node: object = document
    for part in loc:
        fields_set = getattr(node, "model_fields_set", None)
        if fields_set is None:
            return isinstance(node, dict) and part in node
        name = _field_name(node, str(part))
        if name is None or name not in fields_set:
            return False
        node = getattr(node, name)
    return True


def _field_name(model: object, part: str) -> str | None:
    fields = getattr(type(model), "model_fields", {})
    if part in fields:
        return part
    for name, info in fields.items():
        if info.alias == part:
            return str(name)
    return None


@dataclass(frozen=True)
class PolicySet:
    """The desired state: documents plus provenance. Equality ignores provenance."""

    lifecycle: LifecyclePolicy | None
    groups: tuple[UserGroup, ...] = ()
    overrides: tuple[UserOverride, ...] = ()
    exemptions: tuple[Exemption, ...] = ()
    sources: tuple[SpecSource, ...] = field(default=(), compare=False)
    origin: str = field(default="built-in default", compare=False)
    input_files: tuple[str, ...] = field(default=(), compare=False, repr=False)
    # Documents layered from several (DS01 import below, specs above), each with its layers.
    layered: tuple[LoadedDocument, ...] = field(default=(), compare=False, repr=False)
    # Only for the built-in policy alone (lifecycle None): its defaultGroup.
    fallback_default_group: str | None = None
    _members: dict[str, UserGroup] = field(default_factory=dict, init=False, compare=False, repr=False)
    _sanitised_members: dict[str, UserGroup] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    # Login names more than one group lists: every such group, in order (the first applies).
    _listed_in: dict[str, tuple[UserGroup, ...]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.groups, key=group_sort_key))
        object.__setattr__(self, "groups", ordered)
        exact: dict[str, UserGroup] = {}
        sanitised: dict[str, UserGroup] = {}
        listed_in: dict[str, list[UserGroup]] = {}
        for group in ordered:  # first group in order wins, as in DS01
            for member in dict.fromkeys(group.spec.members or ()):
                exact.setdefault(member, group)
                sanitised.setdefault(sanitise_username(member), group)
                listed_in.setdefault(member, []).append(group)
        object.__setattr__(self, "_members", exact)
        object.__setattr__(self, "_sanitised_members", sanitised)
        object.__setattr__(self, "_listed_in", {m: tuple(gs) for m, gs in listed_in.items() if len(gs) > 1})

    # --- lookups ---------------------------------------------------------------------------------

    def documents(self) -> list[Document]:
        """Every document, in a stable order (what ``dump`` writes and what equality compares)."""
        docs: list[Document] = []
        if self.lifecycle is not None:
            docs.append(self.lifecycle)
        docs.extend(self.groups)
        docs.extend(self.overrides)
        docs.extend(self.exemptions)
        return docs

    def group(self, name: str) -> UserGroup | None:
        for group in self.groups:
            if group.metadata.name == name:
                return group
        return None

    def group_of(self, owner: str) -> tuple[UserGroup | None, str]:
        """The owner's group and how it was found: by login name, else by sanitised form."""
        group = self._members.get(owner)
        if group is not None:
            also = self.listed_in(owner)[1:]
            if also:
                # Listed again in a later group: say which applies, or an admin reading that group's
                # members wonders why its settings never do (ds01ctl validate warns of it too).
                later = ", ".join(f"UserGroup/{g.metadata.name}" for g in also)
                return group, f"member '{owner}' (also listed in {later}, later by order: not applied)"
            return group, f"member '{owner}'"
        key = sanitise_username(owner)
        group = self._sanitised_members.get(key) if key else None
        if group is not None:
            return group, f"member by sanitised name '{key}'"
        return None, ""

    def listed_in(self, owner: str) -> tuple[UserGroup, ...]:
        """Every group listing the login name ``owner`` (exactly), in order, when more than one does;
        else ``()``. The first is the owner's group (:meth:`group_of`); the others never apply."""
        return self._listed_in.get(owner, ())

    def members_in_several_groups(self) -> dict[str, tuple[UserGroup, ...]]:
        """Each login name more than one group lists, with those groups in order (the first applies)."""
        return dict(self._listed_in)

    def override_of(self, owner: str) -> UserOverride | None:
        for override in self.overrides:
            if override.spec.user == owner:
                return override
        key = sanitise_username(owner)
        for override in self.overrides:
            if key and sanitise_username(override.spec.user) == key:
                return override
        return None

    def exemptions_of(self, owner: str) -> list[Exemption]:
        """All of the owner's exemptions, expired ones included."""
        key = sanitise_username(owner)
        return [
            e
            for e in self.exemptions
            if e.spec.user == owner or (key and sanitise_username(e.spec.user) == key)
        ]

    def active_exemptions(self, owner: str, now: datetime) -> list[Exemption]:
        return [e for e in self.exemptions_of(owner) if is_active(e, now)]

    def layers_of(self, document: Document) -> list[tuple[Document, str]]:
        """The layers of one document, lowest first, each with its label (itself when not layered)."""
        label = f"{document.kind}/{document.metadata.name}"
        for entry in self.layered:
            if entry.document is document:
                names = [layer.document.metadata.name for layer in entry.layers]
                return [
                    (
                        layer.document,
                        f"{layer.document.kind}/{layer.document.metadata.name}"
                        + (
                            f" ({PurePath(layer.source.path).name})"
                            if names.count(layer.document.metadata.name) > 1
                            else ""
                        ),
                    )
                    for layer in entry.layers
                ]
        return [(document, label)]

    def source(self, kind: str, name: str) -> SpecSource | None:
        for src in self.sources:
            if src.kind == kind and src.name == name:
                return src
        return None

    def is_builtin(self, kind: str, name: str) -> bool:
        src = self.source(kind, name)
        return src is not None and src.builtin

    @property
    def default_group_name(self) -> str | None:
        """The group for owners in no group; None when there is none."""
        if self.lifecycle is not None:
            return self.lifecycle.spec.default_group
        return self.fallback_default_group


def is_active(exemption: Exemption, now: datetime) -> bool:
    """An exemption applies until its expiry (exclusive); None means permanent."""
    expires = exemption.spec.expires_at
    return expires is None or now < expires


def group_sort_key(group: UserGroup) -> tuple[int, str]:
    order = group.spec.order
    return (DEFAULT_GROUP_ORDER if order is None else order, group.metadata.name)
