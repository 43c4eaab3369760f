"""Notifications under test: the service served by uvicorn on 127.0.0.1 in the test's
event loop (so Server-Sent Events stream for real), webhook receivers as tiny Starlette
apps on 127.0.0.1, and events published straight onto the test's events stream the way
other services' outbox relays would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import nats
import uvicorn
from nats.js import JetStreamContext
from pydantic import BaseModel
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from linli.contracts.binding import to_structured
from linli.contracts.envelope import CloudEvent, new_event
from linli.contracts.events import NeedCancelled, NeedSubmitted
from linli.contracts.registry import lookup
from linli.contracts.subjects import subject_for
from linli.contracts.types import Role
from linli.notifications.settings import NotificationsSettings
from linli.notifications.webhooks.ssrf import system_resolver
from linli.servicekit.auth import issue_credential
from linli.servicekit.db import migrate, service_migrations
from linli.servicekit.messaging import provision_streams

from .common import consumer_settled, drop_schema_and_streams, wait_for
from .names import Names


def notifications_settings(
    names: Names, nats_url: str, database_url: str, **overrides: Any
) -> NotificationsSettings:
    """Settings that isolate one test: own schema, streams and two communities."""
    values: dict[str, Any] = {
        "service_name": "notifications",
        "environment": "test",
        "db_schema": names.schema("notifications"),
        "database_url": database_url,
        "nats_url": nats_url,
        "events_stream": names.stream("events"),
        "ingress_stream": names.stream("ingress"),
        "stream_communities": f"{names.community('home')},{names.community('other')}",
        "outbox_poll_interval_s": 0.2,
        "retry_base_delay_s": 0.1,
        "consumer_ack_wait_s": 5.0,
        "allow_insecure_endpoints": True,
        "webhook_timeout_s": 1.0,
        "retry_schedule_s": [0.3, 0.6, 1.0],
        "retry_jitter": 0.1,
        "delivery_poll_interval_s": 0.2,
        "sse_heartbeat_s": 1.0,
        "http_port": 0,
        "log_json": False,
    }
    values.update(overrides)
    return NotificationsSettings(**values)


async def prepare_schema(settings: NotificationsSettings) -> dict[str, str]:
    """Migrate and issue credentials (as the CLI would); returns tokens by name."""
    home, other = settings.communities_scope
    conn = await asyncpg.connect(
        settings.database_url.get_secret_value(),
        server_settings={"search_path": f"{settings.db_schema},public"},
    )
    tokens: dict[str, str] = {}
    try:
        await migrate(
            conn, settings.db_schema, service_migrations("linli.notifications", "notifications")
        )
        grants = {
            "app": (Role.SYSTEM, [home]),
            "app2": (Role.SYSTEM, [home]),
            "other_app": (Role.SYSTEM, [other]),
            "admin": (Role.ADMIN, ["*"]),
            "operator": (Role.OPERATOR, [home]),
            "partner": (Role.PARTNER, [home]),
        }
        for key, (role, communities) in grants.items():
            _, tokens[key] = await issue_credential(
                conn, role=role, communities=communities, label=key
            )
    finally:
        await conn.close()
    return tokens


drop_all = drop_schema_and_streams


@contextlib.asynccontextmanager
async def serve(app: Any, *, lifespan: str = "off") -> AsyncIterator[str]:
    """Serve an ASGI app on 127.0.0.1 (a free port) in this event loop; yields its URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan=lifespan,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    # _serve, not serve: no signal handlers are installed in the test process.
    task = asyncio.create_task(server._serve())
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped while starting")
        if time.monotonic() > deadline:
            raise TimeoutError("server did not start")
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, timeout=10)


# --- webhook receivers -----------------------------------------------------------

Behaviour = Callable[[int], Awaitable[Response]]


async def ok(_n: int) -> Response:
    return Response(status_code=204)


def status_then_ok(status: int, failures: int, headers: dict[str, str] | None = None) -> Behaviour:
    """Answer `status` to the first `failures` attempts of each event, then 204."""

    async def respond(n: int) -> Response:
        if n <= failures:
            return Response(status_code=status, headers=headers or {})
        return Response(status_code=204)

    return respond


def always(status: int) -> Behaviour:
    async def respond(_n: int) -> Response:
        return Response(status_code=status)

    return respond


def hang(seconds: float, *, then_ok_after: int | None = None) -> Behaviour:
    """Sleep (longer than the webhook timeout) before answering."""

    async def respond(n: int) -> Response:
        if then_ok_after is not None and n > then_ok_after:
            return Response(status_code=204)
        await asyncio.sleep(seconds)
        return Response(status_code=204)

    return respond


