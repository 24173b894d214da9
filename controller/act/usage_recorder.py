"""The daemon's usage record: a ``controller.usage_sample`` round every ``reporting.sampleInterval``,
and the live count of reclaimed GPU-seconds (``ds01_gpu_seconds_reclaimed_total``).

Called by the loop once at the end of every pass (:meth:`UsageRecorder.after_pass`), in dry-run too
(samples describe the host; a dry run reclaims nothing, so nothing is counted). Must not decide or
change anything, and never raises: a sample that cannot be written is a lost sample, not a failed
pass. The format and the counting rules live in :mod:`controller.usage` (pure), shared with
``ds01ctl report`` so the report and the metric agree on what "reclaimed" means.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from loguru import logger

from controller.act.events import EventLog
from controller.act.executor import event_reason
from controller.act.report import ActionOutcome, Outcome
from controller.memory import ControllerMemory
from controller.plan.types import ActionKind
from controller.snapshot import Domain, Snapshot
from controller.usage import (
    MAX_GAP_INTERVALS,
    USAGE_EVENT,
    ReclaimTracker,
    build_round,
    encode_round,
    usable_devices,
)

if TYPE_CHECKING:
    from desired_state.policy_set import PolicySet

DEFAULT_SAMPLE_INTERVAL_S = 300.0
# A pass that lands a little before the interval is up still samples (passes are ~30 s apart).
_DUE_SLACK_S = 1.0
_FREEING_KINDS = (ActionKind.STOP_CONTAINER, ActionKind.REMOVE_CONTAINER)


def group_of(policy: PolicySet, owner: str) -> str:
    group, _how = policy.group_of(owner)
    if group is not None:
        return group.metadata.name
    return policy.default_group_name or "-"


def sample_interval_s(policy: PolicySet) -> float:
    from desired_state.resolve import global_value

    try:
        value = global_value(policy, ("reporting", "sample_interval")).value
    except (AssertionError, AttributeError):
        return DEFAULT_SAMPLE_INTERVAL_S
    return float(value) if value else DEFAULT_SAMPLE_INTERVAL_S


def _devices_of(snapshot: Snapshot) -> tuple[dict[str, float], dict[str, tuple[str, ...]], set[str]]:
    """Device weights, each container's devices (a whole MIG GPU: all its devices), held devices."""
    weights = {uuid: weight for _g, uuid, _used, _util, weight in usable_devices(snapshot.gpus)}
    parts = {g.uuid: tuple(m.uuid for m in g.mig_devices) for g in snapshot.gpus if g.mig_enabled}
    by_container: dict[str, tuple[str, ...]] = {}
    held: set[str] = set()
    for c in snapshot.containers:
        devs: list[str] = []
        for uuid in c.gpu_uuids:
            devs.extend(parts.get(uuid, (uuid,)))
        by_container[c.id] = tuple(d for d in devs if d in weights)
        held.update(by_container[c.id])
    return weights, by_container, held


class UsageRecorder:
    """Per daemon process: when the last round was written, and the devices being counted as reclaimed."""

    def __init__(self) -> None:
        self.last_round_at: datetime | None = None
        self.tracker: ReclaimTracker | None = None

    def after_pass(
        self,
        controller: Any,
        snapshot: Snapshot,
        memory: ControllerMemory,
        outcomes: Sequence[ActionOutcome],
        now: datetime,
    ) -> int:
        """Count reclaimed time, write a round when one is due; returns the lines written.

        ``controller``: the loop's Controller (its event log, policy holder, metrics and settings).
        """
        try:
            return self.record(
                controller.event_log,
                controller.policy.current,
                snapshot,
                memory,
                outcomes,
                now,
                controller.metrics,
                dry_run=bool(controller.settings.dry_run),
            )
        except Exception as exc:  # a lost sample must never fail the pass
            logger.opt(exception=exc).warning("usage sample not recorded: {}", exc)
            return 0

    def record(
        self,
        event_log: EventLog,
        policy: PolicySet,
        snapshot: Snapshot,
        memory: ControllerMemory,
        outcomes: Sequence[ActionOutcome],
        now: datetime,
        metrics: Any = None,
        *,
        dry_run: bool = False,
    ) -> int:
        """:meth:`after_pass` with its parts named (tests); raises what it meets."""
        every_s = sample_interval_s(policy)
        if self.tracker is None:
            self.tracker = ReclaimTracker(max_gap_s=every_s * MAX_GAP_INTERVALS)
        self._count_reclaimed(policy, snapshot, outcomes, now, metrics, dry_run)
        if (
            self.last_round_at is not None
            and (now - self.last_round_at).total_seconds() < every_s - _DUE_SLACK_S
        ):
            return 0
        owners = {c.owner for c in snapshot.containers}
        r = build_round(snapshot, memory, {o: group_of(policy, o) for o in owners}, every_s)
        if r is None:
            return 0  # Docker or NVML unreadable: no sample (unknown is neither free nor held)
        lines = encode_round(r)
        for details in lines:
            event_log.write(USAGE_EVENT, user=None, details=details)
        self.last_round_at = now
        return len(lines)

    def _count_reclaimed(
        self,
        policy: PolicySet,
        snapshot: Snapshot,
        outcomes: Sequence[ActionOutcome],
        now: datetime,
        metrics: Any,
        dry_run: bool,
    ) -> None:
        assert self.tracker is not None
        known = snapshot.domain_ok(Domain.DOCKER) and snapshot.domain_ok(Domain.NVML)
        weights, by_container, held = _devices_of(snapshot) if known else ({}, {}, set())
        listed = set(weights)
        for credit in self.tracker.observe(snapshot.observed_at, listed - held, listed):
            if metrics is not None:
                metrics.add_gpu_seconds_reclaimed(credit.gpu_seconds, credit.tag.reason)
        if dry_run or not known:
            return
        for o in outcomes:
            if o.kind not in _FREEING_KINDS or o.outcome is not Outcome.DONE:
                continue
            devices = by_container.get(o.target.container_id or "", ())
            if not devices:
                continue
            owner = o.target.user or "unknown"
            self.tracker.freed(
                ((d, weights[d]) for d in devices),
                now,
                user=owner,
                group=group_of(policy, owner),
                reason=event_reason(o.reason),
                container=o.target.container or o.target.container_id or "?",
            )
