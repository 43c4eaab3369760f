"""Partners' use cases. Each runs in one transaction: the state change and the outbox
rows it causes commit together (DESIGN.md section 6, rule 1); a consumed event's inbox
row commits with its effect (rule 2)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from pydantic import BaseModel

from linli.contracts.catalogue import kind_spec
from linli.contracts.envelope import new_event
from linli.contracts.events import (
    AssignmentExpired,
    AssignmentOffered,
    AssignmentWithdrawn,
    DeliveryFailed,
    Leg,
    MealDelivered,
    MealPrepared,
    NeedCancelled,
    NeedFulfilled,
    OfferLapsed,
    PartnerAccepted,
    PartnerDeclined,
    PartyKind,
    PartyRef,
    PointsAwarded,
    PointsRedeemed,
    RepairCompleted,
    ServiceCompleted,
    SlotPublished,
    SlotReleased,
    SlotReserved,
    VisitCompleted,
    VolunteerAvailabilityChanged,
    VolunteerConfirmed,
    VolunteerDeclined,
    WeeklyAvailability,
)
from linli.contracts.types import CostOption, NeedKind, Reason, Role
from linli.servicekit import disclosures, outbox
from linli.servicekit.clock import Clock
from linli.servicekit.consume import Received, Subscriptions
from linli.servicekit.db import Conn
from linli.servicekit.idempotency import Idempotency, check_replay
from linli.servicekit.telemetry import current_traceparent, resumed_span

from . import rules, store
from .contacts import Contact, ContactDirectory, ContactDirectoryUnavailable
from .models import (
    CompletionReport,
    FailedReport,
    MealPreparedReport,
    MealReport,
    PartnerSpec,
    RedemptionSpec,
    RepairReport,
    ServiceReport,
    SlotSpec,
    VisitReport,
    VolunteerPatch,
    VolunteerSpec,
)

SOURCE = "/linli/partners"
CONSUMER = "partners"
# Reports may not claim times further ahead than ordinary clock skew.
CLOCK_SKEW = timedelta(minutes=5)


class Rejected(Exception):
    """The request is well-formed but cannot be accepted; reasons say why."""

    def __init__(self, reasons: list[Reason], *, status: int = 422) -> None:
        super().__init__("; ".join(f"{r.field}: {r.message}" for r in reasons))
        self.reasons = reasons
        self.status = status


class NotFound(Exception):
    """The resource does not exist for this caller (or in this community)."""


class Conflict(Exception):
    """The request conflicts with the resource's state."""


@dataclass(frozen=True)
class Actor:
    """Who asked for the change (an id, never a name)."""

    role: Role
    ref: str

    def label(self) -> str:
        return f"{self.role.value}:{self.ref}"


def _event(data: BaseModel, community: str, subject: uuid.UUID, now: datetime) -> Any:
    return new_event(data, community=community, source=SOURCE, subject=str(subject), time=now)


def _scope_reasons(communities: list[str], allowed: Callable[[str], bool]) -> list[Reason]:
    return [
        Reason(
            field=f"body.communities.{i}",
            message="not a community of this credential",
            code="community_out_of_scope",
        )
        for i, c in enumerate(communities)
        if not allowed(c)
    ]


# --- directory: partners and volunteers -------------------------------------------------


async def create_partner(
    conn: Conn,
    community: str,
    spec: PartnerSpec,
    actor: Actor,
    allowed: Callable[[str], bool],
) -> uuid.UUID:
    """Register a partner organisation serving `community` (and the others it names)."""
    communities = sorted(set(spec.communities or []) | {community})
    if reasons := _scope_reasons(communities, allowed):
        raise Rejected(reasons)
    partner_id = uuid.uuid4()
    async with conn.transaction():
        await store.insert_partner(conn, partner_id, spec, communities, actor.label())
    return partner_id


