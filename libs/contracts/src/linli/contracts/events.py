"""The event catalogue: the data of every domain event, version 1.

Events carry ids, kinds, times and compound names, never names, phone numbers or
addresses: personal data reaches a partner only through an authorised API call after
it has accepted an assignment. Each class is registered in
`linli.contracts.registry`, which names its aggregate, event name and version.
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self, Union
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from linli.contracts.catalogue import CATALOGUE
from linli.contracts.needs import SHARED_DETAILS_BY_KIND, NeedSource
from linli.contracts.types import (
    ContractModel,
    CostOption,
    EventData,
    FailureReason,
    NeedKind,
    PriorityGroup,
    Reason,
    Role,
    TimeWindow,
    Urgency,
)

__all__ = [
    "ESCALATION_REASONS",
    "AssignmentExpired",
    "AssignmentOffered",
    "AssignmentReminderDue",
    "AssignmentWithdrawn",
    "CertificateUsed",
    "DeliveryFailed",
    "EscalationAcknowledged",
    "EscalationAssigned",
    "EscalationOutcome",
    "EscalationResolved",
    "HandedTo",
    "Leg",
    "MealDelivered",
    "MealPrepared",
    "NeedCancelled",
    "NeedDetails",
    "NeedDispatched",
    "NeedEscalated",
    "NeedFulfilled",
    "NeedRejected",
    "NeedReoffered",
    "NeedSubmitted",
    "NotificationChannel",
    "NotificationFailed",
    "OfferLapsed",
    "PartnerAccepted",
    "PartnerDeclined",
    "PartyKind",
    "PartyRef",
    "PointsAwarded",
    "PointsRedeemed",
    "RedemptionRejected",
    "RedemptionRequested",
    "RepairCompleted",
    "RewardPublished",
    "RewardRevised",
    "RewardWithdrawn",
    "ServiceCompleted",
    "SlotPublished",
    "SlotReleaseReason",
    "SlotReleased",
    "SlotReserved",
    "SlotRevised",
    "SlotTerms",
    "SlotWithdrawalReason",
    "SlotWithdrawn",
    "StaffActor",
    "VisitCompleted",
    "VolunteerAvailabilityChanged",
    "VolunteerConfirmed",
    "VolunteerDeclined",
    "WeeklyAvailability",
]

Compound = Annotated[
    str | None,
    Field(
        default=None,
        max_length=100,
        description="Compound (小区) or grid the need or capacity belongs to.",
    ),
]


class PartyKind(StrEnum):
    """Who provides a service: a partner organisation or a volunteer."""

    PARTNER = "partner"
    VOLUNTEER = "volunteer"


class PartyRef(EventData):
    """Reference to a partner organisation or a volunteer, by id only."""

    kind: PartyKind = Field(description="Partner organisation or volunteer.")
    id: UUID = Field(description="Partner or volunteer id (owned by partners).")


class Leg(StrEnum):
    """One part of a need served in two legs (ADR 0044): a canteen prepares a meal, a
    volunteer carries it. Absent on a slot or offer that serves the whole need."""

    PREPARE = "prepare"
    CARRY = "carry"


_LEG_OF_SLOT = (
    "The leg of a meal this capacity serves (ADR 0044): `prepare`, the provider cooks but "
    "does not carry (a canteen that does not deliver); `carry`, the provider carries meals "
    "others prepared. Absent: the provider serves the whole need, as before."
)
_LEG_OF_OFFER = (
    "The leg of a two-leg meal this concerns (ADR 0044): `prepare` (the canteen's part) or "
    "`carry` (the carrier's part, which fulfils the need). Absent for a need served whole."
)


class HandedTo(StrEnum):
    """Who received a delivered meal."""

    RESIDENT = "resident"
    NEIGHBOUR = "neighbour"


class SlotReleaseReason(StrEnum):
    """Why reserved capacity went back to the pool."""

    DECLINED = "declined"
    EXPIRED = "expired"
    NEED_CANCELLED = "need_cancelled"
    DELIVERY_FAILED = "delivery_failed"
    OTHER = "other"


class NotificationChannel(StrEnum):
    """Outbound channel a notification failed on."""

    WEBHOOK = "webhook"
    STREAM = "stream"
    SMS = "sms"
    EMAIL = "email"


ESCALATION_REASONS: tuple[str, ...] = (
    "no_capacity",
    "no_taker",
    "sla_at_risk",
    "sla_breached",
    "delivery_failed",
    "welfare_check",
    "wellbeing_concern",
    "follow_up_needed",
    "offer_unanswered",
    "other",
)
"""Known `need.escalated` reason codes; consumers must tolerate unknown ones."""


# The details models share no discriminator field of their own: the event's
# top-level `kind` says which one applies. A wrap validator publishes the already
# validated kind here so the union's callable discriminator can read it; a ContextVar
# keeps that safe across threads and asyncio tasks.
_DETAILS_KIND: ContextVar[str | None] = ContextVar("linli_details_kind", default=None)


def _details_tag(value: Any) -> str | None:
    for kind, entry in CATALOGUE.items():
        if type(value) is entry.shared_details:
            return kind
    return _DETAILS_KIND.get()


if TYPE_CHECKING:
    NeedDetails = ContractModel
else:
    NeedDetails = Annotated[
        Union[  # noqa: UP007 - built from the catalogue at import
            tuple(Annotated[entry.shared_details, Tag(kind)] for kind, entry in CATALOGUE.items())
        ],
        Discriminator(
            _details_tag,
            custom_error_type="details_kind",
            custom_error_message="details cannot be read without a valid kind",
        ),
    ]
"""Kind-specific details; which model applies is decided by the sibling `kind`.

