"""The per-community Server-Sent Events stream, backed by JetStream replay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness.notifications import need_submitted, read_sse

pytestmark = [pytest.mark.integration]


async def test_resume_with_last_event_id_has_no_gaps_or_repeats(start_notifications: Any) -> None:
    async with start_notifications() as n:
        url = f"/v1/communities/{n.home}/events"
        start = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        published = []
        for index in range(6):
            published.append(await n.bus.publish(need_submitted(), n.home))
            if index % 2:
                await n.bus.publish(need_submitted(), n.other)

        # Read three events from the start, then disconnect.
        first = await read_sse(n.http, url, n.auth(), stop_after=3, params={"since": start})
        # More events while the client is away.
        for _ in range(3):
            published.append(await n.bus.publish(need_submitted(), n.home))
        resumed = await read_sse(
            n.http, url, {**n.auth(), "Last-Event-ID": first[-1]["id"]}, stop_after=6
        )
        frames = first + resumed
        assert [f["data"]["id"] for f in frames] == [e.id for e in published]
        ids = [int(f["id"]) for f in frames]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)
        assert all(f["event"] == "linli.need.submitted.v1" for f in frames)
        assert {f["data"]["community"] for f in frames} == {n.home}
        # The data is the structured CloudEvent exactly as stored in the stream.
        stored = await n.bus.js.get_msg(n.settings.events_stream, ids[0])
        assert frames[0]["raw"] == stored.data.decode()

        # New events only, when neither Last-Event-ID nor since is given.
        async def publish_soon() -> None:
            await asyncio.sleep(0.5)
            await n.bus.publish(need_submitted(), n.other)
            published.append(await n.bus.publish(need_submitted(), n.home))

        task = asyncio.create_task(publish_soon())
        (live,) = await read_sse(n.http, url, n.auth(), stop_after=1)
        await task
        assert live["data"]["id"] == published[-1].id


async def test_stream_scoping_and_heartbeat(start_notifications: Any) -> None:
    async with start_notifications() as n:
        url = f"/v1/communities/{n.home}/events"
        for who, code in (("other_app", 404), ("partner", 403)):
            response = await n.http.get(url, headers=n.auth(who))
            assert response.status_code == code
        response = await n.http.get(url)
        assert response.status_code == 401
        response = await n.http.get(url, headers={**n.auth(), "Last-Event-ID": "abc"})
        # The header's pattern is in the schema (digits): a field-level 422 (ADR 0047).
        assert response.status_code == 422
        assert response.json()["detail"][0]["field"] == "header.Last-Event-ID"

        # The other community's app follows its own stream and sees none of home's.
        await n.bus.publish(need_submitted(), n.home)
        theirs = await n.bus.publish(need_submitted(), n.other)
        since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        frames = await read_sse(
            n.http,
            f"/v1/communities/{n.other}/events",
            n.auth("other_app"),
            stop_after=1,
            params={"since": since},
        )
        assert [f["data"]["id"] for f in frames] == [theirs.id]

        # Heartbeats keep an idle connection alive (1 s in tests, 15 s by default).
        lines: list[str] = []

        async def listen() -> None:
            async with n.http.stream("GET", url, headers=n.auth("operator")) as response:
                async for line in response.aiter_lines():
                    lines.append(line)
                    if line == ": ping":
                        return

        await asyncio.wait_for(listen(), timeout=5)
        assert ": ping" in lines
