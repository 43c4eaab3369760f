"""The registry of every event and command type, keyed by CloudEvents type.

Versions live side by side: a breaking change to `need.submitted` adds a
`("need", "submitted", 2, ...)` entry next to v1 until every consumer has moved.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from linli.contracts import activities as act
from linli.contracts import events as ev
from linli.contracts.needs import (
    NEED_SPECS,
    NeedSpec,
    NeedSubmitData,
)

__all__ = [
    "REGISTRY",
    "SCHEMA_BASE_URL",
    "TYPE_PREFIX",
    "EventSpec",
    "Registry",
    "UnknownEventType",
    "UnregisteredModel",
    "lookup",
    "spec_for",
]

TYPE_PREFIX = "linli"
SCHEMA_BASE_URL = "https://linli.dev/schemas"

_TYPE_RE = re.compile(r"^linli\.([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.v([1-9][0-9]*)$")


@dataclass(frozen=True)
class EventSpec:
    """One registered event or command type and the model of its data."""

    aggregate: str
    name: str
    version: int
    model: type[BaseModel]
    description: str
    kind: Literal["event", "command"]
    producer: str = ""
    """Service that emits it; for commands, the service that consumes them."""

    @property
    def type(self) -> str:
        """CloudEvents `type`, e.g. `linli.need.submitted.v1`."""
        return f"{TYPE_PREFIX}.{self.aggregate}.{self.name}.v{self.version}"

    @property
    def short(self) -> str:
        """Aggregate and name without version, e.g. `need.submitted`."""
        return f"{self.aggregate}.{self.name}"

    @property
    def dataschema(self) -> str:
        """URL of the checked-in JSON Schema of the whole envelope."""
        return f"{SCHEMA_BASE_URL}/{self.short}.v{self.version}.json"

    @property
    def adapter(self) -> TypeAdapter[Any]:
        """Validator for the data that yields the natural type.

        For `need.submit` this is the NeedSpec union (a MealNeedSpec, ...), not the
        `NeedSubmitData` wrapper that `model` names.
        """
        return _adapter_for(self)


@cache
def _adapter_for(spec: EventSpec) -> TypeAdapter[Any]:
    if spec.model is NeedSubmitData:
        return TypeAdapter(NeedSpec)
    return TypeAdapter(spec.model)


class UnknownEventType(KeyError):
    """A CloudEvents type (or its version) that this registry does not know."""

    def __init__(self, message: str, ce_type: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.ce_type = ce_type

    def __str__(self) -> str:
        # KeyError would otherwise render the message with quotes around it.
        return self.message


class UnregisteredModel(KeyError):
    """A model class that is not the data of any registered type."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _doc(model: type[BaseModel]) -> str:
    doc = inspect.getdoc(model) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _spec(
    aggregate: str,
    name: str,
    model: type[BaseModel],
    producer: str,
    kind: Literal["event", "command"] = "event",
    version: int = 1,
) -> EventSpec:
    return EventSpec(
        aggregate=aggregate,
        name=name,
        version=version,
        model=model,
        description=_doc(model),
        kind=kind,
        producer=producer,
    )


class Registry:
    """Read-only collection of EventSpecs.

    Iterating yields specs; indexing, `in` and `get` take a CloudEvents type string.
    """

    def __init__(
        self,
        specs: tuple[EventSpec, ...],
        aliases: Mapping[type[BaseModel], str] | None = None,
    ) -> None:
        by_type: dict[str, EventSpec] = {}
        by_model: dict[type, EventSpec] = {}
        for spec in specs:
            if spec.type in by_type:
                raise ValueError(f"duplicate registration of {spec.type}")
            if spec.model in by_model:
                raise ValueError(f"{spec.model.__name__} registered twice")
            by_type[spec.type] = spec
            by_model[spec.model] = spec
        # Extra model classes whose instances are the data of a registered type.
        for model, ce_type in (aliases or {}).items():
            by_model[model] = by_type[ce_type]
        self._by_type = by_type
        self._by_model = by_model

    def __iter__(self) -> Iterator[EventSpec]:
        return iter(self._by_type.values())

    def __len__(self) -> int:
        return len(self._by_type)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, EventSpec):
            return self._by_type.get(item.type) == item
        return item in self._by_type

    def __getitem__(self, ce_type: str) -> EventSpec:
        return self.lookup(ce_type)

    def get(self, ce_type: str) -> EventSpec | None:
        """The spec for a type, or None."""
        return self._by_type.get(ce_type)

    def keys(self) -> list[str]:
        """All registered CloudEvents types."""
        return list(self._by_type)

    def values(self) -> list[EventSpec]:
        """All registered specs."""
        return list(self._by_type.values())

    def items(self) -> list[tuple[str, EventSpec]]:
        """(type, spec) pairs."""
        return list(self._by_type.items())

    def events(self) -> list[EventSpec]:
        """Specs of kind "event"."""
        return [s for s in self._by_type.values() if s.kind == "event"]

    def commands(self) -> list[EventSpec]:
        """Specs of kind "command"."""
        return [s for s in self._by_type.values() if s.kind == "command"]

    def lookup(self, ce_type: str) -> EventSpec:
        """The spec for a CloudEvents type; raises UnknownEventType."""
        spec = self._by_type.get(ce_type)
        if spec is not None:
            return spec
        shown = ce_type if len(ce_type) <= 128 else ce_type[:128] + "..."
        match = _TYPE_RE.fullmatch(ce_type)
        if match is None:
            raise UnknownEventType(
                f"unknown event type {shown!r}: expected linli.<aggregate>.<name>.v<N>",
                ce_type,
            )
        short = f"{match.group(1)}.{match.group(2)}"
        known = sorted(s.version for s in self._by_type.values() if s.short == short)
        if known:
            raise UnknownEventType(
                f"unknown version v{match.group(3)} of {short}; known versions: "
                + ", ".join(f"v{v}" for v in known),
                ce_type,
            )
        raise UnknownEventType(f"unknown event type {shown!r}", ce_type)

    def spec_for(self, model_cls: type[BaseModel]) -> EventSpec:
        """The spec whose data model is `model_cls` (or a registered base of it)."""
        for cls in model_cls.__mro__:
            spec = self._by_model.get(cls)
            if spec is not None:
                return spec
        raise UnregisteredModel(f"{model_cls.__name__} is not a registered event model")


