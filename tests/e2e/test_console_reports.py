"""The 台账 and reports on real servers (Lifecycle with console=True): needs driven
through fulfilled, failed (a welfare check, resolved) and escalated; the console's
durable `console-reports` folds the events; the month's report is checked figure by
figure as JSON, CSV and a printable page, per community and per street office, and a
replay of every event changes nothing (ADR 0038)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from harness.common import consumer_settled
from harness.console import Browser, console_url
from harness.html import parse
from harness.intake import meal_need, resident_body
from harness.lifecycle import Lifecycle, now_iso, window

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PASSWORD = "correct horse battery"
DURABLE = "console-reports"


def visit_need(resident_id: str) -> dict[str, Any]:
    start = datetime.now(UTC) + timedelta(minutes=30)
    return {
        "kind": "elder_care_visit",
        "resident_id": resident_id,
        "window": {
            "earliest": start.isoformat(),
            "latest": (start + timedelta(hours=2)).isoformat(),
        },
        "details": {"purpose": "companionship", "duration_minutes": 45},
    }


async def settled(lc: Lifecycle) -> None:
    """The console's durable has acknowledged everything on the stream."""
    await consumer_settled(lc.nats.jetstream(), lc.events_stream, DURABLE, timeout=30)


async def replay_everything(lc: Lifecycle) -> int:
    """Publish every event on the stream again as a new stream message (a new Nats-Msg-Id,
    the same CloudEvent): what a redelivery or a producer's retry looks like to the
    consumer. Returns how many were replayed."""
    js = lc.nats.jetstream()
    info = await js.stream_info(lc.events_stream)
    replayed = 0
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(lc.events_stream, seq)
        headers = dict(msg.headers or {})
        headers["Nats-Msg-Id"] = f"replay-{seq}-{headers.get('Nats-Msg-Id', '')}"
        await js.publish(msg.subject, msg.data or b"", headers=headers)
        replayed += 1
    return replayed


def rows_of(report: dict[str, Any], section: str, **match: Any) -> list[dict[str, Any]]:
    return [r for r in report[section] if all(r[k] == v for k, v in match.items())]


