"""The catalogue of kinds of need: every fact about a kind, defined once, as data (ADR 0045).

A kind is one `KindSpec` entry in `CATALOGUE`: its labels, its details model as
submitted and as events carry it, its SLA defaults, the completion event and report
outcome that prove it, the points a volunteer earns for it and who can serve it. The
services look these facts up here instead of switching on the kind, so adding a kind
means adding a `NeedKind` member, its details model(s) and one entry below (plus, if a
community wants other numbers, configuration), not code in four services.

The entries are plain frozen dataclasses and pydantic classes so that other readers
(`GET /v1/catalogue` in intake, the Open311 facade of #13) can walk them; `describe()`
gives the JSON-ready view of one entry, without anything personal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from linli.contracts.types import (
    ContractModel,
    NeedKind,
    PriorityGroup,
    RepairCategory,
    RepairHazard,
    VisitPurpose,
)

__all__ = [
    "CATALOGUE",
    "SERVICE_COMPLETED",
    "GoodsCategory",
    "GoodsDeliveryDetails",
    "GoodsDeliveryRequestDetails",
    "KindSpec",
    "MealDetails",
    "PersonalCareDetails",
    "PersonalCareService",
    "RepairDetails",
    "RepairRequestDetails",
    "ReportOutcome",
    "ResponseSla",
    "ServedBy",
    "SlaBasis",
    "SlaDefaults",
    "VisitDetails",
    "describe",
    "kind_spec",
    "label",
]

# --- details models ------------------------------------------------------------------

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


class GoodsCategory(StrEnum):
    """What is brought to the door."""

    MEDICINE = "medicine"
    GROCERIES = "groceries"
    DAILY_NECESSITIES = "daily_necessities"
    OTHER = "other"


class GoodsDeliveryDetails(ContractModel):
    """Goods brought to the door (medicine from a pharmacy, shopping): what events carry.

    Counts and a category only; the list of items, a prescription's wording and any
    other words of the requester stay in intake (`GoodsDeliveryRequestDetails`, ADR 0031).
    """

    category: GoodsCategory = Field(description="What kind of goods are brought.")
    items_count: int = Field(ge=1, le=50, description="Number of items to bring, at most 50.")
    prescription_required: bool = Field(
        default=False,
        description="Whether a prescription must be shown at the pharmacy (the helper "
        "collects it first); the prescription itself never travels in an event.",
    )


class GoodsDeliveryRequestDetails(ContractModel):
    """Goods to bring as submitted: the shared details and the requester's list.

    The description may name medicines, an illness or a person: like a repair's
    description it stays in intake and reaches only operators and, once accepted, the
    assigned helper, each read recorded (ADR 0031).
    """

    category: GoodsCategory = Field(description="What kind of goods are brought.")
    items_count: int = Field(ge=1, le=50, description="Number of items to bring, at most 50.")
    prescription_required: bool = Field(
        default=False, description="Whether a prescription must be shown at the pharmacy."
    )
    description: str | None = Field(
        default=None,
        min_length=1,
        max_length=2000,
        description="What to buy or collect, in plain words (a shopping list, the "
        "pharmacy's order number). Kept by intake; never in an event.",
    )


class PersonalCareService(StrEnum):
    """Which personal-care service is done at home."""

    HAIRCUT = "haircut"
    SHAVE = "shave"
    HAIR_WASH = "hair_wash"
    NAIL_TRIM = "nail_trim"


class PersonalCareDetails(ContractModel):
    """Personal care at home (a haircut, a shave): the service and how long it takes."""

    service: PersonalCareService = Field(description="Which service is wanted.")
    duration_minutes: int = Field(
        default=30, ge=10, le=240, description="Expected length of the service in minutes."
    )


# --- the facts of a kind ---------------------------------------------------------------


class SlaBasis(StrEnum):
    """What a kind's promise is measured against."""

    WINDOW = "window"
    """Done by the end of the agreed window (a lunch window, an agreed afternoon)."""
    RESPONSE = "response"
    """Someone on site within a duration from submission (a repair call)."""


@dataclass(frozen=True)
class ResponseSla:
    """Durations of a response promise, in SLA seconds, and which community setting
    (a column of scheduling's per-community SLA policy) overrides each one."""

    emergency_accept_s: float
    emergency_onsite_s: float
    priority_s: float
    routine_s: float
    policy_keys: Mapping[str, str] = field(default_factory=dict)
    """`emergency_accept_s`/... -> the name of the overriding community setting."""

    def seconds(self, name: str, overrides: Mapping[str, float] | None = None) -> float:
        """The duration `name`, overridden by the community's setting when one applies."""
        key = self.policy_keys.get(name)
        if overrides is not None and key is not None and key in overrides:
            return float(overrides[key])
        return float(getattr(self, name))


