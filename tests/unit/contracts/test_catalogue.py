"""The catalogue of kinds (ADR 0045): complete, consistent, and the one place a kind is
defined. The last tests add a test-only kind to a copy of the catalogue and run it
through the contracts' validation and the services' rules, with no service code
changed."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import Field, ValidationError

from linli.contracts.catalogue import (
    CATALOGUE,
    SERVICE_COMPLETED,
    KindSpec,
    ReportOutcome,
    ServedBy,
    SlaBasis,
    SlaDefaults,
    describe,
    kind_spec,
    label,
)
from linli.contracts.events import NeedSubmitted, PartyKind, PartyRef
from linli.contracts.needs import (
    DETAILS_BY_KIND,
    NEED_SPECS,
    SHARED_DETAILS_BY_KIND,
    NeedSpecAdapter,
    need_spec_adapter,
    need_spec_model,
    shared_details,
)
from linli.contracts.registry import REGISTRY
from linli.contracts.types import ContractModel, NeedKind, PriorityGroup, Urgency
from linli.partners import rules as partner_rules
from linli.scheduling.rules import DEFAULT_POLICY, NeedFacts, failure_escalation, sla_clocks

ROOT = Path(__file__).resolve().parents[3]

SAMPLES: dict[str, dict[str, Any]] = {
    "meal_delivery": {"diet_needs": ["soft food"], "portions": 1},
    "elder_care_visit": {"purpose": "companionship", "duration_minutes": 60},
    "repair": {"category": "plumbing", "description": "tap drips", "hazard": "water_leak"},
    "goods_delivery": {
        "category": "medicine",
        "items_count": 3,
        "prescription_required": True,
        "description": "blood-pressure tablets, order 42",
    },
    "personal_care": {"service": "haircut", "duration_minutes": 30},
}


def test_every_need_kind_has_one_complete_entry() -> None:
    assert list(CATALOGUE) == [k.value for k in NeedKind]
    assert set(SAMPLES) == set(CATALOGUE)
    for kind, entry in CATALOGUE.items():
        assert entry.kind == kind
        assert entry.labels.keys() == {"zh-CN", "en"}
        assert all(entry.labels.values())
        assert entry.description
        assert entry.spec_name.endswith("NeedSpec")
        assert issubclass(entry.request_details, ContractModel)
        assert issubclass(entry.shared_details, ContractModel)
        assert set(entry.shared_details.model_fields) <= set(entry.request_details.model_fields)
        assert entry.sla.label
        if entry.sla.basis is SlaBasis.RESPONSE:
            assert entry.sla.response is not None
        assert 0 < entry.points <= 10_000
        assert entry.served_by.volunteer_skill == kind
        assert entry.served_by.partner_kinds
        # The completion event is registered, produced by partners, and names the kind
        # (its own type, or `service.completed` carrying `kind`).
        spec = REGISTRY[f"linli.{entry.report.event_type}.v1"]
        assert spec.producer == "partners"
        if entry.report == SERVICE_COMPLETED:
            assert "kind" in spec.model.model_fields
        assert label(kind, "en") == entry.labels["en"]
        assert kind_spec(NeedKind(kind)) is entry
    # One details model per kind, so an event's details tell the kind.
    shared = [e.shared_details for e in CATALOGUE.values()]
    assert len(set(shared)) == len(shared)
    assert {k: e.request_details for k, e in CATALOGUE.items()} == DETAILS_BY_KIND
    assert {k: e.shared_details for k, e in CATALOGUE.items()} == SHARED_DETAILS_BY_KIND
    assert set(NEED_SPECS) == set(CATALOGUE)


def test_new_kinds_complete_with_the_generic_event() -> None:
    for kind in ("goods_delivery", "personal_care"):
        assert CATALOGUE[kind].report.event_type == "service.completed"
    assert CATALOGUE["goods_delivery"].served_by.partner_kinds[0] == "pharmacy"
    assert CATALOGUE["personal_care"].served_by.partner_kinds == ("barber",)


def test_free_text_stays_with_intake() -> None:
    """No field of details as events carry them is free text (ADR 0031)."""
    assert CATALOGUE["repair"].private_fields == {"description"}
    assert CATALOGUE["goods_delivery"].private_fields == {"description"}
    for entry in CATALOGUE.values():
        schema = entry.shared_details.model_json_schema()
        for name, prop in schema["properties"].items():
            if prop.get("type") == "string" and "enum" not in prop:
                assert prop.get("maxLength", 10_000) <= 40, (entry.kind, name)


@pytest.mark.parametrize("kind", list(CATALOGUE))
def test_details_schema_validates_a_sample_and_the_sample_flows(kind: str) -> None:
    view = describe(CATALOGUE[kind])
    jsonschema.Draft202012Validator.check_schema(view["details_schema"])
    jsonschema.validate(SAMPLES[kind], view["details_schema"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**SAMPLES[kind], "unknown": 1}, view["details_schema"])
    need = NeedSpecAdapter.validate_python(
        {
            "kind": kind,
            "resident_id": "00000000-0000-4000-8000-000000000001",
            "window": {
                "earliest": "2026-01-01T10:00:00+08:00",
                "latest": "2026-01-01T12:00:00+08:00",
            },
            "details": SAMPLES[kind],
        }
    )
    assert isinstance(need, NEED_SPECS[kind])
    shared = shared_details(need.details)
    assert isinstance(shared, CATALOGUE[kind].shared_details)
    assert "description" not in shared.model_dump()
    event = NeedSubmitted.model_validate(
        {
            "need_id": "00000000-0000-4000-8000-000000000002",
            "resident_id": "00000000-0000-4000-8000-000000000001",
            "kind": kind,
            "urgency": "routine",
            "window": need.window.model_dump(mode="json"),
            "details": shared.model_dump(mode="json"),
            "priority_group": "none",
            "submitted_at": "2026-01-01T09:00:00+08:00",
        }
    )
    assert event.details == shared


def test_bad_details_of_a_new_kind_name_the_fields() -> None:
    with pytest.raises(ValidationError) as caught:
        NeedSpecAdapter.validate_python(
            {
                "kind": "goods_delivery",
                "resident_id": "00000000-0000-4000-8000-000000000001",
                "window": {
                    "earliest": "2026-01-01T10:00:00+08:00",
                    "latest": "2026-01-01T12:00:00+08:00",
                },
                "details": {"category": "jewellery", "items_count": 0},
            }
        )
    locs = {e["loc"][-1] for e in caught.value.errors()}
    assert {"category", "items_count"} <= locs


def test_existing_sla_defaults_match_schedulings_policy() -> None:
    response = CATALOGUE["repair"].sla.response
    assert response is not None
    for name, key in response.policy_keys.items():
        assert getattr(response, name) == getattr(DEFAULT_POLICY, key)


def test_no_service_names_a_new_kind() -> None:
    """The new kinds came in as data: no service's code mentions them by name."""
    hits = []
    for path in (ROOT / "services").rglob("*.py"):
        text = path.read_text("utf-8")
        for word in ("goods_delivery", "personal_care", "GoodsDelivery", "PersonalCare"):
            if word in text:
                hits.append((str(path.relative_to(ROOT)), word))
    assert hits == []


