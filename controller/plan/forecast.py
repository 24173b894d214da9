"""The forecast: every pass the daemon would run from now until a later time, and what each does.

``forecast(snapshot, desired, memory, until=T, interval_s=...)`` runs the planner
(:func:`controller.plan.planner.plan`, its only entry point used here) at each time the daemon
would wake: the due times the planner itself produces (grouped and a hair after, as the loop
does) and the periodic resync. Between passes it carries the memory forward the way the real
executor records a *successful* outcome (a warning delivered: ``with_warning`` + ``with_done``;
any success clears the action's failure record), and changes the observed world only by what the
predicted actions do (a stopped container stays stopped, a removed one is gone, a killed process
is gone, a released ledger row is gone, a container's lowered limits stay lowered).

Everything else is held as observed now, and the forecast says so (:attr:`Forecast.assumptions`):
an idle container stays idle and a busy one busy (its CPU and network counters grow at the rate
measured now), GPU utilisation and keep-alive files are as read now (a keep-alive only ages), the
running time grows, and no container is created or started. A container whose activity rate is
not known now (no earlier reading and no running time) is not idle in the forecast: its idle rule
defers ``UnknownSignal``, as the daemon's would.

Called by ``ds01ctl plan --at``, ``plan --policy``, ``describe`` and ``get containers`` (NEXT).
Pure like the planner: no I/O, no clock reads, no logging. The number of simulated passes is
bounded (``max_passes``); a forecast cut short says so (:attr:`Forecast.truncated`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from controller.memory import ControllerMemory
from controller.plan import wake
from controller.plan.desired import DesiredState
from controller.plan.limits_update import after_update, still_needed
from controller.plan.planner import plan as plan_pass
from controller.plan.rules.allocations import row_of
from controller.plan.types import (
    Action,
    ActionKind,
    DeferReason,
    Deferred,
    Plan,
    ResourceUpdate,
    StopParams,
    own_record,
    warning_record,
)
from controller.snapshot import ContainerObs, ContainerState, GpuObs, Snapshot

DEFAULT_MAX_PASSES = 5000
# While nothing is pending, passes between due times only add activity samples; with the signals
# held, one every half maxSampleInterval (never more than this) keeps every idle streak unbroken.
MAX_QUIET_STRIDE_S = 3600.0
# Kinds that end a container's run: the "stop" of the forecast's per-container summary.
ENDING_KINDS = frozenset({ActionKind.STOP_CONTAINER, ActionKind.REMOVE_CONTAINER})
_NS_PER_S = 1_000_000_000
# Deferrals whose due time may already be past, or that wait for the next pass itself (a second
# sighting): the daemon re-plans at the next resync for them.
_RESYNC_PACED = frozenset(
    {
        DeferReason.WAITING_FOR_WINDOW,
        DeferReason.BUDGET_EXHAUSTED,
        DeferReason.BACKOFF,
        DeferReason.NEEDS_SECOND_SIGHTING,
    }
)


class PredictedAction(BaseModel):
    """One action the forecast predicts, with the pass that carries it out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pass_at: datetime = Field(description="The simulated pass that performs it (its message is as of then)")
    action: Action