A repair's description is not among them: it stays in intake (ADR 0031)."""

_NO_DESCRIPTION: dict[str, str | None] = {"details.description": None}
"""Events of version 1 published before ADR 0031 carried a repair's description here."""


def _details_for_kind(
    value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
) -> Any:
    kind = info.data.get("kind")
    token = _DETAILS_KIND.set(None if kind is None else str(kind))
    try:
        return handler(value)
    finally:
        _DETAILS_KIND.reset(token)


def _check_details_match(kind: NeedKind, details: object) -> None:
    if not isinstance(details, SHARED_DETAILS_BY_KIND[kind.value]):
        raise ValueError("details do not match kind")


# --- intake -------------------------------------------------------------------


class NeedSubmitted(EventData):
    """Intake accepted a need from a resident, an operator or another system.

    Scheduling starts matching it to capacity. Carries no personal data: partners
    learn the resident's contact details, and a repair's description, only after
    accepting; both stay in intake (ADR 0009, ADR 0031).
    """

    withdrawn_fields: ClassVar[dict[str, str | None]] = _NO_DESCRIPTION

    need_id: UUID = Field(description="Id of the need (owned by intake).")
    resident_id: UUID = Field(description="Resident the need is for.")
    kind: NeedKind = Field(description="Kind of need; selects the details shape.")
    urgency: Urgency = Field(description="How urgent the need is.")
    window: TimeWindow = Field(description="When the service should happen.")
    details: NeedDetails = Field(description="Kind-specific details.")
    priority_group: PriorityGroup = Field(
        description="Resident's priority group, for matching order and SLA."
    )
    compound: Compound
    submitted_at: AwareDatetime = Field(description="When intake accepted the need.")
    source: NeedSource | None = Field(
        default=None, description="Channel or system the need came from."
    )

    _validate_details = field_validator("details", mode="wrap")(_details_for_kind)

    @model_validator(mode="after")
    def _details_match_kind(self) -> Self:
        _check_details_match(self.kind, self.details)
        return self


class NeedRejected(EventData):
    """Intake rejected an ingress command; the raw message is in the dead-letter store.

    Operators replay it from there once fixed; the submitting system learns why.
    """

    reasons: list[Reason] = Field(
        min_length=1, max_length=100, description="Why the command was rejected."
    )
    dead_letter_id: UUID = Field(description="Id of the stored raw message.")
    ingress_subject: str = Field(max_length=256, description="NATS subject the command arrived on.")
    source_system: str | None = Field(
        default=None,
        max_length=256,
        description="CloudEvents source of the rejected command, when readable.",
    )
    source_event_id: str | None = Field(
        default=None,
        max_length=256,
        description="CloudEvents id of the rejected command, when readable.",
    )
    rejected_at: AwareDatetime = Field(description="When intake rejected it.")


class NeedCancelled(EventData):
    """A need was withdrawn before it was fulfilled; reserved capacity is released."""

    need_id: UUID = Field(description="Cancelled need.")
    reason: str | None = Field(default=None, max_length=500, description="Why it was cancelled.")
    cancelled_by_role: Role = Field(description="Role of whoever cancelled it.")
    cancelled_at: AwareDatetime = Field(description="When it was cancelled.")


# --- partners -----------------------------------------------------------------


class SlotPublished(EventData):
    """A partner or volunteer published capacity that scheduling may reserve."""

    slot_id: UUID = Field(description="Id of the slot (owned by partners).")
    kind: NeedKind = Field(description="Kind of need this capacity serves.")
    provider: PartyRef = Field(description="Who provides the capacity.")
    window: TimeWindow = Field(description="When the capacity is available.")
    capacity: int = Field(ge=1, le=1000, description="How many needs the slot can serve.")
    compounds: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list,
        max_length=200,
        description="Compounds or grids served; empty means the whole community.",
    )
    published_at: AwareDatetime = Field(description="When the slot was published.")
    leg: Leg | None = Field(default=None, description=_LEG_OF_SLOT)

    @model_validator(mode="after")
    def _leg_is_for_meals(self) -> Self:
        if self.leg is not None and self.kind is not NeedKind.MEAL_DELIVERY:
            raise ValueError("only meal capacity serves a leg")
        return self


