from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from harness.contract_samples import NOW, RESIDENT
from pydantic import TypeAdapter, ValidationError

from linli.contracts.needs import (
    MealNeedSpec,
    NeedSpecAdapter,
    RepairNeedSpec,
    ResidentSpec,
    VisitNeedSpec,
)
from linli.contracts.types import (
    LOCAL_TIME_PATTERN,
    CommunitySlug,
    Flag,
    LocalDate,
    LocalTime,
    Moment,
    PhoneNumber,
    TimeWindow,
)

PHONE = TypeAdapter(PhoneNumber)
SLUG = TypeAdapter(CommunitySlug)


def test_window_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="latest must be after earliest"):
        TimeWindow(earliest=NOW, latest=NOW)
    with pytest.raises(ValidationError, match="latest must be after earliest"):
        TimeWindow(earliest=NOW, latest=NOW - timedelta(minutes=1))


def test_window_at_most_31_days() -> None:
    TimeWindow(earliest=NOW, latest=NOW + timedelta(days=31))
    with pytest.raises(ValidationError, match="31 days"):
        TimeWindow(earliest=NOW, latest=NOW + timedelta(days=31, seconds=1))


def test_window_needs_timezone() -> None:
    with pytest.raises(ValidationError):
        TimeWindow(earliest=datetime(2025, 1, 1, 8), latest=datetime(2025, 1, 1, 9))


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("13800138000", "+8613800138000"),
        ("+86 138 0013 8000", "+8613800138000"),
        (" 138-0013-8000 ", "+8613800138000"),
        ("010 6552 9988", "+861065529988"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_phone_is_normalised_to_e164(raw: str, e164: str) -> None:
    assert PHONE.validate_python(raw) == e164


@pytest.mark.parametrize("raw", ["", "abc", "12345", "1380013800099999", "+86 000", "电话"])
def test_bad_phone_is_rejected(raw: str) -> None:
    with pytest.raises(ValidationError):
        PHONE.validate_python(raw)


def test_resident_error_does_not_echo_personal_data() -> None:
    phone = "1380013800X-secret"
    with pytest.raises(ValidationError) as info:
        ResidentSpec(name="张三", phone=phone, address="泰安路 1 号 3-201")
    text = str(info.value)
    assert "not a valid phone number" in text
    assert phone not in text
    assert "secret" not in text
    assert all("input" not in e for e in info.value.errors(include_input=False))


def test_resident_defaults_and_forbids_extra() -> None:
    resident = ResidentSpec(name=" 李四 ", phone="13800138000", address="泰安路 2 号")
    assert resident.name == "李四"
    assert resident.phone == "+8613800138000"
    assert resident.priority_group == "none"
    assert resident.consent_to_share_contact is False
    assert resident.locale == "zh-CN"
    with pytest.raises(ValidationError, match="Extra inputs"):
        ResidentSpec.model_validate(
            {"name": "a", "phone": "13800138000", "address": "b", "is_admin": True}
        )


@pytest.mark.parametrize("slug", ["a", "taian-zhiyuan", "c7", "a" * 64, "0-0"])
def test_good_community_slugs(slug: str) -> None:
    assert SLUG.validate_python(slug) == slug


@pytest.mark.parametrize(
    "slug", ["", "-a", "a-", "A", "a.b", "a b", "a*", "a>", "a" * 65, "社区", "a_b", "a\n"]
)
def test_bad_community_slugs(slug: str) -> None:
    with pytest.raises(ValidationError):
        SLUG.validate_python(slug)


def _need(kind: str, details: dict[str, object]) -> dict[str, object]:
    return {
        "resident_id": str(RESIDENT),
        "window": {"earliest": "2025-03-14T11:00:00+08:00", "latest": "2025-03-14T12:30:00+08:00"},
        "kind": kind,
        "details": details,
    }


def test_need_spec_union_selects_on_kind() -> None:
    meal = NeedSpecAdapter.validate_python(_need("meal_delivery", {}))
    visit = NeedSpecAdapter.validate_python(
        _need("elder_care_visit", {"purpose": "health_check", "duration_minutes": 45})
    )
    repair = NeedSpecAdapter.validate_python(
        _need("repair", {"category": "plumbing", "description": "漏水"})
    )
    assert isinstance(meal, MealNeedSpec)
    assert meal.details.portions == 1
    assert meal.urgency == "routine"
    assert isinstance(visit, VisitNeedSpec)
    assert isinstance(repair, RepairNeedSpec)
    assert repair.details.hazard == "none"
    assert NeedSpecAdapter.validate_json(NeedSpecAdapter.dump_json(repair)) == repair


def test_need_spec_rejects_unknown_kind_and_bad_details() -> None:
    with pytest.raises(ValidationError) as info:
        NeedSpecAdapter.validate_python(_need("haircut", {}))
    assert info.value.errors()[0]["type"] == "union_tag_invalid"
    with pytest.raises(ValidationError):
        NeedSpecAdapter.validate_python(_need("elder_care_visit", {"purpose": "x"}))
    with pytest.raises(ValidationError):
        NeedSpecAdapter.validate_python(_need("meal_delivery", {"portions": 11}))
    with pytest.raises(ValidationError):
        NeedSpecAdapter.validate_python(_need("meal_delivery", {"diet_needs": ["x" * 41]}))
    with pytest.raises(ValidationError):
        NeedSpecAdapter.validate_python({**_need("meal_delivery", {}), "extra": 1})


def test_need_spec_bounds_strings() -> None:
    with pytest.raises(ValidationError):
        NeedSpecAdapter.validate_python({**_need("meal_delivery", {}), "notes": "x" * 1001})
    with pytest.raises(ValidationError):
        NeedSpecAdapter.validate_python(
            {**_need("meal_delivery", {}), "source": {"system": "bad system!"}}
        )


def test_window_accepts_utc_and_offsets() -> None:
    window = TimeWindow(
        earliest=datetime(2025, 1, 1, 8, tzinfo=UTC), latest="2025-01-01T17:00:00+08:00"
    )
    assert window.duration == timedelta(hours=1)
    assert uuid.UUID(str(RESIDENT))


LOCAL_TIME = TypeAdapter(LocalTime)
LOCAL_DATE = TypeAdapter(LocalDate)
MOMENT = TypeAdapter(Moment)
FLAG = TypeAdapter(Flag)


@pytest.mark.parametrize("value", ["14:30", "14:30:00", "00:00", "23:59:59"])
def test_local_time_takes_what_its_pattern_says(value: str) -> None:
    assert re.fullmatch(LOCAL_TIME_PATTERN, value)
    parsed = LOCAL_TIME.validate_python(value)
    # Answered as HH:MM:SS, which the pattern also matches (ADR 0047).
    assert re.fullmatch(LOCAL_TIME_PATTERN, LOCAL_TIME.dump_python(parsed, mode="json"))


@pytest.mark.parametrize("value", ["24:00", "14:30:00Z", "14:30:00+08:00", "14:30:00.5", 3600, ""])
def test_local_time_refuses_what_its_pattern_refuses(value: object) -> None:
    with pytest.raises(ValidationError):
        LOCAL_TIME.validate_python(value)


def test_local_time_schema_is_a_pattern_not_format_time() -> None:
    schema = LOCAL_TIME.json_schema()
    assert schema["type"] == "string"
    assert schema["pattern"] == LOCAL_TIME_PATTERN
    assert "format" not in schema


@pytest.mark.parametrize("value", [0, "0", "2026-02-30", "20260501", "2026-05-01T00:00:00Z"])
def test_local_date_takes_days_only(value: object) -> None:
    with pytest.raises(ValidationError):
        LOCAL_DATE.validate_python(value)
    assert str(LOCAL_DATE.validate_python("2026-05-01")) == "2026-05-01"


@pytest.mark.parametrize("value", [0, 0.5, "0.5", "1700000000"])
def test_moment_refuses_unix_times(value: object) -> None:
    with pytest.raises(ValidationError):
        MOMENT.validate_python(value)
    assert MOMENT.validate_python("2026-05-01T11:30:00+08:00").utcoffset() is not None


def test_flag_refuses_numbers() -> None:
    for value in (0, 1, 1.0):
        with pytest.raises(ValidationError):
            FLAG.validate_python(value)
    assert FLAG.validate_python(True) is True
    assert FLAG.validate_python("false") is False  # CSV imports write words
