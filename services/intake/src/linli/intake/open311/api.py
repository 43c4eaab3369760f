"""Open311 GeoReport v2 routes under `/open311/v2` (ADR 0050).

One jurisdiction per community: `jurisdiction_id` is the community slug; it may be left
out when the credential names exactly one community. Every route is authenticated (a
Linli credential as `Authorization: Bearer`, or the specification's `api_key` form field
on `POST /requests`) and scoped: another community answers 404. Answers are JSON or XML
by the path's suffix; errors are the specification's `[{"code", "description"}]` (or
`<errors>`), one entry per reason with the field it concerns.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

import asyncpg
from fastapi import Depends, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, APIRouter
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from linli.contracts.binding import reasons_from_validation_error
from linli.contracts.catalogue import CATALOGUE
from linli.contracts.types import COMMUNITY_SLUG_PATTERN, NeedKind, Reason, Role
from linli.intake import service, store
from linli.servicekit.auth import ALL_COMMUNITIES, Principal, current_principal
from linli.servicekit.db import TRANSIENT_ERRORS
from linli.servicekit.errors import ErrorBody, JSONBody
from linli.servicekit.idempotency import (
    REPLAYED_HEADER,
    Idempotency,
    IdempotencyKey,
    KeyReused,
)
from linli.servicekit.telemetry import current_traceparent

from . import mapping

PREFIX = "/open311/v2"


class Open311Error(Exception):
    """An answer in the specification's error format."""

    def __init__(
        self,
        status: int,
        reasons: Sequence[Reason] | str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(str(reasons))
        self.status = status
        self.reasons = reasons
        self.headers = headers


def _wants_xml(request: Request) -> bool:
    return request.url.path.endswith(".xml")


def error_answer(
    request: Request,
    status: int,
    reasons: Sequence[Reason] | str,
    headers: dict[str, str] | None = None,
) -> Response:
    errors = mapping.error_list(status, reasons)
    if _wants_xml(request):
        body = mapping.xml_document("errors", "error", errors)
        return Response(body, status, headers=headers, media_type=mapping.XML_TYPE)
    return JSONBody(errors, status_code=status, headers=headers)


def _query_field(reason: Reason) -> Reason:
    name = reason.field
    for prefix in ("query.", "path.", "header.", "body."):
        name = name.removeprefix(prefix)
    return Reason(field=name or "request", message=reason.message, code=reason.code)


def _unavailable(request: Request) -> Response:
    return error_answer(
        request, 503, "a dependency is unavailable; retry later", {"Retry-After": "2"}
    )


class Open311Route(APIRoute):
    """Every failure of an Open311 route answers in the specification's error format,
    in the format the path asks for (the app's handlers answer Linli's shape)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Open311Error as exc:
                return error_answer(request, exc.status, exc.reasons, exc.headers)
            except RequestValidationError as exc:
                # Authenticated first: a caller without a credential learns nothing of
                # how the route parses its input.
                try:
                    await _authenticate(request)
                except Open311Error as refused:
                    return error_answer(request, refused.status, refused.reasons, refused.headers)
                except TRANSIENT_ERRORS:
                    return _unavailable(request)
                reasons = reasons_from_validation_error(exc)  # type: ignore[arg-type]
                return error_answer(request, 400, [_query_field(r) for r in reasons])
            except service.Rejected as exc:
                reasons = [mapping.open311_reason(r) for r in exc.reasons]
                return error_answer(request, mapping.refusal_status(reasons), reasons)
            except service.NotFound as exc:
                return error_answer(request, 404, f"{exc} not found")
            except KeyReused as exc:
                return error_answer(request, 409, str(exc))
            except (StarletteHTTPException, HTTPException) as exc:
                headers = getattr(exc, "headers", None)
                return error_answer(request, exc.status_code, str(exc.detail), headers)
            except asyncpg.exceptions.DataError:
                return error_answer(request, 400, "a value is out of range or invalid")
            except TRANSIENT_ERRORS:
                return _unavailable(request)

        return route


router = APIRouter(prefix=PREFIX, tags=["open311"], route_class=Open311Route)

_bearer = HTTPBearer(
    auto_error=False, description="A Linli API token (lnl_...); on POST also `api_key`."
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]

Format = Annotated[
    Literal["json", "xml"],
    Path(description="Answer format: `json` or `xml` (the path's suffix)."),
]
Jurisdiction = Annotated[
    str | None,
    Query(
        pattern=COMMUNITY_SLUG_PATTERN,
        max_length=64,
        description="The community slug. May be left out when the credential names exactly "
        "one community; required otherwise (400).",
    ),
]

UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
ID_LIST_PATTERN = rf"^{UUID_PATTERN}(,{UUID_PATTERN}){{0,{mapping.MAX_IDS - 1}}}$"
TOKEN_PATTERN = r"^[A-Za-z0-9._~:-]{1,200}$"
RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"


def _moment(name: str, value: str | None) -> datetime | None:
    """An RFC 3339 date-time with an offset (the pattern already checked the shape)."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise Open311Error(
            400, [Reason(field=name, message="not a valid date-time", code="datetime_parsing")]
        ) from exc


