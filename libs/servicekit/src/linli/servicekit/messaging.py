"""NATS JetStream: the broker, streams, durable consumers and reliable delivery.

FastStream owns the connection (and intake's request/reply subscriber). Events are
consumed by `linli.servicekit.consume`, on nats-py pull subscriptions. What the
defaults get wrong for us is handled here:

* Streams are provisioned idempotently by us, so several replicas starting at once
  never fight over a stream's configuration.
* Every durable consumer gets explicit ack, `ack_wait`, bounded `max_deliver`, a
  timeout backoff and `max_ack_pending` (never the server's unlimited redelivery).
* `Deliveries` settles what a handler could not process: a database outage is ridden
  out without spending a delivery (`linli.servicekit.outage`); any other failure is
  nak'ed with a growing delay; a poison message (one that can never succeed) and a
  message whose deliveries are spent are stored whole in the dead-letter table with
  the reason, then terminated; later messages keep flowing.
* A message whose deliveries run out without an answer (the process crashed on it each
  time) is announced by the server's MAX_DELIVERIES advisory. The advisories stream
  keeps those advisories, and `DeadLetterCapture` stores each message as a dead letter
  through a durable of its own: at least once, even when no replica was running when
  the advisory was sent, and acknowledged only once the letter is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

import asyncpg
from faststream.nats import ConsumerConfig, JStream, NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.security import NatsCredentials, NatsUserPassword
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError
from opentelemetry.sdk.trace import TracerProvider

from linli.contracts.subjects import EVENTS_PREFIX, INGRESS_PREFIX
from linli.contracts.types import Reason

from . import failpoints, metrics
from .db import Conn
from .outage import DatabaseBreaker, Interrupted
from .revocations import bucket_config
from .settings import ServiceSettings

log = logging.getLogger(__name__)


class PoisonMessage(Exception):
    """A message that can never be processed; it goes to the dead letters at once."""

    def __init__(self, reasons: list[Reason]) -> None:
        super().__init__("; ".join(f"{r.field}: {r.message}" for r in reasons))
        self.reasons = reasons


def build_broker(
    settings: ServiceSettings,
    tracer_provider: TracerProvider | None,
    *,
    error_cb: Callable[[Exception], Awaitable[None]] | None = None,
) -> NatsBroker:
    """A FastStream NATS broker with tracing and without per-message logging.

    `error_cb` receives the connection's asynchronous errors (a permission violation
    arrives only there; see `outbox.PublishDenials`).
    """
    security: NatsUserPassword | NatsCredentials | None = None
    if settings.nats_creds_file:
        security = NatsCredentials(settings.nats_creds_file)
    elif settings.nats_user and settings.nats_password:
        security = NatsUserPassword(settings.nats_user, settings.nats_password.get_secret_value())
    return NatsBroker(
        settings.nats_url,
        name=f"linli-{settings.service_name}",
        security=security,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        error_cb=error_cb,
        middlewares=[NatsTelemetryMiddleware(tracer_provider=tracer_provider)],
        # The per-message logger costs more than the message itself (NOTES.md).
        logger=None,
        graceful_timeout=10.0,
        description=f"Linli {settings.service_name} service",
    )


def stream_subjects(prefix: str, settings: ServiceSettings) -> list[str]:
    """The subjects a stream covers: all communities or the configured ones."""
    scope = settings.communities_scope
    if not scope:
        return [f"{prefix}.>"]
    return [f"{prefix}.{community}.>" for community in scope]


def stream_configs(settings: ServiceSettings) -> list[api.StreamConfig]:
    """Domain-event, ingress and advisories streams, and the revocations bucket (ADR 0030)."""
    common: dict[str, Any] = {
        "storage": api.StorageType.FILE,
        "retention": api.RetentionPolicy.LIMITS,
        "discard": api.DiscardPolicy.OLD,
        "num_replicas": settings.stream_replicas,
        "duplicate_window": settings.duplicate_window_s,
        # Headers and envelope on top of the 64 KiB body limit.
        "max_msg_size": 128 * 1024,
    }
    return [
        api.StreamConfig(
            name=settings.events_stream,
            description="Linli domain events (CloudEvents), replayable for days",
            subjects=stream_subjects(EVENTS_PREFIX, settings),
            max_age=settings.events_max_age_s,
            **common,
        ),
        api.StreamConfig(
            name=settings.ingress_stream,
            description="Commands from other systems; answered by the consumer, not the stream",
            subjects=stream_subjects(INGRESS_PREFIX, settings),
            max_age=settings.ingress_max_age_s,
            # The stream stays silent so that a request's reply comes from intake,
            # after the need is committed (ADR 0004).
            no_ack=True,
            **common,
        ),
        bucket_config(settings),
        advisories_stream_config(settings),
    ]


MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"


def advisory_subject(stream: str, durable: str) -> str:
    """The subject of the server's MAX_DELIVERIES advisory for one durable."""
    return f"{MAX_DELIVERIES_ADVISORY}.{stream}.{durable}"


