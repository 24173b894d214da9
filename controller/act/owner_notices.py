"""What people are told about an action: the owner's notice after a stop or a removal, the
not-logged-in fallback (the workspace's ``.ds01-alerts``), and the notification hook's documents.

Owns the choice of channel, not the delivery: terminals are :mod:`controller.act.notify`'s
:class:`~controller.act.notify.Notifier`, the alerts file :func:`~controller.act.notify.append_alert_file`,
the hook :class:`~controller.act.hook.NotificationHook` (queued, delivered off the action path).
Called by the real executor after an action succeeded, and by the dry-run executor (hook only, with
``dry_run=True``). Never raises: a notice that cannot be delivered never changes an action's outcome;
what became of it is returned for the action's event (``notice``).
"""

from __future__ import annotations

import pwd
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loguru import logger

from controller.act.hook import NotificationHook, hook_document
from controller.act.notify import Notifier, append_alert_file, format_alert_entry, outcome_notice, readable_by
from controller.act.sanitize import clean
from controller.plan.types import Action, ActionKind, Reason, WarnParams

_KIND = {
    ActionKind.WARN_OWNER: "warning",
    ActionKind.STOP_CONTAINER: "stop",
    ActionKind.REMOVE_CONTAINER: "removal",
    ActionKind.ALERT_ADMIN: "admin_alert",
}


def document_kind(action: Action) -> str | None:
    """The hook document's ``kind`` for an action, or None when the hook does not hear of it."""
    if action.kind is ActionKind.WARN_OWNER and action.reason is Reason.IDLE_EXEMPT_NOTICE:
        return "notice"
    return _KIND.get(action.kind)


def action_document(action: Action, *, at: datetime, kind: str | None = None) -> dict[str, Any] | None:
    """The hook's JSON document for ``action`` (without ``dry_run``); None for kinds it does not carry."""
    kind = kind or document_kind(action)
    if kind is None:
        return None
    t = action.target
    stop_at = action.params_as(WarnParams).stop_expected_at
    if kind in ("stop", "removal"):
        stop_at = at.astimezone(UTC).isoformat()
    return hook_document(
        kind=kind,
        owner=t.user,
        container=t.container,
        container_id=t.container_id,
        reason=action.reason.value,
        message=action.message,
        figures=action.evidence,
        stop_at=stop_at if isinstance(stop_at, str) else None,
        at=at.astimezone(UTC).isoformat(),
    )


class OwnerNotices:
    """The real executor's notices: terminals first, the alerts file when none took it, and the hook."""

    def __init__(
        self,
        notifier: Notifier,
        hook: NotificationHook | None,
        *,
        clock: Callable[[], datetime],
        events_log: Path | None = None,
    ) -> None:
        self._notifier = notifier
        self._hook = hook
        self._clock = clock
        # The notice names a command that reads it, for an owner who may (see readable_by).
        self._events_log = events_log

    def after(
        self,
        action: Action,
        workspace: str | None,
        *,
        removed: bool,
        was_running: bool,
        workspace_known: bool = False,
        workspace_mounted: bool | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """Tell the owner a stop (``was_running``) or a removal happened; what became of the notice.

        ``workspace_known``: ``workspace`` comes from an inspect of the container before it went,
        so None there means it had no ``/workspace`` mount (not that it could not be looked at).
        ``workspace_mounted``: that inspect's word on the mount, where it gave one (a volume whose
        path does not show is mounted all the same).
        ``at``: when the stop or removal happened, where that was before now (one a later pass
        recorded, after a restart); the notice shows it."""
        result: dict[str, Any] = {"terminals": 0}
        try:
            now = self._clock()
            self._submit(
                action, "removal" if removed and not was_running else "stop", at or now, removed=removed
            )
            user = action.target.user
            if not user or user == "unknown":
                result["skipped"] = "the owner is not known"
                return result
            text = outcome_notice(
                container=action.target.container or action.target.label(),
                removed=removed,
                was_running=was_running,
                why=action.message,
                at=at or now,
                kept=_kept(action),
                events_readable=self._events_readable(user),
                workspace_mounted=workspace_mounted
                if workspace_mounted is not None
                else (workspace is not None)
                if workspace_known
                else None,
            )
            result["terminals"] = self._notifier.notify(user, text, severity="STOPPED")
            alerts_file = self.fallback(user, text, "STOPPED", workspace, result["terminals"])
            if alerts_file is not None:
                result["alerts_file"] = alerts_file
        except Exception as exc:  # the action is done; its notice must not turn it into a failure
            logger.warning("notice after {}: {}", action.key, exc)
            result["error"] = clean(str(exc), 200)
        return result

    def _events_readable(self, user: str) -> bool | None:
        """Whether ``user`` may read the event log: the live file, or after a rotation the newest
        rotated one (the next live file is created with its mode)."""
        if self._events_log is None:
            return None
        from controller.act.event_files import log_files

        files = log_files(self._events_log)
        return readable_by(files[-1], user) if files else None

    def fallback(
        self, user: str, text: str, severity: str, workspace: str | None, delivered: int
    ) -> str | None:
        """Leave the notice in the workspace's alerts file when no terminal took it (DS01's fallback)."""
        if delivered > 0:
            return None
        if workspace is None:
            return "not written: the container has no /workspace mount"
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return f"not written: no such user {clean(user, 64)}"
        return append_alert_file(
            workspace,
            entry.pw_uid,
            entry.pw_gid,
            format_alert_entry(text, severity=severity, at=self._clock()),
        )

    def warned(self, action: Action) -> None:
        self._submit(action, None, self._clock())

    def alerted(self, action: Action) -> None:
        self._submit(action, "admin_alert", self._clock())

    def _submit(self, action: Action, kind: str | None, at: datetime, **extra: Any) -> None:
        if self._hook is None:
            return
        try:
            doc = action_document(action, at=at, kind=kind)
            if doc is not None:
                self._hook.submit({**doc, **extra})
        except Exception as exc:  # the hook is best effort; an action never fails because of it
            logger.warning("notification hook: {} not queued: {}", action.key, exc)


def _kept(action: Action) -> str:
    """What the planner says a stop keeps of the container, or that the stopped container is kept."""
    kept = action.evidence.get("kept_after_stop")
    return kept if isinstance(kept, str) and kept else "the stopped container"
