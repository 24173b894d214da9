"""One planning pass's working set: indexes built once, and the collector rules write into.

Owned by the planner; the rule modules read a :class:`PassContext` and append to a
:class:`Collector`. Everything is indexed once per pass (by container id, name, id prefix, GPU
UUID) so that no rule scans the whole snapshot per item: the planner stays linear in the size of
the host. Pure: no clock reads, no I/O.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from operator import attrgetter
from typing import Any, TypeAlias, TypeVar

from controller.memory import ClockStep, ContainerMemory, ControllerMemory
from controller.plan.desired import CLAIMED_OWNER_RULES, UNTRUSTED_OWNER
from controller.plan.types import (
    DESTRUCTIVE_KINDS,
    Action,
    ActionKind,
    ActionParams,
    DeferReason,
    Deferred,
    Reason,
    Target,
    params_for,
)
from controller.plan.values import built
from controller.snapshot import (
    LIVE_STATES,
    ContainerObs,
    ContainerState,
    Domain,
    GpuObs,
    Snapshot,
)
from controller.units import binary_size
from desired_state.effective import EffectivePolicy, GlobalPolicy

UNKNOWN_OWNER = UNTRUSTED_OWNER  # "unknown": many people, never one user
_ID, _NAME = attrgetter("id"), attrgetter("name")
_RUNNING = ContainerState.RUNNING  # (read once: an enum member read from its class costs a lookup)
# The states' names, as targets quote them (``.value`` goes through the enum's descriptor: read
# once each, not once per container).
_STATE_VALUE = {state: state.value for state in ContainerState}


# The ISO form of UTC timestamps, memoised: a pass on a large host formats the same few thousand
# timestamps (starts, idle streaks, samples) into its evidence on every pass, and a datetime caches
# its own hash. Only values at offset zero (or naive) are memoised: equal datetimes at other
# offsets print differently (the form shows the offset only, never the zone's name).
_ISO: dict[datetime, str] = {}
_ISO_MAX = 100_000


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    # Python's own UTC (the common zone here) is at offset zero: no call to ask it.
    if value.tzinfo is not UTC and value.utcoffset():
        return value.isoformat()
    text = _ISO.get(value)
    if text is None:
        if len(_ISO) >= _ISO_MAX:
            _ISO.clear()
        text = _ISO[value] = value.isoformat()
    return text


T = TypeVar("T")

# A key is matched against container ids by prefix only when it can be one: Docker's short id (12
# hex digits) or longer, hex only. A shorter one ("cafe", "2024", "beef") is as likely a container's
# NAME: taken for an id prefix, a ledger row naming a renamed container was tied to an unrelated
# container whose id happened to start that way, and released while the renamed one held the GPU.
ID_PREFIX_MIN = 12
_HEX_DIGITS = frozenset("0123456789abcdef")


def may_be_id_prefix(key: str) -> bool:
    return len(key) >= ID_PREFIX_MIN and _HEX_DIGITS.issuperset(key)


def sorted_by_head(
    items: Iterable[T], head: Callable[[T], Any], whole: Callable[[T], Any]
) -> tuple[list[T], bool]:
    """``sorted(items, key=whole)``, and whether no two items share their ``head``.

    ``head`` gives the first fields of ``whole``'s key. While no two items share them (checked),
    the later fields never decide, so the sort is on ``head`` alone (an ``attrgetter``: no key
    function written in Python). Processes and ledger rows are ordered this way every pass.
    """
    listed = list(items)
    heads = list(map(head, listed))
    if len(set(heads)) == len(heads):
        return sorted(listed, key=head), True
    return sorted(listed, key=whole), False


def seconds(delta: timedelta) -> float:
    return round(delta.total_seconds(), 3)


@functools.lru_cache(maxsize=4096)
def span(total_s: float) -> timedelta:
    """``timedelta(seconds=total_s)``, memoised: the rules add the same few limits and levels to
    thousands of start times a pass, and building a timedelta from a float costs several lookups."""
    return timedelta(seconds=total_s)


def fmt_duration(total_s: float) -> str:
    """Human duration: 45s, 12m, 1h30m, 2d3h."""
    return _fmt_duration(round(total_s))


@functools.lru_cache(maxsize=4096)
def _fmt_duration(s: int) -> str:
    sign = "-" if s < 0 else ""
    s = abs(s)
    if s < 60:
        return f"{sign}{s}s"
    minutes, _ = divmod(s, 60)
    if minutes < 60:
        return f"{sign}{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{sign}{hours}h{minutes:02d}m" if minutes else f"{sign}{hours}h"
    days, hours = divmod(hours, 24)
    return f"{sign}{days}d{hours}h" if hours else f"{sign}{days}d"


def fmt_bytes(n: float | None) -> str:
    """Sizes in messages, in the CLI's style: binary units, one decimal under 10 (``3.0Gi``, ``512Mi``).

    Messages are for people; the evidence keeps the raw number of bytes.
    """
    return "unknown" if n is None else binary_size(n)


def container_target(c: ContainerObs, *, gpu: str | None = None) -> Target:
    """The target of a container action; state and StartedAt are the executor's precondition."""
    return built(
        Target,
        {
            "container": c.name,
            "container_id": c.id,
            "expected_state": _STATE_VALUE[c.state],
            "expected_started_at": c.started_at,
            "pid": None,
            "pid_start_time": None,
            "gpu": gpu,
            "user": c.owner,
            "ledger_entry": None,
        },
    )


