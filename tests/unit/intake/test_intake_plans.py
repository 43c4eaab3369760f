"""The calendar rules of recurring plans."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from linli.intake.plans import Schedule, due_dates

pytestmark = pytest.mark.unit

WEEKDAYS = Schedule(
    weekdays=frozenset({1, 2, 3, 4, 5}),
    start_time=time(11, 0),
    end_time=time(12, 30),
    timezone="Asia/Shanghai",
    starts_on=date(2026, 11, 1),
    ends_on=None,
)
# Friday 2026-11-20, 09:00 in Shanghai.
FRIDAY_MORNING = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)


def test_weekday_lunches_skip_the_weekend() -> None:
    days = due_dates(WEEKDAYS, generated_until=None, now=FRIDAY_MORNING, horizon_days=3)
    assert days == [date(2026, 11, 20), date(2026, 11, 23)]


def test_a_window_that_has_closed_today_is_not_generated() -> None:
    afternoon = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)  # 14:00 in Shanghai
    days = due_dates(WEEKDAYS, generated_until=None, now=afternoon, horizon_days=3)
    assert days == [date(2026, 11, 23)]


def test_generation_resumes_after_what_was_generated_and_stops_at_the_end() -> None:
    days = due_dates(
        WEEKDAYS, generated_until=date(2026, 11, 23), now=FRIDAY_MORNING, horizon_days=6
    )
    assert days == [date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 26)]
    ending = Schedule(**{**WEEKDAYS.__dict__, "ends_on": date(2026, 11, 24)})
    assert due_dates(ending, generated_until=None, now=FRIDAY_MORNING, horizon_days=6) == [
        date(2026, 11, 20),
        date(2026, 11, 23),
        date(2026, 11, 24),
    ]


def test_window_is_in_local_time() -> None:
    earliest, latest = WEEKDAYS.window_on(date(2026, 11, 23))
    assert earliest.astimezone(UTC) == datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    assert (latest - earliest).seconds == 90 * 60