def advisories_stream_config(settings: ServiceSettings) -> api.StreamConfig:
    """The stream that keeps the MAX_DELIVERIES advisories of the events and ingress
    durables, so that a dead letter is captured even when no replica listened."""
    return api.StreamConfig(
        name=settings.advisories_stream,
        description="MAX_DELIVERIES advisories, kept until each service stores its dead letter",
        subjects=[
            f"{MAX_DELIVERIES_ADVISORY}.{stream}.>"
            for stream in (settings.events_stream, settings.ingress_stream)
        ],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        discard=api.DiscardPolicy.OLD,
        num_replicas=settings.stream_replicas,
        # An advisory is worth keeping as long as the message it names.
        max_age=max(settings.events_max_age_s, settings.ingress_max_age_s),
        duplicate_window=settings.duplicate_window_s,
        max_msg_size=8 * 1024,
    )


async def provision_streams(js: JetStreamContext, settings: ServiceSettings) -> None:
    """Create or update the streams; safe when several processes do it at once."""
    for config in stream_configs(settings):
        try:
            await js.add_stream(config=config)
        except BadRequestError:
            # Exists (perhaps just created by another replica): converge its config.
            try:
                await js.update_stream(config=config)
            except BadRequestError as exc:
                log.warning(
                    "stream config not updated",
                    extra={"stream": config.name, "error": exc.description},
                )


def consumer_config(
    settings: ServiceSettings,
    durable: str,
    *,
    filter_subject: str | None = None,
    filter_subjects: list[str] | None = None,
) -> ConsumerConfig:
    """A durable, explicit-ack consumer with bounded redelivery and backoff."""
    # backoff applies to ack timeouts (a crashed or paused consumer); errors are
    # nak'ed with their own delay in Deliveries.process.
    backoff = [
        min(settings.consumer_ack_wait_s * (2**i), 600.0)
        for i in range(settings.consumer_max_deliver - 1)
    ]
    return ConsumerConfig(
        durable_name=durable,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=settings.consumer_ack_wait_s,
        max_deliver=settings.consumer_max_deliver,
        backoff=backoff,
        max_ack_pending=settings.consumer_max_ack_pending,
        filter_subject=filter_subject,
        filter_subjects=filter_subjects,
    )


def jstream(name: str) -> JStream:
    """A reference to a stream we provision ourselves."""
    return JStream(name=name, declare=False)


@dataclass(frozen=True)
class DeadLetter:
    """What is kept of a message that could not be processed."""

    consumer: str
    subject: str
    headers: Mapping[str, str]
    payload: bytes
    reasons: list[Reason]
    stream_seq: int | None = None
    deliveries: int | None = None
    dedupe_key: str | None = None

    def key(self) -> str:
        if self.dedupe_key:
            return self.dedupe_key
        digest = sha256()
        digest.update(self.subject.encode())
        digest.update(b"\0")
        digest.update(self.payload)
        return f"{self.consumer}:{digest.hexdigest()}"


