"""Resolution: the effective policy of one container, every value with the layer it came from.

Precedence, lowest to highest (:func:`describe_precedence` prints this; docs/policy.md explains it):

1. built-in default (DS01's shipped values plus the controller's own defaults); a built-in layer
   (this one, the built-in container types of layer 4, the built-in groups) never beats a key an
   admin wrote in any layer, see :func:`pick`
2. the LifecyclePolicy's ``settings``
3. the owner's UserGroup ``settings`` (first group by ``order`` listing the login name, else its
   sanitised form; owners in no group, unknown owners included, get ``defaultGroup``)
4. the container type's pinned settings (``LifecyclePolicy.spec.containerTypes.<type>``; the built-in
   ones first): a type pins only the keys it writes, and those beat a group's *general* settings,
   which is how DS01 behaves (a researcher's docker containers get the docker type's 0.5 h idle
   timeout, and a devcontainer keeps its 168 h runtime whatever the group says)
5. the group's own per-type block (``UserGroup.spec.containerTypes.<type>``): an admin saying
   explicitly "for this group and this type"
6. the UserOverride's ``settings`` (reach every container type, unlike DS01)
7. the UserOverride's per-type block
8. active Exemptions (idle -> no idle stop, max_runtime -> no runtime stop, cleanup -> no
   removal by the container hold or the created-container timeout): the waived value is kept, its
   source says ``waived by Exemption/<name>``, and the exemption is listed in ``exemptions``; the
   planner honours the list (:data:`WAIVED_FIELDS`)

``idleExempt`` is a per-type flag, settable only in containerTypes blocks (layers 4, 5, 7): while it
is true the idle timeout is never, whatever a general ``idleTimeout`` says, so a devcontainer stays
idle-exempt unless an admin explicitly says otherwise for that type.

Called by the planner's adapter (``controller.plan.desired.PolicySetDesired``) and ``ds01ctl``.
Pure: no I/O beyond the built-in default, which is read once from the package.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from crd_like_specs.kinds import (
    UNLIMITED_SWAP,
    Aggregate,
    ContainerSelector,
    LifecyclePolicy,
    Resources,
    Settings,
    SpecModel,
    TypeSettings,
    UserGroup,
    UserOverride,
)
from crd_like_specs.sizes import parse_size
from crd_like_specs.vocabulary import ContainerType
from desired_state.documents import builtin_lifecycle
from desired_state.effective import (
    ActiveExemption,
    EffectivePolicy,
    ExemptFrom,
    GlobalPolicy,
    GpuResetPolicy,
    HostProcessPolicy,
    ResourceSpec,
    Sourced,
)
from desired_state.policy_set import PolicySet, sanitise_username

BUILTIN: Final = "built-in default"
NO_GROUP: Final = "(none)"

# The label keys this layer reads; the same spelling as controller.labels (which it may not import).
LABEL_PROTECTED: Final = "ds01.protected"
LABEL_MONITORING: Final = "ds01.monitoring"
TRUE_VALUE: Final = "true"

# The EffectivePolicy fields an exemption of each kind waives (their values are kept, see above).
WAIVED_FIELDS: Final[dict[ExemptFrom, tuple[str, ...]]] = {
    ExemptFrom.IDLE: ("idle_timeout_s",),
    ExemptFrom.MAX_RUNTIME: ("max_runtime_s",),
    ExemptFrom.CLEANUP: ("container_hold_after_stop_s", "created_container_timeout_s"),
    ExemptFrom.RESOURCES: (),  # the limits and quotas: resolve_resources marks the owner exempt
}

# Settings field -> EffectivePolicy field.
FIELD_MAP: Final[dict[str, str]] = {
    "idle_timeout": "idle_timeout_s",
    "max_runtime": "max_runtime_s",
    "gpu_hold_after_stop": "gpu_hold_after_stop_s",
    "container_hold_after_stop": "container_hold_after_stop_s",
    "created_container_timeout": "created_container_timeout_s",
    "grace_period": "grace_period_s",
    "sigterm_grace": "sigterm_grace_s",
    "keepalive_path": "keepalive_path",
    "keepalive_max_age": "keepalive_max_age_s",
    "remove_after_idle_stop": "remove_after_idle_stop",
    "warn_lead": "warn_lead_s",
    "gpu_idle_threshold_pct": "gpu_idle_threshold_pct",
    "cpu_idle_threshold_pct": "cpu_idle_threshold_pct",
    "network_idle_threshold_bytes_per_second": "network_idle_threshold_bytes_per_s",
    "mig_idle_fallback": "mig_idle_fallback",
    "idle_detection_window": "idle_detection_window",
    "idle_min_duration": "idle_min_duration_s",
    "high_demand_threshold": "high_demand_threshold",
    "high_demand_idle_reduction": "high_demand_idle_reduction",
}

Layer = tuple[Settings, str]


def describe_precedence() -> str:
    """The precedence of the layers, lowest first, as shown by ``ds01ctl`` and docs/policy.md."""
    return "\n".join(
        [
            "Precedence, lowest to highest (a key a layer does not write falls through to the one below):",
            "  1. built-in default",
            "  2. LifecyclePolicy spec.settings",
            "  3. UserGroup spec.settings (the owner's group, else the defaultGroup)",
            "  4. container type: LifecyclePolicy spec.containerTypes.<type> (pins only the keys it writes;",
            "     pinned keys beat a group's general settings, as in DS01)",
            "  5. UserGroup spec.containerTypes.<type>",
            "  6. UserOverride spec.settings (reaches every container type)",
            "  7. UserOverride spec.containerTypes.<type>",
            "  8. Exemption (idle, max_runtime, cleanup), while not expired",
            "idleExempt is set only per type (layers 4, 5, 7); while true, the idle timeout is never.",
            "A built-in layer (the built-in default and its container types) never beats a key an admin",
            "wrote in any layer. With --specs and --ds01-config, the specs' documents are layered over",
            "DS01's key by key (a key the specs write wins).",
        ]
    )


def _group_label(policy: PolicySet, group: UserGroup) -> str:
    name = group.metadata.name
    suffix = f" ({BUILTIN})" if policy.is_builtin("UserGroup", name) else ""
    return f"UserGroup/{name}{suffix}"


def _group_of(policy: PolicySet, owner: str) -> tuple[UserGroup | None, Sourced[str]]:
    group, how = policy.group_of(owner)
    if group is not None:
        return group, Sourced(value=group.metadata.name, source=f"{_group_label(policy, group)}: {how}")
    default = policy.default_group_name
    if default is not None:
        group = policy.group(default)
        if group is not None:
            via = (
                f"defaultGroup of LifecyclePolicy/{policy.lifecycle.metadata.name}"
                if policy.lifecycle
                else (f"defaultGroup ({BUILTIN})")
            )
            return group, Sourced(value=default, source=f"{via}: '{owner}' is in no group")
    return None, Sourced(value=NO_GROUP, source=f"'{owner}' is in no group and there is no defaultGroup")


def settings_layers(
    policy: PolicySet, owner: str, container_type: ContainerType
) -> tuple[list[Layer], Sourced[str]]:
    """The layers that apply to ``owner``'s containers of ``container_type``, lowest first."""
    base = builtin_lifecycle()
    group, group_sourced = _group_of(policy, owner)
    override = policy.override_of(owner)
    t = container_type
    lifecycles = _lifecycle_layers(policy)
    groups = _group_layers(policy, group) if group is not None else []
    overrides = (
        [(doc, label) for doc, label in policy.layers_of(override) if isinstance(doc, UserOverride)]
        if override is not None
        else []
    )
    layers: list[Layer] = [(base.spec.settings, BUILTIN)]
    layers.extend((lc.spec.settings, label) for lc, label in lifecycles)
    layers.extend((g.spec.settings, label) for g, label in groups)
    if t in base.spec.container_types:
        layers.append((base.spec.container_types[t], f"container type {t.value} ({BUILTIN})"))
    layers.extend(
        (lc.spec.container_types[t], f"container type {t.value} ({label})")
        for lc, label in lifecycles
        if t in lc.spec.container_types
    )
    layers.extend(
        (g.spec.container_types[t], f"{label} containerTypes.{t.value}")
        for g, label in groups
        if t in g.spec.container_types
    )
    for doc, label in overrides:
        layers.append((doc.spec.settings, label))
    layers.extend(
        (doc.spec.container_types[t], f"{label} containerTypes.{t.value}")
        for doc, label in overrides
        if t in doc.spec.container_types
    )
    return layers, group_sourced