# --- a test-only kind, added as data ----------------------------------------------------


class DogWalkDetails(ContractModel):
    """A dog walked for a resident who cannot."""

    minutes: int = Field(ge=10, le=120, description="How long the walk is.")


DOG_WALK = KindSpec(
    kind="dog_walk",
    labels={"zh-CN": "遛狗", "en": "Dog walk"},
    description="A dog walked for the resident.",
    spec_name="DogWalkNeedSpec",
    request_details=DogWalkDetails,
    shared_details=DogWalkDetails,
    sla=SlaDefaults(
        SlaBasis.WINDOW,
        "dog walked in window",
        welfare_check_groups=frozenset({PriorityGroup.DISABLED}),
    ),
    report=SERVICE_COMPLETED,
    points=7,
    served_by=ServedBy(("other",), "dog_walk"),
)


def test_a_kind_added_as_data_flows_through_validation_and_the_services_rules() -> None:
    specs = [*NEED_SPECS.values(), need_spec_model(DOG_WALK)]
    adapter = need_spec_adapter(specs)
    window = {"earliest": "2026-01-01T10:00:00+08:00", "latest": "2026-01-01T12:00:00+08:00"}
    base = {"resident_id": "00000000-0000-4000-8000-000000000001", "window": window}
    need = adapter.validate_python({**base, "kind": "dog_walk", "details": {"minutes": 30}})
    assert isinstance(need.details, DogWalkDetails)
    with pytest.raises(ValidationError) as caught:
        adapter.validate_python({**base, "kind": "dog_walk", "details": {"minutes": 5}})
    assert caught.value.errors()[0]["loc"][-1] == "minutes"
    # Existing kinds are unchanged by the addition.
    assert adapter.validate_python({**base, "kind": "meal_delivery", "details": {}})

    # Scheduling's SLA and failure rules read the entry.
    start = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    facts = NeedFacts(
        id=__import__("uuid").uuid4(),
        kind="dog_walk",  # type: ignore[arg-type]
        urgency=Urgency.ROUTINE,
        priority_group=PriorityGroup.DISABLED,
        window_earliest=start + timedelta(hours=1),
        window_latest=start + timedelta(hours=3),
        compound=None,
        submitted_at=start,
    )
    clocks = sla_clocks(facts, DEFAULT_POLICY, entry=DOG_WALK)
    assert [(c.label, c.deadline) for c in clocks] == [
        ("dog walked in window", facts.window_latest)
    ]
    assert failure_escalation("dog_walk", "disabled", DOG_WALK) == "welfare_check"
    assert failure_escalation("dog_walk", "none", DOG_WALK) == "delivery_failed"

    # Partners' outcome check and points read the same entry.
    catalogue = {**CATALOGUE, "dog_walk": DOG_WALK}
    outcomes = {k: e.report.outcome for k, e in catalogue.items()}
    assert outcomes["dog_walk"] == "service_completed"
    volunteer = PartyRef(kind=PartyKind.VOLUNTEER, id=facts.id)
    table = {k: e.points for k, e in catalogue.items()}
    assert partner_rules.points_for("dog_walk", volunteer, "service_completed", table) == 7


