"""A message whose deliveries ran out is kept as a dead letter, at least once.

A consumer that crashes on a message every time never settles it: after `max_deliver`
the server announces it once, with a MAX_DELIVERIES advisory, and the message is kept
only if a replica stores it from there. The advisory must be captured even when no
replica was running when it was sent, and a database error while storing it must not
drop it.

The crashing consumer is played by the test: it pulls the message on the service's
durable (created with servicekit's `consumer_config`) and never acknowledges it, as a
process killed on it each time would. The service is a runtime on real servers that
registers the durable with `runtime.durable(stream, durable)`, as intake does for its
ingress durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import nats
import pytest
from harness.common import wait_for
from harness.names import Names
from nats.aio.client import Client as NatsClient

from linli.devstack.servers import PostgresServer
from linli.servicekit.db import load_migrations
from linli.servicekit.messaging import consumer_config, provision_streams
from linli.servicekit.runtime import ServiceRuntime
from linli.servicekit.settings import ServiceSettings

pytestmark = [pytest.mark.fault, pytest.mark.integration]

DURABLE = "crasher"


def _settings(names: Names, nats_url: str, database_url: str) -> ServiceSettings:
    return ServiceSettings(
        service_name="capture",
        environment="test",
        db_schema=names.schema("capture"),
        database_url=database_url,
        nats_url=nats_url,
        events_stream=names.stream("events"),
        ingress_stream=names.stream("ingress"),
        stream_communities=names.community("home"),
        consumer_max_deliver=2,
        consumer_ack_wait_s=1.0,
        consumer_fetch_wait_s=0.5,
        retry_base_delay_s=0.05,
        outage_probe_max_s=0.5,
        run_relay=False,
        log_json=False,
    )


class Crasher:
    """The test's stand-in for a consumer that dies on a message every time."""

    def __init__(self, nc: NatsClient, settings: ServiceSettings, community: str) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.settings = settings
        self.subject = f"linli.events.{community}.need.cancelled.v1"

    async def prepare(self) -> None:
        """The streams (as the provisioner makes them) and the service's durable."""
        await provision_streams(self.js, self.settings)
        config = consumer_config(self.settings, DURABLE, filter_subjects=[self.subject])
        await self.js.add_consumer(self.settings.events_stream, config=config)

    async def run_out(self, body: bytes) -> int:
        """Publish `body` and spend its deliveries without an ack; returns its stream
        sequence once the server has announced MAX_DELIVERIES (seen by a witness)."""
        stream = self.settings.events_stream
        witness = await self.nc.subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{DURABLE}"
        )
        try:
            seq = (await self.js.publish(self.subject, body)).seq
            sub = await self.js.pull_subscribe_bind(durable=DURABLE, stream=stream)
            for _ in range(self.settings.consumer_max_deliver):
                # Each one after ack_wait: the "process" died holding the message.
                msg = (await sub.fetch(1, timeout=10))[0]
                assert msg.metadata.sequence.stream == seq
            # The server gives up when it would deliver once more, i.e. on a pull.
            for _ in range(10):
                with contextlib.suppress(nats.errors.TimeoutError):
                    await sub.fetch(1, timeout=1.0)
                with contextlib.suppress(nats.errors.TimeoutError):
                    advisory = json.loads((await witness.next_msg(timeout=0.5)).data)
                    assert int(advisory["stream_seq"]) == seq
                    await sub.unsubscribe()
                    return seq
            raise AssertionError("no MAX_DELIVERIES advisory")
        finally:
            await witness.unsubscribe()


@contextlib.asynccontextmanager
async def service(settings: ServiceSettings) -> AsyncIterator[ServiceRuntime]:
    """A runtime that registers the crasher's durable (and consumes nothing itself)."""
    runtime = ServiceRuntime(settings, load_migrations("linli.servicekit", "servicekit"))
    runtime.durable(settings.events_stream, DURABLE)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


@contextlib.asynccontextmanager
async def nats_for(settings: ServiceSettings) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(settings.nats_url)
    try:
        yield nc
    finally:
        js = nc.jetstream()
        for stream in (
            settings.events_stream,
            settings.ingress_stream,
            settings.advisories_stream,
        ):
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)
        await nc.close()


