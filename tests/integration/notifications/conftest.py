"""Fixtures for notifications on real NATS JetStream and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from harness.names import Names
from harness.notifications import (
    FakeDns,
    Notifications,
    bus_for,
    drop_all,
    notifications_settings,
    prepare_schema,
    serve,
)

from linli.notifications.app import build_app
from linli.notifications.settings import NotificationsSettings
from linli.servicekit.db import create_pool


@pytest.fixture
async def start_notifications(
    nats_url: str, database_url: str, names: Names
) -> AsyncIterator[Callable[..., Any]]:
    """`async with start_notifications(**settings_overrides) as n:` serves one process."""
    created: list[NotificationsSettings] = []

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Notifications]:
        settings = notifications_settings(names, nats_url, database_url, **overrides)
        created.append(settings)
        tokens = await prepare_schema(settings)
        dns = FakeDns()
        app = build_app(settings, resolver=dns)
        pool = await create_pool(database_url, settings.db_schema, min_size=1, max_size=4)
        try:
            async with (
                bus_for(settings, nats_url) as bus,
                serve(app, lifespan="on") as base,
                httpx.AsyncClient(base_url=base, timeout=10) as http,
            ):
                yield Notifications(settings, bus, http, pool, tokens, dns)
        finally:
            await pool.close()

    try:
        yield start
    finally:
        for settings in created:
            await drop_all(settings, nats_url)
