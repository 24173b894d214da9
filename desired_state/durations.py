"""Re-export of :mod:`crd_like_specs.durations`, where durations now live (below this package).

Import from :mod:`crd_like_specs.durations`; this module only keeps older imports working.
"""

from __future__ import annotations

from crd_like_specs.durations import (
    DURATION_PATTERN,
    EXAMPLES,
    UNIT_SECONDS,
    DurationError,
    ds01_number_to_seconds,
    format_duration,
    parse_duration,
)

__all__ = [
    "DURATION_PATTERN",
    "EXAMPLES",
    "UNIT_SECONDS",
    "DurationError",
    "ds01_number_to_seconds",
    "format_duration",
    "parse_duration",
]