# --- response documents ------------------------------------------------------------------


class Open311ErrorItem(BaseModel):
    code: int = Field(description="The HTTP status.")
    description: str = Field(
        description="What is wrong: `field: message (code)` for each bad field, never the "
        "value sent."
    )


class ServiceItem(BaseModel):
    service_code: str = Field(description="The kind of need (ADR 0045).")
    service_name: str = Field(description="The kind's name (zh-CN).")
    description: str | None = Field(description="The kind's English name and what it is.")
    metadata: bool = Field(description="True: the service definition lists attributes.")
    type: Literal["realtime", "batch", "blackbox"] = Field(
        description="Always realtime: the answer carries the service_request_id."
    )
    keywords: str | None = Field(
        description="Comma-separated: the kind, its English name, the partner kinds that serve it."
    )
    group: str | None = Field(description="scheduled_services (a window) or response_calls.")


class AttributeValue(BaseModel):
    key: str = Field(description="The value to send.")
    name: str = Field(description="Its display name.")


class ServiceAttribute(BaseModel):
    variable: bool = Field(description="Always true: input wanted.")
    code: str = Field(description="Send as attribute[code].")
    datatype: Literal["string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"]
    required: bool = Field(description="Whether the request must carry it.")
    datatype_description: str | None = Field(description="What a value looks like.")
    order: int | None = Field(description="Presentation order, from 1.")
    description: str | None = Field(description="What it means.")
    values: list[AttributeValue] | None = Field(
        default=None, description="The keys of a singlevaluelist or multivaluelist."
    )


class ServiceDefinition(BaseModel):
    service_code: str = Field(description="The kind of need.")
    attributes: list[ServiceAttribute] = Field(
        description="Resident, urgency and window, then the kind's details."
    )


class RequestCreated(BaseModel):
    service_request_id: str = Field(description="The need's id.")
    service_notice: str | None = Field(description="The SLA promise and its expected time.")
    account_id: None = Field(description="Always null.")


class TokenItem(BaseModel):
    service_request_id: str = Field(description="The need the token stands for.")
    token: str = Field(description="The token as asked.")


class ServiceRequest(BaseModel):
    service_request_id: str = Field(description="The need's id.")
    status: Literal["open", "closed"] = Field(
        description="closed: fulfilled, failed or cancelled; open otherwise."
    )
    status_notes: str | None = Field(description="The latest step of the need's timeline.")
    service_name: str | None = Field(description="The kind's name (zh-CN).")
    service_code: str = Field(description="The kind of need.")
    description: None = Field(description="Always null: the words stay in intake (ADR 0031).")
    agency_responsible: str | None = Field(description="The community.")
    service_notice: str | None = Field(description="What the SLA promises.")
    requested_datetime: datetime = Field(description="When intake accepted it.")
    updated_datetime: datetime | None = Field(description="Its last change.")
    expected_datetime: datetime | None = Field(
        description="The SLA deadline computed from the catalogue (ADR 0050)."
    )
    address: None = Field(description="Always null: the address is personal data.")
    address_id: None = Field(description="Always null.")
    zipcode: None = Field(description="Always null.")
    lat: None = Field(description="Always null.")
    long: None = Field(description="Always null.")
    media_url: None = Field(description="Always null.")


