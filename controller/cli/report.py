"""``ds01ctl report``: GPU-hours held, held idle, hoarded and reclaimed, and the controller's actions,
per user, group, day or reason, from the event log (its rotations too) and the policy.

Reads the log forwards and streamed (:mod:`controller.act.event_files`), folds it with the pure
:class:`controller.accounting.Accountant`, and prints a table, JSON, CSV or (``--plot``) a PNG
chart drawn with matplotlib, an optional extra (``pip install 'ds01-controller[report]'``).
Changes nothing. The definitions are in :mod:`controller.accounting` and docs/cli.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.cli.errors import CliError
from controller.cli.render import UNKNOWN, Table, clean, fmt_bytes, stamp, to_json

if TYPE_CHECKING:
    from controller.accounting import Report
    from controller.act.event_files import ReadStats
    from controller.settings import Settings
    from controller.usage import HoardingPolicy
    from desired_state.policy_set import PolicySet

DEFAULT_SINCE = "7d"
# Samples and actions this long before --since are read too: their time runs into the period.
LOOKBACK = timedelta(days=1)
INSTALL_HINT = "pip install 'ds01-controller[report]'"

REPORT_EPILOG = """\
what it counts (docs/cli.md, "report", has the exact definitions):
  HELD       GPU-hours referenced by a container (MIG devices as their share of the GPU)
  IDLE       of those, hours while every holder was stopped or idle
  HOARDED    hours a running container held >= hoardingMemoryThresholdMib of GPU memory at
             <= hoardingMaxUtilizationPct for at least hoardingWindow (apart from idleness)
  RECLAIMED  hours a GPU freed by the controller's stop or removal stayed free, until next taken
  WARNINGS STOPS REMOVALS KILLS RESETS RELEASES   the controller's actions
The hours come from the controller.usage_sample lines the daemon writes every
reporting.sampleInterval (5m); time it did not observe is not counted.

examples:
  ds01ctl report                            the last 7 days, by user
  ds01ctl report --since 30d --by group     the last month, by group
  ds01ctl report --since 2026-03-01 --until 2026-03-08 --by day -o csv > week.csv
  ds01ctl report -o json | jq .totals.gpu_hours_reclaimed
  ds01ctl report --by user --plot week.png  a bar chart (needs: pip install 'ds01-controller[report]')
