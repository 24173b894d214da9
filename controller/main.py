"""``ds01-controller``: the daemon's command line.

Parses flags and ``DS01_*`` variables, configures logging, checks that the host is usable and hands
over to :func:`controller.wiring.run`. Every problem at start is one log line naming the problem and
the fix, followed by a non-zero exit -- never a traceback, and never a restart loop of tracebacks
under systemd. A Docker engine that is down is not a start-up error for the daemon (it announces
degraded mode and waits for it), but it is for ``run --once``, whose plan would be meaningless.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.loop import PassResult
    from controller.settings import Settings

EPILOG = """\
examples:
  ds01-controller run --once --dry-run      one pass, print the plan, change nothing
  ds01-controller run --dry-run             the daemon, recording what it would do
  ds01-controller run --dry-run --interval 1m   the same, resyncing every minute
  (to let it act, remove --dry-run from DS01_CONTROLLER_ARGS after reading its dry-run decisions)
  ds01-controller run --dry-run --specs /etc/ds01/specs --metrics-port 9108

exit status: 0 ok, 1 error (bad usage included) at start or a failed --once pass; as ds01ctl, where
2 means only "actions pending" (ds01ctl plan)
"""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 1  # the same as ds01ctl: 2 is reserved for "actions pending" in ds01ctl plan
EXIT_INTERRUPTED = 130


def _interval(text: str) -> float:
    from controller.settings import parse_seconds

    try:
        return parse_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    from controller.flags import OneLineParser, add_common_flags

    parser = OneLineParser(
        prog="ds01-controller",
        description=(
            "Reconcile a shared GPU server's containers, GPUs and processes with the declared policy."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from controller import __version__

    parser.add_argument("--version", action="version", version=f"ds01-controller {__version__}")
    # Not required here: a mistyped flag before the command is then named as such, not reported as
    # a missing command (checked after parsing).
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    run = sub.add_parser(
        "run",
        help="run the control loop",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--once", action="store_true", help="run one pass and exit")
    run.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="record what would be done; change nothing on the host [DS01_DRY_RUN=1]",
    )
    run.add_argument(
        "--interval",
        dest="interval_s",
        type=_interval,
        metavar="DURATION",
        help="periodic resync interval: 30s, 2m, or seconds [DS01_INTERVAL] (30s)",
    )
    run.add_argument(
        "--metrics-addr", metavar="ADDR", help="metrics bind address [DS01_METRICS_ADDR] (127.0.0.1)"
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on PORT [DS01_METRICS_PORT]",
    )
    run.add_argument("--log-format", choices=["text", "json"], help="log format [DS01_LOG_FORMAT] (text)")
    add_common_flags(run)
    return parser


def configure_logging(log_format: str) -> None:
    from loguru import logger

    logger.remove()
    if log_format == "json":
        logger.add(sys.stderr, level="INFO", serialize=True)
    else:
        # journald adds its own timestamps; keep lines short and one per event. Tracebacks only with
        # DS01_DEBUG: a failed pass is one line in the journal, not forty.
        debug = bool(os.environ.get("DS01_DEBUG"))
        logger.add(
            sys.stderr,
            level="DEBUG" if debug else "INFO",
            format="{level: <7} {message}",
            colorize=False,
            backtrace=debug,
            diagnose=False,
            catch=True,
        )
        if not debug:
            logger.configure(patcher=_drop_exception)


def _drop_exception(record: Any) -> None:
    # The text sink prints the message only: whoever logs an exception summarises it in the
    # message, and a traceback in the journal is forty lines an admin cannot act on.
    record["exception"] = None


class StartupError(Exception):
    """The host is not usable as configured; the message is the one line an admin needs."""


def _check_writable_dir(path: Path, what: str, flag: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError as exc:
        raise StartupError(f"the {what} {path} exists but is not a directory ({flag})") from exc
    except OSError as exc:
        raise StartupError(
            f"cannot create the {what} {path}: {exc.strerror or exc} (set {flag} to a writable directory)"
        ) from exc
    if not path.is_dir():
        raise StartupError(f"the {what} {path} is not a directory ({flag})")
    # os.access answers "yes" to root even on a read-only file system, so really try.
    probe = path / f".ds01-write-test-{os.getpid()}"
    try:
        probe.touch(mode=0o600)
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"the {what} {path} is not writable: {exc.strerror or exc} (set {flag} to a writable directory)"
        ) from exc


def preflight(settings: Settings) -> None:
    _check_writable_dir(settings.state_dir, "state directory", "--state-dir/DS01_STATE_DIR")
    _check_writable_dir(settings.events_log.parent, "event log directory", "--events-log/DS01_EVENTS_LOG")
    _check_writable_dir(settings.ledger.parent, "ledger directory", "--ledger/DS01_LEDGER")


def main(argv: list[str] | None = None) -> int:
    from controller.flags import UsageError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.error("a command is required: run")
    except UsageError as exc:  # one line: what is wrong, the flag meant, where to read more
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    from controller.settings import SettingsError, settings_from

    try:
        settings = settings_from(args)
    except SettingsError as exc:
        print(f"ds01-controller: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_format)
    from loguru import logger

    try:
        return _start(settings, once=bool(args.once))
    except StartupError as exc:
        logger.error("cannot start: {}", exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        from controller.startup import one_line_error

        logger.error("cannot start: {}", one_line_error(exc))
        if os.environ.get("DS01_DEBUG"):
            logger.opt(exception=exc).debug("details")
        return EXIT_ERROR


def _start(settings: Settings, *, once: bool) -> int:
    from loguru import logger

    from controller.startup import describe_settings
    from controller.wiring import check_docker
    from desired_state.errors import PolicyLoadError
    from desired_state.load import RELOAD_SETTLE_S, PolicyHolder

    preflight(settings)
    try:
        policy = PolicyHolder(settings.specs, settings.ds01_config, settle_s=RELOAD_SETTLE_S)
    except PolicyLoadError as exc:
        # One line per problem (each names file, line, field and fix); usually exactly one.
        for err in exc.errors or (str(exc),):
            logger.error("cannot start: invalid policy: {}", err)
        return EXIT_ERROR
    logger.info("ds01-controller starting: {}", describe_settings(settings))
    if settings.dry_run:
        logger.warning("DRY-RUN: nothing will be stopped, removed, killed, reset or released")
    if once:
        problem = check_docker(settings)
        if problem is not None:
            logger.error(
                "cannot run a pass: {}; a plan without Docker would show no container action", problem
            )
            return EXIT_ERROR
    from controller.wiring import run

    def print_plan(result: PassResult) -> None:
        from controller.cli.planview import render_plan_table

        print(render_plan_table(result.plan), flush=True)

    return run(settings, policy, once=once, on_pass=print_plan if once else None)


if __name__ == "__main__":
    sys.exit(main())
