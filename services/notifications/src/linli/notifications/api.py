"""`/v1/subscriptions`: community apps register, pause, rotate and replay webhooks.

A credential (role `system` for a community app, or `admin`) sees and manages only the
subscriptions it created, and only for communities it is scoped to; anything else
answers 404 as if it did not exist.
"""

from __future__ import annotations

import base64
import binascii
import secrets as random_secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from linli.contracts.registry import REGISTRY
from linli.contracts.subjects import validate_community
from linli.contracts.types import NeedKind, Role
from linli.servicekit.auth import CurrentPrincipal, Principal

from .sealing import SecretBox
from .settings import NotificationsSettings
from .ssrf import Resolver, UnsafeUrl, check_endpoint

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])

MANAGERS = (Role.SYSTEM, Role.ADMIN)
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 24 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(24)).decode()


def _check_secret(secret: str) -> str:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("secret must start with whsec_")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("secret must be whsec_ followed by base64") from exc
    if not 24 <= len(raw) <= 64:
        raise ValueError("secret must hold 24 to 64 random bytes")
    return secret


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
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None


def _settings(request: Request) -> NotificationsSettings:
    settings: NotificationsSettings = request.app.state.runtime.settings
    return settings


def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.secret_box
    return box


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.runtime.pool
    return pool


def _unprocessable(field: str, message: str, code: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"field": field, "message": message, "code": code}],
    )


def _manager(principal: Principal) -> None:
    principal.require_role(*MANAGERS)


def _view(row: asyncpg.Record) -> dict[str, Any]:
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
        if rotation_until and rotation_until > datetime.now(UTC)
        else None,
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


async def _check_url(request: Request, url: str) -> None:
    resolver: Resolver = request.app.state.resolver
    try:
        await check_endpoint(
            url, allow_insecure=_settings(request).allow_insecure_endpoints, resolver=resolver
        )
    except UnsafeUrl as exc:
        raise _unprocessable("body.url", str(exc), "unsafe_url") from exc


async def _owned(request: Request, principal: Principal, sub_id: uuid.UUID) -> asyncpg.Record:
    row = await _pool(request).fetchrow(
        "SELECT * FROM subscriptions WHERE id = $1 AND owner_credential = $2",
        sub_id,
        principal.credential_id,
    )
    if row is None or not all(principal.can_access(c) for c in row["communities"]):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="subscription not found")
    return row


@router.post("", status_code=201, summary="Register a webhook endpoint")
async def create_subscription(
    request: Request, body: SubscriptionIn, principal: CurrentPrincipal
) -> dict[str, Any]:
    """The secret is in the answer once and never again."""
    _manager(principal)
    communities = sorted(set(body.communities))
    for index, community in enumerate(communities):
        try:
            validate_community(community)
        except ValueError as exc:
            raise _unprocessable(f"body.communities.{index}", str(exc), "invalid") from exc
        principal.require_community(community)
    for index, ce_type in enumerate(body.event_types):
        spec = REGISTRY.get(ce_type)
        if spec is None or spec.kind != "event":
            raise _unprocessable(
                f"body.event_types.{index}", "not a registered event type", "unknown_type"
            )
    secret = body.secret
    if secret is not None:
        try:
            _check_secret(secret)
        except ValueError as exc:
            raise _unprocessable("body.secret", str(exc), "invalid") from exc
    else:
        secret = new_secret()
    await _check_url(request, body.url)
    row = await _pool(request).fetchrow(
        """INSERT INTO subscriptions
               (id, owner_credential, url, communities, event_types, need_kinds, description,
                secret_sealed)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *""",
        uuid.uuid4(),
        principal.credential_id,
        body.url,
        communities,
        sorted(set(body.event_types)),
        sorted({k.value for k in body.need_kinds}),
        body.description,
        _box(request).seal(secret),
    )
    assert row is not None
    return {**_view(row), "secret": secret}


