"""The revocations watcher (ADR 0030) on a real nats-server and PostgreSQL.

It loads every revoked digest before it says `loaded`, marks the service's own rows and
hands the local ids to the hooks; after the NATS server restarts (its ephemeral consumer
gone) it loads again and sees a revocation put while it was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import nats
import pytest
from harness.common import wait_for
from harness.names import Names

from linli.contracts.types import Role
from linli.devstack.servers import NatsServer
from linli.servicekit.auth import issue_credential
from linli.servicekit.db import Conn, create_pool, load_migrations, migrate
from linli.servicekit.messaging import provision_streams
from linli.servicekit.revocations import RevocationWatcher, publish_revocation
from linli.servicekit.settings import ServiceSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url: str, names: Names) -> AsyncIterator[asyncpg.Pool]:
    schema = names.schema("revocations")
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, schema, load_migrations("linli.servicekit", "servicekit"))
    finally:
        await conn.close()
    made = await create_pool(database_url, schema, min_size=1, max_size=3)
    yield made
    await made.close()
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def test_the_watcher_loads_marks_and_reloads_after_a_nats_restart(
    nats_server_factory: Callable[..., NatsServer],
    pool: asyncpg.Pool,
    names: Names,
    tmp_path: Path,
) -> None:
    server = nats_server_factory()
    settings = ServiceSettings(
        service_name="revocations",
        nats_url=server.url,
        events_stream=names.stream("events"),
        ingress_stream=names.stream("ingress"),
        revocations_bucket=names.stream("revocations"),
    )
    tokens = ["lnl_" + uuid.uuid4().hex * 2 for _ in range(3)]
    async with pool.acquire() as conn:
        ids = [
            (await issue_credential(conn, role=Role.SYSTEM, communities=["*"], token=t))[0]
            for t in tokens
        ]
    admin = await nats.connect(server.url)
    await provision_streams(admin.jetstream(), settings)
    # Revoked before the watcher starts: it must be loaded before `loaded` is set.
    await publish_revocation(admin.jetstream(), settings.revocations_bucket, _digest(tokens[0]))

    watched = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    seen: list[uuid.UUID] = []

    async def hook(_conn: Conn, local: list[uuid.UUID]) -> None:
        seen.extend(local)

    watcher = RevocationWatcher(settings, watched.jetstream, lambda: pool, lambda: watched)
    watcher.hooks.append(hook)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.loaded.wait(), 10)
        assert watcher.is_revoked(_digest(tokens[0]))
        assert not watcher.is_revoked(_digest(tokens[1]))
        await wait_for(lambda: ids[0] in seen, timeout=10, what="the hook told")
        assert await pool.fetchval(
            "SELECT revoked_at IS NOT NULL FROM credentials WHERE id = $1", ids[0]
        )

        # A new revocation arrives while watching.
        await publish_revocation(admin.jetstream(), settings.revocations_bucket, _digest(tokens[1]))
        await wait_for(lambda: watcher.is_revoked(_digest(tokens[1])), timeout=10, what="second")
        await wait_for(lambda: ids[1] in seen, timeout=10, what="the hook told of the second")

        # The server restarts: the watcher's ephemeral consumer is gone. A revocation put
        # by another client right after the restart is still seen, and the first ones
        # are loaded again (the hook runs again: idempotent).
        await admin.close()
        seen.clear()
        server.kill()
        server.start()
        admin = await nats.connect(server.url)
        await publish_revocation(admin.jetstream(), settings.revocations_bucket, _digest(tokens[2]))
        await wait_for(
            lambda: watcher.is_revoked(_digest(tokens[2])), timeout=20, what="after restart"
        )
        await wait_for(lambda: ids[2] in seen, timeout=10, what="the hook told after the restart")
        assert await pool.fetchval(
            "SELECT count(*) FROM credentials WHERE revoked_at IS NOT NULL"
        ) == len(tokens)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watched.close()
        await admin.close()
