"""Request bodies of partners' HTTP API (strict: unknown fields are refused).

Modelled on Open Referral HSDS where it has a word for it: an organisation offers
services, each with a cost option, in service areas (communities), with contacts.
"""

from __future__ import annotations

from datetime import date, time
from enum import StrEnum
from typing import Annotated, ClassVar, Literal, Self
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Discriminator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from linli.contracts.events import HandedTo, Leg, PartyKind, PartyRef
from linli.contracts.types import (
    CommunitySlug,
    ContractModel,
    CostOption,
    FailureReason,
    Flag,
    LocalDate,
    LocalTime,
    Moment,
    NeedKind,
    PhoneNumber,
    TimeWindow,
)
from linli.servicekit.csvimport import ExternalRef

ShortText = Annotated[str, Field(min_length=1, max_length=200)]


class PartnerKind(StrEnum):
    """What kind of organisation a community partner is."""

    CANTEEN = "canteen"
    HOSPITAL = "hospital"
    ELDER_CARE_CENTRE = "elder_care_centre"
    REPAIR_FIRM = "repair_firm"
    BARBER = "barber"
    PHARMACY = "pharmacy"
    SOCIAL_WORK_ORG = "social_work_org"
    PROPERTY_MANAGER = "property_manager"
    OTHER = "other"


class ServiceSpec(ContractModel):
    """One service a partner offers (HSDS service)."""

    name: ShortText = Field(description="Service name, e.g. 'lunch round'.")
    need_kind: NeedKind = Field(description="Kind of need the service serves.")
    cost_option: CostOption = Field(description="free, low_cost or paid.")
    description: str | None = Field(default=None, max_length=1000)


class ContactSpec(ContractModel):
    """A contact person at a partner; personal data kept in partners only."""

    name: ShortText = Field(description="Contact's name.")
    title: str | None = Field(default=None, max_length=100, description="Role, e.g. duty manager.")
    phone: PhoneNumber | None = Field(default=None)
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")


Communities = Annotated[
    list[CommunitySlug],
    Field(
        min_length=1,
        max_length=50,
        description="Communities served; defaults to the community in the path.",
    ),
]


OpeningTime = Annotated[
    str,
    Field(
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="Local time of day, HH:MM (24-hour), in the community's time zone.",
    ),
]


AreaName = Annotated[str, Field(min_length=1, max_length=100)]
PostalCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9 -]{3,12}$", description="Postal code.")]
CountryCode = Annotated[
    str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 country code.")
]
Latitude = Annotated[float, Field(ge=-90, le=90, description="WGS 84 latitude.")]
Longitude = Annotated[float, Field(ge=-180, le=180, description="WGS 84 longitude.")]
PublicEmail = Annotated[
    str,
    Field(
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        description="Public e-mail address of the organisation.",
    ),
]
Website = Annotated[
    str,
    Field(
        max_length=500,
        pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/?#-]*)?$",
        description="Public website (http or https).",
    ),
]


class PostalAddress(ContractModel):
    """The organisation's street address, structured as HSDS `address` wants it."""

    address_1: ShortText = Field(description="Street and number, e.g. '致远路 18 号'.")
    address_2: str | None = Field(
        default=None, max_length=200, description="Building, floor or entrance."
    )
    city: AreaName = Field(description="City.")
    region: str | None = Field(default=None, max_length=100, description="District (区).")
    state_province: AreaName = Field(description="Province or municipality.")
    postal_code: PostalCode
    country: CountryCode = "CN"


