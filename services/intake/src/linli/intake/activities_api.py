"""Intake's HTTP API for group activities and sign-ups (ADR 0046).

Operators and admins manage activities, stalls and sessions; operators, admins and
community systems (a grid worker's tablet) sign residents up; operators, admins and the
stall's partner record attendance. A street office reads activities with counts only;
sign-ups (which name residents by id) are refused to it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from linli.contracts.types import CommunitySlug, Flag, LocalDate, LocalTime, Moment, Role
from linli.servicekit.auth import CurrentPrincipal, Principal
from linli.servicekit.errors import ErrorBody
from linli.servicekit.idempotency import Idempotency, IdempotencyKey, mark_replayed

from . import activities, store
from .service import Actor, Clock, NotFound

router = APIRouter(prefix="/v1/communities/{community}/activities", tags=["activities"])

Community = Annotated[CommunitySlug, Path(description="Community slug, e.g. taian-zhiyuan")]

MANAGERS = (Role.OPERATOR, Role.ADMIN)
SIGNERS = (Role.OPERATOR, Role.ADMIN, Role.SYSTEM)
READERS = (Role.OPERATOR, Role.ADMIN, Role.SYSTEM, Role.PARTNER, Role.STREET_OFFICE)


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        401: "Missing or invalid bearer token.",
        404: "No such community, activity, stall, session or sign-up for this caller.",
        409: "The activity's or session's state does not allow it.",
        422: "Bad input: field-level reasons.",
    }
    return {c: {"model": ErrorBody, "description": text[c]} for c in (401, *codes)}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, str_strip_whitespace=True)


class SessionSpec(_Strict):
    start_time: LocalTime = Field(description="Local start, within the activity's hours.")
    end_time: LocalTime = Field(description="Local end, after the start.")
    places: int = Field(ge=1, le=10_000, description="How many residents it serves.")

    @model_validator(mode="after")
    def _order(self) -> SessionSpec:
        if self.end_time <= self.start_time:
            raise ValueError("end_time must be after start_time")
        return self


class StallSpec(_Strict):
    partner_id: uuid.UUID = Field(description="Partner running the stall (partners' id).")
    offering: str = Field(
        min_length=1, max_length=200, description="What it offers, e.g. 测血压、血糖."
    )
    sessions: list[SessionSpec] = Field(default_factory=list, max_length=100)


class ActivitySpec(_Strict):
    title: str = Field(min_length=1, max_length=200, description="e.g. 社区义诊.")
    venue: str = Field(min_length=1, max_length=200, description="A public place.")
    date: LocalDate = Field(description="Local date.")
    start_time: LocalTime = Field(description="Local start.")
    end_time: LocalTime = Field(description="Local end, after the start.")
    timezone: str = Field(default="Asia/Shanghai", max_length=64, description="IANA zone.")
    registration_closes_at: Moment | None = Field(
        default=None, description="When places are allocated; default: the start."
    )
    stalls: list[StallSpec] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _check(self) -> ActivitySpec:
        if self.end_time <= self.start_time:
            raise ValueError("end_time must be after start_time")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown timezone") from exc
        return self


class ActivityEdit(_Strict):
    title: str | None = Field(default=None, min_length=1, max_length=200)
    venue: str | None = Field(default=None, min_length=1, max_length=200)


class SignupSpec(_Strict):
    resident_id: uuid.UUID = Field(description="Resident to sign up (intake's id).")


class AttendanceSpec(_Strict):
    outcome: Literal["attended", "no_show"] = Field(description="Attended or no-show.")


class SessionView(BaseModel):
    id: uuid.UUID
    stall_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    places: int
    confirmed: int = Field(description="Sign-ups holding a place.")
    requested: int = Field(description="Sign-ups waiting for registration to close.")
    waitlisted: int
    attended: int
    no_show: int
    cancelled: Flag


class StallView(BaseModel):
    id: uuid.UUID
    partner_id: uuid.UUID
    offering: str
    cancelled: Flag
    sessions: list[SessionView]


class ActivityView(BaseModel):
    id: uuid.UUID
    community: str
    title: str
    venue: str
    date: LocalDate
    start_time: LocalTime
    end_time: LocalTime
    timezone: str
    starts_at: datetime
    ends_at: datetime
    registration_closes_at: datetime
    status: str
    allocated: Flag = Field(description="Registration closed and places allocated.")
    stalls: list[StallView] | None = None


class SignupView(BaseModel):
    id: uuid.UUID
    activity_id: uuid.UUID
    session_id: uuid.UUID
    resident_id: uuid.UUID | None = Field(description="Null for a partner.")
    priority_group: str
    status: str
    signed_up_at: datetime
    attendance: str | None = Field(description="attended, no_show or null.")


def _activity_view(
    row: Any, stalls: list[Any] | None = None, sessions: list[Any] | None = None
) -> ActivityView:
    view = ActivityView(
        id=row["id"],
        community=row["community"],
        title=row["title"],
        venue=row["venue"],
        date=row["on_date"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        timezone=row["timezone"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        registration_closes_at=row["registration_closes_at"],
        status=row["status"],
        allocated=row["allocated_at"] is not None,
    )
    if stalls is None or sessions is None:
        return view
    view.stalls = [
        StallView(
            id=s["id"],
            partner_id=s["partner_id"],
            offering=s["offering"],
            cancelled=s["cancelled_at"] is not None,
            sessions=[
                SessionView(
                    id=x["id"],
                    stall_id=x["stall_id"],
                    starts_at=x["starts_at"],
                    ends_at=x["ends_at"],
                    places=x["places"],
                    confirmed=x["confirmed"],
                    requested=x["requested"],
                    waitlisted=x["waitlisted"],
                    attended=x["attended"],
                    no_show=x["no_show"],
                    cancelled=x["cancelled_at"] is not None,
                )
                for x in sessions
                if x["stall_id"] == s["id"]
            ],
        )
        for s in stalls
    ]
    return view


def _signup_view(row: Any, *, personal: bool = True) -> SignupView:
    attendance = None if row["attended"] is None else ("attended" if row["attended"] else "no_show")
    return SignupView(
        id=row["id"],
        activity_id=row["activity_id"],
        session_id=row["session_id"],
        resident_id=row["resident_id"] if personal else None,
        priority_group=row["priority_group"],
        status=row["status"],
        signed_up_at=row["signed_up_at"],
        attendance=attendance,
    )


def _actor(p: Principal) -> Actor:
    return Actor(p.role, str(p.credential_id), p.label or None)


def _now(request: Request) -> datetime:
    clock: Clock = request.app.state.clock
    return clock.now()


def _pool(request: Request) -> Any:
    return request.app.state.runtime.pool


async def _read(request: Request, community: str, activity_id: uuid.UUID) -> ActivityView:
    async with _pool(request).acquire() as conn:
        row = await store.get_activity(conn, community, activity_id)
        if row is None:
            raise NotFound("activity")
        stalls = await store.stalls_of(conn, activity_id)
        sessions = await store.sessions_of(conn, activity_id)
    return _activity_view(row, stalls, sessions)


def _manage(principal: Principal, community: str) -> None:
    principal.require_community(community)
    principal.require_role(*MANAGERS)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ActivityView,
    responses={
        200: {"description": "Replay of an earlier request with the same Idempotency-Key"},
        **_errors(404, 409, 422),
    },
    summary="Create a draft activity",
)
async def create_activity(
    request: Request,
    response: Response,
    community: Community,
    principal: CurrentPrincipal,
    body: ActivitySpec,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    _manage(principal, community)
    idem = Idempotency.of(
        idempotency_key, principal.credential_id, community, body.model_dump(mode="json")
    )
    async with _pool(request).acquire() as conn:
        activity_id, created = await activities.create_activity(
            conn, community, body, _actor(principal), _now(request), idem
        )
    if not created:
        mark_replayed(response)
    return await _read(request, community, activity_id)


@router.get(
    "",
    response_model=list[ActivityView],
    responses=_errors(404, 422),
    summary="List activities, latest first (counts only)",
)
async def list_activities(
    request: Request,
    community: Community,
    principal: CurrentPrincipal,
    status_: Annotated[
        Literal["draft", "published", "cancelled", "held"] | None, Query(alias="status")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Any:
    principal.require_community(community)
    principal.require_role(*READERS)
    async with _pool(request).acquire() as conn:
        rows = await store.list_activities(conn, community, status=status_, limit=limit, after=None)
    return [_activity_view(r) for r in rows]


@router.get(
    "/{activity_id}",
    response_model=ActivityView,
    responses=_errors(404, 422),
    summary="One activity with its stalls and sessions (counts only)",
)
async def get_activity(
    request: Request, community: Community, activity_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    principal.require_community(community)
    principal.require_role(*READERS)
    return await _read(request, community, activity_id)


@router.patch(
    "/{activity_id}",
    response_model=ActivityView,
    responses=_errors(404, 409, 422),
    summary="Edit an activity's title or venue",
)
async def edit_activity(
    request: Request,
    community: Community,
    activity_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: ActivityEdit,
) -> Any:
    _manage(principal, community)
    async with _pool(request).acquire() as conn:
        await activities.edit_activity(
            conn, community, activity_id, body.title, body.venue, _now(request)
        )
    return await _read(request, community, activity_id)


async def _transition(
    request: Request, community: str, activity_id: uuid.UUID, principal: Principal, use_case: Any
) -> Any:
    _manage(principal, community)
    async with _pool(request).acquire() as conn:
        await use_case(conn, community, activity_id, _now(request))
    if use_case is activities.publish or use_case is activities.allocate:
        request.app.state.activity_wake.set()
    return await _read(request, community, activity_id)


@router.post(
    "/{activity_id}/publish",
    response_model=ActivityView,
    responses=_errors(404, 409, 422),
    summary="Publish a draft: sign-ups open",
)
async def publish_activity(
    request: Request, community: Community, activity_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    return await _transition(request, community, activity_id, principal, activities.publish)


@router.post(
    "/{activity_id}/cancel",
    response_model=ActivityView,
    responses=_errors(404, 409, 422),
    summary="Cancel, with every standing sign-up",
)
async def cancel_activity(
    request: Request, community: Community, activity_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    return await _transition(request, community, activity_id, principal, activities.cancel)


@router.post(
    "/{activity_id}/close-registration",
    response_model=ActivityView,
    responses=_errors(404, 409, 422),
    summary="Close registration now: places go by priority group, then sign-up time",
)
async def close_registration(
    request: Request, community: Community, activity_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    return await _transition(request, community, activity_id, principal, activities.allocate)


@router.post(
    "/{activity_id}/held",
    response_model=ActivityView,
    responses=_errors(404, 409, 422),
    summary="Mark a started activity held",
)
async def hold_activity(
    request: Request, community: Community, activity_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    return await _transition(request, community, activity_id, principal, activities.hold)


@router.post(
    "/{activity_id}/stalls",
    status_code=status.HTTP_201_CREATED,
    response_model=ActivityView,
    responses=_errors(404, 409, 422),
    summary="Add a stall (with sessions)",
)
async def add_stall(
    request: Request,
    community: Community,
    activity_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: StallSpec,
) -> Any:
    _manage(principal, community)
    async with _pool(request).acquire() as conn:
        await activities.add_stall(conn, community, activity_id, body, _now(request))
    return await _read(request, community, activity_id)


@router.post(
    "/{activity_id}/stalls/{stall_id}/cancel",
    response_model=ActivityView,
    responses=_errors(404, 409, 422),
    summary="Cancel a stall, its sessions and their sign-ups",
)
async def cancel_stall(
    request: Request,
    community: Community,
    activity_id: uuid.UUID,
    stall_id: uuid.UUID,
    principal: CurrentPrincipal,
) -> Any:
    _manage(principal, community)
    async with _pool(request).acquire() as conn:
        await activities.cancel_stall(conn, community, activity_id, stall_id, _now(request))
    return await _read(request, community, activity_id)


@router.post(
    "/{activity_id}/stalls/{stall_id}/sessions",
    status_code=status.HTTP_201_CREATED,
    response_model=ActivityView,
    responses=_errors(404, 409, 422),
    summary="Add a session to a stall",
)
async def add_session(
    request: Request,
    community: Community,
    activity_id: uuid.UUID,
    stall_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: SessionSpec,
) -> Any:
    _manage(principal, community)
    async with _pool(request).acquire() as conn:
        await activities.add_session(conn, community, activity_id, stall_id, body, _now(request))
    return await _read(request, community, activity_id)


@router.put(
    "/{activity_id}/sessions/{session_id}",
    response_model=ActivityView,
    responses=_errors(404, 409, 422),
    summary="Edit a session's times and places (more places promote the waiting list)",
)
async def edit_session(
    request: Request,
    community: Community,
    activity_id: uuid.UUID,
    session_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: SessionSpec,
) -> Any:
    _manage(principal, community)
    async with _pool(request).acquire() as conn:
        await activities.edit_session(conn, community, activity_id, session_id, body, _now(request))
    return await _read(request, community, activity_id)


@router.post(
    "/{activity_id}/sessions/{session_id}/cancel",
    response_model=ActivityView,
    responses=_errors(404, 409, 422),
    summary="Cancel a session and its sign-ups",
)
async def cancel_session(
    request: Request,
    community: Community,
    activity_id: uuid.UUID,
    session_id: uuid.UUID,
    principal: CurrentPrincipal,
) -> Any:
    _manage(principal, community)
    async with _pool(request).acquire() as conn:
        await activities.cancel_session(conn, community, activity_id, session_id, _now(request))
    return await _read(request, community, activity_id)


@router.post(
    "/{activity_id}/sessions/{session_id}/signups",
    status_code=status.HTTP_201_CREATED,
    response_model=SignupView,
    responses={
        200: {"description": "The resident already holds this sign-up"},
        **_errors(404, 409, 422),
    },
    summary="Sign a resident up for a session (twice is one sign-up)",
)
async def sign_up(
    request: Request,
    response: Response,
    community: Community,
    activity_id: uuid.UUID,
    session_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: SignupSpec,
) -> Any:
    principal.require_community(community)
    principal.require_role(*SIGNERS)
    async with _pool(request).acquire() as conn:
        row, created = await activities.sign_up(
            conn,
            community,
            activity_id,
            session_id,
            body.resident_id,
            _actor(principal),
            _now(request),
        )
    if not created:
        response.status_code = status.HTTP_200_OK
    return _signup_view(row)


@router.get(
    "/{activity_id}/sessions/{session_id}/signups",
    response_model=list[SignupView],
    responses=_errors(404, 422),
    summary="A session's sign-ups: holders, then the waiting list in order",
)
async def list_signups(
    request: Request,
    community: Community,
    activity_id: uuid.UUID,
    session_id: uuid.UUID,
    principal: CurrentPrincipal,
) -> Any:
    principal.require_community(community)
    principal.require_role(*SIGNERS, Role.PARTNER)
    async with _pool(request).acquire() as conn:
        session = await store.get_session(conn, activity_id, session_id)
        activity = await store.get_activity(conn, community, activity_id)
        if session is None or activity is None:
            raise NotFound("session")
        if principal.role is Role.PARTNER:
            stall = await store.get_stall(conn, activity_id, session["stall_id"])
            if stall is None or stall["partner_id"] != principal.subject_id:
                raise NotFound("session")
        rows = await store.signups_of_session(conn, session_id)
    personal = principal.role is not Role.PARTNER
    return [_signup_view(r, personal=personal) for r in rows]


@router.post(
    "/{activity_id}/signups/{signup_id}/cancel",
    response_model=SignupView,
    responses=_errors(404, 409, 422),
    summary="Withdraw a sign-up; its place goes to the waiting list's first",
)
async def cancel_signup(
    request: Request,
    community: Community,
    activity_id: uuid.UUID,
    signup_id: uuid.UUID,
    principal: CurrentPrincipal,
) -> Any:
    principal.require_community(community)
    principal.require_role(*SIGNERS)
    async with _pool(request).acquire() as conn:
        row = await activities.cancel_signup(conn, community, activity_id, signup_id, _now(request))
    return _signup_view(row)


@router.post(
    "/{activity_id}/signups/{signup_id}/attendance",
    response_model=SignupView,
    responses=_errors(404, 409, 422),
    summary="Record attendance (operator, admin or the stall's partner)",
)
async def record_attendance(
    request: Request,
    community: Community,
    activity_id: uuid.UUID,
    signup_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: AttendanceSpec,
) -> Any:
    principal.require_community(community)
    principal.require_role(*MANAGERS, Role.PARTNER)
    partner_id = None
    if principal.role is Role.PARTNER:
        if principal.subject_id is None:
            raise NotFound("sign-up")
        partner_id = principal.subject_id
    async with _pool(request).acquire() as conn:
        row = await activities.record_attendance(
            conn,
            community,
            activity_id,
            signup_id,
            body.outcome == "attended",
            _actor(principal),
            partner_id,
            _now(request),
        )
    return _signup_view(row, personal=partner_id is None)
