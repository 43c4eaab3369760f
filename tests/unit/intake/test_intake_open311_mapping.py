"""The Open311 mapping's rules (ADR 0050), without servers: definitions from the details
models for every catalogued kind, a submission to the native NeedSpec, statuses, the SLA's
expected time, rendering."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

import pytest
from harness.open311 import validate
from jsonschema import Draft202012Validator

from linli.contracts.catalogue import CATALOGUE, kind_spec
from linli.contracts.types import Reason
from linli.intake.open311 import mapping

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
RESIDENT = str(uuid.uuid4())


def _form(**fields: str) -> mapping.Submission:
    return mapping.parse_form(list(fields.items()))


@pytest.mark.parametrize("kind", list(CATALOGUE))
def test_every_kind_has_a_valid_definition_from_its_details_model(kind: str) -> None:
    entry = kind_spec(kind)
    definition = mapping.service_definition(entry)
    validate(definition, "service-definition.json")
    codes = [a["code"] for a in definition["attributes"]]
    assert codes[:5] == [
        "resident_id",
        "resident_ref",
        "urgency",
        "window_earliest",
        "window_latest",
    ]
    schema = entry.request_details.model_json_schema()
    assert set(codes[5:]) == set(schema["properties"]) - {"description"}
    for attribute in definition["attributes"][5:]:
        assert attribute["required"] == (attribute["code"] in schema.get("required", []))
        if attribute["datatype"] in ("singlevaluelist", "multivaluelist"):
            assert attribute["values"]
    validate(mapping.services(), "services.json")


def test_a_form_becomes_the_native_need_spec() -> None:
    sub = mapping.parse_form(
        [
            ("service_code", "meal_delivery"),
            ("attribute[resident_id]", RESIDENT),
            ("attribute[diet_needs][]", "soft food"),
            ("attribute[diet_needs][]", "low salt"),
            ("attribute[portions]", "2"),
            ("description", "leave it at the door"),
        ]
    )
    mapped = mapping.to_need(kind_spec("meal_delivery"), sub, NOW, None)
    assert mapped.reasons == []
    spec = mapped.spec
    assert spec is not None
    assert spec.kind == "meal_delivery"
    assert str(spec.resident_id) == RESIDENT
    assert spec.details.model_dump() == {"diet_needs": ["soft food", "low salt"], "portions": 2}
    assert spec.notes == "leave it at the door"
    assert spec.window.earliest == NOW
    assert spec.window.latest == NOW + mapping.DEFAULT_WINDOW
    assert spec.source is not None
    assert spec.source.system == "open311"


def test_a_repair_keeps_its_words_as_the_private_description_and_takes_the_sla_window() -> None:
    sub = _form(
        **{
            "attribute[resident_ref]": "hh-1",
            "attribute[category]": "electrical",
            "attribute[urgency]": "emergency",
            "description": "sparks from the socket",
        }
    )
    resident = uuid.uuid4()
    mapped = mapping.to_need(kind_spec("repair"), sub, NOW, resident)
    assert mapped.spec is not None, mapped.reasons
    assert mapped.spec.resident_id == resident
    assert mapped.spec.details.model_dump()["description"] == "sparks from the socket"
    assert mapped.spec.notes is None
    assert mapped.spec.window.latest - mapped.spec.window.earliest == timedelta(minutes=30)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"attribute[portions]": "0"}, "attribute[portions]"),
        ({"attribute[portions]": "1.5"}, "attribute[portions]"),
        ({"attribute[nope]": "1"}, "attribute[nope]"),
        ({"attribute[resident_ref]": "x"}, "attribute[resident_id]"),
        ({"attribute[window_latest]": "2026-12-01T02:00:00+00:00"}, "attribute[window_latest]"),
        ({"attribute[urgency]": "soon"}, "attribute[urgency]"),
        ({"first_name": "王"}, "first_name"),
        ({"long": "181"}, "long"),
        ({"unknown": "1"}, "unknown"),
        ({"description": "x" * 1001}, "description"),
    ],
)
def test_bad_submissions_name_the_field_as_sent(fields: dict[str, str], field: str) -> None:
    sub = _form(**{"attribute[resident_id]": RESIDENT, **fields})
    mapped = mapping.to_need(kind_spec("meal_delivery"), sub, NOW, None)
    assert mapped.spec is None
    assert field in [r.field for r in mapped.reasons], mapped.reasons
    assert all("王" not in r.message for r in mapped.reasons)


def test_statuses_and_the_sla_clock() -> None:
    assert [mapping.open_or_closed(s) for s in mapping.OPEN_STATUSES] == ["open"] * 5
    assert [mapping.open_or_closed(s) for s in mapping.CLOSED_STATUSES] == ["closed"] * 3
    assert set(mapping.STATUS_NOTES) == {*mapping.OPEN_STATUSES, *mapping.CLOSED_STATUSES}
    row = {
        "id": uuid.uuid4(),
        "kind": "repair",
        "urgency": "routine",
        "priority_group": "none",
        "status": "assigned",
        "submitted_at": NOW,
        "updated_at": NOW,
        "window_latest": NOW + timedelta(days=5),
    }
    assert mapping.expected_datetime(row) == NOW + timedelta(hours=72)
    assert mapping.expected_datetime({**row, "priority_group": "disabled"}) == NOW + timedelta(
        hours=24
    )
    meal = {**row, "kind": "meal_delivery"}
    assert mapping.expected_datetime(meal) == NOW + timedelta(days=5)
    view = mapping.request_view(row, "assigned", "致远社区")
    validate([view], "requests.json")
    assert view["status"] == "open"
    assert view["status_notes"] == "A helper has accepted it."


def test_xml_documents_and_errors() -> None:
    body = mapping.xml_document("services", "service", mapping.services())
    root = ElementTree.fromstring(body)  # noqa: S314 - built here
    assert [s.findtext("service_code") for s in root] == list(CATALOGUE)
    assert root[0].findtext("metadata") == "true"
    errors = mapping.error_list(400, [Reason(field="attribute[x]", message="bad", code="c")])
    assert errors == [{"code": 400, "description": "attribute[x]: bad (c)"}]
    xml = ElementTree.fromstring(mapping.xml_document("errors", "error", errors))  # noqa: S314
    assert xml.find("error/code").text == "400"  # type: ignore[union-attr]


def test_the_documented_body_schema_is_what_the_facade_takes() -> None:
    """OpenAPI's request body (one variant per service) accepts a good JSON request and
    refuses what the facade refuses: two residents, an unknown attribute, a bad value."""
    schema = mapping.request_body_schema(form=False)
    checker = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    good = {
        "service_code": "elder_care_visit",
        "attribute": {"resident_id": RESIDENT, "purpose": "health_check", "duration_minutes": 30},
    }
    assert checker.is_valid(good)
    sub = mapping.parse_json(good)
    assert mapping.to_need(kind_spec("elder_care_visit"), sub, NOW, None).reasons == []
    for bad_attribute in (
        {"resident_ref": "hh-1"},
        {"colour": "red"},
        {"duration_minutes": 5},
        {"purpose": "chat"},
    ):
        bad = {**good, "attribute": {**good["attribute"], **bad_attribute}}
        assert not checker.is_valid(bad), bad_attribute
        refused = mapping.to_need(kind_spec("elder_care_visit"), mapping.parse_json(bad), NOW, None)
        assert refused.spec is None, bad_attribute
    assert not checker.is_valid({**good, "service_code": "repair"})  # no description
    form = mapping.request_body_schema(form=True)
    meal = next(
        v for v in form["oneOf"] if v["properties"]["service_code"]["enum"] == ["meal_delivery"]
    )
    assert "attribute[diet_needs][]" in meal["properties"]
    assert meal["properties"]["attribute[portions]"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10,
    }