class OpeningHours(ContractModel):
    """Weekly opening hours: on these weekdays from `opens_at` to `closes_at`."""

    weekdays: list[Annotated[int, Field(ge=1, le=7)]] = Field(
        min_length=1, max_length=7, description="ISO days of week: 1 = Monday … 7 = Sunday."
    )
    opens_at: OpeningTime = Field(description="Opening time, HH:MM.")
    closes_at: OpeningTime = Field(description="Closing time, HH:MM, after opens_at.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.closes_at <= self.opens_at:
            raise ValueError("closes_at must be after opens_at")
        if len(set(self.weekdays)) != len(self.weekdays):
            raise ValueError("weekdays must not repeat")
        return self


class DirectoryProfile(ContractModel):
    """What the organisation lists about itself in the public directory (ADR 0051).

    These are the organisation's own channels (front desk, switchboard, website), never
    a person's. Nothing of it is shown, in the HSDS export or the residents' guide, until
    `public` is true: the partner's consent to publish.
    """

    public: bool = Field(
        default=False,
        description="The partner agrees to publish these contacts (HSDS export, public guide).",
    )
    address: PostalAddress | None = Field(default=None, description="Street address.")
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    phone: PhoneNumber | None = Field(default=None, description="Public phone (front desk).")
    email: PublicEmail | None = None
    website: Website | None = None
    opening_hours: list[OpeningHours] = Field(
        default_factory=list, max_length=14, description="Weekly opening hours."
    )

    @model_validator(mode="after")
    def _geo_pair(self) -> Self:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("latitude and longitude go together")
        return self


class PartnerSpec(ContractModel):
    """A partner organisation as an operator registers it."""

    name: ShortText = Field(description="Organisation name.")
    kind: PartnerKind
    description: str | None = Field(default=None, max_length=2000)
    services: list[ServiceSpec] = Field(default_factory=list, max_length=50)
    communities: Communities | None = None
    contacts: list[ContactSpec] = Field(default_factory=list, max_length=20)
    directory: DirectoryProfile | None = Field(
        default=None, description="Public directory entry (ADR 0051); absent: none."
    )


class Availability(ContractModel):
    """A weekly period a volunteer can usually help; end before start runs past midnight."""

    weekday: int = Field(ge=1, le=7, description="ISO day of week: 1 = Monday … 7 = Sunday.")
    start: LocalTime = Field(description="Local start time, e.g. 14:00.")
    end: LocalTime = Field(description="Local end time, e.g. 17:30.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.start == self.end:
            raise ValueError("end must differ from start")
        return self


Skills = Annotated[list[NeedKind], Field(max_length=10, description="Need kinds they can do.")]
Weekly = Annotated[list[Availability], Field(max_length=50)]


class VolunteerSpec(ContractModel):
    """A volunteer as an operator registers them."""

    display_name: ShortText = Field(description="Name shown to operators.")
    skills: Skills = Field(default_factory=list)
    communities: Communities | None = None
    availability: Weekly = Field(default_factory=list)


class VolunteerPatch(ContractModel):
    """Changes to a volunteer; absent fields stay as they are."""

    display_name: ShortText | None = None
    skills: Skills | None = None
    availability: Weekly | None = None
    active: Flag | None = None


class SlotSpec(ContractModel):
    """Capacity to publish: a window in which a provider can serve `capacity` needs."""

    kind: NeedKind
    provider: PartyRef | None = Field(
        default=None,
        description="Partner or volunteer; a partner or volunteer credential may omit it (itself).",
    )
    window: TimeWindow
    capacity: int = Field(ge=1, le=1000)
    compounds: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=200, description="Empty = the whole community."
    )
    leg: Leg | None = Field(
        default=None,
        description="Meal capacity only (ADR 0044): `prepare`, the provider cooks but does not "
        "deliver (a canteen: a volunteer carries); `carry`, the provider carries meals a "
        "canteen prepared. Omitted: the provider serves the whole need.",
    )

    @model_validator(mode="after")
    def _leg_is_for_meals(self) -> Self:
        if self.leg is not None and self.kind is not NeedKind.MEAL_DELIVERY:
            raise ValueError("leg is only for meal_delivery capacity")
        return self


# --- CSV import rows (ADR 0035): one row of each import, flat, keyed by external_ref ----


class PartnerImport(ContractModel):
    """One row of a partners CSV import: an organisation with one service per need kind
    and at most one contact person."""

    external_ref: ExternalRef
    name: ShortText = Field(description="Organisation name.")
    kind: PartnerKind = Field(description="canteen, hospital, repair_firm, ...")
    description: str | None = Field(default=None, max_length=2000)
    need_kinds: list[NeedKind] = Field(
        default_factory=list, max_length=10, description="Need kinds served, one service each."
    )
    cost_option: CostOption = Field(
        default=CostOption.FREE, description="free, low_cost or paid, for every service."
    )
    contact_name: str | None = Field(
        default=None, max_length=200, description="Contact person's name (personal data)."
    )
    contact_title: str | None = Field(default=None, max_length=100, description="Their role.")
    contact_phone: PhoneNumber | None = Field(default=None)
    contact_email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")

    # The public directory entry (ADR 0051), flat; all empty: the entry stays as it is.
    public: bool | None = Field(
        default=None, description="The partner agrees to publish its directory entry."
    )
    address_1: str | None = Field(default=None, min_length=1, max_length=200)
    address_2: str | None = Field(default=None, max_length=200)
    city: AreaName | None = None
    region: str | None = Field(default=None, max_length=100)
    state_province: AreaName | None = None
    postal_code: PostalCode | None = None
    country: CountryCode | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    public_phone: PhoneNumber | None = Field(default=None, description="Front-desk phone.")
    public_email: PublicEmail | None = None
    website: Website | None = None
    opening_hours: list[
        Annotated[str, Field(pattern=r"^[1-7](-[1-7]|(,[1-7])*) \d\d:\d\d-\d\d:\d\d$")]
    ] = Field(
        default_factory=list,
        max_length=14,
        description="Weekly hours, e.g. '1-5 10:30-13:30;6,7 09:00-12:00' (ISO weekdays).",
    )

    _DIRECTORY: ClassVar[tuple[str, ...]] = (
        "public",
        "address_1",
        "address_2",
        "city",
        "region",
        "state_province",
        "postal_code",
        "country",
        "latitude",
        "longitude",
        "public_phone",
        "public_email",
        "website",
        "opening_hours",
    )

    @model_validator(mode="after")
    def _contact_named(self) -> Self:
        if not self.contact_name and (
            self.contact_title or self.contact_phone or self.contact_email
        ):
            raise ValueError("contact_name is required when a contact is given")
        self.directory()  # a row whose entry would not validate is refused
        return self

    def directory(self) -> DirectoryProfile | None:
        """The row's directory entry, or None when it has no directory column."""
        if not any(getattr(self, name) not in (None, []) for name in self._DIRECTORY):
            return None
        address = None
        parts = (self.address_1, self.city, self.state_province, self.postal_code)
        if any(parts):
            if not all(parts):
                raise ValueError("an address needs address_1, city, state_province and postal_code")
            address = PostalAddress(
                address_1=self.address_1 or "",
                address_2=self.address_2,
                city=self.city or "",
                region=self.region,
                state_province=self.state_province or "",
                postal_code=self.postal_code or "",
                country=self.country or "CN",
            )
        return DirectoryProfile(
            public=bool(self.public),
            address=address,
            latitude=self.latitude,
            longitude=self.longitude,
            phone=self.public_phone,
            email=self.public_email,
            website=self.website,
            opening_hours=[_hours(cell) for cell in self.opening_hours],
        )

    def spec(self) -> PartnerSpec:
        """The partner as the API would register it."""
        services = [
            ServiceSpec(name=k.value, need_kind=k, cost_option=self.cost_option)
            for k in sorted(set(self.need_kinds))
        ]
        contacts = []
        if self.contact_name:
            contacts.append(
                ContactSpec(
                    name=self.contact_name,
                    title=self.contact_title,
                    phone=self.contact_phone,
                    email=self.contact_email,
                )
            )
        return PartnerSpec(
            name=self.name,
            kind=self.kind,
            description=self.description,
            services=services,
            contacts=contacts,
            directory=self.directory(),
        )


def _hours(cell: str) -> OpeningHours:
    """'1-5 10:30-13:30' or '6,7 09:00-12:00' as opening hours."""
    days, times = cell.split(" ")
    if "-" in days:
        first, last = (int(d) for d in days.split("-"))
        weekdays = list(range(first, last + 1))
    else:
        weekdays = [int(d) for d in days.split(",")]
    opens, closes = times.split("-")
    try:
        return OpeningHours(weekdays=weekdays, opens_at=opens, closes_at=closes)
    except ValidationError as exc:
        raise ValueError(
            "opening_hours: days run from the earlier one (1-5), do not repeat, and a period "
            "closes after it opens at a valid HH:MM"
        ) from exc


class VolunteerImport(ContractModel):
    """One row of a volunteers CSV import; weekly availability comes with the capacity import."""

    external_ref: ExternalRef
    display_name: ShortText = Field(description="Name shown to operators.")
    skills: Skills = Field(default_factory=list)
    active: Flag = Field(default=True, description="false deactivates the volunteer.")


class CapacityImport(ContractModel):
    """One row of a weekly-capacity CSV import (ADR 0035).

    A volunteer row adds a weekly availability period (`weekday`, `start`, `end`); a
    partner row publishes a slot (`kind`, `window_earliest`, `window_latest`,
    `capacity`, `compounds`), since partners have no weekly template yet (issue #12).
    """

    provider_kind: PartyKind = Field(description="volunteer or partner.")
    provider_ref: ExternalRef
    weekday: int | None = Field(default=None, ge=1, le=7, description="Volunteers: ISO weekday.")
    start: LocalTime | None = Field(
        default=None, description="Volunteers: local start, e.g. 14:00."
    )
    end: LocalTime | None = Field(default=None, description="Volunteers: local end, e.g. 17:30.")
    kind: NeedKind | None = Field(default=None, description="Partners: need kind of the slot.")
    window_earliest: Moment | None = Field(
        default=None, description="Partners: start of the slot (RFC 3339 with offset)."
    )
    window_latest: Moment | None = Field(
        default=None, description="Partners: end of the slot (RFC 3339 with offset)."
    )
    capacity: int | None = Field(default=None, ge=1, le=1000, description="Partners: needs served.")
    compounds: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=200, description="Partners: compounds; empty = all."
    )

    def key(self) -> str:
        """What makes two rows the same capacity (the import's idempotency key)."""
        if self.provider_kind is PartyKind.VOLUNTEER:
            return f"volunteer|{self.provider_ref}|{self.weekday}|{self.start}|{self.end}"
        earliest = self.window_earliest.isoformat() if self.window_earliest else None
        latest = self.window_latest.isoformat() if self.window_latest else None
        return f"partner|{self.provider_ref}|{self.kind}|{earliest}|{latest}"


