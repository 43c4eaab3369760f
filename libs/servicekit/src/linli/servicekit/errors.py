"""The one error shape of every Linli API, and JSON bodies rendered with orjson."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from linli.contracts.types import Reason


class JSONBody(JSONResponse):
    """JSON bodies rendered with orjson (routes with a response model use pydantic's)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def error_response(
    status_code: int, error: str, detail: Any, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The one error shape of every Linli API: `{"error": code, "detail": ...}`."""
    return JSONBody({"error": error, "detail": detail}, status_code=status_code, headers=headers)


class ErrorBody(BaseModel):
    """The one error shape, for OpenAPI `responses` (what `error_response` sends)."""

    error: str = Field(description="Machine-readable code, e.g. validation_failed, not_found.")
    detail: list[Reason] | str = Field(
        description="Field-level reasons ({field, message, code}, never input values) or a "
        "sentence."
    )
