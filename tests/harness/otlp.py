"""An OTLP/HTTP trace receiver for tests: what a collector would get from the services.

`otlp_receiver()` serves POST /v1/traces on 127.0.0.1 (a free port) in the test's event
loop, decodes each `ExportTraceServiceRequest` (protobuf, optionally gzip) with
`opentelemetry.proto`, and keeps every span with its service, ids, name, kind, links and
attributes. Point the services at it with `otlp_env(receiver.endpoint)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .notifications import serve

KINDS = {
    ProtoSpan.SPAN_KIND_UNSPECIFIED: "unspecified",
    ProtoSpan.SPAN_KIND_INTERNAL: "internal",
    ProtoSpan.SPAN_KIND_SERVER: "server",
    ProtoSpan.SPAN_KIND_CLIENT: "client",
    ProtoSpan.SPAN_KIND_PRODUCER: "producer",
    ProtoSpan.SPAN_KIND_CONSUMER: "consumer",
}


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


@dataclass(frozen=True)
class Link:
    trace_id: str
    span_id: str


@dataclass(frozen=True)
class CollectedSpan:
    """One span as a collector received it (ids in lowercase hex)."""

    service: str
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    attributes: dict[str, Any]
    links: tuple[Link, ...] = ()
    start_ns: int = 0
    instance: str = ""
    """The resource's `service.instance.id` (the harness names each replica)."""

    def __str__(self) -> str:
        parent = self.parent_id or "-"
        return f"{self.service} {self.kind} {self.name!r} {self.span_id}<-{parent}"


@dataclass
class OtlpReceiver:
    """The spans received so far, and a way to wait for more."""

    spans: list[CollectedSpan] = field(default_factory=list)
    requests: int = 0
    endpoint: str = ""

    def decode(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            service = str(resource.get("service.name", "?"))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        CollectedSpan(
                            service=service,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex() or None,
                            name=span.name,
                            kind=KINDS.get(span.kind, str(span.kind)),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=tuple(
                                Link(link.trace_id.hex(), link.span_id.hex()) for link in span.links
                            ),
                            start_ns=span.start_time_unix_nano,
                            instance=str(resource.get("service.instance.id", "")),
                        )
                    )

    def app(self) -> Starlette:
        async def traces(request: Request) -> Response:
            body = await request.body()
            if request.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            self.decode(body)
            self.requests += 1
            return Response(
                ExportTraceServiceResponse().SerializeToString(),
                media_type="application/x-protobuf",
            )

        return Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])

    def trace(self, trace_id: str) -> list[CollectedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]

    async def wait_for(
        self,
        predicate: Callable[[list[CollectedSpan]], bool],
        *,
        timeout: float = 20.0,
        what: str = "spans",
    ) -> list[CollectedSpan]:
        """Wait until `predicate(spans)` holds for the spans received so far."""
        deadline = time.monotonic() + timeout
        while not predicate(self.spans):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {len(self.spans)} spans")
            await asyncio.sleep(0.1)
        return self.spans


def otlp_env(endpoint: str) -> dict[str, str]:
    """The standard OTEL_* variables that send a service's spans to `endpoint`, quickly."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_BSP_EXPORT_TIMEOUT": "5000",
    }


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    async with serve(receiver.app()) as base:
        receiver.endpoint = base
        yield receiver
