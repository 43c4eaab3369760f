"""The lapse sweep: partners decides when an unanswered offer has lapsed (ADR 0026).

Every replica runs one `LapseSweep` on servicekit's `WakeLoop`. A pass moves the open
offers whose `expires_at` has come to `expired` and enqueues `offer.lapsed` for each, in
one transaction per batch, taking the rows with `FOR UPDATE SKIP LOCKED` (the lock an
answer takes too), so an offer is either answered in time or lapsed, never both, with
any number of replicas. The loop wakes on NOTIFY `<schema>_offers` when an offer is
stored and otherwise sleeps until the next open offer expires (at most the poll
interval). Offers are rows, so a lapse due while partners was down happens on the first
pass after it is back.
"""

from __future__ import annotations

import asyncpg

from linli.servicekit.clock import Clock
from linli.servicekit.db import quote_ident
from linli.servicekit.wake import WakeLoop

from . import service, store


def notify_channel(schema: str) -> str:
    return f"{schema}_offers"


class LapseSweep:
    """Lapses due offers of one schema until stopped."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        *,
        clock: Clock,
        dsn: str,
        poll_interval: float = 1.0,
        batch: int = 200,
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._batch = batch
        schema = quote_ident(schema).strip('"')
        self._loop = WakeLoop(
            f"offer-lapses-{schema}",
            self._pass,
            poll_interval=poll_interval,
            channel=notify_channel(schema),
            dsn=dsn,
            next_sleep=self._until_next_expiry,
        )
        self.lapsed = 0

    async def start(self) -> None:
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _pass(self) -> bool:
        """One batch of due offers; True when the batch was full (run again at once)."""
        async with self._pool.acquire() as conn:
            lapsed = await service.lapse_due(conn, clock=self._clock, batch=self._batch)
        self.lapsed += lapsed
        return lapsed == self._batch

    async def _until_next_expiry(self) -> float | None:
        async with self._pool.acquire() as conn:
            due = await store.next_open_expiry(conn)
        if due is None:
            return None
        return max((due - self._clock.now()).total_seconds(), 0.01)
