"""``ds01ctl plan --at`` and ``plan --policy``: the command (:mod:`controller.cli.forecastview`
holds the forecast and its formatting, which ``get`` and ``describe`` share through the gathering)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from controller.cli.forecastview import (
    DEFAULT_DIFF_HORIZON,
    diff_json,
    diff_text,
    forecast_json,
    forecast_text,
    read_otherwise,
    run_forecast,
)
from controller.cli.render import Style

if TYPE_CHECKING:
    from controller.cli.view import View
    from controller.settings import Settings


def cmd_forecast(args: argparse.Namespace, settings: Settings, at: datetime | None, style: Style) -> int:
    """``plan --at`` (a forecast) or ``plan --policy`` (two forecasts and their difference)."""
    from pathlib import Path

    from controller.cli.errors import EXIT_OK, EXIT_PENDING, CliError
    from controller.cli.gather import (
        GatherOptions,
        as_next_pass,
        gather,
        load_installed_policy,
        policy_load_error,
        read_memory,
    )
    from controller.cli.render import machine
    from controller.plan.forecast import compare

    view = gather(
        settings,
        GatherOptions(candidate=Path(args.policy) if args.policy else None, require_docker=True),
    )
    if view.plan is None or view.desired is None:
        raise CliError(
            f"cannot plan: the policy does not load ({view.policy.error}); ds01ctl validate names the problem"
        )
    for note in view.notes:
        print(f"warning: {note}", file=sys.stderr)
    if args.policy:
        horizon = at or view.snapshot.observed_at + DEFAULT_DIFF_HORIZON
    else:
        assert at is not None
        horizon = at
    # The daemon's memory as stored: the view's holds this observation's sample as judged by the
    # policy it was planned with, and each forecast judges it by its own.
    memory, _ = read_memory(settings.state_dir)
    if memory is not None:
        memory = as_next_pass(settings, memory)
    candidate = run_forecast(view, horizon, settings.interval_s, memory=memory)
    if not args.policy:
        if args.output in ("json", "yaml"):
            sys.stdout.write(machine(forecast_json(candidate), args.output))
        else:
            text = forecast_text(
                candidate,
                style,
                wide=args.output == "wide",
                idle_removes=lambda d: view.idle_stop_removes(d.target.container_id),
            )
            sys.stdout.write(text)
        return EXIT_PENDING if candidate.actions else EXIT_OK

    from controller.plan.desired import PolicySetDesired

    installed, info = load_installed_policy(settings)
    if installed is None:
        raise CliError(policy_load_error(info, settings))
    installed_desired = PolicySetDesired(installed)
    otherwise = read_otherwise(installed_desired.global_policy, view.desired.global_policy)
    if otherwise is not None:
        print(f"warning: {otherwise}", file=sys.stderr)
    current = run_forecast(
        _with_desired(view, installed_desired), horizon, settings.interval_s, memory=memory
    )
    changes = compare(current, candidate, view.snapshot.containers)
    origin = view.policy.origin.removeprefix("candidate ")
    if args.output in ("json", "yaml"):
        sys.stdout.write(machine(diff_json(changes, current, candidate, origin, horizon), args.output))
    else:
        sys.stdout.write(diff_text(changes, current, candidate, origin))
    return EXIT_PENDING if changes else EXIT_OK


def _with_desired(view: View, desired: Any) -> View:
    from dataclasses import replace

    return replace(view, desired=desired)
