"""PostgreSQL stopped hard and restarted (RELIABILITY.md row 3): the API answers 503
with a JSON body meanwhile, commands published during the outage are processed after
it, and nothing committed is lost."""

from __future__ import annotations

import asyncio

import httpx
import nats
import pytest
from harness.intake import (
    cloudevent,
    drop_world,
    dumps,
    intake_settings,
    meal_need,
    prepare_world,
    resident_body,
)

from linli.intake.app import build_app

pytestmark = [pytest.mark.fault, pytest.mark.integration]


async def test_database_outage_gives_503_then_recovers(
    nats_url, postgres_server_factory, names
) -> None:
    pg = postgres_server_factory("outage")
    dsn = pg.dsn()
    settings = intake_settings(names, nats_url, dsn, consumer_max_deliver=20, retry_max_delay_s=1.0)
    world = await prepare_world(settings, names)
    app = build_app(settings)
    base = f"/v1/communities/{world.home}"
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        auth = world.auth()
        resident = (await http.post(f"{base}/residents", json=resident_body(), headers=auth)).json()
        before = await http.post(f"{base}/needs", json=meal_need(resident["id"]), headers=auth)
        assert before.status_code == 201

        pg.stop(mode="immediate")
        during = await http.post(f"{base}/needs", json=meal_need(resident["id"]), headers=auth)
        assert during.status_code == 503
        assert during.json()["error"] == "unavailable"
        assert "Traceback" not in during.text
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"] is False

        # Another system publishes while the database is down: kept by the stream.
        nc = await nats.connect(nats_url)
        event = cloudevent(world.home, meal_need(resident["id"]))
        await nc.publish(f"linli.ingress.{world.home}.need.submit.v1", dumps(event))
        await nc.flush()
        await asyncio.sleep(1.0)

        pg.start()
        for _ in range(100):
            if (await http.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.2)
        after = await http.post(f"{base}/needs", json=meal_need(resident["id"]), headers=auth)
        assert after.status_code == 201

        for _ in range(100):
            listed = await http.get(f"{base}/needs", headers=auth)
            ids = {n["id"] for n in listed.json()["items"]}
            if len(ids) == 3:
                break
            await asyncio.sleep(0.2)
        assert before.json()["id"] in ids
        assert after.json()["id"] in ids
        assert len(ids) == 3  # before, after, and the command published during the outage
        stream = await nc.jetstream().stream_info(settings.events_stream)
        for _ in range(50):
            stream = await nc.jetstream().stream_info(settings.events_stream)
            if stream.state.messages == 3:
                break
            await asyncio.sleep(0.2)
        assert stream.state.messages == 3
        await nc.close()
    await drop_world(settings, nats_url)
