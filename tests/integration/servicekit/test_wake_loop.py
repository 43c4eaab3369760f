"""The wake loop on real PostgreSQL: NOTIFY wakes it, and its listener comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from harness.names import Names

from linli.servicekit.wake import WakeLoop

pytestmark = pytest.mark.integration

LONG = 60.0
"""A poll interval no test waits for: a pass that follows at once was woken."""


async def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


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


async def wait_for_value(probe: Callable[[], Awaitable[object]], expected: object) -> None:
    deadline = time.monotonic() + 5
    while (value := await probe()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{value!r} != {expected!r}")
        await asyncio.sleep(0.02)


async def replaced(admin: asyncpg.Connection, channel: str, old: int) -> bool:
    """One listener on `channel`, and not the backend `old`."""
    pids = await listeners(admin, channel)
    return len(pids) == 1 and pids[0] != old


async def test_notify_wakes_the_loop(
    database_url: str, admin: asyncpg.Connection, names: Names
) -> None:
    channel = f"{names.prefix}_wake"
    passes: list[float] = []

    async def work() -> bool:
        passes.append(time.monotonic())
        return False

    loop = WakeLoop("test-notify", work, poll_interval=LONG, channel=channel, dsn=database_url)
    await loop.start()
    try:
        await wait_until(lambda: len(passes) == 1)
        assert len(await listeners(admin, channel)) == 1
        for expected in (2, 3):
            await admin.execute("SELECT pg_notify($1, '')", channel)
            await wait_until(lambda expected=expected: len(passes) == expected)
    finally:
        await loop.stop()
    # stop() closes the listener.
    await wait_for_value(lambda: listeners(admin, channel), [])


async def test_listener_is_reopened_after_a_failed_pass(
    database_url: str, admin: asyncpg.Connection, names: Names
) -> None:
    channel = f"{names.prefix}_wake"
    outcomes: list[bool | Exception] = [False, RuntimeError("database blip"), False]
    passes = 0

    async def work() -> bool:
        nonlocal passes
        passes += 1
        outcome = outcomes.pop(0) if outcomes else False
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    loop = WakeLoop(
        "test-reopen",
        work,
        poll_interval=0.05,
        channel=channel,
        dsn=database_url,
        max_backoff=0.2,
    )
    await loop.start()
    try:
        await wait_until(lambda: passes >= 1)
        (first,) = await listeners(admin, channel)
        # The second pass fails: the listener is closed and a new one opened for the next.
        await wait_until(lambda: passes >= 3)
        await wait_for_value(lambda: replaced(admin, channel, first), True)
        assert first not in await listeners(admin, channel)
    finally:
        await loop.stop()
    await wait_for_value(lambda: listeners(admin, channel), [])


async def test_a_terminated_listener_wakes_the_loop_and_listens_again(
    database_url: str, admin: asyncpg.Connection, names: Names
) -> None:
    channel = f"{names.prefix}_wake"
    passes: list[float] = []

    async def work() -> bool:
        passes.append(time.monotonic())
        return False

    loop = WakeLoop("test-terminated", work, poll_interval=LONG, channel=channel, dsn=database_url)
    await loop.start()
    try:
        await wait_until(lambda: len(passes) == 1)
        (first,) = await listeners(admin, channel)
        # The server drops the listener (a restart, an operator, a proxy): the loop wakes,
        # covers what it may have missed with a pass, and listens on a new connection.
        await admin.execute("SELECT pg_terminate_backend($1)", first)
        await wait_until(lambda: len(passes) == 2)
        await wait_for_value(lambda: replaced(admin, channel, first), True)
        await admin.execute("SELECT pg_notify($1, '')", channel)
        await wait_until(lambda: len(passes) == 3)
    finally:
        await loop.stop()