@dataclass(frozen=True)
class SlaDefaults:
    """A kind's SLA policy defaults."""

    basis: SlaBasis
    label: str
    """What the completion clock promises, e.g. 'meal delivered in window'."""
    response: ResponseSla | None = None
    """For `response`: the durations."""
    priority_groups_shorten: bool = False
    """For `response`: a resident in any priority group gets the priority duration."""
    welfare_check_groups: frozenset[PriorityGroup] = frozenset()
    """A failed attempt for a resident in one of these groups is a welfare check at once."""


@dataclass(frozen=True)
class ReportOutcome:
    """What proves the kind was done, and how the console's reports count it."""

    event_type: str
    """CloudEvents type (without version) of the completion event, e.g. 'meal.delivered'."""
    outcome: str
    """The completion report's `outcome` a helper sends to partners, e.g. 'meal_delivered'."""
    counts_hours: bool
    """Whether the work's start and end give its hours in the volunteers' statement."""


@dataclass(frozen=True)
class ServedBy:
    """Who can serve a kind: partners registering a service of this kind (typically of
    these organisation kinds) and volunteers with this skill."""

    partner_kinds: tuple[str, ...]
    volunteer_skill: str


@dataclass(frozen=True)
class KindSpec:
    """Every fact about one kind of need."""

    kind: str
    labels: Mapping[str, str]
    """Display names by locale: 'zh-CN' and 'en'."""
    description: str
    """One line for people and for the JSON Schema of the need spec."""
    spec_name: str
    """Class name of the generated need spec (and its JSON Schema definition)."""
    request_details: type[ContractModel]
    """Details as submitted (a need, a recurring plan)."""
    shared_details: type[ContractModel]
    """Details as events carry them: no free text (ADR 0031)."""
    sla: SlaDefaults
    report: ReportOutcome
    points: int
    """Points a volunteer earns for a proven completion; a community may override."""
    served_by: ServedBy

    @property
    def private_fields(self) -> frozenset[str]:
        """Fields of the submitted details that stay with intake (ADR 0031)."""
        return frozenset(self.request_details.model_fields) - frozenset(
            self.shared_details.model_fields
        )

    def shared(self, details: BaseModel) -> ContractModel:
        """What of a submission's details may travel in events."""
        if isinstance(details, self.shared_details):
            return details
        return self.shared_details.model_validate(
            details.model_dump(exclude=set(self.private_fields))
        )


SERVICE_COMPLETED = ReportOutcome("service.completed", "service_completed", counts_hours=True)
"""The generic completion of every kind added from now on (ADR 0045)."""

