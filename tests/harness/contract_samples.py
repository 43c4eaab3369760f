"""Sample contract objects shared by the contracts unit tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from linli.contracts.events import (
    AssignmentOffered,
    MealDelivered,
    NeedRejected,
    NeedSubmitted,
    PartyRef,
    SlotReserved,
    VisitCompleted,
)
from linli.contracts.needs import (
    MealDetails,
    MealNeedSpec,
    NeedSource,
    RepairDetails,
    RepairNeedSpec,
    RepairRequestDetails,
    VisitDetails,
)
from linli.contracts.types import Reason, TimeWindow

NOW = datetime(2025, 3, 14, 11, 30, tzinfo=UTC)
WINDOW = TimeWindow(earliest=NOW, latest=NOW + timedelta(hours=2))
RESIDENT = uuid.UUID("3f1c2a4e-0d7b-4c55-9a43-2b0f7c1e9d10")
NEED = uuid.UUID("8a7e0b52-66a1-4b0e-8f0e-5d3b1c2a9e77")


def meal_spec() -> MealNeedSpec:
    return MealNeedSpec(
        resident_id=RESIDENT,
        window=WINDOW,
        kind="meal_delivery",
        details=MealDetails(diet_needs=["少盐", "软食"], portions=1),
        notes='午饭请放门口 — 100% "hot"',
        source=NeedSource(system="city-hotline", reference="12345-0001"),
    )


def repair_spec() -> RepairNeedSpec:
    return RepairNeedSpec(
        resident_id=RESIDENT,
        window=WINDOW,
        urgency="emergency",
        kind="repair",
        details=RepairRequestDetails(
            category="heating", description="暖气片漏水到楼下", hazard="water_leak"
        ),
    )


def sample_events() -> list[object]:
    volunteer = PartyRef(kind="volunteer", id=uuid.uuid4())
    return [
        NeedSubmitted(
            need_id=NEED,
            resident_id=RESIDENT,
            kind="repair",
            urgency="urgent",
            window=WINDOW,
            details=RepairDetails(category="plumbing"),
            priority_group="low_income",
            compound="泰安小区",
            submitted_at=NOW,
        ),
        NeedSubmitted(
            need_id=NEED,
            resident_id=RESIDENT,
            kind="elder_care_visit",
            urgency="routine",
            window=WINDOW,
            details=VisitDetails(purpose="companionship", duration_minutes=60),
            priority_group="elderly_living_alone",
            submitted_at=NOW,
        ),
        SlotReserved(
            reservation_id=uuid.uuid4(),
            slot_id=uuid.uuid4(),
            need_id=NEED,
            remaining_capacity=3,
            reserved_at=NOW,
        ),
        AssignmentOffered(
            assignment_id=uuid.uuid4(),
            need_id=NEED,
            slot_id=uuid.uuid4(),
            offered_to=volunteer,
            kind="meal_delivery",
            urgency="routine",
            window=WINDOW,
            details=MealDetails(),
            offered_at=NOW,
            expires_at=NOW + timedelta(minutes=15),
        ),
        MealDelivered(
            need_id=NEED,
            assignment_id=uuid.uuid4(),
            delivered_by=volunteer,
            delivered_at=NOW,
            handed_to="neighbour",
        ),
        VisitCompleted(
            need_id=NEED,
            assignment_id=uuid.uuid4(),
            visited_by=volunteer,
            started_at=NOW,
            ended_at=NOW + timedelta(hours=1),
            wellbeing_concern=True,
            observations_recorded=True,
        ),
        NeedRejected(
            reasons=[
                Reason(
                    field="data.window.latest",
                    message="latest must be after earliest",
                    code="value_error",
                )
            ],
            dead_letter_id=uuid.uuid4(),
            ingress_subject="linli.ingress.taian-zhiyuan.need.submit.v1",
            rejected_at=NOW,
        ),
    ]
