"""Staff actions on escalations (ADR 0034): acknowledge, assign, resolve.

Each runs in one transaction with the escalation's row locked: the state change, its
line in `escalation_actions` and the events it causes (through the outbox) commit
together. The resolve note is free text that may name people: it stays in scheduling and
the event says only whether there is one (`note_recorded`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel

from linli.contracts.envelope import new_event
from linli.contracts.events import (
    EscalationAcknowledged,
    EscalationAssigned,
    EscalationOutcome,
    EscalationResolved,
    StaffActor,
)
from linli.contracts.types import Role
from linli.servicekit import outbox
from linli.servicekit.db import Conn

from . import store
from .rules import EscalationAction, EscalationConflict, EscalationState, escalation_steps

SOURCE = "/linli/scheduling"


@dataclass(frozen=True)
class Staff:
    """Who acts: the caller's credential here (id, role, label), never a resident."""

    credential_id: uuid.UUID
    role: Role
    label: str = ""

    def event(self) -> StaffActor:
        # A label is checked when shown in an event (no control characters, 100 long):
        # an unusual one is cut and cleaned rather than refusing the action.
        clean = "".join(c for c in self.label if c.isprintable())[:100]
        return StaffActor(credential_id=self.credential_id, role=self.role, label=clean)

    def row(self) -> tuple[uuid.UUID, str, str]:
        return (self.credential_id, self.role.value, self.label)


class ActionNotFound(Exception):
    """The escalation or need does not exist in the community (answer 404)."""


class ActionRefused(Exception):
    """The action cannot be done as asked: 409 (state) or 422 (a field), with a code."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class EscalationRequest:
    """What an operator asks for; `assignee`/`outcome` only for assign/resolve."""

    action: EscalationAction
    assignee: str | None = None
    assignee_ref: str | None = None
    outcome: EscalationOutcome | None = None
    note: str | None = None


async def act_on_escalation(
    conn: Conn,
    community: str,
    escalation_id: uuid.UUID,
    request: EscalationRequest,
    staff: Staff,
    now: datetime,
) -> bool:
    """Apply one action; False when it changed nothing (a repeat of what is recorded).

    Raises ActionNotFound, or ActionRefused (409) for a transition the state machine
    forbids (`rules.escalation_steps`).
    """
    async with conn.transaction():
        row = await store.get_escalation(conn, community, escalation_id, for_update=True)
        if row is None:
            raise ActionNotFound("escalation")
        try:
            steps = escalation_steps(
                row["state"], request.action, same_as_recorded=_same(row, request)
            )
        except EscalationConflict as exc:
            raise ActionRefused(409, "escalation_resolved", str(exc)) from exc
        if not steps:
            return False
        events: list[BaseModel] = []
        base: dict[str, Any] = {
            "escalation_id": row["id"],
            "need_id": row["need_id"],
            "reason": row["reason"],
            "actor": staff.event(),
        }
        for step in steps:
            if step is EscalationState.ACKNOWLEDGED:
                await store.add_escalation_action(conn, row["id"], "acknowledged", staff.row(), now)
                events.append(EscalationAcknowledged(**base, acknowledged_at=now))
            elif step is EscalationState.ASSIGNED:
                await store.add_escalation_action(
                    conn,
                    row["id"],
                    "assigned",
                    staff.row(),
                    now,
                    assignee=request.assignee,
                    assignee_ref=request.assignee_ref,
                )
                events.append(
                    EscalationAssigned(
                        **base,
                        assignee=request.assignee or "",
                        assignee_ref=request.assignee_ref,
                        assigned_at=now,
                    )
                )
            else:
                assert request.outcome is not None
                recorded = bool(request.note)
                await store.add_escalation_action(
                    conn,
                    row["id"],
                    "resolved",
                    staff.row(),
                    now,
                    outcome=request.outcome.value,
                    note_recorded=recorded,
                )
                events.append(
                    EscalationResolved(
                        **base, outcome=request.outcome, note_recorded=recorded, resolved_at=now
                    )
                )
        final = steps[-1]
        resolved = final is EscalationState.RESOLVED
        await store.update_escalation(
            conn,
            row["id"],
            state=final.value,
            acknowledged_at=now,
            assigned_at=now if final is EscalationState.ASSIGNED else None,
            assignee=request.assignee,
            assignee_ref=request.assignee_ref,
            resolved_at=now if resolved else None,
            outcome=request.outcome.value if resolved and request.outcome else None,
            note=request.note if resolved else None,
        )
        await outbox.enqueue_many(
            conn,
            [
                new_event(e, community=community, source=SOURCE, subject=str(row["need_id"]))
                for e in events
            ],
        )
    return True


def _same(row: asyncpg.Record, request: EscalationRequest) -> bool:
    if request.action is EscalationAction.ASSIGN:
        return (row["assignee"], row["assignee_ref"]) == (request.assignee, request.assignee_ref)
    if request.action is EscalationAction.RESOLVE:
        outcome = request.outcome.value if request.outcome else None
        return (row["outcome"], row["note"]) == (outcome, request.note)
    return True
