"""The one way a service consumes events: declared subscriptions, filtered, batched.

A service declares its subscriptions once, as event model → use case::

    subs = Subscriptions("scheduling", description="needs, capacity, answers")
    subs.on(NeedSubmitted, scheduler.need_submitted)
    subs.on(SlotPublished, scheduler.slot_published)
    runtime.consume(subs)

and servicekit does the rest, the same way for every service:

* **Filters on the server.** The durable's `filter_subjects` are derived from the
  declaration (`linli.events.*.need.submitted.v1`, …; per community when the streams are
  scoped), so a service receives only what it handles. `on_every_event` (webhooks) is a
  declaration like any other, filtered on `linli.events.>`.
* **Decoding and checks.** Each message's subject is parsed, its CloudEvent decoded,
  the subject checked against the payload's type and community, and its data parsed
  into the declared model. What can never be processed is poison: a dead letter with
  the reasons at once, never retried.
* **One rule for what is not declared.** A type or version with no use case (a stale
  filter, a producer's new `v2` before this service knows it) is acknowledged and
  counted as skipped, never dead-lettered and never handled.
* **Batches.** A pull batch runs in one transaction: one statement claims the inbox rows
  of the whole batch, each use case runs in turn (in stream order), one commit, then
  every message is acknowledged. When a use case fails, the transaction rolls back, that
  message alone is settled (poison: a dead letter; anything else: retried later with a
  growing delay) and the rest of the batch runs again without it, so one bad message
  costs the others a rerun, never their effect. Redelivered events find their inbox row
  and change nothing.
* **Outages.** A failure that is a database outage (a transient error, and the database
  does not answer a probe) is not the message's: the batch is held, in progress, while
  nothing more is pulled, and runs again once the database answers; no delivery is
  spent however long it lasts (`linli.servicekit.outage`, ADR 0027).
* **Deliveries run out.** A message the process crashed on every time is announced by
  the server's MAX_DELIVERIES advisory; `DeadLetterCapture` keeps it as a dead letter
  from the advisories stream, at least once.
* **Telemetry.** One consumer span per message, child of the trace in its headers, so
  one trace follows a need through every service; no span per SQL statement. Every
  message is counted by type and outcome, each use case timed, redeliveries counted
  (`linli.servicekit.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, FetchTimeoutError, NotFoundError
from opentelemetry.trace import SpanKind
from pydantic import BaseModel

from linli.contracts.binding import from_nats, parse_data
from linli.contracts.envelope import CloudEvent, EnvelopeError
from linli.contracts.registry import EventSpec, spec_for
from linli.contracts.subjects import EVENTS_PREFIX, SubjectError, parse_subject
from linli.contracts.types import Reason

from . import failpoints, inbox, metrics
from .db import Conn
from .messaging import (
    Deliveries,
    PoisonMessage,
    advisory_subject,
    consumer_config,
    max_deliveries_letter,
    store_dead_letter,
)
from .outage import Interrupted
from .settings import ServiceSettings
from .telemetry import context_from_headers, tracer

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Received(Generic[T]):
    """One consumed event as a use case sees it."""

    event: CloudEvent[Any]
    data: T
    """The data parsed into the declared model (a plain dict for `on_every_event`)."""
    subject: str
    body: bytes
    """The message body as it was on the stream."""
    headers: Mapping[str, str]

    @property
    def community(self) -> str:
        return self.event.community


UseCase = Callable[[Conn, Received[Any]], Awaitable[object]]
"""Runs inside the batch's transaction (inbox claimed); a truthy result calls `on_commit`."""


@dataclass(frozen=True, slots=True)
class _Route:
    spec: EventSpec | None  # None: every event
    use_case: UseCase


