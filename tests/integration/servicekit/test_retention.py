"""Retention on real PostgreSQL (and NATS for the redelivery): what ages out goes, in
bounded statements; what must stay (recent rows, open dead letters, unsent or
quarantined outbox rows, inbox rows an event can still come back for) stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import nats
import pytest
from harness.common import wait_for
from harness.notifications import notifications_settings
from harness.scheduling import scheduling_settings
from prometheus_client import REGISTRY
from pydantic import ValidationError

from linli.contracts.binding import to_structured
from linli.contracts.envelope import new_event
from linli.contracts.events import NeedCancelled
from linli.contracts.types import Role
from linli.notifications.app import build_app as build_notifications
from linli.scheduling.app import build_app as build_scheduling
from linli.servicekit.consume import Received, Subscriptions
from linli.servicekit.db import Conn, create_pool, load_migrations, migrate, service_migrations
from linli.servicekit.retention import Retention
from linli.servicekit.runtime import ServiceRuntime
from linli.servicekit.settings import ServiceSettings

pytestmark = pytest.mark.integration

DAY = 24 * 3600.0


def purged(table: str) -> float:
    return REGISTRY.get_sample_value("linli_retention_purged_total", {"table": table}) or 0.0


@pytest.fixture
async def pool(database_url: str, names: Any) -> AsyncIterator[asyncpg.Pool]:
    schema = names.schema("retention")
    conn = await asyncpg.connect(database_url)
    await migrate(conn, schema, load_migrations("linli.servicekit", "servicekit"))
    await conn.close()
    pool = await create_pool(database_url, schema)
    try:
        yield pool
    finally:
        await pool.close()
        conn = await asyncpg.connect(database_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def servicekit_retention(settings: ServiceSettings, batch: int) -> Retention:
    runtime = ServiceRuntime(settings, [])
    runtime.retention.batch = batch
    return runtime.retention


async def test_servicekit_tables_are_purged_in_bounded_statements(
    pool: asyncpg.Pool, names: Any
) -> None:
    settings = ServiceSettings(
        service_name="retention", environment="test", db_schema=pool_schema(pool, names)
    )
    # inbox: 350 rows past the 14-day period, 10 inside it (older than the stream's 3 days).
    await pool.execute(
        "INSERT INTO inbox (consumer, event_id, processed_at) "
        "SELECT 'c', 'old-' || i, now() - interval '15 days' FROM generate_series(1, 350) i"
    )
    await pool.execute(
        "INSERT INTO inbox (consumer, event_id, processed_at) "
        "SELECT 'c', 'kept-' || i, now() - interval '13 days' FROM generate_series(1, 10) i"
    )
    # dead letters: replayed long ago (go), replayed lately (stay), open and old (stay).
    for key, created, replayed in [
        ("replayed-old", "60 days", "31 days"),
        ("replayed-new", "60 days", "29 days"),
        ("open-old", "400 days", None),
    ]:
        await pool.execute(
            "INSERT INTO dead_letters (id, dedupe_key, consumer, subject, payload, created_at, "
            "replayed_at) VALUES ($1, $2, 'c', 's', '\\x00', now() - $3::text::interval, "
            "now() - $4::text::interval)",
            uuid.uuid4(),
            key,
            created,
            replayed,
        )
    # outbox: sent 4 days ago (goes), sent lately, unsent and quarantined old rows (stay).
    for event_id, created, sent, quarantined in [
        ("sent-old", "5 days", "4 days", None),
        ("sent-new", "2 days", "2 days", None),
        ("unsent-old", "30 days", None, None),
        ("quarantined-old", "30 days", None, "29 days"),
    ]:
        await pool.execute(
            "INSERT INTO outbox (event_id, subject, payload, created_at, sent_at, quarantined_at) "
            "VALUES ($1, 's', '\\x00', now() - $2::text::interval, now() - $3::text::interval, "
            "now() - $4::text::interval)",
            event_id,
            created,
            sent,
            quarantined,
        )
    before = {t: purged(t) for t in ("inbox", "dead_letters", "outbox")}

    retention = servicekit_retention(settings, batch=100)
    assert {r.table for r in retention.rules} == {"inbox", "dead_letters", "outbox"}
    inbox_rule = next(r for r in retention.rules if r.table == "inbox")
    # Each statement deletes at most one batch.
    assert await retention.purge_rule(pool, inbox_rule) == [100, 100, 100, 50]
    assert await retention.purge(pool) == {"inbox": 0, "dead_letters": 1, "outbox": 1}

    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE event_id LIKE 'old-%'") == 0
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE event_id LIKE 'kept-%'") == 10
    letters = await pool.fetch("SELECT dedupe_key FROM dead_letters")
    assert sorted(r["dedupe_key"] for r in letters) == [
        "open-old",
        "replayed-new",
    ]  # fmt: skip
    assert sorted(r["event_id"] for r in await pool.fetch("SELECT event_id FROM outbox")) == [
        "quarantined-old",
        "sent-new",
        "unsent-old",
    ]
    assert purged("inbox") - before["inbox"] == 350
    assert purged("dead_letters") - before["dead_letters"] == 1
    assert purged("outbox") - before["outbox"] == 1


def pool_schema(pool: asyncpg.Pool, names: Any) -> str:
    return names.schema("retention")


async def test_two_purges_at_once_share_the_rows(pool: asyncpg.Pool, names: Any) -> None:
    await pool.execute(
        "INSERT INTO inbox (consumer, event_id, processed_at) "
        "SELECT 'c', 'old-' || i, now() - interval '15 days' FROM generate_series(1, 2000) i"
    )
    settings = ServiceSettings(
        service_name="retention", environment="test", db_schema=pool_schema(pool, names)
    )
    a, b = servicekit_retention(settings, 50), servicekit_retention(settings, 50)
    rule = next(r for r in a.rules if r.table == "inbox")
    counts = await asyncio.gather(a.purge_rule(pool, rule), b.purge_rule(pool, rule))
    assert sum(map(sum, counts)) == 2000
    assert all(n <= 50 for c in counts for n in c)
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 0


def test_the_inbox_must_outlive_the_stream_and_the_republish_window() -> None:
    base = {"service_name": "x", "environment": "test", "events_max_age_s": 3 * DAY}
    with pytest.raises(ValidationError, match="inbox_retention_s"):
        ServiceSettings(**base, inbox_retention_s=3 * DAY)
    with pytest.raises(ValidationError, match="inbox_retention_s"):
        ServiceSettings(**base, inbox_retention_s=4 * DAY, outbox_retention_s=5 * DAY)
    assert ServiceSettings(**base).inbox_retention_s == 14 * DAY


async def test_an_event_the_stream_still_holds_is_recognised_after_a_purge(
    nats_url: str, database_url: str, names: Any
) -> None:
    """The shortest inbox retention allowed still recognises the oldest redelivery."""
    community = names.community("retention")
    max_age = 600.0
    settings = ServiceSettings(
        service_name="retentionkit",
        environment="test",
        db_schema=names.schema("retentionkit"),
        database_url=database_url,
        nats_url=nats_url,
        events_stream=names.stream("events"),
        ingress_stream=names.stream("ingress"),
        stream_communities=community,
        events_max_age_s=max_age,
        duplicate_window_s=60.0,
        outbox_retention_s=max_age,
        inbox_retention_s=max_age + 60.0,  # the minimum the settings accept
        consumer_fetch_wait_s=0.5,
        log_json=False,
    )
    runtime = ServiceRuntime(settings, load_migrations("linli.servicekit", "servicekit"))
    applied: list[str] = []

    async def use_case(conn: Conn, received: Received[NeedCancelled]) -> None:
        applied.append(received.event.id)

    durable = names.durable("retention")
    runtime.consume(Subscriptions(durable, description="cancellations").on(NeedCancelled, use_case))
    await runtime.start()
    nc = await nats.connect(nats_url)
    try:
        events = [
            new_event(
                NeedCancelled(
                    need_id=uuid.uuid4(),
                    reason=None,
                    cancelled_by_role=Role.OPERATOR,
                    cancelled_at=datetime.now(UTC),
                ),
                community=community,
                source="/test",
            )
            for _ in range(2)
        ]

        async def publish(event: Any, msg_id: str) -> None:
            body, headers = to_structured(event)
            headers["Nats-Msg-Id"] = msg_id
            await nc.jetstream().publish(
                f"linli.events.{community}.need.cancelled.v1", body, headers=headers
            )

        for event in events:
            await publish(event, event.id)
        await wait_for(lambda: len(applied) == 2, what="both events applied")
        inside, outside = events
        # `inside` was applied as long ago as the oldest message the stream still holds;
        # `outside` longer ago than the inbox keeps anything.
        await runtime.pool.execute(
            "UPDATE inbox SET processed_at = now() - make_interval(secs => $2) WHERE event_id = $1",
            inside.id,
            max_age,
        )
        await runtime.pool.execute(
            "UPDATE inbox SET processed_at = now() - make_interval(secs => $2) WHERE event_id = $1",
            outside.id,
            settings.inbox_retention_s + 1,
        )
        assert (await runtime.retention.purge(runtime.pool))["inbox"] == 1

        # Both come back (a redelivery or replay past the duplicate window): the one the
        # stream could still hold is recognised, the purged one is applied again.
        await publish(inside, f"{inside.id}:again")
        await publish(outside, f"{outside.id}:again")
        await wait_for(lambda: len(applied) == 3, what="the purged event applied again")

        async def settled() -> bool:
            info = await nc.jetstream().consumer_info(settings.events_stream, durable)
            return info.ack_floor.stream_seq == 4 and info.num_ack_pending == 0

        await wait_for(settled, what="the redeliveries settled")
        assert applied == [inside.id, outside.id, outside.id]
    finally:
        await runtime.stop()
        for stream in (settings.events_stream, settings.ingress_stream):
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
        await nc.close()
        conn = await asyncpg.connect(database_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
        await conn.close()


async def test_services_declare_their_own_tables(
    nats_url: str, database_url: str, names: Any
) -> None:
    """Scheduling's fired timers; notifications' finished deliveries (with their
    attempts) and messages to people; pending work is never purged."""
    sched = scheduling_settings(names, nats_url, database_url)
    notif = notifications_settings(names, nats_url, database_url)
    s_runtime = build_scheduling(sched).state.runtime
    n_runtime = build_notifications(notif).state.runtime
    shared = {"inbox", "dead_letters", "outbox"}
    assert {r.table for r in s_runtime.retention.rules} == shared | {"timers"}
    assert {r.table for r in n_runtime.retention.rules} == shared | {
        "deliveries",
        "people_messages",
    }

    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, sched.db_schema, service_migrations("linli.scheduling", "scheduling"))
        await migrate(
            conn, notif.db_schema, service_migrations("linli.notifications", "notifications")
        )
    finally:
        await conn.close()
    s_pool = await create_pool(database_url, sched.db_schema)
    n_pool = await create_pool(database_url, notif.db_schema)
    try:
        need = uuid.uuid4()
        await s_pool.execute(
            "INSERT INTO needs (id, community, resident_id, kind, urgency, priority_group, rank, "
            "window_earliest, window_latest, details, submitted_at, state) VALUES ($1, 'c', $2, "
            "'meal_delivery', 'routine', 'general', 0, now(), now(), '{}', now(), 'fulfilled')",
            need,
            uuid.uuid4(),
        )
        for fired, due in [("31 days", "31 days"), ("29 days", "29 days"), (None, "40 days")]:
            await s_pool.execute(
                "INSERT INTO timers (kind, need_id, due_at, fired_at, outcome) VALUES "
                "('sla_breach', $1, now() - $2::text::interval, now() - $3::text::interval, "
                "CASE WHEN $3::text::interval IS NULL THEN NULL ELSE 'fired' END)",
                need,
                due,
                fired,
            )
        assert (await s_runtime.retention.purge(s_pool))["timers"] == 1
        assert await s_pool.fetchval("SELECT count(*) FROM timers") == 2
        assert await s_pool.fetchval("SELECT count(*) FROM timers WHERE fired_at IS NULL") == 1

        sub = uuid.uuid4()
        await n_pool.execute(
            "INSERT INTO subscriptions (id, owner_credential, url, communities, secret_sealed) "
            "VALUES ($1, $2, 'https://example.org/hook', '{c}', 'x')",
            sub,
            uuid.uuid4(),
        )
        for event_id, state, finished in [
            ("delivered-old", "delivered", "31 days"),
            ("failed-old", "failed", "31 days"),
            ("delivered-new", "delivered", "29 days"),
            ("pending-old", "pending", None),
        ]:
            delivery = await n_pool.fetchval(
                "INSERT INTO deliveries (subscription_id, event_id, event_type, community, "
                "payload, state, created_at, finished_at) VALUES ($1, $2, 't', 'c', '\\x00', $3, "
                "now() - interval '40 days', now() - $4::text::interval) RETURNING id",
                sub,
                event_id,
                state,
                finished,
            )
            await n_pool.execute(
                "INSERT INTO delivery_attempts (delivery_id, subscription_id, event_id, attempt, "
                "started_at, latency_ms, outcome) VALUES ($1, $2, $3, 1, now(), 5, 'x')",
                delivery,
                sub,
                event_id,
            )
        recipient = uuid.uuid4()
        await n_pool.execute(
            "INSERT INTO people_recipients (id, community, role, channel, address) "
            "VALUES ($1, 'c', 'operator', 'sms', '+8613800000000')",
            recipient,
        )
        for event_id, status, created in [
            ("sent-old", "sent", "31 days"),
            ("failed-old", "failed", "31 days"),
            ("sent-new", "sent", "29 days"),
            ("pending-old", "pending", "40 days"),
        ]:
            await n_pool.execute(
                "INSERT INTO people_messages (id, event_id, event_type, recipient_id, community, "
                "channel, template, locale, subject, body, status, created_at) VALUES ($1, $2, "
                "'t', $3, 'c', 'sms', 't', 'zh-CN', '', '', $4, now() - $5::text::interval)",
                uuid.uuid4(),
                event_id,
                recipient,
                status,
                created,
            )
        result = await n_runtime.retention.purge(n_pool)
        assert result["deliveries"] == 2
        assert result["people_messages"] == 2
        left = sorted(r["event_id"] for r in await n_pool.fetch("SELECT event_id FROM deliveries"))
        assert left == ["delivered-new", "pending-old"]
        attempts = await n_pool.fetch("SELECT event_id FROM delivery_attempts")
        assert sorted(r["event_id"] for r in attempts) == ["delivered-new", "pending-old"]
        messages = await n_pool.fetch("SELECT event_id FROM people_messages")
        assert sorted(r["event_id"] for r in messages) == ["pending-old", "sent-new"]
    finally:
        await s_pool.close()
        await n_pool.close()
        conn = await asyncpg.connect(database_url)
        for schema in (sched.db_schema, notif.db_schema):
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
