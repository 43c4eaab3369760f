"""Shared value types, enums and base models for Linli contracts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

import phonenumbers
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

__all__ = [
    "COMMUNITY_SLUG_PATTERN",
    "LOCAL_DATE_PATTERN",
    "LOCAL_TIME_PATTERN",
    "MAX_WINDOW",
    "CommunitySlug",
    "ContractModel",
    "EventData",
    "FailureReason",
    "Flag",
    "LocalDate",
    "LocalTime",
    "Moment",
    "NeedKind",
    "NeedStatus",
    "PhoneNumber",
    "PriorityGroup",
    "Reason",
    "RepairCategory",
    "RepairHazard",
    "Role",
    "TimeWindow",
    "Urgency",
    "VisitPurpose",
    "drop_withdrawn_fields",
    "normalise_phone",
]

COMMUNITY_SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"

CommunitySlug = Annotated[
    str,
    StringConstraints(pattern=COMMUNITY_SLUG_PATTERN),
    Field(
        description=(
            "Community id: a lowercase slug of 1-64 characters [a-z0-9-], not starting "
            "or ending with '-', so it is safe as a NATS subject token."
        ),
        examples=["taian-zhiyuan"],
    ),
]

LOCAL_TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"
"""A wall-clock time of day without an offset: `HH:MM` or `HH:MM:SS` (ADR 0047)."""
LOCAL_DATE_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
"""A calendar day, `YYYY-MM-DD` (RFC 3339 full-date)."""
_LOCAL_TIME = re.compile(LOCAL_TIME_PATTERN)
_LOCAL_DATE = re.compile(LOCAL_DATE_PATTERN)


def _local_time(value: Any) -> Any:
    # Exactly what the schema says: RFC 3339 `time` requires an offset, which a local
    # time of day has not, so the schema is a pattern and the parser follows it (no
    # seconds-since-midnight integers, no offsets, no fractions).
    if isinstance(value, time):
        return value
    if not isinstance(value, str) or not _LOCAL_TIME.fullmatch(value):
        raise ValueError("must be a local time HH:MM or HH:MM:SS")
    return value


def _local_date(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _LOCAL_DATE.fullmatch(value):
        raise ValueError("must be a date YYYY-MM-DD")
    return value


LocalTime = Annotated[
    time,
    BeforeValidator(_local_time),
    WithJsonSchema({"type": "string", "pattern": LOCAL_TIME_PATTERN, "examples": ["14:30"]}),
]
"""A local time of day (the community's zone), `HH:MM[:SS]`; answered as `HH:MM:SS`."""

LocalDate = Annotated[
    date,
    BeforeValidator(_local_date),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date",
            "pattern": LOCAL_DATE_PATTERN,
            "examples": ["2026-05-01"],
        }
    ),
]
"""A calendar day `YYYY-MM-DD` (a string only, no timestamps)."""

_NUMBER = re.compile(r"^\s*[+-]?[0-9]+(\.[0-9]*)?\s*$")


def _rfc3339(value: Any) -> Any:
    # pydantic's lax datetime also takes numbers and numeric strings ("0.5" is 1970) as
    # Unix times: an API that documents `format: date-time` takes RFC 3339 strings only.
    # Any other string goes on to pydantic, whose error codes say what is wrong with it.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _NUMBER.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with an offset")
    return value


def _true_or_false(value: Any) -> Any:
    # JSON true/false (and the words CSV imports use); never a number.
    if isinstance(value, bool | str):
        return value
    raise ValueError("must be true or false")


Moment = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
"""An instant as RFC 3339 with an offset (`2026-05-01T11:30:00+08:00`); numbers refused."""

Flag = Annotated[bool, BeforeValidator(_true_or_false)]
"""A boolean: JSON true/false (CSV imports also write true/false); numbers refused."""

PHONE_DEFAULT_REGION = "CN"


def normalise_phone(value: str) -> str:
    """Parse a phone number (default region CN) and return it in E.164 form.

    Raises ValueError("not a valid phone number") without echoing the input, since a
    phone number is personal data.
    """
    try:
        parsed = phonenumbers.parse(value, PHONE_DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        raise ValueError("not a valid phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


PhoneNumber = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=32),
    AfterValidator(normalise_phone),
    Field(
        description=(
            "Phone number; national numbers are read as mainland China (+86). "
            "Stored and emitted in E.164 form, e.g. +8613800138000."
        ),
        examples=["+8613800138000"],
    ),
]


class NeedKind(StrEnum):
    """The kind of service a resident needs."""

    MEAL_DELIVERY = "meal_delivery"
    ELDER_CARE_VISIT = "elder_care_visit"
    REPAIR = "repair"
    GOODS_DELIVERY = "goods_delivery"
    PERSONAL_CARE = "personal_care"


class Urgency(StrEnum):
    """How fast a need must be met; it selects the SLA clock."""

    ROUTINE = "routine"
    URGENT = "urgent"
    EMERGENCY = "emergency"


class PriorityGroup(StrEnum):
    """Eligibility group that moves a resident's needs up the queue."""

    ELDERLY_LIVING_ALONE = "elderly_living_alone"
    LOW_INCOME = "low_income"
    DISABLED = "disabled"
    BEREAVED_FAMILY = "bereaved_family"
    MILITARY_FAMILY = "military_family"
    NONE = "none"


class NeedStatus(StrEnum):
    """Lifecycle state of a need as intake tracks it."""

    SUBMITTED = "submitted"
    SCHEDULED = "scheduled"
    OFFERED = "offered"
    ASSIGNED = "assigned"
    FULFILLED = "fulfilled"
    FAILED = "failed"
    ESCALATED = "escalated"
    CANCELLED = "cancelled"


