"""Durable timers: offer expiry, SLA clocks and re-match, fired by every replica.

Timers are rows (`timers`), written in the transaction that starts them, so they
survive restarts. Each replica runs one `TimerLoop`; a due timer is claimed with
`FOR UPDATE SKIP LOCKED` (as the outbox relay claims rows), so two replicas share
the work and never fire the same timer twice. The timer's effect, its outbox rows and
`fired_at` commit together; a crash before commit leaves the timer due for the next
pass. The loop wakes on NOTIFY when a timer is added and otherwise polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
from opentelemetry.trace import SpanKind

from linli.servicekit.db import TRANSIENT_ERRORS, quote_ident
from linli.servicekit.telemetry import context_from_traceparent, tracer

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
        self._dsn = dsn
        self._poll = poll_interval
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self.fired = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"timers-{self._schema}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
            self._listener = None

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            conn = await asyncpg.connect(self._dsn)
            await conn.add_listener(notify_channel(self._schema), self._on_notify)
            self._listener = conn
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("timer listener unavailable", extra={"error": type(exc).__name__})

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        backoff = self._poll
        loop = asyncio.get_running_loop()
        purged_at = 0.0
        while True:
            try:
                await self._listen()
                while await self.fire_due() == self._batch:
                    pass
                if loop.time() - purged_at > 600:
                    # Fired timers are history (shown by the API) for a month, then go.
                    async with self._pool.acquire() as conn:
                        await store.purge_fired_timers(conn, days=30)
                    purged_at = loop.time()
                backoff = self._poll
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("timer pass failed", extra={"error": type(exc).__name__})
                backoff = min(backoff * 2, 30.0)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=await self._sleep(backoff))

    async def _sleep(self, longest: float) -> float:
        """Until the next timer is due (a NOTIFY wakes us earlier), at most `longest`."""
        try:
            async with self._pool.acquire() as conn:
                due = await store.next_due(conn)
        except Exception:
            return longest
        if due is None:
            return longest
        wait = (due - self._scheduler.clock.now()).total_seconds()
        return min(max(wait, 0.01), longest)

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
