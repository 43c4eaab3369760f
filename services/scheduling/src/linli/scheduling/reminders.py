"""Reminders before a due visit or repair (ADR 0043).

When an offer is accepted, a durable `reminder` timer (scheduling's `timers` table, the
same loop as SLA clocks) is set for the window's start minus the lead time. It fires
once, across restarts and replicas (the timer row is the claim), and only while the
same assignment is still accepted: a cancelled, completed, failed or re-offered need
closes it as stale. It emits `assignment.reminder_due`; notifications tells the helper.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from linli.contracts.events import AssignmentReminderDue, PartyKind, PartyRef

from .rules import NeedState

REMINDER = "reminder"
"""The timer kind."""


@dataclass(frozen=True)
class ReminderPolicy:
    """Which kinds are reminded and how long before their window starts."""

    lead_s: float = 3600.0
    kinds: frozenset[str] = frozenset({"elder_care_visit", "repair"})


def reminder_due(
    policy: ReminderPolicy, kind: str, window_earliest: datetime, now: datetime
) -> datetime | None:
    """When to remind the helper who accepted now, or None (not a reminded kind, no lead,
    or accepted inside the lead time: they have just said yes and need no reminder)."""
    if policy.lead_s <= 0 or kind not in policy.kinds:
        return None
    due = window_earliest - timedelta(seconds=policy.lead_s)
    return due if due > now else None


def reminder_event(
    need: asyncpg.Record, assignment: asyncpg.Record, timer: asyncpg.Record
) -> AssignmentReminderDue | None:
    """The reminder, when the timer's assignment is still the need's accepted one."""
    if (
        NeedState(need["state"]) is not NeedState.ASSIGNED
        or need["current_assignment"] != timer["assignment_id"]
        or assignment["state"] != "accepted"
    ):
        return None
    return AssignmentReminderDue.model_validate(
        {
            "assignment_id": assignment["id"],
            "need_id": need["id"],
            "assigned_to": PartyRef(
                kind=PartyKind(assignment["provider_kind"]), id=assignment["provider_id"]
            ),
            "kind": need["kind"],
            "urgency": need["urgency"],
            "window": {"earliest": need["window_earliest"], "latest": need["window_latest"]},
            "compound": need["compound"],
            "due_at": timer["due_at"],
        }
    )
