"""Composition root: `build_app(settings)` wires everything; nothing runs at import."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import FastAPI
from opentelemetry.sdk.trace import SpanProcessor
from pydantic import Field, SecretStr, field_validator, model_validator

from linli.contracts.types import NeedKind
from linli.servicekit import disclosures
from linli.servicekit.db import service_migrations
from linli.servicekit.http import create_http_app
from linli.servicekit.offerlinks import OfferLinkSettings
from linli.servicekit.runtime import ServiceRuntime, periodic
from linli.servicekit.sealing import SecretBox
from linli.servicekit.settings import Environment

from . import api, capacity, capacity_api, offer_links_api, production, rewards_api, rules, service
from .contacts import ContactDirectory, IntakeContactDirectory
from .hsds import api as hsds_api
from .lapses import LapseSweep
from .service import Clock

MIGRATIONS_PACKAGE = "linli.partners"
log = logging.getLogger("linli.partners")


class PartnersSettings(OfferLinkSettings):
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
    points_meal_delivery: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="Points for a delivered meal; unset: the catalogue's default (10).",
    )
    points_elder_care_visit: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="Points for a completed visit; unset: the catalogue's default (20).",
    )
    points_repair: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="Points for a completed repair call; unset: the catalogue's default (30).",
    )
    points_by_kind: dict[str, Annotated[int, Field(ge=0, le=10_000)]] = Field(
        default_factory=dict,
        description="Points per need kind overriding the catalogue's defaults, for any kind "
        "(LINLI_POINTS_BY_KIND, JSON: kind to points); ADR 0045.",
    )

    lapse_poll_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Longest sleep of the lapse sweep between passes (it also wakes when an "
        "offer arrives and when the next open offer expires).",
    )
    lapse_batch: int = Field(default=200, ge=1, le=5000, description="Offers lapsed per pass.")
    run_lapses: bool = Field(
        default=True,
        description="Lapse unanswered offers at their expiry in this process (ADR 0026).",
    )
    secrets_key: SecretStr | None = Field(
        default=None,
        description="Fernet key (LINLI_SECRETS_KEY) sealing reward certificates' codes at "
        "rest (ADR 0041); required in production.",
    )
    certificate_check_limit: int = Field(
        default=30,
        ge=1,
        le=10_000,
        description="Public certificate checks per client address per window (ADR 0041).",
    )
    certificate_check_window_s: float = Field(
        default=60.0, gt=0, le=86_400, description="Window of that limit, in seconds."
    )
    offer_link_limit: int = Field(
        default=30,
        ge=1,
        le=10_000,
        description="Requests to the public offer-link routes per client address per window "
        "(ADR 0043).",
    )
    offer_link_window_s: float = Field(
        default=60.0, gt=0, le=86_400, description="Window of that limit, in seconds."
    )

    slot_horizon_days: int = Field(
        default=7, ge=1, le=60, description="How far ahead slot templates generate slots."
    )
    slot_template_interval_s: float = Field(
        default=60.0, gt=0, le=86_400, description="How often slot templates are checked."
    )
    production_timezone: str = Field(
        default="Asia/Shanghai",
        description="IANA time zone in which a canteen's production list reads its day (ADR 0044).",
    )

    directory_horizon_days: int = Field(
        default=7,
        ge=1,
        le=60,
        description="HSDS service_capacity counts published slots from now to this many days "
        "ahead (ADR 0051).",
    )
    directory_timezone: str = Field(
        default="Asia/Shanghai",
        description="IANA time zone of the directory's local times (one-off schedules).",
    )
    guide_limit: int = Field(
        default=60,
        ge=1,
        le=10_000,
        description="Requests to the public guide per client address per window (ADR 0051).",
    )
    guide_window_s: float = Field(
        default=60.0, gt=0, le=86_400, description="Window of that limit, in seconds."
    )

    @field_validator("production_timezone", "directory_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _check_intake(self) -> Self:
        if self.environment is Environment.PRODUCTION and not self.intake_token:
            raise ValueError("production requires LINLI_INTAKE_TOKEN")
        if self.environment is Environment.PRODUCTION and not self.secrets_key:
            raise ValueError("production requires LINLI_SECRETS_KEY (a Fernet key)")
        return self

    @property
    def points_table(self) -> dict[str, int]:
        """Points per need kind for a volunteer's proven completion."""
        return rules.points_table(
            {
                NeedKind.MEAL_DELIVERY.value: self.points_meal_delivery,
                NeedKind.ELDER_CARE_VISIT.value: self.points_elder_care_visit,
                NeedKind.REPAIR.value: self.points_repair,
                **self.points_by_kind,
            }
        )


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
    runtime.consume(service.subscriptions(clock))

    async def close_directory(_rt: ServiceRuntime) -> None:
        await directory.aclose()

    runtime.on_stop.append(close_directory)
    app = create_http_app(
        runtime,
        title="Linli partners",
        description="Partners and volunteers, their capacity, the dispatch inbox, "
        "completion reports and the volunteer points ledger.",
    )
    app.state.clock = clock
    app.state.contact_directory = directory
    app.state.points_table = settings.points_table
    app.state.production_timezone = settings.production_timezone
    app.state.secret_box = SecretBox(
        settings.secrets_key.get_secret_value() if settings.secrets_key else None
    )
    if not app.state.secret_box.encrypting:
        log.warning("reward certificate codes are stored unencrypted (no secrets_key)")
    app.state.certificate_check_limit = rewards_api.public_check_limit(
        settings.certificate_check_limit, settings.certificate_check_window_s
    )
    app.include_router(api.router)
    app.include_router(api.me_router)
    app.include_router(disclosures.router())
    app.include_router(api.imports_router)
    app.include_router(rewards_api.router)
    app.include_router(rewards_api.public_router)
    app.state.offer_links = settings.offer_links()
    app.state.offer_link_limit = offer_links_api.link_limit(
        settings.offer_link_limit, settings.offer_link_window_s
    )
    app.include_router(offer_links_api.public_router)
    app.include_router(capacity_api.router)
    _run_templates(app, runtime, settings, clock)
    app.include_router(production.router)
    app.state.directory = {
        "horizon_days": settings.directory_horizon_days,
        "timezone": settings.directory_timezone,
    }
    app.state.guide_limit = hsds_api.guide_limit(settings.guide_limit, settings.guide_window_s)
    app.include_router(hsds_api.router)
    app.include_router(hsds_api.public_router)
    api.install_error_handlers(app)
    _run_lapses(app, runtime, settings, clock)
    return app


