"""Intake under test: in-process (ASGI) or as a subprocess, on real NATS and PostgreSQL.

Each harness has its own schema, streams and communities (from `Names`), so tests never
see each other's data or messages.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from linli.contracts.types import Role
from linli.intake.app import IntakeSettings
from linli.servicekit.auth import issue_credential
from linli.servicekit.db import migrate, service_migrations
from linli.servicekit.settings import ServiceSettings

from .common import drop_schema_and_streams
from .names import Names


def intake_settings(
    names: Names, nats_url: str, database_url: str, **overrides: Any
) -> ServiceSettings:
    """Settings that isolate one test: own schema, streams and communities."""
    values: dict[str, Any] = {
        "service_name": "intake",
        "environment": "test",
        "db_schema": names.schema("intake"),
        "database_url": database_url,
        "nats_url": nats_url,
        "events_stream": names.stream("events"),
        "ingress_stream": names.stream("ingress"),
        "stream_communities": f"{names.community('home')},{names.community('other')}",
        "outbox_poll_interval_s": 0.2,
        "retry_base_delay_s": 0.1,
        "consumer_ack_wait_s": 5.0,
        "log_json": False,
    }
    values.update(overrides)
    return IntakeSettings(**values)


def settings_env(settings: ServiceSettings) -> dict[str, str]:
    """The same settings as LINLI_* variables, for a subprocess."""
    env = {}
    for key, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"LINLI_{key.upper()}"] = str(value.value if hasattr(value, "value") else value)
    return env


@dataclass
class IntakeWorld:
    """Communities, credentials and residents a test works with."""

    settings: ServiceSettings
    home: str
    other: str
    tokens: dict[str, str] = field(default_factory=dict)
    residents: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str = "operator") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


async def prepare_world(settings: ServiceSettings, names: Names) -> IntakeWorld:
    """Migrate, add the two communities and issue credentials (as the CLI would)."""
    world = IntakeWorld(settings, names.community("home"), names.community("other"))
    conn = await asyncpg.connect(
        settings.database_url.get_secret_value(),
        server_settings={"search_path": f"{settings.db_schema},public"},
    )
    try:
        await migrate(conn, settings.db_schema, service_migrations("linli.intake", "intake"))
        for slug in (world.home, world.other):
            await conn.execute(
                "INSERT INTO communities (slug, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                slug,
                f"Community {slug}",
            )
        grants = {
            "operator": (Role.OPERATOR, [world.home]),
            "other_operator": (Role.OPERATOR, [world.other]),
            "system": (Role.SYSTEM, [world.home]),
            "admin": (Role.ADMIN, ["*"]),
        }
        for key, (role, communities) in grants.items():
            _, world.tokens[key] = await issue_credential(
                conn, role=role, communities=communities, label=key
            )
    finally:
        await conn.close()
    return world


drop_world = drop_schema_and_streams


def resident_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "ZZCANARY-王秀兰",
        "phone": "13800138001",
        "address": "ZZCANARY 致远小区 3号楼 401",
        "compound": "致远小区",
        "priority_group": "elderly_living_alone",
        "consent_to_share_contact": True,
    }
    body.update(overrides)
    return body


def meal_need(resident_id: str, *, hours_ahead: float = 2, **overrides: Any) -> dict[str, Any]:
    start = datetime.now(UTC) + timedelta(hours=hours_ahead)
    body: dict[str, Any] = {
        "kind": "meal_delivery",
        "resident_id": resident_id,
        "window": {
            "earliest": start.isoformat(),
            "latest": (start + timedelta(minutes=90)).isoformat(),
        },
        "details": {"diet_needs": ["soft food"], "portions": 1},
        "source": {"system": "community-office"},
    }
    body.update(overrides)
    return body


def repair_need(resident_id: str, **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "kind": "repair",
        "resident_id": resident_id,
        "urgency": "emergency",
        "window": {"earliest": now.isoformat(), "latest": (now + timedelta(hours=1)).isoformat()},
        "details": {"category": "heating", "description": "burst radiator", "hazard": "water_leak"},
    }
    body.update(overrides)
    return body


async def events_on_stream(
    js: JetStreamContext, stream: str, *, expect: int, timeout: float = 10.0
) -> list[Any]:
    """Read the whole stream once it holds at least `expect` messages."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        info = await js.stream_info(stream)
        if info.state.messages >= expect or loop.time() > deadline:
            break
        await asyncio.sleep(0.1)
    messages = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with contextlib.suppress(Exception):
            messages.append(await js.get_msg(stream, seq))
    return messages


@contextlib.asynccontextmanager
async def nats_client(url: str) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(url)
    try:
        yield nc
    finally:
        await nc.close()


def cloudevent(community: str, data: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A structured `need.submit` CloudEvent as another system would send it."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "urn:hospital:discharge",
        "type": "linli.need.submit.v1",
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "community": community,
        "data": data,
    }
    event.update(overrides)
    return event


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


async def outbox_backlog(pool: Any, *, settle: float = 5.0) -> int:
    """Unsent outbox rows once the relay has had `settle` seconds to drain them."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle
    while True:
        count = int(await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))
        if count == 0 or loop.time() > deadline:
            return count
        await asyncio.sleep(0.05)


async def publish_event(js: JetStreamContext, data: Any, community: str, **kw: Any) -> str:
    """Publish a domain event as another service's outbox relay would; returns its id."""
    from linli.contracts.binding import to_structured
    from linli.contracts.envelope import new_event
    from linli.contracts.registry import lookup
    from linli.contracts.subjects import subject_for

    event = new_event(data, community=community, source="/test", **kw)
    body, headers = to_structured(event)
    subject = subject_for(lookup(event.type), community)
    await js.publish(subject, body, headers={**headers, "Nats-Msg-Id": event.id})
    return event.id
