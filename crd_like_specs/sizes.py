"""Docker's size strings (``32g``, ``512m``, ``1.5GiB``) in bytes, as ``docker --memory`` reads them.

Docker's units are binary (``k`` = 1024): ``docker run --memory 1g`` is 1 GiB. A bare number is
bytes. Used by the kinds (validation) and the resolver (effective limits in bytes). Pure.
"""

from __future__ import annotations

import re
from typing import Final

DOCKER_MIN_MEMORY_BYTES: Final = 6 * 1024 * 1024  # dockerd refuses a memory limit below 6 MiB
_SIZE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s?(?P<unit>[kKmMgGtTpP]?)[iI]?[bB]?$")
_FACTOR: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


class SizeError(ValueError):
    """A size string Docker would not accept."""


def parse_size(text: str) -> int:
    """Bytes of a Docker size string; raises :class:`SizeError`."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise SizeError(f"{text!r} is not a size such as '32g', '512m' or '1.5GiB'")
    return int(float(match.group("n")) * _FACTOR[match.group("unit").lower()])


def format_size(n_bytes: int) -> str:
    """The shortest exact binary form: ``32Gi``, ``6Mi``, ``1536Mi``, or bytes."""
    for unit, factor in (("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n_bytes >= factor and n_bytes % factor == 0:
            return f"{n_bytes // factor}{unit}"
    if n_bytes >= 1 << 20:
        return f"{n_bytes / (1 << 20):.1f}Mi"
    return f"{n_bytes}B"
