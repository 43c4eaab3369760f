"""Free text stays with the service that received it (issue #10, defect 5; ADR 0031).

A repair's description, a visit's observations, a repair's summary and a failed
delivery's detail may name people or describe their health. Before ADR 0031 they rode
in `need.submitted`, `assignment.offered`, `visit.completed`, `repair.completed` and
`delivery.failed`, so every webhook, SSE client and NATS app user of the community got
them, and notifications kept them in `deliveries.payload`.

The whole lifecycle runs as processes with notifications, a webhook receiver and an SSE
client. Each text is a canary of its own (`ZZCANARY-<uuid>`). After the flow settled
(every event of the community reached the webhook receiver and the SSE stream), each
canary is absent from every message on the events stream (raw bytes and headers), every
webhook body, every SSE frame, notifications' `deliveries.payload` and every service's
log; it is present in
the owning service's table and readable through its audited route by an operator of the
community, which records the read in `personal_data_reads`. An operator of another
community gets 404, and so does a helper who is not the assignee.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import httpx
import pytest
from harness.intake import meal_need, repair_need
from harness.lifecycle import Lifecycle, now_iso, window
from harness.notifications import receiver

from linli.contracts.types import Role
from linli.servicekit.auth import issue_credential

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def canary() -> str:
    return f"ZZCANARY-{uuid.uuid4()}"


def visit_need(resident_id: str) -> dict[str, Any]:
    return {
        "kind": "elder_care_visit",
        "resident_id": resident_id,
        "window": window(10, 120),
        "details": {"purpose": "health_check", "duration_minutes": 45},
    }


async def operator_of(lc: Lifecycle, community: str, *services: str) -> str:
    """An operator token of `community` registered in each of `services`."""
    token = None
    for service in services:
        conn = await lc._connect(service)
        try:
            _, token = await issue_credential(
                conn,
                role=Role.OPERATOR,
                communities=[community],
                label=f"operator of {community}",
                token=token,
            )
        finally:
            await conn.close()
    assert token is not None
    return token


async def stream_bytes(lc: Lifecycle) -> list[bytes]:
    """Every message on the events stream: subject, headers and data, as raw bytes."""
    js = lc.nats.jetstream()
    info = await js.stream_info(lc.events_stream)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(lc.events_stream, seq)
        headers = b"".join(f"{k}: {v}\n".encode() for k, v in (msg.headers or {}).items())
        found.append(msg.subject.encode() + b"\n" + headers + (msg.data or b""))
    return found


async def test_free_text_never_reaches_apps_and_is_read_only_through_an_audited_route(
    lifecycle: Any,
) -> None:
    description, observations, summary, detail = canary(), canary(), canary(), canary()
    texts = {
        "description": description,
        "observations": observations,
        "summary": summary,
        "detail": detail,
    }
    async with receiver() as app:
        lc: Lifecycle = await lifecycle(notifications=True)
        app.secret = (await lc.subscribe_webhook(app.url))["secret"]

        sse_lines: list[str] = []
        sse = httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=120.0))

        async def read_stream() -> None:
            port = lc.services["notifications"].port
            url = f"http://127.0.0.1:{port}/v1/communities/{lc.home}/events"
            async with sse.stream("GET", url, headers=lc.bearer(lc.app_token)) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    sse_lines.append(line)

        reader = asyncio.create_task(read_stream())
        await lc.wait_for(lambda: ": connected" in sse_lines, what="the SSE stream open")

        helper = await lc.create_volunteer(
            "老王 Lao Wang", ["repair", "elder_care_visit", "meal_delivery"]
        )
        bystander = await lc.create_volunteer("小刘 Xiao Liu", ["meal_delivery"])
        token = await lc.party_token("volunteer", helper)
        bystander_token = await lc.party_token("volunteer", bystander)
        for kind in ("repair", "elder_care_visit", "meal_delivery"):
            await lc.publish_slot(kind, window=window(-10, 600), token=token)
        await lc.wait_slots(3)
        resident = await lc.create_resident()

        repair = await lc.submit_need(
            repair_need(
                resident,
                urgency="routine",
                window=window(0, 360),
                details={"category": "plumbing", "description": description, "hazard": "none"},
            )
        )
        visit = await lc.submit_need(visit_need(resident))
        meal = await lc.submit_need(meal_need(resident, hours_ahead=1))
        assert description not in str(repair)

        # The repair: the offer shows no description until the helper accepted it.
        offer = await lc.wait_offer(token, repair["id"])
        assert description not in str(offer)
        lc.ok(await lc.answer(token, offer["assignment_id"], "accept"))
        await lc.wait_status(repair["id"], "assigned")
        mine = lc.ok(await lc.offer(token, offer["assignment_id"]))
        # Another helper does not see the offer, let alone its text.
        assert (await lc.offer(bystander_token, offer["assignment_id"])).status_code == 404
        body = {
            "outcome": "repair_completed",
            "arrived_at": now_iso(),
            "completed_at": now_iso(),
            "fixed": True,
            "summary": summary,
        }
        lc.ok(await lc.report(token, offer["assignment_id"], body), 201)

        offer = await lc.wait_offer(token, visit["id"])
        lc.ok(await lc.answer(token, offer["assignment_id"], "accept"))
        body = {
            "outcome": "visit_completed",
            "started_at": now_iso(),
            "ended_at": now_iso(),
            "wellbeing_concern": False,
            "observations": observations,
        }
        lc.ok(await lc.report(token, offer["assignment_id"], body), 201)

        offer = await lc.wait_offer(token, meal["id"])
        lc.ok(await lc.answer(token, offer["assignment_id"], "accept"))
        body = {"outcome": "failed", "reason": "not_home", "detail": detail, "failed_at": now_iso()}
        lc.ok(await lc.report(token, offer["assignment_id"], body), 201)

        # The flow settles: the completions are processed, and every event of the
        # community reached the webhook receiver and the SSE stream.
        (visited,) = await lc.wait_events("visit.completed", need_id=visit["id"])
        (repaired,) = await lc.wait_events("repair.completed", need_id=repair["id"])
        (failed,) = await lc.wait_events("delivery.failed", need_id=meal["id"])
        await lc.wait_events("need.fulfilled", need_id=repair["id"])
        await lc.wait_events("need.fulfilled", need_id=visit["id"])
        await lc.wait_events("slot.released", need_id=meal["id"], reason="delivery_failed")
        assert visited.data["observations_recorded"] is True
        assert repaired.data["summary_recorded"] is True
        assert failed.data["detail_recorded"] is True
        ids = {e.event.id for e in await lc.events() if e.event.community == lc.home}
        await lc.wait_for(
            lambda: ids <= set(app.event_ids()), 30, what="every event at the webhook"
        )
        await lc.wait_for(
            lambda: all(any(i in line for line in sse_lines) for i in ids),
            30,
            what="every event on the SSE stream",
        )
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await reader
        await sse.aclose()

        # Absent from everything apps receive and from what notifications keeps.
        raw = await stream_bytes(lc)
        payloads = [
            bytes(r["payload"])
            for r in await lc.sql("notifications", "SELECT payload FROM deliveries")
        ]
        assert payloads
        for name, text in texts.items():
            needle = text.encode()
            assert not [m for m in raw if needle in m], f"{name} on the events stream"
            assert not [r for r in app.received if needle in r.body], f"{name} in a webhook"
            assert not [line for line in sse_lines if text in line], f"{name} on the SSE stream"
            assert not [p for p in payloads if needle in p], f"{name} in deliveries.payload"
            for service in lc.active:
                for proc in lc.processes(service):
                    assert text not in proc.output(), f"{name} in the log of {service}"

        # Present where it belongs: intake keeps the description with the need, partners
        # the notes with the reports.
        stored = await lc.sql_value(
            "intake", "SELECT details->>'description' FROM needs WHERE id = $1::uuid", repair["id"]
        )
        assert stored == description
        proofs = await lc.sql("partners", "SELECT proof::text AS proof FROM completion_reports")
        for text in (observations, summary, detail):
            assert any(text in r["proof"] for r in proofs)

        # The accepted helper read it with the contact details (from intake, audited).
        assert mine["contact_status"] == "shared"
        assert mine.get("description") == description

        # Readable by an operator of the community through the audited routes.
        read = lc.ok(await lc.http.get(lc.c("intake", f"/needs/{repair['id']}/description")))
        assert read["description"] == description
        notes = {}
        for need in (repair, visit, meal):
            page = lc.ok(await lc.http.get(lc.c("partners", f"/needs/{need['id']}/reports")))
            (item,) = page["items"]
            notes.update({k: v for k, v in item["notes"].items() if v})
        assert notes == {"summary": summary, "observations": observations, "detail": detail}

        # Each read is recorded: who, which need, what.
        reads = lc.ok(
            await lc.http.get(
                lc.c("intake", "/personal-data-reads"), params={"need_id": repair["id"]}
            )
        )["items"]
        kinds = {(r["item"], r["reader_role"]) for r in reads}
        assert ("repair_description", "operator") in kinds
        assert ("repair_description", "service") in kinds  # the helper's read via partners
        assert ("contact", "service") in kinds
        helper_read = [r for r in reads if r["reader_role"] == "service"]
        assert {r["on_behalf_of"] for r in helper_read} == {f"volunteer:{helper}"}
        for need in (repair, visit, meal):
            reads = lc.ok(
                await lc.http.get(
                    lc.c("partners", "/personal-data-reads"), params={"need_id": need["id"]}
                )
            )["items"]
            assert [(r["item"], r["reader_role"]) for r in reads] == [("report_notes", "operator")]

        # Nobody else: an operator of another community, a helper who is not the assignee.
        stranger = await operator_of(lc, lc.other, "intake", "partners")
        for url in (
            lc.url("intake", f"/v1/communities/{lc.home}/needs/{repair['id']}/description"),
            lc.url("intake", f"/v1/communities/{lc.other}/needs/{repair['id']}/description"),
            lc.url("partners", f"/v1/communities/{lc.home}/needs/{visit['id']}/reports"),
            lc.url("partners", f"/v1/communities/{lc.other}/needs/{visit['id']}/reports"),
        ):
            response = await lc.http.get(url, headers=lc.bearer(stranger))
            assert response.status_code == 404, url
            assert observations not in response.text
            assert description not in response.text
        for token_ in (bystander_token, token):
            # A party credential is not an operator's; and intake answers the helper's
            # question only for the assignee (partners asks with its service token).
            response = await lc.http.get(
                lc.c("partners", f"/needs/{visit['id']}/reports"), headers=lc.bearer(token_)
            )
            assert response.status_code in (403, 404)
        response = await lc.http.get(
            lc.c("intake", f"/needs/{repair['id']}/description"),
            params={"party_kind": "volunteer", "party_id": bystander},
            headers=lc.bearer(lc.service_token),
        )
        assert response.status_code == 404
        assert description not in response.text
