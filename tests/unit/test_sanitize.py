"""clean(): nothing a container name or label can hold reaches a terminal as a control."""

from __future__ import annotations

import json
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from controller.act.sanitize import ELLIPSIS, clean, clean_bytes, is_clean

BIDI = {*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C}


def forbidden(ch: str) -> bool:
    code = ord(ch)
    return (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or code in BIDI
        or 0xD800 <= code <= 0xDFFF
        or unicodedata.category(ch) in ("Zl", "Zp")
    )


# Every code point (lone surrogates included), mixed with pieces of escape sequences.
hostile_text = st.lists(
    st.one_of(
        st.characters(exclude_categories=()),
        st.sampled_from(
            ["\x1b", "\x9b", "\x9d", "[", "]", "31m", "0;", "\x07", "\r", "\n", "\x00", "\x1b\\"]
        ),
    ),
    max_size=300,
).map("".join)


@given(hostile_text, st.integers(min_value=-5, max_value=300))
def test_output_never_has_controls_and_respects_max_len(s: str, max_len: int) -> None:
    out = clean(s, max_len)
    assert len(out) <= max(max_len, 0)
    assert not any(forbidden(ch) for ch in out), repr(out)
    out.encode("utf-8")  # never fails: no lone surrogates
    json.dumps(out, ensure_ascii=False).encode("utf-8")


@given(hostile_text)
def test_clean_is_idempotent(s: str) -> None:
    once = clean(s, 500)
    assert clean(once, 500) == once
    assert is_clean(once)


def test_escape_sequences_are_removed_whole() -> None:
    assert clean("\x1b[31mred\x1b[0m") == "red"
    assert clean("a\x1b]0;pwned title\x07b") == "ab"
    assert clean("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b") == "alinkb"
    assert clean("\x9b2Jwiped") == "wiped"
    assert clean("x\x1b(By") == "xy"


def test_line_breaks_become_spaces_so_no_line_is_forged() -> None:
    assert clean("web\r\n2026-01-01 root: all good") == "web  2026-01-01 root: all good"
    assert clean("a\u2028b\u2029c") == "a b c"


def test_nul_del_c1_and_bidi_are_dropped() -> None:
    assert clean("a\x00b\x7fc\x85d") == "abc d"
    assert clean("user\u202egpj.exe") == "usergpj.exe"
    assert clean("\u2066x\u2069") == "x"


def test_lone_surrogates_are_replaced() -> None:
    undecodable = b"caf\xe9".decode("utf-8", errors="surrogateescape")
    assert clean(undecodable) == "caf\ufffd"


def test_truncation_marks_the_cut() -> None:
    assert clean("abcdef", 4) == "abc" + ELLIPSIS
    assert clean("abcd", 4) == "abcd"
    assert clean("abc", 0) == ""


def test_clean_bytes_decodes_invalid_utf8() -> None:
    assert clean_bytes(b"python\x00train.py\xff") == "pythontrain.py\ufffd"
