"""Intake's business rules as plain functions (no I/O), so unit tests drive them."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from linli.contracts.needs import MealNeedSpec, RepairNeedSpec, VisitNeedSpec
from linli.contracts.types import Reason

AnyNeedSpec = MealNeedSpec | VisitNeedSpec | RepairNeedSpec


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


def request_fingerprint(community: str, body: dict[str, Any]) -> bytes:
    """A stable digest of a request body, to tell a retry from a different request."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{community}\n{canonical}".encode()).digest()


def can_cancel(status: str) -> bool:
    """Needs that are final cannot be cancelled."""
    return status not in {"fulfilled", "failed", "cancelled"}