class AcceptRequest(ContractModel):
    eta: Moment | None = Field(default=None, description="Expected arrival (partners).")


class DeclineRequest(ContractModel):
    reason: str | None = Field(default=None, max_length=500)


class MealPreparedReport(ContractModel):
    """The canteen's leg of a two-leg meal is done (ADR 0044): the meal is ready for, or
    handed to, the carrier."""

    outcome: Literal["meal_prepared"]
    prepared_at: Moment
    handed_to_carrier: Flag = False


class MealReport(ContractModel):
    """Proof of a delivered meal."""

    outcome: Literal["meal_delivered"]
    delivered_at: Moment
    handed_to: HandedTo
    neighbour_note: str | None = Field(
        default=None,
        max_length=300,
        description="Who took it (required when handed to a neighbour); stays in partners.",
    )
    hot_on_arrival: Flag | None = None

    @model_validator(mode="after")
    def _neighbour_named(self) -> Self:
        if self.handed_to is HandedTo.NEIGHBOUR and not self.neighbour_note:
            raise ValueError("neighbour_note is required when the meal went to a neighbour")
        return self


class VisitReport(ContractModel):
    """Proof of an elder-care visit."""

    outcome: Literal["visit_completed"]
    started_at: Moment
    ended_at: Moment
    observations: str | None = Field(default=None, max_length=2000)
    wellbeing_concern: Flag = False

    @model_validator(mode="after")
    def _times(self) -> Self:
        if self.ended_at < self.started_at:
            raise ValueError("ended_at must not be before started_at")
        return self