async def letters(dsn: str, schema: str) -> dict[int, Any]:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        rows = await conn.fetch(
            "SELECT consumer, stream_seq, payload, reasons, deliveries FROM dead_letters"
        )
    except asyncpg.UndefinedTableError:
        return {}
    finally:
        await conn.close()
    return {int(r["stream_seq"]): r for r in rows}


def body(tag: str) -> bytes:
    return json.dumps({"tag": tag, "id": str(uuid.uuid4())}).encode()


async def test_an_advisory_sent_while_no_replica_runs_is_captured_when_one_starts(
    nats_url: str, database_url: str, names: Names
) -> None:
    settings = _settings(names, nats_url, database_url)
    async with nats_for(settings) as nc:
        crasher = Crasher(nc, settings, names.community("home"))
        await crasher.prepare()
        # Every replica is down (crashed on this very message): nobody hears the advisory.
        payload = body("while-down")
        seq = await crasher.run_out(payload)

        async with service(settings):

            async def captured() -> Any:
                return (await letters(database_url, settings.db_schema)).get(seq)

            letter = await wait_for(captured, timeout=20, what="the dead letter")
        assert letter["consumer"] == DURABLE
        assert bytes(letter["payload"]) == payload
        assert letter["deliveries"] == settings.consumer_max_deliver
        assert json.loads(letter["reasons"])[0]["code"] == "max_deliveries"
        conn = await asyncpg.connect(database_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
        await conn.close()


async def test_a_database_error_while_capturing_does_not_drop_the_letter(
    nats_url: str, postgres_server_factory: Callable[..., PostgresServer], names: Names
) -> None:
    pg = postgres_server_factory("capture")
    dsn = pg.dsn()
    settings = _settings(names, nats_url, dsn)
    async with nats_for(settings) as nc:
        crasher = Crasher(nc, settings, names.community("home"))
        await crasher.prepare()
        js = nc.jetstream()

        async def capture_info() -> Any:
            return await js.consumer_info(settings.advisories_stream, f"{DURABLE}-dlq")

        async with service(settings) as runtime:
            # 1. The table refuses the letter (a statement error, not an outage): the
            # advisory stays unacknowledged and is tried again until it is stored.
            await runtime.pool.execute("ALTER TABLE dead_letters RENAME TO dead_letters_away")
            refused = body("refused")
            first = await crasher.run_out(refused)

            async def tried_again() -> bool:
                info = await capture_info()
                return info.num_redelivered >= 1 and info.ack_floor.stream_seq < 1

            await wait_for(tried_again, timeout=20, what="the capture to retry")
            await runtime.pool.execute("ALTER TABLE dead_letters_away RENAME TO dead_letters")

            async def stored_first() -> bool:
                return first in await letters(dsn, settings.db_schema)

            await wait_for(stored_first, timeout=20, what="the refused letter")

            # 2. PostgreSQL is down while the advisory arrives: it is held, not dropped.
            await asyncio.to_thread(pg.stop, mode="immediate")
            during = body("during-outage")
            second = await crasher.run_out(during)

            async def held() -> bool:
                info = await capture_info()
                return info.delivered.stream_seq >= 2 and info.num_ack_pending == 1

            await wait_for(held, timeout=20, what="the capture to hold the advisory")
            await asyncio.to_thread(pg.start)

            async def stored_second() -> bool:
                return second in await letters(dsn, settings.db_schema)

            await wait_for(stored_second, timeout=30, what="the letter after the outage")
            found = await letters(dsn, settings.db_schema)
            assert sorted(found) == [first, second]
            assert bytes(found[first]["payload"]) == refused
            assert bytes(found[second]["payload"]) == during

            async def acked() -> bool:
                info = await capture_info()
                return info.num_ack_pending == 0 and info.ack_floor.stream_seq >= 2

            await wait_for(acked, timeout=20, what="the advisories to be acknowledged")
            assert runtime.breaker.outages >= 1
