"""Messages to people under test: an in-process app on real NATS, PostgreSQL and SMTP.

The test builds a tiny FastAPI app with a `ServiceRuntime` and calls
`linli.notifications.app.wire_messages(runtime, settings, app)`, as the notifications
composition root does (without the webhooks part or its tables). Other services are
played by the test, which publishes their events onto the test's own events stream.
E-mail goes to a real SMTP server (`aiosmtpd`) on 127.0.0.1 and a free port; SMS to a
file.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import socket
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from nats.js import JetStreamContext
from pydantic import BaseModel

from linli.contracts.binding import from_nats, to_structured
from linli.contracts.envelope import CloudEvent, new_event
from linli.contracts.registry import lookup
from linli.contracts.subjects import subject_for
from linli.contracts.types import Role
from linli.notifications.app import Messages, wire_messages
from linli.notifications.settings import NotificationsSettings
from linli.servicekit.auth import issue_credential
from linli.servicekit.db import Migration, create_pool, load_migrations, migrate
from linli.servicekit.http import create_http_app
from linli.servicekit.messaging import provision_streams
from linli.servicekit.runtime import ServiceRuntime

from .common import drop_schema_and_streams
from .names import Names


def people_migrations() -> list[Migration]:
    """Servicekit's tables, 0002_people and 0006_partner_contacts (ADR 0043) only: the
    people part needs no other table."""
    people = ("notifications:0002_people", "notifications:0006_partner_contacts")
    ours = [
        m for m in load_migrations("linli.notifications", "notifications") if m.version in people
    ]
    assert ours, "0002_people.sql not found"
    return load_migrations("linli.servicekit", "servicekit") + ours


def service_settings(
    names: Names, nats_url: str, database_url: str, **overrides: Any
) -> NotificationsSettings:
    values: dict[str, Any] = {
        "service_name": "notifications",
        "environment": "test",
        "db_schema": names.schema("people"),
        "database_url": database_url,
        "nats_url": nats_url,
        "events_stream": names.stream("events"),
        "ingress_stream": names.stream("ingress"),
        "stream_communities": names.community("home"),
        "outbox_poll_interval_s": 0.2,
        "retry_base_delay_s": 0.1,
        "consumer_ack_wait_s": 5.0,
        "log_json": False,
    }
    values.update(overrides)
    return NotificationsSettings(**values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mail:
    to: list[str]
    subject: str
    body: str
    language: str | None


class SmtpSink:
    """An aiosmtpd handler that keeps every message; RCPT `busy@...` gets a 451, and a
    message to `slow@...` takes `slow_s` to accept (`slow_started` is set when it begins)."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.slow_s = 1.5
        self.slow_started = threading.Event()  # set in the SMTP thread

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.startswith("busy@"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if any(r.startswith("slow@") for r in envelope.rcpt_tos):
            self.slow_started.set()
            await asyncio.sleep(self.slow_s)
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        body_part = parsed.get_body(preferencelist=("plain",))
        body = body_part.get_content() if body_part is not None else ""
        self.mails.append(
            Mail(
                to=list(envelope.rcpt_tos),
                subject=str(parsed["Subject"]),
                body=str(body).strip(),
                language=parsed["Content-Language"],
            )
        )
        return "250 Message accepted"

    def to(self, address: str) -> list[Mail]:
        return [m for m in self.mails if address in m.to]


@contextlib.contextmanager
def smtp_server() -> Any:
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield sink, controller.port
    finally:
        controller.stop()


@dataclass
class PeopleStack:
    """One test's service: HTTP client, event publisher, pool, SMTP sink, SMS file."""

    settings: NotificationsSettings
    people: Messages
    http: httpx.AsyncClient
    js: JetStreamContext
    pool: asyncpg.Pool
    smtp: SmtpSink
    sms_file: Path
    tokens: dict[str, str]
    runtime: ServiceRuntime
    published: list[CloudEvent[Any]] = field(default_factory=list)

    @property
    def community(self) -> str:
        return self.settings.communities_scope[0]

    def auth(self, who: str = "operator") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def add_recipient(self, **body: Any) -> dict[str, Any]:
        response = await self.http.post(
            f"/v1/communities/{self.community}/recipients", json=body, headers=self.auth()
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def publish(
        self, data: BaseModel, *, event: CloudEvent[Any] | None = None
    ) -> CloudEvent[Any]:
        """Publish as the owning service's outbox relay would (Nats-Msg-Id = event id)."""
        event = event or new_event(data, community=self.community, source="/test")
        body, headers = to_structured(event)
        await self.js.publish(
            subject_for(lookup(event.type), self.community),
            body,
            headers={**headers, "Nats-Msg-Id": event.id},
        )
        self.published.append(event)
        return event

    async def redeliver(self, event: CloudEvent[Any]) -> None:
        """The same event again under a fresh Nats-Msg-Id (past the duplicate window)."""
        body, headers = to_structured(event)
        await self.js.publish(
            subject_for(lookup(event.type), self.community),
            body,
            headers={**headers, "Nats-Msg-Id": f"{event.id}:again"},
        )

    def sms(self) -> list[dict[str, Any]]:
        if not self.sms_file.exists():
            return []
        return [json.loads(line) for line in self.sms_file.read_text("utf-8").splitlines()]

    async def events_of(self, short: str) -> list[CloudEvent[dict[str, Any]]]:
        info = await self.js.stream_info(self.settings.events_stream)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await self.js.get_msg(self.settings.events_stream, seq)
            event = from_nats(msg.data or b"", dict(msg.headers or {}))
            if event.type == f"linli.{short}.v1":
                found.append(event)
        return found

    async def messages(self, event_id: str) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT * FROM people_messages WHERE event_id = $1 ORDER BY created_at", event_id
        )
        return rows


async def _prepare(settings: NotificationsSettings) -> dict[str, str]:
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    tokens: dict[str, str] = {}
    try:
        await migrate(conn, settings.db_schema, people_migrations())
        await conn.execute(f'SET search_path TO "{settings.db_schema}", public')
        grants = {
            "operator": (Role.OPERATOR, [settings.communities_scope[0]]),
            "other_operator": (Role.OPERATOR, ["c-elsewhere"]),
            "partner": (Role.PARTNER, [settings.communities_scope[0]]),
        }
        for key, (role, communities) in grants.items():
            _, tokens[key] = await issue_credential(
                conn, role=role, communities=communities, label=key
            )
    finally:
        await conn.close()
    return tokens


_drop = drop_schema_and_streams


@contextlib.asynccontextmanager
async def people_stack(
    names: Names,
    nats_url: str,
    database_url: str,
    tmp_path: Path,
    **people_overrides: Any,
) -> AsyncIterator[PeopleStack]:
    """Start the people part of notifications for one test and clean up after it."""
    base = service_settings(names, nats_url, database_url)
    try:
        tokens = await _prepare(base)
        with smtp_server() as (sink, port):
            sms_file = tmp_path / "sms.jsonl"
            values: dict[str, Any] = {
                "email_provider": "smtp",
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "smtp_from": "Linli <noreply@linli.test>",
                "sms_provider": "file",
                "sms_file": str(sms_file),
                "people_poll_interval_s": 0.2,
                "people_retry_base_s": 0.1,
                "people_retry_max_s": 0.5,
                "people_max_attempts": 3,
                "smtp_timeout_s": 5.0,
            }
            values.update(people_overrides)
            settings = service_settings(names, nats_url, database_url, **values)
            runtime = ServiceRuntime(settings, people_migrations())
            app: FastAPI = create_http_app(
                runtime, title="people under test", description="messages to people"
            )
            people = wire_messages(runtime, settings, app)
            nc = await nats.connect(nats_url)
            pool = await create_pool(database_url, settings.db_schema, min_size=1, max_size=4)
            try:
                js = nc.jetstream()
                await provision_streams(js, settings)
                async with (
                    app.router.lifespan_context(app),
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app), base_url="http://people.test"
                    ) as http,
                ):
                    yield PeopleStack(
                        settings, people, http, js, pool, sink, sms_file, tokens, runtime
                    )
            finally:
                await pool.close()
                await nc.close()
    finally:
        await _drop(base, nats_url)


# --- events as other services would publish them -----------------------------


def party(kind: str = "partner") -> dict[str, Any]:
    return {"kind": kind, "id": uuid.uuid4()}


def now() -> datetime:
    return datetime.now(UTC)


def in_minutes(minutes: float) -> datetime:
    return now() + timedelta(minutes=minutes)