def _lifecycle_layers(policy: PolicySet) -> list[tuple[LifecyclePolicy, str]]:
    """The admin's LifecyclePolicy layers, lowest first (DS01's import, then the specs' one)."""
    if policy.lifecycle is None:
        return []
    return [
        (doc, label) for doc, label in policy.layers_of(policy.lifecycle) if isinstance(doc, LifecyclePolicy)
    ]


def _group_layers(policy: PolicySet, group: UserGroup) -> list[tuple[UserGroup, str]]:
    layers = [(doc, label) for doc, label in policy.layers_of(group) if isinstance(doc, UserGroup)]
    if len(layers) == 1:
        return [(group, _group_label(policy, group))]
    return layers


def is_builtin_layer(source: str) -> bool:
    """A layer of the built-in default (its settings, its container types, its groups)."""
    return source == BUILTIN or source.endswith(f"({BUILTIN})")


def pick(layers: Sequence[Layer], field: str) -> Sourced[Any] | None:
    """The value of ``field`` from the highest admin layer that writes it, else the highest built-in one.

    A built-in layer (the built-in default, its container types, its groups) never beats a key an
    admin wrote in any layer: an admin's ``LifecyclePolicy`` ``settings.idleTimeout: 20s`` applies to
    docker containers although the built-in docker type pins 30m. Among the admin's own layers the
    order holds (DS01's container types still beat a group's general settings).
    """
    for admin in (True, False):
        for settings, source in reversed(layers):
            if is_builtin_layer(source) != admin and field in settings.model_fields_set:
                return Sourced(value=getattr(settings, field), source=source)
    return None


