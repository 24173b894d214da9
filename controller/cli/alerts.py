"""``ds01ctl get alerts``: the admin alerts open now, with their evidence.

Open means what :mod:`controller.plan.open_alerts` says (raised by the current observation and not
cleared; a tripped breaker until ``ds01ctl breaker reset``), computed the way the daemon computes
its ``ds01_admin_alerts_open`` gauge: from a fresh observation, the installed policy and the
daemon's memory. Output as every ``get``: a table (``-o wide`` adds the key and the evidence),
``-o json|yaml`` (an ``AlertList``), ``-o name`` (``alert/<key>``), ``--no-headers``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from controller.cli.errors import CliError
from controller.settings import Settings


def cmd_get_alerts(args: argparse.Namespace, settings: Settings, style: Any) -> int:
    from controller.cli.gather import GatherOptions, as_next_pass, gather, read_memory
    from controller.cli.render import clean
    from controller.memory import ControllerMemory
    from controller.plan.open_alerts import open_alerts
    from controller.plan.planner import plan as make_plan

    for flag, value in (
        ("--container", args.container),
        ("--kind", args.event_kinds),
        ("--since", args.since),
    ):
        if value:
            raise CliError(f"{flag} only applies to 'get events'")
    if args.user:
        # Taken and ignored, it would list every user's alerts as if they were this one's.
        raise CliError("--user only applies to 'get events'; use --owner")
    if args.selector or args.sort_by or args.watch or args.show_all or args.name:
        raise CliError("get alerts takes no name, -l, --sort-by, --all or -w (it lists every open alert)")
    view = gather(settings, GatherOptions(plan=False))
    if view.desired is None:
        raise CliError("no policy is loaded, so no alert can be evaluated")
    memory, unreadable = read_memory(settings.state_dir)
    if memory is not None:
        unreadable = None  # (a note about a state not yet written: nothing is unknown)
    memory = as_next_pass(settings, memory) if memory is not None else ControllerMemory()
    the_plan = make_plan(view.snapshot, view.desired, memory, view.now)
    alerts = open_alerts(memory, the_plan)
    items = [alert_item(a, view.now) for a in alerts if not args.owner or _owner(a) == args.owner]
    others = len(alerts) - len(items)
    for note in view.notes:
        print(f"warning: {clean(note, 600)}", file=sys.stderr)
    sys.stdout.write(render(items, view, args.output, args.no_headers, style))
    if unreadable is not None:
        # A tripped breaker, a dirty GPU, an alert already sent: all in the record it cannot read.
        print(
            "warning: open alerts unknown: the controller's record cannot be read "
            f"({clean(unreadable, 300)}); only the alerts this observation raises are listed",
            file=sys.stderr,
        )
    down = [h.domain.value for h in view.snapshot.health if not h.ok]
    if down:
        # A duplicate holder, a dirty GPU, a leaked row: not raised when what shows it is unread.
        print(
            f"warning: open alerts unknown where they need {', '.join(down)}, which could not be read; "
            "only the alerts this observation raises are listed",
            file=sys.stderr,
        )
    elif unreadable is None and not items and others:
        # The owner's none is not the host's none: the others' alerts are open all the same.
        print(
            f"No open admin alerts about {clean(args.owner, 64)} ({others} open about others).",
            file=sys.stderr,
        )
    elif unreadable is None and not items:
        print("No open admin alerts.", file=sys.stderr)
    return 0


def _owner(alert: Any) -> str | None:
    """Whose alert it is: the user over a quota or cap (their ``owner`` evidence), else the owner of
    the container or process it is about (its target's user)."""
    from controller.plan.types import OwnerEvidence

    return OwnerEvidence.from_evidence(alert.evidence).owner or alert.user


def alert_item(alert: Any, now: Any) -> dict[str, Any]:
    from controller.cli.render import iso

    return {
        "reason": alert.reason,
        "key": alert.key,
        "target": alert.target,
        "message": alert.message,
        "since": iso(alert.since),
        "age_s": (now - alert.since).total_seconds() if alert.since is not None else None,
        "evidence": _jsonable(alert.evidence),
    }


def _jsonable(value: Any) -> Any:
    from controller.cli.render import iso

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return iso(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def render(items: list[dict[str, Any]], view: Any, output: str, no_headers: bool, style: Any) -> str:
    import json

    from controller.cli.get import item_list
    from controller.cli.render import Table, clean, fmt_age, machine

    if output in ("json", "yaml"):
        return machine(item_list("AlertList", view, items), output)
    if output == "name":
        return "".join(f"alert/{clean(i['key'], 1000)}\n" for i in items)
    wide = output == "wide"
    table = Table(["reason", "target", "age", "message", *(["key", "evidence"] if wide else [])])
    for i in items:
        age_s = i["age_s"]
        if age_s is None:
            age = "new"
        elif age_s <= -1:
            age = f"in {fmt_age(-age_s + 0.999)}"  # delivered while the wall clock was ahead
        else:
            age = fmt_age(age_s)
        row = [i["reason"], clean(i["target"], 48), age, clean(i["message"], 200 if wide else 100)]
        if wide:
            row += [clean(i["key"], 120), clean(json.dumps(i["evidence"], sort_keys=True), 400)]
        table.add(row)
    if not table.rows:
        return ""
    text = table.render(style)
    return text.split("\n", 1)[1] if no_headers else text
