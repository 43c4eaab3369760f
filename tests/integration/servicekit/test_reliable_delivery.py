"""Reliable consumption on real JetStream and PostgreSQL: retries with backoff, dead
letters with reasons, later messages keep flowing, replay, and the idempotent inbox."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from typing import Any

import asyncpg
import nats
import pytest
from faststream import AckPolicy
from faststream.nats import NatsMessage, PullSub

from linli.contracts.types import Reason
from linli.servicekit import inbox
from linli.servicekit.db import load_migrations
from linli.servicekit.messaging import (
    PoisonMessage,
    consumer_config,
    jstream,
    replay_dead_letter,
)
from linli.servicekit.runtime import ServiceRuntime
from linli.servicekit.settings import ServiceSettings

pytestmark = pytest.mark.integration


class Behaviour:
    """What the test handler does per message key; flipped by the test for replays."""

    def __init__(self) -> None:
        self.failing = {"always-fails"}
        self.calls: Counter[str] = Counter()


@pytest.fixture
async def consumer(nats_url: str, database_url: str, names) -> Any:
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
        retry_base_delay_s=0.05,
        run_relay=False,
        log_json=False,
    )
    runtime = ServiceRuntime(settings, load_migrations("linli.servicekit", "servicekit"))
    behaviour = Behaviour()
    durable = runtime.durable(settings.events_stream, "kit-test")
    subject = f"linli.events.{community}.>"

    @runtime.broker.subscriber(
        subject,
        stream=jstream(settings.events_stream),
        durable=durable,
        config=consumer_config(settings, durable, filter_subject=subject),
        pull_sub=PullSub(batch_size=10, timeout=0.5),
        ack_policy=AckPolicy.MANUAL,
    )
    async def handle(msg: NatsMessage) -> None:
        raw = msg.raw_message

        async def work() -> None:
            body = json.loads(raw.data)
            key = body["key"]
            behaviour.calls[key] += 1
            if key == "poison":
                raise PoisonMessage([Reason(field="key", message="never valid", code="poison")])
            if key in behaviour.failing:
                raise RuntimeError("handler failed")
            async with runtime.pool.acquire() as conn, conn.transaction():
                if await inbox.claim(conn, durable, body["id"]):
                    await conn.execute("INSERT INTO effects (key) VALUES ($1)", key)

        await runtime.deliveries.process(durable, msg, work)

    await runtime.start()
    await runtime.pool.execute("CREATE TABLE effects (key text NOT NULL)")
    nc = await nats.connect(nats_url)
    try:
        yield runtime, behaviour, nc, community
    finally:
        await runtime.stop()
        for stream in (settings.events_stream, settings.ingress_stream):
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
        await nc.close()
        conn = await asyncpg.connect(database_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
        await conn.close()


async def publish(nc, community: str, key: str, msg_id: str) -> None:
    await nc.jetstream().publish(
        f"linli.events.{community}.test.happened.v1",
        json.dumps({"key": key, "id": msg_id}).encode(),
        headers={"Nats-Msg-Id": msg_id},
    )


async def wait_for(predicate, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def test_failing_and_poison_messages_are_dead_lettered_and_others_flow(consumer) -> None:
    runtime, behaviour, nc, community = consumer
    pool = runtime.pool
    await publish(nc, community, "first", "m1")
    await publish(nc, community, "always-fails", "m2")
    await publish(nc, community, "poison", "m3")
    await publish(nc, community, "last", "m4")

    async def settled() -> bool:
        return int(await pool.fetchval("SELECT count(*) FROM dead_letters")) == 2

    await wait_for(settled)
    effects = sorted(r["key"] for r in await pool.fetch("SELECT key FROM effects"))
    assert effects == ["first", "last"]
    letters = {
        json.loads(bytes(r["payload"]))["key"]: r
        for r in await pool.fetch("SELECT * FROM dead_letters")
    }
    # Bounded retries with backoff, then a dead letter with the reason.
    assert behaviour.calls["always-fails"] == 3
    assert letters["always-fails"]["deliveries"] == 3
    assert json.loads(letters["always-fails"]["reasons"])[0]["code"] == "max_deliveries"
    # Poison goes at once, with its own reasons.
    assert behaviour.calls["poison"] == 1
    assert json.loads(letters["poison"]["reasons"])[0]["code"] == "poison"

    # An operator fixes the cause and replays: processed once.
    behaviour.failing.clear()
    await replay_dead_letter(pool, nc, letters["always-fails"]["id"])

    async def replayed() -> bool:
        return int(await pool.fetchval("SELECT count(*) FROM effects")) == 3

    await wait_for(replayed)
    assert (
        await pool.fetchval(
            "SELECT replay_count FROM dead_letters WHERE id = $1", letters["always-fails"]["id"]
        )
        == 1
    )


async def test_redelivered_or_republished_event_has_one_effect(consumer) -> None:
    runtime, behaviour, nc, community = consumer
    pool = runtime.pool
    await publish(nc, community, "once", "same-id")
    # Same event id outside the duplicate window (a new Nats-Msg-Id): the inbox stops it.
    await nc.jetstream().publish(
        f"linli.events.{community}.test.happened.v1",
        json.dumps({"key": "once", "id": "same-id"}).encode(),
        headers={"Nats-Msg-Id": "same-id-later"},
    )

    async def both_seen() -> bool:
        return behaviour.calls["once"] == 2

    await wait_for(both_seen)
    await asyncio.sleep(0.3)
    assert await pool.fetchval("SELECT count(*) FROM effects WHERE key = 'once'") == 1
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 1
