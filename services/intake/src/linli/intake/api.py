"""Intake's HTTP API: needs and residents of one community at a time.

Every route is authenticated and scoped: the community in the path must be one the
credential names, else 404 (another community's data does not exist for the caller).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Body, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from linli.contracts.needs import DETAILS_BY_KIND, NeedSpec, ResidentSpec
from linli.contracts.types import (
    CommunitySlug,
    Flag,
    LocalDate,
    LocalTime,
    Moment,
    NeedKind,
    NeedStatus,
    Reason,
    Role,
    Urgency,
)
from linli.servicekit import csvimport, disclosures
from linli.servicekit.auth import CurrentPrincipal, Principal
from linli.servicekit.cursors import Cursor, decode_cursor, encode_cursor
from linli.servicekit.http import error_response
from linli.servicekit.idempotency import Idempotency, IdempotencyKey, mark_replayed
from linli.servicekit.telemetry import current_traceparent

from . import service, store

router = APIRouter(prefix="/v1/communities/{community}", tags=["needs"])

Community = Annotated[CommunitySlug, Path(description="Community slug, e.g. taian-zhiyuan")]


class TimelineEntry(BaseModel):
    at: datetime = Field(description="When it happened.")
    status: str = Field(description="Status the need entered.")
    actor: str = Field(description="Role and credential or system id that caused it.")
    actor_label: str | None = Field(
        default=None,
        description="For staff actions: the label of the staff credential that acted.",
    )
    note: str | None = Field(default=None, description="Reason or remark (free text).")


class NeedView(BaseModel):
    id: uuid.UUID = Field(description="Need id.")
    community: str = Field(description="Community slug.")
    resident_id: uuid.UUID | None = Field(
        description="Resident the need is for; null for a street_office credential (ADR 0040)."
    )
    kind: str = Field(description="Need kind.")
    urgency: str = Field(description="Urgency.")
    status: str = Field(description="Current status.")
    window: dict[str, datetime] = Field(description="earliest and latest.")
    details: dict[str, Any] = Field(
        description="Kind-specific details; a repair's description is read through "
        "`GET .../needs/{need_id}/description` (recorded, ADR 0031). Empty for a "
        "street_office credential (ADR 0040)."
    )
    notes: str | None = Field(
        default=None, description="Notes for the operator; null for a street_office credential."
    )
    source: dict[str, str | None] | None = Field(
        default=None,
        description="Submitting system (its `reference` null for a street_office credential).",
    )
    submitted_at: datetime = Field(description="When intake accepted it.")
    updated_at: datetime = Field(description="Last change.")
    cancel_reason: str | None = Field(
        default=None, description="Why it was cancelled; null for a street_office credential."
    )
    timeline: list[TimelineEntry] | None = Field(
        default=None,
        description="History (each `note` null for a street_office credential: reasons are "
        "free text).",
    )


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
    consent_to_share_contact: Flag
    locale: str
    created_at: datetime


class ResidentPage(BaseModel):
    items: list[ResidentView]
    next_cursor: str | None = None


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    reason: str | None = Field(default=None, max_length=500, description="Why.")


def _need_view(row: Any, timeline: list[Any] | None = None, *, personal: bool = True) -> NeedView:
    """The need as its readers see it; `personal=False` (a street office, ADR 0040) is
    its course without its contents: no resident, details, notes, source reference,
    cancel reason or timeline notes."""
    source = None
    if row["source_system"]:
        source = {"system": row["source_system"], "reference": row["source_reference"]}
    view = NeedView(
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
    if personal:
        return view
    return view.model_copy(
        update={
            "resident_id": None,
            "details": {},
            "notes": None,
            "source": {**source, "reference": None} if source else None,
            "cancel_reason": None,
            "timeline": [t.model_copy(update={"note": None}) for t in view.timeline]
            if view.timeline is not None
            else None,
        }
    )


def _actor(principal: Principal) -> service.Actor:
    return service.Actor(principal.role, str(principal.credential_id), principal.label or None)


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
    idem = Idempotency.of(
        idempotency_key, principal.credential_id, community, spec.model_dump(mode="json")
    )
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
        mark_replayed(response)
    return _need_view(row)


@router.get("/needs/{need_id}", response_model=NeedView, summary="One need with its timeline")
async def get_need(
    request: Request, community: Community, need_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    principal.require_community(community)
    principal.require_role(Role.OPERATOR, Role.SYSTEM, Role.ADMIN, Role.STREET_OFFICE)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await store.get_need(conn, community, need_id)
        if row is None:
            return error_response(404, "not_found", "need not found")
        timeline = await store.timeline(conn, need_id)
    return _need_view(row, timeline, personal=principal.sees_personal_data)


@router.get("/needs", response_model=NeedPage, summary="List needs, newest first")
async def list_needs(
    request: Request,
    community: Community,
    principal: CurrentPrincipal,
    status_: Annotated[NeedStatus | None, Query(alias="status")] = None,
    kind: Annotated[NeedKind | None, Query()] = None,
    since: Annotated[Moment | None, Query(description="Submitted at or after")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Cursor = None,
) -> Any:
    principal.require_community(community)
    principal.require_role(Role.OPERATOR, Role.SYSTEM, Role.ADMIN, Role.STREET_OFFICE)
    after = decode_cursor(cursor)
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
    next_cursor = encode_cursor(rows[-1]["submitted_at"], rows[-1]["id"]) if more else None
    personal = principal.sees_personal_data
    return NeedPage(items=[_need_view(r, personal=personal) for r in rows], next_cursor=next_cursor)


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
    cursor: Cursor = None,
) -> Any:
    principal.require_community(community)
    # Personal data: operators and admins only.
    principal.require_role(Role.OPERATOR, Role.ADMIN)
    after = decode_cursor(cursor)
    async with request.app.state.runtime.pool.acquire() as conn:
        rows = await store.list_residents(conn, community, limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
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
        return error_response(404, "not_found", "resident not found")
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
    is 404 unless that helper is the need's assignee and the resident consented. Each
    answer is recorded in `personal_data_reads` (ADR 0031)."""
    principal.require_community(community)
    principal.require_role(Role.SERVICE)
    reader = disclosures.Reader.of(principal, f"{party_kind}:{party_id}")
    async with request.app.state.runtime.pool.acquire() as conn, conn.transaction():
        row = await store.contact_for_assignee(conn, community, need_id, party_kind, party_id)
        if row is None:
            return error_response(404, "not_found", "no contact details for this party")
        await disclosures.record(conn, community, need_id, disclosures.CONTACT, reader)
    return ContactView(**dict(row))


