"""HTTP API: `/v1/communities/{community}/partners/{partner_id}/delivery` (ADR 0043).

A partner (its own credential, `subject_id` = the partner id) or an operator or admin of
the community registers where the partner is reached: a webhook endpoint and duty
contacts (SMS, e-mail) with quiet hours. Contacts are personal data: stored only in
`people_recipients`, shown back masked, never in events or logs. A street office gets
403; another partner's preferences and another community answer 404.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from linli.contracts.types import Role
from linli.notifications.errors import Rejected
from linli.notifications.messages.api import _EMAIL, _PHONE, Community, QuietHours, mask
from linli.notifications.messages.plan import NewRecipient
from linli.servicekit.auth import CurrentPrincipal, Principal

from .service import Current, PartnerDelivery, Preferences

router = APIRouter(tags=["partner delivery"])
PATH = "/v1/communities/{community}/partners/{partner_id}/delivery"
PartnerId = Annotated[uuid.UUID, Path(description="The partner (as in partners).")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid credential"},
    404: {"description": "Another community, or another partner's preferences"},
    422: {"description": "Invalid body, with field-level reasons"},
}


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=2048, description="https endpoint.")
    secret: str | None = Field(
        default=None,
        max_length=200,
        description="whsec_…; generated when absent (returned once).",
    )


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    channel: Literal["email", "sms"]
    address: str = Field(min_length=3, max_length=254, description="E-mail address or phone.")
    locale: Literal["zh-CN", "en"] = "zh-CN"

    @model_validator(mode="after")
    def _check(self) -> Self:
        pattern = _EMAIL if self.channel == "email" else _PHONE
        if not pattern.match(self.address.strip()):
            raise ValueError(f"address is not a valid {self.channel} address")
        self.address = self.address.strip()
        return self


class DeliveryIn(BaseModel):
    """Where a partner is reached; the whole set (PUT replaces it)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    webhook: WebhookIn | None = Field(default=None, description="Standard Webhooks endpoint.")
    contacts: list[ContactIn] = Field(
        default_factory=list, max_length=10, description="Duty contacts told by SMS/e-mail."
    )
    quiet_hours: QuietHours | None = Field(
        default=None,
        description="Local quiet hours for SMS/e-mail; routine messages wait until they "
        "end, emergencies go at once. Webhooks are not held.",
    )
    timezone: str = Field(default="Asia/Shanghai", max_length=64)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone") from None
        return value


class WebhookOut(BaseModel):
    url: str
    state: str = Field(description="active, paused or disabled.")
    disabled_reason: str | None
    secret: str | None = Field(description="Only in the answer of the PUT that made it.")


class ContactOut(BaseModel):
    channel: str
    address: str = Field(description="Masked.")
    locale: str


class DeliveryOut(BaseModel):
    community: str
    partner_id: uuid.UUID
    webhook: WebhookOut | None
    contacts: list[ContactOut]
    quiet_hours: QuietHours | None
    timezone: str | None
    updated_at: datetime | None


def _allow(principal: Principal, community: str, partner_id: uuid.UUID) -> None:
    principal.require_community(community)
    principal.require_role(Role.PARTNER, Role.OPERATOR, Role.ADMIN)
    if principal.role is Role.PARTNER and principal.subject_id != partner_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="partner not found")


def _out(community: str, partner_id: uuid.UUID, current: Current) -> DeliveryOut:
    e = current.endpoint
    webhook = None
    if e is not None:
        webhook = WebhookOut(
            url=e["url"],
            state=e["state"],
            disabled_reason=e["disabled_reason"],
            secret=current.secret,
        )
    first = current.contacts[0] if current.contacts else None
    quiet = None
    if first is not None and first["quiet_start"] is not None:
        quiet = QuietHours(start=first["quiet_start"], end=first["quiet_end"])
    return DeliveryOut(
        community=community,
        partner_id=partner_id,
        webhook=webhook,
        contacts=[
            ContactOut(
                channel=c["channel"], address=mask(c["channel"], c["address"]), locale=c["locale"]
            )
            for c in current.contacts
        ],
        quiet_hours=quiet,
        timezone=first["timezone"] if first is not None else None,
        updated_at=e["updated_at"] if e is not None else None,
    )


def _service(request: Request) -> PartnerDelivery:
    service: PartnerDelivery = request.app.state.partner_delivery
    return service


@router.get(PATH, response_model=DeliveryOut, responses=_ERRORS)
async def get_delivery(
    community: Community, partner_id: PartnerId, principal: CurrentPrincipal, request: Request
) -> DeliveryOut:
    _allow(principal, community, partner_id)
    current = await _service(request).get(community, partner_id)
    return _out(community, partner_id, current)


@router.put(PATH, response_model=DeliveryOut, responses=_ERRORS)
async def put_delivery(
    community: Community,
    partner_id: PartnerId,
    body: DeliveryIn,
    principal: CurrentPrincipal,
    request: Request,
) -> DeliveryOut:
    _allow(principal, community, partner_id)
    quiet_start = body.quiet_hours.start if body.quiet_hours else None
    quiet_end = body.quiet_hours.end if body.quiet_hours else None
    contacts = [
        NewRecipient(
            role="partner",
            resident_id=None,
            volunteer_id=None,
            channel=c.channel,
            address=c.address,
            locale=c.locale,
            quiet_start=quiet_start,
            quiet_end=quiet_end,
            timezone=body.timezone,
            events=[],
        )
        for c in body.contacts
    ]
    wanted = Preferences(
        webhook_url=body.webhook.url if body.webhook else None,
        webhook_secret=body.webhook.secret if body.webhook else None,
        contacts=contacts,
    )
    try:
        current = await _service(request).put(community, partner_id, wanted)
    except Rejected as exc:
        field = str(exc.reason["field"]).replace("body.", "body.webhook.", 1)
        raise Rejected(field, str(exc.reason["message"]), str(exc.reason["code"])) from None
    return _out(community, partner_id, current)


@router.delete(PATH, status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def delete_delivery(
    community: Community, partner_id: PartnerId, principal: CurrentPrincipal, request: Request
) -> Response:
    _allow(principal, community, partner_id)
    await _service(request).delete(community, partner_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
