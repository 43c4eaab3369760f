"""Points worth something (issue #12, ADR 0041), on real NATS JetStream and PostgreSQL:
a partner's reward, a volunteer's request with its points held, an operator's approval
(one debit, however often retried) or rejection, a certificate that cannot be forged and
a public check that reveals nothing else, and a statement of hours and points."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness.common import outbox_settled
from harness.names import Names
from harness.partners import (
    drop_world,
    emitted,
    offered,
    partners_settings,
    prepare_world,
    publish_event,
    volunteer,
)

from linli.contracts.binding import parse_data
from linli.contracts.events import (
    CertificateUsed,
    PointsRedeemed,
    RedemptionRejected,
    RedemptionRequested,
    RewardPublished,
)
from linli.contracts.types import Role
from linli.partners.app import build_app

pytestmark = pytest.mark.integration

CHECK = "/public/v1/certificates/check"


def ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


async def serve(partners: Any, vid: str, me: dict[str, str], times: int, **report: Any) -> None:
    """`times` completed assignments of the volunteer in the home community."""
    community = partners.world.home
    kind = report.pop("kind", None)
    for _ in range(times):
        data = offered(community, volunteer(vid), **({"kind": kind} if kind else {}))
        await publish_event(partners.js, data, community)
        assert await partners.offer_stored(data.assignment_id), "offer never arrived"
        aid = data.assignment_id
        accepted = await partners.http.post(f"/v1/me/offers/{aid}/accept", headers=me)
        assert accepted.status_code == 200, accepted.text
        body = report or {
            "outcome": "meal_delivered",
            "delivered_at": ago(1),
            "handed_to": "resident",
        }
        done = await partners.http.post(f"/v1/me/offers/{aid}/report", json=body, headers=me)
        assert done.status_code == 201, done.text


async def school(partners: Any) -> tuple[str, dict[str, str]]:
    """A partner school with its own credential."""
    pid = await partners.new_partner(
        name="泰安职业培训学校",
        kind="other",
        services=[{"name": "courses", "need_kind": "repair", "cost_option": "low_cost"}],
    )
    return pid, await partners.partner_token("school", pid)


async def reward(partners: Any, headers: dict[str, str], points: int = 30, **body: Any) -> str:
    url = f"/v1/communities/{partners.world.home}/rewards"
    response = await partners.http.post(
        url, json={"title": "培训课程抵扣100元", "points": points, **body}, headers=headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def balances(partners: Any, vid: str) -> tuple[int, int]:
    row = await partners.pool.fetchrow(
        "SELECT balance, held FROM balances WHERE account = $1",
        f"volunteer:{partners.world.home}:{vid}",
    )
    return (int(row["balance"]), int(row["held"])) if row else (0, 0)


async def approved_certificate(partners: Any) -> dict[str, Any]:
    """A volunteer with 50 points whose request for a 30-point reward was approved."""
    world = partners.world
    pid, school_auth = await school(partners)
    rid = await reward(partners, school_auth)
    vid = await partners.new_volunteer()
    me = await partners.volunteer_token("vol", vid)
    await serve(partners, vid, me, 5)
    base = f"/v1/communities/{world.home}/reward-redemptions"
    asked = await partners.http.post(
        base, json={"reward_id": rid}, headers={**me, "Idempotency-Key": "ask-1"}
    )
    assert asked.status_code == 201, asked.text
    qid = asked.json()["id"]
    ok = await partners.http.post(f"{base}/{qid}/approve", headers=world.auth())
    assert ok.status_code == 200, ok.text
    cert = await partners.http.get(f"{base}/{qid}/certificate", headers=me)
    assert cert.status_code == 200, cert.text
    return {
        "pid": pid,
        "school": school_auth,
        "rid": rid,
        "vid": vid,
        "me": me,
        "qid": qid,
        "code": cert.json()["code"],
        "base": base,
    }


async def test_a_request_retried_with_the_same_key_holds_once_and_approval_debits_once(
    partners,
) -> None:
    world = partners.world
    pid, school_auth = await school(partners)
    rid = await reward(partners, school_auth, points=30)
    vid = await partners.new_volunteer()
    me = await partners.volunteer_token("vol", vid)
    await serve(partners, vid, me, 5)  # 50 points
    base = f"/v1/communities/{world.home}/reward-redemptions"
    headers = {**me, "Idempotency-Key": "course-2026-11"}

    # The same request racing itself (a flaky network) and retried: one hold.
    answers = await asyncio.gather(
        *(partners.http.post(base, json={"reward_id": rid}, headers=headers) for _ in range(4))
    )
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert all(
        a.headers.get("Idempotent-Replayed") == "true" for a in answers if a.status_code == 200
    )
    qid = answers[0].json()["id"]
    assert answers[0].json()["status"] == "requested"
    assert await balances(partners, vid) == (50, 30)
    # The same key with another body is refused (409) and changes nothing.
    other = await reward(partners, school_auth, points=5, title="another")
    reused = await partners.http.post(base, json={"reward_id": other}, headers=headers)
    assert reused.status_code == 409, reused.text
    assert reused.json()["error"] == "conflict"
    assert await balances(partners, vid) == (50, 30)

    # The approval, retried with the same key (also racing), debits once.
    approve = {**world.auth(), "Idempotency-Key": "approve-course-2026-11"}
    approvals = await asyncio.gather(
        *(partners.http.post(f"{base}/{qid}/approve", headers=approve) for _ in range(3))
    )
    assert sorted(a.status_code for a in approvals) == [200, 200, 200], [a.text for a in approvals]
    assert [a.headers.get("Idempotent-Replayed") for a in approvals].count("true") == 2
    assert all(a.json()["status"] == "approved" for a in approvals)
    assert await balances(partners, vid) == (20, 0)
    # Without a key, a second approval is a conflict, not a second debit.
    again = await partners.http.post(f"{base}/{qid}/approve", headers=world.auth())
    assert again.status_code == 409
    assert await balances(partners, vid) == (20, 0)
    assert (
        await partners.pool.fetchval(
            "SELECT count(*) FROM ledger_entries WHERE entry_kind = 'redemption'"
        )
        == 2
    )
    assert await partners.pool.fetchval("SELECT sum(amount) FROM ledger_entries") == 0

    await outbox_settled(partners.pool)
    types = ("reward.published", "redemption.requested", "points.redeemed")
    events = await emitted(partners.js, world.settings.events_stream, types=types, expect=4)
    by_type: dict[str, list[Any]] = {}
    for e in events:
        by_type.setdefault(e.type, []).append(e)
    assert len(by_type["linli.redemption.requested.v1"]) == 1
    assert len(by_type["linli.points.redeemed.v1"]) == 1
    requested = parse_data(by_type["linli.redemption.requested.v1"][0], RedemptionRequested)
    assert (str(requested.redemption_id), str(requested.reward_id), requested.points) == (
        qid,
        rid,
        30,
    )
    redeemed = parse_data(by_type["linli.points.redeemed.v1"][0], PointsRedeemed)
    assert (str(redeemed.redemption_id), str(redeemed.reward_id)) == (qid, rid)
    assert (redeemed.points, redeemed.balance_after) == (30, 20)
    published = [parse_data(e, RewardPublished) for e in by_type["linli.reward.published.v1"]]
    assert {str(p.partner_id) for p in published} == {pid}
    # Nothing about people in these events: no names, no notes.
    for e in events:
        assert "小张" not in e.model_dump_json()


async def test_a_request_beyond_the_balance_is_refused_and_changes_nothing(partners) -> None:
    world = partners.world
    _, school_auth = await school(partners)
    costly = await reward(partners, school_auth, points=30)
    vid = await partners.new_volunteer()
    me = await partners.volunteer_token("vol", vid)
    await serve(partners, vid, me, 5)  # 50 points
    base = f"/v1/communities/{world.home}/reward-redemptions"

    first = await partners.http.post(
        base, json={"reward_id": costly}, headers={**me, "Idempotency-Key": "a"}
    )
    assert first.status_code == 201, first.text
    # 30 of 50 are held: a second 30 would spend held points.
    second = await partners.http.post(
        base, json={"reward_id": costly}, headers={**me, "Idempotency-Key": "b"}
    )
    assert second.status_code == 422, second.text
    assert second.json()["error"] == "validation_failed"
    assert [(r["field"], r["code"]) for r in second.json()["detail"]] == [
        ("body.reward_id", "insufficient_points")
    ]
    assert await balances(partners, vid) == (50, 30)
    assert await partners.pool.fetchval("SELECT count(*) FROM reward_redemptions") == 1
    # The refused key was not used: it can ask for something that fits.
    cheap = await reward(partners, school_auth, points=20)
    fits = await partners.http.post(
        base, json={"reward_id": cheap}, headers={**me, "Idempotency-Key": "b"}
    )
    assert fits.status_code == 201, fits.text
    assert await balances(partners, vid) == (50, 50)
    # An operator's direct debit cannot spend held points either.
    direct = await partners.http.post(
        f"/v1/communities/{world.home}/volunteers/{vid}/redemptions",
        json={"points": 1},
        headers=world.auth(),
    )
    assert direct.status_code == 409, direct.text
    # A missing key is refused with the field.
    no_key = await partners.http.post(base, json={"reward_id": cheap}, headers=me)
    assert no_key.status_code == 422
    assert no_key.json()["detail"][0]["field"] == "header.Idempotency-Key"

    # Rejection frees the points (the reason stays here).
    reject = await partners.http.post(
        f"{base}/{first.json()['id']}/reject",
        json={"reason": "课程已满 ZZREASON"},
        headers=world.auth(),
    )
    assert reject.status_code == 200, reject.text
    assert reject.json()["status"] == "rejected"
    assert await balances(partners, vid) == (50, 20)
    late = await partners.http.post(f"{base}/{first.json()['id']}/approve", headers=world.auth())
    assert late.status_code == 409
    events = await emitted(
        partners.js, world.settings.events_stream, types=("redemption.rejected",), expect=1
    )
    rejected = parse_data(events[0], RedemptionRejected)
    assert (str(rejected.redemption_id), rejected.points) == (first.json()["id"], 30)
    assert "ZZREASON" not in events[0].model_dump_json()

    # Withdrawing a reward rejects its pending requests and frees their points.
    gone = await partners.http.delete(
        f"/v1/communities/{world.home}/rewards/{cheap}", headers=school_auth
    )
    assert gone.status_code == 204, gone.text
    assert await balances(partners, vid) == (50, 0)
    listed = await partners.http.get(f"/v1/communities/{world.home}/rewards", headers=me)
    assert cheap not in {r["id"] for r in listed.json()["items"]}
    assert costly in {r["id"] for r in listed.json()["items"]}


async def test_a_tampered_certificate_code_is_refused_and_the_check_reveals_nothing_else(
    partners,
) -> None:
    c = await approved_certificate(partners)
    code = c["code"]
    good = await partners.http.post(CHECK, json={"code": code})  # no credential
    assert good.status_code == 200, good.text
    assert set(good.json()) == {
        "valid",
        "reward_title",
        "partner_name",
        "points",
        "issued_on",
        "state",
        "used_on",
    }
    assert good.json()["valid"] is True
    assert good.json()["state"] == "issued"
    assert (good.json()["reward_title"], good.json()["points"]) == ("培训课程抵扣100元", 30)
    for secret in (c["vid"], c["qid"], "小张"):  # the volunteer, the request
        assert secret not in good.text
    # Printed codes are read aloud and retyped: case and dashes do not matter.
    loose = await partners.http.post(CHECK, json={"code": code.replace("-", " ").lower()})
    assert loose.status_code == 200

    last = code[-1]
    tampered = code[:-1] + ("A" if last != "A" else "B")
    unknown = "-".join(["AAAA"] * 6 + ["AA"])
    answers = [
        await partners.http.post(CHECK, json={"code": bad})
        for bad in (tampered, unknown, "x", c["qid"])
    ]
    assert {a.status_code for a in answers} == {404}
    assert {a.text for a in answers} == {'{"error":"not_found","detail":"certificate not found"}'}

    # The partner marks it used, once; the check then says so.
    use = f"/v1/communities/{partners.world.home}/certificates/use"
    used = await partners.http.post(use, json={"code": code}, headers=c["school"])
    assert used.status_code == 200, used.text
    assert used.json()["reject_reason"] is None
    twice = await partners.http.post(use, json={"code": code}, headers=c["school"])
    assert twice.status_code == 409
    forged = await partners.http.post(use, json={"code": tampered}, headers=c["school"])
    assert forged.status_code == 404
    after = await partners.http.post(CHECK, json={"code": code})
    assert (after.json()["state"], after.json()["used_on"] is not None) == ("used", True)
    events = await emitted(
        partners.js, partners.world.settings.events_stream, types=("certificate.used",), expect=1
    )
    assert str(parse_data(events[0], CertificateUsed).redemption_id) == c["qid"]

    # The code is stored only as a digest and a sealed copy.
    row = await partners.pool.fetchrow(
        "SELECT certificate_sha256, certificate_sealed FROM reward_redemptions WHERE id = $1",
        uuid.UUID(c["qid"]),
    )
    assert code not in row["certificate_sealed"]
    assert row["certificate_sealed"].startswith("fernet:")

    page = await partners.http.get(
        f"{c['base']}/{c['qid']}/certificate?format=html", headers=c["me"]
    )
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert code in page.text
    assert "培训课程抵扣100元" in page.text


async def test_another_community_sees_nothing_of_rewards_requests_and_certificates(
    partners,
) -> None:
    world = partners.world
    c = await approved_certificate(partners)
    # The same volunteer's credential for the other community only.
    other_vol = await world.issue("other_vol", Role.VOLUNTEER, [world.other], c["vid"])
    other = world.auth("other_operator")
    home_reward = f"/v1/communities/{world.home}/rewards/{c['rid']}"
    home_request = f"{c['base']}/{c['qid']}"
    for url in (home_reward, home_request, f"{home_request}/certificate"):
        assert (await partners.http.get(url, headers=other)).status_code == 404, url
        assert (await partners.http.get(url, headers=other_vol)).status_code == 404, url
    for url in (f"{home_request}/approve",):
        assert (await partners.http.post(url, headers=other)).status_code == 404
    assert (
        await partners.http.post(f"{home_request}/reject", json={"reason": "x"}, headers=other)
    ).status_code == 404
    assert (await partners.http.delete(home_reward, headers=other)).status_code == 404
    assert (
        await partners.http.patch(home_reward, json={"points": 1}, headers=other)
    ).status_code == 404
    # In its own community the other operator finds none of them either.
    there = f"/v1/communities/{world.other}"
    assert (
        await partners.http.get(f"{there}/rewards/{c['rid']}", headers=other)
    ).status_code == 404
    assert (
        await partners.http.get(f"{there}/reward-redemptions/{c['qid']}", headers=other)
    ).status_code == 404
    assert (await partners.http.get(f"{there}/reward-redemptions", headers=other)).json() == {
        "items": []
    }
    assert (
        await partners.http.post(
            f"{there}/certificates/use", json={"code": c["code"]}, headers=other
        )
    ).status_code == 404
    # A home reward cannot be asked for from the other community.
    asked = await partners.http.post(
        f"{there}/reward-redemptions",
        json={"reward_id": c["rid"]},
        headers={**other_vol, "Idempotency-Key": "x"},
    )
    assert asked.status_code in (404, 422)
    # Another volunteer of the home community does not see this one's request, certificate
    # or statement; another partner cannot use its certificate.
    vid2 = await partners.new_volunteer()
    me2 = await partners.volunteer_token("vol2", vid2)
    assert (await partners.http.get(home_request, headers=me2)).status_code == 404
    assert (await partners.http.get(f"{home_request}/certificate", headers=me2)).status_code == 404
    assert (
        await partners.http.get(
            f"/v1/communities/{world.home}/volunteers/{c['vid']}/statement", headers=me2
        )
    ).status_code == 404
    rival = await partners.new_partner(name="另一家")
    rival_auth = await partners.partner_token("rival", rival)
    assert (
        await partners.http.post(
            f"/v1/communities/{world.home}/certificates/use",
            json={"code": c["code"]},
            headers=rival_auth,
        )
    ).status_code == 404
    assert (
        await partners.http.patch(home_reward, json={"points": 1}, headers=rival_auth)
    ).status_code == 404
    # A partner offers rewards only as itself.
    as_school = await partners.http.post(
        f"/v1/communities/{world.home}/rewards",
        json={"title": "x", "points": 1, "partner_id": c["pid"]},
        headers=rival_auth,
    )
    assert as_school.status_code == 403
    # Nothing changed.
    assert await balances(partners, c["vid"]) == (20, 0)
    check = await partners.http.post(CHECK, json={"code": c["code"]})
    assert check.json()["state"] == "issued"


async def test_statement_of_hours_and_points(partners) -> None:
    world = partners.world
    c = await approved_certificate(partners)  # 5 meals: 50 points, 30 redeemed
    started = datetime.now(UTC) - timedelta(minutes=100)
    await serve(
        partners,
        c["vid"],
        c["me"],
        1,
        kind="elder_care_visit",
        outcome="visit_completed",
        started_at=started.isoformat(),
        ended_at=(started + timedelta(minutes=90)).isoformat(),
    )
    _, school_auth = c["pid"], c["school"]
    small = await reward(partners, school_auth, points=15)
    held = await partners.http.post(
        c["base"], json={"reward_id": small}, headers={**c["me"], "Idempotency-Key": "s"}
    )
    assert held.status_code == 201
    url = f"/v1/communities/{world.home}/volunteers/{c['vid']}/statement"
    for who in (world.auth(), c["me"]):
        statement = await partners.http.get(url, headers=who)
        assert statement.status_code == 200, statement.text
        body = statement.json()
        assert body["services_delivered"] == 6
        assert [s["minutes"] for s in body["services"]].count(None) == 5
        assert 90 in [s["minutes"] for s in body["services"]]
        assert body["hours"] == 1.5
        assert (body["points_awarded"], body["points_redeemed"]) == (70, 30)
        assert (body["points_held"], body["balance"]) == (15, 40)
    # A period before any of it is empty (balance and holds are as of now).
    early = await partners.http.get(
        url,
        params={"since": "2020-01-01T00:00:00+08:00", "until": "2020-02-01T00:00:00+08:00"},
        headers=world.auth(),
    )
    assert early.status_code == 200, early.text
    assert (early.json()["services"], early.json()["points_awarded"]) == ([], 0)
    bad = await partners.http.get(
        url,
        params={"since": "2020-02-01T00:00:00+08:00", "until": "2020-01-01T00:00:00+08:00"},
        headers=world.auth(),
    )
    assert bad.status_code == 422


async def test_the_public_check_is_rate_limited_per_client(
    nats_url: str, database_url: str, names: Names
) -> None:
    import httpx

    settings = partners_settings(
        names, nats_url, database_url, certificate_check_limit=3, certificate_check_window_s=600
    )
    await prepare_world(settings, names)
    app = build_app(settings)
    try:
        async with app.router.lifespan_context(app):

            def client(address: str) -> httpx.AsyncClient:
                transport = httpx.ASGITransport(app=app, client=(address, 40000))
                return httpx.AsyncClient(transport=transport, base_url="http://partners.test")

            async with client("192.0.2.10") as one, client("192.0.2.11") as two:
                codes = [
                    (await one.post(CHECK, json={"code": f"NOPE-{i}"})).status_code
                    for i in range(4)
                ]
                assert codes == [404, 404, 404, 429]
                limited = await one.post(CHECK, json={"code": "NOPE"})
                assert limited.status_code == 429
                assert limited.json()["error"] == "too_many_requests"
                assert 1 <= int(limited.headers["Retry-After"]) <= 600
                # Another address has its own window.
                assert (await two.post(CHECK, json={"code": "NOPE"})).status_code == 404
            stored = await app.state.runtime.pool.fetch("SELECT client_sha256 FROM rate_limit_hits")
            assert len(stored) == 2
            assert all(b"192.0.2" not in bytes(r["client_sha256"]) for r in stored)
    finally:
        await drop_world(settings, nats_url)