async def create_volunteer(
    conn: Conn,
    community: str,
    spec: VolunteerSpec,
    actor: Actor,
    allowed: Callable[[str], bool],
) -> uuid.UUID:
    """Register a volunteer with skills and weekly availability."""
    communities = sorted(set(spec.communities or []) | {community})
    if reasons := _scope_reasons(communities, allowed):
        raise Rejected(reasons)
    volunteer_id = uuid.uuid4()
    async with conn.transaction():
        await store.insert_volunteer(
            conn,
            volunteer_id,
            spec.display_name,
            sorted({s.value for s in spec.skills}),
            communities,
            actor.label(),
        )
        await store.replace_availability(conn, volunteer_id, spec.availability)
        await announce_availability(conn, volunteer_id)
    return volunteer_id


async def update_volunteer(
    conn: Conn, community: str, volunteer_id: uuid.UUID, patch: VolunteerPatch
) -> None:
    """Change a volunteer's profile; `active: false` stops new capacity being published."""
    async with conn.transaction():
        if await store.get_volunteer(conn, community, volunteer_id, for_update=True) is None:
            raise NotFound("volunteer")
        await store.update_volunteer(
            conn,
            volunteer_id,
            display_name=patch.display_name,
            skills=sorted({s.value for s in patch.skills}) if patch.skills is not None else None,
            active=patch.active,
        )
        if patch.availability is not None:
            await store.replace_availability(conn, volunteer_id, patch.availability)
        if patch.availability is not None or patch.active is not None:
            await announce_availability(conn, volunteer_id)


AVAILABILITY_TIMEZONE = "Asia/Shanghai"
"""Volunteers' weekly periods are local times here (ADR 0042)."""


async def announce_availability(
    conn: Conn, volunteer_id: uuid.UUID, *, clock: Clock | None = None
) -> None:
    """Tell scheduling a volunteer's weekly availability and active flag as they now
    stand (`volunteer.availability_changed`, once per community served)."""
    now = (clock or Clock()).now()
    volunteer = await store.get_volunteer_by_id(conn, volunteer_id)
    if volunteer is None:
        return
    periods = await store.availability_of(conn, [volunteer_id])
    data = VolunteerAvailabilityChanged(
        volunteer_id=volunteer_id,
        active=volunteer["active"],
        timezone=AVAILABILITY_TIMEZONE,
        availability=[
            WeeklyAvailability(weekday=p["weekday"], start=p["start_time"], end=p["end_time"])
            for p in periods
        ],
        changed_at=now,
    )
    for community in volunteer["communities"]:
        await outbox.enqueue(conn, _event(data, community, volunteer_id, now))


# --- capacity ---------------------------------------------------------------------------


async def publish_slot(
    conn: Conn,
    community: str,
    spec: SlotSpec,
    actor: Actor,
    own: PartyRef | None,
    *,
    clock: Clock,
) -> asyncpg.Record:
    """Publish capacity and announce it as `slot.published`, in one transaction."""
    now = clock.now()
    provider = spec.provider or own
    if provider is None:
        raise Rejected(
            [Reason(field="body.provider", message="provider is required", code="missing")]
        )
    if not rules.may_publish_for(actor.role, own, provider):
        # Another provider's capacity is not the caller's to publish (and may not exist).
        raise Rejected(
            [
                Reason(
                    field="body.provider",
                    message="a partner or volunteer publishes only its own capacity",
                    code="not_own_provider",
                )
            ],
            status=403,
        )
    if spec.window.latest <= now:
        raise Rejected(
            [Reason(field="body.window.latest", message="window is over", code="window_in_past")]
        )
    async with conn.transaction():
        communities, kinds, active = await store.provider_profile(conn, provider)
        reasons = rules.provider_reasons(
            spec.kind.value, communities, kinds, community, active=active
        )
        if reasons:
            raise Rejected(reasons)
        slot_id = uuid.uuid4()
        row = await store.insert_slot(conn, slot_id, community, spec, provider, actor.label(), now)
        await outbox.enqueue(
            conn,
            _event(
                SlotPublished(
                    slot_id=slot_id,
                    kind=spec.kind,
                    provider=provider,
                    window=spec.window,
                    capacity=spec.capacity,
                    compounds=list(spec.compounds),
                    published_at=now,
                    leg=spec.leg,
                ),
                community,
                slot_id,
                now,
            ),
        )
    return row


