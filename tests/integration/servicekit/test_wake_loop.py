"""The wake loop on real PostgreSQL: NOTIFY wakes it, and its listener comes back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from harness.common import wait_for
from harness.names import Names
from harness.wake import LONG, ScriptedPass

from linli.servicekit.wake import WakeLoop

pytestmark = pytest.mark.integration


@pytest.fixture
async def admin(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def listeners(admin: asyncpg.Connection, channel: str) -> list[int]:
    """Backends whose last statement was LISTEN on `channel` (asyncpg runs nothing after)."""
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE query = $1 AND pid <> pg_backend_pid()",
        f'LISTEN "{channel}"',
    )
    return [r["pid"] for r in rows]


async def replaced(admin: asyncpg.Connection, channel: str, old: int) -> bool:
    """One listener on `channel`, and not the backend `old`."""
    pids = await listeners(admin, channel)
    return len(pids) == 1 and pids[0] != old


async def no_listener(admin: asyncpg.Connection, channel: str) -> bool:
    return not await listeners(admin, channel)


@contextlib.asynccontextmanager
async def listening(
    name: str, work: ScriptedPass, channel: str, dsn: str, **options: Any
) -> AsyncIterator[WakeLoop]:
    """A started loop that has made its first pass (so it listens); stopped after."""
    options.setdefault("poll_interval", LONG)
    loop = WakeLoop(name, work, channel=channel, dsn=dsn, **options)
    await loop.start()
    try:
        await wait_for(lambda: work.count >= 1, what="the first pass")
        yield loop
    finally:
        await loop.stop()


async def test_notify_wakes_the_loop(
    database_url: str, admin: asyncpg.Connection, names: Names
) -> None:
    channel = f"{names.prefix}_wake"
    work = ScriptedPass()
    async with listening("test-notify", work, channel, database_url):
        assert len(await listeners(admin, channel)) == 1
        for expected in (2, 3):
            await admin.execute("SELECT pg_notify($1, '')", channel)
            await wait_for(lambda n=expected: work.count == n, what=f"pass {expected}")
    await wait_for(lambda: no_listener(admin, channel), what="the listener closed by stop()")


async def test_listener_is_reopened_after_a_failed_pass(
    database_url: str, admin: asyncpg.Connection, names: Names
) -> None:
    channel = f"{names.prefix}_wake"
    work = ScriptedPass([False, RuntimeError("database blip"), False])
    # Backoff after one failure: twice the poll interval, capped (never below the poll).
    async with listening("test-reopen", work, channel, database_url, poll_interval=1.0):
        (first,) = await listeners(admin, channel)
        # The woken pass fails: the listener is closed, and the pass after the backoff
        # listens on a new connection.
        await admin.execute("SELECT pg_notify($1, '')", channel)
        await wait_for(lambda: work.count >= 3, what="the pass after the failure")
        await wait_for(lambda: replaced(admin, channel, first), what="a new listener")
    await wait_for(lambda: no_listener(admin, channel), what="the listener closed by stop()")


async def test_a_terminated_listener_wakes_the_loop_and_listens_again(
    database_url: str, admin: asyncpg.Connection, names: Names
) -> None:
    channel = f"{names.prefix}_wake"
    work = ScriptedPass()
    async with listening("test-terminated", work, channel, database_url):
        (first,) = await listeners(admin, channel)
        # The server drops the listener (a restart, an operator, a proxy): the loop wakes,
        # covers what it may have missed with a pass, and listens on a new connection.
        await admin.execute("SELECT pg_terminate_backend($1)", first)
        await wait_for(lambda: work.count == 2, what="the pass after the termination")
        await wait_for(lambda: replaced(admin, channel, first), what="a new listener")
        await admin.execute("SELECT pg_notify($1, '')", channel)
        await wait_for(lambda: work.count == 3, what="the pass woken on the new listener")