@router.get("", summary="The caller's subscriptions")
async def list_subscriptions(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    _manager(principal)
    rows = await _pool(request).fetch(
        "SELECT * FROM subscriptions WHERE owner_credential = $1 ORDER BY created_at",
        principal.credential_id,
    )
    items = [_view(r) for r in rows if all(principal.can_access(c) for c in r["communities"])]
    return {"items": items}


@router.get("/{sub_id}", summary="One subscription")
async def get_subscription(
    request: Request, sub_id: uuid.UUID, principal: CurrentPrincipal
) -> dict[str, Any]:
    _manager(principal)
    return _view(await _owned(request, principal, sub_id))


async def _set_state(
    request: Request, principal: Principal, sub_id: uuid.UUID, state: str
) -> dict[str, Any]:
    _manager(principal)
    current = await _owned(request, principal, sub_id)
    if state == "active":
        await _check_url(request, current["url"])
    row = await _pool(request).fetchrow(
        "UPDATE subscriptions SET state = $2, updated_at = now(), "
        "disabled_reason = CASE WHEN $2 = 'active' THEN NULL ELSE disabled_reason END, "
        "failing_since = CASE WHEN $2 = 'active' THEN NULL ELSE failing_since END "
        "WHERE id = $1 RETURNING *",
        sub_id,
        state,
    )
    assert row is not None
    if state == "active":
        await _pool(request).execute(
            "UPDATE deliveries SET next_attempt_at = now() "
            "WHERE subscription_id = $1 AND state = 'pending' AND next_attempt_at > now()",
            sub_id,
        )
        request.app.state.wake()
    return _view(row)


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
    _manager(principal)
    await _owned(request, principal, sub_id)
    body = body or RotateIn()
    secret = body.secret
    if secret is not None:
        try:
            _check_secret(secret)
        except ValueError as exc:
            raise _unprocessable("body.secret", str(exc), "invalid") from exc
    else:
        secret = new_secret()
    overlap = (
        body.overlap_s if body.overlap_s is not None else _settings(request).rotation_overlap_s
    )
    until = datetime.now(UTC) + timedelta(seconds=overlap)
    row = await _pool(request).fetchrow(
        "UPDATE subscriptions SET previous_secret_sealed = secret_sealed, "
        "previous_secret_until = $3, secret_sealed = $2, updated_at = now() "
        "WHERE id = $1 RETURNING *",
        sub_id,
        _box(request).seal(secret),
        until,
    )
    assert row is not None
    return {**_view(row), "secret": secret}


@router.delete("/{sub_id}", status_code=204, summary="Delete a subscription and its queue")
async def delete_subscription(
    request: Request, sub_id: uuid.UUID, principal: CurrentPrincipal
) -> Response:
    _manager(principal)
    await _owned(request, principal, sub_id)
    await _pool(request).execute("DELETE FROM subscriptions WHERE id = $1", sub_id)
    return Response(status_code=204)


@router.get("/{sub_id}/attempts", summary="The attempts log, newest first")
async def list_attempts(
    request: Request,
    sub_id: uuid.UUID,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    event_id: Annotated[str | None, Query(max_length=256)] = None,
) -> dict[str, Any]:
    _manager(principal)
    await _owned(request, principal, sub_id)
    rows = await _pool(request).fetch(
        "SELECT event_id, attempt, started_at, status, latency_ms, error, outcome "
        "FROM delivery_attempts WHERE subscription_id = $1 "
        "AND ($3::text IS NULL OR event_id = $3) ORDER BY id DESC LIMIT $2",
        sub_id,
        limit,
        event_id,
    )
    pending = await _pool(request).fetchval(
        "SELECT count(*) FROM deliveries WHERE subscription_id = $1 AND state = 'pending'",
        sub_id,
    )
    return {
        "pending": int(pending or 0),
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
    _manager(principal)
    await _owned(request, principal, sub_id)
    if body.event_id is None and body.since is None:
        raise _unprocessable("body", "give event_id or since (and optionally until)", "missing")
    result: str = await _pool(request).execute(
        """UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = now(),
               locked_until = NULL, finished_at = NULL
           WHERE subscription_id = $1
             AND ($2::text IS NULL OR event_id = $2)
             AND ($3::timestamptz IS NULL OR event_time >= $3)
             AND ($4::timestamptz IS NULL OR event_time < $4)""",
        sub_id,
        body.event_id,
        body.since,
        body.until,
    )
    count = int(result.split()[-1])
    if body.event_id is not None and count == 0:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail="event not recorded for this endpoint"
        )
    request.app.state.wake()
    return {"replayed": count}
