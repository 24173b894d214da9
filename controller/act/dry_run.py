"""The dry-run executor: reports what the real one would do, and touches nothing on the host.

A separate class rather than a flag threaded through every side-effecting function, so no code
path of the real executor can run by mistake in dry-run.

What it does and does not change:

- **No Docker call, no signal, no reset, no ledger write, no terminal notice.** It does not even
  hold a Docker client. The notification hook hears of each action once, with ``dry_run: true``,
  and only when the admin asked for dry-run notices (``notifications.dryRunNotices``).
- **Events** go only to the event log the admin configured (``controller.dry_run``), once per
  action key for the life of the process, so a daemon in dry-run does not repeat the same line
  every pass. Without an event log nothing is written.
- **Memory**: the outcome records (done keys, warnings sent, failures and back-off) are kept
  exactly as they were in ``memory``, so switching to real mode later still warns before it
  stops and does not believe anything was done. Observation memory from ``plan.memory``
  (activity samples, idle-since, process sightings, the breaker) *is* kept: it describes the
  host, not something the controller did to it.

Called by the daemon loop when ``--dry-run`` is set, and by ``ds01ctl`` tests of a plan.
"""

from __future__ import annotations

from datetime import datetime

from controller.act.events import EventLog, EventType
from controller.act.hook import NotificationHook
from controller.act.owner_notices import action_document
from controller.act.report import ActionOutcome, ExecutionReport, Outcome
from controller.memory import ControllerMemory
from controller.plan.types import Action, Plan, StopParams


def _would(action: Action) -> str:
    t = action.target
    what = {
        "StopContainer": f"stop container {t.label()}"
        + (" and remove it" if action.params_as(StopParams).remove else ""),
        "RemoveContainer": f"remove container {t.label()}",
        "WarnOwner": f"warn {t.user or 'the owner'} about {t.label()}",
        "ReleaseAllocation": f"release ledger row for {t.label()} on {t.gpu or '?'}",
        "KillProcess": f"signal pid {t.pid} (TERM, then KILL)",
        "ResetGpu": f"reset GPU {t.gpu}",
        "AlertAdmin": "alert the admin",
        "UpdateResources": f"lower the limits of container {t.label()} in place (docker update)",
    }.get(action.kind.value, action.kind.value)
    return f"would {what}: {action.message}"


def keep_outcome_state(observed: ControllerMemory, before: ControllerMemory) -> ControllerMemory:
    """``observed`` with the outcome records (done, attempts, warnings) taken from ``before``."""
    containers = {}
    for cid, cm in observed.containers.items():
        previous = before.containers.get(cid)
        warnings = dict(previous.warnings) if previous is not None else {}
        containers[cid] = cm if cm.warnings == warnings else cm.model_copy(update={"warnings": warnings})
    return observed.model_copy(
        update={"containers": containers, "done": dict(before.done), "attempts": dict(before.attempts)}
    )


class DryRunExecutor:
    """Records every action as ``dry_run``; changes nothing on the host."""

    def __init__(self, event_log: EventLog | None = None, hook: NotificationHook | None = None) -> None:
        self._event_log = event_log
        self._hook = hook
        self._reported: set[str] = set()

    def execute(self, plan: Plan, memory: ControllerMemory, now: datetime) -> ExecutionReport:
        outcomes = []
        # Forget keys no longer planned: bounded memory, and an action that comes back is reported again.
        self._reported &= {a.key for a in plan.actions}
        for action in plan.actions:
            detail = _would(action)
            outcomes.append(
                ActionOutcome(
                    key=action.key,
                    kind=action.kind,
                    reason=action.reason,
                    target=action.target,
                    outcome=Outcome.DRY_RUN,
                    detail=detail,
                )
            )
            if action.key not in self._reported and self._hook is not None:
                doc = action_document(action, at=now)
                if doc is not None:  # submit() drops it unless the admin asked for dry-run notices
                    self._hook.submit(doc, dry_run=True)
            if self._event_log is None and self._hook is not None:
                self._reported.add(action.key)
            if self._event_log is not None and action.key not in self._reported:
                self._reported.add(action.key)
                self._event_log.write(
                    EventType.DRY_RUN,
                    user=action.target.user,
                    details={
                        "key": action.key,
                        "kind": action.kind,
                        "reason": action.reason,
                        "would": detail,
                        "container": action.target.container,
                        "container_id": action.target.container_id,
                        "pid": action.target.pid,
                        "gpu": action.target.gpu,
                        "due_at": action.due_at,
                    },
                )
        return ExecutionReport(
            outcomes=tuple(outcomes), memory=keep_outcome_state(plan.memory, memory), dry_run=True
        )
