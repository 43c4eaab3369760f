"""The reports' arithmetic (pure): months, statuses, SLA tiers, the CSV."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from linli.console import reports

pytestmark = pytest.mark.unit

SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


def need(**facts: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kind": "repair",
        "urgency": "routine",
        "priority_group": "none",
        "window_earliest": T0,
        "window_latest": T0 + timedelta(hours=2),
        "submitted_at": T0,
        "accepted_at": None,
        "arrived_at": None,
        "fulfilled_at": None,
        "failed_at": None,
        "cancelled_at": None,
        "escalated_at": None,
    }
    row.update(facts)
    return row


def build(needs: list[dict[str, Any]], now: datetime, **rows: Any) -> dict[str, Any]:
    every = {"needs": needs, "escalations": [], "failures": [], "work": [], "points": []}
    every.update(rows)
    return reports.build(
        every,
        month="2026-03",
        scope={"community": "a"},
        communities=["a"],
        timezone="Asia/Shanghai",
        now=now,
        meal_minutes=30,
    )


def test_months_are_local_and_malformed_ones_refused() -> None:
    start, end = reports.month_bounds("2026-12", SHANGHAI)
    assert start == datetime(2026, 12, 1, tzinfo=SHANGHAI)
    assert end == datetime(2027, 1, 1, tzinfo=SHANGHAI)
    assert start.astimezone(UTC) == datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    for bad in ("2026-13", "2026-1", "26-01", "2026-00", "1999-01", "2026-01x"):
        with pytest.raises(ValueError, match="month"):
            reports.month_bounds(bad, SHANGHAI)


def test_status_is_the_furthest_fact() -> None:
    assert reports.status_of(need()) == "submitted"
    assert reports.status_of(need(accepted_at=T0)) == "accepted"
    assert reports.status_of(need(accepted_at=T0, escalated_at=T0)) == "escalated"
    assert reports.status_of(need(failed_at=T0, escalated_at=T0)) == "failed"
    assert reports.status_of(need(failed_at=T0, fulfilled_at=T0)) == "fulfilled"
    assert reports.status_of(need(cancelled_at=T0, escalated_at=T0)) == "cancelled"


def test_sla_tiers_met_missed_and_pending() -> None:
    minute = timedelta(minutes=1)
    needs = [
        # emergency: accepted at 9 min (met), on site at 31 (missed)
        need(urgency="emergency", accepted_at=T0 + 9 * minute, arrived_at=T0 + 31 * minute),
        # emergency not accepted, 5 minutes in: both pending
        need(urgency="emergency", submitted_at=T0 + 55 * minute),
        # priority repair on site after 23 h: met; a routine repair has no 24 h promise
        need(priority_group="disabled", arrived_at=T0 + timedelta(hours=23)),
        need(),
        # meals: in the window, before it, failed without a delivery, cancelled
        need(kind="meal_delivery", arrived_at=T0 + 30 * minute),
        need(kind="meal_delivery", arrived_at=T0 - minute),
        need(kind="meal_delivery", failed_at=T0 + minute),
        need(kind="meal_delivery", cancelled_at=T0 + minute),
    ]
    report = build(needs, now=T0 + 60 * minute)
    sla = {(s["tier"], s["kind"]): s for s in report["sla"]}
    assert sla[("emergency_accepted", "repair")] == {
        "tier": "emergency_accepted", "kind": "repair", "eligible": 2, "met": 1, "missed": 0,
        "pending": 1,
    }  # fmt: skip
    assert (
        sla[("emergency_on_site", "repair")]["met"],
        sla[("emergency_on_site", "repair")]["missed"],
    ) == (0, 1)
    assert sla[("repair_24h", "repair")]["eligible"] == 1
    assert sla[("repair_24h", "repair")]["met"] == 1
    meals = sla[("meal_in_window", "meal_delivery")]
    assert (meals["eligible"], meals["met"], meals["missed"], meals["pending"]) == (3, 1, 2, 0)
    # Two hours later the emergency's clocks have run out unmet.
    later = build(needs, now=T0 + timedelta(hours=3))
    late = {(s["tier"], s["kind"]): s for s in later["sla"]}
    assert late[("emergency_accepted", "repair")]["missed"] == 1
    assert late[("emergency_accepted", "repair")]["pending"] == 0


def test_volunteer_minutes_measured_and_approximated_points_and_partners() -> None:
    volunteer, partner = uuid.uuid4(), uuid.uuid4()
    work = [
        {"kind": "elder_care_visit", "party_kind": "volunteer", "party_id": volunteer,
         "started_at": T0, "ended_at": T0 + timedelta(minutes=45)},
        {"kind": "meal_delivery", "party_kind": "volunteer", "party_id": volunteer,
         "started_at": None, "ended_at": T0},
        {"kind": "meal_delivery", "party_kind": "partner", "party_id": partner,
         "started_at": None, "ended_at": T0, "cost_option": "free"},
        {"kind": "meal_delivery", "party_kind": "partner", "party_id": partner,
         "started_at": None, "ended_at": T0, "cost_option": "free"},
        {"kind": "repair", "party_kind": "partner", "party_id": partner,
         "started_at": T0, "ended_at": T0, "cost_option": "low_cost"},
        {"kind": "repair", "party_kind": "partner", "party_id": partner,
         "started_at": T0, "ended_at": T0, "cost_option": None},
    ]  # fmt: skip
    points = [{"volunteer_id": volunteer, "points": 10}, {"volunteer_id": volunteer, "points": -4}]
    report = build([], now=T0, work=work, points=points)
    assert report["volunteers"] == {
        "active": 1,
        "minutes_measured": 45,
        "meal_deliveries": 1,
        "minutes_approximated": 30,
        "points_awarded": 10,
        "points_redeemed": 4,
    }
    # What each partner delivered, by what the resident paid (unknown for old events).
    p = str(partner)
    assert report["partners"] == [
        {"partner_id": p, "kind": "meal_delivery", "delivered": 2, "cost_option": "free"},
        {"partner_id": p, "kind": "repair", "delivered": 1, "cost_option": None},
        {"partner_id": p, "kind": "repair", "delivered": 1, "cost_option": "low_cost"},
    ]
    rows = [r for r in reports.flatten(report) if r[0] == "partners"]
    assert [(r[1], r[3], r[5]) for r in rows] == [
        ("meal_delivery", "free", 2),
        ("repair", "unknown", 1),
        ("repair", "low_cost", 1),
    ]
    assert str(volunteer) not in repr(report)  # aggregates only


def test_csv_has_a_bom_and_every_figure_of_the_json() -> None:
    report = build(
        [need(kind="meal_delivery", arrived_at=T0, fulfilled_at=T0)],
        now=T0,
        escalations=[{"kind": "meal_delivery", "reason": "welfare_check", "outcome": None}],
        failures=[{"kind": None, "reason": "not_home", "party_kind": "volunteer"}],
    )
    body = reports.to_csv(report)
    assert body.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert tuple(rows[0]) == reports.CSV_HEADER
    parsed = [(*r[:5], int(r[5])) for r in rows[1:]]
    assert parsed == reports.flatten(report)
    assert ("escalations", "meal_delivery", "welfare_check", "open", "count", 1) in parsed
    assert ("failed_deliveries", "unknown", "not_home", "volunteer", "count", 1) in parsed
