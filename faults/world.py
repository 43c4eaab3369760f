"""The run's own servers and the capacity the needs meet: residents, volunteers with
slots, and the simulated helpers who answer offers and report through partners' API."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import secrets
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from linli.devstack.natsconf import (
    NatsUser,
    admin_user,
    community_app_user,
    community_system_user,
    linli_services,
    render_config,
    service_user,
)
from linli.devstack.servers import NatsServer, PostgresServer, ensure_database, free_port
from linli.devstack.stack import inbox_prefix
from tests.harness.intake import meal_need
from tests.harness.lifecycle import Lifecycle, now_iso
from tests.harness.names import Names

DATABASE = "linli_faults"


def nats_users(names: Names) -> dict[str, NatsUser]:
    """Who may do what on the run's nats-server: the same users as `make run` and
    Kubernetes (`linli.devstack.natsconf`): a least-privilege user per service, the admin
    (the driver: streams, truth, poison), and each community's app and system users."""
    events, ingress = names.stream("events"), names.stream("ingress")
    services = {a.name: a for a in linli_services(events, ingress)}
    # The harness names both communities in the streams (LINLI_STREAM_COMMUNITIES), so
    # intake keeps one ingress durable per community subject: `intake-ingress-<i>`.
    services["intake"] = dataclasses.replace(
        services["intake"],
        durables=(
            (events, "intake-lifecycle"),
            (ingress, "intake-ingress-0"),
            (ingress, "intake-ingress-1"),
        ),
    )
    users = {name: service_user(a, secrets.token_urlsafe(16)) for name, a in services.items()}
    users["admin"] = admin_user(secrets.token_urlsafe(16))
    for base in ("home", "other"):
        community = names.community(base)
        users[f"app-{base}"] = community_app_user(community, secrets.token_urlsafe(16))
        users[f"system-{base}"] = community_system_user(
            community, secrets.token_urlsafe(16), inbox_prefix=inbox_prefix(community)
        )
    return users


@dataclass
class Servers:
    """nats-server (with authorization: `nats_users`) and PostgreSQL on fixed ports, so a
    restart brings them back at the same address with the same store."""

    root: Path
    nats: NatsServer
    pg: PostgresServer
    users: dict[str, NatsUser]

    @classmethod
    async def start(cls, names: Names) -> Servers:
        root = Path(tempfile.mkdtemp(prefix="linli-faults-"))
        users = nats_users(names)
        nats = NatsServer(
            root / "nats",
            port=free_port(),
            log_file=root / "nats.log",
            config=render_config(users=list(users.values())),
        )
        pg = PostgresServer(
            root / "pg" / "data", port=free_port(), fast=True, log_file=root / "postgres.log"
        )
        await asyncio.to_thread(nats.start)
        await asyncio.to_thread(pg.start)
        await ensure_database(pg.dsn(), DATABASE)
        return cls(root, nats, pg, users)

    @property
    def credentials(self) -> dict[str, tuple[str, str]]:
        """(user, password) by the key of `users`, for `Lifecycle(nats_users=...)`."""
        return {key: (u.name, str(u.password)) for key, u in self.users.items()}

    @property
    def nats_url(self) -> str:
        return self.nats.url

    @property
    def database_url(self) -> str:
        return self.pg.dsn(database=DATABASE)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.nats.stop()
        with contextlib.suppress(Exception):
            self.pg.stop()
        with contextlib.suppress(Exception):
            self.pg.delete_data()
        shutil.rmtree(self.root, ignore_errors=True)


ANSWERED = (200, 201, 404, 409, 410, 422)
"""Statuses after which a helper does not ask again (done, or refused for good)."""


@dataclass
class Traffic:
    """Needs submitted through intake and offers answered through partners, every request
    retried (same Idempotency-Key for a need) until it has a definite answer."""

    lc: Lifecycle
    rng: random.Random
    residents: list[str]
    tokens: list[str]
    decline_rate: float = 0.1
    submitted: list[str] = field(default_factory=list)
    unsubmitted: int = 0
    """Needs whose submission never got an answer within the retry budget."""
    errors: int = 0
    """Requests that failed and were retried (5xx, timeouts, refused connections)."""
    accepted: set[str] = field(default_factory=set)
    declined: set[str] = field(default_factory=set)
    reported: set[str] = field(default_factory=set)

    async def _retry(
        self, send: Any, *, budget_s: float = 600.0, ok: tuple[int, ...] = ANSWERED
    ) -> httpx.Response | None:
        """`send()` until its status is in `ok`; None after `budget_s` seconds."""
        deadline = time.monotonic() + budget_s
        pause = 0.2
        while time.monotonic() < deadline:
            try:
                response: httpx.Response = await send()
            except httpx.HTTPError:
                response = None  # type: ignore[assignment]
            if response is not None and response.status_code in ok:
                return response
            self.errors += 1
            await asyncio.sleep(pause)
            pause = min(pause * 2, 3.0)
        return None

    async def submit(self, count: int, rate: float, *, in_flight: int = 16) -> None:
        lc = self.lc
        gate = asyncio.Semaphore(in_flight)
        started = time.monotonic()

        async def one(i: int) -> None:
            body = meal_need(self.residents[i % len(self.residents)], hours_ahead=1)
            key = f"faults-{uuid.uuid4()}"
            async with gate:
                response = await self._retry(
                    lambda: lc.http.post(
                        lc.c("intake", "/needs"), json=body, headers={"Idempotency-Key": key}
                    ),
                    ok=(200, 201),
                )
            if response is None:
                self.unsubmitted += 1
            else:
                self.submitted.append(str(response.json()["id"]))

        tasks = []
        for i in range(count):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))
        await asyncio.gather(*tasks)

    async def helper(self, token: str, stop: asyncio.Event) -> None:
        """One volunteer: accept (or now and then decline) every open offer, then report
        the lunch delivered. Runs until `stop`."""
        lc = self.lc
        while not stop.is_set():
            page = await self._retry(
                lambda: lc.http.get(
                    lc.url("partners", "/v1/me/offers"),
                    params={"status": "open", "limit": 200},
                    headers=lc.bearer(token),
                ),
                budget_s=30,
                ok=(200,),
            )
            for item in page.json()["items"] if page is not None else []:
                assignment = str(item["assignment_id"])
                if assignment in self.accepted or assignment in self.declined:
                    continue
                if self.rng.random() < self.decline_rate:
                    self.declined.add(assignment)
                    await self._retry(
                        lambda a=assignment: lc.answer(token, a, "decline"), budget_s=60
                    )
                    continue
                answer = await self._retry(
                    lambda a=assignment: lc.answer(token, a, "accept"), budget_s=60
                )
                if answer is None or answer.status_code != 200:
                    # A retry after an accept that committed but whose answer was lost
                    # (a killed replica) is refused: the offer shows what happened.
                    view = await self._retry(lambda a=assignment: lc.offer(token, a), ok=(200,))
                    if view is None or view.json().get("status") != "accepted":
                        continue
                self.accepted.add(assignment)
                body = {
                    "outcome": "meal_delivered",
                    "delivered_at": now_iso(),
                    "handed_to": "resident",
                }
                if await self._retry(lambda a=assignment, b=body: lc.report(token, a, b)):
                    self.reported.add(assignment)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.3)
