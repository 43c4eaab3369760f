"""Intake's use cases. Each runs in one transaction: state change, timeline and the
outbox rows it causes commit together (DESIGN.md section 6, rule 1)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import asyncpg

from linli.contracts.envelope import CloudEvent, new_event
from linli.contracts.events import NeedCancelled, NeedRejected, NeedSubmitted
from linli.contracts.needs import NeedSpecAdapter, ResidentSpec, shared_details
from linli.contracts.types import Reason, Role
from linli.servicekit import outbox
from linli.servicekit.clock import Clock
from linli.servicekit.consume import Received, Subscriptions
from linli.servicekit.csvimport import Action, ExternalRef
from linli.servicekit.db import Conn
from linli.servicekit.idempotency import Idempotency, check_replay
from linli.servicekit.messaging import DeadLetter, store_dead_letter

from . import lifecycle, plans, store
from .rules import AnyNeedSpec, can_cancel, window_reasons

SOURCE = "/linli/intake"


class Rejected(Exception):
    """The request is well-formed but cannot be accepted; reasons say why."""

    def __init__(self, reasons: list[Reason], *, status: int = 422) -> None:
        super().__init__("; ".join(f"{r.field}: {r.message}" for r in reasons))
        self.reasons = reasons
        self.status = status


class NotFound(Exception):
    """The resource does not exist in this community (or the caller may not see it)."""


class Conflict(Exception):
    """The request conflicts with the resource's state or an earlier request."""


@dataclass(frozen=True)
class Actor:
    """Who asked for the change, recorded in the timeline (an id, never a name)."""

    role: Role
    ref: str
    staff_label: str | None = None
    """The credential's label (which staff desk or member), shown on the timeline."""

    def label(self) -> str:
        return f"{self.role.value}:{self.ref}"


@dataclass(frozen=True)
class SubmitResult:
    need_id: uuid.UUID
    created: bool


async def create_resident(conn: Conn, community: str, spec: ResidentSpec) -> asyncpg.Record:
    if not await store.community_exists(conn, community):
        raise NotFound("community")
    return await store.insert_resident(conn, community, spec)


class ResidentImport(ResidentSpec):
    """One row of a residents CSV import: a resident and its id in the community's records."""

    external_ref: ExternalRef


def resident_unchanged(row: asyncpg.Record, spec: ResidentSpec) -> bool:
    """Whether a stored resident already holds what an import row says."""
    return (
        row["name"] == spec.name
        and row["phone"] == spec.phone
        and row["address"] == spec.address
        and row["compound"] == spec.compound
        and row["priority_group"] == spec.priority_group.value
        and row["consent_to_share_contact"] == spec.consent_to_share_contact
        and row["locale"] == spec.locale
    )


async def import_resident(conn: Conn, community: str, row: ResidentImport) -> Action:
    """Create or update the resident a CSV row names by `external_ref` (ADR 0035).

    Runs inside the import's transaction; the same row twice is `unchanged`. Residents
    are personal data and no event carries them, so an import publishes nothing.
    """
    existing = await store.resident_by_ref(conn, community, row.external_ref)
    if existing is None:
        await store.insert_imported_resident(conn, community, row, row.external_ref)
        return "created"
    if resident_unchanged(existing, row):
        return "unchanged"
    await store.update_resident(conn, existing["id"], row)
    return "updated"


async def submit_need(
    conn: Conn,
    community: str,
    spec: AnyNeedSpec,
    actor: Actor,
    *,
    clock: Clock,
    idempotency: Idempotency | None = None,
    ingress: tuple[str, str] | None = None,
    traceparent: str | None = None,
) -> SubmitResult:
    """Accept a need and announce it as `need.submitted`, exactly once.

    `idempotency` (HTTP) and `ingress` (CloudEvent source and id) make a retry return
    the need created the first time instead of a second one; both are keyed within the
    community (another community's command with the same key is a command of its own).
    """
    now = clock.now()
    known, resident = await store.submission_context(conn, community, spec.resident_id)
    if not known:
        raise NotFound("community")
    async with conn.transaction():
        need_id = uuid.uuid4()
        if idempotency is not None:
            earlier = await store.claim_idempotency_key(
                conn,
                community,
                idempotency.credential_id,
                idempotency.key,
                idempotency.fingerprint,
                need_id,
            )
            if earlier is not None:
                check_replay(idempotency, earlier["request_sha256"])
                return SubmitResult(earlier["need_id"], created=False)
        reasons = window_reasons(spec, now)
        if resident is None:
            reasons.append(
                Reason(field="resident_id", message="no such resident", code="unknown_resident")
            )
        if reasons:
            raise Rejected(reasons)
        assert resident is not None
        created = await store.insert_need(
            conn,
            need_id=need_id,
            community=community,
            spec=spec,
            priority_group=resident.priority_group,
            submitted_by=actor.label(),
            submitted_at=now,
            ingress=ingress,
        )
        if not created:
            assert ingress is not None
            return SubmitResult(
                await store.need_id_for_ingress(conn, community, *ingress), created=False
            )
        event = new_event(
            NeedSubmitted(
                need_id=need_id,
                resident_id=spec.resident_id,
                kind=spec.kind,
                urgency=spec.urgency,
                window=spec.window,
                # A repair's description stays here (ADR 0031).
                details=shared_details(spec.details),
                priority_group=resident.priority_group,
                compound=resident.compound,
                submitted_at=now,
                source=spec.source,
            ),
            community=community,
            source=SOURCE,
            subject=str(need_id),
            traceparent=traceparent,
        )
        await outbox.enqueue(conn, event)
    return SubmitResult(need_id, created=True)