class VisitPurpose(StrEnum):
    """Why an elder-care visit is made."""

    COMPANIONSHIP = "companionship"
    HEALTH_CHECK = "health_check"
    PERSONAL_CARE = "personal_care"


class RepairCategory(StrEnum):
    """Trade needed for a household repair."""

    PLUMBING = "plumbing"
    HEATING = "heating"
    ELECTRICAL = "electrical"
    APPLIANCE = "appliance"
    OTHER = "other"


class RepairHazard(StrEnum):
    """Hazard reported with a repair, for the helper's preparation and operator triage.

    The SLA follows urgency and priority group; a hazard does not change it by itself
    (the requester or operator sets urgency accordingly)."""

    NONE = "none"
    WATER_LEAK = "water_leak"
    GAS = "gas"
    ELECTRICAL = "electrical"
    STRUCTURAL = "structural"
    OTHER = "other"


class FailureReason(StrEnum):
    """Why a delivery, visit or repair could not be carried out."""

    NOT_HOME = "not_home"
    REFUSED = "refused"
    WRONG_ADDRESS = "wrong_address"
    UNSAFE = "unsafe"
    OTHER = "other"


class CostOption(StrEnum):
    """What a resident pays for a partner's service (HSDS `cost_option`)."""

    FREE = "free"
    LOW_COST = "low_cost"
    PAID = "paid"


class Role(StrEnum):
    """Role of the actor behind an action."""

    OPERATOR = "operator"
    SYSTEM = "system"
    ADMIN = "admin"
    PARTNER = "partner"
    VOLUNTEER = "volunteer"
    SERVICE = "service"
    """Another Linli service calling on behalf of its own users (e.g. partners asking
    intake for the contact details an accepted helper may see)."""
    STREET_OFFICE = "street_office"
    """Staff of a street office (街道) over its communities: reads only, and only what
    carries no resident's personal data; every write is refused (ADR 0040)."""


class ContractModel(BaseModel):
    """Base for commands and requests: unknown fields are bad input and rejected.

    Input values are kept out of validation errors because requests carry personal
    data (names, phones, addresses) and errors end up in logs and replies.
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        frozen=True,
        str_strip_whitespace=True,
    )

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL; refuse it here instead of failing in the store.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        if isinstance(value, list) and any(isinstance(v, str) and "\x00" in v for v in value):
            raise ValueError("text must not contain NUL characters")
        return value


class EventData(BaseModel):
    """Base for event payloads: a tolerant reader that ignores unknown fields.

    A producer may add optional fields within a version; consumers must keep working.
    A field this version carried once and no longer does is named in `withdrawn_fields`:
    readers drop it from events published before (still on the stream, replayed, dead
    letters), so no code ever sees its value (ADR 0031).
    """

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True, frozen=True)

    withdrawn_fields: ClassVar[Mapping[str, str | None]] = {}
    """Dotted path of a withdrawn field -> the boolean field that tells, in its place,
    that the text was recorded (set True when an older event held text), or None."""

    @model_validator(mode="before")
    @classmethod
    def _drop_withdrawn(cls, data: Any) -> Any:
        if not cls.withdrawn_fields or not isinstance(data, Mapping):
            return data
        return drop_withdrawn_fields(data, cls.withdrawn_fields)


def drop_withdrawn_fields(
    data: Mapping[str, Any], withdrawn: Mapping[str, str | None]
) -> dict[str, Any]:
    """A copy of an event's data without the withdrawn fields (the one place that knows
    how an older event is read, ADR 0031). A withdrawn text that was there sets its
    flag, unless the event states the flag itself. The input is not changed."""
    out = dict(data)
    for path, flag in withdrawn.items():
        *parents, name = path.split(".")
        node: dict[str, Any] = out
        for parent in parents:
            child = node.get(parent)
            if not isinstance(child, Mapping):
                break
            copy = dict(child)
            node[parent] = copy
            node = copy
        else:
            if name not in node:
                continue
            value = node.pop(name)
            if flag is not None and flag not in out:
                out[flag] = bool(value)
    return out


MAX_WINDOW = timedelta(days=31)
MIN_MOMENT = datetime(2000, 1, 1, tzinfo=UTC)
MAX_MOMENT = datetime(2200, 1, 1, tzinfo=UTC)


class TimeWindow(BaseModel):
    """A time window in which a need should be served or capacity is offered."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=True)

    earliest: Moment = Field(description="Start of the window (RFC 3339 with offset).")
    latest: Moment = Field(
        description="End of the window (RFC 3339 with offset); after earliest, "
        "at most 31 days later."
    )

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        if self.latest <= self.earliest:
            raise ValueError("latest must be after earliest")
        # An unbounded window would let one need hold capacity indefinitely.
        if self.latest - self.earliest > MAX_WINDOW:
            raise ValueError("window must be at most 31 days long")
        # Keep to years every store can hold (PostgreSQL's timestamptz ends at 294276,
        # but an offset can push year 1 or 9999 out of range once converted to UTC).
        for moment in (self.earliest, self.latest):
            if not MIN_MOMENT <= moment <= MAX_MOMENT:
                raise ValueError("window must lie between the years 2000 and 2200")
        return self

    @property
    def duration(self) -> timedelta:
        """Length of the window."""
        return self.latest - self.earliest


class Reason(BaseModel):
    """One field-level reason why input was rejected; never carries the input value."""

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True, frozen=True)

    field: str = Field(
        max_length=200,
        description="Dotted path of the offending field, e.g. data.window.latest; "
        "empty for the message as a whole.",
    )
    message: str = Field(max_length=500, description="Human-readable explanation.")
    code: str = Field(
        max_length=64,
        description="Machine-readable code, e.g. missing, too_large, malformed, or a "
        "pydantic error type.",
    )
