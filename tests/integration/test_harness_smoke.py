"""The test harness itself: real JetStream and PostgreSQL, restarts, roles."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import asyncpg
import nats
import pytest
from harness.names import Names
from nats.js.api import StorageType

from linli.devstack.natsconf import admin_user, community_system_user, render_config
from linli.devstack.servers import NatsServer, PostgresServer, ensure_database, ensure_role

pytestmark = pytest.mark.integration


async def test_jetstream_deduplicates_by_msg_id(nats_url: str, names: Names) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream = names.stream("events")
    try:
        await js.add_stream(name=stream, subjects=[names.subject(">")])
        headers = {"Nats-Msg-Id": f"{names.prefix}-1"}
        first = await js.publish(names.subject("need", "created"), b"{}", headers=headers)
        second = await js.publish(names.subject("need", "created"), b"{}", headers=headers)
        assert not first.duplicate
        assert second.duplicate
        assert second.seq == first.seq
        assert (await js.stream_info(stream)).state.messages == 1
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def test_postgres_round_trip(database_url: str, db_schema: str) -> None:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": db_schema})
    try:
        await conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
        await conn.execute("INSERT INTO items VALUES ($1, $2)", 1, "rice")
        assert await conn.fetchval("SELECT name FROM items WHERE id = 1") == "rice"
        schema = await conn.fetchval(
            "SELECT schemaname FROM pg_tables WHERE tablename = 'items' AND schemaname = $1",
            db_schema,
        )
        assert schema == db_schema
    finally:
        await conn.close()


@pytest.mark.fault
async def test_nats_keeps_streams_across_a_crash(
    nats_server_factory: Callable[..., NatsServer], names: Names
) -> None:
    server = nats_server_factory()
    stream = names.stream("durable")
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=["crash.>"], storage=StorageType.FILE)
    for i in range(3):
        await js.publish("crash.test", str(i).encode())
    await nc.close()
    url, pid = server.url, server.pid

    server.kill()
    assert not server.running
    server.start()

    assert server.url == url
    assert server.pid != pid
    nc = await nats.connect(server.url)
    try:
        info = await nc.jetstream().stream_info(stream)
        assert info.state.messages == 3
    finally:
        await nc.close()


async def test_community_cannot_publish_to_another_communitys_ingress(
    nats_server_factory: Callable[..., NatsServer], names: Names
) -> None:
    mine, theirs = names.community("taian"), names.community("other")
    config = render_config(users=[community_system_user(mine, "mine-pw"), admin_user("admin-pw")])
    server = nats_server_factory(config=config)
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    admin = await nats.connect(server.url, user="admin", password="admin-pw")
    community = await nats.connect(
        server.url, user=f"community-{mine}", password="mine-pw", error_cb=on_error
    )
    try:
        seen = await admin.subscribe("linli.ingress.>")
        await admin.flush()
        await community.publish(f"linli.ingress.{mine}.need.submitted", b"ok")
        await community.flush()
        first = await seen.next_msg(timeout=10)
        assert first.subject == f"linli.ingress.{mine}.need.submitted"
        # The forbidden publish only after the allowed one arrived (see below).
        await community.publish(f"linli.ingress.{theirs}.need.submitted", b"forged")
        with contextlib.suppress(Exception):
            await community.flush(timeout=2)
        with pytest.raises(nats.errors.TimeoutError):
            await seen.next_msg(timeout=1)
        assert any("permissions violation" in str(e).lower() for e in errors), errors
    finally:
        await community.close()
        await admin.close()


@pytest.mark.fault
async def test_roles_log_in_and_stay_in_their_own_schema(
    postgres_server_factory: Callable[..., PostgresServer],
) -> None:
    pg = postgres_server_factory(password="admin-pw")
    admin = pg.dsn()
    await ensure_database(admin, "app")
    await ensure_database(admin, "app")  # idempotent
    alice_pw = "a'li\"ce $1 %L"
    await ensure_role(admin, "alice", alice_pw, "app", "alice_s")
    await ensure_role(admin, "bob", "bob-pw", "app", "bob_s")
    await ensure_role(admin, "bob", "bob-pw-2", "app", "bob_s")  # idempotent, new password

    def dsn(user: str) -> str:
        return f"postgresql://{user}@{pg.host}:{pg.port}/app"

    alice = await asyncpg.connect(dsn("alice"), password=alice_pw)
    try:
        # search_path defaults to the role's own schema
        await alice.execute("CREATE TABLE notes (id int)")
        assert await alice.fetchval("SELECT to_regclass('alice_s.notes') IS NOT NULL")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await alice.execute("CREATE TABLE bob_s.intruder (id int)")
    finally:
        await alice.close()

    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(dsn("alice"), password="wrong")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(dsn("bob"), password="bob-pw")
    bob = await asyncpg.connect(dsn("bob"), password="bob-pw-2")
    await bob.close()

    with pytest.raises(ValueError, match="invalid"):
        await ensure_role(admin, "Robert'); --", "x", "app", "r")

    # A crash of the postmaster loses nothing committed.
    pg.kill()
    pg.start()
    alice = await asyncpg.connect(dsn("alice"), password=alice_pw)
    try:
        assert await alice.fetchval("SELECT count(*) FROM notes") == 0
    finally:
        await alice.close()


async def test_community_app_reads_only_its_own_events(
    nats_server_factory: Callable[..., NatsServer], names: Names
) -> None:
    from linli.devstack.natsconf import community_app_user

    mine, theirs = names.community("app"), names.community("other")
    config = render_config(users=[community_app_user(mine, "app-pw"), admin_user("admin-pw")])
    server = nats_server_factory(config=config)
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    admin = await nats.connect(server.url, user="admin", password="admin-pw")
    app = await nats.connect(server.url, user=f"app-{mine}", password="app-pw", error_cb=on_error)
    try:
        own = await app.subscribe(f"linli.events.{mine}.>")
        watch = await admin.subscribe("linli.events.>")
        await app.flush()
        await admin.flush()
        await admin.publish(f"linli.events.{mine}.need.submitted.v1", b"mine")
        await admin.flush()
        assert (await own.next_msg(timeout=10)).data == b"mine"
        assert (await watch.next_msg(timeout=10)).data == b"mine"
        # Only then the forbidden moves, so a server that drops the offending connection
        # cannot make the allowed delivery above flaky.
        await app.subscribe(f"linli.events.{theirs}.>")
        await app.publish(f"linli.events.{mine}.need.submitted.v1", b"forged")
        with contextlib.suppress(Exception):
            await app.flush(timeout=2)
        with pytest.raises(nats.errors.TimeoutError):
            await watch.next_msg(timeout=1)  # the forged event never reached the bus
        text = " ".join(str(e).lower() for e in errors)
        assert "permissions violation" in text
        assert f"linli.events.{theirs}" in text
    finally:
        await app.close()
        await admin.close()
