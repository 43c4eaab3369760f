"""Prometheus metrics every service shares (ADR 0023).

One set of metrics, defined once here and recorded where the work happens: the one
consumption path (`consume.py`), the outbox relay, the HTTP shell, and a few
service-specific places (scheduling's reservations and SLA clocks, notifications'
webhooks and messages). Each process serves them in Prometheus text format on its own
port (`LINLI_METRICS_PORT`), apart from the authenticated API.

Labels are bounded and carry no personal data: an event type from the contracts'
registry (anything else is `unregistered`), a consumer's durable name, a route
template (never the path a caller sent), a community slug and a need kind. Need,
resident and partner ids never become labels.

Gauges that read the database or JetStream (outbox backlog and age, open dead letters,
consumer lag, SLA clocks) are refreshed by `MetricsRefresher` every
`metrics_refresh_s`; every replica reports the same values, so dashboards and alerts
aggregate them with `max`, not `sum`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js import JetStreamContext
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from linli.contracts.registry import lookup

from .db import Conn

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

EVENTS_CONSUMED = Counter(
    "linli_events_consumed",
    "Events a consumer took from the stream, by outcome: handled, duplicate (seen "
    "before), skipped (no use case for the type), retried, dead_lettered.",
    ["consumer", "type", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "linli_event_handler_duration_seconds",
    "Time a use case took for one event, inside its batch's transaction.",
    ["consumer", "type"],
    buckets=_LATENCY_BUCKETS,
)
EVENTS_PUBLISHED = Counter(
    "linli_events_published",
    "Events the outbox relay published to the stream (acknowledged by JetStream).",
    ["type"],
)
OUTBOX_BACKLOG = Gauge(
    "linli_outbox_backlog", "Outbox rows not yet published (quarantined rows aside)."
)
OUTBOX_OLDEST_AGE = Gauge(
    "linli_outbox_oldest_age_seconds",
    "Age of the oldest outbox row not yet published; 0 when the outbox is drained.",
)
OUTBOX_QUARANTINED = Counter(
    "linli_outbox_quarantined",
    "Outbox rows quarantined after the server refused them max_attempts times, by reason: "
    "no_stream, max_payload, permissions, rejected.",
    ["type", "reason"],
)
OUTBOX_QUARANTINED_ROWS = Gauge(
    "linli_outbox_quarantined_rows",
    "Outbox rows quarantined now (never published until an operator re-queues them).",
)
CONSUMER_PENDING = Gauge(
    "linli_consumer_pending",
    "Messages of the stream a durable consumer has not yet been given (JetStream num_pending).",
    ["consumer"],
)
CONSUMER_ACK_PENDING = Gauge(
    "linli_consumer_ack_pending",
    "Messages given to a durable consumer and not yet acknowledged.",
    ["consumer"],
)
CONSUMER_REDELIVERIES = Counter(
    "linli_consumer_redeliveries",
    "Messages received again after an earlier delivery was not acknowledged.",
    ["consumer"],
)
DEAD_LETTERS = Counter(
    "linli_dead_letters",
    "Messages set aside as dead letters, by the code of their first reason.",
    ["consumer", "code"],
)
DATABASE_UNREACHABLE = Gauge(
    "linli_database_unreachable",
    "1 while this process finds PostgreSQL unreachable: its consumers hold the messages "
    "in hand and pull nothing more until a probe answers (ADR 0027), else 0.",
)
DATABASE_OUTAGES = Counter(
    "linli_database_outages",
    "Times this process found PostgreSQL unreachable and paused consuming.",
)
DEAD_LETTERS_OPEN = Gauge(
    "linli_dead_letters_open", "Dead letters stored and not replayed (this service's schema)."
)
RESERVATION_CONFLICTS = Counter(
    "linli_reservation_conflicts",
    "Times a fitting slot's capacity was held or taken by a concurrent reservation.",
    ["community", "kind"],
)
NEEDS_SLA = Gauge(
    "linli_needs_sla",
    "Open needs whose SLA clock is at risk or breached (no series where there are none).",
    ["community", "kind", "state"],
)
WEBHOOK_ATTEMPTS = Counter(
    "linli_webhook_attempts", "Webhook delivery attempts, by outcome.", ["outcome"]
)
WEBHOOK_DISABLED = Counter(
    "linli_webhook_endpoints_disabled",
    "Webhook subscriptions disabled by the delivery worker, by reason.",
    ["reason"],
)
MESSAGES = Counter(
    "linli_messages", "Messages to people (SMS, e-mail), by outcome.", ["channel", "outcome"]
)
HTTP_REQUESTS = Counter(
    "linli_http_requests",
    "HTTP requests answered, by route template and status.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "linli_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
RETENTION_PURGED = Counter(
    "linli_retention_purged",
    "Rows deleted by the retention purge, by table (ADR 0029).",
    ["table"],
)
READY = Gauge("linli_ready", "1 when the service is ready (what /readyz answers), else 0.")

UNREGISTERED = "unregistered"
UNMATCHED = "unmatched"


def event_type(ce_type: str | None) -> str:
    """A label for an event type: the type when the contracts know it, else `unregistered`.

    Types come from the stream, which other systems write to; an unknown one must not
    mint a new time series each time.
    """
    if not ce_type:
        return UNREGISTERED
    try:
        lookup(ce_type)
    except (KeyError, ValueError):
        return UNREGISTERED
    return ce_type


def serve(host: str, port: int) -> Callable[[], None]:
    """Serve the default registry on `host:port` (a thread); returns a stop function."""
    server, thread = start_http_server(port, addr=host, registry=REGISTRY)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


class RouteTemplates:
    """Finds the route template of a path: `/v1/communities/{community}/needs`.

    Built once from the app's OpenAPI paths and its plain routes (docs, schema), so a
    request refused before routing (401, 413) is labelled like one that was routed. A
    path no template matches is `unmatched`.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._known: frozenset[str] | None = None
        self._patterns: list[tuple[re.Pattern[str], str]] = []

    def _build(self) -> frozenset[str]:
        templates = set(self._app.openapi().get("paths", {}))
        templates.update(
            r.path for r in self._app.router.routes if isinstance(getattr(r, "path", None), str)
        )
        # Literal segments win over parameters: /v1/me/offers before /v1/{x}/offers.
        ordered = sorted(templates, key=lambda t: (t.count("{"), -len(t)))
        self._patterns = [(re.compile(_template_regex(t)), t) for t in ordered]
        self._known = frozenset(templates)
        return self._known

    def template(self, scope: Scope) -> str:
        known = self._known if self._known is not None else self._build()
        route = scope.get("route")
        routed = getattr(route, "path", None)
        if routed in known:
            return str(routed)
        path = scope.get("path", "")
        for pattern, template in self._patterns:
            if pattern.fullmatch(path):
                return template
        return UNMATCHED