"""


def add_parser(sub: Any, make: Callable[..., argparse.ArgumentParser]) -> None:
    """Register ``report`` on the ``ds01ctl`` subparsers (``make`` is main's ``_sub``)."""
    p = make(sub, "report", "account for GPU-hours held, idle, hoarded and reclaimed", REPORT_EPILOG)
    p.add_argument("--since", default=DEFAULT_SINCE, metavar="WHEN", help="7d (default), 12h, or a timestamp")
    p.add_argument("--until", metavar="WHEN", help="now (default), a duration ago (1d), or a timestamp")
    p.add_argument("--by", choices=["user", "group", "day", "reason"], default="user", help="rows (user)")
    p.add_argument("-o", "--output", choices=["table", "json", "csv"], default="table")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the rows as a bar chart (needs matplotlib)")


def _when(text: str, now: datetime, what: str) -> datetime:
    from crd_like_specs.durations import DurationError, parse_duration

    if text.strip().lower() == "now":
        return now  # what --help names --until's default
    try:
        # A duration is that long ago, written with a minus or not (as get events --since reads it).
        seconds: float | None = parse_duration(text.strip().lower().removeprefix("-"))
    except DurationError:
        seconds = None
    if seconds is not None:
        return now - timedelta(seconds=seconds)
    try:
        at = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise CliError(
            f"cannot read {what} {clean(text, 60)!r}: use a duration ago (7d, 12h), now or a date"
            " (2026-03-01)"
        ) from None
    if at.tzinfo is None:
        # Without a zone: the zone the report cuts its days in and shows its times in (--utc: UTC).
        at = at.replace(tzinfo=UTC) if human_zone() is UTC else at.astimezone()
    return at.astimezone(UTC)


def hoarding_policy(policy: PolicySet | None) -> HoardingPolicy:
    """The hoarding thresholds of ``policy`` (the built-in ones without a policy)."""
    from controller.usage import MIB, HoardingPolicy

    if policy is None:
        return HoardingPolicy()
    from desired_state.resolve import global_value

    def get(name: str) -> Any:
        return global_value(policy, ("reporting", name)).value

    return HoardingPolicy(
        memory_threshold_bytes=int(float(get("hoarding_memory_threshold_mib")) * MIB),
        max_utilization_pct=float(get("hoarding_max_utilization_pct")),
        window_s=float(get("hoarding_window")),
    )


def human_zone() -> tzinfo | None:
    """Where a day ends: UTC with ``--utc``, else the local time zone (None: its rules, DST included)."""
    from controller.cli.render import _HUMAN_ZONE

    return UTC if _HUMAN_ZONE["utc"] else None


def build_report(
    events_log: Path,
    since: datetime,
    until: datetime,
    by: str,
    policy: PolicySet | None,
    tz: tzinfo | None,
) -> tuple[Report, ReadStats]:
    from controller.accounting import Accountant
    from controller.act.event_files import ReadStats, read_events
    from controller.act.usage_recorder import group_of

    def group(user: str) -> str:
        return group_of(policy, user) if policy is not None else "-"

    stats = ReadStats()
    acc = Accountant(since, until, by=by, hoarding=hoarding_policy(policy), tz=tz, group_of=group)
    report = acc.feed_all(read_events(events_log, since - LOOKBACK, until, stats))
    if stats.skipped or stats.damaged_files:
        report.notes.append(
            f"{stats.skipped} line(s) of the event log skipped: {stats.garbage} not an event, "
            f"{stats.no_timestamp} without a timestamp, {stats.too_long} too long, "
            f"{stats.unterminated} unterminated"
            + (f"; damaged: {'; '.join(stats.damaged_files)}" if stats.damaged_files else "")
        )
    return report, stats


# --- output ----------------------------------------------------------------------------------

COLUMNS = (
    ("HELD-H", "gpu_hours_held"),
    ("IDLE-H", "gpu_hours_idle"),
    ("HOARDED-H", "gpu_hours_hoarded"),
    ("RECLAIMED-H", "gpu_hours_reclaimed"),
    ("WARNINGS", "warnings"),
    ("STOPS", "stops"),
    ("REMOVALS", "removals"),
    ("KILLS", "kills"),
    ("RESETS", "resets"),
    ("RELEASES", "releases"),
)


def _cell(value: object) -> str:
    if value is None:
        return UNKNOWN  # GPU-hours with no usage sample in the period: unknown, not zero
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def report_json(report: Report, stats: ReadStats, now: datetime) -> dict[str, Any]:
    from controller.cli.render import clean_tree

    data = report.as_dict()
    data["generated_at"] = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    data["input"] = stats.as_dict()
    out: dict[str, Any] = clean_tree(data)
    return out


def report_table(data: dict[str, Any]) -> str:
    since = stamp(datetime.fromisoformat(data["since"]))
    until = stamp(datetime.fromisoformat(data["until"]))
    s = data["samples"]
    every = f"every {s['interval_s']:g}s" if s["interval_s"] else "none"
    lines = [
        f"Report {since} .. {until}, by {data['by']}; usage samples {every}, "
        f"covering {s['observed_hours']:g} h of {s['period_hours']:g} h",
        "",
    ]
    t = Table([data["by"].upper(), *(h for h, _k in COLUMNS)])
    for row in data["rows"]:
        t.add([clean(row["key"], 48), *(_cell(row[k]) for _h, k in COLUMNS)])
    t.add(["TOTAL", *(_cell(data["totals"][k]) for _h, k in COLUMNS)])
    lines.append(t.render().rstrip("\n"))
    if data["top_idle_holders"]:
        lines += ["", "Top holders of idle GPUs:"]
        t = Table(["USER", "GROUP", "IDLE-H", "HELD-H", "HOARDED-H"])
        for h in data["top_idle_holders"]:
            t.add(
                [
                    clean(h["user"], 48),
                    clean(h["group"], 32),
                    _cell(h["gpu_hours_idle"]),
                    _cell(h["gpu_hours_held"]),
                    _cell(h["gpu_hours_hoarded"]),
                ]
            )
        lines.append(t.render().rstrip("\n"))
    if data["hoarding"]:
        lines += ["", "Hoarding (GPU memory held at near-zero utilisation):"]
        t = Table(["GPU", "CONTAINERS", "USERS", "FROM", "TO", "HOURS", "MAX-MEMORY"])
        for h in data["hoarding"]:
            t.add(
                [
                    clean(h["slot"], 8),
                    clean(",".join(h["containers"]), 48),
                    clean(",".join(h["users"]), 48),
                    stamp(datetime.fromisoformat(h["start"])),
                    stamp(datetime.fromisoformat(h["end"])),
                    _cell(h["hours"]),
                    fmt_bytes(h["max_memory_bytes"]),
                ]
            )
        lines.append(t.render().rstrip("\n"))
    return "\n".join(lines) + "\n"


def report_csv(data: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([data["by"], *(k for _h, k in COLUMNS)])
    for row in data["rows"]:
        w.writerow([_csv_text(row["key"]), *(row[k] for _h, k in COLUMNS)])
    w.writerow(["TOTAL", *(data["totals"][k] for _h, k in COLUMNS)])
    return buf.getvalue()


def _csv_text(value: str) -> str:
    # A cell starting with = + - @ is a formula to a spreadsheet: a user name must not be one.
    return "'" + value if value[:1] in ("=", "+", "-", "@") and value != "-" else value


def plot(data: dict[str, Any], path: Path) -> None:
    """Draw the rows' hours as grouped bars; :class:`CliError` (exit 1) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CliError(f"--plot needs matplotlib, an optional extra: {INSTALL_HINT}") from None
    if data["totals"]["gpu_hours_held"] is None:
        raise CliError("--plot draws GPU-hours, and they are unknown: no usage sample in the period")
    keys = [str(r["key"])[:24] for r in data["rows"]] or ["(none)"]
    series = [
        ("held", "gpu_hours_held"),
        ("idle", "gpu_hours_idle"),
        ("hoarded", "gpu_hours_hoarded"),
        ("reclaimed", "gpu_hours_reclaimed"),
    ]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(keys) + 2), 4.5))
    width = 0.8 / len(series)
    for i, (label, field) in enumerate(series):
        values = [float(r[field]) for r in data["rows"]] or [0.0]
        ax.bar([x + i * width for x in range(len(keys))], values, width, label=label)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(keys))])
    ax.set_xticklabels(keys, rotation=30, ha="right")
    ax.set_ylabel("GPU-hours")
    ax.set_title(f"GPU-hours by {data['by']}, {data['since'][:10]} .. {data['until'][:10]}")
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise CliError(f"cannot write the chart to {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def cmd_report(args: argparse.Namespace, settings: Settings, now: datetime | None = None) -> int:
    from controller.cli.gather import load_installed_policy, policy_load_error

    now = now or datetime.now(UTC)
    since = _when(args.since, now, "--since")
    until = _when(args.until, now, "--until") if args.until else now
    earlier = "use a duration ago (7d, 12h) or an earlier date (2026-03-01)"
    if since > now:
        # Named as given: with no --until the period ends now, and "--until must be after --since"
        # named a flag never given.
        raise CliError(
            f"--since {clean(args.since, 60)} is after now: no event is logged yet in that period; {earlier}"
        )
    if until <= since:
        if args.until:
            raise CliError("--until must be after --since")
        raise CliError(
            f"--since {clean(args.since, 60)} is not before now, where the report ends (--until's"
            f" default): {earlier}"
        )
    if until > now:
        # No sample or action is logged after now: the hours to come would count as unobserved.
        print(f"warning: --until {clean(args.until, 60)} is after now: the report ends now", file=sys.stderr)
        until = now
        if until <= since:
            raise CliError(f"--since {clean(args.since, 60)} is not before now: {earlier}")
    if args.plot and not str(args.plot).lower().endswith(".png"):
        raise CliError(f"--plot writes a PNG: name the file *.png (got {clean(args.plot, 60)!r})")
    policy, info = load_installed_policy(settings)
    if policy is None:
        raise CliError(policy_load_error(info, settings))
    if not Path(settings.events_log).exists() and not _rotated_exist(Path(settings.events_log)):
        print(f"No events yet ({settings.events_log} does not exist)", file=sys.stderr)
    try:
        report, stats = build_report(Path(settings.events_log), since, until, args.by, policy, human_zone())
    except PermissionError as exc:
        raise CliError(
            f"cannot read the event log {exc.filename or settings.events_log}: permission denied "
            "(run as root, or as a member of the log's group)"
        ) from None
    data = report_json(report, stats, now)
    if args.plot:
        plot(data, Path(args.plot))
    if args.output == "json":
        sys.stdout.write(to_json(data))
    elif args.output == "csv":
        sys.stdout.write(report_csv(data))
    else:
        sys.stdout.write(report_table(data))
    for note in data["notes"]:
        print(f"warning: {clean(note, 600)}", file=sys.stderr)
    return 0


def _rotated_exist(path: Path) -> bool:
    from controller.act.event_files import log_files

    return bool(log_files(path))
