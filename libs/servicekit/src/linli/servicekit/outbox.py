"""The transactional outbox and its relay.

`enqueue` writes an event in the caller's transaction, so a state change and the
events it causes commit together or not at all. `OutboxRelay` publishes unsent rows
to JetStream with `Nats-Msg-Id` = event id and marks them sent.

Why this shape:
* Rows are claimed with `FOR UPDATE SKIP LOCKED`, so two relays (two replicas) share
  the work instead of publishing the same row twice; if a relay dies after publishing
  and before marking, the next one publishes again and JetStream's duplicate window
  drops the copy.
* A batch is published with many publishes in flight (one round trip for the batch,
  not one per row).
* The relay wakes on LISTEN/NOTIFY right after a commit and polls as a fallback, so a
  lost notification (or a relay that connected late) only delays, never strands, a row
  (the loop is servicekit's `WakeLoop`).
* The `traceparent` of the transaction that wrote the row is stored with it and the
  publish span is its child, so one trace follows a need through the outbox.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import asyncpg
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from linli.contracts.binding import to_structured
from linli.contracts.envelope import CloudEvent
from linli.contracts.registry import lookup
from linli.contracts.subjects import SubjectError, parse_subject, subject_for

from . import failpoints, metrics
from .db import Conn, quote_ident
from .telemetry import context_from_traceparent, current_traceparent, tracer
from .wake import Every, WakeLoop

log = logging.getLogger(__name__)


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of one service's outbox."""
    return f"{schema}_outbox"


async def enqueue(conn: Conn, event: CloudEvent[Any], *, subject: str | None = None) -> None:
    """Add an event to the outbox in the caller's open transaction.

    The subject defaults to the one the contract registry gives for the event type.
    The current trace context is stored so the relay can continue the trace.
    """
    await enqueue_many(conn, [event], subjects=[subject])


async def enqueue_many(
    conn: Conn,
    events: list[CloudEvent[Any]],
    *,
    subjects: list[str | None] | None = None,
) -> None:
    """Add several events to the outbox in one statement, in the caller's transaction."""
    if not conn.is_in_transaction():
        raise RuntimeError("outbox.enqueue must run inside the state change's transaction")
    if not events:
        return
    current = current_traceparent()
    ids, subject_list, header_list, bodies, traceparents = [], [], [], [], []
    for event, subject in zip(events, subjects or [None] * len(events), strict=True):
        traceparent = event.traceparent or current
        if traceparent and not event.traceparent:
            event = event.model_copy(update={"traceparent": traceparent})
        body, headers = to_structured(event)
        ids.append(event.id)
        subject_list.append(subject or subject_for(lookup(event.type), event.community))
        header_list.append(json.dumps(headers))
        bodies.append(body)
        traceparents.append(traceparent)
    await conn.execute(
        "INSERT INTO outbox (event_id, subject, headers, payload, traceparent) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::bytea[], $5::text[])",
        ids,
        subject_list,
        header_list,
        bodies,
        traceparents,
    )
    # A statement trigger NOTIFYs the relay at commit (servicekit migration 0003).


def _type_label(subject: str) -> str:
    try:
        return metrics.event_type(parse_subject(subject).type)
    except SubjectError:
        return metrics.UNREGISTERED


PURGE_EVERY_S = 60.0
"""How often a relay deletes sent rows older than the retention period."""


class OutboxRelay:
    """Publishes outbox rows of one schema to JetStream."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        schema: str,
        *,
        dsn: str,
        batch_size: int = 200,
        poll_interval: float = 1.0,
        publish_timeout: float = 5.0,
        retention_s: float = 3 * 24 * 3600.0,
    ) -> None:
        self._pool = pool
        self._js = js
        self._schema = quote_ident(schema).strip('"')
        self._batch = batch_size
        self._timeout = publish_timeout
        self._retention_s = retention_s
        self._purge = Every(PURGE_EVERY_S)
        self._loop = WakeLoop(
            f"outbox-relay-{self._schema}",
            self._pass,
            poll_interval=poll_interval,
            channel=notify_channel(self._schema),
            dsn=dsn,
        )
        self.published = 0

    async def start(self) -> None:
        """Start listening and relaying in the background."""
        await self._loop.start()

    async def stop(self) -> None:
        """Stop relaying; unsent rows stay for the next relay."""
        await self._loop.stop()

    async def _pass(self) -> bool:
        """One batch; then, once the backlog is drained, the retention purge when due."""
        if await self.relay_once() == self._batch:
            return True
        await self._purge.run(self.purge_sent)
        return False

    async def relay_once(self) -> int:
        """Publish one batch of unsent rows; return how many were published."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, event_id, subject, headers, payload, traceparent FROM outbox "
                "WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch,
            )
            if not rows:
                return 0
            results = await asyncio.gather(
                *(self._publish(r) for r in rows), return_exceptions=True
            )
            sent = [r["id"] for r, res in zip(rows, results, strict=True) if res is None]
            failed = [r["id"] for r, res in zip(rows, results, strict=True) if res is not None]
            failpoints.hit("outbox.after_publish_before_mark")
            if sent:
                await conn.execute(
                    "UPDATE outbox SET sent_at = now(), attempts = attempts + 1 "
                    "WHERE id = ANY($1::bigint[])",
                    sent,
                )
            if failed:
                await conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1 WHERE id = ANY($1::bigint[])",
                    failed,
                )
        self.published += len(sent)
        for row, res in zip(rows, results, strict=True):
            if res is None:
                metrics.EVENTS_PUBLISHED.labels(_type_label(row["subject"])).inc()
        log.debug("outbox batch relayed", extra={"sent": len(sent), "failed": len(failed)})
        if failed:
            first = next(r for r in results if r is not None)
            raise RuntimeError(f"{len(failed)} outbox publishes failed") from first
        return len(sent)

    async def _publish(self, row: asyncpg.Record) -> None:
        headers: dict[str, str] = json.loads(row["headers"]) if row["headers"] else {}
        headers["Nats-Msg-Id"] = row["event_id"]
        parent = context_from_traceparent(row["traceparent"])
        with tracer().start_as_current_span(
            f"send {row['subject']}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "send",
                "messaging.destination.name": row["subject"],
                "messaging.message.id": row["event_id"],
            },
        ):
            traceparent = current_traceparent()
            if traceparent:
                headers["traceparent"] = traceparent
            ack = await self._js.publish(
                row["subject"], bytes(row["payload"]), headers=headers, timeout=self._timeout
            )
            trace.get_current_span().set_attribute("messaging.nats.duplicate", bool(ack.duplicate))

    async def purge_sent(self) -> int:
        """Delete sent rows older than the retention period."""
        result = await self._pool.execute(
            "DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1)",
            self._retention_s,
        )
        return int(result.split()[-1])

    async def backlog(self) -> int:
        """How many rows wait to be published (a metric and a test probe)."""
        value = await self._pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        return int(value or 0)