class Subscriptions:
    """Everything one durable consumer handles, declared in one place."""

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        """The durable's name and the inbox's consumer key."""
        self.description = description
        self.on_commit = on_commit
        """Called after a batch commits in which a use case returned something truthy
        (for example: wake the worker that sends what the use case recorded)."""
        self._routes: dict[str, _Route] = {}
        self._every: _Route | None = None

    def on(self, model: type[BaseModel], use_case: UseCase) -> Subscriptions:
        """Run `use_case` for every event whose data is `model` (one type and version)."""
        spec = spec_for(model)
        if spec.kind != "event":
            raise ValueError(f"{spec.type} is a command, not an event")
        if spec.type in self._routes:
            raise ValueError(f"{self.name}: {spec.type} is declared twice")
        if self._every is not None:
            raise ValueError(f"{self.name}: already consumes every event")
        self._routes[spec.type] = _Route(spec, use_case)
        return self

    def on_every_event(self, use_case: UseCase) -> Subscriptions:
        """Run `use_case` for every event on the stream, of any type and version.

        The data stays a plain dict: a type this service does not know (a producer's
        new version) still reaches it, for relaying as it is.
        """
        if self._routes:
            raise ValueError(f"{self.name}: already declares single types")
        self._every = _Route(None, use_case)
        return self

    @property
    def specs(self) -> list[EventSpec]:
        """The declared event types (empty for every event)."""
        return [r.spec for r in self._routes.values() if r.spec is not None]

    @property
    def every_event(self) -> bool:
        return self._every is not None

    def route(self, ce_type: str) -> _Route | None:
        return self._every or self._routes.get(ce_type)

    def filter_subjects(self, communities: list[str]) -> list[str]:
        """The durable's server-side filters: exactly the declared subjects."""
        scopes = communities or ["*"]
        if self._every is not None:
            if not communities:
                return [f"{EVENTS_PREFIX}.>"]
            return [f"{EVENTS_PREFIX}.{c}.>" for c in communities]
        if not self._routes:
            raise ValueError(f"{self.name}: no subscriptions declared")
        return [
            f"{EVENTS_PREFIX}.{c}.{s.aggregate}.{s.name}.v{s.version}"
            for s in self.specs
            for c in scopes
        ]


class Skip:
    """A message of a type nobody here declared: acknowledged and counted."""


SKIP = Skip()


def _poison(field: str, message: str, code: str) -> PoisonMessage:
    return PoisonMessage([Reason(field=field, message=message[:500], code=code)])


def decode_envelope(
    subject: str, body: bytes, headers: Mapping[str, str] | None
) -> CloudEvent[Any] | PoisonMessage:
    """The CloudEvent of a message whose subject agrees with it, or poison (with reasons).

    The rule every reader of the events stream applies: consumers (through `decode`) and
    the per-community SSE stream alike.
    """
    try:
        parsed = parse_subject(subject)
    except SubjectError as exc:
        return _poison("subject", str(exc), "invalid_subject")
    try:
        event = from_nats(body, headers)
    except EnvelopeError as exc:
        return PoisonMessage(list(exc.reasons))
    if event.type != parsed.type:
        return _poison("type", "the subject does not carry this type", "subject_mismatch")
    if event.community != parsed.community:
        return _poison("community", "community differs from the subject's", "subject_mismatch")
    return event


def decode(
    subs: Subscriptions, subject: str, body: bytes, headers: Mapping[str, str] | None
) -> tuple[Received[Any], _Route] | Skip | PoisonMessage:
    """What one message is for this consumer: an event to handle, a skip, or poison."""
    try:
        route = subs.route(parse_subject(subject).type)
    except SubjectError as exc:
        return _poison("subject", str(exc), "invalid_subject")
    if route is None:
        return SKIP  # undeclared: not even read
    event = decode_envelope(subject, body, headers)
    if isinstance(event, PoisonMessage):
        return event
    data: Any = event.data
    if route.spec is not None:
        try:
            data = parse_data(event, route.spec.adapter)
        except EnvelopeError as exc:
            return PoisonMessage(list(exc.reasons))
    return Received(event, data, subject, body, dict(headers or {})), route


_Item = tuple[Msg, Received[Any], _Route]


def _subject_type(subject: str) -> str | None:
    """The event type a subject names, for a metric label (None when it names none)."""
    try:
        return parse_subject(subject).type
    except SubjectError:
        return None


# A batch in hand gets this long to commit and ack at shutdown; what is left is redelivered.
_GRACEFUL_STOP_S = 10.0


