"""Partners' contributions at group activities in the month's report (ADR 0046)."""

from __future__ import annotations

import uuid

import pytest

from linli.console.reports import activity_contributions, flatten

pytestmark = pytest.mark.unit


def _row(
    partner: uuid.UUID, activity: uuid.UUID, stall: uuid.UUID, session: uuid.UUID, attended: bool
) -> dict[str, object]:
    return {
        "partner_id": partner,
        "activity_id": activity,
        "stall_id": stall,
        "session_id": session,
        "attended": attended,
    }


def test_contributions_count_what_each_partner_served() -> None:
    p1, p2, a, b = (uuid.uuid4() for _ in range(4))
    st1, st2, st3 = (uuid.uuid4() for _ in range(3))
    se1, se2, se3, se4 = (uuid.uuid4() for _ in range(4))
    rows = [
        _row(p1, a, st1, se1, True),
        _row(p1, a, st1, se1, True),
        _row(p1, a, st1, se2, False),  # a no-show serves nobody
        _row(p1, b, st2, se3, True),
        _row(p2, a, st3, se4, False),  # nobody attended: no contribution
    ]
    assert activity_contributions(rows) == [
        {
            "partner_id": str(p1),
            "activities": 2,
            "stalls": 2,
            "sessions": 2,
            "residents_attended": 3,
        }
    ]


def test_flatten_carries_the_contributions() -> None:
    report = {
        "needs": [],
        "sla": [],
        "failed_deliveries": [],
        "escalations": [],
        "partners": [],
        "volunteers": {},
        "activities": [
            {
                "partner_id": "p",
                "activities": 1,
                "stalls": 2,
                "sessions": 3,
                "residents_attended": 4,
            }
        ],
    }
    assert ("activities", "", "p", "", "residents_attended", 4) in flatten(report)
