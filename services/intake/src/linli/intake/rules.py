"""Intake's business rules as plain functions (no I/O), so unit tests drive them."""

from __future__ import annotations

from datetime import datetime

from linli.contracts.needs import NeedSpecBase
from linli.contracts.types import Reason

AnyNeedSpec = NeedSpecBase
"""A need of any catalogued kind (`linli.contracts.needs.NEED_SPECS`)."""


def window_reasons(spec: AnyNeedSpec, now: datetime) -> list[Reason]:
    """A need whose window has already closed cannot be served."""
    if spec.window.latest <= now:
        return [
            Reason(
                field="window.latest",
                message="the window has already passed",
                code="window_in_past",
            )
        ]
    return []


def can_cancel(status: str) -> bool:
    """Needs that are final cannot be cancelled."""
    return status not in {"fulfilled", "failed", "cancelled"}