class RepairReport(ContractModel):
    """Proof of a repair call."""

    outcome: Literal["repair_completed"]
    arrived_at: Moment
    completed_at: Moment
    fixed: Flag
    follow_up_needed: Flag = False
    summary: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _times(self) -> Self:
        if self.completed_at < self.arrived_at:
            raise ValueError("completed_at must not be before arrived_at")
        return self


class ServiceReport(ContractModel):
    """Proof of a need of a kind whose completion is `service.completed` (ADR 0045):
    goods brought to the door, personal care at home, and kinds added later."""

    outcome: Literal["service_completed"]
    started_at: Moment = Field(description="When the helper arrived or began.")
    completed_at: Moment = Field(description="When the service was completed.")
    follow_up_needed: Flag = False
    note: str | None = Field(
        default=None, max_length=2000, description="Free text; stays in partners (ADR 0031)."
    )

    @model_validator(mode="after")
    def _times(self) -> Self:
        if self.completed_at < self.started_at:
            raise ValueError("completed_at must not be before started_at")
        return self


class FailedReport(ContractModel):
    """An attempt that did not succeed, with the reason."""

    outcome: Literal["failed"]
    reason: FailureReason
    detail: str | None = Field(default=None, max_length=500, description="No personal data.")
    failed_at: Moment