# --- the dispatch inbox (consumer side) -------------------------------------------------


async def _on_offered(conn: Conn, community: str, data: AssignmentOffered, now: datetime) -> None:
    void = await store.withdrawal_for(conn, data.assignment_id, data.need_id)
    # The offer keeps the need's trace: the party's answer, a request of its own, resumes it.
    await store.insert_offer(
        conn, community, data, withdrawn_reason=void, traceparent=current_traceparent()
    )


async def _on_expired(conn: Conn, community: str, data: AssignmentExpired, now: datetime) -> None:
    await store.withdraw_offer(conn, community, data.assignment_id, "expired", now)


async def _on_withdrawn(
    conn: Conn, community: str, data: AssignmentWithdrawn, now: datetime
) -> None:
    # An operator took the offer back (ADR 0034): an answer to it no longer counts, and
    # one already accepted here is void too (scheduling gave the need to someone else).
    await store.withdraw_offer(conn, community, data.assignment_id, "withdrawn", now)


async def _on_cancelled(conn: Conn, community: str, data: NeedCancelled, now: datetime) -> None:
    # An accepted, unreported assignment is void too: nobody should go to the door.
    await store.close_need(
        conn, community, data.need_id, "need_cancelled", now, ("open", "accepted")
    )


async def _on_fulfilled(conn: Conn, community: str, data: NeedFulfilled, now: datetime) -> None:
    # Informational for the party that served it; other open offers for it are moot.
    await store.close_need(conn, community, data.need_id, "need_fulfilled", now, ("open",))
    await store.complete_prepare_legs(conn, community, data.need_id, now)


async def _on_reserved(conn: Conn, community: str, data: SlotReserved, now: datetime) -> None:
    # Live capacity of the directory (ADR 0051): scheduling holds the reservation.
    await store.record_reservation(
        conn, community, data.reservation_id, data.slot_id, reserved_at=data.reserved_at
    )


async def _on_released(conn: Conn, community: str, data: SlotReleased, now: datetime) -> None:
    await store.record_reservation(
        conn, community, data.reservation_id, data.slot_id, released_at=data.released_at
    )


def subscriptions(clock: Clock) -> Subscriptions:
    """Offers into the offered party's inbox; expiry, cancellation and fulfilment close them;
    reservations and releases keep the directory's live capacity."""
    subs = Subscriptions(
        CONSUMER,
        description="assignment.offered into the offered party's inbox; assignment.expired, "
        "assignment.withdrawn, need.cancelled and need.fulfilled withdraw offers; "
        "slot.reserved and slot.released count the places held (HSDS service_capacity)",
    )
    handlers: dict[type[BaseModel], Callable[[Conn, str, Any, datetime], Awaitable[None]]] = {
        AssignmentOffered: _on_offered,
        AssignmentExpired: _on_expired,
        AssignmentWithdrawn: _on_withdrawn,
        NeedCancelled: _on_cancelled,
        NeedFulfilled: _on_fulfilled,
        SlotReserved: _on_reserved,
        SlotReleased: _on_released,
    }
    for model, handler in handlers.items():

        async def use_case(conn: Conn, received: Received[Any], handler: Any = handler) -> None:
            await handler(conn, received.community, received.data, clock.now())

        subs.on(model, use_case)
    return subs


# --- the dispatch inbox (party side) ----------------------------------------------------


