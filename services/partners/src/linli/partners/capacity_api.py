"""HTTP routes of recurring capacity (ADR 0042): slot templates, slot edits and
withdrawal, partner deactivation. Operators and admins of the community; a partner
credential for its own templates and slots (another's answer 404). A street office gets
403 on all of them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, status
from pydantic import BaseModel

from linli.contracts.types import CommunitySlug, Flag, LocalDate, LocalTime, Role
from linli.servicekit.auth import CurrentPrincipal, Principal

from . import capacity, store
from .api import (
    OPERATORS,
    PARTIES,
    Limit,
    PartnerView,
    SlotView,
    _actor,
    _own_party,
    _partner_views,
    _slot_view,
)
from .models import (
    ContactSpec,
    PartnerPatch,
    PartnerSpec,
    ServiceSpec,
    SlotPatch,
    SlotTemplatePatch,
    SlotTemplateSpec,
)
from .service import NotFound

router = APIRouter(prefix="/v1/communities/{community}", tags=["capacity"])
Community = Annotated[CommunitySlug, Path(description="Community slug, e.g. taian-zhiyuan")]


class SlotTemplateView(BaseModel):
    id: uuid.UUID
    community: str
    partner_id: uuid.UUID
    kind: str
    weekdays: list[int]
    start: LocalTime
    end: LocalTime
    timezone: str
    capacity: int
    compounds: list[str]
    valid_from: LocalDate | None
    valid_until: LocalDate | None
    generated_until: LocalDate | None
    created_at: datetime
    updated_at: datetime


class SlotTemplatePage(BaseModel):
    items: list[SlotTemplateView]


class DeactivationView(BaseModel):
    partner_id: uuid.UUID
    active: Flag
    slots_withdrawn: int


def _template_view(row: Any) -> SlotTemplateView:
    return SlotTemplateView(
        id=row["id"],
        community=row["community"],
        partner_id=row["partner_id"],
        kind=row["kind"],
        weekdays=list(row["weekdays"]),
        start=row["start_time"],
        end=row["end_time"],
        timezone=row["timezone"],
        capacity=row["capacity"],
        compounds=list(row["compounds"]),
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        generated_until=row["generated_until"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _template_caller(principal: Principal, community: str, partner_id: uuid.UUID) -> None:
    """Operators, or the partner itself (another partner's templates do not exist)."""
    principal.require_community(community)
    principal.require_role(*OPERATORS, Role.PARTNER)
    if principal.role is Role.PARTNER and principal.subject_id != partner_id:
        raise NotFound("partner")


def _wake(request: Request) -> None:
    request.app.state.template_wake.set()


@router.post(
    "/partners/{partner_id}/slot-templates",
    status_code=status.HTTP_201_CREATED,
    response_model=SlotTemplateView,
    summary="Register a weekly slot template (slots are generated ahead)",
)
async def create_template(
    request: Request,
    community: Community,
    partner_id: uuid.UUID,
    principal: CurrentPrincipal,
    spec: SlotTemplateSpec,
) -> Any:
    _template_caller(principal, community, partner_id)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await capacity.create_template(
            conn, community, partner_id, spec, _actor(principal), clock=request.app.state.clock
        )
    _wake(request)
    return _template_view(row)


@router.get(
    "/partners/{partner_id}/slot-templates",
    response_model=SlotTemplatePage,
    summary="A partner's slot templates",
)
async def list_templates(
    request: Request,
    community: Community,
    partner_id: uuid.UUID,
    principal: CurrentPrincipal,
    limit: Limit = 100,
) -> Any:
    _template_caller(principal, community, partner_id)
    async with request.app.state.runtime.pool.acquire() as conn:
        if await store.get_partner(conn, community, partner_id) is None:
            raise NotFound("partner")
        rows = await store.list_templates(conn, community, partner_id, limit)
    return SlotTemplatePage(items=[_template_view(r) for r in rows])


@router.get(
    "/partners/{partner_id}/slot-templates/{template_id}",
    response_model=SlotTemplateView,
    summary="One slot template",
)
async def get_template(
    request: Request,
    community: Community,
    partner_id: uuid.UUID,
    template_id: uuid.UUID,
    principal: CurrentPrincipal,
) -> Any:
    _template_caller(principal, community, partner_id)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await store.get_template(conn, community, partner_id, template_id)
    if row is None:
        raise NotFound("template")
    return _template_view(row)


@router.patch(
    "/partners/{partner_id}/slot-templates/{template_id}",
    response_model=SlotTemplateView,
    summary="Change a slot template (slots not yet generated)",
)
async def update_template(
    request: Request,
    community: Community,
    partner_id: uuid.UUID,
    template_id: uuid.UUID,
    principal: CurrentPrincipal,
    patch: SlotTemplatePatch,
) -> Any:
    _template_caller(principal, community, partner_id)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await capacity.update_template(
            conn, community, partner_id, template_id, patch, clock=request.app.state.clock
        )
    _wake(request)
    return _template_view(row)


@router.delete(
    "/partners/{partner_id}/slot-templates/{template_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Stop a slot template (published slots stay)",
)
async def delete_template(
    request: Request,
    community: Community,
    partner_id: uuid.UUID,
    template_id: uuid.UUID,
    principal: CurrentPrincipal,
) -> None:
    _template_caller(principal, community, partner_id)
    async with request.app.state.runtime.pool.acquire() as conn:
        await capacity.delete_template(
            conn, community, partner_id, template_id, clock=request.app.state.clock
        )


@router.patch(
    "/slots/{slot_id}",
    response_model=SlotView,
    summary="Change a slot's window, capacity or compounds (emits slot.revised)",
)
async def revise_slot(
    request: Request,
    community: Community,
    slot_id: uuid.UUID,
    principal: CurrentPrincipal,
    patch: SlotPatch,
) -> Any:
    principal.require_community(community)
    principal.require_role(*OPERATORS, *PARTIES)
    own = None if principal.role in OPERATORS else _own_party(principal)
    if principal.role not in OPERATORS and own is None:
        raise NotFound("slot")
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await capacity.revise_slot(
            conn,
            community,
            slot_id,
            patch,
            own,
            _actor(principal),
            clock=request.app.state.clock,
        )
    return _slot_view(row)


@router.delete(
    "/slots/{slot_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Withdraw a slot (emits slot.withdrawn; scheduling re-matches its needs)",
)
async def withdraw_slot(
    request: Request, community: Community, slot_id: uuid.UUID, principal: CurrentPrincipal
) -> None:
    principal.require_community(community)
    principal.require_role(*OPERATORS, *PARTIES)
    own = None if principal.role in OPERATORS else _own_party(principal)
    if principal.role not in OPERATORS and own is None:
        raise NotFound("slot")
    async with request.app.state.runtime.pool.acquire() as conn:
        await capacity.withdraw_slot(
            conn, community, slot_id, own, _actor(principal), clock=request.app.state.clock
        )


@router.patch(
    "/partners/{partner_id}",
    response_model=PartnerView,
    summary="Edit a partner: name, kind, description, services, contacts, directory entry",
)
async def edit_partner(
    request: Request,
    community: Community,
    partner_id: uuid.UUID,
    body: PartnerPatch,
    principal: CurrentPrincipal,
) -> Any:
    """Operators and admins of a community the partner serves, or the partner itself.
    A field left out stays; a list given replaces the whole list."""
    _template_caller(principal, community, partner_id)
    given = body.model_fields_set
    async with request.app.state.runtime.pool.acquire() as conn, conn.transaction():
        row = await store.get_partner(conn, community, partner_id, for_update=True)
        if row is None:
            raise NotFound("partner")
        (now,) = await _partner_views(conn, [row], with_contacts=True)
        merged = PartnerSpec(
            name=body.name if body.name is not None else now.name,
            kind=body.kind if body.kind is not None else now.kind,
            description=body.description if "description" in given else now.description,
            services=body.services
            if body.services is not None
            else [ServiceSpec.model_validate(s.model_dump()) for s in now.services],
            contacts=body.contacts
            if body.contacts is not None
            else [ContactSpec.model_validate(c.model_dump()) for c in now.contacts or []],
        )
        await store.update_partner(conn, partner_id, merged)
        if "directory" in given:
            await store.set_directory(conn, partner_id, body.directory)
        row = await store.get_partner(conn, community, partner_id)
        (view,) = await _partner_views(conn, [row], with_contacts=principal.sees_personal_data)
    return view


@router.delete(
    "/partners/{partner_id}",
    response_model=DeactivationView,
    summary="Deactivate a partner (history stays; its future slots are withdrawn)",
)
async def deactivate_partner(
    request: Request, community: Community, partner_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    principal.require_community(community)
    principal.require_role(*OPERATORS)
    async with request.app.state.runtime.pool.acquire() as conn:
        withdrawn = await capacity.set_partner_active(
            conn, community, partner_id, False, _actor(principal), clock=request.app.state.clock
        )
    return DeactivationView(partner_id=partner_id, active=False, slots_withdrawn=withdrawn)


@router.post(
    "/partners/{partner_id}/reactivate",
    response_model=DeactivationView,
    summary="Reactivate a deactivated partner",
)
async def reactivate_partner(
    request: Request, community: Community, partner_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    principal.require_community(community)
    principal.require_role(*OPERATORS)
    async with request.app.state.runtime.pool.acquire() as conn:
        await capacity.set_partner_active(
            conn, community, partner_id, True, _actor(principal), clock=request.app.state.clock
        )
    _wake(request)
    return DeactivationView(partner_id=partner_id, active=True, slots_withdrawn=0)