class PullConsumer:
    """A durable pull consumer's loop: pull a batch, handle it, again, until stopped.

    While the database is unreachable (`DatabaseBreaker` open) it pulls nothing: what
    arrives meanwhile waits in the stream without spending a delivery.
    """

    def __init__(
        self,
        *,
        stream: str,
        durable: str,
        settings: ServiceSettings,
        deliveries: Deliveries,
    ) -> None:
        self.stream = stream
        self.durable = durable
        self._settings = settings
        self._deliveries = deliveries
        self._breaker = deliveries.breaker
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._interrupt = asyncio.Event()
        self._busy: asyncio.Future[None] | None = None
        self.stats: Counter[str] = Counter()
        """handled, duplicate, skipped, dead_lettered, retried, batches, isolated,
        outages (a batch held through one), released (given back at stop), captured."""

    def config(self) -> Any:
        raise NotImplementedError

    async def start(self, js: JetStreamContext) -> None:
        """Create the durable, or converge an existing one's config; start pulling."""
        try:
            await js.add_consumer(self.stream, config=self.config())
        except BadRequestError as exc:
            # A setting that cannot change on a live consumer; run with what is there.
            log.warning(
                "consumer config not updated",
                extra={"consumer": self.durable, "error": exc.description},
            )
        self._sub = await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        self._stopping = False
        self._interrupt = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"consume-{self.durable}")

    async def stop(self) -> None:
        """Finish the batch in hand (for at most 10 s), then stop pulling.

        A batch held through a database outage is given back at once.
        """
        self._stopping = True
        self._interrupt.set()
        if self._task is not None:
            if self._busy is not None:
                # Let the batch in hand commit and ack rather than be redelivered.
                await asyncio.wait({self._busy}, timeout=_GRACEFUL_STOP_S)
            self._task.cancel()  # an idle pull is only waiting
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _run(self) -> None:
        assert self._sub is not None
        sub = self._sub
        while not self._stopping:
            if self._breaker.is_stopped:
                # The process is stopping: pull nothing more; stop() ends this loop.
                await self._interrupt.wait()
                continue
            if self._breaker.is_open:
                # The database is unreachable: pull nothing until it answers again.
                with contextlib.suppress(Interrupted):
                    await self._breaker.wait_closed(self._interrupt)
                continue
            try:
                msgs = await sub.fetch(
                    self._settings.consumer_batch, timeout=self._settings.consumer_fetch_wait_s
                )
            except (TimeoutError, nats.errors.TimeoutError, FetchTimeoutError):
                continue  # an idle pull (nats-py raises either kind)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Reconnecting, or the server is busy: pull again shortly.
                log.warning(
                    "fetch failed", extra={"consumer": self.durable, "error": type(exc).__name__}
                )
                await asyncio.sleep(0.5)
                continue
            if msgs:
                # Shielded, so that stop() can wait for it while cancelling the loop.
                self._busy = asyncio.ensure_future(self._held_batch(msgs))
                try:
                    await asyncio.shield(self._busy)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Settling failed (the connection went away mid-ack, say): what was not
                    # acked comes back after ack_wait. The loop itself must never end.
                    log.warning(
                        "batch not settled",
                        extra={"consumer": self.durable, "error": type(exc).__name__},
                    )
                    await asyncio.sleep(0.5)
                finally:
                    self._busy = None

    async def _held_batch(self, msgs: list[Msg]) -> None:
        """`handle_batch`, its messages kept alive through an outage, given back at stop."""
        with self._breaker.holding(msgs):
            try:
                await self.handle_batch(msgs)
            except Interrupted:
                released = await self._deliveries.release(msgs)
                self.stats["released"] += released
                log.warning(
                    "stopping during a database outage: messages given back",
                    extra={"consumer": self.durable, "count": released},
                )

    async def handle_batch(self, msgs: list[Msg]) -> None:
        raise NotImplementedError


