"""Recurring plans: which dates a plan serves and the window of each occurrence.

The calendar arithmetic is servicekit's (`recurrence`, shared with partners' slot
templates, ADR 0042); these names stay for intake's use cases and tests.
"""

from __future__ import annotations

from linli.servicekit.recurrence import Schedule, due_dates, horizon_end

__all__ = ["Schedule", "due_dates", "horizon_end"]
