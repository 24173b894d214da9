"""Settings shared by the daemon (``ds01-controller``) and the CLI (``ds01ctl``).

One environment file serves both: every flag has a ``DS01_*`` environment equivalent; a flag given
on the command line wins over the environment, which wins over the default. This module only parses
and validates; it performs no I/O beyond reading ``os.environ``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The flags and defaults live in controller.flags (no pydantic), so ``--help`` stays light.
from controller.flags import (  # noqa: F401  (re-exported: the settings' public names)
    DEFAULT_DOCKER_PIDFILE,
    DEFAULT_EVENTS_LOG,
    DEFAULT_INVENTORY_NAME,
    DEFAULT_LEDGER,
    DEFAULT_SPECS_DIR,
    DEFAULT_STATE_DIR,
    add_common_flags,
)

MIN_PORT = 1
MAX_PORT = 65535


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    specs: Path | None = Field(default=None, description="Directory of CRD-like YAML specs")
    ds01_config: Path | None = Field(default=None, description="DS01 config dir holding resource-limits.yaml")
    state_dir: Path = DEFAULT_STATE_DIR
    events_log: Path = DEFAULT_EVENTS_LOG
    ledger: Path = DEFAULT_LEDGER
    interval_s: float = 30.0
    dry_run: bool = False
    docker_timeout_s: float = 10.0
    metrics_addr: str = "127.0.0.1"
    metrics_port: int | None = None
    log_format: str = "text"
    docker_pidfile: Path = Field(
        default=DEFAULT_DOCKER_PIDFILE,
        description="The engine's pidfile (its start time tells a restart's stops from users'); env only",
    )

    @property
    def inventory_path(self) -> Path:
        return self.state_dir / DEFAULT_INVENTORY_NAME


# flag dest -> (environment variable, kind)
_ENV: dict[str, tuple[str, str]] = {
    "specs": ("DS01_SPECS", "path"),
    "ds01_config": ("DS01_DS01_CONFIG", "path"),
    "state_dir": ("DS01_STATE_DIR", "path"),
    "events_log": ("DS01_EVENTS_LOG", "path"),
    "ledger": ("DS01_LEDGER", "path"),
    "interval_s": ("DS01_INTERVAL", "float"),
    "dry_run": ("DS01_DRY_RUN", "bool"),
    "metrics_addr": ("DS01_METRICS_ADDR", "str"),
    "metrics_port": ("DS01_METRICS_PORT", "int"),
    "log_format": ("DS01_LOG_FORMAT", "str"),
    "docker_pidfile": ("DS01_DOCKER_PIDFILE", "path"),
}


class SettingsError(ValueError):
    """A flag or environment variable has a value that cannot be used."""


def parse_seconds(raw: str) -> float:
    """A positive interval: the project's duration syntax (``30s``, ``1m30s``) or a plain number of
    seconds (``30``, as the flag always took). Raises ``ValueError`` saying what to write."""
    from crd_like_specs.durations import DurationError, parse_duration

    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text)
        except DurationError:
            raise ValueError(f"{raw!r} is not a duration; write e.g. 30s, 2m or 1m30s") from None
    if not value > 0 or value != value:
        raise ValueError(f"{raw!r} must be a positive duration, e.g. 30s")
    return value


def _convert(name: str, env_name: str, kind: str, raw: str) -> object:
    try:
        if kind == "path":
            return Path(raw) if raw else None
        if kind == "float":
            return parse_seconds(raw)
        if kind == "int":
            return int(raw)
        if kind == "bool":
            low = raw.strip().lower()
            if low in {"1", "true", "yes", "on"}:
                return True
            if low in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError("expected 1/0, true/false, yes/no")
        return raw
    except ValueError as exc:
        raise SettingsError(f"{env_name}={raw!r} is not valid for {name}: {exc}") from exc


# The other DS01_* variables the daemon and ds01ctl read (controller.envfile, controller.main).
_OTHER_VARIABLES = frozenset({"DS01_ENV_FILE", "DS01_CONTROLLER_ARGS", "DS01_DEBUG"})


def _misspelt(env: Mapping[str, str]) -> None:
    """A ``DS01_*`` variable that is nearly the name of a setting is a typo, not another program's:
    ignored, ``DS01_DRYRUN=1`` let the daemon act, ``DS01_SPEC`` ran the built-in default policy."""
    known = {name for name, _ in _ENV.values()} | _OTHER_VARIABLES
    unknown = sorted(name for name in env if name.startswith("DS01_") and name not in known)
    if not unknown:
        return  # (the usual case: difflib is not imported at every ds01ctl start)
    import difflib

    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.85)
        if close:
            raise SettingsError(f"{name} is not a setting: did you mean {close[0]}? (rename it)")


def settings_from(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Merge parsed flags over ``DS01_*`` variables over defaults."""
    env = os.environ if environ is None else environ
    _misspelt(env)
    values: dict[str, object] = {}
    for dest, (env_name, kind) in _ENV.items():
        if env_name in env:
            converted = _convert(dest, env_name, kind, env[env_name])
            if converted is not None:
                values[dest] = converted
    for dest in _ENV:
        flag_value = getattr(args, dest, None)
        if flag_value is None or flag_value is False:
            continue
        values[dest] = Path(flag_value) if _ENV[dest][1] == "path" else flag_value
    if values.get("log_format", "text") not in {"text", "json"}:
        raise SettingsError(f"log format {values['log_format']!r} is not one of text, json")
    interval_s = values.get("interval_s")
    if isinstance(interval_s, float) and not interval_s > 0:
        raise SettingsError(f"--interval {interval_s:g} must be a positive number of seconds")
    port = values.get("metrics_port")
    if isinstance(port, int) and not MIN_PORT <= port <= MAX_PORT:
        raise SettingsError(
            f"metrics port {port} is not in {MIN_PORT}-{MAX_PORT} (--metrics-port/DS01_METRICS_PORT)"
        )
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        raise SettingsError(f"{name}: {first.get('msg')}") from exc
