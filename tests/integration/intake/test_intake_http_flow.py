"""A need POSTed over HTTP lands in PostgreSQL and, exactly once, on JetStream."""

from __future__ import annotations

import asyncio
import json

import pytest
from harness.common import outbox_settled
from harness.intake import events_on_stream, meal_need, outbox_backlog, repair_need

from linli.contracts.binding import from_nats
from linli.contracts.events import NeedSubmitted

pytestmark = pytest.mark.integration


async def test_posted_need_is_stored_and_published_once(intake) -> None:
    world = intake.world
    resident = await intake.new_resident()
    response = await intake.http.post(
        f"/v1/communities/{world.home}/needs", json=meal_need(resident), headers=world.auth()
    )
    assert response.status_code == 201, response.text
    need = response.json()
    assert need["status"] == "submitted"
    assert response.headers["Location"].endswith(need["id"])

    got = await intake.http.get(
        f"/v1/communities/{world.home}/needs/{need['id']}", headers=world.auth()
    )
    assert got.status_code == 200
    assert [t["status"] for t in got.json()["timeline"]] == ["submitted"]

    messages = await events_on_stream(intake.js, world.settings.events_stream, expect=1)
    assert len(messages) == 1
    msg = messages[0]
    assert msg.subject == f"linli.events.{world.home}.need.submitted.v1"
    event = from_nats(msg.data, msg.headers)
    assert event.type == "linli.need.submitted.v1"
    assert event.community == world.home
    assert msg.headers["Nats-Msg-Id"] == event.id
    assert msg.headers["traceparent"].startswith("00-")
    assert event.traceparent is not None
    # The trace of the HTTP request continues through the outbox into the message.
    assert msg.headers["traceparent"].split("-")[1] == event.traceparent.split("-")[1]
    data = NeedSubmitted.model_validate(event.data)
    assert str(data.need_id) == need["id"]
    assert data.priority_group.value == "elderly_living_alone"
    # No personal data leaves intake in the event.
    assert b"ZZCANARY" not in msg.data
    assert "13800138001" not in msg.data.decode()

    # The outbox is drained and marked.
    assert await outbox_backlog(intake.app.state.runtime.pool) == 0


async def test_same_idempotency_key_and_body_returns_the_original(intake) -> None:
    world = intake.world
    resident = await intake.new_resident()
    body = meal_need(resident)
    headers = {**world.auth(), "Idempotency-Key": "order-42"}
    first = await intake.http.post(
        f"/v1/communities/{world.home}/needs", json=body, headers=headers
    )
    again = await intake.http.post(
        f"/v1/communities/{world.home}/needs", json=body, headers=headers
    )
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    listed = await intake.http.get(f"/v1/communities/{world.home}/needs", headers=world.auth())
    assert len(listed.json()["items"]) == 1
    # Everything intake wrote has been relayed: one row, one event on the stream.
    assert await outbox_settled(intake.app.state.runtime.pool) == 1
    messages = await events_on_stream(intake.js, world.settings.events_stream, expect=1)
    assert len(messages) == 1


async def test_same_idempotency_key_with_another_body_is_refused(intake) -> None:
    world = intake.world
    resident = await intake.new_resident()
    headers = {**world.auth(), "Idempotency-Key": "order-43"}
    first = await intake.http.post(
        f"/v1/communities/{world.home}/needs", json=meal_need(resident), headers=headers
    )
    other = await intake.http.post(
        f"/v1/communities/{world.home}/needs", json=repair_need(resident), headers=headers
    )
    assert first.status_code == 201
    assert other.status_code == 409
    assert "Idempotency-Key" in other.json()["detail"]
    listed = await intake.http.get(f"/v1/communities/{world.home}/needs", headers=world.auth())
    assert [n["id"] for n in listed.json()["items"]] == [first.json()["id"]]


async def test_concurrent_requests_with_one_key_create_one_need(intake) -> None:
    world = intake.world
    resident = await intake.new_resident()
    body = meal_need(resident)
    headers = {**world.auth(), "Idempotency-Key": "burst-1"}
    responses = await asyncio.gather(
        *(
            intake.http.post(f"/v1/communities/{world.home}/needs", json=body, headers=headers)
            for _ in range(8)
        )
    )
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in responses}) == 1


async def test_list_filters_and_cursor_pagination(intake) -> None:
    world = intake.world
    resident = await intake.new_resident()
    created = []
    for i in range(5):
        body = meal_need(resident) if i % 2 == 0 else repair_need(resident)
        r = await intake.http.post(
            f"/v1/communities/{world.home}/needs", json=body, headers=world.auth()
        )
        created.append(r.json()["id"])
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await intake.http.get(
            f"/v1/communities/{world.home}/needs", params=params, headers=world.auth()
        )
        assert page.status_code == 200
        seen += [n["id"] for n in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))
    repairs = await intake.http.get(
        f"/v1/communities/{world.home}/needs", params={"kind": "repair"}, headers=world.auth()
    )
    assert {n["kind"] for n in repairs.json()["items"]} == {"repair"}
    assert len(repairs.json()["items"]) == 2
    none_yet = await intake.http.get(
        f"/v1/communities/{world.home}/needs",
        params={"status": "cancelled"},
        headers=world.auth(),
    )
    assert none_yet.json()["items"] == []
    future = await intake.http.get(
        f"/v1/communities/{world.home}/needs",
        params={"since": "2999-01-01T00:00:00Z"},
        headers=world.auth(),
    )
    assert future.json()["items"] == []


async def test_cancel_publishes_need_cancelled_once(intake) -> None:
    world = intake.world
    resident = await intake.new_resident()
    need = (
        await intake.http.post(
            f"/v1/communities/{world.home}/needs", json=meal_need(resident), headers=world.auth()
        )
    ).json()
    url = f"/v1/communities/{world.home}/needs/{need['id']}/cancel"
    first = await intake.http.post(url, json={"reason": "in hospital"}, headers=world.auth())
    again = await intake.http.post(url, json={"reason": "in hospital"}, headers=world.auth())
    assert first.status_code == 200
    assert first.json()["status"] == "cancelled"
    assert again.status_code == 200
    assert await outbox_settled(intake.app.state.runtime.pool) == 2
    messages = await events_on_stream(intake.js, world.settings.events_stream, expect=2)
    types = [json.loads(m.data)["type"] for m in messages]
    assert types == ["linli.need.submitted.v1", "linli.need.cancelled.v1"]


async def test_readyz_reports_database_nats_and_migrations(intake) -> None:
    ready = await intake.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "database": True,
        "nats": True,
        "migrations": True,
        "revocations": True,
        "ready": True,
    }
    assert (await intake.http.get("/healthz")).status_code == 200
