"""Import DS01's configuration files as CRD-like documents, losslessly and strictly.

Reads a DS01 config directory::

    resource-limits.yaml            required: defaults, groups, policies, container_types, ...
    groups/<group>.members          optional: one login name per line, '#' comments (merged with inline)
    user-overrides.yaml             optional: {username: {limit keys..., policies?, aggregate?}}
    lifecycle-exemptions.yaml       optional: {exemptions: [{username, exempt_from, ...}]}

and produces the same documents an admin would write by hand (one LifecyclePolicy named ``ds01``,
one UserGroup per group, one UserOverride per overridden user, one Exemption per record), so DS01's
files and the equivalent specs load to the same :class:`~desired_state.policy_set.PolicySet`.

Strict where DS01 was silently lenient: a string with a unit in a unit-suffixed key (``"24h"`` in
``idle_timeout_h``), a bare number in an old unsuffixed key (``max_runtime: 48``, the incident that
caused the rename), negatives, booleans and unknown keys are errors naming the DS01 key, its line and
the fix. Comment-only sections (YAML null) are empty, not a crash. Non-lifecycle keys (memory, cpus,
aggregate, bare_metal_access, access_control, enforcement, ...) are kept, not acted on.

``python -m desired_state.ds01_import CONFIG_DIR`` prints the equivalent CRD-like YAML.
Called by :mod:`desired_state.load` and :mod:`desired_state.validate`; builds on
:mod:`desired_state.documents` (never on ``load``); reads files, resolves nothing.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from crd_like_specs.durations import (
    DurationError,
    Seconds,
    ds01_number_to_seconds,
    means_no_limit,
    parse_duration,
)
from crd_like_specs.kinds import (
    API_VERSION,
    Aggregate,
    Ds01AccessControl,
    Ds01BareMetalAccess,
    Ds01Enforcement,
    Ds01GpuAllocation,
    Exemption,
    LifecyclePolicy,
    UserGroup,
    UserOverride,
)
from crd_like_specs.vocabulary import ContainerType
from desired_state.documents import assemble, dump_documents, read_members_file, sorted_errors
from desired_state.errors import Loc, PolicyError, PolicyLoadError, from_validation_error, unwrap_model
from desired_state.policy_set import LoadedDocument, PolicySet, SpecSource, sanitise_username
from desired_state.yaml_docs import YamlDocument, non_empty, read_documents

DS01_MAIN_FILE: Final = "resource-limits.yaml"
OVERRIDES_FILE: Final = "user-overrides.yaml"
EXEMPTIONS_FILE: Final = "lifecycle-exemptions.yaml"
GROUPS_DIR: Final = "groups"
RUNTIME_DIR: Final = "runtime"  # DS01's config/runtime/, below its config/
POLICY_NAME: Final = "ds01"
INFRASTRUCTURE_REASON: Final = "DS01 infrastructure container"

# --- key tables (notes section 1.3) -----------------------------------------------------------------------

# Per-user limit keys (defaults, groups.<g>, user overrides) -> Resources field.
RESOURCE_KEYS: Final[dict[str, str]] = {
    "max_gpu_equivalents": "maxGpuEquivalents",
    "max_gpu_slots_per_container": "maxGpuSlotsPerContainer",
    "allow_full_gpu": "allowFullGpu",
    "max_cpus": "maxCpus",
    "memory": "memory",
    "memory_swap": "memorySwap",
    "shm_size": "shmSize",
    "pids_limit": "pidsLimit",
    "max_containers_per_user": "maxContainersPerUser",
    "max_tasks": "maxTasks",
    "priority": "priority",
    # declared (commented out) by DS01, never implemented there; preserved if present
    "gpu_memory": "gpuMemory",
    "io_read_bps": "ioReadBps",
    "io_write_bps": "ioWriteBps",
    "ulimit_nofile": "ulimitNofile",
    "storage_workspace": "storageWorkspace",
    "storage_data": "storageData",
    "storage_tmp": "storageTmp",
}
# Legacy names DS01 still reads -> current name.
ALIASES: Final[dict[str, str]] = {
    "max_gpu_slots": "max_gpu_equivalents",
    "max_gpus_per_user": "max_gpu_equivalents",
    "max_mig_instances": "max_gpu_equivalents",
    "max_gpus_per_container": "max_gpu_slots_per_container",
    "max_mig_per_container": "max_gpu_slots_per_container",
    "cpus": "max_cpus",
    "sigterm_grace_seconds": "sigterm_grace_s",
    "mig_instances_per_gpu": "slots_per_gpu",
}
# Per-user lifecycle durations (unit in the key) -> Settings field.
USER_DURATIONS: Final[dict[str, tuple[str, str]]] = {
    "max_runtime_h": ("maxRuntime", "h"),
    "idle_timeout_h": ("idleTimeout", "h"),
    "gpu_hold_after_stop_h": ("gpuHoldAfterStop", "h"),
    "container_hold_after_stop_h": ("containerHoldAfterStop", "h"),
}
# `policies` numbers (global, per group, per override) -> Settings field.
POLICY_NUMBERS: Final[dict[str, str]] = {
    "high_demand_threshold": "highDemandThreshold",
    "high_demand_idle_reduction": "highDemandIdleReduction",
    "gpu_idle_threshold": "gpuIdleThresholdPct",
    "cpu_idle_threshold": "cpuIdleThresholdPct",
    "idle_detection_window": "idleDetectionWindow",
}
# DS01's check-idle cron ran hourly (``:20``); its network threshold was bytes per check. Ours is a
# rate, so the verdict does not depend on how often the controller samples: bytes / 3600 s.
DS01_IDLE_CHECK_INTERVAL_S: Final = 3600.0
# `policies` amounts per DS01 check -> Settings rate field (per second).
POLICY_PER_CHECK: Final[dict[str, str]] = {
    "network_idle_threshold": "networkIdleThresholdBytesPerSecond",
}
POLICY_DURATIONS: Final[dict[str, tuple[str, str]]] = {
    "grace_period_m": ("gracePeriod", "m"),
    "keepalive_max_duration_h": ("keepaliveMaxAge", "h"),
    "sigterm_grace_s": ("sigtermGrace", "s"),
    "created_container_timeout_m": ("createdContainerTimeout", "m"),
}
# Only in the global `policies`: kept in spec.ds01, not acted on.
GLOBAL_POLICY_DURATIONS: Final[dict[str, tuple[str, str]]] = {
    "gpu_hold_after_manual_stop_m": ("gpuHoldAfterManualStop", "m"),
}
# A 0 in these keys was "no limit" to DS01's scripts (desired_state docs, "Differences from DS01").
ZERO_IS_NO_LIMIT: Final = frozenset({"idle_timeout_h", "max_runtime_h"})
# A 0 in these keys has no certain meaning: an error.
# A never-started container removed "at once" would be one `docker create`d a second ago that
# compose or a wrapper is about to start: 0 is as unclear there as in a hold.
ZERO_IS_UNCLEAR: Final = frozenset(
    {"gpu_hold_after_stop_h", "container_hold_after_stop_h", "created_container_timeout_m"}
)
# Keys whose field takes no null (a grace period is never "never"), with DS01's shipped value.
NULL_REFUSED: Final[dict[str, int]] = {"grace_period_m": 30, "sigterm_grace_s": 60}
TYPE_DURATIONS: Final[dict[str, tuple[str, str]]] = {
    "idle_timeout_h": ("idleTimeout", "h"),
    "max_runtime_h": ("maxRuntime", "h"),
    "sigterm_grace_s": ("sigtermGrace", "s"),
    "container_hold_after_stop_h": ("containerHoldAfterStop", "h"),
}
TOP_LEVEL_KEYS: Final = (
    "defaults",
    "default_group",
    "enforcement",
    "groups",
    "user_overrides",
    "gpu_allocation",
    "policies",
    "container_types",
    "monitoring",
    "bare_metal_access",
    "access_control",
)
EXEMPT_FROM: Final[dict[str, str]] = {
    "idle_timeout_h": "idle",
    "idle_timeout": "idle",
    "max_runtime_h": "max_runtime",
    "max_runtime": "max_runtime",
}
EXEMPTION_KEYS: Final = (
    "username",
    "exempt_from",
    "reason",
    "approved_by",
    "approved_on",
    "expires_on",
    "category",
    "requested_by",
    "metadata",
)


def _legacy_name(key: str) -> str:
    return re.sub(r"_[hms]$", "", key)


# Old unsuffixed duration keys (strings with units, e.g. max_runtime: "24h") -> suffixed key.
LEGACY_DURATIONS: Final[dict[str, str]] = {
    _legacy_name(k): k
    for k in (*USER_DURATIONS, *POLICY_DURATIONS, *GLOBAL_POLICY_DURATIONS, *TYPE_DURATIONS)
}


# --- conversion context ------------------------------------------------------------------------------


@dataclass
class _Doc:
    """A document being built: the CRD-shaped dict and where each of its keys came from."""

    yaml: YamlDocument
    data: dict[str, Any]
    origin: dict[Loc, Loc] = field(default_factory=dict)  # CRD location -> DS01 location
    display_prefix: str = ""

    def put(self, crd_loc: Loc, value: Any, ds01_loc: Loc) -> None:
        node = self.data
        for part in crd_loc[:-1]:
            node = node.setdefault(part, {})  # type: ignore[arg-type]
        node[crd_loc[-1]] = value  # type: ignore[index]
        self.origin[crd_loc] = ds01_loc
        for end in range(1, len(crd_loc)):
            self.origin.setdefault(crd_loc[:end], ds01_loc[: max(0, len(ds01_loc) - (len(crd_loc) - end))])

    def ds01_loc(self, crd_loc: Loc) -> tuple[Loc, Loc]:
        """The DS01 location of the longest known prefix of ``crd_loc``, and the rest."""
        for end in range(len(crd_loc), -1, -1):
            found = self.origin.get(tuple(crd_loc[:end]))
            if found is not None:
                return found, tuple(crd_loc[end:])
        return (), tuple(crd_loc)

    def line_of(self, crd_loc: Loc) -> int:
        ds01_loc, _ = self.ds01_loc(crd_loc)
        return self.yaml.line_of(ds01_loc)


class _Importer:
    def __init__(self, config_dir: Path) -> None:
        self.dir = config_dir
        self.errors: list[PolicyError] = []
        self.inputs: list[str] = []

    # --- errors ---------------------------------------------------------------------------------

    def error(self, doc: YamlDocument, loc: Loc, problem: str, *, expected: str = "", fix: str = "") -> None:
        self.errors.append(
            PolicyError(
                str(doc.path),
                doc.line_of(loc),
                problem,
                document=doc.number,
                field=_show_loc(loc),
                expected=expected,
                fix=fix,
            )
        )

    def unknown(self, doc: YamlDocument, loc: Loc, allowed: Sequence[str]) -> None:
        key = str(loc[-1])
        guess = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
        self.error(
            doc,
            loc,
            f"unknown key '{key}'",
            expected="one of: " + ", ".join(sorted(allowed)),
            fix=f"rename it to '{guess[0]}'" if guess else "remove it (check the spelling)",
        )

    def mapping(self, doc: YamlDocument, loc: Loc, value: Any) -> dict[Any, Any] | None:
        """A section's mapping; a comment-only section (null) is empty; anything else is an error."""
        if value is None:
            return {}
        if isinstance(value, dict):
            return value
        self.error(doc, loc, f"expected a mapping of key: value, found {type(value).__name__}")
        return None

    # --- values ------------------------------------------------------------------------------------

    def duration(self, doc: YamlDocument, loc: Loc, value: Any, unit: str) -> tuple[bool, Seconds | None]:
        """(ok, the duration in seconds or None for never) for a DS01 unit-suffixed key.

        DS01's enforcement scripts skip a container whose idle timeout or max runtime is 0 (no
        limit): read as 0 s, the same file would stop every container at once. So 0 there is read
        as DS01 read it, never. A hold (or the created-container timeout) of 0 is an error: its
        meaning is not certain (never, or at once), and either reading would remove or keep
        containers the admin did not mean to."""
        key = loc[-1] if loc else None
        canonical = ALIASES.get(key, key) if isinstance(key, str) else key
        if value is None and canonical in NULL_REFUSED:
            self.error(
                doc,
                loc,
                "null is not allowed here (it would mean 'never')",
                expected=f"a bare number of {_UNITS[unit]}",
                fix=f"write {canonical}: {NULL_REFUSED[str(canonical)]} (DS01's shipped value), or another "
                "number, or leave the key out for the default",
            )
            return False, None
        if value is None:
            return True, None
        if value == 0 and isinstance(value, int | float) and not isinstance(value, bool):
            zero = self.zero(doc, loc, str(canonical))
            if zero is not None:
                return zero
        try:
            return True, Seconds.of(ds01_number_to_seconds(value, unit))
        except DurationError as exc:
            self.error(doc, loc, str(exc), expected=f"a bare number of {_UNITS[unit]}, or null for never")
            return False, None

    def zero(self, doc: YamlDocument, loc: Loc, suffixed: str) -> tuple[bool, Seconds | None] | None:
        """How a 0 in the key ``suffixed`` (written in it, or in its old unsuffixed key as ``"0h"``)
        reads: never for an idle timeout or a max runtime, an error for a hold; None: 0 s."""
        if suffixed in ZERO_IS_NO_LIMIT:
            return True, None
        if suffixed not in ZERO_IS_UNCLEAR:
            return None
        key, unit = loc[-1], suffixed[-1]
        minute = "1" if unit == "m" else "0.02"
        self.error(
            doc,
            loc,
            f"0 is unclear in {key}: never removed, or removed at once?",
            expected=f"null for never, or a positive number of {_UNITS[unit]}",
            fix=f"{suffixed}: null (keep it), or {suffixed}: {minute} (about a minute)",
        )
        return False, None

    def legacy_duration(
        self, doc: YamlDocument, loc: Loc, value: Any, suffixed: str
    ) -> tuple[bool, Seconds | None]:
        """An old unsuffixed key: a string with a unit is accepted; a bare number is the 48-seconds trap."""
        key = str(loc[-1])
        if value is None:
            return True, None
        if isinstance(value, bool) or not isinstance(value, str):
            self.error(
                doc,
                loc,
                f"bare number {value!r} in the old key '{key}' is ambiguous (DS01 once read it as seconds, "
                "which stopped containers right after launch)",
                expected=f"{suffixed}: <number of {_UNITS[suffixed[-1]]}>",
                fix=f"use {suffixed}: {value}"
                if not isinstance(value, bool)
                else f"use {suffixed}: <number>",
            )
            return False, None
        try:
            seconds = parse_duration(value)
        except DurationError as exc:
            # "never" and the like: DS01 reads them as no limit, and a number would set one.
            fix = f"DS01 reads it as no limit: write {key}: null" if means_no_limit(value) else None
            self.error(doc, loc, str(exc), fix=fix or f"or use {suffixed}: <number>")
            return False, None
        # "0h" is the 0 of the suffixed key, and reads as it does there (DS01's scripts skipped a
        # zero runtime): read as 0 s, every container was stopped right after its start.
        zero = self.zero(doc, loc, suffixed) if seconds == 0 else None
        return zero if zero is not None else (True, Seconds.of(seconds))

    # --- sections ------------------------------------------------------------------------------------

    def user_keys(
        self,
        out: _Doc,
        section: Mapping[Any, Any],
        ds01_loc: Loc,
        *,
        extra: Sequence[str] = (),
        policies_ok: bool = False,
    ) -> None:
        """defaults / groups.<g> / an override entry: limits and lifecycle keys, plus policies/aggregate."""
        doc = out.yaml
        allowed = [
            *RESOURCE_KEYS,
            *USER_DURATIONS,
            *_aliases_for(RESOURCE_KEYS),
            *_legacy_for(USER_DURATIONS),
            *extra,
        ]
        if policies_ok:
            allowed += ["policies", "aggregate"]
        self._check_alias_clash(doc, section, ds01_loc)
        for key, value in section.items():
            loc = (*ds01_loc, key)
            canonical = ALIASES.get(key, key) if isinstance(key, str) else key
            if key in extra:
                continue
            if canonical in RESOURCE_KEYS:
                out.put(("spec", "resources", RESOURCE_KEYS[canonical]), value, loc)
            elif canonical in USER_DURATIONS:
                crd_field, unit = USER_DURATIONS[canonical]
                ok, seconds = self.duration(doc, loc, value, unit)
                if ok:
                    out.put(("spec", "settings", crd_field), seconds, loc)
            elif key in LEGACY_DURATIONS and LEGACY_DURATIONS[key] in USER_DURATIONS:
                suffixed = LEGACY_DURATIONS[key]
                if suffixed in section:
                    self.error(
                        doc, loc, f"both '{key}' and '{suffixed}' are set", fix=f"keep only {suffixed}"
                    )
                    continue
                ok, seconds = self.legacy_duration(doc, loc, value, suffixed)
                if ok:
                    out.put(("spec", "settings", USER_DURATIONS[suffixed][0]), seconds, loc)
            elif policies_ok and key == "policies":
                body = self.mapping(doc, loc, value)
                if body is not None:
                    self.policy_keys(out, body, loc, global_policies=False)
            elif policies_ok and key == "aggregate":
                body = self.mapping(doc, loc, value)
                if body:
                    self.preserved(out, body, loc, ("spec", "resources", "aggregate"), Aggregate)
            else:
                self.unknown(doc, loc, allowed)

    def _check_alias_clash(self, doc: YamlDocument, section: Mapping[Any, Any], ds01_loc: Loc) -> None:
        """A current key and its legacy alias together: DS01's choice between them is not defined."""
        seen: dict[str, str] = {}
        for key in section:
            if not isinstance(key, str):
                continue
            canonical = ALIASES.get(key, key)
            if canonical in seen:
                self.error(
                    doc,
                    (*ds01_loc, key),
                    f"'{key}' and '{seen[canonical]}' set the same value",
                    fix=f"keep only '{canonical}'",
                )
            seen.setdefault(canonical, key)

    def policy_keys(
        self, out: _Doc, section: Mapping[Any, Any], ds01_loc: Loc, *, global_policies: bool
    ) -> None:
        doc = out.yaml
        durations = dict(POLICY_DURATIONS)
        if global_policies:
            durations.update(GLOBAL_POLICY_DURATIONS)
        allowed = [
            *POLICY_NUMBERS,
            *POLICY_PER_CHECK,
            *durations,
            *_legacy_for(durations),
            "sigterm_grace_seconds",
        ]
        self._check_alias_clash(doc, section, ds01_loc)
        for key, value in section.items():
            loc = (*ds01_loc, key)
            canonical = ALIASES.get(key, key) if isinstance(key, str) else key
            target = ("spec", "ds01") if canonical in GLOBAL_POLICY_DURATIONS else ("spec", "settings")
            if canonical in POLICY_NUMBERS:
                out.put(("spec", "settings", POLICY_NUMBERS[canonical]), value, loc)
            elif canonical in POLICY_PER_CHECK:
                per_s = (
                    value / DS01_IDLE_CHECK_INTERVAL_S
                    if isinstance(value, int | float) and not isinstance(value, bool)
                    else value  # left as written: validation names the key and the line
                )
                out.put(("spec", "settings", POLICY_PER_CHECK[canonical]), per_s, loc)
            elif canonical in durations:
                crd_field, unit = durations[canonical]
                ok, seconds = self.duration(doc, loc, value, unit)
                if ok:
                    out.put((*target, crd_field), seconds, loc)
            elif key in LEGACY_DURATIONS and LEGACY_DURATIONS[key] in durations:
                suffixed = LEGACY_DURATIONS[key]
                target = ("spec", "ds01") if suffixed in GLOBAL_POLICY_DURATIONS else ("spec", "settings")
                if suffixed in section:
                    self.error(
                        doc, loc, f"both '{key}' and '{suffixed}' are set", fix=f"keep only {suffixed}"
                    )
                    continue
                ok, seconds = self.legacy_duration(doc, loc, value, suffixed)
                if ok:
                    out.put((*target, durations[suffixed][0]), seconds, loc)
            elif not global_policies and key in GLOBAL_POLICY_DURATIONS:
                self.error(
                    doc, loc, f"'{key}' is only read from the global policies", fix="move it to policies:"
                )
            else:
                self.unknown(doc, loc, allowed)

    def type_keys(self, out: _Doc, section: Mapping[Any, Any], ds01_loc: Loc, crd_base: Loc) -> None:
        doc = out.yaml
        allowed = [*TYPE_DURATIONS, *_legacy_for(TYPE_DURATIONS), "sigterm_grace_seconds"]
        self._check_alias_clash(doc, section, ds01_loc)
        for key, value in section.items():
            loc = (*ds01_loc, key)
            canonical = ALIASES.get(key, key) if isinstance(key, str) else key
            if canonical in TYPE_DURATIONS:
                crd_field, unit = TYPE_DURATIONS[canonical]
                ok, seconds = self.duration(doc, loc, value, unit)
                if ok:
                    out.put((*crd_base, crd_field), seconds, loc)
            elif key in LEGACY_DURATIONS and LEGACY_DURATIONS[key] in TYPE_DURATIONS:
                suffixed = LEGACY_DURATIONS[key]
                if suffixed in section:
                    self.error(
                        doc, loc, f"both '{key}' and '{suffixed}' are set", fix=f"keep only {suffixed}"
                    )
                    continue
                ok, seconds = self.legacy_duration(doc, loc, value, suffixed)
                if ok:
                    out.put((*crd_base, TYPE_DURATIONS[suffixed][0]), seconds, loc)
            else:
                self.unknown(doc, loc, allowed)

    def preserved(
        self,
        out: _Doc,
        section: Mapping[Any, Any],
        ds01_loc: Loc,
        crd_base: Loc,
        model: type[BaseModel],
        durations: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """A section kept as is: snake_case keys become the model's camelCase fields; unknown keys fail."""
        doc = out.yaml
        durations = durations or {}
        fields = dict(model.model_fields)
        duration_targets = {target for target, _unit in durations.values()}
        plain = [name for name in fields if name not in duration_targets]
        allowed = [*plain, *durations, *(a for a, c in ALIASES.items() if c in fields)]
        out.put(crd_base, {}, ds01_loc)
        for key, value in section.items():
            loc = (*ds01_loc, key)
            canonical = ALIASES.get(key, key) if isinstance(key, str) else key
            if canonical in durations:
                crd_field, unit = durations[canonical]
                ok, seconds = self.duration(doc, loc, value, unit)
                if ok:
                    out.put((*crd_base, _camel(crd_field)), seconds, loc)
            elif isinstance(canonical, str) and canonical in plain:
                info = fields[canonical]
                nested = unwrap_model(info.annotation)
                alias = info.alias or canonical
                if nested is not None and isinstance(value, dict):
                    self.preserved(out, value, loc, (*crd_base, alias), nested)
                elif nested is not None and value is None:
                    continue  # a comment-only subsection: empty
                else:
                    out.put((*crd_base, alias), value, loc)
            else:
                self.unknown(doc, loc, allowed)

    # --- files ----------------------------------------------------------------------------------------

    def read_single(self, path: Path, *, required: bool) -> YamlDocument | None:
        # A name that is there but cannot be read (a symlink whose target is gone, a loop) is an
        # error, never an absent optional file: read as absent, overrides and exemptions vanished.
        if not os.path.lexists(path) and not required:
            return None
        self.inputs.append(str(path))
        docs, errors = read_documents(path)
        self.errors.extend(errors)
        if errors:
            return None
        present = non_empty(docs)
        if len(present) > 1:
            self.errors.append(
                PolicyError(
                    str(path), present[1].line, "more than one YAML document", fix="keep one document"
                )
            )
            return None
        if not present:
            if required:
                self.errors.append(
                    PolicyError(
                        str(path),
                        1,
                        "the file is empty",
                        expected="DS01's resource limits (defaults, groups...)",
                    )
                )
                return None
            return YamlDocument(path, 0, {}, 1)
        return present[0]

    def run(self) -> list[LoadedDocument]:
        main_path = self.dir / DS01_MAIN_FILE
        if not self.dir.is_dir():
            self.errors.append(
                PolicyError(str(self.dir), None, "DS01 config directory does not exist", fix="fix the path")
            )
            return []
        runtime = self.dir / RUNTIME_DIR
        if not os.path.lexists(main_path) and (runtime / DS01_MAIN_FILE).is_file():
            # DS01's config/ (its label-schema.yaml is there): the files moved to config/runtime/.
            self.errors.append(
                PolicyError(
                    str(main_path),
                    None,
                    f"not here: DS01 keeps it in {runtime}/",
                    fix=f"use that directory: --ds01-config {runtime} (ds01ctl validate {runtime})",
                )
            )
            return []
        main = self.read_single(main_path, required=True)
        overrides_doc = self.read_single(self.dir / OVERRIDES_FILE, required=False)
        exemptions_doc = self.read_single(self.dir / EXEMPTIONS_FILE, required=False)
        if main is None:
            return []
        top = self.mapping(main, (), main.data)
        if top is None:
            return []
        for key in top:
            if key not in TOP_LEVEL_KEYS:
                self.unknown(main, (key,), TOP_LEVEL_KEYS)
        groups = self.mapping(main, ("groups",), top.get("groups")) or {}
        entries = [self.lifecycle(main, top, groups)]
        entries.extend(self.groups(main, groups))
        entries.extend(self.overrides(main, top, overrides_doc))
        if exemptions_doc is not None:
            entries.extend(self.exemptions(exemptions_doc))
        return [e for e in entries if e is not None]

    def lifecycle(
        self, main: YamlDocument, top: Mapping[Any, Any], groups: Mapping[Any, Any]
    ) -> LoadedDocument | None:
        out = _new_doc(main, "LifecyclePolicy", POLICY_NAME)
        if "default_group" in top:
            out.put(("spec", "defaultGroup"), top["default_group"], ("default_group",))
        elif "student" in groups:  # DS01's code default
            out.put(("spec", "defaultGroup"), "student", ())
        defaults = self.mapping(main, ("defaults",), top.get("defaults"))
        if defaults:
            self.user_keys(out, defaults, ("defaults",))
        policies = self.mapping(main, ("policies",), top.get("policies"))
        if policies:
            self.policy_keys(out, policies, ("policies",), global_policies=True)
        types = self.mapping(main, ("container_types",), top.get("container_types"))
        # DS01 skips devcontainers before any idle lookup, whatever container_types says.
        out.put(
            ("spec", "containerTypes", "devcontainer", "idleExempt"),
            True,
            ("container_types", "devcontainer"),
        )
        for type_name, body in (types or {}).items():
            loc = ("container_types", type_name)
            if type_name not in {t.value for t in ContainerType}:
                self.unknown(main, loc, [t.value for t in ContainerType])
                continue
            section = self.mapping(main, loc, body)
            if section:
                self.type_keys(out, section, loc, ("spec", "containerTypes", type_name))
        monitoring = self.mapping(main, ("monitoring",), top.get("monitoring"))
        for key, value in (monitoring or {}).items():
            loc = ("monitoring", key)
            if key == "infrastructure_containers":
                if value is None:
                    # Every entry commented out: as if the key were absent (the built-in prefixes
                    # stay protected, as DS01's hard-coded list did). `[]` drops them on purpose.
                    continue
                if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                    self.error(main, loc, "expected a list of container name prefixes")
                    continue
                selectors = [{"name": f"{prefix}*", "reason": INFRASTRUCTURE_REASON} for prefix in value]
                out.put(("spec", "protect"), selectors, loc)
                for i in range(len(value)):
                    out.origin[("spec", "protect", i)] = (*loc, i)
            elif key == "infrastructure_label":
                out.put(("spec", "ds01", "infrastructureLabel"), value, loc)
            else:
                self.unknown(main, loc, ["infrastructure_containers", "infrastructure_label"])
        preserved: list[tuple[str, type[BaseModel], dict[str, tuple[str, str]]]] = [
            ("enforcement", Ds01Enforcement, {}),
            ("gpu_allocation", Ds01GpuAllocation, {}),
            (
                "bare_metal_access",
                Ds01BareMetalAccess,
                {"default_grant_duration_h": ("default_grant_duration", "h")},
            ),
            ("access_control", Ds01AccessControl, {}),
        ]
        for key, model, durations in preserved:
            body = self.mapping(main, (key,), top.get(key))
            if body:
                self.preserved(out, body, (key,), ("spec", "ds01", _camel(key)), model, durations)
        return self.validate(out, LifecyclePolicy, main)

    def groups_dir(self) -> bool:
        """Whether ``groups/`` can hold members files: a directory, or absent (no members files).

        Anything else is an error, never "no members files": a ``groups`` link whose store is gone,
        or a file by that name, read as absent emptied every group, and its members got the default
        group's shorter timeouts and lower limits (DS01's 42a2b4f failure)."""
        path = self.dir / GROUPS_DIR
        try:
            if path.is_dir():
                return True
            path.lstat()
        except FileNotFoundError:
            return True
        except OSError as exc:
            problem, fix = f"cannot be read: {exc.strerror or exc}", "check the path and its permissions"
        else:
            if path.is_symlink():
                what = "is not a directory" if path.exists() else "does not exist"
                problem = f"a symbolic link to {path.readlink()}, which {what}"
                fix = "restore the directory it names, or remove the link"
            else:
                problem, fix = "is not a directory", "make it a directory of <group>.members files"
        self.errors.append(
            PolicyError(
                str(path),
                None,
                problem,
                expected="a directory of <group>.members files (one login name per line), or none",
                fix=fix,
            )
        )
        return False

    def groups(self, main: YamlDocument, groups: Mapping[Any, Any]) -> list[LoadedDocument | None]:
        results: list[LoadedDocument | None] = []
        members_dir = self.groups_dir()
        for i, (name, body) in enumerate(groups.items()):
            loc = ("groups", name)
            section = self.mapping(main, loc, body)
            if section is None:
                continue
            out = _new_doc(main, "UserGroup", str(name), loc)
            out.put(("spec", "order"), (i + 1) * 10, loc)
            self.user_keys(out, section, loc, extra=("members",), policies_ok=True)
            members: list[str] = []
            inline = section.get("members")
            if inline is not None:
                if not isinstance(inline, list) or not all(isinstance(m, str) for m in inline):
                    self.error(main, (*loc, "members"), "expected a list of login names")
                else:
                    members.extend(inline)
            detail = ""
            members_file = members_path(self.dir, str(name))
            self.inputs.append(str(members_file))
            if members_dir and os.path.lexists(members_file):  # (a dangling link is an error, not "no file")
                file_members, errors = read_members_file(members_file)
                self.errors.extend(errors)
                members.extend(file_members)
                detail = f"members also from {members_file}"
            out.put(
                ("spec", "members"), sorted(set(members)), (*loc, "members") if inline is not None else loc
            )
            results.append(self.validate(out, UserGroup, main, detail=detail))
        return results

    def overrides(
        self, main: YamlDocument, top: Mapping[Any, Any], file_doc: YamlDocument | None
    ) -> list[LoadedDocument | None]:
        # A file entry replaces an inline entry for the same user, as in DS01.
        chosen: dict[str, tuple[YamlDocument, Loc, Any]] = {}
        inline = self.mapping(main, ("user_overrides",), top.get("user_overrides")) or {}
        for user, body in inline.items():
            chosen[str(user)] = (main, ("user_overrides", user), body)
        if file_doc is not None:
            from_file = self.mapping(file_doc, (), file_doc.data) or {}
            for user, body in from_file.items():
                chosen[str(user)] = (file_doc, (user,), body)
        results: list[LoadedDocument | None] = []
        used: set[str] = set()
        for user, (doc, loc, body) in chosen.items():
            section = self.mapping(doc, loc, body)
            if section is None:
                continue
            name = _unique(_name_part(user), used)
            out = _new_doc(doc, "UserOverride", name, loc)
            out.put(("spec", "user"), user, loc)
            self.user_keys(out, section, loc, policies_ok=True)
            results.append(self.validate(out, UserOverride, doc))
        return results

    def exemptions(self, doc: YamlDocument) -> list[LoadedDocument | None]:
        top = self.mapping(doc, (), doc.data)
        if top is None:
            return []
        for key in top:
            if key != "exemptions":
                self.unknown(doc, (key,), ["exemptions"])
        records = top.get("exemptions")
        if records is None:
            return []
        if not isinstance(records, list):
            self.error(doc, ("exemptions",), "expected a list of exemption records")
            return []
        results: list[LoadedDocument | None] = []
        used: set[str] = set()
        for i, record in enumerate(records):
            loc: Loc = ("exemptions", i)
            if not isinstance(record, dict):
                self.error(doc, loc, "expected a mapping with username, exempt_from, reason, expires_on...")
                continue
            user = record.get("username")
            name = _unique(f"{_name_part(str(user))}-{i}", used)
            out = _new_doc(doc, "Exemption", name, loc)
            for key, value in record.items():
                kloc = (*loc, key)
                if key == "username":
                    out.put(("spec", "user"), value, kloc)
                elif key == "exempt_from":
                    if not isinstance(value, list):
                        self.error(doc, kloc, "expected a list such as [idle_timeout_h, max_runtime_h]")
                        continue
                    mapped = [EXEMPT_FROM.get(v, v) if isinstance(v, str) else v for v in value]
                    out.put(("spec", "exemptFrom"), mapped, kloc)
                    for j in range(len(value)):
                        out.origin[("spec", "exemptFrom", j)] = (*kloc, j)
                elif key == "expires_on":
                    ok = self._aware(doc, kloc, value)
                    if ok:
                        out.put(
                            ("spec", "expiresAt"),
                            value.isoformat() if isinstance(value, datetime) else value,
                            kloc,
                        )
                elif key == "approved_on":
                    out.put(
                        ("spec", "approvedOn"), value.isoformat() if isinstance(value, date) else value, kloc
                    )
                elif key == "metadata":
                    notes = self.mapping(doc, kloc, value)
                    if notes:
                        out.put(
                            ("metadata", "annotations"), {str(k): _text(v) for k, v in notes.items()}, kloc
                        )
                elif key in EXEMPTION_KEYS:
                    out.put(("spec", _camel(key)), value, kloc)
                else:
                    self.unknown(doc, kloc, EXEMPTION_KEYS)
            if "expires_on" not in record:
                out.put(("spec", "expiresAt"), None, loc)  # DS01: no expiry means permanent
            if "username" not in record:
                self.error(doc, loc, "missing 'username'", fix="add username: <login name>")
                continue
            results.append(self.validate(out, Exemption, doc))
        return results

    def _aware(self, doc: YamlDocument, loc: Loc, value: Any) -> bool:
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.error(
                doc,
                loc,
                f"{value} is a number, not a time (it would be read as seconds since 1970)",
                expected="ISO-8601 date and time with a zone, e.g. 2026-03-31T23:59:59Z",
                fix="write the date and time, e.g. 2026-03-31T23:59:59Z",
            )
            return False
        if isinstance(value, datetime) and value.tzinfo is None:
            self.error(
                doc,
                loc,
                f"{value.isoformat()} has no time zone",
                expected="ISO-8601 with a zone, e.g. 2026-03-31T23:59:59Z",
                fix="append Z (UTC)",
            )
            return False
        if isinstance(value, date) and not isinstance(value, datetime):
            self.error(
                doc,
                loc,
                f"{value.isoformat()} is a date without a time",
                expected="ISO-8601 date and time with a zone, e.g. 2026-03-31T23:59:59Z",
                fix=f"write {value.isoformat()}T23:59:59Z",
            )
            return False
        return True

    # --- validation through the kinds -------------------------------------------------------------------

    def validate(
        self,
        out: _Doc,
        model: type[LifecyclePolicy | UserGroup | UserOverride | Exemption],
        src: YamlDocument,
        *,
        detail: str = "",
    ) -> LoadedDocument | None:
        try:
            document = model.model_validate(out.data)
        except ValidationError as exc:

            def translate(crd_loc: Loc) -> tuple[Loc, str]:
                ds01_loc, rest = out.ds01_loc(crd_loc)
                return ds01_loc, _show_loc((*ds01_loc, *rest))

            self.errors.extend(
                from_validation_error(
                    exc,
                    model=model,
                    data=out.data,
                    file=str(src.path),
                    line_of=src.line_of,
                    document=src.number,
                    translate=translate,
                )
            )
            return None
        source = SpecSource(
            kind=document.kind,
            name=document.metadata.name,
            path=str(src.path),
            document=src.number,
            line=out.line_of(()),
            detail=detail or "imported from DS01",
        )
        return LoadedDocument(document, source, out.line_of)


def _aliases_for(table: Mapping[str, Any]) -> list[str]:
    return [alias for alias, canonical in ALIASES.items() if canonical in table]


def _legacy_for(table: Mapping[str, Any]) -> list[str]:
    return [legacy for legacy, suffixed in LEGACY_DURATIONS.items() if suffixed in table]


_UNITS: Final = {"h": "hours", "m": "minutes", "s": "seconds"}


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _show_loc(loc: Loc) -> str:
    return ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in loc).replace(".[", "[")