class Forecast(BaseModel):
    """What the daemon is predicted to do from ``start_at`` until ``until``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    observed_at: datetime = Field(description="When the host was observed (the signals held)")
    start_at: datetime = Field(description="The first simulated pass")
    until: datetime
    interval_s: float = Field(description="The daemon's resync interval the forecast assumed")
    passes: int = Field(description="Passes simulated")
    max_passes: int
    truncated: bool = Field(description="The pass bound was hit before `until`: later actions are missing")
    last_pass_at: datetime = Field(description="The last simulated pass: how far the forecast looked")
    assumptions: tuple[str, ...]
    actions: tuple[PredictedAction, ...] = Field(description="Every predicted action, in time order")
    deferred: tuple[Deferred, ...] = Field(description="What the last simulated pass still defers")

    def for_container(self, container_id: str) -> list[PredictedAction]:
        return [p for p in self.actions if p.action.target.container_id == container_id]

    @property
    def reach(self) -> datetime:
        """How far it looked: ``until``, or the last simulated pass of a forecast cut short."""
        return self.last_pass_at if self.truncated else self.until

    def removal(self, container_id: str, by: datetime | None = None) -> PredictedAction | None:
        """The first predicted removal of this container (a removal, or a stop that removes), if
        any (and, with ``by``, not after that time)."""
        for p in self.for_container(container_id):
            a = p.action
            if a.kind == ActionKind.REMOVE_CONTAINER or (
                a.kind == ActionKind.STOP_CONTAINER and a.params_as(StopParams).remove
            ):
                return p if by is None or p.pass_at <= by else None
        return None

    def ending(self, container_id: str, by: datetime | None = None) -> PredictedAction | None:
        """The first predicted stop or removal of this container, if any (and, with ``by``, not
        after that time)."""
        for p in self.for_container(container_id):
            if p.action.kind in ENDING_KINDS:
                return p if by is None or p.pass_at <= by else None
        return None


@dataclass(frozen=True, slots=True)
class _Rate:
    cpu_ns_per_s: float | None
    net_bytes_per_s: float | None


def forecast(
    snapshot: Snapshot,
    desired: DesiredState,
    memory: ControllerMemory,
    *,
    until: datetime,
    interval_s: float,
    start_at: datetime | None = None,
    max_passes: int = DEFAULT_MAX_PASSES,
) -> Forecast:
    """Simulate the daemon's passes from ``start_at`` (default: the observation) until ``until``."""
    t0 = snapshot.observed_at
    now = max(start_at or t0, t0)
    rates = _rates(snapshot, memory)
    stride_s = _quiet_stride_s(desired, interval_s)
    world = snapshot
    mem = memory
    predicted: list[PredictedAction] = []
    last: Plan | None = None
    passes = 0
    last_at = now
    truncated = False
    while True:
        if passes >= max_passes:
            truncated = True  # a pass still due at ``now`` (not after ``until``) was not run
            break
        last_at = now
        observed = _held(world, rates, t0, now)
        last = plan_pass(observed, desired, mem, now)
        passes += 1
        mem = last.memory
        for action in sorted(last.actions, key=lambda a: (a.due_at, a.key)):
            predicted.append(PredictedAction(pass_at=now, action=action))
            mem = _recorded(mem, action, now)
            world = _applied(world, action, now)
        nxt = now + timedelta(seconds=_wait_s(last, now, interval_s, stride_s))
        if nxt > until:
            break
        now = nxt
    return Forecast(
        observed_at=t0,
        start_at=max(start_at or t0, t0),
        until=until,
        interval_s=interval_s,
        passes=passes,
        max_passes=max_passes,
        truncated=truncated,
        last_pass_at=last_at,
        assumptions=_assumptions(snapshot, rates, interval_s, stride_s, truncated, max_passes, last_at),
        actions=tuple(predicted),
        deferred=last.deferred if last is not None else (),
    )


# --- when the next pass runs -------------------------------------------------------------------


def _quiet_stride_s(desired: DesiredState, interval_s: float) -> float:
    max_gap_s = desired.global_policy.max_sample_interval_s.value
    return max(interval_s, min(max_gap_s / 2, MAX_QUIET_STRIDE_S))


def _wait_s(the_plan: Plan, now: datetime, interval_s: float, stride_s: float) -> float:
    """The loop's rule (the earliest future due time, grouped, else the resync); while nothing is
    pending a resync adds only a held sample, so the forecast strides over them."""
    busy = bool(the_plan.actions) or any(
        d.why in _RESYNC_PACED or (d.due_at is not None and d.due_at <= now) for d in the_plan.deferred
    )
    resync_s = interval_s if busy else stride_s
    return wake.wait_s((d.due_at for d in the_plan.deferred), now, resync_s)


# --- the held world ----------------------------------------------------------------------------


