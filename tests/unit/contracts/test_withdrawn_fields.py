"""Events published before ADR 0031 still carry free text; readers drop it (one place:
`EventData.withdrawn_fields`) and keep going, instead of dead-lettering them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from harness.contract_samples import NOW, repair_spec
from pydantic import ValidationError

from linli.contracts.binding import from_nats, parse_data
from linli.contracts.events import (
    AssignmentOffered,
    DeliveryFailed,
    NeedSubmitted,
    RepairCompleted,
    VisitCompleted,
)
from linli.contracts.needs import RepairDetails, shared_details
from linli.contracts.registry import spec_for
from linli.contracts.types import drop_withdrawn_fields

pytestmark = pytest.mark.unit

TEXT = "ZZCANARY-王秀兰 3号楼 401 说她最近睡不好"
PARTY = {"kind": "volunteer", "id": str(uuid.uuid4())}
WINDOW = {"earliest": "2025-03-14T11:30:00Z", "latest": "2025-03-14T13:30:00Z"}
IDS = {"need_id": str(uuid.uuid4()), "assignment_id": str(uuid.uuid4())}

# The data of version-1 events as published before ADR 0031, with their free text.
LEGACY: list[tuple[type[Any], dict[str, Any], str | None]] = [
    (
        NeedSubmitted,
        {
            "need_id": IDS["need_id"],
            "resident_id": str(uuid.uuid4()),
            "kind": "repair",
            "urgency": "urgent",
            "window": WINDOW,
            "details": {"category": "plumbing", "description": TEXT, "hazard": "none"},
            "priority_group": "low_income",
            "compound": "泰安小区",
            "submitted_at": "2025-03-14T11:00:00Z",
        },
        None,
    ),
    (
        AssignmentOffered,
        {
            **IDS,
            "slot_id": str(uuid.uuid4()),
            "offered_to": PARTY,
            "kind": "repair",
            "urgency": "urgent",
            "window": WINDOW,
            "details": {"category": "plumbing", "description": TEXT, "hazard": "none"},
            "offered_at": "2025-03-14T11:01:00Z",
            "expires_at": "2025-03-14T11:31:00Z",
        },
        None,
    ),
    (
        VisitCompleted,
        {
            **IDS,
            "visited_by": PARTY,
            "started_at": "2025-03-14T11:30:00Z",
            "ended_at": "2025-03-14T12:30:00Z",
            "wellbeing_concern": True,
            "observations": TEXT,
        },
        "observations_recorded",
    ),
    (
        RepairCompleted,
        {
            **IDS,
            "repaired_by": PARTY,
            "arrived_at": "2025-03-14T11:30:00Z",
            "completed_at": "2025-03-14T12:30:00Z",
            "fixed": True,
            "follow_up_needed": False,
            "summary": TEXT,
        },
        "summary_recorded",
    ),
    (
        DeliveryFailed,
        {
            **IDS,
            "attempted_by": PARTY,
            "reason": "not_home",
            "detail": TEXT,
            "failed_at": "2025-03-14T11:45:00Z",
        },
        "detail_recorded",
    ),
]


def _on_the_stream(model: type[Any], data: dict[str, Any]) -> bytes:
    spec = spec_for(model)
    envelope = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/linli/test",
        "type": spec.type,
        "time": NOW.isoformat(),
        "datacontenttype": "application/json",
        "community": "taian-zhiyuan",
        "data": data,
    }
    return json.dumps(envelope, ensure_ascii=False).encode()


@pytest.mark.parametrize(
    ("model", "data", "flag"), LEGACY, ids=lambda v: getattr(v, "__name__", "")
)
def test_a_legacy_event_with_free_text_is_read_without_it(
    model: type[Any], data: dict[str, Any], flag: str | None
) -> None:
    # The path every consumer takes (servicekit.consume): decode, then the spec's adapter.
    event = from_nats(_on_the_stream(model, data), {"content-type": "application/cloudevents+json"})
    parsed = parse_data(event, spec_for(model).adapter)
    assert isinstance(parsed, model)
    assert TEXT not in parsed.model_dump_json()
    assert TEXT in json.dumps(data, ensure_ascii=False)  # the input was not changed
    if flag is not None:
        assert getattr(parsed, flag) is True
    else:
        assert parsed.details == RepairDetails(category="plumbing", hazard="none")


@pytest.mark.parametrize(
    ("model", "data", "flag"), LEGACY[2:], ids=lambda v: getattr(v, "__name__", "")
)
def test_a_stated_flag_wins_and_empty_legacy_text_records_nothing(
    model: type[Any], data: dict[str, Any], flag: str
) -> None:
    text_field = next(k for k in data if data[k] == TEXT)
    assert getattr(model.model_validate({**data, flag: False}), flag) is False
    assert getattr(model.model_validate({**data, text_field: None}), flag) is False
    assert getattr(model.model_validate({**data, text_field: ""}), flag) is False


def test_new_events_cannot_carry_the_description() -> None:
    spec = repair_spec()
    assert spec.details.description  # the submission keeps it ...
    shared = shared_details(spec.details)
    assert shared == RepairDetails(category="heating", hazard="water_leak")
    event = NeedSubmitted(
        need_id=uuid.uuid4(),
        resident_id=spec.resident_id,
        kind=spec.kind,
        urgency=spec.urgency,
        window=spec.window,
        details=shared,
        priority_group="none",
        submitted_at=NOW,
    )
    assert spec.details.description not in event.model_dump_json()  # ... the event not
    # Handing the submission's details to an event by mistake fails loudly.
    with pytest.raises(ValidationError, match="details"):
        NeedSubmitted(**{**event.__dict__, "details": spec.details})


def test_dropping_copies_and_ignores_absent_paths() -> None:
    data = {"details": {"description": TEXT, "category": "other"}, "n": 1}
    out = drop_withdrawn_fields(data, {"details.description": None, "a.b": "flag", "x": None})
    assert out == {"details": {"category": "other"}, "n": 1}
    assert data["details"]["description"] == TEXT
    assert drop_withdrawn_fields({"details": "not a mapping"}, {"details.description": None}) == {
        "details": "not a mapping"
    }
