"""The catalogue's new kinds on real servers (issue #12 item 4, ADR 0045): intake,
partners and scheduling as separate processes, NATS JetStream and PostgreSQL.

* medicine from a pharmacy (`goods_delivery`) and a haircut at home (`personal_care`)
  go submitted → offered → accepted → completed (`service.completed`) → fulfilled, and
  the volunteer earns the catalogue's points; the prescription note stays in intake and
  reaches the accepted helper only;
* `GET /v1/catalogue` lists the five kinds with JSON Schemas that validate samples;
* bad details of a new kind answer 422 with field-level reasons and change nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest
from harness.common import consumer_settled
from harness.communities import register_everywhere
from harness.console import Browser, console_url
from harness.lifecycle import Lifecycle, now_iso, window

from linli.contracts.types import Role

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _need(resident: str, kind: str, details: dict[str, Any]) -> dict[str, Any]:
    start = datetime.now(UTC) + timedelta(hours=1)
    return {
        "kind": kind,
        "resident_id": resident,
        "window": {
            "earliest": start.isoformat(),
            "latest": (start + timedelta(minutes=120)).isoformat(),
        },
        "details": details,
        "source": {"system": "community-office"},
    }


async def test_new_kinds_flow_to_fulfilled_and_earn_points(lifecycle: Any) -> None:
    lc: Lifecycle = await lifecycle()
    pharmacy = await lc.create_partner("仁心大药房 Renxin Pharmacy", "pharmacy", ["goods_delivery"])
    runner = await lc.create_volunteer("小周 Xiao Zhou", ["goods_delivery"])
    barber = await lc.create_volunteer("张师傅 Master Zhang", ["personal_care"])
    runner_token = await lc.party_token("volunteer", runner)
    barber_token = await lc.party_token("volunteer", barber)
    # The pharmacy's round starts later, so matching picks the volunteer's (earliest
    # first); a partner with a pharmacy service may publish goods capacity at all.
    await lc.publish_slot(
        "goods_delivery", provider=("partner", pharmacy), window=window(90, 120), capacity=5
    )
    await lc.publish_slot("goods_delivery", window=window(20, 200), token=runner_token)
    await lc.publish_slot("personal_care", window=window(20, 200), token=barber_token)
    await lc.wait_slots(3)

    resident = await lc.create_resident(priority_group="elderly_living_alone")
    note = f"降压药 order {uuid.uuid4().hex[:8]}"
    goods = await lc.submit_need(
        _need(
            resident,
            "goods_delivery",
            {
                "category": "medicine",
                "items_count": 2,
                "prescription_required": True,
                "description": note,
            },
        )
    )
    care = await lc.submit_need(
        _need(resident, "personal_care", {"service": "haircut", "duration_minutes": 30})
    )
    assert goods["status"] == care["status"] == "submitted"
    assert "description" not in goods["details"]

    expected_points = {"goods_delivery": 10, "personal_care": 15}
    for need, token in ((goods, runner_token), (care, barber_token)):
        offer = await lc.wait_offer(token, need["id"])
        assert offer["kind"] == need["kind"]
        assert "description" not in offer["details"]
        lc.ok(await lc.answer(token, offer["assignment_id"], "accept"))
        await lc.wait_status(need["id"], "assigned")
        if need["kind"] == "goods_delivery":
            # The accepted helper reads the requester's note from intake (ADR 0031).
            shown = lc.ok(await lc.offer(token, offer["assignment_id"]))
            assert shown.get("description") == note
        started = datetime.now(UTC) - timedelta(minutes=20)
        report = {
            "outcome": "service_completed",
            "started_at": started.isoformat(),
            "completed_at": now_iso(),
        }
        done = lc.ok(await lc.report(token, offer["assignment_id"], report), 201)
        assert done["points_awarded"] == expected_points[need["kind"]]
        await lc.wait_status(need["id"], "fulfilled")
        await lc.wait_events("points.awarded", need_id=need["id"])
        spine = [e.short for e in await lc.events(need_id=need["id"])]
        for short in (
            "need.submitted",
            "assignment.offered",
            "volunteer.confirmed",
            "service.completed",
            "need.fulfilled",
            "points.awarded",
        ):
            assert spine.count(short) == 1, (short, spine)
        (completed,) = await lc.events("service.completed", need_id=need["id"])
        assert completed.data["kind"] == need["kind"]
        # No free text of the requester in any event of the need (ADR 0031).
        assert note not in str([e.data for e in await lc.events(need_id=need["id"])])

    assert (await lc.my_points(runner_token))["balance"] == 10
    assert (await lc.my_points(barber_token))["balance"] == 15

    lc.check_alive()


async def test_catalogue_lists_five_kinds_with_valid_schemas_and_bad_details_are_refused(
    lifecycle: Any,
) -> None:
    lc: Lifecycle = await lifecycle()
    url = lc.url("intake", "/v1/catalogue")
    assert (await lc.http.get(url, headers={"Authorization": ""})).status_code == 401
    catalogue = lc.ok(await lc.http.get(url))
    kinds = [item["kind"] for item in catalogue["items"]]
    assert kinds == [
        "meal_delivery",
        "elder_care_visit",
        "repair",
        "goods_delivery",
        "personal_care",
    ]
    samples = {
        "meal_delivery": {"portions": 2},
        "elder_care_visit": {"purpose": "health_check", "duration_minutes": 45},
        "repair": {"category": "heating", "description": "radiator leaks"},
        "goods_delivery": {"category": "groceries", "items_count": 5},
        "personal_care": {"service": "haircut"},
    }
    for item in catalogue["items"]:
        schema = item["details_schema"]
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(samples[item["kind"]], schema)
        assert item["labels"]["zh-CN"]
        assert item["labels"]["en"]
        assert item["sla"]["basis"] in ("window", "response")
    by_kind = {item["kind"]: item for item in catalogue["items"]}
    assert by_kind["repair"]["sla"]["response_seconds"]["priority"] == 24 * 3600
    assert by_kind["goods_delivery"]["completion_event"] == "service.completed"
    assert by_kind["goods_delivery"]["private_fields"] == ["description"]

    # A street office reads it too: nothing personal in it (ADR 0040).
    tokens = await register_everywhere(lc, Role.STREET_OFFICE, lc.home)
    street = lc.bearer(tokens["intake"])
    assert (await lc.http.get(url, headers=street)).json() == catalogue

    resident = await lc.create_resident()
    before = lc.ok(await lc.http.get(lc.c("intake", "/needs?limit=200")))["items"]
    for kind, details, fields in (
        (
            "goods_delivery",
            {"category": "jewellery", "items_count": 0},
            {"category", "items_count"},
        ),
        ("goods_delivery", {"items_count": 2, "colour": "red"}, {"category", "colour"}),
        (
            "personal_care",
            {"service": "tattoo", "duration_minutes": 500},
            {"service", "duration_minutes"},
        ),
    ):
        response = await lc.http.post(lc.c("intake", "/needs"), json=_need(resident, kind, details))
        assert response.status_code == 422, response.text
        reasons = response.json()["detail"]
        named = {r["field"].rsplit(".", 1)[-1] for r in reasons}
        assert fields <= named, reasons
        assert all(r["field"].startswith("body.details.") for r in reasons), reasons
    after = lc.ok(await lc.http.get(lc.c("intake", "/needs?limit=200")))["items"]
    assert after == before
    lc.check_alive()


async def test_console_reports_count_the_new_kinds(lifecycle: Any) -> None:
    """A pharmacy's goods delivery and a volunteer's haircut, proven by `service.completed`,
    are counted by the console's monthly report under their own kinds."""
    lc: Lifecycle = await lifecycle(console=True)
    await lc.add_staff("op-home", "correct horse battery", communities=[lc.home])
    month = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    pharmacy = await lc.create_partner("仁心大药房 Renxin Pharmacy", "pharmacy", ["goods_delivery"])
    pharmacy_token = await lc.party_token("partner", pharmacy)
    barber = await lc.create_volunteer("张师傅 Master Zhang", ["personal_care"])
    barber_token = await lc.party_token("volunteer", barber)
    await lc.publish_slot(
        "goods_delivery", provider=("partner", pharmacy), window=window(20, 200), capacity=3
    )
    await lc.publish_slot("personal_care", window=window(20, 200), token=barber_token)
    await lc.wait_slots(2)
    resident = await lc.create_resident(priority_group="low_income")
    goods = await lc.submit_need(
        _need(resident, "goods_delivery", {"category": "groceries", "items_count": 4})
    )
    care = await lc.submit_need(_need(resident, "personal_care", {"service": "shave"}))
    for need, token in ((goods, pharmacy_token), (care, barber_token)):
        offer = await lc.wait_offer(token, need["id"])
        lc.ok(await lc.answer(token, offer["assignment_id"], "accept"))
        started = datetime.now(UTC) - timedelta(minutes=30)
        report = {
            "outcome": "service_completed",
            "started_at": started.isoformat(),
            "completed_at": now_iso(),
        }
        lc.ok(await lc.report(token, offer["assignment_id"], report), 201)
        await lc.wait_status(need["id"], "fulfilled")
    await lc.wait_events("points.awarded", need_id=care["id"])
    await consumer_settled(lc.nats.jetstream(), lc.events_stream, "console-reports", timeout=30)

    home = Browser(console_url(lc))
    try:
        assert (await home.sign_in("op-home", "correct horse battery")).status_code == 303
        response = await home.get(f"/c/{lc.home}/reports/{month}.json")
        assert response.status_code == 200, response.text
        report = response.json()
    finally:
        await home.close()
    assert report["needs"] == [
        {"kind": "goods_delivery", "status": "fulfilled", "priority_group": "low_income",
         "count": 1},
        {"kind": "personal_care", "status": "fulfilled", "priority_group": "low_income",
         "count": 1},
    ]  # fmt: skip
    assert report["partners"] == [
        {"partner_id": pharmacy, "kind": "goods_delivery", "delivered": 1, "cost_option": "free"}
    ]
    assert report["volunteers"]["active"] == 1
    assert report["volunteers"]["minutes_measured"] == 30
    assert report["volunteers"]["points_awarded"] == 15
