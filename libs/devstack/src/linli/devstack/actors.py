"""Simulated partners, volunteers and a city hotline for the local stack.

`make run` starts this process next to the services (it is never part of a production
deployment): every partner and volunteer of the demo looks at its offers through the
partners API like a real app would, accepts most, declines some, never answers a few
(so offers expire), and reports deliveries, visits and repairs after a short while,
sometimes a failed attempt. A "city hotline" submits a repair over NATS from time to
time. Within a few minutes of starting, a newcomer sees every step of the lifecycle.

    python -m linli.devstack.actors --stack .linli/stack.json [--seed 7]

The same actors can drive load for benchmarks (`--hotline-interval` small).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import signal
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats

from linli.contracts.catalogue import CATALOGUE

from .demo import reach_receiver_url

log = logging.getLogger("linli.actors")


@dataclass
class Party:
    """One demo partner or volunteer and what it has decided so far."""

    name: str
    token: str
    decided: set[str] = field(default_factory=set)
    due: dict[str, tuple[datetime, dict[str, Any]]] = field(default_factory=dict)
    asked_reward: bool = False


@dataclass(frozen=True)
class Temperament:
    accept: float = 0.75
    decline: float = 0.12  # the rest never answer, so their offers expire
    fail: float = 0.1
    work_seconds: tuple[float, float] = (4.0, 12.0)


def report_for(offer: dict[str, Any], rng: random.Random, temper: Temperament) -> dict[str, Any]:
    """What the helper reports when the work is done (or could not be done)."""
    now = datetime.now(UTC)
    if rng.random() < temper.fail:
        reason = rng.choice(["not_home", "refused", "wrong_address"])
        return {"outcome": "failed", "reason": reason, "failed_at": now.isoformat()}
    kind = offer["kind"]
    if CATALOGUE[kind].report.outcome == "service_completed":
        # Kinds added through the catalogue report the generic completion (ADR 0045).
        return {
            "outcome": "service_completed",
            "started_at": (now - timedelta(minutes=30)).isoformat(),
            "completed_at": now.isoformat(),
        }
    if offer.get("leg") == "prepare":
        # The canteen's leg of a two-leg lunch (ADR 0044): the carrier fulfils the need.
        return {
            "outcome": "meal_prepared",
            "prepared_at": now.isoformat(),
            "handed_to_carrier": True,
        }
    if kind == "meal_delivery":
        return {
            "outcome": "meal_delivered",
            "delivered_at": now.isoformat(),
            "handed_to": "resident",
            "hot_on_arrival": True,
        }
    if kind == "elder_care_visit":
        return {
            "outcome": "visit_completed",
            "started_at": (now - timedelta(minutes=45)).isoformat(),
            "ended_at": now.isoformat(),
            "observations": "chatted over tea; walked to the garden",
            "wellbeing_concern": rng.random() < 0.1,
        }
    return {
        "outcome": "repair_completed",
        "arrived_at": (now - timedelta(minutes=40)).isoformat(),
        "completed_at": now.isoformat(),
        "fixed": True,
        "follow_up_needed": False,
        "summary": "replaced the valve",
    }


class Actors:
    """Plays every demo party against the partners API."""

    def __init__(
        self,
        partners_url: str,
        parties: list[Party],
        rng: random.Random,
        temper: Temperament,
        community: str | None = None,
        pushed: frozenset[str] = frozenset(),
    ) -> None:
        self.partners_url = partners_url
        self.parties = parties
        self.rng = rng
        self.temper = temper
        self.community = community
        self.pushed = pushed
        """Parties whose webhook answers their offers (ADR 0043): they only do the work."""

    async def tick(self, client: httpx.AsyncClient) -> None:
        for party in self.parties:
            headers = {"Authorization": f"Bearer {party.token}"}
            offers = await client.get(
                f"{self.partners_url}/v1/me/offers", params={"status": "open"}, headers=headers
            )
            if offers.status_code != 200:
                continue
            if party.name in self.pushed:
                await self._take_accepted(client, party, headers)
            else:
                for offer in offers.json()["items"]:
                    await self._decide(client, party, headers, offer)
            await self._finish_due(client, party, headers)

    async def _take_accepted(
        self, client: httpx.AsyncClient, party: Party, headers: dict[str, str]
    ) -> None:
        """Offers its webhook receiver accepted through the link: do the work."""
        accepted = await client.get(
            f"{self.partners_url}/v1/me/offers", params={"status": "accepted"}, headers=headers
        )
        if accepted.status_code != 200:
            return
        for offer in accepted.json()["items"]:
            if offer["assignment_id"] not in party.decided:
                party.decided.add(offer["assignment_id"])
                delay = self.rng.uniform(*self.temper.work_seconds)
                party.due[offer["assignment_id"]] = (
                    datetime.now(UTC) + timedelta(seconds=delay),
                    offer,
                )

    async def _decide(
        self,
        client: httpx.AsyncClient,
        party: Party,
        headers: dict[str, str],
        offer: dict[str, Any],
    ) -> None:
        assignment = offer["assignment_id"]
        if assignment in party.decided:
            return
        party.decided.add(assignment)
        roll = self.rng.random()
        base = f"{self.partners_url}/v1/me/offers/{assignment}"
        if roll < self.temper.accept:
            body: dict[str, Any] = {}
            if party.name.startswith("partner"):
                body["eta"] = (datetime.now(UTC) + timedelta(minutes=20)).isoformat()
            answer = await client.post(f"{base}/accept", json=body, headers=headers)
            if answer.status_code == 200:
                delay = self.rng.uniform(*self.temper.work_seconds)
                when = datetime.now(UTC) + timedelta(seconds=delay)
                party.due[assignment] = (when, offer)
                log.info("accepted", extra={"party": party.name, "assignment": assignment})
        elif roll < self.temper.accept + self.temper.decline:
            await client.post(f"{base}/decline", json={"reason": "busy"}, headers=headers)
            log.info("declined", extra={"party": party.name, "assignment": assignment})
        else:
            log.info("ignored", extra={"party": party.name, "assignment": assignment})

    async def _finish_due(
        self, client: httpx.AsyncClient, party: Party, headers: dict[str, str]
    ) -> None:
        now = datetime.now(UTC)
        for assignment, (when, offer) in list(party.due.items()):
            if when > now:
                continue
            del party.due[assignment]
            report = report_for(offer, self.rng, self.temper)
            answer = await client.post(
                f"{self.partners_url}/v1/me/offers/{assignment}/report",
                json=report,
                headers=headers,
            )
            log.info("reported", extra={"party": party.name, "outcome": report["outcome"]})
            if answer.status_code == 201 and answer.json().get("balance_after"):
                await self._ask_for_reward(client, party, headers, answer.json()["balance_after"])

    async def _ask_for_reward(
        self, client: httpx.AsyncClient, party: Party, headers: dict[str, str], balance: int
    ) -> None:
        """A volunteer asks once for the cheapest reward its points cover (ADR 0041); an
        operator approves or rejects it in the partners API."""
        if party.asked_reward or self.community is None:
            return
        base = f"{self.partners_url}/v1/communities/{self.community}"
        rewards = await client.get(f"{base}/rewards", headers=headers)
        if rewards.status_code != 200:
            return
        affordable = [r for r in rewards.json()["items"] if r["points"] <= balance]
        if not affordable:
            return
        reward = min(affordable, key=lambda r: r["points"])
        asked = await client.post(
            f"{base}/reward-redemptions",
            json={"reward_id": reward["id"]},
            # A stable key: a retried ask is the same ask.
            headers={**headers, "Idempotency-Key": f"{party.name}-first-reward"},
        )
        if asked.status_code in (200, 201):
            party.asked_reward = True
            log.info("asked for a reward", extra={"party": party.name, "points": reward["points"]})


async def hotline(stack: dict[str, Any], rng: random.Random, interval: float) -> None:
    """A city hotline forwarding repair calls over NATS, as another system would."""
    community = stack["communities"][0]
    system = stack["nats"]["systems"][community]
    operator = {"Authorization": f"Bearer {stack['credentials']['operator']}"}
    async with httpx.AsyncClient(timeout=10) as client:
        residents = (await client.get(f"{stack['intake_api']}/residents", headers=operator)).json()
    resident_ids = [r["id"] for r in residents["items"]]
    if not resident_ids:
        return
    nc = await nats.connect(
        stack["nats"]["url"],
        user=system["user"],
        password=system["password"],
        inbox_prefix=system["inbox_prefix"],
    )
    try:
        while True:
            await asyncio.sleep(interval)
            now = datetime.now(UTC)
            urgent = rng.random() < 0.3
            command = {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": "urn:city-hotline:12345",
                "type": "linli.need.submit.v1",
                "time": now.isoformat(),
                "community": community,
                "data": {
                    "kind": "repair",
                    "resident_id": rng.choice(resident_ids),
                    "urgency": "emergency" if urgent else "routine",
                    "window": {
                        "earliest": now.isoformat(),
                        "latest": (now + timedelta(hours=2 if urgent else 48)).isoformat(),
                    },
                    "details": {
                        "category": rng.choice(["plumbing", "heating", "electrical"]),
                        "description": "reported to the city hotline",
                        "hazard": "water_leak" if urgent else "none",
                    },
                    "source": {
                        "system": "city-hotline",
                        "reference": f"HL-{rng.randint(1, 99999)}",
                    },
                },
            }
            with contextlib.suppress(Exception):
                reply = await nc.request(
                    f"linli.ingress.{community}.need.submit.v1",
                    json.dumps(command).encode(),
                    timeout=10,
                )
                log.info("hotline call", extra={"answer": json.loads(reply.data)["status"]})
    finally:
        await nc.close()


async def webhook_receiver(url: str) -> asyncio.Server:
    """A partner's tiny webhook receiver (ADR 0043): answers 204 and follows the pushed
    offer's signed accept link (retrying while partners has not stored the offer yet).
    A real receiver also verifies the Standard Webhooks signature."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    tasks: set[asyncio.Task[None]] = set()

    async def follow(link: str) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(10):
                try:
                    answer = await client.post(link)
                except httpx.HTTPError:
                    return
                if answer.status_code != 503:
                    log.info(
                        "answered a pushed offer by its link", extra={"status": answer.status_code}
                    )
                    return
                await asyncio.sleep(1)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = min(int(value.strip() or 0), 1 << 20)
            body = await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            await writer.drain()
            link = json.loads(body).get("offeraccepturl") if body else None
            if isinstance(link, str):
                task = asyncio.create_task(follow(link))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def run(
    stack: dict[str, Any], seed: int, hotline_interval: float, tick_interval: float
) -> None:
    rng = random.Random(seed)
    parties = [
        Party(name, token)
        for name, token in sorted(stack["credentials"].items())
        if name.startswith(("partner_", "volunteer_"))
    ]
    partners_url = stack["services"]["partners"]["url"]
    pushed = frozenset(
        name.removeprefix("reach_")
        for name in stack["credentials"]
        if name.startswith("reach_partner_")
    )
    receiver = await webhook_receiver(reach_receiver_url(partners_url)) if pushed else None
    actors = Actors(partners_url, parties, rng, Temperament(), stack["communities"][0], pushed)
    calls = asyncio.create_task(hotline(stack, rng, hotline_interval))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                try:
                    await actors.tick(client)
                except httpx.HTTPError as exc:
                    log.warning("actors tick failed", extra={"error": type(exc).__name__})
                await asyncio.sleep(tick_interval)
    finally:
        if receiver is not None:
            receiver.close()
        calls.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linli.devstack.actors")
    parser.add_argument("--stack", type=Path, default=Path(".linli/stack.json"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--hotline-interval", type=float, default=45.0)
    parser.add_argument("--tick-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s actors %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        stack = json.loads(args.stack.read_text())
        asyncio.run(run(stack, args.seed, args.hotline_interval, args.tick_interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
