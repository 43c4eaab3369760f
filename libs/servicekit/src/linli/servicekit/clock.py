"""Injectable time, so rules about the past, expiry and SLA clocks can be tested."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass
class Clock:
    """The current time in UTC, or a fixed moment in tests."""

    fixed: datetime | None = field(default=None)

    def now(self) -> datetime:
        return self.fixed or datetime.now(UTC)