def resolve_effective_policy(
    policy: PolicySet,
    *,
    owner: str,
    container_type: ContainerType | str,
    name: str,
    labels: Mapping[str, str],
    now: datetime,
) -> EffectivePolicy:
    """Every timer and threshold for one container, each with its provenance."""
    ctype = _container_type(container_type)
    layers, group = settings_layers(policy, owner, ctype)
    values: dict[str, Sourced[Any]] = {}
    for field, target in FIELD_MAP.items():
        found = pick(layers, field)
        if found is None:  # pragma: no cover - the built-in layer sets every key (tested)
            raise AssertionError(f"built-in default lacks {field}")
        values[target] = found

    exempt = pick([layer for layer in layers if isinstance(layer[0], TypeSettings)], "idle_exempt")
    if exempt is not None and exempt.value:
        values["idle_timeout_s"] = Sourced(value=None, source=f"{exempt.source}: idleExempt")

    # An active exemption keeps the value it waives (the planner still times the one FYI notice an
    # exempt owner gets by it) and says so in its source; the planner honours ``exemptions``.
    active = _active_exemptions(policy, owner, now)
    waived: set[str] = set()
    for exemption in active:  # longest-lasting first: the one named is the one that holds longest
        for target in WAIVED_FIELDS[exemption.exempt_from]:
            if target not in waived:
                waived.add(target)
                kept = values[target]
                values[target] = Sourced(
                    value=kept.value, source=f"{kept.source}; waived by Exemption/{exemption.name}"
                )

    resources = resolve_resources(policy, owner, layers, active)

    trust = global_value(policy, ("trust_labels",))
    protected = _flag(policy, "protect", LABEL_PROTECTED, trust, owner=owner, name=name, labels=labels)
    monitoring = _flag(policy, "monitoring", LABEL_MONITORING, trust, owner=owner, name=name, labels=labels)

    return EffectivePolicy(
        owner=owner,
        group=group,
        container_type=ctype.value,
        protected=protected,
        monitoring=monitoring,
        exemptions=tuple(active),
        resources=resources,
        **values,
    )


def _container_type(value: ContainerType | str) -> ContainerType:
    if isinstance(value, ContainerType):
        return value
    try:
        return ContainerType(value)
    except ValueError:
        # A type this version does not know is treated like DS01's 'unknown' (strictest rules).
        return ContainerType.UNKNOWN