CompletionReport = Annotated[
    MealReport | MealPreparedReport | VisitReport | RepairReport | ServiceReport | FailedReport,
    Discriminator("outcome"),
]


class RedemptionSpec(ContractModel):
    """Points a volunteer spends (for example against a training fee)."""

    points: int = Field(gt=0, le=1_000_000)
    note: str | None = Field(default=None, max_length=300)


# --- rewards (ADR 0041) -----------------------------------------------------------------


class RewardSpec(ContractModel):
    """A reward a partner honours for service points."""

    partner_id: UUID | None = Field(
        default=None,
        description="The partner honouring it; required from an operator, implied (and "
        "only its own) for a partner's credential.",
    )
    title: ShortText = Field(description="E.g. 100 yuan off a training course.")
    description: str | None = Field(default=None, max_length=2000)
    points: int = Field(gt=0, le=1_000_000, description="Price in points.")


class RewardPatch(ContractModel):
    """Any of a reward's title, description and price (requests made keep their price)."""

    title: ShortText | None = None
    description: str | None = Field(default=None, max_length=2000)
    points: int | None = Field(default=None, gt=0, le=1_000_000)


class RewardRedemptionSpec(ContractModel):
    """A volunteer's request to redeem points for a reward."""

    reward_id: UUID = Field(description="The reward asked for (active, in this community).")


class RejectSpec(ContractModel):
    """Why an operator rejects a request; stays in partners (never in an event)."""

    reason: str = Field(min_length=1, max_length=500)


class CertificateCode(ContractModel):
    """A certificate's verification code as printed (case, spaces and dashes ignored)."""

    code: str = Field(min_length=1, max_length=100)


__all__ = [
    "AcceptRequest",
    "Availability",
    "CapacityImport",
    "CertificateCode",
    "CompletionReport",
    "ContactSpec",
    "CostOption",
    "DeclineRequest",
    "FailedReport",
    "MealPreparedReport",
    "MealReport",
    "PartnerImport",
    "PartnerKind",
    "PartnerSpec",
    "RedemptionSpec",
    "RejectSpec",
    "RepairReport",
    "RewardPatch",
    "RewardRedemptionSpec",
    "RewardSpec",
    "ServiceReport",
    "ServiceSpec",
    "SlotSpec",
    "VisitReport",
    "VolunteerImport",
    "VolunteerPatch",
    "VolunteerSpec",
]