def test_a_response_kind_uses_its_own_defaults_and_the_communitys_overrides() -> None:
    repair = CATALOGUE["repair"]
    assert repair.sla.response is not None
    urgent_fix = dataclasses.replace(
        repair,
        kind="locksmith",
        sla=dataclasses.replace(
            repair.sla,
            label="locksmith on site",
            response=dataclasses.replace(repair.sla.response, routine_s=3600.0, policy_keys={}),
        ),
        report=ReportOutcome("service.completed", "service_completed", counts_hours=True),
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    facts = NeedFacts(
        id=__import__("uuid").uuid4(),
        kind="locksmith",  # type: ignore[arg-type]
        urgency=Urgency.ROUTINE,
        priority_group=PriorityGroup.NONE,
        window_earliest=start,
        window_latest=start + timedelta(days=5),
        compound=None,
        submitted_at=start,
    )
    policy = DEFAULT_POLICY.merged({"routine_repair_s": 7200.0})
    [clock] = sla_clocks(facts, policy, entry=urgent_fix)
    assert clock.deadline == start + timedelta(hours=1)  # its own default, no override key
    [clock] = sla_clocks(dataclasses.replace(facts, kind=NeedKind.REPAIR), policy)
    assert clock.deadline == start + timedelta(hours=2)  # the community's override
    assert clock.label == "routine repair on site"


def test_catalogue_view_is_plain_json() -> None:
    import json

    views = [describe(e) for e in CATALOGUE.values()]
    text = json.dumps(views, ensure_ascii=False)
    assert re.search(r'"kind": "goods_delivery"', text)
    assert views[2]["sla"]["response_seconds"]["priority"] == 24 * 3600.0
