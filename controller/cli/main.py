"""``ds01ctl``: the kubectl-style command line of the DS01 controller.

Parses arguments, builds the settings (flags over ``DS01_*`` variables over defaults), dispatches to
the command modules and turns every failure into one line on stderr naming the problem and the
fix (``--debug`` adds the traceback). Imports stay lazy: this module loads only the standard
library (and :mod:`controller.flags`, which loads no more) at import time, so ``ds01ctl --help``
and ``ds01ctl get containers`` start fast.

Exit status: 0 success (``plan``: nothing would change); 1 error, bad usage included;
2 ``plan`` only: actions are pending.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from controller.flags import OneLineParser, UsageError

if TYPE_CHECKING:
    from controller.cli.render import Style
    from controller.cli.view import View
    from controller.settings import Settings

PROG = "ds01ctl"
# How loguru's messages look next to a command's output (see _quiet_logs).
LOG_FORMAT = "{level}: {message}"

MAIN_EPILOG = """\
examples:
  ds01ctl get containers                    GPU containers and what happens to them next
  ds01ctl get containers --all -o wide      every container, with signals
  ds01ctl get gpus                          GPUs, holders, processes, state
  ds01ctl describe container alice-train    why it is (or is not) being stopped
  ds01ctl plan --at +2h                     what the controller would do in two hours
  ds01ctl plan --policy ./new-specs/        what a candidate policy would do, without installing it
  ds01ctl validate /etc/ds01/specs          check specs before installing them
  ds01ctl explain LifecyclePolicy.spec.settings   the fields a spec may set
  source <(ds01ctl completion bash)         shell completion

exit status:
  0  success (plan: nothing would change)
  1  error, including bad usage; the message is one line naming the problem and the fix
  2  plan: actions are pending

