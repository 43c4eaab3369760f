"""Composition root: `build_app(settings)` wires everything; nothing runs at import."""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI
from faststream import AckPolicy
from faststream.nats import NatsMessage, PullSub
from opentelemetry.sdk.trace import SpanProcessor
from pydantic import Field

from linli.contracts.subjects import INGRESS_PREFIX
from linli.servicekit import disclosures
from linli.servicekit.db import service_migrations
from linli.servicekit.http import create_http_app
from linli.servicekit.messaging import consumer_config, jstream, stream_subjects
from linli.servicekit.runtime import ServiceRuntime, periodic
from linli.servicekit.settings import ServiceSettings

from . import activities, activities_api, api, catalogue_api, ingress, service
from .open311 import api as open311_api
from .service import Clock

MIGRATIONS_PACKAGE = "linli.intake"


class IntakeSettings(ServiceSettings):
    """Intake's settings: the shared ones with intake's name as the default."""

    service_name: str = "intake"
    http_port: int = 8101
    plan_interval_s: float = Field(
        default=30.0, gt=0, description="How often recurring plans are checked for due needs."
    )
    plan_horizon_days: int = Field(
        default=2, ge=1, le=31, description="How far ahead plan occurrences become needs."
    )
    activity_interval_s: float = Field(
        default=15.0,
        gt=0,
        description="How often activities whose registration has closed are allocated (ADR 0046).",
    )
    ingress_grace_s: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="The durable ingress consumer leaves commands younger than this to "
        "the request path.",
    )


def default_settings() -> IntakeSettings:
    """Settings from the environment (LINLI_*); unset ones take intake's defaults."""
    return IntakeSettings()


def build_app(
    settings: IntakeSettings,
    *,
    clock: Clock | None = None,
    span_processor: SpanProcessor | None = None,
) -> FastAPI:
    """The intake process: HTTP API, ingress subscribers, outbox relay."""
    runtime = ServiceRuntime(
        settings,
        service_migrations(MIGRATIONS_PACKAGE, "intake"),
        span_processor=span_processor,
    )
    clock = clock or Clock()
    _subscriptions(runtime, settings, clock)
    app = create_http_app(
        runtime,
        title="Linli intake",
        description="Needs and residents of a community; ingress from other systems.",
    )
    app.state.clock = clock
    app.state.plan_wake = asyncio.Event()
    app.include_router(api.router)
    app.include_router(api.plans_router)
    app.include_router(disclosures.router())
    app.include_router(api.imports_router)
    app.include_router(activities_api.router)
    app.state.activity_wake = asyncio.Event()
    app.include_router(catalogue_api.router)
    app.include_router(open311_api.router)

    async def generate() -> None:
        async with runtime.pool.acquire() as conn:
            await service.generate_plan_needs(
                conn, clock=clock, horizon_days=settings.plan_horizon_days
            )

    runtime.background(
        "plans",
        lambda: periodic("plans", settings.plan_interval_s, generate, wake=app.state.plan_wake),
    )

    async def allocate() -> None:
        async with runtime.pool.acquire() as conn:
            await activities.allocate_due(conn, clock.now())

    runtime.background(
        "activities",
        lambda: periodic(
            "activities", settings.activity_interval_s, allocate, wake=app.state.activity_wake
        ),
    )
    api.install_error_handlers(app)
    return app


def _subscriptions(runtime: ServiceRuntime, settings: IntakeSettings, clock: Clock) -> None:
    """All of intake's subscriptions, in one place."""
    runtime.consume(service.lifecycle_subscriptions(LIFECYCLE, clock))
    subjects = stream_subjects(INGRESS_PREFIX, settings)
    for index, subject in enumerate(subjects):
        durable = ingress.CONSUMER if len(subjects) == 1 else f"{ingress.CONSUMER}-{index}"
        runtime.durable(settings.ingress_stream, durable)
        _subscribe_subject(runtime, settings, clock, subject, durable)


LIFECYCLE = "intake-lifecycle"


def _subscribe_subject(
    runtime: ServiceRuntime, settings: IntakeSettings, clock: Clock, subject: str, durable: str
) -> None:
    broker = runtime.broker

    @broker.subscriber(
        subject,
        queue="intake",
        max_workers=16,
        title=f"intake-requests:{subject}",
        description="need.submit requests with a reply subject: answered after commit",
    )
    async def on_request(msg: NatsMessage) -> bytes | None:
        raw = msg.raw_message
        if not raw.reply:
            # Fire-and-forget commands are left to the durable stream consumer.
            return None
        outcome = await ingress.handle_submit(
            runtime.pool,
            subject=raw.subject,
            payload=raw.data,
            headers=dict(raw.headers or {}),
            clock=clock,
        )
        return outcome.reply()

    @broker.subscriber(
        subject,
        stream=jstream(settings.ingress_stream),
        durable=durable,
        config=consumer_config(settings, durable, filter_subject=subject),
        pull_sub=PullSub(batch_size=settings.consumer_batch, timeout=1.0),
        ack_policy=AckPolicy.MANUAL,
        title=f"intake-ingress:{subject}",
        description="every need.submit command, durably; a no-op when already handled",
    )
    async def on_stored(msg: NatsMessage) -> None:
        raw = msg.raw_message
        age = time.time() - raw.metadata.timestamp.timestamp()
        if 0 <= age < settings.ingress_grace_s:
            # A request waiting for its reply is being answered by the request path;
            # come back later and find it done (and its answer says "not a duplicate").
            await msg.nack(delay=settings.ingress_grace_s - age)
            return

        async def work() -> None:
            await ingress.handle_submit(
                runtime.pool,
                subject=raw.subject,
                payload=raw.data,
                headers=dict(raw.headers or {}),
                clock=clock,
            )

        await runtime.deliveries.process(durable, raw, work)
