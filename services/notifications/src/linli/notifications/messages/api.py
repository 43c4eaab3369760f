"""HTTP API: `/v1/communities/{community}/recipients` (operators and admins).

Addresses are personal data: they are accepted here, stored only in
`people_recipients`, and shown back masked. Another community's recipients answer
404, as if they did not exist. Handlers are thin: they check the caller and call
one use case of `service.py`.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from linli.contracts.types import LocalTime, Role
from linli.servicekit.auth import CurrentPrincipal

from . import service
from .plan import CONSUMED_TYPES, NewRecipient

router = APIRouter(tags=["people"])

_EMAIL = re.compile(r"^[^@\s<>,;]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
_PHONE = re.compile(r"^\+?[0-9]{5,20}$")
_COMMUNITY = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
EVENT_CHOICES = tuple(t for t in CONSUMED_TYPES if t != "need.submitted")

Community = Annotated[str, Path(pattern=_COMMUNITY, max_length=64)]


class QuietHours(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: LocalTime = Field(description="Local start, e.g. 22:00.")
    end: LocalTime = Field(description="Local end, e.g. 07:00 (may wrap midnight).")


class RecipientIn(BaseModel):
    """A person to tell: a resident's family member, an operator or a volunteer."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["family", "operator", "volunteer"]
    resident_id: uuid.UUID | None = Field(default=None, description="For role family.")
    volunteer_id: uuid.UUID | None = Field(default=None, description="For role volunteer.")
    channel: Literal["email", "sms"]
    address: str = Field(min_length=3, max_length=254, description="E-mail address or phone.")
    locale: Literal["zh-CN", "en"] = "zh-CN"
    quiet_hours: QuietHours | None = None
    timezone: str = Field(default="Asia/Shanghai", max_length=64)
    events: list[str] = Field(
        default_factory=list,
        max_length=len(EVENT_CHOICES),
        description="Event types wanted, e.g. meal.delivered; empty means all that apply.",
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone") from None
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in EVENT_CHOICES]
        if unknown:
            raise ValueError(f"unknown event types; choose from {', '.join(EVENT_CHOICES)}")
        return sorted(set(value))

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.role == "family") != (self.resident_id is not None):
            raise ValueError("resident_id is required for family members and only for them")
        if (self.role == "volunteer") != (self.volunteer_id is not None):
            raise ValueError("volunteer_id is required for volunteers and only for them")
        pattern = _EMAIL if self.channel == "email" else _PHONE
        if not pattern.match(self.address.strip()):
            raise ValueError(f"address is not a valid {self.channel} address")
        self.address = self.address.strip()
        return self


class RecipientOut(BaseModel):
    id: uuid.UUID
    community: str
    role: str
    resident_id: uuid.UUID | None
    volunteer_id: uuid.UUID | None
    channel: str
    address: str = Field(description="Masked.")
    locale: str
    quiet_hours: QuietHours | None
    timezone: str
    events: list[str]
    created_at: datetime


def mask(channel: str, address: str) -> str:
    """`l***@example.com`, `+86*******5678`."""
    if channel == "email":
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}"
    return address[:3] + "*" * max(len(address) - 7, 0) + address[-4:]


def _out(row: Any) -> RecipientOut:
    quiet = None
    if row["quiet_start"] is not None:
        quiet = QuietHours(start=row["quiet_start"], end=row["quiet_end"])
    return RecipientOut(
        id=row["id"],
        community=row["community"],
        role=row["role"],
        resident_id=row["resident_id"],
        volunteer_id=row["volunteer_id"],
        channel=row["channel"],
        address=mask(row["channel"], row["address"]),
        locale=row["locale"],
        quiet_hours=quiet,
        timezone=row["timezone"],
        events=list(row["events"]),
        created_at=row["created_at"],
    )


def _allow(principal: Any, community: str) -> None:
    principal.require_community(community)
    principal.require_role(Role.OPERATOR, Role.ADMIN)


@router.post(
    "/v1/communities/{community}/recipients",
    status_code=status.HTTP_201_CREATED,
    response_model=RecipientOut,
)
async def add_recipient(
    community: Community, body: RecipientIn, principal: CurrentPrincipal, request: Request
) -> RecipientOut:
    _allow(principal, community)
    new = NewRecipient(
        role=body.role,
        resident_id=body.resident_id,
        volunteer_id=body.volunteer_id,
        channel=body.channel,
        address=body.address,
        locale=body.locale,
        quiet_start=body.quiet_hours.start if body.quiet_hours else None,
        quiet_end=body.quiet_hours.end if body.quiet_hours else None,
        timezone=body.timezone,
        events=body.events,
    )
    async with request.app.state.runtime.pool.acquire() as conn:
        row = await service.add_recipient(conn, community, new)
    return _out(row)


@router.get("/v1/communities/{community}/recipients", response_model=list[RecipientOut])
async def list_recipients(
    community: Community, principal: CurrentPrincipal, request: Request
) -> list[RecipientOut]:
    _allow(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        rows = await service.list_recipients(conn, community)
    return [_out(r) for r in rows]


@router.delete(
    "/v1/communities/{community}/recipients/{recipient_id}",
    status_code=status.HTTP_204_NO_CONTENT,
)
async def delete_recipient(
    community: Community, recipient_id: uuid.UUID, principal: CurrentPrincipal, request: Request
) -> Response:
    _allow(principal, community)
    async with request.app.state.runtime.pool.acquire() as conn:
        await service.delete_recipient(conn, community, recipient_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