environment:
  DS01_SPECS, DS01_DS01_CONFIG, DS01_STATE_DIR, DS01_EVENTS_LOG, DS01_LEDGER   as the flags
  DS01_ENV_FILE the daemon's environment file (/etc/ds01/controller.env): its DS01_* variables and
                the flags in its DS01_CONTROLLER_ARGS apply under the flags and the environment,
                so ds01ctl sees the specs, DS01 config and state the daemon runs with
  DOCKER_HOST   the Docker engine (unix:///var/run/docker.sock)
  NO_COLOR      never colour the output (colour is only used on a terminal anyway)
"""

GET_EPILOG = """\
kinds:
  containers   NAME OWNER TYPE STATE GPUS IDLE NEXT AGE
               (-o wide adds IMAGE ID CPU NET GPU-UTIL KEEPALIVE OWNER-RULE CPU-LIM MEM-LIM PIDS-LIM;
               a * marks a limit unset or above the owner's, which the controller lowers; never
               on a protected, monitoring, opted-out or exempt container, which it leaves alone)
               By default: containers that reference a GPU or that the controller acts on or defers.
               --all: every container. IDLE is how long it has been idle, or active / unknown /
               idle (grace) / - (not running, or no GPU: only GPU containers are watched).
               NEXT is the plan's next step: "stop now", "remove in 3h", "warn in 5m", "grace ends
               in 20m" (not a stop), "exemption ends in 2h" / "keep-alive ends in 1h" (a warning and
               its lead come after), "unknown" (NVML down), or "-".
  gpus         INDEX UUID MODEL MIG MEMORY UTIL HOLDERS PROCESSES STATE
               STATE: free, held, paused-held (no holder active, one paused: no idle time counts),
               restarting-held (no holder active or paused, one restarting: no timer runs),
               idle-held (every holder stopped or idle), dirty (a process no running
               holder accounts for, or marked for reset), unavailable (NVML down, or MIG on with no devices),
               unknown (Docker down: its holders cannot be listed; or no holder and NVML could not
               list its processes, or a process on it whose /proc entry was never read).
  processes    PID GPU MEMORY USER CONTAINER COMMAND VERDICT (ok, orphan, suspect, system, unknown)
  allocations  the ledger next to the allocations the containers imply, with a verdict
               (ok, leaked, duplicate, unrecorded, ledger-only, mismatch, unknown)
  policies     the loaded specs, where each came from, and whether loading the policy failed
  events       the tail of the event log (--container, --user/--owner, --kind, --since, --tail)
  alerts       REASON TARGET AGE MESSAGE: the admin alerts open now (-o wide/json: key, evidence)
  users        USER GROUP CONTAINERS GPU-EQ MEM-IN-USE CPU-LIMITS OVER: each owner's containers and
               GPU-equivalents used/allowed (a MIG slice counts as its share), and which quota is over;
               -o wide adds AGG: the aggregate caps (over(cpu,memory,tasks), bypass(n): containers
               outside the owner's slice)

examples:
  ds01ctl get containers
  ds01ctl get containers --owner alice -o wide
  ds01ctl get containers -l ds01.container_type=atomic,ds01.protected!=true
  ds01ctl get containers alice-train -o json
  ds01ctl get gpus
  ds01ctl get processes
  ds01ctl get allocations
  ds01ctl get policies -o yaml
  ds01ctl get users
  ds01ctl get events --since 1h --kind 'maintenance.*' --tail 20
  ds01ctl get alerts -o wide
"""

DESCRIBE_EPILOG = """\
sections (container): identity; owner and type with the rule that decided each; GPUs; the current
signals next to their thresholds; the effective policy with the source of every value; the timers;
the decision (why it is or is not being acted on, from the plan); the last events.

examples:
  ds01ctl describe container alice-train
  ds01ctl describe container 3f2a9c1b
  ds01ctl describe gpu 0
  ds01ctl describe gpu 1.2                  a MIG device (slot notation)
  ds01ctl describe gpu GPU-5d7c...
  ds01ctl describe user alice
"""

PLAN_EPILOG = """\
Nothing is changed: this observes the host once, reads the controller's memory read-only and prints
what one pass would do now, with the reason and evidence of each action, then the deferred items
(why not yet, and until when).

  --at +2h | +1h30m | 17:30 | 2025-03-01T18:00 | 2025-03-01 18:00 | 2025-03-01T18:00:00Z
      a forecast until that time: every pass the daemon would run (at the plan's due times and
      the resync), the memory carried forward, the signals held as observed now (an idle
      container stays idle, a busy one busy; no new containers); each predicted action with the
      time of its pass, then what is still deferred; the header states the assumptions. A clock
      time is today's and a time without a zone is local; the past is refused
  --policy PATH
      a candidate policy: a spec file, a directory of specs, or a DS01 config directory (holding
      resource-limits.yaml); prints how its forecast differs from the installed policy's
      (containers stopped or removed sooner, later, newly or no longer; --at sets the horizon,
      default 24h)

-o json prints Plan.model_dump(mode="json"): {"observed_at", "evaluated_at", "actions", "deferred"};
with --at the forecast {"start_at", "until", "assumptions", "actions": [{"pass_at", "action"}],
"deferred", ...}; with --policy {"changes", "current", "candidate", ...} (the schemas are documented
in docs/cli.md and only ever grow optional fields).

exit status: 0 nothing would change, 2 actions are pending, 1 error

examples:
  ds01ctl plan
  ds01ctl plan --at +2h
  ds01ctl plan --policy ./candidate-specs/ -o json
"""

RECONCILE_EPILOG = """\
Runs one pass now: observe, plan, execute, save the controller's memory; prints each action's
outcome. It refuses while the controller daemon runs (it holds the run lock in the state directory):
the daemon reconciles on its own, and `ds01ctl plan` shows what it will do. Asking the running
daemon to run a pass is not supported; send it SIGHUP to reload its policy.

--dry-run uses the dry-run executor: each action is reported and written to the event log as
"would ...", nothing on the host is changed. The memory (samples) is still saved. It is the default
while the controller runs in dry-run (DS01_DRY_RUN=1, or --dry-run in DS01_CONTROLLER_ARGS of its
environment file: the shipped setting); --no-dry-run acts.

exit status: 0 the pass completed (no action failed), 1 error or a failed action

examples:
  sudo ds01ctl reconcile --dry-run
  sudo ds01ctl reconcile
"""

VALIDATE_EPILOG = """\
Checks spec files, directories of specs and DS01 config directories without installing anything.
Prints one line per problem (file, field and fix); exit status 0 when all are valid, 1 otherwise.

examples:
  ds01ctl validate /etc/ds01/specs
  ds01ctl validate ./my-policy.yaml ./other.yaml
  ds01ctl validate /opt/ds01-infra/config/runtime
  ds01ctl validate --ds01-config /opt/ds01-infra/config/runtime /etc/ds01/specs  (the specs over DS01's files)
"""

BREAKER_EPILOG = """\
The circuit breaker trips when one pass would stop too many GPU containers at once, or remove too
many stopped containers at once (an engine or host restart nobody chose); while tripped, no
destructive action runs. The release breaker trips when one pass would release too large a share
of the GPU allocation ledger; while tripped, no ledger row is released. Neither resets itself.

  status   whether it is tripped, when and why (reads the state store read-only)
  reset    clears both. When the controller daemon is not running, the memory is changed directly
           (under the run lock). When it runs, a request file <state-dir>/breaker-reset is written
           and the daemon clears the breaker at the start of its next pass (none while both are
           closed: it would clear one tripped before that pass, unseen).

examples:
  ds01ctl breaker status
  sudo ds01ctl breaker reset
"""

EXPLAIN_EPILOG = """\
kinds: LifecyclePolicy, UserGroup, UserOverride, Exemption. A map field takes any key as the next
step (a container type under containerTypes).

examples:
  ds01ctl explain LifecyclePolicy
  ds01ctl explain LifecyclePolicy.spec.settings
  ds01ctl explain LifecyclePolicy.spec.settings.idleTimeout
  ds01ctl explain UserGroup.spec.containerTypes.docker.maxRuntime
"""

COMPLETION_EPILOG = """\
examples:
  source <(ds01ctl completion bash)
  source <(ds01ctl completion zsh)
  ds01ctl completion fish > ~/.config/fish/completions/ds01ctl.fish
  ds01ctl completion bash | sudo tee /etc/bash_completion.d/ds01ctl
"""


class ArgumentError(UsageError):
    """Bad usage found after parsing, reported as one line like the parser's own errors."""


def _sub(
    sub: Any, name: str, help_text: str, epilog: str, *, config: bool = True, **kw: Any
) -> argparse.ArgumentParser:
    """A subcommand; ``config=False`` for those the daemon's configuration means nothing to."""
    from controller.flags import add_common_flags

    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kw,
    )
    if not config:
        p.add_argument("--debug", action="store_true", help="show the traceback of an error")
        return p
    add_common_flags(p)
    p.add_argument(
        "--env-file",
        metavar="FILE",
        help="the daemon's environment file, read as systemd does, under the DS01_* variables "
        "[DS01_ENV_FILE] (/etc/ds01/controller.env; '' reads none)",
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.add_argument("--no-color", action="store_true", help="never colour the output (also: NO_COLOR=1)")
    p.add_argument(
        "--utc", action="store_true", help="times in UTC (default: local time with its zone; JSON is UTC)"
    )
    return p


LIVE_HELP = (
    "observe the host now; by default a running controller's last pass is shown (with its age) when it "
    "is younger than the resync interval and made under this policy"
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Inspect and drive the DS01 GPU controller: what it sees, what it will do, and why.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True

    from controller.cli.kinds import KINDS

    get = _sub(sub, "get", f"list {', '.join(KINDS[:-1])} or {KINDS[-1]}", GET_EPILOG)
    get.add_argument("kind", metavar="KIND", help="|".join(KINDS))
    get.add_argument(
        "name", metavar="NAME", nargs="?", help="one object: container name/id, GPU index/UUID, pid"
    )
    get.add_argument("-o", "--output", choices=["table", "wide", "json", "yaml", "name"], default="table")
    get.add_argument("--no-headers", action="store_true", help="tables without the header line")
    get.add_argument(
        "--sort-by",
        choices=["name", "owner", "type", "state", "idle", "next", "age"],
        help="containers: order by this column (idle: longest first; next: soonest first; age: oldest first)",
    )
    get.add_argument(
        "-w", "--watch", action="store_true", help="observe every 2 s and print the table when it changes"
    )
    get.add_argument(
        "-l",
        "--selector",
        action="append",
        default=[],
        metavar="SEL",
        help="label selector: k=v, k!=v, k in (a,b), k notin (a,b), k, !k",
    )
    get.add_argument("--owner", metavar="USER", help="only this owner's objects")
    get.add_argument("--all", dest="show_all", action="store_true", help="containers: every container")
    get.add_argument("--live", action="store_true", help=LIVE_HELP)
    ev = get.add_argument_group("events")
    ev.add_argument("--container", metavar="NAME", help="events about this container (name or id prefix)")
    ev.add_argument("--user", metavar="USER", help="events of this user (same as --owner)")
    ev.add_argument(
        "--kind", dest="event_kinds", action="append", default=[], metavar="GLOB", help="event type"
    )
    ev.add_argument("--since", metavar="WHEN", help="1h, 30m, 2d, or a timestamp")
    ev.add_argument("--tail", type=int, default=50, metavar="N", help="the last N matching events (50)")

    desc = _sub(sub, "describe", "show everything about one container, GPU or user", DESCRIBE_EPILOG)
    desc.add_argument("kind", metavar="KIND", help="container|gpu|user")
    desc.add_argument("name", metavar="NAME", help="container name or id, GPU index/slot/UUID, user name")
    desc.add_argument("--live", action="store_true", help=LIVE_HELP)

    plan = _sub(sub, "plan", "show what the controller would do, and why (changes nothing)", PLAN_EPILOG)
    plan.add_argument(
        "-o",
        "--output",
        choices=["table", "wide", "json", "yaml"],
        default="table",
        help="table: actions and what is held back; wide: also the evidence and the not-due items",
    )
    plan.add_argument(
        "--at", metavar="WHEN", help="evaluate at a later time: +2h, 17:30 (today), or a date and time"
    )
    plan.add_argument(
        "--policy", metavar="PATH", help="evaluate a candidate policy instead of the installed one"
    )

    rec = _sub(sub, "reconcile", "run one pass now: observe, plan, act", RECONCILE_EPILOG)
    rec.add_argument(
        "--dry-run",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="report actions, perform none (the default when the controller runs in dry-run; "
        "--no-dry-run acts)",
    )
    rec.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")

    val = _sub(sub, "validate", "check spec files or DS01 config directories", VALIDATE_EPILOG, config=False)
    val.add_argument("paths", metavar="PATH", nargs="+")
    val.add_argument(
        "--ds01-config",
        metavar="DIR",
        help="DS01's config directory: the PATHs are checked layered over it, as the daemon loads them",
    )

    brk = _sub(sub, "breaker", "show or reset the circuit breaker", BREAKER_EPILOG)
    brk.add_argument("action", choices=["status", "reset"])
    brk.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")

    _sub(sub, "version", "print the version of ds01ctl and of the running controller", "")

    exp = _sub(sub, "explain", "describe a spec kind's fields, from its schema", EXPLAIN_EPILOG, config=False)
    exp.add_argument("path", metavar="KIND[.FIELD...]")

    comp = _sub(sub, "completion", "print a shell completion script", COMPLETION_EPILOG, config=False)
    comp.add_argument("shell", choices=["bash", "zsh", "fish"])
    from controller.cli.report import add_parser as add_report

    add_report(sub, _sub)
    return parser


_AGO_FLAGS = frozenset({"--since", "--until"})


def _ago_flag(arg: str) -> bool:
    """``--since`` or ``--until``, or an abbreviation argparse takes for one (``--sin``)."""
    return len(arg) >= 4 and arg.startswith("--") and any(f.startswith(arg) for f in _AGO_FLAGS)


def _attach_negative_values(argv: list[str]) -> list[str]:
    """``--at -1h`` as ``--at=-1h``: argparse would take ``-1h`` for a flag and say "expected one
    argument"; attached, the value reaches the parser, which says it is in the past. ``--since -1h``
    (and ``report --until -1d``) likewise: a duration ago, written with a minus as ``--since=-1h``
    already reads (only a minus and a digit: ``--since --tail 5`` is a missing value)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if (argv[i] == "--at" and nxt.startswith("-")) or (
            _ago_flag(argv[i]) and len(nxt) > 1 and nxt[0] == "-" and nxt[1].isdigit()
        ):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _environment(args: argparse.Namespace) -> dict[str, str]:
    """The process environment over the daemon's environment file (flags win over both).

    The unit's file is read when it exists; a file named with --env-file/DS01_ENV_FILE must exist.
    """
    from pathlib import Path

    from controller.envfile import DEFAULT_ENV_FILE, ENV_FILE_VARIABLE, read_env_file

    if not hasattr(args, "env_file"):
        return dict(os.environ)  # a command that reads no configuration (validate, completion)
    given = args.env_file if args.env_file is not None else os.environ.get(ENV_FILE_VARIABLE)
    if given == "":
        return dict(os.environ)
    path = Path(given) if given is not None else DEFAULT_ENV_FILE
    try:
        from_file = read_env_file(path)
    except FileNotFoundError:
        if given is not None:
            raise ArgumentError(
                f"the environment file {path} does not exist (--env-file/{ENV_FILE_VARIABLE}; '' reads none)"
            ) from None
        from_file = {}
    except OSError as exc:
        _warn(
            [
                f"cannot read the daemon's environment file {path}: {exc.strerror or exc}; "
                "the specs and state the daemon uses are not known to ds01ctl (run as root, or pass --specs)"
            ]
        )
        from_file = {}
    return {**from_file, **os.environ}


def _version() -> str:
    from controller import __version__

    return __version__


# --- shared by the commands ----------------------------------------------------------------


def _style(args: argparse.Namespace) -> Style:
    from controller.cli.render import Style, colour_enabled

    return Style(not getattr(args, "no_color", False) and colour_enabled(sys.stdout))


def _warn(notes: list[str]) -> None:
    from controller.cli.render import clean

    for note in notes:
        print(f"warning: {clean(note, 600)}", file=sys.stderr)


def _quiet_logs(debug: bool) -> None:
    """The adapters log through loguru; on a terminal only errors belong next to the output.

    Importing loguru (and the asyncio it imports) costs about a fifth of a ``get`` or ``describe``
    that reads the daemon's last pass, where nothing logs. So it is not imported for this: when it
    is not loaded yet, loguru's own settings (the ``LOGURU_*`` variables it reads once, as it is
    imported) give its stderr sink this level and format the moment anything imports it.
    """
    level = "DEBUG" if debug else "ERROR"
    if "loguru" in sys.modules:
        from loguru import logger

        logger.remove()
        logger.add(sys.stderr, level=level, format=LOG_FORMAT, colorize=False)
        return
    os.environ.update(
        {"LOGURU_AUTOINIT": "1", "LOGURU_LEVEL": level, "LOGURU_FORMAT": LOG_FORMAT, "LOGURU_COLORIZE": "0"}
    )


def parse_when(text: str, now: datetime, hint: str | None = None) -> datetime:
    """``+2h``/``+1h30m``/``90m`` after ``now``, or a timestamp (naive: local time). ``hint``: what
    the error of an unreadable time suggests instead of the times after now."""
    import re
    from datetime import timedelta

    from controller.cli.errors import CliError
    from controller.cli.render import clean

    stripped = text.strip()
    if stripped.startswith("-") and parse_duration(stripped[1:]) is not None:
        raise CliError(f"{clean(text, 60)!r} is in the past: use a time after now, e.g. +{stripped[1:]}")
    delta_s = parse_duration(stripped.lstrip("+")) if stripped else None
    if delta_s is not None:
        return now + timedelta(seconds=delta_s)
    clock_time = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", stripped)
    try:
        if clock_time:
            # A clock time is today's, in the local time zone.
            local_now = now.astimezone()
            h, m, sec = (int(x) if x else 0 for x in clock_time.groups())
            at = local_now.replace(hour=h, minute=m, second=sec, microsecond=0)
        else:
            at = datetime.fromisoformat(stripped.replace(" ", "T", 1))
    except ValueError:
        raise CliError(
            f"cannot read the time {clean(text, 60)!r}: "
            + (
                hint
                or "use +2h, +1h30m, 45m, a clock time like 17:30, or a date and time like 2025-03-01T18:00"
            )
        ) from None
    if at.tzinfo is None:
        at = at.astimezone()  # a naive time is the user's local time
    return at.astimezone(now.tzinfo)


def parse_duration(text: str) -> float | None:
    """``1h30m`` -> 5400.0; ``None`` when ``text`` is not a duration."""
    import re

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = text.strip().lower()
    if not re.fullmatch(r"(\d+(?:\.\d+)?[smhdw])+", text):
        return None
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smhdw])", text))


# --- commands --------------------------------------------------------------------------------


def cmd_get(args: argparse.Namespace, settings: Settings) -> int:
    from controller.cli.errors import CliError
    from controller.cli.kinds import canonical_kind

    kind = canonical_kind(args.kind)
    if kind == "alerts":  # the open admin alerts (controller/cli/alerts.py)
        from controller.cli.alerts import cmd_get_alerts

        _quiet_logs(args.debug)
        return cmd_get_alerts(args, settings, _style(args))
    from controller.cli.get import GetOptions, empty_message, parse_selector

    event_flags = [
        f
        for f, v in (("--container", args.container), ("--kind", args.event_kinds), ("--since", args.since))
        if v
    ]
    if kind != "events" and event_flags:
        raise CliError(f"{', '.join(event_flags)} only apply to 'get events'")
    if kind == "events" and args.selector:
        raise CliError(
            "-l only applies to objects with labels (containers, processes); use --container or --user"
        )
    if args.selector and kind in ("users", "allocations", "policies"):
        # Taken and ignored, it would list everything as if everything matched.
        raise CliError(
            f"-l only applies to containers, processes and gpus (their containers' labels), not {kind}"
        )
    if args.owner and kind == "policies":
        raise CliError(
            "--owner applies to objects a user owns, not policies (describe user NAME shows theirs)"
        )
    owner = args.owner or (args.user if kind == "events" else None)
    if args.user and kind != "events":
        raise CliError("--user only applies to 'get events'; use --owner")
    if args.user and args.owner and args.user != args.owner:
        from controller.cli.render import clean as clean_text

        # Either one alone names whose events; two users at once would list one user's, silently.
        raise CliError(
            f"--owner {clean_text(args.owner, 40)} and --user {clean_text(args.user, 40)} name two users:"
            " give one (they are the same flag for events)"
        )
    opts = GetOptions(
        name=args.name,
        output=args.output,
        selector=parse_selector(args.selector),
        owner=owner,
        show_all=args.show_all,
        no_headers=args.no_headers,
        sort_by=args.sort_by,
    )
    if args.sort_by and kind != "containers":
        raise CliError("--sort-by applies to 'get containers'")
    if args.watch:
        if opts.output in ("json", "yaml", "name"):
            raise CliError(f"--watch shows tables; -o {opts.output} prints once (drop -w)")
        return _watch(args, settings, kind, opts, owner)
    view, (text, empty) = _view_and_get(args, settings, kind, opts, owner, _style(args))
    _warn(view.notes)
    _say_as_of(view)
    rotated = _rotated_logs(settings.events_log) if empty and kind == "events" else []
    if rotated and not args.since:
        # Renamed by logrotate and not written since: the events are in the rotated files.
        print(
            f"No events since the log was rotated ({settings.events_log} does not exist yet; the older"
            f" events are in {rotated[-1].name} and before: --since reads them, e.g. --since 7d).",
            file=sys.stderr,
        )
    elif empty and kind == "events" and not rotated and not settings.events_log.exists():
        print(
            f"No events yet ({settings.events_log} does not exist; set --events-log or DS01_EVENTS_LOG"
            " if the controller writes elsewhere).",
            file=sys.stderr,
        )
    elif empty:
        print(empty_message(kind, view, opts), file=sys.stderr)
    sys.stdout.write(text)
    return 0


def _view_and_get(
    args: argparse.Namespace, settings: Settings, kind: str, opts: Any, owner: str | None, style: Style
) -> tuple[View, tuple[str, bool]]:
    """The view and ``run_get``'s answer from it (``get`` and each screen of ``get -w``)."""
    from controller.cli.errors import CliError
    from controller.cli.get import run_get

    view = _get_view(args, settings, kind, owner)
    try:
        return view, run_get(kind, view, opts, style)
    except CliError:
        if view.as_of is None:
            raise
        # NAME is not in the daemon's last pass (created since?): ask the host itself before saying no.
        args.live = True
        view = _get_view(args, settings, kind, owner)
        return view, run_get(kind, view, opts, style)


def _rotated_logs(path: Any) -> list[Any]:
    """The rotated copies of the event log when the live file does not exist (oldest first)."""
    from controller.act.event_files import log_files

    try:
        if path.exists():
            return []
    except OSError:
        return []
    return log_files(path)


def _get_view(args: argparse.Namespace, settings: Settings, kind: str, owner: str | None) -> View:
    if kind == "events":
        return _events_view(args, settings, owner)
    from controller.cli.gather import GatherOptions, gather

    if kind == "policies":
        return gather(settings, GatherOptions(observe=False, plan=False))
    _quiet_logs(args.debug)
    return gather(
        settings,
        GatherOptions(
            require_docker=kind in ("containers", "users"),
            # get gpus reads the last usage samples from the event log for its hoarding mark.
            events=kind == "gpus",
            forecast="small" if kind == "containers" else None,
            recent=not args.live,
            # Quotas; the hoarding thresholds; the limits a wide table marks as above the policy.
            need_policy=kind in ("users", "gpus") or (kind == "containers" and args.output == "wide"),
        ),
    )


def _say_as_of(view: View) -> None:
    """One line on stderr when the view is the daemon's last pass rather than a live observation."""
    if view.as_of is None:
        return
    from datetime import UTC

    from controller.cli.render import since, stamp

    age = since(view.as_of, datetime.now(UTC))
    print(
        f"as of {age} ago (the controller's last pass, {stamp(view.as_of)}; --live observes now)",
        file=sys.stderr,
    )


WATCH_INTERVAL_S = 2.0


def _watch(args: argparse.Namespace, settings: Settings, kind: str, opts: Any, owner: str | None) -> int:
    """``get -w``: observe again every two seconds and print the table whenever it changes (on a
    terminal the screen is redrawn); warnings are said once, when they first appear. Ctrl-C ends it."""
    import time

    style = _style(args)
    terminal = sys.stdout.isatty()
    last: str | None = None
    said: set[str] = set()
    try:
        while True:
            view, (text, _) = _view_and_get(args, settings, kind, opts, owner, style)
            if view.as_of is not None:
                # The daemon's last pass: say which one (the screen changes with each new pass).
                from controller.cli.render import stamp

                text = f"as of the controller's last pass, {stamp(view.as_of)} (--live observes now)\n" + text
            _warn([n for n in view.notes if n not in said])
            said |= set(view.notes)
            if text != last:
                if terminal:
                    sys.stdout.write("\x1b[H\x1b[2J")
                elif last is not None:
                    sys.stdout.write("\n")
                sys.stdout.write(text or "(nothing to list)\n")
                sys.stdout.flush()
                last = text
            time.sleep(WATCH_INTERVAL_S)
    except KeyboardInterrupt:
        return 0


def _events_view(args: argparse.Namespace, settings: Settings, owner: str | None) -> View:
    from dataclasses import replace
    from datetime import UTC, timedelta

    from controller.act.event_files import tail_since
    from controller.act.events import EventFilter, log_trust_problem, tail
    from controller.cli.errors import CliError
    from controller.cli.render import clean
    from controller.cli.view import View
    from controller.snapshot import Snapshot

    now = datetime.now(UTC)
    since = None
    if args.since:
        # A duration is that long ago, written with a minus or not (parse_when would call -1h "in
        # the past", which is what --since asks for).
        secs = parse_duration(args.since.strip().removeprefix("-"))
        # An unreadable time is told the times --since takes (those after now it refuses).
        earlier = "use a duration ago (1h, 30m, 2d), an earlier clock time, or a date and time like"
        earlier += " 2025-03-01T18:00"
        since = now - timedelta(seconds=secs) if secs is not None else parse_when(args.since, now, earlier)
        if since > now:
            # No event is logged after now: the answer would be "No events." of any log.
            raise CliError(
                f"--since {clean(args.since, 60)}: that is in the future; use a duration ago (1h, 2d)"
                " or an earlier time"
            )
    if args.tail <= 0:
        raise CliError(f"--tail {args.tail}: must be a positive number of events")
    kinds = tuple(k for text in args.event_kinds for k in text.split(",") if k)
    wanted = args.container or args.name
    flt = EventFilter(event_types=kinds, user=owner, since=since, container=wanted)
    path = settings.events_log

    def read(flt: EventFilter) -> list[dict[str, Any]]:
        # A period may reach back past the last rotation: tail_since reads the rotations too.
        return tail_since(path, args.tail, flt) if since is not None else tail(path, args.tail, flt)

    notes: list[str] = []
    try:
        # A container of that name is the one meant (as in Docker), not also each one whose id
        # begins with the name ("cafe"); with none, the id prefix names containers.
        # A container the daemon knows by that name: its events under an earlier name too (a
        # docker rename keeps the id), as describe finds them.
        known, notes = _known_container_id(settings, wanted)
        named = replace(flt, container_name_only=True, container_id=known)
        events = read(named) if wanted else []
        if not events:
            events = read(flt)
    except FileNotFoundError:
        events = []  # a fresh host: no events yet, as describe says; not an error
    except PermissionError:
        raise CliError(
            f"cannot read the event log {path}: permission denied (run as root or get read access)"
        ) from None
    except OSError as exc:
        raise CliError(f"cannot read the event log {path}: {exc.strerror or exc}") from None
    problem = log_trust_problem(path)
    if problem is not None:
        notes = [*notes, problem]
    return View(snapshot=Snapshot(observed_at=now, health=()), now=now, events=events, notes=notes)


def _known_container_id(settings: Settings, name: str | None) -> tuple[str | None, list[str]]:
    """The full id of the one container named ``name`` in the daemon's last workload inventory, or
    ``None`` (no name, no inventory, not listed there, or listed twice); and a note when the
    inventory exists but cannot be read (the events that name it are listed, as before)."""
    if not name:
        return None, []
    import json

    from controller.cli.render import clean

    path = settings.inventory_path
    try:
        inventory = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None, []  # the daemon never wrote one: no container is known by id
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not JSON"
        return None, [
            f"the daemon's workload inventory {path} could not be read ({clean(why, 80)}): events"
            f" logged under {clean(name, 64)}'s earlier name, before a docker rename, are not listed"
        ]
    listed = inventory.get("containers") if isinstance(inventory, dict) else None
    if not isinstance(listed, dict):
        return None, []
    ids = {
        e.get("full_id")
        for e in listed.values()
        if isinstance(e, dict)
        and e.get("name") == name
        and isinstance(e.get("full_id"), str)
        and e["full_id"]
    }
    return (ids.pop() if len(ids) == 1 else None), []


def cmd_describe(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import replace

    from controller.cli.errors import CliError
    from controller.cli.gather import GatherOptions, gather

    kind = {
        "container": "container",
        "containers": "container",
        "ctr": "container",
        "gpu": "gpu",
        "gpus": "gpu",
    }
    kind |= {"user": "user", "users": "user"}
    k = kind.get(args.kind.lower())
    if k is None:
        from controller.cli.render import clean

        raise CliError(f"cannot describe {clean(args.kind, 40)!r}: expected container, gpu or user")
    _quiet_logs(args.debug)
    opts = GatherOptions(
        require_docker=k in ("container", "user"),
        events=True,
        forecast="all" if k == "container" else None,
        recent=not args.live,
    )
    view = gather(settings, opts)
    from controller.cli.describe import describe_container, describe_gpu, describe_user

    fn = {"container": describe_container, "gpu": describe_gpu, "user": describe_user}[k]
    try:
        text = fn(view, args.name, _style(args))
    except CliError:
        if view.as_of is None:
            raise
        # Not in the daemon's last pass (created since?): ask the host itself before saying no.
        view = gather(settings, replace(opts, recent=False))
        text = fn(view, args.name, _style(args))
    _warn(view.notes)
    _say_as_of(view)
    sys.stdout.write(text)
    return 0


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC
    from pathlib import Path

    from controller.cli.errors import EXIT_OK, EXIT_PENDING, CliError
    from controller.cli.gather import GatherOptions, gather
    from controller.cli.planview import plan_json, plan_text
    from controller.cli.render import machine

    now = datetime.now(UTC)
    at = parse_when(args.at, now) if args.at else None
    if at is not None and at < now.replace(microsecond=0):
        raise CliError(
            f"--at {args.at}: that is in the past; plan judges the current state at a later time"
            " (a clock time means today; add a date for another day)"
        )
    _quiet_logs(args.debug)
    if at is not None or args.policy:
        # A forecast of the coming passes (and, with --policy, its difference from the installed one).
        from controller.cli.forecastcmd import cmd_forecast

        return cmd_forecast(args, settings, at, _style(args))
    view = gather(
        settings,
        GatherOptions(at=at, candidate=Path(args.policy) if args.policy else None, require_docker=True),
    )
    if view.plan is None:
        raise CliError(
            f"cannot plan: the policy does not load ({view.policy.error}); ds01ctl validate names the problem"
        )
    _warn(view.notes)
    if args.output in ("json", "yaml"):
        sys.stdout.write(machine(plan_json(view.plan), args.output))
    else:
        heading = "Plan"
        if view.policy.candidate:
            heading = f"Plan with the candidate policy {view.policy.origin.removeprefix('candidate ')}"
        text = plan_text(
            view.plan,
            _style(args),
            heading=heading,
            wide=args.output == "wide",
            idle_removes=lambda d: view.idle_stop_removes(d.target.container_id),
        )
        sys.stdout.write(text)
    return EXIT_PENDING if view.plan.actions else EXIT_OK


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from controller.cli.reconcile import reconcile

    _quiet_logs(args.debug)
    # Unless told, as the controller runs (the shipped environment file: in dry-run).
    dry_run = settings.dry_run if args.dry_run is None else bool(args.dry_run)
    return reconcile(settings, dry_run=dry_run, output=args.output, style=_style(args))


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from controller.cli.render import clean
    from desired_state.validate import validate_paths, validation_warnings

    paths = [Path(p) for p in args.paths]
    ds01_config = Path(args.ds01_config) if getattr(args, "ds01_config", None) else settings.ds01_config
    if ds01_config is not None and ds01_config.resolve() not in {p.resolve() for p in paths}:
        # `validate --ds01-config DIR SPECS` checks what the daemon would load: SPECS over DIR. DIR
        # named among the PATHs too (relatively, through a link) is checked once, not over itself.
        paths.insert(0, ds01_config)
    problems = validate_paths(paths, ds01_config)
    for p in problems:
        print(clean(p, 1000))
    if problems:
        print(f"{len(problems)} problem{'' if len(problems) == 1 else 's'} found", file=sys.stderr)
        return 1
    print(f"valid: {', '.join(clean(str(p), 200) for p in paths)}")
    for warning in validation_warnings(
        paths, ds01_config=ds01_config
    ):  # valid, but one setting decides instead of another
        print(clean(warning, 1000))
    return 0


def cmd_breaker(args: argparse.Namespace, settings: Settings) -> int:
    from controller.cli.reconcile import breaker_reset, breaker_status

    _quiet_logs(args.debug)
    if args.action == "status":
        return breaker_status(settings, args.output)
    return breaker_reset(settings)


def cmd_version(args: argparse.Namespace, settings: Settings) -> int:
    """The client's version, and the running controller's from its status file (when it wrote one)."""
    from controller.cli.render import clean
    from controller.store import POLICY_STATUS_FILE, read_policy_status

    print(f"ds01ctl: {_version()}")
    path = settings.state_dir / POLICY_STATUS_FILE
    status = read_policy_status(settings.state_dir)
    theirs = (status or {}).get("controller_version")
    if theirs:
        at = clean(str((status or {}).get("checked_at", "an unknown time")), 40)
        print(f"controller: {clean(str(theirs), 40)} (its status of {at} in {settings.state_dir})")
        return 0
    unreadable = _unreadable(path) if status is None else None
    if unreadable is not None:
        # The controller may well have run: its status is there, but not for this user to read.
        print(f"controller: unknown (cannot read {path}: {unreadable}; run as root)")
    else:
        print(
            f"controller: unknown (no version in {path}: "
            "no controller ran with this state directory, or an older one)"
        )
    return 0


def _unreadable(path: Any) -> str | None:
    """Why ``path`` exists but cannot be read by this user; ``None`` when it does not exist (or
    reads, and so holds no status)."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        return None
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    from controller.cli.explain import explain

    sys.stdout.write(explain(args.path))
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from controller.cli.report import cmd_report as run

    return run(args, settings)


def cmd_completion(args: argparse.Namespace, settings: Settings) -> int:
    from controller.cli.completion import bash_script, fish_script, zsh_script

    script = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[args.shell]
    sys.stdout.write(script(build_parser()))
    return 0


COMMANDS = {
    "get": cmd_get,
    "describe": cmd_describe,
    "plan": cmd_plan,
    "reconcile": cmd_reconcile,
    "validate": cmd_validate,
    "breaker": cmd_breaker,
    "completion": cmd_completion,
    "version": cmd_version,
    "explain": cmd_explain,
    "report": cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    argv = _attach_negative_values(argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        from controller.settings import SettingsError, settings_from

        try:
            settings = settings_from(args, _environment(args))
        except SettingsError as exc:
            raise ArgumentError(str(exc)) from exc
        from controller.cli.render import set_utc

        set_utc(bool(getattr(args, "utc", False)))
        return COMMANDS[args.command](args, settings)
    except UsageError as exc:
        print(f"{PROG}: {exc}" if not str(exc).startswith(PROG) else str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `ds01ctl get events | head`: the reader left; nothing more to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        from controller.cli.errors import CliError

        if isinstance(exc, CliError):
            message, code = exc.message, exc.exit_code
        else:
            from controller.startup import one_line_error

            message, code = one_line_error(exc), 1
        from controller.cli.render import clean

        print(f"{PROG}: {clean(message, 1000)}", file=sys.stderr)
        if debug:
            import traceback

            traceback.print_exc()
        return code


if __name__ == "__main__":
    sys.exit(main())
