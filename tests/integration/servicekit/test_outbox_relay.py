"""The outbox relay publishes every row exactly once: killed mid-batch, or two at once."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import nats
import pytest
from harness.intake import drop_world, intake_settings, prepare_world, settings_env

from linli.contracts.envelope import new_event
from linli.contracts.events import NeedCancelled
from linli.contracts.types import Role
from linli.devstack.servers import free_port
from linli.servicekit import outbox
from linli.servicekit.db import create_pool
from linli.servicekit.messaging import provision_streams
from linli.servicekit.outbox import OutboxRelay

pytestmark = pytest.mark.integration

ROWS = 300


async def seed_outbox(pool: asyncpg.Pool, community: str, n: int) -> list[str]:
    ids = []
    async with pool.acquire() as conn, conn.transaction():
        for _ in range(n):
            event = new_event(
                NeedCancelled(
                    need_id="00000000-0000-0000-0000-000000000001",
                    reason=None,
                    cancelled_by_role=Role.OPERATOR,
                    cancelled_at="2026-11-22T10:00:00Z",
                ),
                community=community,
                source="/test",
            )
            await outbox.enqueue(conn, event)
            ids.append(event.id)
    return ids


async def stream_ids(js, stream: str) -> list[str]:
    info = await js.stream_info(stream)
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        ids.append(msg.headers["Nats-Msg-Id"])
    return ids


@pytest.fixture
async def world(nats_url, database_url, names):
    settings = intake_settings(names, nats_url, database_url)
    world = await prepare_world(settings, names)
    nc = await nats.connect(nats_url)
    await provision_streams(nc.jetstream(), settings)
    pool = await create_pool(database_url, settings.db_schema)
    try:
        yield world, pool, nc
    finally:
        await pool.close()
        await nc.close()
        await drop_world(settings, nats_url)


@pytest.mark.fault
async def test_relay_killed_after_publish_before_mark_publishes_each_event_once(
    world, procs
) -> None:
    world, pool, nc = world
    settings = world.settings
    ids = await seed_outbox(pool, world.home, ROWS)
    env = settings_env(settings)
    env["LINLI_HTTP_PORT"] = str(free_port())
    env["LINLI_OUTBOX_BATCH"] = "100"

    crashing = procs.start(
        "linli.intake", "serve", env={**env, "LINLI_FAILPOINT": "outbox.after_publish_before_mark"}
    )
    for _ in range(300):
        if crashing.returncode is not None:
            break
        await asyncio.sleep(0.1)
    assert crashing.returncode == 137, crashing.log_tail()
    # The batch reached the stream, but the rows were never marked sent.
    assert len(await stream_ids(nc.jetstream(), settings.events_stream)) == 100
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == ROWS

    healthy = procs.start("linli.intake", "serve", env=env)
    for _ in range(300):
        if await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0:
            break
        await asyncio.sleep(0.1)
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0
    published = await stream_ids(nc.jetstream(), settings.events_stream)
    # The re-published first batch was dropped by the duplicate window.
    assert sorted(published) == sorted(ids)
    healthy.terminate()


@pytest.mark.fault
async def test_relay_killed_at_a_random_moment_loses_and_repeats_nothing(world, procs) -> None:
    world, pool, nc = world
    settings = world.settings
    env = settings_env(settings)
    env["LINLI_HTTP_PORT"] = str(free_port())
    env["LINLI_OUTBOX_BATCH"] = "20"
    service = procs.start("linli.intake", "serve", env=env)
    ids = []
    for round_ in range(5):
        ids += await seed_outbox(pool, world.home, 60)
        await asyncio.sleep(0.02 * round_)
    service.kill()
    assert service.returncode == -signal.SIGKILL or service.returncode is not None
    ids += await seed_outbox(pool, world.home, 60)
    procs.start("linli.intake", "serve", env=env)
    for _ in range(300):
        if await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0:
            break
        await asyncio.sleep(0.1)
    published = await stream_ids(nc.jetstream(), settings.events_stream)
    assert sorted(published) == sorted(ids)


async def test_two_relays_at_once_publish_no_duplicate(world) -> None:
    world, pool, nc = world
    settings = world.settings
    ids = await seed_outbox(pool, world.home, ROWS)
    dsn = settings.database_url.get_secret_value()
    relays = [
        OutboxRelay(pool, nc.jetstream(), settings.db_schema, dsn=dsn, batch_size=25)
        for _ in range(2)
    ]

    async def drain(relay: OutboxRelay) -> None:
        while await relay.relay_once():
            await asyncio.sleep(0)

    await asyncio.gather(*(drain(r) for r in relays))
    # Every row was claimed by exactly one relay (SKIP LOCKED), so nothing was sent twice.
    assert sum(r.published for r in relays) == ROWS
    assert all(r.published > 0 for r in relays)
    assert sorted(await stream_ids(nc.jetstream(), settings.events_stream)) == sorted(ids)
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0