class EventConsumer(PullConsumer):
    """A durable pull consumer running one service's declared subscriptions."""

    def __init__(
        self,
        subs: Subscriptions,
        *,
        stream: str,
        settings: ServiceSettings,
        pool: Callable[[], asyncpg.Pool],
        deliveries: Deliveries,
    ) -> None:
        super().__init__(stream=stream, durable=subs.name, settings=settings, deliveries=deliveries)
        self.subs = subs
        self._pool = pool

    def config(self) -> Any:
        return consumer_config(
            self._settings,
            self.durable,
            filter_subjects=self.subs.filter_subjects(self._settings.communities_scope),
        )

    async def handle_batch(self, msgs: list[Msg]) -> None:
        """Decode, run and settle one pull batch."""
        self.stats["batches"] += 1
        items: list[_Item] = []
        for msg in msgs:
            if (msg.metadata.num_delivered or 1) > 1:
                metrics.CONSUMER_REDELIVERIES.labels(self.durable).inc()
            outcome = decode(self.subs, msg.subject, msg.data, msg.headers)
            if isinstance(outcome, Skip):
                self.stats["skipped"] += 1
                self._count(_subject_type(msg.subject), "skipped")
                log.debug("skipped", extra={"consumer": self.durable, "subject": msg.subject})
                await msg.ack()
            elif isinstance(outcome, PoisonMessage):
                settled = await self._deliveries.dead_letter(
                    self.durable, msg, outcome.reasons, self._interrupt
                )
                self.stats[settled] += 1
                self._count(_subject_type(msg.subject), settled)
            else:
                items.append((msg, *outcome))
        if items:
            await self._run_items(items)

    async def _run_items(self, items: list[_Item]) -> None:
        while items:
            try:
                fresh, woke = await self._transaction(items)
            except asyncio.CancelledError:
                raise
            except _ItemFailed as failed:
                if await self._breaker.ride_out(failed.error, self._interrupt):
                    # The database went away under the use case, and is back: all again.
                    self.stats["outages"] += 1
                    continue
                # Settle the culprit alone; the rest of the batch runs again without it.
                await self._settle(items[failed.index][0], failed.error)
                items = items[: failed.index] + items[failed.index + 1 :]
                if items:
                    self.stats["isolated"] += 1
                continue
            except Exception as exc:
                if await self._breaker.ride_out(exc, self._interrupt):
                    # The database was unreachable, and is back: run the batch again.
                    self.stats["outages"] += 1
                    continue
                # The batch itself failed (claim, commit, a deadlock): all are retried.
                for msg, _, _ in items:
                    await self._settle(msg, exc)
                return
            failpoints.hit("inbox.after_commit_before_ack")
            for msg, _, _ in items:
                await msg.ack()
            for index, (_, received, _) in enumerate(items):
                self._count(received.event.type, "handled" if index in fresh else "duplicate")
            self.stats["handled"] += len(fresh)
            self.stats["duplicate"] += len(items) - len(fresh)
            if woke and self.subs.on_commit is not None:
                self.subs.on_commit()
            return

    async def _settle(self, msg: Msg, exc: BaseException) -> None:
        outcome = await self._deliveries.settle_failure(self.durable, msg, exc, self._interrupt)
        self.stats[outcome] += 1
        self._count(_subject_type(msg.subject), outcome)

    def _count(self, ce_type: str | None, outcome: str) -> None:
        metrics.EVENTS_CONSUMED.labels(self.durable, metrics.event_type(ce_type), outcome).inc()

    async def _transaction(self, items: list[_Item]) -> tuple[set[int], bool]:
        """Inbox claims, use cases and their outbox rows in one transaction.

        Returns the indexes of the items handled (the rest were seen before) and whether
        any use case asked for `on_commit`.
        """
        handled: set[int] = set()
        woke = False
        async with self._pool().acquire() as conn, conn.transaction():
            fresh = await inbox.claim_many(conn, self.durable, [r.event.id for _, r, _ in items])
            for index, (msg, received, route) in enumerate(items):
                if received.event.id not in fresh:
                    continue
                fresh.discard(received.event.id)  # a second copy in one batch is a duplicate
                with tracer().start_as_current_span(
                    f"process {received.event.type}",
                    context=context_from_headers(msg.headers),
                    kind=SpanKind.CONSUMER,
                    attributes={
                        "messaging.system": "nats",
                        "messaging.operation.type": "process",
                        "messaging.destination.name": msg.subject,
                        "messaging.consumer.group.name": self.durable,
                        "messaging.message.id": received.event.id,
                    },
                ):
                    started = time.perf_counter()
                    try:
                        if await route.use_case(conn, received):
                            woke = True
                    except Exception as exc:
                        raise _ItemFailed(index, exc) from exc
                    metrics.HANDLER_SECONDS.labels(
                        self.durable, metrics.event_type(received.event.type)
                    ).observe(time.perf_counter() - started)
                handled.add(index)
        return handled, woke


