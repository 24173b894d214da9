"""Rules 1 and 2: containers that were created but never started, and stopped containers.

* Created, never started: removed once older than ``created_container_timeout_s`` measured from
  ``Created``. DS01's release-stale path removed such containers at once; the timeout governs here
  (a ``docker create`` followed later by ``docker start`` is a legitimate pattern).
* Exited or dead: removed once ``FinishedAt`` is older than the GPU hold (containers holding a GPU)
  or the container hold, whichever comes first. ``None`` holds mean never. Paused and restarting
  containers are not stopped containers. A missing ``FinishedAt`` makes the age unknown: skipped.
  One is kept at least the longest hold a notice to its owner named for that start (a warning
  before a stop, the notice of the controller's stop: ``ContainerMemory.promised_hold_s``, for that
  start only), where the policy's is shorter now.

* Stopped by a restart: a container the engine's or the host's restart stopped (its owner did
  not; see :func:`stopped_by_restart`) keeps the global ``restart_stopped_hold_s`` when that is
  longer than its normal hold; ``None`` keeps it until an admin removes it.

Both are cleanup: protected and monitoring containers and cleanup exemptions shield them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial

from controller.memory import ContainerMemory, ControllerMemory
from controller.plan.context import (
    GO_ON,
    Check,
    Collector,
    PassContext,
    deferral,
    fmt_duration,
    iso,
    seconds,
    span,
)
from controller.plan.rules.common import gpu_evidence, shielded
from controller.plan.types import ActionKind, DeferReason, Reason, RemoveParams
from controller.snapshot import CREATED_UNKNOWN, ContainerObs, ContainerState, Snapshot
from desired_state.effective import EffectivePolicy, ExemptFrom

STOPPED_STATES = frozenset({ContainerState.EXITED, ContainerState.DEAD})
REMOVE_PARAMS = RemoveParams(force=False)
# The hold rules' values, read once (an enum member's ``value`` is a property).
_RULE_VALUES = {r: r.value for r in (Reason.GPU_HOLD_EXPIRED, Reason.STOPPED_HOLD_EXPIRED)}
# The enum members the rules use, read once (a member read from its class goes through the enum's
# metaclass): every stopped and never-started container reads them on every pass.
_CREATED = ContainerState.CREATED
_CREATED_NEVER_STARTED = Reason.CREATED_NEVER_STARTED
_GPU_HOLD_EXPIRED, _STOPPED_HOLD_EXPIRED = Reason.GPU_HOLD_EXPIRED, Reason.STOPPED_HOLD_EXPIRED
_EXEMPT_CLEANUP, _NOT_DUE, _REMOVE_CONTAINER = (
    ExemptFrom.CLEANUP,
    DeferReason.NOT_DUE,
    ActionKind.REMOVE_CONTAINER,
)
_STOPPED_VALUES = frozenset(s.value for s in STOPPED_STATES)
_RUNNING_VALUES = frozenset(
    s.value for s in (ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING)
)
# An engine stops its containers while it shuts down, just before it starts again; a host reboot
# stops them before the boot (the time the machine is down counts here). The engine's restore marks
# a container it finds dead after an unclean stop (a crash, a power cut) exited with code 255, just
# after it starts.
RESTART_STOPS_BEFORE = timedelta(minutes=10)
# While an engine shuts down it still answers: the controller may see its containers exited a few
# seconds before the engine goes away. A stop it saw this close to the restart counts as the restart's.
RESTART_SHUTDOWN = timedelta(minutes=2)
# How long after its start an engine's own stops may come: its restore marks a container it finds
# dead exited (255), and, without live-restore, stops the ones a killed engine left running under
# their shims (their stop timeout, then SIGKILL).
RESTART_RESTORE_AFTER = timedelta(minutes=2)
RESTORE_EXIT_CODE = 255
# The engine's start time is read from procfs with the boot time in whole seconds
# (controller.observe.engine): it may be up to a second early. A stop this close after it came in
# the shutdown, just before the engine started, not after it.
RESTART_TIME_SLACK = timedelta(seconds=2)


def restart_time(snapshot: Snapshot) -> datetime | None:
    """The last engine start (which follows any boot), else the boot; None: unknown."""
    return snapshot.engine_started_at or snapshot.host_booted_at


def stopped_by_restart(
    c: ContainerObs,
    prev: ContainerMemory | None,
    restart_at: datetime | None,
    last_pass_at: datetime | None = None,
) -> datetime | None:
    """The restart that stopped this stopped container, or None when its owner (or nothing) did.

    A restart stopped it when it was started before the restart and stopped around it: either the
    controller saw it running before and it stopped no later than the restore, or it stopped within
    :data:`RESTART_STOPS_BEFORE` of the restart. A stop the controller already saw (it was exited at
    the last pass) is not a restart's unless it came within :data:`RESTART_SHUTDOWN` of the
    shutdown (the engine's own, or the host's, seen while the engine still answered), nor is a stop
    after the engine came up unless the engine's start made it, within :data:`RESTART_RESTORE_AFTER`:
    exit code 255 for one its restore found dead, any exit code for one the controller saw live in
    this start. An engine killed (the OOM killer, a crash) leaves its containers running under their
    shims; the new one, without live-restore, stops them as it starts (SIGTERM, then SIGKILL after
    their stop timeout: 0, 143, 137), and may list them running meanwhile. With live-restore an
    owner's stop that soon after the restart counts as the restart's too: it is kept the longer
    hold. Once decided, the mark stays for this start of the container.

    The shutdown ends at the restart, or, when the controller's last pass (``last_pass_at``, the
    last one Docker answered) came before the restart and within :data:`RESTART_STOPS_BEFORE` of it,
    at that pass: a host reboot leaves minutes (firmware, boot) between the last pass that saw the
    shutdown's stops and the engine's start.
    """
    if c.state not in STOPPED_STATES or c.finished_at is None or c.started_at is None:
        return None
    same_start = prev is not None and prev.started_at == c.started_at
    if same_start and prev is not None and prev.stopped_by_restart_at is not None:
        return prev.stopped_by_restart_at
    if restart_at is None or c.started_at >= restart_at:
        return None  # unknown, or started after the restart: the restart did not stop it
    last_state = prev.last_state if same_start and prev is not None else ""
    if (
        last_state in _STOPPED_VALUES
        and c.finished_at < _shutdown_end(restart_at, last_pass_at) - RESTART_SHUTDOWN
    ):
        return None  # the controller saw it stopped, well before the shutdown: its owner's stop
    if c.finished_at > restart_at + RESTART_TIME_SLACK:
        # After the engine came up: only its start's own stops (see the docstring).
        restored = c.finished_at <= restart_at + RESTART_RESTORE_AFTER and (
            c.exit_code == RESTORE_EXIT_CODE or last_state in _RUNNING_VALUES
        )
        return restart_at if restored else None
    if last_state in _RUNNING_VALUES or c.finished_at >= restart_at - RESTART_STOPS_BEFORE:
        return restart_at
    return None


def restart_mark_details(before: ControllerMemory, after: ControllerMemory) -> list[dict[str, object]]:
    """The details of a ``controller.restart_stop`` event for each mark a pass made (a record of
    ``after`` marked stopped by a restart that ``before`` did not mark for that start): a memory lost
    since rebuilds them from the event log (:func:`controller.act.salvage.memory_from_events`). The
    mark is decided from what the controller had seen before the restart, which a lost memory
    no longer knows, and from the last restart, which a later one replaces."""
    out: list[dict[str, object]] = []
    earlier = before.containers
    for cid, cm in after.containers.items():
        at = cm.stopped_by_restart_at
        if at is None:
            continue
        prev = earlier.get(cid)
        if prev is not None and prev.started_at == cm.started_at and prev.stopped_by_restart_at == at:
            continue
        out.append({"container": cm.name, "container_id": cid, "started_at": cm.started_at, "restart_at": at})
    return out


def _shutdown_end(restart_at: datetime, last_pass_at: datetime | None) -> datetime:
    """When the shutdown before ``restart_at`` was last seen (see :func:`stopped_by_restart`)."""
    if last_pass_at is not None and restart_at - RESTART_STOPS_BEFORE <= last_pass_at < restart_at:
        return last_pass_at
    return restart_at


def created_never_started(ctx: PassContext, out: Collector, c: ContainerObs, policy: EffectivePolicy) -> None:
    timeout_s = policy.created_container_timeout_s.value
    if c.state != _CREATED or timeout_s is None:
        return
    rule = _CREATED_NEVER_STARTED
    if shielded(ctx, out, c, policy, rule, _EXEMPT_CLEANUP):
        return
    since, basis = c.created_at, "Created"
    mem = ctx.cmem.get(c.id)
    if (since > ctx.now or since == CREATED_UNKNOWN) and mem is not None and mem.first_seen_at is not None:
        # Created lies in the future (clock skew or a forged value), or could not be read (the
        # oldest time there is): age from our first sighting.
        why = "is in the future" if since > ctx.now else "could not be read"
        since, basis = mem.first_seen_at, f"first sighting (Created {why})"
    # Forward wall-clock steps since it was created are not time it waited (controller.plan.clock).
    due = since + span(timeout_s + hold_discount_s(ctx, mem, since))
    target = ctx.target(c)
    if ctx.now < due:
        age_s = seconds(ctx.now - since)
        out.defer(
            target,
            rule,
            _NOT_DUE,
            f"{c.name} was created {fmt_duration(age_s)} ago and never started; "
            f"removed after {fmt_duration(timeout_s)}",
            due_at=due,
            evidence=_created_evidence(ctx, c, policy, timeout_s, since, basis),
        )
        return
    out.propose(
        _REMOVE_CONTAINER,
        target,
        rule,
        partial(_created_removal, ctx, c, policy, timeout_s, since, basis),
        due_at=due,
        key=f"RemoveContainer:{c.id}:CreatedNeverStarted",
        params=REMOVE_PARAMS,
    )


def _created_removal(
    ctx: PassContext, c: ContainerObs, policy: EffectivePolicy, timeout_s: float, since: datetime, basis: str
) -> tuple[str, dict[str, object]]:
    """The message and evidence of a due removal of a never-started container."""
    age_s = seconds(ctx.now - since)
    holds = f", releasing GPU(s) {', '.join(ctx.physical_gpus(c))}" if c.has_gpu else ""
    return (
        f"remove {c.name} (owner {c.owner}): created {fmt_duration(age_s)} ago and never started "
        f"(timeout {fmt_duration(timeout_s)}){holds}",
        _created_evidence(ctx, c, policy, timeout_s, since, basis),
    )


def _created_evidence(
    ctx: PassContext, c: ContainerObs, policy: EffectivePolicy, timeout_s: float, since: datetime, basis: str
) -> dict[str, object]:
    return {
        "created_at": iso(c.created_at),
        "age_basis": basis,
        "age_s": seconds(ctx.now - since),
        "timeout_s": timeout_s,
        "timeout_source": policy.created_container_timeout_s.source,
        **_discount_evidence(ctx, c, since),
        **gpu_evidence(ctx, c),
    }


def hold_discount_s(ctx: PassContext, mem: ContainerMemory | None, since: datetime) -> float:
    """The forward clock steps seen since the hold began (``since``), never more than the wall time
    since then (steps gathered while Docker was away may have come before this stop)."""
    if mem is None or not mem.hold_discount_s:
        return 0.0
    return min(mem.hold_discount_s, max(0.0, (ctx.now - since).total_seconds()))


def _discount_evidence(ctx: PassContext, c: ContainerObs, since: datetime) -> dict[str, object]:
    """The forward clock steps that did not count towards the hold, where there were any."""
    discount = hold_discount_s(ctx, ctx.cmem.get(c.id), since)
    return {"clock_step_discount_s": discount} if discount else {}


def stopped_hold(ctx: PassContext, out: Collector, c: ContainerObs, policy: EffectivePolicy) -> None:
    """Rule 2: remove an exited or dead container once its hold is over."""
    chosen = _shorter_hold(c, policy)
    if chosen is None:
        return  # not stopped, or both holds are "never"
    hold, rule = chosen
    if shielded(ctx, out, c, policy, rule, _EXEMPT_CLEANUP):
        return
    mem = ctx.cmem.get(c.id)
    restart_at = mem.stopped_by_restart_at if mem is not None else None
    finished_at = c.finished_at
    if restart_at is not None or finished_at is None:
        # (Most stopped containers have a FinishedAt and no restart's mark: both checks go on.)
        check = _kept_for_admin(ctx, c, rule, restart_at) or _finished_unknown(ctx, c, rule)
        if out.stopped(check) or finished_at is None:
            return
    if restart_at is not None:
        # (Read only here: most stopped containers carry no restart's mark.)
        restart_hold = ctx.glob.restart_stopped_hold_s.value
        if restart_hold is not None:
            hold = max(hold, restart_hold)
    # The longest hold a notice to the owner of this start named (the controller's stop's, a warning
    # before it), where it is longer than the policy's now (a policy reloaded since): the later
    # removal wins. (Most carry none.)
    promised = mem.promised_hold_s if mem is not None else None
    if promised is not None and not promised > hold:
        promised = None
    by_stop = mem is not None and mem.stopped_by_controller_at is not None
    # Forward wall-clock steps since it stopped are not hold time (controller.plan.clock). (``span``:
    # the same few holds are added to every stopped container's FinishedAt.)
    due = finished_at + span(
        (hold if promised is None else promised) + hold_discount_s(ctx, mem, finished_at)
    )
    if ctx.now < due:
        ago = fmt_duration(seconds(ctx.now - finished_at))
        out.defer(
            ctx.target(c),
            rule,
            _NOT_DUE,
            f"{c.name} stopped {ago} ago; removed when its {_hold_name(rule, restart_at)} of "
            f"{fmt_duration(hold)} ends"
            if promised is None
            else f"{c.name} stopped {ago} ago; removed when its "
            f"{_promised_hold(rule, restart_at, hold, promised, by_stop)} ends",
            due_at=due,
            evidence=_hold_evidence(ctx, c, policy, finished_at, hold, restart_at, promised),
        )
        return
    out.propose(
        _REMOVE_CONTAINER,
        ctx.target(c),
        rule,
        partial(_stopped_removal, ctx, c, policy, finished_at, rule, hold, restart_at, promised, by_stop),
        due_at=due,
        key=f"RemoveContainer:{c.id}:{iso(finished_at)}:{_RULE_VALUES[rule]}",
        params=REMOVE_PARAMS,
    )


def _stopped_removal(
    ctx: PassContext,
    c: ContainerObs,
    policy: EffectivePolicy,
    finished_at: datetime,
    rule: Reason,
    hold: float,
    restart_at: datetime | None,
    promised: float | None,
    by_stop: bool,
) -> tuple[str, dict[str, object]]:
    """The message and evidence of a due removal of a stopped container (``promised``: the longer
    hold a notice to its owner named, or None; ``by_stop``: the controller stopped it)."""
    stopped_s = seconds(ctx.now - finished_at)
    return (
        f"remove {c.name} (owner {c.owner}): {c.state.value} for {fmt_duration(stopped_s)}, "
        f"past its {_hold_name(rule, restart_at)} of {fmt_duration(hold)}"
        if promised is None
        else f"remove {c.name} (owner {c.owner}): {c.state.value} for {fmt_duration(stopped_s)}, "
        f"past its {_promised_hold(rule, restart_at, hold, promised, by_stop)}",
        _hold_evidence(ctx, c, policy, finished_at, hold, restart_at, promised),
    )


def _hold_name(rule: Reason, restart_at: datetime | None) -> str:
    if restart_at is not None:
        return f"hold (stopped by the engine restart at {iso(restart_at)}, not by its owner)"
    return "GPU hold" if rule == _GPU_HOLD_EXPIRED else "hold"


def _promised_hold(
    rule: Reason, restart_at: datetime | None, hold: float, promised: float, by_stop: bool
) -> str:
    """The hold that keeps a stopped container, where a notice to its owner named a longer one than
    the policy's now: the notice of the controller's stop (``by_stop``, which names the longest
    hold its warnings named too), else a warning before a stop (its owner stopped it then, or the
    mark of the controller's stop was lost with the memory)."""
    by = "the notice of the controller's stop" if by_stop else "a notice to its owner"
    return (
        f"hold of {fmt_duration(promised)} promised by {by} "
        f"(its {_hold_name(rule, restart_at)} is {fmt_duration(hold)} now)"
    )


def _shorter_hold(c: ContainerObs, policy: EffectivePolicy) -> tuple[float, Reason] | None:
    """The hold that applies to a stopped container and its rule (None: not stopped, or never)."""
    if c.state not in STOPPED_STATES:
        return None
    # (``c.has_gpu`` written out: a property call costs several times its test.)
    gpu_hold_s = policy.gpu_hold_after_stop_s.value if c.gpu_refs or c.all_gpus else None
    hold_s = policy.container_hold_after_stop_s.value
    # The GPU hold wins a tie because it frees the scarce resource.
    if gpu_hold_s is not None and (hold_s is None or not hold_s < gpu_hold_s):
        return gpu_hold_s, _GPU_HOLD_EXPIRED
    if hold_s is not None:
        return hold_s, _STOPPED_HOLD_EXPIRED
    return None


def _kept_for_admin(ctx: PassContext, c: ContainerObs, rule: Reason, restart_at: datetime | None) -> Check:
    """Stopped by a restart with ``restartStoppedHold: null``: kept until an admin removes it."""
    if restart_at is None or ctx.glob.restart_stopped_hold_s.value is not None:
        return GO_ON
    return deferral(
        ctx.target(c),
        rule,
        DeferReason.NOT_DUE,
        f"{c.name} was stopped by the engine restart at {iso(restart_at)}, not by its owner; "
        f"kept until an admin removes it (restartStoppedHold: null)",
        evidence={"state": c.state.value, "exit_code": c.exit_code, **_restart_evidence(ctx, restart_at)},
    )


def _finished_unknown(ctx: PassContext, c: ContainerObs, rule: Reason) -> Check:
    if c.finished_at is not None:
        return GO_ON
    return deferral(
        ctx.target(c),
        rule,
        DeferReason.UNKNOWN_SIGNAL,
        f"{c.name} is {c.state.value} but its FinishedAt is unknown: its hold cannot be measured",
        evidence={"state": c.state.value},
    )


def _restart_evidence(ctx: PassContext, restart_at: datetime | None) -> dict[str, object]:
    """What the evidence says of the restart that stopped a container (nothing: none did)."""
    if restart_at is None:
        return {}
    restart_hold = ctx.glob.restart_stopped_hold_s
    return {
        "stopped_by_restart_at": iso(restart_at),
        "restart_stopped_hold_s": restart_hold.value,
        "restart_hold_source": restart_hold.source,
    }


def _hold_evidence(
    ctx: PassContext,
    c: ContainerObs,
    policy: EffectivePolicy,
    finished_at: datetime,
    hold: float,
    restart_at: datetime | None,
    promised: float | None,
) -> dict[str, object]:
    """``hold_s``: the policy's hold (the restart's where longer); ``promised_hold_s`` (only where
    it is longer, and so keeps the container): the longest hold a notice to its owner named
    (``stopped_by_controller_at``: null where the controller's stop is not known)."""
    evidence: dict[str, object] = {
        "state": c.state.value,
        "finished_at": iso(finished_at),
        "stopped_for_s": seconds(ctx.now - finished_at),
        "hold_s": hold,
        "gpu_hold_after_stop_s": policy.gpu_hold_after_stop_s.value if c.has_gpu else None,
        "gpu_hold_source": policy.gpu_hold_after_stop_s.source,
        "container_hold_after_stop_s": policy.container_hold_after_stop_s.value,
        "container_hold_source": policy.container_hold_after_stop_s.source,
        "exit_code": c.exit_code,
        **_restart_evidence(ctx, restart_at),
        **_discount_evidence(ctx, c, finished_at),
        **gpu_evidence(ctx, c),
    }
    if promised is not None:
        mem = ctx.cmem.get(c.id)
        evidence["promised_hold_s"] = promised
        evidence["stopped_by_controller_at"] = iso(mem.stopped_by_controller_at if mem is not None else None)
    return evidence
