"""The background sender: sends due messages, retries with backoff, gives up loudly.

Messages are leased with `FOR UPDATE SKIP LOCKED`, so replicas share the work. After
the last failed attempt (or a permanent refusal) the message is marked failed and a
`notification.failed` event is written to the outbox in the same transaction. Logs
carry message, event and recipient ids, never addresses or text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from linli.contracts.envelope import new_event
from linli.contracts.events import NotificationChannel, NotificationFailed
from linli.servicekit.outbox import enqueue
from linli.servicekit.runtime import periodic

from . import store
from .providers import Message, PermanentError, Provider
from .schedule import backoff, quiet_until, zone
from .settings import PeopleSettings

log = logging.getLogger(__name__)

SOURCE = "/linli/notifications"


class Sender:
    """Sends what is due; `wake` makes it look at once (after new messages commit)."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        providers: dict[str, Provider],
        settings: PeopleSettings,
    ) -> None:
        self._pool = pool
        self.providers = providers
        self.settings = settings
        self.wake = asyncio.Event()
        self._limit = asyncio.Semaphore(settings.people_send_concurrency)

    @property
    def lease_s(self) -> float:
        return self.settings.smtp_timeout_s * 3 + 30

    async def tick(self) -> int:
        """Send everything due now; returns how many messages were handled."""
        handled = 0
        while True:
            rows = await store.claim_due(self._pool(), self.settings.people_batch, self.lease_s)
            if not rows:
                return handled
            await asyncio.gather(*(self._one(row) for row in rows))
            handled += len(rows)
            if len(rows) < self.settings.people_batch:
                return handled

    async def _one(self, row: asyncpg.Record) -> None:
        now = datetime.now(UTC)
        pool = self._pool()
        if not row["emergency"]:
            until = quiet_until(now, row["quiet_start"], row["quiet_end"], zone(row["timezone"]))
            if until is not None:
                async with pool.acquire() as conn:
                    await store.mark_postponed(conn, row["id"], until)
                return
        message = Message(
            id=row["id"],
            channel=row["channel"],
            to=row["address"],
            subject=row["subject"],
            body=row["body"],
            locale=row["locale"],
        )
        provider = self.providers[row["channel"]]
        error: str | None = None
        permanent = False
        async with self._limit:
            try:
                await asyncio.wait_for(provider.send(message), self.settings.smtp_timeout_s * 2)
            except PermanentError as exc:
                error, permanent = str(exc)[:200] or "refused", True
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                error = "timeout"
            except Exception as exc:
                error = _describe(exc)
        attempts = row["attempts"] + 1
        async with pool.acquire() as conn, conn.transaction():
            if error is None:
                await store.mark_sent(conn, row["id"])
                log.info("message sent", extra=_ids(row, attempts))
                return
            if not permanent and attempts < self.settings.people_max_attempts:
                delay = backoff(
                    attempts, self.settings.people_retry_base_s, self.settings.people_retry_max_s
                )
                await store.mark_retry(conn, row["id"], error, now + timedelta(seconds=delay))
                log.warning(
                    "message not sent, will retry", extra={**_ids(row, attempts), "error": error}
                )
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

    async def run(self) -> None:
        await periodic(
            "notifications-people-sender",
            self.settings.people_poll_interval_s,
            self.tick,
            wake=self.wake,
        )


def _ids(row: asyncpg.Record, attempts: int) -> dict[str, object]:
    return {
        "message_id": str(row["id"]),
        "event_id": row["event_id"],
        "recipient_id": str(row["recipient_id"]),
        "channel": row["channel"],
        "attempts": attempts,
    }


def _describe(exc: Exception) -> str:
    """A reason with no address or text in it: our own SMTP codes or the error class."""
    text = str(exc)
    if text.startswith("smtp ") and len(text) <= 12:
        return text
    return type(exc).__name__