async def cancel_need(
    conn: Conn,
    community: str,
    need_id: uuid.UUID,
    reason: str | None,
    actor: Actor,
    *,
    clock: Clock,
) -> None:
    """Cancel an open need and announce `need.cancelled` (scheduling frees capacity)."""
    now = clock.now()
    async with conn.transaction():
        row = await store.get_need(conn, community, need_id, for_update=True)
        if row is None:
            raise NotFound("need")
        if row["status"] == "cancelled":
            return
        if not can_cancel(row["status"]):
            raise Conflict(f"a {row['status']} need cannot be cancelled")
        await store.cancel_need(conn, need_id, reason, now)
        await store.add_timeline(
            conn, need_id, "cancelled", actor.label(), reason, actor.staff_label
        )
        await outbox.enqueue(
            conn,
            new_event(
                NeedCancelled(
                    need_id=need_id,
                    # Free text may name people; it stays in intake's timeline.
                    reason=None,
                    cancelled_by_role=actor.role,
                    cancelled_at=now,
                ),
                community=community,
                source=SOURCE,
                subject=str(need_id),
            ),
        )


@dataclass(frozen=True)
class RejectedIngress:
    dead_letter_id: uuid.UUID
    new: bool
    announced: bool


async def reject_ingress(
    conn: Conn,
    *,
    consumer: str,
    subject: str,
    headers: dict[str, str],
    payload: bytes,
    reasons: list[Reason],
    community: str | None,
    event: CloudEvent[Any] | None,
    clock: Clock,
) -> RejectedIngress:
    """Keep a rejected command whole and announce `need.rejected`, once.

    The same message seen twice (request path and stream path, or a redelivery) keeps
    one dead letter and one event. A rejection for a community intake does not know
    is kept but not announced: no community's subscribers should see it.
    """
    # Per community, like accepted commands: B's rejection is B's, not a repeat of A's.
    dedupe = f"{consumer}:{community}:{event.source}:{event.id}" if event is not None else None
    async with conn.transaction():
        letter_id, inserted = await store_dead_letter(
            conn,
            DeadLetter(
                consumer=consumer,
                subject=subject,
                headers=headers,
                payload=payload,
                reasons=reasons,
                dedupe_key=dedupe,
            ),
        )
        announce = (
            inserted and community is not None and await store.community_exists(conn, community)
        )
        if announce:
            assert community is not None
            await outbox.enqueue(
                conn,
                new_event(
                    NeedRejected(
                        reasons=reasons[:50],
                        dead_letter_id=letter_id,
                        ingress_subject=subject[:256],
                        source_system=event.source if event else None,
                        source_event_id=event.id if event else None,
                        rejected_at=clock.now(),
                    ),
                    community=community,
                    source=SOURCE,
                ),
            )
    return RejectedIngress(letter_id, inserted, announce)


def lifecycle_subscriptions(name: str, clock: Clock) -> Subscriptions:
    """The lifecycle events intake follows for the operator's view of a need."""
    subs = Subscriptions(
        name, description="lifecycle events from scheduling and partners: status and timeline"
    )

    async def use_case(conn: Conn, received: Received[Any]) -> bool:
        return await follow_lifecycle(conn, received.event, received.data, clock=clock)

    for model in lifecycle.FOLLOWED:
        subs.on(model, use_case)
    return subs


