"""Text output for ``ds01ctl``: kubectl-like aligned tables, relative ages, colour, JSON and YAML.

Called by the command modules. Pure formatting: no Docker, no NVML, no state store; the only I/O is
the colour decision (is the stream a terminal, is ``NO_COLOR`` set). Every user-chosen string
(container names, labels, commands, owners) must go through :func:`clean` before it reaches a cell,
so nothing a user names a container can move the cursor or break a column.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from controller.units import binary_size

COLUMN_GAP = "   "
DEFAULT_MAX_CELL = 80
# The one spelling of a value that could not be known, in every human view ("?", "n/a" and "-"
# are not used for it; "-" means "none" or "does not apply").
UNKNOWN = "unknown"
MACHINE_MAX = 4096  # user strings in -o json/yaml are cleaned too, with room for long values

_ANSI = {
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
    "bold": "1",
    "dim": "2",
}


def clean(value: object, max_len: int = DEFAULT_MAX_CELL) -> str:
    """A user-chosen string made safe for one table cell or one line of text."""
    from controller.act.sanitize import clean as sanitize

    return sanitize("" if value is None else str(value), max_len)


def clean_tree(value: Any, max_len: int = MACHINE_MAX) -> Any:
    """Every string in a JSON-able value (keys too), cleaned; the shape is unchanged."""
    if isinstance(value, str):
        return clean(value, max_len)
    if isinstance(value, Mapping):
        return {clean(str(k), 256): clean_tree(v, max_len) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_tree(v, max_len) for v in value]
    return value


def colour_enabled(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (https://no-color.org)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR", "") != "":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@dataclass(frozen=True)
class Style:
    """Applies ANSI colour when enabled; the identity otherwise (golden tests run with it off)."""

    enabled: bool = False

    def __call__(self, text: str, colour: str | None) -> str:
        if not self.enabled or not colour or colour not in _ANSI or not text:
            return text
        return f"\x1b[{_ANSI[colour]}m{text}\x1b[0m"


PLAIN = Style(False)


@dataclass(frozen=True)
class Cell:
    """A table cell with an optional colour; the colour never counts towards the column width."""

    text: str
    colour: str | None = None


CellLike = str | Cell


class Table:
    """Plain aligned columns, upper-case headers, three spaces between columns, no box drawing."""

    def __init__(self, headers: Sequence[str]) -> None:
        self.headers = [h.upper() for h in headers]
        self.rows: list[list[Cell]] = []

    def add(self, cells: Sequence[CellLike]) -> None:
        if len(cells) != len(self.headers):
            raise ValueError(f"row has {len(cells)} cells for {len(self.headers)} columns")
        self.rows.append([c if isinstance(c, Cell) else Cell(c) for c in cells])

    def render(self, style: Style = PLAIN) -> str:
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell.text))
        lines = [_join([Cell(h) for h in self.headers], widths, style)]
        lines.extend(_join(row, widths, style) for row in self.rows)
        return "\n".join(lines) + "\n"


def _join(cells: Sequence[Cell], widths: Sequence[int], style: Style) -> str:
    parts: list[str] = []
    last = len(cells) - 1
    for i, cell in enumerate(cells):
        pad = "" if i == last else " " * (widths[i] - len(cell.text))
        parts.append(style(cell.text, cell.colour) + pad)
    return COLUMN_GAP.join(parts).rstrip()


# --- durations and times ---------------------------------------------------------------------


def fmt_age(seconds: float | None) -> str:
    """A relative age in one unit, rounded down, like kubectl: ``45s``, ``5m``, ``3h``, ``2d``.

    Hours are shown up to 48 h so that "remove in 36h" does not read as "1d".
    """
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def fmt_duration(seconds: float | None, never: str = "never") -> str:
    """A configured duration, exact: ``1h``, ``1h30m``, ``45s``, ``2d``; ``None`` is ``never``."""
    if seconds is None:
        return never
    total = round(seconds)
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return sign + "".join(parts)


def since(then: datetime | None, now: datetime) -> str:
    """Age of a past instant relative to ``now`` (``5m``); ``unknown`` when the instant is."""
    if then is None:
        return UNKNOWN
    return fmt_age((now - then).total_seconds())


def age(then: datetime | None, now: datetime) -> str:
    """An AGE cell: :func:`since` for an instant past, ``in 5m`` (as :func:`until` says) for one a
    second or more after ``now``: written before the wall clock was stepped back, not just now."""
    if then is not None and (then - now).total_seconds() >= 1:
        return until(then, now)
    return since(then, now)


def ago(then: datetime, now: datetime) -> str:
    """For sentences: ``5m ago``, or ``2h after now`` for an instant a second or more after ``now``
    (recorded while the wall clock was ahead), never ``0s ago``."""
    ahead_s = (then - now).total_seconds()
    if ahead_s >= 1:
        return f"{fmt_age(ahead_s)} after now"
    return f"{since(then, now)} ago"


def until(when: datetime | None, now: datetime) -> str:
    """``in 12m`` for a future instant, ``now`` for one already due, ``-`` when unknown."""
    if when is None:
        return "-"
    delta_s = (when - now).total_seconds()
    if delta_s <= 0:
        return "now"
    # Round up: "in 0s" would read as already due.
    return "in " + fmt_age(delta_s + 0.999)


# Human output shows local time with its zone (``--utc``: UTC); machine output is always ISO UTC.
_HUMAN_ZONE: dict[str, bool] = {"utc": False}


def set_utc(utc: bool) -> None:
    """``ds01ctl --utc``: human times in UTC instead of the local zone."""
    _HUMAN_ZONE["utc"] = utc


def _human(when: datetime) -> datetime:
    from datetime import UTC

    return when.astimezone(UTC) if _HUMAN_ZONE["utc"] else when.astimezone()


def _zone(when: datetime) -> str:
    return when.tzname() or when.strftime("%z")


def clock(when: datetime | None, now: datetime) -> str:
    """Wall-clock time for a timer line, with its zone: ``10:05 CET`` today,
    ``2024-05-01 10:05 CET`` otherwise (local time; UTC with ``--utc``)."""
    if when is None:
        return "-"
    when, now = _human(when), _human(now)
    if when.date() == now.date():
        return when.strftime("%H:%M ") + _zone(when)
    return when.strftime("%Y-%m-%d %H:%M ") + _zone(when)


def stamp(when: datetime | None) -> str:
    """A full time for people: ``2026-11-25 15:18:52 CET`` (no microseconds); ``unknown`` when unknown."""
    if when is None:
        return UNKNOWN
    when = _human(when).replace(microsecond=0)
    return when.strftime("%Y-%m-%d %H:%M:%S ") + _zone(when)


def iso(when: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z`` suffix, for machine output (a time read with another offset,
    such as a ledger row DS01's allocator wrote in local time, is given in UTC too)."""
    if when is None:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.isoformat().replace("+00:00", "Z")