def _active_exemptions(policy: PolicySet, owner: str, now: datetime) -> list[ActiveExemption]:
    """Unexpired exemptions, longest-lasting first (so EffectivePolicy.exemption() returns it)."""
    current = policy.active_exemptions(owner, now)
    current.sort(key=lambda e: (e.spec.expires_at is not None, -(e.spec.expires_at or now).timestamp()))
    out: list[ActiveExemption] = []
    for e in current:
        for kind in e.spec.exempt_from:
            out.append(
                ActiveExemption(
                    name=e.metadata.name,
                    exempt_from=kind,
                    reason=e.spec.reason,
                    approved_by=e.spec.approved_by or "",
                    expires_at=e.spec.expires_at,
                    source=f"Exemption/{e.metadata.name}",
                )
            )
    return out


def _selectors(policy: PolicySet, field: str) -> tuple[list[ContainerSelector], str]:
    for lifecycle, label in reversed(_lifecycle_layers(policy)):
        if field in lifecycle.spec.model_fields_set:
            return list(getattr(lifecycle.spec, field) or ()), f"{label} {field}"
    return list(getattr(builtin_lifecycle().spec, field) or ()), f"{BUILTIN} {field}"


def selector_matches(
    selector: ContainerSelector, *, owner: str, name: str, labels: Mapping[str, str]
) -> bool:
    """All keys the selector gives must match (name glob, every label, owner or its sanitised form)."""
    if selector.name is not None and not fnmatch.fnmatchcase(name, selector.name):
        return False
    if selector.labels and any(labels.get(k) != v for k, v in selector.labels.items()):
        return False
    if selector.owner is not None and owner != selector.owner:
        key = sanitise_username(owner)
        if not key or key != sanitise_username(selector.owner):
            return False
    return True


def _describe(selector: ContainerSelector) -> str:
    parts = []
    if selector.name is not None:
        parts.append(f"name {selector.name}")
    if selector.labels:
        parts.append(", ".join(f"{k}={v}" for k, v in selector.labels.items()))
    if selector.owner is not None:
        parts.append(f"owner {selector.owner}")
    text = "; ".join(parts)
    return f"{text}: {selector.reason}" if selector.reason else text


def _flag(
    policy: PolicySet,
    field: str,
    label: str,
    trust: Sourced[Any],
    *,
    owner: str,
    name: str,
    labels: Mapping[str, str],
) -> Sourced[bool]:
    labelled = labels.get(label, "").strip().lower() == TRUE_VALUE
    if labelled and trust.value:
        return Sourced(value=True, source=f"label {label}=true (trustLabels from {trust.source})")
    selectors, where = _selectors(policy, field)
    for i, selector in enumerate(selectors):
        if selector_matches(selector, owner=owner, name=name, labels=labels):
            return Sourced(value=True, source=f"{where}[{i}] ({_describe(selector)})")
    if labelled:
        return Sourced(
            value=False, source=f"label {label}=true ignored (trustLabels: false in {trust.source})"
        )
    return Sourced(value=False, source=f"no {field} selector matches ({where})")


# --- host-wide --------------------------------------------------------------------------------------------


def global_value(policy: PolicySet, path: Sequence[str]) -> Sourced[Any]:
    """A LifecyclePolicy spec value by field path: the admin's policy if it writes it, else built-in."""
    for lifecycle, label in reversed(_lifecycle_layers(policy)):
        found = _written(lifecycle, path)
        if found is not None:
            return Sourced(value=found[0], source=label)
    found = _written(builtin_lifecycle(), path)
    if found is None:  # pragma: no cover - the built-in default sets every global key (tested)
        raise AssertionError(f"built-in default lacks spec.{'.'.join(path)}")
    return Sourced(value=found[0], source=BUILTIN)


def _written(policy: LifecyclePolicy, path: Sequence[str]) -> tuple[Any] | None:
    node: SpecModel = policy.spec
    for i, part in enumerate(path):
        if part not in node.model_fields_set:
            return None
        value = getattr(node, part)
        if i == len(path) - 1:
            return (value,)
        node = value
    return None  # pragma: no cover - empty path


def _or_zero(found: Sourced[Any]) -> Sourced[Any]:
    """A duration where null means no wait at all."""
    return found if found.value is not None else Sourced(value=0.0, source=found.source)