async def follow_lifecycle(conn: Conn, event: CloudEvent[Any], data: Any, *, clock: Clock) -> bool:
    """Record what a lifecycle event says about one of our needs; False if ignored.

    Runs in the consumer's transaction, which claimed the event's inbox row: status and
    timeline commit with it, so a redelivered event adds no second timeline entry.
    """
    step = lifecycle.step_for(data)
    if step is None:
        return False
    at = event.time or clock.now()
    row = await store.need_state(conn, event.community, step.need_id)
    if row is None:
        return False
    if step.closes is not None:
        await store.close_assignment(conn, step.need_id, step.closes)
        if row["assignment_id"] == step.closes and row["status"] == "assigned":
            # Scheduling never heard this acceptance in time: nobody is assigned.
            await store.clear_assignee(conn, step.need_id, "offered", at)
            await store.add_timeline(
                conn,
                step.need_id,
                "offered",
                step.actor,
                f"{step.note}; assignee removed",
                step.actor_label,
            )
            return True
    if step.assignee is not None and await store.assignment_closed(conn, step.assignment_id):
        # An answer to an offer that had already closed changes nothing.
        await store.add_timeline(
            conn, step.need_id, row["status"], step.actor, "late answer to a closed offer"
        )
        return True
    older = row["status_at"] is not None and at < row["status_at"]
    status = lifecycle.next_status(row["status"], step.status, older=older)
    assignee = None
    if step.assignee is not None and status == "assigned":
        assignee = (step.assignee[0], step.assignee[1])
    await store.update_need_progress(
        conn,
        step.need_id,
        status,
        at,
        assignee,
        step.assignment_id if assignee else None,
        timeline=(step.status or row["status"], step.actor, step.note),
        actor_label=step.actor_label,
        asserts_status=step.status is not None and status == step.status,
    )
    return True


PLAN_SOURCE = "linli-plans"


def _schedule_of(row: Any) -> plans.Schedule:
    return plans.Schedule(
        weekdays=frozenset(row["weekdays"]),
        start_time=row["start_time"],
        end_time=row["end_time"],
        timezone=row["timezone"],
        starts_on=row["starts_on"],
        ends_on=row["ends_on"],
    )


async def create_plan(
    conn: Conn, community: str, values: dict[str, Any], actor: Actor
) -> asyncpg.Record:
    """Register a recurring plan; its needs are generated ahead by `generate_plan_needs`."""
    async with conn.transaction():
        if not await store.community_exists(conn, community):
            raise NotFound("community")
        if await store.resident_for_need(conn, community, values["resident_id"]) is None:
            raise Rejected(
                [Reason(field="resident_id", message="no such resident", code="unknown_resident")]
            )
        return await store.insert_plan(
            conn, uuid.uuid4(), community, {**values, "created_by": actor.label()}
        )


async def set_plan_paused(
    conn: Conn, community: str, plan_id: uuid.UUID, paused: bool, actor: Actor, *, clock: Clock
) -> asyncpg.Record:
    """Pause (a hospital stay) or resume a plan. Pausing cancels the needs already
    generated for days that have not started; resuming generates from today on."""
    async with conn.transaction():
        plan = await store.get_plan(conn, community, plan_id, for_update=True)
        if plan is None:
            raise NotFound("plan")
        await store.set_plan_paused(conn, plan_id, paused)
        if paused:
            cancelled = await store.future_plan_needs(conn, plan_id, clock.now())
            for need_id in cancelled:
                await cancel_need(conn, community, need_id, "plan paused", actor, clock=clock)
            # Those days are free again: resuming before them generates them anew.
            await store.forget_occurrences(conn, plan_id, cancelled)
        row = await store.get_plan(conn, community, plan_id)
    assert row is not None
    return row


async def generate_plan_needs(
    conn: Conn, *, clock: Clock, horizon_days: int, batch: int = 50
) -> int:
    """Create the needs of every active plan up to the horizon, exactly once.

    Plans are locked with SKIP LOCKED, so two intake processes share the work; the
    occurrence's primary key makes a date's need exactly once even across restarts.
    """
    now = clock.now()
    created = 0
    async with conn.transaction():
        horizon = (now + timedelta(days=horizon_days)).date()
        for plan in await store.plans_due(conn, horizon, batch):
            schedule = _schedule_of(plan)
            due = plans.due_dates(
                schedule,
                generated_until=plan["generated_until"],
                now=now,
                horizon_days=horizon_days,
            )
            for day in due:
                if await _generate_occurrence(conn, plan, schedule, day, clock=clock):
                    created += 1
            until = plans.horizon_end(now, schedule.timezone, horizon_days)
            await store.set_generated_until(conn, plan["id"], until)
    return created


async def _generate_occurrence(
    conn: Conn, plan: Any, schedule: plans.Schedule, day: date, *, clock: Clock
) -> bool:
    earliest, latest = schedule.window_on(day)
    spec = NeedSpecAdapter.validate_python(
        {
            "kind": plan["kind"],
            "resident_id": plan["resident_id"],
            "urgency": plan["urgency"],
            "details": json.loads(plan["details"])
            if isinstance(plan["details"], str)
            else plan["details"],
            "notes": plan["notes"],
            "window": {"earliest": earliest, "latest": latest},
            "source": {"system": PLAN_SOURCE, "reference": str(plan["id"])},
        }
    )
    actor = Actor(Role.SYSTEM, f"plan:{plan['id']}")
    try:
        async with conn.transaction():  # a savepoint: one bad occurrence spoils no other
            if not await store.claim_occurrence(conn, plan["id"], day):
                return False
            result = await submit_need(conn, plan["community"], spec, actor, clock=clock)
            await store.set_occurrence_need(conn, plan["id"], day, result.need_id)
    except (Rejected, NotFound):
        return False
    return True
