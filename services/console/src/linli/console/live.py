"""`GET /c/{community}/live`: the live page's Server-Sent Events, relayed from
notifications (ADR 0036).

Each browser connection is served by the replica it reached, which opens notifications'
community stream with the staff member's credential (resuming after the browser's
`Last-Event-ID`, the stream sequence) and answers with HTML fragments that htmx swaps in
out of band: the panels re-read from the services, and one line per event in the feed.
No state is shared between replicas and nothing is kept between connections: a
reconnect re-reads every panel, so nothing is missed whichever replica serves it.

Events arrive in bursts: what is waiting is taken together and the panels are read once.
An event scheduling did not emit (intake's, partners') may reach the stream before
scheduling has applied it, so the panels are read once more `live_settle_s` later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from . import pages, store, views
from .accounts import Session
from .upstream import SseFrame, UpstreamFailed, UpstreamNotFound
from .web import Console, SessionDep, console_of

router = APIRouter(include_in_schema=False)

HEARTBEAT_S = 15.0
BATCH = 200
"""Most events folded into one update."""
RETRY_MS = 5000
_END = object()


def sse(event: str, html: str, frame_id: str | None = None) -> bytes:
    """One SSE frame carrying HTML (one `data:` line per line)."""
    lines = [f"event: {event}"]
    if frame_id is not None:
        lines.append(f"id: {frame_id}")
    lines += [f"data: {line}" for line in html.replace("\r", "").split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


@router.get("/c/{community}/live")
async def live(request: Request, community: str, session: SessionDep) -> Response:
    if session is None:
        return Response(status_code=401)
    pages.require_community(session.staff, community)
    console = console_of(request)
    last_event_id = request.headers.get("last-event-id")
    if last_event_id is not None and not last_event_id.isdigit():
        last_event_id = None
    return StreamingResponse(
        _relay(request, console, session, community, last_event_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _relay(
    request: Request,
    console: Console,
    session: Session,
    community: str,
    last_event_id: str | None,
) -> AsyncIterator[bytes]:
    settings = console.settings
    loop = asyncio.get_running_loop()
    try:
        async with console.upstream.events(
            community, session.staff.service_token, last_event_id
        ) as frames:
            queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=10 * BATCH)
            reader = asyncio.create_task(_pump(frames, queue))
            try:
                # Upstream is subscribed now: whatever happens from here on is relayed.
                yield f"retry: {RETRY_MS}\n\n".encode()
                yield sse("update", await _panels(console, session, community))
                settle_at: float | None = None
                next_check = loop.time() + HEARTBEAT_S
                while True:
                    wait = min(next_check, settle_at or next_check) - loop.time()
                    try:
                        first = await asyncio.wait_for(queue.get(), max(0.05, wait))
                    except TimeoutError:
                        if settle_at is not None and loop.time() >= settle_at:
                            settle_at = None
                            yield sse("update", await _panels(console, session, community))
                        if loop.time() >= next_check:
                            if not await _still_signed_in(console, session):
                                return
                            yield b": ping\n\n"
                            next_check = loop.time() + HEARTBEAT_S
                        continue
                    if first is _END:
                        return
                    batch = [first]
                    while len(batch) < BATCH and not queue.empty():
                        item = queue.get_nowait()
                        if item is _END:
                            queue.put_nowait(_END)
                            break
                        batch.append(item)
                    events = [e for e in (_event(f) for f in batch) if e is not None]
                    feed = console.fragment(
                        "_events.html", session.locale, community=community, events=events
                    )
                    panels = await _panels(console, session, community)
                    if any(not views.from_scheduling(e["type"]) for e in events):
                        settle_at = loop.time() + settings.live_settle_s
                    yield sse("update", feed + "\n" + panels, batch[-1].id)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
    except (UpstreamFailed, UpstreamNotFound):
        # Notifications is away or refused: the browser tries again after RETRY_MS.
        yield f"retry: {RETRY_MS}\n\n".encode()


async def _pump(frames: AsyncIterator[SseFrame], queue: asyncio.Queue[Any]) -> None:
    try:
        async for frame in frames:
            await queue.put(frame)
    finally:
        await queue.put(_END)


def _event(frame: SseFrame) -> dict[str, Any] | None:
    """What the feed shows of an event: its type, time and need (no data fields)."""
    try:
        body = json.loads(frame.data)
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        return None
    try:
        at = datetime.fromisoformat(body.get("time") or "")
    except ValueError:
        at = None
    return {
        "type": body["type"],
        "short": views.short_type(body["type"]),
        "at": at,
        "need_id": views.event_need_id(body),
        "seq": frame.id,
    }


async def _panels(console: Console, session: Session, community: str) -> str:
    try:
        view = await pages.community_view(
            console.upstream, session.staff, community, console.zone, session.locale
        )
    except UpstreamFailed:
        return ""  # the panels stay as they are; the next event or reconnect re-reads
    return console.fragment(
        "_panels.html",
        session.locale,
        view=view,
        community=community,
        oob=True,
        staff=session.staff,
        csrf=session.csrf_token,
    )


async def _still_signed_in(console: Console, session: Session) -> bool:
    async with console.runtime.pool.acquire() as conn:
        return await store.session_alive(conn, session.id_sha256, console.settings.session_idle_s)
