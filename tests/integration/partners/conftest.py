"""Fixtures for partners on real NATS JetStream and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import pytest
from harness.names import Names
from harness.partners import (
    PartnersWorld,
    canteen_body,
    drop_world,
    eventually,
    offered,
    partners_settings,
    prepare_world,
    publish_event,
    volunteer_body,
)
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from linli.contracts.events import AssignmentOffered, PartyRef
from linli.contracts.types import NeedKind, Role
from linli.partners.app import build_app
from linli.partners.contacts import Contact


@dataclass
class RecordingDirectory:
    """Stands in for intake: records every question and answers as configured.

    `consented` holds the need ids whose resident agreed to share contact details;
    every other need answers None, as intake's 404 would.
    """

    consented: set[uuid.UUID] = field(default_factory=set)
    calls: list[tuple[str, uuid.UUID, PartyRef]] = field(default_factory=list)
    descriptions: list[tuple[str, uuid.UUID, PartyRef]] = field(default_factory=list)
    closed: bool = False

    async def contact_for(
        self, community: str, need_id: uuid.UUID, party: PartyRef
    ) -> Contact | None:
        self.calls.append((community, need_id, party))
        if need_id not in self.consented:
            return None
        return Contact(name="ZZCANARY 王秀兰", phone="+8613800138001", address="致远小区 3号楼 401")

    async def description_for(
        self, community: str, need_id: uuid.UUID, party: PartyRef
    ) -> str | None:
        self.descriptions.append((community, need_id, party))
        return None

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Partners:
    """A running in-process partners service with its world and clients."""

    world: PartnersWorld
    http: httpx.AsyncClient
    nc: NatsClient
    js: JetStreamContext
    app: Any
    directory: RecordingDirectory

    @property
    def pool(self) -> Any:
        return self.app.state.runtime.pool

    async def new_volunteer(self, who: str = "operator", **body: Any) -> str:
        community = self.world.other if who == "other_operator" else self.world.home
        response = await self.http.post(
            f"/v1/communities/{community}/volunteers",
            json=volunteer_body(**body),
            headers=self.world.auth(who),
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def new_partner(self, who: str = "operator", **body: Any) -> str:
        community = self.world.other if who == "other_operator" else self.world.home
        response = await self.http.post(
            f"/v1/communities/{community}/partners",
            json=canteen_body(**body),
            headers=self.world.auth(who),
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def volunteer_token(self, who: str, volunteer_id: str) -> dict[str, str]:
        return await self.world.issue(who, Role.VOLUNTEER, [self.world.home], volunteer_id)

    async def partner_token(self, who: str, partner_id: str) -> dict[str, str]:
        return await self.world.issue(who, Role.PARTNER, [self.world.home], partner_id)

    async def offer(
        self, party: PartyRef, *, kind: NeedKind = NeedKind.MEAL_DELIVERY, **kwargs: Any
    ) -> AssignmentOffered:
        """Publish `assignment.offered` for `party` and wait until it is in the inbox."""
        data = offered(self.world.home, party, kind=kind, **kwargs)
        await publish_event(self.js, data, self.world.home)
        assert await self.offer_stored(data.assignment_id), "offer never arrived"
        return data

    async def offer_stored(self, assignment_id: uuid.UUID) -> bool:
        async def probe() -> bool:
            return bool(
                await self.pool.fetchval(
                    "SELECT true FROM offers WHERE assignment_id = $1", assignment_id
                )
            )

        return bool(await eventually(probe))


@pytest.fixture
async def partners(nats_url: str, database_url: str, names: Names) -> AsyncIterator[Partners]:
    settings = partners_settings(names, nats_url, database_url)
    world = await prepare_world(settings, names)
    directory = RecordingDirectory()
    app = build_app(settings, contact_directory=directory)
    nc = await nats.connect(nats_url)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://partners.test"
            ) as http,
        ):
            yield Partners(world, http, nc, nc.jetstream(), app, directory)
    finally:
        await nc.close()
        await drop_world(settings, nats_url)
