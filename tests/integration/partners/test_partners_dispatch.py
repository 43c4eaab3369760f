"""The dispatch inbox: offers from scheduling reach only the offered party, are answered
once, and the resident's contact reaches only the party that accepted."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from harness.common import consumer_settled, outbox_settled, wait_for
from harness.partners import (
    SCHEDULING_SOURCE,
    emitted,
    eventually,
    offered,
    partner,
    publish_event,
    volunteer,
)

from linli.contracts.binding import parse_data
from linli.contracts.envelope import new_event_id
from linli.contracts.events import (
    AssignmentExpired,
    NeedCancelled,
    OfferLapsed,
    PartnerDeclined,
    VolunteerConfirmed,
)
from linli.contracts.registry import lookup
from linli.contracts.types import Role
from linli.partners.lapses import LapseSweep
from linli.servicekit.clock import Clock

pytestmark = pytest.mark.integration


async def test_an_offer_lands_only_in_the_offered_partys_inbox(partners) -> None:
    alice, bob = await partners.new_volunteer(), await partners.new_volunteer()
    as_alice = await partners.volunteer_token("alice", alice)
    as_bob = await partners.volunteer_token("bob", bob)
    offer = await partners.offer(volunteer(alice))
    aid = str(offer.assignment_id)

    mine = await partners.http.get("/v1/me/offers", headers=as_alice)
    assert [o["assignment_id"] for o in mine.json()["items"]] == [aid]
    assert mine.json()["items"][0]["status"] == "open"
    assert mine.json()["items"][0]["details"] == {"diet_needs": ["soft food"], "portions": 1}

    assert (await partners.http.get("/v1/me/offers", headers=as_bob)).json()["items"] == []
    for method, path in (
        ("GET", f"/v1/me/offers/{aid}"),
        ("POST", f"/v1/me/offers/{aid}/accept"),
        ("POST", f"/v1/me/offers/{aid}/decline"),
    ):
        response = await partners.http.request(method, path, headers=as_bob)
        assert response.status_code == 404, (path, response.text)
    # Same subject id, other community on the credential: not visible either.
    elsewhere = await partners.world.issue(
        "alice_other", Role.VOLUNTEER, [partners.world.other], alice
    )
    assert (await partners.http.get(f"/v1/me/offers/{aid}", headers=elsewhere)).status_code == 404
    # An operator has no inbox.
    assert (
        await partners.http.get("/v1/me/offers", headers=partners.world.auth())
    ).status_code == 403
    assert await partners.pool.fetchval("SELECT status FROM offers") == "open"
    assert partners.directory.calls == []


async def test_accept_confirms_once_and_reveals_contact_only_to_the_acceptor(partners) -> None:
    alice, bob = await partners.new_volunteer(), await partners.new_volunteer()
    as_alice = await partners.volunteer_token("alice", alice)
    as_bob = await partners.volunteer_token("bob", bob)
    need_id = uuid.uuid4()
    partners.directory.consented.add(need_id)
    to_bob = await partners.offer(volunteer(bob), need_id=need_id)
    to_alice = await partners.offer(volunteer(alice), need_id=need_id)
    aid = str(to_alice.assignment_id)

    # Before acceptance: no contact, and intake is not even asked.
    before = await partners.http.get(f"/v1/me/offers/{aid}", headers=as_alice)
    assert before.json()["contact"] is None
    assert before.json()["contact_status"] == "not_accepted"
    assert partners.directory.calls == []

    declined = await partners.http.post(
        f"/v1/me/offers/{to_bob.assignment_id}/decline",
        json={"reason": "ZZNOTE busy"},
        headers=as_bob,
    )
    assert declined.status_code == 200
    accepted = await partners.http.post(f"/v1/me/offers/{aid}/accept", headers=as_alice)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted"
    again = await partners.http.post(f"/v1/me/offers/{aid}/accept", headers=as_alice)
    assert again.status_code == 409
    assert (
        await partners.http.post(f"/v1/me/offers/{aid}/decline", headers=as_alice)
    ).status_code == 409

    after = await partners.http.get(f"/v1/me/offers/{aid}", headers=as_alice)
    assert after.json()["contact_status"] == "shared"
    assert after.json()["contact"]["phone"] == "+8613800138001"
    # The decliner's view of the same need shows nothing and asks nothing.
    bobs = await partners.http.get(f"/v1/me/offers/{to_bob.assignment_id}", headers=as_bob)
    assert bobs.json()["contact"] is None
    assert partners.directory.calls == [(partners.world.home, need_id, volunteer(alice))]
    # Never kept in partners' database.
    for table in ("offers", "completion_reports", "outbox", "ledger_entries"):
        dump = await partners.pool.fetchval(
            f"SELECT coalesce(string_agg(t::text, ''), '') FROM {table} t"  # noqa: S608
        )
        assert "ZZCANARY" not in dump, table
        assert "13800138001" not in dump, table

    events = await emitted(
        partners.js,
        partners.world.settings.events_stream,
        types=("volunteer.confirmed", "volunteer.declined"),
        expect=2,
    )
    assert await outbox_settled(partners.pool) >= 2  # nothing more can appear
    events = await emitted(
        partners.js,
        partners.world.settings.events_stream,
        types=("volunteer.confirmed", "volunteer.declined"),
        expect=2,
    )
    assert sorted(e.type for e in events) == [
        "linli.volunteer.confirmed.v1",
        "linli.volunteer.declined.v1",
    ]
    confirmed = parse_data(next(e for e in events if "confirmed" in e.type), VolunteerConfirmed)
    assert str(confirmed.assignment_id) == aid
    assert str(confirmed.volunteer_id) == alice
    # The decline's free text stays in partners.
    assert all("ZZNOTE" not in e.model_dump_json() for e in events)


async def test_consent_withheld_means_no_contact(partners) -> None:
    alice = await partners.new_volunteer()
    as_alice = await partners.volunteer_token("alice", alice)
    offer = await partners.offer(volunteer(alice))
    await partners.http.post(f"/v1/me/offers/{offer.assignment_id}/accept", headers=as_alice)
    view = await partners.http.get(f"/v1/me/offers/{offer.assignment_id}", headers=as_alice)
    assert view.json()["contact"] is None
    assert view.json()["contact_status"] == "not_shared"
    assert len(partners.directory.calls) == 1


async def test_partner_declines_with_partner_declined(partners) -> None:
    firm = await partners.new_partner(
        name="夜间抢修",
        kind="repair_firm",
        services=[{"name": "night on-call", "need_kind": "repair", "cost_option": "free"}],
    )
    as_firm = await partners.partner_token("firm", firm)
    offer = await partners.offer(partner(firm), kind="repair")
    response = await partners.http.post(
        f"/v1/me/offers/{offer.assignment_id}/decline",
        json={"reason": "no technician"},
        headers=as_firm,
    )
    assert response.status_code == 200
    assert response.json()["status"] == "declined"
    events = await emitted(
        partners.js, partners.world.settings.events_stream, types=("partner.declined",), expect=1
    )
    data = parse_data(events[0], PartnerDeclined)
    assert str(data.partner_id) == firm
    me = await partners.http.get("/v1/me", headers=as_firm)
    assert me.json()["partner"]["id"] == firm


async def test_redelivered_offer_creates_one_offer(partners) -> None:
    alice = await partners.new_volunteer()
    as_alice = await partners.volunteer_token("alice", alice)
    data = offered(partners.world.home, volunteer(alice))
    event_id = new_event_id()
    await publish_event(partners.js, data, partners.world.home, event_id=event_id)
    await publish_event(
        partners.js, data, partners.world.home, event_id=event_id, msg_id=f"{event_id}-again"
    )
    # A different event for the same assignment (a scheduling retry) is absorbed too.
    await publish_event(partners.js, data, partners.world.home)
    # (The volunteer's registration announced its availability: not counted here.)
    offers = await emitted(
        partners.js,
        partners.world.settings.events_stream,
        source=SCHEDULING_SOURCE,
        types=("assignment.offered",),
        expect=3,
    )
    assert len(offers) == 3
    assert await partners.offer_stored(data.assignment_id)

    async def consumed() -> bool:
        ci = await partners.js.consumer_info(partners.world.settings.events_stream, "partners")
        return ci.num_ack_pending == 0 and ci.num_pending == 0

    assert await eventually(consumed)
    assert await partners.pool.fetchval("SELECT count(*) FROM offers") == 1
    assert (
        await partners.pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", event_id)
        == 1
    )
    listed = await partners.http.get("/v1/me/offers", headers=as_alice)
    assert len(listed.json()["items"]) == 1


async def test_expiry_and_cancellation_withdraw_offers(partners) -> None:
    alice = await partners.new_volunteer()
    as_alice = await partners.volunteer_token("alice", alice)
    world = partners.world
    expiring = await partners.offer(volunteer(alice))
    cancelled = await partners.offer(volunteer(alice))
    accepted_then_cancelled = await partners.offer(volunteer(alice))
    await partners.http.post(
        f"/v1/me/offers/{accepted_then_cancelled.assignment_id}/accept", headers=as_alice
    )
    now = datetime.now(UTC)
    await publish_event(
        partners.js,
        AssignmentExpired(
            assignment_id=expiring.assignment_id,
            need_id=expiring.need_id,
            slot_id=expiring.slot_id,
            offered_to=volunteer(alice),
            expired_at=now,
        ),
        world.home,
    )
    for offer in (cancelled, accepted_then_cancelled):
        await publish_event(
            partners.js,
            NeedCancelled(need_id=offer.need_id, cancelled_by_role=Role.OPERATOR, cancelled_at=now),
            world.home,
            source="/linli/intake",
        )

    async def all_withdrawn() -> bool:
        statuses = await partners.pool.fetch("SELECT status FROM offers")
        return all(r["status"] == "withdrawn" for r in statuses)

    assert await eventually(all_withdrawn)
    for offer in (expiring, cancelled, accepted_then_cancelled):
        aid = offer.assignment_id
        assert (
            await partners.http.post(f"/v1/me/offers/{aid}/accept", headers=as_alice)
        ).status_code == 409
    view = await partners.http.get(f"/v1/me/offers/{expiring.assignment_id}", headers=as_alice)
    assert view.json()["status"] == "withdrawn"
    assert view.json()["status_reason"] == "expired"
    report = await partners.http.post(
        f"/v1/me/offers/{accepted_then_cancelled.assignment_id}/report",
        json={"outcome": "failed", "reason": "other", "failed_at": now.isoformat()},
        headers=as_alice,
    )
    assert report.status_code == 409

    # An expiry that overtakes its offer leaves the late offer withdrawn, not open.
    late = offered(world.home, volunteer(alice))
    await publish_event(
        partners.js,
        AssignmentExpired(
            assignment_id=late.assignment_id,
            need_id=late.need_id,
            slot_id=late.slot_id,
            offered_to=volunteer(alice),
            expired_at=now,
        ),
        world.home,
    )
    # Handled before the offer arrives.
    await consumer_settled(partners.js, world.settings.events_stream, "partners")
    await publish_event(partners.js, late, world.home)
    assert await partners.offer_stored(late.assignment_id)
    assert (
        await partners.pool.fetchval(
            "SELECT status FROM offers WHERE assignment_id = $1", late.assignment_id
        )
        == "withdrawn"
    )


async def test_an_offer_past_its_expiry_cannot_be_accepted(partners) -> None:
    alice = await partners.new_volunteer()
    as_alice = await partners.volunteer_token("alice", alice)
    offer = await partners.offer(volunteer(alice), expires_in=timedelta(milliseconds=300))

    async def listed_expired() -> list[str]:
        listed = await partners.http.get("/v1/me/offers?status=expired", headers=as_alice)
        return [o["assignment_id"] for o in listed.json()["items"]]

    assert await wait_for(listed_expired, what="the offer listed as expired") == [
        str(offer.assignment_id)
    ]
    response = await partners.http.post(
        f"/v1/me/offers/{offer.assignment_id}/accept", headers=as_alice
    )
    assert response.status_code == 409
    assert "expired" in response.json()["detail"]


async def test_partners_decides_answered_in_time_or_lapsed_once_per_offer(partners) -> None:
    """ADR 0026: an answer before the expiry stands; an unanswered offer lapses at its
    expiry with `offer.lapsed`, once, also with a second replica's sweep racing."""
    alice = await partners.new_volunteer()
    as_alice = await partners.volunteer_token("alice", alice)
    world = partners.world
    # A second replica's sweep on the same schema (the app runs the first).
    extra = LapseSweep(
        partners.pool,
        world.settings.db_schema,
        clock=Clock(),
        dsn=world.settings.database_url.get_secret_value(),
        poll_interval=0.05,
    )
    await extra.start()
    try:
        soon = timedelta(seconds=3)
        accepted = await partners.offer(volunteer(alice), expires_in=soon)
        declined = await partners.offer(volunteer(alice), expires_in=soon)
        unanswered = await partners.offer(volunteer(alice), expires_in=soon)
        later = await partners.offer(volunteer(alice))
        for offer, action in ((accepted, "accept"), (declined, "decline")):
            answer = await partners.http.post(
                f"/v1/me/offers/{offer.assignment_id}/{action}", headers=as_alice
            )
            assert answer.status_code == 200, answer.text
        # An offer that reaches partners only after its expiry (its consumer lagged).
        now = datetime.now(UTC)
        stale = offered(world.home, volunteer(alice)).model_copy(
            update={"offered_at": now - timedelta(seconds=5), "expires_at": now}
        )
        await publish_event(partners.js, stale, world.home)

        lapses = await emitted(
            partners.js, world.settings.events_stream, types=("offer.lapsed",), expect=2
        )
        assert sorted(str(e.data["assignment_id"]) for e in lapses) == sorted(
            [str(unanswered.assignment_id), str(stale.assignment_id)]
        )
        for event in lapses:
            lapse = parse_data(event, OfferLapsed)
            assert lapse.offered_to == volunteer(alice)
            assert lapse.lapsed_at >= lapse.expires_at
            assert event.subject == str(lapse.need_id)
        statuses = {
            r["assignment_id"]: r["status"]
            for r in await partners.pool.fetch("SELECT assignment_id, status FROM offers")
        }
        assert statuses == {
            accepted.assignment_id: "accepted",
            declined.assignment_id: "declined",
            unanswered.assignment_id: "expired",
            stale.assignment_id: "expired",
            later.assignment_id: "open",
        }
        too_late = await partners.http.post(
            f"/v1/me/offers/{unanswered.assignment_id}/accept", headers=as_alice
        )
        assert too_late.status_code == 409
        listed = await partners.http.get("/v1/me/offers?status=expired", headers=as_alice)
        assert {o["assignment_id"] for o in listed.json()["items"]} == {
            str(unanswered.assignment_id),
            str(stale.assignment_id),
        }
        # One verdict per offer: the answers once, no lapse for them, each lapse once.
        everything = await emitted(partners.js, world.settings.events_stream)
        verdicts = Counter(
            (str(e.data.get("assignment_id")), lookup(e.type).short)
            for e in everything
            if "assignment_id" in (e.data or {})
        )
        assert verdicts == {
            (str(accepted.assignment_id), "volunteer.confirmed"): 1,
            (str(declined.assignment_id), "volunteer.declined"): 1,
            (str(unanswered.assignment_id), "offer.lapsed"): 1,
            (str(stale.assignment_id), "offer.lapsed"): 1,
        }
    finally:
        await extra.stop()


