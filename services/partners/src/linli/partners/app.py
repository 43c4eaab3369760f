"""Composition root: `build_app(settings)` wires everything; nothing runs at import."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Self

from fastapi import FastAPI
from nats.aio.msg import Msg
from opentelemetry.sdk.trace import SpanProcessor
from pydantic import Field, SecretStr, model_validator

from linli.contracts.binding import from_nats
from linli.contracts.envelope import EnvelopeError
from linli.contracts.subjects import SubjectError, parse_subject
from linli.contracts.types import NeedKind, Reason
from linli.servicekit.db import service_migrations
from linli.servicekit.http import create_http_app
from linli.servicekit.messaging import PoisonMessage
from linli.servicekit.runtime import ServiceRuntime
from linli.servicekit.settings import Environment, ServiceSettings

from . import api, service
from .contacts import ContactDirectory, IntakeContactDirectory
from .service import Clock

MIGRATIONS_PACKAGE = "linli.partners"


class PartnersSettings(ServiceSettings):
    """Partners' settings: the shared ones, intake's address and the points table."""

    service_name: str = "partners"
    http_port: int = 8102
    intake_url: str = Field(
        default="http://127.0.0.1:8101",
        description="Base URL of intake, asked for a resident's contact after acceptance.",
    )
    intake_token: SecretStr | None = Field(
        default=None, description="Bearer token (a `service` credential issued by intake)."
    )
    intake_timeout_s: float = Field(default=3.0, gt=0, le=30)
    points_meal_delivery: int = Field(
        default=10, ge=0, le=10_000, description="Points for a delivered meal."
    )
    points_elder_care_visit: int = Field(
        default=20, ge=0, le=10_000, description="Points for a completed visit."
    )
    points_repair: int = Field(
        default=30, ge=0, le=10_000, description="Points for a completed repair call."
    )

    @model_validator(mode="after")
    def _check_intake(self) -> Self:
        if self.environment is Environment.PRODUCTION and not self.intake_token:
            raise ValueError("production requires LINLI_INTAKE_TOKEN")
        return self

    @property
    def points_table(self) -> dict[str, int]:
        """Points per need kind for a volunteer's proven completion."""
        return {
            NeedKind.MEAL_DELIVERY.value: self.points_meal_delivery,
            NeedKind.ELDER_CARE_VISIT.value: self.points_elder_care_visit,
            NeedKind.REPAIR.value: self.points_repair,
        }


def default_settings() -> PartnersSettings:
    """Settings from the environment (LINLI_*); unset ones take partners' defaults."""
    return PartnersSettings()


def build_app(
    settings: PartnersSettings,
    *,
    contact_directory: ContactDirectory | None = None,
    clock: Clock | None = None,
    span_processor: SpanProcessor | None = None,
) -> FastAPI:
    """The partners process: HTTP API, the dispatch-inbox consumer, the outbox relay."""
    runtime = ServiceRuntime(
        settings,
        service_migrations(MIGRATIONS_PACKAGE, "partners"),
        span_processor=span_processor,
    )
    clock = clock or Clock()
    directory = contact_directory or IntakeContactDirectory(
        settings.intake_url,
        settings.intake_token.get_secret_value() if settings.intake_token else None,
        timeout_s=settings.intake_timeout_s,
    )
    _subscribe_events(runtime, settings, clock)
    app = create_http_app(
        runtime,
        title="Linli partners",
        description="Partners and volunteers, their capacity, the dispatch inbox, "
        "completion reports and the volunteer points ledger.",
    )
    app.state.clock = clock
    app.state.contact_directory = directory
    app.state.points_table = settings.points_table
    app.include_router(api.router)
    app.include_router(api.me_router)
    api.install_error_handlers(app)
    _close_on_shutdown(app, directory)
    return app


def _close_on_shutdown(app: FastAPI, directory: ContactDirectory) -> None:
    # The runtime's lifespan has no stop hooks; wrap it so the HTTP client closes too.
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            try:
                yield state
            finally:
                await directory.aclose()

    app.router.lifespan_context = lifespan


def _subscribe_events(runtime: ServiceRuntime, settings: PartnersSettings, clock: Clock) -> None:
    """All of partners' subscriptions, in one place."""

    async def handle(raw: Msg) -> None:
        event = _decode(raw.subject, raw.data, dict(raw.headers or {}))
        if event is None:
            return
        async with runtime.pool.acquire() as conn:
            try:
                # One inbox name whatever the durables are called, so re-scoping the
                # subscriptions never applies an event twice.
                await service.handle_event(conn, event, clock=clock)
            except EnvelopeError as exc:
                raise PoisonMessage(exc.reasons) from None

    runtime.consume_events(
        service.CONSUMER,
        handle,
        description="assignment.offered into the offered party's inbox; assignment.expired, "
        "need.cancelled and need.fulfilled withdraw offers; other events are skipped",
    )


def _decode(subject: str, data: bytes, headers: dict[str, str]) -> Any:
    """The event, None when it is not one partners handles; poison when unreadable."""
    try:
        parsed = parse_subject(subject)
    except SubjectError:
        return None
    if parsed.type not in service.HANDLERS:
        # Most of the stream is other services' business: skip it without parsing.
        return None
    try:
        event = from_nats(data, headers)
    except EnvelopeError as exc:
        raise PoisonMessage(exc.reasons) from None
    if event.type != parsed.type or event.community != parsed.community:
        raise PoisonMessage(
            [
                Reason(
                    field="subject",
                    message="subject does not match the event's type and community",
                    code="subject_mismatch",
                )
            ]
        )
    return event
