"""Which event tells whom what: pure functions from an event to message intents.

Its dataclasses (`NeedFacts`, `NewRecipient`, `Intent`) are what the API, the use cases
and the store exchange.

Operators hear about problems through `need.escalated` (scheduling escalates failed
deliveries as welfare checks, wellbeing concerns and missed SLAs), so a failed delivery
is not announced to them twice. Families hear about their relative's services; a
meal's `need.fulfilled` is not announced again after `meal.delivered`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from enum import StrEnum
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from linli.contracts.events import (
    AssignmentOffered,
    AssignmentReminderDue,
    HandedTo,
    MealDelivered,
    NeedEscalated,
    NeedFulfilled,
    NeedSubmitted,
    PartyKind,
    VisitCompleted,
)
from linli.contracts.registry import spec_for
from linli.contracts.types import NeedKind, Urgency


class Audience(StrEnum):
    FAMILY = "family"
    OPERATOR = "operator"
    VOLUNTEER = "volunteer"
    PARTNER = "partner"


@dataclass(frozen=True)
class NeedFacts:
    """What notifications learnt from need.submitted (table people_needs)."""

    need_id: UUID
    resident_id: UUID
    kind: str
    urgency: str
    submitted_at: datetime


@dataclass(frozen=True)
class NewRecipient:
    """A person to tell (table people_recipients), as the API accepted them."""

    role: str
    resident_id: UUID | None
    volunteer_id: UUID | None
    channel: str
    address: str
    locale: str
    quiet_start: time | None
    quiet_end: time | None
    timezone: str
    events: list[str]


@dataclass(frozen=True)
class Intent:
    """Tell one audience (all its matching recipients) one templated thing."""

    audience: Audience
    template: str
    params: dict[str, Any]
    emergency: bool = False
    resident_id: UUID | None = None
    volunteer_id: UUID | None = None
    partner_id: UUID | None = None


# need.submitted is consumed only to learn need -> resident.
CONSUMED = (
    NeedSubmitted,
    MealDelivered,
    VisitCompleted,
    NeedFulfilled,
    NeedEscalated,
    AssignmentOffered,
    AssignmentReminderDue,
)
CONSUMED_TYPES = tuple(spec_for(model).short for model in CONSUMED)
"""`need.submitted`, `meal.delivered`, ...: what recipients may choose among."""

EMERGENCY_REASONS = frozenset({"welfare_check", "wellbeing_concern"})


def local_hm(when: datetime, tz: ZoneInfo) -> str:
    return when.astimezone(tz).strftime("%H:%M")


def need_ref(need_id: UUID) -> str:
    """A short reference an operator can look up (first 8 hex digits of the id)."""
    return need_id.hex[:8]


def intents_for(short: str, data: Any, need: NeedFacts | None, tz: ZoneInfo) -> list[Intent]:
    """The messages one event causes."""
    if isinstance(data, MealDelivered):
        if need is None:
            return []
        neighbour = data.handed_to is HandedTo.NEIGHBOUR
        key = "meal_delivered_neighbour" if neighbour else "meal_delivered"
        return [
            Intent(
                Audience.FAMILY,
                key,
                {"time": local_hm(data.delivered_at, tz)},
                resident_id=need.resident_id,
            )
        ]
    if isinstance(data, VisitCompleted):
        if need is None or not data.wellbeing_concern:
            return []
        return [
            Intent(
                Audience.FAMILY,
                "visit_concern_family",
                {"time": local_hm(data.started_at, tz)},
                emergency=True,
                resident_id=need.resident_id,
            )
        ]
    if isinstance(data, NeedFulfilled):
        kind = NeedKind(data.kind)
        if need is None or kind is NeedKind.MEAL_DELIVERY:
            return []
        return [
            Intent(
                Audience.FAMILY,
                "need_fulfilled",
                {"kind": kind.value, "time": local_hm(data.fulfilled_at, tz)},
                resident_id=need.resident_id,
            )
        ]
    if isinstance(data, NeedEscalated):
        return [_escalation(data, need)]
    if isinstance(data, AssignmentOffered):
        if data.offered_to.kind is not PartyKind.VOLUNTEER:
            return []
        return [
            Intent(
                Audience.VOLUNTEER,
                "assignment_offered",
                {
                    "kind": data.kind.value,
                    "compound": data.compound or "",
                    "start": local_hm(data.window.earliest, tz),
                    "end": local_hm(data.window.latest, tz),
                    "expires": local_hm(data.expires_at, tz),
                },
                emergency=data.urgency is Urgency.EMERGENCY,
                volunteer_id=data.offered_to.id,
            )
        ]
    return []


def _escalation(data: NeedEscalated, need: NeedFacts | None) -> Intent:
    urgency = data.urgency.value if data.urgency else (need.urgency if need else "routine")
    kind = need.kind if need else None
    emergency = urgency == Urgency.EMERGENCY.value or data.reason in EMERGENCY_REASONS
    ref = need_ref(data.need_id)
    if (
        kind == NeedKind.REPAIR.value
        and urgency == Urgency.EMERGENCY.value
        and data.reason in ("sla_breached", "sla_at_risk")
        and (data.detail or "").startswith("accept")
    ):
        minutes = 10
        if need is not None and data.sla_deadline is not None:
            seconds = (data.sla_deadline - need.submitted_at).total_seconds()
            minutes = max(1, round(seconds / 60))
        template = (
            "emergency_repair_not_accepted"
            if data.reason == "sla_breached"
            else "emergency_repair_at_risk"
        )
        return Intent(Audience.OPERATOR, template, {"minutes": minutes, "ref": ref}, emergency=True)
    if data.reason in ("welfare_check", "wellbeing_concern"):
        return Intent(Audience.OPERATOR, data.reason, {"ref": ref}, emergency=True)
    return Intent(
        Audience.OPERATOR,
        "need_escalated",
        {"kind": kind or "other", "reason": data.reason, "ref": ref},
        emergency=emergency,
    )
