"""The HTTP shell every service shares: errors, size limits, health, tracing.

Validation errors answer 422 with field-level reasons and never echo the input (it
may hold a resident's name or phone). Bodies over the limit answer 413 before they
are read into memory.
"""

from __future__ import annotations

from typing import Any, Literal

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from linli.contracts.binding import reasons_from_validation_error

from . import openapi
from .auth import AuthMiddleware
from .csvimport import IMPORT_PATH
from .db import TRANSIENT_ERRORS
from .errors import JSONBody, error_response
from .idempotency import KeyReused
from .metrics import HTTPMetricsMiddleware, RouteTemplates
from .runtime import ServiceRuntime

__all__ = ["JSONBody", "create_http_app", "error_response", "validation_response"]
from .telemetry import instrument_statements


class BodyLimitMiddleware:
    """Refuse request bodies over `limit` bytes with 413, streaming or not.

    CSV imports (`IMPORT_PATH`) have their own, larger limit (`import_limit`, ADR 0035).
    """

    def __init__(self, app: ASGIApp, limit: int, import_limit: int | None = None) -> None:
        self.app = app
        self.limit = limit
        self.import_limit = import_limit if import_limit is not None else limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.import_limit if IMPORT_PATH.match(scope["path"]) else self.limit
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = True
                if too_big:
                    await _too_large(limit, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            # Raised outside FastAPI's handlers (e.g. by a plain Starlette route).
            await _too_large(limit, send)


class _BodyTooLarge(HTTPException):
    """Raised while the body streams in; an HTTPException so FastAPI passes it on."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


async def _too_large(limit: int, send: Send) -> None:
    response = error_response(413, "payload_too_large", f"request body over {limit} bytes")
    await response({"type": "http"}, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # The contracts' converter drops input values (pydantic would echo a resident's phone)
    # and turns pydantic locations into paths into the request.
    reasons = reasons_from_validation_error(exc)  # type: ignore[arg-type]
    detail = [r.model_dump() for r in reasons]
    return error_response(422, "validation_failed", detail)


def validation_response(exc: Any, prefix: str = "body") -> JSONResponse:
    """422 for a pydantic ValidationError raised inside a handler."""
    reasons = reasons_from_validation_error(exc, prefix=prefix)
    return error_response(422, "validation_failed", [r.model_dump() for r in reasons])


_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
}


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    """Every error answers `{"error": code, "detail": ...}`."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and "parsing the body" in str(exc.detail):
        # The JSON parser gave up (invalid UTF-8, absurd nesting): still bad JSON.
        detail: Any = [
            {"field": "body", "message": "body is not valid JSON", "code": "json_invalid"}
        ]
        return error_response(422, "validation_failed", detail)
    code = _ERROR_CODES.get(exc.status_code, "error")
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        # Starlette names only the methods of the first route matching the path; FastAPI
        # registers one route per method, so list every route's (RFC 9110: the methods
        # the resource supports).
        headers = {**(headers or {}), "Allow": _allowed_methods(_request)}
    return error_response(exc.status_code, code, exc.detail, headers)


def _allowed_methods(request: Request) -> str:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    order = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    return ", ".join(sorted(methods, key=lambda m: order.index(m) if m in order else 99))


async def _data_error(_request: Request, _exc: Exception) -> JSONResponse:
    """A value the database cannot hold (out of range, bad characters) is bad input."""
    detail = [
        {"field": "", "message": "a value is out of range or invalid", "code": "out_of_range"}
    ]
    return error_response(422, "validation_failed", detail)


async def _key_reused(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(409, "conflict", str(exc))


async def _unavailable(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(
        503, "unavailable", "a dependency is unavailable; retry later", {"Retry-After": "2"}
    )


class Healthy(BaseModel):
    """What /healthz answers."""

    status: Literal["ok"] = Field(description="Always `ok` while the process serves.")


class Readiness(BaseModel):
    """What /readyz answers (200 when `ready`, else 503)."""

    database: bool = Field(description="The database answers and is reachable.")
    nats: bool = Field(description="The NATS connection is up.")
    migrations: bool = Field(description="Every migration of the service is applied.")
    revocations: bool = Field(description="Revoked credentials have been loaded.")
    ready: bool = Field(description="All of the above, and the service has started.")


def create_http_app(
    runtime: ServiceRuntime, *, title: str, description: str, version: str = "1"
) -> FastAPI:
    """A FastAPI app with the runtime in its lifespan and /healthz, /readyz."""
    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=runtime.lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
        default_response_class=JSONBody,
        # FastAPI's own OpenTelemetry: one server span per request, continuing the
        # caller's trace; no spans for dependencies and serialization; no probes.
        telemetry={
            "tracer_provider": runtime.tracer_provider,
            "operation_spans": False,
            "logs": False,
            "metrics": False,  # Prometheus metrics are servicekit's own (ADR 0023)
            "exclude": _probe,
        },
    )
    app.state.runtime = runtime
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(asyncpg.exceptions.DataError, _data_error)
    # A CHECK constraint is the last word on values the models let through (ADR 0047).
    app.add_exception_handler(asyncpg.exceptions.CheckViolationError, _data_error)
    app.add_exception_handler(KeyReused, _key_reused)
    # A database or broker outage is a 503 the client can retry, not a stack trace.
    for exc_type in TRANSIENT_ERRORS:
        app.add_exception_handler(exc_type, _unavailable)
    # Added last so it runs first: authentication before the body limit and parsing.
    app.add_middleware(
        BodyLimitMiddleware,
        limit=runtime.settings.max_body_bytes,
        import_limit=runtime.settings.max_import_bytes,
    )
    app.add_middleware(AuthMiddleware)
    # Outermost: refusals by the two above are counted too.
    app.add_middleware(HTTPMetricsMiddleware, templates=RouteTemplates(app))

    @app.get("/healthz", tags=["health"], summary="The process is alive")
    async def healthz() -> Healthy:
        return Healthy(status="ok")

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Database, NATS and migrations are ready",
        response_model=Readiness,
        responses={
            503: {
                "model": Readiness,
                "description": "Not ready: the checks say which dependency is not.",
            }
        },
    )
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        return JSONResponse(checks, status_code=200 if checks["ready"] else 503)

    openapi.install(app)
    instrument_statements(runtime.tracer_provider)
    return app


def _probe(scope: Scope) -> bool:
    return scope.get("path") in ("/healthz", "/readyz")
