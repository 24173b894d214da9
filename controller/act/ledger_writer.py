"""Releasing one row of the GPU allocation ledger (the ReleaseAllocation action).

The file format, the lock and the atomic rewrite belong to :mod:`controller.observe.ledger`; this
module only decides *which* row goes: exactly the row the plan saw, matched on every field
(``gpu``, ``container``, ``user`` and ``allocated_at`` compared as instants). A row that changed
since the plan (re-allocated, another user) therefore stays. When no row matches, the file is not
rewritten at all and the release is "already done".

Called by the real executor. Errors surface as the act layer's own error classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from controller.act.errors import PermanentError, TransientError
from controller.observe.ledger import Allocation, LedgerError, LedgerLockTimeout, locked_update

ROW_FIELDS = ("gpu", "container", "user", "allocated_at")


class _NothingToRemove(Exception):
    """Raised inside the update to leave the ledger file untouched."""


def _instant(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def row_matches(allocation: Allocation, entry: Mapping[str, str]) -> bool:
    """True when ``allocation`` is the row ``entry`` describes, on every field."""
    if (allocation.gpu, allocation.container, allocation.user) != (
        entry.get("gpu"),
        entry.get("container"),
        entry.get("user"),
    ):
        return False
    wanted = _instant(str(entry.get("allocated_at", "")))
    return wanted is not None and wanted == allocation.allocated_at


def release_row(path: Path, entry: Mapping[str, str], *, timeout_s: float = 5.0) -> bool:
    """Remove the rows equal to ``entry``; True if any was removed, False if none was there.

    Raises :class:`PermanentError` for an entry that does not name every field or a ledger that
    cannot be parsed, :class:`TransientError` when the lock stays taken past ``timeout_s``.
    """
    missing = [f for f in ROW_FIELDS if not isinstance(entry.get(f), str)]
    if missing:
        raise PermanentError(f"the ledger row to release lacks {', '.join(missing)}; refusing to guess")
    if _instant(entry["allocated_at"]) is None:
        raise PermanentError(
            f"the ledger row's allocated_at {entry['allocated_at']!r} is not an ISO time with offset"
        )

    def drop(current: list[Allocation]) -> list[Allocation]:
        kept = [a for a in current if not row_matches(a, entry)]
        if len(kept) == len(current):
            raise _NothingToRemove
        return kept

    try:
        locked_update(path, drop, lock_timeout_s=timeout_s)
    except _NothingToRemove:
        return False
    except LedgerLockTimeout as exc:
        raise TransientError(str(exc)) from exc
    except LedgerError as exc:
        raise PermanentError(str(exc)) from exc
    except OSError as exc:
        raise PermanentError(f"{path}: cannot rewrite the ledger ({exc.strerror or exc})") from exc
    return True
