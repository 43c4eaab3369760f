"""Composition root: `build_app(settings)` wires everything; nothing runs at import."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.sdk.trace import SpanProcessor
from pydantic import Field

from linli.servicekit import metrics
from linli.servicekit.db import Conn, service_migrations
from linli.servicekit.http import create_http_app
from linli.servicekit.runtime import ServiceRuntime
from linli.servicekit.settings import ServiceSettings

from . import api, staff_api, store
from .reminders import ReminderPolicy
from .rules import Policy
from .service import Clock, Scheduler, SchedulingConfig
from .timers import TimerLoop

MIGRATIONS_PACKAGE = "linli.scheduling"
CONSUMER = "scheduling"


class SchedulingSettings(ServiceSettings):
    """Scheduling's settings: the shared ones plus time, offers and timers."""

    service_name: str = "scheduling"
    http_port: int = 8103
    time_scale: float = Field(
        default=1.0,
        gt=0,
        le=1_000_000,
        description="SLA seconds per real second: 60 runs a 24-hour promise in 24 minutes. "
        "Scales offer timeouts and SLA durations, never meal or visit windows.",
    )
    offer_timeout_s: float = Field(
        default=30 * 60.0, gt=0, description="How long a candidate has to answer (SLA seconds)."
    )
    offer_timeout_emergency_s: float = Field(
        default=3 * 60.0,
        gt=0,
        description="The same for emergencies (SLA seconds): short enough that a second "
        "candidate can still accept inside the 10-minute acceptance promise.",
    )
    reminder_lead_s: float = Field(
        default=3600.0,
        ge=0,
        le=7 * 86_400,
        description="Real seconds before an accepted need's window starts when the helper "
        "who accepted it is reminded (`assignment.reminder_due`, ADR 0043); 0: no reminders.",
    )
    reminder_kinds: str = Field(
        default="elder_care_visit,repair",
        max_length=1000,
        pattern=r"^[a-z0-9_,]*$",
        description="Comma-separated need kinds whose helpers are reminded.",
    )
    offer_verdict_grace_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="Real seconds after an offer's expiry without partners' verdict (an "
        "answer or `offer.lapsed`) after which operators are told (`offer_unanswered`). "
        "The need stays offered: only partners decides (ADR 0026).",
    )
    sla_at_risk_fraction: float = Field(
        default=0.8, gt=0, lt=1, description="Share of an SLA clock after which it is at risk."
    )
    timer_poll_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="Longest sleep of the timer loop between passes."
    )
    timer_batch: int = Field(default=100, ge=1, le=5000, description="Timers per pass.")
    timers_retention_s: float = Field(
        default=30 * 24 * 3600.0,
        gt=0,
        description="Fired timers (the history the API shows) are kept this long (ADR 0029).",
    )
    run_timers: bool = Field(default=True, description="Fire durable timers in this process.")
    policy_cache_s: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How long a community's SLA policy is reused before it is read again; "
        "a change made with the CLI reaches every replica within this time.",
    )
    rematch_delay_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Retry delay when the only fitting slot was held by another replica.",
    )


def default_settings() -> SchedulingSettings:
    """Settings from the environment (LINLI_*); unset ones take scheduling's defaults."""
    return SchedulingSettings()


def scheduler_for(settings: SchedulingSettings, clock: Clock | None = None) -> Scheduler:
    policy = Policy(
        offer_timeout_s=settings.offer_timeout_s,
        offer_timeout_emergency_s=settings.offer_timeout_emergency_s,
        at_risk_fraction=settings.sla_at_risk_fraction,
    )
    return Scheduler(
        SchedulingConfig(
            default_policy=policy,
            time_scale=settings.time_scale,
            rematch_delay_s=settings.rematch_delay_s,
            offer_verdict_grace_s=settings.offer_verdict_grace_s,
            policy_cache_s=settings.policy_cache_s,
            reminders=ReminderPolicy(
                lead_s=settings.reminder_lead_s,
                kinds=frozenset(k for k in settings.reminder_kinds.split(",") if k),
            ),
        ),
        clock,
    )


def build_app(
    settings: SchedulingSettings,
    *,
    clock: Clock | None = None,
    span_processor: SpanProcessor | None = None,
) -> FastAPI:
    """The scheduling process: event consumer, timer loop, outbox relay, HTTP API."""
    runtime = ServiceRuntime(
        settings,
        service_migrations(MIGRATIONS_PACKAGE, "scheduling"),
        span_processor=span_processor,
    )
    scheduler = scheduler_for(settings, clock)
    # One inbox name whatever the streams' scope, so re-scoping never applies an event twice.
    runtime.consume(scheduler.subscriptions(CONSUMER))
    runtime.metrics.extra.append(_sla_gauges)
    runtime.retention.keep("timers", "fired_at", settings.timers_retention_s)
    app = create_http_app(
        runtime,
        title="Linli scheduling",
        description="Matching and dispatch: slots, reservations, offers, SLA clocks.",
    )
    app.state.scheduler = scheduler
    app.include_router(api.router)
    app.include_router(staff_api.router)
    staff_api.install_error_handlers(app)
    _run_timers(app, runtime, settings, scheduler)
    return app


async def _sla_gauges(conn: Conn) -> None:
    """`linli_needs_sla`: open needs at risk or in breach, per community and kind."""
    rows = await store.sla_open_counts(conn)
    values: list[tuple[tuple[str, ...], float]] = []
    for r in rows:
        values.append(((r["community"], r["kind"], "at_risk"), r["at_risk"]))
        values.append(((r["community"], r["kind"], "breached"), r["breached"]))
    metrics.set_labelled(metrics.NEEDS_SLA, values)


def _run_timers(
    app: FastAPI, runtime: ServiceRuntime, settings: SchedulingSettings, scheduler: Scheduler
) -> None:
    """Fire durable timers from start to stop (every replica; rows are claimed)."""
    app.state.timers = None
    if not settings.run_timers:
        return

    async def start(rt: ServiceRuntime) -> None:
        loop = TimerLoop(
            rt.pool,
            scheduler,
            settings.db_schema,
            dsn=rt.dsn,
            poll_interval=settings.timer_poll_interval_s,
            batch=settings.timer_batch,
        )
        await loop.start()
        app.state.timers = loop

    async def stop(_rt: ServiceRuntime) -> None:
        if app.state.timers is not None:
            await app.state.timers.stop()

    runtime.on_start.append(start)
    runtime.on_stop.append(stop)