class DescriptionView(BaseModel):
    need_id: uuid.UUID = Field(description="The repair need.")
    description: str = Field(description="What is broken, in the requester's words.")


@router.get(
    "/needs/{need_id}/description",
    response_model=DescriptionView,
    summary="A repair's description: for the community's operators, and for the helper "
    "who accepted (through the partners service); every read is recorded",
)
async def get_description(
    request: Request,
    community: Community,
    need_id: uuid.UUID,
    principal: CurrentPrincipal,
    party_kind: Annotated[
        Literal["partner", "volunteer"] | None, Query(description="Service credentials only.")
    ] = None,
    party_id: Annotated[uuid.UUID | None, Query(description="Service credentials only.")] = None,
) -> Any:
    """Free text stays in intake (ADR 0031): an operator or admin of the community reads
    it here; the partners service asks on behalf of a helper, and gets it only when that
    helper is the need's accepted assignee. Anything else is 404. The read and the record
    of it (`personal_data_reads`) commit together."""
    principal.require_community(community)
    assignee: tuple[str, uuid.UUID] | None = None
    on_behalf_of = None
    if principal.role is Role.SERVICE:
        if party_kind is None or party_id is None:
            raise service.Rejected(
                [
                    Reason(
                        field="query.party_id",
                        message="party_kind and party_id are required for a service credential",
                        code="missing",
                    )
                ]
            )
        assignee = (party_kind, party_id)
        on_behalf_of = f"{party_kind}:{party_id}"
    else:
        principal.require_role(Role.OPERATOR, Role.ADMIN)
    reader = disclosures.Reader.of(principal, on_behalf_of)
    async with request.app.state.runtime.pool.acquire() as conn, conn.transaction():
        text = await store.description_of(conn, community, need_id, assignee)
        if text is None:
            return error_response(404, "not_found", "no description for this caller")
        await disclosures.record(conn, community, need_id, disclosures.REPAIR_DESCRIPTION, reader)
    return DescriptionView(need_id=need_id, description=text)


