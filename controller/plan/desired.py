"""The planner's view of desired state: one effective policy per container, plus host-wide settings.

The planner asks a :class:`DesiredState` for each container's :class:`EffectivePolicy` and for the
:class:`GlobalPolicy`; it never loads files itself. Two implementations live here:

* :class:`StaticDesired` -- a policy factory and a global policy, for tests, benchmarks and
  ``ds01ctl plan`` against hand-written policies;
* :class:`PolicySetDesired` -- the production adapter over a loaded policy set, delegating to
  :func:`desired_state.resolve.resolve_effective_policy` and :func:`desired_state.resolve.global_policy`.

Identity under untrusted labels (``trustLabels: false``): the observer applies DS01's attribution
chains whatever the policy says, so a container's owner and type may come from values its creator
chose (a ``ds01.user`` label, a ``<name>._.<uid>`` name, a ``devcontainer.*`` label...). The policy
must not grant anything on the strength of such a claim, so :func:`policy_identity` resolves such a
container as owner ``unknown`` (the default group; no UserOverride, Exemption or owner selector
applies) and type ``docker`` (what a container that claims nothing gets). The observed owner and
type are still shown and still name the owner in notices; only the policy ignores them.

Nothing here performs I/O; resolving a policy is a pure computation over already-loaded values.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Protocol, cast, runtime_checkable

from pydantic import BaseModel

from controller.plan.values import rebuilt
from controller.snapshot import ContainerObs, OwnerRule, TypeRule
from crd_like_specs.vocabulary import ContainerType
from desired_state.effective import EffectivePolicy, GlobalPolicy, Sourced
from desired_state.policy_set import PolicySet
from desired_state.resolve import global_policy, resolve_effective_policy

PolicyFactory = Callable[[ContainerObs, datetime], EffectivePolicy]

# The owner and type rules that read something the container's creator chose: labels and the name.
# The main process uid (read from the kernel) and an admin's selector are not claims.
CLAIMED_OWNER_RULES = frozenset(
    {
        OwnerRule.LABEL_DS01_USER,
        OwnerRule.LABEL_AIME_USER,
        OwnerRule.DEVCONTAINER_LOCAL_FOLDER,
        OwnerRule.COMPOSE_WORKING_DIR,
        OwnerRule.NAME_UID,
    }
)
CLAIMED_TYPE_RULES = frozenset(set(TypeRule) - {TypeRule.DEFAULT})
UNTRUSTED_OWNER = "unknown"
UNTRUSTED_TYPE = ContainerType.DOCKER


def policy_identity(container: ContainerObs, trust_labels: bool) -> tuple[str, ContainerType, str | None]:
    """The owner and type the policy is resolved for, and why they differ from the observed ones.

    With ``trust_labels`` the observed owner and type are used as they are. Without it, an owner or
    type decided by a claim (:data:`CLAIMED_OWNER_RULES`, :data:`CLAIMED_TYPE_RULES`) is replaced by
    ``unknown`` / ``docker``; the third value then says which claims were ignored (None otherwise).
    """
    if trust_labels:
        return container.owner, container.container_type, None
    owner, ctype = container.owner, container.container_type
    ignored: list[str] = []
    if container.owner_rule in CLAIMED_OWNER_RULES and owner != UNTRUSTED_OWNER:
        ignored.append(f"owner {owner!r} ({container.owner_rule.value})")
        owner = UNTRUSTED_OWNER
    if container.type_rule in CLAIMED_TYPE_RULES and ctype != UNTRUSTED_TYPE:
        ignored.append(f"type {ctype.value} ({container.type_rule.value})")
        ctype = UNTRUSTED_TYPE
    return owner, ctype, ("; ".join(ignored) if ignored else None)


@runtime_checkable
class DesiredState(Protocol):
    """What the planner needs from the desired-state layer."""

    def effective(self, container: ContainerObs, now: datetime) -> EffectivePolicy:
        """The effective policy of ``container`` at ``now`` (exemptions expire, so time matters)."""
        ...

    @property
    def global_policy(self) -> GlobalPolicy:
        """Host-wide settings (budget, breaker, reset policy, ledger window...)."""
        ...


class StaticDesired:
    """Desired state given directly: a factory for per-container policies and one global policy."""

    def __init__(self, factory: PolicyFactory | EffectivePolicy, global_policy: GlobalPolicy) -> None:
        if isinstance(factory, EffectivePolicy):
            fixed = factory

            def _same(_container: ContainerObs, _now: datetime) -> EffectivePolicy:
                return fixed

            self._factory: PolicyFactory = _same
        else:
            self._factory = factory
        self._global = global_policy

    def effective(self, container: ContainerObs, now: datetime) -> EffectivePolicy:
        return self._factory(container, now)

    @property
    def global_policy(self) -> GlobalPolicy:
        return self._global


# Memoised resolutions for the most recent policy set (by identity: a reload makes a new set).
# Resolving is most of the cost of a pass on a large host, and the daemon builds a new adapter
# every pass over the same set, so the memo lives at module level. Bounded; cleared when full.
_MEMO_MAX = 50_000
_NEVER = datetime.max.replace(tzinfo=UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    """One memoised resolution: what it was computed from, when, and until when it holds."""

    ident: tuple[object, ...]  # owner, type, the rules that decided them, name
    labels: dict[str, str]  # a copy
    computed_at: datetime
    valid_until: datetime  # the earliest expiry of the exemptions it lists
    eff: EffectivePolicy


@dataclasses.dataclass
class _Memo:
    """The memo of one policy set, swept by generation.

    An entry is keyed by a container's id and holds only for the identity, name and labels it was
    computed from (compared on every lookup; the labels are copied, so no later change to the
    observed dict can make a stale entry look current), so a host that creates and removes
    containers all day would fill it with entries of containers long gone (about 15 KB each).
    Each new adapter starts a generation: the entries the previous generation did not use (the
    containers no longer on the host) are dropped then. A generation that used nothing (Docker was
    unavailable, or an adapter only read the global policy) drops nothing.
    """

    policy_set: PolicySet
    entries: dict[str, _Entry] = dataclasses.field(default_factory=dict)
    used: set[str] = dataclasses.field(default_factory=set)
    # Exact key -> the one frozen value (a policy, a value with its source) handed out for it.
    canonical: dict[tuple[object, ...], object] = dataclasses.field(default_factory=dict)

    def shared(self, eff: EffectivePolicy) -> EffectivePolicy:
        """``eff``, or an exactly equal policy already resolved; its values shared likewise.

        Resolutions are per container, but a whole group usually resolves to one policy: handing
        every container of the group the same (frozen) object, down to its values and their
        provenance, lets a pass read a few hundred objects again and again rather than one copy per
        container (a tenth of a pass on a large host). Only values told apart exactly are shared
        (:func:`_exact_key`); anything else keeps its own object.
        """
        if len(self.canonical) >= _MEMO_MAX:
            self.canonical.clear()
        return cast(EffectivePolicy, self._share(eff)[0])

    def _share(self, value: object) -> tuple[object, object]:
        """(the canonical value equal to ``value``, or ``value`` itself; what tells it apart exactly,
        None if nothing does).

        A canonical value is told apart by its identity: it is held by the memo for as long as any
        key naming it is (both go together when the memo is cleared), so no other value can reuse
        its id meanwhile. A model's or a tuple's key is built from its parts' keys, so it is exact
        when they are.
        """
        if isinstance(value, Sourced):
            # Most values of a policy: keyed directly (both fields are required, so always set).
            inner = _exact_key(value.value)
            if inner is not None:
                seen = self.canonical.setdefault((type(value), value.source, *inner), value)
                return seen, id(seen)
        if isinstance(value, BaseModel):
            key, changes = self._fields(value)
            if changes:
                value = rebuilt(value, changes)
        elif type(value) is tuple:
            parts = [self._share(v) for v in value]
            keys = [k for _, k in parts]
            key = None if None in keys else (tuple, *keys)
            if any(v is not orig for (v, _), orig in zip(parts, value, strict=True)):
                value = tuple(v for v, _ in parts)
        else:
            return value, _exact_key(value)  # a scalar: shared with what holds it
        if key is None:
            return value, None
        seen = self.canonical.setdefault(key, value)
        return seen, id(seen)

    def _fields(self, model: BaseModel) -> tuple[tuple[object, ...] | None, dict[str, object]]:
        """A frozen model's exact key (None if a field has none, or it holds extra or private
        values) and the fields to replace by their canonical values."""
        changes: dict[str, object] = {}
        keys: list[object] = [type(model), frozenset(model.__pydantic_fields_set__)]
        exact = model.__pydantic_extra__ is None and model.__pydantic_private__ is None
        for name, v in model.__dict__.items():
            seen, key = self._share(v)
            if seen is not v:
                changes[name] = seen
            if key is None:
                exact = False
            elif exact:
                keys += (name, key)
        return (tuple(keys) if exact else None), changes

    def new_generation(self) -> None:
        if not self.used:
            return
        if len(self.used) < len(self.entries):
            self.entries = {k: v for k, v in self.entries.items() if k in self.used}
        self.used = set()


def _value_key(value: object) -> tuple[object, ...] | None:
    """What tells two values apart exactly: their type and value, and a float's sign (-0.0 == 0.0).

    None for anything but a scalar: a collection is not shared, as equal ones may hold elements of
    other types (``(1,) == (1.0,)``).
    """
    if isinstance(value, float):
        return (type(value), value, math.copysign(1.0, value))
    if value is None or isinstance(value, bool | int | str | Enum):
        return (type(value), value)
    return None


_PLAIN = frozenset({str, int, bool, type(None)})  # told apart by their type and value alone


def _exact_key(value: object) -> tuple[object, ...] | None:
    """:func:`_value_key`, and for a timestamp or a duration what tells it apart exactly too:
    equal instants at other offsets (or zones) print differently, so the zone is part of the key.

    The common types are tested first, by their exact type (a subclass takes the full path)."""
    kind = type(value)
    if kind in _PLAIN:
        return (kind, value)
    if isinstance(value, datetime):
        return (kind, value.isoformat(), value.tzinfo, value.fold)
    if isinstance(value, timedelta):
        return (kind, value)
    return _value_key(value)


_memo_owner: list[_Memo] = []


def _memo_for(policy_set: PolicySet) -> _Memo:
    if not _memo_owner or _memo_owner[0].policy_set is not policy_set:
        _memo_owner[:] = [_Memo(policy_set)]
    else:
        _memo_owner[0].new_generation()
    return _memo_owner[0]


def memo_size() -> int:
    """How many resolutions are memoised (0 before the first): bounded by the containers in use."""
    return len(_memo_owner[0].entries) if _memo_owner else 0


class PolicySetDesired:
    """Adapter from a loaded :class:`PolicySet` to :class:`DesiredState`.

    The owner and container type come from the observation (the observer already applied DS01's
    attribution chains), except that with ``trustLabels: false`` a claimed owner or type is not used
    (:func:`policy_identity`); name and labels are passed through so selectors and trusted labels match.

    One resolution per container: the resolver keeps a waived limit (its source says which
    exemption waives it) and lists the active exemptions, which the planner honours itself; the
    kept idle timeout tells it when to send an exempt owner the one FYI notice DS01 sends.

    Results are memoised per container id, for its (owner, type, the rules that decided them, name,
    labels): a lookup compares them rather than hashing them into a key. Time enters
    a resolution only through exemptions, which are active from their creation until their expiry;
    so a result computed at ``t0`` stays exact for any ``now >= t0`` before the earliest expiry of
    the exemptions it lists (an expired one never comes back without a policy reload, which makes a
    new set).
    """

    def __init__(self, policy_set: PolicySet) -> None:
        self._policy_set = policy_set
        self._global = global_policy(policy_set)
        self._trust_labels = bool(self._global.trust_labels.value)
        self._memo = _memo_for(policy_set)

    def _effective(self, container: ContainerObs, now: datetime) -> EffectivePolicy:
        owner, ctype, ignored = policy_identity(container, self._trust_labels)
        eff = resolve_effective_policy(
            self._policy_set,
            owner=owner,
            container_type=ctype,
            name=container.name,
            labels=container.labels,
            now=now,
        )
        if ignored is None:
            return eff
        why = f"not trusted (trustLabels: false in {self._global.trust_labels.source}): {ignored}"
        group: Sourced[str] = Sourced(value=eff.group.value, source=f"{why}; {eff.group.source}")
        return eff.model_copy(update={"group": group})

    def effective(self, container: ContainerObs, now: datetime) -> EffectivePolicy:
        key = container.id
        ident = (
            container.owner,
            container.container_type,
            container.owner_rule,
            container.type_rule,
            container.name,
        )
        labels = container.labels
        memo = self._memo
        memo.used.add(key)
        hit = memo.entries.get(key)
        # It holds for the identity, name and labels it was computed from, from then until its
        # earliest expiry (compared here, not in a method: this runs for every container a pass).
        if (
            hit is not None
            and hit.computed_at <= now < hit.valid_until
            and hit.ident == ident
            and hit.labels == labels
        ):
            return hit.eff
        eff = memo.shared(self._effective(container, now))
        if len(memo.entries) >= _MEMO_MAX:
            memo.entries.clear()
        expiries = [e.expires_at for e in eff.exemptions if e.expires_at is not None]
        memo.entries[key] = _Entry(ident, dict(labels), now, min(expiries, default=_NEVER), eff)
        return eff

    @property
    def global_policy(self) -> GlobalPolicy:
        return self._global
