"""Use cases of messages to people: recipients (the API) and the outcome of a send.

Recording the messages of a consumed event is the consumer's use case
(`consumer.record_messages`); sending is the sender's loop, which settles each attempt
here, in one transaction: sent, retried later, or failed with `notification.failed` in
the outbox.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from linli.contracts.envelope import new_event
from linli.contracts.events import NotificationChannel, NotificationFailed
from linli.notifications.errors import NotFound
from linli.servicekit.db import Conn
from linli.servicekit.outbox import enqueue

from . import store
from .plan import NewRecipient
from .schedule import backoff

log = logging.getLogger(__name__)

SOURCE = "/linli/notifications"


# --- recipients -------------------------------------------------------------------------


async def add_recipient(conn: Conn, community: str, new: NewRecipient) -> asyncpg.Record:
    return await store.add_recipient(conn, community, new)


async def list_recipients(conn: Conn, community: str) -> list[asyncpg.Record]:
    return await store.list_recipients(conn, community)


async def delete_recipient(conn: Conn, community: str, recipient_id: uuid.UUID) -> None:
    """Another community's recipient is not found, as if it did not exist."""
    if not await store.delete_recipient(conn, community, recipient_id):
        raise NotFound("recipient not found")


# --- the outcome of a send --------------------------------------------------------------


@dataclass(frozen=True)
class Retries:
    """How often and how patiently a message is retried."""

    max_attempts: int
    base_s: float
    max_s: float


async def postpone(conn: Conn, message_id: uuid.UUID, until: datetime) -> None:
    """Quiet hours began after the message was recorded: send it when they end."""
    await store.mark_postponed(conn, message_id, until)


async def settle(
    conn: Conn,
    row: asyncpg.Record,
    *,
    error: str | None,
    permanent: bool,
    retries: Retries,
    now: datetime,
) -> None:
    """Record one attempt: sent, retried with backoff, or failed and the owner told.

    Runs in one transaction, so a failed message and its `notification.failed` commit
    together. Logs carry ids, never addresses or text.
    """
    attempts = row["attempts"] + 1
    if error is None:
        await store.mark_sent(conn, row["id"])
        log.info("message sent", extra=_ids(row, attempts))
        return
    if not permanent and attempts < retries.max_attempts:
        delay = backoff(attempts, retries.base_s, retries.max_s)
        await store.mark_retry(conn, row["id"], error, now + timedelta(seconds=delay))
        log.warning("message not sent, will retry", extra={**_ids(row, attempts), "error": error})
        return
    await store.mark_failed(conn, row["id"], error)
    failed = NotificationFailed(
        subscription_id=row["recipient_id"],
        channel=NotificationChannel(row["channel"]),
        event_id=row["event_id"],
        event_type=row["event_type"],
        reason=error,
        attempts=attempts,
        failed_at=now,
    )
    await enqueue(
        conn,
        new_event(
            failed,
            community=row["community"],
            source=SOURCE,
            subject=str(row["recipient_id"]),
            traceparent=row["traceparent"],
        ),
    )
    log.warning("message failed", extra={**_ids(row, attempts), "error": error})


def _ids(row: asyncpg.Record, attempts: int) -> dict[str, object]:
    return {
        "message_id": str(row["id"]),
        "event_id": row["event_id"],
        "recipient_id": str(row["recipient_id"]),
        "channel": row["channel"],
        "attempts": attempts,
    }
