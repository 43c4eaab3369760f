"""Partners' HTTP API.

Two audiences, two routers:

* `/v1/communities/{community}/…` for operators and admins of that community (a
  credential that does not name it gets 404: another community's partners, volunteers
  and slots do not exist for the caller). Partner and volunteer credentials may publish
  and list their own capacity there.
* `/v1/me/…` for a partner or volunteer credential (its `subject_id` is the partner or
  volunteer id): its own profile, the offers made to it, answers and reports. Another
  party's offer answers 404.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from linli.contracts.events import PartyKind, PartyRef
from linli.contracts.types import CommunitySlug, Flag, LocalTime, NeedKind, Role
from linli.servicekit import csvimport, disclosures
from linli.servicekit.auth import CurrentPrincipal, Principal
from linli.servicekit.http import error_response
from linli.servicekit.idempotency import Idempotency, IdempotencyKey, mark_replayed

from . import imports, rules, service, store
from .contacts import Contact
from .models import (
    AcceptRequest,
    CapacityImport,
    CompletionReport,
    DeclineRequest,
    DirectoryProfile,
    PartnerImport,
    PartnerSpec,
    RedemptionSpec,
    SlotSpec,
    VolunteerImport,
    VolunteerPatch,
    VolunteerSpec,
)

router = APIRouter(prefix="/v1/communities/{community}")
me_router = APIRouter(prefix="/v1/me", tags=["me"])
imports_router = APIRouter(prefix="/v1/communities/{community}/imports", tags=["imports"])

Community = Annotated[CommunitySlug, Path(description="Community slug, e.g. taian-zhiyuan")]
Limit = Annotated[int, Query(ge=1, le=200)]
OPERATORS = (Role.OPERATOR, Role.ADMIN)
OVERSIGHT = (*OPERATORS, Role.STREET_OFFICE)
"""Who reads partner organisations and published capacity: a street office too, without
the partners' staff contacts (ADR 0040)."""
PARTIES = (Role.PARTNER, Role.VOLUNTEER)


# --- views ------------------------------------------------------------------------------


class ServiceView(BaseModel):
    name: str
    need_kind: str
    cost_option: str
    description: str | None = None


class ContactView(BaseModel):
    name: str
    title: str | None = None
    phone: str | None = None
    email: str | None = None


class PartnerView(BaseModel):
    id: uuid.UUID
    name: str
    kind: str
    description: str | None
    communities: list[str]
    services: list[ServiceView]
    contacts: list[ContactView] | None = Field(
        default=None,
        description="Staff contacts; shown to operators only (null for a street_office "
        "credential, ADR 0040).",
    )
    directory: DirectoryProfile | None = Field(
        default=None,
        description="The organisation's public directory entry (ADR 0051): its own channels, "
        "no person's; published only when `public` is true.",
    )
    created_at: datetime


class PartnerPage(BaseModel):
    items: list[PartnerView]


class AvailabilityView(BaseModel):
    weekday: int
    start: LocalTime
    end: LocalTime


class VolunteerView(BaseModel):
    id: uuid.UUID
    display_name: str
    skills: list[str]
    communities: list[str]
    active: Flag
    availability: list[AvailabilityView]
    created_at: datetime
    updated_at: datetime


class VolunteerPage(BaseModel):
    items: list[VolunteerView]


class SlotView(BaseModel):
    id: uuid.UUID
    community: str
    kind: str
    provider: PartyRef
    window: dict[str, datetime]
    capacity: int
    compounds: list[str]
    published_at: datetime
    leg: str | None = Field(
        default=None, description="prepare or carry for meal capacity serving one leg (ADR 0044)."
    )


class SlotPage(BaseModel):
    items: list[SlotView]


class ResidentContact(BaseModel):
    name: str
    phone: str
    address: str
    locale: str | None = None


