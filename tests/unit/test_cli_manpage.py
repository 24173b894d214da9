"""The man page is generated from the parser and checked in; it is never stale."""

from __future__ import annotations

import argparse

from controller.cli.main import build_parser
from controller.cli.manpage import MAN_PAGE, python_version, render


def test_the_checked_in_man_page_is_the_parsers() -> None:
    checked_in = MAN_PAGE.read_text(encoding="utf-8")
    if f"(Python {python_version()})" in checked_in.splitlines()[0]:
        assert checked_in == render(), "docs/ds01ctl.1 is stale: run python -m controller.cli.manpage --write"
    else:  # another Python lays argparse's help out differently: every command and flag is there
        _names_everything(checked_in)


def test_the_man_page_names_every_command_and_flag() -> None:
    _names_everything(render())


def _names_everything(text: str) -> None:
    parser = build_parser()
    subs = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(subs) >= 9
    for name, sub in subs.items():
        assert f".SS {name}" in text
        for a in sub._actions:
            for flag in a.option_strings:
                assert flag in text, (name, flag)


def test_breaker_help_names_both_things_that_trip_it() -> None:
    # The breaker trips on a mass stop of running GPU containers and on a mass removal of stopped
    # containers (controller.plan.safety.removal_breaker); its help named only the first.
    from controller.cli.main import BREAKER_EPILOG

    first = " ".join(BREAKER_EPILOG.split("\n\n")[0].split())
    assert "stop too many GPU containers" in first and "remove too many stopped containers" in first, first