def _rates(snapshot: Snapshot, memory: ControllerMemory) -> dict[str, _Rate]:
    """Each running container's CPU and network rate now: from the daemon's last sample of this
    start when there is one, else the average since the start; ``None`` when neither is known."""
    out: dict[str, _Rate] = {}
    for c in snapshot.containers:
        s = c.signals
        if s is None or c.state != ContainerState.RUNNING:
            continue
        cm = memory.containers.get(c.id)
        # The latest sample before this reading: the memory may already hold this observation's own
        # sample (the daemon's last pass, read back with its memory), which gives no rate.
        prev = None
        if cm is not None and cm.started_at == c.started_at:
            prev = next((x for x in reversed(cm.samples) if x.at < s.read_at), None)
        span_s = (s.read_at - prev.at).total_seconds() if prev is not None else 0.0
        cpu: float | None = None
        net: float | None = None
        if prev is not None and span_s > 0:
            if s.cpu_usage_ns is not None and prev.cpu_usage_ns is not None:
                cpu = max(0.0, (s.cpu_usage_ns - prev.cpu_usage_ns) / span_s)
            if s.net_bytes is not None and prev.net_bytes is not None:
                net = max(0.0, (s.net_bytes - prev.net_bytes) / span_s)
        ran_s = c.running_for_s
        if cpu is None and s.cpu_usage_ns is not None and ran_s:
            cpu = s.cpu_usage_ns / ran_s
        if net is None and s.net_bytes is not None and ran_s:
            net = s.net_bytes / ran_s
        out[c.id] = _Rate(cpu, net)
    return out


def _held(world: Snapshot, rates: dict[str, _Rate], t0: datetime, now: datetime) -> Snapshot:
    """The world as a pass at ``now`` would observe it, the signals held as they were at ``t0``."""
    dt_s = (now - t0).total_seconds()
    if dt_s <= 0:
        return world
    containers = tuple(_aged(c, rates.get(c.id), dt_s, now) for c in world.containers)
    mono = world.observed_monotonic_s
    return world.model_copy(
        update={
            "observed_at": now,
            "containers": containers,
            "observed_monotonic_s": mono + dt_s if mono is not None else None,
        }
    )


def _aged(c: ContainerObs, rate: _Rate | None, dt_s: float, now: datetime) -> ContainerObs:
    if c.state != ContainerState.RUNNING:
        return c
    update: dict[str, object] = {}
    if c.running_for_s is not None:
        update["running_for_s"] = c.running_for_s + dt_s
    s = c.signals
    if s is not None:
        sig: dict[str, object] = {"read_at": now}
        if rate is None or rate.cpu_ns_per_s is None:
            sig |= {"cpu_usage_ns": None, "cpu_unknown": s.cpu_unknown or "forecast: no CPU rate known now"}
        elif s.cpu_usage_ns is not None:
            sig["cpu_usage_ns"] = s.cpu_usage_ns + round(rate.cpu_ns_per_s * dt_s)
        if rate is None or rate.net_bytes_per_s is None:
            sig |= {"net_bytes": None, "net_unknown": s.net_unknown or "forecast: no network rate known now"}
        elif s.net_bytes is not None:
            sig["net_bytes"] = s.net_bytes + round(rate.net_bytes_per_s * dt_s)
        update["signals"] = s.model_copy(update=sig)  # slotted: a plain copy (controller.snapshot)
    return c.model_copy(update=update)


# --- the outcomes, as the executor records a success ----------------------------------------


def _recorded(mem: ControllerMemory, action: Action, at: datetime) -> ControllerMemory:
    """Memory after ``action`` succeeded at ``at``, recorded as ``RealExecutor`` does."""
    if action.key in mem.attempts:
        attempts = dict(mem.attempts)
        del attempts[action.key]
        mem = mem.model_copy(update={"attempts": attempts})
    mem = warning_record(mem, action, at)
    if action.kind in (ActionKind.WARN_OWNER, ActionKind.ALERT_ADMIN, ActionKind.RESET_GPU):
        mem = mem.with_done(action.key, at)
    # The controller's own stops and removals, which its breakers do not count again.
    removed = action.kind == ActionKind.REMOVE_CONTAINER or action.params_as(StopParams).remove
    return own_record(mem, action, at, removed=removed)


def _applied(world: Snapshot, action: Action, at: datetime) -> Snapshot:
    """The world after ``action`` succeeded: what it stopped, removed, killed or released is so, and
    the limits it lowered are lowered (the body the executor's ``docker update`` sends)."""
    t = action.target
    kind = action.kind
    if kind == ActionKind.STOP_CONTAINER and t.container_id:
        if action.params_as(StopParams).remove:
            return _without_container(world, t.container_id)
        return _with_stopped(world, t.container_id, at)
    if kind == ActionKind.REMOVE_CONTAINER and t.container_id:
        return _without_container(world, t.container_id)
    if kind == ActionKind.UPDATE_RESOURCES and t.container_id:
        return _with_limits_lowered(world, t.container_id, action.params_as(ResourceUpdate))
    if kind == ActionKind.RESET_GPU and t.gpu is not None:
        return _released(world, {t.gpu})
    if kind == ActionKind.KILL_PROCESS and t.pid is not None:
        return _without_pids(world, {t.pid})
    if kind == ActionKind.RELEASE_ALLOCATION and t.ledger_entry is not None:
        row = t.ledger_entry
        # The row as the planner named it (a JSON dump would print the time otherwise: never equal).
        entries = tuple(e for e in world.ledger.entries if row_of(e) != row)
        return world.model_copy(update={"ledger": world.ledger.model_copy(update={"entries": entries})})
    return world


