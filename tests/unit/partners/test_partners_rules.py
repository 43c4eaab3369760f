"""Partners' business rules and request models, without servers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import TypeAdapter, ValidationError

from linli.contracts.events import PartyKind, PartyRef
from linli.contracts.types import Role
from linli.partners import rules
from linli.partners.app import PartnersSettings
from linli.partners.models import CompletionReport, SlotSpec, VolunteerSpec

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
VOL = PartyRef(kind=PartyKind.VOLUNTEER, id=uuid.uuid4())
FIRM = PartyRef(kind=PartyKind.PARTNER, id=uuid.uuid4())
TABLE = {"meal_delivery": 10, "elder_care_visit": 20, "repair": 30}
REPORT = TypeAdapter(CompletionReport)


def test_party_of_a_credential() -> None:
    sid = uuid.uuid4()
    assert rules.party_of(Role.VOLUNTEER, sid) == PartyRef(kind=PartyKind.VOLUNTEER, id=sid)
    assert rules.party_of(Role.PARTNER, sid) == PartyRef(kind=PartyKind.PARTNER, id=sid)
    assert rules.party_of(Role.OPERATOR, sid) is None
    assert rules.party_of(Role.VOLUNTEER, None) is None


def test_an_open_offer_past_expiry_reads_expired_and_cannot_be_answered() -> None:
    assert rules.offer_status("open", NOW + timedelta(seconds=1), NOW) == "open"
    assert rules.offer_status("open", NOW, NOW) == "expired"
    assert rules.offer_status("accepted", NOW - timedelta(hours=1), NOW) == "accepted"
    assert rules.answer_refusal("open", NOW + timedelta(minutes=5), NOW) is None
    assert rules.answer_refusal("open", NOW - timedelta(minutes=5), NOW) == "offer is expired"
    assert (
        rules.answer_refusal("withdrawn", NOW + timedelta(minutes=5), NOW) == "offer is withdrawn"
    )


@pytest.mark.parametrize(
    ("kind", "outcome", "ok"),
    [
        ("meal_delivery", "meal_delivered", True),
        ("meal_delivery", "visit_completed", False),
        ("elder_care_visit", "visit_completed", True),
        ("repair", "repair_completed", True),
        ("repair", "meal_delivered", False),
        ("repair", "failed", True),
    ],
)
def test_a_report_must_prove_the_offered_kind(kind: str, outcome: str, ok: bool) -> None:
    assert (rules.report_reasons(kind, outcome) == []) is ok


def test_points_only_for_a_volunteers_proven_completion() -> None:
    assert rules.points_for("meal_delivery", VOL, "meal_delivered", TABLE) == 10
    assert rules.points_for("repair", VOL, "repair_completed", TABLE) == 30
    assert rules.points_for("meal_delivery", VOL, "failed", TABLE) == 0
    assert rules.points_for("meal_delivery", FIRM, "meal_delivered", TABLE) == 0
    assert rules.points_for("meal_delivery", VOL, "meal_delivered", {}) == 0


def test_who_may_publish_capacity_for_whom() -> None:
    assert rules.may_publish_for(Role.OPERATOR, None, FIRM)
    assert rules.may_publish_for(Role.VOLUNTEER, VOL, VOL)
    assert not rules.may_publish_for(Role.VOLUNTEER, VOL, FIRM)
    assert not rules.may_publish_for(Role.PARTNER, None, FIRM)
    assert not rules.may_publish_for(Role.SYSTEM, None, FIRM)


def test_provider_must_serve_the_community_and_the_kind() -> None:
    assert rules.provider_reasons("repair", ["a"], {"repair"}, "a") == []
    assert rules.provider_reasons("repair", ["b"], {"repair"}, "a")[0].code == "unknown_provider"
    assert rules.provider_reasons("repair", None, set(), "a")[0].code == "unknown_provider"
    assert rules.provider_reasons("repair", ["a"], {"repair"}, "a", active=False)[0].code == (
        "unknown_provider"
    )
    assert rules.provider_reasons("meal_delivery", ["a"], {"repair"}, "a")[0].code == (
        "kind_not_offered"
    )


def test_report_models_check_their_proof() -> None:
    meal = REPORT.validate_python(
        {"outcome": "meal_delivered", "delivered_at": NOW, "handed_to": "resident"}
    )
    assert meal.outcome == "meal_delivered"
    with pytest.raises(ValidationError, match="neighbour_note"):
        REPORT.validate_python(
            {"outcome": "meal_delivered", "delivered_at": NOW, "handed_to": "neighbour"}
        )
    with pytest.raises(ValidationError, match="ended_at"):
        REPORT.validate_python(
            {"outcome": "visit_completed", "started_at": NOW, "ended_at": NOW - timedelta(1)}
        )
    with pytest.raises(ValidationError):
        REPORT.validate_python({"outcome": "failed", "reason": "bored", "failed_at": NOW})
    with pytest.raises(ValidationError):
        REPORT.validate_python({"outcome": "teleported"})


def test_slot_and_volunteer_specs() -> None:
    window = {"earliest": NOW, "latest": NOW + timedelta(hours=12)}
    slot = SlotSpec.model_validate({"kind": "repair", "window": window, "capacity": 2})
    assert slot.provider is None
    with pytest.raises(ValidationError):
        SlotSpec.model_validate({"kind": "repair", "window": window, "capacity": 0})
    night = VolunteerSpec.model_validate(
        {"display_name": "x", "availability": [{"weekday": 2, "start": "19:00", "end": "07:00"}]}
    )
    assert night.availability[0].end.hour == 7
    with pytest.raises(ValidationError):
        VolunteerSpec.model_validate(
            {"display_name": "x", "availability": [{"weekday": 8, "start": "1:00", "end": "2:00"}]}
        )


def test_settings_points_table_and_production_needs_an_intake_token() -> None:
    settings = PartnersSettings(points_repair=50, points_by_kind={"personal_care": 25})
    assert settings.points_table == {
        "meal_delivery": 10,
        "elder_care_visit": 20,
        "repair": 50,
        "goods_delivery": 10,
        "personal_care": 25,
    }
    assert settings.service_name == "partners"
    assert settings.http_port == 8102
    with pytest.raises(ValidationError, match="LINLI_INTAKE_TOKEN"):
        PartnersSettings(
            environment="production",
            nats_user="u",
            nats_password="p",
            database_url="postgresql://x@db/linli",
            stream_replicas=3,
            offer_link_key="o" * 40,
        )