def _responses(ok: Any, *extra: int) -> dict[int | str, dict[str, Any]]:
    """The 200 in JSON and XML, and the statuses of the specification's error format."""
    xml = {"text/xml": {"schema": {"type": "string"}}}

    def error(description: str) -> dict[str, Any]:
        return {"description": description, "model": list[Open311ErrorItem], "content": xml}

    answers: dict[int | str, dict[str, Any]] = {
        200: {"model": ok, "content": xml, "description": "JSON or XML by the path's suffix."},
        400: error("Bad input: one error per field."),
        401: error(
            "No credential (no bearer token, no api_key), or an unknown bearer token on a read."
        ),
        403: error("An unknown api_key or token on a create, or a role that may not."),
        404: error("Not the caller's jurisdiction, or an unknown id or service_code."),
        413: {"description": "Body over LINLI_MAX_BODY_BYTES (Linli's shape).", "model": ErrorBody},
        503: error("A dependency is unavailable; retry."),
    }
    for status in extra:
        answers[status] = error(_EXTRA[status])
    # Any other refusal answers in the same format (and FastAPI adds no 422: the facade
    # answers bad input with 400, as the specification says).
    answers["4XX"] = error("Another client error.")
    return answers


_EXTRA = {
    409: "The Idempotency-Key was used with another request.",
    415: "Neither form-encoded nor JSON.",
}


def _answer(
    request: Request, root: str, item: str | None, content: Any, status: int = 200
) -> Response:
    if _wants_xml(request):
        body = mapping.xml_document(root, item, content)
        return Response(body, status, media_type=mapping.XML_TYPE)
    return JSONBody(content, status_code=status)


# --- who is calling, and for which community ---------------------------------------------


async def _principal(
    request: Request, creds: HTTPAuthorizationCredentials | None, api_key: str | None = None
) -> Principal:
    token = creds.credentials if creds is not None and creds.scheme.lower() == "bearer" else None
    token = token or api_key
    given = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token) if token else None
    try:
        return await current_principal(request, given)
    except HTTPException as exc:
        if exc.status_code != 401:
            raise
        if token and request.method == "POST":
            # The specification: an invalid api_key is 403.
            raise Open311Error(403, "api_key invalid") from exc
        raise Open311Error(
            401,
            "missing or invalid credential (bearer token or api_key)",
            {"WWW-Authenticate": "Bearer"},
        ) from exc