async def answer_offer(
    conn: Conn,
    party: PartyRef,
    communities: list[str],
    assignment_id: uuid.UUID,
    *,
    accept: bool,
    eta: datetime | None = None,
    reason: str | None = None,
    clock: Clock,
) -> None:
    """Accept or decline an open offer, once, and tell scheduling.

    Partners is where an offer's answer and its lapse are decided (ADR 0026): both take
    the offer's row lock, and the time is read once the lock is held, so the order in
    which they commit is the order in time. An answer at or after `expires_at` is
    refused; one before it stands, however late scheduling hears of it.
    """
    async with conn.transaction():
        # The row lock makes a second, concurrent answer (or the lapse sweep) wait and
        # then see the first.
        offer = await store.get_offer(conn, party, communities, assignment_id, for_update=True)
        if offer is None:
            raise NotFound("offer")
        now = clock.now()
        refusal = rules.answer_refusal(offer["status"], offer["expires_at"], now)
        if refusal is not None:
            raise Conflict(refusal)
        status = "accepted" if accept else "declined"
        # A decline's free text may name people; it stays here, not in the event.
        await store.set_offer_status(conn, assignment_id, status, reason, now)
        need_id, slot_id = offer["need_id"], offer["slot_id"]
        leg = Leg(offer["leg"]) if offer["leg"] else None  # a two-leg meal's leg (ADR 0044)
        data: BaseModel
        if party.kind is PartyKind.VOLUNTEER and accept:
            data = VolunteerConfirmed(
                assignment_id=assignment_id,
                need_id=need_id,
                slot_id=slot_id,
                volunteer_id=party.id,
                confirmed_at=now,
                leg=leg,
            )
        elif party.kind is PartyKind.VOLUNTEER:
            data = VolunteerDeclined(
                assignment_id=assignment_id,
                need_id=need_id,
                volunteer_id=party.id,
                declined_at=now,
                leg=leg,
            )
        elif accept:
            data = PartnerAccepted(
                assignment_id=assignment_id,
                need_id=need_id,
                slot_id=slot_id,
                partner_id=party.id,
                eta=eta,
                accepted_at=now,
                leg=leg,
            )
        else:
            data = PartnerDeclined(
                assignment_id=assignment_id,
                need_id=need_id,
                partner_id=party.id,
                declined_at=now,
                leg=leg,
            )
        with resumed_span(f"{status} offer", offer["traceparent"]):
            await outbox.enqueue(conn, _event(data, offer["community"], need_id, now))


async def lapse_due(conn: Conn, *, clock: Clock, batch: int) -> int:
    """Lapse up to `batch` open offers whose expiry has come, each with `offer.lapsed`,
    in one transaction; returns how many lapsed (ADR 0026).

    An offer answered in time is no longer open and is never lapsed; one being answered
    right now is locked and skipped, and looked at again once the answer has committed
    (then it is no longer open) or failed (then it lapses).
    """
    async with conn.transaction():
        now = clock.now()
        rows = await store.lapse_due_offers(conn, now, batch)
        for row in rows:
            data = OfferLapsed(
                assignment_id=row["assignment_id"],
                need_id=row["need_id"],
                slot_id=row["slot_id"],
                offered_to=PartyRef(kind=PartyKind(row["party_kind"]), id=row["party_id"]),
                expires_at=row["expires_at"],
                lapsed_at=now,  # expires_at <= now: the sweep takes only due offers
            )
            with resumed_span("offer lapsed", row["traceparent"]):
                await outbox.enqueue(conn, _event(data, row["community"], row["need_id"], now))
    return len(rows)


@dataclass(frozen=True)
class OfferWithContact:
    offer: asyncpg.Record
    contact: Contact | None
    contact_status: str
    description: str | None = None