def _template_regex(template: str) -> str:
    out, pos = [], 0
    for param in re.finditer(r"{([^}:]+)(?::([^}]+))?}", template):
        out.append(re.escape(template[pos : param.start()]))
        out.append(".+" if param.group(2) == "path" else "[^/]+")
        pos = param.end()
    out.append(re.escape(template[pos:]))
    return "".join(out)


class HTTPMetricsMiddleware:
    """Counts and times every HTTP request by its route template.

    Runs outermost, so requests refused before routing (401, 413) are counted too, under
    their template (`RouteTemplates`); a scanner's random paths are all `unmatched` and
    never mint time series. Probes are not counted.
    """

    def __init__(self, app: ASGIApp, templates: RouteTemplates) -> None:
        self.app = app
        self._templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in ("/healthz", "/readyz"):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = self._templates.template(scope)
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - start)


Refresh = Callable[[Conn], Awaitable[None]]


class MetricsRefresher:
    """Reads the gauges that live in the database and in JetStream, on a timer."""

    def __init__(self) -> None:
        self.extra: list[Refresh] = []
        """Service-specific gauges (scheduling's SLA clocks)."""

    async def refresh(self, conn: Conn) -> None:
        """Outbox backlog, age and quarantine, open dead letters, the service's own gauges.

        Quarantined rows are not backlog: they have their own gauge and alert, and
        counting them would keep `LinliOutboxStuck` firing for one row.
        """
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE quarantined_at IS NULL) AS backlog, "
            "coalesce(extract(epoch FROM now() - min(created_at) "
            "FILTER (WHERE quarantined_at IS NULL)), 0) AS oldest, "
            "count(*) FILTER (WHERE quarantined_at IS NOT NULL) AS quarantined "
            "FROM outbox WHERE sent_at IS NULL"
        )
        assert row is not None
        OUTBOX_BACKLOG.set(row["backlog"])
        OUTBOX_OLDEST_AGE.set(float(row["oldest"]))
        OUTBOX_QUARANTINED_ROWS.set(row["quarantined"])
        DEAD_LETTERS_OPEN.set(
            await conn.fetchval("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
        )
        for refresh in self.extra:
            await refresh(conn)

    async def refresh_consumers(
        self, js: JetStreamContext, durables: list[tuple[str, str]]
    ) -> None:
        """Lag of each durable: not yet delivered, and delivered but not acknowledged."""
        for stream, durable in durables:
            info = await js.consumer_info(stream, durable)
            CONSUMER_PENDING.labels(durable).set(info.num_pending or 0)
            CONSUMER_ACK_PENDING.labels(durable).set(info.num_ack_pending or 0)


def set_labelled(gauge: Gauge, rows: list[tuple[tuple[str, ...], float]]) -> None:
    """Replace every series of `gauge` with `rows`.

    A label set that is no longer there is removed rather than kept at 0, so the series
    follow what is open now (a province has ten thousand communities; only those with
    needs at risk have series) and an alert on them resolves when they go.
    """
    wanted = {labels: value for labels, value in rows if value}
    for labels in _label_sets(gauge):
        if labels not in wanted:
            gauge.remove(*labels)
    for labels, value in wanted.items():
        gauge.labels(*labels).set(value)


def _label_sets(gauge: Gauge) -> list[tuple[str, ...]]:
    return list(getattr(gauge, "_metrics", {}).keys())