def global_policy(policy: PolicySet) -> GlobalPolicy:
    """Host-wide settings (reset, budget, breaker, ledger window, orphans, label trust, the keep-alive
    path the observer reads), resolved once per policy set; the daemon configures its observer and
    executor from these values and resolves nothing itself."""
    reset_policy = global_value(policy, ("gpu_reset", "policy"))
    reset_command = global_value(policy, ("gpu_reset", "command"))
    host = global_value(policy, ("host_gpu_processes",))
    names = global_value(policy, ("system_process_names",))
    parents = global_value(policy, ("engine_cgroup_parents",))
    keepalive = pick(settings_layers(policy, "", ContainerType.UNKNOWN)[0], "keepalive_path")
    if keepalive is None:  # pragma: no cover - the built-in layer sets every key (tested)
        raise AssertionError("built-in default lacks keepalive_path")
    return GlobalPolicy(
        gpu_reset_policy=Sourced(value=GpuResetPolicy(reset_policy.value), source=reset_policy.source),
        gpu_reset_command=Sourced(value=tuple(reset_command.value), source=reset_command.source),
        host_gpu_processes=Sourced(value=HostProcessPolicy(host.value), source=host.source),
        max_destructive_actions_per_pass=global_value(policy, ("safety", "max_destructive_actions_per_pass")),
        breaker_max_fraction=global_value(policy, ("safety", "breaker_max_fraction")),
        breaker_min_containers=global_value(policy, ("safety", "breaker_min_containers")),
        release_breaker_max_fraction=global_value(policy, ("safety", "release_breaker_max_fraction")),
        release_breaker_min_rows=global_value(policy, ("safety", "release_breaker_min_rows")),
        max_concurrent_actions=global_value(policy, ("safety", "max_concurrent_actions")),
        max_action_age_s=global_value(policy, ("safety", "max_action_age")),
        breaker_max_remove_fraction=global_value(policy, ("safety", "breaker_max_remove_fraction")),
        breaker_min_removals=global_value(policy, ("safety", "breaker_min_removals")),
        restart_stopped_hold_s=global_value(policy, ("restart_stopped_hold",)),
        ledger_reservation_window_s=global_value(policy, ("ledger_reservation_window",)),
        orphan_sightings_required=global_value(policy, ("orphan_sightings_required",)),
        max_sample_interval_s=global_value(policy, ("max_sample_interval",)),
        kill_grace_s=global_value(policy, ("kill_grace",)),
        transient_process_min_age_s=_or_zero(global_value(policy, ("transient_process_min_age",))),
        trust_labels=global_value(policy, ("trust_labels",)),
        update_limits=global_value(policy, ("resource_enforcement", "update_limits")),
        memory_margin_pct=global_value(policy, ("resource_enforcement", "memory_margin_pct")),
        quota_enforce=global_value(policy, ("resource_enforcement", "enforce")),
        aggregate_alerts=global_value(policy, ("resource_enforcement", "aggregate_alerts")),
        system_process_names=Sourced(value=tuple(names.value), source=names.source),
        host_keepalive_path=keepalive,
        engine_cgroup_parents=Sourced(value=tuple(parents.value), source=parents.source),
    )


# --- resource limits and quotas ----------------------------------------------------------------------

# Resources field -> ResourceSpec field; sizes are converted to bytes.
RESOURCE_FIELDS: Final[dict[str, str]] = {
    "max_cpus": "max_cpus",
    "memory": "memory_bytes",
    "memory_swap": "memory_swap_bytes",
    "pids_limit": "pids_limit",
    "max_containers_per_user": "max_containers_per_user",
    "max_gpu_equivalents": "max_gpu_equivalents",
    "max_gpu_slots_per_container": "max_gpu_slots_per_container",
}
_SIZE_FIELDS: Final = frozenset({"memory", "memory_swap"})


def resource_layers(policy: PolicySet, owner: str) -> list[tuple[Resources, str]]:
    """The ``resources`` blocks that apply to ``owner``, lowest first: built-in, LifecyclePolicy,
    the owner's group, the owner's UserOverride (the same order as the settings, without types)."""
    group, _ = _group_of(policy, owner)
    override = policy.override_of(owner)
    layers: list[tuple[Resources, str]] = [(builtin_lifecycle().spec.resources, BUILTIN)]
    layers.extend((lc.spec.resources, label) for lc, label in _lifecycle_layers(policy))
    if group is not None:
        layers.extend((g.spec.resources, label) for g, label in _group_layers(policy, group))
    if override is not None:
        layers.extend(
            (doc.spec.resources, label)
            for doc, label in policy.layers_of(override)
            if isinstance(doc, UserOverride)
        )
    return layers


