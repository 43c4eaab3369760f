"""Calendar arithmetic of recurring things, written once (ADR 0042).

Intake's recurring plans ("lunch every weekday"), partners' slot templates ("the lunch
round, Monday to Friday, 11:00-12:30") and volunteers' weekly availability are all a set
of ISO weekdays and a local window in an IANA time zone. These plain functions (no I/O)
turn them into dated, aware windows, so the calendar rules are unit-tested in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "Schedule",
    "WeeklyPeriod",
    "due_dates",
    "horizon_end",
    "local_window",
    "within_weekly",
]


def local_window(day: date, start: time, end: time, timezone: str) -> tuple[datetime, datetime]:
    """The window from `start` to `end` local time on `day`, as aware datetimes.

    An end at or before the start runs past midnight into the next day.
    """
    zone = ZoneInfo(timezone)
    earliest = datetime.combine(day, start, tzinfo=zone)
    end_day = day if end > start else day + timedelta(days=1)
    return earliest, datetime.combine(end_day, end, tzinfo=zone)


@dataclass(frozen=True)
class Schedule:
    """When a recurring thing's occurrences happen, in local time."""

    weekdays: frozenset[int]  # ISO: 1 = Monday ... 7 = Sunday
    start_time: time
    end_time: time
    timezone: str
    starts_on: date
    ends_on: date | None

    def window_on(self, day: date) -> tuple[datetime, datetime]:
        """The occurrence's window on `day`, as aware datetimes."""
        return local_window(day, self.start_time, self.end_time, self.timezone)


def due_dates(
    schedule: Schedule, *, generated_until: date | None, now: datetime, horizon_days: int
) -> list[date]:
    """Dates to generate now: after what was generated, up to the horizon, whose
    window has not yet closed."""
    today = now.astimezone(ZoneInfo(schedule.timezone)).date()
    first = max(schedule.starts_on, today)
    if generated_until is not None:
        first = max(first, generated_until + timedelta(days=1))
    last = today + timedelta(days=horizon_days)
    if schedule.ends_on is not None:
        last = min(last, schedule.ends_on)
    days = []
    day = first
    while day <= last:
        if day.isoweekday() in schedule.weekdays and schedule.window_on(day)[1] > now:
            days.append(day)
        day += timedelta(days=1)
    return days


def horizon_end(now: datetime, timezone: str, horizon_days: int) -> date:
    """The last date generated so far once a pass has run."""
    return now.astimezone(ZoneInfo(timezone)).date() + timedelta(days=horizon_days)


@dataclass(frozen=True)
class WeeklyPeriod:
    """A period that recurs every week: ISO weekday, local start and end (an end at or
    before the start runs past midnight)."""

    weekday: int
    start: time
    end: time


def within_weekly(
    periods: Iterable[WeeklyPeriod], timezone: str, earliest: datetime, latest: datetime
) -> bool:
    """Whether the window (`earliest`, `latest`) overlaps some occurrence of `periods`.

    Occurrences starting the day before the window's first local day are included: a
    period running past midnight reaches into it. Scheduling's SQL matcher computes the
    same predicate (its store module); the two are kept equal by a test.
    """
    zone = ZoneInfo(timezone)
    first = earliest.astimezone(zone).date() - timedelta(days=1)
    last = latest.astimezone(zone).date()
    by_day: dict[int, list[WeeklyPeriod]] = {}
    for period in periods:
        by_day.setdefault(period.weekday, []).append(period)
    day = first
    while day <= last:
        for period in by_day.get(day.isoweekday(), ()):
            start, end = local_window(day, period.start, period.end, timezone)
            if start < latest and end > earliest:
                return True
        day += timedelta(days=1)
    return False
