"""HTTP routes of rewards, redemption requests, certificates and statements (ADR 0041).

Community routes need a credential naming the community (else 404) and answer only
what the role may see: operators everything in their community, a partner its own
rewards and certificates, a volunteer the active rewards and its own requests,
certificates and statement. The one public route, the certificate check, needs no
credential, is rate-limited per client address and says only whether a code is valid
and what it is for.
"""

from __future__ import annotations

import html
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from linli.contracts.types import LocalDate, Moment, Role
from linli.servicekit.auth import CurrentPrincipal, Principal
from linli.servicekit.http import error_response
from linli.servicekit.idempotency import Idempotency, IdempotencyKey, mark_replayed
from linli.servicekit.openapi import rules
from linli.servicekit.ratelimit import RateLimit
from linli.servicekit.sealing import SecretBox

from . import rewards, store
from .api import OPERATORS, Community, Limit, _actor, _clock, _own_party
from .models import CertificateCode, RejectSpec, RewardPatch, RewardRedemptionSpec, RewardSpec

router = APIRouter(prefix="/v1/communities/{community}", tags=["rewards"])
public_router = APIRouter(prefix="/public/v1", tags=["public"])

NOT_FOUND = "certificate not found"


# --- views ------------------------------------------------------------------------------


class RewardView(BaseModel):
    id: uuid.UUID
    community: str
    partner_id: uuid.UUID
    partner_name: str
    title: str
    description: str | None
    points: int = Field(description="Price in points.")
    status: str = Field(description="active or withdrawn.")
    created_at: datetime
    updated_at: datetime
    withdrawn_at: datetime | None = None


class RewardPage(BaseModel):
    items: list[RewardView]


class RewardRedemptionView(BaseModel):
    id: uuid.UUID = Field(description="Id of the request (= `redemption_id` in events).")
    community: str
    reward_id: uuid.UUID
    reward_title: str
    partner_id: uuid.UUID
    partner_name: str
    volunteer_id: uuid.UUID
    points: int = Field(description="Points held, then debited on approval.")
    status: str = Field(description="requested, approved or rejected.")
    requested_at: datetime
    decided_at: datetime | None = None
    reject_reason: str | None = None
    certificate_used_at: datetime | None = None


class RewardRedemptionPage(BaseModel):
    items: list[RewardRedemptionView]


class CertificateView(BaseModel):
    redemption_id: uuid.UUID
    code: str = Field(description="Verification code; the partner checks it publicly.")
    reward_id: uuid.UUID
    reward_title: str
    partner_name: str
    points: int
    issued_at: datetime
    used_at: datetime | None = None


class CertificateCheck(BaseModel):
    """What the public check reveals: nothing about the volunteer or other certificates."""

    valid: Literal[True] = True
    reward_title: str
    partner_name: str
    points: int
    issued_on: LocalDate
    state: str = Field(description="issued (not used yet) or used.")
    used_on: LocalDate | None = None


class ServiceLine(BaseModel):
    assignment_id: uuid.UUID
    need_id: uuid.UUID
    kind: str
    outcome: str
    reported_at: datetime
    minutes: int | None = Field(
        description="Duration the report proves (visits, repairs); none where not measured."
    )


class StatementView(BaseModel):
    volunteer_id: uuid.UUID
    community: str
    since: datetime
    until: datetime
    services: list[ServiceLine] = Field(description="Completions reported in the period.")
    services_delivered: int = Field(description="Completions (failed attempts not counted).")
    hours: float = Field(description="Measured minutes of the period / 60, to 0.01.")
    points_awarded: int = Field(description="Awarded in the period.")
    points_redeemed: int = Field(description="Redeemed in the period.")
    points_held: int = Field(description="Held now for pending requests.")
    balance: int = Field(description="Balance now (held points included).")


# --- helpers ----------------------------------------------------------------------------


def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.secret_box
    return box