def host_target(*, gpu: str | None = None, pid: int | None = None, user: str | None = None) -> Target:
    # Every field given: ``built`` is ``Target.model_construct`` without its per-field loop.
    return built(
        Target,
        {
            "container": None,
            "container_id": None,
            "expected_state": None,
            "expected_started_at": None,
            "pid": pid,
            "pid_start_time": None,
            "gpu": gpu,
            "user": user,
            "ledger_entry": None,
        },
    )


def deferral(
    target: Target,
    rule: Reason,
    why: DeferReason,
    message: str,
    *,
    due_at: datetime | None = None,
    evidence: dict[str, Any] | None = None,
) -> Deferred:
    """A deferral, built without validation (its parts are typed values already)."""
    return built(
        Deferred,
        {
            "target": target,
            "rule": rule,
            "why": why,
            "message": message,
            "due_at": due_at,
            "evidence": evidence or {},
        },
    )


class Halt(Enum):
    """A check's "stop here, nothing to report" (a rule that does not apply, an active container)."""

    DONE = "done"


# The result of one named check in a rule: None goes on to the next check, a Deferred stops the
# rule and says why, Halt.DONE stops it silently. Rules chain checks with ``or`` (the first
# check that does not go on decides) and hand the result to :meth:`Collector.stopped`.
Check: TypeAlias = Deferred | Halt | None
GO_ON: Check = None


@dataclass(slots=True)
class Proposal:
    """An action whose message and evidence are written only if it passes the safety gates.

    The gates read an action's kind, target, reason, due date and key only, and a backlog past the
    budget turns thousands of removals a pass into deferrals that quote nothing else: writing each
    one's message and evidence would be wasted. ``detail`` returns them (as :meth:`Collector.act`
    takes them); it reads only the pass's inputs, so calling it later gives what calling it at once
    would have.
    """

    kind: ActionKind
    target: Target
    reason: Reason
    due_at: datetime
    key: str
    params: ActionParams
    detail: Callable[[], tuple[str, dict[str, Any]]]

    @property
    def destructive(self) -> bool:
        return self.kind in DESTRUCTIVE_KINDS

    def action(self) -> Action:
        message, evidence = self.detail()
        return built(
            Action,
            {
                "kind": self.kind,
                "target": self.target,
                "reason": self.reason,
                "message": message,
                "evidence": evidence,
                "due_at": self.due_at,
                "key": self.key,
                "params": self.params,
            },
        )


