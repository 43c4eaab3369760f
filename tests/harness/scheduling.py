"""Scheduling under test: in-process (ASGI) or as subprocesses, on real NATS and PostgreSQL.

Other services are played by the test: it publishes their events (need.submitted,
slot.published, answers, completions) straight onto the events stream, the way their
outbox relays would, and reads back what scheduling emitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from pydantic import BaseModel

from linli.contracts.binding import from_nats, to_structured
from linli.contracts.envelope import CloudEvent, new_event
from linli.contracts.events import (
    NeedSubmitted,
    OfferLapsed,
    PartyKind,
    PartyRef,
    SlotPublished,
)
from linli.contracts.registry import lookup
from linli.contracts.subjects import subject_for
from linli.contracts.types import Role
from linli.scheduling.app import SchedulingSettings
from linli.servicekit.auth import issue_credential
from linli.servicekit.db import migrate, service_migrations
from linli.servicekit.messaging import provision_streams

from .common import drop_schema_and_streams
from .names import Names


def scheduling_settings(
    names: Names, nats_url: str, database_url: str, **overrides: Any
) -> SchedulingSettings:
    """Settings that isolate one test: own schema, streams and community.

    One community, so the service runs the single durable `scheduling`, as in
    production.
    """
    values: dict[str, Any] = {
        "service_name": "scheduling",
        "environment": "test",
        "db_schema": names.schema("scheduling"),
        "database_url": database_url,
        "nats_url": nats_url,
        "events_stream": names.stream("events"),
        "ingress_stream": names.stream("ingress"),
        "stream_communities": names.community("home"),
        "outbox_poll_interval_s": 0.2,
        "retry_base_delay_s": 0.1,
        "consumer_ack_wait_s": 5.0,
        "timer_poll_interval_s": 0.2,
        "rematch_delay_s": 0.2,
        "log_json": False,
    }
    values.update(overrides)
    return SchedulingSettings(**values)


def settings_env(settings: SchedulingSettings) -> dict[str, str]:
    """The same settings as LINLI_* variables, for a subprocess."""
    env = {}
    for key, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"LINLI_{key.upper()}"] = str(value.value if hasattr(value, "value") else value)
    return env


async def prepare_schema(settings: SchedulingSettings, community: str) -> dict[str, str]:
    """Migrate and issue credentials (as the CLI would); returns tokens by name."""
    conn = await asyncpg.connect(
        settings.database_url.get_secret_value(),
        server_settings={"search_path": f"{settings.db_schema},public"},
    )
    tokens: dict[str, str] = {}
    try:
        await migrate(
            conn, settings.db_schema, service_migrations("linli.scheduling", "scheduling")
        )
        grants = {
            "operator": (Role.OPERATOR, [community]),
            "other_operator": (Role.OPERATOR, ["c-elsewhere"]),
            "partner": (Role.PARTNER, [community]),
        }
        for key, (role, communities) in grants.items():
            _, tokens[key] = await issue_credential(
                conn, role=role, communities=communities, label=key
            )
    finally:
        await conn.close()
    return tokens


drop_all = drop_schema_and_streams


# --- events as other services would publish them -------------------------------


def party(kind: str = "partner") -> PartyRef:
    return PartyRef(kind=PartyKind(kind), id=uuid.uuid4())


def window(start_in_min: float = 60, minutes: float = 90) -> dict[str, datetime]:
    start = datetime.now(UTC) + timedelta(minutes=start_in_min)
    return {"earliest": start, "latest": start + timedelta(minutes=minutes)}


def slot_published(
    provider: PartyRef,
    *,
    kind: str = "meal_delivery",
    capacity: int = 1,
    start_in_min: float = 0,
    minutes: float = 240,
    compounds: list[str] | None = None,
) -> SlotPublished:
    return SlotPublished.model_validate(
        {
            "slot_id": uuid.uuid4(),
            "kind": kind,
            "provider": provider,
            "window": window(start_in_min, minutes),
            "capacity": capacity,
            "compounds": compounds or [],
            "published_at": datetime.now(UTC),
        }
    )


_DETAILS = {
    "meal_delivery": {"diet_needs": ["soft food"], "portions": 1},
    "elder_care_visit": {"purpose": "companionship", "duration_minutes": 60},
    "repair": {"category": "heating", "description": "burst radiator", "hazard": "water_leak"},
}


def need_submitted(
    *,
    kind: str = "meal_delivery",
    urgency: str = "routine",
    priority_group: str = "elderly_living_alone",
    start_in_min: float = 30,
    minutes: float = 120,
    compound: str | None = "致远小区",
    submitted_at: datetime | None = None,
) -> NeedSubmitted:
    return NeedSubmitted.model_validate(
        {
            "need_id": uuid.uuid4(),
            "resident_id": uuid.uuid4(),
            "kind": kind,
            "urgency": urgency,
            "window": window(start_in_min, minutes),
            "details": _DETAILS[kind],
            "priority_group": priority_group,
            "compound": compound,
            "submitted_at": submitted_at or datetime.now(UTC),
        }
    )


def lapsed(offered: CloudEvent[dict[str, Any]], at: datetime | None = None) -> OfferLapsed:
    """Partners' verdict that an `assignment.offered` went unanswered (ADR 0026)."""
    data = offered.data or {}
    expires_at = datetime.fromisoformat(data["expires_at"])
    return OfferLapsed.model_validate(
        {
            "assignment_id": data["assignment_id"],
            "need_id": data["need_id"],
            "slot_id": data["slot_id"],
            "offered_to": data["offered_to"],
            "expires_at": expires_at,
            "lapsed_at": max(at or datetime.now(UTC), expires_at),
        }
    )