def _reward_view(row: Any) -> RewardView:
    return RewardView(**{k: row[k] for k in RewardView.model_fields})


def _request_view(row: Any, *, reason: bool) -> RewardRedemptionView:
    return RewardRedemptionView(
        id=row["id"],
        community=row["community"],
        reward_id=row["reward_id"],
        reward_title=row["reward_title"],
        partner_id=row["partner_id"],
        partner_name=row["partner_name"],
        volunteer_id=row["volunteer_id"],
        points=row["points"],
        status=row["status"],
        requested_at=row["requested_at"],
        decided_at=row["decided_at"],
        reject_reason=row["reject_reason"] if reason else None,
        certificate_used_at=row["used_at"],
    )


def _volunteer_id(principal: Principal) -> uuid.UUID:
    if principal.role is not Role.VOLUNTEER or principal.subject_id is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="role not allowed")
    return principal.subject_id


def _answer(response: Response, answer: rewards.Answer, *, reason: bool) -> RewardRedemptionView:
    if not answer.created:
        mark_replayed(response)
    return _request_view(answer.row, reason=reason)


# --- rewards ----------------------------------------------------------------------------


@router.post(
    "/rewards",
    status_code=status.HTTP_201_CREATED,
    response_model=RewardView,
    summary="Offer a reward for points (operators; a partner for itself; reward.published)",
)
async def create_reward(
    request: Request, community: Community, principal: CurrentPrincipal, spec: RewardSpec
) -> Any:
    principal.require_community(community)
    principal.require_role(*OPERATORS, Role.PARTNER)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await rewards.create_reward(
            conn, community, spec, _actor(principal), _own_party(principal), clock=_clock(request)
        )
    return _reward_view(row)


@router.get(
    "/rewards",
    response_model=RewardPage,
    summary="Rewards here: operators all, a partner its own, a volunteer the active ones",
)
async def list_rewards(
    request: Request,
    community: Community,
    principal: CurrentPrincipal,
    status_: Annotated[Literal["active", "withdrawn"] | None, Query(alias="status")] = None,
    limit: Limit = 100,
) -> Any:
    principal.require_community(community)
    principal.require_role(*OPERATORS, Role.PARTNER, Role.VOLUNTEER)
    partner_id = None
    if principal.role is Role.VOLUNTEER:
        status_ = "active"
    elif principal.role is Role.PARTNER:
        own = _own_party(principal)
        if own is None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="credential names no party")
        partner_id = own.id
    async with request.app.state.runtime.pool.acquire() as conn:
        rows = await store.list_rewards(
            conn, community, status=status_, partner_id=partner_id, limit=limit
        )
    return RewardPage(items=[_reward_view(r) for r in rows])


