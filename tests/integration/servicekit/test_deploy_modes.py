"""How a service runs under Kubernetes: migrations and streams owned by Jobs, not replicas.

With `LINLI_MIGRATE_ON_START=false` a replica applies nothing: it waits until the
migration Job (`python -m linli.<service> migrate`) has applied every migration, then
starts. `python -m linli.<service> streams` creates the streams and exits, so the
services can run with `LINLI_PROVISION_STREAMS=false`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from typing import Any

import asyncpg
import nats
import pytest

from linli.servicekit.db import load_migrations, migrate, pending_migrations
from linli.servicekit.runtime import ServiceRuntime
from linli.servicekit.settings import ServiceSettings

pytestmark = pytest.mark.integration


async def test_streams_command_creates_the_streams_and_exits(nats_url: str, names: Any) -> None:
    community = names.community("jobs")
    events, ingress = names.stream("events"), names.stream("ingress")
    env = {
        **os.environ,
        "LINLI_NATS_URL": nats_url,
        "LINLI_EVENTS_STREAM": events,
        "LINLI_INGRESS_STREAM": ingress,
        "LINLI_STREAM_COMMUNITIES": community,
        "LINLI_ENVIRONMENT": "test",
    }
    nc = await nats.connect(nats_url)
    try:
        for _ in range(2):  # idempotent: a Job may run again at every deploy
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "linli.intake", "streams"],
                env=env,
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr.decode()[-2000:]
            assert events in done.stdout.decode()
        js = nc.jetstream()
        info = await js.stream_info(events)
        assert info.config.subjects == [f"linli.events.{community}.>"]
        assert (await js.stream_info(ingress)).config.subjects == [f"linli.ingress.{community}.>"]
        # The advisories stream comes with them: services may not create streams.
        advisories = (await js.stream_info(f"{events}_ADVISORIES")).config.subjects
        assert advisories == [
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.>" for stream in (events, ingress)
        ]
    finally:
        for stream in (events, ingress, f"{events}_ADVISORIES"):
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
        await nc.close()


async def test_a_replica_that_does_not_migrate_waits_for_the_migration_job(
    nats_url: str, database_url: str, names: Any, caplog: pytest.LogCaptureFixture
) -> None:
    community = names.community("wait")
    migrations = load_migrations("linli.servicekit", "servicekit")
    settings = ServiceSettings(
        service_name="waiter",
        environment="test",
        db_schema=names.schema("waiter"),
        database_url=database_url,
        nats_url=nats_url,
        events_stream=names.stream("events"),
        ingress_stream=names.stream("ingress"),
        stream_communities=community,
        migrate_on_start=False,
        log_json=False,
    )
    runtime = ServiceRuntime(settings, migrations)
    starting = asyncio.create_task(runtime.start())
    conn = await asyncpg.connect(database_url)
    try:
        # It looked twice, found the migrations missing and went on waiting.
        caplog.set_level(logging.WARNING, logger="linli.servicekit.runtime")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while loop.time() < deadline:
            waits = [r for r in caplog.records if r.getMessage() == "waiting for migrations"]
            if len(waits) >= 2:
                break
            await asyncio.sleep(0.1)
        assert len(waits) >= 2
        # Still waiting, and it applied nothing itself.
        assert not starting.done()
        assert not runtime.started
        pending = await pending_migrations(conn, settings.db_schema, migrations)
        assert pending == [m.version for m in migrations]
        # The Job runs.
        await migrate(conn, settings.db_schema, migrations)
        await asyncio.wait_for(starting, timeout=15)
        assert runtime.started
        assert (await runtime.readiness())["ready"]
    finally:
        if not starting.done():
            starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        await runtime.stop()
        await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
        await conn.close()
        nc = await nats.connect(nats_url)
        for stream in (
            settings.events_stream,
            settings.ingress_stream,
            settings.advisories_stream,
        ):
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
        await nc.close()