class OfferView(BaseModel):
    assignment_id: uuid.UUID
    community: str
    need_id: uuid.UUID
    slot_id: uuid.UUID
    kind: str
    urgency: str
    window: dict[str, datetime]
    details: dict[str, Any]
    compound: str | None
    attempt: int
    offered_at: datetime
    expires_at: datetime
    status: str = Field(
        description="open, expired, accepted, declined, withdrawn, completed or failed."
    )
    status_reason: str | None = None
    answered_at: datetime | None = None
    leg: str | None = Field(
        default=None, description="prepare or carry: a leg of a two-leg meal (ADR 0044)."
    )
    contact_status: str | None = Field(
        default=None,
        description="shared, not_shared (no consent), unavailable (intake down) or "
        "not_accepted; only on the single-offer view.",
    )
    contact: ResidentContact | None = Field(
        default=None, description="The resident's contact, only after acceptance."
    )
    description: str | None = Field(
        default=None,
        description="A repair's description in the requester's words: from intake, only "
        "for the accepted helper on the single-offer view (ADR 0031).",
    )


class OfferPage(BaseModel):
    items: list[OfferView]


class ReportNotesView(BaseModel):
    assignment_id: uuid.UUID = Field(description="Assignment reported.")
    outcome: str = Field(description="meal_delivered, visit_completed, repair_completed or failed.")
    reported_by: PartyRef = Field(description="Who reported it.")
    reported_at: datetime = Field(description="When it was reported.")
    notes: dict[str, str | None] = Field(
        description="The report's free text: observations, summary, detail, neighbour_note "
        "(whichever the outcome has)."
    )


class ReportNotesPage(BaseModel):
    items: list[ReportNotesView] = Field(description="The need's reports, oldest first.")


class ReportView(BaseModel):
    assignment_id: uuid.UUID
    outcome: str
    points_awarded: int
    balance_after: int | None = None


class LedgerEntryView(BaseModel):
    id: int
    entry_group: uuid.UUID
    community: str
    amount: int
    entry_kind: str
    need_id: uuid.UUID | None = None
    assignment_id: uuid.UUID | None = None
    note: str | None = None
    created_at: datetime


class CommunityBalance(BaseModel):
    community: str
    balance: int


class PointsView(BaseModel):
    volunteer_id: uuid.UUID
    balance: int = Field(
        description="In a community's view, the balance there; in the volunteer's own view, "
        "the sum over its communities."
    )
    communities: list[CommunityBalance] | None = Field(
        default=None,
        description="The volunteer's own view only: its balance in each community "
        "(points are redeemable only where they were earned).",
    )
    entries: list[LedgerEntryView]


class RedemptionView(BaseModel):
    redemption_id: uuid.UUID
    volunteer_id: uuid.UUID
    points: int
    balance_after: int = Field(description="The volunteer's balance in this community after.")


class MeView(BaseModel):
    role: str
    party: PartyRef
    partner: PartnerView | None = None
    volunteer: VolunteerView | None = None
    points_balance: int | None = None


# --- helpers ----------------------------------------------------------------------------


def _actor(principal: Principal) -> service.Actor:
    return service.Actor(principal.role, str(principal.credential_id))


def _clock(request: Request) -> service.Clock:
    clock: service.Clock = request.app.state.clock
    return clock


def _operator(principal: Principal, community: str) -> None:
    principal.require_community(community)
    principal.require_role(*OPERATORS)


def _overseer(principal: Principal, community: str) -> None:
    principal.require_community(community)
    principal.require_role(*OVERSIGHT)


def _party(principal: Principal) -> PartyRef:
    principal.require_role(*PARTIES)
    party = rules.party_of(principal.role, principal.subject_id)
    if party is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="credential names no party")
    return party


def _own_party(principal: Principal) -> PartyRef | None:
    return rules.party_of(principal.role, principal.subject_id)


def _scope(principal: Principal) -> list[str]:
    return sorted(principal.communities)


async def _partner_views(conn: Any, rows: list[Any], *, with_contacts: bool) -> list[PartnerView]:
    ids = [r["id"] for r in rows]
    services: dict[uuid.UUID, list[ServiceView]] = {i: [] for i in ids}
    for s in await store.services_of(conn, ids):
        services[s["partner_id"]].append(
            ServiceView(
                name=s["name"],
                need_kind=s["need_kind"],
                cost_option=s["cost_option"],
                description=s["description"],
            )
        )
    contacts: dict[uuid.UUID, list[ContactView]] = {i: [] for i in ids}
    if with_contacts:
        for c in await store.contacts_of(conn, ids):
            contacts[c["partner_id"]].append(
                ContactView(name=c["name"], title=c["title"], phone=c["phone"], email=c["email"])
            )
    return [
        PartnerView(
            id=r["id"],
            name=r["name"],
            kind=r["kind"],
            description=r["description"],
            communities=list(r["communities"]),
            services=services[r["id"]],
            contacts=contacts[r["id"]] if with_contacts else None,
            directory=store.directory_of(r),
            created_at=r["created_at"],
        )
        for r in rows
    ]


