"""When a reminder is due (ADR 0043): pure rules of `reminders.reminder_due`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from linli.scheduling.reminders import ReminderPolicy, reminder_due

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def test_a_lead_time_before_the_window() -> None:
    policy = ReminderPolicy(lead_s=3600)
    start = NOW + timedelta(hours=3)
    assert reminder_due(policy, "repair", start, NOW) == start - timedelta(hours=1)
    assert reminder_due(policy, "elder_care_visit", start, NOW) == start - timedelta(hours=1)


def test_no_reminder_inside_the_lead_time_for_other_kinds_or_when_off() -> None:
    policy = ReminderPolicy(lead_s=3600)
    assert reminder_due(policy, "repair", NOW + timedelta(minutes=30), NOW) is None
    assert reminder_due(policy, "repair", NOW + timedelta(hours=1), NOW) is None
    assert reminder_due(policy, "meal_delivery", NOW + timedelta(hours=3), NOW) is None
    off = ReminderPolicy(lead_s=0)
    assert reminder_due(off, "repair", NOW + timedelta(hours=3), NOW) is None
    meals = ReminderPolicy(lead_s=600, kinds=frozenset({"meal_delivery"}))
    assert reminder_due(meals, "meal_delivery", NOW + timedelta(hours=1), NOW) is not None