def _with_limits_lowered(world: Snapshot, container_id: str, wanted: ResourceUpdate) -> Snapshot:
    def lowered(c: ContainerObs) -> ContainerObs:
        body = still_needed(wanted, c.limits)
        return c.model_copy(update={"limits": after_update(c.limits, body)}) if body else c

    containers = tuple(lowered(c) if c.id == container_id else c for c in world.containers)
    return world.model_copy(update={"containers": containers})


def _with_stopped(world: Snapshot, container_id: str, at: datetime) -> Snapshot:
    containers = tuple(
        c.model_copy(
            update={
                "state": ContainerState.EXITED,
                "finished_at": at,
                "pid": None,
                "signals": None,
                "running_for_s": None,
                "exit_code": 0,
            }
        )
        if c.id == container_id
        else c
        for c in world.containers
    )
    after = _without_pids(world.model_copy(update={"containers": containers}), _pids_of(world, container_id))
    return _released(after, _gpus_of(world, container_id))


def _without_container(world: Snapshot, container_id: str) -> Snapshot:
    containers = tuple(c for c in world.containers if c.id != container_id)
    after = _without_pids(world.model_copy(update={"containers": containers}), _pids_of(world, container_id))
    return _released(after, _gpus_of(world, container_id))


def _gpus_of(world: Snapshot, container_id: str) -> set[str]:
    return {u for c in world.containers if c.id == container_id for u in c.gpu_uuids}


def _released(world: Snapshot, uuids: set[str]) -> Snapshot:
    """GPUs (full or MIG, by UUID) that no process uses any more hold no memory: a context is freed
    when its last process exits, and a reset frees all (a leak is not forecast)."""
    if not uuids:
        return world

    def free(d: Any) -> Any:
        return d.model_copy(update={"memory_used_bytes": 0}) if d.uuid in uuids and not d.processes else d

    gpus = tuple(
        free(g).model_copy(update={"mig_devices": tuple(free(m) for m in g.mig_devices)}) for g in world.gpus
    )
    return world.model_copy(update={"gpus": gpus})


def _pids_of(world: Snapshot, container_id: str) -> set[int]:
    return {p.pid for p in world.processes if p.container_id == container_id}


def _without_pids(world: Snapshot, pids: set[int]) -> Snapshot:
    """The GPU processes ``pids`` gone, and the GPU memory they held freed."""
    if not pids:
        return world
    processes = tuple(p for p in world.processes if p.pid not in pids)
    return world.model_copy(
        update={"processes": processes, "gpus": tuple(_gpu_without(g, pids) for g in world.gpus)}
    )


def _gpu_without(g: GpuObs, pids: set[int]) -> GpuObs:
    """``g`` once ``pids`` exited cleanly: their memory freed, and a device left with no process holds
    none (the driver frees a context when its last process exits; a leak is not forecast)."""
    migs = tuple(
        m.model_copy(
            update={
                "processes": (left := tuple(p for p in m.processes if p.pid not in pids)),
                "memory_used_bytes": _freed(m.memory_used_bytes, m.processes, left),
            }
        )
        for m in g.mig_devices
    )
    left = tuple(p for p in g.processes if p.pid not in pids)
    return g.model_copy(
        update={
            "processes": left,
            "memory_used_bytes": _freed(g.memory_used_bytes, g.processes, left),
            "mig_devices": migs,
        }
    )


def _freed(used: int | None, before: Sequence[Any], left: Sequence[Any]) -> int | None:
    if used is None or len(left) == len(before):
        return used
    if not left:
        return 0
    return _minus(used, (p for p in before if p not in left))


def _minus(used: int | None, gone: Iterable[object]) -> int | None:
    if used is None:
        return None
    freed = sum(getattr(p, "used_memory_bytes", None) or 0 for p in gone)
    return max(0, used - freed)


