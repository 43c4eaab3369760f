"""Revoked credentials, shared by every service through one JetStream key-value bucket.

The same token is registered in each service (each has its own `credentials` row and id),
so what identifies a credential across services is its SHA-256 digest. A revocation is
state, not an event of a community: `credentials revoke <id>` in any service marks the row
and puts `<digest hex> -> revoked_at` into the bucket (ADR 0030). Every service process
watches the bucket with one ordered consumer (`RevocationWatcher`, started by
`ServiceRuntime`): it loads every key at start and after each reconnect, keeps the revoked
digests in memory for the auth check, marks its own row revoked and tells the service's
hooks (notifications disables the credential's subscriptions and closes its streams).

The bucket is a stream like the others (`KV_<bucket>`, `stream_configs`), created by the
provisioner; it holds digests only (a digest does not give the token back), and neither a
digest nor a token is ever logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import nats.errors
from nats.js import JetStreamContext, api

from .db import TRANSIENT_ERRORS, Conn
from .settings import ServiceSettings

log = logging.getLogger(__name__)

RevokedHook = Callable[[Conn, list[uuid.UUID]], Awaitable[None]]
"""Called (in the transaction that marks them) with the local ids of newly seen revocations."""

_HEX = re.compile(r"^[0-9a-f]{64}$")


def kv_stream(bucket: str) -> str:
    """The stream behind a key-value bucket (`KV_<bucket>`, as NATS names it)."""
    return f"KV_{bucket}"


def kv_subject(bucket: str, key: str = ">") -> str:
    return f"$KV.{bucket}.{key}"


def bucket_config(settings: ServiceSettings) -> api.StreamConfig:
    """The revocations bucket as a stream: what `js.create_key_value` would make, kept
    forever (a revocation does not expire), one value per key."""
    return api.StreamConfig(
        name=kv_stream(settings.revocations_bucket),
        description="Revoked API credentials: token digest (hex) -> revoked_at (ADR 0030)",
        subjects=[kv_subject(settings.revocations_bucket)],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        discard=api.DiscardPolicy.NEW,
        num_replicas=settings.stream_replicas,
        max_msgs_per_subject=1,
        max_msg_size=1024,
        allow_rollup_hdrs=True,
        deny_delete=True,
        allow_direct=True,
        duplicate_window=120.0,
    )


async def publish_revocation(js: JetStreamContext, bucket: str, digest: bytes) -> None:
    """Put one revoked digest into the bucket (a KV put: a JetStream publish on its key)."""
    stamp = datetime.now(UTC).isoformat().encode()
    await js.publish(kv_subject(bucket, digest.hex()), stamp)


async def mark_revoked(conn: Conn, digests: list[bytes]) -> list[uuid.UUID]:
    """Mark this service's rows of these digests revoked; the ids newly revoked."""
    rows = await conn.fetch(
        "UPDATE credentials SET revoked_at = now() "
        "WHERE token_sha256 = ANY($1::bytea[]) AND revoked_at IS NULL RETURNING id",
        digests,
    )
    return [r["id"] for r in rows]


async def ids_of(conn: Conn, digests: list[bytes]) -> list[uuid.UUID]:
    """This service's credential ids of these digests (revoked or not)."""
    rows = await conn.fetch(
        "SELECT id FROM credentials WHERE token_sha256 = ANY($1::bytea[])", digests
    )
    return [r["id"] for r in rows]


class RevocationWatcher:
    """The revoked digests of the whole system, in memory, kept current from the bucket.

    `loaded` is set once every key present at (re)subscription has been read; until then
    `is_revoked` cannot be trusted and the auth check answers 503 (`ready`).
    """

    def __init__(
        self,
        settings: ServiceSettings,
        js: Callable[[], JetStreamContext],
        pool: Callable[[], asyncpg.Pool],
        nc: Callable[[], Any],
    ) -> None:
        self.settings = settings
        self._js = js
        self._pool = pool
        self._nc = nc
        self.revoked: set[bytes] = set()
        self.loaded = asyncio.Event()
        self.hooks: list[RevokedHook] = []
        """Each gets the local ids of every digest seen (again at each load: idempotent)."""

    @property
    def bucket(self) -> str:
        return self.settings.revocations_bucket

    def is_revoked(self, digest: bytes) -> bool:
        return digest in self.revoked

    async def run(self) -> None:
        """Watch until cancelled; any failure or reconnect starts over with a full load."""
        delay = 0.2
        while True:
            try:
                await self._watch_once()
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("revocations watch restarting", extra={"error": type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _watch_once(self) -> None:
        js = self._js()
        nc = self._nc()
        reconnects = nc.stats.get("reconnects", 0)
        info = await js.stream_info(kv_stream(self.bucket))
        last = info.state.last_seq if info.state.messages else 0
        sub = await js.subscribe(
            kv_subject(self.bucket),
            stream=kv_stream(self.bucket),
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            idle_heartbeat=5.0,
            inactive_threshold=300.0,
        )
        try:
            pending: list[bytes] = []
            if last == 0:
                self.loaded.set()
            while True:
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except nats.errors.TimeoutError:
                    if nc.stats.get("reconnects", 0) != reconnects:
                        return  # load everything again: nothing missed while away
                    continue
                digest = _digest_of(msg.subject, self.bucket)
                if digest is not None:
                    pending.append(digest)
                caught_up = msg.metadata.num_pending == 0 or msg.metadata.sequence.stream >= last
                if pending and (caught_up or len(pending) >= 500):
                    await self._apply(pending)
                    pending = []
                if caught_up and not self.loaded.is_set():
                    self.loaded.set()
                    log.info("revocations loaded", extra={"count": len(self.revoked)})
        finally:
            try:
                await sub.unsubscribe()
            except Exception:
                log.debug("revocations unsubscribe failed")

    async def _apply(self, digests: list[bytes]) -> None:
        """Refuse at once (memory), then mark the rows and run the hooks (retried)."""
        fresh = [d for d in digests if d not in self.revoked]
        self.revoked.update(digests)
        delay = 0.2
        for attempt in range(1, 31):
            try:
                async with self._pool().acquire() as conn, conn.transaction():
                    newly = await mark_revoked(conn, digests)
                    ids = await ids_of(conn, digests)
                    for hook in self.hooks:
                        await hook(conn, ids)
                if newly or fresh:
                    log.info(
                        "credentials revoked",
                        extra={"seen": len(fresh), "marked": len(newly), "local": len(ids)},
                    )
                return
            except TRANSIENT_ERRORS as exc:
                if attempt == 30:
                    raise
                log.warning("revocations not applied yet", extra={"error": type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)


def _digest_of(subject: str, bucket: str) -> bytes | None:
    key = subject.removeprefix(f"$KV.{bucket}.")
    return bytes.fromhex(key) if _HEX.match(key) else None