async def _authenticate(request: Request) -> Principal:
    """The caller of a request whose parameters did not validate: its bearer token, or on
    POST the `api_key` of its form."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        creds = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token.strip())
        return await _principal(request, creds)
    api_key = None
    if request.method == "POST":
        try:
            api_key = (await _read_submission(request)).fields.get("api_key")
        except Open311Error:
            api_key = None
    return await _principal(request, None, api_key or None)


async def _community(conn: Any, principal: Principal, jurisdiction_id: str | None) -> str:
    """The jurisdiction asked for, or the credential's only community; 404 for one the
    credential does not name or that does not exist."""
    if jurisdiction_id is None:
        named = sorted(principal.communities - {ALL_COMMUNITIES})
        if ALL_COMMUNITIES in principal.communities or len(named) != 1:
            raise Open311Error(
                400,
                [
                    Reason(
                        field="jurisdiction_id",
                        message="required: the credential covers more than one community",
                        code="missing",
                    )
                ],
            )
        jurisdiction_id = named[0]
    if not principal.can_access(jurisdiction_id):
        raise Open311Error(404, "jurisdiction_id not found")
    if await store.community_name(conn, jurisdiction_id) is None:
        raise Open311Error(404, "jurisdiction_id not found")
    return jurisdiction_id


READERS = (Role.OPERATOR, Role.SYSTEM, Role.ADMIN, Role.STREET_OFFICE)
"""Who reads requests: the course of a need, never its contents, so a street office too."""

WRITERS = (Role.OPERATOR, Role.SYSTEM, Role.ADMIN)
"""Who creates requests: as `POST /v1/communities/{c}/needs`."""


# --- routes ---------------------------------------------------------------------------


@router.get(
    "/services.{response_format}",
    response_model=list[ServiceItem],
    responses=_responses(list[ServiceItem]),
    summary="Open311: the services (kinds of need) of a jurisdiction",
)
async def list_services(
    request: Request, response_format: Format, creds: Bearer, jurisdiction_id: Jurisdiction = None
) -> Response:
    principal = await _principal(request, creds)
    async with request.app.state.runtime.pool.acquire() as conn:
        await _community(conn, principal, jurisdiction_id)
    return _answer(request, "services", "service", mapping.services())


@router.get(
    "/services/{service_code}.{response_format}",
    response_model=ServiceDefinition,
    responses=_responses(ServiceDefinition),
    summary="Open311: a service's definition, its attributes built from the details model",
)
async def get_service_definition(
    request: Request,
    service_code: Annotated[str, Path(max_length=64, description="A service_code.")],
    response_format: Format,
    creds: Bearer,
    jurisdiction_id: Jurisdiction = None,
) -> Response:
    principal = await _principal(request, creds)
    async with request.app.state.runtime.pool.acquire() as conn:
        await _community(conn, principal, jurisdiction_id)
    entry = CATALOGUE.get(service_code)
    if entry is None:
        raise Open311Error(404, "service_code not found")
    return _answer(request, "service_definition", None, mapping.service_definition(entry))


async def _read_submission(request: Request) -> mapping.Submission:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    try:
        if media == "application/json":
            return mapping.parse_json(json.loads(raw))
        if media in ("application/x-www-form-urlencoded", ""):
            pairs = parse_qsl(
                raw.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=mapping.MAX_FIELDS * 4,
            )
            return mapping.parse_form(pairs)
    except (ValueError, UnicodeDecodeError):
        out = mapping.Submission()
        out.reasons.append(Reason(field="body", message="cannot be parsed", code="malformed"))
        return out
    raise Open311Error(415, "send application/x-www-form-urlencoded (or application/json)")


@router.post(
    "/requests.{response_format}",
    response_model=list[RequestCreated],
    responses=_responses(list[RequestCreated], 409, 415),
    summary="Open311: create a service request (a need, through the native use case)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": mapping.request_body_schema(form=True)
                },
                "application/json": {"schema": mapping.request_body_schema(form=False)},
            },
        }
    },
)
async def create_request(
    request: Request,
    response_format: Format,
    creds: Bearer,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """The need is created by the same use case as `POST /v1/communities/{c}/needs`:
    same events, same idempotency (`Idempotency-Key`), same validation."""
    del response_format
    principal = None
    if creds is not None:
        # A bearer token is checked, role included, before the body is read.
        principal = await _principal(request, creds)
        principal.require_role(*WRITERS)
    submission = await _read_submission(request)
    if principal is None:
        principal = await _principal(request, None, submission.fields.get("api_key") or None)
        principal.require_role(*WRITERS)
    async with request.app.state.runtime.pool.acquire() as conn:
        community = await _community(conn, principal, submission.get("jurisdiction_id"))
        code = submission.get("service_code")
        if code is None:
            raise Open311Error(
                400, [Reason(field="service_code", message="required", code="missing")]
            )
        entry = CATALOGUE.get(code)
        if entry is None:
            raise Open311Error(404, "service_code not found")
        ref = submission.attributes.get(mapping.RESIDENT_REF)
        resident_id = (
            await store.resident_id_by_ref(conn, community, ref)
            if isinstance(ref, str) and 0 < len(ref) <= 64
            else None
        )
        clock: service.Clock = request.app.state.clock
        mapped = mapping.to_need(entry, submission, clock.now(), resident_id)
        if mapped.spec is None:
            raise Open311Error(mapping.refusal_status(mapped.reasons), mapped.reasons)
        sent = {
            "open311": {k: v for k, v in submission.fields.items() if k != "api_key"},
            "attribute": submission.attributes,
        }
        idem = Idempotency.of(idempotency_key, principal.credential_id, community, sent)
        result = await service.submit_need(
            conn,
            community,
            mapped.spec,
            service.Actor(principal.role, str(principal.credential_id), principal.label or None),
            clock=clock,
            idempotency=idem,
            traceparent=current_traceparent(),
        )
        row = await store.get_need(conn, community, result.need_id)
    assert row is not None
    created = {
        "service_request_id": str(result.need_id),
        "service_notice": mapping.service_notice(entry, mapping.expected_datetime(row)),
        "account_id": None,
    }
    answer = _answer(request, "service_requests", "request", [created])
    if not result.created:
        answer.headers[REPLAYED_HEADER] = "true"
    return answer


async def _views(conn: Any, community: str, rows: list[Any]) -> list[dict[str, Any]]:
    agency = await store.community_name(conn, community)
    latest = await store.latest_timeline_status(conn, [r["id"] for r in rows])
    return [mapping.request_view(r, latest.get(r["id"]), agency) for r in rows]


@router.get(
    "/requests.{response_format}",
    response_model=list[ServiceRequest],
    responses=_responses(list[ServiceRequest]),
    summary="Open311: service requests, newest first (at most 1000)",
)
async def list_requests(
    request: Request,
    response_format: Format,
    creds: Bearer,
    jurisdiction_id: Jurisdiction = None,
    service_request_id: Annotated[
        str | None,
        Query(
            pattern=ID_LIST_PATTERN,
            max_length=37 * mapping.MAX_IDS,
            description="Comma-separated ids (at most 100); the other filters then do not apply.",
        ),
    ] = None,
    service_code: Annotated[NeedKind | None, Query(description="A service_code.")] = None,
    start_date: Annotated[
        str | None,
        Query(
            pattern=RFC3339,
            max_length=40,
            json_schema_extra={"format": "date-time"},
            description="Requested at or after (RFC 3339 with offset).",
        ),
    ] = None,
    end_date: Annotated[
        str | None,
        Query(
            pattern=RFC3339,
            max_length=40,
            json_schema_extra={"format": "date-time"},
            description="Requested at or before (RFC 3339 with offset).",
        ),
    ] = None,
    status: Annotated[
        str | None,
        Query(
            pattern=r"^(open|closed)(,(open|closed))?$",
            description="open, closed or both, comma-separated.",
        ),
    ] = None,
) -> Response:
    principal = await _principal(request, creds)
    ids = None
    if service_request_id is not None:
        ids = [uuid.UUID(value) for value in service_request_id.split(",")]
    clock: service.Clock = request.app.state.clock
    start, end = mapping.date_range(
        _moment("start_date", start_date), _moment("end_date", end_date), clock.now()
    )
    async with request.app.state.runtime.pool.acquire() as conn:
        community = await _community(conn, principal, jurisdiction_id)
        principal.require_role(*READERS)
        rows = await store.open311_needs(
            conn,
            community,
            ids=ids,
            kind=None if ids or service_code is None else service_code.value,
            start=None if ids else start,
            end=None if ids else end,
            statuses=mapping.linli_statuses(status.split(",")) if status and not ids else None,
            limit=mapping.MAX_LIST,
        )
        views = await _views(conn, community, list(rows))
    return _answer(request, "service_requests", "request", views)


@router.get(
    "/requests/{service_request_id}.{response_format}",
    response_model=list[ServiceRequest],
    responses=_responses(list[ServiceRequest]),
    summary="Open311: one service request (a list of one, as the specification answers)",
)
async def get_request(
    request: Request,
    service_request_id: uuid.UUID,
    response_format: Format,
    creds: Bearer,
    jurisdiction_id: Jurisdiction = None,
) -> Response:
    principal = await _principal(request, creds)
    async with request.app.state.runtime.pool.acquire() as conn:
        community = await _community(conn, principal, jurisdiction_id)
        principal.require_role(*READERS)
        row = await store.get_need(conn, community, service_request_id)
        if row is None:
            raise Open311Error(404, "service_request_id not found")
        views = await _views(conn, community, [row])
    return _answer(request, "service_requests", "request", views)


@router.get(
    "/tokens/{token_id}.{response_format}",
    response_model=list[TokenItem],
    responses=_responses(list[TokenItem]),
    summary="Open311: the request a token stands for (its Idempotency-Key, or its id)",
)
async def get_token(
    request: Request,
    token_id: Annotated[str, Path(pattern=TOKEN_PATTERN, max_length=200)],
    response_format: Format,
    creds: Bearer,
    jurisdiction_id: Jurisdiction = None,
) -> Response:
    """Requests are created at once, so a token is never pending: the `Idempotency-Key` a
    request was sent with (by the same credential), or the service_request_id itself."""
    principal = await _principal(request, creds)
    async with request.app.state.runtime.pool.acquire() as conn:
        community = await _community(conn, principal, jurisdiction_id)
        principal.require_role(*WRITERS)
        need_id = await store.need_for_key(conn, community, principal.credential_id, token_id)
        if need_id is None:
            try:
                as_id = uuid.UUID(token_id)
            except ValueError:
                as_id = None
            if as_id is not None and await store.get_need(conn, community, as_id) is not None:
                need_id = as_id
        if need_id is None:
            raise Open311Error(404, "token not found")
    return _answer(
        request,
        "service_requests",
        "request",
        [{"service_request_id": str(need_id), "token": token_id}],
    )