async def test_contact_never_reaches_the_logs(partners, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    alice = await partners.new_volunteer()
    as_alice = await partners.volunteer_token("alice", alice)
    need_id = uuid.uuid4()
    partners.directory.consented.add(need_id)
    offer = await partners.offer(volunteer(alice), need_id=need_id)
    await partners.http.post(f"/v1/me/offers/{offer.assignment_id}/accept", headers=as_alice)
    view = await partners.http.get(f"/v1/me/offers/{offer.assignment_id}", headers=as_alice)
    assert "ZZCANARY" in view.text
    assert "ZZCANARY" not in caplog.text
    assert "13800138001" not in caplog.text


async def test_a_malformed_offer_is_dead_lettered_and_the_inbox_keeps_flowing(partners) -> None:
    alice = await partners.new_volunteer()
    world = partners.world
    subject = f"linli.events.{world.home}.assignment.offered.v1"
    bad = (
        b'{"specversion":"1.0","id":"bad-1","source":"/linli/scheduling",'
        b'"type":"linli.assignment.offered.v1","time":"2026-11-22T10:00:00Z",'
        b'"community":"' + world.home.encode() + b'","data":{"assignment_id":"nope"}}'
    )
    await partners.js.publish(subject, bad, headers={"Nats-Msg-Id": "bad-1"})
    good = await partners.offer(volunteer(alice))

    async def dead() -> list:
        return await partners.pool.fetch("SELECT consumer, subject, reasons FROM dead_letters")

    (letter,) = await eventually(dead)
    assert letter["consumer"] == "partners"
    assert letter["subject"] == subject
    assert "data.assignment_id" in letter["reasons"]
    assert await partners.pool.fetchval("SELECT count(*) FROM offers") == 1
    assert await partners.offer_stored(good.assignment_id)