@dataclass
class Collector:
    """Actions and deferrals proposed by the rules, before the safety gates.

    ``proposals`` are actions not written out yet (:class:`Proposal`); the gates take them after
    ``actions``. Only the cleanup rules propose (removals, whose keys no other rule makes): a rule
    that reads ``actions`` (the stops proposed so far) finds every action it looks for there.
    """

    actions: list[Action] = field(default_factory=list)
    deferred: list[Deferred] = field(default_factory=list)
    proposals: list[Proposal] = field(default_factory=list)

    def act(
        self,
        kind: ActionKind,
        target: Target,
        reason: Reason,
        message: str,
        *,
        due_at: datetime,
        key: str,
        evidence: dict[str, Any] | None = None,
        params: ActionParams | None = None,
    ) -> None:
        # The rules build these from values already typed; validating them again is most of what
        # a pass over 10,000 containers would spend here.
        self.actions.append(
            built(
                Action,
                {
                    "kind": kind,
                    "target": target,
                    "reason": reason,
                    "message": message,
                    "evidence": evidence or {},
                    "due_at": due_at,
                    "key": key,
                    "params": params if params is not None else params_for(kind),
                },
            )
        )

    def propose(
        self,
        kind: ActionKind,
        target: Target,
        reason: Reason,
        detail: Callable[[], tuple[str, dict[str, Any]]],
        *,
        due_at: datetime,
        key: str,
        params: ActionParams,
    ) -> None:
        """:meth:`act`, with the message and evidence written by ``detail`` if the gates let it through."""
        self.proposals.append(Proposal(kind, target, reason, due_at, key, params, detail))

    def defer(
        self,
        target: Target,
        rule: Reason,
        why: DeferReason,
        message: str,
        *,
        due_at: datetime | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        self.deferred.append(deferral(target, rule, why, message, due_at=due_at, evidence=evidence))

    def stopped(self, check: Check) -> bool:
        """Record a check's deferral, if any; True when the rule stops here."""
        if check is None:
            return False
        if isinstance(check, Deferred):
            self.deferred.append(check)
        return True


@dataclass
class PassContext:
    """Read-only inputs of one pass plus the indexes the rules need."""

    snapshot: Snapshot
    now: datetime
    glob: GlobalPolicy
    memory: ControllerMemory
    docker_ok: bool
    nvml_ok: bool
    procfs_ok: bool
    containers: list[ContainerObs]  # sorted by id
    by_id: dict[str, ContainerObs]
    by_name: dict[str, ContainerObs]
    sorted_ids: list[str]
    gpus: list[GpuObs]  # sorted by index, uuid
    physical_of: dict[str, str]  # GPU or MIG UUID -> physical GPU UUID
    mig_uuids: frozenset[str]
    gpu_util: dict[str, float | None]  # full-GPU utilization from the device view
    policies: dict[str, EffectivePolicy] = field(default_factory=dict)
    cmem: dict[str, ContainerMemory] = field(default_factory=dict)  # next memory, per container id
    holders: dict[str, list[ContainerObs]] = field(default_factory=dict)  # physical GPU -> holders
    referrers: list[ContainerObs] = field(default_factory=list)  # those with a GPU reference, by id
    demand_fraction: float | None = None
    forget_done: set[str] = field(default_factory=set)  # done keys the next memory drops (void warnings)
    # The containers whose next memory holds a delivered warning, in id order (found as each
    # memory is written: most hold none, and the quota rule looks only at these).
    warned_ids: list[str] = field(default_factory=list)
    by_owner: dict[str, list[ContainerObs]] | None = None  # rules.aggregate.owners, once policies are in
    owner_gpu_holders: dict[str, list[ContainerObs]] = field(default_factory=dict)  # with by_owner
    # Forward wall-clock steps a ledger row's reservation window may span, this pass's included
    # (controller.plan.clock.recent_steps).
    clock_steps: tuple[ClockStep, ...] = ()
    _unresolved_live: list[str] | None = None  # see unresolved_live_names
    _process_devices: dict[str, list[str]] | None = None  # see devices_computed_on
    _targets: dict[str, Target] = field(default_factory=dict)
    _physical: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(
        cls, snapshot: Snapshot, now: datetime, glob: GlobalPolicy, memory: ControllerMemory
    ) -> PassContext:
        containers = sorted(snapshot.containers, key=_ID)
        ids: list[str] = list(map(_ID, containers))
        gpus = sorted(snapshot.gpus, key=lambda g: (g.index, g.uuid))
        physical_of: dict[str, str] = {}
        mig: set[str] = set()
        util: dict[str, float | None] = {}
        for g in gpus:
            physical_of[g.uuid] = g.uuid
            util[g.uuid] = g.utilization_percent
            for m in g.mig_devices:
                physical_of[m.uuid] = g.uuid
                mig.add(m.uuid)
        ctx = cls(
            snapshot=snapshot,
            now=now,
            glob=glob,
            memory=memory,
            docker_ok=snapshot.domain_ok(Domain.DOCKER),
            nvml_ok=snapshot.domain_ok(Domain.NVML),
            procfs_ok=snapshot.domain_ok(Domain.PROCFS),
            containers=containers,
            by_id=dict(zip(ids, containers, strict=True)),
            by_name=dict(zip(map(_NAME, containers), containers)),
            sorted_ids=ids,
            gpus=gpus,
            physical_of=physical_of,
            mig_uuids=frozenset(mig),
            gpu_util=util,
        )
        ctx._index_holders()
        return ctx

    def _index_holders(self) -> None:
        holders: dict[str, list[ContainerObs]] = {}
        all_gpu_holders: list[ContainerObs] = []
        in_use: set[str] = set()
        referrers = self.referrers
        for c in self.containers:
            if c.all_gpus:
                all_gpu_holders.append(c)
            if not c.gpu_refs:
                continue  # most containers reference no GPU: nothing to index
            referrers.append(c)
            uuids = self._physical_gpus(c, include_all=False)
            if not c.all_gpus:
                self._physical[c.id] = uuids  # what physical_gpus(c) would build again
            for uuid in uuids:
                holders.setdefault(uuid, []).append(c)
                if c.state == _RUNNING:
                    in_use.add(uuid)
        # Demand counts running holders with explicit references only (as DS01: running containers
        # with an allocation). A created or exited container keeps its GPU reserved but uses no
        # GPU time, and a CUDA image started under the default nvidia runtime carries
        # NVIDIA_VISIBLE_DEVICES=all: counting either would keep the host in high demand and halve
        # everyone's idle timeout (high demand only ever shortens timeouts).
        if self.gpus:
            held = sum(1 for g in self.gpus if g.uuid in in_use)
            self.demand_fraction = held / len(self.gpus)
        for c in all_gpu_holders:
            for g in self.gpus:
                lst = holders.setdefault(g.uuid, [])
                if c not in lst:
                    lst.append(c)
        self.holders = holders

    def unresolved_live_names(self) -> list[str]:
        """The names of the live containers with a GPU reference that did not resolve, sorted.

        Found once a pass, among the containers that reference a GPU, when first asked (by each
        GPU to be reset: asked again per GPU, it was a walk of every container per GPU)."""
        if self._unresolved_live is None:
            self._unresolved_live = sorted(
                c.name
                for c in self.referrers
                if c.state in LIVE_STATES and any(not ref.resolved for ref in c.gpu_refs)
            )
        return self._unresolved_live

    def target(self, c: ContainerObs) -> Target:
        """The container's target, built once per pass (targets are immutable)."""
        t = self._targets.get(c.id)
        if t is None:
            t = self._targets[c.id] = container_target(c)
        return t

    def physical_gpus(self, c: ContainerObs, *, include_all: bool = True) -> list[str]:
        """The physical GPUs a container references (sorted); every GPU for 'all' when asked."""
        if include_all:
            cached = self._physical.get(c.id)
            if cached is None:
                cached = self._physical[c.id] = self._physical_gpus(c, include_all=True)
            return cached
        return self._physical_gpus(c, include_all=False)

    def _physical_gpus(self, c: ContainerObs, *, include_all: bool) -> list[str]:
        refs = c.gpu_refs
        if len(refs) == 1 and not (include_all and c.all_gpus):
            # One reference (the common container): the loop below's set of at most one GPU.
            ref = refs[0]
            if ref.parent_uuid is not None:
                return [ref.parent_uuid]
            if ref.uuid is not None:
                return [self.physical_of.get(ref.uuid, ref.uuid)]
            return []
        out: set[str] = set()
        for ref in refs:
            if ref.parent_uuid is not None:
                out.add(ref.parent_uuid)
            elif ref.uuid is not None:
                out.add(self.physical_of.get(ref.uuid, ref.uuid))
        if include_all and c.all_gpus:
            out.update(g.uuid for g in self.gpus)
        return sorted(out)

    def find_container(self, key: str) -> ContainerObs | None:
        """By exact id, exact name, or a unique id prefix (see :func:`may_be_id_prefix`)."""
        hit = self.by_id.get(key) or self.by_name.get(key)
        if hit is not None or not may_be_id_prefix(key):
            return hit
        i = bisect.bisect_left(self.sorted_ids, key)
        if i < len(self.sorted_ids) and self.sorted_ids[i].startswith(key):
            if i + 1 < len(self.sorted_ids) and self.sorted_ids[i + 1].startswith(key):
                return None  # ambiguous: callers must check prefix_ambiguous before concluding "gone"
            return self.by_id[self.sorted_ids[i]]
        return None

    def prefix_ambiguous(self, key: str) -> bool:
        if not may_be_id_prefix(key) or key in self.by_id or key in self.by_name:
            return False
        i = bisect.bisect_left(self.sorted_ids, key)
        return (
            i + 1 < len(self.sorted_ids)
            and self.sorted_ids[i].startswith(key)
            and self.sorted_ids[i + 1].startswith(key)
        )

    def devices_computed_on(self, container_id: str) -> list[str]:
        """The devices NVML lists a process of the container on, whatever it references.

        Found once a pass, for every container, when first asked."""
        if self._process_devices is None:
            found: dict[str, list[str]] = {}
            for p in self.snapshot.processes:
                if p.container_id is not None:
                    devices = found.setdefault(p.container_id, [])
                    if p.device_uuid not in devices:
                        devices.append(p.device_uuid)
            self._process_devices = found
        return self._process_devices.get(container_id, [])

    def gpu_pct_for(self, c: ContainerObs) -> dict[str, float | None]:
        """Utilization of each GPU the container may use: its own reading, else the device view.

        A container given every GPU, or one with a reference that did not resolve, may be using
        any GPU of the host: all of them count, so a busy GPU anywhere keeps it from being idle
        (unknown is not idle). So does every device NVML lists a process of the container on: a
        privileged container has every GPU's device node whatever it references, and its CUDA
        counts from GPU 0 (``--gpus device=1 --privileged`` computes on GPU 0). MIG devices report
        no utilization (None).
        """
        out: dict[str, float | None] = {}
        signals = c.signals
        if signals is not None:
            for reading in signals.gpu_util:
                out[reading.uuid] = reading.percent
        # One walk over the references (c.gpu_uuids and ref.resolved would walk them twice more).
        every = c.all_gpus
        for ref in c.gpu_refs:
            if ref.uuid is None:
                every = True  # unresolved: it may be any GPU
            elif ref.uuid not in out:
                out[ref.uuid] = self._device_pct(ref.uuid)
        for g in self.gpus if every else ():
            if g.uuid not in out:
                out[g.uuid] = self._device_pct(g.uuid)
        for uuid in self.devices_computed_on(c.id):
            if uuid not in out:
                out[uuid] = self._device_pct(uuid)
        return out

    def _device_pct(self, uuid: str) -> float | None:
        """The device view's utilization of a GPU; None for a MIG device (it reports none)."""
        return None if uuid in self.mig_uuids else self.gpu_util.get(uuid)

    def counted_owner(self, c: ContainerObs) -> str | None:
        """The user a container counts for in per-user sums (quotas, aggregate caps), or None.

        None for owner ``unknown`` (many people, not one), and, while labels are not trusted, for an
        owner the container only claims (a label, its name): anyone can write ``ds01.user=bob``, and
        counted as bob's such containers would put bob beyond his quota and get his own stopped.
        """
        owner = c.owner
        if not owner or owner == UNKNOWN_OWNER:
            return None
        if not self.glob.trust_labels.value and c.owner_rule in CLAIMED_OWNER_RULES:
            return None
        return owner

    def sent_at(self, mem: ContainerMemory | None, warning_key: str, action_key: str) -> datetime | None:
        """When a one-shot notice was delivered, from the container's warnings or the done keys."""
        if mem is not None:
            at = mem.warnings.get(warning_key)
            if at is not None:
                return at
        return self.memory.done.get(action_key)


def by_key(items: Mapping[str, Any]) -> dict[str, Any]:
    """A dict rebuilt in key order, so serialised memory does not depend on input order."""
    return {k: items[k] for k in sorted(items)}
