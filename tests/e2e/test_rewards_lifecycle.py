"""Points worth something, end to end (issue #12, ADR 0041): a volunteer earns points by
delivering a lunch through intake, scheduling and partners as separate processes, asks
for a partner school's reward, an operator approves it (retried: one debit), and the
school checks the certificate on the public route of the running partners process."""

from __future__ import annotations

import pytest
from harness.intake import meal_need
from harness.lifecycle import Lifecycle, now_iso, window

pytestmark = [pytest.mark.e2e]


async def test_a_lunch_earns_points_that_buy_a_checked_certificate(lifecycle) -> None:
    lc: Lifecycle = await lifecycle()
    volunteer = await lc.create_volunteer("小刘 Xiao Liu", ["meal_delivery"])
    token = await lc.party_token("volunteer", volunteer)
    me = lc.bearer(token)
    school = await lc.create_partner("职业技能培训学校", "other", [])
    await lc.publish_slot("meal_delivery", window=window(20, 150), token=token)
    await lc.wait_slots(1)
    resident = await lc.create_resident(priority_group="elderly_living_alone")
    need_id = (await lc.submit_need(meal_need(resident, hours_ahead=1)))["id"]
    offer = await lc.wait_offer(token, need_id)
    lc.ok(await lc.answer(token, offer["assignment_id"], "accept"))
    report = {"outcome": "meal_delivered", "delivered_at": now_iso(), "handed_to": "resident"}
    lc.ok(await lc.report(token, offer["assignment_id"], report), 201)

    reward = lc.ok(
        await lc.http.post(
            lc.c("partners", "/rewards"),
            json={"partner_id": school, "title": "课程抵扣20元", "points": 10},
        ),
        201,
    )
    asked = lc.ok(
        await lc.http.post(
            lc.c("partners", "/reward-redemptions"),
            json={"reward_id": reward["id"]},
            headers={**me, "Idempotency-Key": "first-course"},
        ),
        201,
    )
    approve = lc.c("partners", f"/reward-redemptions/{asked['id']}/approve")
    key = {"Idempotency-Key": "approve-first-course"}
    first = lc.ok(await lc.http.post(approve, headers=key))
    again = await lc.http.post(approve, headers=key)
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (200, "true")
    assert first["status"] == again.json()["status"] == "approved"
    assert (await lc.my_points(token))["balance"] == 0

    redeemed = await lc.wait_events("points.redeemed")
    assert len(redeemed) == 1
    assert redeemed[0].data["reward_id"] == reward["id"]

    cert = lc.ok(
        await lc.http.get(
            lc.c("partners", f"/reward-redemptions/{asked['id']}/certificate"), headers=me
        )
    )
    public = lc.url("partners", "/public/v1/certificates/check")
    checked = lc.ok(await lc.http.post(public, json={"code": cert["code"]}, headers=_anonymous()))
    assert (checked["reward_title"], checked["state"]) == ("课程抵扣20元", "issued")
    last = cert["code"][-1]
    tampered = cert["code"][:-1] + ("A" if last != "A" else "E")
    forged = await lc.http.post(public, json={"code": tampered}, headers=_anonymous())
    assert forged.status_code == 404


def _anonymous() -> dict[str, str]:
    # lc.http sends the operator's token by default; the check needs none.
    return {"Authorization": ""}
