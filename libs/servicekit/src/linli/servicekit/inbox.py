"""The idempotent inbox.

The consumption path (`linli.servicekit.consume`) calls `claim_many` for a batch inside
the transaction of its effects. The first delivery of an event id inserts the row and
goes on; a redelivery (or the same event published twice) finds the row and changes
nothing. Because the row, the effect and the
outgoing outbox rows commit together, a crash between commit and ack only causes a
redelivery that `claim` turns away.
"""

from __future__ import annotations

from .db import Conn


async def claim_many(conn: Conn, consumer: str, event_ids: list[str]) -> set[str]:
    """Record a batch of event ids in one statement; returns those not processed before."""
    if not conn.is_in_transaction():
        raise RuntimeError("inbox.claim_many must run inside the effects' transaction")
    rows = await conn.fetch(
        "INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::text[]) "
        "ON CONFLICT DO NOTHING RETURNING event_id",
        consumer,
        list(dict.fromkeys(event_ids)),
    )
    return {r["event_id"] for r in rows}
