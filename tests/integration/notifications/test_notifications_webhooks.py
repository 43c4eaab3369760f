"""Webhooks on real servers: signed, filtered per community, retried, disabled."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from harness.notifications import (
    Notifications,
    always,
    hang,
    hostile,
    need_cancelled,
    need_submitted,
    receiver,
    status_then_ok,
)

pytestmark = [pytest.mark.integration]


async def _wait_db(n: Notifications, sql: str, expected: Any, *args: Any, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await n.pool.fetchval(sql, *args)
        if value == expected or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_signed_delivery_filtered_by_community_type_and_kind(
    start_notifications: Any,
) -> None:
    async with (
        start_notifications() as n,
        receiver() as home_hook,
        receiver() as other_hook,
        receiver() as repairs_hook,
    ):
        sub = await n.subscribe(
            url=home_hook.url, event_types=["linli.need.submitted.v1", "linli.need.cancelled.v1"]
        )
        home_hook.secret = sub["secret"]
        assert sub["secret"].startswith("whsec_")
        other = await n.subscribe("other_app", url=other_hook.url, communities=[n.other])
        other_hook.secret = other["secret"]
        repairs = await n.subscribe("app2", url=repairs_hook.url, need_kinds=["repair"])
        repairs_hook.secret = repairs["secret"]

        meal = await n.bus.publish(need_submitted("meal_delivery"), n.home)
        repair = await n.bus.publish(need_submitted("repair"), n.home)
        cancelled = await n.bus.publish(need_cancelled(repair.data.need_id), n.home)
        elsewhere = await n.bus.publish(need_submitted(), n.other)

        await home_hook.wait(3)
        await other_hook.wait(1)
        await repairs_hook.wait(2)
        await n.settled()  # nothing more is on its way to any of them

        assert sorted(home_hook.event_ids()) == sorted([meal.id, repair.id, cancelled.id])
        assert other_hook.event_ids() == [elsewhere.id]
        # need.cancelled carries no kind: the kind recorded from need.submitted filters it.
        assert sorted(repairs_hook.event_ids()) == sorted([repair.id, cancelled.id])
        for hook, owner in ((home_hook, sub), (other_hook, other), (repairs_hook, repairs)):
            assert all(r.verified for r in hook.received)
            for r in hook.received:
                assert r.event is not None
                assert r.headers["content-type"] == "application/cloudevents+json"
                assert r.headers["webhook-id"] == f"{r.event['id']}:{owner['id']}"
        # The body is the structured CloudEvent exactly as on the stream.
        stored = await n.bus.js.get_last_msg(n.settings.events_stream, f"linli.events.{n.other}.>")
        assert other_hook.received[0].body == stored.data
        assert json.loads(stored.data)["community"] == n.other


async def test_retries_500_timeout_429_and_410(start_notifications: Any) -> None:
    async with (
        start_notifications() as n,
        receiver(status_then_ok(500, 2)) as flaky,
        receiver(hang(3.0, then_ok_after=1)) as slow,
        receiver(status_then_ok(429, 1, {"Retry-After": "1"})) as limited,
        receiver(always(410)) as gone,
    ):
        hooks = {"flaky": flaky, "slow": slow, "limited": limited, "gone": gone}
        subs = {}
        for name, hook in hooks.items():
            sub = await n.subscribe(url=hook.url, description=name)
            hook.secret = sub["secret"]
            subs[name] = sub["id"]
        event = await n.bus.publish(need_submitted(), n.home)

        await flaky.wait_event(event.id, 3)
        await slow.wait_event(event.id, 2)
        await limited.wait_event(event.id, 2)
        await gone.wait_event(event.id, 1)
        await n.settled()

        for name, hook in hooks.items():
            assert all(r.verified for r in hook.received)
            # The same webhook-id on every attempt of one event.
            ids = {r.headers["webhook-id"] for r in hook.received if r.event["id"] == event.id}
            assert ids == {f"{event.id}:{subs[name]}"}
        assert flaky.event_ids().count(event.id) == 3
        log = [a for a in await n.attempts(subs["flaky"]) if a["event_id"] == event.id]
        assert [a["status"] for a in log] == [500, 500, 204]
        assert [a["outcome"] for a in log] == ["failed", "failed", "delivered"]

        log = [a for a in await n.attempts(subs["slow"]) if a["event_id"] == event.id]
        assert log[0]["error"] == "timeout"
        assert log[0]["status"] is None
        assert log[-1]["status"] == 204

        # Retry-After: 1 honoured (the schedule alone would retry after 0.3 s).
        mine = [r for r in limited.received if r.event and r.event["id"] == event.id]
        gap = mine[1].at - mine[0].at
        assert gap >= 0.9, gap
        log = [a for a in await n.attempts(subs["limited"]) if a["event_id"] == event.id]
        assert [a["status"] for a in log] == [429, 204]

        # 410 disables the endpoint at once, keeps the event and tells the owner.
        assert len(gone.received) == 1
        view = (await n.http.get(f"/v1/subscriptions/{subs['gone']}", headers=n.auth())).json()
        assert view["state"] == "disabled"
        failed = await _wait_db(
            n,
            "SELECT count(*) FROM outbox WHERE subject LIKE '%.notification.failed.v1'",
            1,
        )
        assert failed == 1
        # The owner is told on its other endpoints (same credential), nobody else.
        await flaky.wait(4)
        told = [
            r.event for r in flaky.received if r.event and r.event["type"].endswith("failed.v1")
        ]
        assert told[0]["data"]["subscription_id"] == subs["gone"]


async def test_spent_schedule_and_day_long_failure_disable(start_notifications: Any) -> None:
    async with (
        start_notifications(retry_schedule_s=[0.2, 0.2], disable_after_s=1000) as n,
        receiver(always(500)) as dead,
    ):
        sub = await n.subscribe(url=dead.url)
        dead.secret = sub["secret"]
        event = await n.bus.publish(need_submitted(), n.home)
        await dead.wait(3)
        state = await _wait_db(
            n, "SELECT state FROM deliveries WHERE event_id = $1", "failed", event.id
        )
        assert state == "failed"
        row = await _wait_db(
            n,
            "SELECT count(*) FROM outbox WHERE subject LIKE '%.notification.failed.v1'",
            1,
        )
        assert row == 1
        payload = await n.pool.fetchval("SELECT payload FROM outbox LIMIT 1")
        data = json.loads(payload)["data"]
        assert data["event_id"] == event.id
        assert data["attempts"] == 3
        assert data["last_status_code"] == 500

    async with (
        start_notifications(retry_schedule_s=[0.2] * 20, disable_after_s=0.5) as n,
        receiver(always(503)) as dead,
        receiver() as witness,
    ):
        sub = await n.subscribe(url=dead.url)
        await n.bus.publish(need_submitted(), n.home)
        state = await _wait_db(
            n, "SELECT state FROM subscriptions WHERE id = $1::uuid", "disabled", sub["id"]
        )
        assert state == "disabled"
        count = len(dead.received)
        # A later event reaches an active subscription made now, and nothing more goes
        # to the disabled one: the worker has run past it.
        witness.secret = (await n.subscribe("app2", url=witness.url))["secret"]
        later = await n.bus.publish(need_submitted(), n.home)
        await witness.wait_event(later.id, 1)
        await n.settled()
        assert len(dead.received) == count


async def test_dead_endpoint_does_not_delay_live_one(start_notifications: Any) -> None:
    async with (
        start_notifications(max_in_flight_per_endpoint=2) as n,
        receiver(hang(5.0)) as dead,
        receiver() as live,
    ):
        await n.subscribe(url=dead.url)
        live.secret = (await n.subscribe("app2", url=live.url))["secret"]
        await n.bus.publish(need_submitted(), n.home)
        await dead.wait(2)  # both of the dead endpoint's slots are now stuck
        started = time.monotonic()
        events = [await n.bus.publish(need_submitted(), n.home) for _ in range(8)]
        await live.wait(9, timeout=5)
        assert time.monotonic() - started < 2.0
        assert set(live.event_ids()) >= {e.id for e in events}
        assert all(r.verified for r in live.received)
        # The dead endpoint never has more than its share in flight.
        assert len(dead.received) <= 4


async def test_rotation_sends_both_signatures(start_notifications: Any) -> None:
    from standardwebhooks import Webhook

    async with start_notifications() as n, receiver() as hook:
        sub = await n.subscribe(url=hook.url)
        old = sub["secret"]
        response = await n.http.post(
            f"/v1/subscriptions/{sub['id']}/rotate-secret", json={}, headers=n.auth()
        )
        assert response.status_code == 200, response.text
        new = response.json()["secret"]
        assert new != old
        assert response.json()["rotation_overlap_until"]
        await n.bus.publish(need_submitted(), n.home)
        (received,) = await hook.wait(1)
        assert len(received.headers["webhook-signature"].split(" ")) == 2
        for secret in (old, new):
            Webhook(secret).verify(received.body, received.headers)

        # Without an overlap the old secret stops at once.
        response = await n.http.post(
            f"/v1/subscriptions/{sub['id']}/rotate-secret",
            json={"overlap_s": 0},
            headers=n.auth(),
        )
        newest = response.json()["secret"]
        await n.bus.publish(need_submitted(), n.home)
        received = (await hook.wait(2))[1]
        assert len(received.headers["webhook-signature"].split(" ")) == 1
        Webhook(newest).verify(received.body, received.headers)


HOSTILE_ERRORS = {
    "trickle_headers": "timeout",
    "trickle_body": "timeout",
    "endless_body": "response too large",
}


@pytest.mark.parametrize("mode", sorted(HOSTILE_ERRORS))
async def test_hostile_receiver_cannot_pin_a_worker(start_notifications: Any, mode: str) -> None:
    """A raw receiver that trickles one byte a second forever, or sends an endless body:
    the attempt ends by its deadline with a clear error, reads a bounded number of bytes,
    and a live endpoint's deliveries go out meanwhile."""
    deadline_s = 3.0
    async with (
        start_notifications(webhook_timeout_s=deadline_s, retry_schedule_s=[600.0]) as n,
        hostile(mode, interval=1.0) as bad,
        receiver() as live,
    ):
        bad_sub = await n.subscribe(url=bad.url)
        live.secret = (await n.subscribe("app2", url=live.url))["secret"]
        first = await n.bus.publish(need_submitted(), n.home)
        await bad.wait(lambda h: h.connections >= 1)
        events = [await n.bus.publish(need_submitted(), n.home) for _ in range(5)]
        await live.wait(6, timeout=10)
        assert set(live.event_ids()) == {first.id, *(e.id for e in events)}
        if mode != "endless_body":
            # Still trickling: the live endpoint was served while the hostile attempts
            # (one per event, up to the endpoint's in-flight limit) ran.
            assert bad.open >= 1
            assert bad.closed == 0

        # The attempt is recorded (the lease would otherwise hold it for 30 s more).
        log: list[dict[str, Any]] = []
        wait_until = time.monotonic() + deadline_s + 10
        while not log and time.monotonic() < wait_until:
            log = [a for a in await n.attempts(bad_sub["id"]) if a["event_id"] == first.id]
            await asyncio.sleep(0.1)
        assert log, "no attempt recorded: the hostile receiver pinned the worker"
        assert log[0]["outcome"] == "failed"
        assert log[0]["error"] == HOSTILE_ERRORS[mode]
        # Connect, send and the whole response fit in one deadline.
        assert log[0]["latency_ms"] <= deadline_s * 1000 + 1000, log[0]
        # We closed the connection: nothing keeps a worker's socket open.
        await bad.wait(lambda h: h.closed >= 1)
        # Bounded memory: 64 KiB read, plus what kernel buffers hold, not the 128 MiB offered.
        assert bad.sent < 16 * 1024 * 1024, bad.sent
        view = (await n.http.get(f"/v1/subscriptions/{bad_sub['id']}", headers=n.auth())).json()
        assert view["state"] == "active"
