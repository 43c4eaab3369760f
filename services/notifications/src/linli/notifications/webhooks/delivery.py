"""The webhook delivery worker: per-endpoint queues in PostgreSQL, signed POSTs.

Each subscription is one endpoint with its own queue (its `deliveries` rows). A pass
looks for endpoints with due rows and claims, per endpoint, at most
`max_in_flight_per_endpoint` rows (the subscription row is locked with SKIP LOCKED
while claiming, so replicas share endpoints instead of overfilling one). Every claimed
row is sent in its own task with its own timeout and no database connection held, so
a dead or slow endpoint only ever occupies its own slots: a live endpoint is claimed
and served on the next wake-up regardless.

The worker runs on servicekit's `WakeLoop`: it wakes on `NOTIFY` when the consumer
records deliveries, on `wake()` (an API resume or replay, a delivery that ends and
frees a slot) and otherwise every `delivery_poll_interval_s`. All its SQL is in
`store.py`.

A claim is a lease (`locked_until`): a replica that dies mid-attempt leaves the row to
be claimed again when the lease ends, so at-least-once holds; receivers deduplicate
on `webhook-id`, which is the same for every attempt of one event to one endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import json
import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from opentelemetry.trace import SpanKind, StatusCode
from standardwebhooks import Webhook

from linli.contracts.binding import STRUCTURED_CONTENT_TYPE
from linli.contracts.envelope import new_event
from linli.contracts.events import NotificationChannel, NotificationFailed
from linli.notifications.settings import NotificationsSettings
from linli.servicekit import metrics, outbox
from linli.servicekit.clock import Clock
from linli.servicekit.db import Conn
from linli.servicekit.sealing import SecretBox
from linli.servicekit.telemetry import current_traceparent, resumed_span
from linli.servicekit.wake import WakeLoop

from . import store
from .ssrf import Resolver, UnsafeUrl, check_endpoint, system_resolver

log = logging.getLogger(__name__)

SOURCE = "/linli/notifications"
USER_AGENT = "Linli-Webhooks/1"


def webhook_id(event_id: str, subscription_id: uuid.UUID) -> str:
    """The `webhook-id` of an event sent to one endpoint: the same on every retry."""
    return f"{event_id}:{subscription_id}"


def sign(secrets: list[str], msg_id: str, timestamp: datetime, body: bytes) -> str:
    """`webhook-signature`: one `v1,<sig>` per secret, space separated (rotation)."""
    text = body.decode("utf-8")
    when = timestamp.astimezone(UTC)
    return " ".join(Webhook(secret).sign(msg_id, when, text) for secret in secrets)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def retry_delay(settings: NotificationsSettings, attempts: int, rng: random.Random) -> float | None:
    """Delay before the next attempt after `attempts` failed ones; None when spent."""
    schedule = settings.retry_schedule_s
    if attempts > len(schedule):
        return None
    base = schedule[attempts - 1]
    jitter = settings.retry_jitter
    return base * (1 + rng.uniform(-jitter, jitter))


TIMEOUT = "timeout"
TOO_LARGE = "response too large"


@dataclass
class Attempt:
    """What one attempt produced (never the response body).

    `error` is set when the attempt did not complete: no connection, blocked, or a
    response not finished within the deadline (`timeout`) or longer than the cap
    (`response too large`); `status` is then whatever status line had arrived.
    """

    status: int | None
    error: str | None
    latency_ms: int
    retry_after: float | None = None

    @property
    def answered(self) -> bool:
        """A complete response arrived in time."""
        return self.status is not None and self.error is None

    @property
    def ok(self) -> bool:
        return self.answered and self.status is not None and 200 <= self.status < 300


class DeliveryWorker:
    """Sends due deliveries; one instance per process."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        settings: NotificationsSettings,
        box: SecretBox,
        *,
        resolver: Resolver = system_resolver,
        clock: Clock | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._box = box
        self._resolver = resolver
        self._clock = clock or Clock()
        self._inflight: dict[uuid.UUID, int] = defaultdict(int)
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random()
        self._client: httpx.AsyncClient | None = None
        self._loop = WakeLoop(
            "webhook-delivery",
            self._pass,
            poll_interval=settings.delivery_poll_interval_s,
            channel=store.notify_channel(settings.db_schema),
            dsn=settings.database_url.get_secret_value(),
        )

    @property
    def lease_s(self) -> float:
        return self._settings.webhook_timeout_s + 30.0

    def wake(self, *_: object) -> None:
        """Look for due rows at once (rows were recorded, made due, or a slot freed)."""
        self._loop.wake()

    async def run(self) -> None:
        """Run until cancelled: wake on NOTIFY, on `wake()` or after the poll interval."""
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(self._settings.webhook_timeout_s),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
            headers={"user-agent": USER_AGENT},
        )
        try:
            await self._loop.run()
        finally:
            # Stopping (SIGTERM): no new claims, but the POSTs in flight finish and are
            # recorded. Cut short, a POST the receiver got would stay leased and go out
            # a second time when its lease ends.
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=self._settings.webhook_timeout_s + 5)
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._client.aclose()

    async def _pass(self) -> bool:
        """One pass; full when a whole page of endpoints was due and something started."""
        endpoints, started = await self.pass_once()
        return endpoints == self._settings.delivery_endpoints_per_pass and started > 0

    async def pass_once(self) -> tuple[int, int]:
        """Claim and start what is due on every endpoint with free slots;
        (endpoints with due rows, deliveries started)."""
        limit = self._settings.max_in_flight_per_endpoint
        async with self._pool().acquire() as conn:
            due = await store.endpoints_due(conn, self._settings.delivery_endpoints_per_pass)
        started = 0
        for sub_id in due:
            free = limit - self._inflight[sub_id]
            if free <= 0:
                continue
            started += await self._claim_and_start(sub_id, free)
        return len(due), started

    async def _claim_and_start(self, sub_id: uuid.UUID, free: int) -> int:
        async with self._pool().acquire() as conn, conn.transaction():
            sub = await store.lock_endpoint(conn, sub_id)
            if sub is None:
                return 0
            busy = await store.leased_count(conn, sub_id)
            take = min(free, self._settings.max_in_flight_per_endpoint - busy)
            if take <= 0:
                return 0
            rows = await store.lease_due(conn, sub_id, take, self.lease_s)
        secrets = [self._box.open(sub["secret_sealed"])]
        until = sub["previous_secret_until"]
        if sub["previous_secret_sealed"] and until is not None and until > self._clock.now():
            secrets.append(self._box.open(sub["previous_secret_sealed"]))
        for row in sorted(rows, key=lambda r: r["id"]):
            self._inflight[sub_id] += 1
            task = asyncio.create_task(self._deliver(sub_id, sub["url"], secrets, row))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(rows)

    async def _deliver(
        self, sub_id: uuid.UUID, url: str, secrets: list[str], row: asyncpg.Record
    ) -> None:
        try:
            attempt = await self.send(sub_id, url, secrets, row["event_id"], bytes(row["payload"]))
            await self._record(sub_id, row, attempt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The lease runs out and the row is claimed again.
            log.warning("delivery not recorded", extra={"error": type(exc).__name__})
        finally:
            self._inflight[sub_id] -= 1
            if self._inflight[sub_id] <= 0:
                self._inflight.pop(sub_id, None)
            self.wake()

    async def send(
        self, sub_id: uuid.UUID, url: str, secrets: list[str], event_id: str, body: bytes
    ) -> Attempt:
        """One signed POST, connecting only to an address checked just now."""
        assert self._client is not None
        started = time.monotonic()
        msg_id = webhook_id(event_id, sub_id)
        now = self._clock.now()
        headers = {
            "content-type": STRUCTURED_CONTENT_TYPE,
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": sign(secrets, msg_id, now, body),
        }

        def elapsed() -> int:
            return int((time.monotonic() - started) * 1000)

        # The attempt continues the trace of the event it carries (the need's), and the
        # receiver can go on with it: the request carries that span's `traceparent`.
        with resumed_span(
            "webhook POST",
            _event_traceparent(body),
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": "POST", "messaging.message.id": event_id},
        ) as span:
            attempt = await self._post(url, headers, body, elapsed)
            if attempt.status is not None:
                span.set_attribute("http.response.status_code", attempt.status)
            if attempt.error is not None:
                span.set_status(StatusCode.ERROR)
            return attempt

    async def _post(
        self, url: str, headers: dict[str, str], body: bytes, elapsed: Callable[[], int]
    ) -> Attempt:
        """Check, connect, send and read the response, all within one deadline.

        httpx's timeouts bound each phase and each read, so a receiver trickling a byte
        at a time would hold the attempt forever; `asyncio.timeout` bounds the whole.
        The response body is streamed and at most `webhook_response_max_bytes` of it is
        read (raw, never decompressed); a longer one ends the attempt and the
        connection.
        """
        assert self._client is not None
        traceparent = current_traceparent()
        if traceparent:
            headers["traceparent"] = traceparent
        status: int | None = None
        cap = self._settings.webhook_response_max_bytes
        try:
            async with asyncio.timeout(self._settings.webhook_timeout_s):
                target, ip = await check_endpoint(
                    url,
                    allow_insecure=self._settings.allow_insecure_endpoints,
                    resolver=self._resolver,
                )
                pinned, extensions = _pin(url, target.host, ip)
                headers["host"] = _host_header(target.host, target.port, target.scheme)
                request = self._client.build_request(
                    "POST", pinned, content=body, headers=headers, extensions=extensions
                )
                response = await self._client.send(request, stream=True)
                try:
                    status = response.status_code
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read > cap:
                            return Attempt(status, TOO_LARGE, elapsed())
                finally:
                    # Unfinished, the connection is closed rather than reused.
                    await response.aclose()
        except UnsafeUrl as exc:
            return Attempt(None, f"blocked: {exc}", elapsed())
        except (TimeoutError, httpx.TimeoutException):
            return Attempt(status, TIMEOUT, elapsed())
        except httpx.HTTPError as exc:
            return Attempt(status, f"connection error: {type(exc).__name__}", elapsed())
        retry_after = None
        if response.status_code in (429, 503):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        return Attempt(response.status_code, None, elapsed(), retry_after)

    async def _record(self, sub_id: uuid.UUID, row: asyncpg.Record, attempt: Attempt) -> None:
        settings = self._settings
        attempts = int(row["attempts"]) + 1
        error = attempt.error or (None if attempt.ok else f"HTTP {attempt.status}")
        if attempt.ok:
            outcome = "delivered"
        elif attempt.answered and attempt.status == 410:
            outcome = "gone"
        else:
            outcome = "failed"
        metrics.WEBHOOK_ATTEMPTS.labels("delivered" if attempt.ok else "failed").inc()
        async with self._pool().acquire() as conn, conn.transaction():
            await store.record_attempt(
                conn,
                delivery_id=row["id"],
                sub_id=sub_id,
                event_id=row["event_id"],
                attempt=attempts,
                status=attempt.status,
                latency_ms=attempt.latency_ms,
                error=error,
                outcome=outcome,
            )
            if attempt.ok:
                await store.mark_delivered(conn, row["id"], attempts, attempt.status)
                await store.clear_failing(conn, sub_id)
                return
            if attempt.answered and attempt.status == 410:
                await store.mark_gone(conn, row["id"], attempts, error)
                await self._disable(conn, sub_id, "endpoint answered 410 Gone")
                await self._failed(conn, sub_id, row, attempt, attempts, "HTTP 410: disabled")
                return
            if attempt.retry_after is not None:
                delay: float | None = min(attempt.retry_after, settings.retry_after_max_s)
            else:
                delay = retry_delay(settings, attempts, self._rng)
            if delay is None:
                await store.mark_failed(conn, row["id"], attempts, attempt.status, error)
                await self._failed(conn, sub_id, row, attempt, attempts, error or "failed")
            else:
                await store.schedule_retry(conn, row["id"], attempts, attempt.status, error, delay)
            failing_for = await store.note_failing(conn, sub_id)
            too_long = failing_for is not None and failing_for >= settings.disable_after_s
            if too_long and await self._disable(conn, sub_id, "failing for too long"):
                await self._failed(
                    conn, sub_id, row, attempt, attempts, f"endpoint disabled: {error}"
                )

    async def _disable(self, conn: Conn, sub_id: uuid.UUID, reason: str) -> bool:
        if await store.disable(conn, sub_id, reason):
            log.warning("webhook endpoint disabled", extra={"subscription": str(sub_id)})
            metrics.WEBHOOK_DISABLED.labels("gone" if "410" in reason else "failing").inc()
            return True
        return False

    async def _failed(
        self,
        conn: Conn,
        sub_id: uuid.UUID,
        row: asyncpg.Record,
        attempt: Attempt,
        attempts: int,
        reason: str,
    ) -> None:
        """Tell the owner through the outbox: `notification.failed`."""
        data = NotificationFailed(
            subscription_id=sub_id,
            endpoint_id=sub_id,
            channel=NotificationChannel.WEBHOOK,
            event_id=row["event_id"][:256],
            event_type=row["event_type"][:128],
            reason=reason[:500],
            last_status_code=attempt.status
            if attempt.status and 100 <= attempt.status <= 599
            else None,
            attempts=min(attempts, 1000),
            failed_at=self._clock.now(),
        )
        event = new_event(data, community=row["community"], source=SOURCE, subject=str(sub_id))
        await outbox.enqueue(conn, event)


def _event_traceparent(body: bytes) -> str | None:
    """The `traceparent` extension of a structured CloudEvent body, if it has one."""
    try:
        value = json.loads(body).get("traceparent")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _pin(
    url: str, host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> tuple[httpx.URL, dict[str, Any]]:
    """The URL with its host replaced by the checked address; TLS still verifies `host`."""
    parsed = httpx.URL(url)
    literal = f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else str(ip)
    pinned = parsed.copy_with(host=literal.strip("[]") if ip.version == 6 else literal)
    extensions: dict[str, Any] = {}
    if parsed.scheme == "https":
        extensions["sni_hostname"] = host
    return pinned, extensions


def _host_header(host: str, port: int, scheme: str) -> str:
    default = 443 if scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default else f"{shown}:{port}"
