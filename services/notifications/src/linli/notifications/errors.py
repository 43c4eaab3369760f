"""Outcomes of notifications' use cases, answered in Linli's one error shape.

Use cases raise these; `install_error_handlers` turns them into
`servicekit.http.error_response` answers (`{"error": code, "detail": ...}`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from linli.servicekit.http import error_response


class NotFound(Exception):
    """404: the thing does not exist for this caller (the message is the detail)."""


class BadRequest(Exception):
    """400: a header or parameter the request cannot be served with."""


class Rejected(Exception):
    """422: one field is invalid; the reason names it, says why and gives a code."""

    def __init__(self, field: str, message: str, code: str) -> None:
        super().__init__(f"{field}: {message}")
        self.reason = {"field": field, "message": message, "code": code}


def install_error_handlers(app: FastAPI) -> None:
    """Map use-case outcomes to HTTP answers."""

    async def not_found(_r: Request, exc: Exception) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    async def bad_request(_r: Request, exc: Exception) -> JSONResponse:
        return error_response(400, "bad_request", str(exc))

    async def rejected(_r: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Rejected)
        detail: list[dict[str, Any]] = [exc.reason]
        return error_response(422, "validation_failed", detail)

    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(BadRequest, bad_request)
    app.add_exception_handler(Rejected, rejected)
