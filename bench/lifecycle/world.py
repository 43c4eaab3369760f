"""The bench's corner of the demo community: its residents, meal parties and capacity.

Everything goes through the APIs, as people would do it: the bench's residents are
registered with intake by the demo operator; the demo's canteen and meal-delivering
volunteers (whose tokens stack.json lists) publish the bench's capacity themselves,
each with its own token.

The bench's needs are dinners for tomorrow (17:30-19:00 in the communities' time zone)
and its slots cover 17:00-20:00 of that day. The demo's lunch slots (10:30-13:00) and
lunch needs never overlap them, so every bench need is matched to bench capacity, and
no bench need meets the demo's own capacity.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx

SHANGHAI = timezone(timedelta(hours=8))
KIND = "meal_delivery"
MAX_SLOT_CAPACITY = 1000  # partners refuses more per slot


@dataclass(frozen=True)
class Party:
    """A demo canteen or volunteer that delivers meals, and its own API token."""

    kind: str  # "partner" or "volunteer"
    id: str
    name: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class World:
    """What the load generator and the helpers need to know about the stack."""

    community: str
    intake_url: str
    partners_url: str
    scheduling_url: str
    operator_token: str
    admin_token: str
    residents: list[str]
    parties: list[Party]
    need_window: dict[str, str]
    slot_window: dict[str, str]

    def need_body(self, index: int) -> bytes:
        """The JSON body of the index-th need (residents in turn)."""
        body = {
            "kind": KIND,
            "resident_id": self.residents[index % len(self.residents)],
            "window": self.need_window,
            "details": {"portions": 1},
            "source": {"system": "bench", "reference": f"bench-{index}"},
        }
        return json.dumps(body).encode()


def _windows(now: datetime) -> tuple[dict[str, str], dict[str, str]]:
    tomorrow = now.astimezone(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    tomorrow += timedelta(days=1)

    def window(start: timedelta, end: timedelta) -> dict[str, str]:
        return {"earliest": (tomorrow + start).isoformat(), "latest": (tomorrow + end).isoformat()}

    need = window(timedelta(hours=17, minutes=30), timedelta(hours=19))
    slot = window(timedelta(hours=17), timedelta(hours=20))
    return need, slot


RESIDENTS = [
    {
        "name": f"Bench Resident {i}",
        "phone": f"1380099{i:04d}",
        "address": f"Bench Road {i}",
        "priority_group": "none",
        "consent_to_share_contact": True,
    }
    for i in range(1, 4)
]


async def _meal_parties(info: dict[str, Any], client: httpx.AsyncClient) -> list[Party]:
    """The demo's partners and volunteers that deliver meals, with their own tokens.

    stack.json lists every demo party's token (`partner_0`, `volunteer_0`, …); `GET
    /v1/me` tells whom it speaks for and what they do. In `make run` the actors play
    these parties; with `--no-actors` nobody does, so the bench's helpers take over.
    """
    partners = info["services"]["partners"]["url"]
    parties = []
    for key, token in sorted(info["credentials"].items()):
        if not key.startswith(("partner_", "volunteer_")):
            continue
        r = await client.get(f"{partners}/v1/me", headers={"Authorization": f"Bearer {token}"})
        r.raise_for_status()
        me = r.json()
        if me.get("partner"):
            kinds = {s["need_kind"] for s in me["partner"]["services"]}
            name = me["partner"]["name"]
        else:
            kinds = set(me["volunteer"]["skills"])
            name = me["volunteer"]["display_name"]
        if KIND in kinds:
            parties.append(Party(me["party"]["kind"], me["party"]["id"], name, token))
    if not parties:
        raise RuntimeError("the demo data has no partner or volunteer that delivers meals")
    return parties


async def create(info: dict[str, Any], client: httpx.AsyncClient) -> World:
    """The bench's residents in the first demo community, and the meal parties."""
    community = info["communities"][0]
    operator = info["credentials"]["operator"]
    intake = info["services"]["intake"]["url"]
    residents = []
    for resident in RESIDENTS:
        r = await client.post(
            f"{intake}/v1/communities/{community}/residents",
            json=resident,
            headers={"Authorization": f"Bearer {operator}"},
        )
        r.raise_for_status()
        residents.append(r.json()["id"])
    need_window, slot_window = _windows(datetime.now(UTC))
    return World(
        community=community,
        intake_url=intake,
        partners_url=info["services"]["partners"]["url"],
        scheduling_url=info["services"]["scheduling"]["url"],
        operator_token=operator,
        admin_token=info["credentials"]["admin"],
        residents=residents,
        parties=await _meal_parties(info, client),
        need_window=need_window,
        slot_window=slot_window,
    )


async def publish_capacity(
    world: World, client: httpx.AsyncClient, needs: int, *, wait_s: float = 60.0
) -> list[str]:
    """Slots for `needs` needs (plus a margin), published by the parties in turn.

    Scheduling takes the earliest-starting fitting slot, and all bench slots start at
    the same time, so one large slot would send every need to one party. Capacity is
    therefore split into two slots per party and published in turn, so the canteen
    and each volunteer serve part of every rung. Returns once scheduling lists every
    new slot, so that no need of the rung meets "no capacity" because a slot.published
    event was still on its way.
    """
    total = math.ceil(needs * 1.1) + 5
    count = max(2 * len(world.parties), math.ceil(total / MAX_SLOT_CAPACITY))
    size = math.ceil(total / count)
    slot_ids = []
    for i in range(count):
        party = world.parties[i % len(world.parties)]
        r = await client.post(
            f"{world.partners_url}/v1/communities/{world.community}/slots",
            json={"kind": KIND, "window": world.slot_window, "capacity": size},
            headers=party.headers,
        )
        r.raise_for_status()
        slot_ids.append(r.json()["id"])
    deadline = time.monotonic() + wait_s
    wanted = set(slot_ids)
    while True:
        r = await client.get(
            f"{world.scheduling_url}/v1/communities/{world.community}/slots",
            params={"kind": KIND, "limit": 500},
            headers={"Authorization": f"Bearer {world.admin_token}"},
        )
        r.raise_for_status()
        known = {item["id"] for item in r.json()["items"]}
        if wanted <= known:
            return slot_ids
        if time.monotonic() > deadline:
            raise RuntimeError(f"scheduling did not list {len(wanted - known)} new slots")
        await asyncio.sleep(0.2)
