"""Migrations are safe when several processes start at once; one trace follows a need
from the HTTP request through PostgreSQL and the outbox onto NATS; logs carry it."""

from __future__ import annotations

import asyncio
import json
import logging

import asyncpg
import httpx
import pytest
from harness.intake import (
    drop_world,
    intake_settings,
    meal_need,
    prepare_world,
    resident_body,
)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from linli.intake.app import build_app
from linli.servicekit.db import migrate, pending_migrations, service_migrations
from linli.servicekit.logs import _TraceContextFilter

pytestmark = pytest.mark.integration


async def test_concurrent_migrations_apply_each_file_once(database_url: str, names) -> None:
    schema = names.schema("race")
    migrations = service_migrations("linli.intake", "intake")

    async def one() -> list[str]:
        conn = await asyncpg.connect(database_url)
        try:
            return await migrate(conn, schema, migrations)
        finally:
            await conn.close()

    results = await asyncio.gather(*(one() for _ in range(6)))
    applied = [r for r in results if r]
    # Exactly one starter applied everything; the others found it done.
    assert len(applied) == 1
    assert applied[0] == [m.version for m in migrations]
    conn = await asyncpg.connect(database_url)
    try:
        assert await pending_migrations(conn, schema, migrations) == []
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=[False, True], ids=["default", "statement-spans"])
def statement_spans(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Run with and without `OTEL_PYTHON_ASYNCPG_STATEMENT_SPANS=true`."""
    if request.param:
        monkeypatch.setenv("OTEL_PYTHON_ASYNCPG_STATEMENT_SPANS", "true")
    else:
        monkeypatch.delenv("OTEL_PYTHON_ASYNCPG_STATEMENT_SPANS", raising=False)
    yield request.param
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    instrumentor = AsyncPGInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


async def test_one_trace_from_http_request_to_published_event(
    nats_url: str, database_url: str, names, statement_spans: bool
) -> None:
    exporter = InMemorySpanExporter()
    settings = intake_settings(names, nats_url, database_url)
    world = await prepare_world(settings, names)
    app = build_app(settings, span_processor=SimpleSpanProcessor(exporter))
    base = f"/v1/communities/{world.home}"
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://intake.test"
            ) as http,
        ):
            resident = (
                await http.post(f"{base}/residents", json=resident_body(), headers=world.auth())
            ).json()["id"]
            exporter.clear()
            created = await http.post(
                f"{base}/needs",
                json=meal_need(resident),
                headers={**world.auth(), "traceparent": CALLER},
            )
            assert created.status_code == 201
            relay = app.state.runtime.relay
            for _ in range(100):
                if await relay.backlog() == 0 and any(
                    s.name.startswith("send ") for s in exporter.get_finished_spans()
                ):
                    break
                await asyncio.sleep(0.05)
    finally:
        await drop_world(settings, nats_url)
    spans = exporter.get_finished_spans()
    server = next(s for s in spans if s.name.startswith("POST /v1/communities"))
    trace_id = server.context.trace_id
    assert format(trace_id, "032x") == CALLER.split("-")[1], "the caller's trace goes on"
    send = next(s for s in spans if s.name.startswith("send linli.events."))
    assert send.context.trace_id == trace_id, "the outbox publish continues the request's trace"
    db_spans = [s for s in spans if s.attributes and s.attributes.get("db.system") == "postgresql"]
    if statement_spans:
        assert any(s.context.trace_id == trace_id for s in db_spans)
    else:
        assert db_spans == [], "no span per SQL statement unless asked for"
    # No personal data in any span attribute (SQL text only, values bound).
    for span in spans:
        assert "ZZCANARY" not in json.dumps(dict(span.attributes or {}), default=str)


CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_log_records_carry_the_trace_id() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    with provider.get_tracer("t").start_as_current_span("work") as span:
        _TraceContextFilter("intake").filter(record)
        expected = format(span.get_span_context().trace_id, "032x")
    assert record.trace_id == expected  # type: ignore[attr-defined]
    assert record.service == "intake"  # type: ignore[attr-defined]
