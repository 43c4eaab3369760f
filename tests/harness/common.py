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
