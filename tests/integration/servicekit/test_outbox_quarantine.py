"""An outbox row the server refuses is quarantined; it no longer throttles the rows behind it.

On real NATS and PostgreSQL: a row whose subject no stream covers and a row over the
server's max_payload sit next to good rows. The good rows are published while the bad
ones are refused (the relay's loop never backs off for them), the bad ones are
quarantined after `max_attempts` refusals with the server's reason, the metrics count
them, and `outbox retry` puts one back once its cause is fixed. An outage of NATS is
not a refusal: many failed attempts while the server is down quarantine nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import nats
import pytest
from harness.common import wait_for
from harness.intake import drop_world, intake_settings, prepare_world, settings_env
from prometheus_client import REGISTRY

from linli.contracts.envelope import new_event
from linli.contracts.events import NeedCancelled
from linli.contracts.types import Role
from linli.servicekit import outbox
from linli.servicekit.db import create_pool
from linli.servicekit.messaging import provision_streams
from linli.servicekit.metrics import MetricsRefresher
from linli.servicekit.outbox import OutboxRelay

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 3


def cancelled(community: str) -> Any:
    return new_event(
        NeedCancelled(
            need_id="00000000-0000-0000-0000-000000000001",
            reason=None,
            cancelled_by_role=Role.OPERATOR,
            cancelled_at="2026-11-22T10:00:00Z",
        ),
        community=community,
        source="/test",
    )


async def enqueue_good(pool: asyncpg.Pool, community: str, n: int) -> list[str]:
    events = [cancelled(community) for _ in range(n)]
    async with pool.acquire() as conn, conn.transaction():
        await outbox.enqueue_many(conn, events)
    return [e.id for e in events]


async def enqueue_unroutable(pool: asyncpg.Pool, community: str, subject: str) -> str:
    """A well-formed event on a subject that no stream covers."""
    event = cancelled(community)
    async with pool.acquire() as conn, conn.transaction():
        await outbox.enqueue(conn, event, subject=subject)
    return event.id


async def enqueue_oversized(pool: asyncpg.Pool, community: str) -> str:
    """A row larger than the server's max_payload (1 MiB by default)."""
    event = cancelled(community)
    async with pool.acquire() as conn, conn.transaction():
        await outbox.enqueue(conn, event)
        await conn.execute(
            "UPDATE outbox SET payload = $2 WHERE event_id = $1", event.id, b"x" * (1 << 21)
        )
    return event.id


async def stream_ids(js: Any, stream: str) -> list[str]:
    info = await js.stream_info(stream)
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        ids.append(msg.headers["Nats-Msg-Id"])
    return ids


async def row(pool: asyncpg.Pool, event_id: str) -> asyncpg.Record:
    found = await pool.fetchrow(
        "SELECT id, sent_at, attempts, refusals, last_error, quarantined_at "
        "FROM outbox WHERE event_id = $1",
        event_id,
    )
    assert found is not None
    return found


async def all_sent(pool: asyncpg.Pool, ids: list[str]) -> bool:
    unsent = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE event_id = ANY($1::text[]) AND sent_at IS NULL", ids
    )
    return unsent == 0