class VolunteerConfirmed(EventData):
    """A volunteer accepted an offered assignment."""

    assignment_id: UUID = Field(description="Accepted assignment.")
    need_id: UUID = Field(description="Need the assignment serves.")
    slot_id: UUID = Field(description="Slot the assignment uses.")
    volunteer_id: UUID = Field(description="Volunteer who accepted.")
    confirmed_at: AwareDatetime = Field(description="When the volunteer confirmed.")
    leg: Leg | None = Field(default=None, description=_LEG_OF_OFFER)


class VolunteerDeclined(EventData):
    """A volunteer declined an offered assignment; scheduling offers it elsewhere."""

    assignment_id: UUID = Field(description="Declined assignment.")
    need_id: UUID = Field(description="Need the assignment serves.")
    volunteer_id: UUID = Field(description="Volunteer who declined.")
    reason: str | None = Field(default=None, max_length=500, description="Reason given, if any.")
    declined_at: AwareDatetime = Field(description="When the volunteer declined.")
    leg: Leg | None = Field(default=None, description=_LEG_OF_OFFER)


class PartnerAccepted(EventData):
    """A partner organisation accepted an offered assignment."""

    assignment_id: UUID = Field(description="Accepted assignment.")
    need_id: UUID = Field(description="Need the assignment serves.")
    slot_id: UUID = Field(description="Slot the assignment uses.")
    partner_id: UUID = Field(description="Partner organisation that accepted.")
    eta: AwareDatetime | None = Field(
        default=None, description="Expected arrival time, when the partner gave one."
    )
    accepted_at: AwareDatetime = Field(description="When the partner accepted.")
    leg: Leg | None = Field(default=None, description=_LEG_OF_OFFER)


class PartnerDeclined(EventData):
    """A partner organisation declined an offered assignment."""

    assignment_id: UUID = Field(description="Declined assignment.")
    need_id: UUID = Field(description="Need the assignment serves.")
    partner_id: UUID = Field(description="Partner organisation that declined.")
    reason: str | None = Field(default=None, max_length=500, description="Reason given, if any.")
    declined_at: AwareDatetime = Field(description="When the partner declined.")
    leg: Leg | None = Field(default=None, description=_LEG_OF_OFFER)


class MealDelivered(EventData):
    """A meal reached the resident (or a neighbour on their behalf)."""

    need_id: UUID = Field(description="Need served.")
    assignment_id: UUID = Field(description="Assignment carried out.")
    delivered_by: PartyRef = Field(description="Who delivered the meal.")
    delivered_at: AwareDatetime = Field(description="When the meal was handed over.")
    handed_to: HandedTo = Field(description="Who received the meal.")
    hot_on_arrival: bool | None = Field(
        default=None, description="Whether the meal was still hot, when recorded."
    )
    cost_option: CostOption | None = Field(
        default=None,
        description="What the resident pays for the serving partner's service of this kind "
        "(free, low_cost or paid), as the partner registered it; absent for volunteers.",
    )


class MealPrepared(EventData):
    """The canteen finished its leg of a two-leg meal (ADR 0044): the meal is ready for
    (or handed to) the carrier. The need is fulfilled only by the carrier's
    `meal.delivered`."""

    need_id: UUID = Field(description="Need whose meal was prepared.")
    assignment_id: UUID = Field(description="The prepare leg's assignment.")
    prepared_by: PartyRef = Field(description="Who prepared the meal (the canteen).")
    prepared_at: AwareDatetime = Field(description="When the meal was ready for the carrier.")
    handed_to_carrier: bool = Field(
        default=False,
        description="Whether the canteen saw the carrier take the meal when it reported.",
    )
    cost_option: CostOption | None = Field(
        default=None,
        description="What the resident pays for the canteen's meal service (free, low_cost or "
        "paid), as the partner registered it; absent when unknown.",
    )


