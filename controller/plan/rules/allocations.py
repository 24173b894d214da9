"""Rule 5: leaked allocation-ledger rows, and two running containers on one full GPU.

A ledger row is released only when it is certain that nothing holds its device for its container:

* **Which container.** The row names a container by id or by name. An id (exact, or a unique
  prefix) is an identity: it survives ``docker rename``. A name is not: ``docker rename train
  train-old`` leaves the row naming ``train`` while ``train-old`` still holds the GPU. So a row
  matched by name only (or by nothing) is released only when no other container that may be its
  container holds the row's device: a holder is ruled out when another ledger row of the
  same user already records it on that device (releasing this row then frees nothing), or when its owner label
  (``ds01.user`` / ``aime.mlc.USER``, which a rename cannot change; only while labels are trusted)
  names another user.
  Otherwise the row is deferred ``UnknownSignal`` ("cannot tell").
* **Which device.** The row's device and each holder's references are compared on the physical
  GPU when NVML resolved both (a full-GPU row against a MIG holder on that GPU is a mismatch of
  notation, not a leak). When either side could not be resolved -- NVML down, or a notation the
  resolver does not know (a legacy ``MIG-GPU-<uuid>/1/0``) -- only two answers are certain: the
  same text names the same device, and two different full-GPU UUIDs name different GPUs. Anything
  else is "cannot tell" and defers.
* **Still running.** A row naming its container by id (or an id prefix) whose container the
  engine does not list is kept while NVML lists a process in that container's cgroup: another
  engine runs it, or the engine lost it while its shim still runs it.
* **When.** Only once the reservation window (from ``allocated_at``) has passed, because an
  allocator writes its row before ``docker run`` creates the container -- and ``docker run`` pulls
  the image first, which takes many minutes for a large CUDA image on a slow link; the built-in
  window is therefore 30 minutes (``ledgerReservationWindow``). The window also covers a row
  written for a name whose previous container is being replaced.

Releases are destructive actions: they count against the per-pass budget, and the release
breaker (:mod:`controller.plan.safety`) holds them all back when one pass would release too large
a share of the ledger.

A ledger that exists but cannot be read releases nothing (an unreadable ledger is not an empty
one) and raises one admin alert per distinct error. Monitoring containers are not shielded here:
a ledger row is not the container.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter

from controller.plan.clock import step_discount_s
from controller.plan.context import (
    GO_ON,
    Check,
    Collector,
    Halt,
    PassContext,
    deferral,
    fmt_duration,
    host_target,
    iso,
    may_be_id_prefix,
    seconds,
    sorted_by_head,
)
from controller.plan.types import ActionKind, DeferReason, Reason, Target
from controller.snapshot import (
    ContainerObs,
    ContainerState,
    Domain,
    GpuRef,
    LedgerEntry,
    OwnerRule,
    ProcessState,
)


def row_of(e: LedgerEntry) -> dict[str, str]:
    """The row a release names (its target's ``ledger_entry``): every field, the time in ISO form."""
    row = {"gpu": e.gpu, "container": e.container, "user": e.user, "allocated_at": e.allocated_at.isoformat()}
    if e.gpu_uuid is not None:
        row["gpu_uuid"] = e.gpu_uuid
    return row


# Owner rules that name the user the container was made for and that a rename cannot change: a
# holder whose owner comes from one of these and differs from the row's user cannot be the row's
# container under another name. Weaker evidence does not rule a holder out: a name-derived owner
# changes with the name, a main process often runs as root, a project folder need not be the
# allocating user's.
_RENAME_PROOF_OWNER_RULES = frozenset({OwnerRule.LABEL_DS01_USER, OwnerRule.LABEL_AIME_USER})
_FULL_ID = re.compile(r"[0-9a-f]{64}\Z")
_RUNNING = ContainerState.RUNNING  # (read once: an enum member read from its class costs a lookup)
_VANISHED = ProcessState.VANISHED


@dataclass(frozen=True, slots=True)
class _Device:
    """A ledger row's device as far as it could be resolved: ``physical`` only when NVML knows it."""

    uuid: str
    physical: str | None


def _row_device(ctx: PassContext, e: LedgerEntry) -> _Device | None:
    """The row's device; None when it cannot be resolved (NVML down for an index or slot, or a
    notation the resolver does not know). A UUID NVML does not report is *not* resolved: while
    NVML is up that means an unknown notation (or a device NVML did not list), not "no device"."""
    if e.gpu_uuid and e.gpu_uuid in ctx.physical_of:
        return _Device(e.gpu_uuid, ctx.physical_of[e.gpu_uuid])
    raw = e.gpu.strip()
    if raw.upper().startswith(("GPU-", "MIG-")):
        if ctx.nvml_ok:
            return None  # NVML is up and does not know this text: cannot tell
        # NVML down: the UUID is the device's identity, its physical GPU is unknown.
        return _Device(e.gpu_uuid or raw, None)
    head, sep, tail = raw.replace(":", ".").partition(".")
    if not head.isdigit() or (sep and not tail.isdigit()):
        return None
    for g in ctx.gpus:
        if g.index == int(head):
            if not sep:
                return _Device(g.uuid, g.uuid)
            for m in g.mig_devices:
                if m.index == int(tail):
                    return _Device(m.uuid, g.uuid)
    return None


def _same_text(a: str, b: str) -> bool:
    """The same device reference written the same way ('1.2' and '1:2' are one slot)."""
    return _text(a) == _text(b)


def _text(ref: str) -> str:
    return ref.strip().replace(":", ".").lower()


def _names_row_device(c: ContainerObs, e: LedgerEntry) -> bool:
    """``c`` holds every GPU, or references the row's device written as the row writes it."""
    if c.all_gpus:
        return True
    gpu, refs = e.gpu, c.gpu_refs
    # The very same text is the usual case (an allocator writes the reference as Docker was given
    # it): looked for first, before any text is normalised.
    for ref in refs:
        if ref.raw == gpu:
            return True
    row = _text(gpu)
    return any(_text(ref.raw) == row for ref in refs)


def _same_device(ctx: PassContext, row: _Device | None, ref: GpuRef) -> bool | None:
    """Whether ``ref`` names the row's device: certain True/False, or None (cannot tell)."""
    if row is None or ref.uuid is None:
        return None
    ref_physical = ref.parent_uuid if ref.parent_uuid in ctx.physical_of else ctx.physical_of.get(ref.uuid)
    if row.physical is not None and ref_physical is not None:
        # Compared on the physical GPU: a full-GPU row against a MIG holder (or the reverse) is a
        # mismatch of notation, not a leak.
        return row.physical == ref_physical
    if row.uuid.lower() == ref.uuid.lower():
        return True
    full_row = row.uuid.upper().startswith("GPU-")
    full_ref = ref.uuid.upper().startswith("GPU-") and not ref.is_mig
    if full_row and full_ref:
        return False  # two different full-GPU UUIDs are two different GPUs, NVML or not
    # A MIG device against its own or another GPU's UUID, unresolved: the physical GPU is unknown.
    return None


def _references(ctx: PassContext, c: ContainerObs, e: LedgerEntry, row: _Device | None) -> bool | None:
    """Whether ``c`` still references the row's device; None when that cannot be told."""
    if _names_row_device(c, e):
        return True
    unknown = False
    for ref in c.gpu_refs:
        same = _same_device(ctx, row, ref)
        if same is True:
            return True
        if same is None:
            unknown = True
    return None if unknown else False


def _user_key(user: str) -> str:
    # Sanitised and login forms of one user compare equal: DS01's sanitised form strips the domain
    # ("h.baker@school.lan" -> "h_baker"), and "a.b" / "a_b" / "a-b" are one user. When in doubt,
    # the holder may be the row's container.
    return "".join(ch for ch in user.split("@", 1)[0].lower() if ch.isalnum())


_MAX_SUSPECTS = 10


class _RenameGuard:
    """Answers "may another container be this row's container under a new name?" for one pass.

    Built lazily: only rows about to be released (rare) pay for it. A row whose physical GPU is
    known looks only at that GPU's holders (``ctx.holders``) and at the containers with a
    reference that maps to no physical GPU; other rows look at every GPU holder.
    """

    def __init__(self, ctx: PassContext, rows: list[LedgerEntry]) -> None:
        self.ctx = ctx
        self.holders = [c for c in ctx.containers if c.has_gpu]
        self.unplaced = [c for c in self.holders if any(not _placed(ctx, ref) for ref in c.gpu_refs)]
        self.trust_labels = ctx.glob.trust_labels.value
        self.owner_keys: dict[str, str] = {}
        # container id -> the rows that name it (by id, unique id prefix or current name)
        self.rows_of: dict[str, list[LedgerEntry]] = {}
        for r in rows:
            named = ctx.find_container(r.container)
            if named is not None:
                self.rows_of.setdefault(named.id, []).append(r)

    def _recorded(self, h: ContainerObs, e: LedgerEntry, row: _Device | None) -> bool:
        """Another row of the same user already records ``h`` on this very device: releasing ``e``
        frees nothing. (One of another user would leave ``h``'s GPU counted against that user, and
        not against the user of ``e``, whose container ``h`` may be under a new name.)"""
        for other in self.rows_of.get(h.id, ()):
            if other is e or other.container == e.container:
                continue
            if _user_key(other.user) != _user_key(e.user):
                continue
            if _same_text(other.gpu, e.gpu):
                return True
            other_device = _row_device(self.ctx, other)
            if row is not None and other_device is not None and other_device.uuid == row.uuid:
                return True
        return False

    def _other_user(self, h: ContainerObs, row_user: str) -> bool:
        """``h``'s owner label names another user than the row's (``row_user``, as :func:`_user_key`)."""
        if not row_user or not self.trust_labels or h.owner_rule not in _RENAME_PROOF_OWNER_RULES:
            return False  # no user on the row, untrusted labels, or no owner label: proves nothing
        key = self.owner_keys.get(h.id)
        if key is None:
            key = self.owner_keys[h.id] = _user_key(h.owner)
        return key != row_user

    def _candidates(self, row: _Device | None) -> list[ContainerObs]:
        if row is None or row.physical is None:
            return self.holders
        on_gpu = self.ctx.holders.get(row.physical, [])
        if not self.unplaced:
            return on_gpu
        merged = {c.id: c for c in on_gpu} | {c.id: c for c in self.unplaced}
        return [merged[k] for k in sorted(merged)]

    def suspects(
        self, e: LedgerEntry, row: _Device | None, matched: ContainerObs | None
    ) -> list[tuple[ContainerObs, bool | None]]:
        """Containers that hold (True) or may hold (None) the row's device and may be its container
        (the first few, by id: one is enough to defer)."""
        out: list[tuple[ContainerObs, bool | None]] = []
        row_user = _user_key(e.user)
        for h in self._candidates(row):
            if matched is not None and h.id == matched.id:
                continue
            if self._other_user(h, row_user):
                continue
            holds = _references(self.ctx, h, e, row)
            if holds is False or self._recorded(h, e, row):
                continue
            out.append((h, holds))
            if len(out) >= _MAX_SUSPECTS:
                break
        return out


def _placed(ctx: PassContext, ref: GpuRef) -> bool:
    """The reference maps to a physical GPU NVML reported (it is then indexed in ``ctx.holders``)."""
    return ref.uuid is not None and (ref.parent_uuid in ctx.physical_of or ref.uuid in ctx.physical_of)


def ledger_rows(ctx: PassContext, out: Collector) -> None:
    """Rule 5 over every ledger row (see the module docstring)."""
    if out.stopped(_ledger_unusable(ctx, out)):
        return
    entries, distinct = _in_order(ctx.snapshot.ledger.entries)
    rows = _Rows(ctx, entries)
    for e in distinct:
        _one_row(ctx, out, e, rows)


_CONTAINER_GPU = attrgetter("container", "gpu")


def _in_order(entries: tuple[LedgerEntry, ...]) -> tuple[list[LedgerEntry], list[LedgerEntry]]:
    """The rows by container, device, allocation time (as text), user and device UUID; and the
    first of them for each container, device and allocation time (a row written twice is one).

    Sorted by plain strings (a hand-edited ledger may mix naive and aware timestamps). A container
    has one row per device but in odd cases (a row written twice, a name reused): while no two rows
    share their container and device, every row is distinct.
    """
    ordered, every_row_distinct = sorted_by_head(entries, _CONTAINER_GPU, _row_order)
    if every_row_distinct:
        return ordered, ordered
    seen: set[tuple[str, str, str]] = set()
    distinct: list[LedgerEntry] = []
    for e in ordered:
        ident = _row_order(e)[:3]
        if ident not in seen:
            seen.add(ident)
            distinct.append(e)
    return ordered, distinct


def _row_order(e: LedgerEntry) -> tuple[str, str, str, str, str]:
    return (e.container, e.gpu, iso(e.allocated_at) or "", e.user, e.gpu_uuid or "")


def _ledger_unusable(ctx: PassContext, out: Collector) -> Check:
    """No ledger (nothing to do), an unreadable one (alert), or Docker down (cannot tell)."""
    snap, rule = ctx.snapshot, Reason.LEAKED_ALLOCATION
    health = [h for h in snap.health if h.domain == Domain.LEDGER]
    if not health:
        return Halt.DONE  # no ledger configured: DS01 keeps none, Docker is the source of truth
    ledger = snap.ledger
    if not health[0].ok or ledger.error is not None:
        error = ledger.error or health[0].error or "unavailable"
        out.act(
            ActionKind.ALERT_ADMIN,
            host_target(),
            Reason.LEDGER_UNREADABLE,
            f"the allocation ledger {ledger.path} cannot be read: {error}; no allocation is released "
            f"until it is fixed",
            due_at=ctx.now,
            key=f"AlertAdmin:LedgerUnreadable:{ledger.path}:{error}",
            evidence={"path": ledger.path, "error": error},
        )
        return deferral(
            host_target(),
            rule,
            DeferReason.DOMAIN_UNAVAILABLE,
            f"ledger {ledger.path} unreadable: no allocation is released",
            evidence={"path": ledger.path, "error": error},
        )
    if not ctx.docker_ok:
        return deferral(
            host_target(),
            rule,
            DeferReason.DOMAIN_UNAVAILABLE,
            "Docker is unavailable: whether a ledger row's container exists cannot be told",
            evidence={"docker_error": snap.domain_error(Domain.DOCKER)},
        )
    return GO_ON


class _Rows:
    """The pass's ledger rows, and the rename guard built the first time a row needs it."""

    def __init__(self, ctx: PassContext, entries: list[LedgerEntry]) -> None:
        self.ctx = ctx
        self.entries = entries
        self._guard: _RenameGuard | None = None

    def guard(self) -> _RenameGuard:
        if self._guard is None:
            self._guard = _RenameGuard(self.ctx, self.entries)
        return self._guard


@dataclass(slots=True)
class _RowFacts:
    """One ledger row as the rule sees it: what it would release, its age, its evidence."""

    entry: LedgerEntry
    container: ContainerObs | None  # the container the row names, if it exists
    device: _Device | None
    target: Target
    allocated_at: datetime
    age_s: float
    discount_s: float  # forward wall-clock steps since it was written: not reservation time
    evidence: dict[str, object]

    def due(self, window_s: float) -> datetime:
        """The end of its reservation window."""
        return self.allocated_at + timedelta(seconds=window_s + self.discount_s)

    @property
    def why(self) -> str:
        """Why the row looks leaked (once its container's references are known not to hold it)."""
        c, e = self.container, self.entry
        if c is None:
            return f"container '{e.container}' does not exist"
        return f"container {c.name} ({c.state.value}) no longer references GPU {e.gpu}"


def _row_facts(ctx: PassContext, e: LedgerEntry, c: ContainerObs | None, device: _Device | None) -> _RowFacts:
    row = row_of(e)
    target = Target(
        container=c.name if c is not None else e.container,
        container_id=c.id if c is not None else None,
        expected_state=None,
        expected_started_at=None,
        pid=None,
        pid_start_time=None,
        gpu=e.gpu_uuid or e.gpu,
        user=e.user,
        ledger_entry=row,
    )
    # A naive timestamp in a hand-edited ledger is read as UTC rather than crashing the pass.
    allocated_at = e.allocated_at if e.allocated_at.tzinfo else e.allocated_at.replace(tzinfo=UTC)
    age_s = seconds(ctx.now - allocated_at)
    window = ctx.glob.ledger_reservation_window_s
    evidence: dict[str, object] = {
        "row": row,
        "allocated_for_s": age_s,
        "reservation_window_s": window.value,
        "window_source": window.source,
    }
    # A forward wall-clock step since the row was written is not reservation time: a row written a
    # minute before NTP moved the clock two hours on stays reserved (controller.plan.clock).
    discount_s = step_discount_s(ctx.clock_steps, allocated_at) if ctx.clock_steps else 0.0
    if discount_s:
        evidence["clock_step_discount_s"] = discount_s
    return _RowFacts(e, c, device, target, allocated_at, age_s, discount_s, evidence)


def _one_row(ctx: PassContext, out: Collector, e: LedgerEntry, rows: _Rows) -> None:
    """Preconditions (one container, a known reference, no renamed holder, past the window), then
    the release."""
    c = ctx.find_container(e.container)
    if c is not None and _names_row_device(c, e):
        return  # a live reference as the row writes it: not leaked (the common case, kept cheap)
    device = _row_device(ctx, e)
    refs = _references(ctx, c, e, device) if c is not None else None
    if refs is True:
        return  # a live reference to the same device written another way: not leaked
    r = _row_facts(ctx, e, c, device)
    if out.stopped(_prefix_ambiguous(ctx, r)):
        return
    if device is None:
        r.evidence["gpu_unresolved"] = (
            "NVML is unavailable" if not ctx.nvml_ok else "NVML reports no device by this name"
        )
    if c is not None and refs is False:
        r.evidence["container_state"] = c.state.value
    check = (
        _reference_unknown(ctx, r, refs)
        or _still_computing(ctx, r)
        or _maybe_renamed(ctx, r, rows)
        or _inside_window(ctx, r)
    )
    if out.stopped(check):
        return
    out.act(
        ActionKind.RELEASE_ALLOCATION,
        r.target,
        Reason.LEAKED_ALLOCATION,
        f"release ledger row GPU {e.gpu} -> '{e.container}' (user {e.user}): {r.why}, allocated "
        f"{fmt_duration(r.age_s)} ago",
        due_at=r.due(ctx.glob.ledger_reservation_window_s.value),
        key=f"ReleaseAllocation:{e.container}:{e.gpu}:{iso(e.allocated_at)}",
        evidence=r.evidence,
    )


def _prefix_ambiguous(ctx: PassContext, r: _RowFacts) -> Check:
    if r.container is not None or not ctx.prefix_ambiguous(r.entry.container):
        return GO_ON
    return deferral(
        r.target,
        Reason.LEAKED_ALLOCATION,
        DeferReason.UNKNOWN_SIGNAL,
        f"ledger row for '{r.entry.container}' matches several containers by id prefix",
        evidence=r.evidence,
    )


def _reference_unknown(ctx: PassContext, r: _RowFacts, refs: bool | None) -> Check:
    """The row's container exists but whether it still references the device cannot be told."""
    c = r.container
    if c is None or refs is not None:
        return GO_ON
    return deferral(
        r.target,
        Reason.LEAKED_ALLOCATION,
        DeferReason.UNKNOWN_SIGNAL,
        f"cannot tell whether {c.name} still references GPU {r.entry.gpu} ({_unknown_why(ctx, r.device)})",
        evidence=r.evidence,
    )


def _still_computing(ctx: PassContext, r: _RowFacts) -> Check:
    """The engine does not list the row's container, yet NVML lists a process in its cgroup: the
    container still runs (another engine's, or one the engine lost while its shim still runs it).
    A row naming its container by id (or an id prefix) is then in use, whatever the listing says."""
    key = r.entry.container
    if r.container is not None or not may_be_id_prefix(key):
        return GO_ON
    pids = sorted(
        p.pid
        for p in ctx.snapshot.processes
        if p.container_id is not None and p.container_id.startswith(key) and p.state != _VANISHED
    )
    if not pids:
        return GO_ON
    r.evidence["live_processes"] = pids
    return deferral(
        r.target,
        Reason.LEAKED_ALLOCATION,
        DeferReason.UNKNOWN_SIGNAL,
        f"ledger row GPU {r.entry.gpu} -> '{key}': the engine does not list the container, but NVML "
        f"lists a process in its cgroup (pid {', '.join(map(str, pids))}): it still runs",
        evidence=r.evidence,
    )


def _maybe_renamed(ctx: PassContext, r: _RowFacts, rows: _Rows) -> Check:
    """A container id survives `docker rename`; a name does not. Unless the row named the
    container by its id, another container may be the row's own under a new name."""
    e, c = r.entry, r.container
    named_by_id = c is not None and (e.container in ctx.by_id or e.container not in ctx.by_name)
    if named_by_id or _FULL_ID.match(e.container) is not None:
        return GO_ON
    suspects = rows.guard().suspects(e, r.device, c)
    if not suspects:
        return GO_ON
    r.evidence["possible_holders"] = [
        {"id": x.id, "name": x.name, "owner": x.owner, "holds": "yes" if y else "cannot tell"}
        for x, y in suspects
    ]
    who = _suspects_text(ctx, r.device, suspects)
    return deferral(
        r.target,
        Reason.LEAKED_ALLOCATION,
        DeferReason.UNKNOWN_SIGNAL,
        f"cannot tell whether ledger row GPU {e.gpu} -> '{e.container}' is still in use: {r.why}, but {who}",
        evidence=r.evidence,
    )


def _suspects_text(
    ctx: PassContext, row: _Device | None, suspects: list[tuple[ContainerObs, bool | None]]
) -> str:
    """Who may be a row's container under a new name: every suspect, named (the row's container may
    have become any of them), and why it is unknown whether one that may hold the GPU does."""
    if len(suspects) == 1:
        ((h, holds),) = suspects
        relation = "holds" if holds else f"may hold ({_unknown_why(ctx, row)})"
        return (
            f"{h.name} ({h.short_id}, {h.state.value}) {relation} that GPU and may be the same container "
            f"renamed (the row names it by name, and no other row records that holder)"
        )
    each = ", ".join(
        f"{x.name} ({x.short_id}, {x.state.value}) {'holds' if y else 'may hold'}" for x, y in suspects
    )
    unknown = "" if all(y for _, y in suspects) else f" ({_unknown_why(ctx, row)})"
    return (
        f"{each} that GPU{unknown}; any of them may be the same container renamed (the row names it by "
        f"name, and no other row records those holders)"
    )


def _inside_window(ctx: PassContext, r: _RowFacts) -> Check:
    """An allocator writes its row before `docker run` creates the container (and pulls the image)."""
    window_s = ctx.glob.ledger_reservation_window_s.value
    due = r.due(window_s)
    if ctx.now >= due:
        return GO_ON
    e = r.entry
    return deferral(
        r.target,
        Reason.LEAKED_ALLOCATION,
        DeferReason.NOT_DUE,
        f"ledger row GPU {e.gpu} -> '{e.container}': {r.why}; inside the reservation window "
        f"of {fmt_duration(window_s)}{_step_note(r)}",
        due_at=due,
        evidence=r.evidence,
    )


def _step_note(r: _RowFacts) -> str:
    return f" (plus {fmt_duration(r.discount_s)} the wall clock stepped forward)" if r.discount_s else ""


def _unknown_why(ctx: PassContext, device: _Device | None) -> str:
    if device is None:
        if not ctx.nvml_ok:
            return "NVML is unavailable: an index or slot cannot be mapped to a device"
        return "NVML reports no device by the row's name: an unknown notation is not a free device"
    if not ctx.nvml_ok:
        return "NVML is unavailable: a MIG device and a full GPU cannot be compared"
    return "a reference of the container could not be resolved"


def duplicate_holders(ctx: PassContext, out: Collector) -> None:
    """Two different running containers referencing the same full GPU: tell an admin.

    MIG slices are shared by design and "all GPUs" requests (NVIDIA_VISIBLE_DEVICES=all) are too
    common to be meaningful here; only explicit full-GPU references count.
    """
    if not ctx.docker_ok:
        return
    by_gpu: dict[str, dict[str, ContainerObs]] = {}
    for c in ctx.referrers:  # (most containers reference no GPU: only those that do, in id order)
        if c.state != _RUNNING:
            continue
        for ref in c.gpu_refs:
            if ref.uuid is None or ref.is_mig or ref.uuid in ctx.mig_uuids:
                continue
            by_gpu.setdefault(ref.uuid, {})[c.id] = c
    for gpu in sorted(by_gpu):
        holders = by_gpu[gpu]
        if len(holders) < 2:
            continue
        ids = sorted(holders)
        names = [holders[i].name for i in ids]
        out.act(
            ActionKind.ALERT_ADMIN,
            host_target(gpu=gpu),
            Reason.DUPLICATE_GPU_HOLDER,
            f"GPU {gpu} is held by {len(ids)} running containers: {', '.join(names)}",
            due_at=ctx.now,
            key=f"AlertAdmin:DuplicateGpuHolder:{gpu}:{'+'.join(ids)}",
            evidence={
                "gpu": gpu,
                "containers": [{"id": i, "name": holders[i].name, "owner": holders[i].owner} for i in ids],
            },
        )