imports_router = APIRouter(prefix="/v1/communities/{community}/imports", tags=["imports"])

DryRun = Annotated[
    bool,
    Query(
        description="true (the default): validate and report, write nothing; false: "
        "import, all rows or none."
    ),
]


@imports_router.post(
    "/residents",
    response_model=csvimport.ImportReport,
    responses=csvimport.IMPORT_RESPONSES,
    openapi_extra=csvimport.openapi_body(
        service.ResidentImport,
        "Residents as rows of a CSV file, keyed by `external_ref` (ADR 0035).",
    ),
    summary="Import residents from CSV (dry run first)",
)
async def import_residents(
    request: Request, community: Community, principal: CurrentPrincipal, dry_run: DryRun = True
) -> Any:
    """Create or update residents by `external_ref`; importing the same file twice
    changes nothing. The report names lines, `external_ref`s and columns, never values."""
    principal.require_community(community)
    principal.require_role(Role.OPERATOR, Role.ADMIN)
    async with request.app.state.runtime.pool.acquire() as conn:
        if not await store.community_exists(conn, community):
            return error_response(404, "not_found", "community not found")

    async def apply(conn: Any, row: service.ResidentImport) -> csvimport.Action:
        return await service.import_resident(conn, community, row)

    return await csvimport.handle_import(
        request,
        kind="residents",
        community=community,
        model=service.ResidentImport,
        apply=apply,
        key_of=lambda row: row.external_ref,
        dry_run=dry_run,
        lock=f"intake:import:residents:{community}",
    )


def install_error_handlers(app: Any) -> None:
    """Map use-case outcomes to HTTP answers."""

    async def rejected(_r: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, service.Rejected)
        detail = [{**r.model_dump(), "field": _body_field(r.field)} for r in exc.reasons]
        return error_response(exc.status, "validation_failed", detail)

    async def not_found(_r: Request, exc: Exception) -> JSONResponse:
        return error_response(404, "not_found", f"{exc} not found")

    async def conflict(_r: Request, exc: Exception) -> JSONResponse:
        return error_response(409, "conflict", str(exc))

    app.add_exception_handler(service.Rejected, rejected)
    app.add_exception_handler(service.NotFound, not_found)
    app.add_exception_handler(service.Conflict, conflict)


def _body_field(field_name: str) -> str:
    if field_name.startswith(("query.", "body.", "path.", "header.")):
        return field_name
    return f"body.{field_name}"


plans_router = APIRouter(prefix="/v1/communities/{community}/plans", tags=["plans"])


class PlanSchedule(BaseModel):
    """When a plan's needs happen, in the community's local time."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    weekdays: list[Annotated[int, Field(ge=1, le=7)]] = Field(
        min_length=1, max_length=7, description="ISO weekdays: 1 = Monday ... 7 = Sunday."
    )
    start_time: LocalTime = Field(description="Local start of each occurrence's window.")
    end_time: LocalTime = Field(description="Local end of each occurrence's window.")
    timezone: str = Field(default="Asia/Shanghai", max_length=64, description="IANA zone.")
    starts_on: LocalDate = Field(description="First day of the plan.")
    ends_on: LocalDate | None = Field(default=None, description="Last day, if any.")

    @model_validator(mode="after")
    def _check(self) -> PlanSchedule:
        if len(set(self.weekdays)) != len(self.weekdays):
            raise ValueError("weekdays must not repeat")
        if self.end_time <= self.start_time:
            raise ValueError("end_time must be after start_time")
        if self.ends_on is not None and self.ends_on < self.starts_on:
            raise ValueError("ends_on must not be before starts_on")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown timezone") from exc
        return self


class PlanCreate(BaseModel):
    """A recurring need: the template of each occurrence and its schedule."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    resident_id: uuid.UUID = Field(description="Resident the plan serves.")
    kind: NeedKind = Field(description="Kind of each occurrence's need.")
    urgency: Urgency = Field(default=Urgency.ROUTINE, description="Urgency of each need.")
    details: dict[str, Any] = Field(description="Kind-specific details, as for a need.")
    notes: str | None = Field(default=None, max_length=1000, description="For the operator.")
    schedule: PlanSchedule = Field(description="When occurrences happen.")

    @model_validator(mode="after")
    def _details_fit_kind(self) -> PlanCreate:
        model = DETAILS_BY_KIND[self.kind.value]
        try:
            self.details = model.model_validate(self.details).model_dump(mode="json")
        except ValidationError as exc:
            raise ValueError(f"details do not fit kind {self.kind.value}") from exc
        return self


