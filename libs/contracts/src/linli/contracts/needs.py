"""Demand-side contracts: what a resident needs and who the resident is.

Intake accepts these both as its HTTP request bodies and as the data of the
`need.submit` v1 ingress command from other systems.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import ConfigDict, Field, RootModel, StringConstraints, TypeAdapter

from linli.contracts.types import (
    ContractModel,
    PhoneNumber,
    PriorityGroup,
    RepairCategory,
    RepairHazard,
    TimeWindow,
    Urgency,
    VisitPurpose,
)

__all__ = [
    "DETAILS_BY_KIND",
    "SHARED_DETAILS_BY_KIND",
    "MealDetails",
    "MealNeedSpec",
    "NeedDetailsModel",
    "NeedRequestDetails",
    "NeedSource",
    "NeedSpec",
    "NeedSpecAdapter",
    "NeedSpecBase",
    "NeedSubmit",
    "NeedSubmitData",
    "RepairDetails",
    "RepairNeedSpec",
    "RepairRequestDetails",
    "ResidentSpec",
    "VisitDetails",
    "VisitNeedSpec",
    "shared_details",
]

DietNeed = Annotated[str, StringConstraints(min_length=1, max_length=40)]


class MealDetails(ContractModel):
    """What a meal delivery needs beyond the window."""

    diet_needs: list[DietNeed] = Field(
        default_factory=list,
        max_length=10,
        description="Dietary needs such as 'soft food' or 'low salt'; each at most "
        "40 characters, at most 10.",
    )
    portions: int = Field(default=1, ge=1, le=10, description="Number of portions.")


class VisitDetails(ContractModel):
    """What an elder-care home visit is for and how long it takes."""

    purpose: VisitPurpose = Field(description="Purpose of the visit.")
    duration_minutes: int = Field(
        ge=15, le=480, description="Expected length of the visit in minutes."
    )


class RepairDetails(ContractModel):
    """What is broken and whether it is dangerous: what events and offers carry.

    The requester's own words stay in intake (`RepairRequestDetails`, ADR 0031).
    """

    category: RepairCategory = Field(description="Trade needed.")
    hazard: RepairHazard = Field(
        default=RepairHazard.NONE, description="Hazard observed by the requester."
    )


class RepairRequestDetails(ContractModel):
    """A repair as submitted: the shared details and the requester's description.

    The description is free text that may name people or describe their home, so it
    never travels in an event (ADR 0031): intake keeps it with the need and shows it to
    the community's operators and, once accepted, to the assigned helper, each read
    recorded.
    """

    category: RepairCategory = Field(description="Trade needed.")
    description: str = Field(
        min_length=1,
        max_length=2000,
        description="What is broken, in plain words. Kept by intake; never in an event.",
    )
    hazard: RepairHazard = Field(
        default=RepairHazard.NONE, description="Hazard observed by the requester."
    )

    def shared(self) -> RepairDetails:
        """The details without the requester's words, as events carry them."""
        return RepairDetails(category=self.category, hazard=self.hazard)


NeedDetailsModel = MealDetails | VisitDetails | RepairDetails
"""Kind-specific details as events carry them."""

NeedRequestDetails = MealDetails | VisitDetails | RepairRequestDetails
"""Kind-specific details as submitted."""


def shared_details(details: NeedRequestDetails) -> NeedDetailsModel:
    """What of a submission's details may travel in events (ADR 0031)."""
    if isinstance(details, RepairRequestDetails):
        return details.shared()
    return details


class NeedSource(ContractModel):
    """Which channel or external system a need came from."""

    system: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Name of the submitting channel or system, e.g. 'city-hotline' "
        "or 'app:grid-tablet'.",
    )
    reference: str | None = Field(
        default=None,
        max_length=128,
        description="The submitting system's own reference for the request.",
    )


class NeedSpecBase(ContractModel):
    """Fields shared by every kind of need; concrete kinds subclass it."""

    resident_id: UUID = Field(description="Resident the need is for.")
    window: TimeWindow = Field(description="When the service should happen.")
    urgency: Urgency = Field(default=Urgency.ROUTINE, description="How urgent it is.")
    notes: str | None = Field(
        default=None,
        max_length=1000,
        description="Free-text notes for the community operator; not forwarded to partners.",
    )
    source: NeedSource | None = Field(
        default=None, description="Channel or system the need came from."
    )


class MealNeedSpec(NeedSpecBase):
    """A hot meal carried to the resident."""

    kind: Literal["meal_delivery"] = Field(description="Need kind discriminator.")
    details: MealDetails = Field(description="Meal-specific details.")


class VisitNeedSpec(NeedSpecBase):
    """An elder-care home visit."""

    kind: Literal["elder_care_visit"] = Field(description="Need kind discriminator.")
    details: VisitDetails = Field(description="Visit-specific details.")


class RepairNeedSpec(NeedSpecBase):
    """A household repair call."""

    kind: Literal["repair"] = Field(description="Need kind discriminator.")
    details: RepairRequestDetails = Field(description="Repair-specific details.")


NeedSpec = Annotated[
    MealNeedSpec | VisitNeedSpec | RepairNeedSpec,
    Field(discriminator="kind"),
]
"""A need of any kind, discriminated on `kind`.

Adding a kind later means: add a `NeedKind` member, a details model, a
`NeedSpecBase` subclass with `kind: Literal[...]`, add it to this union and to
`DETAILS_BY_KIND`. Existing kinds keep their wire shape, so this is not a breaking
change for producers; consumers that switch on kind must handle the new one.
"""

NeedSpecAdapter: TypeAdapter[MealNeedSpec | VisitNeedSpec | RepairNeedSpec] = TypeAdapter(NeedSpec)

NeedSubmit = NeedSpec
"""Data of the ingress command `need.submit` v1: the command's data is a NeedSpec."""


# The registry needs a class per entry (for spec_for and the JSON Schema), and a
# union is not a class. Validate with NeedSpecAdapter (or EventSpec.adapter) to get
# the concrete spec rather than this wrapper.
class NeedSubmitData(RootModel[NeedSpec]):
    """Another system asks intake to accept a need; the shape depends on `kind`."""

    model_config = ConfigDict(hide_input_in_errors=True, frozen=True)


DETAILS_BY_KIND: dict[str, type[MealDetails | VisitDetails | RepairRequestDetails]] = {
    "meal_delivery": MealDetails,
    "elder_care_visit": VisitDetails,
    "repair": RepairRequestDetails,
}
"""The details model of each kind as submitted (a need, a plan)."""

SHARED_DETAILS_BY_KIND: dict[str, type[MealDetails | VisitDetails | RepairDetails]] = {
    "meal_delivery": MealDetails,
    "elder_care_visit": VisitDetails,
    "repair": RepairDetails,
}
"""The details model of each kind as events carry it."""


class ResidentSpec(ContractModel):
    """A resident (service recipient) as registered with intake.

    Holds personal data: it never appears in an event, a log line or a trace.
    """

    name: str = Field(min_length=1, max_length=100, description="Full name.")
    phone: PhoneNumber
    address: str = Field(min_length=1, max_length=300, description="Street address including unit.")
    compound: str | None = Field(
        default=None,
        max_length=100,
        description="Compound (小区) or grid name; not personal, used for matching.",
    )
    priority_group: PriorityGroup = Field(
        default=PriorityGroup.NONE, description="Eligibility / priority group."
    )
    consent_to_share_contact: bool = Field(
        default=False,
        description="Whether contact details may be shared with a partner that has "
        "accepted an assignment.",
    )
    locale: Literal["zh-CN", "en"] = Field(
        default="zh-CN", description="Preferred language for messages."
    )
