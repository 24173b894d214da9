"""Durations: the one place where a spoken duration (``"90s"``, ``"1.5h"``) becomes seconds and back.

Two dialects exist and are kept apart on purpose:

* **Our kinds** write durations as strings with a unit: ``90s``, ``30m``, ``1.5h``, ``7d``, ``1w``,
  or a compound such as ``1h30m``. A plain number is rejected: whether ``48`` meant seconds or hours
  is exactly the ambiguity that once stopped DS01 containers right after launch. ``null`` means
  never / no limit and is handled by the caller (some keys may not be null).
* **DS01's files** put the unit in the key (``idle_timeout_h: 0.5``, ``grace_period_m: 30``) and the
  value is a bare number; :func:`ds01_number_to_seconds` converts those. A string there (``"24h"`` in
  an ``_h`` key) is an error, never a silent 0 as in DS01's own converter.

Lives with the kinds, below :mod:`desired_state`, so the kinds never import upward. Called by the
kinds (:mod:`crd_like_specs.kinds`), the DS01 importer, the daemon's settings and the CLI. Pure
functions, no I/O.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

UNIT_SECONDS: Final[dict[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# One or more <number><unit> parts, no sign, no exponent, no spaces inside: "90s", "1.5h", "1h30m".
_PART = r"(?:\d+(?:\.\d+)?|\.\d+)[smhdw]"
DURATION_PATTERN: Final = rf"^(?:{_PART})+$"
_DURATION_RE = re.compile(DURATION_PATTERN)
_PART_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)([smhdw])")

EXAMPLES: Final = "'90s', '30m', '1.5h', '7d' or '1h30m'"
# The longest duration accepted: 100 years. A longer one ("never, written as 100000000h") would
# overflow a date once added to the time of a pass, and fail every pass; never is null.
MAX_SECONDS: Final = 100 * 365 * 86400


def _within_bounds(seconds: float, what: object) -> float:
    if seconds > MAX_SECONDS:
        raise DurationError(f"{what} is longer than 100 years; write null for never")
    return seconds


class DurationError(ValueError):
    """A value that is not a duration we accept; the message says what to write instead."""


@dataclass(frozen=True, slots=True)
class Seconds:
    """A duration already in seconds, handed to the kinds as a value rather than as text.

    The DS01 importer converts DS01's bare numbers (``idle_timeout_h: 0.5``) to this, and the
    kinds' duration fields take it as it is: nothing is formatted as ``"30m"`` to be parsed back.
    Build it with :meth:`of`, which refuses what no duration field accepts.
    """

    value: float

    @classmethod
    def of(cls, seconds: float) -> Seconds:
        """``seconds`` as a duration; :class:`DurationError` for a negative or non-finite number."""
        if not math.isfinite(seconds) or seconds < 0:
            raise DurationError(f"{seconds!r} seconds is not a duration (negative or not finite)")
        return cls(_within_bounds(float(seconds), f"{seconds:g} seconds"))


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (a duration string with units). Raises :class:`DurationError`."""
    stripped = text.strip()
    if not stripped:
        raise DurationError(f"an empty string is not a duration; write {EXAMPLES}, or null for never")
    if stripped.startswith("-"):
        raise DurationError(f"negative duration {text!r}: durations cannot be negative; write e.g. '0s'")
    if _DURATION_RE.match(stripped) is None:
        if _looks_numeric(stripped):
            raise DurationError(
                f"{text!r} has no unit and is ambiguous (seconds? hours?); write e.g. '{stripped}h' or "
                f"'{stripped}m' ({EXAMPLES}), or null for never"
            )
        raise DurationError(
            f"{text!r} is not a duration; write a number with a unit s, m, h, d or w such as {EXAMPLES}"
        )
    total = 0.0
    for number, unit in _PART_RE.findall(stripped):
        total += float(number) * UNIT_SECONDS[unit]
    if not math.isfinite(total):
        raise DurationError(f"{text!r} is too large")
    return _within_bounds(total, repr(text))


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def format_duration(seconds: float) -> str:
    """A short duration string whose :func:`parse_duration` is exactly ``seconds``.

    Prefers whole days, hours or minutes, then short fractional hours, then seconds; every candidate
    is checked by parsing it back, and the last one (shortest exact decimal of the seconds) always
    reads back exactly, so the round trip holds for every finite non-negative value.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise DurationError(f"cannot format {seconds!r} as a duration")
    candidates: list[str] = []
    whole = seconds == int(seconds)
    if whole and seconds < 120:  # sigterm graces and such read best in seconds: 60s, not 1m
        candidates.append(f"{int(seconds)}s")
    for unit, minimum in (("d", 7), ("h", 1), ("m", 1)):  # 48h rather than 2d; 7d for a week
        quotient = seconds / UNIT_SECONDS[unit]
        if quotient >= minimum and quotient == int(quotient):
            candidates.append(f"{int(quotient)}{unit}")
    # DS01 speaks in fractional hours (0.25, 0.083): keep those readable when they are short.
    hours = _plain(seconds / UNIT_SECONDS["h"])
    if seconds >= 0.1 * UNIT_SECONDS["h"] and len(hours) <= 6:
        candidates.append(f"{hours}h")
    candidates.append(f"{_plain(seconds)}s")
    for candidate in candidates:
        if parse_duration(candidate) == seconds:
            return candidate
    raise DurationError(f"cannot format {seconds!r} as a duration")  # pragma: no cover - repr always works


def _plain(value: float) -> str:
    """``value`` written without an exponent, in the shortest digits that read back exactly."""
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def ds01_number_to_seconds(value: object, unit: str) -> float:
    """Seconds for a DS01 bare number whose unit (``h``, ``m``, ``s``) is in the key name.

    Raises :class:`DurationError` for strings, booleans, negatives and non-finite numbers; ``None``
    (never) is the caller's business.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, str):
            raise DurationError(
                f"{value!r} is a string but the unit is already in the key name (_{unit}); "
                + _string_fix(value, unit)
            )
        raise DurationError(f"{value!r} is not a number; write a bare number of {_UNIT_WORDS[unit]}")
    if not math.isfinite(value):
        raise DurationError(f"{value!r} is not a finite number")
    if value < 0:
        raise DurationError(f"negative duration {value!r}; write 0 or a positive number, or null for never")
    return _within_bounds(float(value) * UNIT_SECONDS[unit], f"{value} {_UNIT_WORDS[unit]}")


