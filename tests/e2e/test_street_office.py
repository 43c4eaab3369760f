"""A street office's credential (`street_office`, ADR 0040) on real servers.

The five services run as processes (Lifecycle). The home community is seeded through
the APIs with personal data carrying canaries: a resident (name, phone, address), a
volunteer (name), a partner's contact (name, phone), a need's notes, a repair's
description, a cancellation's reason, a meal handed to a neighbour (the report's note),
an escalation resolved with a note, a recipient's phone. A street-office credential over
the home community only is registered in every service. Then:

* `test_street_office_reads_aggregates_and_nothing_personal`: each route of the table in
  ADR 0040 by name: the allowed reads answer 200 without the canaries (while the
  community's operator reads the same routes with them, so the probe can fail); the
  personal-data routes and every kind of write answer 403 in the one error shape and
  change nothing; the other community answers 404.
* `test_every_operation_with_a_street_office_credential[service]` walks every operation
  of the service's OpenAPI document with the street-office credential (`walk`): every
  operation declares 403; the operations answering 2xx are exactly the table's reads
  (`ALLOWED`), and no 2xx body holds a canary; every other operation, write or read,
  answers 403; what the operator reads afterwards is unchanged.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from harness.communities import register_everywhere
from harness.intake import meal_need, repair_need
from harness.lifecycle import Lifecycle, now_iso, window

from linli.contracts.types import Role

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SERVICES = ("intake", "partners", "scheduling", "notifications")

ALLOWED: dict[str, set[tuple[str, str]]] = {
    "intake": {
        ("GET", "/v1/communities/{community}/needs"),
        ("GET", "/v1/communities/{community}/needs/{need_id}"),
        ("GET", "/v1/communities/{community}/activities"),
        ("GET", "/v1/communities/{community}/activities/{activity_id}"),
        ("GET", "/v1/catalogue"),  # the kinds of need: no personal data (ADR 0045)
        # The Open311 facade (ADR 0050): services, and requests without their contents.
        ("GET", "/open311/v2/services.{response_format}"),
        ("GET", "/open311/v2/services/{service_code}.{response_format}"),
        ("GET", "/open311/v2/requests.{response_format}"),
        ("GET", "/open311/v2/requests/{service_request_id}.{response_format}"),
    },
    "scheduling": {
        ("GET", "/v1/communities/{community}/schedule/needs"),
        ("GET", "/v1/communities/{community}/schedule/needs/{need_id}"),
        ("GET", "/v1/communities/{community}/slots"),
        ("GET", "/v1/communities/{community}/escalations"),
        ("GET", "/v1/communities/{community}/escalations/{escalation_id}"),
    },
    "partners": {
        ("GET", "/v1/communities/{community}/partners"),
        ("GET", "/v1/communities/{community}/partners/{partner_id}"),
        ("GET", "/v1/communities/{community}/slots"),
        ("GET", "/v1/communities/{community}/slots/{slot_id}"),
        # The HSDS directory: organisations' public data only (ADR 0051).
        ("GET", "/v1/communities/{community}/hsds"),
        ("GET", "/v1/communities/{community}/hsds/services"),
        ("GET", "/v1/communities/{community}/hsds/services/{service_id}"),
        ("GET", "/v1/communities/{community}/hsds/organizations"),
        ("GET", "/v1/communities/{community}/hsds/organizations/{organization_id}"),
        ("GET", "/v1/communities/{community}/hsds/service_at_locations"),
        ("GET", "/v1/communities/{community}/hsds/package"),
    },
    "notifications": {
        ("GET", "/v1/communities/{community}/events"),
    },
}
"""The operations a street office reads (ADR 0040's table); every other one is 403."""

BODY_PREFIX = 64 * 1024


class World:
    """The seeded home community: canaries, ids by parameter name, tokens."""

    def __init__(self, lc: Lifecycle) -> None:
        self.lc = lc
        self.canary = f"ZZSTREET-{uuid.uuid4().hex[:8]}"
        self.phone = "13900" + str(uuid.uuid4().int)[:6]
        self.ids: dict[str, str] = {"community": lc.home}
        self.street = ""

    @property
    def canaries(self) -> tuple[str, str]:
        return self.canary, self.phone

    def leaked(self, text: str) -> list[str]:
        return [c for c in self.canaries if c in text]


async def seed(lc: Lifecycle) -> World:
    w = World(lc)
    c = w.canary
    resident = await lc.create_resident(name=c, phone=w.phone, address=f"{c} 致远小区 3号楼")
    w.ids["resident_id"] = resident
    volunteer = await lc.create_volunteer(f"{c} volunteer", ["meal_delivery"])
    w.ids["volunteer_id"] = volunteer
    partner = await lc.create_partner(
        "幸福食堂",
        "canteen",
        ["meal_delivery"],
        contacts=[{"name": f"{c} manager", "phone": w.phone}],
    )
    w.ids["partner_id"] = partner
    # The HSDS directory (ADR 0051) names the partner as an organisation and its services.
    w.ids["organization_id"] = partner
    services = lc.ok(await lc.http.get(lc.c("partners", "/hsds/services")))
    w.ids["service_id"] = services["contents"][0]["id"]
    volunteer_token = await lc.party_token("volunteer", volunteer)
    slot = await lc.publish_slot(
        "meal_delivery", provider=("volunteer", volunteer), window=window(20, 150), capacity=2
    )
    w.ids["slot_id"] = str(slot["id"])

    # A meal handed to a neighbour: the report's note is personal data in partners.
    meal = (await lc.submit_need(meal_need(resident, hours_ahead=1, notes=f"{c} note")))["id"]
    offer = await lc.wait_offer(volunteer_token, meal)
    w.ids["assignment_id"] = offer["assignment_id"]
    lc.ok(await lc.answer(volunteer_token, offer["assignment_id"], "accept"))
    report = {
        "outcome": "meal_delivered",
        "delivered_at": now_iso(),
        "handed_to": "neighbour",
        "neighbour_note": f"{c} next door",
    }
    lc.ok(await lc.report(volunteer_token, offer["assignment_id"], report), 201)
    await lc.wait_events("need.fulfilled", need_id=meal)

    # A repair nobody can serve: its description and notes stay in intake; it escalates
    # and is resolved with a note that stays in scheduling.
    repair = await lc.submit_need(
        repair_need(
            resident,
            notes=f"{c} notes",
            details={"category": "plumbing", "description": f"{c} leak", "hazard": "none"},
        )
    )
    w.ids["need_id"] = repair["id"]
    w.ids["service_request_id"] = repair["id"]  # the Open311 facade's name for it
    w.ids["service_code"] = "repair"
    await lc.wait_events("need.escalated", need_id=repair["id"])
    await lc.wait_status(repair["id"], "escalated")
    page = lc.ok(await lc.http.get(lc.c("scheduling", "/escalations")))
    (escalation,) = [e for e in page["items"] if e["need_id"] == repair["id"]]
    w.ids["escalation_id"] = escalation["id"]
    resolve = lc.c("scheduling", f"/escalations/{escalation['id']}/resolve")
    lc.ok(await lc.http.post(resolve, json={"outcome": "resident_well", "note": f"{c} well"}))
    # The operator reads the description (a personal-data read is recorded).
    lc.ok(await lc.http.get(lc.c("intake", f"/needs/{repair['id']}/description")))

    # A cancelled need: its reason is free text on intake's timeline.
    cancelled = (await lc.submit_need(meal_need(resident, hours_ahead=3)))["id"]
    cancel = lc.c("intake", f"/needs/{cancelled}/cancel")
    lc.ok(await lc.http.post(cancel, json={"reason": f"{c} in hospital"}))
    w.ids["cancelled_id"] = cancelled

    plan = lc.ok(
        await lc.http.post(
            lc.c("intake", "/plans"),
            json={
                "resident_id": resident,
                "kind": "meal_delivery",
                "details": {"diet_needs": ["soft food"], "portions": 1},
                "notes": f"{c} plan",
                "schedule": {
                    "weekdays": [1],
                    "start_time": "11:00:00",
                    "end_time": "12:00:00",
                    "starts_on": "2099-01-05",
                },
            },
        ),
        201,
    )
    w.ids["plan_id"] = str(plan["id"])
    recipient = lc.ok(
        await lc.http.post(
            lc.c("notifications", "/recipients"),
            json={
                "role": "volunteer",
                "volunteer_id": volunteer,
                "channel": "sms",
                "address": w.phone,
                "events": ["visit.completed"],
            },
        ),
        201,
    )
    w.ids["recipient_id"] = str(recipient["id"])
    # A free clinic (ADR 0046) with the resident signed up: its counts are a street
    # office's to read, its sign-ups are not.
    activity = lc.ok(
        await lc.http.post(
            lc.c("intake", "/activities"),
            json={
                "title": "义诊",
                "venue": "社区广场",
                "date": "2099-01-05",
                "start_time": "08:00:00",
                "end_time": "10:00:00",
                "stalls": [
                    {
                        "partner_id": partner,
                        "offering": "测血压",
                        "sessions": [
                            {"start_time": "08:00:00", "end_time": "09:00:00", "places": 5}
                        ],
                    }
                ],
            },
        ),
        201,
    )
    w.ids["activity_id"] = str(activity["id"])
    w.ids["session_id"] = str(activity["stalls"][0]["sessions"][0]["id"])
    w.ids["stall_id"] = str(activity["stalls"][0]["id"])
    lc.ok(await lc.http.post(lc.c("intake", f"/activities/{activity['id']}/publish")))
    signup = lc.ok(
        await lc.http.post(
            lc.c("intake", f"/activities/{activity['id']}/sessions/{w.ids['session_id']}/signups"),
            json={"resident_id": resident},
        ),
        201,
    )
    w.ids["signup_id"] = str(signup["id"])
    tokens = await register_everywhere(lc, Role.STREET_OFFICE, lc.home)
    w.street = tokens["intake"]
    return w


async def test_street_office_reads_aggregates_and_nothing_personal(lifecycle: Any) -> None:
    lc: Lifecycle = await lifecycle(notifications=True)
    w = await seed(lc)
    street = lc.bearer(w.street)
    need, esc = w.ids["need_id"], w.ids["escalation_id"]

    async def read(service: str, path: str, headers: dict[str, str] | None = None) -> Any:
        response = await lc.http.get(lc.c(service, path), headers=headers or {})
        assert response.status_code == 200, (service, path, response.text[:300])
        return response

    # --- allowed reads: 200, the course without the contents ---------------------------
    # Each pair: the operator's answer holds a canary (the probe works), the street
    # office's answer to the same request holds none.
    pairs = [
        ("intake", "/needs?limit=200"),
        ("intake", f"/needs/{need}"),
        ("intake", f"/needs/{w.ids['cancelled_id']}"),
        ("scheduling", "/escalations"),
        ("scheduling", f"/escalations/{esc}"),
        ("partners", "/partners"),
        ("partners", f"/partners/{w.ids['partner_id']}"),
    ]
    for service, path in pairs:
        operator = await read(service, path)
        assert w.leaked(operator.text), (service, path, "the operator's answer has no canary")
        answer = await read(service, path, street)
        assert not w.leaked(answer.text), (service, path, answer.text[:500])
    view = (await read("intake", f"/needs/{need}", street)).json()
    assert view["status"] == "escalated"
    assert view["resident_id"] is None
    assert view["details"] == {}
    assert view["notes"] is None
    assert view["timeline"]
    assert all(e["note"] is None for e in view["timeline"])
    cancelled = (await read("intake", f"/needs/{w.ids['cancelled_id']}", street)).json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancel_reason"] is None
    escalation = (await read("scheduling", f"/escalations/{esc}", street)).json()
    assert escalation["state"] == "resolved"
    assert escalation["outcome"] == "resident_well"
    assert escalation["note"] is None
    assert [a["note_recorded"] for a in escalation["actions"] if a["action"] == "resolved"] == [
        True
    ]
    partner = (await read("partners", f"/partners/{w.ids['partner_id']}", street)).json()
    assert partner["name"] == "幸福食堂"
    assert partner["contacts"] is None
    for service, path in [
        ("scheduling", "/schedule/needs"),
        ("scheduling", f"/schedule/needs/{need}"),
        ("scheduling", "/slots"),
        ("partners", "/slots"),
        ("partners", f"/slots/{w.ids['slot_id']}"),
    ]:
        answer = await read(service, path, street)
        assert not w.leaked(answer.text), (service, path)
    scheduled = (await read("scheduling", "/schedule/needs", street)).json()
    assert need in {n["id"] for n in scheduled["items"]}
    async with lc.http.stream(
        "GET", lc.c("notifications", "/events"), headers=street, timeout=30
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")

    # --- personal data: 403 in the one error shape -------------------------------------
    refused_reads = [
        ("intake", "/residents"),
        ("intake", f"/residents/{w.ids['resident_id']}"),
        ("intake", f"/needs/{need}/description"),
        ("intake", "/plans"),
        ("intake", f"/plans/{w.ids['plan_id']}"),
        ("intake", "/personal-data-reads"),
        ("partners", "/volunteers"),
        ("partners", f"/volunteers/{w.ids['volunteer_id']}"),
        ("partners", f"/volunteers/{w.ids['volunteer_id']}/points"),
        ("partners", f"/needs/{need}/reports"),
        ("partners", "/personal-data-reads"),
        ("notifications", "/recipients"),
        ("notifications", "/subscriptions"),
    ]
    for service, path in refused_reads:
        response = await lc.http.get(lc.c(service, path), headers=street)
        assert response.status_code == 403, (service, path, response.status_code)
        assert response.json()["error"] == "forbidden"
        assert not w.leaked(response.text)
    for service, path in [("partners", "/v1/me"), ("notifications", "/v1/subscriptions")]:
        assert (await lc.http.get(lc.url(service, path), headers=street)).status_code == 403

    # --- writes: 403 before the route runs, nothing changes ----------------------------
    reads_before = await state(lc, w)
    writes = [
        ("intake", "/needs", meal_need(w.ids["resident_id"])),
        ("intake", f"/needs/{need}/cancel", {"reason": "x"}),
        ("intake", "/residents", {"name": "x"}),
        ("scheduling", f"/escalations/{esc}/acknowledge", None),
        ("scheduling", f"/escalations/{esc}/assign", {"assignee": "王芳"}),
        ("scheduling", f"/needs/{need}/reoffer", {}),
        ("partners", "/slots", {"kind": "meal_delivery", "window": window(20, 60)}),
        ("partners", "/partners", {"name": "x", "kind": "canteen", "services": []}),
        ("notifications", "/recipients", {"role": "volunteer"}),
    ]
    for service, path, body in writes:
        response = await lc.http.post(lc.c(service, path), json=body, headers=street)
        assert response.status_code == 403, (service, path, response.status_code)
        assert response.json() == {
            "error": "forbidden",
            "detail": "a street_office credential may only read",
        }
    response = await lc.http.delete(
        lc.c("notifications", f"/recipients/{w.ids['recipient_id']}"), headers=street
    )
    assert response.status_code == 403
    response = await lc.http.patch(
        lc.c("partners", f"/volunteers/{w.ids['volunteer_id']}"), json={}, headers=street
    )
    assert response.status_code == 403
    assert await state(lc, w) == reads_before

    # --- another community: 404, as if it did not exist --------------------------------
    for service, path in [
        ("intake", "/needs"),
        ("scheduling", "/schedule/needs"),
        ("scheduling", "/escalations"),
        ("partners", "/partners"),
        ("partners", "/slots"),
        ("notifications", "/events"),
    ]:
        response = await lc.http.get(lc.c(service, path, lc.other), headers=street)
        assert response.status_code == 404, (service, path, response.status_code)

    lc.check_alive()


@pytest.mark.parametrize("service", SERVICES)
async def test_every_operation_with_a_street_office_credential(
    lifecycle: Any, service: str
) -> None:
    lc: Lifecycle = await lifecycle(notifications=True)
    w = await seed(lc)
    before = await state(lc, w)
    await walk(lc, w, service)
    assert await state(lc, w) == before
    lc.check_alive()


async def state(lc: Lifecycle, w: World) -> dict[str, Any]:
    """What the refused writes would change, read by the community's operator: ids,
    statuses and the escalation's fields (not timelines or times, which events still in
    flight after the seeding may extend)."""
    need, esc = w.ids["need_id"], w.ids["escalation_id"]

    async def get(service: str, path: str) -> Any:
        return lc.ok(await lc.http.get(lc.c(service, path)))

    escalation = await get("scheduling", f"/escalations/{esc}")
    volunteers = await get("partners", "/volunteers?limit=200")
    return {
        "needs": sorted(
            (n["id"], n["status"]) for n in (await get("intake", "/needs?limit=200"))["items"]
        ),
        "residents": sorted(
            r["id"] for r in (await get("intake", "/residents?limit=200"))["items"]
        ),
        "escalation": [escalation[k] for k in ("state", "outcome", "assignee", "note")],
        "scheduled": (await get("scheduling", f"/schedule/needs/{need}"))["state"],
        "slots": sorted(x["id"] for x in (await get("partners", "/slots?limit=200"))["items"]),
        "partners": sorted(
            p["id"] for p in (await get("partners", "/partners?limit=200"))["items"]
        ),
        "volunteers": sorted(
            (v["id"], v["display_name"], v["active"], str(v["skills"])) for v in volunteers["items"]
        ),
        "recipients": sorted(str(r["id"]) for r in await get("notifications", "/recipients")),
    }


def _value(w: World, name: str, schema: dict[str, Any]) -> str:
    if name in w.ids:
        return w.ids[name]
    if name == "party_kind":
        return "volunteer"
    if name == "party_id":
        return w.ids["volunteer_id"]
    if name.endswith("_id") or schema.get("format") == "uuid":
        return str(uuid.uuid4())
    if "enum" in schema:
        return str(schema["enum"][0])
    return "x"


async def walk(lc: Lifecycle, w: World, service: str) -> None:
    """Every operation of the service's OpenAPI with the street-office credential: 403
    declared everywhere; 2xx exactly on `ALLOWED[service]`, without a canary; 403 on
    every other operation (writes are refused before their body is read)."""
    doc = lc.ok(await lc.http.get(lc.url(service, "/openapi.json")))
    street = lc.bearer(w.street)
    two_xx: set[tuple[str, str]] = set()
    walked = 0
    for template, operations in doc["paths"].items():
        if not template.startswith(("/v1/", "/open311/")):
            continue
        for method, operation in operations.items():
            method = method.upper()
            assert "403" in operation["responses"], (service, method, template)
            params = operation.get("parameters", [])
            path = re.sub(
                r"\{(\w+)\}",
                lambda m, params=params: _value(w, m.group(1), _schema(params, m.group(1))),
                template,
            )
            query = {
                p["name"]: _value(w, p["name"], p.get("schema", {}))
                for p in params
                if p["in"] == "query" and p.get("required")
            }
            url = lc.url(service, path)
            body = None if method in ("GET", "HEAD") else {}
            request = lc.http.build_request(method, url, params=query, headers=street, json=body)
            response = await lc.http.send(request, stream=True)
            try:
                walked += 1
                key = (method, template)
                if 200 <= response.status_code < 300:
                    two_xx.add(key)
                    assert method == "GET", (service, key)
                    if response.headers.get("content-type", "").startswith("text/event-stream"):
                        continue  # an open stream: its events carry no personal data
                    body = await _prefix(response)
                    assert not w.leaked(body), (service, key, body[:500])
                else:
                    assert response.status_code == 403, (service, key, response.status_code)
            finally:
                await response.aclose()
    assert walked >= len(ALLOWED[service]) + 3, (service, walked)
    assert two_xx == ALLOWED[service], (service, two_xx ^ ALLOWED[service])


def _schema(params: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for p in params:
        if p["name"] == name:
            return dict(p.get("schema", {}))
    return {}


async def _prefix(response: httpx.Response) -> str:
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= BODY_PREFIX:
            break
    return data.decode("utf-8", "replace")