async def cli(settings: Any, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, **settings_env(settings)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "linli.intake",
        "outbox",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# The unroutable row's subject is outside the contracts, so its type label is
# `unregistered` (labels never mint series from arbitrary subjects).
LABELS = {
    "no_stream": {"type": "unregistered", "reason": "no_stream"},
    "max_payload": {"type": "linli.need.cancelled.v1", "reason": "max_payload"},
}


def counted(reason: str) -> float:
    return REGISTRY.get_sample_value("linli_outbox_quarantined_total", LABELS[reason]) or 0.0


def relay_for(settings: Any, pool: asyncpg.Pool, js: Any) -> OutboxRelay:
    return OutboxRelay(
        pool,
        js,
        settings.db_schema,
        dsn=settings.database_url.get_secret_value(),
        batch_size=50,
        poll_interval=0.2,
        publish_timeout=0.5,
        max_attempts=MAX_ATTEMPTS,
        retry_base_s=0.1,
        retry_max_s=0.5,
    )


@pytest.fixture
async def world(nats_url: str, database_url: str, names: Any) -> AsyncIterator[Any]:
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


async def test_refused_rows_are_quarantined_and_do_not_hold_up_the_rest(
    world: Any, names: Any
) -> None:
    world, pool, nc = world
    settings, js = world.settings, nc.jetstream()
    unroutable_subject = names.subject("nostream", world.home, "need", "cancelled", "v1")
    unroutable = await enqueue_unroutable(pool, world.home, unroutable_subject)
    oversized = await enqueue_oversized(pool, world.home)
    good = await enqueue_good(pool, world.home, 10)
    before = {reason: counted(reason) for reason in ("no_stream", "max_payload")}

    relay = relay_for(settings, pool, js)
    await relay.start()
    try:
        await wait_for(lambda: all_sent(pool, good), what="the first good rows")
        # While the bad rows are being refused, new rows keep flowing: one batch after
        # each refusal, each published before the bad rows are quarantined.
        for refusal in range(1, MAX_ATTEMPTS):

            async def refused(n: int = refusal) -> bool:
                return (await row(pool, unroutable))["refusals"] >= n

            await wait_for(refused, what=f"refusal {refusal}")
            later = await enqueue_good(pool, world.home, 5)
            await wait_for(lambda ids=later: all_sent(pool, ids), what="rows behind a refused one")
            good += later

        async def quarantined() -> bool:
            rows = [await row(pool, unroutable), await row(pool, oversized)]
            return all(r["quarantined_at"] is not None for r in rows)

        await wait_for(quarantined, what="both bad rows quarantined")
        # A refusal is the server's answer, not an outage: the loop never backed off.
        assert relay.failed_passes == 0
    finally:
        await relay.stop()

    no_stream, too_big = await row(pool, unroutable), await row(pool, oversized)
    assert no_stream["sent_at"] is None
    assert too_big["sent_at"] is None
    assert no_stream["refusals"] == MAX_ATTEMPTS
    assert too_big["refusals"] == MAX_ATTEMPTS
    assert no_stream["last_error"].startswith("no_stream: NoStreamResponseError")
    assert too_big["last_error"].startswith("max_payload: MaxPayloadError")
    assert sorted(await stream_ids(js, settings.events_stream)) == sorted(good)

    # Counted by reason, and shown by the gauge the alert reads (not as backlog).
    assert counted("no_stream") - before["no_stream"] == 1
    assert counted("max_payload") - before["max_payload"] == 1
    async with pool.acquire() as conn:
        await MetricsRefresher().refresh(conn)
    assert REGISTRY.get_sample_value("linli_outbox_quarantined_rows") == 2
    assert REGISTRY.get_sample_value("linli_outbox_backlog") == 0

    # The operator's view: both rows, with their reasons and no payload.
    code, out, err = await cli(settings, "list")
    assert code == 0, err
    listed = {item["event_id"]: item for item in map(json.loads, out.splitlines())}
    assert set(listed) == {unroutable, oversized}
    assert listed[unroutable]["state"] == "quarantined"
    assert listed[unroutable]["last_error"] == no_stream["last_error"]
    assert "payload" not in listed[unroutable]

    # Bad input changes nothing.
    code, _, err = await cli(settings, "retry", "999999999")
    assert code == 2
    assert "999999999" in err
    code, _, err = await cli(settings, "retry", str(await pool.fetchval(
        "SELECT id FROM outbox WHERE event_id = $1", good[0])))  # fmt: skip
    assert code == 2
    assert "not quarantined" in err
    assert (await row(pool, unroutable))["quarantined_at"] is not None

    # Fix the cause (a stream now covers the subject), re-queue, and it is published.
    await js.add_stream(name=names.stream("nostream"), subjects=[names.subject("nostream", ">")])
    try:
        code, out, err = await cli(settings, "retry", str(no_stream["id"]))
        assert code == 0, err
        assert json.loads(out) == {"requeued": [no_stream["id"]]}
        requeued = await row(pool, unroutable)
        assert requeued["quarantined_at"] is None
        assert requeued["refusals"] == 0

        relay = relay_for(settings, pool, js)
        await relay.start()
        try:
            await wait_for(lambda: all_sent(pool, [unroutable]), what="the re-queued row")
        finally:
            await relay.stop()
        assert await stream_ids(js, names.stream("nostream")) == [unroutable]
        assert (await row(pool, oversized))["quarantined_at"] is not None
    finally:
        await js.delete_stream(names.stream("nostream"))


@pytest.mark.fault
async def test_nats_down_quarantines_nothing(
    database_url: str, names: Any, nats_server_factory: Any
) -> None:
    server = nats_server_factory("nats-outage")
    settings = intake_settings(names, server.url, database_url)
    world = await prepare_world(settings, names)
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    await provision_streams(js, settings)
    pool = await create_pool(database_url, settings.db_schema)
    relay = relay_for(settings, pool, js)
    try:
        server.kill()
        unroutable = await enqueue_unroutable(
            pool, world.home, names.subject("nostream", world.home, "need", "cancelled", "v1")
        )
        good = await enqueue_good(pool, world.home, 5)
        await relay.start()

        async def tried_often() -> bool:
            attempts = await pool.fetchval(
                "SELECT min(attempts) FROM outbox WHERE event_id = ANY($1::text[])",
                [unroutable, *good],
            )
            # More tries than it takes to quarantine a refused row.
            return bool(attempts and attempts > MAX_ATTEMPTS)

        await wait_for(tried_often, timeout=60, what="many attempts during the outage")
        states = await pool.fetch(
            "SELECT refusals, quarantined_at, last_error FROM outbox WHERE sent_at IS NULL"
        )
        assert len(states) == 6
        assert all(s["quarantined_at"] is None and s["refusals"] == 0 for s in states)
        assert all(s["last_error"].startswith("unavailable: ") for s in states)

        server.start()
        await wait_for(lambda: all_sent(pool, good), timeout=60, what="the outbox after the outage")
        assert sorted(await stream_ids(js, settings.events_stream)) == sorted(good)

        # Once the server answers again, the bad row is refused and quarantined as usual.
        async def quarantined() -> bool:
            return (await row(pool, unroutable))["quarantined_at"] is not None

        await wait_for(quarantined, timeout=30, what="the unroutable row quarantined")
    finally:
        await relay.stop()
        await pool.close()
        await nc.close()
        await drop_world(settings, server.url)
