"""`/v1/subscriptions`: community apps register, pause, rotate and replay webhooks.

Thin handlers: each checks the role, calls one use case of `WebhookService`
(`app.state.webhooks`) and shapes the answer. A credential sees and manages only the
subscriptions it created, in its own communities; anything else answers 404. The
per-community event stream has its own module (`stream.py`): it reads JetStream, not
this package's tables.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from linli.contracts.types import Moment, NeedKind, Role
from linli.servicekit.auth import CurrentPrincipal, Principal
from linli.servicekit.openapi import errors

from .service import MANAGERS, WebhookService

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])
operators = APIRouter(prefix="/v1/communities/{community}/subscriptions", tags=["subscriptions"])

OVERSEERS = (Role.OPERATOR, Role.ADMIN)


class SubscriptionIn(BaseModel):
    """A webhook endpoint and what it wants to receive."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, description="https URL of the receiver.")
    communities: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=50)
    event_types: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list,
        max_length=100,
        description="CloudEvents types, e.g. linli.need.submitted.v1; empty = all.",
    )
    need_kinds: list[NeedKind] = Field(default_factory=list, max_length=10)
    description: str = Field(default="", max_length=500)
    secret: str | None = Field(
        default=None, max_length=200, description="whsec_... ; generated when absent."
    )


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str | None = Field(default=None, max_length=200)
    overlap_s: float | None = Field(
        default=None, ge=0, le=7 * 24 * 3600, description="Defaults to the service setting."
    )


class ReplayIn(BaseModel):
    """One event, or every event of a time range (by event time)."""

    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(default=None, max_length=256)
    since: Moment | None = None
    until: Moment | None = None


def _service(request: Request) -> WebhookService:
    service: WebhookService = request.app.state.webhooks
    return service


def _view(row: asyncpg.Record, now: datetime) -> dict[str, Any]:
    rotation_until = row["previous_secret_until"]
    return {
        "id": str(row["id"]),
        "url": row["url"],
        "communities": list(row["communities"]),
        "event_types": list(row["event_types"]),
        "need_kinds": list(row["need_kinds"]),
        "description": row["description"],
        "state": row["state"],
        "disabled_reason": row["disabled_reason"],
        "failing_since": row["failing_since"].isoformat() if row["failing_since"] else None,
        "rotation_overlap_until": rotation_until.isoformat()
        if rotation_until and rotation_until > now
        else None,
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


def _shown(service: WebhookService, row: asyncpg.Record) -> dict[str, Any]:
    return _view(row, service.clock.now())


@router.post(
    "",
    status_code=201,
    summary="Register a webhook endpoint",
    responses=errors(404, s404="A community in `communities` is not one of the credential's."),
)
async def create_subscription(
    request: Request, body: SubscriptionIn, principal: CurrentPrincipal
) -> dict[str, Any]:
    """The secret is in the answer once and never again."""
    principal.require_role(*MANAGERS)
    service = _service(request)
    row, secret = await service.create(
        principal,
        url=body.url,
        communities=body.communities,
        event_types=body.event_types,
        need_kinds=[k.value for k in body.need_kinds],
        description=body.description,
        secret=body.secret,
    )
    return {**_shown(service, row), "secret": secret}


@router.get("", summary="The caller's subscriptions")
async def list_subscriptions(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    principal.require_role(*MANAGERS)
    service = _service(request)
    return {"items": [_shown(service, r) for r in await service.list_owned(principal)]}


@operators.get("", summary="Every subscription of a community, whoever owns it (operators)")
async def community_subscriptions(
    request: Request, community: str, principal: CurrentPrincipal
) -> dict[str, Any]:
    """State and reason of every app's endpoints in the community (a revoked credential's
    are `disabled`, `credential revoked`); never a secret."""
    principal.require_role(*OVERSEERS)
    service = _service(request)
    rows = await service.list_in_community(principal, community)
    return {"items": [_shown(service, r) for r in rows]}


@router.get("/{sub_id}", summary="One subscription")
async def get_subscription(
    request: Request, sub_id: uuid.UUID, principal: CurrentPrincipal
) -> dict[str, Any]:
    principal.require_role(*MANAGERS)
    service = _service(request)
    return _shown(service, await service.get(principal, sub_id))


async def _set_state(
    request: Request, principal: Principal, sub_id: uuid.UUID, state: str
) -> dict[str, Any]:
    principal.require_role(*MANAGERS)
    service = _service(request)
    return _shown(service, await service.set_state(principal, sub_id, state))


@router.post("/{sub_id}/pause", summary="Stop sending; events keep queueing")
async def pause_subscription(
    request: Request, sub_id: uuid.UUID, principal: CurrentPrincipal
) -> dict[str, Any]:
    return await _set_state(request, principal, sub_id, "paused")


@router.post("/{sub_id}/resume", summary="Send again (also re-enables a disabled endpoint)")
async def resume_subscription(
    request: Request, sub_id: uuid.UUID, principal: CurrentPrincipal
) -> dict[str, Any]:
    return await _set_state(request, principal, sub_id, "active")


@router.post("/{sub_id}/rotate-secret", summary="New secret; the old one signs during an overlap")
async def rotate_secret(
    request: Request, sub_id: uuid.UUID, principal: CurrentPrincipal, body: RotateIn | None = None
) -> dict[str, Any]:
    principal.require_role(*MANAGERS)
    service = _service(request)
    body = body or RotateIn()
    row, secret = await service.rotate_secret(
        principal, sub_id, secret=body.secret, overlap_s=body.overlap_s
    )
    return {**_shown(service, row), "secret": secret}


@router.delete("/{sub_id}", status_code=204, summary="Delete a subscription and its queue")
async def delete_subscription(
    request: Request, sub_id: uuid.UUID, principal: CurrentPrincipal
) -> Response:
    principal.require_role(*MANAGERS)
    await _service(request).delete(principal, sub_id)
    return Response(status_code=204)


@router.get("/{sub_id}/attempts", summary="The attempts log, newest first")
async def list_attempts(
    request: Request,
    sub_id: uuid.UUID,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    event_id: Annotated[str | None, Query(max_length=256)] = None,
) -> dict[str, Any]:
    principal.require_role(*MANAGERS)
    pending, rows = await _service(request).attempts(
        principal, sub_id, limit=limit, event_id=event_id
    )
    return {
        "pending": pending,
        "items": [
            {
                "event_id": r["event_id"],
                "attempt": r["attempt"],
                "started_at": r["started_at"].isoformat(),
                "status": r["status"],
                "latency_ms": r["latency_ms"],
                "error": r["error"],
                "outcome": r["outcome"],
            }
            for r in rows
        ],
    }


@router.post("/{sub_id}/replay", summary="Send one event or a time range again")
async def replay(
    request: Request, sub_id: uuid.UUID, body: ReplayIn, principal: CurrentPrincipal
) -> dict[str, Any]:
    """Replays what was recorded for this endpoint (with the same `webhook-id`)."""
    principal.require_role(*MANAGERS)
    count = await _service(request).replay(
        principal, sub_id, event_id=body.event_id, since=body.since, until=body.until
    )
    return {"replayed": count}
