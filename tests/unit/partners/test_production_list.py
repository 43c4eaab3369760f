"""The canteen's production list (ADR 0044) and the prepare leg's report rule, without a
database: counts and diets per window and compound, nothing else."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from linli.contracts.events import PartyKind, PartyRef
from linli.partners import rules
from linli.partners.production import day_bounds, production_list, production_page

NOON = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai
LATE = datetime(2026, 12, 2, 4, 30, tzinfo=UTC)
EVENING = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _offer(status: str, compound: str | None, diets: list[str], portions: int, start=NOON):
    return {
        "window_earliest": start,
        "window_latest": LATE if start == NOON else EVENING.replace(hour=10),
        "compound": compound,
        "details": {"diet_needs": diets, "portions": portions},
        "status": status,
    }


def test_counts_portions_and_diets_per_window_and_compound() -> None:
    offers = [
        _offer("accepted", "致远小区", ["soft food", "low salt"], 2),
        _offer("completed", "致远小区", ["soft food"], 1),
        _offer("accepted", "阳光小区", [], 1),
        _offer("open", "阳光小区", ["low salt"], 3),  # not answered: pending, not cooked
        _offer("declined", "致远小区", ["halal"], 1),  # not the canteen's: not on the list
        _offer("withdrawn", "致远小区", ["halal"], 1),
        _offer("accepted", "致远小区", ["soft food"], 1, start=EVENING),
    ]
    listed = production_list(
        offers,
        partner_id=uuid.uuid4(),
        community="c",
        day=date(2026, 12, 2),
        timezone="Asia/Shanghai",
    )
    assert (listed.meals, listed.portions, listed.pending) == (4, 5, 1)
    assert [(d.diet, d.portions) for d in listed.diets] == [("soft food", 4), ("low salt", 2)]
    lines = [
        (line.window["earliest"], line.compound, line.meals, line.portions, line.pending)
        for line in listed.lines
    ]
    assert lines == [
        (NOON, "致远小区", 2, 3, 0),
        (NOON, "阳光小区", 1, 1, 1),
        (EVENING, "致远小区", 1, 1, 0),
    ]
    page = production_page(listed)
    assert "备餐清单" in page
    assert "Production list" in page
    assert "11:00 - 12:30" in page  # local times on the printed page
    assert "halal" not in page


def test_a_day_is_read_in_the_lists_time_zone() -> None:
    start, end = day_bounds(date(2026, 12, 2), "Asia/Shanghai")
    assert start == datetime(2026, 12, 1, 16, 0, tzinfo=UTC)
    assert end == datetime(2026, 12, 2, 16, 0, tzinfo=UTC)


def test_a_prepare_leg_is_reported_prepared_or_failed_never_delivered() -> None:
    assert rules.report_reasons("meal_delivery", "meal_prepared", "prepare") == []
    assert rules.report_reasons("meal_delivery", "failed", "prepare") == []
    (reason,) = rules.report_reasons("meal_delivery", "meal_delivered", "prepare")
    assert reason.code == "outcome_mismatch"
    assert rules.report_reasons("meal_delivery", "meal_delivered", "carry") == []
    (reason,) = rules.report_reasons("meal_delivery", "meal_prepared", None)
    assert reason.code == "outcome_mismatch"
    volunteer = PartyRef(kind=PartyKind.VOLUNTEER, id=uuid.uuid4())
    assert rules.points_for("meal_delivery", volunteer, "meal_prepared", {"meal_delivery": 10}) == 0
