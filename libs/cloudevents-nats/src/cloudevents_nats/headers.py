"""NATS header values for CloudEvents attributes (binding section 3.1.3.2).

NATS headers follow HTTP's rules: printable US-ASCII only. Attribute values are written
as their canonical string, percent-encoded; reading undoes an optional RFC 7230
quoted-string first (older senders), then one round of percent-decoding, and refuses
byte sequences that are not UTF-8 (overlong forms included).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any
from urllib.parse import unquote_to_bytes

__all__ = [
    "canonical_string",
    "percent_decode",
    "percent_encode",
    "unquote_header_value",
]

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


def percent_encode(value: str) -> str:
    """Percent-encode a header value as the NATS (and HTTP) binding requires.

    Space, double quote, percent and every character outside printable ASCII
    (U+0021-U+007E) become %XX of their UTF-8 bytes, upper-case hex; control
    characters are encoded too, as the binding recommends. Everything else is kept.
    """
    out: list[str] = []
    for byte in value.encode("utf-8"):
        if 0x21 <= byte <= 0x7E and byte not in (0x22, 0x25):
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def percent_decode(value: str) -> str:
    """One round of percent-decoding; lower-case hex and needless escapes are accepted.

    Raises UnicodeDecodeError when the bytes are not valid UTF-8 (e.g. the overlong
    `%C0%A0`), which the binding says MUST be rejected.
    """
    return unquote_to_bytes(value).decode("utf-8")


def unquote_header_value(value: str) -> str:
    """Undo an RFC 7230 quoted-string (`"a \\"b\\""` -> `a "b"`); other values as they are.

    The binding's encoding never produces quotes, but a receiver MUST accept them from
    senders that follow older versions. Raises ValueError for an unterminated quote.
    """
    stripped = value.strip(" \t")
    if not stripped.startswith('"'):
        return stripped
    if len(stripped) < 2 or not stripped.endswith('"'):
        raise ValueError("unterminated quoted-string")
    out: list[str] = []
    inner = stripped[1:-1]
    index = 0
    while index < len(inner):
        char = inner[index]
        if char == "\\":
            index += 1
            if index == len(inner):
                raise ValueError("dangling backslash in quoted-string")
            char = inner[index]
        elif char == '"':
            raise ValueError("unescaped double quote inside quoted-string")
        out.append(char)
        index += 1
    return "".join(out)


def canonical_string(value: Any) -> str:
    """The canonical string of an attribute value (CloudEvents type system).

    String and URI types as they are; Boolean `true`/`false`; Integer in decimal
    (32-bit signed range); Timestamp as RFC 3339 (`Z` for UTC; a naive datetime is
    refused); Binary as base64. Raises TypeError or ValueError otherwise.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT32_MIN <= value <= _INT32_MAX:
            raise ValueError("integer attribute outside the 32-bit signed range")
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp attribute without a UTC offset")
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(
        f"attribute values must be str, bool, int, datetime or bytes, not {type(value).__name__}"
    )