def _text(value: Any) -> Any:
    return value if isinstance(value, str | dict | list) else str(value)


def _name_part(user: str) -> str:
    part = re.sub(r"[^A-Za-z0-9_.-]", "_", sanitise_username(user)).strip("_.-")
    return part or "user"


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 2
    while candidate in used:
        candidate, n = f"{name}-{n}", n + 1
    used.add(candidate)
    return candidate


def _new_doc(src: YamlDocument, kind: str, name: str, loc: Loc = ()) -> _Doc:
    out = _Doc(src, {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}})
    out.origin[()] = loc
    out.origin[("metadata",)] = loc
    out.origin[("metadata", "name")] = loc
    out.origin[("spec",)] = loc
    return out


# --- public ------------------------------------------------------------------------------------------


def members_path(config_dir: Path, group: str) -> Path:
    """The members file of DS01 group ``group`` (read when present)."""
    return config_dir / GROUPS_DIR / f"{group}.members"


def candidate_files(config_dir: Path) -> list[Path]:
    """Every file the import reads or would read (for change detection)."""
    files = [config_dir / DS01_MAIN_FILE, config_dir / OVERRIDES_FILE, config_dir / EXEMPTIONS_FILE]
    groups = config_dir / GROUPS_DIR
    files.append(groups)
    if groups.is_dir():
        files.extend(sorted(groups.glob("*.members")))
    return files


