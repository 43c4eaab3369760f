"""servicekit's calendar arithmetic, shared by intake's plans and partners' templates."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from linli.servicekit.recurrence import (
    Schedule,
    WeeklyPeriod,
    due_dates,
    local_window,
    within_weekly,
)

pytestmark = pytest.mark.unit

SHANGHAI = "Asia/Shanghai"
FRIDAY_MORNING = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai


def test_a_window_is_local_and_one_ending_before_it_starts_runs_past_midnight() -> None:
    start, end = local_window(date(2026, 11, 20), time(22, 0), time(2, 0), SHANGHAI)
    assert start == datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
    assert end == datetime(2026, 11, 20, 18, 0, tzinfo=UTC)


def test_a_template_within_its_validity_generates_up_to_the_horizon() -> None:
    lunch = Schedule(
        weekdays=frozenset({1, 3, 5}),
        start_time=time(11, 0),
        end_time=time(12, 30),
        timezone=SHANGHAI,
        starts_on=date(2026, 11, 1),
        ends_on=date(2026, 11, 25),
    )
    days = due_dates(lunch, generated_until=None, now=FRIDAY_MORNING, horizon_days=7)
    assert days == [date(2026, 11, 20), date(2026, 11, 23), date(2026, 11, 25)]
    again = due_dates(lunch, generated_until=date(2026, 11, 27), now=FRIDAY_MORNING, horizon_days=7)
    assert again == []


def test_weekly_availability_meets_a_window_only_on_its_day_and_hours() -> None:
    afternoons = [WeeklyPeriod(weekday=5, start=time(14, 0), end=time(17, 0))]
    friday_3pm = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
    friday_10am = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    hour = friday_3pm - friday_10am
    assert within_weekly(afternoons, SHANGHAI, friday_3pm, friday_3pm + hour / 5)
    assert not within_weekly(afternoons, SHANGHAI, friday_10am, friday_10am + hour / 5)
    saturday_3pm = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)
    assert not within_weekly(afternoons, SHANGHAI, saturday_3pm, saturday_3pm + hour / 5)


def test_a_night_period_reaches_into_the_next_morning() -> None:
    nights = [WeeklyPeriod(weekday=4, start=time(22, 0), end=time(2, 0))]
    friday_1am = datetime(2026, 11, 19, 17, 0, tzinfo=UTC)  # Friday 01:00 in Shanghai
    assert within_weekly(nights, SHANGHAI, friday_1am, datetime(2026, 11, 19, 17, 30, tzinfo=UTC))
    friday_3am = datetime(2026, 11, 19, 19, 0, tzinfo=UTC)
    assert not within_weekly(nights, SHANGHAI, friday_3am, datetime(2026, 11, 19, 20, tzinfo=UTC))