def _run_lapses(
    app: FastAPI, runtime: ServiceRuntime, settings: PartnersSettings, clock: Clock
) -> None:
    """Lapse unanswered offers at their expiry, from start to stop (every replica)."""
    app.state.lapses = None
    if not settings.run_lapses:
        return

    async def start(rt: ServiceRuntime) -> None:
        sweep = LapseSweep(
            rt.pool,
            settings.db_schema,
            clock=clock,
            dsn=rt.dsn,
            poll_interval=settings.lapse_poll_interval_s,
            batch=settings.lapse_batch,
        )
        await sweep.start()
        app.state.lapses = sweep

    async def stop(_rt: ServiceRuntime) -> None:
        if app.state.lapses is not None:
            await app.state.lapses.stop()

    runtime.on_start.append(start)
    runtime.on_stop.append(stop)


def _run_templates(
    app: FastAPI, runtime: ServiceRuntime, settings: PartnersSettings, clock: Clock
) -> None:
    """Generate slot templates' slots ahead (every replica may; ADR 0042)."""
    app.state.template_wake = asyncio.Event()

    async def generate() -> None:
        async with runtime.pool.acquire() as conn:
            await capacity.generate_template_slots(
                conn, clock=clock, horizon_days=settings.slot_horizon_days
            )

    runtime.background(
        "slot-templates",
        lambda: periodic(
            "slot-templates",
            settings.slot_template_interval_s,
            generate,
            wake=app.state.template_wake,
        ),
    )
