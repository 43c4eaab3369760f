"""The runtime every service shares: pool, migrations, broker, streams, relay.

A service's composition root builds one `ServiceRuntime`, declares its event
subscriptions with `runtime.consume(Subscriptions(...))`, adds its routers to the HTTP
app and its start and stop hooks to `on_start` / `on_stop`, and lets the app's lifespan
start and stop everything. Nothing connects before `start()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
from fastapi import FastAPI
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from opentelemetry.sdk.trace import SpanProcessor

from . import failpoints, metrics
from .consume import DeadLetterCapture, EventConsumer, Subscriptions
from .db import Migration, create_pool, migrate, pending_migrations
from .logs import configure_logging
from .messaging import Deliveries, build_broker, provision_streams
from .outage import DatabaseBreaker
from .outbox import OutboxRelay, PublishDenials
from .retention import Retention
from .revocations import RevocationWatcher
from .settings import ServiceSettings
from .telemetry import setup_tracing
from .wake import WakeLoop

log = logging.getLogger(__name__)

StartHook = Callable[["ServiceRuntime"], Awaitable[None]]
StopHook = Callable[["ServiceRuntime"], Awaitable[None]]


class ServiceRuntime:
    """Owns the connections of one service process."""

    def __init__(
        self,
        settings: ServiceSettings,
        migrations: list[Migration],
        *,
        span_processor: SpanProcessor | None = None,
    ) -> None:
        self.settings = settings
        self.migrations = migrations
        self.tracer_provider = setup_tracing(
            f"linli-{settings.service_name}", extra_processor=span_processor
        )
        self.publish_denials = PublishDenials()
        """Subjects NATS refused this connection (fed by the broker's error callback)."""
        self.broker: NatsBroker = build_broker(
            settings, self.tracer_provider, error_cb=self.publish_denials.note
        )
        self._pool: asyncpg.Pool | None = None
        self.relay: OutboxRelay | None = None
        self.breaker = DatabaseBreaker(lambda: self.pool, settings)
        """Tells database outages from failures; every consumer here rides them out."""
        self.deliveries = Deliveries(lambda: self.pool, settings, self.breaker)
        self.revocations = RevocationWatcher(
            settings, lambda: self.js, lambda: self.pool, lambda: self.broker.connection
        )
        """Revoked credentials everywhere (ADR 0030); services add hooks to `.hooks`."""
        self.on_start: list[StartHook] = []
        self.on_stop: list[StopHook] = []
        """Run in reverse order at stop, after consuming has stopped, before the pool closes."""
        self.consumers: list[EventConsumer] = []
        self.durables: list[tuple[str, str]] = []
        self.captures: list[DeadLetterCapture] = []
        """One per durable: its MAX_DELIVERIES advisories become dead letters."""
        self.event_readers: list[tuple[str, str]] = []
        """Ephemeral readers of a community's events (name, what for), declared with
        `read_events` so the AsyncAPI document lists them (ADR 0048)."""
        self._background: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False
        self.retention = Retention(batch=settings.retention_batch)
        """Tables that age out; a service adds its own with `retention.keep(...)`."""
        self.retention.keep("inbox", "processed_at", settings.inbox_retention_s)
        self.retention.keep(
            "dead_letters",
            "replayed_at",
            settings.dead_letter_retention_s,
            where="replayed_at IS NOT NULL",
        )
        self.retention.keep("outbox", "sent_at", settings.outbox_retention_s)
        self.background("retention", self._purge_forever)
        self.metrics = metrics.MetricsRefresher()
        """Gauges read on a timer; a service adds its own with `metrics.extra`."""
        self._stop_metrics: Callable[[], None] | None = None
        if settings.metrics_port is not None:
            self.background("metrics", self._refresh_metrics_forever)

    def read_events(self, name: str, description: str) -> None:
        """Declare that the service reads a community's events without a durable (an
        ordered ephemeral consumer per request, e.g. a Server-Sent Events stream)."""
        self.event_readers.append((name, description))

    def background(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run `run()` as a task from start to stop (timers, generators, sweepers)."""
        self._background.append((name, run))

    def consume(self, subs: Subscriptions, *, stream: str | None = None) -> EventConsumer:
        """Consume the events stream with `subs` (see `linli.servicekit.consume`).

        One durable named `subs.name`, filtered on the server to the declared types,
        batches in one transaction, explicit ack with bounded, backed-off redelivery and
        dead letters.
        """
        consumer = EventConsumer(
            subs,
            stream=stream or self.settings.events_stream,
            settings=self.settings,
            pool=lambda: self.pool,
            deliveries=self.deliveries,
        )
        self.durable(consumer.stream, consumer.durable)
        self.consumers.append(consumer)
        return consumer

    def durable(self, stream: str, durable: str) -> str:
        """Register a durable consumer so messages it gives up on are dead-lettered."""
        if stream not in (self.settings.events_stream, self.settings.ingress_stream):
            raise ValueError(f"{durable}: the advisories stream covers no stream {stream!r}")
        self.durables.append((stream, durable))
        self.captures.append(
            DeadLetterCapture(
                stream=stream,
                durable=durable,
                settings=self.settings,
                pool=lambda: self.pool,
                deliveries=self.deliveries,
            )
        )
        return durable

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("runtime not started")
        return self._pool

    @property
    def js(self) -> JetStreamContext:
        return self.broker.config.connection_state.stream

    @property
    def dsn(self) -> str:
        return self.settings.database_url.get_secret_value()

    async def start(self) -> None:
        """Connect, migrate, provision, subscribe and relay."""
        failpoints.configure(self.settings.failpoint)
        self.breaker.start()
        if self.settings.metrics_port is not None and self._stop_metrics is None:
            # First, so that an SRE sees `linli_ready 0` while dependencies are awaited.
            self._stop_metrics = metrics.serve(self.settings.http_host, self.settings.metrics_port)
            metrics.READY.set(0)
        self._pool = await _retry(
            "database",
            lambda: create_pool(
                self.dsn,
                self.settings.db_schema,
                min_size=self.settings.db_pool_min,
                max_size=self.settings.db_pool_max,
            ),
        )
        if self.settings.migrate_on_start:
            async with self.pool.acquire() as conn:
                applied = await migrate(conn, self.settings.db_schema, self.migrations)
            if applied:
                log.info("migrations applied", extra={"versions": applied})
        else:
            await self._await_migrations()
        await _retry("nats", self.broker.connect)
        if self.settings.provision_streams:
            await provision_streams(self.js, self.settings)
        await self._watch_revocations()
        for hook in self.on_start:
            await hook(self)
        for capture in self.captures:
            await capture.start(self.js)
        await self.broker.start()
        for consumer in self.consumers:
            await consumer.start(self.js)
        if self.settings.run_relay:
            self.relay = OutboxRelay(
                self.pool,
                self.js,
                self.settings.db_schema,
                dsn=self.dsn,
                batch_size=self.settings.outbox_batch,
                poll_interval=self.settings.outbox_poll_interval_s,
                publish_timeout=self.settings.outbox_publish_timeout_s,
                max_attempts=self.settings.outbox_max_attempts,
                retry_base_s=self.settings.outbox_retry_base_s,
                retry_max_s=self.settings.outbox_retry_max_s,
                denials=self.publish_denials,
            )
            await self.relay.start()
        for name, run in self._background:
            self._tasks.append(asyncio.create_task(_guarded(name, run), name=name))
        self.started = True
        log.info("service started", extra={"instance": self.settings.instance})

    async def stop(self) -> None:
        """Stop consuming first, then background work, relaying, hooks; close the pool."""
        self.started = False
        # Whatever is held through a database outage is given back at once.
        self.breaker.stop()
        for consumer in self.consumers:
            await consumer.stop()
        for capture in self.captures:
            await capture.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self.broker.stop()
        if self.relay is not None:
            await self.relay.stop()
        for hook in reversed(self.on_stop):
            try:
                await hook(self)
            except Exception:
                log.exception("stop hook failed")
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._stop_metrics is not None:
            await asyncio.to_thread(self._stop_metrics)
            self._stop_metrics = None
        metrics.READY.set(0)

    async def _watch_revocations(self) -> None:
        """Start the revocations watcher and wait (bounded) until it has loaded every key;
        until it has, the auth check answers 503 rather than trust a token."""
        self._tasks.append(
            asyncio.create_task(_guarded("revocations", self.revocations.run), name="revocations")
        )
        try:
            await asyncio.wait_for(self.revocations.loaded.wait(), self.settings.revocations_wait_s)
        except TimeoutError:
            log.error("revocations not loaded yet; API requests answer 503 until they are")

    async def _await_migrations(self) -> None:
        """Wait (bounded) for the migrations a Job applies; this replica runs none."""
        deadline = asyncio.get_running_loop().time() + self.settings.migrations_wait_s
        while True:
            async with self.pool.acquire() as conn:
                pending = await pending_migrations(conn, self.settings.db_schema, self.migrations)
            if not pending:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"migrations not applied: {pending[:5]}")
            log.warning("waiting for migrations", extra={"pending": pending[:5]})
            await asyncio.sleep(2.0)

    async def _purge_forever(self) -> None:
        async def purge() -> None:
            await self.retention.purge(self.pool)

        await periodic("retention", self.settings.retention_interval_s, purge)

    async def _refresh_metrics_forever(self) -> None:
        await periodic("metrics", self.settings.metrics_refresh_s, self.refresh_metrics)

    async def refresh_metrics(self) -> None:
        """Read the gauges that live in PostgreSQL and JetStream (and readiness) now."""
        checks = await self.readiness()
        metrics.READY.set(1 if checks["ready"] else 0)
        if not checks["database"]:
            return
        async with self.pool.acquire(timeout=5) as conn:
            await self.metrics.refresh(conn)
        if checks["nats"]:
            await self.metrics.refresh_consumers(self.js, self.durables)

    async def readiness(self) -> dict[str, Any]:
        """What /readyz reports: database, NATS, migrations."""
        checks: dict[str, Any] = {
            "database": False,
            "nats": False,
            "migrations": False,
            "revocations": self.revocations.loaded.is_set(),
        }
        if self._pool is not None:
            try:
                async with self._pool.acquire(timeout=2) as conn:
                    pending = await pending_migrations(
                        conn, self.settings.db_schema, self.migrations
                    )
                checks["database"] = True
                checks["migrations"] = not pending
            except (OSError, asyncpg.PostgresError, TimeoutError, asyncpg.InterfaceError):
                pass
        with contextlib.suppress(Exception):
            checks["nats"] = bool(self.broker.connection.is_connected)
        checks["ready"] = self.started and all(
            checks[k] for k in ("database", "nats", "migrations", "revocations")
        )
        return checks

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        configure_logging(
            self.settings.service_name, self.settings.log_level, json=self.settings.log_json
        )
        await self.start()
        try:
            yield
        finally:
            await self.stop()


async def _guarded(name: str, run: Callable[[], Awaitable[None]]) -> None:
    try:
        await run()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background task stopped", extra={"task": name})
        raise


async def periodic(
    name: str,
    interval: float,
    tick: Callable[[], Awaitable[Any]],
    *,
    wake: asyncio.Event | None = None,
) -> None:
    """Call `tick()` every `interval` seconds (or when `wake` is set), surviving errors.

    A `WakeLoop` without a listener: a database or broker outage makes a tick fail; the
    loop logs it, backs off and tries again, so a background job never dies quietly.
    """

    async def work() -> bool:
        await tick()
        return False

    await WakeLoop(name, work, poll_interval=interval, flag=wake).run()


async def _retry(what: str, connect: Callable[[], Awaitable[Any]], attempts: int = 30) -> Any:
    """Dependencies may start after us (make run, Kubernetes): wait a bounded while."""
    delay = 0.2
    for attempt in range(1, attempts + 1):
        try:
            return await connect()
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            if attempt == attempts:
                raise
            log.warning(f"{what} not reachable yet", extra={"error": type(exc).__name__})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")
