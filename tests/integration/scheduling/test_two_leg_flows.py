"""Two-leg meals in scheduling on real JetStream and PostgreSQL (ADR 0044): a carry leg
that waits for capacity, a cancellation that releases both legs, and a delivery that
completes the canteen's leg whatever order the reports arrive in."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from harness.scheduling import lapsed, need_submitted, party, slot_published, wait_for_db

from linli.contracts.events import (
    HandedTo,
    Leg,
    MealDelivered,
    MealPrepared,
    NeedCancelled,
    PartnerAccepted,
    SlotPublished,
    VolunteerConfirmed,
)
from linli.contracts.types import Role

pytestmark = pytest.mark.integration


def _leg_slot(kind: str, leg: Leg, start_in_min: float = 0) -> SlotPublished:
    return slot_published(party(kind), capacity=2, start_in_min=start_in_min).model_copy(
        update={"leg": leg}
    )


async def _legs(s, need_id) -> list[tuple[str, str]]:
    rows = await s.pool.fetch(
        "SELECT leg, state FROM assignments WHERE need_id = $1 ORDER BY leg DESC", need_id
    )
    return [(r["leg"], r["state"]) for r in rows]


async def test_a_carry_leg_waits_for_capacity_and_cancelling_releases_both_legs(
    start_scheduling,
) -> None:
    async with start_scheduling() as s:
        canteen = _leg_slot("partner", Leg.PREPARE)
        await s.bus.publish(canteen)
        need = need_submitted()
        await s.bus.publish(need)
        (prepare,) = await s.bus.wait("assignment.offered", need_id=need.need_id)
        assert prepare.data["leg"] == "prepare"
        # No carrier yet: the carry leg is escalated, the canteen's offer stands.
        (escalated,) = await s.bus.wait("need.escalated", need_id=need.need_id)
        assert escalated.data["reason"] == "no_capacity"
        assert escalated.data["leg"] == "carry"
        assert await s.state(need.need_id) == "escalated"

        carrier = _leg_slot("volunteer", Leg.CARRY)
        await s.bus.publish(carrier)
        offered = await s.bus.wait("assignment.offered", 2, need_id=need.need_id)
        carry = next(e for e in offered if e.data.get("leg") == "carry")
        assert carry.data["offered_to"]["id"] == str(carrier.provider.id)
        assert await s.state(need.need_id) == "offered"
        view = await s.need_view(need.need_id)
        assert view["two_leg"] is True
        assert view["prepare_assignment"] == prepare.data["assignment_id"]
        assert view["current_assignment"] == carry.data["assignment_id"]

        # The next meal goes two-leg as well: the canteen's slot is still the earliest.
        other = need_submitted()
        await s.bus.publish(other)
        await s.bus.wait("assignment.offered", 2, need_id=other.need_id)
        assert {
            e.data["leg"] for e in s.bus.emitted("assignment.offered", need_id=other.need_id)
        } == {
            "prepare",
            "carry",
        }

        await s.bus.publish(
            NeedCancelled(
                need_id=need.need_id,
                cancelled_by_role=Role.OPERATOR,
                cancelled_at=datetime.now(UTC),
            )
        )
        await s.bus.wait("slot.released", 2, need_id=need.need_id)
        assert await s.state(need.need_id) == "cancelled"
        assert sorted(await _legs(s, need.need_id)) == [
            ("carry", "cancelled"),
            ("prepare", "cancelled"),
        ]
        reserved = dict(await s.pool.fetch("SELECT id, reserved FROM slots"))
        assert reserved == {canteen.slot_id: 1, carrier.slot_id: 1}  # only `other` holds units


async def test_delivery_completes_the_canteens_leg_whatever_order_reports_arrive(
    start_scheduling,
) -> None:
    async with start_scheduling() as s:
        canteen, carrier = _leg_slot("partner", Leg.PREPARE), _leg_slot("volunteer", Leg.CARRY)
        await s.bus.publish(canteen)
        await s.bus.publish(carrier)
        need = need_submitted()
        await s.bus.publish(need)
        offered = await s.bus.wait("assignment.offered", 2, need_id=need.need_id)
        by_leg = {e.data["leg"]: e.data for e in offered}
        now = datetime.now(UTC)
        await s.bus.publish(
            PartnerAccepted(
                assignment_id=by_leg["prepare"]["assignment_id"],
                need_id=need.need_id,
                slot_id=canteen.slot_id,
                partner_id=canteen.provider.id,
                accepted_at=now,
                leg=Leg.PREPARE,
            )
        )
        await s.bus.publish(
            VolunteerConfirmed(
                assignment_id=by_leg["carry"]["assignment_id"],
                need_id=need.need_id,
                slot_id=carrier.slot_id,
                volunteer_id=carrier.provider.id,
                confirmed_at=now,
                leg=Leg.CARRY,
            )
        )
        assigned = await wait_for_db(
            s.pool, "SELECT state FROM needs WHERE id = $1", "assigned", need.need_id
        )
        assert assigned == "assigned"
        assert sorted(await _legs(s, need.need_id)) == [
            ("carry", "accepted"),
            ("prepare", "accepted"),
        ]
        delivered = MealDelivered(
            need_id=need.need_id,
            assignment_id=by_leg["carry"]["assignment_id"],
            delivered_by=carrier.provider,
            delivered_at=now,
            handed_to=HandedTo.RESIDENT,
        )
        # The canteen's own report arrives after the delivery, and twice.
        prepared = MealPrepared(
            need_id=need.need_id,
            assignment_id=by_leg["prepare"]["assignment_id"],
            prepared_by=canteen.provider,
            prepared_at=now,
        )
        await s.bus.publish(delivered)
        await s.bus.wait("need.fulfilled", need_id=need.need_id)
        seen = await s.pool.fetchval("SELECT count(*) FROM inbox")
        for late in (prepared, prepared, delivered):
            await s.bus.publish(late)  # each a new event: only its effect may repeat
        assert await wait_for_db(s.pool, "SELECT count(*) FROM inbox", seen + 3) == seen + 3
        assert await s.state(need.need_id) == "fulfilled"
        assert sorted(await _legs(s, need.need_id)) == [
            ("carry", "completed"),
            ("prepare", "completed"),
        ]
        assert len(s.bus.emitted("need.fulfilled", need_id=need.need_id)) == 1
        (fulfilled,) = s.bus.emitted("need.fulfilled", need_id=need.need_id)
        assert fulfilled.data["fulfilled_by"]["id"] == str(carrier.provider.id)


async def test_a_lapsed_leg_goes_to_the_next_candidate_of_that_leg_only(start_scheduling) -> None:
    async with start_scheduling() as s:
        first, second = _leg_slot("partner", Leg.PREPARE), _leg_slot("partner", Leg.PREPARE, 30)
        carrier, spare = _leg_slot("volunteer", Leg.CARRY), _leg_slot("volunteer", Leg.CARRY, 30)
        for slot in (first, second, carrier, spare):
            await s.bus.publish(slot)
        need = need_submitted()
        await s.bus.publish(need)
        offered = await s.bus.wait("assignment.offered", 2, need_id=need.need_id)
        by_leg = {e.data["leg"]: e for e in offered}
        assert by_leg["prepare"].data["offered_to"]["id"] == str(first.provider.id)
        assert by_leg["carry"].data["offered_to"]["id"] == str(carrier.provider.id)

        # Nobody at the first canteen answers: the next canteen is asked, the carrier kept.
        await s.bus.publish(lapsed(by_leg["prepare"]))
        (expired,) = await s.bus.wait("assignment.expired", need_id=need.need_id)
        assert expired.data["leg"] == "prepare"
        offered = await s.bus.wait("assignment.offered", 3, need_id=need.need_id)
        assert offered[-1].data["leg"] == "prepare"
        assert offered[-1].data["offered_to"]["id"] == str(second.provider.id)
        view = await s.need_view(need.need_id)
        assert view["current_assignment"] == by_leg["carry"].data["assignment_id"]
        assert view["state"] == "offered"

        # Nor does the carrier: the spare carrier is asked, the canteen's offer kept.
        await s.bus.publish(lapsed(by_leg["carry"]))
        offered = await s.bus.wait("assignment.offered", 4, need_id=need.need_id)
        assert offered[-1].data["leg"] == "carry"
        assert offered[-1].data["offered_to"]["id"] == str(spare.provider.id)
        view = await s.need_view(need.need_id)
        assert view["prepare_assignment"] == offered[2].data["assignment_id"]
        assert view["attempts"] == 2  # the carry leg's offers
        assert s.bus.emitted("need.escalated", need_id=need.need_id) == []
