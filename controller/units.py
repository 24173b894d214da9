"""Sizes as people read them, one style for the planner's messages and ``ds01ctl``'s tables.

Binary units, one decimal under 10: ``512B``, ``1.5Ki``, ``3.0Gi``, ``80Gi``. Pure; the JSON
output and the evidence keep the raw number of bytes.
"""

from __future__ import annotations


def binary_size(n: float) -> str:
    """``n`` bytes in binary units (``B``, ``Ki``, ``Mi``, ``Gi``, ``Ti``)."""
    value = float(n)
    for unit in ("B", "Ki", "Mi", "Gi"):
        if abs(value) < 1024:
            if unit == "B":
                return f"{int(value)}B"
            return f"{value:.1f}{unit}" if abs(value) < 10 else f"{value:.0f}{unit}"
        value /= 1024
    return f"{value:.1f}Ti" if abs(value) < 10 else f"{value:.0f}Ti"
