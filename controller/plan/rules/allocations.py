"""Rule 5: leaked allocation-ledger rows, and two running containers on one full GPU.

A ledger row is leaked when its container does not exist (matched by name, id or unique id
prefix), or exists but no longer references that GPU -- in both cases only once the reservation
window (from ``allocated_at``) has passed, because an allocator writes its row before
``docker run`` creates the container. The window also covers the second case: a row written for
a name whose previous container is being replaced must not be released in that instant.

A ledger that exists but cannot be read releases nothing (an unreadable ledger is not an empty
one) and raises one admin alert per distinct error. Monitoring containers are not shielded here:
a ledger row is not the container.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from controller.plan.context import Collector, PassContext, fmt_duration, host_target, iso, seconds
from controller.plan.types import ActionKind, DeferReason, Reason, Target
from controller.snapshot import ContainerObs, ContainerState, Domain, LedgerEntry


def _row(e: LedgerEntry) -> dict[str, str]:
    row = {"gpu": e.gpu, "container": e.container, "user": e.user, "allocated_at": e.allocated_at.isoformat()}
    if e.gpu_uuid is not None:
        row["gpu_uuid"] = e.gpu_uuid
    return row


def _resolve_ledger_gpu(ctx: PassContext, e: LedgerEntry) -> str | None:
    """The ledger's GPU as a UUID: as written, or a full-GPU index 'X', or a MIG slot 'X.Y' / 'X:Y'."""
    if e.gpu_uuid:
        return e.gpu_uuid
    raw = e.gpu.strip()
    if raw.startswith(("GPU-", "MIG-")):
        return raw
    head, sep, tail = raw.replace(":", ".").partition(".")
    if not head.isdigit() or (sep and not tail.isdigit()):
        return None
    for g in ctx.gpus:
        if g.index == int(head):
            if not sep:
                return g.uuid
            for m in g.mig_devices:
                if m.index == int(tail):
                    return m.uuid
    return None


def _references(ctx: PassContext, c: ContainerObs, e: LedgerEntry) -> bool | None:
    """Whether ``c`` still references the row's GPU; None when that cannot be told."""
    if c.all_gpus or any(ref.raw == e.gpu for ref in c.gpu_refs):
        return True
    uuid = _resolve_ledger_gpu(ctx, e)
    if uuid is not None:
        physical = ctx.physical_of.get(uuid, uuid)
        # Compared on the physical GPU: a full-GPU row against a MIG holder (or the reverse) is a
        # mismatch of notation, not a leak.
        if physical in ctx.physical_gpus(c) or any(ref.uuid == uuid for ref in c.gpu_refs):
            return True
    if uuid is None or any(not ref.resolved for ref in c.gpu_refs):
        return None
    return False


def ledger_rows(ctx: PassContext, out: Collector) -> None:
    snap = ctx.snapshot
    rule = Reason.LEAKED_ALLOCATION
    health = [h for h in snap.health if h.domain == Domain.LEDGER]
    if not health:
        return  # no ledger configured: DS01 keeps none, Docker is the source of truth
    ledger = snap.ledger
    if not health[0].ok or ledger.error is not None:
        error = ledger.error or health[0].error or "unavailable"
        target = host_target()
        out.act(
            ActionKind.ALERT_ADMIN,
            target,
            Reason.LEDGER_UNREADABLE,
            f"the allocation ledger {ledger.path} cannot be read: {error}; no allocation is released "
            f"until it is fixed",
            due_at=ctx.now,
            key=f"AlertAdmin:LedgerUnreadable:{ledger.path}:{error}",
            evidence={"path": ledger.path, "error": error},
        )
        out.defer(
            target,
            rule,
            DeferReason.DOMAIN_UNAVAILABLE,
            f"ledger {ledger.path} unreadable: no allocation is released",
            evidence={"path": ledger.path, "error": error},
        )
        return
    if not ctx.docker_ok:
        out.defer(
            host_target(),
            rule,
            DeferReason.DOMAIN_UNAVAILABLE,
            "Docker is unavailable: whether a ledger row's container exists cannot be told",
            evidence={"docker_error": snap.domain_error(Domain.DOCKER)},
        )
        return
    window_s = ctx.glob.ledger_reservation_window_s.value
    # Sorted by plain strings (a hand-edited ledger may mix naive and aware timestamps).
    entries = sorted(
        (
            ((e.container, e.gpu, e.allocated_at.isoformat(), e.user, e.gpu_uuid or ""), e)
            for e in ledger.entries
        ),
        key=lambda pair: pair[0],
    )
    seen: set[tuple[str, str, str]] = set()
    for (container, gpu, allocated_iso, _user, _uuid), e in entries:
        ident = (container, gpu, allocated_iso)
        if ident in seen:
            continue
        seen.add(ident)
        c = ctx.find_container(e.container)
        ambiguous = c is None and ctx.prefix_ambiguous(e.container)
        refs: bool | None = None
        if c is not None:
            refs = _references(ctx, c, e)
            if refs is True:
                continue  # a live reference: not leaked (the common case, kept cheap)
        row = _row(e)
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
        evidence: dict[str, object] = {
            "row": row,
            "allocated_for_s": age_s,
            "reservation_window_s": window_s,
            "window_source": ctx.glob.ledger_reservation_window_s.source,
        }
        if ambiguous:
            out.defer(
                target,
                rule,
                DeferReason.UNKNOWN_SIGNAL,
                f"ledger row for '{e.container}' matches several containers by id prefix",
                evidence=evidence,
            )
            continue
        if c is None:
            why = f"container '{e.container}' does not exist"
        else:
            if refs is None:
                out.defer(
                    target,
                    rule,
                    DeferReason.UNKNOWN_SIGNAL,
                    f"cannot tell whether {c.name} still references GPU {e.gpu} (unresolved reference)",
                    evidence=evidence,
                )
                continue
            why = f"container {c.name} ({c.state.value}) no longer references GPU {e.gpu}"
            evidence["container_state"] = c.state.value
        due = allocated_at + timedelta(seconds=window_s)
        if ctx.now < due:
            out.defer(
                target,
                rule,
                DeferReason.NOT_DUE,
                f"ledger row GPU {e.gpu} -> '{e.container}': {why}; inside the reservation window "
                f"of {fmt_duration(window_s)}",
                due_at=due,
                evidence=evidence,
            )
            continue
        out.act(
            ActionKind.RELEASE_ALLOCATION,
            target,
            rule,
            f"release ledger row GPU {e.gpu} -> '{e.container}' (user {e.user}): {why}, allocated "
            f"{fmt_duration(age_s)} ago",
            due_at=due,
            key=f"ReleaseAllocation:{e.container}:{e.gpu}:{iso(e.allocated_at)}",
            evidence=evidence,
        )


def duplicate_holders(ctx: PassContext, out: Collector) -> None:
    """Two different running containers referencing the same full GPU: tell an admin.

    MIG slices are shared by design and "all GPUs" requests (NVIDIA_VISIBLE_DEVICES=all) are too
    common to be meaningful here; only explicit full-GPU references count.
    """
    if not ctx.docker_ok:
        return
    by_gpu: dict[str, dict[str, ContainerObs]] = {}
    for c in ctx.containers:
        if c.state != ContainerState.RUNNING:
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
