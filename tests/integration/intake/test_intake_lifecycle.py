"""Intake follows the lifecycle so GET need tells the truth, and reveals a resident's
contact details only to the helper who accepted, only with consent, only to the
partners service."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from harness.common import consumer_settled
from harness.intake import meal_need, publish_event, resident_body

from linli.contracts.events import (
    AssignmentOffered,
    MealDelivered,
    NeedEscalated,
    NeedFulfilled,
    PartnerDeclined,
    PartyRef,
    SlotReserved,
    VolunteerConfirmed,
)
from linli.contracts.types import Role
from linli.intake.app import LIFECYCLE
from linli.servicekit.auth import issue_credential

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


async def submitted(intake, *, consent: bool = True) -> dict:
    world = intake.world
    base = f"/v1/communities/{world.home}"
    resident = await intake.http.post(
        f"{base}/residents",
        json=resident_body(consent_to_share_contact=consent),
        headers=world.auth(),
    )
    need = await intake.http.post(
        f"{base}/needs", json=meal_need(resident.json()["id"]), headers=world.auth()
    )
    return need.json()


async def status_of(intake, need_id: str, want: str, timeout: float = 10.0) -> dict:
    world = intake.world
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await intake.http.get(
            f"/v1/communities/{world.home}/needs/{need_id}", headers=world.auth()
        )
        body = got.json()
        if body["status"] == want or loop.time() > deadline:
            return body
        await asyncio.sleep(0.1)


async def service_token(intake) -> dict[str, str]:
    async with intake.app.state.runtime.pool.acquire() as conn:
        _, token = await issue_credential(
            conn, role=Role.SERVICE, communities=[intake.world.home], label="partners"
        )
    return {"Authorization": f"Bearer {token}"}


async def walk_to_assigned(intake, need: dict, volunteer: uuid.UUID) -> uuid.UUID:
    home = intake.world.home
    need_id = uuid.UUID(need["id"])
    slot, assignment = uuid.uuid4(), uuid.uuid4()
    window = need["window"]
    await publish_event(
        intake.js,
        SlotReserved(
            reservation_id=uuid.uuid4(),
            slot_id=slot,
            need_id=need_id,
            remaining_capacity=3,
            reserved_at=NOW,
        ),
        home,
    )
    await publish_event(
        intake.js,
        AssignmentOffered(
            assignment_id=assignment,
            need_id=need_id,
            slot_id=slot,
            offered_to=PartyRef(kind="volunteer", id=volunteer),
            kind="meal_delivery",
            urgency="routine",
            window=window,
            details=need["details"],
            compound=None,
            offered_at=NOW,
            expires_at=NOW + timedelta(minutes=30),
        ),
        home,
    )
    await publish_event(
        intake.js,
        VolunteerConfirmed(
            assignment_id=assignment,
            need_id=need_id,
            slot_id=slot,
            volunteer_id=volunteer,
            confirmed_at=NOW,
        ),
        home,
    )
    return assignment


async def test_status_follows_the_lifecycle_to_fulfilled(intake) -> None:
    need = await submitted(intake)
    volunteer = uuid.uuid4()
    assignment = await walk_to_assigned(intake, need, volunteer)
    body = await status_of(intake, need["id"], "assigned")
    assert body["status"] == "assigned"
    # A late decline from someone else changes no status.
    await publish_event(
        intake.js,
        PartnerDeclined(
            assignment_id=uuid.uuid4(),
            need_id=uuid.UUID(need["id"]),
            partner_id=uuid.uuid4(),
            declined_at=NOW,
        ),
        intake.world.home,
    )
    party = PartyRef(kind="volunteer", id=volunteer)
    await publish_event(
        intake.js,
        MealDelivered(
            need_id=uuid.UUID(need["id"]),
            assignment_id=assignment,
            delivered_by=party,
            delivered_at=NOW,
            handed_to="resident",
        ),
        intake.world.home,
    )
    fulfilled_id = await publish_event(
        intake.js,
        NeedFulfilled(
            need_id=uuid.UUID(need["id"]),
            assignment_id=assignment,
            kind="meal_delivery",
            fulfilled_by=party,
            fulfilled_at=NOW,
        ),
        intake.world.home,
    )
    body = await status_of(intake, need["id"], "fulfilled")
    assert body["status"] == "fulfilled"
    steps = [(t["status"], t["note"]) for t in body["timeline"]]
    assert steps[0] == ("submitted", None)
    # Events of one pull batch are handled concurrently, so entries may interleave; the
    # status itself only moves forward.
    notes = sorted((note or status).split(" ")[0] for status, note in steps)
    assert notes == sorted(
        ["submitted", "slot", "offered", "confirmed", "declined", "delivered,", "fulfilled"]
    )
    # The same event again (outside the duplicate window) adds nothing.
    await intake.js.publish(
        f"linli.events.{intake.world.home}.need.fulfilled.v1",
        (
            await intake.js.get_msg(
                intake.world.settings.events_stream,
                (await intake.js.stream_info(intake.world.settings.events_stream)).state.last_seq,
            )
        ).data,
        headers={"Nats-Msg-Id": f"{fulfilled_id}-again"},
    )
    await consumer_settled(intake.js, intake.world.settings.events_stream, LIFECYCLE)
    again = await status_of(intake, need["id"], "fulfilled")
    assert len(again["timeline"]) == len(body["timeline"])


async def test_contact_details_only_for_the_accepted_helper_with_consent(intake) -> None:
    home = intake.world.home
    need = await submitted(intake)
    volunteer = uuid.uuid4()
    url = f"/v1/communities/{home}/needs/{need['id']}/contact"
    svc = await service_token(intake)
    params = {"party_kind": "volunteer", "party_id": str(volunteer)}
    # Before acceptance: nothing.
    assert (await intake.http.get(url, params=params, headers=svc)).status_code == 404
    await walk_to_assigned(intake, need, volunteer)
    await status_of(intake, need["id"], "assigned")
    got = await intake.http.get(url, params=params, headers=svc)
    assert got.status_code == 200
    assert got.json()["phone"] == "+8613800138001"
    # Another party, or an operator's credential, gets nothing.
    other = {"party_kind": "volunteer", "party_id": str(uuid.uuid4())}
    assert (await intake.http.get(url, params=other, headers=svc)).status_code == 404
    operator = await intake.http.get(url, params=params, headers=intake.world.auth())
    assert operator.status_code == 403


async def test_no_contact_details_without_consent(intake) -> None:
    home = intake.world.home
    need = await submitted(intake, consent=False)
    volunteer = uuid.uuid4()
    await walk_to_assigned(intake, need, volunteer)
    await status_of(intake, need["id"], "assigned")
    got = await intake.http.get(
        f"/v1/communities/{home}/needs/{need['id']}/contact",
        params={"party_kind": "volunteer", "party_id": str(volunteer)},
        headers=await service_token(intake),
    )
    assert got.status_code == 404


@pytest.mark.parametrize(
    "acceptance_first", [True, False], ids=["accepted-then-expired", "expired-then-accepted"]
)
async def test_an_acceptance_scheduling_never_honoured_makes_nobody_the_assignee(
    intake, acceptance_first: bool
) -> None:
    from linli.contracts.events import AssignmentExpired

    home = intake.world.home
    need = await submitted(intake)
    volunteer = uuid.uuid4()
    need_id = uuid.UUID(need["id"])
    assignment, slot = uuid.uuid4(), uuid.uuid4()
    confirmed = VolunteerConfirmed(
        assignment_id=assignment,
        need_id=need_id,
        slot_id=slot,
        volunteer_id=volunteer,
        confirmed_at=NOW,
    )
    expired = AssignmentExpired(
        assignment_id=assignment,
        need_id=need_id,
        slot_id=slot,
        offered_to=PartyRef(kind="volunteer", id=volunteer),
        expired_at=NOW,
    )
    for data in (confirmed, expired) if acceptance_first else (expired, confirmed):
        await publish_event(intake.js, data, home)
        # In this order, each handled before the next arrives (not one batch).
        await consumer_settled(intake.js, intake.world.settings.events_stream, LIFECYCLE)
    body = (
        await intake.http.get(
            f"/v1/communities/{home}/needs/{need['id']}", headers=intake.world.auth()
        )
    ).json()
    assert body["status"] != "assigned"
    got = await intake.http.get(
        f"/v1/communities/{home}/needs/{need['id']}/contact",
        params={"party_kind": "volunteer", "party_id": str(volunteer)},
        headers=await service_token(intake),
    )
    assert got.status_code == 404


async def test_a_late_offer_does_not_undo_a_later_escalation(intake) -> None:
    """Found by the short `make faults` run: a consumer replica paused beyond ack_wait
    handled an `assignment.offered` after the `need.escalated` that followed it, and
    intake moved the need back to `offered` for ever while scheduling had escalated it.
    An offer older than the escalation changes no status; a newer one (scheduling offers
    again) still does."""
    need = await submitted(intake)
    need_id = uuid.UUID(need["id"])
    home = intake.world.home
    offered_at = datetime.now(UTC)
    escalated_at = offered_at + timedelta(seconds=30)

    def offer(at: datetime) -> AssignmentOffered:
        return AssignmentOffered(
            assignment_id=uuid.uuid4(),
            need_id=need_id,
            slot_id=uuid.uuid4(),
            offered_to=PartyRef(kind="volunteer", id=uuid.uuid4()),
            kind="meal_delivery",
            urgency="routine",
            window=need["window"],
            details=need["details"],
            compound=None,
            offered_at=at,
            expires_at=at + timedelta(minutes=30),
        )

    await publish_event(
        intake.js,
        NeedEscalated(need_id=need_id, reason="no_taker", escalated_at=escalated_at),
        home,
        time=escalated_at,
    )
    assert (await status_of(intake, need["id"], "escalated"))["status"] == "escalated"

    late = offer(offered_at)
    await publish_event(intake.js, late, home, time=offered_at)
    party = f"volunteer:{late.offered_to.id}"
    body = await timeline_has(intake, need["id"], party)
    assert body["status"] == "escalated", body["timeline"]

    newer_at = escalated_at + timedelta(seconds=5)
    await publish_event(intake.js, offer(newer_at), home, time=newer_at)
    assert (await status_of(intake, need["id"], "offered"))["status"] == "offered"


async def timeline_has(intake, need_id: str, text: str, timeout: float = 10.0) -> dict:
    """The need once a timeline entry mentions `text` (the event was handled)."""
    world = intake.world
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await intake.http.get(
            f"/v1/communities/{world.home}/needs/{need_id}", headers=world.auth()
        )
        body: dict = got.json()
        if any(text in (t["note"] or "") for t in body["timeline"]) or loop.time() > deadline:
            return body
        await asyncio.sleep(0.1)
