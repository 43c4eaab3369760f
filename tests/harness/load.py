"""Load for end-to-end proofs: lunches submitted at a steady pace through intake's API,
offers accepted and reported by volunteers through partners' API, every failed request
kept (a transport error or an unexpected status) for the test to show."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field

import httpx

from .intake import meal_need
from .lifecycle import Lifecycle, now_iso


@dataclass
class Load:
    """Lunches submitted at a steady pace, answered by volunteers through partners' API;
    every failed request is kept."""

    lc: Lifecycle
    residents: list[str]
    tokens: list[str]
    submitted: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)
    reported: set[str] = field(default_factory=set)
    requests: int = 0
    retried: int = 0
    done_submitting: bool = False

    async def call(self, what: str, request: object, *expected: int) -> httpx.Response | None:
        """Await one request; a failure (transport error or unexpected status) is kept.

        `request` is an awaitable, or a callable making one for a request that carries an
        Idempotency-Key: a transport error is then retried once with the same key, as a
        client should (a draining server closes idle keep-alive connections, and a request
        sent on one as it closes meets a ReadError; the key makes the repeat harmless, and
        the tests check that nothing happened twice). Retries are counted in `retried`."""
        self.requests += 1
        make = request if callable(request) else None
        attempts = 2 if make is not None else 1
        for attempt in range(attempts):
            try:
                response: httpx.Response = await (make() if make else request)  # type: ignore[misc]
                break
            except httpx.TransportError as exc:
                if attempt + 1 < attempts:
                    self.retried += 1
                    continue
                self.failures.append(f"{what}: {type(exc).__name__}: {exc}")
                return None
            except httpx.HTTPError as exc:
                self.failures.append(f"{what}: {type(exc).__name__}: {exc}")
                return None
        if response.status_code not in expected:
            self.failures.append(f"{what}: HTTP {response.status_code} {response.text[:300]}")
            return None
        return response

    async def submit(self, count: int, seconds: float, *, in_flight: int = 16) -> None:
        """`count` lunches at an even pace over about `seconds` seconds (each request
        started on time, at most `in_flight` at once)."""
        lc = self.lc
        pause = seconds / count
        gate = asyncio.Semaphore(in_flight)
        started = time.monotonic()

        async def one(i: int) -> None:
            body = meal_need(self.residents[i % len(self.residents)], hours_ahead=1)
            async with gate:
                key = {"Idempotency-Key": f"load-{uuid.uuid4()}"}
                response = await self.call(
                    "submit",
                    lambda: lc.http.post(lc.c("intake", "/needs"), json=body, headers=key),
                    201,
                )
            if response is not None:
                self.submitted.append(response.json()["id"])

        tasks = []
        for i in range(count):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(max(0.0, started + (i + 1) * pause - time.monotonic()))
        await asyncio.gather(*tasks)
        self.done_submitting = True

    async def volunteer(self, token: str, stop: asyncio.Event) -> None:
        """Accept every open offer in the inbox and report the lunch delivered."""
        lc = self.lc
        while not stop.is_set():
            page = await self.call(
                "offers",
                lc.http.get(
                    lc.url("partners", "/v1/me/offers"),
                    params={"status": "open", "limit": 200},
                    headers=lc.bearer(token),
                ),
                200,
            )
            for item in page.json()["items"] if page is not None else []:
                assignment = item["assignment_id"]
                if assignment in self.answered:
                    continue
                self.answered.add(assignment)
                accepted = await self.call("accept", lc.answer(token, assignment, "accept"), 200)
                if accepted is None:
                    continue
                body = {
                    "outcome": "meal_delivered",
                    "delivered_at": now_iso(),
                    "handed_to": "resident",
                }
                if await self.call("report", lc.report(token, assignment, body), 201):
                    self.reported.add(assignment)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.3)