# --- sizes and rates -------------------------------------------------------------------------


def fmt_bytes(n: float | None) -> str:
    """Binary units, one decimal under 10: ``512B``, ``1.5Ki``, ``80Gi``; ``-`` when unknown."""
    return "-" if n is None else binary_size(n)


def evidence_value(key: str, value: Any) -> Any:
    """An evidence value as shown to people: sizes (``*_bytes`` keys) in :func:`fmt_bytes` units.
    JSON output keeps the raw numbers."""
    if key.endswith("_bytes") and isinstance(value, int | float) and not isinstance(value, bool):
        return fmt_bytes(value)
    return value


def known_bytes(n: float | None) -> str:
    """:func:`fmt_bytes` for a reading that exists but could not be had: ``unknown``, not ``-``."""
    return UNKNOWN if n is None else fmt_bytes(n)


def fmt_percent(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.0f}%" if p >= 10 or p == 0 else f"{p:.1f}%"


# --- machine output --------------------------------------------------------------------------


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=True) + "\n"


def to_yaml(data: Any) -> str:
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=False))


def machine(data: Any, fmt: str) -> str:
    return to_yaml(data) if fmt == "yaml" else to_json(data)


# --- sections for describe -------------------------------------------------------------------


class Sections:
    """kubectl-describe layout: ``Key:  value`` lines aligned within a block, indented sub-blocks."""

    def __init__(self, style: Style = PLAIN) -> None:
        self.style = style
        self._lines: list[str] = []

    def heading(self, title: str) -> None:
        self._lines.append(f"{title}:")

    def fields(self, pairs: Iterable[tuple[str, str]], indent: int = 0) -> None:
        items = list(pairs)
        if not items:
            return
        width = max(len(k) for k, _ in items) + 1
        pad = " " * indent
        for key, value in items:
            self._lines.append(f"{pad}{(key + ':').ljust(width)}  {value}".rstrip())

    def line(self, text: str, indent: int = 0) -> None:
        self._lines.append((" " * indent + text).rstrip())

    def table(self, table: Table, indent: int = 2) -> None:
        for row in table.render(self.style).splitlines():
            self.line(row, indent)

    def render(self) -> str:
        return "\n".join(self._lines) + "\n"
