"""When the next pass runs: the daemon loop's wake-up rule, shared with the forecast.

Pure. :func:`controller.loop.next_wait_s` sleeps by it; :mod:`controller.plan.forecast` simulates
the daemon's passes by the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

MIN_WAIT_S = 0.02
# Wake a little after a due time, not a hair before it (the planner compares with its own clock).
DUE_SLACK_S = 0.01
# Due times this close after the earliest one are one moment: the loop wakes after the last of
# them. Warnings sent side by side in one pass are delivered (and stamped) milliseconds apart, so
# the stops they lead to come due milliseconds apart; woken at the first, a pass would stop that
# container alone and the others one pass later (and the breaker would judge them apart).
DUE_GROUP_S = 0.5


def wait_s(due_times: Iterable[datetime | None], now: datetime, resync_s: float) -> float:
    """Seconds until the resync or the earliest *future* due time, whichever comes first.

    A due time already past belongs to something still deferred for another reason (a window not
    filled, a warning lead): re-planning at once would change nothing, so it waits for the resync.
    The earliest due time stands for every one within :data:`DUE_GROUP_S` after it: the pass comes
    after the last of them (never before any), so what came due together is acted on together.
    """
    wait = resync_s
    future = [d for d in due_times if d is not None and d > now]
    if future:
        first = min(future)
        if (first - now).total_seconds() < resync_s:
            last = max(d for d in future if d <= first + timedelta(seconds=DUE_GROUP_S))
            wait = (last - now).total_seconds() + DUE_SLACK_S
    return max(MIN_WAIT_S, wait)