@dataclass
class Bus:
    """Publishes onto and reads back from one test's events stream."""

    js: JetStreamContext
    stream: str
    community: str
    _seen: int = 0
    events: list[CloudEvent[dict[str, Any]]] = field(default_factory=list)
    _reading: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def publish(
        self,
        data: BaseModel,
        *,
        event: CloudEvent[Any] | None = None,
        msg_id: str | None = None,
    ) -> CloudEvent[Any]:
        """Publish as the owning service's relay would (Nats-Msg-Id = event id)."""
        event = event or new_event(data, community=self.community, source="/test")
        body, headers = to_structured(event)
        await self.js.publish(
            subject_for(lookup(event.type), self.community),
            body,
            headers={**headers, "Nats-Msg-Id": msg_id or event.id},
        )
        return event

    @contextlib.asynccontextmanager
    async def nobody_answers(self, *, limit: int = 1000) -> Any:
        """Play partners' lapse sweep: every offer scheduling makes while this runs lapses
        (`offer.lapsed`) once its expiry has come, as it does when no party answers."""

        async def sweep() -> None:
            done: set[str] = set()
            while len(done) < limit:
                await self.refresh()
                now = datetime.now(UTC)
                for offered in self.emitted("assignment.offered"):
                    due = datetime.fromisoformat(offered.data["expires_at"])
                    if offered.id not in done and due <= now:
                        done.add(offered.id)
                        await self.publish(lapsed(offered, now))
                await asyncio.sleep(0.05)

        task = asyncio.create_task(sweep())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def refresh(self) -> list[CloudEvent[dict[str, Any]]]:
        """Read every message appended since the last call (one reader at a time)."""
        async with self._reading:
            info = await self.js.stream_info(self.stream)
            first = max(self._seen + 1, info.state.first_seq)
            for seq in range(first, info.state.last_seq + 1):
                msg = await self.js.get_msg(self.stream, seq)
                self.events.append(from_nats(msg.data or b"", dict(msg.headers or {})))
                self._seen = seq
        return self.events

    def emitted(self, short: str, **match: Any) -> list[CloudEvent[dict[str, Any]]]:
        """Scheduling's events of one type (e.g. "slot.reserved") whose data matches."""
        wanted = f"linli.{short}.v1"
        return [
            e
            for e in self.events
            if e.type == wanted
            and e.source == "/linli/scheduling"
            and all(str(e.data.get(k)) == str(v) for k, v in match.items())
        ]

    async def wait(
        self,
        short: str,
        count: int = 1,
        *,
        timeout: float = 10.0,
        **match: Any,
    ) -> list[CloudEvent[dict[str, Any]]]:
        """Wait until at least `count` events of a type (matching `match`) were emitted."""
        return await self.wait_until(
            lambda: len(self.emitted(short, **match)) >= count,
            timeout=timeout,
            what=f"{count} x {short} {match}",
            result=lambda: self.emitted(short, **match),
        )

    async def wait_until(
        self,
        done: Callable[[], bool],
        *,
        timeout: float = 10.0,
        what: str = "condition",
        result: Callable[[], Any] | None = None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await self.refresh()
            if done():
                return result() if result else None
            if loop.time() > deadline:
                seen = [(e.type, e.data.get("need_id")) for e in self.events[-20:]]
                raise AssertionError(f"timed out waiting for {what}; last events: {seen}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def bus_for(settings: SchedulingSettings, nats_url: str) -> Any:
    """A NATS client with the test's streams provisioned and a Bus on them."""
    nc: NatsClient = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await provision_streams(js, settings)
        yield Bus(js, settings.events_stream, settings.communities_scope[0])
    finally:
        await nc.close()


async def wait_for_db(
    pool: asyncpg.Pool, sql: str, expected: Any, *args: Any, timeout: float = 10.0
) -> Any:
    """Poll a query until it returns `expected`; returns the last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await pool.fetchval(sql, *args)
        if value == expected or loop.time() > deadline:
            return value
        await asyncio.sleep(0.05)
