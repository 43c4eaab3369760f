"""Redeeming points: retry-safe with an Idempotency-Key, scoped to the community where
the points were earned, and announced once as `points.redeemed`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from harness.names import Names
from harness.partners import (
    drop_world,
    emitted,
    eventually,
    offered,
    partners_settings,
    publish_event,
    volunteer,
)

from linli.contracts.binding import parse_data
from linli.contracts.events import PointsRedeemed
from linli.contracts.types import Role
from linli.servicekit.db import migrate, service_migrations

pytestmark = pytest.mark.integration


def ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


async def earn(partners: Any, vid: str, me: dict[str, str], community: str, times: int) -> None:
    """`times` delivered meals in `community`, 10 points each."""
    for _ in range(times):
        data = offered(community, volunteer(vid))
        await publish_event(partners.js, data, community)
        assert await partners.offer_stored(data.assignment_id), "offer never arrived"
        aid = data.assignment_id
        accepted = await partners.http.post(f"/v1/me/offers/{aid}/accept", headers=me)
        assert accepted.status_code == 200, accepted.text
        report = await partners.http.post(
            f"/v1/me/offers/{aid}/report",
            json={"outcome": "meal_delivered", "delivered_at": ago(1), "handed_to": "resident"},
            headers=me,
        )
        assert report.status_code == 201, report.text


async def outbox_drained(partners: Any) -> bool:
    async def probe() -> bool:
        return bool(
            await partners.pool.fetchval("SELECT count(*) = 0 FROM outbox WHERE sent_at IS NULL")
        )

    return bool(await eventually(probe))


async def test_a_retried_redemption_debits_once(partners) -> None:
    world = partners.world
    vid = await partners.new_volunteer()
    me = await partners.volunteer_token("vol", vid)
    await earn(partners, vid, me, world.home, 5)
    url = f"/v1/communities/{world.home}/volunteers/{vid}/redemptions"
    headers = {**world.auth(), "Idempotency-Key": "training-fee-2025-03"}
    body = {"points": 8, "note": "training fee"}

    first = await partners.http.post(url, json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["balance_after"] == 42
    again = await partners.http.post(url, json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    # Retries racing each other (a flaky network) still debit once.
    racing = {**world.auth(), "Idempotency-Key": "uniform-2025-03"}
    answers = await asyncio.gather(
        *(partners.http.post(url, json={"points": 5}, headers=racing) for _ in range(6))
    )
    assert sorted(a.status_code for a in answers) == [200] * 5 + [201], [a.text for a in answers]
    assert len({a.json()["redemption_id"] for a in answers}) == 1
    # The same key with another body is refused and changes nothing.
    other = await partners.http.post(url, json={"points": 9}, headers=headers)
    assert other.status_code == 409, other.text
    assert "Idempotency-Key" in other.json()["detail"]

    points = await partners.http.get(
        f"/v1/communities/{world.home}/volunteers/{vid}/points", headers=world.auth()
    )
    assert points.json()["balance"] == 50 - 8 - 5
    assert [e["amount"] for e in points.json()["entries"]][:2] == [-5, -8]
    assert await partners.pool.fetchval("SELECT sum(amount) FROM ledger_entries") == 0

    # Each redemption is on the stream once, after everything the outbox held was sent.
    assert await outbox_drained(partners)
    events = await emitted(
        partners.js, world.settings.events_stream, types=("points.redeemed",), expect=2
    )
    redeemed = sorted((parse_data(e, PointsRedeemed) for e in events), key=lambda r: r.points)
    assert [(r.points, r.balance_after) for r in redeemed] == [(5, 37), (8, 42)]
    assert {str(r.volunteer_id) for r in redeemed} == {vid}
    assert str(redeemed[1].redemption_id) == first.json()["redemption_id"]
    assert {e.community for e in events} == {world.home}
    # The operator's note stays in partners.
    assert all("training fee" not in e.model_dump_json() for e in events)


async def test_points_belong_to_the_community_that_earned_them(partners) -> None:
    world = partners.world
    # A volunteer serving both communities earns 30 points in the other one.
    vid = await partners.new_volunteer("admin", communities=[world.home, world.other])
    me = await world.issue("vol", Role.VOLUNTEER, [world.home, world.other], vid)
    await earn(partners, vid, me, world.other, 3)

    home_points = await partners.http.get(
        f"/v1/communities/{world.home}/volunteers/{vid}/points", headers=world.auth()
    )
    assert home_points.status_code == 200
    assert (home_points.json()["balance"], home_points.json()["entries"]) == (0, [])
    redeem_home = await partners.http.post(
        f"/v1/communities/{world.home}/volunteers/{vid}/redemptions",
        json={"points": 10},
        headers={**world.auth(), "Idempotency-Key": "home-1"},
    )
    assert redeem_home.status_code == 409, redeem_home.text
    other_points = await partners.http.get(
        f"/v1/communities/{world.other}/volunteers/{vid}/points",
        headers=world.auth("other_operator"),
    )
    assert other_points.json()["balance"] == 30
    assert {e["community"] for e in other_points.json()["entries"]} == {world.other}
    redeem_other = await partners.http.post(
        f"/v1/communities/{world.other}/volunteers/{vid}/redemptions",
        json={"points": 10},
        headers=world.auth("other_operator"),
    )
    assert redeem_other.status_code == 201, redeem_other.text
    assert redeem_other.json()["balance_after"] == 20

    # A volunteer of the other community only does not exist for this one's operator.
    theirs = await partners.new_volunteer("other_operator")
    for response in (
        await partners.http.get(
            f"/v1/communities/{world.home}/volunteers/{theirs}/points", headers=world.auth()
        ),
        await partners.http.post(
            f"/v1/communities/{world.home}/volunteers/{theirs}/redemptions",
            json={"points": 1},
            headers=world.auth(),
        ),
        await partners.http.get(
            f"/v1/communities/{world.other}/volunteers/{theirs}/points", headers=world.auth()
        ),
    ):
        assert response.status_code == 404, response.text

    # The volunteer sees each community's balance.
    mine = (await partners.http.get("/v1/me/points", headers=me)).json()
    assert mine["balance"] == 20
    assert mine["communities"] == [{"community": world.other, "balance": 20}]
    assert (await partners.http.get("/v1/me", headers=me)).json()["points_balance"] == 20
    assert await partners.pool.fetchval("SELECT sum(amount) FROM ledger_entries") == 0
    # Nothing was announced for the community that redeemed nothing.
    assert await outbox_drained(partners)
    events = await emitted(
        partners.js, world.settings.events_stream, types=("points.redeemed",), expect=1
    )
    assert [e.community for e in events] == [world.other]
    assert str(parse_data(events[0], PointsRedeemed).volunteer_id) == vid
    assert uuid.UUID(redeem_other.json()["redemption_id"])


async def test_migration_splits_existing_balances_by_community(
    nats_url: str, database_url: str
) -> None:
    """Ledgers written before points were per community: each leg moves to its
    community's account, and points redeemed in a community that had not earned them
    are covered by a balanced transfer from the one that had."""
    names = Names()
    settings = partners_settings(names, nats_url, database_url)
    home, other = names.community("home"), names.community("other")
    everything = service_migrations("linli.partners", "partners")
    before = [
        m
        for m in everything
        if not (m.version.startswith("partners:") and m.version >= "partners:0003")
    ]
    vid, only_home = uuid.uuid4(), uuid.uuid4()
    conn = await asyncpg.connect(
        database_url, server_settings={"search_path": f"{settings.db_schema},public"}
    )
    try:
        await migrate(conn, settings.db_schema, before)
        old = f"volunteer:{vid}"
        legs = [  # (community, account, amount, kind): 30 earned in other, 10 in home,
            (other, old, 30, "award"),  # then 25 redeemed in home (the defect).
            (other, f"pool:{other}", -30, "award"),
            (home, old, 10, "award"),
            (home, f"pool:{home}", -10, "award"),
            (home, old, -25, "redemption"),
            (home, f"redeemed:{home}", 25, "redemption"),
            (home, f"volunteer:{only_home}", 7, "award"),
            (home, f"pool:{home}", -7, "award"),
        ]
        async with conn.transaction():
            for account, kind in {(a, a.split(":")[0]) for _, a, _, _ in legs}:
                total = sum(amount for _, a, amount, _ in legs if a == account)
                await conn.execute(
                    "INSERT INTO balances (account, account_kind, balance) VALUES ($1, $2, $3)",
                    account,
                    kind,
                    total,
                )
            for i, (community, account, amount, kind) in enumerate(legs):
                await conn.execute(
                    "INSERT INTO ledger_entries (entry_group, community, account, amount, "
                    "entry_kind, created_by) VALUES ($1, $2, $3, $4, $5, 'test')",
                    uuid.UUID(int=i // 2 + 1),
                    community,
                    account,
                    amount,
                    kind,
                )
        applied = await migrate(conn, settings.db_schema, everything)
        assert applied[0] == "partners:0003_points_per_community"
        balances = dict(
            await conn.fetch("SELECT account, balance FROM balances WHERE account LIKE 'vol%'")
        )
        assert balances == {
            f"volunteer:{home}:{vid}": 0,
            f"volunteer:{other}:{vid}": 15,
            f"volunteer:{home}:{only_home}": 7,
        }
        # Balances agree with the ledger, and every entry group still sums to zero.
        assert not await conn.fetch(
            "SELECT b.account FROM balances b LEFT JOIN ledger_entries e USING (account) "
            "GROUP BY b.account, b.balance HAVING b.balance <> coalesce(sum(e.amount), 0)"
        )
        assert not await conn.fetch(
            "SELECT entry_group FROM ledger_entries GROUP BY 1 HAVING sum(amount) <> 0"
        )
        transfer = await conn.fetch(
            "SELECT community, amount FROM ledger_entries WHERE entry_kind = 'transfer' "
            "ORDER BY amount"
        )
        assert [tuple(r) for r in transfer] == [(other, -15), (home, 15)]
    finally:
        await conn.close()
        await drop_world(settings, nats_url)
