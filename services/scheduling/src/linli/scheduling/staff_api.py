"""Staff actions over HTTP (ADR 0034): escalations to acknowledge, assign and resolve;
needs to dispatch by hand or re-offer.

For a community's operators and admins only; another community answers 404 and nothing
changes. Bad bodies answer 422 with field reasons, forbidden transitions 409, all in the
one error shape.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from linli.contracts.events import EscalationOutcome, PartyKind, PartyRef
from linli.contracts.types import CommunitySlug, Flag, Role
from linli.servicekit.auth import CurrentPrincipal, Principal
from linli.servicekit.cursors import Cursor, decode_cursor, encode_cursor
from linli.servicekit.http import error_response
from linli.servicekit.idempotency import (
    Idempotency,
    IdempotencyKey,
    check_replay,
    mark_replayed,
)

from . import store
from .rules import EscalationAction, EscalationState, NeedState
from .service import DispatchResult, Scheduler
from .staff import (
    ActionNotFound,
    ActionRefused,
    EscalationRequest,
    Staff,
    act_on_escalation,
)

router = APIRouter(prefix="/v1/communities/{community}", tags=["staff actions"])

Community = Annotated[CommunitySlug, Path(description="Community slug, e.g. taian-zhiyuan")]

STAFF = (Role.OPERATOR, Role.ADMIN)
READERS = (*STAFF, Role.STREET_OFFICE)
"""Who reads escalations: a street office too, without the resolve note (ADR 0040)."""

_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such community, escalation or need for this caller"},
    409: {"description": "Not allowed in the current state (`{error: conflict, detail}`)"},
}


# --- views --------------------------------------------------------------------


class ActorView(BaseModel):
    credential_id: uuid.UUID = Field(description="Credential that acted (in scheduling).")
    role: str = Field(description="Its role.")
    label: str = Field(description="Its label as issued (the staff desk or member).")


class EscalationActionView(BaseModel):
    action: str = Field(description="acknowledged, assigned or resolved.")
    at: datetime
    actor: ActorView
    assignee: str | None = None
    assignee_ref: str | None = None
    outcome: str | None = None
    note_recorded: Flag | None = None


class EscalationView(BaseModel):
    id: uuid.UUID = Field(description="Escalation id.")
    need_id: uuid.UUID = Field(description="Need it is about.")
    community: str
    reason: str = Field(description="Reason code as in need.escalated.")
    detail: str | None = None
    sla_deadline: datetime | None = None
    escalated_at: datetime = Field(description="When it was raised.")
    state: EscalationState
    acknowledged_at: datetime | None = None
    assigned_at: datetime | None = None
    assignee: str | None = Field(default=None, description="Staff member it is assigned to.")
    assignee_ref: str | None = None
    resolved_at: datetime | None = None
    outcome: EscalationOutcome | None = None
    note: str | None = Field(
        default=None,
        description="The resolving operator's note (kept here, never in events); null for a "
        "street_office credential (free text, ADR 0040).",
    )
    actions: list[EscalationActionView] | None = Field(
        default=None, description="Who did what, in order (one escalation only)."
    )


class EscalationPage(BaseModel):
    items: list[EscalationView] = Field(description="Newest first.")
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` for more.")


class NeedActionResult(BaseModel):
    need_id: uuid.UUID
    state: NeedState = Field(description="Scheduling's state of the need afterwards.")
    assignment_id: uuid.UUID | None = Field(
        default=None, description="The need's current offer afterwards, if any."
    )
    withdrawn_assignment_id: uuid.UUID | None = Field(
        default=None, description="The open offer withdrawn first, if there was one."
    )
    without_capacity: Flag | None = Field(
        default=None,
        description="Dispatch only: true when the party had no published slot with room "
        "and the offer was made anyway (ADR 0034).",
    )
    changed: Flag = Field(description="False when the request repeated what was already so.")


# --- requests -----------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class AssignRequest(_Body):
    assignee: str = Field(
        min_length=1,
        max_length=100,
        pattern=_NO_CONTROL,
        description="Display name of the staff member who takes it on (no resident data).",
    )
    assignee_ref: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:@-]+$",
        description="The staff member's reference in the community's own systems.",
    )


class ResolveRequest(_Body):
    outcome: EscalationOutcome = Field(description="How it ended.")
    note: str | None = Field(
        default=None,
        min_length=1,
        max_length=2000,
        description="What was found and done; required when the outcome is `other`. "
        "Stays in scheduling (never in an event).",
    )

    @model_validator(mode="after")
    def _note_for_other(self) -> ResolveRequest:
        if self.outcome is EscalationOutcome.OTHER and not self.note:
            raise ValueError("a note is required when the outcome is other")
        return self


class PartyChoice(_Body):
    kind: PartyKind = Field(description="partner or volunteer.")
    id: uuid.UUID = Field(description="Partner or volunteer id (from partners).")

    def ref(self) -> PartyRef:
        return PartyRef(kind=self.kind, id=self.id)


class DispatchRequest(_Body):
    party: PartyChoice = Field(description="Who the need is offered to.")
    slot_id: uuid.UUID | None = Field(
        default=None, description="One of the party's published slots to use."
    )


class ReofferRequest(_Body):
    readmit: list[PartyChoice] = Field(
        default_factory=list,
        max_length=50,
        description="Parties who declined or let an offer lapse (or whose offer was "
        "withdrawn) that may be asked again.",
    )


# --- helpers ------------------------------------------------------------------


def _staff(principal: Principal, community: str) -> Staff:
    principal.require_community(community)
    principal.require_role(*STAFF)
    return Staff(principal.credential_id, principal.role, principal.label)


def _reader(principal: Principal, community: str) -> None:
    principal.require_community(community)
    principal.require_role(*READERS)


def _escalation_view(
    row: Any, actions: list[Any] | None = None, *, personal: bool = True
) -> EscalationView:
    view = EscalationView(**{k: row[k] for k in EscalationView.model_fields if k != "actions"})
    if not personal:
        view.note = None
    if actions is not None:
        view.actions = [
            EscalationActionView(
                action=a["action"],
                at=a["at"],
                actor=ActorView(
                    credential_id=a["actor_credential"],
                    role=a["actor_role"],
                    label=a["actor_label"],
                ),
                assignee=a["assignee"],
                assignee_ref=a["assignee_ref"],
                outcome=a["outcome"],
                note_recorded=a["note_recorded"],
            )
            for a in actions
        ]
    return view


async def _one_escalation(
    conn: Any, community: str, escalation_id: uuid.UUID, *, personal: bool = True
) -> EscalationView:
    row = await store.get_escalation(conn, community, escalation_id)
    if row is None:
        raise ActionNotFound("escalation")
    actions = await store.escalation_actions(conn, escalation_id)
    return _escalation_view(row, actions, personal=personal)


def _clock_now(request: Request) -> datetime:
    scheduler: Scheduler = request.app.state.scheduler
    return scheduler.clock.now()


# --- escalations --------------------------------------------------------------


@router.get(
    "/escalations",
    response_model=EscalationPage,
    summary="Escalations, newest first",
    responses=ERRORS,
)
async def list_escalations(
    request: Request,
    community: Community,
    principal: CurrentPrincipal,
    state: Annotated[EscalationState | None, Query(description="Only this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Cursor = None,
) -> Any:
    _reader(principal, community)
    before = decode_cursor(cursor)
    async with request.app.state.runtime.pool.acquire() as conn:
        rows = await store.list_escalations(
            conn, community, state=state.value if state else None, limit=limit + 1, before=before
        )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["escalated_at"], rows[-1]["id"]) if more else None
    personal = principal.sees_personal_data
    return EscalationPage(
        items=[_escalation_view(r, personal=personal) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/escalations/{escalation_id}",
    response_model=EscalationView,
    summary="One escalation with who did what",
    responses=ERRORS,
)
async def get_escalation(
    request: Request, community: Community, escalation_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    _reader(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        return await _one_escalation(
            conn, community, escalation_id, personal=principal.sees_personal_data
        )


async def _act(
    request: Request,
    response: Response,
    community: str,
    escalation_id: uuid.UUID,
    principal: Principal,
    action: EscalationRequest,
) -> EscalationView:
    staff = _staff(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        changed = await act_on_escalation(
            conn, community, escalation_id, action, staff, _clock_now(request)
        )
        view = await _one_escalation(conn, community, escalation_id)
    if not changed:
        response.headers["Idempotent-Replayed"] = "true"
    return view


@router.post(
    "/escalations/{escalation_id}/acknowledge",
    response_model=EscalationView,
    summary="Acknowledge: someone is looking at it",
    responses=ERRORS,
)
async def acknowledge(
    request: Request,
    response: Response,
    community: Community,
    escalation_id: uuid.UUID,
    principal: CurrentPrincipal,
) -> Any:
    return await _act(
        request,
        response,
        community,
        escalation_id,
        principal,
        EscalationRequest(EscalationAction.ACKNOWLEDGE),
    )


@router.post(
    "/escalations/{escalation_id}/assign",
    response_model=EscalationView,
    summary="Assign to a named staff member (acknowledges an open one)",
    responses=ERRORS,
)
async def assign(
    request: Request,
    response: Response,
    community: Community,
    escalation_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: Annotated[AssignRequest, Body()],
) -> Any:
    return await _act(
        request,
        response,
        community,
        escalation_id,
        principal,
        EscalationRequest(
            EscalationAction.ASSIGN, assignee=body.assignee, assignee_ref=body.assignee_ref
        ),
    )


@router.post(
    "/escalations/{escalation_id}/resolve",
    response_model=EscalationView,
    summary="Resolve with an outcome and a note (acknowledges an open one)",
    responses=ERRORS,
)
async def resolve(
    request: Request,
    response: Response,
    community: Community,
    escalation_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: Annotated[ResolveRequest, Body()],
) -> Any:
    return await _act(
        request,
        response,
        community,
        escalation_id,
        principal,
        EscalationRequest(EscalationAction.RESOLVE, outcome=body.outcome, note=body.note),
    )


# --- needs --------------------------------------------------------------------


async def _need_action(
    request: Request,
    response: Response,
    community: str,
    principal: Principal,
    idempotency_key: str | None,
    body: dict[str, Any],
    run: Any,
) -> Any:
    """Run a need action once per Idempotency-Key: a retry answers the first result."""
    staff = _staff(principal, community)
    idem = Idempotency.of(idempotency_key, principal.credential_id, community, body)
    async with request.app.state.runtime.pool.acquire() as conn, conn.transaction():
        if idem is not None:
            earlier = await store.claim_idempotency_key(
                conn, community, idem.credential_id, idem.key, idem.fingerprint
            )
            if earlier is not None:
                check_replay(idem, earlier["request_sha256"])
                mark_replayed(response)
                return NeedActionResult.model_validate_json(earlier["response"])
        result: DispatchResult = await run(conn, staff)
        view = NeedActionResult(
            need_id=result.need_id,
            state=result.state,
            assignment_id=result.assignment_id,
            withdrawn_assignment_id=result.withdrawn_assignment_id,
            without_capacity=result.without_capacity,
            changed=result.changed,
        )
        if idem is not None:
            await store.set_idempotent_response(
                conn, community, idem.credential_id, idem.key, view.model_dump(mode="json")
            )
    return view


@router.post(
    "/needs/{need_id}/dispatch",
    response_model=NeedActionResult,
    summary="Offer a need by hand to a chosen partner or volunteer",
    responses=ERRORS,
)
async def dispatch(
    request: Request,
    response: Response,
    community: Community,
    need_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: Annotated[DispatchRequest, Body()],
    idempotency_key: IdempotencyKey = None,
) -> Any:
    scheduler: Scheduler = request.app.state.scheduler

    async def run(conn: Any, staff: Staff) -> DispatchResult:
        return await scheduler.dispatch(
            conn, community, need_id, body.party.ref(), body.slot_id, staff
        )

    return await _need_action(
        request,
        response,
        community,
        principal,
        idempotency_key,
        {"need_id": str(need_id), **body.model_dump(mode="json")},
        run,
    )


@router.post(
    "/needs/{need_id}/reoffer",
    response_model=NeedActionResult,
    summary="Withdraw the open offer, if any, and match the need again",
    responses=ERRORS,
)
async def reoffer(
    request: Request,
    response: Response,
    community: Community,
    need_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: Annotated[ReofferRequest | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    scheduler: Scheduler = request.app.state.scheduler
    wanted = body or ReofferRequest()

    async def run(conn: Any, staff: Staff) -> DispatchResult:
        return await scheduler.reoffer(
            conn, community, need_id, [p.ref() for p in wanted.readmit], staff
        )

    return await _need_action(
        request,
        response,
        community,
        principal,
        idempotency_key,
        {"need_id": str(need_id), **wanted.model_dump(mode="json")},
        run,
    )


def install_error_handlers(app: Any) -> None:
    """Map the staff use cases' refusals to the one error shape."""

    async def not_found(_r: Request, exc: Exception) -> JSONResponse:
        return error_response(404, "not_found", f"{exc} not found")

    async def refused(_r: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ActionRefused)
        if exc.status == 422:
            detail = [{"field": exc.field or "body", "message": exc.message, "code": exc.code}]
            return error_response(422, "validation_failed", detail)
        return error_response(exc.status, "conflict", exc.message)

    app.add_exception_handler(ActionNotFound, not_found)
    app.add_exception_handler(ActionRefused, refused)
