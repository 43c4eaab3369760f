"""Partners under test, in-process (ASGI), on real NATS JetStream and PostgreSQL.

Each harness has its own schema, streams and communities (from `Names`). Events that
scheduling would emit are published onto the test's events stream exactly as the
outbox relay publishes them (structured CloudEvent, `Nats-Msg-Id` = event id).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from cryptography.fernet import Fernet
from nats.js import JetStreamContext
from pydantic import BaseModel

from linli.contracts.binding import from_nats, to_structured
from linli.contracts.envelope import CloudEvent, new_event
from linli.contracts.events import AssignmentOffered, PartyKind, PartyRef
from linli.contracts.registry import lookup
from linli.contracts.subjects import subject_for
from linli.contracts.types import NeedKind, Role, TimeWindow, Urgency
from linli.partners.app import PartnersSettings
from linli.servicekit.auth import issue_credential
from linli.servicekit.db import migrate, service_migrations

from .common import drop_schema_and_streams
from .names import Names

SCHEDULING_SOURCE = "/linli/scheduling"


def partners_settings(
    names: Names, nats_url: str, database_url: str, **overrides: Any
) -> PartnersSettings:
    """Settings that isolate one test: own schema, streams and communities."""
    values: dict[str, Any] = {
        "service_name": "partners",
        "environment": "test",
        "db_schema": names.schema("partners"),
        "database_url": database_url,
        "nats_url": nats_url,
        "events_stream": names.stream("events"),
        "ingress_stream": names.stream("ingress"),
        "stream_communities": f"{names.community('home')},{names.community('other')}",
        "outbox_poll_interval_s": 0.2,
        "retry_base_delay_s": 0.1,
        "consumer_ack_wait_s": 5.0,
        "log_json": False,
        "intake_url": "http://intake.invalid",
        # Reward certificates' codes sealed as in production (ADR 0041).
        "secrets_key": Fernet.generate_key().decode(),
    }
    values.update(overrides)
    return PartnersSettings(**values)


@dataclass
class PartnersWorld:
    """Communities and credentials a test works with."""

    settings: PartnersSettings
    home: str
    other: str
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str = "operator") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self.settings.database_url.get_secret_value(),
            server_settings={"search_path": f"{self.settings.db_schema},public"},
        )

    async def issue(
        self,
        who: str,
        role: Role,
        communities: list[str],
        subject_id: uuid.UUID | str | None = None,
    ) -> dict[str, str]:
        """Issue a credential (as `credentials issue` would) and return its auth header."""
        conn = await self.connect()
        try:
            _, self.tokens[who] = await issue_credential(
                conn,
                role=role,
                communities=communities,
                label=who,
                subject_id=uuid.UUID(str(subject_id)) if subject_id else None,
            )
        finally:
            await conn.close()
        return self.auth(who)


async def prepare_world(settings: PartnersSettings, names: Names) -> PartnersWorld:
    """Migrate and issue operator credentials for two communities and an admin."""
    world = PartnersWorld(settings, names.community("home"), names.community("other"))
    conn = await world.connect()
    try:
        await migrate(conn, settings.db_schema, service_migrations("linli.partners", "partners"))
    finally:
        await conn.close()
    await world.issue("operator", Role.OPERATOR, [world.home])
    await world.issue("other_operator", Role.OPERATOR, [world.other])
    await world.issue("admin", Role.ADMIN, ["*"])
    return world


drop_world = drop_schema_and_streams


# --- request bodies ---------------------------------------------------------------------


def canteen_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "致远社区长者食堂",
        "kind": "canteen",
        "services": [
            {"name": "lunch round", "need_kind": "meal_delivery", "cost_option": "low_cost"}
        ],
        "contacts": [{"name": "ZZSTAFF 李经理", "title": "duty manager", "phone": "13900139000"}],
    }
    body.update(overrides)
    return body


def volunteer_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "display_name": "小张",
        "skills": ["meal_delivery", "elder_care_visit"],
        "availability": [{"weekday": 2, "start": "14:00", "end": "17:30"}],
    }
    body.update(overrides)
    return body


def window(hours_ahead: float = 1, length_h: float = 1.5) -> dict[str, str]:
    start = datetime.now(UTC) + timedelta(hours=hours_ahead)
    return {
        "earliest": start.isoformat(),
        "latest": (start + timedelta(hours=length_h)).isoformat(),
    }


# --- events as scheduling publishes them ------------------------------------------------


def offered(
    community: str,
    party: PartyRef,
    *,
    kind: NeedKind = NeedKind.MEAL_DELIVERY,
    need_id: uuid.UUID | None = None,
    expires_in: timedelta = timedelta(minutes=10),
) -> AssignmentOffered:
    """An `assignment.offered` for `party`, with details that fit `kind`."""
    details: dict[str, Any] = {
        NeedKind.MEAL_DELIVERY: {"diet_needs": ["soft food"], "portions": 1},
        NeedKind.ELDER_CARE_VISIT: {"purpose": "companionship", "duration_minutes": 60},
        NeedKind.REPAIR: {
            "category": "heating",
            "description": "burst radiator",
            "hazard": "water_leak",
        },
    }[kind]
    now = datetime.now(UTC)
    return AssignmentOffered.model_validate(
        {
            "assignment_id": uuid.uuid4(),
            "need_id": need_id or uuid.uuid4(),
            "slot_id": uuid.uuid4(),
            "offered_to": party,
            "kind": kind,
            "urgency": Urgency.ROUTINE,
            "window": TimeWindow(earliest=now, latest=now + timedelta(hours=2)),
            "details": details,
            "compound": "致远小区",
            "offered_at": now,
            "expires_at": now + expires_in,
        }
    )


def volunteer(vid: str | uuid.UUID) -> PartyRef:
    return PartyRef(kind=PartyKind.VOLUNTEER, id=uuid.UUID(str(vid)))


def partner(pid: str | uuid.UUID) -> PartyRef:
    return PartyRef(kind=PartyKind.PARTNER, id=uuid.UUID(str(pid)))


async def publish_event(
    js: JetStreamContext,
    data: BaseModel,
    community: str,
    *,
    event_id: str | None = None,
    msg_id: str | None = None,
    source: str = SCHEDULING_SOURCE,
) -> CloudEvent[Any]:
    """Publish event data onto the events stream as another service's relay would.

    `event_id` repeats an event; `msg_id` (default: the event id) lets a test get a
    second copy past JetStream's duplicate window, as a replay or a bug would.
    """
    event = new_event(data, community=community, source=source, id=event_id)
    body, headers = to_structured(event)
    subject = subject_for(lookup(event.type), community)
    await js.publish(subject, body, headers={**headers, "Nats-Msg-Id": msg_id or event.id})
    return event


async def emitted(
    js: JetStreamContext,
    stream: str,
    *,
    source: str = "/linli/partners",
    types: tuple[str, ...] = (),
    expect: int = 0,
    timeout: float = 10.0,
) -> list[CloudEvent[Any]]:
    """Events partners published on the stream (optionally of some short types, e.g.
    `meal.delivered`), once at least `expect` of them are there or `timeout` passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = []
        info = await js.stream_info(stream)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            with contextlib.suppress(Exception):
                msg = await js.get_msg(stream, seq)
                event = from_nats(msg.data or b"", msg.headers)
                short = lookup(event.type).short
                if event.source == source and (not types or short in types):
                    found.append(event)
        if len(found) >= expect or loop.time() > deadline:
            return found
        await asyncio.sleep(0.1)


async def eventually(probe: Any, *, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Await `probe()` until it returns something truthy (or the timeout passes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value or loop.time() > deadline:
            return value
        await asyncio.sleep(interval)
