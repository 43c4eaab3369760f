"""OpenTelemetry bootstrap driven by the standard `OTEL_*` variables.

`OTEL_TRACES_EXPORTER` picks the exporter (`otlp`, `console`, `none`; default
`none` so a laptop without a collector stays quiet), `OTEL_EXPORTER_OTLP_*` configure
OTLP, `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` name the resource. Tests pass
their own span processor to collect spans in memory.

Spans are per HTTP request (FastAPI's own telemetry), per consumed message
(`linli.servicekit.consume`) and per published event (the outbox relay). A span per SQL
statement costs more than the statement on the client (a sixth of a busy service's CPU,
measured), so the asyncpg instrumentation is off unless
`OTEL_PYTHON_ASYNCPG_STATEMENT_SPANS=true` asks for it (SQL text only, never values).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_provider: TracerProvider | None = None
_PROPAGATOR = TraceContextTextMapPropagator()


def setup_tracing(
    service_name: str, *, extra_processor: SpanProcessor | None = None
) -> TracerProvider:
    """Install one tracer provider per process (idempotent) and return it."""
    global _provider
    if _provider is not None:
        if extra_processor is not None:
            _provider.add_span_processor(extra_processor)
        return _provider
    name = os.environ.get("OTEL_SERVICE_NAME", service_name)
    resource = Resource.create({"service.name": name}).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)
    exporter_names = os.environ.get("OTEL_TRACES_EXPORTER", "none")
    for exporter_name in (e.strip() for e in exporter_names.split(",")):
        if exporter_name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif exporter_name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    if extra_processor is not None:
        provider.add_span_processor(extra_processor)
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def tracer(name: str = "linli") -> trace.Tracer:
    """The tracer for Linli's own spans."""
    return trace.get_tracer(name)


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, if one is recording."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def context_from_traceparent(traceparent: str | None) -> Context | None:
    """Restore a context stored with an outbox row or a timer."""
    if not traceparent:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})


@contextlib.contextmanager
def resumed_span(
    name: str,
    traceparent: str | None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span that continues the trace a stored `traceparent` names (a need's, kept with
    its offer), linked to the current span (the request that resumes it; ADR 0025).

    The request that resumes work on a need (a partner's accept, a report) arrives with a
    trace of its own; what it causes for the need belongs to the need's trace, so that one
    trace tells a need's whole story. The link keeps the way back to the request. With no
    stored traceparent the span is simply a child of the current one.
    """
    parent = context_from_traceparent(traceparent)
    current = trace.get_current_span().get_span_context()
    links = [Link(current)] if parent is not None and current.is_valid else None
    with tracer().start_as_current_span(
        name, context=parent, kind=kind, links=links, attributes=attributes
    ) as span:
        yield span


def context_from_headers(headers: Mapping[str, str] | None) -> Context:
    """Extract the trace context from message headers (W3C or `ce-traceparent`)."""
    carrier = dict(headers or {})
    if "traceparent" not in carrier and "ce-traceparent" in carrier:
        carrier["traceparent"] = carrier["ce-traceparent"]
    return propagate.extract(carrier)


STATEMENT_SPANS_ENV = "OTEL_PYTHON_ASYNCPG_STATEMENT_SPANS"


def statement_spans_enabled() -> bool:
    """Whether a span per SQL statement was asked for (`OTEL_PYTHON_ASYNCPG_STATEMENT_SPANS`)."""
    return os.environ.get(STATEMENT_SPANS_ENV, "").strip().lower() in ("1", "true", "yes")


def instrument_statements(tracer_provider: Any) -> None:
    """Turn on the asyncpg instrumentation once per process, when asked for."""
    if not statement_spans_enabled():
        return
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    instrumentor = AsyncPGInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=tracer_provider)
