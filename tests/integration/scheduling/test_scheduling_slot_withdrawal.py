"""A withdrawn or shrunk slot re-matches its reservations (issue #12, ADR 0042): the
helpers lose their offers (`assignment.withdrawn`, also after acceptance) and each need
is offered on another slot, never more reservations than places."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from harness.scheduling import need_submitted, party, slot_published, wait_for_db

from linli.contracts.events import (
    PartnerAccepted,
    SlotRevised,
    SlotWithdrawalReason,
    SlotWithdrawn,
    StaffActor,
)
from linli.contracts.types import Role

pytestmark = pytest.mark.integration

ACTOR = StaffActor(credential_id=uuid.uuid4(), role=Role.PARTNER)


async def test_a_withdrawn_slot_re_offers_its_accepted_need_elsewhere(start_scheduling) -> None:
    async with start_scheduling() as s:
        first, second = party(), party()
        withdrawn = slot_published(first, start_in_min=-10)
        await s.bus.publish(withdrawn)
        need = need_submitted()
        await s.bus.publish(need)
        offer = (await s.bus.wait("assignment.offered", need_id=need.need_id))[0].data
        assert offer["offered_to"]["id"] == str(first.id)
        await s.bus.publish(
            PartnerAccepted(
                assignment_id=offer["assignment_id"],
                need_id=need.need_id,
                slot_id=withdrawn.slot_id,
                partner_id=first.id,
                accepted_at=datetime.now(UTC),
            )
        )
        assert (
            await wait_for_db(
                s.pool, "SELECT state FROM needs WHERE id = $1", "assigned", need.need_id
            )
            == "assigned"
        )
        await s.bus.publish(slot_published(second, start_in_min=0))
        gone = SlotWithdrawn(
            slot_id=withdrawn.slot_id,
            provider=first,
            reason=SlotWithdrawalReason.WITHDRAWN,
            actor=ACTOR,
            withdrawn_at=datetime.now(UTC),
        )
        await s.bus.publish(gone)
        await s.bus.publish(gone)  # a redelivery changes nothing

        told = (await s.bus.wait("assignment.withdrawn", need_id=need.need_id))[0].data
        assert told["assignment_id"] == offer["assignment_id"]
        offers = await s.bus.wait("assignment.offered", 2, need_id=need.need_id)
        assert offers[1].data["offered_to"]["id"] == str(second.id)
        row = await s.pool.fetchrow(
            "SELECT reserved, withdrawn_at FROM slots WHERE id = $1", withdrawn.slot_id
        )
        assert row["reserved"] == 0
        assert row["withdrawn_at"] is not None
        assert len(s.bus.emitted("assignment.withdrawn", need_id=need.need_id)) == 1


async def test_a_withdrawn_slot_with_nothing_else_escalates_its_need(start_scheduling) -> None:
    async with start_scheduling() as s:
        only = party()
        slot = slot_published(only)
        await s.bus.publish(slot)
        need = need_submitted()
        await s.bus.publish(need)
        await s.bus.wait("assignment.offered", need_id=need.need_id)
        await s.bus.publish(
            SlotWithdrawn(
                slot_id=slot.slot_id,
                provider=only,
                reason=SlotWithdrawalReason.PROVIDER_DEACTIVATED,
                actor=ACTOR,
                withdrawn_at=datetime.now(UTC),
            )
        )
        escalated = (await s.bus.wait("need.escalated", need_id=need.need_id))[0].data
        assert escalated["reason"] == "no_capacity"


async def test_shrinking_a_slot_releases_the_excess_and_never_oversells(start_scheduling) -> None:
    async with start_scheduling() as s:
        provider, spare = party(), party()
        slot = slot_published(provider, capacity=3, start_in_min=-10)
        await s.bus.publish(slot)
        needs = [need_submitted() for _ in range(3)]
        for need in needs:
            await s.bus.publish(need)
        for need in needs:
            await s.bus.wait("assignment.offered", need_id=need.need_id)
        await s.bus.publish(slot_published(spare, capacity=5, start_in_min=0))
        await s.bus.publish(
            SlotRevised(
                slot_id=slot.slot_id,
                kind=slot.kind,
                provider=provider,
                window=slot.window,
                capacity=1,
                compounds=slot.compounds,
                revision=1,
                actor=ACTOR,
                revised_at=datetime.now(UTC),
            )
        )
        await s.bus.wait("assignment.withdrawn", 2)
        row = await wait_for_db(s.pool, "SELECT capacity FROM slots WHERE id = $1", 1, slot.slot_id)
        assert row == 1
        reserved = await s.pool.fetchval("SELECT reserved FROM slots WHERE id = $1", slot.slot_id)
        assert reserved <= 1
        for need in needs:
            offers = await s.bus.wait("assignment.offered", need_id=need.need_id)
            assert offers


async def test_a_volunteer_outside_weekly_availability_is_not_offered(start_scheduling) -> None:
    from datetime import time, timedelta
    from zoneinfo import ZoneInfo

    from linli.contracts.events import VolunteerAvailabilityChanged, WeeklyAvailability

    async with start_scheduling() as s:
        away, free = party("volunteer"), party("volunteer")
        today = datetime.now(ZoneInfo("Asia/Shanghai")).isoweekday()
        elsewhere = (today + 2) % 7 + 1  # neither today nor tomorrow
        await s.bus.publish(
            VolunteerAvailabilityChanged(
                volunteer_id=away.id,
                active=True,
                timezone="Asia/Shanghai",
                availability=[WeeklyAvailability(weekday=elsewhere, start=time(9), end=time(17))],
                changed_at=datetime.now(UTC) - timedelta(seconds=1),
            )
        )
        await wait_for_db(s.pool, "SELECT count(*) FROM volunteers WHERE id = $1", 1, away.id)
        # The volunteer away today has the earlier slot: without availability it would win.
        await s.bus.publish(slot_published(away, start_in_min=-10, minutes=120))
        await s.bus.publish(slot_published(free, start_in_min=0, minutes=120))
        need = need_submitted(minutes=60)
        await s.bus.publish(need)
        offer = (await s.bus.wait("assignment.offered", need_id=need.need_id))[0].data
        assert offer["offered_to"]["id"] == str(free.id)
