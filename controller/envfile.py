"""The daemon's environment file, read the way systemd's ``EnvironmentFile=`` reads it.

``ds01ctl`` must look at the same specs, DS01 config and state as the running daemon, whose
settings come from ``/etc/ds01/controller.env`` through the unit's ``EnvironmentFile=`` and from the
flags in ``$DS01_CONTROLLER_ARGS``. This module turns that file into the ``DS01_*`` variables the
daemon sees (the flags included), without a shell: no ``export``, no ``$VAR`` expansion.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

DEFAULT_ENV_FILE = Path("/etc/ds01/controller.env")
ENV_FILE_VARIABLE = "DS01_ENV_FILE"
CONTROLLER_ARGS = "DS01_CONTROLLER_ARGS"
DRY_RUN = "DS01_DRY_RUN"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Flags of `ds01-controller run` that name what ds01ctl must look at -> their DS01_* variable.
_FLAG_VARIABLES = {
    "--specs": "DS01_SPECS",
    "--ds01-config": "DS01_DS01_CONFIG",
    "--state-dir": "DS01_STATE_DIR",
    "--events-log": "DS01_EVENTS_LOG",
    "--ledger": "DS01_LEDGER",
}


def _unquote_double(text: str) -> str:
    return re.sub(r"\\([\"\\`$\n])", r"\1", text)


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd reads them: ``#``/``;`` comments, quotes, ``\\`` continuations.

    Lines that are not assignments (``export X=1``, a bad name) are skipped, as systemd skips them.
    """
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line[0] in "#;":
            continue
        while line.endswith("\\") and i < len(lines):  # a continuation joins the next line
            line = line[:-1] + lines[i].strip()
            i += 1
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _NAME.fullmatch(key):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = _unquote_double(value[1:-1])
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        out[key] = value
    return out


def daemon_environment(values: dict[str, str]) -> dict[str, str]:
    """The ``DS01_*`` variables the daemon runs with: the file's, then its flags in CONTROLLER_ARGS.

    The unit passes ``$DS01_CONTROLLER_ARGS`` split on whitespace to ``ds01-controller run``; a flag
    there wins over the variable, as it does in the daemon.
    """
    env = dict(values)
    words = values.get(CONTROLLER_ARGS, "").split()
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    for flag, variable in _FLAG_VARIABLES.items():
        parser.add_argument(flag, dest=variable)
    parser.add_argument("--dry-run", dest=DRY_RUN, action="store_const", const="1")
    try:
        flags, _ = parser.parse_known_args(words)
    except (argparse.ArgumentError, SystemExit):
        return env
    for variable, value in vars(flags).items():
        if value is not None:
            env[variable] = value
    return env


def read_env_file(path: Path) -> dict[str, str]:
    """What the daemon looks at (specs, DS01 config, state, event log, ledger) and whether it runs in
    dry-run, from its environment file, as ``DS01_*`` variables; raises ``OSError``.

    The dry-run is the shipped setting: ``ds01ctl`` says so on every view that plans (nothing it
    lists is carried out), and ``ds01ctl reconcile`` runs in dry-run too unless told
    ``--no-dry-run`` (it acted for real while the daemon beside it only reported). The daemon's
    interval or metrics port say nothing about what ``ds01ctl`` shows.
    """
    env = daemon_environment(parse_env_file(path.read_text(encoding="utf-8", errors="replace")))
    return {k: v for k, v in env.items() if k in _FLAG_VARIABLES.values() or k == DRY_RUN}
