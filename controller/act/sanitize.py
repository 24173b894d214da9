"""Make user-chosen text safe to show: on a terminal, in a log line, in a table cell.

Container names, labels, command lines and user names are chosen by whoever created the
container or process, so they may carry terminal escape sequences (to repaint or hide output),
carriage returns and newlines (to forge extra log lines or table rows), NUL bytes, bidi overrides
(to make text read differently from what it is) or lone surrogates (from undecodable bytes,
which make ``json.dumps(...).encode()`` fail). :func:`clean` removes all of that and bounds the
length.

Called by the event log, the terminal notifier, the inventory writer and the CLI's formatting.
Pure string functions: no I/O, never raises on any ``str``.
"""

from __future__ import annotations

import re

ELLIPSIS = "…"
REPLACEMENT = "\ufffd"
DEFAULT_MAX_LEN = 256

# Escape sequences are removed whole (not just their ESC byte) so no printable residue of a
# colour or cursor command ("[31m") is left behind. 7-bit forms start with ESC; the 8-bit
# forms start with the C1 codes CSI (U+009B), OSC (U+009D), DCS/SOS/PM/APC (U+0090/98/9E/9F).
_ESCAPE_SEQUENCES = re.compile(
    r"""
      \x1b\[ [0-?]* [\x20-/]* [@-~]?                     # CSI ... final byte
    | \x9b   [0-?]* [\x20-/]* [@-~]?                     # 8-bit CSI
    | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])            # OSC / DCS / SOS / PM / APC ...
      [^\x07\x1b\x9c]* (?:\x07|\x1b\\|\x9c)?             # ... up to BEL or ST (or the end)
    | \x1b [\x20-/]* [0-~]?                              # other ESC sequences (charset, keypad...)
    """,
    re.VERBOSE,
)

# Whitespace controls become a space so "a\nb" stays two words; every other control goes.
_WHITESPACE_CONTROLS = dict.fromkeys(map(ord, "\t\n\v\f\r\x1c\x1d\x1e\x1f\x85\u2028\u2029"), " ")

_BIDI_AND_INVISIBLE = (
    list(range(0x202A, 0x202F))  # LRE RLE PDF LRO RLO
    + list(range(0x2066, 0x206A))  # LRI RLI FSI PDI
    + [0x200E, 0x200F, 0x061C]  # LRM RLM ALM
)


def _build_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for code in range(0x00, 0x20):
        table[code] = None
    for code in range(0x7F, 0xA0):
        table[code] = None
    for code in _BIDI_AND_INVISIBLE:
        table[code] = None
    for code in range(0xD800, 0xE000):  # lone surrogates (str can hold them; UTF-8 cannot)
        table[code] = REPLACEMENT
    table.update(_WHITESPACE_CONTROLS)
    return table


_TABLE = _build_table()


def clean(s: str, max_len: int = DEFAULT_MAX_LEN) -> str:
    """Return ``s`` without escapes, control characters, bidi overrides or lone surrogates.

    The result is at most ``max_len`` characters; when text was cut, the last character is
    ``…`` so a reader can tell. ``max_len <= 0`` gives an empty string.
    """
    if max_len <= 0:
        return ""
    if not isinstance(s, str):  # defensive: callers are typed, data from JSON may not be
        s = str(s)
    without_escapes = _ESCAPE_SEQUENCES.sub("", s)
    out = without_escapes.translate(_TABLE)
    if len(out) > max_len:
        out = out[: max_len - 1] + ELLIPSIS
    return out


def clean_bytes(raw: bytes, max_len: int = DEFAULT_MAX_LEN) -> str:
    """Decode bytes of unknown encoding (a command line, a label read raw) and clean them."""
    return clean(raw.decode("utf-8", errors="replace"), max_len)


def is_clean(s: str) -> bool:
    """True when :func:`clean` would leave ``s`` unchanged apart from truncation."""
    return clean(s, max_len=len(s) + 1) == s
