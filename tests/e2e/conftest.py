"""End-to-end fixtures: the three services as separate processes, isolated per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from harness.lifecycle import Lifecycle
from harness.names import Names
from harness.procs import ProcessGroup


@pytest.fixture
async def lifecycle(
    nats_url: str, database_url: str, names: Names, procs: ProcessGroup
) -> AsyncIterator[Callable[..., Awaitable[Lifecycle]]]:
    """`lc = await lifecycle(time_scale=..., scheduling_replicas=...)`: intake, partners and
    scheduling started as subprocesses on this test's schemas, streams and communities;
    `notifications=True` adds notifications, `replicas=2` (or `{"partners": 2}`) runs
    that many processes of every (or the named) service.

    Torn down after the test: processes stopped, schemas dropped, streams deleted (the
    `procs` fixture prints the services' log tails when the test failed).
    """
    made: list[Lifecycle] = []

    async def make(
        *,
        scheduling_replicas: int = 1,
        replicas: int | dict[str, int] | None = None,
        **options: Any,
    ) -> Lifecycle:
        lc = Lifecycle(names, nats_url, database_url, procs, **options)
        made.append(lc)
        await lc.prepare()
        await lc.start(scheduling_replicas=scheduling_replicas, replicas=replicas)
        return lc

    yield make
    for lc in made:
        await lc.close()