@dataclass
class Received:
    """One request a receiver got, with its verification result."""

    at: float
    headers: dict[str, str]
    body: bytes
    verified: bool
    event: dict[str, Any] | None


@dataclass
class Receiver:
    """A webhook receiver that verifies every request with `standardwebhooks`."""

    secret: str = ""
    behaviour: Behaviour = ok
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def app(self) -> Starlette:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            headers = {k.lower(): v for k, v in request.headers.items()}
            verified = False
            event = None
            if self.secret:
                try:
                    Webhook(self.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
            with contextlib.suppress(ValueError):
                event = json.loads(body)
            self.received.append(Received(time.monotonic(), headers, body, verified, event))
            # Behaviours count the attempts of one event (one webhook-id).
            same = sum(
                1 for r in self.received if r.headers.get("webhook-id") == headers.get("webhook-id")
            )
            return await self.behaviour(same)

        return Starlette(routes=[Route("/hook", endpoint, methods=["POST"])])

    def event_ids(self) -> list[str]:
        return [r.event["id"] for r in self.received if r.event]

    async def wait_event(self, event_id: str, count: int, *, timeout: float = 10.0) -> None:
        """Wait until one event arrived `count` times (attempts)."""
        deadline = time.monotonic() + timeout
        while self.event_ids().count(event_id) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"event arrived {self.event_ids().count(event_id)} times")
            await asyncio.sleep(0.02)

    async def wait(self, count: int, *, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"receiver got {len(self.received)} requests, expected {count}"
                )
            await asyncio.sleep(0.02)
        return self.received


@contextlib.asynccontextmanager
async def receiver(behaviour: Behaviour = ok) -> AsyncIterator[Receiver]:
    r = Receiver(behaviour=behaviour)
    async with serve(r.app()) as base:
        r.url = f"{base}/hook"
        yield r


HOSTILE_BODY_LIMIT = 128 * 1024 * 1024


@dataclass
class Hostile:
    """A raw TCP webhook receiver on 127.0.0.1 that never finishes its answer.

    `trickle_headers`: a status line, then one header byte per `interval` forever.
    `trickle_body`: complete headers announcing a large body, then one byte per
    `interval`. `endless_body`: complete headers, then body bytes as fast as the client
    takes them (up to HOSTILE_BODY_LIMIT, so a client that reads everything stays
    bounded here), then silence. Every loop is bounded; the connection ends when the
    client closes it.
    """

    mode: str
    interval: float = 1.0
    url: str = ""
    connections: int = 0
    open: int = 0
    sent: int = 0
    closed: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # A small send buffer: what was sent is close to what the client read.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        self.connections += 1
        self.open += 1
        self._changed.set()
        gone: asyncio.Task[None] | None = None
        try:
            await reader.readuntil(b"\r\n\r\n")
            # From here on, the rest of the request and then EOF: the client hung up.
            gone = asyncio.create_task(self._until_eof(reader))
            await self._answer(writer, gone)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(gone), timeout=120)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            if gone is not None:
                gone.cancel()
            writer.close()
            self.open -= 1
            self.closed += 1
            self._changed.set()

    async def _until_eof(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent += len(data)

    async def _answer(self, writer: asyncio.StreamWriter, gone: asyncio.Task[None]) -> None:
        if self.mode == "trickle_headers":
            await self._write(writer, b"HTTP/1.1 200 OK\r\nX-Trickle: ")
        else:
            length = 1 << 40
            await self._write(
                writer, f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode()
            )
        if self.mode == "endless_body":
            chunk = b"x" * 65536
            while self.sent < HOSTILE_BODY_LIMIT and not gone.done():
                await self._write(writer, chunk)
            return
        for _ in range(600):  # ten minutes at one byte a second, at most
            if gone.done():
                return
            await self._write(writer, b"a")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(gone), timeout=self.interval)

    async def wait(self, predicate: Callable[[Hostile], bool], *, timeout: float = 30.0) -> None:
        """Wait until `predicate(self)` holds (a connection opened or closed)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"hostile receiver: {self}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.5))


@contextlib.asynccontextmanager
async def hostile(mode: str, *, interval: float = 1.0) -> AsyncIterator[Hostile]:
    h = Hostile(mode, interval)
    server = await asyncio.start_server(h.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    h.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield h
    finally:
        server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=5)


# --- publishing events -----------------------------------------------------------


@dataclass
class Bus:
    """Publishes onto the test's events stream as another service's relay would."""

    js: JetStreamContext

    async def publish(self, data: BaseModel, community: str) -> CloudEvent[Any]:
        event = new_event(data, community=community, source="/test")
        body, headers = to_structured(event)
        await self.js.publish(
            subject_for(lookup(event.type), community),
            body,
            headers={**headers, "Nats-Msg-Id": event.id},
        )
        return event


@contextlib.asynccontextmanager
async def bus_for(settings: NotificationsSettings, nats_url: str) -> AsyncIterator[Bus]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await provision_streams(js, settings)
        yield Bus(js)
    finally:
        await nc.close()


async def read_sse(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    *,
    stop_after: int,
    timeout: float = 10.0,
    params: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Read frames until `stop_after` events arrived, then disconnect."""
    frames: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    data: list[str] = []

    async def consume() -> None:
        nonlocal current, data
        async with client.stream("GET", url, headers=headers, params=params) as response:
            assert response.status_code == 200, await response.aread()
            async for line in response.aiter_lines():
                if line == "":
                    if data:
                        current["raw"] = "\n".join(data)
                        current["data"] = json.loads(current["raw"])
                        frames.append(current)
                        if len(frames) >= stop_after:
                            return
                    current, data = {}, []
                elif line.startswith(":"):
                    continue
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "data":
                        data.append(value)
                    else:
                        current[name] = value

    await asyncio.wait_for(consume(), timeout=timeout)
    return frames


