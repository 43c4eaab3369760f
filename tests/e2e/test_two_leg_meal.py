"""A lunch served in two legs (issue 12, item 3; ADR 0044): the canteen prepares it, a
volunteer carries it. Each leg is offered and accepted on its own; when one leg fails,
that leg alone is offered to the next candidate (or escalated), and the need is fulfilled
once, by the carrier. The canteen reads tomorrow's production list: counts and diets per
window and compound, no resident's data.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from harness.common import consumer_settled
from harness.console import Browser, console_url
from harness.intake import meal_need
from harness.lifecycle import Lifecycle, now_iso, window

from linli.contracts.types import Role
from linli.servicekit.auth import issue_credential

pytestmark = [pytest.mark.e2e]

ZONE = ZoneInfo("Asia/Shanghai")  # partners' default LINLI_PRODUCTION_TIMEZONE
CANARIES = ("ZZCANARY", "13800138001", "王秀兰")


def _tomorrow_at(hour: int, minute: int = 0) -> datetime:
    day = datetime.now(ZONE).date() + timedelta(days=1)
    return datetime.combine(day, time(hour, minute), tzinfo=ZONE)


def _span(start: datetime, end: datetime) -> dict[str, str]:
    return {"earliest": start.isoformat(), "latest": end.isoformat()}


async def _slot(lc: Lifecycle, token: str, leg: str, span: dict[str, str], cap: int = 5) -> None:
    body = {"kind": "meal_delivery", "window": span, "capacity": cap, "leg": leg}
    slot = lc.ok(
        await lc.http.post(lc.c("partners", "/slots"), json=body, headers=lc.bearer(token)), 201
    )
    assert slot["leg"] == leg


async def _party(lc: Lifecycle, kind: str, name: str) -> tuple[str, str]:
    if kind == "partner":
        party = await lc.create_partner(name, "canteen", ["meal_delivery"])
    else:
        party = await lc.create_volunteer(name, ["meal_delivery"])
    return party, await lc.party_token(kind, party)


async def _assignments(lc: Lifecycle, need_id: str) -> list[tuple[str, str, str]]:
    """(leg, provider, state) of every assignment of the need, sorted (the two legs are
    offered in one transaction, at one time)."""
    rows = await lc.sql(
        "scheduling",
        "SELECT leg, provider_id, state FROM assignments WHERE need_id = $1",
        uuid.UUID(need_id),
    )
    return sorted((r["leg"] or "", str(r["provider_id"]), r["state"]) for r in rows)


async def _contact_status(lc: Lifecycle, need_id: str, kind: str, party: str) -> int:
    response = await lc.http.get(
        lc.c("intake", f"/needs/{need_id}/contact"),
        params={"party_kind": kind, "party_id": party},
        headers=lc.bearer(lc.service_token),
    )
    return response.status_code


async def test_carry_leg_fails_and_is_reoffered_then_delivered_once(lifecycle) -> None:
    lc: Lifecycle = await lifecycle(console=True)
    await lc.add_staff("op-home", "correct horse battery", communities=[lc.home])
    canteen, canteen_token = await _party(lc, "partner", "幸福食堂 Happiness Canteen")
    carrier1, token1 = await _party(lc, "volunteer", "小李 Li")
    carrier2, token2 = await _party(lc, "volunteer", "小张 Zhang")
    end = _tomorrow_at(13)
    await _slot(lc, canteen_token, "prepare", _span(_tomorrow_at(9), end))
    # The first carrier's round starts earlier: it is asked first.
    await _slot(lc, token1, "carry", _span(_tomorrow_at(10, 30), end))
    await _slot(lc, token2, "carry", _span(_tomorrow_at(10, 45), end))
    await lc.wait_slots(3)

    lunch = _span(_tomorrow_at(11), _tomorrow_at(12, 30))
    resident = await lc.create_resident(priority_group="elderly_living_alone")
    neighbour = await lc.create_resident(priority_group="disabled", compound="阳光小区")
    need_id = (
        await lc.submit_need(
            meal_need(resident, window=lunch, details={"diet_needs": ["soft food"], "portions": 2})
        )
    )["id"]
    other_id = (
        await lc.submit_need(
            meal_need(neighbour, window=lunch, details={"diet_needs": ["low salt"], "portions": 1})
        )
    )["id"]

    # Both legs are offered, each to its own party; the canteen takes both its legs.
    prepare = await lc.wait_offer(canteen_token, need_id)
    assert prepare["leg"] == "prepare"
    other_prepare = await lc.wait_offer(canteen_token, other_id)
    carry1 = await lc.wait_offer(token1, need_id)
    assert carry1["leg"] == "carry"
    for offer in (prepare, other_prepare):
        lc.ok(await lc.answer(canteen_token, offer["assignment_id"], "accept"))
    lc.ok(await lc.answer(token1, carry1["assignment_id"], "accept"))
    await lc.wait_status(need_id, "assigned")

    # Only the carrier goes to the door: the canteen never gets the resident's contact.
    canteen_view = lc.ok(await lc.offer(canteen_token, prepare["assignment_id"]))
    assert canteen_view["contact"] is None
    assert canteen_view["contact_status"] == "not_shared"
    assert await _contact_status(lc, need_id, "volunteer", carrier1) == 200
    assert await _contact_status(lc, need_id, "partner", canteen) == 404

    # The carrier finds nobody home: the carry leg goes to the next carrier, the canteen's
    # leg stays accepted, and the operators hear of it (a welfare check).
    lc.ok(
        await lc.report(
            token1,
            carry1["assignment_id"],
            {"outcome": "failed", "reason": "not_home", "failed_at": now_iso()},
        ),
        201,
    )
    carry2 = await lc.wait_offer(token2, need_id)
    assert carry2["leg"] == "carry"
    (escalated,) = await lc.wait_events("need.escalated", need_id=need_id)
    assert escalated.data["reason"] == "welfare_check"
    assert escalated.data["leg"] == "carry"
    assert await _assignments(lc, need_id) == sorted(
        [
            ("prepare", canteen, "accepted"),
            ("carry", carrier1, "failed"),
            ("carry", carrier2, "offered"),
        ]
    )
    assert await lc.need_status(need_id) != "failed"

    # The second carrier takes it; the canteen hands the meal over; it is delivered.
    lc.ok(await lc.answer(token2, carry2["assignment_id"], "accept"))
    await lc.wait_for(
        lambda: lc.sql_value(
            "scheduling",
            "SELECT current_assignment = $2 AND state = 'assigned' FROM needs WHERE id = $1",
            uuid.UUID(need_id),
            uuid.UUID(carry2["assignment_id"]),
        ),
        what="the second carrier to hold the carry leg",
    )
    assert await _contact_status(lc, need_id, "volunteer", carrier2) == 200
    assert await _contact_status(lc, need_id, "volunteer", carrier1) == 404
    wrong = await lc.report(
        canteen_token,
        prepare["assignment_id"],
        {"outcome": "meal_delivered", "delivered_at": now_iso(), "handed_to": "resident"},
    )
    assert wrong.status_code == 422
    assert "outcome_mismatch" in wrong.text
    prepared = {"outcome": "meal_prepared", "prepared_at": now_iso(), "handed_to_carrier": True}
    lc.ok(await lc.report(canteen_token, prepare["assignment_id"], prepared), 201)
    await lc.wait_events("meal.prepared", need_id=need_id)
    delivered = {"outcome": "meal_delivered", "delivered_at": now_iso(), "handed_to": "resident"}
    points = lc.ok(await lc.report(token2, carry2["assignment_id"], delivered), 201)
    assert points["points_awarded"] > 0
    await lc.wait_status(need_id, "fulfilled")
    (fulfilled,) = await lc.wait_events("need.fulfilled", need_id=need_id)
    assert fulfilled.data["fulfilled_by"] == {"kind": "volunteer", "id": carrier2}
    await lc.wait_for(
        lambda: lc.sql_value("scheduling", "SELECT count(*) = 0 FROM outbox WHERE sent_at IS NULL"),
        what="scheduling's outbox to drain",
    )
    kinds = Counter(e.short for e in await lc.events(need_id=need_id))
    assert kinds["need.fulfilled"] == 1, kinds
    assert kinds["meal.delivered"] == 1, kinds
    assert kinds["assignment.offered"] == 3, kinds  # prepare, carry, carry again
    assert await _assignments(lc, need_id) == sorted(
        [
            ("prepare", canteen, "completed"),
            ("carry", carrier1, "failed"),
            ("carry", carrier2, "completed"),
        ]
    )
    assert lc.ok(await lc.offer(canteen_token, prepare["assignment_id"]))["status"] == "completed"
    assert (
        await lc.sql_value("scheduling", "SELECT count(*) FROM slots WHERE reserved > capacity")
        == 0
    )

    # Tomorrow's production list: both accepted lunches, counted per window and compound.
    path = f"/partners/{canteen}/production-list"
    listed = lc.ok(
        await lc.http.get(lc.c("partners", path), headers=lc.bearer(canteen_token))
    )  # the default day is tomorrow
    assert listed["date"] == _tomorrow_at(0).date().isoformat()
    assert (listed["meals"], listed["portions"], listed["pending"]) == (2, 3, 0)
    assert {d["diet"]: d["portions"] for d in listed["diets"]} == {"soft food": 2, "low salt": 1}
    lines = {(line["compound"], line["meals"], line["portions"]) for line in listed["lines"]}
    assert lines == {("致远小区", 1, 2), ("阳光小区", 1, 1)}
    assert all(
        datetime.fromisoformat(line["window"]["earliest"]) == _tomorrow_at(11)
        for line in listed["lines"]
    )
    day = {"date": listed["date"]}
    page = await lc.http.get(
        lc.c("partners", path),
        params=day,
        headers={**lc.bearer(canteen_token), "Accept": "text/html"},
    )
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "备餐清单" in page.text
    assert "Production list" in page.text
    assert "soft food" in page.text
    for text in (listed.__repr__(), page.text):
        assert not any(canary in text for canary in CANARIES)
        assert need_id not in text
    # The community's operator reads it too; another day is empty.
    by_operator = lc.ok(await lc.http.get(lc.c("partners", path), params=day))
    assert by_operator["meals"] == 2
    today = datetime.now(ZONE).date().isoformat()
    assert lc.ok(await lc.http.get(lc.c("partners", path), params={"date": today}))["meals"] == 0

    # The console's month: the lunch is one need, fulfilled, delivered by its second
    # carrier; the first carrier's failure is a failed delivery; the canteen's leg counts
    # for the canteen (ADR 0044).
    await consumer_settled(lc.nats.jetstream(), lc.events_stream, "console-reports", timeout=30)
    month = datetime.now(ZONE).strftime("%Y-%m")
    console = Browser(console_url(lc))
    try:
        signed_in = await console.sign_in("op-home", "correct horse battery")
        assert signed_in.status_code == 303
        report = (await console.get(f"/c/{lc.home}/reports/{month}.json")).json()
    finally:
        await console.close()
    needs = {(n["status"], n["count"]) for n in report["needs"] if n["kind"] == "meal_delivery"}
    assert ("fulfilled", 1) in needs
    assert not any(n["status"] == "failed" for n in report["needs"])
    assert report["failed_deliveries"] == [
        {"kind": "meal_delivery", "reason": "not_home", "party_kind": "volunteer", "count": 1}
    ]
    assert report["partners"] == [
        {"partner_id": canteen, "kind": "meal_delivery", "delivered": 1, "cost_option": "free"}
    ]
    assert report["volunteers"]["meal_deliveries"] == 1


async def _street_office_token(lc: Lifecycle) -> str:
    conn = await lc._connect("partners")
    try:
        _, token = await issue_credential(
            conn, role=Role.STREET_OFFICE, communities=[lc.home], label="street office"
        )
    finally:
        await conn.close()
    return str(token)


async def test_canteen_leg_fails_and_only_that_leg_is_reoffered_then_escalated(
    lifecycle,
) -> None:
    lc: Lifecycle = await lifecycle()
    first, first_token = await _party(lc, "partner", "一号食堂 Canteen One")
    second, second_token = await _party(lc, "partner", "二号食堂 Canteen Two")
    carrier, carrier_token = await _party(lc, "volunteer", "小王 Wang")
    await _slot(lc, first_token, "prepare", window(10, 180))
    await _slot(lc, second_token, "prepare", window(20, 180))
    await _slot(lc, carrier_token, "carry", window(30, 180))
    await lc.wait_slots(3)
    resident = await lc.create_resident()
    need_id = (await lc.submit_need(meal_need(resident, hours_ahead=1)))["id"]

    carry = await lc.wait_offer(carrier_token, need_id)
    lc.ok(await lc.answer(carrier_token, carry["assignment_id"], "accept"))
    declined = await lc.wait_offer(first_token, need_id)
    lc.ok(await lc.answer(first_token, declined["assignment_id"], "decline"))

    # The next canteen is asked; the carrier's accepted leg is left alone.
    again = await lc.wait_offer(second_token, need_id)
    assert again["leg"] == "prepare"
    lc.ok(await lc.answer(second_token, again["assignment_id"], "accept"))
    failed = {"outcome": "failed", "reason": "other", "failed_at": now_iso()}
    lc.ok(await lc.report(second_token, again["assignment_id"], failed), 201)

    # No canteen is left: that leg is escalated, the carry leg still stands.
    (escalated,) = await lc.wait_events("need.escalated", need_id=need_id)
    assert escalated.data["reason"] == "no_taker"
    assert escalated.data["leg"] == "prepare"
    assert await _assignments(lc, need_id) == sorted(
        [
            ("prepare", first, "declined"),
            ("carry", carrier, "accepted"),
            ("prepare", second, "failed"),
        ]
    )
    need = (
        await lc.sql(
            "scheduling",
            "SELECT state, current_assignment, prepare_assignment FROM needs WHERE id = $1",
            uuid.UUID(need_id),
        )
    )[0]
    assert need["state"] == "assigned"
    assert str(need["current_assignment"]) == carry["assignment_id"]
    assert need["prepare_assignment"] is None
    assert len(await lc.events("assignment.offered", need_id=need_id, leg="carry")) == 1
    assert lc.ok(await lc.offer(carrier_token, carry["assignment_id"]))["status"] == "accepted"

    # A new canteen round fills the waiting leg.
    _third, third_token = await _party(lc, "partner", "三号食堂 Canteen Three")
    await _slot(lc, third_token, "prepare", window(5, 180))
    third_offer = await lc.wait_offer(third_token, need_id)
    assert third_offer["leg"] == "prepare"

    # Bad input and other parties: nothing is revealed or changed.
    path = f"/partners/{first}/production-list"
    bad = await lc.http.get(
        lc.c("partners", path), params={"date": "2026-13-40"}, headers=lc.bearer(first_token)
    )
    assert bad.status_code == 422
    assert "date" in bad.text
    other_canteen = await lc.http.get(lc.c("partners", path), headers=lc.bearer(second_token))
    assert other_canteen.status_code == 404
    elsewhere = await lc.http.get(lc.c("partners", path, community=lc.other))
    assert elsewhere.status_code == 404
    street = await lc.http.get(
        lc.c("partners", path), headers=lc.bearer(await _street_office_token(lc))
    )
    assert street.status_code == 403
    volunteer = await lc.http.get(lc.c("partners", path), headers=lc.bearer(carrier_token))
    assert volunteer.status_code == 403
    unknown = await lc.http.get(lc.c("partners", f"/partners/{uuid.uuid4()}/production-list"))
    assert unknown.status_code == 404
    not_a_meal = await lc.http.post(
        lc.c("partners", "/slots"),
        json={"kind": "repair", "window": window(5, 60), "capacity": 1, "leg": "carry"},
    )
    assert not_a_meal.status_code == 422
