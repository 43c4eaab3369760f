"""The HSDS export's live capacity end to end (issue #13 item 4, ADR 0051): a need
submitted through intake is matched by scheduling, which reserves a place in a canteen's
slot (`slot.reserved`); partners hears it and the canteen's `service_capacity.available`
drops by one, while every document still validates against HSDS 3.1. The public guide
answers without a credential."""

from __future__ import annotations

import pytest
from harness.hsds import assert_valid
from harness.intake import meal_need
from harness.lifecycle import Lifecycle, window

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DIRECTORY = {
    "public": True,
    "address": {
        "address_1": "致远路 18 号",
        "city": "泰安市",
        "state_province": "山东省",
        "postal_code": "271000",
    },
    "latitude": 36.19,
    "longitude": 117.12,
    "phone": "0538-6220000",
    "opening_hours": [
        {"weekdays": [1, 2, 3, 4, 5, 6, 7], "opens_at": "10:30", "closes_at": "13:30"}
    ],
}


async def test_a_reservation_lowers_the_exported_capacity(lifecycle) -> None:
    lc: Lifecycle = await lifecycle()
    canteen = await lc.create_partner(
        "幸福食堂 Happiness Canteen", "canteen", ["meal_delivery"], directory=DIRECTORY
    )
    await lc.publish_slot(
        "meal_delivery", provider=("partner", canteen), window=window(30, 180), capacity=5
    )
    await lc.wait_slots(1)

    async def meal_capacity() -> dict:
        page = lc.ok(await lc.http.get(lc.c("partners", "/hsds/services")))
        (service,) = page["contents"]
        assert_valid(service, "service_with_definitions")
        return dict(service["capacities"][0])

    before = await meal_capacity()
    assert (before["available"], before["maximum"]) == (5, 5)

    resident = await lc.create_resident()
    need = await lc.submit_need(meal_need(resident, hours_ahead=1))
    await lc.wait_events("slot.reserved", need_id=need["id"])

    async def dropped() -> dict | None:
        now = await meal_capacity()
        return now if now["available"] == 4 else None

    after = await lc.wait_for(dropped, what="available to drop to 4")
    assert after["maximum"] == 5
    assert after["updated"] >= before["updated"]

    public = lc.http.build_request(
        "GET", lc.url("partners", f"/public/v1/communities/{lc.home}/guide")
    )
    del public.headers["Authorization"]  # no credential
    guide = await lc.http.send(public)
    assert guide.status_code == 200
    (entry,) = guide.json()["entries"]
    assert entry["organization"] == "幸福食堂 Happiness Canteen"
    assert entry["phone"] == "+865386220000"