_ENTRIES = (
    KindSpec(
        kind=NeedKind.MEAL_DELIVERY.value,
        labels={"zh-CN": "送餐", "en": "Meal delivery"},
        description="A hot meal carried to the resident.",
        spec_name="MealNeedSpec",
        request_details=MealDetails,
        shared_details=MealDetails,
        sla=SlaDefaults(
            SlaBasis.WINDOW,
            "meal delivered in window",
            welfare_check_groups=frozenset({PriorityGroup.ELDERLY_LIVING_ALONE}),
        ),
        report=ReportOutcome("meal.delivered", "meal_delivered", counts_hours=False),
        points=10,
        served_by=ServedBy(("canteen",), NeedKind.MEAL_DELIVERY.value),
    ),
    KindSpec(
        kind=NeedKind.ELDER_CARE_VISIT.value,
        labels={"zh-CN": "上门探访", "en": "Home visit"},
        description="An elder-care home visit.",
        spec_name="VisitNeedSpec",
        request_details=VisitDetails,
        shared_details=VisitDetails,
        sla=SlaDefaults(SlaBasis.WINDOW, "visit made"),
        report=ReportOutcome("visit.completed", "visit_completed", counts_hours=True),
        points=20,
        served_by=ServedBy(
            ("elder_care_centre", "hospital", "social_work_org"), NeedKind.ELDER_CARE_VISIT.value
        ),
    ),
    KindSpec(
        kind=NeedKind.REPAIR.value,
        labels={"zh-CN": "维修", "en": "Repair"},
        description="A household repair call.",
        spec_name="RepairNeedSpec",
        request_details=RepairRequestDetails,
        shared_details=RepairDetails,
        sla=SlaDefaults(
            SlaBasis.RESPONSE,
            "repair on site",
            response=ResponseSla(
                emergency_accept_s=10 * 60.0,
                emergency_onsite_s=30 * 60.0,
                priority_s=24 * 3600.0,
                routine_s=72 * 3600.0,
                policy_keys={
                    "emergency_accept_s": "emergency_accept_s",
                    "emergency_onsite_s": "emergency_onsite_s",
                    "priority_s": "priority_repair_s",
                    "routine_s": "routine_repair_s",
                },
            ),
            priority_groups_shorten=True,
        ),
        report=ReportOutcome("repair.completed", "repair_completed", counts_hours=True),
        points=30,
        served_by=ServedBy(("repair_firm", "property_manager"), NeedKind.REPAIR.value),
    ),
    KindSpec(
        kind=NeedKind.GOODS_DELIVERY.value,
        labels={"zh-CN": "送药代购", "en": "Medicine and shopping delivery"},
        description="Medicine from a pharmacy or shopping brought to the door.",
        spec_name="GoodsDeliveryNeedSpec",
        request_details=GoodsDeliveryRequestDetails,
        shared_details=GoodsDeliveryDetails,
        sla=SlaDefaults(
            SlaBasis.WINDOW,
            "goods delivered in window",
            welfare_check_groups=frozenset({PriorityGroup.ELDERLY_LIVING_ALONE}),
        ),
        report=SERVICE_COMPLETED,
        points=10,
        served_by=ServedBy(("pharmacy", "other"), NeedKind.GOODS_DELIVERY.value),
    ),
    KindSpec(
        kind=NeedKind.PERSONAL_CARE.value,
        labels={"zh-CN": "上门理发", "en": "Haircut and personal care at home"},
        description="Personal care at home, such as a haircut.",
        spec_name="PersonalCareNeedSpec",
        request_details=PersonalCareDetails,
        shared_details=PersonalCareDetails,
        sla=SlaDefaults(SlaBasis.WINDOW, "personal care done in window"),
        report=SERVICE_COMPLETED,
        points=15,
        served_by=ServedBy(("barber",), NeedKind.PERSONAL_CARE.value),
    ),
)

CATALOGUE: Mapping[str, KindSpec] = MappingProxyType({entry.kind: entry for entry in _ENTRIES})
"""Every kind of need, by its wire name, in display order."""


def kind_spec(kind: str) -> KindSpec:
    """The catalogue entry of `kind` (a `NeedKind` or its value); KeyError if unknown."""
    return CATALOGUE[str(kind)]


def describe(entry: KindSpec) -> dict[str, Any]:
    """A JSON-ready view of one entry: what `GET /v1/catalogue` and the Open311 facade
    serve. Holds no personal data."""
    sla: dict[str, Any] = {
        "basis": entry.sla.basis.value,
        "label": entry.sla.label,
        "priority_groups_shorten": entry.sla.priority_groups_shorten,
        "welfare_check_groups": sorted(g.value for g in entry.sla.welfare_check_groups),
    }
    if entry.sla.response is not None:
        response = entry.sla.response
        sla["response_seconds"] = {
            "emergency_accept": response.emergency_accept_s,
            "emergency_on_site": response.emergency_onsite_s,
            "priority": response.priority_s,
            "routine": response.routine_s,
        }
    return {
        "kind": entry.kind,
        "labels": dict(entry.labels),
        "description": entry.description,
        "details_schema": entry.request_details.model_json_schema(),
        "shared_details_schema": entry.shared_details.model_json_schema(),
        "private_fields": sorted(entry.private_fields),
        "sla": sla,
        "completion_event": entry.report.event_type,
        "report_outcome": entry.report.outcome,
        "points": entry.points,
        "served_by": {
            "partner_kinds": list(entry.served_by.partner_kinds),
            "volunteer_skill": entry.served_by.volunteer_skill,
        },
    }


def label(kind: str, locale: str = "zh-CN") -> str:
    """A kind's display name in `locale` (English when the locale is unknown); the
    kind's own name for a kind the catalogue does not know (an old event)."""
    entry = CATALOGUE.get(str(kind))
    if entry is None:
        return str(kind)
    return entry.labels.get(locale) or entry.labels["en"]
