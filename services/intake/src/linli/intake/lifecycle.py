"""How lifecycle events from scheduling and partners move a need's status.

Events may arrive out of order (several relays, redeliveries), so a status only moves
forward: a late `assignment.offered` never undoes `assigned`, and nothing undoes
`fulfilled` or `cancelled`. `escalated` is not final: a helper may still accept, or
scheduling may offer again (an offer made after the escalation; one made before it and
delivered late leaves the need escalated). `failed` moves only to `escalated` (a welfare check) or a
final status, as scheduling never offers a failed need again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from linli.contracts.events import (
    AssignmentExpired,
    AssignmentOffered,
    AssignmentWithdrawn,
    DeliveryFailed,
    EscalationAcknowledged,
    EscalationAssigned,
    EscalationResolved,
    Leg,
    MealDelivered,
    MealPrepared,
    NeedDispatched,
    NeedEscalated,
    NeedFulfilled,
    NeedReoffered,
    PartnerAccepted,
    PartnerDeclined,
    RepairCompleted,
    ServiceCompleted,
    SlotReleased,
    SlotReserved,
    StaffActor,
    VisitCompleted,
    VolunteerConfirmed,
    VolunteerDeclined,
)

FINAL = frozenset({"fulfilled", "cancelled"})
FOLLOWED = (
    SlotReserved,
    SlotReleased,
    AssignmentOffered,
    AssignmentExpired,
    PartnerAccepted,
    PartnerDeclined,
    VolunteerConfirmed,
    VolunteerDeclined,
    MealDelivered,
    MealPrepared,
    VisitCompleted,
    RepairCompleted,
    ServiceCompleted,
    DeliveryFailed,
    NeedEscalated,
    NeedFulfilled,
    # Staff actions (ADR 0034): the timeline is the accountability record.
    EscalationAcknowledged,
    EscalationAssigned,
    EscalationResolved,
    NeedDispatched,
    NeedReoffered,
    AssignmentWithdrawn,
)
"""The events that move a need's status or add to its timeline (see `step_for`)."""


_PROGRESS = {"submitted": 0, "scheduled": 1, "offered": 2, "assigned": 3}


@dataclass(frozen=True)
class Step:
    """What one event means for a need."""

    need_id: Any
    status: str | None
    actor: str
    note: str | None = None
    assignee: tuple[str, Any] | None = None
    assignment_id: Any = None
    closes: Any = None  # the assignment this event closes (expired or declined)
    actor_label: str | None = None  # staff actions: the label of the credential that acted


def _staff(actor: StaffActor) -> tuple[str, str | None, str]:
    """(actor, its label, how the timeline names it) for a staff action."""
    label = actor.label or None
    return f"{actor.role.value}:{actor.credential_id}", label, label or actor.role.value


def _prepare_leg_step(data: Any) -> Step | None:
    """A canteen's leg of a two-leg meal (ADR 0044): timeline only. The need's status and
    its assignee (who may read the resident's contact) follow the carrier."""
    if getattr(data, "leg", None) is not Leg.PREPARE:
        return None
    match data:
        case AssignmentOffered():
            party = f"{data.offered_to.kind.value}:{data.offered_to.id}"
            return Step(data.need_id, None, "scheduling", f"prepare leg offered to {party}")
        case PartnerAccepted():
            return Step(
                data.need_id, None, f"partner:{data.partner_id}", "accepted the prepare leg"
            )
        case VolunteerConfirmed():
            return Step(
                data.need_id, None, f"volunteer:{data.volunteer_id}", "accepted the prepare leg"
            )
        case DeliveryFailed():
            party = f"{data.attempted_by.kind.value}:{data.attempted_by.id}"
            return Step(
                data.need_id,
                None,
                party,
                f"prepare leg failed: {data.reason.value}",
                closes=data.assignment_id,
            )
    return None


