"""Composition root: `build_app(settings)` wires everything; nothing runs at import."""

from __future__ import annotations

import importlib
import logging

from fastapi import FastAPI
from opentelemetry.sdk.trace import SpanProcessor

from linli.servicekit.db import service_migrations
from linli.servicekit.http import create_http_app
from linli.servicekit.runtime import ServiceRuntime

from . import api, events, sse
from .delivery import DeliveryWorker
from .sealing import SecretBox
from .settings import NotificationsSettings
from .ssrf import Resolver, system_resolver

__all__ = ["MIGRATIONS_PACKAGE", "NotificationsSettings", "build_app", "default_settings"]

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
) -> FastAPI:
    """The notifications process: event consumer, webhook worker, HTTP API and streams."""
    runtime = ServiceRuntime(
        settings,
        service_migrations(MIGRATIONS_PACKAGE, "notifications"),
        span_processor=span_processor,
    )
    box = SecretBox(settings.secrets_key.get_secret_value() if settings.secrets_key else None)
    if not box.encrypting:
        log.warning("webhook secrets are stored unencrypted (no cryptography or secrets_key)")
    worker = DeliveryWorker(lambda: runtime.pool, settings, box, resolver=resolver)
    runtime.consume(events.subscriptions(on_commit=worker.wake.set))
    if settings.run_delivery:
        runtime.background("webhook-delivery", lambda: worker.run(runtime.dsn))
    app = create_http_app(
        runtime,
        title="Linli notifications",
        description="Signed webhooks and resumable per-community event streams for "
        "community apps; messages to people.",
    )
    app.state.secret_box = box
    app.state.resolver = resolver
    app.state.delivery = worker
    app.state.wake = worker.wake.set
    app.include_router(api.router)
    app.include_router(sse.router)
    _register_people(runtime, settings, app)
    return app


def _register_people(
    runtime: ServiceRuntime, settings: NotificationsSettings, app: FastAPI
) -> None:
    """Messages to people (templates, e-mail, SMS, quiet hours), when that part is present.

    `people.register(runtime, settings, app)` mounts its router, subscribes its own
    durable (`notifications-people`) and runs its sender; this app works without it.
    """
    try:
        people = importlib.import_module(f"{__package__}.people")
    except ImportError as exc:
        if exc.name != f"{__package__}.people":
            raise
        return
    people.register(runtime, settings, app)
