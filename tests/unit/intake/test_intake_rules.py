"""Intake's business rules, without servers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from linli.contracts.needs import NeedSpecAdapter
from linli.intake.rules import can_cancel, window_reasons
from linli.servicekit.idempotency import request_fingerprint

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def spec(latest: datetime):
    return NeedSpecAdapter.validate_python(
        {
            "kind": "meal_delivery",
            "resident_id": str(uuid.uuid4()),
            "window": {"earliest": (latest - timedelta(hours=1)).isoformat(), "latest": latest},
            "details": {},
        }
    )


def test_a_window_that_has_closed_is_refused() -> None:
    assert window_reasons(spec(NOW + timedelta(minutes=1)), NOW) == []
    (reason,) = window_reasons(spec(NOW), NOW)
    assert reason.field == "window.latest"
    assert reason.code == "window_in_past"


def test_fingerprint_ignores_key_order_but_not_values_or_community() -> None:
    a = request_fingerprint("c1", {"a": 1, "b": [1, 2]})
    assert a == request_fingerprint("c1", {"b": [1, 2], "a": 1})
    assert a != request_fingerprint("c1", {"a": 2, "b": [1, 2]})
    assert a != request_fingerprint("c2", {"a": 1, "b": [1, 2]})


@pytest.mark.parametrize(
    ("status", "allowed"),
    [
        ("submitted", True),
        ("scheduled", True),
        ("assigned", True),
        ("escalated", True),
        ("fulfilled", False),
        ("failed", False),
        ("cancelled", False),
    ],
)
def test_only_open_needs_can_be_cancelled(status: str, allowed: bool) -> None:
    assert can_cancel(status) is allowed