class VisitCompleted(EventData):
    """An elder-care visit took place."""

    withdrawn_fields: ClassVar[dict[str, str | None]] = {"observations": "observations_recorded"}

    need_id: UUID = Field(description="Need served.")
    assignment_id: UUID = Field(description="Assignment carried out.")
    visited_by: PartyRef = Field(description="Who made the visit.")
    started_at: AwareDatetime = Field(description="When the visit started.")
    ended_at: AwareDatetime = Field(description="When the visit ended.")
    wellbeing_concern: bool = Field(
        description="Whether the visitor is worried about the resident's wellbeing; "
        "a concern is escalated to the community operator."
    )
    observations_recorded: bool = Field(
        default=False,
        description="Whether the visitor wrote observations; the text stays in partners, "
        "for the community's operators (ADR 0031).",
    )
    cost_option: CostOption | None = Field(
        default=None,
        description="What the resident pays for the serving partner's service of this kind "
        "(free, low_cost or paid), as the partner registered it; absent for volunteers.",
    )

    @model_validator(mode="after")
    def _check_times(self) -> Self:
        if self.ended_at < self.started_at:
            raise ValueError("ended_at must not be before started_at")
        return self


class RepairCompleted(EventData):
    """A repair technician finished a call, fixed or not."""

    withdrawn_fields: ClassVar[dict[str, str | None]] = {"summary": "summary_recorded"}

    need_id: UUID = Field(description="Need served.")
    assignment_id: UUID = Field(description="Assignment carried out.")
    repaired_by: PartyRef = Field(description="Who carried out the repair.")
    arrived_at: AwareDatetime = Field(
        description="When the technician arrived; measured against the SLA."
    )
    completed_at: AwareDatetime = Field(description="When the technician finished.")
    fixed: bool = Field(description="Whether the problem is fixed.")
    follow_up_needed: bool = Field(description="Whether another visit is needed.")
    summary_recorded: bool = Field(
        default=False,
        description="Whether the technician wrote a summary of what was done; the text "
        "stays in partners, for the community's operators (ADR 0031).",
    )
    cost_option: CostOption | None = Field(
        default=None,
        description="What the resident pays for the serving partner's service of this kind "
        "(free, low_cost or paid), as the partner registered it; absent for volunteers.",
    )

    @model_validator(mode="after")
    def _check_times(self) -> Self:
        if self.completed_at < self.arrived_at:
            raise ValueError("completed_at must not be before arrived_at")
        return self


class ServiceCompleted(EventData):
    """A need of a kind added by the catalogue was served (ADR 0045).

    One generic completion for every kind whose catalogue entry names
    `service.completed` (goods delivery, personal care, and kinds added later), instead
    of one event type per kind. Meals, visits and repairs keep their own events.
    """

    withdrawn_fields: ClassVar[dict[str, str | None]] = {"note": "note_recorded"}

    need_id: UUID = Field(description="Need served.")
    assignment_id: UUID = Field(description="Assignment carried out.")
    kind: NeedKind = Field(description="Kind of need that was served.")
    served_by: PartyRef = Field(description="Who served it.")
    started_at: AwareDatetime = Field(
        description="When the helper arrived or began; measured against the SLA."
    )
    completed_at: AwareDatetime = Field(description="When the service was completed.")
    follow_up_needed: bool = Field(
        default=False, description="Whether the helper asks the community to follow up."
    )
    note_recorded: bool = Field(
        default=False,
        description="Whether the helper wrote a note; the text stays in partners, for the "
        "community's operators (ADR 0031).",
    )
    cost_option: CostOption | None = Field(
        default=None,
        description="What the resident pays for the serving partner's service of this kind "
        "(free, low_cost or paid), as the partner registered it; absent for volunteers.",
    )

    @model_validator(mode="after")
    def _check_times(self) -> Self:
        if self.completed_at < self.started_at:
            raise ValueError("completed_at must not be before started_at")
        return self


class DeliveryFailed(EventData):
    """A meal, visit or repair could not be carried out."""

    withdrawn_fields: ClassVar[dict[str, str | None]] = {"detail": "detail_recorded"}

    need_id: UUID = Field(description="Need that was not served.")
    assignment_id: UUID = Field(description="Assignment that failed.")
    attempted_by: PartyRef = Field(description="Who attempted it.")
    reason: FailureReason = Field(description="Why it failed.")
    detail_recorded: bool = Field(
        default=False,
        description="Whether the helper wrote more detail; the text stays in partners, "
        "for the community's operators (ADR 0031).",
    )
    failed_at: AwareDatetime = Field(description="When the attempt failed.")
    leg: Leg | None = Field(default=None, description=_LEG_OF_OFFER)


class PointsAwarded(EventData):
    """A volunteer earned service points for a fulfilled need."""

    volunteer_id: UUID = Field(description="Volunteer credited.")
    points: int = Field(gt=0, le=10_000, description="Points awarded.")
    need_id: UUID = Field(description="Need the points are for.")
    balance_after: int = Field(
        ge=0, description="Volunteer's balance in this community after this award."
    )
    awarded_at: AwareDatetime = Field(description="When the points were credited.")