async def _volunteer_views(conn: Any, rows: list[Any]) -> list[VolunteerView]:
    ids = [r["id"] for r in rows]
    periods: dict[uuid.UUID, list[AvailabilityView]] = {i: [] for i in ids}
    for a in await store.availability_of(conn, ids):
        periods[a["volunteer_id"]].append(
            AvailabilityView(weekday=a["weekday"], start=a["start_time"], end=a["end_time"])
        )
    return [
        VolunteerView(
            id=r["id"],
            display_name=r["display_name"],
            skills=list(r["skills"]),
            communities=list(r["communities"]),
            active=r["active"],
            availability=periods[r["id"]],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
        )
        for r in rows
    ]


def _slot_view(row: Any) -> SlotView:
    return SlotView(
        id=row["id"],
        community=row["community"],
        kind=row["kind"],
        provider=PartyRef(kind=PartyKind(row["provider_kind"]), id=row["provider_id"]),
        window={"earliest": row["window_earliest"], "latest": row["window_latest"]},
        capacity=row["capacity"],
        compounds=list(row["compounds"]),
        published_at=row["published_at"],
        leg=row["leg"],
    )


def _offer_view(row: Any, now: datetime, **extra: Any) -> OfferView:
    return OfferView(
        assignment_id=row["assignment_id"],
        community=row["community"],
        need_id=row["need_id"],
        slot_id=row["slot_id"],
        kind=row["kind"],
        urgency=row["urgency"],
        window={"earliest": row["window_earliest"], "latest": row["window_latest"]},
        details=store.details_of(row),
        compound=row["compound"],
        attempt=row["attempt"],
        offered_at=row["offered_at"],
        expires_at=row["expires_at"],
        status=rules.offer_status(row["status"], row["expires_at"], now),
        status_reason=row["status_reason"] if row["status"] == "withdrawn" else None,
        answered_at=row["answered_at"],
        leg=row["leg"],
        **extra,
    )


# --- partners ---------------------------------------------------------------------------