async def store_dead_letter(conn: Conn, letter: DeadLetter) -> tuple[uuid.UUID, bool]:
    """Keep a dead letter; returns its id and whether it is new.

    The same message dead-lettered again (say after a replay that failed again) updates
    the existing row instead of adding a second one.
    """
    new_id = uuid.uuid4()
    row = await conn.fetchrow(
        """INSERT INTO dead_letters
               (id, dedupe_key, consumer, subject, headers, payload, reasons,
                stream_seq, deliveries)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7::jsonb, $8, $9)
           ON CONFLICT (dedupe_key) DO UPDATE
               SET reasons = EXCLUDED.reasons, deliveries = EXCLUDED.deliveries,
                   replayed_at = NULL
           RETURNING id, (xmax = 0) AS inserted""",
        new_id,
        letter.key(),
        letter.consumer,
        letter.subject,
        json.dumps(dict(letter.headers)),
        letter.payload,
        json.dumps([r.model_dump() for r in letter.reasons]),
        letter.stream_seq,
        letter.deliveries,
    )
    assert row is not None
    return row["id"], bool(row["inserted"])


class Deliveries:
    """Settles JetStream messages that a handler could not process: an outage is ridden
    out, another failure retried with a growing delay, poison and spent messages kept as
    dead letters."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        settings: ServiceSettings,
        breaker: DatabaseBreaker | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self.breaker = breaker or DatabaseBreaker(pool, settings)
        """One per process: every consumer of the process rides out the same outage."""

    def retry_delay(self, delivered: int) -> float:
        """Exponential backoff for failures, capped."""
        base = self._settings.retry_base_delay_s * (2 ** max(delivered - 1, 0))
        return float(min(base, self._settings.retry_max_delay_s))

    async def process(
        self, consumer: str, msg: Msg, handler: Callable[[], Awaitable[None]]
    ) -> None:
        """Run `handler` for one message; ack, or settle its failure.

        While the database is unreachable the message is held (not nak'ed, so no
        delivery is spent) and `handler` runs again once it answers; a process stopping
        meanwhile gives the message back.
        """
        with self.breaker.holding([msg]):
            try:
                # Runs again only after an outage has ended; `Interrupted` ends it at stop.
                while True:
                    try:
                        await handler()
                        break
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        if await self.breaker.ride_out(exc):
                            continue
                        await self.settle_failure(consumer, msg, exc)
                        return
            except Interrupted:
                await self.release([msg])
                return
        failpoints.hit("inbox.after_commit_before_ack")
        await msg.ack()

    async def settle_failure(
        self,
        consumer: str,
        msg: Msg,
        exc: BaseException,
        interrupt: asyncio.Event | None = None,
    ) -> str:
        """Poison goes to the dead letters at once; anything else is retried with a
        growing delay until the deliveries are spent, then dead-lettered.

        A database outage is not the message's failure: callers ride it out first
        (`DatabaseBreaker.ride_out`) and settle only what remains.
        Returns what became of the message: `dead_lettered` or `retried`.
        """
        if isinstance(exc, PoisonMessage):
            return await self.dead_letter(consumer, msg, exc.reasons, interrupt)
        delivered = msg.metadata.num_delivered or 1
        if delivered >= self._settings.consumer_max_deliver:
            reason = Reason(
                field="",
                message=f"gave up after {delivered} deliveries: {type(exc).__name__}",
                code="max_deliveries",
            )
            return await self.dead_letter(consumer, msg, [reason], interrupt)
        log.warning(
            "handler failed, will retry",
            extra={"consumer": consumer, "error": type(exc).__name__, "delivered": delivered},
        )
        await msg.nak(delay=self.retry_delay(delivered))
        return "retried"

    async def dead_letter(
        self,
        consumer: str,
        msg: Msg,
        reasons: list[Reason],
        interrupt: asyncio.Event | None = None,
    ) -> str:
        """Keep the message whole with its reasons, then terminate its redelivery.

        While the database is unreachable the message is held and the letter stored once
        it answers. When storing fails otherwise, the message is nak'ed: keeping it
        matters more than settling it. At its last delivery that nak makes the server
        announce MAX_DELIVERIES, and `DeadLetterCapture` stores the letter from there.
        Returns `dead_lettered`, or `retried` when the letter could not be stored.
        """
        meta = msg.metadata
        delivered = meta.num_delivered or 1
        letter = DeadLetter(
            consumer=consumer,
            subject=msg.subject,
            headers=dict(msg.headers or {}),
            payload=msg.data,
            reasons=reasons,
            stream_seq=meta.sequence.stream,
            deliveries=delivered,
        )
        # Runs again only after an outage has ended; `Interrupted` ends it at stop.
        while True:
            try:
                async with self._pool().acquire() as conn:
                    await store_dead_letter(conn, letter)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if await self.breaker.ride_out(exc, interrupt):
                    continue
                log.warning("dead letter not stored", extra={"error": type(exc).__name__})
                await msg.nak(delay=self.retry_delay(delivered))
                return "retried"
        log.warning(
            "message dead-lettered",
            extra={"consumer": consumer, "stream_seq": meta.sequence.stream},
        )
        metrics.DEAD_LETTERS.labels(consumer, reasons[0].code if reasons else "unknown").inc()
        await msg.term()
        return "dead_lettered"

    async def release(self, msgs: Sequence[Msg]) -> int:
        """Give back what a stopping process held through an outage; how many.

        Each comes back after a delay, to this or another replica: one delivery spent,
        as a crash would spend it.
        """
        released = 0
        for msg in msgs:
            if msg.is_acked:
                continue
            with contextlib.suppress(Exception):
                await msg.nak(delay=self.retry_delay(msg.metadata.num_delivered or 1))
            released += 1
        if released:
            log.warning("messages given back at stop during an outage", extra={"count": released})
        return released


def max_deliveries_letter(durable: str, advisory: Mapping[str, Any], stored: Any) -> DeadLetter:
    """The dead letter of a message the server gave up on (its advisory, its stored copy)."""
    deliveries = advisory.get("deliveries")
    return DeadLetter(
        consumer=durable,
        subject=stored.subject or "",
        headers=dict(stored.headers or {}),
        payload=stored.data or b"",
        reasons=[
            Reason(
                field="",
                message=f"not acknowledged after {deliveries} deliveries",
                code="max_deliveries",
            )
        ],
        stream_seq=int(advisory["stream_seq"]),
        deliveries=int(deliveries) if isinstance(deliveries, int) else None,
    )


async def replay_dead_letter(pool: asyncpg.Pool, nc: NatsClient, letter_id: uuid.UUID) -> str:
    """Publish a dead letter again on its subject; returns the message id used.

    Sent as a request so that something must answer: JetStream's publish ack on an
    events subject, intake's accepted/rejected answer on an ingress subject. A denied
    or unrouted publish times out and the letter stays open (`replay_count` counts
    attempts). A fresh `Nats-Msg-Id`
    keeps the stream's duplicate window from dropping it; the consumer's inbox still
    guarantees a single effect.
    """
    # No lock is held while waiting for the answer: the consumer handling the replay
    # may write to this very row (a command rejected again updates its dead letter).
    row = await pool.fetchrow(
        "UPDATE dead_letters SET replay_count = replay_count + 1 WHERE id = $1 "
        "RETURNING subject, headers, payload, replay_count",
        letter_id,
    )
    if row is None:
        raise KeyError(f"no dead letter {letter_id}")
    headers = json.loads(row["headers"]) if row["headers"] else {}
    msg_id = f"{letter_id}:replay:{row['replay_count']}"
    headers["Nats-Msg-Id"] = msg_id
    await nc.request(row["subject"], bytes(row["payload"]), timeout=10, headers=headers)
    await pool.execute("UPDATE dead_letters SET replayed_at = now() WHERE id = $1", letter_id)
    return msg_id