@dataclass
class FakeDns:
    """A resolver the test controls: names it knows, else the system resolver."""

    answers: dict[str, list[str]] = field(default_factory=dict)

    async def __call__(self, host: str, port: int) -> list[str]:
        if host in self.answers:
            return self.answers[host]
        return await system_resolver(host, port)


@dataclass
class Notifications:
    """A served notifications process with the test's bus, an HTTP client and a pool."""

    settings: NotificationsSettings
    bus: Bus
    http: httpx.AsyncClient
    pool: asyncpg.Pool
    tokens: dict[str, str]
    dns: FakeDns

    @property
    def home(self) -> str:
        return self.settings.communities_scope[0]

    @property
    def other(self) -> str:
        return self.settings.communities_scope[1]

    def auth(self, who: str = "app") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def settled(self) -> None:
        """Every event so far has been turned into deliveries, and every delivery to an
        active subscription has reached a final state (delivered or failed): nothing more
        will be sent for them (a paused or disabled subscription's are held)."""
        await consumer_settled(self.bus.js, self.settings.events_stream, "notifications")

        async def final() -> bool:
            pending = await self.pool.fetchval(
                "SELECT count(*) FROM deliveries d JOIN subscriptions s "
                "ON s.id = d.subscription_id WHERE d.state = 'pending' AND s.state = 'active'"
            )
            return pending == 0

        await wait_for(final, what="every delivery to be final")

    async def subscribe(self, who: str = "app", **body: Any) -> dict[str, Any]:
        body.setdefault("communities", [self.home])
        response = await self.http.post("/v1/subscriptions", json=body, headers=self.auth(who))
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def attempts(self, sub_id: str, who: str = "app") -> list[dict[str, Any]]:
        response = await self.http.get(
            f"/v1/subscriptions/{sub_id}/attempts", headers=self.auth(who)
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return list(reversed(items))


def need_submitted(kind: str = "meal_delivery") -> NeedSubmitted:
    details = {
        "meal_delivery": {"diet_needs": ["soft food"], "portions": 1},
        "repair": {"category": "heating", "description": "burst radiator", "hazard": "water_leak"},
    }[kind]
    start = datetime.now(UTC) + timedelta(minutes=30)
    return NeedSubmitted.model_validate(
        {
            "need_id": uuid.uuid4(),
            "resident_id": uuid.uuid4(),
            "kind": kind,
            "urgency": "routine",
            "window": {"earliest": start, "latest": start + timedelta(hours=2)},
            "details": details,
            "priority_group": "elderly_living_alone",
            "compound": "致远小区",
            "submitted_at": datetime.now(UTC),
        }
    )


def need_cancelled(need_id: uuid.UUID) -> NeedCancelled:
    return NeedCancelled.model_validate(
        {
            "need_id": need_id,
            "reason": "family cooked",
            "cancelled_by_role": "operator",
            "cancelled_at": datetime.now(UTC),
        }
    )
