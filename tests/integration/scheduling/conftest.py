"""Fixtures for scheduling on real NATS JetStream and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from harness.names import Names
from harness.scheduling import (
    Bus,
    bus_for,
    drop_all,
    prepare_schema,
    scheduling_settings,
)

from linli.scheduling.app import SchedulingSettings, build_app
from linli.servicekit.db import create_pool


@dataclass
class Scheduling:
    """An in-process scheduling with the test's bus, an HTTP client and a pool."""

    settings: SchedulingSettings
    bus: Bus
    http: httpx.AsyncClient
    pool: asyncpg.Pool
    tokens: dict[str, str]

    @property
    def community(self) -> str:
        return self.bus.community

    def auth(self, who: str = "operator") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def need_view(self, need_id: Any) -> dict[str, Any]:
        response = await self.http.get(
            f"/v1/communities/{self.community}/schedule/needs/{need_id}", headers=self.auth()
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def state(self, need_id: Any) -> str:
        return str(await self.pool.fetchval("SELECT state FROM needs WHERE id = $1", need_id))


@pytest.fixture
async def start_scheduling(
    nats_url: str, database_url: str, names: Names
) -> AsyncIterator[Callable[..., Any]]:
    """`async with start_scheduling(**settings_overrides) as s:` runs one in-process service."""
    created: list[SchedulingSettings] = []

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Scheduling]:
        settings = scheduling_settings(names, nats_url, database_url, **overrides)
        created.append(settings)
        tokens = await prepare_schema(settings, settings.communities_scope[0])
        app = build_app(settings)
        pool = await create_pool(database_url, settings.db_schema, min_size=1, max_size=4)
        try:
            async with (
                bus_for(settings, nats_url) as bus,
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://scheduling.test"
                ) as http,
            ):
                yield Scheduling(settings, bus, http, pool, tokens)
        finally:
            await pool.close()

    try:
        yield start
    finally:
        for settings in created:
            await drop_all(settings, nats_url)
