"""Composition root: `build_app(settings)` wires everything; nothing runs at import.

Notifications has two parts, each a package with its api, service, store and
consumer: `webhooks` (subscriptions, deliveries, the event stream) and `messages`
(e-mail and SMS to people). `wire_webhooks` and `wire_messages` wire one part each into
a runtime and an app; `build_app` wires both.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from fastapi import FastAPI
from opentelemetry.sdk.trace import SpanProcessor

from linli.servicekit.clock import Clock
from linli.servicekit.consume import EventConsumer
from linli.servicekit.db import Conn, service_migrations
from linli.servicekit.http import create_http_app
from linli.servicekit.runtime import ServiceRuntime
from linli.servicekit.sealing import SecretBox

from . import errors
from .messages import api as messages_api
from .messages import consumer as messages_consumer
from .messages.providers import Provider, build_providers
from .messages.schedule import zone
from .messages.sender import Sender
from .reach import api as reach_api
from .reach.push import LinkMaker
from .reach.service import PartnerDelivery
from .settings import NotificationsSettings
from .webhooks import api as webhooks_api
from .webhooks import consumer as webhooks_consumer
from .webhooks import store as webhooks_store
from .webhooks import stream
from .webhooks.delivery import DeliveryWorker
from .webhooks.service import WebhookService
from .webhooks.ssrf import Resolver, system_resolver

__all__ = [
    "MIGRATIONS_PACKAGE",
    "Messages",
    "NotificationsSettings",
    "Webhooks",
    "build_app",
    "default_settings",
    "wire_messages",
    "wire_webhooks",
]

MIGRATIONS_PACKAGE = "linli.notifications"

log = logging.getLogger(__name__)


def default_settings() -> NotificationsSettings:
    """Settings from the environment (LINLI_*); unset ones take notifications' defaults."""
    return NotificationsSettings()


def build_app(
    settings: NotificationsSettings,
    *,
    span_processor: SpanProcessor | None = None,
    resolver: Resolver = system_resolver,
    providers: dict[str, Provider] | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """The notifications process: consumers, webhook worker, sender, HTTP API, streams."""
    runtime = ServiceRuntime(
        settings,
        service_migrations(MIGRATIONS_PACKAGE, "notifications"),
        span_processor=span_processor,
    )
    clock = clock or Clock()
    app = create_http_app(
        runtime,
        title="Linli notifications",
        description="Signed webhooks and resumable per-community event streams for "
        "community apps; messages to people.",
    )
    maker = LinkMaker(settings.offer_links(), settings.offer_link_base_url)
    webhooks = wire_webhooks(runtime, settings, app, resolver=resolver, clock=clock, maker=maker)
    wire_messages(runtime, settings, app, providers=providers, clock=clock, maker=maker)
    app.state.partner_delivery = PartnerDelivery(lambda: runtime.pool, webhooks.service)
    app.include_router(reach_api.router)
    return app


@dataclass(frozen=True)
class Webhooks:
    """What `wire_webhooks` wired (the service is `app.state.webhooks`)."""

    service: WebhookService
    worker: DeliveryWorker
    consumer: EventConsumer


def wire_webhooks(
    runtime: ServiceRuntime,
    settings: NotificationsSettings,
    app: FastAPI,
    *,
    resolver: Resolver = system_resolver,
    clock: Clock | None = None,
    maker: LinkMaker | None = None,
) -> Webhooks:
    """The durable `notifications`, the delivery worker, `/v1/subscriptions` and the
    per-community event stream."""
    clock = clock or Clock()
    box = SecretBox(settings.secrets_key.get_secret_value() if settings.secrets_key else None)
    if not box.encrypting:
        log.warning("webhook secrets are stored unencrypted (no secrets_key)")
    worker = DeliveryWorker(lambda: runtime.pool, settings, box, resolver=resolver, clock=clock)
    consumer = runtime.consume(webhooks_consumer.subscriptions(on_commit=worker.wake, maker=maker))
    if settings.run_delivery:
        runtime.background("webhook-delivery", worker.run)
    # Attempts go with their delivery (ON DELETE CASCADE).
    runtime.retention.keep(
        "deliveries", "finished_at", settings.deliveries_retention_s, where="state <> 'pending'"
    )
    service = WebhookService(
        lambda: runtime.pool, settings, box, resolver=resolver, clock=clock, wake=worker.wake
    )
    app.state.webhooks = service
    open_streams = stream.OpenStreams()
    app.state.open_streams = open_streams

    async def on_revoked(conn: Conn, credentials: list[uuid.UUID]) -> None:
        # A revoked credential's subscriptions stop and its streams end (ADR 0030).
        open_streams.close(credentials)
        if await webhooks_store.disable_revoked(conn, credentials):
            log.info("subscriptions of a revoked credential disabled")

    runtime.revocations.hooks.append(on_revoked)
    app.include_router(webhooks_api.router)
    app.include_router(webhooks_api.operators)
    app.include_router(stream.router)
    runtime.read_events(
        "events-stream",
        "`GET /v1/communities/{community}/events` (Server-Sent Events): one ordered "
        "ephemeral consumer per open stream, filtered to the community, resumable by "
        "stream sequence",
    )
    errors.install_error_handlers(app)
    return Webhooks(service, worker, consumer)


@dataclass(frozen=True)
class Messages:
    """What `wire_messages` wired (`app.state.messages`)."""

    sender: Sender
    consumer: EventConsumer


def wire_messages(
    runtime: ServiceRuntime,
    settings: NotificationsSettings,
    app: FastAPI,
    *,
    providers: dict[str, Provider] | None = None,
    clock: Clock | None = None,
    maker: LinkMaker | None = None,
) -> Messages:
    """The durable `notifications-people`, the sender and the recipients API."""
    clock = clock or Clock()
    sender = Sender(
        lambda: runtime.pool, providers or build_providers(settings), settings, clock=clock
    )
    consumer = runtime.consume(
        messages_consumer.subscriptions(
            zone(settings.people_timezone), clock, on_commit=sender.wake, maker=maker
        )
    )
    if settings.people_run_sender:
        runtime.background("notifications-people-sender", sender.run)
    runtime.retention.keep(
        "people_messages",
        "created_at",
        settings.people_messages_retention_s,
        where="status <> 'pending'",
    )
    app.include_router(messages_api.router)
    errors.install_error_handlers(app)
    wired = Messages(sender, consumer)
    app.state.messages = wired
    return wired
