"""One revocation stops everything a credential holds, in every service (issue #10, defect 4).

A community app's token is registered in the four services (as `make run` provisions
tokens: the same token in each). It holds a webhook subscription and an open SSE stream in
notifications. An operator revokes it with the CLI of ONE service (intake), and within a
bounded wait:

* every running service answers 401 to the token;
* its SSE stream ends;
* its subscription is disabled with the reason `credential revoked`, and an event published
  after the revocation reaches another app's active subscription while no delivery of it
  is even queued for the revoked one (the positive signal that notifications processed past
  the revocation);
* a service that was down during the revocation refuses the token from its first request;
* neither the token nor its digest appears in any service log.

Before ADR 0030 the revocation stayed in intake's database: partners kept answering 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from typing import Any

import httpx
import pytest
from harness.lifecycle import ALL_SERVICES, Lifecycle, new_token
from harness.notifications import Bus, need_submitted, receiver

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PROBE = "/v1/revocation-probe"
"""No such route: an accepted token gets 404, a refused one 401 (the auth comes first)."""

BOUND_S = 10.0


async def _status(lc: Lifecycle, service: str, token: str) -> int:
    response = await lc.http.get(lc.url(service, PROBE), headers=lc.bearer(token))
    return response.status_code


async def _issue(lc: Lifecycle, service: str, token: str | None = None) -> dict[str, Any]:
    args = ["credentials", "issue", "--role", "system", "--community", lc.home]
    if token is not None:
        args += ["--token", token]
    issued: dict[str, Any] = json.loads(await lc.cli(service, *args))
    return issued


async def test_one_revocation_stops_the_token_its_webhooks_and_streams_everywhere(
    lifecycle: Any,
) -> None:
    async with receiver() as revoked_app, receiver() as other_app:
        lc: Lifecycle = await lifecycle(notifications=True)
        token = new_token()
        ids = {s: (await _issue(lc, s, token))["credential_id"] for s in ALL_SERVICES}
        other_token = (await _issue(lc, "notifications"))["token"]
        for service in ALL_SERVICES:
            assert await _status(lc, service, token) == 404, service

        revoked_sub = lc.ok(
            await lc.http.post(
                lc.url("notifications", "/v1/subscriptions"),
                json={"url": revoked_app.url, "communities": [lc.home]},
                headers=lc.bearer(token),
            ),
            201,
        )
        revoked_app.secret = revoked_sub["secret"]
        other_sub = lc.ok(
            await lc.http.post(
                lc.url("notifications", "/v1/subscriptions"),
                json={"url": other_app.url, "communities": [lc.home]},
                headers=lc.bearer(other_token),
            ),
            201,
        )
        other_app.secret = other_sub["secret"]

        # An open SSE stream of the token, read until the server ends it.
        sse = httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=60.0))
        ended = asyncio.Event()
        frames: list[str] = []

        async def read_stream() -> None:
            port = lc.services["notifications"].port
            url = f"http://127.0.0.1:{port}/v1/communities/{lc.home}/events"
            async with sse.stream("GET", url, headers=lc.bearer(token)) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    frames.append(line)
            ended.set()

        reader = asyncio.create_task(read_stream())
        # New events only: publish once the stream's consumer exists (its first comment).
        await lc.wait_for(lambda: ": connected" in frames, what="the SSE stream open")

        bus = Bus(lc.nats.jetstream())
        before = await bus.publish(need_submitted(), lc.home)
        await revoked_app.wait_event(before.id, 1)
        await other_app.wait_event(before.id, 1)
        await lc.wait_for(
            lambda: any(line.startswith("id:") for line in frames), what="an SSE frame"
        )

        # Scheduling is down while the credential is revoked.
        (scheduling,) = lc.processes("scheduling")
        await lc.terminate(scheduling)

        out = json.loads(await lc.cli("intake", "credentials", "revoke", ids["intake"]))
        assert out["revoked"] is True
        assert out["everywhere"] is True
        revoked_at = time.monotonic()

        for service in ("intake", "partners", "notifications"):
            await lc.wait_for(
                lambda s=service: _refused(lc, s, token), BOUND_S, what=f"{service} refuses"
            )
        await asyncio.wait_for(ended.wait(), BOUND_S)
        assert not reader.done() or reader.exception() is None
        await lc.wait_for(
            lambda: lc.sql_value(
                "notifications",
                "SELECT state = 'disabled' AND disabled_reason = 'credential revoked' "
                "FROM subscriptions WHERE id = $1::uuid",
                revoked_sub["id"],
            ),
            BOUND_S,
            what="the revoked credential's subscription disabled",
        )
        elapsed = time.monotonic() - revoked_at

        # An event after the revocation reaches the other app; the revoked one's
        # subscription does not even get a delivery row for it.
        after = await bus.publish(need_submitted(), lc.home)
        await other_app.wait_event(after.id, 1)
        assert after.id not in revoked_app.event_ids()
        queued = await lc.sql(
            "notifications",
            "SELECT subscription_id::text AS sub FROM deliveries WHERE event_id = $1",
            after.id,
        )
        assert [r["sub"] for r in queued] == [other_sub["id"]]
        assert not await lc.sql(
            "notifications",
            "SELECT 1 FROM delivery_attempts WHERE subscription_id = $1::uuid AND event_id = $2",
            revoked_sub["id"],
            after.id,
        )
        # The other app's subscription (and its token) are untouched.
        assert await _status(lc, "notifications", other_token) == 404
        # The disabled subscription shows why in the subscriptions API (operator view).
        listed = lc.ok(
            await lc.http.get(
                lc.c("notifications", "/subscriptions"), headers=lc.bearer(lc.operator_token)
            )
        )
        shown = {item["id"]: item for item in listed["items"]}
        assert shown[revoked_sub["id"]]["state"] == "disabled"
        assert shown[revoked_sub["id"]]["disabled_reason"] == "credential revoked"
        assert shown[other_sub["id"]]["state"] == "active"

        # A service started after the revocation refuses the token from the start.
        await lc.start_replica("scheduling")
        assert await _status(lc, "scheduling", token) == 401

        await sse.aclose()
        with contextlib.suppress(Exception):
            await reader
        await lc.stop()
        digest = hashlib.sha256(token.encode()).hexdigest()
        for proc in lc.procs.processes:
            log = proc.output()
            assert token not in log, proc.name
            assert digest not in log.lower(), proc.name
        print(f"revocation effective everywhere within {elapsed:.2f}s")


async def _refused(lc: Lifecycle, service: str, token: str) -> bool:
    return await _status(lc, service, token) == 401
