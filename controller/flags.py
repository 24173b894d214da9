"""What both entry points' parsers share (daemon and CLI alike): the configuration flags every command
accepts and their defaults, and the parser class whose errors suggest what was meant.

Kept apart from :mod:`controller.settings` (which validates with pydantic) so that building the
parsers, and ``--help``, imports nothing heavy. Called by both entry points' parsers.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

DEFAULT_STATE_DIR = Path("/var/lib/ds01")
DEFAULT_EVENTS_LOG = Path("/var/log/ds01/events.jsonl")
DEFAULT_LEDGER = Path("/var/lib/ds01/gpu-ledger.json")
DEFAULT_SPECS_DIR = Path("/etc/ds01/specs")
DEFAULT_INVENTORY_NAME = "workload-inventory.json"
DEFAULT_DOCKER_PIDFILE = Path("/var/run/docker.pid")


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """The configuration flags every command accepts (daemon and CLI alike)."""
    g = parser.add_argument_group("configuration (each also read from the DS01_* variable shown)")
    g.add_argument("--specs", metavar="DIR", help="directory of CRD-like YAML specs [DS01_SPECS]")
    g.add_argument(
        "--ds01-config",
        metavar="DIR",
        help="DS01 config directory with resource-limits.yaml [DS01_DS01_CONFIG]",
    )
    g.add_argument(
        "--state-dir", metavar="DIR", help=f"controller state [DS01_STATE_DIR] ({DEFAULT_STATE_DIR})"
    )
    g.add_argument("--events-log", metavar="FILE", help=f"event log [DS01_EVENTS_LOG] ({DEFAULT_EVENTS_LOG})")
    g.add_argument("--ledger", metavar="FILE", help=f"GPU allocation ledger [DS01_LEDGER] ({DEFAULT_LEDGER})")


def closest(word: str, options: Iterable[str]) -> str | None:
    """The one of ``options`` a mistyped ``word`` most likely meant; ``None`` when none is close."""
    import difflib

    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return close[0] if close else None


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every flag of ``parser`` and of its subcommands."""
    out: set[str] = set()
    for action in parser._actions:
        out.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out |= _option_strings(sub)
    return out


def did_you_mean(parser: argparse.ArgumentParser, message: str) -> str:
    """``; did you mean --since?`` for argparse's error ``message`` about a mistyped flag, subcommand
    or choice; ``""`` otherwise."""
    import re

    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if choice:
        # The choices are quoted up to Python 3.13, bare after.
        options = re.findall(r"'([^']*)'", choice[2]) or [c.strip() for c in choice[2].split(",")]
        meant = closest(choice[1], options)
        return f"; did you mean {meant!r}?" if meant else ""
    unknown = re.search(r"unrecognized arguments: (.*)", message)
    if unknown:
        flag = next((w.split("=", 1)[0] for w in unknown[1].split() if w.startswith("--")), None)
        if flag is not None:
            meant = closest(flag, sorted(_option_strings(parser)))
            return f"; did you mean {meant}?" if meant else ""
    return ""


class SuggestingParser(argparse.ArgumentParser):
    """An argument parser whose usage errors end with ``; did you mean ...?`` when the mistyped
    subcommand, choice or flag is close to one it knows (pass it as ``parser_class`` to
    ``add_subparsers`` so that subcommands suggest too)."""

    def error(self, message: str) -> NoReturn:
        super().error(message + did_you_mean(self, message))


class UsageError(Exception):
    """Bad usage, as the one line to print (``prog: what is wrong; did you mean ...? (see --help)``)."""


class OneLineParser(SuggestingParser):
    """A parser whose usage errors raise :class:`UsageError` with one line instead of printing the
    usage block and exiting 2 (as kubectl: the error and where to read more); both entry points
    catch it, print it and exit 1."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}{did_you_mean(self, message)} (see '{self.prog} --help')")