class PointsRedeemed(EventData):
    """A community operator redeemed a volunteer's service points in that community.

    Balances are per community: `balance_after` is what the volunteer still holds in the
    event's community. The operator's note stays in partners (free text may name people).
    """

    redemption_id: UUID = Field(description="Id of the redemption (one per Idempotency-Key).")
    volunteer_id: UUID = Field(description="Volunteer whose points were spent.")
    points: int = Field(gt=0, le=1_000_000, description="Points redeemed.")
    balance_after: int = Field(
        ge=0, description="Volunteer's balance in this community after the redemption."
    )
    redeemed_at: AwareDatetime = Field(description="When the points were debited.")
    reward_id: UUID | None = Field(
        default=None,
        description="The partner's reward the points paid for, when the redemption was a "
        "volunteer's request for a reward approved by an operator (ADR 0041); absent for an "
        "operator's direct debit.",
    )


# --- rewards and their redemption (ADR 0041) ---------------------------------


RewardTitle = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="What the reward is, in the partner's words (e.g. 100 yuan off a "
        "training course); never a person's name.",
    ),
]


class RewardPublished(EventData):
    """A partner offers a reward for service points in a community."""

    reward_id: UUID = Field(description="Id of the reward.")
    partner_id: UUID = Field(description="Partner that honours the reward.")
    title: RewardTitle
    points: int = Field(gt=0, le=1_000_000, description="Price in points.")
    published_at: AwareDatetime = Field(description="When it was published.")


class RewardRevised(EventData):
    """A reward's title or price changed; requests made before keep their price."""

    reward_id: UUID = Field(description="Id of the reward.")
    partner_id: UUID = Field(description="Partner that honours the reward.")
    title: RewardTitle
    points: int = Field(gt=0, le=1_000_000, description="New price in points.")
    revised_at: AwareDatetime = Field(description="When it changed.")


class RewardWithdrawn(EventData):
    """A reward is no longer offered; its pending requests were rejected."""

    reward_id: UUID = Field(description="Id of the reward.")
    partner_id: UUID = Field(description="Partner that offered it.")
    withdrawn_at: AwareDatetime = Field(description="When it was withdrawn.")


class RedemptionRequested(EventData):
    """A volunteer asked to redeem points for a reward; the points are held until an
    operator approves (`points.redeemed`) or rejects (`redemption.rejected`)."""

    redemption_id: UUID = Field(description="Id of the request (one per Idempotency-Key).")
    reward_id: UUID = Field(description="Reward asked for.")
    volunteer_id: UUID = Field(description="Volunteer asking.")
    points: int = Field(gt=0, le=1_000_000, description="Points held (the reward's price).")
    requested_at: AwareDatetime = Field(description="When it was asked for.")


class RedemptionRejected(EventData):
    """An operator rejected a redemption request (or its reward was withdrawn); the held
    points are free again. The reason stays in partners."""

    redemption_id: UUID = Field(description="Id of the request.")
    reward_id: UUID = Field(description="Reward asked for.")
    volunteer_id: UUID = Field(description="Volunteer who asked.")
    points: int = Field(gt=0, le=1_000_000, description="Points released.")
    rejected_at: AwareDatetime = Field(description="When it was rejected.")


class CertificateUsed(EventData):
    """The partner marked a reward certificate used (once)."""

    redemption_id: UUID = Field(description="The approved redemption the certificate is for.")
    reward_id: UUID = Field(description="Reward honoured.")
    partner_id: UUID = Field(description="Partner that honoured it.")
    used_at: AwareDatetime = Field(description="When it was used.")


# --- scheduling ---------------------------------------------------------------


class SlotReserved(EventData):
    """Scheduling reserved one unit of a slot's capacity for a need."""

    reservation_id: UUID = Field(description="Id of the reservation.")
    slot_id: UUID = Field(description="Slot reserved.")
    need_id: UUID = Field(description="Need it is reserved for.")
    remaining_capacity: int = Field(
        ge=0, le=1000, description="Capacity left in the slot after this reservation."
    )
    reserved_at: AwareDatetime = Field(description="When it was reserved.")


class SlotReleased(EventData):
    """A reservation was given up and its capacity returned to the slot."""

    reservation_id: UUID = Field(description="Released reservation.")
    slot_id: UUID = Field(description="Slot the capacity returns to.")
    need_id: UUID = Field(description="Need the reservation was for.")
    reason: SlotReleaseReason = Field(description="Why it was released.")
    released_at: AwareDatetime = Field(description="When it was released.")


