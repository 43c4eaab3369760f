"""The background sender: sends due messages, retries with backoff, gives up loudly.

Messages are leased with `FOR UPDATE SKIP LOCKED`, so replicas share the work. Each
attempt is settled by `service.settle`: after the last failed attempt (or a permanent
refusal) the message is marked failed and a `notification.failed` event is written to
the outbox in the same transaction. The sender runs on servicekit's `WakeLoop`: woken
after new messages commit, otherwise every `people_poll_interval_s`, and again at once
while it leases full batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from linli.notifications.settings import NotificationsSettings
from linli.servicekit import metrics
from linli.servicekit.clock import Clock
from linli.servicekit.wake import WakeLoop

from . import service, store
from .providers import Message, PermanentError, Provider
from .schedule import quiet_until, zone


class Sender:
    """Sends what is due; `wake()` makes it look at once (after new messages commit)."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        providers: dict[str, Provider],
        settings: NotificationsSettings,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._pool = pool
        self.providers = providers
        self.settings = settings
        self._clock = clock or Clock()
        self._limit = asyncio.Semaphore(settings.people_send_concurrency)
        self._retries = service.Retries(
            max_attempts=settings.people_max_attempts,
            base_s=settings.people_retry_base_s,
            max_s=settings.people_retry_max_s,
        )
        self._loop = WakeLoop(
            "notifications-people-sender",
            self.send_batch,
            poll_interval=settings.people_poll_interval_s,
        )

    @property
    def lease_s(self) -> float:
        return self.settings.smtp_timeout_s * 3 + 30

    def wake(self, *_: object) -> None:
        """Look for due messages at once."""
        self._loop.wake()

    async def run(self) -> None:
        """Send until cancelled."""
        await self._loop.run()

    async def send_batch(self) -> bool:
        """Lease and send one batch of due messages; True when the batch was full."""
        rows = await store.claim_due(self._pool(), self.settings.people_batch, self.lease_s)
        sending = asyncio.gather(*(self._one(row) for row in rows))
        try:
            await asyncio.shield(sending)
        except asyncio.CancelledError:
            # Stopping (SIGTERM): the messages in hand are sent and recorded (bounded by
            # the provider timeout). Cut short, one the provider already took would stay
            # leased and go out a second time when its lease ends.
            await asyncio.wait({sending}, timeout=self.settings.smtp_timeout_s * 2 + 5)
            sending.cancel()  # what is still not done after that is redone after its lease
            raise
        return len(rows) == self.settings.people_batch

    async def _one(self, row: asyncpg.Record) -> None:
        now = self._clock.now()
        pool = self._pool()
        if not row["emergency"]:
            until = quiet_until(now, row["quiet_start"], row["quiet_end"], zone(row["timezone"]))
            if until is not None:
                async with pool.acquire() as conn:
                    await service.postpone(conn, row["id"], until)
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
        metrics.MESSAGES.labels(row["channel"], "failed" if error else "sent").inc()
        async with pool.acquire() as conn, conn.transaction():
            await service.settle(
                conn, row, error=error, permanent=permanent, retries=self._retries, now=now
            )


def _describe(exc: Exception) -> str:
    """A reason with no address or text in it: our own SMTP codes or the error class."""
    text = str(exc)
    if text.startswith("smtp ") and len(text) <= 12:
        return text
    return type(exc).__name__