class _ItemFailed(Exception):
    """The use case of one item of a batch failed; the batch's transaction rolled back."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(f"item {index}: {type(error).__name__}")
        self.index = index
        self.error = error


class DeadLetterCapture(PullConsumer):
    """Keeps as dead letters the messages a durable's deliveries ran out on.

    A consumer that crashes on a message every time never settles it; after
    `max_deliver` the server announces it once, with a MAX_DELIVERIES advisory naming
    the stream sequence. The advisories stream keeps that advisory, and this durable
    (`<durable>-dlq` on it, filtered to the durable's advisories and shared by the
    service's replicas) reads it: the message is fetched from its stream by sequence,
    stored whole in `dead_letters`, and only then is the advisory acknowledged. So an
    advisory sent while no replica ran is captured when one starts, and a database error
    does not drop it: an outage is ridden out like a consumer's, any other error leaves
    it to be tried again after a delay.
    """

    def __init__(
        self,
        *,
        stream: str,
        durable: str,
        settings: ServiceSettings,
        pool: Callable[[], asyncpg.Pool],
        deliveries: Deliveries,
    ) -> None:
        super().__init__(
            stream=settings.advisories_stream,
            durable=f"{durable}-dlq",
            settings=settings,
            deliveries=deliveries,
        )
        self.source_stream = stream
        """The stream of the durable whose advisories this captures."""
        self.source_durable = durable
        self._pool = pool
        self._js: JetStreamContext | None = None

    def config(self) -> Any:
        return api.ConsumerConfig(
            durable_name=self.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=self._settings.consumer_ack_wait_s,
            # Unbounded on purpose: the advisory is the last trace of a message given up
            # on. The advisories stream's max_age bounds how long it is tried (ADR 0027).
            max_deliver=-1,
            max_ack_pending=self._settings.consumer_batch,
            filter_subject=advisory_subject(self.source_stream, self.source_durable),
        )

    async def start(self, js: JetStreamContext) -> None:
        self._js = js
        await super().start(js)

    async def handle_batch(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            self.stats[await self.capture(msg)] += 1

    async def capture(self, msg: Msg) -> str:
        """Store the dead letter one advisory names; returns what became of it."""
        assert self._js is not None
        try:
            advisory = json.loads(msg.data)
            seq = int(advisory["stream_seq"])
        except (ValueError, KeyError, TypeError):
            log.warning("malformed max-deliveries advisory", extra={"consumer": self.durable})
            await msg.term()
            return "malformed"
        try:
            stored = await self._js.get_msg(self.source_stream, seq)
        except NotFoundError:
            # Gone with the stream's max_age (or deleted by an operator): nothing to keep.
            log.warning(
                "max-deliveries advisory for a message no longer in the stream",
                extra={"consumer": self.source_durable, "stream_seq": seq},
            )
            await msg.ack()
            return "gone"
        except Exception as exc:
            log.warning("advisory's message not fetched", extra={"error": type(exc).__name__})
            await msg.nak(delay=self._deliveries.retry_delay(msg.metadata.num_delivered or 1))
            return "retried"
        letter = max_deliveries_letter(self.source_durable, advisory, stored)
        # Runs again only after an outage has ended; `Interrupted` ends it at stop.
        while True:
            try:
                async with self._pool().acquire() as conn:
                    _, inserted = await store_dead_letter(conn, letter)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if await self._breaker.ride_out(exc, self._interrupt):
                    continue
                log.warning(
                    "max-deliveries dead letter not stored, will retry",
                    extra={"consumer": self.source_durable, "error": type(exc).__name__},
                )
                delivered = msg.metadata.num_delivered or 1
                await msg.nak(delay=self._deliveries.retry_delay(delivered))
                return "retried"
        if inserted:
            metrics.DEAD_LETTERS.labels(self.source_durable, "max_deliveries").inc()
            log.warning(
                "message dead-lettered after its deliveries ran out",
                extra={"consumer": self.source_durable, "stream_seq": seq},
            )
        await msg.ack()
        return "captured"