class AssignmentOffered(EventData):
    """Scheduling offered a need to a partner or volunteer until `expires_at`.

    Carries what the candidate needs to decide (kind, window, details, compound) but
    no personal data and no free text (ADR 0031).
    """

    withdrawn_fields: ClassVar[dict[str, str | None]] = _NO_DESCRIPTION

    assignment_id: UUID = Field(description="Id of the assignment offer.")
    need_id: UUID = Field(description="Need offered.")
    slot_id: UUID = Field(description="Slot reserved for it.")
    offered_to: PartyRef = Field(description="Candidate the offer goes to.")
    kind: NeedKind = Field(description="Kind of need; selects the details shape.")
    urgency: Urgency = Field(description="How urgent the need is.")
    window: TimeWindow = Field(description="When the service should happen.")
    details: NeedDetails = Field(description="Kind-specific details.")
    compound: Compound
    attempt: int = Field(default=1, ge=1, le=100, description="1 for the first offer of this need.")
    offered_at: AwareDatetime = Field(description="When the offer was made.")
    expires_at: AwareDatetime = Field(description="When the offer lapses if not accepted.")
    leg: Leg | None = Field(default=None, description=_LEG_OF_OFFER)

    _validate_details = field_validator("details", mode="wrap")(_details_for_kind)

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_details_match(self.kind, self.details)
        if self.expires_at <= self.offered_at:
            raise ValueError("expires_at must be after offered_at")
        return self


class OfferLapsed(EventData):
    """Partners' verdict that an offer reached its expiry unanswered (ADR 0026).

    Partners decides, under the offer's row lock, whether an answer came before
    `expires_at` or the offer lapsed; exactly one of `partner.accepted` /
    `volunteer.confirmed`, a decline, or `offer.lapsed` follows each offer. Scheduling
    expires the assignment only on this event, however late it arrives.
    """

    assignment_id: UUID = Field(description="Assignment whose offer lapsed.")
    need_id: UUID = Field(description="Need that was offered.")
    slot_id: UUID = Field(description="Slot that was reserved for it.")
    offered_to: PartyRef = Field(description="Candidate who did not answer in time.")
    expires_at: AwareDatetime = Field(description="The offer's expiry, as offered.")
    lapsed_at: AwareDatetime = Field(
        description="When partners recorded the lapse (at or after `expires_at`)."
    )


class AssignmentExpired(EventData):
    """An offer lapsed without an answer; scheduling offers the need elsewhere.

    Emitted once scheduling has partners' `offer.lapsed` for the assignment.
    """

    assignment_id: UUID = Field(description="Expired assignment offer.")
    need_id: UUID = Field(description="Need that was offered.")
    slot_id: UUID = Field(description="Slot that was reserved for it.")
    offered_to: PartyRef = Field(description="Candidate who did not answer.")
    expired_at: AwareDatetime = Field(description="When the offer lapsed.")
    leg: Leg | None = Field(default=None, description=_LEG_OF_OFFER)


class AssignmentReminderDue(EventData):
    """A lead time before an accepted visit or repair starts: remind who accepted it.

    Scheduling fires it once from a durable timer (ADR 0043); notifications tells the
    helper on their channels. Ids, kind and window only (ADR 0031).
    """

    assignment_id: UUID = Field(description="The accepted assignment.")
    need_id: UUID = Field(description="Need to be served.")
    assigned_to: PartyRef = Field(description="The partner or volunteer who accepted it.")
    kind: NeedKind = Field(description="Kind of need.")
    urgency: Urgency = Field(description="How urgent the need is.")
    window: TimeWindow = Field(description="When the service should happen.")
    compound: Compound
    due_at: AwareDatetime = Field(
        description="When the reminder was due: the window's start minus the lead time."
    )


class NeedEscalated(EventData):
    """No one could serve a need in time, or a report needs a human: operators act."""

    need_id: UUID = Field(description="Escalated need.")
    reason: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="Reason code; known codes: " + ", ".join(ESCALATION_REASONS) + ".",
    )
    detail: str | None = Field(default=None, max_length=500, description="Human-readable detail.")
    urgency: Urgency | None = Field(
        default=None, description="Urgency of the need, for operator triage."
    )
    sla_deadline: AwareDatetime | None = Field(
        default=None, description="The SLA deadline that was missed or is at risk."
    )
    escalated_at: AwareDatetime = Field(description="When it was escalated.")
    leg: Leg | None = Field(
        default=None,
        description="For a two-leg meal (ADR 0044), the leg that could not be served "
        "(`prepare` or `carry`); absent when the escalation concerns the whole need.",
    )


class NeedFulfilled(EventData):
    """A need was served; its lifecycle is complete."""

    need_id: UUID = Field(description="Fulfilled need.")
    assignment_id: UUID = Field(description="Assignment that served it.")
    kind: NeedKind = Field(description="Kind of need.")
    fulfilled_by: PartyRef = Field(description="Who served it.")
    fulfilled_at: AwareDatetime = Field(
        description="When it was served (delivery, visit end or repair completion)."
    )


# --- staff actions (scheduling, ADR 0034) ---------------------------------------------


