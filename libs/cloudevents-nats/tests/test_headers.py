"""Header values: the binding's percent-encoding, quoted-strings and canonical strings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudevents_nats import (
    canonical_string,
    percent_decode,
    percent_encode,
    unquote_header_value,
)


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        # The binding's own example (3.1.3.2).
        ("Euro \u20ac \U0001f600", "Euro%20%E2%82%AC%20%F0%9F%98%80"),
        ("plain-ASCII_~!", "plain-ASCII_~!"),
        ("a b", "a%20b"),
        ('say "hi"', "say%20%22hi%22"),
        ("100%", "100%25"),
        ("泰安", "%E6%B3%B0%E5%AE%89"),
        ("tab\there\n", "tab%09here%0A"),
        ("\x7f\x85", "%7F%C2%85"),
        ("/linli/intake?x=1&y=2#f", "/linli/intake?x=1&y=2#f"),
        ("", ""),
    ],
)
def test_percent_encoding(raw: str, encoded: str) -> None:
    assert percent_encode(raw) == encoded
    assert percent_decode(encoded) == raw


def test_decoding_accepts_lower_case_and_needless_escapes() -> None:
    assert percent_decode("%e2%82%ac") == "€"
    assert percent_decode("%41%42c") == "ABc"
    assert percent_decode("a%2") == "a%2"  # not an escape: kept as it is


@pytest.mark.parametrize(
    "value",
    [
        "%C0%A0",  # overlong U+0020, which the binding names as MUST be rejected
        "%ED%A0%80",  # a UTF-16 surrogate
        "%E2%82",  # truncated sequence
        "%FF",
    ],
)
def test_decoding_rejects_invalid_utf8(value: str) -> None:
    with pytest.raises(UnicodeDecodeError):
        percent_decode(value)


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_any_text_round_trips_and_encodes_to_printable_ascii(text: str) -> None:
    encoded = percent_encode(text)
    assert all(0x21 <= ord(c) <= 0x7E for c in encoded)
    assert '"' not in encoded
    assert percent_decode(encoded) == text


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("plain", "plain"),
        ('"a b"', "a b"),
        ('"say \\"hi\\""', 'say "hi"'),
        ('"back\\\\slash"', "back\\slash"),
        ('  "padded"  ', "padded"),
        ('""', ""),
    ],
)
def test_quoted_strings_are_unescaped(header: str, value: str) -> None:
    assert unquote_header_value(header) == value


@pytest.mark.parametrize("header", ['"open', '"', '"dangling\\"', '"in"side"'])
def test_bad_quoted_strings_are_refused(header: str) -> None:
    with pytest.raises(ValueError, match="quoted-string"):
        unquote_header_value(header)


def test_canonical_strings() -> None:
    assert canonical_string("x y") == "x y"
    assert canonical_string(True) == "true"
    assert canonical_string(False) == "false"
    assert canonical_string(-42) == "-42"
    assert canonical_string(2**31 - 1) == "2147483647"
    assert canonical_string(datetime(2025, 3, 14, 11, 0, tzinfo=UTC)) == "2025-03-14T11:00:00Z"
    east8 = timezone(timedelta(hours=8))
    assert (
        canonical_string(datetime(2025, 3, 14, 19, 0, 0, 500000, tzinfo=east8))
        == "2025-03-14T19:00:00.500000+08:00"
    )
    assert canonical_string(b"\x00\xff") == "AP8="


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (2**31, ValueError),
        (datetime(2025, 3, 14, 11, 0), ValueError),  # naive: no offset
        (1.5, TypeError),
        ({"a": 1}, TypeError),
    ],
)
def test_values_without_a_canonical_string_are_refused(value: object, error: type) -> None:
    with pytest.raises(error):
        canonical_string(value)