@router.get("/rewards/{reward_id}", response_model=RewardView, summary="One reward")
async def get_reward(
    request: Request, community: Community, reward_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    principal.require_community(community)
    principal.require_role(*OPERATORS, Role.PARTNER, Role.VOLUNTEER)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await store.get_reward(conn, community, reward_id)
    own = _own_party(principal)
    hidden = row is None or (
        (principal.role is Role.VOLUNTEER and row["status"] != "active")
        or (principal.role is Role.PARTNER and (own is None or own.id != row["partner_id"]))
    )
    if hidden:
        return error_response(404, "not_found", "reward not found")
    return _reward_view(row)


@router.patch(
    "/rewards/{reward_id}",
    response_model=RewardView,
    summary="Change a reward's title, description or price (reward.revised)",
)
async def revise_reward(
    request: Request,
    community: Community,
    reward_id: uuid.UUID,
    principal: CurrentPrincipal,
    patch: RewardPatch,
) -> Any:
    principal.require_community(community)
    principal.require_role(*OPERATORS, Role.PARTNER)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await rewards.revise_reward(
            conn,
            community,
            reward_id,
            patch,
            _actor(principal),
            _own_party(principal),
            clock=_clock(request),
        )
    return _reward_view(row)


@router.delete(
    "/rewards/{reward_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Withdraw a reward; its pending requests are rejected (reward.withdrawn)",
)
async def withdraw_reward(
    request: Request, community: Community, reward_id: uuid.UUID, principal: CurrentPrincipal
) -> None:
    principal.require_community(community)
    principal.require_role(*OPERATORS, Role.PARTNER)
    async with request.app.state.runtime.pool.acquire() as conn:
        await rewards.withdraw_reward(
            conn,
            community,
            reward_id,
            _actor(principal),
            _own_party(principal),
            clock=_clock(request),
        )


# --- redemption requests ----------------------------------------------------------------


@router.post(
    "/reward-redemptions",
    status_code=status.HTTP_201_CREATED,
    response_model=RewardRedemptionView,
    summary="A volunteer asks to redeem points for a reward; the points are held "
    "(redemption.requested; Idempotency-Key required)",
    responses={200: {"description": "Replay of an earlier request with the same key"}},
)
async def request_redemption(
    request: Request,
    response: Response,
    community: Community,
    principal: CurrentPrincipal,
    spec: RewardRedemptionSpec,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    principal.require_community(community)
    volunteer_id = _volunteer_id(principal)
    if idempotency_key is None:
        return error_response(
            422,
            "validation_failed",
            [
                {
                    "field": "header.Idempotency-Key",
                    "message": "an Idempotency-Key is required, so a retry asks once",
                    "code": "missing",
                }
            ],
        )
    body = {"action": "request", **spec.model_dump(mode="json")}
    idem = Idempotency.of(idempotency_key, principal.credential_id, community, body)
    assert idem is not None
    async with request.app.state.runtime.pool.acquire() as conn:
        answer = await rewards.request_redemption(
            conn, community, volunteer_id, spec, _actor(principal), idem, clock=_clock(request)
        )
    return _answer(response, answer, reason=True)


@router.get(
    "/reward-redemptions",
    response_model=RewardRedemptionPage,
    summary="Redemption requests here (operators all, a volunteer its own), newest first",
)
async def list_requests(
    request: Request,
    community: Community,
    principal: CurrentPrincipal,
    status_: Annotated[
        Literal["requested", "approved", "rejected"] | None, Query(alias="status")
    ] = None,
    limit: Limit = 100,
) -> Any:
    principal.require_community(community)
    own = None if principal.role in OPERATORS else _volunteer_id(principal)
    async with request.app.state.runtime.pool.acquire() as conn:
        rows = await store.list_redemption_requests(
            conn, community, volunteer_id=own, status=status_, limit=limit
        )
    return RewardRedemptionPage(items=[_request_view(r, reason=True) for r in rows])


@router.get(
    "/reward-redemptions/{redemption_id}",
    response_model=RewardRedemptionView,
    summary="One redemption request",
)
async def get_request(
    request: Request, community: Community, redemption_id: uuid.UUID, principal: CurrentPrincipal
) -> Any:
    principal.require_community(community)
    own = None if principal.role in OPERATORS else _volunteer_id(principal)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await store.get_redemption_request(conn, community, redemption_id, volunteer_id=own)
    if row is None:
        return error_response(404, "not_found", "redemption not found")
    return _request_view(row, reason=True)


def _operator(principal: Principal, community: str) -> None:
    principal.require_community(community)
    principal.require_role(*OPERATORS)


@router.post(
    "/reward-redemptions/{redemption_id}/approve",
    response_model=RewardRedemptionView,
    summary="Approve: debit the held points (points.redeemed with reward_id) and issue a "
    "certificate; a retry with the same Idempotency-Key debits once",
)
async def approve_request(
    request: Request,
    response: Response,
    community: Community,
    redemption_id: uuid.UUID,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    _operator(principal, community)
    body = {"action": "approve", "redemption_id": str(redemption_id)}
    idem = Idempotency.of(idempotency_key, principal.credential_id, community, body)
    async with request.app.state.runtime.pool.acquire() as conn:
        answer = await rewards.approve(
            conn,
            community,
            redemption_id,
            _actor(principal),
            box=_box(request),
            clock=_clock(request),
            idempotency=idem,
        )
    return _answer(response, answer, reason=True)


@router.post(
    "/reward-redemptions/{redemption_id}/reject",
    response_model=RewardRedemptionView,
    summary="Reject with a reason (kept here); the held points are free again "
    "(redemption.rejected)",
)
async def reject_request(
    request: Request,
    response: Response,
    community: Community,
    redemption_id: uuid.UUID,
    principal: CurrentPrincipal,
    spec: RejectSpec,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    _operator(principal, community)
    body = {"action": "reject", "redemption_id": str(redemption_id), **spec.model_dump()}
    idem = Idempotency.of(idempotency_key, principal.credential_id, community, body)
    async with request.app.state.runtime.pool.acquire() as conn:
        answer = await rewards.reject(
            conn,
            community,
            redemption_id,
            spec.reason,
            _actor(principal),
            clock=_clock(request),
            idempotency=idem,
        )
    return _answer(response, answer, reason=True)


# --- certificates -----------------------------------------------------------------------


@router.get(
    "/reward-redemptions/{redemption_id}/certificate",
    response_model=CertificateView,
    summary="The volunteer's certificate of an approved request (JSON; `?format=html` for "
    "a printable page)",
    responses={200: {"content": {"text/html": {}}}},
)
async def certificate(
    request: Request,
    community: Community,
    redemption_id: uuid.UUID,
    principal: CurrentPrincipal,
    format_: Annotated[Literal["json", "html"], Query(alias="format")] = "json",
) -> Any:
    principal.require_community(community)
    volunteer_id = _volunteer_id(principal)
    async with request.app.state.runtime.pool.acquire() as conn:
        row, code = await rewards.certificate_of(
            conn, community, redemption_id, volunteer_id, _box(request)
        )
        volunteer = await store.get_volunteer(conn, community, volunteer_id)
    view = CertificateView(
        redemption_id=row["id"],
        code=code,
        reward_id=row["reward_id"],
        reward_title=row["reward_title"],
        partner_name=row["partner_name"],
        points=row["points"],
        issued_at=row["decided_at"],
        used_at=row["used_at"],
    )
    if format_ == "html":
        name = volunteer["display_name"] if volunteer else ""
        return HTMLResponse(_certificate_page(view, name), headers={"Cache-Control": "no-store"})
    return view


def _certificate_page(view: CertificateView, holder: str) -> str:
    e = html.escape
    used = (
        f"<p class='used'>已使用 Used {e(view.used_at.date().isoformat())}</p>"
        if view.used_at
        else ""
    )
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>积分兑换凭证 Reward certificate</title>
<style>
body {{ font-family: sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }}
.card {{ border: 2px solid #333; border-radius: 8px; padding: 1.5rem; }}
.code {{ font-family: monospace; font-size: 1.6rem; letter-spacing: .1rem; }}
.used {{ color: #a00; font-weight: bold; }}
@media print {{ body {{ margin: 0; }} }}
</style></head>
<body><div class="card">
<h1>积分兑换凭证 <small>Reward certificate</small></h1>
<p><strong>{e(view.reward_title)}</strong></p>
<p>合作单位 Partner: {e(view.partner_name)}</p>
<p>积分 Points: {view.points}</p>
<p>持有人 Holder: {e(holder)}</p>
<p>签发日期 Issued: {e(view.issued_at.date().isoformat())}</p>
<p>核验码 Verification code:</p>
<p class="code">{e(view.code)}</p>
{used}
</div></body></html>
"""


@router.post(
    "/certificates/use",
    response_model=RewardRedemptionView,
    summary="The partner honours a certificate: marked used, once (certificate.used)",
)
async def use_certificate(
    request: Request, community: Community, principal: CurrentPrincipal, body: CertificateCode
) -> Any:
    principal.require_community(community)
    principal.require_role(*OPERATORS, Role.PARTNER)
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await rewards.use_certificate(
            conn,
            community,
            body.code,
            _actor(principal),
            _own_party(principal),
            clock=_clock(request),
        )
    # The partner learns what it honoured, not the reason or anything else about people.
    return _request_view(row, reason=False)


def public_check_limit(limit: int, window_s: float) -> RateLimit:
    return RateLimit("partners:certificate-check", limit, window_s)


async def _rate_limited(request: Request) -> None:
    limit: RateLimit = request.app.state.certificate_check_limit
    await limit.dependency()(request)


@public_router.post(
    "/certificates/check",
    response_model=CertificateCheck,
    summary="Check a certificate code (no credential; rate-limited per client address). "
    "Valid: what it is for and whether it was used; anything else: 404",
    responses={404: {"description": "Unknown or tampered code"}, 429: {"description": "Slow down"}},
    dependencies=[Depends(_rate_limited)],
)
async def check_certificate(request: Request, body: CertificateCode) -> Any:
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await rewards.check(conn, body.code)
    if row is None:
        return error_response(404, "not_found", NOT_FOUND)
    used = row["used_at"]
    return CertificateCheck(
        reward_title=row["reward_title"],
        partner_name=row["partner_name"],
        points=row["points"],
        issued_on=row["decided_at"].astimezone(UTC).date(),
        state="used" if used else "issued",
        used_on=used.astimezone(UTC).date() if used else None,
    )


# --- statement --------------------------------------------------------------------------


@router.get(
    "/volunteers/{volunteer_id}/statement",
    response_model=StatementView,
    tags=["points"],
    summary="Hours and points of a volunteer over a period (operators; the volunteer itself)",
    openapi_extra=rules("`since` is before `until` (422 `range`)"),
)
async def volunteer_statement(
    request: Request,
    community: Community,
    volunteer_id: uuid.UUID,
    principal: CurrentPrincipal,
    since: Annotated[
        Moment | None, Query(description="RFC 3339; default until - 30 days; before until")
    ] = None,
    until: Annotated[Moment | None, Query(description="RFC 3339; default now")] = None,
) -> Any:
    principal.require_community(community)
    # Other roles (a partner, a street office: volunteers are personal data) are refused.
    principal.require_role(*OPERATORS, Role.VOLUNTEER)
    # A volunteer sees only its own statement; anyone else's does not exist for it.
    own = principal.role is Role.VOLUNTEER and principal.subject_id == volunteer_id
    if principal.role not in OPERATORS and not own:
        return error_response(404, "not_found", "volunteer not found")
    end = until or _clock(request).now()
    start = since or end - timedelta(days=30)
    bad = [
        {"field": f"query.{name}", "message": "needs a UTC offset", "code": "timezone_required"}
        for name, value in (("since", since), ("until", until))
        if value is not None and value.tzinfo is None
    ]
    if not bad and start >= end:
        bad = [{"field": "query.since", "message": "must be before until", "code": "range"}]
    if bad:
        return error_response(422, "validation_failed", bad)
    async with request.app.state.runtime.pool.acquire() as conn:
        if await store.get_volunteer(conn, community, volunteer_id) is None:
            return error_response(404, "not_found", "volunteer not found")
        found = await rewards.statement(conn, community, volunteer_id, start, end)
    minutes = sum(s["minutes"] or 0 for s in found.services)
    return StatementView(
        volunteer_id=volunteer_id,
        community=community,
        since=start,
        until=end,
        services=[ServiceLine(**s) for s in found.services],
        services_delivered=sum(1 for s in found.services if s["outcome"] != "failed"),
        hours=round(minutes / 60, 2),
        points_awarded=found.awarded,
        points_redeemed=found.redeemed,
        points_held=found.held,
        balance=found.balance,
    )


__all__ = ["public_check_limit", "public_router", "router"]
