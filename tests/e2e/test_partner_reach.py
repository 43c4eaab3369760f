"""Partners reached where they are (issue #12 item 1, ADR 0043), on real servers.

A repair firm registers its own delivery preferences in notifications with its own
credential: a webhook receiver (a local server in the test; the test's notifications
accepts 127.0.0.1 receivers), an SMS duty contact and quiet hours around now.

* `test_partner_gets_a_signed_offer_and_accepts_through_the_link`: a routine repair is
  submitted; the receiver gets the Standard-Webhooks-signed `assignment.offered` with its
  signed links; the test follows the accept link; `partner.accepted` is emitted and the
  need is assigned. The link's second use, the offer's decline link, a forged, an expired
  and a wrong-action token are refused. The routine SMS waits for the end of the quiet
  hours; an emergency's SMS goes at once, with the links and without the resident's
  personal data. The reminder before the window arrives once.
* `test_delivery_preferences_bad_input_and_scope`: 422 with field reasons, 401, 403 for
  a street office, 404 for another community and another partner; nothing changes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from harness.communities import register_everywhere
from harness.intake import repair_need
from harness.lifecycle import Lifecycle, new_token, window
from harness.notifications import receiver
from standardwebhooks import Webhook

from linli.contracts.types import Role
from linli.servicekit.auth import issue_credential
from linli.servicekit.offerlinks import LinkAction, OfferLinks

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REMINDER_LEAD_S = 100
"""The reminder of a window starting in 2 minutes is due about 20 s after the need."""


async def partner_credential(lc: Lifecycle, partner_id: str) -> str:
    """One token of the partner, registered in partners and notifications."""
    token = new_token()
    for service in ("partners", "notifications"):
        conn = await lc._connect(service)
        try:
            await issue_credential(
                conn,
                role=Role.PARTNER,
                communities=[lc.home],
                label=f"partner {partner_id}",
                subject_id=uuid.UUID(partner_id),
                token=token,
            )
        finally:
            await conn.close()
    return token


def quiet_around_now() -> dict[str, str]:
    """Quiet hours (Asia/Shanghai) from an hour ago to two hours ahead."""
    local = datetime.now(ZoneInfo("Asia/Shanghai"))
    start = (local - timedelta(hours=1)).time().replace(second=0, microsecond=0)
    end = (local + timedelta(hours=2)).time().replace(second=0, microsecond=0)
    return {"start": start.isoformat(), "end": end.isoformat()}


def sms_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def start(lifecycle: Any, tmp_path: Path) -> tuple[Lifecycle, Path]:
    sms = tmp_path / "sms.jsonl"
    lc: Lifecycle = await lifecycle(
        notifications=True,
        notifications_env={"LINLI_SMS_PROVIDER": "file", "LINLI_SMS_FILE": str(sms)},
        scheduling_env={"LINLI_REMINDER_LEAD_S": str(REMINDER_LEAD_S)},
    )
    return lc, sms


async def test_partner_gets_a_signed_offer_and_accepts_through_the_link(
    lifecycle: Any, tmp_path: Path
) -> None:
    lc, sms = await start(lifecycle, tmp_path)
    canary = f"ZZREACH-{uuid.uuid4().hex[:8]}"
    phone = "13900" + str(uuid.uuid4().int)[:6]
    resident = await lc.create_resident(
        name=canary, phone="13800" + str(uuid.uuid4().int)[:6], address=f"{canary} 3号楼"
    )
    partner = await lc.create_partner("平安维修", "repair_firm", ["repair"])
    token = await partner_credential(lc, partner)
    delivery = lc.c("notifications", f"/partners/{partner}/delivery")

    async with receiver() as hook:
        # --- the partner registers where it is reached -----------------------------------
        body = {
            "webhook": {"url": hook.url},
            "contacts": [{"channel": "sms", "address": phone}],
            "quiet_hours": quiet_around_now(),
            "timezone": "Asia/Shanghai",
        }
        put = lc.ok(await lc.http.put(delivery, json=body, headers=lc.bearer(token)))
        assert put["webhook"]["secret"].startswith("whsec_")
        assert put["contacts"][0]["address"] != phone  # masked
        hook.secret = put["webhook"]["secret"]
        got = lc.ok(await lc.http.get(delivery, headers=lc.bearer(token)))
        assert got["webhook"]["secret"] is None
        assert got["webhook"]["state"] == "active"
        assert got["quiet_hours"] == put["quiet_hours"]
        # The same URL again keeps the endpoint and its secret.
        again = lc.ok(await lc.http.put(delivery, json=body, headers=lc.bearer(token)))
        assert again["webhook"]["secret"] is None

        # --- a routine repair: offered to the partner, pushed to its webhook -------------
        lc.ok(
            await lc.http.post(
                lc.c("partners", "/slots"),
                json={
                    "kind": "repair",
                    "window": window(0, 24 * 60),
                    "capacity": 3,
                    "provider": {"kind": "partner", "id": partner},
                },
            ),
            201,
        )
        need = await lc.submit_need(repair_need(resident, urgency="routine", window=window(2, 120)))

        async def offer_pushed() -> Any:
            for r in hook.received:
                if r.event and r.event.get("type") == "linli.assignment.offered.v1":
                    return r
            return None

        pushed = await lc.wait_for(offer_pushed, 30, what="the offer at the webhook")
        assert pushed.verified, "Standard Webhooks signature"
        Webhook(hook.secret).verify(pushed.body, pushed.headers)
        offer = pushed.event
        assert offer["data"]["need_id"] == need["id"]
        assert offer["data"]["offered_to"] == {"kind": "partner", "id": partner}
        accept_url = offer["offeraccepturl"]
        decline_url = offer["offerdeclineurl"]
        view_url = offer["offerviewurl"]
        assert canary not in pushed.body.decode()
        assert "Bearer" not in pushed.body.decode()
        assert token not in pushed.body.decode()

        # --- the routine SMS waits for the end of the quiet hours ------------------------
        async def held() -> Any:
            rows = await lc.sql(
                "notifications",
                "SELECT status, next_attempt_at, body FROM people_messages "
                "WHERE template = 'partner_offer'",
            )
            return rows or None

        (message,) = await lc.wait_for(held, 15, what="the partner's offer SMS recorded")
        assert message["status"] == "pending"
        assert message["next_attempt_at"] > datetime.now(UTC) + timedelta(minutes=30)
        assert "/public/v1/offers/" in message["body"]
        assert canary not in message["body"]

        # --- following the link accepts, as the partner's API would ----------------------
        async with httpx.AsyncClient(timeout=10) as public:
            view = await public.get(view_url)
            assert view.status_code in (200, 503)

            async def accepted() -> Any:
                response = await public.post(accept_url)
                return None if response.status_code == 503 else response

            response = await lc.wait_for(accepted, 15, what="partners to know the offer")
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "accepted"
            assert response.json()["answered_by_link"] == "accept"
            await lc.wait_events("partner.accepted", need_id=need["id"])
            await lc.wait_status(need["id"], "assigned")

            # One use: the link again, and the offer's other link, are refused.
            again = await public.post(accept_url)
            assert again.status_code == 410, again.text
            assert (await public.post(decline_url)).status_code == 410
            shown = lc.ok(await public.get(view_url))
            assert set(shown) == {
                "action",
                "kind",
                "urgency",
                "window",
                "compound",
                "expires_at",
                "status",
                "answered_by_link",
            }
            assert shown["kind"] == "repair"
            assert shown["status"] == "accepted"
            assert canary not in view.text + json.dumps(shown)
            page = await public.get(view_url, headers={"accept": "text/html"})
            assert page.status_code == 200
            assert "<form" not in page.text

            # Forged, expired and wrong-action tokens: the same 404.
            base = view_url.rsplit("/", 1)[0]
            assignment = uuid.UUID(offer["data"]["assignment_id"])
            forged = OfferLinks("f" * 40).sign(assignment, LinkAction.ACCEPT, _later())
            expired = OfferLinks(lc.offer_link_key).sign(
                assignment, LinkAction.ACCEPT, datetime.now(UTC) - timedelta(seconds=5)
            )
            decline_token = decline_url.rsplit("/", 2)[-2]
            refused = [
                await public.post(f"{base}/{forged}/accept"),
                await public.post(f"{base}/{expired}/accept"),
                await public.post(f"{base}/{decline_token}/accept"),
                await public.get(f"{base}/{forged}"),
                await public.get(f"{base}/not-a-token"),
            ]
            assert [r.status_code for r in refused] == [404] * len(refused)
            assert len({r.text for r in refused}) == 1
        assert (
            await lc.sql_value(
                "partners", "SELECT count(*) FROM offer_link_uses WHERE action = 'accept'"
            )
            == 1
        )

        # --- the reminder before the window, once ----------------------------------------
        async def reminded() -> Any:
            return [
                r
                for r in hook.received
                if r.event and r.event.get("type") == "linli.assignment.reminder_due.v1"
            ] or None

        (reminder,) = await lc.wait_for(reminded, 60, what="the reminder at the webhook")
        assert reminder.verified
        assert reminder.event["data"]["assigned_to"] == {"kind": "partner", "id": partner}
        await asyncio.sleep(1.5)  # a second one would have followed by now (it may not)
        assert len(await reminded()) == 1
        fired = await lc.sql(
            "scheduling",
            "SELECT outcome FROM timers WHERE kind = 'reminder' AND need_id = $1",
            uuid.UUID(need["id"]),
        )
        assert [r["outcome"] for r in fired] == ["fired"]
        reminders = await lc.sql(
            "notifications", "SELECT status FROM people_messages WHERE template = 'reminder'"
        )
        assert [r["status"] for r in reminders] == ["pending"]  # quiet hours hold it too
        assert sms_lines(sms) == []

        # --- an emergency ignores the quiet hours ----------------------------------------
        urgent = await lc.submit_need(repair_need(resident))  # urgency emergency

        async def urgent_sms() -> Any:
            return [line for line in sms_lines(sms) if line["to"] == phone] or None

        (line,) = await lc.wait_for(urgent_sms, 30, what="the emergency SMS")
        assert "/public/v1/offers/" in line["text"]
        assert canary not in json.dumps(line, ensure_ascii=False)
        urgent_offer = [
            r.event
            for r in hook.received
            if r.event
            and r.event.get("type") == "linli.assignment.offered.v1"
            and r.event["data"]["need_id"] == urgent["id"]
        ]
        assert urgent_offer
        assert urgent_offer[0]["data"]["urgency"] == "emergency"
    lc.check_alive()


def _later() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=30)


async def test_delivery_preferences_bad_input_and_scope(lifecycle: Any, tmp_path: Path) -> None:
    lc, _sms = await start(lifecycle, tmp_path)
    partner = await lc.create_partner("平安维修", "repair_firm", ["repair"])
    other_partner = await lc.create_partner("安心维修", "repair_firm", ["repair"])
    token = await partner_credential(lc, partner)
    delivery = lc.c("notifications", f"/partners/{partner}/delivery")
    mine = lc.bearer(token)
    good = {"contacts": [{"channel": "email", "address": "duty@example.com"}]}
    lc.ok(await lc.http.put(delivery, json=good, headers=mine))

    bad_bodies = [
        ({"contacts": [{"channel": "sms", "address": "call me"}]}, "body.contacts.0"),
        ({"contacts": [{"channel": "fax", "address": "123456"}]}, "body.contacts.0.channel"),
        ({"webhook": {"url": "ftp://example.com/hook"}}, "body.webhook.url"),
        ({"webhook": {"url": "https://example.com/h", "secret": "nope"}}, "body.webhook.secret"),
        ({"timezone": "Mars/Olympus"}, "body.timezone"),
        ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "body.quiet_hours.start"),
        ({"unknown": 1}, "body.unknown"),
        ({"contacts": [good["contacts"][0]] * 11}, "body.contacts"),
    ]
    for body, field in bad_bodies:
        response = await lc.http.put(delivery, json=body, headers=mine)
        assert response.status_code == 422, (body, response.text)
        fields = [d["field"] for d in response.json()["detail"]]
        assert any(f.startswith(field) for f in fields), (field, fields)
    bad_id = lc.c("notifications", "/partners/not-a-uuid/delivery")
    assert (await lc.http.get(bad_id, headers=mine)).status_code == 422

    # Unauthenticated, a street office, another partner, another community.
    assert (await lc.http.get(delivery, headers={"Authorization": ""})).status_code == 401
    street = (await register_everywhere(lc, Role.STREET_OFFICE, lc.home))["notifications"]
    response = await lc.http.get(delivery, headers=lc.bearer(street))
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert (await lc.http.put(delivery, json=good, headers=lc.bearer(street))).status_code == 403
    theirs = lc.c("notifications", f"/partners/{other_partner}/delivery")
    for method in ("GET", "PUT", "DELETE"):
        response = await lc.http.request(method, theirs, json=good, headers=mine)
        assert response.status_code == 404, (method, response.text)
    elsewhere = lc.c("notifications", f"/partners/{partner}/delivery", lc.other)
    assert (await lc.http.get(elsewhere)).status_code == 404
    assert (await lc.http.put(elsewhere, json=good)).status_code == 404

    # Nothing changed: the one e-mail contact, which the operator reads too (masked).
    seen = lc.ok(await lc.http.get(delivery))
    assert [c["address"] for c in seen["contacts"]] == ["d***@example.com"]
    assert seen["webhook"] is None
    assert (
        await lc.sql_value(
            "notifications", "SELECT count(*) FROM people_recipients WHERE role = 'partner'"
        )
        == 1
    )
    # The partner's contacts are not a community recipient an app or street office lists,
    # and DELETE removes them.
    assert (await lc.http.delete(delivery, headers=mine)).status_code == 204
    assert lc.ok(await lc.http.get(delivery, headers=mine))["contacts"] == []
    lc.check_alive()
