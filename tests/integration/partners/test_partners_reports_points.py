"""Completion reports with proof, and the volunteer points ledger that only a proven
completion credits and that no redemption can overdraw."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from harness.common import outbox_settled
from harness.names import Names
from harness.partners import (
    drop_world,
    emitted,
    partner,
    partners_settings,
    prepare_world,
    volunteer,
)

from linli.contracts.binding import parse_data
from linli.contracts.events import DeliveryFailed, MealDelivered, PointsAwarded, VisitCompleted
from linli.partners.app import build_app

pytestmark = pytest.mark.integration


def ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


async def accepted_offer(partners, vid: str, headers: dict[str, str], **kwargs) -> str:
    offer = await partners.offer(volunteer(vid), **kwargs)
    response = await partners.http.post(
        f"/v1/me/offers/{offer.assignment_id}/accept", headers=headers
    )
    assert response.status_code == 200, response.text
    return str(offer.assignment_id)


async def test_meal_delivered_earns_points_once(partners) -> None:
    world = partners.world
    vid = await partners.new_volunteer()
    me = await partners.volunteer_token("vol", vid)
    aid = await accepted_offer(partners, vid, me)
    report = {
        "outcome": "meal_delivered",
        "delivered_at": ago(2),
        "handed_to": "neighbour",
        "neighbour_note": "ZZNEIGHBOUR 对门的刘阿姨",
        "hot_on_arrival": True,
    }
    response = await partners.http.post(f"/v1/me/offers/{aid}/report", json=report, headers=me)
    assert response.status_code == 201, response.text
    assert response.json() == {
        "assignment_id": aid,
        "outcome": "meal_delivered",
        "points_awarded": 10,
        "balance_after": 10,
    }
    again = await partners.http.post(f"/v1/me/offers/{aid}/report", json=report, headers=me)
    assert again.status_code == 409

    types = ("meal.delivered", "points.awarded")
    events = await emitted(partners.js, world.settings.events_stream, types=types, expect=2)
    assert await outbox_settled(partners.pool) >= 2  # nothing more can appear
    events = await emitted(partners.js, world.settings.events_stream, types=types, expect=2)
    assert sorted(e.type for e in events) == [
        "linli.meal.delivered.v1",
        "linli.points.awarded.v1",
    ]
    meal = parse_data(next(e for e in events if "meal" in e.type), MealDelivered)
    assert str(meal.assignment_id) == aid
    assert meal.handed_to.value == "neighbour"
    assert meal.hot_on_arrival is True
    assert meal.cost_option is None  # a volunteer serves free: no partner's price to report
    points = parse_data(next(e for e in events if "points" in e.type), PointsAwarded)
    assert (points.points, points.balance_after, str(points.volunteer_id)) == (10, 10, vid)
    # The neighbour's name is proof kept in partners, not broadcast.
    assert all("ZZNEIGHBOUR" not in e.model_dump_json() for e in events)

    history = await partners.http.get(
        f"/v1/communities/{world.home}/volunteers/{vid}/points", headers=world.auth()
    )
    assert history.json()["balance"] == 10
    assert [e["amount"] for e in history.json()["entries"]] == [10]
    # Double entry: every group sums to zero, the pool issued what the volunteer holds.
    assert await partners.pool.fetchval("SELECT sum(amount) FROM ledger_entries") == 0
    assert (
        await partners.pool.fetchval(
            "SELECT balance FROM balances WHERE account = $1", f"pool:{world.home}"
        )
        == -10
    )
    assert (await partners.http.get("/v1/me/points", headers=me)).json()["balance"] == 10


async def test_a_partners_completion_says_what_the_resident_paid(partners) -> None:
    """The monthly reports count free and low-cost work per partner (issue #11): the
    completion event carries the cost option the partner registered for that kind, the
    cheapest when it registered several."""
    pid = await partners.new_partner(
        services=[
            {"name": "lunch, paid", "need_kind": "meal_delivery", "cost_option": "paid"},
            {"name": "lunch, subsidised", "need_kind": "meal_delivery", "cost_option": "low_cost"},
            {"name": "repairs", "need_kind": "repair", "cost_option": "paid"},
        ]
    )
    me = await partners.partner_token("canteen", pid)
    offer = await partners.offer(partner(pid))
    aid = str(offer.assignment_id)
    accept = await partners.http.post(f"/v1/me/offers/{aid}/accept", headers=me)
    assert accept.status_code == 200, accept.text
    report = {"outcome": "meal_delivered", "delivered_at": ago(2), "handed_to": "resident"}
    response = await partners.http.post(f"/v1/me/offers/{aid}/report", json=report, headers=me)
    assert response.status_code == 201, response.text
    events = await emitted(
        partners.js, partners.world.settings.events_stream, types=("meal.delivered",), expect=1
    )
    meal = parse_data(events[0], MealDelivered)
    assert (str(meal.delivered_by.id), meal.cost_option) == (pid, "low_cost")


async def test_visit_report_and_a_mismatched_report(partners) -> None:
    vid = await partners.new_volunteer()
    me = await partners.volunteer_token("vol", vid)
    aid = await accepted_offer(partners, vid, me, kind="elder_care_visit")
    wrong = await partners.http.post(
        f"/v1/me/offers/{aid}/report",
        json={"outcome": "meal_delivered", "delivered_at": ago(1), "handed_to": "resident"},
        headers=me,
    )
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["code"] == "outcome_mismatch"
    future = await partners.http.post(
        f"/v1/me/offers/{aid}/report",
        json={
            "outcome": "visit_completed",
            "started_at": ago(-60),
            "ended_at": ago(-120),
        },
        headers=me,
    )
    assert future.status_code == 422
    ok = await partners.http.post(
        f"/v1/me/offers/{aid}/report",
        json={
            "outcome": "visit_completed",
            "started_at": ago(60),
            "ended_at": ago(5),
            "observations": "fridge nearly empty",
            "wellbeing_concern": True,
        },
        headers=me,
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["points_awarded"] == 20
    events = await emitted(
        partners.js, partners.world.settings.events_stream, types=("visit.completed",), expect=1
    )
    assert parse_data(events[0], VisitCompleted).wellbeing_concern is True


async def test_failed_attempt_emits_delivery_failed_and_no_points(partners) -> None:
    vid = await partners.new_volunteer()
    me = await partners.volunteer_token("vol", vid)
    aid = await accepted_offer(partners, vid, me)
    # Reporting before acceptance is refused: another, still open offer.
    open_offer = await partners.offer(volunteer(vid))
    early = await partners.http.post(
        f"/v1/me/offers/{open_offer.assignment_id}/report",
        json={"outcome": "failed", "reason": "not_home", "failed_at": ago(1)},
        headers=me,
    )
    assert early.status_code == 409
    response = await partners.http.post(
        f"/v1/me/offers/{aid}/report",
        json={
            "outcome": "failed",
            "reason": "not_home",
            "detail": "knocked twice",
            "failed_at": ago(1),
        },
        headers=me,
    )
    assert response.status_code == 201, response.text
    assert response.json()["points_awarded"] == 0
    events = await emitted(
        partners.js, partners.world.settings.events_stream, types=("delivery.failed",), expect=1
    )
    failed = parse_data(events[0], DeliveryFailed)
    assert failed.reason.value == "not_home"
    assert failed.attempted_by == volunteer(vid)
    assert await partners.pool.fetchval("SELECT count(*) FROM ledger_entries") == 0
    assert not await emitted(
        partners.js, partners.world.settings.events_stream, types=("points.awarded",), timeout=0.3
    )


async def test_redemption_never_overdraws(partners) -> None:
    world = partners.world
    vid = await partners.new_volunteer()
    me = await partners.volunteer_token("vol", vid)
    for _ in range(5):
        aid = await accepted_offer(partners, vid, me)
        response = await partners.http.post(
            f"/v1/me/offers/{aid}/report",
            json={"outcome": "meal_delivered", "delivered_at": ago(1), "handed_to": "resident"},
            headers=me,
        )
        assert response.status_code == 201
    assert response.json()["balance_after"] == 50
    url = f"/v1/communities/{world.home}/volunteers/{vid}/redemptions"
    too_much = await partners.http.post(url, json={"points": 51}, headers=world.auth())
    assert too_much.status_code == 409
    # A volunteer cannot redeem for itself.
    assert (await partners.http.post(url, json={"points": 1}, headers=me)).status_code == 403

    # 10 concurrent redemptions of 8 ask for 80 of 50 points: exactly 6 may succeed.
    answers = await asyncio.gather(
        *(
            partners.http.post(
                url, json={"points": 8, "note": "training fee"}, headers=world.auth()
            )
            for _ in range(10)
        )
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] * 6 + [409] * 4, [a.text for a in answers]
    balance = await partners.pool.fetchval(
        "SELECT balance FROM balances WHERE account = $1", f"volunteer:{world.home}:{vid}"
    )
    assert balance == 2
    ledger = await partners.pool.fetchval(
        "SELECT sum(amount) FROM ledger_entries WHERE account = $1", f"volunteer:{world.home}:{vid}"
    )
    assert ledger == balance
    assert await partners.pool.fetchval("SELECT sum(amount) FROM ledger_entries") == 0
    assert min(a.json()["balance_after"] for a in answers if a.status_code == 201) == 2
    history = await partners.http.get(
        f"/v1/communities/{world.home}/volunteers/{vid}/points", headers=world.auth()
    )
    assert history.json()["balance"] == 2
    assert len(history.json()["entries"]) == 11


async def test_the_database_refuses_a_negative_balance(partners) -> None:
    world = partners.world
    vid = uuid.uuid4()
    async with partners.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO balances (account, account_kind) VALUES ($1, 'volunteer')",
            f"volunteer:{world.home}:{vid}",
        )
        with pytest.raises(Exception, match="volunteer_balance_not_negative"):
            await conn.execute(
                "UPDATE balances SET balance = -1 WHERE account = $1",
                f"volunteer:{world.home}:{vid}",
            )
        # A one-legged entry group does not commit.
        with pytest.raises(Exception, match="does not balance"):
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO ledger_entries (entry_group, community, account, amount, "
                    "entry_kind, created_by) VALUES ($1, 'x', $2, 5, 'award', 'test')",
                    uuid.uuid4(),
                    f"volunteer:{world.home}:{vid}",
                )


async def test_ready_with_the_real_intake_directory_and_points_from_settings(
    nats_url, database_url
) -> None:
    names = Names()
    settings = partners_settings(names, nats_url, database_url, points_meal_delivery=0)
    assert settings.points_table["meal_delivery"] == 0
    await prepare_world(settings, names)
    try:
        app = build_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as http,
        ):
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
    finally:
        await drop_world(settings, nats_url)
