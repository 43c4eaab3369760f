"""Prometheus metrics from a running runtime, scraped over HTTP on real servers.

One runtime consumes cancellations (some fail, one is poison) and relays its outbox;
its metrics port is scraped before and after, and the differences must be what
happened: events handled, retried and dead-lettered by type, handler latency observed,
events published, dead letters by code, the outbox backlog and its age while the relay
is stopped, consumer lag, readiness. Counters are process-wide, so every assertion is
on a difference between two scrapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from linli.contracts.binding import to_structured
from linli.contracts.envelope import CloudEvent, new_event
from linli.contracts.events import NeedCancelled
from linli.contracts.types import Reason, Role
from linli.devstack.servers import free_port
from linli.servicekit import outbox
from linli.servicekit.consume import Received, Subscriptions
from linli.servicekit.db import Conn, load_migrations
from linli.servicekit.messaging import PoisonMessage
from linli.servicekit.runtime import ServiceRuntime
from linli.servicekit.settings import ServiceSettings

pytestmark = pytest.mark.integration

CANCELLED = "linli.need.cancelled.v1"
DURABLE = "metrics-test"


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Kit:
    runtime: ServiceRuntime
    nc: Any
    community: str
    url: str

    async def scrape(self) -> Samples:
        async with httpx.AsyncClient() as client:
            response = await client.get(self.url, timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return parse(response.text)

    def cancelled(self, reason: str) -> CloudEvent[Any]:
        return new_event(
            NeedCancelled(
                need_id=uuid.uuid4(),
                reason=reason,
                cancelled_by_role=Role.OPERATOR,
                cancelled_at=datetime.now(UTC),
            ),
            community=self.community,
            source="/test",
        )

    async def publish(self, event: CloudEvent[Any]) -> None:
        body, headers = to_structured(event)
        headers["Nats-Msg-Id"] = event.id
        await self.nc.jetstream().publish(
            f"linli.events.{event.community}.need.cancelled.v1", body, headers=headers
        )


@pytest.fixture
async def kit(nats_url: str, database_url: str, names: Any) -> AsyncIterator[Kit]:
    community = names.community("metrics")
    port = free_port()
    settings = ServiceSettings(
        service_name="metricskit",
        environment="test",
        db_schema=names.schema("metricskit"),
        database_url=database_url,
        nats_url=nats_url,
        events_stream=names.stream("events"),
        ingress_stream=names.stream("ingress"),
        stream_communities=community,
        consumer_max_deliver=2,
        consumer_ack_wait_s=2.0,
        consumer_fetch_wait_s=0.5,
        retry_base_delay_s=0.05,
        metrics_port=port,
        metrics_refresh_s=3600,  # the test refreshes when it wants to
        outbox_poll_interval_s=0.2,
        log_json=False,
    )
    runtime = ServiceRuntime(settings, load_migrations("linli.servicekit", "servicekit"))

    async def use_case(conn: Conn, received: Received[NeedCancelled]) -> None:
        reason = received.data.reason or ""
        if reason == "poison":
            raise PoisonMessage([Reason(field="reason", message="never valid", code="poison")])
        if reason == "fails":
            raise RuntimeError("use case failed")

    runtime.consume(Subscriptions(DURABLE, description="cancellations").on(NeedCancelled, use_case))
    await runtime.start()
    nc = await nats.connect(nats_url)
    try:
        yield Kit(runtime, nc, community, f"http://127.0.0.1:{port}/metrics")
    finally:
        await runtime.stop()
        for stream in (
            settings.events_stream,
            settings.ingress_stream,
            settings.advisories_stream,
        ):
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
        await nc.close()
        conn = await asyncpg.connect(database_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
        await conn.close()


async def eventually(kit: Kit, check: Any, timeout: float = 15.0) -> Samples:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        samples = await kit.scrape()
        if check(samples):
            return samples
        if loop.time() > deadline:
            raise AssertionError("metrics did not reach the expected values")
        await asyncio.sleep(0.1)


async def test_consumption_and_dead_letters_are_counted_by_type_and_outcome(kit: Kit) -> None:
    before = await kit.scrape()

    def delta(samples: Samples, name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(before, name, **labels)

    for reason in ("ok-1", "fails", "poison", "ok-2"):
        await kit.publish(kit.cancelled(reason))

    def settled(samples: Samples) -> bool:
        dead = value(samples, "linli_dead_letters_total", consumer=DURABLE, code="max_deliveries")
        return dead - value(
            before, "linli_dead_letters_total", consumer=DURABLE, code="max_deliveries"
        ) == 1 and delta(
            samples, "linli_events_consumed_total", consumer=DURABLE, type=CANCELLED,
            outcome="handled",
        ) == 2  # fmt: skip

    after = await eventually(kit, settled)
    consumed = {
        outcome: delta(
            after, "linli_events_consumed_total", consumer=DURABLE, type=CANCELLED, outcome=outcome
        )
        for outcome in ("handled", "retried", "dead_lettered", "skipped", "duplicate")
    }
    # "fails" is retried once, then dead-lettered at its second (last) delivery; poison
    # is dead-lettered at once.
    assert consumed == {
        "handled": 2,
        "retried": 1,
        "dead_lettered": 2,
        "skipped": 0,
        "duplicate": 0,
    }
    assert delta(after, "linli_dead_letters_total", consumer=DURABLE, code="poison") == 1
    assert delta(after, "linli_consumer_redeliveries_total", consumer=DURABLE) == 1
    # Each use case run is timed: 2 handled; failing runs roll back before they are timed.
    assert (
        delta(after, "linli_event_handler_duration_seconds_count", consumer=DURABLE, type=CANCELLED)
        == 2
    )

    await kit.runtime.refresh_metrics()
    gauges = await kit.scrape()
    assert value(gauges, "linli_dead_letters_open") == 2
    assert value(gauges, "linli_ready") == 1
    assert value(gauges, "linli_consumer_pending", consumer=DURABLE) == 0
    assert value(gauges, "linli_consumer_ack_pending", consumer=DURABLE) == 0


async def test_outbox_backlog_age_and_publications(kit: Kit) -> None:
    relay = kit.runtime.relay
    assert relay is not None
    await relay.stop()
    async with kit.runtime.pool.acquire() as conn, conn.transaction():
        await outbox.enqueue(conn, kit.cancelled("published-1"))
        await outbox.enqueue(conn, kit.cancelled("published-2"))
    await asyncio.sleep(1.1)
    await kit.runtime.refresh_metrics()
    stalled = await kit.scrape()
    assert value(stalled, "linli_outbox_backlog") == 2
    assert value(stalled, "linli_outbox_oldest_age_seconds") >= 1.0

    published = value(stalled, "linli_events_published_total", type=CANCELLED)
    await relay.start()

    def relayed(samples: Samples) -> bool:
        return value(samples, "linli_events_published_total", type=CANCELLED) - published == 2

    await eventually(kit, relayed)
    await kit.runtime.refresh_metrics()
    drained = await kit.scrape()
    assert value(drained, "linli_outbox_backlog") == 0
    assert value(drained, "linli_outbox_oldest_age_seconds") == 0


async def test_readiness_gauge_follows_the_database(kit: Kit, monkeypatch: Any) -> None:
    await kit.runtime.refresh_metrics()
    assert value(await kit.scrape(), "linli_ready") == 1

    async def database_down() -> dict[str, Any]:
        return {"database": False, "nats": True, "migrations": False, "ready": False}

    monkeypatch.setattr(kit.runtime, "readiness", database_down)
    await kit.runtime.refresh_metrics()
    assert value(await kit.scrape(), "linli_ready") == 0