async def test_monthly_reports_per_community_and_street_office(lifecycle: Any) -> None:
    lc: Lifecycle = await lifecycle(console=True)
    await lc.add_staff("op-home", PASSWORD, communities=[lc.home])
    other_token = await lc.add_staff("op-other", PASSWORD, communities=[lc.other])
    await lc.add_staff("street", PASSWORD, street_office=("jiedao", [lc.home, lc.other]))
    month = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")

    # Home: a canteen (partner) delivers lunch; a volunteer makes a visit.
    canteen = await lc.create_partner("幸福食堂 Happiness Canteen", "canteen", ["meal_delivery"])
    canteen_token = await lc.party_token("partner", canteen)
    await lc.publish_slot(
        "meal_delivery", provider=("partner", canteen), window=window(20, 150), capacity=5
    )
    volunteer = await lc.create_volunteer("小刘 Xiao Liu", ["elder_care_visit"])
    volunteer_token = await lc.party_token("volunteer", volunteer)
    await lc.publish_slot("elder_care_visit", window=window(20, 240), token=volunteer_token)
    await lc.wait_slots(2)
    resident = await lc.create_resident(priority_group="elderly_living_alone")

    # 1. Lunch delivered inside its window (it opens now).
    lunch = (await lc.submit_need(meal_need(resident, hours_ahead=0)))["id"]
    offer = await lc.wait_offer(canteen_token, lunch)
    lc.ok(await lc.answer(canteen_token, offer["assignment_id"], "accept"))
    body = {"outcome": "meal_delivered", "delivered_at": now_iso(), "handed_to": "resident"}
    lc.ok(await lc.report(canteen_token, offer["assignment_id"], body), 201)
    await lc.wait_events("need.fulfilled", need_id=lunch)

    # 2. A visit of 45 minutes by the volunteer: measured hours, points.
    visit = (await lc.submit_need(visit_need(resident)))["id"]
    offer = await lc.wait_offer(volunteer_token, visit)
    lc.ok(await lc.answer(volunteer_token, offer["assignment_id"], "accept"))
    ended = datetime.now(UTC)
    body = {
        "outcome": "visit_completed",
        "started_at": (ended - timedelta(minutes=45)).isoformat(),
        "ended_at": ended.isoformat(),
    }
    lc.ok(await lc.report(volunteer_token, offer["assignment_id"], body), 201)
    (awarded,) = await lc.wait_events("points.awarded", need_id=visit)

    # 3. Lunch not delivered (not at home): a welfare check, resolved "resident well".
    missed = (await lc.submit_need(meal_need(resident, hours_ahead=1)))["id"]
    offer = await lc.wait_offer(canteen_token, missed)
    lc.ok(await lc.answer(canteen_token, offer["assignment_id"], "accept"))
    body = {"outcome": "failed", "reason": "not_home", "failed_at": now_iso()}
    lc.ok(await lc.report(canteen_token, offer["assignment_id"], body), 201)
    await lc.wait_events("need.escalated", need_id=missed, reason="welfare_check")
    page = lc.ok(await lc.http.get(lc.c("scheduling", "/escalations")))
    (welfare,) = [e for e in page["items"] if e["need_id"] == missed]
    resolve = lc.c("scheduling", f"/escalations/{welfare['id']}/resolve")
    lc.ok(await lc.http.post(resolve, json={"outcome": "resident_well", "note": "很好"}))
    await lc.wait_events("escalation.resolved", need_id=missed)

    # Other: a need nobody can serve (no capacity there): escalated, still open.
    # (A street office's credential only reads, ADR 0040: the other community's operator
    # writes.)
    other_op = lc.bearer(other_token)
    other_resident = lc.ok(
        await lc.http.post(
            lc.c("intake", "/residents", lc.other),
            json=resident_body(priority_group="low_income"),
            headers=other_op,
        ),
        201,
    )["id"]
    stranded = lc.ok(
        await lc.http.post(
            lc.c("intake", "/needs", lc.other),
            json=meal_need(other_resident, hours_ahead=2),
            headers=other_op,
        ),
        201,
    )["id"]
    await lc.wait_events("need.escalated", need_id=stranded, reason="no_capacity")

    await settled(lc)
    other_escalations = await lc.events("need.escalated", need_id=stranded)

    home, other, street = (Browser(console_url(lc)) for _ in range(3))
    try:
        for browser, login in ((home, "op-home"), (other, "op-other"), (street, "street")):
            assert (await browser.sign_in(login, PASSWORD)).status_code == 303

        # --- the home community's month, figure by figure --------------------------------
        response = await home.get(f"/c/{lc.home}/reports/{month}.json")
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["scope"] == {"community": lc.home}
        assert report["communities"] == [lc.home]
        assert report["needs"] == [
            {"kind": "elder_care_visit", "status": "fulfilled",
             "priority_group": "elderly_living_alone", "count": 1},
            {"kind": "meal_delivery", "status": "failed",
             "priority_group": "elderly_living_alone", "count": 1},
            {"kind": "meal_delivery", "status": "fulfilled",
             "priority_group": "elderly_living_alone", "count": 1},
        ]  # fmt: skip
        assert report["sla"] == [
            {"tier": "meal_in_window", "kind": "meal_delivery",
             "eligible": 2, "met": 1, "missed": 1, "pending": 0},
        ]  # fmt: skip
        assert report["failed_deliveries"] == [
            {"kind": "meal_delivery", "reason": "not_home", "party_kind": "partner", "count": 1}
        ]
        assert report["escalations"] == [
            {"kind": "meal_delivery", "reason": "welfare_check", "outcome": "resident_well",
             "count": 1},
        ]  # fmt: skip
        assert report["partners"] == [
            {"partner_id": canteen, "kind": "meal_delivery", "delivered": 1, "cost_option": "free"}
        ]
        assert report["volunteers"] == {
            "active": 1,
            "minutes_measured": 45,
            "meal_deliveries": 0,
            "minutes_approximated": 0,
            "points_awarded": awarded.data["points"],
            "points_redeemed": 0,
        }
        # No personal data: no resident, no volunteer id, no note.
        text = response.text
        for private in (resident, volunteer, "ZZCANARY", "很好", "小刘"):
            assert private not in text

        # --- the CSV: a BOM, and the same figures ----------------------------------------
        response = await home.get(f"/c/{lc.home}/reports/{month}.csv")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        assert response.content.startswith(b"\xef\xbb\xbf")
        rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
        figures = {
            (r["section"], r["kind"], r["item"], r["detail"], r["metric"]): int(r["value"])
            for r in rows
        }
        assert len(figures) == len(rows)
        assert figures[("needs", "meal_delivery", "failed", "elderly_living_alone", "count")] == 1
        assert figures[("sla", "meal_delivery", "meal_in_window", "", "met")] == 1
        assert figures[("sla", "meal_delivery", "meal_in_window", "", "missed")] == 1
        key = ("escalations", "meal_delivery", "welfare_check", "resident_well", "count")
        assert figures[key] == 1
        assert figures[("partners", "meal_delivery", canteen, "free", "delivered")] == 1
        assert figures[("volunteers", "", "", "", "minutes_measured")] == 45
        expected_rows = (
            len(report["needs"]) + 4 * len(report["sla"]) + len(report["failed_deliveries"])
        )
        expected_rows += len(report["escalations"]) + len(report["partners"]) + 6
        assert len(rows) == expected_rows

        # --- the printable page, zh-CN by default ----------------------------------------
        community_page = parse((await home.get(f"/c/{lc.home}")).text)
        link = community_page.testid("report-link")
        assert link.attrs["href"] == f"/c/{lc.home}/reports/{month}"
        response = await home.get(f"/c/{lc.home}/reports/{month}")
        assert response.status_code == 200
        page = parse(response.text)
        assert page.one("html").attrs["lang"] == "zh-CN"
        assert page.testid("report").attrs["data-month"] == month
        for section in ("needs", "sla", "failed", "escalations", "partners", "volunteers"):
            assert page.testid(f"report-{section}")
        assert page.testid("report-csv").attrs["href"] == f"/c/{lc.home}/reports/{month}.csv"
        assert "台账" in response.text
        assert page.one("link", rel="stylesheet").attrs["href"] == "/static/console.css"
        assert "@media print" in (await home.get("/static/console.css")).text
        # In English too.
        switch = {
            "locale": "en",
            "csrf_token": home.csrf(page),
            "next": f"/c/{lc.home}/reports/{month}",
        }
        assert (await home.post("/locale", switch)).status_code == 303
        english = parse((await home.get(f"/c/{lc.home}/reports/{month}")).text)
        assert english.one("html").attrs["lang"] == "en"
        assert "ledger and report" in english.testid("report-title").text

        # --- another community's operator: 404 for home's report -------------------------
        for suffix in ("", ".json", ".csv"):
            assert (await other.get(f"/c/{lc.home}/reports/{month}{suffix}")).status_code == 404
            assert (await other.get(f"/s/jiedao/reports/{month}{suffix}")).status_code == 404
            assert (await home.get(f"/s/jiedao/reports/{month}{suffix}")).status_code == 404
        own = (await other.get(f"/c/{lc.other}/reports/{month}.json")).json()
        assert own["needs"] == [
            {"kind": "meal_delivery", "status": "escalated", "priority_group": "low_income",
             "count": 1},
        ]  # fmt: skip
        assert sum(r["count"] for r in own["escalations"]) == len(other_escalations)

        # --- the street office: the sum of its communities -------------------------------
        response = await street.get(f"/s/jiedao/reports/{month}.json")
        assert response.status_code == 200
        office = response.json()
        assert office["communities"] == sorted([lc.home, lc.other])
        assert office["needs"] == sorted(
            report["needs"] + own["needs"],
            key=lambda r: (r["kind"], r["status"], r["priority_group"]),
        )
        assert sum(r["count"] for r in office["escalations"]) == 1 + len(other_escalations)
        assert office["volunteers"] == report["volunteers"]
        assert office["partners"] == report["partners"]
        assert (await street.get(f"/s/jiedao/reports/{month}")).status_code == 200
        # ...which also sees each of its communities' reports, and links to its own.
        one = (await street.get(f"/c/{lc.home}/reports/{month}.json")).json()
        assert one == report
        link = parse((await street.get("/")).text).testid("report-link")
        assert link.attrs["href"] == f"/s/jiedao/reports/{month}"

        # --- bad input and no session ----------------------------------------------------
        response = await home.get(f"/c/{lc.home}/reports/2026-13.json")
        assert response.status_code == 422
        assert response.json()["detail"][0]["field"] == "month"
        assert (await home.get(f"/c/{lc.home}/reports/{month}.xml")).status_code == 404
        anonymous = Browser(console_url(lc))
        assert (await anonymous.get(f"/c/{lc.home}/reports/{month}.json")).status_code == 401
        assert (await anonymous.get(f"/c/{lc.home}/reports/{month}")).status_code == 303
        await anonymous.close()

        # --- a replay of every event changes nothing -------------------------------------
        before = {
            "home": report,
            "office": office,
        }
        inbox_before = await lc.sql_value(
            "console", "SELECT count(*) FROM inbox WHERE consumer = $1", DURABLE
        )
        js = lc.nats.jetstream()
        delivered_before = (await js.consumer_info(lc.events_stream, DURABLE)).delivered
        assert await replay_everything(lc) > 0
        await settled(lc)
        delivered_after = (await js.consumer_info(lc.events_stream, DURABLE)).delivered
        # The console was given every event a second time...
        assert delivered_after.consumer_seq >= 2 * delivered_before.consumer_seq
        again = (await home.get(f"/c/{lc.home}/reports/{month}.json")).json()
        office_again = (await street.get(f"/s/jiedao/reports/{month}.json")).json()
        assert {"home": again, "office": office_again} == before
        inbox_after = await lc.sql_value(
            "console", "SELECT count(*) FROM inbox WHERE consumer = $1", DURABLE
        )
        assert inbox_after == inbox_before
    finally:
        for browser in (home, other, street):
            await browser.close()