StaffLabel = Annotated[
    str,
    Field(
        max_length=100,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="The credential's label as issued (a staff desk or member, e.g. "
        "'居委会 desk 1'); never a resident's data. Empty when none was given.",
    ),
]


class StaffActor(EventData):
    """Who took a staff action: the caller's credential in the acting service."""

    credential_id: UUID = Field(description="Credential id in the service that acted.")
    role: Role = Field(description="The credential's role (operator or admin).")
    label: StaffLabel = ""


class EscalationOutcome(StrEnum):
    """How an escalation ended, as the operator recorded it."""

    RESIDENT_WELL = "resident_well"
    """A welfare visit or call found the resident well."""
    AMBULANCE_CALLED = "ambulance_called"
    """An ambulance (120) or the emergency services were called."""
    REFERRED = "referred"
    """Referred to another body: the street office, a hospital, social work, property
    management."""
    HELPER_FOUND = "helper_found"
    """A partner, volunteer or staff member took the need on by hand."""
    NEED_CANCELLED = "need_cancelled"
    """The need is no longer wanted (the resident or family withdrew it)."""
    NO_ACTION_NEEDED = "no_action_needed"
    """A false alarm, or already handled before anyone acted."""
    OTHER = "other"
    """Anything else; the note (kept in scheduling) says what."""


class EscalationActionData(EventData):
    """What every escalation action names: the escalation, its need and reason, who."""

    escalation_id: UUID = Field(description="Escalation acted on (scheduling's id).")
    need_id: UUID = Field(description="Need the escalation is about.")
    reason: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="The escalation's reason code, as in need.escalated.",
    )
    actor: StaffActor = Field(description="Who acted.")


class EscalationAcknowledged(EscalationActionData):
    """A community operator acknowledged an escalation: someone is looking at it.

    Also emitted, with the same actor and time, when an open escalation is assigned or
    resolved straight away (the acknowledgement is implicit).
    """

    acknowledged_at: AwareDatetime = Field(description="When it was acknowledged.")


class EscalationAssigned(EscalationActionData):
    """A community operator gave an escalation to a named staff member (again, to
    reassign it)."""

    assignee: StaffLabel = Field(
        min_length=1, description="Display name of the staff member who takes it on."
    )
    assignee_ref: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:@-]+$",
        description="The staff member's reference in the community's own systems, if any.",
    )
    assigned_at: AwareDatetime = Field(description="When it was assigned.")


class EscalationResolved(EscalationActionData):
    """A community operator closed an escalation with an outcome.

    The operator's note is free text that may name people: it stays in scheduling (read
    through the escalation API by the community's operators) and never travels in an
    event; `note_recorded` says whether there is one.
    """

    outcome: EscalationOutcome = Field(description="How it ended.")
    note_recorded: bool = Field(description="Whether the operator wrote a note.")
    resolved_at: AwareDatetime = Field(description="When it was resolved.")


class AssignmentWithdrawn(EventData):
    """A community operator withdrew an open offer (to re-offer or dispatch the need by
    hand); its unit of capacity goes back (`slot.released`, reason `other`: a new reason
    code would break readers of v1).

    Partners closes the offer in the party's inbox; an answer to it no longer counts.
    """

    assignment_id: UUID = Field(description="Withdrawn assignment offer.")
    need_id: UUID = Field(description="Need that was offered.")
    slot_id: UUID = Field(description="Slot that was reserved for it.")
    offered_to: PartyRef = Field(description="Candidate the offer went to.")
    actor: StaffActor = Field(description="Who withdrew it.")
    withdrawn_at: AwareDatetime = Field(description="When it was withdrawn.")


class NeedDispatched(EventData):
    """A community operator offered a need by hand to a chosen partner or volunteer.

    The offer itself follows as `slot.reserved` and `assignment.offered` (same
    assignment); `without_capacity` says the party had no published slot with room that
    fits, and the operator overrode that (ADR 0034).
    """

    need_id: UUID = Field(description="Need dispatched.")
    assignment_id: UUID = Field(description="The directed offer's assignment.")
    slot_id: UUID = Field(
        description="Slot reserved: one the party published, or a one-off slot scheduling "
        "made for this directed offer."
    )
    offered_to: PartyRef = Field(description="The party chosen.")
    without_capacity: bool = Field(
        description="True when no published slot of the party had room for this need."
    )
    actor: StaffActor = Field(description="Who dispatched it.")
    dispatched_at: AwareDatetime = Field(description="When it was dispatched.")


