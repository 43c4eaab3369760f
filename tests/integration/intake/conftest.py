"""Fixtures for intake on real NATS JetStream and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from harness.intake import (
    IntakeWorld,
    drop_world,
    intake_settings,
    nats_client,
    prepare_world,
    resident_body,
)
from harness.names import Names
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from linli.intake.app import build_app


@dataclass
class Intake:
    """A running in-process intake with its world, an HTTP client and a NATS client."""

    world: IntakeWorld
    http: httpx.AsyncClient
    nc: NatsClient
    js: JetStreamContext
    app: object

    async def new_resident(self, who: str = "operator", community: str | None = None) -> str:
        community = community or self.world.home
        response = await self.http.post(
            f"/v1/communities/{community}/residents",
            json=resident_body(),
            headers=self.world.auth(who),
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


@pytest.fixture
async def intake(nats_url: str, database_url: str, names: Names) -> AsyncIterator[Intake]:
    settings = intake_settings(names, nats_url, database_url)
    world = await prepare_world(settings, names)
    app = build_app(settings)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://intake.test"
            ) as http,
            nats_client(nats_url) as nc,
        ):
            yield Intake(world, http, nc, nc.jetstream(), app)
    finally:
        await drop_world(settings, nats_url)
