"""A database outage pauses consumption instead of spending deliveries (ADR 0027).

JetStream counts every delivery of a message, whatever the reason it failed, and gives
up after `max_deliver`. Were a PostgreSQL outage to count, a long enough outage would
turn every message in flight into a dead letter (or lose it, when the dead letter
cannot be stored either). So one `DatabaseBreaker` per process tells an outage apart
from a failure of the message itself, and rides it out:

* a failure is an **outage** when it is a transient database error (`TRANSIENT_ERRORS`)
  *and* the database does not answer a probe right after it. Everything else (a bug, a
  rejected statement, a deadlock or a timeout while the database answers) is the
  message's own failure and is settled as before: retried with a delay, counted;
* during an outage the breaker is **open**: the consumers keep the messages in hand
  (acknowledging progress every third of `ack_wait`, so the server neither redelivers
  them nor counts a delivery), pull nothing more, and wait; one task probes the database
  with a growing delay (`retry_base_delay_s` doubling up to `outage_probe_max_s`);
* when a probe answers, the breaker closes and every consumer runs what it holds again;
* a process that stops during an outage gives back what it holds (`nak` with a delay):
  that costs each message one delivery, as any crash does.

The time an outage lasts therefore costs no delivery at all, however long it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence

import asyncpg
from nats.aio.msg import Msg

from . import metrics
from .db import is_transient
from .settings import ServiceSettings

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 5.0


class Interrupted(Exception):
    """The process (or the consumer) is stopping while the database is unreachable.

    Whoever holds messages gives them back (`Deliveries.release`).
    """


class DatabaseBreaker:
    """Tells outages from failures and holds consumption while PostgreSQL is away."""

    def __init__(self, pool: Callable[[], asyncpg.Pool], settings: ServiceSettings) -> None:
        self._pool = pool
        self._base_s = settings.retry_base_delay_s
        self._max_s = max(settings.outage_probe_max_s, settings.retry_base_delay_s)
        # In progress well before ack_wait (the first backoff step is ack_wait too).
        self._keepalive_s = settings.consumer_ack_wait_s / 3
        self._up: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._probe: asyncio.Task[None] | None = None
        self._held: dict[int, Sequence[Msg]] = {}
        self.outages = 0
        """How many times this process found the database unreachable."""

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        # Created on first use, inside the running loop.
        if self._up is None or self._stopped is None:
            self._up = asyncio.Event()
            self._up.set()
            self._stopped = asyncio.Event()
        return self._up, self._stopped

    @property
    def is_open(self) -> bool:
        """True while the database is unreachable (consumers pull nothing)."""
        return self._up is not None and not self._up.is_set()

    @property
    def is_stopped(self) -> bool:
        """True once the process has begun to stop."""
        return self._stopped is not None and self._stopped.is_set()

    def start(self) -> None:
        """Ready (again) for use: closed, not stopped."""
        up, stopped = self._events()
        stopped.clear()
        up.set()
        metrics.DATABASE_UNREACHABLE.set(0)

    def stop(self) -> None:
        """Stop probing and wake every waiter with `Interrupted`."""
        _, stopped = self._events()
        stopped.set()
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    @contextlib.contextmanager
    def holding(self, msgs: Sequence[Msg]) -> Iterator[None]:
        """Messages in hand: kept alive (in progress) while the breaker is open."""
        key = id(msgs)
        self._held[key] = msgs
        try:
            yield
        finally:
            self._held.pop(key, None)

    async def ride_out(self, exc: BaseException, interrupt: asyncio.Event | None = None) -> bool:
        """After `exc`: True when it was an outage and the database answers again (run
        the work again); False when it was not an outage (settle it as a failure).

        Raises `Interrupted` when stopping while the database is still unreachable.
        """
        if not is_transient(exc):
            return False
        if not self.is_open:
            if await self.probe():
                return False  # the database answers: the failure was the message's own
            self._open(exc)
        await self.wait_closed(interrupt)
        return True

    async def wait_closed(self, interrupt: asyncio.Event | None = None) -> None:
        """Wait while the breaker is open; `Interrupted` when stopping meanwhile."""
        up, stopped = self._events()
        while not up.is_set():
            if stopped.is_set() or (interrupt is not None and interrupt.is_set()):
                raise Interrupted()
            waits = [asyncio.ensure_future(up.wait()), asyncio.ensure_future(stopped.wait())]
            if interrupt is not None:
                waits.append(asyncio.ensure_future(interrupt.wait()))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()

    async def probe(self) -> bool:
        """Does the database answer a trivial query now?"""
        try:
            async with self._pool().acquire(timeout=_PROBE_TIMEOUT_S) as conn:
                await conn.fetchval("SELECT 1", timeout=_PROBE_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except Exception:
            return False
        return True

    def _open(self, exc: BaseException) -> None:
        up, stopped = self._events()
        if stopped.is_set():
            raise Interrupted()
        if not up.is_set():
            return  # opened by another consumer meanwhile
        up.clear()
        self.outages += 1
        metrics.DATABASE_UNREACHABLE.set(1)
        metrics.DATABASE_OUTAGES.inc()
        log.warning("database unreachable: consumption paused", extra={"error": type(exc).__name__})
        self._probe = asyncio.create_task(self._probe_until_up(), name="database-probe")

    def _close(self) -> None:
        up, _ = self._events()
        up.set()
        metrics.DATABASE_UNREACHABLE.set(0)
        log.warning("database reachable again: consumption resumed")

    async def _probe_until_up(self) -> None:
        """Probe with a growing delay; keep what is held alive meanwhile."""
        _, stopped = self._events()
        loop = asyncio.get_running_loop()
        delay = self._base_s
        next_probe = loop.time() + delay
        next_keepalive = loop.time()  # at once: the failure may have taken a while
        while not stopped.is_set():
            now = loop.time()
            if now >= next_keepalive:
                await self._keep_alive()
                next_keepalive = now + self._keepalive_s
            if now >= next_probe:
                if await self.probe():
                    self._close()
                    return
                delay = min(delay * 2, self._max_s)
                next_probe = loop.time() + delay
            timeout = max(0.0, min(next_probe, next_keepalive) - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), timeout)

    async def _keep_alive(self) -> None:
        for msgs in list(self._held.values()):
            for msg in msgs:
                if msg.is_acked:
                    continue
                with contextlib.suppress(Exception):
                    await msg.in_progress()
