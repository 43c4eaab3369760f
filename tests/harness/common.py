"""Pieces every service's test harness shares."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import nats

from linli.servicekit.settings import ServiceSettings


async def drop_schema_and_streams(settings: ServiceSettings, nats_url: str) -> None:
    """Remove a test's schema and streams (the test owns both; see `Names`)."""
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
    finally:
        await conn.close()
    with contextlib.suppress(Exception):
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        for stream in (
            settings.events_stream,
            settings.ingress_stream,
            settings.advisories_stream,
        ):
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)
        await nc.close()


async def wait_for(
    check: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll `check()` (sync or async) until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def outbox_settled(pool: asyncpg.Pool, *, timeout: float = 10.0) -> int:
    """Wait until the relay has published every outbox row; returns how many rows exist.

    The positive signal a test waits for before asserting that something was published
    only once (or not at all): after this, nothing written so far can still appear.
    """

    async def drained() -> int | None:
        row = await pool.fetchrow(
            "SELECT count(*) FILTER (WHERE sent_at IS NULL) AS unsent, count(*) AS rows FROM outbox"
        )
        assert row is not None
        return None if row["unsent"] else int(row["rows"]) + 1

    return int(await wait_for(drained, timeout=timeout, what="the outbox to be relayed")) - 1


async def consumer_settled(
    js: Any, stream: str, durable: str | None = None, *, timeout: float = 10.0
) -> None:
    """Wait until a durable (None: every consumer of the stream) has been given and has
    acknowledged everything on the stream that it will ever be given: after this, what
    it did with them is final."""

    async def settled() -> bool:
        if durable is not None:
            infos = [await js.consumer_info(stream, durable)]
        else:
            infos = await js.consumers_info(stream)
        return bool(infos) and all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos)

    what = f"consumer {durable or 'every consumer of ' + stream} to settle"
    await wait_for(settled, timeout=timeout, what=what)
