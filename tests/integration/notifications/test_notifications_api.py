"""The subscriptions API: scoping, secrets, pause/resume, replay, delete, SSRF."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from harness.notifications import need_submitted, receiver

pytestmark = [pytest.mark.integration]


async def test_scoping_and_validation(start_notifications: Any) -> None:
    async with start_notifications() as n, receiver() as hook:
        sub = await n.subscribe(url=hook.url, description="family app")
        sub_id = sub["id"]
        # The secret is shown once; later views never carry it.
        view = await n.http.get(f"/v1/subscriptions/{sub_id}", headers=n.auth())
        assert view.status_code == 200
        assert "secret" not in view.json()
        sealed = await n.pool.fetchval("SELECT secret_sealed FROM subscriptions")
        assert sealed != sub["secret"]

        # Another app (even of the same community) does not see it.
        for who in ("other_app", "app2"):
            response = await n.http.get(f"/v1/subscriptions/{sub_id}", headers=n.auth(who))
            assert response.status_code == 404
            listed = await n.http.get("/v1/subscriptions", headers=n.auth(who))
            assert listed.json()["items"] == []
            response = await n.http.delete(f"/v1/subscriptions/{sub_id}", headers=n.auth(who))
            assert response.status_code == 404
        # A community outside the credential: 404, as if it did not exist.
        response = await n.http.post(
            "/v1/subscriptions",
            json={"url": hook.url, "communities": [n.home]},
            headers=n.auth("other_app"),
        )
        assert response.status_code == 404
        for who, code in (("operator", 403), ("partner", 403)):
            response = await n.http.post(
                "/v1/subscriptions",
                json={"url": hook.url, "communities": [n.home]},
                headers=n.auth(who),
            )
            assert response.status_code == code
        response = await n.http.post(
            "/v1/subscriptions", json={"url": hook.url, "communities": [n.home]}
        )
        assert response.status_code == 401
        bad_bodies = [
            {"url": hook.url, "communities": [n.home], "event_types": ["linli.nope.v1"]},
            {"url": hook.url, "communities": [n.home], "event_types": ["linli.need.submit.v1"]},
            {"url": hook.url, "communities": [n.home], "need_kinds": ["pizza"]},
            {"url": hook.url, "communities": [n.home], "secret": "whsec_short"},
            {"url": hook.url, "communities": []},
            {"url": hook.url, "communities": [n.home], "extra": 1},
            {"url": "ftp://example.com/x", "communities": [n.home]},
        ]
        for body in bad_bodies:
            response = await n.http.post("/v1/subscriptions", json=body, headers=n.auth())
            assert response.status_code == 422, body
        # The admin manages its own subscriptions in any community.
        admin = await n.subscribe("admin", url=hook.url, communities=[n.home, n.other])
        assert admin["communities"] == sorted([n.home, n.other])

        listed = await n.http.get("/v1/subscriptions", headers=n.auth())
        assert [s["id"] for s in listed.json()["items"]] == [sub_id]
        response = await n.http.delete(f"/v1/subscriptions/{sub_id}", headers=n.auth())
        assert response.status_code == 204
        response = await n.http.get(f"/v1/subscriptions/{sub_id}", headers=n.auth())
        assert response.status_code == 404


async def test_pause_resume_and_replay(start_notifications: Any) -> None:
    async with start_notifications() as n, receiver() as hook, receiver() as witness:
        sub = await n.subscribe(url=hook.url, secret="whsec_" + "A" * 32)
        hook.secret = sub["secret"]
        assert hook.secret == "whsec_" + "A" * 32
        witness.secret = (await n.subscribe(url=witness.url))["secret"]
        response = await n.http.post(f"/v1/subscriptions/{sub['id']}/pause", headers=n.auth())
        assert response.json()["state"] == "paused"
        first = await n.bus.publish(need_submitted(), n.home)
        # An active subscription made in the same transaction got it: the worker has run
        # past it, and held the paused one's.
        await witness.wait(1)
        assert witness.event_ids() == [first.id]
        assert hook.received == []
        response = await n.http.post(f"/v1/subscriptions/{sub['id']}/resume", headers=n.auth())
        assert response.json()["state"] == "active"
        await hook.wait(1)
        assert hook.event_ids() == [first.id]

        second = await n.bus.publish(need_submitted(), n.home)
        await hook.wait(2)
        response = await n.http.post(
            f"/v1/subscriptions/{sub['id']}/replay", json={"event_id": first.id}, headers=n.auth()
        )
        assert response.json() == {"replayed": 1}
        await hook.wait(3)
        assert hook.event_ids() == [first.id, second.id, first.id]
        assert hook.received[0].headers["webhook-id"] == hook.received[2].headers["webhook-id"]
        assert all(r.verified for r in hook.received)

        since = first.time.isoformat()
        response = await n.http.post(
            f"/v1/subscriptions/{sub['id']}/replay", json={"since": since}, headers=n.auth()
        )
        assert response.json() == {"replayed": 2}
        await hook.wait(5)
        response = await n.http.post(
            f"/v1/subscriptions/{sub['id']}/replay", json={"event_id": "nope"}, headers=n.auth()
        )
        assert response.status_code == 404
        attempts = await n.attempts(sub["id"])
        assert len(attempts) == 5
        assert all(a["status"] == 204 for a in attempts)


SSRF_CORPUS = [
    "http://example.com/hook",
    "https://127.0.0.1/hook",
    "https://127.0.0.1:8443/hook",
    "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://[::ffff:7f00:1]/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://[fd00:ec2::254]/",
    "https://0x7f000001/hook",
    "https://2130706433/hook",
    "https://0177.0.0.1/hook",
    "https://127.1/hook",
    "https://10.0.0.5/hook",
    "https://172.16.3.4/hook",
    "https://192.168.1.1/hook",
    "https://100.64.0.1/hook",
    "https://0.0.0.0/hook",
    "https://224.0.0.1/hook",
    "https://[fe80::1]/hook",
    "https://localhost/hook",
    "https://app.localhost/hook",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://user:pass@example.com/hook",
    "https://rebind.example/hook",
    "https://mixed.example/hook",
]


async def test_ssrf_corpus_refused_at_registration_and_connect(start_notifications: Any) -> None:
    async with (
        start_notifications(allow_insecure_endpoints=False) as n,
        receiver() as canary,
    ):
        n.dns.answers.update(
            {
                "rebind.example": ["127.0.0.1"],
                "mixed.example": ["93.184.215.14", "10.1.2.3"],
                "public.example": ["93.184.215.14"],
            }
        )
        for url in [*SSRF_CORPUS, canary.url]:
            response = await n.http.post(
                "/v1/subscriptions",
                json={"url": url, "communities": [n.home]},
                headers=n.auth(),
            )
            assert response.status_code == 422, url
            assert response.json()["detail"][0]["code"] in ("unsafe_url",), url
        # A name that was public at registration and points inside later (DNS
        # rebinding) is refused again when connecting: nothing reaches the canary.
        sub = await n.subscribe(url="https://public.example/hook")
        n.dns.answers["public.example"] = ["127.0.0.1"]
        event = await n.bus.publish(need_submitted(), n.home)
        for _ in range(100):
            attempts = await n.attempts(sub["id"])
            if attempts:
                break
            await asyncio.sleep(0.05)
        assert attempts[0]["event_id"] == event.id
        assert attempts[0]["error"].startswith("blocked")
        assert attempts[0]["status"] is None
        assert canary.received == []
