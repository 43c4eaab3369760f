"""Scheduling's use cases. Each consumed event runs in one transaction: the inbox
claim, the state change and the outbox rows it causes commit together (DESIGN.md
section 6, rules 1 and 2); a timer fires the same way, with its own row as the claim.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from pydantic import BaseModel

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
    NeedDispatched,
    NeedEscalated,
    NeedFulfilled,
    NeedReoffered,
    NeedSubmitted,
    OfferLapsed,
    PartnerAccepted,
    PartnerDeclined,
    PartyKind,
    PartyRef,
    RepairCompleted,
    ServiceCompleted,
    SlotPublished,
    SlotReleased,
    SlotReleaseReason,
    SlotReserved,
    SlotRevised,
    SlotWithdrawn,
    StaffActor,
    VisitCompleted,
    VolunteerAvailabilityChanged,
    VolunteerConfirmed,
    VolunteerDeclined,
)
from linli.contracts.types import FailureReason, NeedKind, Reason, Urgency
from linli.servicekit import metrics, outbox
from linli.servicekit.clock import Clock
from linli.servicekit.consume import Received, Subscriptions
from linli.servicekit.db import Conn
from linli.servicekit.messaging import PoisonMessage
from linli.servicekit.telemetry import current_traceparent, resumed_span

from . import reminders, store
from .rules import (
    DISPATCHABLE,
    FINAL,
    MATCHABLE,
    ClockName,
    NeedFacts,
    NeedState,
    Policy,
    can_move,
    clock_running,
    failure_escalation,
    no_candidate_reason,
    offer_timeout,
    sla_clocks,
    slot_fits,
)
from .staff import ActionNotFound, ActionRefused, Staff

log = logging.getLogger(__name__)

SOURCE = "/linli/scheduling"

ACTIVE_ASSIGNMENT = ("offered", "accepted")

OFFER_TIMERS = ["offer_overdue", "offer_expiry"]
"""An offer's timer: `offer_overdue` (ADR 0026); `offer_expiry`, from before it, is left
to lapse through partners like any other offer and closes as stale when it comes due."""


class IllegalMove(PoisonMessage):
    """A state change the state machine forbids: a defect, kept as a dead letter."""

    def __init__(self, need_id: uuid.UUID, src: NeedState, dst: NeedState, why: str) -> None:
        super().__init__(
            [
                Reason(
                    field="state",
                    message=f"need {need_id}: {src.value} -> {dst.value}: {why}",
                    code="illegal_transition",
                )
            ]
        )


class NotYet(Exception):
    """The event refers to something not seen yet (a cancel before its need): retry."""


@dataclass(frozen=True)
class SchedulingConfig:
    """What the use cases take from the settings."""

    default_policy: Policy = field(default_factory=Policy)
    time_scale: float = 1.0
    rematch_delay_s: float = 1.0
    offer_verdict_grace_s: float = 300.0
    fill_limit: int = 500
    policy_cache_s: float = 5.0
    reminders: reminders.ReminderPolicy = field(default_factory=reminders.ReminderPolicy)


class Scheduler:
    """The use cases, with the policy and the clock they run under."""

    def __init__(self, config: SchedulingConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self._policies: dict[str, tuple[float, Policy]] = {}
        self._handlers: dict[type[BaseModel], Callable[[Conn, str, Any], Awaitable[None]]] = {
            NeedSubmitted: self._need_submitted,
            NeedCancelled: self._need_cancelled,
            SlotPublished: self._slot_published,
            SlotRevised: self._slot_revised,
            SlotWithdrawn: self._slot_withdrawn,
            VolunteerAvailabilityChanged: self._availability_changed,
            PartnerAccepted: self._partner_accepted,
            VolunteerConfirmed: self._volunteer_confirmed,
            PartnerDeclined: self._partner_declined,
            VolunteerDeclined: self._volunteer_declined,
            OfferLapsed: self._offer_lapsed,
            MealDelivered: self._meal_delivered,
            MealPrepared: self._meal_prepared,
            VisitCompleted: self._visit_completed,
            RepairCompleted: self._repair_completed,
            ServiceCompleted: self._service_completed,
            DeliveryFailed: self._delivery_failed,
        }

    # --- entry points -----------------------------------------------------------

    def subscriptions(self, name: str) -> Subscriptions:
        """Every event scheduling consumes, each run by `apply`."""
        subs = Subscriptions(name, description="needs, capacity, answers and completions")
        for model in self._handlers:
            subs.on(model, self.apply)
        return subs

    async def apply(self, conn: Conn, received: Received[Any]) -> None:
        """Apply one consumed event (the consumer's transaction has claimed its inbox row)."""
        await self._handlers[type(received.data)](conn, received.community, received.data)

    async def fire_timer(self, conn: Conn, timer: asyncpg.Record) -> str:
        """Act on one due timer (locked by the caller's transaction); returns the outcome."""
        now = self.clock.now()
        need = await store.lock_need(conn, timer["need_id"])
        outcome = "stale"
        if need is not None:
            kind = timer["kind"]
            if kind == "offer_overdue":
                outcome = await self._overdue(conn, need, timer["assignment_id"])
            elif kind in ("sla_at_risk", "sla_breach"):
                outcome = await self._sla(conn, need, timer, now)
            elif kind == "rematch" and timer["clock"] == Leg.PREPARE.value:
                waits = need["two_leg"] and need["prepare_assignment"] is None
                if waits and NeedState(need["state"]) not in FINAL:
                    await self._match_prepare(conn, need, now)
                    outcome = "fired"
            elif kind == "rematch" and NeedState(need["state"]) in MATCHABLE:
                await self._match_need(conn, need, now)
                outcome = "fired"
            elif kind == reminders.REMINDER:
                outcome = await self._remind(conn, need, timer)
        await store.finish_timer(conn, timer["id"], outcome)
        return outcome

    async def _move(
        self,
        conn: Conn,
        need: asyncpg.Record,
        dst: NeedState,
        *,
        assignment_id: uuid.UUID | None,
        attempts: int | None = None,
    ) -> asyncpg.Record:
        """Every state change of a need: checked against rules.TRANSITIONS, and applied
        only if the row is still in the state this transaction read (it is locked)."""
        src = NeedState(need["state"])
        if not can_move(src, dst):
            raise IllegalMove(need["id"], src, dst, "not allowed by the state machine")
        moved = await store.move_need(
            conn, need["id"], src.value, dst.value, assignment_id=assignment_id, attempts=attempts
        )
        if moved is None:
            raise IllegalMove(need["id"], src, dst, "the need is no longer in its read state")
        return moved

    async def policy(self, conn: Conn, community: str) -> Policy:
        """The community's policy, read at most every `policy_cache_s` seconds.

        Policies change rarely (the operator CLI) and are read for every need and offer;
        a change reaches every replica within the cache time.
        """
        now = time.monotonic()
        cached = self._policies.get(community)
        if cached is not None and cached[0] > now:
            return cached[1]
        policy = self.config.default_policy.merged(await store.policy_overrides(conn, community))
        self._policies[community] = (now + self.config.policy_cache_s, policy)
        return policy

    # --- needs and capacity -------------------------------------------------------

    async def _need_submitted(self, conn: Conn, community: str, data: NeedSubmitted) -> None:
        facts = NeedFacts(
            id=data.need_id,
            kind=data.kind,
            urgency=data.urgency,
            priority_group=data.priority_group,
            window_earliest=data.window.earliest,
            window_latest=data.window.latest,
            compound=data.compound,
            submitted_at=data.submitted_at,
        )
        need = await store.insert_need(
            conn,
            community=community,
            facts=facts,
            resident_id=data.resident_id,
            details=data.details.model_dump(mode="json"),
            traceparent=current_traceparent(),
        )
        if need is None:
            return
        policy = await self.policy(conn, community)
        timers: list[store.TimerRow] = [
            (kind, facts.id, None, clock.name.value, clock.deadline, due)
            for clock in sla_clocks(facts, policy, self.config.time_scale)
            for kind, due in (
                ("sla_at_risk", clock.at_risk_at(policy.at_risk_fraction)),
                ("sla_breach", clock.deadline),
            )
        ]
        await store.add_timers(conn, timers, traceparent=current_traceparent())
        await self._match_need(conn, need, self.clock.now())

    async def _slot_published(self, conn: Conn, community: str, data: SlotPublished) -> None:
        slot = await store.upsert_slot(conn, community, data)
        if slot is None:
            log.warning("slot id reused across communities; ignored")
            return
        await self._fill_slot(conn, slot["id"], self.clock.now())

    async def _slot_withdrawn(self, conn: Conn, community: str, data: SlotWithdrawn) -> None:
        """No new reservations; each held unit is released, its offer withdrawn (also an
        accepted one: the helper is told by `assignment.withdrawn`) and its need matched
        again, or escalated on its own SLA clock when nothing else fits (ADR 0042)."""
        slot = await store.get_slot_in(conn, community, data.slot_id)
        if slot is None:
            raise NotYet("slot.withdrawn before slot.published")
        if slot["withdrawn_at"] is not None:
            return
        released = await self._release_holders(conn, data.slot_id, 0, data.actor)
        await store.mark_slot_withdrawn(conn, data.slot_id, data.withdrawn_at)
        await self._rematch(conn, released)

    async def _availability_changed(
        self, conn: Conn, community: str, data: VolunteerAvailabilityChanged
    ) -> None:
        """Matching offers a volunteer's slots only inside their weekly availability
        (ADR 0042); offers already made stand."""
        await store.set_volunteer_availability(
            conn,
            data.volunteer_id,
            data.active,
            data.timezone,
            [(p.weekday, p.start, p.end) for p in data.availability],
            data.changed_at,
        )

    async def _slot_revised(self, conn: Conn, community: str, data: SlotRevised) -> None:
        """Take the new terms; reservations beyond the new capacity are released and
        matched again (offers before acceptances, the newest first), never oversold."""
        slot = await store.get_slot_in(conn, community, data.slot_id)
        if slot is None:
            raise NotYet("slot.revised before slot.published")
        if slot["withdrawn_at"] is not None or slot["revision"] >= data.revision:
            return
        active = await store.active_assignments_on(conn, data.slot_id)
        settled = slot["reserved"] - len(active)
        keep = max(data.capacity - settled, 0)
        released = await self._release_holders(conn, data.slot_id, keep, data.actor)
        await store.apply_slot_revision(
            conn,
            data.slot_id,
            data.revision,
            data.window.earliest,
            data.window.latest,
            data.capacity,
            list(data.compounds),
        )
        await self._rematch(conn, released)
        await self._fill_slot(conn, data.slot_id, self.clock.now())

    async def _release_holders(
        self,
        conn: Conn,
        slot_id: uuid.UUID,
        keep: int,
        actor: StaffActor,
    ) -> list[asyncpg.Record]:
        """Release every active assignment on the slot after the first `keep`; returns
        their needs, waiting, to be matched once the slot shows its new terms.

        Lock order stays need, then slot: each need is locked before its unit returns."""
        now = self.clock.now()
        released = []
        for assignment in (await store.active_assignments_on(conn, slot_id))[keep:]:
            need = await store.lock_need(conn, assignment["need_id"])
            current = await store.get_assignment(conn, assignment["id"])
            if (
                need is None
                or current is None
                or current["state"] not in ACTIVE_ASSIGNMENT
                or need["current_assignment"] != assignment["id"]
            ):
                continue
            await self._emit(
                conn,
                need["community"],
                need["id"],
                AssignmentWithdrawn(
                    assignment_id=assignment["id"],
                    need_id=need["id"],
                    slot_id=slot_id,
                    offered_to=_party(assignment),
                    actor=actor,
                    withdrawn_at=now,
                ),
            )
            await self._release(conn, need, current, "withdrawn", SlotReleaseReason.OTHER, now)
            released.append(await self._move(conn, need, NeedState.WAITING, assignment_id=None))
        return released

    async def _rematch(self, conn: Conn, needs: list[asyncpg.Record]) -> None:
        now = self.clock.now()
        for need in needs:
            await self._match_need(conn, need, now)

    async def _need_cancelled(self, conn: Conn, community: str, data: NeedCancelled) -> None:
        need = await self._need_of(conn, community, data.need_id)
        if need is None:
            # Cancelled before its need.submitted was processed (another replica):
            # retry shortly rather than lose the cancellation.
            raise NotYet("need.cancelled before need.submitted")
        if NeedState(need["state"]) in FINAL:
            return
        now = self.clock.now()
        released = []
        for assignment in (
            await self._active_assignment(conn, need),
            await self._prepare_assignment(conn, need),
        ):
            if assignment is not None:
                released.append(
                    await self._release(
                        conn, need, assignment, "cancelled", SlotReleaseReason.NEED_CANCELLED, now
                    )
                )
        await self._move(conn, need, NeedState.CANCELLED, assignment_id=need["current_assignment"])
        await store.cancel_timers(conn, need["id"])
        for slot_id in released:
            await self._fill_slot(conn, slot_id, now)

    # --- answers ------------------------------------------------------------------

    async def _partner_accepted(self, conn: Conn, community: str, data: PartnerAccepted) -> None:
        await self._accept(
            conn, community, data.need_id, data.assignment_id, (PartyKind.PARTNER, data.partner_id)
        )

    async def _volunteer_confirmed(
        self, conn: Conn, community: str, data: VolunteerConfirmed
    ) -> None:
        await self._accept(
            conn,
            community,
            data.need_id,
            data.assignment_id,
            (PartyKind.VOLUNTEER, data.volunteer_id),
        )

    async def _partner_declined(self, conn: Conn, community: str, data: PartnerDeclined) -> None:
        await self._decline(
            conn, community, data.need_id, data.assignment_id, (PartyKind.PARTNER, data.partner_id)
        )

    async def _volunteer_declined(
        self, conn: Conn, community: str, data: VolunteerDeclined
    ) -> None:
        await self._decline(
            conn,
            community,
            data.need_id,
            data.assignment_id,
            (PartyKind.VOLUNTEER, data.volunteer_id),
        )

    async def _accept(
        self,
        conn: Conn,
        community: str,
        need_id: uuid.UUID,
        assignment_id: uuid.UUID,
        provider: tuple[PartyKind, uuid.UUID],
    ) -> None:
        found = await self._current(conn, community, need_id, assignment_id, provider)
        if found is None:
            return
        need, assignment = found
        if assignment["state"] != "offered":
            return  # accepted before: nothing more to do
        await store.answer_assignment(conn, assignment_id, self.clock.now())
        if assignment["leg"] == Leg.PREPARE.value:
            # The canteen's leg (ADR 0044): the need's own state follows the carry leg.
            await store.cancel_timers(
                conn, need_id, kinds=OFFER_TIMERS, assignment_id=assignment_id
            )
            return
        await self._move(conn, need, NeedState.ASSIGNED, assignment_id=assignment_id)
        await store.cancel_timers(conn, need_id, kinds=OFFER_TIMERS)
        await store.cancel_timers(conn, need_id, clock=ClockName.ACCEPT.value)
        due = reminders.reminder_due(
            self.config.reminders, need["kind"], need["window_earliest"], self.clock.now()
        )
        if due is not None:
            await store.add_timer(
                conn,
                kind=reminders.REMINDER,
                need_id=need_id,
                assignment_id=assignment_id,
                due_at=due,
                traceparent=current_traceparent(),
            )

    async def _remind(self, conn: Conn, need: asyncpg.Record, timer: asyncpg.Record) -> str:
        """A reminder timer: `assignment.reminder_due` while the helper still holds it."""
        assignment = await store.get_assignment(conn, timer["assignment_id"])
        event = None if assignment is None else reminders.reminder_event(need, assignment, timer)
        if event is None:
            return "stale"
        await self._emit(conn, need["community"], need["id"], event)
        return "fired"

    async def _decline(
        self,
        conn: Conn,
        community: str,
        need_id: uuid.UUID,
        assignment_id: uuid.UUID,
        provider: tuple[PartyKind, uuid.UUID],
    ) -> None:
        found = await self._current(conn, community, need_id, assignment_id, provider)
        if found is None:
            return
        need, assignment = found
        await self._give_back(conn, need, assignment, "declined", SlotReleaseReason.DECLINED)

    async def _offer_lapsed(self, conn: Conn, community: str, data: OfferLapsed) -> None:
        """Partners' verdict that nobody answered in time: the assignment expires.

        Partners decides whether an answer came before the expiry or the offer lapsed
        (ADR 0026); scheduling never expires an offer on its own clock, so an acceptance
        made in time stands however late it reaches us.
        """
        found = await self._current(
            conn,
            community,
            data.need_id,
            data.assignment_id,
            (data.offered_to.kind, data.offered_to.id),
        )
        if found is None:
            return
        need, assignment = found
        if assignment["state"] != "offered":
            # Partners lapses only an offer nobody answered; an accepted one cannot lapse.
            log.warning("lapse of an accepted assignment; ignored")
            return
        await self._emit(
            conn,
            community,
            need["id"],
            AssignmentExpired(
                assignment_id=assignment["id"],
                need_id=need["id"],
                slot_id=assignment["slot_id"],
                offered_to=_party(assignment),
                expired_at=data.lapsed_at,
                leg=_leg(assignment),
            ),
        )
        await self._give_back(conn, need, assignment, "expired", SlotReleaseReason.EXPIRED)

    async def _overdue(
        self, conn: Conn, need: asyncpg.Record, assignment_id: uuid.UUID | None
    ) -> str:
        """No verdict from partners long after the offer's expiry: tell the operators.

        Only partners can say whether the offer was answered in time, so nothing moves:
        the need stays offered (its place held) until the verdict comes. A verdict this
        late means partners, its relay or its consumer is down or far behind.
        """
        if assignment_id is None or assignment_id not in (
            need["current_assignment"],
            need["prepare_assignment"],
        ):
            return "stale"
        assignment = await store.get_assignment(conn, assignment_id)
        if assignment is None or assignment["state"] != "offered":
            return "stale"
        await self._escalate(
            conn,
            need,
            "offer_unanswered",
            "no answer or lapse from partners long after the offer expired; "
            "the offer stays open until partners decides",
            key=f"offer_unanswered:{assignment_id}",
            leg=_leg(assignment),
        )
        return "fired"

    async def _give_back(
        self,
        conn: Conn,
        need: asyncpg.Record,
        assignment: asyncpg.Record,
        state: str,
        reason: SlotReleaseReason,
    ) -> None:
        """A candidate said no (or nothing): release, remember them, offer the next.

        On a two-leg meal only that leg is offered again; the other leg stays as it is.
        """
        now = self.clock.now()
        slot_id = await self._release(conn, need, assignment, state, reason, now)
        await store.add_exclusion(
            conn, need["id"], assignment["provider_kind"], assignment["provider_id"], state
        )
        if assignment["leg"] == Leg.PREPARE.value:
            need = await store.set_prepare_leg(conn, need["id"], None)
            await self._match_prepare(conn, need, now)
            await self._fill_slot(conn, slot_id, now)
            return
        waiting = await self._move(conn, need, NeedState.WAITING, assignment_id=None)
        await self._match_need(conn, waiting, now)
        await self._fill_slot(conn, slot_id, now)

    # --- completion ---------------------------------------------------------------

    async def _meal_delivered(self, conn: Conn, community: str, data: MealDelivered) -> None:
        await self._complete(
            conn, community, data.need_id, data.assignment_id, data.delivered_by, data.delivered_at
        )

    async def _meal_prepared(self, conn: Conn, community: str, data: MealPrepared) -> None:
        """The canteen's leg is done (ADR 0044): its assignment completes and keeps its
        unit of the slot; the need waits for the carrier's `meal.delivered`."""
        found = await self._current(
            conn,
            community,
            data.need_id,
            data.assignment_id,
            (data.prepared_by.kind, data.prepared_by.id),
        )
        if found is None:
            return
        need, assignment = found
        if assignment["leg"] != Leg.PREPARE.value:
            log.warning("meal.prepared for an assignment that is not a prepare leg; ignored")
            return
        await store.close_assignment(conn, assignment["id"], "completed", self.clock.now())
        await store.cancel_timers(
            conn, need["id"], kinds=OFFER_TIMERS, assignment_id=assignment["id"]
        )

    async def _visit_completed(self, conn: Conn, community: str, data: VisitCompleted) -> None:
        need = await self._complete(
            conn, community, data.need_id, data.assignment_id, data.visited_by, data.ended_at
        )
        if need is not None and data.wellbeing_concern:
            await self._escalate(
                conn, need, "wellbeing_concern", "the visitor is worried about the resident"
            )

    async def _repair_completed(self, conn: Conn, community: str, data: RepairCompleted) -> None:
        need = await self._complete(
            conn, community, data.need_id, data.assignment_id, data.repaired_by, data.completed_at
        )
        if need is not None and (data.follow_up_needed or not data.fixed):
            await self._escalate(
                conn, need, "follow_up_needed", "the technician reports a follow-up is needed"
            )

    async def _service_completed(self, conn: Conn, community: str, data: ServiceCompleted) -> None:
        need = await self._complete(
            conn, community, data.need_id, data.assignment_id, data.served_by, data.completed_at
        )
        if need is not None and data.follow_up_needed:
            await self._escalate(
                conn, need, "follow_up_needed", "the helper asks the community to follow up"
            )

    async def _complete(
        self,
        conn: Conn,
        community: str,
        need_id: uuid.UUID,
        assignment_id: uuid.UUID,
        by: PartyRef,
        at: datetime,
    ) -> asyncpg.Record | None:
        found = await self._current(conn, community, need_id, assignment_id, (by.kind, by.id))
        if found is None:
            return None
        need, assignment = found
        if assignment["leg"] == Leg.PREPARE.value:
            log.warning("a completion reported on a prepare leg; ignored (the carrier fulfils)")
            return None
        now = self.clock.now()
        await store.close_assignment(conn, assignment_id, "completed", now)
        prepare = await self._prepare_assignment(conn, need)
        if prepare is not None:
            # The carrier handed the meal over: the canteen's leg is done as well, whether
            # or not its own report arrived first (when things happened, not message order).
            await store.close_assignment(conn, prepare["id"], "completed", now)
        await self._move(conn, need, NeedState.FULFILLED, assignment_id=assignment_id)
        await store.cancel_timers(conn, need_id)
        await self._emit(
            conn,
            community,
            need_id,
            NeedFulfilled(
                need_id=need_id,
                assignment_id=assignment_id,
                kind=NeedKind(need["kind"]),
                fulfilled_by=by,
                fulfilled_at=at,
            ),
        )
        return need

    async def _delivery_failed(self, conn: Conn, community: str, data: DeliveryFailed) -> None:
        found = await self._current(
            conn,
            community,
            data.need_id,
            data.assignment_id,
            (data.attempted_by.kind, data.attempted_by.id),
        )
        if found is None:
            return
        need, assignment = found
        if assignment["leg"] is not None:
            await self._leg_failed(conn, need, assignment, data)
            return
        now = self.clock.now()
        slot_id = await self._release(
            conn, need, assignment, "failed", SlotReleaseReason.DELIVERY_FAILED, now
        )
        await self._move(conn, need, NeedState.FAILED, assignment_id=assignment["id"])
        await store.cancel_timers(conn, need["id"])
        await self._escalate(
            conn,
            need,
            failure_escalation(need["kind"], need["priority_group"]),
            f"attempt failed: {data.reason.value}",
        )
        await self._fill_slot(conn, slot_id, now)

    async def _leg_failed(
        self, conn: Conn, need: asyncpg.Record, assignment: asyncpg.Record, data: DeliveryFailed
    ) -> None:
        """A leg of a two-leg meal failed (ADR 0044): that leg is offered to the next
        candidate, on the need's own clock, and the other leg stays as it is. A carrier who
        found the resident not home, refused, unsafe or at a wrong address is also
        escalated as a single-leg failure would be; a carrier's own trouble (`other`) and
        a canteen's failure only re-offer the leg."""
        if assignment["leg"] == Leg.CARRY.value and data.reason is not FailureReason.OTHER:
            await self._escalate(
                conn,
                need,
                failure_escalation(need["kind"], need["priority_group"]),
                f"carry leg attempt failed: {data.reason.value}; offered to the next carrier",
                key=f"delivery_failed:{assignment['id']}",
                leg=Leg.CARRY,
            )
        await self._give_back(conn, need, assignment, "failed", SlotReleaseReason.DELIVERY_FAILED)

    # --- matching -----------------------------------------------------------------

    async def _match_need(self, conn: Conn, need: asyncpg.Record, now: datetime) -> None:
        """Offer a locked, queued need on the best slot, or say why not.

        A need not yet served in two legs may take a canteen's prepare slot: it becomes a
        two-leg need, and its own state then follows the carry leg (ADR 0044).
        """
        legs = (Leg.CARRY.value,) if need["two_leg"] else store.MAIN_LEGS
        slot = await store.reserve_best_slot(conn, need, now, legs=legs)
        if slot is not None:
            await self._offer_on(conn, need, slot, now)
            return
        if await store.candidate_exists(conn, need, now, legs=legs):
            # A fitting slot exists but another transaction holds it: look again soon
            # (it may be full by then) instead of escalating a need that can be served.
            metrics.RESERVATION_CONFLICTS.labels(need["community"], need["kind"]).inc()
            await store.add_timer(
                conn,
                kind="rematch",
                need_id=need["id"],
                due_at=now + timedelta(seconds=self.config.rematch_delay_s),
                traceparent=current_traceparent(),
            )
            return
        reason = no_candidate_reason(await store.has_exclusions(conn, need["id"]))
        await self._move(conn, need, NeedState.ESCALATED, assignment_id=None)
        detail = (
            "every candidate declined or let the offer expire"
            if reason == "no_taker"
            else "no slot with capacity fits this need"
        )
        # Once per episode: a need offered again on new capacity and left again is news
        # to the operators (and moves intake's view back to escalated).
        leg = Leg.CARRY if need["two_leg"] else None
        if leg is not None:
            detail = f"carry leg: {detail}"
        await self._escalate(
            conn, need, reason, detail, key=f"{reason}:{need['attempts']}", leg=leg
        )

    async def _offer_on(
        self, conn: Conn, need: asyncpg.Record, slot: asyncpg.Record, now: datetime
    ) -> None:
        """Offer a queued need on a reserved slot: a prepare slot starts two legs."""
        if slot["leg"] == Leg.PREPARE.value and not need["two_leg"]:
            need = await self._offer_prepare(conn, need, slot, now)
            await self._match_need(conn, need, now)
            return
        await self._offer(conn, need, slot, now)

    async def _match_prepare(self, conn: Conn, need: asyncpg.Record, now: datetime) -> None:
        """Offer a two-leg need's prepare leg to the next canteen, or escalate that leg.

        The need's own state (the carry leg) does not move.
        """
        legs = (Leg.PREPARE.value,)
        slot = await store.reserve_best_slot(conn, need, now, legs=legs)
        if slot is not None:
            await self._offer_prepare(conn, need, slot, now)
            return
        if await store.candidate_exists(conn, need, now, legs=legs):
            metrics.RESERVATION_CONFLICTS.labels(need["community"], need["kind"]).inc()
            await store.add_timer(
                conn,
                kind="rematch",
                need_id=need["id"],
                clock=Leg.PREPARE.value,
                due_at=now + timedelta(seconds=self.config.rematch_delay_s),
                traceparent=current_traceparent(),
            )
            return
        tried = await store.leg_attempts(conn, need["id"], Leg.PREPARE.value)
        await self._escalate(
            conn,
            need,
            "no_taker",
            "prepare leg: no other canteen with capacity fits this meal",
            key=f"no_taker:prepare:{tried}",
            leg=Leg.PREPARE,
        )

    async def _offer_prepare(
        self, conn: Conn, need: asyncpg.Record, slot: asyncpg.Record, now: datetime
    ) -> asyncpg.Record:
        """Offer the prepare leg on a reserved prepare slot; returns the need, two-leg."""
        policy = await self.policy(conn, need["community"])
        assignment_id, reservation_id = uuid.uuid4(), uuid.uuid4()
        attempt = await store.leg_attempts(conn, need["id"], Leg.PREPARE.value) + 1
        expires_at = now + offer_timeout(need["urgency"], policy, self.config.time_scale)
        await store.insert_assignment(
            conn,
            assignment_id=assignment_id,
            reservation_id=reservation_id,
            need_id=need["id"],
            slot=slot,
            attempt=attempt,
            offered_at=now,
            expires_at=expires_at,
            leg=Leg.PREPARE.value,
        )
        two_leg = await store.set_prepare_leg(conn, need["id"], assignment_id)
        await self._offer_timer_and_events(
            conn, need, slot, now, assignment_id, reservation_id, attempt, expires_at, Leg.PREPARE
        )
        return two_leg

    async def _fill_slot(self, conn: Conn, slot_id: uuid.UUID, now: datetime) -> None:
        """Give a slot's free capacity to queued needs, highest priority first."""
        slot = await store.lock_slot(conn, slot_id)
        if slot is None or slot["reserved"] >= slot["capacity"] or slot["window_latest"] <= now:
            return
        if slot["directed_need"] is not None:
            return  # made for one directed offer (ADR 0034): never anyone else's
        free = min(slot["capacity"] - slot["reserved"], self.config.fill_limit)
        if slot["leg"] == Leg.PREPARE.value:
            # Meals whose carrier waits for a canteen go first (ADR 0044).
            for need in await store.needs_for_prepare_leg(conn, slot, now, free):
                reserved = await store.reserve_slot(conn, slot_id)
                if reserved is None:
                    return
                with resumed_span("offer from slot", need["traceparent"]):
                    await self._offer_prepare(conn, need, reserved, now)
                free -= 1
            if free <= 0:
                return
        for need in await store.needs_for_slot(conn, slot, now, free):
            reserved = await store.reserve_slot(conn, slot_id)
            if reserved is None:
                metrics.RESERVATION_CONFLICTS.labels(slot["community"], slot["kind"]).inc()
                return
            # The slot's event brought this about; the offer belongs to the need's trace.
            with resumed_span("offer from slot", need["traceparent"]):
                await self._offer_on(conn, need, reserved, now)

    async def _offer(
        self,
        conn: Conn,
        need: asyncpg.Record,
        slot: asyncpg.Record,
        now: datetime,
        *,
        assignment_id: uuid.UUID | None = None,
    ) -> None:
        policy = await self.policy(conn, need["community"])
        assignment_id, reservation_id = assignment_id or uuid.uuid4(), uuid.uuid4()
        attempt = need["attempts"] + 1
        expires_at = now + offer_timeout(need["urgency"], policy, self.config.time_scale)
        # A two-leg need's own offers are its carry leg (ADR 0044).
        leg = Leg.CARRY if need["two_leg"] else None
        await store.insert_assignment(
            conn,
            assignment_id=assignment_id,
            reservation_id=reservation_id,
            need_id=need["id"],
            slot=slot,
            attempt=attempt,
            offered_at=now,
            expires_at=expires_at,
            leg=leg.value if leg else None,
        )
        await self._move(
            conn, need, NeedState.OFFERED, assignment_id=assignment_id, attempts=attempt
        )
        await self._offer_timer_and_events(
            conn, need, slot, now, assignment_id, reservation_id, attempt, expires_at, leg
        )

    async def _offer_timer_and_events(
        self,
        conn: Conn,
        need: asyncpg.Record,
        slot: asyncpg.Record,
        now: datetime,
        assignment_id: uuid.UUID,
        reservation_id: uuid.UUID,
        attempt: int,
        expires_at: datetime,
        leg: Leg | None,
    ) -> None:
        # Partners decides whether the offer is answered in time or lapses (ADR 0026);
        # this timer only tells the operators when that verdict is long overdue.
        await store.add_timer(
            conn,
            kind="offer_overdue",
            need_id=need["id"],
            assignment_id=assignment_id,
            due_at=expires_at + timedelta(seconds=self.config.offer_verdict_grace_s),
            traceparent=current_traceparent(),
        )
        await self._emit_all(
            conn,
            need["community"],
            need["id"],
            SlotReserved(
                reservation_id=reservation_id,
                slot_id=slot["id"],
                need_id=need["id"],
                remaining_capacity=slot["capacity"] - slot["reserved"],
                reserved_at=now,
            ),
            AssignmentOffered.model_validate(
                {
                    "assignment_id": assignment_id,
                    "need_id": need["id"],
                    "slot_id": slot["id"],
                    "offered_to": {"kind": slot["provider_kind"], "id": slot["provider_id"]},
                    "kind": need["kind"],
                    "urgency": need["urgency"],
                    "window": {
                        "earliest": need["window_earliest"],
                        "latest": need["window_latest"],
                    },
                    "details": store.details_of(need),
                    "compound": need["compound"],
                    "attempt": min(attempt, 100),
                    "offered_at": now,
                    "expires_at": expires_at,
                    "leg": leg,
                }
            ),
        )

    async def _release(
        self,
        conn: Conn,
        need: asyncpg.Record,
        assignment: asyncpg.Record,
        state: str,
        reason: SlotReleaseReason,
        now: datetime,
    ) -> uuid.UUID:
        """Close an active assignment and return its unit to the slot."""
        await store.close_assignment(conn, assignment["id"], state, now, reason.value)
        await store.release_slot(conn, assignment["slot_id"])
        await store.cancel_timers(
            conn,
            need["id"],
            kinds=OFFER_TIMERS,
            assignment_id=assignment["id"] if assignment["leg"] else None,
        )
        await self._emit(
            conn,
            need["community"],
            need["id"],
            SlotReleased(
                reservation_id=assignment["reservation_id"],
                slot_id=assignment["slot_id"],
                need_id=need["id"],
                reason=reason,
                released_at=now,
            ),
        )
        slot_id: uuid.UUID = assignment["slot_id"]
        return slot_id

    # --- SLA and escalation -------------------------------------------------------

    async def _sla(
        self, conn: Conn, need: asyncpg.Record, timer: asyncpg.Record, now: datetime
    ) -> str:
        if not clock_running(timer["clock"], need["state"]):
            return "stale"
        breached = timer["kind"] == "sla_breach"
        reason = "sla_breached" if breached else "sla_at_risk"
        what = "missed" if breached else "at risk"
        await self._escalate(
            conn,
            need,
            reason,
            f"{timer['clock']} deadline {what}",
            key=f"{reason}:{timer['clock']}",
            sla_deadline=timer["deadline"],
        )
        return "fired"

    async def _escalate(
        self,
        conn: Conn,
        need: asyncpg.Record,
        reason: str,
        detail: str,
        *,
        key: str | None = None,
        sla_deadline: datetime | None = None,
        leg: Leg | None = None,
    ) -> None:
        """Tell the community's operators, once per need and key."""
        now = self.clock.now()
        first = await store.add_escalation(
            conn,
            need["id"],
            community=need["community"],
            key=key or reason,
            reason=reason,
            detail=detail,
            sla_deadline=sla_deadline,
            at=now,
        )
        if not first:
            return
        await self._emit(
            conn,
            need["community"],
            need["id"],
            NeedEscalated(
                need_id=need["id"],
                reason=reason,
                detail=detail,
                urgency=Urgency(need["urgency"]),
                sla_deadline=sla_deadline,
                escalated_at=now,
                leg=leg,
            ),
        )

    # --- staff actions on needs (ADR 0034) -----------------------------------------

    async def dispatch(
        self,
        conn: Conn,
        community: str,
        need_id: uuid.UUID,
        party: PartyRef,
        slot_id: uuid.UUID | None,
        staff: Staff,
    ) -> DispatchResult:
        """Offer a need by hand to a chosen partner or volunteer (a directed offer).

        The party's own published slot that fits is reserved as usual (a conditional
        update: never oversold); `slot_id` names one. When the party has none with room,
        the operator's choice stands anyway: a one-off slot of one unit is made for this
        offer (`without_capacity`), which matching never gives to another need. An open
        offer to someone else is withdrawn first, and that party is not asked again
        unless an operator names them. A repeat (the open offer already goes to this
        party, on the named slot) changes nothing. The chosen party may have declined
        before: naming it is the operator's override of that exclusion.
        """
        now = self.clock.now()
        async with conn.transaction():
            need = await self._dispatchable(conn, community, need_id, "dispatched by hand")
            current = await self._active_assignment(conn, need)
            if (
                current is not None
                and (current["provider_kind"], current["provider_id"])
                == (party.kind.value, party.id)
                and slot_id in (None, current["slot_id"])
            ):
                return DispatchResult(
                    need["id"], NeedState(need["state"]), current["id"], None, changed=False
                )
            if not await store.party_serves(
                conn, community, need["kind"], party.kind.value, party.id
            ):
                raise ActionRefused(
                    422,
                    "unknown_party",
                    f"this {party.kind.value} has published no {need['kind']} capacity in "
                    "this community",
                    field="body.party",
                )
            withdrawn = released = None
            if current is not None:
                withdrawn = current["id"]
                released = await self._withdraw(conn, need, current, staff, now)
                need = await self._move(conn, need, NeedState.WAITING, assignment_id=None)
            slot = await self._party_slot(conn, need, party, slot_id, now)
            without_capacity = slot is None
            if slot is None:
                slot = await store.insert_directed_slot(conn, need, party.kind.value, party.id, now)
            assignment_id = uuid.uuid4()
            await self._emit(
                conn,
                community,
                need["id"],
                NeedDispatched(
                    need_id=need["id"],
                    assignment_id=assignment_id,
                    slot_id=slot["id"],
                    offered_to=party,
                    without_capacity=without_capacity,
                    actor=staff.event(),
                    dispatched_at=now,
                ),
            )
            await self._offer(conn, need, slot, now, assignment_id=assignment_id)
            await store.add_need_action(
                conn,
                need["id"],
                "dispatched",
                staff.row(),
                now,
                assignment_id=assignment_id,
                withdrawn_assignment_id=withdrawn,
                without_capacity=without_capacity,
            )
            if released is not None:
                await self._fill_slot(conn, released, now)
        return DispatchResult(
            need["id"], NeedState.OFFERED, assignment_id, withdrawn, without_capacity
        )

    async def reoffer(
        self,
        conn: Conn,
        community: str,
        need_id: uuid.UUID,
        readmit: list[PartyRef],
        staff: Staff,
    ) -> DispatchResult:
        """Withdraw the open offer, if any, and match the need again.

        The withdrawn party joins those who declined or let an offer lapse: matching asks
        someone else. `readmit` names parties the operator wants asked again.
        """
        now = self.clock.now()
        async with conn.transaction():
            need = await self._dispatchable(conn, community, need_id, "re-offered")
            current = await self._active_assignment(conn, need)
            withdrawn = released = None
            if current is not None:
                withdrawn = current["id"]
                released = await self._withdraw(conn, need, current, staff, now)
                need = await self._move(conn, need, NeedState.WAITING, assignment_id=None)
            await store.remove_exclusions(conn, need["id"], [(p.kind.value, p.id) for p in readmit])
            await self._emit(
                conn,
                community,
                need["id"],
                NeedReoffered(
                    need_id=need["id"],
                    withdrawn_assignment_id=withdrawn,
                    readmitted=readmit,
                    actor=staff.event(),
                    reoffered_at=now,
                ),
            )
            await store.add_need_action(
                conn, need["id"], "reoffered", staff.row(), now, withdrawn_assignment_id=withdrawn
            )
            await self._match_need(conn, need, now)
            if released is not None:
                await self._fill_slot(conn, released, now)
            after = await store.get_need(conn, community, need["id"])
        assert after is not None
        return DispatchResult(
            after["id"], NeedState(after["state"]), after["current_assignment"], withdrawn
        )

    async def _dispatchable(
        self, conn: Conn, community: str, need_id: uuid.UUID, what: str
    ) -> asyncpg.Record:
        need = await store.lock_need_in(conn, community, need_id)
        if need is None:
            raise ActionNotFound("need")
        state = NeedState(need["state"])
        if state not in DISPATCHABLE:
            raise ActionRefused(
                409, "need_not_dispatchable", f"a need that is {state.value} cannot be {what}"
            )
        return need

    async def _party_slot(
        self,
        conn: Conn,
        need: asyncpg.Record,
        party: PartyRef,
        slot_id: uuid.UUID | None,
        now: datetime,
    ) -> asyncpg.Record | None:
        """A unit of the party's slot for this need (the named one), or None when the
        party has no published slot with room that fits."""
        if slot_id is None:
            return await store.reserve_party_slot(conn, need, party.kind.value, party.id, now)
        slot = await store.lock_party_slot(conn, need["community"], slot_id)
        if slot is None or (slot["provider_kind"], slot["provider_id"]) != (
            party.kind.value,
            party.id,
        ):
            raise ActionRefused(
                422, "unknown_slot", "no such slot of this party", field="body.slot_id"
            )
        if slot["reserved"] >= slot["capacity"]:
            raise ActionRefused(409, "slot_full", "the slot has no capacity left")
        facts = store.slot_facts(slot)
        if not slot_fits(store.need_facts(need), facts, now=now):
            raise ActionRefused(
                422,
                "slot_does_not_fit",
                "the slot does not fit the need (kind, window, compound or over)",
                field="body.slot_id",
            )
        return await store.reserve_slot(conn, slot_id)

    async def _withdraw(
        self,
        conn: Conn,
        need: asyncpg.Record,
        assignment: asyncpg.Record,
        staff: Staff,
        now: datetime,
    ) -> uuid.UUID | None:
        """Withdraw an open offer: release its unit, remember its party (not asked again),
        tell partners (`assignment.withdrawn`). Returns the slot to refill, if any."""
        await self._emit(
            conn,
            need["community"],
            need["id"],
            AssignmentWithdrawn(
                assignment_id=assignment["id"],
                need_id=need["id"],
                slot_id=assignment["slot_id"],
                offered_to=_party(assignment),
                actor=staff.event(),
                withdrawn_at=now,
            ),
        )
        slot_id = await self._release(
            conn, need, assignment, "withdrawn", SlotReleaseReason.OTHER, now
        )
        await store.add_exclusion(
            conn, need["id"], assignment["provider_kind"], assignment["provider_id"], "withdrawn"
        )
        return slot_id

    # --- helpers ------------------------------------------------------------------

    async def _need_of(
        self, conn: Conn, community: str, need_id: uuid.UUID
    ) -> asyncpg.Record | None:
        need = await store.lock_need(conn, need_id)
        if need is None or need["community"] != community:
            return None
        return need

    async def _active_assignment(self, conn: Conn, need: asyncpg.Record) -> asyncpg.Record | None:
        if need["current_assignment"] is None:
            return None
        assignment = await store.get_assignment(conn, need["current_assignment"])
        if assignment is None or assignment["state"] not in ACTIVE_ASSIGNMENT:
            return None
        return assignment

    async def _prepare_assignment(self, conn: Conn, need: asyncpg.Record) -> asyncpg.Record | None:
        """A two-leg need's active prepare assignment, if any (ADR 0044)."""
        if need["prepare_assignment"] is None:
            return None
        assignment = await store.get_assignment(conn, need["prepare_assignment"])
        if assignment is None or assignment["state"] not in ACTIVE_ASSIGNMENT:
            return None
        return assignment

    async def _current(
        self,
        conn: Conn,
        community: str,
        need_id: uuid.UUID,
        assignment_id: uuid.UUID,
        provider: tuple[PartyKind, uuid.UUID],
    ) -> tuple[asyncpg.Record, asyncpg.Record] | None:
        """The locked need and its active assignment, if the answer is about them.

        An answer for an assignment that is no longer current (expired, declined,
        re-offered, cancelled) or from someone it was not offered to changes nothing.
        """
        need = await self._need_of(conn, community, need_id)
        if need is None or assignment_id not in (
            need["current_assignment"],
            need["prepare_assignment"],
        ):
            log.info("answer for an assignment that is not current; ignored")
            return None
        # The need's current offer or, of a two-leg meal, its prepare leg (ADR 0044).
        assignment = await store.get_assignment(conn, assignment_id)
        if assignment is None or assignment["state"] not in ACTIVE_ASSIGNMENT:
            return None
        if (assignment["provider_kind"], assignment["provider_id"]) != (
            provider[0].value,
            provider[1],
        ):
            log.warning("answer from a provider the assignment was not offered to; ignored")
            return None
        return need, assignment

    async def _emit(self, conn: Conn, community: str, need_id: uuid.UUID, data: BaseModel) -> None:
        await self._emit_all(conn, community, need_id, data)

    async def _emit_all(
        self, conn: Conn, community: str, need_id: uuid.UUID, *data: BaseModel
    ) -> None:
        """The events of one transition, in one outbox statement."""
        await outbox.enqueue_many(
            conn,
            [new_event(d, community=community, source=SOURCE, subject=str(need_id)) for d in data],
        )


@dataclass(frozen=True)
class DispatchResult:
    """What a dispatch or re-offer left: the need's state and its current offer."""

    need_id: uuid.UUID
    state: NeedState
    assignment_id: uuid.UUID | None
    withdrawn_assignment_id: uuid.UUID | None
    without_capacity: bool | None = None
    changed: bool = True


def _leg(assignment: asyncpg.Record) -> Leg | None:
    return Leg(assignment["leg"]) if assignment["leg"] else None


def _party(assignment: asyncpg.Record) -> PartyRef:
    return PartyRef(kind=PartyKind(assignment["provider_kind"]), id=assignment["provider_id"])