async def offer_for_party(
    pool: asyncpg.Pool,
    directory: ContactDirectory,
    party: PartyRef,
    communities: list[str],
    assignment_id: uuid.UUID,
) -> OfferWithContact:
    """One offer; the resident's contact only once this party accepted, from intake.

    The contact is fetched per request and never stored: intake decides (accepted
    assignee, resident's consent) and partners only passes its answer on.
    """
    async with pool.acquire() as conn:
        offer = await store.get_offer(conn, party, communities, assignment_id)
    if offer is None:
        raise NotFound("offer")
    if offer["status"] != "accepted":
        return OfferWithContact(offer, None, "not_accepted")
    if offer["leg"] == rules.PREPARE_LEG:
        # The canteen cooks; only the carrier goes to the door (ADR 0044).
        return OfferWithContact(offer, None, "not_shared")
    community, need_id = offer["community"], offer["need_id"]
    try:
        contact = await directory.contact_for(community, need_id, party)
        description = None
        if kind_spec(offer["kind"]).private_fields:
            # What the resident wrote stays in intake too (ADR 0031).
            description = await directory.description_for(community, need_id, party)
    except ContactDirectoryUnavailable:
        return OfferWithContact(offer, None, "unavailable")
    return OfferWithContact(offer, contact, "shared" if contact else "not_shared", description)


@dataclass(frozen=True)
class ReportResult:
    outcome: str
    points: int
    balance_after: int | None


def _future_reasons(report: CompletionReport, now: datetime) -> list[Reason]:
    times = {
        name: value for name, value in report.model_dump().items() if isinstance(value, datetime)
    }
    return [
        Reason(field=f"body.{name}", message="must not be in the future", code="in_future")
        for name, value in times.items()
        if value > now + CLOCK_SKEW
    ]


def _report_event(
    offer: asyncpg.Record,
    party: PartyRef,
    report: CompletionReport,
    cost_option: CostOption | None,
) -> BaseModel:
    """The report's event: structured fields, and only whether free text was written;
    the text stays in the report, for the community's operators (ADR 0031). A partner's
    completion says what the resident pays for its service (the monthly reports count
    free and low-cost work)."""
    ids = {"need_id": offer["need_id"], "assignment_id": offer["assignment_id"]}
    if isinstance(report, MealReport):
        return MealDelivered(
            **ids,
            cost_option=cost_option,
            delivered_by=party,
            delivered_at=report.delivered_at,
            handed_to=report.handed_to,
            hot_on_arrival=report.hot_on_arrival,
        )
    if isinstance(report, MealPreparedReport):
        return MealPrepared(
            **ids,
            cost_option=cost_option,
            prepared_by=party,
            prepared_at=report.prepared_at,
            handed_to_carrier=report.handed_to_carrier,
        )
    if isinstance(report, VisitReport):
        return VisitCompleted(
            **ids,
            cost_option=cost_option,
            visited_by=party,
            started_at=report.started_at,
            ended_at=report.ended_at,
            wellbeing_concern=report.wellbeing_concern,
            observations_recorded=bool(report.observations),
        )
    if isinstance(report, RepairReport):
        return RepairCompleted(
            **ids,
            cost_option=cost_option,
            repaired_by=party,
            arrived_at=report.arrived_at,
            completed_at=report.completed_at,
            fixed=report.fixed,
            follow_up_needed=report.follow_up_needed,
            summary_recorded=bool(report.summary),
        )
    if isinstance(report, ServiceReport):
        return ServiceCompleted(
            **ids,
            kind=NeedKind(offer["kind"]),
            cost_option=cost_option,
            served_by=party,
            started_at=report.started_at,
            completed_at=report.completed_at,
            follow_up_needed=report.follow_up_needed,
            note_recorded=bool(report.note),
        )
    assert isinstance(report, FailedReport)
    return DeliveryFailed(
        **ids,
        attempted_by=party,
        reason=report.reason,
        detail_recorded=bool(report.detail),
        failed_at=report.failed_at,
        leg=Leg(offer["leg"]) if offer["leg"] else None,
    )


