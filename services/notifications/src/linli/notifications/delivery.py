"""The webhook delivery worker: per-endpoint queues in PostgreSQL, signed POSTs.

Each subscription is one endpoint with its own queue (its `deliveries` rows). A pass
looks for endpoints with due rows and claims, per endpoint, at most
`max_in_flight_per_endpoint` rows (the subscription row is locked with SKIP LOCKED
while claiming, so replicas share endpoints instead of overfilling one). Every claimed
row is sent in its own task with its own timeout and no database connection held, so
a dead or slow endpoint only ever occupies its own slots: a live endpoint is claimed
and served on the next wake-up regardless.

A claim is a lease (`locked_until`): a replica that dies mid-attempt leaves the row to
be claimed again when the lease ends, so at-least-once holds; receivers deduplicate
on `webhook-id`, which is the same for every attempt of one event to one endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
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
from standardwebhooks import Webhook

from linli.contracts.binding import STRUCTURED_CONTENT_TYPE
from linli.contracts.envelope import new_event
from linli.contracts.events import NotificationChannel, NotificationFailed
from linli.servicekit import outbox

from .sealing import SecretBox
from .settings import NotificationsSettings
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


@dataclass
class Attempt:
    """What one attempt produced (never the response body)."""

    status: int | None
    error: str | None
    latency_ms: int
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class DeliveryWorker:
    """Sends due deliveries; one instance per process."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        settings: NotificationsSettings,
        box: SecretBox,
        *,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._box = box
        self._resolver = resolver
        self.wake = asyncio.Event()
        self._inflight: dict[uuid.UUID, int] = defaultdict(int)
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random()
        self._client: httpx.AsyncClient | None = None
        self._listener: asyncpg.Connection | None = None

    @property
    def lease_s(self) -> float:
        return self._settings.webhook_timeout_s + 30.0

    async def run(self, dsn: str) -> None:
        """Run until cancelled: wake on NOTIFY or after the poll interval."""
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(self._settings.webhook_timeout_s),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
            headers={"user-agent": USER_AGENT},
        )
        try:
            while True:
                try:
                    await self._listen(dsn)
                    await self.pass_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("delivery pass failed", extra={"error": type(exc).__name__})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.wake.wait(), timeout=self._settings.delivery_poll_interval_s
                    )
                self.wake.clear()
        finally:
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._client.aclose()
            if self._listener is not None:
                with contextlib.suppress(Exception):
                    await self._listener.close(timeout=2)

    async def _listen(self, dsn: str) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            conn = await asyncpg.connect(dsn)
            await conn.add_listener(
                f"{self._settings.db_schema}_deliveries", lambda *_: self.wake.set()
            )
            self._listener = conn
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("delivery listener unavailable", extra={"error": type(exc).__name__})

    async def pass_once(self) -> int:
        """Claim and start what is due on every endpoint with free slots."""
        limit = self._settings.max_in_flight_per_endpoint
        rows = await self._pool().fetch(
            """SELECT d.subscription_id FROM deliveries d
               JOIN subscriptions s ON s.id = d.subscription_id AND s.state = 'active'
               WHERE d.state = 'pending' AND d.next_attempt_at <= now()
                 AND (d.locked_until IS NULL OR d.locked_until < now())
               GROUP BY d.subscription_id
               ORDER BY min(d.next_attempt_at)
               LIMIT $1""",
            self._settings.delivery_endpoints_per_pass,
        )
        started = 0
        for row in rows:
            sub_id = row["subscription_id"]
            free = limit - self._inflight[sub_id]
            if free <= 0:
                continue
            started += await self._claim_and_start(sub_id, free)
        return started

    async def _claim_and_start(self, sub_id: uuid.UUID, free: int) -> int:
        async with self._pool().acquire() as conn, conn.transaction():
            sub = await conn.fetchrow(
                "SELECT id, url, secret_sealed, previous_secret_sealed, previous_secret_until "
                "FROM subscriptions WHERE id = $1 AND state = 'active' "
                "FOR UPDATE SKIP LOCKED",
                sub_id,
            )
            if sub is None:
                return 0
            busy = await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE subscription_id = $1 "
                "AND state = 'pending' AND locked_until > now()",
                sub_id,
            )
            take = min(free, self._settings.max_in_flight_per_endpoint - int(busy or 0))
            if take <= 0:
                return 0
            rows = await conn.fetch(
                """UPDATE deliveries SET locked_until = now() + make_interval(secs => $3)
                   WHERE id IN (
                       SELECT id FROM deliveries
                       WHERE subscription_id = $1 AND state = 'pending'
                         AND next_attempt_at <= now()
                         AND (locked_until IS NULL OR locked_until < now())
                       ORDER BY next_attempt_at, id LIMIT $2
                       FOR UPDATE SKIP LOCKED)
                   RETURNING id, event_id, event_type, community, payload, attempts""",
                sub_id,
                take,
                self.lease_s,
            )
        secrets = [self._box.open(sub["secret_sealed"])]
        until = sub["previous_secret_until"]
        if sub["previous_secret_sealed"] and until is not None and until > datetime.now(UTC):
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
            self.wake.set()

    async def send(
        self, sub_id: uuid.UUID, url: str, secrets: list[str], event_id: str, body: bytes
    ) -> Attempt:
        """One signed POST, connecting only to an address checked just now."""
        assert self._client is not None
        started = time.monotonic()
        msg_id = webhook_id(event_id, sub_id)
        now = datetime.now(UTC)
        headers = {
            "content-type": STRUCTURED_CONTENT_TYPE,
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": sign(secrets, msg_id, now, body),
        }

        def elapsed() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            target, ip = await check_endpoint(
                url,
                allow_insecure=self._settings.allow_insecure_endpoints,
                resolver=self._resolver,
            )
            pinned, extensions = _pin(url, target.host, ip)
            headers["host"] = _host_header(target.host, target.port, target.scheme)
            response = await self._client.post(
                pinned, content=body, headers=headers, extensions=extensions
            )
            await response.aclose()
        except UnsafeUrl as exc:
            return Attempt(None, f"blocked: {exc}", elapsed())
        except httpx.TimeoutException:
            return Attempt(None, "timeout", elapsed())
        except httpx.HTTPError as exc:
            return Attempt(None, f"connection error: {type(exc).__name__}", elapsed())
        retry_after = None
        if response.status_code in (429, 503):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        return Attempt(response.status_code, None, elapsed(), retry_after)

    async def _record(self, sub_id: uuid.UUID, row: asyncpg.Record, attempt: Attempt) -> None:
        settings = self._settings
        attempts = int(row["attempts"]) + 1
        error = attempt.error or (None if attempt.ok else f"HTTP {attempt.status}")
        async with self._pool().acquire() as conn, conn.transaction():
            if attempt.ok:
                outcome = "delivered"
            elif attempt.status == 410:
                outcome = "gone"
            else:
                outcome = "failed"
            await conn.execute(
                """INSERT INTO delivery_attempts
                       (delivery_id, subscription_id, event_id, attempt, started_at, status,
                        latency_ms, error, outcome)
                   VALUES ($1, $2, $3, $4,
                           now() - make_interval(secs => $6::float8 / 1000), $5, $6, $7, $8)""",
                row["id"],
                sub_id,
                row["event_id"],
                attempts,
                attempt.status,
                attempt.latency_ms,
                error,
                outcome,
            )
            if attempt.ok:
                await conn.execute(
                    "UPDATE deliveries SET state = 'delivered', attempts = $2, last_status = $3, "
                    "last_error = NULL, locked_until = NULL, finished_at = now() WHERE id = $1",
                    row["id"],
                    attempts,
                    attempt.status,
                )
                await conn.execute(
                    "UPDATE subscriptions SET failing_since = NULL "
                    "WHERE id = $1 AND failing_since IS NOT NULL",
                    sub_id,
                )
                return
            if attempt.status == 410:
                # Kept pending: resuming the endpoint sends it again.
                await conn.execute(
                    "UPDATE deliveries SET attempts = $2, last_status = 410, last_error = $3, "
                    "locked_until = NULL WHERE id = $1",
                    row["id"],
                    attempts,
                    error,
                )
                await self._disable(conn, sub_id, "endpoint answered 410 Gone")
                await self._failed(conn, sub_id, row, attempt, attempts, "HTTP 410: disabled")
                return
            if attempt.retry_after is not None:
                delay: float | None = min(attempt.retry_after, settings.retry_after_max_s)
            else:
                delay = retry_delay(settings, attempts, self._rng)
            if delay is None:
                await conn.execute(
                    "UPDATE deliveries SET state = 'failed', attempts = $2, last_status = $3, "
                    "last_error = $4, locked_until = NULL, finished_at = now() WHERE id = $1",
                    row["id"],
                    attempts,
                    attempt.status,
                    error,
                )
                await self._failed(conn, sub_id, row, attempt, attempts, error or "failed")
            else:
                await conn.execute(
                    "UPDATE deliveries SET attempts = $2, last_status = $3, last_error = $4, "
                    "locked_until = NULL, "
                    "next_attempt_at = now() + make_interval(secs => $5) WHERE id = $1",
                    row["id"],
                    attempts,
                    attempt.status,
                    error,
                    delay,
                )
            failing_for = await conn.fetchval(
                "UPDATE subscriptions SET failing_since = coalesce(failing_since, now()) "
                "WHERE id = $1 RETURNING extract(epoch FROM now() - failing_since)::float8",
                sub_id,
            )
            too_long = failing_for is not None and failing_for >= settings.disable_after_s
            if too_long and await self._disable(conn, sub_id, "failing for too long"):
                await self._failed(
                    conn, sub_id, row, attempt, attempts, f"endpoint disabled: {error}"
                )

    async def _disable(self, conn: Any, sub_id: uuid.UUID, reason: str) -> bool:
        result: str = await conn.execute(
            "UPDATE subscriptions SET state = 'disabled', disabled_reason = $2, "
            "updated_at = now() WHERE id = $1 AND state <> 'disabled'",
            sub_id,
            reason,
        )
        if result.endswith(" 1"):
            log.warning("webhook endpoint disabled", extra={"subscription": str(sub_id)})
            return True
        return False

    async def _failed(
        self,
        conn: Any,
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
            failed_at=datetime.now(UTC),
        )
        event = new_event(data, community=row["community"], source=SOURCE, subject=str(sub_id))
        await outbox.enqueue(conn, event)


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