# --- what the forecast assumes -----------------------------------------------------------------


def _assumptions(
    snapshot: Snapshot,
    rates: dict[str, _Rate],
    interval_s: float,
    stride_s: float,
    truncated: bool,
    max_passes: int,
    last_at: datetime,
) -> tuple[str, ...]:
    out = [
        "signals held as observed: an idle container stays idle, a busy one busy (CPU and network grow "
        "at the rate measured now), GPU utilisation as read now; keep-alive files are not touched again",
        "no container is created, started or restarted; a stopped container stays stopped",
        "every predicted action succeeds when its pass runs, and takes no time",
        f"passes at the planner's due times and the resync every {interval_s:g}s (with nothing pending, "
        f"the forecast samples every {stride_s:g}s: with the signals held, those passes change nothing else)",
    ]
    unknown = sorted(
        c.name
        for c in snapshot.containers
        if c.id in rates and (rates[c.id].cpu_ns_per_s is None or rates[c.id].net_bytes_per_s is None)
    )
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        out.append(f"activity rate unknown now for {shown}: not idle in the forecast (unknown is not idle)")
    if truncated:
        out.append(
            f"stopped after {max_passes} simulated passes at {last_at.isoformat()}: later actions are missing"
        )
    return tuple(out)


# --- comparing two forecasts ---------------------------------------------------------------------


class Change(StrEnum):
    SOONER = "sooner"
    LATER = "later"
    NEWLY = "newly"
    NO_LONGER = "no-longer"


class StopChange(BaseModel):
    """How one container's predicted stop (or removal) differs under a candidate policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    container: str
    container_id: str
    user: str | None
    change: Change
    current_at: datetime | None = Field(
        description="When the current policy stops it; None: not before the horizon"
    )
    candidate_at: datetime | None
    current_reason: str | None
    candidate_reason: str | None
    current_action: str | None = Field(
        default=None, description="stop, stop and remove, or remove (an exited container); None: no such step"
    )
    candidate_action: str | None = None
    what: str = Field(
        default="stop",
        description="stop: when it is stopped (or removed, not running) moves; removal: both stop it at "
        "the same pass, and when it is removed moves",
    )


def ending_action(p: PredictedAction | None) -> str | None:
    """What the ending does: ``stop``, ``stop and remove`` (``removeAfterIdleStop``) or ``remove``."""
    if p is None:
        return None
    if p.action.kind == ActionKind.REMOVE_CONTAINER:
        return "remove"
    return "stop and remove" if p.action.params_as(StopParams).remove else "stop"


def compare(
    current: Forecast, candidate: Forecast, containers: Sequence[ContainerObs]
) -> tuple[StopChange, ...]:
    """Containers the candidate stops sooner, later, newly or no longer (by the pass that does it);
    one both stop at the same pass, by the pass that removes it (``what``: ``removal``).

    Only as far as both forecasts looked: when one was cut short, a stop the other predicts after
    that point is no difference (the shorter one simply did not get there).
    """
    reach = min(current.reach, candidate.reach)
    out: list[StopChange] = []
    for c in sorted(containers, key=lambda x: (x.name, x.id)):
        a = current.ending(c.id, by=reach)
        b = candidate.ending(c.id, by=reach)
        what = "stop"
        if a is not None and b is not None and a.pass_at == b.pass_at:
            # Stopped alike: one may remove it with the stop, the other keep it (removeAfterIdleStop),
            # or the two remove it after different holds.
            a, b, what = current.removal(c.id, by=reach), candidate.removal(c.id, by=reach), "removal"
        if a is None and b is None:
            continue
        if a is not None and b is not None:
            if a.pass_at == b.pass_at:
                continue
            change = Change.SOONER if b.pass_at < a.pass_at else Change.LATER
        else:
            change = Change.NEWLY if a is None else Change.NO_LONGER
        out.append(
            StopChange(
                container=c.name,
                container_id=c.id,
                user=c.owner,
                change=change,
                current_at=a.pass_at if a else None,
                candidate_at=b.pass_at if b else None,
                current_reason=a.action.reason.value if a else None,
                candidate_reason=b.action.reason.value if b else None,
                current_action=ending_action(a),
                candidate_action=ending_action(b),
                what=what,
            )
        )
    return tuple(out)


__all__ = ["Change", "Forecast", "PredictedAction", "StopChange", "compare", "forecast"]