class PlanView(BaseModel):
    id: uuid.UUID
    community: str
    resident_id: uuid.UUID
    kind: str
    urgency: str
    details: dict[str, Any]
    schedule: PlanSchedule
    paused: Flag
    generated_until: LocalDate | None
    created_at: datetime
    occurrences: list[dict[str, Any]] | None = None


def _plan_view(row: Any, occurrences: list[Any] | None = None) -> PlanView:
    return PlanView(
        id=row["id"],
        community=row["community"],
        resident_id=row["resident_id"],
        kind=row["kind"],
        urgency=row["urgency"],
        details=store.details_of(row),
        schedule=PlanSchedule(
            weekdays=list(row["weekdays"]),
            start_time=row["start_time"],
            end_time=row["end_time"],
            timezone=row["timezone"],
            starts_on=row["starts_on"],
            ends_on=row["ends_on"],
        ),
        paused=row["paused"],
        generated_until=row["generated_until"],
        created_at=row["created_at"],
        occurrences=[{"on_date": o["on_date"], "need_id": o["need_id"]} for o in occurrences]
        if occurrences is not None
        else None,
    )


@plans_router.post("", status_code=status.HTTP_201_CREATED, response_model=PlanView)
async def create_plan(
    request: Request, community: Community, principal: CurrentPrincipal, body: PlanCreate
) -> Any:
    """Register a recurring plan; needs are generated ahead of each occurrence."""
    principal.require_community(community)
    principal.require_role(Role.OPERATOR, Role.SYSTEM, Role.ADMIN)
    values = {
        "resident_id": body.resident_id,
        "kind": body.kind.value,
        "urgency": body.urgency.value,
        "details": body.details,
        "notes": body.notes,
        "weekdays": sorted(body.schedule.weekdays),
        "start_time": body.schedule.start_time,
        "end_time": body.schedule.end_time,
        "timezone": body.schedule.timezone,
        "starts_on": body.schedule.starts_on,
        "ends_on": body.schedule.ends_on,
    }
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await service.create_plan(conn, community, values, _actor(principal))
    request.app.state.plan_wake.set()
    return _plan_view(row)


@plans_router.get("", response_model=list[PlanView])
async def list_plans(
    request: Request,
    community: Community,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Any:
    principal.require_community(community)
    principal.require_role(Role.OPERATOR, Role.SYSTEM, Role.ADMIN)
    async with request.app.state.runtime.pool.acquire() as conn:
        rows = await store.list_plans(conn, community, limit)
    return [_plan_view(r) for r in rows]


@plans_router.get("/{plan_id}", response_model=PlanView)
async def get_plan(
    request: Request, community: Community, plan_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    principal.require_community(community)
    principal.require_role(Role.OPERATOR, Role.SYSTEM, Role.ADMIN)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await store.get_plan(conn, community, plan_id)
        if row is None:
            return error_response(404, "not_found", "plan not found")
        occurrences = await store.plan_occurrences(conn, plan_id)
    return _plan_view(row, occurrences)


async def _pause(
    request: Request, community: str, plan_id: uuid.UUID, principal: Principal, paused: bool
) -> Any:
    principal.require_community(community)
    principal.require_role(Role.OPERATOR, Role.SYSTEM, Role.ADMIN)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await service.set_plan_paused(
            conn, community, plan_id, paused, _actor(principal), clock=_clock(request)
        )
    request.app.state.plan_wake.set()
    return _plan_view(row)


@plans_router.post(
    "/{plan_id}/pause", response_model=PlanView, summary="Pause (e.g. a hospital stay)"
)
async def pause_plan(
    request: Request, community: Community, plan_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    return await _pause(request, community, plan_id, principal, True)


@plans_router.post("/{plan_id}/resume", response_model=PlanView, summary="Resume a paused plan")
async def resume_plan(
    request: Request, community: Community, plan_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    return await _pause(request, community, plan_id, principal, False)
