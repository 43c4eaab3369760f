"""The reports' read model: the durable `console-reports` folds events into the
console's own tables (ADR 0038), through servicekit's one consumption path.

Each use case runs in the batch's transaction, which has claimed the event's inbox row,
so a redelivered event (or a replayed stream) changes nothing. Only ids, codes and times
are kept: no resident, no name, no free text (a cancellation's reason is not kept).
"""

from __future__ import annotations

from typing import Any

from linli.contracts.activities import AttendanceRecorded
from linli.contracts.events import (
    DeliveryFailed,
    EscalationResolved,
    Leg,
    MealDelivered,
    MealPrepared,
    NeedCancelled,
    NeedEscalated,
    NeedFulfilled,
    NeedSubmitted,
    PartnerAccepted,
    PointsAwarded,
    PointsRedeemed,
    RepairCompleted,
    ServiceCompleted,
    VisitCompleted,
    VolunteerConfirmed,
)
from linli.contracts.types import NeedKind
from linli.servicekit.consume import Received, Subscriptions
from linli.servicekit.db import Conn

from . import store

CONSUMER = "console-reports"
"""The durable's name and the inbox's consumer key."""


async def need_submitted(conn: Conn, received: Received[NeedSubmitted]) -> None:
    data = received.data
    await store.fold_need(
        conn,
        data.need_id,
        received.community,
        kind=data.kind.value,
        urgency=data.urgency.value,
        priority_group=data.priority_group.value,
        window_earliest=data.window.earliest,
        window_latest=data.window.latest,
        submitted_at=data.submitted_at,
    )


async def need_cancelled(conn: Conn, received: Received[NeedCancelled]) -> None:
    data = received.data
    await store.fold_need(conn, data.need_id, received.community, cancelled_at=data.cancelled_at)


async def partner_accepted(conn: Conn, received: Received[PartnerAccepted]) -> None:
    data = received.data
    if data.leg is Leg.PREPARE:
        return  # a two-leg meal is accepted when its carrier accepts (ADR 0044)
    await store.fold_need(conn, data.need_id, received.community, accepted_at=data.accepted_at)


async def volunteer_confirmed(conn: Conn, received: Received[VolunteerConfirmed]) -> None:
    data = received.data
    if data.leg is Leg.PREPARE:
        return
    await store.fold_need(conn, data.need_id, received.community, accepted_at=data.confirmed_at)


async def meal_delivered(conn: Conn, received: Received[MealDelivered]) -> None:
    data = received.data
    await store.fold_need(conn, data.need_id, received.community, arrived_at=data.delivered_at)
    await store.add_report_work(
        conn,
        received.event.id,
        received.community,
        data.need_id,
        NeedKind.MEAL_DELIVERY.value,
        (data.delivered_by.kind.value, data.delivered_by.id),
        None,
        data.delivered_at,
        data.cost_option,
    )


async def meal_prepared(conn: Conn, received: Received[MealPrepared]) -> None:
    """The canteen's leg of a two-leg meal (ADR 0044): its contribution counts for the
    canteen; the meal itself counts once, as the need, delivered by its carrier."""
    data = received.data
    await store.add_report_work(
        conn,
        received.event.id,
        received.community,
        data.need_id,
        NeedKind.MEAL_DELIVERY.value,
        (data.prepared_by.kind.value, data.prepared_by.id),
        None,
        data.prepared_at,
        data.cost_option,
    )


async def visit_completed(conn: Conn, received: Received[VisitCompleted]) -> None:
    data = received.data
    await store.fold_need(conn, data.need_id, received.community, arrived_at=data.started_at)
    await store.add_report_work(
        conn,
        received.event.id,
        received.community,
        data.need_id,
        NeedKind.ELDER_CARE_VISIT.value,
        (data.visited_by.kind.value, data.visited_by.id),
        data.started_at,
        data.ended_at,
        data.cost_option,
    )


