"""Recurring plans: which dates a plan serves and the window of each occurrence.

Plain functions over dates and times (no I/O), so the calendar rules are unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Schedule:
    """When a plan's occurrences happen, in the community's local time."""

    weekdays: frozenset[int]  # ISO: 1 = Monday ... 7 = Sunday
    start_time: time
    end_time: time
    timezone: str
    starts_on: date
    ends_on: date | None

    def window_on(self, day: date) -> tuple[datetime, datetime]:
        """The occurrence's window on `day`, as aware datetimes."""
        zone = ZoneInfo(self.timezone)
        return (
            datetime.combine(day, self.start_time, tzinfo=zone),
            datetime.combine(day, self.end_time, tzinfo=zone),
        )


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
