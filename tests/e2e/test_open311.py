"""An Open311 GeoReport v2 client against the running services (ADR 0050).

Intake, scheduling and partners run as processes. A city hotline's system (a `system`
credential as the specification's `api_key`) lists the services, reads a definition,
posts a haircut at home form-encoded with attributes, and follows the request: `open`
while it is offered and accepted, `closed` once the barber reports it done (the need's
`need.fulfilled`). Every JSON answer validates against the specification's schemas;
the XML variants carry the same fields.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness.communities import register_everywhere
from harness.lifecycle import Lifecycle, now_iso, window
from harness.open311 import PREFIX, validate, xml_items

from linli.contracts.types import Role

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


async def test_an_open311_client_follows_a_request_to_closed(lifecycle: Any) -> None:
    lc: Lifecycle = await lifecycle()
    system = (await register_everywhere(lc, Role.SYSTEM, lc.home))["intake"]
    hotline = {"Authorization": f"Bearer {system}"}

    def url(path: str) -> str:
        return lc.url("intake", f"{PREFIX}/{path}")

    services = lc.ok(await lc.http.get(url("services.json"), headers=hotline))
    validate(services, "services.json")
    assert "personal_care" in [s["service_code"] for s in services]
    definition = lc.ok(await lc.http.get(url("services/personal_care.json"), headers=hotline))
    validate(definition, "service-definition.json")
    codes = [a["code"] for a in definition["attributes"]]
    assert {"resident_id", "service", "duration_minutes"} <= set(codes)

    barber = await lc.create_volunteer("张师傅 Master Zhang", ["personal_care"])
    barber_token = await lc.party_token("volunteer", barber)
    await lc.publish_slot("personal_care", window=window(20, 200), token=barber_token)
    await lc.wait_slots(1)
    resident = await lc.create_resident()

    start = datetime.now(UTC) + timedelta(hours=1)
    form = {
        "api_key": system,
        "service_code": "personal_care",
        "jurisdiction_id": lc.home,
        "attribute[resident_id]": resident,
        "attribute[service]": "haircut",
        "attribute[duration_minutes]": "30",
        "attribute[window_earliest]": start.isoformat(),
        "attribute[window_latest]": (start + timedelta(hours=2)).isoformat(),
        "description": "ZZOPEN311 ring twice",
    }
    # The api_key form field alone (the client's default operator header blanked).
    answer = await lc.http.post(
        url("requests.json"),
        data=form,
        headers={"Authorization": "", "Idempotency-Key": "hotline-42"},
    )
    (created,) = lc.ok(answer)
    request_id = created["service_request_id"]
    assert "personal care done in window" in created["service_notice"]

    async def status() -> dict[str, Any]:
        got = lc.ok(await lc.http.get(url(f"requests/{request_id}.json"), headers=hotline))
        validate(got, "requests.json")
        assert "ZZOPEN311" not in str(got)
        return dict(got[0])

    first = await status()
    assert first["status"] == "open"
    assert first["expected_datetime"] == (start + timedelta(hours=2)).isoformat()

    offer = await lc.wait_offer(barber_token, request_id)
    lc.ok(await lc.answer(barber_token, offer["assignment_id"], "accept"))
    await lc.wait_status(request_id, "assigned")
    accepted = await status()
    assert accepted["status"] == "open"
    assert accepted["status_notes"] == "A helper has accepted it."

    report = {
        "outcome": "service_completed",
        "started_at": (datetime.now(UTC) - timedelta(minutes=30)).isoformat(),
        "completed_at": now_iso(),
    }
    lc.ok(await lc.report(barber_token, offer["assignment_id"], report), 201)
    await lc.wait_status(request_id, "fulfilled")
    done = await status()
    assert done["status"] == "closed"
    assert done["status_notes"] == "Done: the service was delivered."
    assert done["updated_datetime"] >= done["requested_datetime"]

    listed = lc.ok(
        await lc.http.get(url("requests.json"), params={"status": "closed"}, headers=hotline)
    )
    validate(listed, "requests.json")
    assert [r["service_request_id"] for r in listed] == [request_id]
    xml = await lc.http.get(url(f"requests/{request_id}.xml"), headers=hotline)
    assert xml.headers["content-type"].startswith("text/xml")
    (item,) = xml_items(xml.text, "service_requests", "request")
    assert item["status"] == "closed"
    assert item["service_code"] == "personal_care"

    token = lc.ok(await lc.http.get(url("tokens/hotline-42.json"), headers=hotline))
    assert token == [{"service_request_id": request_id, "token": "hotline-42"}]

    # The need went through the native use case: one need.submitted, one need.fulfilled.
    spine = [e.short for e in await lc.events(need_id=request_id)]
    assert spine.count("need.submitted") == 1
    assert spine.count("need.fulfilled") == 1
    assert "ZZOPEN311" not in str([e.data for e in await lc.events(need_id=request_id)])
    lc.check_alive()