async def report_completion(
    conn: Conn,
    party: PartyRef,
    communities: list[str],
    assignment_id: uuid.UUID,
    report: CompletionReport,
    *,
    points_table: Mapping[str, int],
    clock: Clock,
) -> ReportResult:
    """Record the proof of an accepted assignment, once; credit a volunteer's points.

    The report, its event, the ledger entries and `points.awarded` commit together,
    so points exist only for a recorded, announced completion.
    """
    now = clock.now()
    async with conn.transaction():
        offer = await store.get_offer(conn, party, communities, assignment_id, for_update=True)
        if offer is None:
            raise NotFound("offer")
        if offer["status"] in ("completed", "failed"):
            raise Conflict("assignment was already reported")
        if offer["status"] not in rules.REPORTABLE:
            raise Conflict(
                f"offer is {rules.offer_status(offer['status'], offer['expires_at'], now)}"
            )
        reasons = rules.report_reasons(
            offer["kind"], report.outcome, offer["leg"]
        ) + _future_reasons(report, now)
        if reasons:
            raise Rejected(reasons)
        proof = report.model_dump(mode="json")
        status = "failed" if report.outcome == rules.FAILED else "completed"
        if not await store.insert_report(
            conn, offer, report.outcome, proof, now, offer_status=status
        ):
            raise Conflict("assignment was already reported")
        community, need_id = offer["community"], offer["need_id"]
        cost_option = None
        if party.kind is PartyKind.PARTNER:
            found = await store.cost_option_for(conn, party.id, offer["kind"])
            cost_option = CostOption(found) if found else None
        event = _report_event(offer, party, report, cost_option)
        events = [_event(event, community, need_id, now)]
        points = rules.points_for(offer["kind"], party, report.outcome, points_table)
        balance_after = None
        if points:
            balance_after = await _award(conn, community, party.id, points, offer, now)
            events.append(
                _event(
                    PointsAwarded(
                        volunteer_id=party.id,
                        points=points,
                        need_id=need_id,
                        balance_after=balance_after,
                        awarded_at=now,
                    ),
                    community,
                    need_id,
                    now,
                )
            )
        with resumed_span(f"report {report.outcome}", offer["traceparent"]):
            await outbox.enqueue_many(conn, events)
    return ReportResult(report.outcome, points, balance_after)


REPORT_NOTE_FIELDS = ("observations", "summary", "detail", "neighbour_note", "note")
"""The free text a report may hold; it never leaves partners in an event (ADR 0031)."""


async def report_notes(
    conn: Conn, community: str, need_id: uuid.UUID, reader: disclosures.Reader
) -> list[asyncpg.Record]:
    """The completion reports of a need with their free text, for an operator of its
    community; the read is recorded in the same transaction (ADR 0031)."""
    async with conn.transaction():
        rows = await store.reports_of_need(conn, community, need_id)
        if not rows:
            raise NotFound("report")
        await disclosures.record(conn, community, need_id, disclosures.REPORT_NOTES, reader)
    return rows


# --- the points ledger ------------------------------------------------------------------


async def _award(
    conn: Conn,
    community: str,
    volunteer_id: uuid.UUID,
    points: int,
    offer: asyncpg.Record,
    now: datetime,
) -> int:
    volunteer = rules.volunteer_account(community, volunteer_id)
    pool = rules.pool_account(community)
    await store.ensure_accounts(conn, (volunteer, "volunteer"), (pool, "pool"))
    group = uuid.uuid4()
    common: dict[str, Any] = {
        "group": group,
        "community": community,
        "entry_kind": "award",
        "by": SOURCE,
        "need_id": offer["need_id"],
        "assignment_id": offer["assignment_id"],
    }
    balance = await store.post(conn, account=volunteer, amount=points, **common)
    await store.post(conn, account=pool, amount=-points, **common)
    return balance


@dataclass(frozen=True)
class Redemption:
    """A redemption as recorded; `created` is False for a replay of an earlier one."""

    id: uuid.UUID
    volunteer_id: uuid.UUID
    points: int
    balance_after: int
    created: bool


