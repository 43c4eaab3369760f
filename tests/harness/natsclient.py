"""A NATS connection that keeps the permission violations the server reports.

Used by the permission tests (tests/integration/devstack/test_nats_permissions.py) and the
fault run's NATS attack (faults/attacks.py): a refusal is seen as the server's
`-ERR 'Permissions Violation ...'`, which nats-py hands to `error_cb`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import nats
from nats.aio.client import Client as NatsClient


class Client:
    """A connection and the errors the server sent it."""

    def __init__(self, nc: NatsClient, errors: list[Exception]) -> None:
        self.nc = nc
        self.errors = errors

    async def violations(self, subject: str, timeout: float = 2.0) -> list[str]:
        """The violations naming `subject`, waiting (bounded) for the first to arrive."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await self.nc.flush()
            found = [
                str(e)
                for e in self.errors
                if "permissions violation" in str(e).lower() and subject.lower() in str(e).lower()
            ]
            if found or loop.time() > deadline:
                return found
            await asyncio.sleep(0.02)

    def all_violations(self) -> list[str]:
        return [str(e) for e in self.errors if "permissions violation" in str(e).lower()]


@contextlib.asynccontextmanager
async def connect_as(url: str, user: str, password: str, **options: Any) -> AsyncIterator[Client]:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(
        url, user=user, password=password, error_cb=on_error, allow_reconnect=False, **options
    )
    try:
        yield Client(nc, errors)
    finally:
        await nc.close()
