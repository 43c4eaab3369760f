"""Intake's HTTP API: needs and residents of one community at a time.

Every route is authenticated and scoped: the community in the path must be one the
credential names, else 404 (another community's data does not exist for the caller).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from linli.contracts.needs import NeedSpec, ResidentSpec
from linli.contracts.types import CommunitySlug, NeedKind, NeedStatus, Reason, Role
from linli.servicekit.auth import CurrentPrincipal, Principal
from linli.servicekit.telemetry import current_traceparent

from . import service, store
from .rules import request_fingerprint

router = APIRouter(prefix="/v1/communities/{community}", tags=["needs"])

Community = Annotated[CommunitySlug, Path(description="Community slug, e.g. taian-zhiyuan")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Retry-safe submission: the same key with the same body returns the "
        "original need; with a different body it is refused (409).",
    ),
]


class TimelineEntry(BaseModel):
    at: datetime = Field(description="When it happened.")
    status: str = Field(description="Status the need entered.")
    actor: str = Field(description="Role and credential or system id that caused it.")
    note: str | None = Field(default=None, description="Reason or remark.")


class NeedView(BaseModel):
    id: uuid.UUID = Field(description="Need id.")
    community: str = Field(description="Community slug.")
    resident_id: uuid.UUID = Field(description="Resident the need is for.")
    kind: str = Field(description="Need kind.")
    urgency: str = Field(description="Urgency.")
    status: str = Field(description="Current status.")
    window: dict[str, datetime] = Field(description="earliest and latest.")
    details: dict[str, Any] = Field(description="Kind-specific details.")
    notes: str | None = Field(default=None, description="Notes for the operator.")
    source: dict[str, str | None] | None = Field(default=None, description="Submitting system.")
    submitted_at: datetime = Field(description="When intake accepted it.")
    updated_at: datetime = Field(description="Last change.")
    cancel_reason: str | None = Field(default=None, description="Why it was cancelled.")
    timeline: list[TimelineEntry] | None = Field(default=None, description="History.")


class NeedPage(BaseModel):
    items: list[NeedView] = Field(description="Needs, newest first.")
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` for more.")


class ResidentView(BaseModel):
    id: uuid.UUID
    community: str
    name: str
    phone: str
    address: str
    compound: str | None
    priority_group: str
    consent_to_share_contact: bool
    locale: str
    created_at: datetime


class ResidentPage(BaseModel):
    items: list[ResidentView]
    next_cursor: str | None = None


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    reason: str | None = Field(default=None, max_length=500, description="Why.")


def _need_view(row: Any, timeline: list[Any] | None = None) -> NeedView:
    source = None
    if row["source_system"]:
        source = {"system": row["source_system"], "reference": row["source_reference"]}
    return NeedView(
        id=row["id"],
        community=row["community"],
        resident_id=row["resident_id"],
        kind=row["kind"],
        urgency=row["urgency"],
        status=row["status"],
        window={"earliest": row["window_earliest"], "latest": row["window_latest"]},
        details=store.details_of(row),
        notes=row["notes"],
        source=source,
        submitted_at=row["submitted_at"],
        updated_at=row["updated_at"],
        cancel_reason=row["cancel_reason"],
        timeline=[TimelineEntry(**dict(t)) for t in timeline] if timeline is not None else None,
    )


def _encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode()


def _decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    try:
        at, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed, uuid.UUID(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise service.Rejected(
            [Reason(field="query.cursor", message="invalid cursor", code="invalid_cursor")]
        ) from exc


def _error(status_code: int, error: str, detail: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status_code)


def _actor(principal: Principal) -> service.Actor:
    return service.Actor(principal.role, str(principal.credential_id))


def _clock(request: Request) -> service.Clock:
    clock: service.Clock = request.app.state.clock
    return clock


@router.post(
    "/needs",
    status_code=status.HTTP_201_CREATED,
    response_model=NeedView,
    summary="Submit a need",
    responses={200: {"description": "Replay of an earlier request with the same key"}},
)
async def submit_need(
    request: Request,
    response: Response,
    community: Community,
    principal: CurrentPrincipal,
    spec: Annotated[NeedSpec, Body()],
    idempotency_key: IdempotencyKey = None,
) -> Any:
    principal.require_community(community)
    principal.require_role(Role.OPERATOR, Role.SYSTEM, Role.ADMIN)
    idem = None
    if idempotency_key is not None:
        fingerprint = request_fingerprint(community, spec.model_dump(mode="json"))
        idem = service.Idempotency(principal.credential_id, idempotency_key, fingerprint)
    pool = request.app.state.runtime.pool
    async with pool.acquire() as conn:
        result = await service.submit_need(
            conn,
            community,
            spec,
            _actor(principal),
            clock=_clock(request),
            idempotency=idem,
            traceparent=current_traceparent(),
        )
        row = await store.get_need(conn, community, result.need_id)
    assert row is not None
    response.headers["Location"] = f"/v1/communities/{community}/needs/{result.need_id}"
    if not result.created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return _need_view(row)


@router.get("/needs/{need_id}", response_model=NeedView, summary="One need with its timeline")
async def get_need(
    request: Request, community: Community, need_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    principal.require_community(community)
    principal.require_role(Role.OPERATOR, Role.SYSTEM, Role.ADMIN)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await store.get_need(conn, community, need_id)
        if row is None:
            return _error(404, "not_found", "need not found")
        timeline = await store.timeline(conn, need_id)
    return _need_view(row, timeline)


@router.get("/needs", response_model=NeedPage, summary="List needs, newest first")
async def list_needs(
    request: Request,
    community: Community,
    principal: CurrentPrincipal,
    status_: Annotated[NeedStatus | None, Query(alias="status")] = None,
    kind: Annotated[NeedKind | None, Query()] = None,
    since: Annotated[AwareDatetime | None, Query(description="Submitted at or after")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Any:
    principal.require_community(community)
    principal.require_role(Role.OPERATOR, Role.SYSTEM, Role.ADMIN)
    after = _decode_cursor(cursor)
    async with request.app.state.runtime.pool.acquire() as conn:
        rows = await store.list_needs(
            conn,
            community,
            status=status_.value if status_ else None,
            kind=kind.value if kind else None,
            since=since,
            after=after,
            limit=limit + 1,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(rows[-1]["submitted_at"], rows[-1]["id"]) if more else None
    return NeedPage(items=[_need_view(r) for r in rows], next_cursor=next_cursor)


@router.post("/needs/{need_id}/cancel", response_model=NeedView, summary="Cancel an open need")
async def cancel_need(
    request: Request,
    community: Community,
    need_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: Annotated[CancelRequest | None, Body()] = None,
) -> Any:
    principal.require_community(community)
    principal.require_role(Role.OPERATOR, Role.SYSTEM, Role.ADMIN)
    async with request.app.state.runtime.pool.acquire() as conn:
        await service.cancel_need(
            conn,
            community,
            need_id,
            body.reason if body else None,
            _actor(principal),
            clock=_clock(request),
        )
        row = await store.get_need(conn, community, need_id)
    return _need_view(row)


@router.post(
    "/residents",
    status_code=status.HTTP_201_CREATED,
    response_model=ResidentView,
    tags=["residents"],
    summary="Register a resident",
)
async def create_resident(
    request: Request, community: Community, principal: CurrentPrincipal, spec: ResidentSpec
) -> Any:
    principal.require_community(community)
    principal.require_role(Role.OPERATOR, Role.SYSTEM, Role.ADMIN)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await service.create_resident(conn, community, spec)
    return ResidentView(**dict(row))


@router.get("/residents", response_model=ResidentPage, tags=["residents"], summary="List residents")
async def list_residents(
    request: Request,
    community: Community,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Any:
    principal.require_community(community)
    # Personal data: operators and admins only.
    principal.require_role(Role.OPERATOR, Role.ADMIN)
    after = _decode_cursor(cursor)
    async with request.app.state.runtime.pool.acquire() as conn:
        rows = await store.list_residents(conn, community, limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
    return ResidentPage(items=[ResidentView(**dict(r)) for r in rows], next_cursor=next_cursor)


@router.get(
    "/residents/{resident_id}",
    response_model=ResidentView,
    tags=["residents"],
    summary="One resident",
)
async def get_resident(
    request: Request, community: Community, resident_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    principal.require_community(community)
    principal.require_role(Role.OPERATOR, Role.ADMIN)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await store.get_resident(conn, community, resident_id)
    if row is None:
        return _error(404, "not_found", "resident not found")
    return ResidentView(**dict(row))


class ContactView(BaseModel):
    name: str = Field(description="Resident's name.")
    phone: str = Field(description="Resident's phone (E.164).")
    address: str = Field(description="Where to go.")
    locale: str = Field(description="Resident's language.")


@router.get(
    "/needs/{need_id}/contact",
    response_model=ContactView,
    summary="Contact details for the helper who accepted (service credentials only)",
)
async def get_contact(
    request: Request,
    community: Community,
    need_id: uuid.UUID,
    principal: CurrentPrincipal,
    party_kind: Annotated[Literal["partner", "volunteer"], Query()],
    party_id: Annotated[uuid.UUID, Query()],
) -> Any:
    """Only the partners service asks, on behalf of the helper who accepted; the answer
    is 404 unless that helper is the need's assignee and the resident consented."""
    principal.require_community(community)
    principal.require_role(Role.SERVICE)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await store.contact_for_assignee(conn, community, need_id, party_kind, party_id)
    if row is None:
        return _error(404, "not_found", "no contact details for this party")
    return ContactView(**dict(row))


def install_error_handlers(app: Any) -> None:
    """Map use-case outcomes to HTTP answers."""

    async def rejected(_r: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, service.Rejected)
        detail = [{**r.model_dump(), "field": _body_field(r.field)} for r in exc.reasons]
        return _error(exc.status, "validation_failed", detail)

    async def not_found(_r: Request, exc: Exception) -> JSONResponse:
        return _error(404, "not_found", f"{exc} not found")

    async def conflict(_r: Request, exc: Exception) -> JSONResponse:
        return _error(409, "conflict", str(exc))

    app.add_exception_handler(service.Rejected, rejected)
    app.add_exception_handler(service.NotFound, not_found)
    app.add_exception_handler(service.Conflict, conflict)


def _body_field(field_name: str) -> str:
    if field_name.startswith(("query.", "body.", "path.", "header.")):
        return field_name
    return f"body.{field_name}"