def resolve_resources(
    policy: PolicySet, owner: str, layers: Sequence[Layer], active: Sequence[ActiveExemption]
) -> ResourceSpec:
    """The owner's limits and quotas with provenance; opted out by a type's ``resourcesExempt``
    (``layers``: the settings layers, whose type blocks carry it) or a ``resources`` exemption."""
    blocks = resource_layers(policy, owner)
    values: dict[str, Sourced[Any]] = {}
    for field, target in RESOURCE_FIELDS.items():
        found = _pick_resource(blocks, field)
        if found is None:
            continue
        value, source = found.value, found.source
        if field == "memory_swap" and value == UNLIMITED_SWAP:
            value, source = None, f"{source}: -1, unlimited swap"  # docker --memory-swap -1
        elif field in _SIZE_FIELDS and isinstance(value, str):
            value = parse_size(value)  # validated by the kind
        values[target] = Sourced(value=value, source=source)
    memory, swap = values.get("memory_bytes"), values.get("memory_swap_bytes")
    if (
        memory is not None
        and swap is not None
        and memory.value is not None
        and swap.value is not None
        and swap.value < memory.value
    ):
        # Layers can combine a group's memory with a lower default swap; Docker refuses swap below
        # memory, so the container gets the memory and no swap rather than no update at all.
        values["memory_swap_bytes"] = Sourced(
            value=memory.value, source=f"{swap.source}: below memory ({memory.source}), raised to it"
        )
    values.update(_aggregate_caps(_pick_resource(blocks, "aggregate")))
    exempt = pick([layer for layer in layers if isinstance(layer[0], TypeSettings)], "resources_exempt")
    values["exempt"] = (
        Sourced(value=bool(exempt.value), source=f"{exempt.source}: resourcesExempt")
        if exempt is not None
        else Sourced(value=False, source=BUILTIN)
    )
    for exemption in active:
        if exemption.exempt_from == ExemptFrom.RESOURCES:
            values["exempt"] = Sourced(value=True, source=exemption.source)
            break
    return ResourceSpec(**values)


def _aggregate_caps(found: Sourced[Any] | None) -> dict[str, Sourced[Any]]:
    """The ``aggregate`` block as ResourceSpec fields, every value with the block's source.

    The block is taken whole from the highest layer that writes it, as DS01 does (the override's
    block if it has one, else the group's; ``aggregate: null`` or a group without one: no cap).
    """
    if found is None:
        return {}
    block: Aggregate | None = found.value
    source = f"{found.source}: aggregate"

    def cap(value: Any) -> Sourced[Any]:
        return Sourced(value=value, source=source)

    if block is None:
        return {name: cap(None) for name in _AGGREGATE_FIELDS}
    cpus = float(block.cpu_quota.rstrip("%")) / 100.0 if block.cpu_quota is not None else None
    return {
        "aggregate_cpus": cap(cpus),
        "aggregate_memory_bytes": cap(systemd_size(block.memory_max)),
        "aggregate_memory_high_bytes": cap(systemd_size(block.memory_high)),
        "aggregate_tasks": cap(block.tasks_max),
    }


_AGGREGATE_FIELDS: Final = (
    "aggregate_cpus",
    "aggregate_memory_bytes",
    "aggregate_memory_high_bytes",
    "aggregate_tasks",
)
_SYSTEMD_EXA: Final = 1 << 60


def systemd_size(text: str | None) -> int | None:
    """Bytes of a systemd size (``96G``, base 1024; ``infinity`` or absent: None)."""
    if text is None or text == "infinity":
        return None
    if text.endswith("E"):
        return int(float(text[:-1]) * _SYSTEMD_EXA)
    return parse_size(text)  # validated by the kind (SYSTEMD_SIZE_PATTERN)


def _pick_resource(blocks: Sequence[tuple[Resources, str]], field: str) -> Sourced[Any] | None:
    """As :func:`pick`: the highest admin layer that writes the key, else the highest built-in one."""
    for admin in (True, False):
        for block, source in reversed(blocks):
            if is_builtin_layer(source) != admin and field in block.model_fields_set:
                return Sourced(value=getattr(block, field), source=source)
    return None
