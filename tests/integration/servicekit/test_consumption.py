"""The one consumption path on real JetStream and PostgreSQL.

Declared subscriptions become server-side filters; each message is decoded, its
subject checked against its payload, its data parsed, and its use case run in the
batch's inbox transaction. Failing messages are retried with backoff and then kept as
dead letters with reasons, poison at once; later messages keep flowing; a batch with
one poison message loses nothing else; what nobody declared is skipped and counted;
redelivered events have one effect; an operator can replay a dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import nats
import pytest

from linli.contracts.binding import to_structured
from linli.contracts.envelope import CloudEvent, new_event
from linli.contracts.events import NeedCancelled, NeedFulfilled, PartyKind, PartyRef
from linli.contracts.types import NeedKind, Reason, Role
from linli.servicekit.consume import Received, Subscriptions
from linli.servicekit.db import Conn, load_migrations
from linli.servicekit.messaging import PoisonMessage, consumer_config, replay_dead_letter
from linli.servicekit.runtime import ServiceRuntime
from linli.servicekit.settings import ServiceSettings

pytestmark = pytest.mark.integration


class Behaviour:
    """What the use case does per cancellation reason; the test flips it for replays."""

    def __init__(self) -> None:
        self.failing = {"always-fails"}
        self.calls: Counter[str] = Counter()
        self.every: list[tuple[str, Any]] = []


@dataclass
class Kit:
    runtime: ServiceRuntime
    behaviour: Behaviour
    nc: Any
    community: str
    settings: ServiceSettings

    @property
    def pool(self) -> asyncpg.Pool:
        return self.runtime.pool

    @property
    def consumer(self) -> Any:
        return self.runtime.consumers[0]

    async def publish(
        self,
        event: CloudEvent[Any],
        *,
        subject: str | None = None,
        msg_id: str | None = None,
        body: bytes | None = None,
    ) -> None:
        encoded, headers = to_structured(event)
        headers["Nats-Msg-Id"] = msg_id or event.id
        ce_type = event.type.removeprefix("linli.")
        await self.nc.jetstream().publish(
            subject or f"linli.events.{event.community}.{ce_type}",
            body if body is not None else encoded,
            headers=headers,
        )

    def cancelled(self, reason: str, *, community: str | None = None) -> CloudEvent[Any]:
        return new_event(
            NeedCancelled(
                need_id=uuid.uuid4(),
                reason=reason,
                cancelled_by_role=Role.OPERATOR,
                cancelled_at=datetime.now(UTC),
            ),
            community=community or self.community,
            source="/test",
        )

    def fulfilled(self) -> CloudEvent[Any]:
        return new_event(
            NeedFulfilled(
                need_id=uuid.uuid4(),
                assignment_id=uuid.uuid4(),
                kind=NeedKind.REPAIR,
                fulfilled_by=PartyRef(kind=PartyKind.PARTNER, id=uuid.uuid4()),
                fulfilled_at=datetime.now(UTC),
            ),
            community=self.community,
            source="/test",
        )

    async def effects(self) -> list[str]:
        return sorted(r["key"] for r in await self.pool.fetch("SELECT key FROM effects"))


async def _kit(
    nats_url: str, database_url: str, names: Any, declare: Callable[[Behaviour], Subscriptions]
) -> AsyncIterator[Kit]:
    community = names.community("dlq")
    settings = ServiceSettings(
        service_name="kit",
        environment="test",
        db_schema=names.schema("kit"),
        database_url=database_url,
        nats_url=nats_url,
        events_stream=names.stream("events"),
        ingress_stream=names.stream("ingress"),
        stream_communities=community,
        consumer_max_deliver=3,
        consumer_ack_wait_s=2.0,
        consumer_fetch_wait_s=0.5,
        retry_base_delay_s=0.05,
        run_relay=False,
        log_json=False,
    )
    runtime = ServiceRuntime(settings, load_migrations("linli.servicekit", "servicekit"))
    behaviour = Behaviour()
    runtime.consume(declare(behaviour))
    await runtime.start()
    await runtime.pool.execute("CREATE TABLE effects (key text NOT NULL)")
    nc = await nats.connect(nats_url)
    try:
        yield Kit(runtime, behaviour, nc, community, settings)
    finally:
        await runtime.stop()
        for stream in (
            settings.events_stream,
            settings.ingress_stream,
            settings.advisories_stream,
        ):
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
        await nc.close()
        conn = await asyncpg.connect(database_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
        await conn.close()


def _cancellations(behaviour: Behaviour) -> Subscriptions:
    async def use_case(conn: Conn, received: Received[NeedCancelled]) -> None:
        assert isinstance(received.data, NeedCancelled)
        key = received.data.reason or ""
        behaviour.calls[key] += 1
        if key.startswith("poison"):
            raise PoisonMessage([Reason(field="reason", message="never valid", code="poison")])
        if key in behaviour.failing:
            raise RuntimeError("use case failed")
        if key == "deadlocks":
            # A transient error class, but the database answers: not an outage.
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        await conn.execute("INSERT INTO effects (key) VALUES ($1)", key)

    return Subscriptions("kit-test", description="cancellations").on(NeedCancelled, use_case)


@pytest.fixture
async def kit(nats_url: str, database_url: str, names: Any) -> AsyncIterator[Kit]:
    async for k in _kit(nats_url, database_url, names, _cancellations):
        yield k


@pytest.fixture
async def every_kit(nats_url: str, database_url: str, names: Any) -> AsyncIterator[Kit]:
    def declare(behaviour: Behaviour) -> Subscriptions:
        async def use_case(conn: Conn, received: Received[Any]) -> None:
            behaviour.every.append((received.event.type, received.data))

        return Subscriptions("kit-every").on_every_event(use_case)

    async for k in _kit(nats_url, database_url, names, declare):
        yield k


async def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def drained(kit: Kit) -> bool:
    info = await kit.nc.jetstream().consumer_info(kit.settings.events_stream, "kit-test")
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_failing_and_poison_messages_are_dead_lettered_and_others_flow(kit: Kit) -> None:
    first, fails, poison, last = (
        kit.cancelled(k) for k in ("first", "always-fails", "poison", "last")
    )
    for event in (first, fails, poison, last):
        await kit.publish(event)

    async def settled() -> bool:
        return int(await kit.pool.fetchval("SELECT count(*) FROM dead_letters")) == 2

    await wait_for(settled)
    assert await kit.effects() == ["first", "last"]
    rows = await kit.pool.fetch("SELECT * FROM dead_letters")
    letters = {json.loads(bytes(r["payload"]))["data"]["reason"]: r for r in rows}
    # Bounded retries with backoff, then a dead letter with the reason.
    assert kit.behaviour.calls["always-fails"] == 3
    assert letters["always-fails"]["deliveries"] == 3
    assert letters["always-fails"]["consumer"] == "kit-test"
    assert json.loads(letters["always-fails"]["reasons"])[0]["code"] == "max_deliveries"
    # Poison goes at once, with its own reasons.
    assert kit.behaviour.calls["poison"] == 1
    assert json.loads(letters["poison"]["reasons"])[0]["code"] == "poison"

    # An operator fixes the cause and replays: processed once.
    kit.behaviour.failing.clear()
    await replay_dead_letter(kit.pool, kit.nc, letters["always-fails"]["id"])

    async def replayed() -> bool:
        return len(await kit.effects()) == 3

    await wait_for(replayed)
    count = await kit.pool.fetchval(
        "SELECT replay_count FROM dead_letters WHERE id = $1", letters["always-fails"]["id"]
    )
    assert count == 1


async def test_a_transient_error_while_the_database_answers_spends_deliveries(kit: Kit) -> None:
    # Only an outage (the database does not answer a probe) is ridden out without
    # spending deliveries; a message that fails with a deadlock every time still ends
    # as a dead letter, and is never held.
    await kit.publish(kit.cancelled("deadlocks"))
    await kit.publish(kit.cancelled("after-deadlocks"))

    async def settled() -> bool:
        return int(await kit.pool.fetchval("SELECT count(*) FROM dead_letters")) == 1

    await wait_for(settled)
    assert kit.behaviour.calls["deadlocks"] == kit.settings.consumer_max_deliver
    reasons = json.loads(await kit.pool.fetchval("SELECT reasons FROM dead_letters"))
    assert reasons[0]["code"] == "max_deliveries"
    assert "DeadlockDetectedError" in reasons[0]["message"]
    assert kit.consumer.stats["outages"] == 0
    assert kit.runtime.breaker.outages == 0
    assert not kit.runtime.breaker.is_open


async def test_redelivered_or_republished_event_has_one_effect(kit: Kit) -> None:
    once = kit.cancelled("once")
    await kit.publish(once)
    # The same event outside the duplicate window (a new Nats-Msg-Id): the inbox stops it.
    await kit.publish(once, msg_id=f"{once.id}-later")
    await wait_for(lambda: drained(kit))
    assert kit.behaviour.calls["once"] == 1
    assert kit.consumer.stats["duplicate"] == 1
    assert await kit.effects() == ["once"]
    assert await kit.pool.fetchval("SELECT count(*) FROM inbox") == 1


async def test_the_durable_is_filtered_to_the_declared_types(kit: Kit) -> None:
    info = await kit.nc.jetstream().consumer_info(kit.settings.events_stream, "kit-test")
    assert info.config.filter_subjects == [f"linli.events.{kit.community}.need.cancelled.v1"]
    # Another type on the same stream never reaches this consumer at all.
    other = kit.fulfilled()
    await kit.publish(other)
    await kit.publish(kit.cancelled("after-other"))
    await wait_for(lambda: kit.effects())
    info = await kit.nc.jetstream().consumer_info(kit.settings.events_stream, "kit-test")
    assert info.delivered.consumer_seq == 1  # it was only ever handed the cancellation
    assert info.num_pending == 0
    assert kit.consumer.stats["skipped"] == 0
    assert await kit.effects() == ["after-other"]


async def test_types_nobody_declared_are_skipped_and_counted(kit: Kit) -> None:
    # A stale filter (say, widened by an older release) lets other types through.
    js = kit.nc.jetstream()
    stale = consumer_config(
        kit.settings, "kit-test", filter_subjects=[f"linli.events.{kit.community}.>"]
    )
    await js.add_consumer(kit.settings.events_stream, config=stale)  # create-or-update
    other = kit.fulfilled()
    await kit.publish(other)
    # A future version of the declared type, which this service does not know yet.
    future = f"linli.events.{kit.community}.need.cancelled.v2"
    await kit.publish(kit.cancelled("v2"), subject=future, body=b"{}")
    await kit.publish(kit.cancelled("barrier"))
    await wait_for(lambda: drained(kit))
    assert kit.consumer.stats["skipped"] == 2
    assert await kit.effects() == ["barrier"]
    assert await kit.pool.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_a_subject_that_disagrees_with_its_payload_is_dead_lettered(kit: Kit) -> None:
    elsewhere = kit.cancelled("elsewhere", community="another-community")
    await kit.publish(elsewhere, subject=f"linli.events.{kit.community}.need.cancelled.v1")
    wrong_type = kit.fulfilled()
    await kit.publish(wrong_type, subject=f"linli.events.{kit.community}.need.cancelled.v1")
    await kit.publish(kit.cancelled("fine"))
    await wait_for(lambda: drained(kit))
    rows = await kit.pool.fetch("SELECT reasons FROM dead_letters")
    codes = sorted(json.loads(r["reasons"])[0]["code"] for r in rows)
    fields = sorted(json.loads(r["reasons"])[0]["field"] for r in rows)
    assert codes == ["subject_mismatch", "subject_mismatch"]
    assert fields == ["community", "type"]
    assert await kit.effects() == ["fine"]
    assert kit.behaviour.calls["elsewhere"] == 0


async def test_a_batch_with_one_poison_message_loses_nothing_else(kit: Kit) -> None:
    # Stop pulling while the batch piles up, so that it is handed over as one batch.
    consumer = kit.consumer
    await consumer.stop()
    keys = [f"good-{i}" for i in range(10)]
    for key in keys[:5]:
        await kit.publish(kit.cancelled(key))
    await kit.publish(kit.cancelled("poison-in-batch"))
    for key in keys[5:]:
        await kit.publish(kit.cancelled(key))
    await consumer.start(kit.nc.jetstream())
    await wait_for(lambda: drained(kit))
    assert await kit.effects() == sorted(keys)
    letters = await kit.pool.fetch("SELECT reasons FROM dead_letters")
    assert [json.loads(r["reasons"])[0]["code"] for r in letters] == ["poison"]
    assert consumer.stats["isolated"] >= 1
    # Every good one ran twice at most (the failed batch, then alone), took effect once.
    assert all(kit.behaviour.calls[k] <= 2 for k in keys)
    assert await kit.pool.fetchval("SELECT count(*) FROM inbox") == 10


async def test_every_event_is_declared_like_any_other_and_keeps_unknown_types(
    every_kit: Kit,
) -> None:
    kit = every_kit
    info = await kit.nc.jetstream().consumer_info(kit.settings.events_stream, "kit-every")
    assert info.config.filter_subjects == [f"linli.events.{kit.community}.>"]
    await kit.publish(kit.cancelled("known"))
    # A producer's new version reaches an every-event consumer as it is.
    future = kit.cancelled("future").model_copy(update={"type": "linli.need.cancelled.v2"})
    await kit.publish(future)

    async def both() -> bool:
        return len(kit.behaviour.every) == 2

    await wait_for(both)
    types = sorted(t for t, _ in kit.behaviour.every)
    assert types == ["linli.need.cancelled.v1", "linli.need.cancelled.v2"]
    assert all(isinstance(data, dict) for _, data in kit.behaviour.every)


async def test_the_loop_outlives_a_batch_that_cannot_be_settled(kit: Kit) -> None:
    consumer = kit.consumer
    original = consumer.handle_batch
    calls = {"n": 0}

    async def flaky(msgs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("connection lost while acking")
        await original(msgs)

    consumer.handle_batch = flaky
    await kit.publish(kit.cancelled("survives"))

    async def done() -> bool:
        return await kit.effects() == ["survives"]

    # The first hand-over fails unsettled; the message comes back after ack_wait (2 s).
    await wait_for(done, timeout=20)
    assert calls["n"] >= 2
