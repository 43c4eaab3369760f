"""`GET /v1/communities/{community}/events`: a resumable Server-Sent Events stream.

A module of its own beside the subscriptions API: it serves JetStream, not the
webhooks' tables, and needs no use case or store.

Backed by JetStream replay: each request opens an ephemeral ordered consumer on the
events stream filtered to `linli.events.<community>.>`, starting after `Last-Event-ID`
(the stream sequence, which is each frame's `id`), at `?since=` (a time), or with new
events only. The sequence is global to the stream, so a resumed stream has no gap and
no repeat; frames never go backwards (anything at or below the last sent id is skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import nats.errors
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from nats.js import api

from linli.contracts.subjects import community_events_filter
from linli.contracts.types import Moment, Role
from linli.notifications.errors import BadRequest
from linli.notifications.settings import NotificationsSettings
from linli.servicekit.auth import CurrentPrincipal
from linli.servicekit.consume import decode_envelope
from linli.servicekit.messaging import PoisonMessage
from linli.servicekit.runtime import ServiceRuntime

from .consumer import structured_body

router = APIRouter(tags=["streams"])


class OpenStreams:
    """The open streams of this process by credential, so that a revocation ends them.

    `close` also remembers the credentials, so a stream whose request was authenticated
    just before the revocation arrived ends as soon as it registers.
    """

    def __init__(self) -> None:
        self._open: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._closed: set[uuid.UUID] = set()

    def open(self, credential: uuid.UUID) -> asyncio.Event:
        ended = asyncio.Event()
        if credential in self._closed:
            ended.set()
        self._open.setdefault(credential, set()).add(ended)
        return ended

    def release(self, credential: uuid.UUID, ended: asyncio.Event) -> None:
        held = self._open.get(credential)
        if held is not None:
            held.discard(ended)
            if not held:
                del self._open[credential]

    def close(self, credentials: list[uuid.UUID]) -> int:
        """End every open stream of these credentials; how many."""
        count = 0
        for credential in credentials:
            self._closed.add(credential)
            for ended in self._open.get(credential, ()):
                ended.set()
                count += 1
        return count

    def count(self) -> int:
        return sum(len(v) for v in self._open.values())


READERS = (Role.SYSTEM, Role.ADMIN, Role.OPERATOR, Role.STREET_OFFICE)
"""Events to apps carry no personal data (ADR 0016, ADR 0031): a street office reads
its communities' streams too (ADR 0040)."""


def frame(seq: int, ce_type: str, body: bytes) -> bytes:
    """One SSE frame; `data` is the structured CloudEvent JSON as on the stream (one
    `data:` line per line of it, which an SSE client joins back with newlines)."""
    text = body.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    data = "".join(f"data: {line}\n" for line in text.split("\n"))
    return f"id: {seq}\nevent: {ce_type}\n{data}\n".encode()


def start_config(last_event_id: str | None, since: datetime | None) -> api.ConsumerConfig:
    """Where a stream starts: after `Last-Event-ID`, at `since`, or with new events."""
    if last_event_id is not None:
        try:
            seq = int(last_event_id)
        except ValueError as exc:
            raise BadRequest("Last-Event-ID must be a stream sequence") from exc
        if seq < 0:
            raise BadRequest("Last-Event-ID is negative")
        return api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq + 1
        )
    if since is not None:
        return api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_TIME,
            opt_start_time=since.astimezone(UTC),
        )
    return api.ConsumerConfig(deliver_policy=api.DeliverPolicy.NEW)


@router.get(
    "/v1/communities/{community}/events",
    summary="The community's events as Server-Sent Events (resumable)",
    response_class=StreamingResponse,
)
async def community_events(
    request: Request,
    community: str,
    principal: CurrentPrincipal,
    since: Annotated[Moment | None, Query(description="Start at this time (RFC 3339).")] = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=20, pattern=r"^[0-9]{1,19}$")
    ] = None,
) -> StreamingResponse:
    principal.require_community(community)
    principal.require_role(*READERS)
    if since is not None and since.tzinfo is None:
        raise BadRequest("since needs a time zone")
    runtime: ServiceRuntime = request.app.state.runtime
    settings: NotificationsSettings = runtime.settings  # type: ignore[assignment]
    config = start_config(last_event_id, since)
    subject = community_events_filter(community)
    sub = await runtime.js.subscribe(
        subject,
        stream=settings.events_stream,
        ordered_consumer=True,
        config=config,
        idle_heartbeat=5.0,
    )
    after = int(last_event_id) if last_event_id is not None else 0
    streams: OpenStreams = request.app.state.open_streams
    ended = streams.open(principal.credential_id)
    return StreamingResponse(
        _frames(request, sub, settings.sse_heartbeat_s, after, ended, principal.credential_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _frames(
    request: Request,
    sub: Any,
    heartbeat: float,
    after: int,
    ended: asyncio.Event,
    credential: uuid.UUID,
) -> AsyncIterator[bytes]:
    """Frames until the client goes or the credential is revoked (the stream then ends:
    a reconnect with the same token gets 401)."""
    last = after
    loop = asyncio.get_running_loop()
    next_ping = loop.time() + heartbeat
    try:
        yield b": connected\n\n"
        while not ended.is_set():
            wait = max(0.05, min(1.0, next_ping - loop.time()))
            try:
                msg = await sub.next_msg(timeout=wait)
            except nats.errors.TimeoutError:
                if await request.is_disconnected():
                    return
                if loop.time() >= next_ping:
                    yield b": ping\n\n"
                    next_ping = loop.time() + heartbeat
                continue
            seq = msg.metadata.sequence.stream
            if seq <= last:
                continue
            headers = dict(msg.headers or {})
            event = decode_envelope(msg.subject, msg.data, headers)
            last = seq
            if isinstance(event, PoisonMessage):
                continue  # what no consumer would take is not relayed either
            yield frame(seq, event.type, structured_body(msg.data, headers, event))
            next_ping = loop.time() + heartbeat
    finally:
        request.app.state.open_streams.release(credential, ended)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