# --- recurring capacity (ADR 0042) -----------------------------------------------------


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("unknown time zone") from exc
    return value


Weekdays = Annotated[
    list[Annotated[int, Field(ge=1, le=7)]],
    Field(min_length=1, max_length=7, description="ISO days of week: 1 = Monday … 7 = Sunday."),
]
Compounds = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=100)]],
    Field(max_length=200, description="Compounds served; empty = the whole community."),
]
Timezone = Annotated[
    str, Field(min_length=1, max_length=64, description="IANA time zone of the local window.")
]


class SlotTemplateSpec(ContractModel):
    """A partner's weekly capacity: on each of `weekdays`, from `start` to `end` local
    time, `capacity` needs of `kind` in `compounds`; slots are generated ahead from it."""

    kind: NeedKind
    weekdays: Weekdays
    start: LocalTime = Field(description="Local start of each day's window, e.g. 11:00.")
    end: LocalTime = Field(description="Local end, after `start` (same day), e.g. 12:30.")
    timezone: Timezone = "Asia/Shanghai"
    capacity: int = Field(ge=1, le=1000, description="Needs each generated slot serves.")
    compounds: Compounds = Field(default_factory=list)
    valid_from: LocalDate | None = Field(default=None, description="First local date (inclusive).")
    valid_until: LocalDate | None = Field(default=None, description="Last local date (inclusive).")

    @field_validator("weekdays")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        return sorted(set(value))

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _known_zone(value)

    @field_validator("end")
    @classmethod
    def _after_start(cls, value: time, info: ValidationInfo) -> time:
        start = info.data.get("start")
        if start is not None and value <= start:
            raise ValueError("end must be after start")
        return value

    @field_validator("valid_until")
    @classmethod
    def _after_from(cls, value: date | None, info: ValidationInfo) -> date | None:
        start = info.data.get("valid_from")
        if value is not None and start is not None and value < start:
            raise ValueError("valid_until must not be before valid_from")
        return value


class SlotTemplatePatch(ContractModel):
    """Changes to a template; absent fields stay. They apply to slots not yet generated."""

    weekdays: Weekdays | None = None
    start: LocalTime | None = None
    end: LocalTime | None = None
    capacity: int | None = Field(default=None, ge=1, le=1000)
    compounds: Compounds | None = None
    valid_from: LocalDate | None = None
    valid_until: LocalDate | None = None

    @field_validator("weekdays")
    @classmethod
    def _distinct(cls, value: list[int] | None) -> list[int] | None:
        return sorted(set(value)) if value is not None else None


class SlotPatch(ContractModel):
    """Changes to a published slot; absent fields stay (emits slot.revised)."""

    window: TimeWindow | None = None
    capacity: int | None = Field(
        default=None, ge=1, le=1000, description="Not below what is already reserved (409)."
    )
    compounds: Compounds | None = None


class PartnerPatch(ContractModel):
    """Changes to a partner organisation; absent fields stay as they are, a list given
    replaces the whole list. The communities a partner serves are not edited here: each
    community's operator registers a partner in their own community (ADR 0042)."""

    name: ShortText | None = Field(default=None, description="Organisation name.")
    kind: PartnerKind | None = Field(default=None, description="Kind of organisation.")
    description: str | None = Field(
        default=None, max_length=2000, description="What the partner does; null clears it."
    )
    services: list[ServiceSpec] | None = Field(
        default=None, max_length=50, description="Every service, replacing the current ones."
    )
    contacts: list[ContactSpec] | None = Field(
        default=None, max_length=20, description="Every staff contact, replacing the current ones."
    )
    directory: DirectoryProfile | None = Field(
        default=None,
        description="The public directory entry, replacing the current one; null removes it.",
    )
