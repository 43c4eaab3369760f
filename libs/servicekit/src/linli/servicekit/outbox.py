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
* A row the server *refuses* (no stream covers its subject, it is over the maximum
  payload, the NATS user may not publish there) will not heal by waiting: it is retried
  with a growing delay of its own and, after `max_attempts` refusals, quarantined with
  the reason, and the rows behind it flow on (ADR 0029). A failure the server did not
  answer (NATS unreachable, a timeout) is an outage: the pass fails and the loop backs
  off, and the row is never quarantined for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import asyncpg
import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from linli.contracts.binding import to_structured
from linli.contracts.envelope import CloudEvent
from linli.contracts.registry import lookup
from linli.contracts.subjects import SubjectError, parse_subject, subject_for

from . import failpoints, metrics
from .db import Conn, quote_ident
from .telemetry import context_from_traceparent, current_traceparent, tracer
from .wake import WakeLoop

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


EVIDENCE_S = 120.0
"""A refused row is quarantined only if JetStream accepted a publish this recently."""

_DENIED = re.compile(r'permissions violation for publish to "([^"]+)"', re.IGNORECASE)


class PublishDenials:
    """Subjects the server recently refused to let this connection publish to.

    A JetStream publish that permissions deny is not answered: nats-py reports a timeout
    to the caller and the server's `-ERR` to the connection's error callback. The broker
    feeds that callback here (`note`), so the relay can tell a denial (permanent) from
    a timeout (an outage). Bounded: the newest `size` subjects.
    """

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._seen: OrderedDict[str, float] = OrderedDict()

    async def note(self, error: Exception) -> None:
        """The connection's error callback (also safe for every other error)."""
        found = _DENIED.search(str(error))
        if found is None:
            return
        self._seen[found.group(1)] = time.monotonic()
        self._seen.move_to_end(found.group(1))
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)

    def recent(self, subject: str, within: float) -> bool:
        at = self._seen.get(subject)
        return at is not None and time.monotonic() - at <= within


@dataclass(frozen=True)
class Refusal:
    """Why the server will not take a row: a code (metric label) and what it said."""

    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


def refusal(
    exc: BaseException, subject: str, denials: PublishDenials | None, within: float
) -> Refusal | None:
    """The server's permanent refusal behind a failed publish, or None for an outage.

    Only answers that waiting cannot change are refusals. Everything else (timeouts,
    a closed or reconnecting connection, JetStream unavailable or out of resources: 5xx)
    is an outage and keeps the row waiting. The detail holds the error class and the
    server's description, never the payload.
    """
    if isinstance(exc, nats.errors.MaxPayloadError):
        return Refusal("max_payload", "MaxPayloadError: larger than the server's max_payload")
    if isinstance(exc, NoStreamResponseError):
        return Refusal("no_stream", "NoStreamResponseError: no stream covers the subject")
    if isinstance(exc, APIError) and exc.code is not None and 400 <= exc.code < 500:
        return Refusal(
            "rejected",
            f"{type(exc).__name__}: code={exc.code} err_code={exc.err_code} "
            f"{(exc.description or '')[:200]}",
        )
    if isinstance(exc, TimeoutError) and denials is not None and denials.recent(subject, within):
        return Refusal("permissions", "permissions violation for publish")
    return None