async def repair_completed(conn: Conn, received: Received[RepairCompleted]) -> None:
    data = received.data
    await store.fold_need(conn, data.need_id, received.community, arrived_at=data.arrived_at)
    await store.add_report_work(
        conn,
        received.event.id,
        received.community,
        data.need_id,
        NeedKind.REPAIR.value,
        (data.repaired_by.kind.value, data.repaired_by.id),
        data.arrived_at,
        data.completed_at,
        data.cost_option,
    )


async def service_completed(conn: Conn, received: Received[ServiceCompleted]) -> None:
    """The generic completion of the kinds the catalogue added (ADR 0045): counted
    under the event's own kind."""
    data = received.data
    await store.fold_need(conn, data.need_id, received.community, arrived_at=data.started_at)
    await store.add_report_work(
        conn,
        received.event.id,
        received.community,
        data.need_id,
        data.kind.value,
        (data.served_by.kind.value, data.served_by.id),
        data.started_at,
        data.completed_at,
        data.cost_option,
    )


async def delivery_failed(conn: Conn, received: Received[DeliveryFailed]) -> None:
    data = received.data
    if data.leg is None:
        await store.fold_need(conn, data.need_id, received.community, failed_at=data.failed_at)
    # A leg of a two-leg meal is offered again (ADR 0044): the attempt counts as a failed
    # delivery, the need is not failed.
    await store.add_report_failure(
        conn,
        received.event.id,
        received.community,
        data.need_id,
        data.attempted_by.kind.value,
        data.reason.value,
        data.failed_at,
    )


async def need_fulfilled(conn: Conn, received: Received[NeedFulfilled]) -> None:
    data = received.data
    await store.fold_need(
        conn,
        data.need_id,
        received.community,
        kind=data.kind.value,
        fulfilled_at=data.fulfilled_at,
        fulfilled_by_kind=data.fulfilled_by.kind.value,
        fulfilled_by_id=data.fulfilled_by.id,
    )


async def need_escalated(conn: Conn, received: Received[NeedEscalated]) -> None:
    data = received.data
    await store.fold_need(conn, data.need_id, received.community, escalated_at=data.escalated_at)
    await store.add_report_escalation(
        conn, received.event.id, received.community, data.need_id, data.reason, data.escalated_at
    )


async def escalation_resolved(conn: Conn, received: Received[EscalationResolved]) -> None:
    data = received.data
    await store.add_report_resolution(
        conn,
        data.escalation_id,
        received.community,
        data.need_id,
        data.reason,
        data.outcome.value,
        data.resolved_at,
    )


async def points_awarded(conn: Conn, received: Received[PointsAwarded]) -> None:
    data = received.data
    await store.add_report_points(
        conn, received.event.id, received.community, data.volunteer_id, data.points, data.awarded_at
    )


async def points_redeemed(conn: Conn, received: Received[PointsRedeemed]) -> None:
    data = received.data
    await store.add_report_points(
        conn,
        received.event.id,
        received.community,
        data.volunteer_id,
        -data.points,
        data.redeemed_at,
    )


async def attendance_recorded(conn: Conn, received: Received[AttendanceRecorded]) -> None:
    await store.add_report_attendance(conn, received.community, received.data)


_USE_CASES: list[tuple[type[Any], Any]] = [
    (NeedSubmitted, need_submitted),
    (NeedCancelled, need_cancelled),
    (PartnerAccepted, partner_accepted),
    (VolunteerConfirmed, volunteer_confirmed),
    (MealDelivered, meal_delivered),
    (MealPrepared, meal_prepared),
    (VisitCompleted, visit_completed),
    (RepairCompleted, repair_completed),
    (ServiceCompleted, service_completed),
    (DeliveryFailed, delivery_failed),
    (NeedFulfilled, need_fulfilled),
    (NeedEscalated, need_escalated),
    (EscalationResolved, escalation_resolved),
    (PointsAwarded, points_awarded),
    (PointsRedeemed, points_redeemed),
    (AttendanceRecorded, attendance_recorded),
]


def subscriptions() -> Subscriptions:
    """The events the reports are folded from (ADR 0038)."""
    subs = Subscriptions(CONSUMER, description="the 台账 and reports' read model")
    for model, use_case in _USE_CASES:
        subs.on(model, use_case)
    return subs