async def redeem(
    conn: Conn,
    community: str,
    volunteer_id: uuid.UUID,
    spec: RedemptionSpec,
    actor: Actor,
    *,
    clock: Clock,
    idempotency: Idempotency | None = None,
) -> Redemption:
    """Spend a volunteer's points in this community, once per Idempotency-Key; refused
    (409) when the community's balance would go negative. Announced as `points.redeemed`.

    The refusal comes from the CHECK on `balances`, not from a read in Python, so
    concurrent redemptions cannot overdraw together. The key is claimed in the same
    transaction: a refused redemption leaves it unused.
    """
    now = clock.now()
    async with conn.transaction():
        if await store.get_volunteer(conn, community, volunteer_id) is None:
            raise NotFound("volunteer")
        redemption_id = uuid.uuid4()
        if idempotency is not None:
            earlier = await store.claim_idempotency_key(
                conn, "points.redeem", community, idempotency, redemption_id
            )
            if earlier is not None:
                check_replay(idempotency, earlier["request_sha256"])
                row = await store.get_redemption(conn, community, earlier["result_id"])
                assert row is not None
                return Redemption(
                    row["id"], row["volunteer_id"], row["points"], row["balance_after"], False
                )
        balance = await debit(
            conn,
            community,
            volunteer_id,
            spec.points,
            redemption_id=redemption_id,
            note=spec.note,
            by=actor.label(),
            now=now,
        )
    return Redemption(redemption_id, volunteer_id, spec.points, balance, True)


async def debit(
    conn: Conn,
    community: str,
    volunteer_id: uuid.UUID,
    points: int,
    *,
    redemption_id: uuid.UUID,
    note: str | None,
    by: str,
    now: datetime,
    reward_id: uuid.UUID | None = None,
) -> int:
    """Spend a volunteer's points in `community` (inside the caller's transaction): the
    two ledger legs, the `redemptions` row and `points.redeemed`; returns the balance
    after. `Conflict("insufficient points")` when the balance, less the points held for
    pending requests, would not cover it (the database's CHECKs decide, ADR 0041)."""
    volunteer = rules.volunteer_account(community, volunteer_id)
    redeemed = rules.redeemed_account(community)
    await store.ensure_accounts(conn, (volunteer, "volunteer"), (redeemed, "redeemed"))
    group = uuid.uuid4()
    common: dict[str, Any] = {
        "group": group,
        "community": community,
        "entry_kind": "redemption",
        "by": by,
        "note": note,
    }
    try:
        balance = await store.post(conn, account=volunteer, amount=-points, **common)
    except asyncpg.CheckViolationError:
        raise Conflict("insufficient points") from None
    await store.post(conn, account=redeemed, amount=points, **common)
    await store.insert_redemption(
        conn,
        redemption_id=redemption_id,
        community=community,
        volunteer_id=volunteer_id,
        points=points,
        balance_after=balance,
        group=group,
        note=note,
        by=by,
        at=now,
    )
    if reward_id is not None:
        await store.set_redemption_reward(conn, redemption_id, reward_id)
    # The note stays here: free text may name people (ADR 0016).
    event = PointsRedeemed(
        redemption_id=redemption_id,
        volunteer_id=volunteer_id,
        points=points,
        balance_after=balance,
        redeemed_at=now,
        reward_id=reward_id,
    )
    await outbox.enqueue(conn, _event(event, community, volunteer_id, now))
    return balance


async def points_history(
    conn: Conn, community: str, volunteer_id: uuid.UUID, *, limit: int
) -> tuple[int, list[asyncpg.Record]]:
    """A volunteer's balance and ledger legs in one community."""
    account = rules.volunteer_account(community, volunteer_id)
    balance = await store.balance_of(conn, account)
    return balance, await store.entries_of(conn, [account], limit=limit)


async def my_points(
    conn: Conn, volunteer_id: uuid.UUID, *, limit: int
) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """A volunteer's own view: its balance in every community and all its legs."""
    balances = await store.volunteer_balances(conn, volunteer_id)
    entries = await store.entries_of(conn, [b["account"] for b in balances], limit=limit)
    return balances, entries
