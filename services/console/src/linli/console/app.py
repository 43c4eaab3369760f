"""Composition root: `build_app(settings)` wires everything; nothing runs at import.

The console publishes no events: it reads the services' HTTP APIs, relays
notifications' community stream (ADR 0033, ADR 0036), and folds events into the
reports' read model with the durable `console-reports` (ADR 0038). It runs on
servicekit's runtime for its schema, migrations, health, metrics and telemetry.
"""

from __future__ import annotations

import logging
from importlib import resources

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from opentelemetry.sdk.trace import SpanProcessor

from linli.servicekit.db import service_migrations
from linli.servicekit.http import create_http_app
from linli.servicekit.runtime import ServiceRuntime

from . import actions, live, readmodel, web
from .settings import ConsoleSettings

__all__ = ["MIGRATIONS_PACKAGE", "ConsoleSettings", "build_app", "default_settings"]

MIGRATIONS_PACKAGE = "linli.console"
IMPORT_UPLOAD_KEEP_S = 3600.0
"""An uploaded CSV file waits this long at most for its explicit import (ADR 0037)."""

log = logging.getLogger(__name__)


def default_settings() -> ConsoleSettings:
    """Settings from the environment (LINLI_*); unset ones take the console's defaults."""
    return ConsoleSettings()


def build_app(settings: ConsoleSettings, *, span_processor: SpanProcessor | None = None) -> FastAPI:
    """The console process: pages, the live relay, static files."""
    runtime = ServiceRuntime(
        settings, service_migrations(MIGRATIONS_PACKAGE, "console"), span_processor=span_processor
    )
    app = create_http_app(
        runtime,
        title="Linli console",
        description="The staff console: live community pages for community and "
        "street-office staff.",
    )
    console = web.Console(settings, runtime)
    if not console.box.encrypting:
        log.warning("staff service credentials are stored unencrypted (no secrets_key)")
    app.state.console = console
    # httpx logs every upstream call at INFO; the HTTP metrics count them already.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    async def start(_runtime: ServiceRuntime) -> None:
        await console.upstream.start()

    async def stop(_runtime: ServiceRuntime) -> None:
        await console.upstream.stop()

    runtime.consume(readmodel.subscriptions())
    runtime.on_start.append(start)
    runtime.on_stop.append(stop)
    # Idle sessions go; a session past its absolute expiry is refused and deleted on use.
    runtime.retention.keep("sessions", "last_seen_at", settings.session_idle_s)
    runtime.retention.keep("sign_in_failures", "window_start", settings.sign_in_window_s)
    # A file uploaded for an import waits an hour at most for its explicit import.
    runtime.retention.keep("import_uploads", "created_at", IMPORT_UPLOAD_KEEP_S)
    static = resources.files("linli.console").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    app.include_router(web.router)
    app.include_router(live.router)
    app.include_router(actions.router)
    web.install_error_pages(app)
    return app