def import_entries(config_dir: Path) -> tuple[list[LoadedDocument], list[str], list[PolicyError]]:
    """The documents of a DS01 config directory, the files read, and the errors."""
    importer = _Importer(config_dir)
    entries = importer.run()
    return entries, importer.inputs, importer.errors


def import_ds01(config_dir: Path) -> PolicySet:
    """A PolicySet from a DS01 config directory alone. Raises :class:`PolicyLoadError`."""
    entries, inputs, errors = import_entries(config_dir)
    policy, set_errors = assemble(
        entries, origin=f"DS01 config {config_dir}", input_files=inputs, check_references=not errors
    )
    errors = sorted_errors([*errors, *set_errors])
    if errors or policy is None:
        raise PolicyLoadError(errors)
    return policy


def main(argv: Sequence[str] | None = None, out: Callable[[str], Any] | None = None) -> int:
    """``python -m desired_state.ds01_import CONFIG_DIR``: print the equivalent CRD-like YAML."""
    args = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout.write
    if len(args) != 1 or args[0].startswith("-"):
        sys.stderr.write("usage: python -m desired_state.ds01_import DS01_CONFIG_DIR\n")
        return 2
    try:
        policy = import_ds01(Path(args[0]))
    except PolicyLoadError as exc:
        for err in exc.errors:
            sys.stderr.write(f"{err}\n")
        return 1
    out(
        "# Converted from DS01's configuration by python -m desired_state.ds01_import.\n"
        "# Keys not written here fall through to the built-in defaults.\n"
    )
    out(dump_documents(policy.documents()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
