"""NATS JetStream: the broker, streams, durable consumers and reliable delivery.

FastStream owns the connection (and intake's request/reply subscriber). Events are
consumed by `linli.servicekit.consume`, on nats-py pull subscriptions. What the
defaults get wrong for us is handled here:

* Streams are provisioned idempotently by us, so several replicas starting at once
  never fight over a stream's configuration.
* Every durable consumer gets explicit ack, `ack_wait`, bounded `max_deliver`, a
  timeout backoff and `max_ack_pending` (never the server's unlimited redelivery).
* `Deliveries` settles what a handler could not process: a transient error is nak'ed
  with a growing delay; a poison message (one that can never succeed) and a message
  whose deliveries are spent are stored whole in the dead-letter table with the
  reason, then terminated; later messages keep flowing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
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
from nats.js.errors import BadRequestError, NotFoundError
from opentelemetry.sdk.trace import TracerProvider

from linli.contracts.subjects import EVENTS_PREFIX, INGRESS_PREFIX
from linli.contracts.types import Reason

from . import failpoints, metrics
from .db import Conn
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
    """Domain-event and ingress streams and the revocations bucket (ADR 0030)."""
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
    ]


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
    """Settles JetStream messages that a handler could not process: retry or dead letter."""

    def __init__(self, pool: Callable[[], asyncpg.Pool], settings: ServiceSettings) -> None:
        self._pool = pool
        self._settings = settings

    def retry_delay(self, delivered: int) -> float:
        """Exponential backoff for transient failures, capped."""
        base = self._settings.retry_base_delay_s * (2 ** max(delivered - 1, 0))
        return float(min(base, self._settings.retry_max_delay_s))

    async def process(
        self, consumer: str, msg: Msg, handler: Callable[[], Awaitable[None]]
    ) -> None:
        """Run `handler` for one message; ack, or settle its failure."""
        try:
            await handler()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.settle_failure(consumer, msg, exc)
            return
        failpoints.hit("inbox.after_commit_before_ack")
        await msg.ack()

    async def settle_failure(self, consumer: str, msg: Msg, exc: BaseException) -> str:
        """Poison goes to the dead letters at once; anything else is retried with a
        growing delay until the deliveries are spent, then dead-lettered.

        Returns what became of the message: `dead_lettered` or `retried`.
        """
        if isinstance(exc, PoisonMessage):
            return await self.dead_letter(consumer, msg, exc.reasons)
        delivered = msg.metadata.num_delivered or 1
        if delivered >= self._settings.consumer_max_deliver:
            reason = Reason(
                field="",
                message=f"gave up after {delivered} deliveries: {type(exc).__name__}",
                code="max_deliveries",
            )
            return await self.dead_letter(consumer, msg, [reason])
        log.warning(
            "handler failed, will retry",
            extra={"consumer": consumer, "error": type(exc).__name__, "delivered": delivered},
        )
        await msg.nak(delay=self.retry_delay(delivered))
        return "retried"

    async def dead_letter(self, consumer: str, msg: Msg, reasons: list[Reason]) -> str:
        """Keep the message whole with its reasons, then terminate its redelivery.

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
        try:
            async with self._pool().acquire() as conn:
                await store_dead_letter(conn, letter)
        except Exception as exc:
            # Keeping it matters more than settling it: try again later.
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


async def capture_max_deliveries(
    nc: NatsClient,
    js: JetStreamContext,
    pool: Callable[[], asyncpg.Pool],
    stream: str,
    durable: str,
) -> None:
    """Dead-letter messages whose redeliveries ran out by ack timeout.

    A consumer that crashes on a message every time never reaches `Deliveries`'
    give-up branch; the server then announces MAX_DELIVERIES with the stream sequence
    and the message is still in the stream, so we fetch and keep it.
    """
    subject = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}"

    async def on_advisory(advisory: Any) -> None:
        try:
            body = json.loads(advisory.data)
            seq = int(body["stream_seq"])
            stored = await js.get_msg(stream, seq)
            letter = DeadLetter(
                consumer=durable,
                subject=stored.subject or "",
                headers=dict(stored.headers or {}),
                payload=stored.data or b"",
                reasons=[
                    Reason(
                        field="",
                        message=f"not acknowledged after {body.get('deliveries')} deliveries",
                        code="max_deliveries",
                    )
                ],
                stream_seq=seq,
                deliveries=body.get("deliveries"),
            )
            async with pool().acquire() as conn:
                await store_dead_letter(conn, letter)
            metrics.DEAD_LETTERS.labels(durable, "max_deliveries").inc()
        except (NotFoundError, KeyError, ValueError) as exc:
            log.warning("max-deliveries advisory not captured", extra={"error": type(exc).__name__})

    await nc.subscribe(subject, queue=f"{durable}-dlq", cb=on_advisory)


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
