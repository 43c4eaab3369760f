from __future__ import annotations

from typing import get_args

import pytest
from harness.contract_samples import meal_spec
from pydantic import BaseModel

from linli.contracts import events
from linli.contracts.events import NeedSubmitted
from linli.contracts.needs import NEED_SPECS, MealDetails, ResidentSpec
from linli.contracts.registry import (
    REGISTRY,
    UnknownEventType,
    UnregisteredModel,
    lookup,
    spec_for,
)
from linli.contracts.types import EventData, TimeWindow

CATALOGUE = {
    "need.submit", "need.submitted", "need.rejected", "need.cancelled",
    "slot.published", "volunteer.confirmed", "volunteer.declined", "partner.accepted",
    "partner.declined", "meal.delivered", "visit.completed", "repair.completed",
    "service.completed",
    "meal.prepared", "delivery.failed", "points.awarded", "points.redeemed", "offer.lapsed",
    "slot.reserved",
    "slot.released",
    "assignment.offered", "assignment.expired", "assignment.reminder_due",
    "need.escalated", "need.fulfilled",
    "need.dispatched", "need.reoffered", "assignment.withdrawn",
    "escalation.acknowledged", "escalation.assigned", "escalation.resolved",
    "notification.failed",
    "reward.published", "reward.revised", "reward.withdrawn", "redemption.requested",
    "redemption.rejected", "certificate.used",
    "activity.published", "activity.revised", "activity.cancelled", "activity.held",
    "signup.requested", "signup.confirmed", "signup.waitlisted", "signup.cancelled",
    "attendance.recorded",
    "slot.revised", "slot.withdrawn", "volunteer.availability_changed",
}  # fmt: skip


def test_registry_holds_the_whole_catalogue() -> None:
    assert {spec.short for spec in REGISTRY} == CATALOGUE
    assert len(REGISTRY) == len(CATALOGUE)
    assert [s.type for s in REGISTRY.commands()] == ["linli.need.submit.v1"]
    assert all(spec.description for spec in REGISTRY)


def test_every_event_class_is_registered() -> None:
    classes = [
        obj
        for obj in vars(events).values()
        if isinstance(obj, type)
        and issubclass(obj, EventData)
        and obj.__module__ == events.__name__
    ]
    registered = {spec.model for spec in REGISTRY}
    helpers = {
        events.PartyRef,
        events.StaffActor,
        events.EscalationActionData,
        events.SlotTerms,
        events.WeeklyAvailability,
    }
    assert {c for c in classes if c not in helpers} <= registered


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found += _models_in(arg)
    return found


def test_every_field_has_a_description() -> None:
    seen: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [spec.model for spec in REGISTRY]
    todo += [*NEED_SPECS.values(), ResidentSpec]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            if not model.__pydantic_root_model__:
                assert field.description, f"{model.__name__}.{name} has no description"
            todo += _models_in(field.annotation)
    assert TimeWindow in seen
    assert MealDetails in seen


def test_spec_properties() -> None:
    spec = spec_for(NeedSubmitted)
    assert spec.type == "linli.need.submitted.v1"
    assert spec.short == "need.submitted"
    assert spec.kind == "event"
    assert spec.producer == "intake"
    assert spec.dataschema == "https://linli.dev/schemas/need.submitted.v1.json"
    assert lookup("linli.need.submitted.v1") is spec
    assert REGISTRY["linli.need.submitted.v1"] is spec
    assert "linli.need.submitted.v1" in REGISTRY


def test_command_specs_resolve_from_concrete_need_specs() -> None:
    for model in NEED_SPECS.values():
        assert spec_for(model).type == "linli.need.submit.v1"
    spec = lookup("linli.need.submit.v1")
    assert spec.kind == "command"
    assert spec.adapter.validate_python(meal_spec().model_dump()) == meal_spec()


@pytest.mark.parametrize(
    ("ce_type", "fragment"),
    [
        ("linli.need.submit.v99", "unknown version v99 of need.submit; known versions: v1"),
        ("linli.need.teleported.v1", "unknown event type"),
        ("com.example.thing", "expected linli.<aggregate>.<name>.v<N>"),
        ("", "unknown event type"),
        ("linli.need.submitted.V1", "unknown event type"),
    ],
)
def test_lookup_unknown(ce_type: str, fragment: str) -> None:
    with pytest.raises(UnknownEventType) as info:
        lookup(ce_type)
    assert isinstance(info.value, KeyError)
    assert fragment in str(info.value)


def test_spec_for_unregistered_model() -> None:
    class Stray(BaseModel):
        pass

    with pytest.raises(UnregisteredModel, match="Stray"):
        spec_for(Stray)
