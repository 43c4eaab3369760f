"""When a message may go: quiet hours and retry backoff (pure functions)."""

from __future__ import annotations

import random
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str, default: str = "Asia/Shanghai") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def quiet_until(
    now: datetime, start: time | None, end: time | None, tz: ZoneInfo
) -> datetime | None:
    """The end of the quiet period `now` falls in, or None when it is not quiet.

    Quiet hours are local times in the recipient's time zone; `start > end` wraps
    midnight (22:00-07:00). `start == end` means no quiet hours.
    """
    if start is None or end is None or start == end:
        return None
    local = now.astimezone(tz)
    t = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= t < end
        end_day = local.date()
    else:
        inside = t >= start or t < end
        end_day = local.date() + timedelta(days=1) if t >= start else local.date()
    if not inside:
        return None
    return datetime.combine(end_day, end, tzinfo=tz)


def due_at(
    when: datetime,
    *,
    emergency: bool,
    quiet_start: time | None,
    quiet_end: time | None,
    tz: ZoneInfo,
) -> datetime:
    """`when`, moved to the end of quiet hours unless the message is an emergency."""
    if emergency:
        return when
    until = quiet_until(when, quiet_start, quiet_end, tz)
    return when if until is None else until


def backoff(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds before attempt `attempts + 1`: exponential with +-20 % jitter, capped."""
    delay = min(base * (2 ** max(attempts - 1, 0)), cap)
    jitter = (rng or random).uniform(0.8, 1.2)
    return float(min(delay * jitter, cap))