class NeedReoffered(EventData):
    """A community operator asked scheduling to match a need again.

    The open offer, if any, was withdrawn first (`assignment.withdrawn`); what matching
    found follows as `assignment.offered` or `need.escalated`.
    """

    need_id: UUID = Field(description="Need re-offered.")
    withdrawn_assignment_id: UUID | None = Field(
        default=None, description="The open offer withdrawn first, if there was one."
    )
    readmitted: list[PartyRef] = Field(
        default_factory=list,
        max_length=50,
        description="Parties who had declined or let an offer lapse and that the operator "
        "allowed to be asked again.",
    )
    actor: StaffActor = Field(description="Who re-offered it.")
    reoffered_at: AwareDatetime = Field(description="When.")


# --- recurring capacity (partners, ADR 0042) ------------------------------------


class SlotTerms(EventData):
    """Shared shape of a slot's published terms (base of slot.revised)."""

    slot_id: UUID = Field(description="Id of the slot (owned by partners).")
    kind: NeedKind = Field(description="Kind of need this capacity serves.")
    provider: PartyRef = Field(description="Who provides the capacity.")
    window: TimeWindow = Field(description="When the capacity is available.")
    capacity: int = Field(ge=1, le=1000, description="How many needs the slot can serve.")
    compounds: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list,
        max_length=200,
        description="Compounds or grids served; empty means the whole community.",
    )


class SlotRevised(SlotTerms):
    """A published slot's window, capacity or compounds changed.

    Carries the slot's whole terms after the change, so a consumer that has not seen the
    slot yet can take it as published. Scheduling releases (and matches again) the
    reservations the new terms no longer hold: beyond the new capacity, or needs the new
    window or compounds no longer fit.
    """

    revision: int = Field(
        ge=1, le=1_000_000, description="1 for the first edit, then 2, …: a later one wins."
    )
    actor: StaffActor = Field(
        description="Whose credential changed it (an operator, admin or the provider)."
    )
    revised_at: AwareDatetime = Field(description="When the slot was changed.")


class SlotWithdrawalReason(StrEnum):
    """Why a slot was withdrawn."""

    WITHDRAWN = "withdrawn"
    """The provider or an operator took the slot back."""
    PROVIDER_DEACTIVATED = "provider_deactivated"
    """The partner or volunteer was deactivated: its future slots go with it."""


class SlotWithdrawn(EventData):
    """A published slot was withdrawn: no new reservations; scheduling releases the
    slot's reservations, withdraws their offers (`assignment.withdrawn`, also from a
    helper who had accepted) and matches each need again."""

    slot_id: UUID = Field(description="Id of the slot (owned by partners).")
    provider: PartyRef = Field(description="Who provided the capacity.")
    reason: SlotWithdrawalReason = Field(description="Why it was withdrawn.")
    actor: StaffActor = Field(
        description="Whose credential withdrew it (an operator, admin or the provider)."
    )
    withdrawn_at: AwareDatetime = Field(description="When it was withdrawn.")


class WeeklyAvailability(EventData):
    """One weekly period in which a volunteer can usually help."""

    weekday: int = Field(ge=1, le=7, description="ISO day of week: 1 = Monday … 7 = Sunday.")
    start: time = Field(description="Local start time.")
    end: time = Field(description="Local end time; at or before `start` it runs past midnight.")


class VolunteerAvailabilityChanged(EventData):
    """A volunteer's weekly availability or active flag, as it now stands.

    Matching offers a volunteer's slot only for needs whose window meets one of these
    periods; an empty list means no restriction. An inactive volunteer gets no offers.
    """

    volunteer_id: UUID = Field(description="Volunteer (owned by partners).")
    active: bool = Field(description="Whether the volunteer takes new offers.")
    timezone: str = Field(min_length=1, max_length=64, description="IANA time zone of the periods.")
    availability: list[WeeklyAvailability] = Field(
        max_length=50, description="Weekly periods; empty = no restriction."
    )
    changed_at: AwareDatetime = Field(description="When it changed; a later change wins.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown time zone") from exc
        return value


# --- notifications ------------------------------------------------------------


class NotificationFailed(EventData):
    """Notifications gave up delivering an event to a subscriber after retries."""

    subscription_id: UUID = Field(description="Subscription that was not served.")
    endpoint_id: UUID | None = Field(
        default=None, description="Webhook endpoint, for webhook deliveries."
    )
    channel: NotificationChannel = Field(description="Channel that failed.")
    event_id: str = Field(min_length=1, max_length=256, description="CloudEvents id not delivered.")
    event_type: str | None = Field(
        default=None, max_length=128, description="CloudEvents type not delivered."
    )
    reason: str = Field(
        min_length=1,
        max_length=500,
        description="Last error, e.g. 'HTTP 503' or 'timeout'.",
    )
    last_status_code: int | None = Field(
        default=None, ge=100, le=599, description="Last HTTP status, for webhooks."
    )
    attempts: int = Field(ge=1, le=1000, description="Delivery attempts made.")
    failed_at: AwareDatetime = Field(description="When delivery was abandoned.")
