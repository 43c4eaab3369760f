"""Durable timers: offer expiry, SLA clocks and re-match, fired by every replica.

Timers are rows (`timers`), written in the transaction that starts them, so they
survive restarts. Each replica runs one `TimerLoop`; a due timer is claimed with
`FOR UPDATE SKIP LOCKED` (as the outbox relay claims rows), so two replicas share
the work and never fire the same timer twice. The timer's effect, its outbox rows and
`fired_at` commit together; a crash before commit leaves the timer due for the next
pass. The loop (servicekit's `WakeLoop`) wakes on NOTIFY when a timer is added, and
otherwise sleeps until the next timer is due, at most the poll interval.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from opentelemetry.trace import SpanKind

from linli.servicekit.db import TRANSIENT_ERRORS, quote_ident
from linli.servicekit.telemetry import context_from_traceparent, tracer
from linli.servicekit.wake import WakeLoop

from . import store
from .service import Scheduler

log = logging.getLogger(__name__)

GIVE_UP_AFTER = 10
"""Failed attempts after which a timer is closed with outcome `error` (logged)."""


def notify_channel(schema: str) -> str:
    return f"{schema}_timers"


class TimerLoop:
    """Fires due timers of one schema until stopped."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        scheduler: Scheduler,
        schema: str,
        *,
        dsn: str,
        poll_interval: float = 0.5,
        batch: int = 100,
    ) -> None:
        self._pool = pool
        self._scheduler = scheduler
        self._schema = quote_ident(schema).strip('"')
        self._batch = batch
        self._loop = WakeLoop(
            f"timers-{self._schema}",
            self._pass,
            poll_interval=poll_interval,
            channel=notify_channel(self._schema),
            dsn=dsn,
            next_sleep=self._until_next_due,
        )
        self.fired = 0

    async def start(self) -> None:
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _pass(self) -> bool:
        """One batch of due timers (fired ones age out by the runtime's retention)."""
        return await self.fire_due() == self._batch

    async def _until_next_due(self) -> float | None:
        """Until the next timer is due (a NOTIFY wakes us earlier; the poll caps it)."""
        async with self._pool.acquire() as conn:
            due = await store.next_due(conn)
        if due is None:
            return None
        wait = (due - self._scheduler.clock.now()).total_seconds()
        return max(wait, 0.01)

    async def fire_due(self) -> int:
        """Fire up to `batch` due timers, each in its own transaction."""
        fired = 0
        async with self._pool.acquire() as conn:
            while fired < self._batch:
                claimed: list[asyncpg.Record] = []
                try:
                    async with conn.transaction():
                        timer = await store.claim_due_timer(conn, self._scheduler.clock.now())
                        if timer is None:
                            break
                        claimed.append(timer)
                        with tracer().start_as_current_span(
                            f"timer {timer['kind']}",
                            context=context_from_traceparent(timer["traceparent"]),
                            kind=SpanKind.INTERNAL,
                            attributes={"linli.timer.kind": timer["kind"]},
                        ):
                            await self._scheduler.fire_timer(conn, timer)
                except TRANSIENT_ERRORS:
                    raise
                except Exception as exc:
                    if not claimed:
                        raise
                    # One failing timer must not hold up the ones behind it.
                    await self._postpone(conn, claimed[0], exc)
                fired += 1
        self.fired += fired
        return fired

    async def _postpone(self, conn: Any, timer: asyncpg.Record, exc: Exception) -> None:
        attempts = timer["attempts"] + 1
        gave_up = await store.postpone_timer(
            conn,
            timer["id"],
            delay_s=min(2.0**attempts, 300.0),
            error=type(exc).__name__,
            give_up_after=GIVE_UP_AFTER,
        )
        log.warning(
            "timer gave up" if gave_up else "timer failed, will retry",
            extra={"timer_id": timer["id"], "kind": timer["kind"], "error": type(exc).__name__},
        )
