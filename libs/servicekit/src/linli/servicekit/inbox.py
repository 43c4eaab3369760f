"""The idempotent inbox.

A consumer calls `claim` inside the transaction of its effect. The first delivery of
an event id inserts the row and goes on; a redelivery (or the same event published
twice) finds the row and must change nothing. Because the row, the effect and the
outgoing outbox rows commit together, a crash between commit and ack only causes a
redelivery that `claim` turns away.
"""

from __future__ import annotations

from .db import Conn


async def claim(conn: Conn, consumer: str, event_id: str) -> bool:
    """Record `event_id` for `consumer`; False when it was processed before."""
    if not conn.is_in_transaction():
        raise RuntimeError("inbox.claim must run inside the effect's transaction")
    inserted = await conn.fetchval(
        "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) "
        "ON CONFLICT DO NOTHING RETURNING true",
        consumer,
        event_id,
    )
    return bool(inserted)
