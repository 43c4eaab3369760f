"""Group activities (义诊) on real servers (ADR 0046, issue #12 item 5).

Intake runs as two processes, with partners, scheduling, notifications and the console.
A free clinic with two stalls is created and published; a session of 2 places gets 5
sign-ups while registration is open; when it closes, the two priority-group residents
hold the places and the three others wait in sign-up order; a withdrawal promotes the
first of them. Two bursts of sign-ups racing on the two replicas never overfill a
session. Attendance is recorded by the operator and by the stall's partner, and the
console's monthly report shows each partner's contribution. A street office reads the
activity's counts only; another community's credentials get 404; bad input gets 422.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from harness.communities import _register, register_everywhere
from harness.console import Browser, console_url
from harness.lifecycle import Lifecycle

from linli.contracts.types import Role

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ZONE = ZoneInfo("Asia/Shanghai")
PASSWORD = "correct horse battery"


def clinic(p1: str, p2: str, on: str) -> dict[str, Any]:
    return {
        "title": "社区义诊",
        "venue": "致远社区广场",
        "date": on,
        "start_time": "08:00:00",
        "end_time": "12:00:00",
        "stalls": [
            {
                "partner_id": p1,
                "offering": "测血压、血糖",
                "sessions": [{"start_time": "08:00:00", "end_time": "09:00:00", "places": 2}],
            },
            {
                "partner_id": p2,
                "offering": "磨剪刀",
                "sessions": [{"start_time": "09:00:00", "end_time": "10:00:00", "places": 3}],
            },
        ],
    }


async def test_activity_signups_priority_attendance_and_report(lifecycle: Any) -> None:
    lc: Lifecycle = await lifecycle(
        console=True, replicas={"intake": 2}, intake_env={"LINLI_ACTIVITY_INTERVAL_S": "0.5"}
    )
    await lc.add_staff("op-home", PASSWORD, communities=[lc.home])
    http, a = lc.http, lc.c("intake", "/activities")
    tomorrow = datetime.now(ZONE).date() + timedelta(days=1)
    p1, p2 = str(uuid.uuid4()), str(uuid.uuid4())

    key = {"Idempotency-Key": f"clinic-{uuid.uuid4()}"}
    body = clinic(p1, p2, tomorrow.isoformat())
    activity = lc.ok(await http.post(a, json=body, headers=key), 201)
    retried = await http.post(a, json=body, headers=key)
    assert retried.status_code == 200
    assert retried.json()["id"] == activity["id"]
    assert retried.headers["Idempotent-Replayed"] == "true"
    reused = await http.post(a, json=body | {"title": "另一个"}, headers=key)
    assert reused.status_code == 409
    act = f"{a}/{activity['id']}"
    assert activity["status"] == "draft"
    stalls = {s["partner_id"]: s for s in activity["stalls"]}
    assert [s["partner_id"] for s in activity["stalls"]] == [p1, p2]  # in the order given
    (s1,) = stalls[p1]["sessions"]
    (s2,) = stalls[p2]["sessions"]
    published = lc.ok(await http.post(f"{act}/publish"))
    assert published["status"] == "published"
    assert not published["allocated"]
    await lc.wait_events("activity.published")

    # --- five sign-ups for two places: three without priority first, then two with -------
    plain = [await lc.create_resident(priority_group="none") for _ in range(3)]
    firsts = [await lc.create_resident(priority_group=g) for g in ("low_income", "disabled")]
    signups: dict[str, dict[str, Any]] = {}
    for resident in plain + firsts:
        url = f"{act}/sessions/{s1['id']}/signups"
        made = lc.ok(await http.post(url, json={"resident_id": resident}), 201)
        assert made["status"] == "requested"
        signups[resident] = made
    again = await http.post(f"{act}/sessions/{s1['id']}/signups", json={"resident_id": plain[0]})
    assert again.status_code == 200
    assert again.json()["id"] == signups[plain[0]]["id"]

    closed = lc.ok(await http.post(f"{act}/close-registration"))
    assert closed["allocated"]
    listed = lc.ok(await http.get(f"{act}/sessions/{s1['id']}/signups"))
    by_resident = {s["resident_id"]: s for s in listed}
    assert {r for r, s in by_resident.items() if s["status"] == "confirmed"} == set(firsts), (
        listed,
        firsts,
        plain,
    )
    assert [s["resident_id"] for s in listed if s["status"] == "waitlisted"] == plain
    await lc.wait_events("signup.waitlisted", signup_id=signups[plain[2]]["id"])
    waitlisted = await lc.events("signup.waitlisted")
    assert sorted(e.data["position"] for e in waitlisted) == [1, 2, 3]

    # --- a withdrawal promotes the first of the waiting list ----------------------------
    withdrawn = signups[firsts[0]]["id"]
    cancelled = lc.ok(await http.post(f"{act}/signups/{withdrawn}/cancel"))
    assert cancelled["status"] == "cancelled"
    promoted = signups[plain[0]]["id"]
    (event,) = await lc.wait_events("signup.confirmed", signup_id=promoted)
    assert event.data["promoted"] is True
    listed = lc.ok(await http.get(f"{act}/sessions/{s1['id']}/signups"))
    assert [s["id"] for s in listed if s["status"] == "confirmed"] == [
        signups[firsts[1]]["id"],
        promoted,
    ]
    view = lc.ok(await http.get(act))
    assert view["stalls"][0]["sessions"][0]["confirmed"] == 2
    assert view["stalls"][0]["sessions"][0]["waitlisted"] == 2

    # --- two bursts racing on two replicas never overfill --------------------------------
    crowd = [await lc.create_resident(priority_group="none") for _ in range(12)]

    async def burst(residents: list[str]) -> list[int]:
        url = f"{act}/sessions/{s2['id']}/signups"
        answers = await asyncio.gather(
            *(http.post(url, json={"resident_id": r}) for r in residents)
        )
        return [r.status_code for r in answers]

    codes = await asyncio.gather(burst(crowd), burst(list(reversed(crowd))))
    assert {c for batch in codes for c in batch} <= {200, 201}
    rows = await lc.sql(
        "intake",
        "SELECT status, count(*) AS n FROM activity_signups WHERE session_id = $1 GROUP BY 1",
        uuid.UUID(s2["id"]),
    )
    counts = {r["status"]: r["n"] for r in rows}
    assert counts == {"confirmed": 3, "waitlisted": 9}
    places = await lc.sql(
        "intake",
        "SELECT places, confirmed FROM activity_sessions WHERE id = $1",
        uuid.UUID(s2["id"]),
    )
    assert (places[0]["places"], places[0]["confirmed"]) == (3, 3)

    # --- attendance: the operator, and the stall's partner; another partner gets 404 ----
    partner1 = await _register(lc, "intake", Role.PARTNER, lc.home, subject_id=uuid.UUID(p1))
    partner2 = await _register(lc, "intake", Role.PARTNER, lc.home, subject_id=uuid.UUID(p2))
    holder = signups[firsts[1]]["id"]
    mark = f"{act}/signups/{holder}/attendance"
    response = await http.post(mark, json={"outcome": "attended"}, headers=lc.bearer(partner2))
    assert response.status_code == 404
    recorded = lc.ok(
        await http.post(mark, json={"outcome": "attended"}, headers=lc.bearer(partner1))
    )
    assert recorded["attendance"] == "attended"
    assert recorded["resident_id"] is None  # a partner sees sign-ups, not residents
    lc.ok(await http.post(f"{act}/signups/{promoted}/attendance", json={"outcome": "attended"}))
    waiting = signups[plain[1]]["id"]
    response = await http.post(f"{act}/signups/{waiting}/attendance", json={"outcome": "attended"})
    assert response.status_code == 409
    s2_holders = [
        s
        for s in lc.ok(await http.get(f"{act}/sessions/{s2['id']}/signups"))
        if s["status"] == "confirmed"
    ]
    lc.ok(
        await http.post(
            f"{act}/signups/{s2_holders[0]['id']}/attendance", json={"outcome": "attended"}
        )
    )
    lc.ok(
        await http.post(
            f"{act}/signups/{s2_holders[1]['id']}/attendance", json={"outcome": "no_show"}
        )
    )
    await lc.wait_events("attendance.recorded", signup_id=s2_holders[1]["id"])
    for e in await lc.events():
        if e.short.startswith(("activity.", "signup.", "attendance.")):
            assert "社区义诊" not in str(e.data)
            assert "致远" not in str(e.data)

    # --- the console's monthly report: each partner's contribution ------------------------
    month = f"{tomorrow:%Y-%m}"
    browser = Browser(console_url(lc))
    try:
        assert (await browser.sign_in("op-home", PASSWORD)).status_code == 303

        async def contributions() -> list[dict[str, Any]] | None:
            report = (await browser.get(f"/c/{lc.home}/reports/{month}.json")).json()
            rows: list[dict[str, Any]] = report["activities"]
            return rows if sum(r["residents_attended"] for r in rows) == 3 else None

        rows = await lc.wait_for(contributions, 30, what="the partners' contributions")
    finally:
        await browser.close()
    assert sorted(rows, key=lambda r: r["partner_id"]) == sorted(
        [
            {
                "partner_id": p1,
                "activities": 1,
                "stalls": 1,
                "sessions": 1,
                "residents_attended": 2,
            },
            {
                "partner_id": p2,
                "activities": 1,
                "stalls": 1,
                "sessions": 1,
                "residents_attended": 1,
            },
        ],
        key=lambda r: r["partner_id"],
    )

    # --- a street office: counts only; no sign-ups, no writes ----------------------------
    street = lc.bearer((await register_everywhere(lc, Role.STREET_OFFICE, lc.home))["intake"])
    seen = lc.ok(await http.get(act, headers=street))
    assert seen["stalls"][0]["sessions"][0]["attended"] == 2
    assert not any(r in str(seen) for r in plain + firsts + crowd)
    assert len(lc.ok(await http.get(a, headers=street))) == 1
    for method, url, body in [
        ("GET", f"{act}/sessions/{s1['id']}/signups", None),
        ("POST", f"{act}/sessions/{s1['id']}/signups", {"resident_id": plain[0]}),
        ("POST", f"{act}/cancel", None),
        ("POST", a, clinic(p1, p2, tomorrow.isoformat())),
    ]:
        response = await http.request(method, url, json=body, headers=street)
        assert response.status_code == 403, (method, url)

    # --- another community's credentials: 404 --------------------------------------------
    other_op = lc.bearer(await _register(lc, "intake", Role.OPERATOR, lc.other))
    assert (await http.get(act, headers=other_op)).status_code == 404
    other_act = lc.c("intake", f"/activities/{activity['id']}", lc.other)
    for method, url, body in [
        ("GET", other_act, None),
        ("POST", f"{other_act}/cancel", None),
        ("POST", f"{other_act}/sessions/{s1['id']}/signups", {"resident_id": plain[0]}),
        ("POST", f"{other_act}/signups/{holder}/attendance", {"outcome": "no_show"}),
    ]:
        response = await http.request(method, url, json=body, headers=other_op)
        assert response.status_code == 404, (method, url, response.text)

    # --- bad input: 422 with field-level reasons, nothing changes ------------------------
    before = await lc.sql_value("intake", "SELECT count(*) FROM activities")
    bad_times = clinic(p1, p2, tomorrow.isoformat()) | {"end_time": "07:00:00"}
    no_places = clinic(p1, p2, tomorrow.isoformat())
    no_places["stalls"][0]["sessions"][0]["places"] = 0
    outside = clinic(p1, p2, tomorrow.isoformat())
    outside["stalls"][1]["sessions"][0]["end_time"] = "13:00:00"
    for body in (bad_times, no_places, outside):
        response = await http.post(a, json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "validation_failed"
    assert await lc.sql_value("intake", "SELECT count(*) FROM activities") == before
    response = await http.post(
        f"{act}/sessions/{s1['id']}/signups", json={"resident_id": str(uuid.uuid4())}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["code"] == "unknown_resident"
    second = lc.ok(await http.post(a, json=clinic(p1, p2, tomorrow.isoformat())), 201)
    response = await http.post(
        f"{a}/{second['id']}/sessions/{s1['id']}/signups", json={"resident_id": plain[0]}
    )
    assert response.status_code == 404  # a session of another activity (ADR 0047)
    assert response.json()["error"] == "not_found"
    response = await http.put(
        f"{act}/sessions/{s1['id']}",
        json={"start_time": "08:00:00", "end_time": "09:00:00", "places": 1},
    )
    assert response.status_code == 409  # two hold a place

    # --- registration closes by itself at its time; a started activity is held -----------
    soon = clinic(p1, p2, tomorrow.isoformat()) | {
        "registration_closes_at": (datetime.now(ZONE) + timedelta(seconds=3)).isoformat()
    }
    third = lc.ok(await http.post(a, json=soon), 201)
    lc.ok(await http.post(f"{a}/{third['id']}/publish"))
    session = third["stalls"][0]["sessions"][0]["id"]
    early = lc.ok(
        await http.post(
            f"{a}/{third['id']}/sessions/{session}/signups", json={"resident_id": firsts[0]}
        ),
        201,
    )
    assert early["status"] == "requested"
    await lc.wait_events("signup.confirmed", signup_id=early["id"], timeout=30)
    assert lc.ok(await http.get(f"{a}/{third['id']}"))["allocated"]
    response = await http.post(f"{a}/{third['id']}/held")
    assert response.status_code == 409  # it has not started
    yesterday = clinic(p1, p2, (tomorrow - timedelta(days=2)).isoformat())
    past = lc.ok(await http.post(a, json=yesterday), 201)
    lc.ok(await http.post(f"{a}/{past['id']}/publish"))
    held = lc.ok(await http.post(f"{a}/{past['id']}/held"))
    assert held["status"] == "held"
    await lc.wait_events("activity.held", activity_id=past["id"])

    # --- cancelling the activity ends every standing sign-up -----------------------------
    lc.ok(await http.post(f"{act}/cancel"))
    (ended,) = await lc.wait_events("activity.cancelled", activity_id=activity["id"])
    assert ended.data["signups_cancelled"] == 2 + 2 + 12
    lc.check_alive()