REGISTRY = Registry(
    (
        # intake
        _spec("need", "submit", NeedSubmitData, "intake", kind="command"),
        _spec("need", "submitted", ev.NeedSubmitted, "intake"),
        _spec("need", "rejected", ev.NeedRejected, "intake"),
        _spec("need", "cancelled", ev.NeedCancelled, "intake"),
        # intake: group activities (ADR 0046)
        _spec("activity", "published", act.ActivityPublished, "intake"),
        _spec("activity", "revised", act.ActivityRevised, "intake"),
        _spec("activity", "cancelled", act.ActivityCancelled, "intake"),
        _spec("activity", "held", act.ActivityHeld, "intake"),
        _spec("signup", "requested", act.SignupRequested, "intake"),
        _spec("signup", "confirmed", act.SignupConfirmed, "intake"),
        _spec("signup", "waitlisted", act.SignupWaitlisted, "intake"),
        _spec("signup", "cancelled", act.SignupCancelled, "intake"),
        _spec("attendance", "recorded", act.AttendanceRecorded, "intake"),
        # partners
        _spec("slot", "published", ev.SlotPublished, "partners"),
        _spec("volunteer", "confirmed", ev.VolunteerConfirmed, "partners"),
        _spec("volunteer", "declined", ev.VolunteerDeclined, "partners"),
        _spec("partner", "accepted", ev.PartnerAccepted, "partners"),
        _spec("partner", "declined", ev.PartnerDeclined, "partners"),
        _spec("meal", "delivered", ev.MealDelivered, "partners"),
        _spec("meal", "prepared", ev.MealPrepared, "partners"),
        _spec("visit", "completed", ev.VisitCompleted, "partners"),
        _spec("repair", "completed", ev.RepairCompleted, "partners"),
        _spec("service", "completed", ev.ServiceCompleted, "partners"),
        _spec("delivery", "failed", ev.DeliveryFailed, "partners"),
        _spec("points", "awarded", ev.PointsAwarded, "partners"),
        _spec("points", "redeemed", ev.PointsRedeemed, "partners"),
        _spec("offer", "lapsed", ev.OfferLapsed, "partners"),
        _spec("reward", "published", ev.RewardPublished, "partners"),
        _spec("reward", "revised", ev.RewardRevised, "partners"),
        _spec("reward", "withdrawn", ev.RewardWithdrawn, "partners"),
        _spec("redemption", "requested", ev.RedemptionRequested, "partners"),
        _spec("redemption", "rejected", ev.RedemptionRejected, "partners"),
        _spec("certificate", "used", ev.CertificateUsed, "partners"),
        # partners: recurring capacity (ADR 0042)
        _spec("slot", "revised", ev.SlotRevised, "partners"),
        _spec("slot", "withdrawn", ev.SlotWithdrawn, "partners"),
        _spec("volunteer", "availability_changed", ev.VolunteerAvailabilityChanged, "partners"),
        # scheduling
        _spec("slot", "reserved", ev.SlotReserved, "scheduling"),
        _spec("slot", "released", ev.SlotReleased, "scheduling"),
        _spec("assignment", "offered", ev.AssignmentOffered, "scheduling"),
        _spec("assignment", "expired", ev.AssignmentExpired, "scheduling"),
        _spec("assignment", "reminder_due", ev.AssignmentReminderDue, "scheduling"),
        _spec("need", "escalated", ev.NeedEscalated, "scheduling"),
        _spec("need", "fulfilled", ev.NeedFulfilled, "scheduling"),
        _spec("need", "dispatched", ev.NeedDispatched, "scheduling"),
        _spec("need", "reoffered", ev.NeedReoffered, "scheduling"),
        _spec("assignment", "withdrawn", ev.AssignmentWithdrawn, "scheduling"),
        _spec("escalation", "acknowledged", ev.EscalationAcknowledged, "scheduling"),
        _spec("escalation", "assigned", ev.EscalationAssigned, "scheduling"),
        _spec("escalation", "resolved", ev.EscalationResolved, "scheduling"),
        # notifications
        _spec("notification", "failed", ev.NotificationFailed, "notifications"),
    ),
    # The command's data is one of the concrete specs, so new_event(MealNeedSpec(...))
    # must resolve to need.submit.
    aliases={model: "linli.need.submit.v1" for model in NEED_SPECS.values()},
)


def spec_for(model_cls: type[BaseModel]) -> EventSpec:
    """The registered spec whose data model is `model_cls`; raises UnregisteredModel."""
    return REGISTRY.spec_for(model_cls)


def lookup(ce_type: str) -> EventSpec:
    """The registered spec for a CloudEvents type; raises UnknownEventType."""
    return REGISTRY.lookup(ce_type)
