"""Keyset cursors for paged lists, in one format the OpenAPI pattern states exactly.

A cursor names the last row of a page by its time and id: `<microseconds since the
epoch>.<id as 32 hex digits>`. Every string the pattern admits decodes to a valid
position (ADR 0047), so a client that builds one from the schema is never refused; a
cursor is still opaque to clients, which pass `next_cursor` back as it is.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Query

__all__ = ["CURSOR_PATTERN", "Cursor", "decode_cursor", "encode_cursor"]

CURSOR_PATTERN = r"^[0-9]{1,17}\.[0-9a-f]{32}$"
"""Up to 17 digits of microseconds (the year 5138 at most) and an id in hex."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Cursor = Annotated[
    str | None,
    Query(
        pattern=CURSOR_PATTERN,
        max_length=50,
        description="`next_cursor` of the previous page, as it was answered.",
    ),
]


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    return f"{max(0, micros)}.{row_id.hex}"


def decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """The (time, id) a cursor names; None for the first page. The route's `Cursor`
    query parameter has checked the pattern already."""
    if cursor is None:
        return None
    micros, _, hex_id = cursor.partition(".")
    return _EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(hex=hex_id)
