"""Durations: our unit-bearing strings, DS01's unit-in-the-key numbers, and the exact round trip."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from crd_like_specs.durations import (
    MAX_SECONDS,
    UNIT_SECONDS,
    DurationError,
    Seconds,
    ds01_number_to_seconds,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("30m", 1800.0),
        ("1.5h", 5400.0),
        ("0.5h", 1800.0),
        (".25h", 900.0),
        ("7d", 604800.0),
        ("1w", 604800.0),
        ("1h30m", 5400.0),
        ("0s", 0.0),
        (" 2h ", 7200.0),
    ],
)
def test_parse_accepts_numbers_with_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("48", "no unit and is ambiguous"),  # the DS01 `max_runtime: 48` incident
        ("0", "no unit and is ambiguous"),
        ("-5m", "negative"),
        ("-0.5h", "negative"),
        ("5M", "not a duration"),  # months? minutes? rejected, not guessed
        ("1e3s", "not a duration"),
        ("1 h", "not a duration"),
        ("h", "not a duration"),
        ("", "empty"),
        ("soon", "not a duration"),
    ],
)
def test_parse_rejects_with_an_actionable_message(text: str, message: str) -> None:
    with pytest.raises(DurationError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (60, "60s"),
        (90, "90s"),
        (1800, "30m"),
        (3600, "1h"),
        (86400, "24h"),
        (172800, "48h"),
        (604800, "7d"),
        (5400, "90m"),
        (298.8, "298.8s"),
        (1e-05, "0.00001s"),
    ],
)
def test_format_prefers_readable_units(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_format_refuses_what_is_not_a_duration(bad: float) -> None:
    with pytest.raises(DurationError):
        format_duration(bad)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=MAX_SECONDS, allow_nan=False, allow_infinity=False))
def test_format_then_parse_is_exact(seconds: float) -> None:
    text = format_duration(seconds)
    assert parse_duration(text) == seconds


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["s", "m", "h", "d", "w"]))
def test_parse_then_format_then_parse_agrees(number: int, unit: str) -> None:
    assume(number * UNIT_SECONDS[unit] <= MAX_SECONDS)
    seconds = parse_duration(f"{number}{unit}")
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("value", "unit", "seconds"),
    [
        (0.5, "h", 1800.0),
        (24, "h", 86400.0),
        (30, "m", 1800.0),
        (60, "s", 60.0),
        (0, "h", 0.0),
        (0.083, "h", 0.083 * 3600),
    ],
)
def test_ds01_bare_numbers_take_the_unit_from_the_key(value: float, unit: str, seconds: float) -> None:
    assert ds01_number_to_seconds(value, unit) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("24h", "unit is already in the key name"),
        ("24", "unit is already in the key name"),
        (-1, "negative"),
        (True, "not a number"),
        (math.inf, "not a finite number"),
        (math.nan, "not a finite number"),
        ([1], "not a number"),
    ],
)
def test_ds01_rejects_what_ds01_turned_into_a_silent_zero(value: object, message: str) -> None:
    with pytest.raises(DurationError, match=message):
        ds01_number_to_seconds(value, "h")


def test_ds01_string_error_suggests_the_bare_number() -> None:
    with pytest.raises(DurationError, match="bare number such as 24"):
        ds01_number_to_seconds("24h", "h")
    with pytest.raises(DurationError, match="bare number such as 30"):
        ds01_number_to_seconds("30m", "m")


def test_seconds_are_taken_by_the_kinds_as_they_are() -> None:
    from crd_like_specs.durations import Seconds
    from crd_like_specs.kinds import Settings

    settings = Settings.model_validate({"idleTimeout": Seconds.of(1800), "gracePeriod": Seconds.of(0.25)})
    assert settings.idle_timeout == 1800.0 and settings.grace_period == 0.25
    assert settings.model_dump(mode="json", exclude_unset=True) == {
        "idleTimeout": "30m",
        "gracePeriod": "0.25s",
    }
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(DurationError):
            Seconds.of(bad)


def test_a_duration_longer_than_a_century_is_an_error_not_an_overflow_in_every_pass() -> None:
    """``maxRuntime: 100000000h`` (never, as someone might write it) passed validation, then failed
    every pass: the planner could not add it to the time of the pass."""
    assert parse_duration("5200w") <= MAX_SECONDS  # 100 years, in the largest unit, is accepted
    for write in (lambda: parse_duration("100000000h"), lambda: parse_duration("5300w")):
        with pytest.raises(DurationError, match="longer than 100 years; write null for never"):
            write()
    with pytest.raises(DurationError, match="1000000 hours is longer than 100 years"):
        ds01_number_to_seconds(1_000_000, "h")
    with pytest.raises(DurationError, match="longer than 100 years"):
        Seconds.of(MAX_SECONDS + 1)
    assert Seconds.of(MAX_SECONDS).value == MAX_SECONDS