_UNIT_WORDS: Final = {"s": "seconds", "m": "minutes", "h": "hours"}
# Strings DS01's converter reads as no limit (it returns -1 for them).
_DS01_NO_LIMIT: Final = frozenset({"", "null", "none", "never", "indefinite"})


def means_no_limit(text: str) -> bool:
    """Whether DS01's converter reads the string ``text`` as no limit ("never", "none", ...)."""
    return text.strip().lower() in _DS01_NO_LIMIT


def _string_fix(text: str, unit: str) -> str:
    """What to write instead of the string ``text`` in a key whose unit is ``unit``: the fix keeps
    what the admin meant (a number suggested for 'never' would set a limit where none was meant)."""
    if means_no_limit(text):
        return "DS01 reads it as no limit: write null (no limit)"
    if _looks_numeric(text) and math.isfinite(float(text)):
        return f"write {_plain(float(text))} without the quotes"
    return f"write a bare number such as {_strip_unit(text, unit)}"


def _strip_unit(text: str, unit: str) -> str:
    """Best guess at the bare number an admin meant: '24h' in an _h key -> '24'."""
    try:
        seconds = parse_duration(text)
    except DurationError:
        return "24" if unit == "h" else "30"
    value = seconds / UNIT_SECONDS[unit]
    return _plain(value)
