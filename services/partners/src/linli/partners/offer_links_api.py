"""Public routes of signed offer links (ADR 0043): `/public/v1/offers/{token}…`.

No credential: the token is the capability. Every route is rate-limited per client
address (servicekit `ratelimit`). A forged, altered, malformed or expired token, and a
token used on the other action's route, all answer the same 404; a link whose offer was
answered through a link already answers 410; an offer that can no longer be answered
(accepted through the API, lapsed) answers 409. `GET` changes nothing (link scanners
fetch links): it shows the offer's kind, window and compound, as JSON or, for a browser,
as a page with the button that POSTs the answer.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from linli.servicekit.http import error_response
from linli.servicekit.offerlinks import InvalidLink, LinkAction, OfferLink, OfferLinks
from linli.servicekit.ratelimit import RateLimit

from . import offer_links, rules, service
from .service import Clock

public_router = APIRouter(prefix="/public/v1/offers", tags=["public"])

INVALID = "link not valid"
Token = Annotated[str, Path(min_length=1, max_length=128, description="The link's token.")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Forged, altered, expired or unknown link (one answer for all)"},
    429: {"description": "Too many requests from this address; see Retry-After"},
    503: {"description": "The offer has not reached partners yet; retry after Retry-After"},
}
_ANSWER_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    409: {"description": "The offer can no longer be answered (answered, expired)"},
    410: {"description": "A link of this offer was used already"},
}


class OfferLinkWindow(BaseModel):
    earliest: datetime = Field(description="Start of the window.")
    latest: datetime = Field(description="End of the window.")


class OfferLinkView(BaseModel):
    """What a link reveals: the kind of help, when and where (compound), nothing else."""

    action: str = Field(description="What this link does: view, accept or decline.")
    kind: str = Field(description="Kind of need.")
    urgency: str = Field(description="How urgent it is.")
    window: OfferLinkWindow = Field(description="When the service should happen.")
    compound: str | None = Field(description="Compound (小区) or grid.")
    expires_at: datetime = Field(description="The offer (and the link) expire then.")
    status: str = Field(description="open, accepted, declined, expired, ...")
    answered_by_link: str | None = Field(
        description="accept or decline when a link of this offer was used, else null."
    )


def link_limit(limit: int, window_s: float) -> RateLimit:
    return RateLimit("partners:offer-link", limit, window_s)


async def _rate_limited(request: Request) -> None:
    limit: RateLimit = request.app.state.offer_link_limit
    await limit.dependency()(request)


def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


def _link(request: Request, token: str, action: LinkAction | None) -> OfferLink | None:
    links: OfferLinks = request.app.state.offer_links
    try:
        link = links.check(token, _clock(request).now())
    except InvalidLink:
        return None
    if action is not None and link.action is not action:
        return None
    return link


def _view(link: OfferLink, row: Any, now: datetime) -> OfferLinkView:
    return OfferLinkView(
        action=link.action.value,
        kind=row["kind"],
        urgency=row["urgency"],
        window=OfferLinkWindow(earliest=row["window_earliest"], latest=row["window_latest"]),
        compound=row["compound"],
        expires_at=row["expires_at"],
        status=rules.offer_status(row["status"], row["expires_at"], now),
        answered_by_link=row["link_action"],
    )


def _not_yet() -> JSONResponse:
    return error_response(503, "unavailable", "offer not received yet; retry", {"Retry-After": "2"})


def _page(view: OfferLinkView, token: str) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>"
        for k, v in (
            ("服务 kind", view.kind),
            ("紧急程度 urgency", view.urgency),
            ("时间 window", f"{view.window.earliest:%Y-%m-%d %H:%M} - {view.window.latest:%H:%M}"),
            ("小区 compound", view.compound or "—"),
            ("状态 status", view.status),
        )
    )
    button = ""
    if view.action in ("accept", "decline") and view.status == "open" and not view.answered_by_link:
        label = "接单 Accept" if view.action == "accept" else "拒绝 Decline"
        button = (
            f'<form method="post" action="{e(token)}/{e(view.action)}">'
            f'<button type="submit">{label}</button></form>'
        )
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width"><title>Linli 任务</title></head>'
        f"<body><h1>Linli 任务 offer</h1><table>{rows}</table>{button}</body></html>"
    )


@public_router.get(
    "/{token}",
    response_model=OfferLinkView,
    summary="What a signed offer link is for (no credential; rate-limited); changes nothing",
    responses=_ERRORS,
    dependencies=[Depends(_rate_limited)],
)
async def view_offer_link(request: Request, token: Token) -> Any:
    link = _link(request, token, None)
    if link is None:
        return error_response(404, "not_found", INVALID)
    async with request.app.state.runtime.pool.acquire() as conn:
        try:
            row = await offer_links.view(conn, link)
        except offer_links.OfferNotYetKnown:
            return _not_yet()
    view = _view(link, row, _clock(request).now())
    if "text/html" in request.headers.get("accept", ""):
        return HTMLResponse(_page(view, token))
    return view


async def _answer(request: Request, token: str, action: LinkAction) -> Any:
    link = _link(request, token, action)
    if link is None:
        return error_response(404, "not_found", INVALID)
    clock = _clock(request)
    async with request.app.state.runtime.pool.acquire() as conn:
        try:
            row = await offer_links.answer(conn, link, clock=clock)
        except offer_links.OfferNotYetKnown:
            return _not_yet()
        except offer_links.LinkUsed:
            return error_response(410, "gone", "link already used")
        except service.Conflict as exc:
            return error_response(409, "conflict", str(exc))
        except service.NotFound:
            return error_response(404, "not_found", INVALID)
    return _view(link, row, clock.now())


@public_router.post(
    "/{token}/accept",
    response_model=OfferLinkView,
    summary="Accept the offer of a signed accept link, once (partner.accepted)",
    responses=_ANSWER_ERRORS,
    dependencies=[Depends(_rate_limited)],
)
async def accept_by_link(request: Request, token: Token) -> Any:
    return await _answer(request, token, LinkAction.ACCEPT)


@public_router.post(
    "/{token}/decline",
    response_model=OfferLinkView,
    summary="Decline the offer of a signed decline link, once (partner.declined)",
    responses=_ANSWER_ERRORS,
    dependencies=[Depends(_rate_limited)],
)
async def decline_by_link(request: Request, token: Token) -> Any:
    return await _answer(request, token, LinkAction.DECLINE)


__all__ = ["link_limit", "public_router"]