@router.post(
    "/partners",
    status_code=status.HTTP_201_CREATED,
    response_model=PartnerView,
    tags=["partners"],
    summary="Register a partner organisation",
)
async def create_partner(
    request: Request, community: Community, principal: CurrentPrincipal, spec: PartnerSpec
) -> Any:
    _operator(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        partner_id = await service.create_partner(
            conn, community, spec, _actor(principal), principal.can_access
        )
        row = await store.get_partner(conn, community, partner_id)
        (view,) = await _partner_views(conn, [row], with_contacts=True)
    return view


@router.get(
    "/partners", response_model=PartnerPage, tags=["partners"], summary="Partners serving here"
)
async def list_partners(
    request: Request, community: Community, principal: CurrentPrincipal, limit: Limit = 100
) -> Any:
    _overseer(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        rows = await store.list_partners(conn, community, limit=limit)
        views = await _partner_views(conn, rows, with_contacts=principal.sees_personal_data)
        return PartnerPage(items=views)


@router.get(
    "/partners/{partner_id}", response_model=PartnerView, tags=["partners"], summary="One partner"
)
async def get_partner(
    request: Request, community: Community, partner_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    _overseer(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await store.get_partner(conn, community, partner_id)
        if row is None:
            return error_response(404, "not_found", "partner not found")
        (view,) = await _partner_views(conn, [row], with_contacts=principal.sees_personal_data)
    return view


# --- volunteers -------------------------------------------------------------------------


@router.post(
    "/volunteers",
    status_code=status.HTTP_201_CREATED,
    response_model=VolunteerView,
    tags=["volunteers"],
    summary="Register a volunteer",
)
async def create_volunteer(
    request: Request, community: Community, principal: CurrentPrincipal, spec: VolunteerSpec
) -> Any:
    _operator(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        volunteer_id = await service.create_volunteer(
            conn, community, spec, _actor(principal), principal.can_access
        )
        row = await store.get_volunteer(conn, community, volunteer_id)
        (view,) = await _volunteer_views(conn, [row])
    return view


@router.get(
    "/volunteers", response_model=VolunteerPage, tags=["volunteers"], summary="Volunteers here"
)
async def list_volunteers(
    request: Request,
    community: Community,
    principal: CurrentPrincipal,
    skill: Annotated[NeedKind | None, Query()] = None,
    limit: Limit = 100,
) -> Any:
    _operator(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        rows = await store.list_volunteers(
            conn, community, skill=skill.value if skill else None, limit=limit
        )
        return VolunteerPage(items=await _volunteer_views(conn, rows))


@router.get(
    "/volunteers/{volunteer_id}",
    response_model=VolunteerView,
    tags=["volunteers"],
    summary="One volunteer",
)
async def get_volunteer(
    request: Request, community: Community, volunteer_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    _operator(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await store.get_volunteer(conn, community, volunteer_id)
        if row is None:
            return error_response(404, "not_found", "volunteer not found")
        (view,) = await _volunteer_views(conn, [row])
    return view


@router.patch(
    "/volunteers/{volunteer_id}",
    response_model=VolunteerView,
    tags=["volunteers"],
    summary="Change a volunteer (skills, availability, active)",
)
async def update_volunteer(
    request: Request,
    community: Community,
    volunteer_id: uuid.UUID,
    principal: CurrentPrincipal,
    patch: VolunteerPatch,
) -> Any:
    _operator(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        await service.update_volunteer(conn, community, volunteer_id, patch)
        row = await store.get_volunteer(conn, community, volunteer_id)
        (view,) = await _volunteer_views(conn, [row])
    return view


@router.delete(
    "/volunteers/{volunteer_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["volunteers"],
    summary="Deactivate a volunteer (history and points stay)",
)
async def deactivate_volunteer(
    request: Request, community: Community, volunteer_id: uuid.UUID, principal: CurrentPrincipal
) -> None:
    _operator(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        await service.update_volunteer(conn, community, volunteer_id, VolunteerPatch(active=False))


@router.get(
    "/volunteers/{volunteer_id}/points",
    response_model=PointsView,
    tags=["points"],
    summary="A volunteer's balance and ledger history",
)
async def volunteer_points(
    request: Request,
    community: Community,
    volunteer_id: uuid.UUID,
    principal: CurrentPrincipal,
    limit: Limit = 100,
) -> Any:
    _operator(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        if await store.get_volunteer(conn, community, volunteer_id) is None:
            return error_response(404, "not_found", "volunteer not found")
        balance, entries = await service.points_history(conn, community, volunteer_id, limit=limit)
    return PointsView(
        volunteer_id=volunteer_id,
        balance=balance,
        entries=[LedgerEntryView(**dict(e)) for e in entries],
    )


@router.post(
    "/volunteers/{volunteer_id}/redemptions",
    status_code=status.HTTP_201_CREATED,
    response_model=RedemptionView,
    tags=["points"],
    summary="Redeem a volunteer's points earned in this community (emits points.redeemed; "
    "409 when the balance is too low)",
    responses={200: {"description": "Replay of an earlier request with the same key"}},
)
async def redeem_points(
    request: Request,
    response: Response,
    community: Community,
    volunteer_id: uuid.UUID,
    principal: CurrentPrincipal,
    spec: RedemptionSpec,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    _operator(principal, community)
    body = {"volunteer_id": str(volunteer_id), **spec.model_dump(mode="json")}
    idem = Idempotency.of(idempotency_key, principal.credential_id, community, body)
    async with request.app.state.runtime.pool.acquire() as conn:
        result = await service.redeem(
            conn,
            community,
            volunteer_id,
            spec,
            _actor(principal),
            clock=_clock(request),
            idempotency=idem,
        )
    if not result.created:
        mark_replayed(response)
    return RedemptionView(
        redemption_id=result.id,
        volunteer_id=result.volunteer_id,
        points=result.points,
        balance_after=result.balance_after,
    )


# --- reports ----------------------------------------------------------------------------


@router.get(
    "/needs/{need_id}/reports",
    response_model=ReportNotesPage,
    tags=["reports"],
    summary="A need's completion reports with their free text (operators; every read is "
    "recorded in personal-data-reads)",
)
async def need_reports(
    request: Request, community: Community, need_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    _operator(principal, community)
    reader = disclosures.Reader.of(principal)
    async with request.app.state.runtime.pool.acquire() as conn:
        rows = await service.report_notes(conn, community, need_id, reader)
    return ReportNotesPage(items=[_report_notes_view(r) for r in rows])


def _report_notes_view(row: Any) -> ReportNotesView:
    proof = store.proof_of(row)
    return ReportNotesView(
        assignment_id=row["assignment_id"],
        outcome=row["outcome"],
        reported_by=PartyRef(kind=PartyKind(row["party_kind"]), id=row["party_id"]),
        reported_at=row["reported_at"],
        notes={k: proof[k] for k in service.REPORT_NOTE_FIELDS if k in proof},
    )


# --- capacity ---------------------------------------------------------------------------


@router.post(
    "/slots",
    status_code=status.HTTP_201_CREATED,
    response_model=SlotView,
    tags=["slots"],
    summary="Publish capacity (emits slot.published)",
)
async def publish_slot(
    request: Request, community: Community, principal: CurrentPrincipal, spec: SlotSpec
) -> Any:
    principal.require_community(community)
    principal.require_role(*OPERATORS, *PARTIES)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await service.publish_slot(
            conn, community, spec, _actor(principal), _own_party(principal), clock=_clock(request)
        )
    return _slot_view(row)


@router.get("/slots", response_model=SlotPage, tags=["slots"], summary="Published capacity")
async def list_slots(
    request: Request, community: Community, principal: CurrentPrincipal, limit: Limit = 100
) -> Any:
    principal.require_community(community)
    principal.require_role(*OVERSIGHT, *PARTIES)
    # A partner or volunteer sees only its own capacity.
    own = None if principal.role in OVERSIGHT else _party(principal)
    async with request.app.state.runtime.pool.acquire() as conn:
        rows = await store.list_slots(conn, community, provider=own, limit=limit)
    return SlotPage(items=[_slot_view(r) for r in rows])


@router.get("/slots/{slot_id}", response_model=SlotView, tags=["slots"], summary="One slot")
async def get_slot(
    request: Request, community: Community, slot_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    principal.require_community(community)
    principal.require_role(*OVERSIGHT, *PARTIES)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await store.get_slot(conn, community, slot_id)
    if row is None:
        return error_response(404, "not_found", "slot not found")
    view = _slot_view(row)
    if principal.role not in OVERSIGHT and view.provider != _party(principal):
        return error_response(404, "not_found", "slot not found")
    return view


# --- me: a partner's or volunteer's own records -----------------------------------------


@me_router.get("", response_model=MeView, summary="The partner or volunteer behind this token")
async def me(request: Request, principal: CurrentPrincipal) -> Any:
    party = _party(principal)
    async with request.app.state.runtime.pool.acquire() as conn:
        if party.kind is PartyKind.PARTNER:
            row = await store.get_partner_by_id(conn, party.id)
            if row is None:
                return error_response(404, "not_found", "partner not found")
            (partner,) = await _partner_views(conn, [row], with_contacts=True)
            return MeView(role=principal.role.value, party=party, partner=partner)
        row = await store.get_volunteer_by_id(conn, party.id)
        if row is None:
            return error_response(404, "not_found", "volunteer not found")
        (volunteer,) = await _volunteer_views(conn, [row])
        balances = await store.volunteer_balances(conn, party.id)
    balance = sum(int(b["balance"]) for b in balances)
    return MeView(
        role=principal.role.value, party=party, volunteer=volunteer, points_balance=balance
    )


@me_router.get("/points", response_model=PointsView, tags=["points"], summary="My points")
async def my_points(request: Request, principal: CurrentPrincipal, limit: Limit = 100) -> Any:
    party = _party(principal)
    if party.kind is not PartyKind.VOLUNTEER:
        return error_response(404, "not_found", "only volunteers earn points")
    async with request.app.state.runtime.pool.acquire() as conn:
        balances, entries = await service.my_points(conn, party.id, limit=limit)
    return PointsView(
        volunteer_id=party.id,
        balance=sum(int(b["balance"]) for b in balances),
        communities=[
            CommunityBalance(community=b["community"], balance=b["balance"]) for b in balances
        ],
        entries=[LedgerEntryView(**dict(e)) for e in entries],
    )


@me_router.get("/offers", response_model=OfferPage, summary="Offers made to me, newest first")
async def my_offers(
    request: Request,
    principal: CurrentPrincipal,
    status_: Annotated[
        str | None,
        Query(
            alias="status",
            pattern="^(open|expired|accepted|declined|withdrawn|completed|failed)$",
        ),
    ] = None,
    limit: Limit = 50,
) -> Any:
    party = _party(principal)
    now = _clock(request).now()
    async with request.app.state.runtime.pool.acquire() as conn:
        rows = await store.list_offers(
            conn, party, _scope(principal), status=status_, now=now, limit=limit
        )
    return OfferPage(items=[_offer_view(r, now) for r in rows])


@me_router.get(
    "/offers/{assignment_id}",
    response_model=OfferView,
    summary="One offer; the resident's contact once I accepted and they consented",
)
async def my_offer(request: Request, assignment_id: uuid.UUID, principal: CurrentPrincipal) -> Any:
    party = _party(principal)
    found = await service.offer_for_party(
        request.app.state.runtime.pool,
        request.app.state.contact_directory,
        party,
        _scope(principal),
        assignment_id,
    )
    contact = _contact_view(found.contact)
    return _offer_view(
        found.offer,
        _clock(request).now(),
        contact=contact,
        contact_status=found.contact_status,
        description=found.description,
    )


def _contact_view(contact: Contact | None) -> ResidentContact | None:
    if contact is None:
        return None
    return ResidentContact(
        name=contact.name, phone=contact.phone, address=contact.address, locale=contact.locale
    )


@me_router.post(
    "/offers/{assignment_id}/accept",
    response_model=OfferView,
    summary="Accept an open offer (volunteer.confirmed or partner.accepted)",
)
async def accept_offer(
    request: Request,
    assignment_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: Annotated[AcceptRequest | None, Body()] = None,
) -> Any:
    return await _answer(
        request, principal, assignment_id, accept=True, eta=body.eta if body else None
    )


@me_router.post(
    "/offers/{assignment_id}/decline",
    response_model=OfferView,
    summary="Decline an open offer (volunteer.declined or partner.declined)",
)
async def decline_offer(
    request: Request,
    assignment_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: Annotated[DeclineRequest | None, Body()] = None,
) -> Any:
    return await _answer(
        request, principal, assignment_id, accept=False, reason=body.reason if body else None
    )


async def _answer(
    request: Request,
    principal: Principal,
    assignment_id: uuid.UUID,
    *,
    accept: bool,
    eta: datetime | None = None,
    reason: str | None = None,
) -> OfferView:
    party = _party(principal)
    clock = _clock(request)
    async with request.app.state.runtime.pool.acquire() as conn:
        await service.answer_offer(
            conn,
            party,
            _scope(principal),
            assignment_id,
            accept=accept,
            eta=eta,
            reason=reason,
            clock=clock,
        )
        row = await store.get_offer(conn, party, _scope(principal), assignment_id)
    return _offer_view(row, clock.now())


@me_router.post(
    "/offers/{assignment_id}/report",
    status_code=status.HTTP_201_CREATED,
    response_model=ReportView,
    summary="Report completion with proof, or a failed attempt (once)",
)
async def report(
    request: Request,
    assignment_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: Annotated[CompletionReport, Body()],
) -> Any:
    party = _party(principal)
    async with request.app.state.runtime.pool.acquire() as conn:
        result = await service.report_completion(
            conn,
            party,
            _scope(principal),
            assignment_id,
            body,
            points_table=request.app.state.points_table,
            clock=_clock(request),
        )
    return ReportView(
        assignment_id=assignment_id,
        outcome=result.outcome,
        points_awarded=result.points,
        balance_after=result.balance_after,
    )


def install_error_handlers(app: Any) -> None:
    """Map use-case outcomes to HTTP answers."""

    async def rejected(_r: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, service.Rejected)
        detail = [r.model_dump() for r in exc.reasons]
        code = "forbidden" if exc.status == 403 else "validation_failed"
        return error_response(exc.status, code, detail)

    async def not_found(_r: Request, exc: Exception) -> JSONResponse:
        return error_response(404, "not_found", f"{exc} not found")

    async def conflict(_r: Request, exc: Exception) -> JSONResponse:
        return error_response(409, "conflict", str(exc))

    app.add_exception_handler(service.Rejected, rejected)
    app.add_exception_handler(service.NotFound, not_found)
    app.add_exception_handler(service.Conflict, conflict)


# --- CSV imports (ADR 0035) -------------------------------------------------------------

DryRun = Annotated[
    bool,
    Query(
        description="true (the default): validate and report, write nothing; false: "
        "import, all rows or none."
    ),
]


@imports_router.post(
    "/partners",
    response_model=csvimport.ImportReport,
    responses=csvimport.IMPORT_RESPONSES,
    openapi_extra=csvimport.openapi_body(
        PartnerImport, "Partner organisations as rows of a CSV file, keyed by `external_ref`."
    ),
    summary="Import partners from CSV (dry run first)",
)
async def import_partners(
    request: Request, community: Community, principal: CurrentPrincipal, dry_run: DryRun = True
) -> Any:
    """Create or update partners by `external_ref`; the same file twice changes nothing."""
    _operator(principal, community)
    actor = _actor(principal)

    async def apply(conn: Any, row: PartnerImport) -> csvimport.Action:
        return await imports.import_partner(conn, community, row, actor)

    return await csvimport.handle_import(
        request,
        kind="partners",
        community=community,
        model=PartnerImport,
        apply=apply,
        key_of=lambda row: row.external_ref,
        dry_run=dry_run,
        lock=f"partners:import:partners:{community}",
    )


@imports_router.post(
    "/volunteers",
    response_model=csvimport.ImportReport,
    responses=csvimport.IMPORT_RESPONSES,
    openapi_extra=csvimport.openapi_body(
        VolunteerImport, "Volunteers as rows of a CSV file, keyed by `external_ref`."
    ),
    summary="Import volunteers from CSV (dry run first)",
)
async def import_volunteers(
    request: Request, community: Community, principal: CurrentPrincipal, dry_run: DryRun = True
) -> Any:
    """Create or update volunteers by `external_ref`; the same file twice changes nothing."""
    _operator(principal, community)
    actor = _actor(principal)

    async def apply(conn: Any, row: VolunteerImport) -> csvimport.Action:
        return await imports.import_volunteer(conn, community, row, actor)

    return await csvimport.handle_import(
        request,
        kind="volunteers",
        community=community,
        model=VolunteerImport,
        apply=apply,
        key_of=lambda row: row.external_ref,
        dry_run=dry_run,
        lock=f"partners:import:volunteers:{community}",
    )


@imports_router.post(
    "/capacity",
    response_model=csvimport.ImportReport,
    responses=csvimport.IMPORT_RESPONSES,
    openapi_extra=csvimport.openapi_body(
        CapacityImport,
        "Weekly capacity as rows of a CSV file: a volunteer row adds a weekly availability "
        "period; a partner row publishes a slot (emits slot.published). Providers are named "
        "by the `external_ref` of their own import.",
    ),
    summary="Import weekly capacity from CSV (dry run first)",
)
async def import_capacity(
    request: Request, community: Community, principal: CurrentPrincipal, dry_run: DryRun = True
) -> Any:
    """Add volunteers' weekly periods and publish partners' slots; the same file twice
    changes nothing (an existing period or slot is `unchanged`)."""
    _operator(principal, community)
    actor, clock = _actor(principal), _clock(request)

    async def apply(conn: Any, row: CapacityImport) -> csvimport.Action:
        return await imports.import_capacity(conn, community, row, actor, clock=clock)

    return await csvimport.handle_import(
        request,
        kind="capacity",
        community=community,
        model=CapacityImport,
        apply=apply,
        key_of=lambda row: row.key(),
        dry_run=dry_run,
        lock=f"partners:import:capacity:{community}",
        ref_column="provider_ref",
    )
