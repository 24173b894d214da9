"""The hoarding mark of ``ds01ctl get gpus``: GPU memory held at near-zero utilisation for the window.

Reads the daemon's recent ``controller.usage_sample`` rounds from the end of the event log (only the
window's worth) and judges them with the current observation by :func:`controller.usage.hoarding_now`,
the rule ``ds01ctl report`` uses. Without samples the mark is unknown (``null``), never "not hoarding".
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.cli.view import View

# Rounds are a few lines each; this bounds the tail read whatever the log holds.
MAX_SAMPLE_LINES = 2000


def hoarding_marks(view: View) -> dict[str, bool | None]:
    """Device UUID -> hoarding now, not, or not known; empty when nothing can be judged."""
    from controller.act.events import EventFilter, parse_timestamp
    from controller.act.usage_recorder import sample_interval_s
    from controller.cli.report import hoarding_policy
    from controller.usage import (
        MAX_GAP_INTERVALS,
        USAGE_EVENT,
        BadSample,
        UsageRound,
        build_round,
        decode_round,
        hoarding_now,
    )

    policy_set = getattr(view.desired, "_policy_set", None)
    every_s = sample_interval_s(policy_set) if policy_set is not None else 300.0
    current = build_round(view.snapshot, view.memory, {}, every_s)
    if current is None or view.event_source is None:
        return {}
    policy = hoarding_policy(policy_set)
    since = view.snapshot.observed_at - timedelta(seconds=policy.window_s + every_s * MAX_GAP_INTERVALS)
    try:
        events = view.event_source.tail(
            MAX_SAMPLE_LINES, EventFilter(event_types=(USAGE_EVENT,), since=since)
        )
    except OSError:
        events = []
    parts: dict[datetime, list[UsageRound]] = {}
    for e in events:
        at = parse_timestamp(e.get("timestamp"))
        if at is None:
            continue
        try:
            part = decode_round(e.get("details"), at)
        except BadSample:
            continue  # a damaged or hostile line judges nothing
        parts.setdefault(part.at, []).append(part)
    rounds = [
        UsageRound(at, ps[0].every_s, tuple(d for p in ps for d in p.devices)) for at, ps in parts.items()
    ]
    return hoarding_now(rounds, current, policy)
