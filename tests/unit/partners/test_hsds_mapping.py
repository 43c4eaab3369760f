"""The HSDS mapping's rules (ADR 0051), one at a time, without servers: the public-contact
rule, weekly schedules from templates, capacity and its unit, HSDS paging; every object
made here validates against the copied HSDS 3.1 schemas."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from typing import Any

from harness.hsds import assert_valid

from linli.partners.hsds import guide, mapping

NOW = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
PID = uuid.UUID("11111111-1111-4111-8111-111111111111")


def _partner(public: bool, **overrides: Any) -> dict[str, Any]:
    row = {
        "id": PID,
        "name": "幸福食堂",
        "kind": "canteen",
        "description": None,
        "directory_public": public,
        "address": {
            "address_1": "致远路 18 号",
            "city": "泰安市",
            "state_province": "山东省",
            "postal_code": "271000",
            "country": "CN",
        },
        "latitude": 36.19,
        "longitude": 117.12,
        "public_phone": "+865386220000",
        "public_email": "desk@example.org",
        "website": "https://example.org/",
        "opening_hours": [{"weekdays": [6, 1, 2], "opens_at": "10:30", "closes_at": "13:30"}],
    }
    row.update(overrides)
    return row


def _directory(public: bool, **extra: Any) -> mapping.Directory:
    service = {
        "partner_id": PID,
        "name": "lunch round",
        "need_kind": "meal_delivery",
        "cost_option": "low_cost",
        "description": None,
    }
    return mapping.Directory(
        community="taian-zhiyuan",
        now=NOW,
        horizon_days=7,
        timezone="Asia/Shanghai",
        partners=[_partner(public)],
        services=[service],
        **extra,
    )


def test_an_organisation_without_consent_shows_no_channel() -> None:
    hidden = _directory(public=False)
    doc = mapping.service(hidden, hidden.services[0])
    assert_valid(doc, "service_with_definitions")
    assert doc["phones"] == []
    assert doc["contacts"] == []
    assert doc["service_at_locations"] == []
    assert "email" not in doc
    assert "url" not in doc
    org = mapping.organization(hidden, hidden.partners[0])
    assert org["phones"] == []
    assert org["locations"] == []
    assert "website" not in org
    assert org["description"] == "社区食堂 community canteen"  # HSDS requires one
    assert guide.build(hidden).entries == []

    shown = _directory(public=True)
    doc = mapping.service(shown, shown.services[0])
    assert_valid(doc, "service_with_definitions")
    assert doc["phones"][0]["number"] == "+865386220000"
    location = doc["service_at_locations"][0]["location"]
    assert location["schedules"][0]["byday"] == "MO,TU,SA"
    assert location["schedules"][0]["timezone"] == 8
    assert_valid(location, "location")
    (entry,) = guide.build(shown).entries
    assert entry.phone == "+865386220000"
    assert "271000" in (entry.address or "")


def test_a_template_becomes_a_weekly_schedule_and_capacity_has_its_unit() -> None:
    template = {
        "id": uuid.uuid4(),
        "partner_id": PID,
        "kind": "meal_delivery",
        "weekdays": [5, 1, 3],
        "start_time": time(11, 0),
        "end_time": time(12, 30),
        "timezone": "Asia/Shanghai",
        "capacity": 40,
        "valid_from": date(2026, 12, 7),
        "valid_until": None,
    }
    d = _directory(
        public=True,
        templates=[template],
        capacity={(PID, "meal_delivery"): {"available": 37, "maximum": 40, "slots": 1}},
        compounds={(PID, "meal_delivery"): ["致远小区"]},
    )
    doc = mapping.service(d, d.services[0])
    assert_valid(doc, "service_with_definitions")
    (schedule,) = doc["schedules"]
    assert schedule["freq"] == "WEEKLY"
    assert schedule["byday"] == "MO,WE,FR"
    assert (schedule["opens_at"], schedule["closes_at"]) == ("11:00", "12:30")
    assert schedule["valid_from"] == "2026-12-07"
    assert "valid_to" not in schedule
    (capacity,) = doc["capacities"]
    assert (capacity["available"], capacity["maximum"]) == (37, 40)
    assert capacity["unit"]["identifier"] == "meals"
    assert capacity["updated"] == NOW.isoformat()
    assert {a["name"] for a in doc["service_areas"]} == {"taian-zhiyuan", "致远小区"}
    assert doc["cost_options"][0]["option"] == "low cost"
    # The same inputs give the same ids (stable from one export to the next).
    assert mapping.service(d, d.services[0])["id"] == doc["id"]


def test_pages_follow_hsds() -> None:
    items = list(range(5))
    first = mapping.page(items, 1, 2)
    assert first["contents"] == [0, 1]
    assert first["total_pages"] == 3
    assert first["first_page"]
    last = mapping.page(items, 3, 2)
    assert last["contents"] == [4]
    assert last["last_page"]
    assert last["size"] == 1
    past = mapping.page(items, 4, 2)
    assert past["empty"]
    assert past["contents"] == []
    assert past["total_items"] == 5
    nothing = mapping.page([], 1, 50)
    assert nothing["total_pages"] == 1
    assert nothing["empty"]
    assert nothing["last_page"]
