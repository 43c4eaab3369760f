"""servicekit's OpenAPI post-processing (`openapi.truthful`, ADR 0047) on a small app.

The rules are checked on the document, and the probe is shown to fail: schemathesis'
own `status_code_conformance` check catches a status a route answers without declaring
it, and passes the same route once the status is declared with `errors(...)`.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI, Header, Query
from pydantic import BaseModel
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import status_code_conformance

from linli.servicekit import openapi
from linli.servicekit.errors import JSONBody, error_response

pytestmark = pytest.mark.unit


class Thing(BaseModel):
    id: uuid.UUID
    name: str


def small_app(*, declare_teapot: bool) -> FastAPI:
    app = FastAPI(default_response_class=JSONBody)

    @app.post("/v1/things", status_code=201, response_model=Thing)
    async def create(thing: Thing, key: str | None = Header(None, alias="Idempotency-Key")) -> Any:
        return thing

    @app.get("/v1/things/{thing_id}", response_model=Thing)
    async def get(thing_id: uuid.UUID) -> Any:
        return Thing(id=thing_id, name="x")

    @app.get("/v1/catalogue")
    async def catalogue() -> list[str]:
        return []

    @app.get("/public/v1/things", response_model=list[Thing])
    async def public(limit: int = Query(10, ge=1, le=50)) -> Any:
        return []

    teapot = openapi.errors(418, s418="A teapot.") if declare_teapot else None

    @app.get("/planted", responses=teapot)
    async def planted() -> Any:
        return error_response(418, "teapot", "short and stout")

    openapi.install(app)
    return app


def test_universal_statuses_and_the_one_error_body() -> None:
    doc = small_app(declare_teapot=False).openapi()
    components = doc["components"]["schemas"]
    assert "ErrorBody" in components
    assert "HTTPValidationError" not in components
    assert "ValidationError" not in components

    def statuses(path: str, method: str) -> set[str]:
        return set(doc["paths"][path][method]["responses"])

    assert statuses("/v1/things", "post") == {"201", "401", "403", "409", "413", "422", "503"}
    assert statuses("/v1/things/{thing_id}", "get") == {"200", "401", "403", "404", "422", "503"}
    assert statuses("/v1/catalogue", "get") == {"200", "401", "403", "503"}
    assert statuses("/public/v1/things", "get") == {"200", "422", "429", "503"}
    assert statuses("/planted", "get") == {"200"}
    answer = doc["paths"]["/v1/things/{thing_id}"]["get"]["responses"]["422"]
    assert answer["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }


def test_a_create_links_to_the_operations_on_what_it_created() -> None:
    doc = small_app(declare_teapot=False).openapi()
    links = doc["paths"]["/v1/things"]["post"]["responses"]["201"]["links"]
    (link,) = links.values()
    assert link["parameters"] == {"thing_id": "$response.body#/id"}
    assert link["operationId"] == doc["paths"]["/v1/things/{thing_id}"]["get"]["operationId"]


def _check_planted(app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operation = schema["/planted"]["GET"]
    case = operation.Case()
    response = case.call()
    assert response.status_code == 418
    case.validate_response(response, checks=[status_code_conformance])


def test_a_planted_undeclared_status_is_caught() -> None:
    with pytest.raises(FailureGroup) as caught:
        _check_planted(small_app(declare_teapot=False))
    assert "ST103 Undocumented status code" in str(caught.value)
    assert "Received: 418" in str(caught.value)
    # Declared on the route, the same answer passes (and gets the error body schema).
    _check_planted(small_app(declare_teapot=True))


def test_cursors_round_trip_and_match_their_pattern() -> None:
    import re
    from datetime import UTC, datetime

    from linli.servicekit.cursors import CURSOR_PATTERN, decode_cursor, encode_cursor

    at = datetime(2026, 5, 1, 3, 30, 0, 123456, tzinfo=UTC)
    row = uuid.uuid4()
    cursor = encode_cursor(at, row)
    assert re.fullmatch(CURSOR_PATTERN, cursor)
    assert decode_cursor(cursor) == (at, row)
    assert decode_cursor(None) is None
    # The largest cursor the pattern admits still decodes.
    assert decode_cursor("9" * 17 + "." + "f" * 32) is not None


def test_a_route_with_its_own_credential_declares_401() -> None:
    from fastapi import Depends
    from fastapi.security import APIKeyQuery

    app = FastAPI()

    @app.get("/open/requests")
    async def requests(key: str = Depends(APIKeyQuery(name="api_key"))) -> list[str]:
        return []

    openapi.install(app)
    responses = app.openapi()["paths"]["/open/requests"]["get"]["responses"]
    assert set(responses) == {"200", "401"}
