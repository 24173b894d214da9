"""The configuration flags every command accepts, and their defaults (daemon and CLI alike).

Kept apart from :mod:`controller.settings` (which validates with pydantic) so that building the
parsers, and ``--help``, imports nothing heavy. Called by both entry points' parsers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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
