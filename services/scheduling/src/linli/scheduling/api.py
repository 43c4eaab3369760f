"""Scheduling's HTTP API: what operators watch — open needs, SLA clocks, escalations,
offers and capacity — for one community at a time.

Every route is authenticated and scoped: the community in the path must be one the
credential names, else 404 (another community's data does not exist for the caller).
Read-only; staff actions (which change state) are in `staff_api`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from linli.contracts.types import CommunitySlug, Flag, NeedKind, Role
from linli.servicekit.auth import CurrentPrincipal, Principal
from linli.servicekit.http import error_response

from . import store
from .rules import NeedState

router = APIRouter(prefix="/v1/communities/{community}", tags=["schedule"])

Community = Annotated[CommunitySlug, Path(description="Community slug, e.g. taian-zhiyuan")]

READERS = (Role.OPERATOR, Role.SYSTEM, Role.ADMIN, Role.STREET_OFFICE)
"""Every view here carries ids, codes, windows and times, no resident's personal data:
a street office reads them too (ADR 0040)."""


class TimerView(BaseModel):
    kind: str = Field(
        description="offer_overdue, sla_at_risk, sla_breach or rematch (offer_expiry: "
        "before ADR 0026)."
    )
    clock: str | None = Field(default=None, description="SLA clock: accept or complete.")
    due_at: datetime = Field(description="When it fires (or fired).")
    deadline: datetime | None = Field(default=None, description="The SLA deadline.")
    assignment_id: uuid.UUID | None = Field(default=None, description="Offer it expires.")
    fired_at: datetime | None = Field(default=None, description="When it fired or was stopped.")
    outcome: str | None = Field(default=None, description="fired, stale or cancelled.")


class EscalationView(BaseModel):
    id: uuid.UUID = Field(description="Escalation id (the staff actions' path).")
    state: str = Field(description="open, acknowledged, assigned or resolved.")
    reason: str = Field(description="Reason code as in need.escalated.")
    detail: str | None = Field(default=None, description="Human-readable detail.")
    sla_deadline: datetime | None = Field(default=None, description="SLA deadline concerned.")
    escalated_at: datetime = Field(description="When it was escalated.")


class AssignmentView(BaseModel):
    id: uuid.UUID = Field(description="Assignment id.")
    reservation_id: uuid.UUID = Field(description="Reservation of one unit of the slot.")
    slot_id: uuid.UUID = Field(description="Slot used.")
    provider: dict[str, Any] = Field(description="kind (partner/volunteer) and id.")
    attempt: int = Field(description="1 for the need's first offer.")
    state: str = Field(description="offered, accepted, declined, expired, cancelled, ...")
    offered_at: datetime
    expires_at: datetime
    answered_at: datetime | None = None
    closed_at: datetime | None = None
    release_reason: str | None = None
    leg: str | None = Field(
        default=None,
        description="prepare or carry for a leg of a two-leg meal (ADR 0044); "
        "null: the whole need.",
    )


class NeedActionView(BaseModel):
    action: str = Field(description="dispatched or reoffered.")
    at: datetime
    actor: dict[str, Any] = Field(description="credential_id, role and label of who acted.")
    assignment_id: uuid.UUID | None = Field(default=None, description="Directed offer made.")
    withdrawn_assignment_id: uuid.UUID | None = Field(
        default=None, description="Open offer withdrawn first."
    )
    without_capacity: Flag | None = None


class ScheduledNeedView(BaseModel):
    id: uuid.UUID = Field(description="Need id (from intake).")
    community: str
    kind: str
    urgency: str
    priority_group: str
    state: str = Field(description="Scheduling state (see the README's state machine).")
    window: dict[str, datetime] = Field(description="earliest and latest.")
    compound: str | None = None
    submitted_at: datetime
    updated_at: datetime
    current_assignment: uuid.UUID | None = None
    attempts: int = Field(description="Offers made so far.")
    two_leg: Flag = Field(
        default=False,
        description="Served in two legs (ADR 0044): state, current_assignment and attempts "
        "follow the carry leg; prepare_assignment is the canteen's leg.",
    )
    prepare_assignment: uuid.UUID | None = Field(
        default=None, description="The prepare leg's current assignment (two-leg meals)."
    )
    sla_clocks: list[TimerView] = Field(description="Pending SLA timers (open clocks).")
    escalations: list[EscalationView]
    assignments: list[AssignmentView] | None = Field(
        default=None, description="Offer history (single need only)."
    )
    timers: list[TimerView] | None = Field(
        default=None, description="Every timer, fired or not (single need only)."
    )
    actions: list[NeedActionView] | None = Field(
        default=None, description="Staff dispatches and re-offers, in order (single need only)."
    )


class NeedList(BaseModel):
    items: list[ScheduledNeedView] = Field(description="Highest priority first.")


class SlotView(BaseModel):
    id: uuid.UUID
    kind: str
    provider: dict[str, Any]
    window: dict[str, datetime]
    capacity: int
    reserved: int
    remaining: int
    compounds: list[str]
    published_at: datetime
    directed_need: uuid.UUID | None = Field(
        default=None,
        description="Set on a one-off slot made for a directed offer without published "
        "capacity (ADR 0034): the need it was made for; matching never uses it.",
    )
    leg: str | None = Field(
        default=None,
        description="prepare (cooks, does not carry) or carry for meal capacity serving a leg "
        "(ADR 0044); null: serves the whole need.",
    )


class SlotList(BaseModel):
    items: list[SlotView]


def _authorize(principal: Principal, community: str) -> None:
    principal.require_community(community)
    principal.require_role(*READERS)


def _timer(row: Any) -> TimerView:
    return TimerView(
        kind=row["kind"],
        clock=row["clock"],
        due_at=row["due_at"],
        deadline=row["deadline"],
        assignment_id=row["assignment_id"],
        fired_at=row["fired_at"],
        outcome=row["outcome"],
    )


def _need(row: Any, timers: list[Any], escalations: list[Any]) -> ScheduledNeedView:
    return ScheduledNeedView(
        id=row["id"],
        community=row["community"],
        kind=row["kind"],
        urgency=row["urgency"],
        priority_group=row["priority_group"],
        state=row["state"],
        window={"earliest": row["window_earliest"], "latest": row["window_latest"]},
        compound=row["compound"],
        submitted_at=row["submitted_at"],
        updated_at=row["updated_at"],
        current_assignment=row["current_assignment"],
        attempts=row["attempts"],
        two_leg=row["two_leg"],
        prepare_assignment=row["prepare_assignment"],
        sla_clocks=[
            _timer(t) for t in timers if t["kind"] == "sla_breach" and t["fired_at"] is None
        ],
        escalations=[
            EscalationView(
                id=e["id"],
                state=e["state"],
                reason=e["reason"],
                detail=e["detail"],
                sla_deadline=e["sla_deadline"],
                escalated_at=e["escalated_at"],
            )
            for e in escalations
        ],
    )


@router.get("/schedule/needs", response_model=NeedList, summary="Needs by priority")
async def list_needs(
    request: Request,
    community: Community,
    principal: CurrentPrincipal,
    state: Annotated[
        NeedState | None, Query(description="Only this state; default: every open need.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Any:
    _authorize(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        rows = await store.list_needs(
            conn, community, state=state.value if state else None, limit=limit
        )
        ids = [r["id"] for r in rows]
        timers = await store.timers_for(conn, ids)
        escalations = await store.escalations_for(conn, ids)
    timers_by: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for t in timers:
        timers_by[t["need_id"]].append(t)
    escalations_by: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for e in escalations:
        escalations_by[e["need_id"]].append(e)
    return NeedList(items=[_need(r, timers_by[r["id"]], escalations_by[r["id"]]) for r in rows])


@router.get(
    "/schedule/needs/{need_id}",
    response_model=ScheduledNeedView,
    summary="One need with its offers, timers and escalations",
)
async def get_need(
    request: Request, community: Community, need_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    _authorize(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await store.get_need(conn, community, need_id)
        if row is None:
            return error_response(404, "not_found", "need not found")
        timers = await store.timers_for(conn, [need_id])
        escalations = await store.escalations_for(conn, [need_id])
        assignments = await store.assignments_for(conn, need_id)
        actions = await store.need_actions_for(conn, need_id)
    view = _need(row, timers, escalations)
    view.timers = [_timer(t) for t in timers]
    view.actions = [
        NeedActionView(
            action=a["action"],
            at=a["at"],
            actor={
                "credential_id": str(a["actor_credential"]),
                "role": a["actor_role"],
                "label": a["actor_label"],
            },
            assignment_id=a["assignment_id"],
            withdrawn_assignment_id=a["withdrawn_assignment_id"],
            without_capacity=a["without_capacity"],
        )
        for a in actions
    ]
    view.assignments = [
        AssignmentView(
            id=a["id"],
            reservation_id=a["reservation_id"],
            slot_id=a["slot_id"],
            provider={"kind": a["provider_kind"], "id": a["provider_id"]},
            attempt=a["attempt"],
            state=a["state"],
            offered_at=a["offered_at"],
            expires_at=a["expires_at"],
            answered_at=a["answered_at"],
            closed_at=a["closed_at"],
            release_reason=a["release_reason"],
            leg=a["leg"],
        )
        for a in assignments
    ]
    return view


@router.get("/slots", response_model=SlotList, tags=["slots"], summary="Capacity and its use")
async def list_slots(
    request: Request,
    community: Community,
    principal: CurrentPrincipal,
    kind: Annotated[NeedKind | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> Any:
    _authorize(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        rows = await store.list_slots(
            conn, community, kind=kind.value if kind else None, limit=limit
        )
    return SlotList(
        items=[
            SlotView(
                id=r["id"],
                kind=r["kind"],
                provider={"kind": r["provider_kind"], "id": r["provider_id"]},
                window={"earliest": r["window_earliest"], "latest": r["window_latest"]},
                capacity=r["capacity"],
                reserved=r["reserved"],
                remaining=r["capacity"] - r["reserved"],
                compounds=list(r["compounds"]),
                published_at=r["published_at"],
                directed_need=r["directed_need"],
                leg=r["leg"],
            )
            for r in rows
        ]
    )
