"""PostgreSQL stopped hard for longer than a message's retries last (RELIABILITY.md row 3).

Intake runs with the default `max_deliver` (8), the retry delays of the defaults divided
by ten (0.05 s doubling, capped at 6 s) and `ack_wait` 0.5 s (30 s by default). The
server paces the redeliveries of a consumer that has a `backoff` by that backoff rather
than by the nak's delay (measured here: deliveries 3, 4, 5 came 5, 15 and 35 s apart with
`ack_wait` 5 s), so a message whose every delivery failed was given up after about 60 s
here (about 32 minutes with the defaults). The outage below lasts 75 s while commands
(ingress, through FastStream and `Deliveries.process`) and lifecycle events (the events
stream, through `EventConsumer`) keep arriving; meanwhile the API answers 503 with a
JSON body. Once PostgreSQL is back every command becomes exactly one need and one
`need.submitted`, every lifecycle event adds exactly one timeline entry, and there is no
dead letter: an outage delays work, it never loses it (ADR 0006, ADR 0027).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from harness.common import wait_for
from harness.intake import (
    cloudevent,
    drop_world,
    dumps,
    intake_settings,
    meal_need,
    prepare_world,
    resident_body,
)

from linli.contracts.binding import to_structured
from linli.contracts.envelope import new_event
from linli.contracts.events import SlotReserved
from linli.intake.app import build_app

pytestmark = [
    pytest.mark.fault,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(240),
]

RETRY_BASE_S = 0.05  # the default 0.5 s, divided by ten
RETRY_MAX_S = 6.0  # the default 60 s, divided by ten
ACK_WAIT_S = 0.5  # backoff 0.5, 1, 2 … 32 s: deliveries 3 to 8 end about 60 s after the 2nd
OUTAGE_S = 75.0
ARRIVAL_S = 1.0  # one command and one lifecycle event this often during the outage


async def test_a_long_database_outage_loses_and_dead_letters_nothing(
    nats_url, postgres_server_factory, names
) -> None:
    pg = postgres_server_factory("outage")
    dsn = pg.dsn()
    settings = intake_settings(
        names,
        nats_url,
        dsn,
        retry_base_delay_s=RETRY_BASE_S,
        retry_max_delay_s=RETRY_MAX_S,
        consumer_ack_wait_s=ACK_WAIT_S,
        outage_probe_max_s=1.0,
    )
    assert settings.consumer_max_deliver == 8  # the default: nothing raised to hide it
    world = await prepare_world(settings, names)
    app = build_app(settings)
    base = f"/v1/communities/{world.home}"
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        auth = world.auth()
        resident = (await http.post(f"{base}/residents", json=resident_body(), headers=auth)).json()
        before = []
        for _ in range(3):
            made = await http.post(f"{base}/needs", json=meal_need(resident["id"]), headers=auth)
            assert made.status_code == 201
            before.append(made.json()["id"])

        await asyncio.to_thread(pg.stop, mode="immediate")
        during = await http.post(f"{base}/needs", json=meal_need(resident["id"]), headers=auth)
        assert during.status_code == 503
        assert during.json()["error"] == "unavailable"
        assert "Traceback" not in during.text
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"] is False

        # Other systems and services go on publishing while the database is down.
        commands: list[str] = []
        slots: list[str] = []
        loop = asyncio.get_running_loop()
        until = loop.time() + OUTAGE_S
        while loop.time() < until:
            command = cloudevent(world.home, meal_need(resident["id"]))
            # The ingress stream does not answer (ADR 0004): a plain publish, kept by it.
            await nc.publish(
                f"linli.ingress.{world.home}.need.submit.v1",
                dumps(command),
                headers={"Nats-Msg-Id": command["id"]},
            )
            commands.append(command["id"])
            slot_id = uuid.uuid4()
            event = new_event(
                SlotReserved(
                    reservation_id=uuid.uuid4(),
                    slot_id=slot_id,
                    need_id=uuid.UUID(before[len(slots) % len(before)]),
                    remaining_capacity=1,
                    reserved_at=datetime.now(UTC),
                ),
                community=world.home,
                source="/scheduling",
            )
            body, headers = to_structured(event)
            headers["Nats-Msg-Id"] = event.id
            await js.publish(f"linli.events.{world.home}.slot.reserved.v1", body, headers=headers)
            slots.append(str(slot_id))
            await asyncio.sleep(ARRIVAL_S)
        await asyncio.to_thread(pg.start)

        async def ready_again() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await wait_for(ready_again, timeout=30, what="readiness")
        after = await http.post(f"{base}/needs", json=meal_need(resident["id"]), headers=auth)
        assert after.status_code == 201

        conn = await asyncpg.connect(dsn, server_settings={"search_path": settings.db_schema})

        seen: dict[str, int] = {}

        async def everything_processed() -> bool:
            seen["needs"] = await conn.fetchval(
                "SELECT count(*) FROM needs WHERE ingress_event_id = ANY($1::text[])",
                commands,
            )
            seen["timeline"] = await conn.fetchval(
                "SELECT count(*) FROM need_timeline WHERE note LIKE 'slot %'"
            )
            return seen["needs"] == len(commands) and seen["timeline"] == len(slots)

        try:
            try:
                await wait_for(everything_processed, timeout=60, what="every command and event")
            except AssertionError:
                letters = await conn.fetchval("SELECT count(*) FROM dead_letters")
                raise AssertionError(
                    f"{seen['needs']} needs of {len(commands)} commands, {seen['timeline']} "
                    f"timeline entries of {len(slots)} events, {letters} dead letters"
                ) from None

            async def drained() -> bool:
                for stream, durable in app.state.runtime.durables:
                    info = await js.consumer_info(stream, durable)
                    if info.num_pending or info.num_ack_pending:
                        return False
                return True

            await wait_for(drained, timeout=30, what="the consumers to drain")
            # Exactly once: one need per command, one timeline entry per event.
            rows = await conn.fetch(
                "SELECT ingress_event_id, count(*) AS n FROM needs "
                "WHERE ingress_event_id = ANY($1::text[]) GROUP BY ingress_event_id",
                commands,
            )
            assert sorted(r["ingress_event_id"] for r in rows) == sorted(commands)
            assert all(r["n"] == 1 for r in rows)
            notes = await conn.fetch(
                "SELECT note, count(*) AS n FROM need_timeline "
                "WHERE note LIKE 'slot %' GROUP BY note"
            )
            assert sorted(r["note"] for r in notes) == sorted(f"slot {s}" for s in slots)
            assert all(r["n"] == 1 for r in notes)
            letters = await conn.fetch("SELECT consumer, reasons FROM dead_letters")
            assert [(r["consumer"], json.loads(r["reasons"])) for r in letters] == []
        finally:
            await conn.close()

        # One need.submitted per need: before, after and one per command.
        needs = await http.get(f"{base}/needs", params={"limit": 200}, headers=auth)
        ids = {n["id"] for n in needs.json()["items"]}
        assert len(ids) == len(before) + 1 + len(commands)

        async def all_published() -> list[str] | None:
            # The outbox relay backed off during the outage; it catches up on its own.
            found = await _need_ids_submitted(js, settings.events_stream)
            return found if len(found) >= len(ids) else None

        submitted = await wait_for(all_published, timeout=60, what="every need.submitted")
        assert sorted(submitted) == sorted(ids)
        # The outage was seen as one: consumers held their messages and waited.
        assert app.state.runtime.breaker.outages >= 1
    await nc.close()
    await drop_world(settings, nats_url)


async def _need_ids_submitted(js: Any, stream: str) -> list[str]:
    info = await js.stream_info(stream)
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        if msg.subject.endswith(".need.submitted.v1"):
            ids.append(json.loads(msg.data)["data"]["need_id"])
    return ids
