"""Demand-side contracts: what a resident needs and who the resident is.

Intake accepts these both as its HTTP request bodies and as the data of the
`need.submit` v1 ingress command from other systems.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, cast
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, RootModel, TypeAdapter, create_model

from linli.contracts.catalogue import (
    CATALOGUE,
    GoodsDeliveryDetails,
    GoodsDeliveryRequestDetails,
    KindSpec,
    MealDetails,
    PersonalCareDetails,
    RepairDetails,
    RepairRequestDetails,
    VisitDetails,
)
from linli.contracts.types import (
    ContractModel,
    Flag,
    PhoneNumber,
    PriorityGroup,
    Reason,
    TimeWindow,
    Urgency,
)

__all__ = [
    "DETAILS_BY_KIND",
    "NEED_SPECS",
    "SHARED_DETAILS_BY_KIND",
    "GoodsDeliveryDetails",
    "GoodsDeliveryRequestDetails",
    "MealDetails",
    "MealNeedSpec",
    "NeedDetailsModel",
    "NeedRequestDetails",
    "NeedSource",
    "NeedSpec",
    "NeedSpecAdapter",
    "NeedSpecBase",
    "NeedSubmit",
    "NeedSubmitAccepted",
    "NeedSubmitData",
    "NeedSubmitRejected",
    "NeedSubmitReply",
    "PersonalCareDetails",
    "RepairDetails",
    "RepairNeedSpec",
    "RepairRequestDetails",
    "ResidentSpec",
    "VisitDetails",
    "VisitNeedSpec",
    "need_spec_adapter",
    "need_spec_model",
    "shared_details",
]

NeedDetailsModel = ContractModel
"""Kind-specific details as events carry them (`KindSpec.shared_details`)."""

NeedRequestDetails = ContractModel
"""Kind-specific details as submitted (`KindSpec.request_details`)."""


def shared_details(details: BaseModel) -> ContractModel:
    """What of a submission's details may travel in events (ADR 0031)."""
    for entry in CATALOGUE.values():
        if type(details) is entry.request_details or type(details) is entry.shared_details:
            return entry.shared(details)
    raise TypeError(f"{type(details).__name__} is not the details model of a catalogued kind")


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

    if TYPE_CHECKING:
        # Declared by each generated subclass (`need_spec_model`): a Literal of its
        # kind and its catalogued details model.
        kind: str
        details: ContractModel


def need_spec_model(entry: KindSpec) -> type[NeedSpecBase]:
    """The need spec of one catalogued kind: the shared fields, `kind` and its details."""
    model = create_model(
        entry.spec_name,
        __base__=NeedSpecBase,
        __doc__=entry.description,
        __module__=__name__,
        kind=(Literal[entry.kind], Field(description="Need kind discriminator.")),  # type: ignore[arg-type]
        details=(
            entry.request_details,
            Field(description=f"{entry.labels['en']}: kind-specific details."),
        ),
    )
    return model


def need_spec_adapter(specs: Iterable[type[NeedSpecBase]]) -> TypeAdapter[NeedSpecBase]:
    """A validator for a need of any of `specs`, discriminated on `kind`."""
    union = Union[tuple(specs)]  # type: ignore[valid-type]  # noqa: UP007
    annotated: Any = Annotated[union, Field(discriminator="kind")]
    return cast(TypeAdapter[NeedSpecBase], TypeAdapter(annotated))


NEED_SPECS: Mapping[str, type[NeedSpecBase]] = MappingProxyType(
    {kind: need_spec_model(entry) for kind, entry in CATALOGUE.items()}
)
"""The need spec class of every catalogued kind."""

MealNeedSpec = NEED_SPECS["meal_delivery"]
VisitNeedSpec = NEED_SPECS["elder_care_visit"]
RepairNeedSpec = NEED_SPECS["repair"]

if TYPE_CHECKING:
    NeedSpec = NeedSpecBase
else:
    NeedSpec = Annotated[Union[tuple(NEED_SPECS.values())], Field(discriminator="kind")]  # noqa: UP007
"""A need of any catalogued kind, discriminated on `kind`.

Adding a kind means adding its `NeedKind` member and its catalogue entry
(`linli.contracts.catalogue`, ADR 0045). Existing kinds keep their wire shape, so this
is not a breaking change for producers; consumers look a kind's facts up in the
catalogue instead of switching on it.
"""

NeedSpecAdapter: TypeAdapter[NeedSpecBase] = need_spec_adapter(NEED_SPECS.values())

NeedSubmit = NeedSpec
"""Data of the ingress command `need.submit` v1: the command's data is a NeedSpec."""


# The registry needs a class per entry (for spec_for and the JSON Schema), and a
# union is not a class. Validate with NeedSpecAdapter (or EventSpec.adapter) to get
# the concrete spec rather than this wrapper.
class NeedSubmitData(RootModel[NeedSpec]):
    """Another system asks intake to accept a need; the shape depends on `kind`."""

    model_config = ConfigDict(hide_input_in_errors=True, frozen=True)


class NeedSubmitAccepted(BaseModel):
    """Intake's answer on the reply subject: the need is stored (committed)."""

    model_config = ConfigDict(frozen=True)

    status: Literal["accepted"] = Field(description="The command was accepted.")
    need_id: UUID = Field(description="The need intake stored (or already had).")
    duplicate: bool = Field(
        description="True when this (source, id) was accepted before; nothing new was stored."
    )


class NeedSubmitRejected(BaseModel):
    """Intake's answer on the reply subject: the command was refused and kept as a
    dead letter, with field-level reasons (never the input values)."""

    model_config = ConfigDict(frozen=True)

    status: Literal["rejected"] = Field(description="The command was rejected.")
    reasons: list[Reason] = Field(
        description="Why, field by field (fields under data. are the need's)."
    )
    dead_letter_id: UUID | None = Field(
        description="The dead letter that keeps the refused command for operators."
    )


class NeedSubmitReply(RootModel[NeedSubmitAccepted | NeedSubmitRejected]):
    """The reply to a `need.submit` request (plain JSON, not a CloudEvent), sent after
    commit to the request's reply subject; selected by `status`."""

    root: Annotated[NeedSubmitAccepted | NeedSubmitRejected, Field(discriminator="status")]


DETAILS_BY_KIND: Mapping[str, type[ContractModel]] = MappingProxyType(
    {kind: entry.request_details for kind, entry in CATALOGUE.items()}
)
"""The details model of each kind as submitted (a need, a plan)."""

SHARED_DETAILS_BY_KIND: Mapping[str, type[ContractModel]] = MappingProxyType(
    {kind: entry.shared_details for kind, entry in CATALOGUE.items()}
)
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
    consent_to_share_contact: Flag = Field(
        default=False,
        description="Whether contact details may be shared with a partner that has "
        "accepted an assignment.",
    )
    locale: Literal["zh-CN", "en"] = Field(
        default="zh-CN", description="Preferred language for messages."
    )