def step_for(data: Any) -> Step | None:
    """The step an event's data stands for; None for events intake does not follow."""
    prepare = _prepare_leg_step(data)
    if prepare is not None:
        return prepare
    match data:
        case SlotReserved():
            return Step(data.need_id, "scheduled", "scheduling", f"slot {data.slot_id}")
        case AssignmentOffered():
            party = f"{data.offered_to.kind.value}:{data.offered_to.id}"
            return Step(data.need_id, "offered", "scheduling", f"offered to {party}")
        case AssignmentExpired():
            return Step(
                data.need_id, None, "scheduling", "offer expired", closes=data.assignment_id
            )
        case SlotReleased():
            return Step(data.need_id, None, "scheduling", f"slot released: {data.reason.value}")
        case PartnerAccepted():
            return Step(
                data.need_id,
                "assigned",
                f"partner:{data.partner_id}",
                "accepted",
                ("partner", data.partner_id),
                data.assignment_id,
            )
        case VolunteerConfirmed():
            return Step(
                data.need_id,
                "assigned",
                f"volunteer:{data.volunteer_id}",
                "confirmed",
                ("volunteer", data.volunteer_id),
                data.assignment_id,
            )
        case PartnerDeclined():
            return Step(
                data.need_id,
                None,
                f"partner:{data.partner_id}",
                "declined",
                closes=data.assignment_id,
            )
        case VolunteerDeclined():
            return Step(
                data.need_id,
                None,
                f"volunteer:{data.volunteer_id}",
                "declined",
                closes=data.assignment_id,
            )
        case MealDelivered():
            party = f"{data.delivered_by.kind.value}:{data.delivered_by.id}"
            return Step(data.need_id, None, party, f"delivered, handed to {data.handed_to.value}")
        case VisitCompleted():
            party = f"{data.visited_by.kind.value}:{data.visited_by.id}"
            return Step(data.need_id, None, party, "visit completed")
        case RepairCompleted():
            party = f"{data.repaired_by.kind.value}:{data.repaired_by.id}"
            note = "repair completed" if data.fixed else "repair attempted, not fixed"
            return Step(data.need_id, None, party, note)
        case ServiceCompleted():
            party = f"{data.served_by.kind.value}:{data.served_by.id}"
            return Step(data.need_id, None, party, f"{data.kind.value} completed")
        case DeliveryFailed() if data.leg is Leg.CARRY:
            # The carry leg is offered to the next carrier (ADR 0044): not the need's end.
            party = f"{data.attempted_by.kind.value}:{data.attempted_by.id}"
            return Step(
                data.need_id,
                None,
                party,
                f"carry leg failed: {data.reason.value}",
                closes=data.assignment_id,
            )
        case DeliveryFailed():
            party = f"{data.attempted_by.kind.value}:{data.attempted_by.id}"
            return Step(data.need_id, "failed", party, f"failed: {data.reason.value}")
        case MealPrepared():
            party = f"{data.prepared_by.kind.value}:{data.prepared_by.id}"
            return Step(data.need_id, None, party, "meal prepared (prepare leg)")
        case NeedEscalated():
            return Step(data.need_id, "escalated", "scheduling", data.reason)
        case NeedFulfilled():
            return Step(data.need_id, "fulfilled", "scheduling", None)
    return _staff_step(data)


def _staff_step(data: Any) -> Step | None:
    """A staff action's timeline entry: who (actor and label) and what; no status change.

    The resolve note never travels (it stays in scheduling); the entry says whether one
    was written.
    """
    match data:
        case EscalationAcknowledged():
            actor, label, who = _staff(data.actor)
            note = f"escalation {data.reason} acknowledged by {who}"
            return Step(data.need_id, None, actor, note, actor_label=label)
        case EscalationAssigned():
            actor, label, who = _staff(data.actor)
            note = f"escalation {data.reason} assigned to {data.assignee} by {who}"
            return Step(data.need_id, None, actor, note, actor_label=label)
        case EscalationResolved():
            actor, label, who = _staff(data.actor)
            note = f"escalation {data.reason} resolved ({data.outcome.value}) by {who}"
            if data.note_recorded:
                note += "; note in scheduling"
            return Step(data.need_id, None, actor, note, actor_label=label)
        case NeedDispatched():
            actor, label, who = _staff(data.actor)
            party = f"{data.offered_to.kind.value}:{data.offered_to.id}"
            note = f"dispatched by hand to {party} by {who}"
            if data.without_capacity:
                note += " (no published capacity: override)"
            return Step(data.need_id, None, actor, note, actor_label=label)
        case NeedReoffered():
            actor, label, who = _staff(data.actor)
            return Step(data.need_id, None, actor, f"re-offered by {who}", actor_label=label)
        case AssignmentWithdrawn():
            actor, label, who = _staff(data.actor)
            party = f"{data.offered_to.kind.value}:{data.offered_to.id}"
            return Step(
                data.need_id,
                None,
                actor,
                f"offer to {party} withdrawn by {who}",
                closes=data.assignment_id,
                actor_label=label,
            )
    return None


def next_status(current: str, proposed: str | None, *, older: bool = False) -> str:
    """The status after an event proposing `proposed` reaches a need in `current`.

    `older`: the event happened before the one that last moved the need. An escalation
    undone only by a newer reservation or offer (scheduling matching again): an older one
    that arrives late (a redelivery after a paused consumer) changes nothing."""
    if proposed is None or current in FINAL:
        return current
    if proposed in FINAL or proposed in ("escalated", "failed"):
        return proposed
    if current == "failed":
        # Scheduling does not offer a failed need again; only an escalation (a welfare
        # check) or a final status follows.
        return current
    if current == "escalated":
        return current if older and proposed in ("scheduled", "offered") else proposed
    if _PROGRESS.get(proposed, 0) > _PROGRESS.get(current, 0):
        return proposed
    return current