def outage(exc: BaseException) -> str:
    """What `last_error` says about a failure that is not a refusal: its class only."""
    return f"unavailable: {type(exc).__name__}"


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
        max_attempts: int = 8,
        retry_base_s: float = 2.0,
        retry_max_s: float = 60.0,
        denials: PublishDenials | None = None,
    ) -> None:
        self._pool = pool
        self._js = js
        self._schema = quote_ident(schema).strip('"')
        self._batch = batch_size
        self._timeout = publish_timeout
        self._max_attempts = max_attempts
        self._retry_base = retry_base_s
        self._retry_max = retry_max_s
        self._denials = denials
        self._accepted_at: float | None = None
        self._loop = WakeLoop(
            f"outbox-relay-{self._schema}",
            self.relay_once,
            poll_interval=poll_interval,
            channel=notify_channel(self._schema),
            dsn=dsn,
        )
        self.published = 0
        self.quarantined = 0

    @property
    def failed_passes(self) -> int:
        """Passes that failed (an outage) since start: a probe for tests."""
        return self._loop.failed

    async def start(self) -> None:
        """Start listening and relaying in the background."""
        await self._loop.start()

    async def stop(self) -> None:
        """Stop relaying; unsent rows stay for the next relay."""
        await self._loop.stop()

    def _retry_delay(self, refusals: int) -> float:
        return float(min(self._retry_base * 2 ** min(refusals - 1, 32), self._retry_max))

    async def relay_once(self) -> bool:
        """Publish one batch of due rows; True when the batch was full (more may wait).

        Refused rows are recorded (and quarantined after `max_attempts`) without failing
        the pass; any other failure fails it after the batch is recorded, so the loop
        backs off from a broker that does not answer.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, event_id, subject, headers, payload, traceparent, refusals "
                "FROM outbox WHERE sent_at IS NULL AND quarantined_at IS NULL "
                "AND (next_attempt_at IS NULL OR next_attempt_at <= now()) "
                "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch,
            )
            if not rows:
                return False
            results = await asyncio.gather(
                *(self._publish(r) for r in rows), return_exceptions=True
            )
            if any(res is None for res in results):
                self._accepted_at = time.monotonic()
            evidence = (
                self._accepted_at is not None and time.monotonic() - self._accepted_at <= EVIDENCE_S
            )
            sent: list[int] = []
            failed: list[tuple[asyncpg.Record, str]] = []
            refused: list[tuple[asyncpg.Record, Refusal, bool]] = []
            for r, res in zip(rows, results, strict=True):
                if res is None:
                    sent.append(r["id"])
                    continue
                why = refusal(res, r["subject"], self._denials, self._timeout + 5.0)
                if why is None:
                    failed.append((r, outage(res)))
                else:
                    # Without a recent accepted publish, a "no stream" may be a stream
                    # being recreated or a JetStream still recovering: keep waiting.
                    quarantine = evidence and r["refusals"] + 1 >= self._max_attempts
                    refused.append((r, why, quarantine))
            failpoints.hit("outbox.after_publish_before_mark")
            if sent:
                await conn.execute(
                    "UPDATE outbox SET sent_at = now(), attempts = attempts + 1 "
                    "WHERE id = ANY($1::bigint[])",
                    sent,
                )
            if failed:
                await conn.execute(
                    "UPDATE outbox SET attempts = outbox.attempts + 1, last_error = f.error "
                    "FROM unnest($1::bigint[], $2::text[]) AS f (id, error) "
                    "WHERE outbox.id = f.id",
                    [r["id"] for r, _ in failed],
                    [error for _, error in failed],
                )
            if refused:
                await conn.execute(
                    "UPDATE outbox SET attempts = outbox.attempts + 1, "
                    "refusals = outbox.refusals + 1, last_error = f.error, "
                    "next_attempt_at = now() + make_interval(secs => f.delay), "
                    "quarantined_at = CASE WHEN f.quarantine THEN now() END "
                    "FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::bool[]) "
                    "AS f (id, error, delay, quarantine) WHERE outbox.id = f.id",
                    [r["id"] for r, _, _ in refused],
                    [str(why) for _, why, _ in refused],
                    [self._retry_delay(r["refusals"] + 1) for r, _, _ in refused],
                    [quarantine for _, _, quarantine in refused],
                )
        self.published += len(sent)
        for r, res in zip(rows, results, strict=True):
            if res is None:
                metrics.EVENTS_PUBLISHED.labels(_type_label(r["subject"])).inc()
        for r, why, quarantine in refused:
            fields = {
                "outbox_id": r["id"],
                "event_id": r["event_id"],
                "reason": why.code,
                "refusals": r["refusals"] + 1,
            }
            if quarantine:
                self.quarantined += 1
                metrics.OUTBOX_QUARANTINED.labels(_type_label(r["subject"]), why.code).inc()
                log.warning("outbox row quarantined", extra=fields)
            else:
                log.info("outbox row refused", extra=fields)
        log.debug(
            "outbox batch relayed",
            extra={"sent": len(sent), "failed": len(failed), "refused": len(refused)},
        )
        if failed:
            first = next(
                res for r, res in zip(rows, results, strict=True) if r["id"] == failed[0][0]["id"]
            )
            raise RuntimeError(f"{len(failed)} outbox publishes failed") from first
        return len(rows) == self._batch

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

    async def backlog(self) -> int:
        """How many rows wait to be published, quarantined ones aside (a test probe)."""
        value = await self._pool.fetchval(
            "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND quarantined_at IS NULL"
        )
        return int(value or 0)
