"""The whole lifecycle moves on LISTEN/NOTIFY wake-ups, not on polling.

Every other test polls the outbox, timers and webhook queues every 0.2 s, which would
hide a NOTIFY that never arrives. Here every poll interval is a minute (the most the
settings allow for the webhook worker), so each step below, which the test waits for
for at most 20 s, can only happen because the commit before it woke the loop that
carries it on: the relays of intake, partners and scheduling, and the webhook worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from harness.intake import meal_need
from harness.lifecycle import Lifecycle, now_iso, window

pytestmark = [pytest.mark.e2e]

MINUTE = "60"
STEP_S = 20.0  # a third of a poll interval


@contextlib.asynccontextmanager
async def hook_receiver() -> AsyncIterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.decode("latin-1").split("\r\n"):
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        received.append(json.loads(await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        server.close()


async def test_a_lunch_goes_through_on_wake_ups_alone(lifecycle) -> None:
    lc: Lifecycle = await lifecycle(
        notifications=True,
        env={
            "LINLI_OUTBOX_POLL_INTERVAL_S": MINUTE,
            "LINLI_TIMER_POLL_INTERVAL_S": MINUTE,
            "LINLI_DELIVERY_POLL_INTERVAL_S": MINUTE,
            "LINLI_PEOPLE_POLL_INTERVAL_S": MINUTE,
        },
    )
    async with hook_receiver() as (url, received):
        sub = await lc.http.post(
            lc.url("notifications", "/v1/subscriptions"),
            json={"url": url, "communities": [lc.home], "event_types": []},
            headers=lc.bearer(lc.app_token),
        )
        assert sub.status_code == 201, sub.text

        volunteer = await lc.create_volunteer("小刘 Xiao Liu", ["meal_delivery"])
        token = await lc.party_token("volunteer", volunteer)
        await lc.publish_slot("meal_delivery", window=window(20, 150), token=token)
        await lc.wait_slots(1, timeout=STEP_S)
        resident = await lc.create_resident(priority_group="elderly_living_alone")
        need_id = (await lc.submit_need(meal_need(resident, hours_ahead=1)))["id"]

        offer = await lc.wait_offer(token, need_id, timeout=STEP_S)
        lc.ok(await lc.answer(token, offer["assignment_id"], "accept"))
        await lc.wait_status(need_id, "assigned", timeout=STEP_S)
        report = {"outcome": "meal_delivered", "delivered_at": now_iso(), "handed_to": "resident"}
        lc.ok(await lc.report(token, offer["assignment_id"], report), 201)
        await lc.wait_status(need_id, "fulfilled", timeout=STEP_S)

        async def delivered() -> bool:
            return any(
                e["type"] == "linli.need.fulfilled.v1" and e["data"]["need_id"] == need_id
                for e in received
            )

        await lc.wait_for(delivered, STEP_S, what="the need.fulfilled webhook")
